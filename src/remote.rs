//! What it takes to run a command line on another machine, decided purely from
//! the parsed model:
//!
//! * [`file_refs`]: the files on the shim's machine the job reads: inputs, and
//!   files named inside filter arguments (`subtitles=f=…:fontsdir=…`,
//!   `drawtext=fontfile=…`, `lut3d=file=…`, `movie=…`).
//! * [`rewrite`]: the argument list a node runs instead: inputs become relay URLs
//!   (or local paths through a path mapping), filter files become copies in the
//!   node's scratch directory, and every output directory becomes a scratch
//!   directory. It also says how to translate the node's names back, for stderr
//!   and for publishing.
//! * [`OutputTracker`]: when each file ffmpeg writes into those scratch
//!   directories is complete and may be published on the shim's machine, and in
//!   which order (CONTRACT.md §6: segment N+1 never before N is complete).
//!
//! Nothing here touches the filesystem; the node and the shim do the IO.

use std::collections::{BTreeMap, BTreeSet};

use crate::ffmpeg::cmdline::{CommandLine, Opt};
use crate::ffmpeg::decision::{OutputShape, classify_cmdline};
use crate::ffmpeg::url::{Target, Url};
use crate::protocol::{FileOffer, WriteMode};

/// Why a command line cannot run remotely as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    #[error("input {0:?} names other files (concat, bluray or a protocol the relay cannot serve)")]
    IndirectInput(String),
    #[error("option -{0} reads or writes a file on this machine")]
    SideFile(String),
    #[error("output {0:?} is not a file or standard output")]
    UnsupportedOutput(String),
    #[error("no file was offered for {0:?}")]
    NotOffered(String),
    #[error("filter argument in -{0} cannot be parsed")]
    Filter(String),
}

/// Where a reference was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// The URL of input `n`.
    Input(usize),
    /// A value inside a filter graph. `group` is `None` for global
    /// `-filter_complex`, else the output index; `opt` indexes that group's options.
    Filter { group: Option<usize>, opt: usize },
}

/// A file or directory on the shim's machine that the job reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The path as ffmpeg would open it (unescaped, `file:` stripped).
    pub path: String,
    /// A directory whose files are all needed (a fonts directory).
    pub dir: bool,
    /// Read through the relay like an input rather than copied to the node first:
    /// inputs, and a filter that opens the same file with libavformat (Jellyfin
    /// burns in embedded subtitles with `subtitles=f=<the movie itself>:si=N`, and
    /// copying a whole film before starting would be absurd).
    pub streamed: bool,
    pub site: Site,
    /// An http(s) input URL rather than a path. The node reads it through the
    /// relay when the shim offers it (as a [`FileOffer::stream`]), and opens the
    /// URL itself otherwise.
    pub network: bool,
}

/// Filters that open their file with libavformat, so a relay URL works for them.
const LAVF_FILTERS: &[&str] = &["subtitles", "ass", "movie", "amovie"];

/// Filter options that name files: (filter, option, positional index, is a directory).
const FILTER_FILE_OPTS: &[(&str, &str, Option<usize>, bool)] = &[
    ("subtitles", "filename", Some(0), false),
    ("subtitles", "f", None, false),
    ("subtitles", "fontsdir", None, true),
    ("ass", "filename", Some(0), false),
    ("ass", "f", None, false),
    ("ass", "fontsdir", None, true),
    ("drawtext", "fontfile", None, false),
    ("drawtext", "textfile", None, false),
    ("lut3d", "file", Some(0), false),
    ("movie", "filename", Some(0), false),
    ("amovie", "filename", Some(0), false),
];

/// Input options of ffmpeg's http protocol that only concern the connection to
/// the origin: the shim applies them when it fetches a relayed input (the
/// request headers, reconnecting with `-reconnect_streamed`,
/// `-reconnect_at_eof`, `-reconnect_delay_max`, and `-tls_verify`), or they
/// name the origin's TLS (`-ca_file`, `-verifyhost`). A relayed input loses them on
/// the node, where ffmpeg talks to the relay instead.
pub const ORIGIN_OPTIONS: &[&str] = &[
    "user_agent",
    "user-agent",
    "referer",
    "headers",
    "reconnect",
    "reconnect_at_eof",
    "reconnect_streamed",
    "reconnect_on_network_error",
    "reconnect_on_http_error",
    "reconnect_delay_max",
    "tls_verify",
    "ca_file",
    "cafile",
    "verifyhost",
];

/// Per-output options that read or write files beside the output.
const OUTPUT_FILE_OPTS: &[&str] = &["hls_key_info_file", "key_info_file", "master_pl_name", "var_stream_map"];

/// The files the job reads on the shim's machine, in a stable order (inputs first).
pub fn file_refs(cl: &CommandLine) -> Result<Vec<FileRef>, RemoteError> {
    let mut refs = Vec::new();
    for (n, input) in cl.inputs.iter().enumerate() {
        let format = input.last_value("f");
        if format == Some("lavfi") {
            continue;
        }
        if format == Some("concat") {
            return Err(RemoteError::IndirectInput(input.url.raw.clone()));
        }
        match &input.url.target {
            Target::File { path } => refs.push(FileRef {
                path: path.clone(),
                dir: false,
                streamed: true,
                site: Site::Input(n),
                network: false,
            }),
            Target::Network { scheme } if scheme == "http" || scheme == "https" => refs.push(FileRef {
                path: input.url.raw.clone(),
                dir: false,
                streamed: true,
                site: Site::Input(n),
                network: true,
            }),
            Target::Network { .. } => {}
            _ => return Err(RemoteError::IndirectInput(input.url.raw.clone())),
        }
    }
    for (group, opt_index, opt) in filter_opts(cl) {
        let value = opt.value.as_deref().unwrap_or("");
        for (filter, path, dir) in graph_files(value).map_err(|()| RemoteError::Filter(opt.key.clone()))? {
            let streamed = reads_like_input(&filter, &path, dir, &refs);
            refs.push(FileRef { path, dir, streamed, site: Site::Filter { group, opt: opt_index }, network: false });
        }
    }
    Ok(refs)
}

/// Whether a filter's file is read through the relay like the input it also is
/// (see [`FileRef::streamed`]). `refs` must hold the inputs.
fn reads_like_input(filter: &str, path: &str, dir: bool, refs: &[FileRef]) -> bool {
    !dir && LAVF_FILTERS.contains(&filter) && refs.iter().any(|r| matches!(r.site, Site::Input(_)) && r.path == path)
}

/// Every filter graph option: (output index or `None` for globals, option index, option).
fn filter_opts(cl: &CommandLine) -> Vec<(Option<usize>, usize, &Opt)> {
    let is_graph = |o: &Opt| matches!(o.name(), "filter" | "vf" | "af" | "filter_complex");
    let mut out: Vec<(Option<usize>, usize, &Opt)> =
        cl.globals.iter().enumerate().filter(|(_, o)| is_graph(o)).map(|(i, o)| (None, i, o)).collect();
    for (g, output) in cl.outputs.iter().enumerate() {
        out.extend(output.opts.iter().enumerate().filter(|(_, o)| is_graph(o)).map(|(i, o)| (Some(g), i, o)));
    }
    out
}

/// How a node reaches the shim's files.
#[derive(Clone)]
pub struct Access<'a> {
    /// The files the shim offered.
    pub files: &'a [FileOffer],
    /// Input file id → what the node's ffmpeg opens instead (a relay URL, or a local
    /// path when a path mapping applies).
    pub input: &'a dyn Fn(&FileOffer) -> String,
    /// Input options the node's ffmpeg needs to open an input at this URL (for
    /// an `https://` relay URL: verify the controller's certificate).
    pub input_options: &'a dyn Fn(&str) -> Vec<Opt>,
    /// File id → path of its copy in scratch (filter files, and directory entries).
    pub side: &'a dyn Fn(&FileOffer) -> String,
    /// Directory reference → scratch directory holding its entries.
    pub side_dir: &'a dyn Fn(&str) -> String,
    /// Root of the job's output scratch; output directory `k` becomes `{out_root}/d{k}`.
    pub out_root: &'a str,
}

impl std::fmt::Debug for Access<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").field("files", &self.files).field("out_root", &self.out_root).finish_non_exhaustive()
    }
}

/// The node's view of a job after [`rewrite`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    pub args: Vec<String>,
    pub plan: OutputPlan,
    /// (node's string, original string) pairs, longest first: apply to ffmpeg's
    /// stderr so that it names what a local run would name.
    pub replacements: Vec<(String, String)>,
}

/// Where a job's outputs go on the node, and what each file there is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutputPlan {
    /// Output directories: `dirs[k]` is scratch `d{k}`, mapped back to `original`.
    pub dirs: Vec<OutDir>,
    /// Patterns recognised in those directories.
    pub patterns: Vec<Pattern>,
    /// The job writes its output `n` to standard output.
    pub stdout: bool,
}

/// One output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutDir {
    /// The directory as written in the arguments, without a trailing slash (`""`
    /// for a bare file name, which is relative to the working directory).
    pub original: String,
    /// Its scratch directory on the node.
    pub scratch: String,
}

impl OutDir {
    /// The shim-side path of file `name` in this directory.
    pub fn original_path(&self, name: &str) -> String {
        if self.original.is_empty() { name.to_owned() } else { format!("{}/{name}", self.original) }
    }
}

/// A kind of file in an output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub dir: usize,
    pub role: RoleKind,
    /// A literal name, or a printf-style name with one `%d`/`%0Nd` (sequences).
    pub name: String,
    /// Output index this file belongs to; files of one output are published in order.
    pub output: usize,
}

/// What a pattern stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// An HLS playlist: republished (atomically) whenever it changes.
    Playlist,
    /// fMP4 init segment: published before the first media segment.
    Init,
    /// Numbered files (HLS segments, image sequences): published in index order,
    /// each once complete.
    Sequence,
    /// A file written while it grows (progressive mp4/mkv/ts): streamed in place.
    Progressive,
    /// Any other single file: published when ffmpeg exits.
    Single,
}

/// Rewrites `cl` for a node. `refs` must be [`file_refs`] of the same command line.
pub fn rewrite(cl: &CommandLine, refs: &[FileRef], access: &Access<'_>) -> Result<Rewritten, RemoteError> {
    let mut cl = cl.clone();
    let mut replacements: Vec<(String, String)> = Vec::new();
    let offered = |path: &str| access.files.iter().find(|f| f.reference == path && f.entry.is_none());

    for r in refs {
        match r.site {
            Site::Input(n) => {
                let offer = match offered(&r.path) {
                    Some(offer) => offer,
                    // Not relayed: the node's ffmpeg opens the URL itself.
                    None if r.network => continue,
                    None => return Err(RemoteError::NotOffered(r.path.clone())),
                };
                let url = (access.input)(offer);
                replacements.push((url.clone(), cl.inputs[n].url.raw.clone()));
                let input = &mut cl.inputs[n];
                if offer.stream {
                    input.opts.retain(|o| !ORIGIN_OPTIONS.contains(&o.name()));
                }
                for opt in (access.input_options)(&url) {
                    input.push(opt);
                }
                input.url = Url::parse(&url);
            }
            Site::Filter { .. } => {}
        }
    }
    // Filter files: each graph option is rewritten once with all its references.
    let mut graph_sites: Vec<(Option<usize>, usize)> = refs
        .iter()
        .filter_map(|r| match r.site {
            Site::Filter { group, opt } => Some((group, opt)),
            Site::Input(_) => None,
        })
        .collect();
    graph_sites.dedup();
    for (group, opt) in graph_sites {
        let o = match group {
            None => &mut cl.globals[opt],
            Some(g) => &mut cl.outputs[g].opts[opt],
        };
        let value = o.value.clone().unwrap_or_default();
        let mut failure = None;
        let new = rewrite_graph_files(&value, &mut |filter, path, dir| {
            let target = if reads_like_input(filter, path, dir, refs) {
                offered(path).map(access.input)
            } else if dir {
                let any = access.files.iter().any(|f| f.reference == path);
                any.then(|| (access.side_dir)(path))
            } else {
                offered(path).map(access.side)
            };
            match target {
                Some(t) => {
                    replacements.push((t.clone(), path.to_owned()));
                    Some(t)
                }
                None => {
                    failure.get_or_insert_with(|| path.to_owned());
                    None
                }
            }
        })
        .map_err(|()| RemoteError::Filter(o.key.clone()))?;
        if let Some(path) = failure {
            return Err(RemoteError::NotOffered(path));
        }
        o.value = Some(new);
    }

    // Outputs.
    let verdict = classify_cmdline(&cl);
    let mut plan = OutputPlan::default();
    let dir_index = |plan: &mut OutputPlan, original: &str| -> usize {
        let original = original.trim_end_matches('/');
        let original = if original.is_empty() && !plan.dirs.is_empty() { "" } else { original };
        if let Some(k) = plan.dirs.iter().position(|d| d.original == original) {
            return k;
        }
        let k = plan.dirs.len();
        plan.dirs.push(OutDir { original: original.to_owned(), scratch: format!("{}/d{k}", access.out_root) });
        k
    };
    for (n, shape) in verdict.outputs.iter().enumerate() {
        let output = &mut cl.outputs[n];
        if let Some(o) = output.opts.iter().find(|o| OUTPUT_FILE_OPTS.contains(&o.name())) {
            return Err(RemoteError::SideFile(o.key.clone()));
        }
        let path = match &output.url.target {
            Target::File { path } => path.clone(),
            Target::Pipe { fd: None | Some(1) } if matches!(shape, OutputShape::Stream { .. }) => {
                plan.stdout = true;
                continue;
            }
            _ if matches!(shape, OutputShape::Null) => continue,
            _ => return Err(RemoteError::UnsupportedOutput(output.url.raw.clone())),
        };
        let (dir, name) = split_path(&path);
        let k = dir_index(&mut plan, dir);
        let scratch_path = format!("{}/{name}", plan.dirs[k].scratch);
        output.url = Url::parse(&scratch_path);
        let push = |plan: &mut OutputPlan, dir: usize, role: RoleKind, name: &str| {
            plan.patterns.push(Pattern { dir, role, name: name.to_owned(), output: n });
        };
        match shape {
            OutputShape::Hls { segment_type, segment_filename, .. } => {
                push(&mut plan, k, RoleKind::Playlist, name);
                let seg = match segment_filename {
                    Some(s) => s.clone(),
                    None => {
                        let stem = name.strip_suffix(".m3u8").unwrap_or(name);
                        let ext =
                            if *segment_type == crate::ffmpeg::decision::SegmentType::Fmp4 { "m4s" } else { "ts" };
                        let d = &plan.dirs[k].original;
                        if d.is_empty() { format!("{stem}%d.{ext}") } else { format!("{d}/{stem}%d.{ext}") }
                    }
                };
                let (sdir, sname) = split_path(&seg);
                let sk = dir_index(&mut plan, sdir);
                push(&mut plan, sk, RoleKind::Sequence, sname);
                if segment_filename.is_some() {
                    let new = format!("{}/{sname}", plan.dirs[sk].scratch);
                    set_last(&mut cl.outputs[n].opts, "hls_segment_filename", new);
                }
                if *segment_type == crate::ffmpeg::decision::SegmentType::Fmp4 {
                    let init = cl.outputs[n].last_value("hls_fmp4_init_filename").unwrap_or("init.mp4").to_owned();
                    if init.contains('/') {
                        let (idir, iname) = split_path(&init);
                        let ik = dir_index(&mut plan, idir);
                        push(&mut plan, ik, RoleKind::Init, iname);
                        let new = format!("{}/{iname}", plan.dirs[ik].scratch);
                        set_last(&mut cl.outputs[n].opts, "hls_fmp4_init_filename", new);
                    } else {
                        push(&mut plan, k, RoleKind::Init, &init);
                    }
                }
            }
            OutputShape::Progressive { .. } | OutputShape::Stream { .. } => {
                push(&mut plan, k, RoleKind::Progressive, name)
            }
            OutputShape::ImageSequence { .. } | OutputShape::SegmentFiles { .. } => {
                push(&mut plan, k, RoleKind::Sequence, name)
            }
            _ => push(&mut plan, k, RoleKind::Single, name),
        }
    }
    for d in &plan.dirs {
        let to = if d.original.is_empty() { String::new() } else { format!("{}/", d.original) };
        replacements.push((format!("{}/", d.scratch), to));
    }
    replacements.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
    Ok(Rewritten { args: cl.to_args(), plan, replacements })
}

fn set_last(opts: &mut [Opt], name: &str, value: String) {
    if let Some(o) = opts.iter_mut().rev().find(|o| o.name() == name) {
        o.value = Some(value);
    }
}

/// `("/a/b", "c.ts")` for `/a/b/c.ts`, `("", "c.ts")` for `c.ts`, `("/", "c")` for `/c`.
fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Applies stderr replacements to one chunk of ffmpeg's output. Works on bytes:
/// a file name in another encoding makes a line invalid UTF-8, and the names to
/// replace are still found in it.
pub fn replace_all(text: &[u8], replacements: &[(String, String)]) -> Vec<u8> {
    let mut out = text.to_vec();
    for (from, to) in replacements {
        let (from, to) = (from.as_bytes(), to.as_bytes());
        if from.is_empty() || !out.windows(from.len()).any(|w| w == from) {
            continue;
        }
        let mut next = Vec::with_capacity(out.len());
        let mut rest = &out[..];
        while let Some(i) = rest.windows(from.len()).position(|w| w == from) {
            next.extend_from_slice(&rest[..i]);
            next.extend_from_slice(to);
            rest = &rest[i + from.len()..];
        }
        next.extend_from_slice(rest);
        out = next;
    }
    out
}

// ---------------------------------------------------------------------------
// Filter graph arguments, two escaping levels deep as libavfilter reads them:
// graphparser.c takes a filter's arguments with av_get_token(buf, "[],;"), then
// process_options() splits them with av_opt_get_key_value(…, "=", ":", …), whose
// values go through av_get_token(…, ":") again.

const WS: &[char] = &[' ', '\n', '\t', '\r'];

/// Port of `av_get_token`: returns the unescaped token and the bytes consumed.
fn get_token(s: &str, term: &[char]) -> (String, usize) {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() && WS.contains(&b[i]) {
        i += 1;
    }
    let mut out: Vec<char> = Vec::new();
    let mut end = 0;
    while i < b.len() && !term.contains(&b[i]) {
        let c = b[i];
        i += 1;
        if c == '\\' && i < b.len() {
            out.push(b[i]);
            i += 1;
            end = out.len();
        } else if c == '\'' {
            while i < b.len() && b[i] != '\'' {
                out.push(b[i]);
                i += 1;
            }
            if i < b.len() {
                i += 1;
                end = out.len();
            }
        } else {
            out.push(c);
        }
    }
    while out.len() > end && out.last().is_some_and(|c| WS.contains(c)) {
        out.pop();
    }
    let consumed: usize = b[..i].iter().map(|c| c.len_utf8()).sum();
    (out.into_iter().collect(), consumed)
}

/// Escapes `s` so that [`get_token`] with `term` gives it back.
fn escape(s: &str, term: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || c == '\'' || term.contains(&c) || WS.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One filter instance's arguments: byte span in the graph string, and its name.
struct FilterArgs {
    name: String,
    span: std::ops::Range<usize>,
}

/// Finds every filter's argument span, walking the graph as graphparser.c does.
fn filters_with_args(graph: &str) -> Result<Vec<FilterArgs>, ()> {
    let mut out = Vec::new();
    let mut i = 0;
    let bytes = graph.as_bytes();
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && b" \n\t\r".contains(&bytes[*i]) {
            *i += 1;
        }
    };
    let skip_labels = |i: &mut usize| -> Result<(), ()> {
        loop {
            skip_ws(i);
            if *i < bytes.len() && bytes[*i] == b'[' {
                let close = graph[*i..].find(']').ok_or(())?;
                *i += close + 1;
            } else {
                return Ok(());
            }
        }
    };
    while i < bytes.len() {
        skip_labels(&mut i)?;
        let (name, used) = get_token(&graph[i..], &['=', ',', ';', '[']);
        i += used;
        let name = name.split('@').next().unwrap_or("").to_owned();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            let (_, used) = get_token(&graph[i..], &['[', ']', ',', ';']);
            out.push(FilterArgs { name, span: i..i + used });
            i += used;
        }
        skip_labels(&mut i)?;
        skip_ws(&mut i);
        if i < bytes.len() {
            if bytes[i] == b',' || bytes[i] == b';' {
                i += 1;
            } else {
                return Err(());
            }
        }
    }
    Ok(out)
}

/// Splits unescaped filter arguments into (key, value) pairs like process_options().
fn key_values(args: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut rest = args;
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || "-_/.".contains(c);
    while !rest.is_empty() {
        let trimmed = rest.trim_start_matches(WS);
        let key_len = trimmed.chars().take_while(|c| is_key_char(*c)).map(char::len_utf8).sum::<usize>();
        let after_key = trimmed[key_len..].trim_start_matches(WS);
        let (key, value_from) = if key_len > 0 && after_key.starts_with('=') {
            (Some(trimmed[..key_len].to_owned()), &after_key[1..])
        } else {
            (None, rest)
        };
        let (value, used) = get_token(value_from, &[':']);
        out.push((key, value));
        rest = &value_from[used..];
        if let Some(r) = rest.strip_prefix(':') {
            rest = r;
        } else {
            break;
        }
    }
    out
}

/// The file-naming values of one filter's (key, value) list: (index, is directory).
fn file_values(filter: &str, kv: &[(Option<String>, String)]) -> Vec<(usize, bool)> {
    let mut out = Vec::new();
    for (i, (key, _)) in kv.iter().enumerate() {
        let positional = key.is_none() && kv[..i].iter().all(|(k, _)| k.is_none());
        for (f, opt, pos, dir) in FILTER_FILE_OPTS {
            if *f != filter {
                continue;
            }
            let hit = match key {
                Some(k) => k == opt,
                None => positional && *pos == Some(i),
            };
            if hit {
                out.push((i, *dir));
            }
        }
    }
    out
}

/// Files named in a graph: (filter, path, is directory).
fn graph_files(graph: &str) -> Result<Vec<(String, String, bool)>, ()> {
    let mut out = Vec::new();
    for f in filters_with_args(graph)? {
        if !FILTER_FILE_OPTS.iter().any(|(name, ..)| *name == f.name) {
            continue;
        }
        let (args, _) = get_token(&graph[f.span.clone()], &['[', ']', ',', ';']);
        let kv = key_values(&args);
        for (i, dir) in file_values(&f.name, &kv) {
            out.push((f.name.clone(), kv[i].1.clone(), dir));
        }
    }
    Ok(out)
}

/// Replaces every file a graph names with `map(path, is_dir)`; `None` keeps it.
fn rewrite_graph_files(graph: &str, map: &mut dyn FnMut(&str, &str, bool) -> Option<String>) -> Result<String, ()> {
    let mut out = String::new();
    let mut last = 0;
    for f in filters_with_args(graph)? {
        if !FILTER_FILE_OPTS.iter().any(|(name, ..)| *name == f.name) {
            continue;
        }
        let (args, _) = get_token(&graph[f.span.clone()], &['[', ']', ',', ';']);
        let mut kv = key_values(&args);
        let hits = file_values(&f.name, &kv);
        if hits.is_empty() {
            continue;
        }
        for (i, dir) in hits {
            if let Some(new) = map(&f.name, &kv[i].1, dir) {
                kv[i].1 = new;
            }
        }
        let rebuilt: Vec<String> = kv
            .iter()
            .map(|(k, v)| match k {
                Some(k) => format!("{k}={}", escape(v, &[':'])),
                None => escape(v, &[':']),
            })
            .collect();
        out.push_str(&graph[last..f.span.start]);
        out.push_str(&escape(&rebuilt.join(":"), &['[', ']', ',', ';']));
        last = f.span.end;
    }
    out.push_str(&graph[last..]);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Output tracking.

/// A file seen in an output scratch directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub dir: usize,
    pub name: String,
    pub size: u64,
    /// Modification time in nanoseconds (any monotonic-enough clock).
    pub mtime: i128,
}

/// How ffmpeg has ended, as far as publishing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Still running.
    Running,
    /// Exited by itself (any code): it closed its files, so what exists is whole.
    Exited,
    /// Killed by a signal: the newest files may be partial and are never published.
    Killed,
}

/// An instruction for the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the file's current content as one complete file (`Atomic`).
    Publish { dir: usize, name: String, original: String },
    /// Start streaming a growing file in place; keep tailing it.
    Stream { dir: usize, name: String, original: String },
    /// The growing file is finished: send what is left, then `Done`.
    Finish { dir: usize, name: String },
}

impl Action {
    pub fn mode(&self) -> WriteMode {
        match self {
            Action::Publish { .. } => WriteMode::Atomic,
            Action::Stream { .. } | Action::Finish { .. } => WriteMode::InPlace,
        }
    }
}

/// Decides, from successive directory listings, what to publish and when.
///
/// Rules (CONTRACT.md §6): a numbered file is complete once a higher-numbered
/// file of the same pattern exists, once a playlist lists it, or once ffmpeg has
/// exited by itself; numbered files are published in index order and each only
/// once; an fMP4 init segment goes out just before the first media segment; a
/// playlist is republished whenever it changes, after the segments it lists; a
/// progressive file is streamed from the moment it exists; anything else is
/// published when ffmpeg exits. Names ending in `.tmp` are ffmpeg's own
/// in-progress files and are never published.
#[derive(Debug)]
pub struct OutputTracker {
    plan: OutputPlan,
    published_seq: BTreeMap<usize, BTreeSet<i64>>,
    published_single: BTreeSet<(usize, String)>,
    playlists: BTreeMap<(usize, String), (u64, i128)>,
    streaming: BTreeSet<(usize, String)>,
    finished: bool,
}

impl OutputTracker {
    pub fn new(plan: OutputPlan) -> OutputTracker {
        OutputTracker {
            plan,
            published_seq: BTreeMap::new(),
            published_single: BTreeSet::new(),
            playlists: BTreeMap::new(),
            streaming: BTreeSet::new(),
            finished: false,
        }
    }

    pub fn plan(&self) -> &OutputPlan {
        &self.plan
    }

    /// What to do now. `read` returns a small file's text (playlists).
    pub fn poll(
        &mut self,
        seen: &[Seen],
        ended: Ended,
        read: &mut dyn FnMut(usize, &str) -> Option<String>,
    ) -> Vec<Action> {
        if self.finished {
            return Vec::new();
        }
        let mut actions = Vec::new();
        let done = ended == Ended::Exited;
        let orig = |plan: &OutputPlan, dir: usize, name: &str| plan.dirs[dir].original_path(name);

        // Names listed in playlists count as complete.
        let mut listed: BTreeSet<String> = BTreeSet::new();
        let mut playlist_texts: Vec<(usize, String, u64, i128, Vec<String>)> = Vec::new();
        for s in seen {
            if self.role(s) == Some(RoleKind::Playlist) {
                let key = (s.dir, s.name.clone());
                // ffmpeg 5.1 rewrites a VOD playlist in place: a read that does not
                // end in a newline caught it mid-write; the next poll sees the rest.
                if self.playlists.get(&key) != Some(&(s.size, s.mtime))
                    && let Some(text) = read(s.dir, &s.name)
                    && (text.ends_with('\n') || ended == Ended::Exited)
                {
                    let names: Vec<String> = text
                        .lines()
                        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                        .map(|l| l.rsplit('/').next().unwrap_or(l).trim().to_owned())
                        .collect();
                    listed.extend(names.iter().cloned());
                    playlist_texts.push((s.dir, s.name.clone(), s.size, s.mtime, names));
                }
            }
        }

        for (p_index, p) in self.plan.patterns.iter().enumerate() {
            match p.role {
                RoleKind::Sequence => {
                    let mut present: Vec<(i64, &Seen)> = seen
                        .iter()
                        .filter(|s| s.dir == p.dir)
                        .filter_map(|s| Some((match_seq(&p.name, &s.name)?, s)))
                        .collect();
                    present.sort_by_key(|(n, _)| *n);
                    let max = present.last().map(|(n, _)| *n);
                    let published = self.published_seq.entry(p_index).or_default();
                    for (n, s) in &present {
                        if published.contains(n) || published.last().is_some_and(|l| n < l) {
                            continue;
                        }
                        let complete = Some(*n) < max || listed.contains(&s.name) || done;
                        if !complete {
                            break;
                        }
                        if published.is_empty() {
                            // The init segment of this output goes first.
                            for init in
                                self.plan.patterns.iter().filter(|q| q.role == RoleKind::Init && q.output == p.output)
                            {
                                if let Some(i) = seen.iter().find(|s| s.dir == init.dir && s.name == init.name)
                                    && self.published_single.insert((i.dir, i.name.clone()))
                                {
                                    actions.push(Action::Publish {
                                        dir: i.dir,
                                        name: i.name.clone(),
                                        original: orig(&self.plan, i.dir, &i.name),
                                    });
                                }
                            }
                        }
                        published.insert(*n);
                        actions.push(Action::Publish {
                            dir: s.dir,
                            name: s.name.clone(),
                            original: orig(&self.plan, s.dir, &s.name),
                        });
                    }
                }
                RoleKind::Progressive => {
                    if let Some(s) = seen.iter().find(|s| s.dir == p.dir && s.name == p.name)
                        && self.streaming.insert((s.dir, s.name.clone()))
                    {
                        actions.push(Action::Stream {
                            dir: s.dir,
                            name: s.name.clone(),
                            original: orig(&self.plan, s.dir, &s.name),
                        });
                    }
                }
                RoleKind::Playlist | RoleKind::Init | RoleKind::Single => {}
            }
        }

        // Playlists after the segments they list. ffmpeg can finish a segment
        // and list it between the directory listing and the playlist read (it
        // runs ahead of real time on buffered input): such a playlist waits for
        // the next poll, which sees the segment, while the job runs. Jellyfin
        // serves a Live TV playlist's segments as they are (§5.7).
        for (dir, name, size, mtime, names) in playlist_texts {
            if ended == Ended::Killed {
                break;
            }
            if ended == Ended::Running && !names.iter().all(|n| self.published_or_foreign(n)) {
                continue;
            }
            self.playlists.insert((dir, name.clone()), (size, mtime));
            actions.push(Action::Publish { dir, name: name.clone(), original: orig(&self.plan, dir, &name) });
        }

        if ended != Ended::Running {
            if done {
                // Everything else that exists, in the order the plan names outputs.
                let mut rest: Vec<&Seen> = seen
                    .iter()
                    .filter(|s| !s.name.ends_with(".tmp"))
                    .filter(|s| match self.role(s) {
                        Some(RoleKind::Sequence | RoleKind::Progressive | RoleKind::Playlist) => false,
                        _ => !self.published_single.contains(&(s.dir, s.name.clone())),
                    })
                    .collect();
                rest.sort_by_key(|s| (s.mtime, s.name.clone()));
                for s in rest {
                    self.published_single.insert((s.dir, s.name.clone()));
                    actions.push(Action::Publish {
                        dir: s.dir,
                        name: s.name.clone(),
                        original: orig(&self.plan, s.dir, &s.name),
                    });
                }
            }
            for (dir, name) in std::mem::take(&mut self.streaming) {
                actions.push(Action::Finish { dir, name });
            }
            self.finished = true;
        }
        actions
    }

    /// Whether a name a playlist lists has been published, or is nothing the
    /// plan numbers (then it is not the tracker's to wait for).
    fn published_or_foreign(&self, name: &str) -> bool {
        let mut numbered = self.plan.patterns.iter().enumerate().filter(|(_, p)| p.role == RoleKind::Sequence);
        numbered.all(|(i, p)| match match_seq(&p.name, name) {
            Some(n) => self.published_seq.get(&i).is_some_and(|done| done.contains(&n)),
            None => true,
        })
    }

    fn role(&self, s: &Seen) -> Option<RoleKind> {
        if s.name.ends_with(".tmp") {
            return None;
        }
        self.plan.patterns.iter().find(|p| p.dir == s.dir && pattern_matches(p, &s.name)).map(|p| p.role)
    }
}

fn pattern_matches(p: &Pattern, name: &str) -> bool {
    match p.role {
        RoleKind::Sequence => match_seq(&p.name, name).is_some(),
        _ => p.name == name,
    }
}

/// The number in `name` if it matches the printf-style `pattern` (one `%d` or
/// `%0Nd`; `%%` is a literal `%`). A pattern without a number matches only itself,
/// as number 0.
pub fn match_seq(pattern: &str, name: &str) -> Option<i64> {
    let mut prefix = String::new();
    let mut chars = pattern.chars().peekable();
    let mut width: Option<usize> = None;
    let mut found = false;
    while let Some(c) = chars.next() {
        if c == '%' && !found {
            if chars.peek() == Some(&'%') {
                chars.next();
                prefix.push('%');
                continue;
            }
            let mut spec = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() {
                    spec.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            if chars.next() != Some('d') {
                return (pattern == name).then_some(0);
            }
            width = spec.parse().ok();
            found = true;
            break;
        }
        prefix.push(c);
    }
    if !found {
        return (pattern == name).then_some(0);
    }
    let suffix: String = chars.collect::<String>().replace("%%", "%");
    let digits = name.strip_prefix(prefix.as_str())?.strip_suffix(suffix.as_str())?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(w) = width
        && digits.len() < w
    {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(args: &str) -> CommandLine {
        let a: Vec<&str> = args.split(' ').collect();
        CommandLine::parse(&a).unwrap()
    }

    #[test]
    fn tokens_like_av_get_token() {
        assert_eq!(get_token("  a\\,b'c,d' ,x", &[',']), ("a,bc,d".to_owned(), 12));
        assert_eq!(get_token("f='/a b/c.srt':x", &[':']), ("f=/a b/c.srt".to_owned(), 14));
        let s = "it's: [a],b";
        let e = escape(s, &[':', '[', ']', ',']);
        assert_eq!(get_token(&e, &[':', '[', ']', ',']).0, s);
    }

    #[test]
    fn finds_subtitle_and_font_files() {
        let g = r"setparams=color_primaries=bt709,scale=trunc(iw/2)*2:-2,subtitles=f='/cfg/subs/a\,b.srt':charenc=UTF-8:fontsdir='/cache/att/x',format=yuv420p";
        let files =
            |g: &str| -> Vec<(String, bool)> { graph_files(g).unwrap().into_iter().map(|(_, p, d)| (p, d)).collect() };
        assert_eq!(files(g), [("/cfg/subs/a,b.srt".to_owned(), false), ("/cache/att/x".to_owned(), true)]);
        assert_eq!(files("subtitles=/m/x.ass"), [("/m/x.ass".to_owned(), false)]);
        assert_eq!(files("[in]drawtext=fontfile=/f.ttf:text=hi[out]"), [("/f.ttf".to_owned(), false)]);
        assert!(graph_files("scale=640:-2,format=yuv420p").unwrap().is_empty());
    }

    #[test]
    fn rewrites_only_file_values() {
        let g = r"scale=640:-2,subtitles=f='/cfg/a b.srt':charenc=UTF-8:fontsdir='/att/x',format=yuv420p";
        let out =
            rewrite_graph_files(g, &mut |_, p, dir| Some(if dir { "/s/d0".into() } else { format!("/s/{}", p.len()) }))
                .unwrap();
        assert_eq!(out, r"scale=640:-2,subtitles=f=/s/12:charenc=UTF-8:fontsdir=/s/d0,format=yuv420p");
        let files: Vec<_> = graph_files(&out).unwrap().into_iter().map(|(_, p, d)| (p, d)).collect();
        assert_eq!(files, [("/s/12".to_owned(), false), ("/s/d0".to_owned(), true)]);
    }

    fn offers(paths: &[&str]) -> Vec<FileOffer> {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| FileOffer { id: i as u32, reference: (*p).into(), entry: None, size: 1, stream: false })
            .collect()
    }

    #[test]
    fn rewrites_jellyfin_hls_for_a_node() {
        let c = cl("-i file:/media/a.mkv -map 0:0 -codec:v:0 libx264 -f hls -hls_time 3 -hls_segment_type fmp4 \
             -hls_fmp4_init_filename abc-1.mp4 -start_number 0 -hls_segment_filename /tc/abc%d.mp4 \
             -hls_playlist_type vod -hls_list_size 0 -y /tc/abc.m3u8");
        let refs = file_refs(&c).unwrap();
        assert_eq!(
            refs,
            [FileRef { path: "/media/a.mkv".into(), dir: false, streamed: true, site: Site::Input(0), network: false }]
        );
        let files = offers(&["/media/a.mkv"]);
        let input = |f: &FileOffer| format!("http://c/api/v1/files/cap/{}", f.id);
        let side = |f: &FileOffer| format!("/scratch/side/{}", f.id);
        let side_dir = |_: &str| "/scratch/side/dir".to_owned();
        let access = Access {
            files: &files,
            input: &input,
            input_options: &|_| Vec::new(),
            side: &side,
            side_dir: &side_dir,
            out_root: "/scratch/out",
        };
        let r = rewrite(&c, &refs, &access).unwrap();
        let joined = r.args.join(" ");
        assert!(joined.starts_with("-i http://c/api/v1/files/cap/0 "), "{joined}");
        // An https relay: the options that make ffmpeg verify the controller go
        // with the input, from the model.
        let tls_input = |f: &FileOffer| format!("https://c/api/v1/files/cap/{}", f.id);
        let tls_options = |url: &str| {
            assert!(url.starts_with("https://c/"), "{url}");
            vec![Opt::new("tls_verify", Some("1")), Opt::new("ca_file", Some("/etc/ca.pem"))]
        };
        let tls = Access { input: &tls_input, input_options: &tls_options, ..access.clone() };
        let joined = rewrite(&c, &refs, &tls).unwrap().args.join(" ");
        assert!(joined.starts_with("-tls_verify 1 -ca_file /etc/ca.pem -i https://c/api/v1/files/cap/0 "), "{joined}");
        assert!(joined.contains("-hls_segment_filename /scratch/out/d0/abc%d.mp4"), "{joined}");
        assert!(joined.ends_with("-y /scratch/out/d0/abc.m3u8"), "{joined}");
        assert_eq!(r.plan.dirs, [OutDir { original: "/tc".into(), scratch: "/scratch/out/d0".into() }]);
        let roles: Vec<_> = r.plan.patterns.iter().map(|p| (p.role, p.name.as_str())).collect();
        assert_eq!(
            roles,
            [(RoleKind::Playlist, "abc.m3u8"), (RoleKind::Sequence, "abc%d.mp4"), (RoleKind::Init, "abc-1.mp4")]
        );
        assert_eq!(
            replace_all(b"Opening '/scratch/out/d0/abc0.mp4' from 'http://c/api/v1/files/cap/0'", &r.replacements),
            b"Opening '/tc/abc0.mp4' from 'file:/media/a.mkv'"
        );
        // Names in another encoding are replaced all the same.
        assert_eq!(replace_all(b"'/scratch/out/d0/\xe9t\xe9.ts'", &r.replacements), b"'/tc/\xe9t\xe9.ts'");
    }

    #[test]
    fn embedded_subtitles_stream_from_the_input() {
        let c = cl("-i /m/movie.mkv -vf subtitles=f=/m/movie.mkv:si=0 -c:v libx264 -y /o/a.mp4");
        let refs = file_refs(&c).unwrap();
        assert!(refs.iter().all(|r| r.streamed), "{refs:?}");
        let files = offers(&["/m/movie.mkv"]);
        let url = |f: &FileOffer| format!("http://c:1/api/v1/files/x/{}", f.id);
        let d = |_: &str| String::new();
        let access = Access {
            files: &files,
            input: &url,
            input_options: &|_| Vec::new(),
            side: &url,
            side_dir: &d,
            out_root: "/s",
        };
        let r = rewrite(&c, &refs, &access).unwrap();
        assert_eq!(r.args[3], r"subtitles=f=http\\://c\\:1/api/v1/files/x/0:si=0");
        assert_eq!(graph_files(&r.args[3]).unwrap()[0].1, "http://c:1/api/v1/files/x/0");
    }

    #[test]
    fn relayed_urls_lose_their_origin_options() {
        let url = "http://localhost:8096/LiveTv/LiveStreamFiles/ab12/stream.ts";
        let args = [
            "-user_agent",
            "Jellyfin/10.11",
            "-headers",
            "X-Token: 1\r\n",
            "-re",
            "-reconnect_streamed",
            "1",
            "-analyzeduration",
            "3000000",
            "-i",
            url,
            "-i",
            "rtsp://cam/x",
            "-c:v",
            "libx264",
            "-f",
            "mpegts",
            "pipe:1",
        ];
        let c = CommandLine::parse(&args).unwrap();
        let refs = file_refs(&c).unwrap();
        assert_eq!(
            refs,
            [FileRef { path: url.into(), dir: false, streamed: true, site: Site::Input(0), network: true }],
            "only http(s) inputs can be relayed"
        );
        let relay = |f: &FileOffer| format!("http://ctl/api/v1/files/cap/{}.ts", f.id);
        let d = |_: &str| String::new();
        let mut files = offers(&[url]);
        files[0].stream = true;
        let none = |_: &str| Vec::new();
        let access =
            Access { files: &files, input: &relay, input_options: &none, side: &relay, side_dir: &d, out_root: "/o" };
        let r = rewrite(&c, &refs, &access).unwrap();
        assert_eq!(
            r.args.join(" "),
            "-re -analyzeduration 3000000 -i http://ctl/api/v1/files/cap/0.ts -i rtsp://cam/x \
             -c:v libx264 -f mpegts pipe:1"
        );
        // Not offered (relay_inputs = "none", or a remote host): the node opens the URL itself.
        let access = Access { files: &[], ..access };
        assert_eq!(rewrite(&c, &refs, &access).unwrap().args, args);
    }

    #[test]
    fn stdout_relative_and_refused_outputs() {
        let c = cl("-i in.mkv -c:v libx264 -f mpegts pipe:1");
        let files = offers(&["in.mkv"]);
        let id = |f: &FileOffer| format!("u{}", f.id);
        let d = |_: &str| String::new();
        let access = Access {
            files: &files,
            input: &id,
            input_options: &|_| Vec::new(),
            side: &id,
            side_dir: &d,
            out_root: "/o",
        };
        let r = rewrite(&c, &file_refs(&c).unwrap(), &access).unwrap();
        assert!(r.plan.stdout);
        assert_eq!(r.args.join(" "), "-i u0 -c:v libx264 -f mpegts pipe:1");

        let c = cl("-i in.mkv -c:v libx264 out.mp4");
        let r = rewrite(&c, &file_refs(&c).unwrap(), &access).unwrap();
        assert_eq!(r.args.join(" "), "-i u0 -c:v libx264 /o/d0/out.mp4");
        assert_eq!(r.plan.dirs[0].original_path("out.mp4"), "out.mp4");
        assert_eq!(replace_all(b"to '/o/d0/out.mp4'", &r.replacements), b"to 'out.mp4'");

        let c = cl("-f concat -safe 0 -i list.txt -c:v libx264 out.mp4");
        assert!(matches!(file_refs(&c), Err(RemoteError::IndirectInput(_))));
    }

    #[test]
    fn sequence_patterns() {
        assert_eq!(match_seq("abc%d.ts", "abc12.ts"), Some(12));
        assert_eq!(match_seq("abc%d.ts", "abc.ts"), None);
        assert_eq!(match_seq("img%03d.jpg", "img007.jpg"), Some(7));
        assert_eq!(match_seq("img%03d.jpg", "img07.jpg"), None);
        assert_eq!(match_seq("a%%%d", "a%5"), Some(5));
        assert_eq!(match_seq("plain.jpg", "plain.jpg"), Some(0));
    }

    fn seen(name: &str, mtime: i128) -> Seen {
        Seen { dir: 0, name: name.into(), size: 10, mtime }
    }

    #[test]
    fn tracker_publishes_segments_in_order_when_complete() {
        let plan = OutputPlan {
            dirs: vec![OutDir { original: "/tc".into(), scratch: "/s/d0".into() }],
            patterns: vec![
                Pattern { dir: 0, role: RoleKind::Playlist, name: "a.m3u8".into(), output: 0 },
                Pattern { dir: 0, role: RoleKind::Sequence, name: "a%d.mp4".into(), output: 0 },
                Pattern { dir: 0, role: RoleKind::Init, name: "a-1.mp4".into(), output: 0 },
            ],
            stdout: false,
        };
        let mut t = OutputTracker::new(plan);
        let mut no_read = |_: usize, _: &str| None;
        let names = |a: Vec<Action>| -> Vec<String> {
            a.into_iter()
                .map(|a| match a {
                    Action::Publish { original, .. } | Action::Stream { original, .. } => original,
                    Action::Finish { name, .. } => format!("finish {name}"),
                })
                .collect()
        };
        assert!(t.poll(&[seen("a-1.mp4", 1), seen("a0.mp4", 2)], Ended::Running, &mut no_read).is_empty());
        let a = t.poll(&[seen("a-1.mp4", 1), seen("a0.mp4", 2), seen("a1.mp4", 3)], Ended::Running, &mut no_read);
        assert_eq!(names(a), ["/tc/a-1.mp4", "/tc/a0.mp4"]);
        // A playlist that lists segment 1 completes it.
        let mut read = |_: usize, n: &str| (n == "a.m3u8").then(|| "#EXTM3U\na0.mp4\na1.mp4\n".to_owned());
        let s = [seen("a-1.mp4", 1), seen("a0.mp4", 2), seen("a1.mp4", 3), seen("a.m3u8", 4), seen("a.m3u8.tmp", 5)];
        assert_eq!(names(t.poll(&s, Ended::Running, &mut read)), ["/tc/a1.mp4", "/tc/a.m3u8"]);
        // Unchanged playlist: nothing new.
        assert!(t.poll(&s, Ended::Running, &mut read).is_empty());
        // ffmpeg finished a2 and listed it after the directory was listed: the
        // playlist waits for the poll that sees a2.
        let mut read = |_: usize, _: &str| Some("#EXTM3U\na0.mp4\na1.mp4\na2.mp4\n".to_owned());
        let s = [seen("a-1.mp4", 1), seen("a0.mp4", 2), seen("a1.mp4", 3), seen("a.m3u8", 5)];
        assert!(t.poll(&s, Ended::Running, &mut read).is_empty());
        let s = [seen("a-1.mp4", 1), seen("a0.mp4", 2), seen("a1.mp4", 3), seen("a2.mp4", 4), seen("a.m3u8", 5)];
        assert_eq!(names(t.poll(&s, Ended::Running, &mut read)), ["/tc/a2.mp4", "/tc/a.m3u8"]);
        let s = [
            seen("a-1.mp4", 1),
            seen("a0.mp4", 2),
            seen("a1.mp4", 3),
            seen("a2.mp4", 4),
            seen("a3.mp4", 6),
            seen("a.m3u8", 7),
        ];
        let mut read = |_: usize, _: &str| Some("#EXTM3U\na0.mp4\na1.mp4\na2.mp4\na3.mp4\n#EXT-X-ENDLIST\n".to_owned());
        assert_eq!(names(t.poll(&s, Ended::Exited, &mut read)), ["/tc/a3.mp4", "/tc/a.m3u8"]);
        assert!(t.poll(&s, Ended::Exited, &mut read).is_empty());
    }

    #[test]
    fn tracker_withholds_partial_files_when_killed() {
        let plan = OutputPlan {
            dirs: vec![OutDir { original: String::new(), scratch: "/s/d0".into() }],
            patterns: vec![
                Pattern { dir: 0, role: RoleKind::Sequence, name: "s%d.ts".into(), output: 0 },
                Pattern { dir: 0, role: RoleKind::Progressive, name: "p.mp4".into(), output: 1 },
            ],
            stdout: false,
        };
        let mut t = OutputTracker::new(plan);
        let mut no_read = |_: usize, _: &str| None;
        let a = t.poll(&[seen("s0.ts", 1), seen("p.mp4", 1)], Ended::Running, &mut no_read);
        assert_eq!(a, [Action::Stream { dir: 0, name: "p.mp4".into(), original: "p.mp4".into() }]);
        let a = t.poll(&[seen("s0.ts", 1), seen("p.mp4", 1), seen("junk", 2)], Ended::Killed, &mut no_read);
        assert_eq!(a, [Action::Finish { dir: 0, name: "p.mp4".into() }]);
    }
}
