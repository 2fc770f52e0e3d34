//! Every line of Jellyfin's command-line corpus (`cmdlines.json`, CONTRACT.md §12):
//! split with .NET's rules, parsed, rendered back byte-identically, and classified
//! as a Jellyfin administrator would expect. The expectations live in
//! `tests/data/corpus-decisions.txt`, one readable line per corpus entry.
//!
//! After a deliberate change of the classifier, regenerate the file with
//! `FFCLUSTER_BLESS=1 cargo test --test corpus` and review the diff.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ffcluster::ffmpeg::decision::{OutputShape, classify_cmdline};
use ffcluster::ffmpeg::{CmdlineError, CommandLine};
use serde::Deserialize;
use support::cluster::{Cluster, names, real, run_ok};
use support::dotnet_args;
use support::jellyfin::{Ffmpeg, Job};
use support::live::{LiveOpts, LiveSource};

#[derive(Deserialize)]
struct Entry {
    kind: String,
    argv_string: String,
    complete: bool,
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// `index | field | field…` lines, comments and blanks skipped.
fn table(name: &str) -> BTreeMap<usize, Vec<String>> {
    let text = std::fs::read_to_string(data(name)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split(" | ").map(|p| p.trim().to_owned());
            let idx = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("bad line in {name}: {l}"));
            (idx, parts.collect())
        })
        .collect()
}

/// Parses one corpus entry, completing a truncated one as the completions file says.
fn parse_entry(idx: usize, e: &Entry, completions: &BTreeMap<usize, Vec<String>>) -> (Vec<String>, CommandLine) {
    let mut argv = dotnet_args::split(&e.argv_string);
    let as_reported = CommandLine::parse(&argv);
    if e.complete {
        let cl = as_reported.unwrap_or_else(|err| panic!("#{idx} {}: {err}", e.kind));
        return (argv, cl);
    }
    if matches!(as_reported, Err(CmdlineError::MissingArgument(_) | CmdlineError::UnrecognizedOption(_))) {
        argv.pop();
    }
    if let Some(tail) = completions.get(&idx) {
        argv.extend(dotnet_args::split(&tail[0]));
    }
    let cl = CommandLine::parse(&argv).unwrap_or_else(|err| panic!("#{idx} {} (completed): {err}", e.kind));
    (argv, cl)
}

#[test]
fn corpus_parses_round_trips_and_matches_golden_decisions() {
    let path = support::corpus_path();
    let entries: Vec<Entry> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(entries.len() >= 32, "corpus at {} has {} entries", path.display(), entries.len());
    let completions = table("corpus-completions.txt");
    let golden = table("corpus-decisions.txt");

    let mut actual = String::new();
    let mut mismatches = Vec::new();
    for (idx, e) in entries.iter().enumerate() {
        let (argv, cl) = parse_entry(idx, e, &completions);
        assert_eq!(cl.to_args(), argv, "#{idx} {}: rendering differs from the argument list", e.kind);
        assert!(!cl.outputs.is_empty(), "#{idx} {}: no output found", e.kind);

        let v = classify_cmdline(&cl);
        let outputs = v.outputs.iter().map(OutputShape::to_string).collect::<Vec<_>>().join(", ");
        let row = vec![e.kind.clone(), v.decision.as_str().to_owned(), v.reason.as_str().to_owned(), outputs];
        let _ = writeln!(actual, "{idx} | {}", row.join(" | "));
        match golden.get(&idx) {
            Some(want) if *want == row => {}
            Some(want) => mismatches.push(format!("#{idx}: expected {want:?}\n      got {row:?}")),
            // Lines added to the corpus later are classified by the same rules.
            None => eprintln!("#{idx}: no expectation recorded for {row:?}"),
        }
    }

    if std::env::var_os("FFCLUSTER_BLESS").is_some() {
        let header = "# What the shim decides for every line of Jellyfin's corpus (cmdlines.json, CONTRACT.md §12).\n\
                      # Regenerate with FFCLUSTER_BLESS=1 cargo test --test corpus, then review the diff.\n\
                      #\n# index | kind (from the corpus) | decision | reason | output shapes\n";
        std::fs::write(data("corpus-decisions.txt"), format!("{header}{actual}")).unwrap();
        return;
    }
    assert!(mismatches.is_empty(), "decisions differ from tests/data/corpus-decisions.txt:\n{}", mismatches.join("\n"));
}

#[test]
fn every_corpus_argument_survives_dotnet_splitting() {
    // Spot checks of CONTRACT.md §1.3 on real lines: quoted paths lose their
    // quotes, filter escapes keep their backslashes, empty "" stays an argument.
    let entries: Vec<Entry> = serde_json::from_str(&std::fs::read_to_string(support::corpus_path()).unwrap()).unwrap();
    let all: Vec<Vec<String>> = entries.iter().map(|e| dotnet_args::split(&e.argv_string)).collect();
    assert!(all.iter().flatten().any(|a| a.starts_with("file:/") && a.contains(' ')), "quoted file: paths with spaces");
    assert!(all.iter().flatten().any(|a| a.contains(r"\,")), "filter escapes survive");
    assert!(all.iter().flatten().all(|a| !a.starts_with("file:\"")), "no quote left on file: inputs");
}

// ---------------------------------------------------------------------------
// The corpus as scenarios (issue 5, item 3): every line stock ffmpeg can run,
// after CONTRACT.md §9's rewrites, runs on generated media of the line's shape,
// once with the real ffmpeg and once through the shim on a two-node cluster.

/// Every option list of a command line: global, per input, per output, trailing.
fn option_groups(cl: &mut CommandLine) -> Vec<&mut Vec<ffcluster::ffmpeg::Opt>> {
    let mut groups = vec![&mut cl.globals, &mut cl.trailing];
    groups.extend(cl.inputs.iter_mut().map(|i| &mut i.opts));
    groups.extend(cl.outputs.iter_mut().map(|o| &mut o.opts));
    groups
}

/// CONTRACT.md §9: jellyfin-ffmpeg-only options made stock-5.1 ones. The test
/// applies them to Jellyfin's lines; the product never rewrites what Jellyfin asks.
fn stock_rewrites(cl: &mut CommandLine) -> Vec<&'static str> {
    let mut done = Vec::new();
    for opts in option_groups(cl) {
        let before = opts.len();
        // Options stock 5.1 lacks, and that change nothing a CPU-only run shows.
        opts.retain(|o| !matches!(o.name(), "vbr" | "readrate_catchup" | "display_rotation" | "hwaccel_flags"));
        if opts.len() != before {
            done.push("dropped -vbr/-readrate_catchup/-display_rotation/-hwaccel_flags");
        }
        for o in opts.iter_mut() {
            let name = o.name().to_owned();
            let Some(v) = o.value.as_mut() else { continue };
            match name.as_str() {
                "codec" | "acodec" if v == "libfdk_aac" => {
                    *v = "aac".into();
                    done.push("libfdk_aac → aac");
                }
                "filter" | "vf" | "af" | "filter_complex" if v.contains(":sub2video=1") => {
                    *v = v.replace(":sub2video=1", "");
                    done.push("subtitles: dropped sub2video=1");
                }
                "filter" | "vf" | "filter_complex" if v.contains("tonemapx=") => {
                    *v = replace_filter(v, "tonemapx", STOCK_TONEMAP);
                    done.push("tonemapx → zscale+tonemap");
                }
                "bsf" | "vbsf" | "absf" => {
                    let kept: Vec<&str> = v
                        .split(',')
                        .filter(|f| {
                            !f.contains("remove_dovi") && !f.contains("remove_hdr10plus") && !f.starts_with("dovi_rpu")
                        })
                        .collect();
                    if kept.join(",") != *v {
                        *v = kept.join(",");
                        done.push("dropped DoVi/HDR10+ bitstream filters");
                    }
                }
                _ => {}
            }
        }
    }
    done.dedup();
    done
}

/// §9's stock replacement for jellyfin-ffmpeg's `tonemapx`.
const STOCK_TONEMAP: &str = "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0:peak=100,zscale=t=bt709:m=bt709:r=tv,format=yuv420p";

/// `graph` with every `name=…` element (up to the next `,`, `;` or `[`) replaced.
fn replace_filter(graph: &str, name: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = graph;
    while let Some(at) = rest.find(&format!("{name}=")) {
        out.push_str(&rest[..at]);
        out.push_str(with);
        let tail = &rest[at..];
        let end = tail.find([',', ';', '[']).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// What this machine's stock ffmpeg has, to tell which lines it can run.
struct Stock {
    encoders: BTreeSet<String>,
    filters: BTreeSet<String>,
}

impl Stock {
    fn read() -> Stock {
        let names = |what: &str, skip_flags: usize| -> BTreeSet<String> {
            let out = run_ok(Command::new(real("ffmpeg")).args(["-hide_banner", what]));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            // Rows are ` FLAGS name …` after a ` ------` ruler (encoders) or a
            // legend (filters); a row's flags column never contains `=`.
            text.lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    let flags = w.next()?;
                    let name = w.next()?;
                    (flags.len() == skip_flags && !flags.contains('=') && !l.contains("= ")).then(|| name.to_owned())
                })
                .collect()
        };
        Stock { encoders: names("-encoders", 6), filters: names("-filters", 3) }
    }

    /// Why stock ffmpeg on a CPU-only machine cannot run `v`'s job, if it can't.
    fn cannot_run(&self, v: &ffcluster::ffmpeg::decision::Verdict) -> Option<String> {
        let hw = ffcluster::hardware::hardware_needs(&v.needs);
        if !hw.is_empty() {
            return Some(format!("needs hardware: {}", hw.join(", ")));
        }
        let missing: Vec<String> =
            (v.needs.encoders.iter().filter(|e| !self.encoders.contains(*e)).map(|e| format!("encoder {e}")))
                .chain(v.needs.filters.iter().filter(|f| !self.filters.contains(*f)).map(|f| format!("filter {f}")))
                .collect();
        (!missing.is_empty()).then(|| format!("not in stock ffmpeg: {}", missing.join(", ")))
    }
}

/// Media of the shape a line's input has: what its options imply about it.
#[derive(Debug, Clone)]
struct Shape {
    /// File extension of the generated input (`mkv`, `mp4`, `mp3`, `flac`, `ts`).
    ext: String,
    video: Option<&'static str>,
    audio: &'static str,
    channels: u32,
    subtitles: usize,
    attachments: usize,
    seconds: u32,
    /// A live source served over HTTP instead of a file.
    live: bool,
    interlaced: bool,
}

fn shape_of(cl: &CommandLine, input: usize) -> Shape {
    let i = &cl.inputs[input];
    let opts = || cl.outputs.iter().flat_map(|o| o.opts.iter());
    let values = |name: &'static str| opts().filter(move |o| o.name() == name).filter_map(|o| o.value.as_deref());
    let filters: String =
        values("filter").chain(values("vf")).chain(values("filter_complex")).collect::<Vec<_>>().join(";");
    let raw = i.url.raw.trim_start_matches("file:");
    let bracketed = raw.starts_with('[') && raw.ends_with(']');
    let live = i.url.is_network() || bracketed;
    let ext = match i.last_value("f").unwrap_or_default() {
        f if f.starts_with("matroska") => "mkv".to_owned(),
        f if f.starts_with("mov") => "mp4".to_owned(),
        "mpegts" => "ts".to_owned(),
        _ => Path::new(raw).extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_else(|| "mkv".into()),
    };
    let audio_only = matches!(ext.as_str(), "mp3" | "flac" | "m4a" | "ogg" | "opus" | "wav");
    // A copied video stream keeps its codec, which the bitstream filter or tag names.
    let bsf: String = values("bsf").chain(values("vbsf")).chain(values("tag")).collect::<Vec<_>>().join(",");
    let video = if audio_only {
        None
    } else if bsf.contains("hevc") || bsf.contains("hvc1") {
        Some("libx265")
    } else {
        Some("libx264")
    };
    let audio = match ext.as_str() {
        "mp3" => "libmp3lame",
        "flac" => "flac",
        _ => "aac",
    };
    let channels = values("ac").filter_map(|v| v.parse().ok()).max().unwrap_or(2).max(2);
    // `subtitles='<this input>:si=N'` burns the input's own subtitle stream N in.
    let subtitles = if filters.contains("subtitles=") && filters.contains(raw) {
        filters
            .split("si=")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(0)
            + 1
    } else {
        0
    };
    let streams = 1 + usize::from(video.is_some()) + subtitles;
    let attachments = i
        .opts_named("dump_attachment")
        .filter_map(|o| o.spec()?.parse::<usize>().ok())
        .map(|n| (n + 1).saturating_sub(streams))
        .max()
        .unwrap_or(0);
    let seek = i.last_value("ss").and_then(ffcluster::plan::parse_time).unwrap_or(0.0);
    Shape {
        ext,
        video,
        audio,
        channels,
        subtitles,
        attachments,
        seconds: (seek as u32 + 20).max(20),
        live,
        interlaced: filters.contains("yadif") || filters.contains("bwdif"),
    }
}

/// Writes a file of `shape` at `path`: a moving test pattern with a 1 s GOP
/// (so remuxes cut where Jellyfin's keyframe-aligned playlists expect), a tone,
/// subtitle events and font-like attachments as asked.
fn generate(shape: &Shape, path: &Path) {
    let dir = path.parent().unwrap();
    let s = shape.seconds;
    // Long inputs exist only to be seeked into: keep them cheap.
    let (size, fps) = if s > 60 { ("160x90", 6) } else { ("320x180", 24) };
    let mut c = Command::new(real("ffmpeg"));
    c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    let mut inputs = 0usize;
    if shape.video.is_some() {
        c.args(["-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate={fps}:duration={s}")]);
        inputs += 1;
    }
    let layout = if shape.channels >= 6 { "5.1" } else { "stereo" };
    c.args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={s}")]);
    let audio_in = inputs;
    for n in 0..shape.subtitles {
        let srt = dir.join(format!("subs{n}.srt"));
        let mut text = String::new();
        for k in 0..s / 2 {
            let _ = writeln!(
                text,
                "{}\n00:{:02}:{:02},000 --> 00:{:02}:{:02},900\nLine {k}\n",
                k + 1,
                2 * k / 60,
                2 * k % 60,
                (2 * k + 1) / 60,
                (2 * k + 1) % 60
            );
        }
        std::fs::write(&srt, text).unwrap();
        c.arg("-i").arg(&srt);
    }
    if let Some(v) = shape.video {
        c.args(["-map", "0:v", "-c:v", v, "-preset", "ultrafast", "-pix_fmt", "yuv420p"]);
        c.args(["-g", &fps.to_string(), "-keyint_min", &fps.to_string()]);
        if v == "libx265" {
            c.args(["-x265-params", "log-level=error"]);
        }
        if shape.interlaced {
            c.args(["-flags", "+ildct+ilme", "-field_order", "tt"]);
        }
    }
    c.args([
        "-map",
        &format!("{audio_in}:a"),
        "-c:a",
        shape.audio,
        "-af",
        &format!("aformat=channel_layouts={layout}"),
    ]);
    for n in 0..shape.subtitles {
        c.args([
            "-map",
            &format!("{}:s", audio_in + 1 + n),
            "-c:s",
            if shape.ext == "mp4" { "mov_text" } else { "ass" },
        ]);
    }
    for n in 0..shape.attachments {
        let font = dir.join(format!("font{n}.ttf"));
        std::fs::write(&font, format!("not really a font, attachment {n}\n").repeat(64)).unwrap();
        c.arg("-attach").arg(&font).args([&format!("-metadata:s:t:{n}"), "mimetype=application/x-truetype-font"]);
    }
    c.arg(path);
    run_ok(&mut c);
}

/// The last path component, for Unix and Windows paths alike.
fn base_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// Points the line's inputs at generated media and its outputs into `out`.
fn relocate(cl: &mut CommandLine, inputs: &[String], out: &Path) {
    let originals: Vec<String> = cl.inputs.iter().map(|i| i.url.raw.trim_start_matches("file:").to_owned()).collect();
    for (i, new) in cl.inputs.iter_mut().zip(inputs) {
        i.url = ffcluster::ffmpeg::url::Url::parse(new);
    }
    let into = |v: &str| out.join(base_name(v)).display().to_string();
    for o in &mut cl.outputs {
        if o.url.local_path().is_some() && !matches!(o.url.raw.as_str(), "null" | "/dev/null" | "-") {
            o.url = ffcluster::ffmpeg::url::Url::parse(&into(o.url.raw.trim_start_matches("file:")));
        }
    }
    for o in option_groups(cl).into_iter().flatten() {
        let name = o.name().to_owned();
        let Some(v) = o.value.as_mut() else { continue };
        match name.as_str() {
            "hls_segment_filename" | "segment_list" | "dump_attachment" if !v.is_empty() => *v = into(v),
            _ => {
                for (orig, new) in originals.iter().zip(inputs) {
                    if !orig.is_empty() && v.contains(orig.as_str()) {
                        *v = v.replace(orig.as_str(), new.trim_start_matches("file:"));
                    }
                }
            }
        }
    }
}

/// What one output file is, in comparable form.
#[derive(Debug, Clone, PartialEq)]
enum Summary {
    /// A playlist: (URI, `#EXTINF` duration) per segment, and whether it ended.
    Playlist(Vec<(String, f64)>, bool),
    /// Media that decodes: (codec type, codec name, frames decoded) per stream.
    Media(Vec<(String, String, u64)>),
    /// Anything else (attachments, files ffprobe cannot read): length and hash.
    Bytes(usize, u64),
}

fn playlist(text: &str) -> (Vec<(String, f64)>, bool, Option<String>) {
    let mut segs = Vec::new();
    let mut dur = None;
    let mut map = None;
    for l in text.lines() {
        if let Some(d) = l.strip_prefix("#EXTINF:") {
            dur = d.split(',').next().and_then(|d| d.parse().ok());
        } else if let Some(m) = l.strip_prefix("#EXT-X-MAP:URI=") {
            map = Some(m.trim_matches('"').to_owned());
        } else if !l.starts_with('#') && !l.is_empty() {
            segs.push((l.to_owned(), dur.take().unwrap_or(f64::NAN)));
        }
    }
    (segs, text.contains("#EXT-X-ENDLIST"), map)
}

/// Decodes `path` fully (with `init` in front, for an fMP4 fragment).
fn media(path: &Path, init: Option<&Path>) -> Option<Vec<(String, String, u64)>> {
    let probe_path = match init {
        Some(init) => {
            let joined = path.with_extension("joined.mp4");
            let mut all = std::fs::read(init).ok()?;
            all.extend(std::fs::read(path).ok()?);
            std::fs::write(&joined, all).ok()?;
            joined
        }
        None => path.to_path_buf(),
    };
    let out = Command::new(real("ffprobe"))
        .args(["-v", "error", "-count_frames", "-show_entries", "stream=codec_type,codec_name,nb_read_frames"])
        .args(["-of", "csv=p=0"])
        .arg(&probe_path)
        .output()
        .unwrap();
    if init.is_some() {
        let _ = std::fs::remove_file(&probe_path);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let streams: Vec<(String, String, u64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let [name, kind, frames] = f.as_slice() else { return None };
            Some(((*kind).to_owned(), (*name).to_owned(), frames.parse().unwrap_or(0)))
        })
        .filter(|(kind, _, _)| kind == "video" || kind == "audio")
        .collect();
    (out.status.success() && !streams.is_empty()).then_some(streams)
}

/// Every file `dir` holds, summarised.
fn summarise(dir: &Path) -> BTreeMap<String, Summary> {
    let mut inits = BTreeMap::new();
    let names = names(dir);
    for n in names.iter().filter(|n| n.ends_with(".m3u8")) {
        let (segs, _, map) = playlist(&std::fs::read_to_string(dir.join(n)).unwrap());
        if let Some(map) = map {
            for (uri, _) in segs {
                inits.insert(base_name(&uri).to_owned(), base_name(&map).to_owned());
            }
        }
    }
    names
        .iter()
        .map(|n| {
            let path = dir.join(n);
            let s = if n.ends_with(".m3u8") {
                let (segs, ended, _) = playlist(&std::fs::read_to_string(&path).unwrap());
                Summary::Playlist(segs, ended)
            } else if let Some(m) = media(&path, inits.get(n).map(|i| dir.join(i)).as_deref()) {
                Summary::Media(m)
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let hash = bytes
                    .iter()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
                Summary::Bytes(bytes.len(), hash)
            };
            (n.clone(), s)
        })
        .collect()
}

/// The first difference that Jellyfin could notice between two runs' outputs,
/// naming the file and field. A live run is stopped by the wall clock, so only
/// what both wrote is compared, and its last segments (cut by `q`) are not.
fn output_difference(
    direct: &BTreeMap<String, Summary>,
    cluster: &BTreeMap<String, Summary>,
    live: bool,
) -> Option<String> {
    let names = |m: &BTreeMap<String, Summary>| m.keys().cloned().collect::<Vec<_>>();
    if !live && names(direct) != names(cluster) {
        return Some(format!("files: direct {:?}, cluster {:?}", names(direct), names(cluster)));
    }
    // The segment each live run was writing when `q` came ends where the clock cut it.
    let cut: BTreeSet<&str> = [direct, cluster]
        .iter()
        .flat_map(|m| m.values())
        .filter_map(|s| match s {
            Summary::Playlist(segs, _) if live => segs.last().map(|(uri, _)| base_name(uri)),
            _ => None,
        })
        .collect();
    for (name, d) in direct {
        if cut.contains(name.as_str()) {
            continue;
        }
        let Some(c) = cluster.get(name) else {
            if live && !matches!(d, Summary::Playlist(..)) {
                continue;
            }
            return Some(format!("{name}: missing from the cluster's output"));
        };
        match (d, c) {
            (Summary::Playlist(a, a_end), Summary::Playlist(b, b_end)) => {
                if !live && (a.len() != b.len() || a_end != b_end) {
                    return Some(format!(
                        "{name}: {} segments (ended {a_end}) direct, {} (ended {b_end}) cluster",
                        a.len(),
                        b.len()
                    ));
                }
                // How far each live run got depends on the CPU it had; what both
                // wrote must agree, and each must have got somewhere.
                if live && a.len().min(b.len()) < 3 {
                    return Some(format!(
                        "{name}: {} segments direct, {} cluster (live: 3 or more each)",
                        a.len(),
                        b.len()
                    ));
                }
                let common = a.len().min(b.len()).saturating_sub(if live { 1 } else { 0 });
                for ((ua, da), (ub, db)) in a.iter().zip(b).take(common) {
                    if ua != ub || (da - db).abs() > 0.05 {
                        return Some(format!("{name}: segment {ua} {da}s direct, {ub} {db}s cluster"));
                    }
                }
            }
            (Summary::Media(a), Summary::Media(b)) => {
                let kinds =
                    |m: &[(String, String, u64)]| m.iter().map(|(k, n, _)| format!("{k}:{n}")).collect::<Vec<_>>();
                if kinds(a) != kinds(b) {
                    return Some(format!("{name}: streams {:?} direct, {:?} cluster", kinds(a), kinds(b)));
                }
                for ((kind, _, fa), (_, _, fb)) in a.iter().zip(b) {
                    // Split output may move one frame across a segment boundary (never
                    // in total); a live run ends where the clock stopped it.
                    let slack = if live {
                        (fa.max(fb) / 3).max(2)
                    } else if kind == "video" {
                        1
                    } else {
                        2
                    };
                    if fa.abs_diff(*fb) > slack {
                        return Some(format!("{name}: {kind} frames {fa} direct, {fb} cluster"));
                    }
                }
            }
            (a, b) if a != b => return Some(format!("{name}: {a:?} direct, {b:?} cluster")),
            _ => {}
        }
    }
    if !live {
        let total = |m: &BTreeMap<String, Summary>| -> u64 {
            m.values()
                .filter_map(|s| match s {
                    Summary::Media(v) => {
                        Some(v.iter().filter(|(k, _, _)| k == "video").map(|(_, _, f)| f).sum::<u64>())
                    }
                    _ => None,
                })
                .sum()
        };
        if total(direct) != total(cluster) {
            return Some(format!("video frames in all files: {} direct, {} cluster", total(direct), total(cluster)));
        }
    }
    None
}

/// How long a live line runs before Jellyfin's `q` (its segments are 3 s).
const LIVE_SECONDS: u64 = 14;

/// The shim's modes each line runs in: the default, where the shim decides
/// (local, whole or split), and `whole`, which sends even the lines it would
/// keep local (remuxes, audio) to a node.
const MODES: [&str; 2] = ["auto", "whole"];

/// One runnable line, ready to run directly and through the shim in each mode.
struct Scenario {
    idx: usize,
    kind: String,
    live: bool,
    /// The classifier's decision for the rewritten line (`local`, `whole`, `split`).
    decision: &'static str,
    /// The rewritten line for the direct run and for each mode, each with its
    /// own output directory.
    direct: (String, PathBuf),
    modes: Vec<(String, PathBuf)>,
    _sources: Vec<LiveSource>,
}

/// How one run ended and what it left.
struct Ran {
    code: Option<i32>,
    outputs: BTreeMap<String, Summary>,
    last_lines: Vec<String>,
}

fn run_one(ff: &Ffmpeg, arguments: &str, dir: &Path, live: bool) -> Ran {
    let mut job = Job::launch(ff, arguments);
    let code = if live {
        // ffmpeg reads no key while it probes the input, which on a live source
        // takes as long as the stream needs to fill the probe: Jellyfin waits for
        // output before it can stop anything, and so does this.
        let deadline = Instant::now() + Duration::from_secs(60);
        while names(dir).is_empty() && !job.exited() {
            assert!(Instant::now() < deadline, "no output after 60 s: {arguments}");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(LIVE_SECONDS));
        let stopped = job.stop();
        assert!(stopped.exited_after_q, "`q` did not stop {arguments} within 5 s");
        stopped.code
    } else {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !job.exited() {
            assert!(Instant::now() < deadline, "still running after 300 s: {arguments}");
            std::thread::sleep(Duration::from_millis(50));
        }
        job.stop().code
    };
    let lines = job.log.lock().unwrap().lines.clone();
    Ran { code, outputs: summarise(dir), last_lines: lines.iter().rev().take(6).rev().cloned().collect() }
}

fn prepare(idx: usize, kind: &str, argv: &[String], root: &Path) -> Result<Scenario, String> {
    let mut cl = CommandLine::parse(argv).map_err(|e| format!("does not parse: {e}"))?;
    let rewrites = stock_rewrites(&mut cl);
    let v = classify_cmdline(&cl);
    if let Some(why) = STOCK.with(|s| s.cannot_run(&v)) {
        return Err(why);
    }
    let dir = root.join(format!("line{idx}"));
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let mut sources = Vec::new();
    let mut inputs = Vec::new();
    let mut live = false;
    for n in 0..cl.inputs.len() {
        let shape = shape_of(&cl, n);
        if shape.live {
            live = true;
            let opts = LiveOpts { interlaced: shape.interlaced, audio_channels: shape.channels, ..LiveOpts::default() };
            let source = LiveSource::start(opts);
            inputs.push(source.url());
            sources.push(source);
        } else {
            let path = dir.join("in").join(format!("input{n}.{}", shape.ext));
            generate(&shape, &path);
            let prefix = if cl.inputs[n].url.raw.starts_with("file:") { "file:" } else { "" };
            inputs.push(format!("{prefix}{}", path.display()));
        }
    }
    let run = |name: &str| {
        let out = dir.join(name);
        std::fs::create_dir_all(&out).unwrap();
        let mut each = cl.clone();
        relocate(&mut each, &inputs, &out);
        let argv = each.to_args();
        let s = dotnet_args::join(&argv);
        assert_eq!(dotnet_args::split(&s), argv);
        (s, out)
    };
    let direct = run("direct");
    let modes = MODES.iter().map(|m| run(m)).collect();
    eprintln!("#{idx} {kind}: rewrites {rewrites:?}\n    {}", direct.0);
    Ok(Scenario { idx, kind: kind.to_owned(), live, decision: v.decision.as_str(), direct, modes, _sources: sources })
}

/// `ffcluster_jobs_total` summed per mode: jobs the controller has finished.
fn jobs_by_mode(c: &Cluster) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in c.metrics().lines().filter(|l| l.starts_with("ffcluster_jobs_total{")) {
        let mode = l.split("mode=\"").nth(1).and_then(|m| m.split('"').next()).unwrap_or_default();
        let v: f64 = l.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(mode.to_owned()).or_insert(0.0) += v;
    }
    out
}

thread_local! {
    static STOCK: Stock = Stock::read();
}

/// The first difference between the direct run and one through the shim.
fn difference(s: &Scenario, direct: &Ran, (mode, dir): (&str, &Path), cluster: &Ran) -> Option<String> {
    let diff = if direct.code != cluster.code {
        Some(format!("exit code: direct {:?}, cluster {:?}", direct.code, cluster.code))
    } else if direct.code != Some(0) {
        // The line fails on stock ffmpeg too: Jellyfin must see the same error,
        // whose paths differ only by the run's own output directory.
        let error = |r: &Ran, dir: &Path| {
            let line = r.last_lines.iter().rev().find(|l| !l.trim().is_empty())?;
            Some(line.replace(&dir.display().to_string(), "<out>"))
        };
        let (d, c) = (error(direct, &s.direct.1), error(cluster, dir));
        (d != c)
            .then(|| format!("error text: direct {d:?}, cluster {c:?}"))
            .or_else(|| output_difference(&direct.outputs, &cluster.outputs, s.live))
    } else if direct.outputs.is_empty() {
        Some("the direct run wrote nothing: the scenario tests nothing".to_owned())
    } else {
        output_difference(&direct.outputs, &cluster.outputs, s.live)
    };
    diff.map(|d| {
        format!(
            "#{} {} (FFCLUSTER_MODE={mode}): {d}\n  direct stderr tail: {:?}\n  cluster stderr tail: {:?}",
            s.idx, s.kind, direct.last_lines, cluster.last_lines
        )
    })
}

/// Runs one scenario with the real ffmpeg and through the shim in each mode,
/// all at once (they share nothing but the CPU); the differences Jellyfin
/// could notice.
fn compare(s: &Scenario, shim: &Ffmpeg) -> Vec<String> {
    let (direct, modes) = std::thread::scope(|t| {
        let d = t.spawn(|| run_one(&Ffmpeg::direct(), &s.direct.0, &s.direct.1, s.live));
        let m: Vec<_> = MODES
            .iter()
            .zip(&s.modes)
            .map(|(mode, (args, dir))| {
                let ff = shim.clone().env("FFCLUSTER_MODE", Some(mode));
                t.spawn(move || run_one(&ff, args, dir, s.live))
            })
            .collect();
        (d.join().unwrap(), m.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>())
    });
    if direct.code != Some(0) {
        eprintln!("#{} direct stderr tail: {:?}", s.idx, direct.last_lines);
    }
    let mut out = Vec::new();
    for ((mode, (_, dir)), ran) in MODES.iter().zip(&s.modes).zip(&modes) {
        eprintln!(
            "#{} {} ({mode}): exit direct {:?} cluster {:?}; {} files direct, {} cluster",
            s.idx,
            s.kind,
            direct.code,
            ran.code,
            direct.outputs.len(),
            ran.outputs.len()
        );
        out.extend(difference(s, &direct, (mode, dir), ran));
    }
    out
}

#[test]
fn every_runnable_corpus_line_gives_jellyfin_the_same_result_through_the_cluster() {
    let entries: Vec<Entry> = serde_json::from_str(&std::fs::read_to_string(support::corpus_path()).unwrap()).unwrap();
    let completions = table("corpus-completions.txt");
    let golden = table("corpus-scenarios.txt");
    let root = tempfile::tempdir().unwrap();

    let mut plan = String::new();
    let mut scenarios = Vec::new();
    let mut mismatches = Vec::new();
    // FFCLUSTER_CORPUS_LINES=3,17 runs only those lines (when debugging one).
    let only: Option<Vec<usize>> = std::env::var("FFCLUSTER_CORPUS_LINES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    for (idx, e) in entries.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&idx)) {
            continue;
        }
        let (argv, _) = parse_entry(idx, e, &completions);
        let verdict = match prepare(idx, &e.kind, &argv, root.path()) {
            Ok(s) => {
                scenarios.push(s);
                "runs".to_owned()
            }
            Err(why) => format!("not run: {why}"),
        };
        let _ = writeln!(plan, "{idx} | {} | {verdict}", e.kind);
        match golden.get(&idx) {
            Some(want) if *want == [e.kind.clone(), verdict.clone()] => {}
            Some(want) => mismatches.push(format!("#{idx}: expected {want:?}, got {:?}", [&e.kind, &verdict])),
            // Lines added to the corpus later run (or not) by the same rules.
            None => eprintln!("#{idx} {}: {verdict} (no expectation recorded)", e.kind),
        }
    }
    if std::env::var_os("FFCLUSTER_BLESS").is_some() && only.is_none() {
        let header = "# Which corpus lines run as scenarios on stock ffmpeg (CONTRACT.md §9 rewrites applied by the test).\n\
                      # Regenerate with FFCLUSTER_BLESS=1 cargo test --test corpus, then review the diff.\n\
                      #\n# index | kind (from the corpus) | runs, or why not\n";
        std::fs::write(data("corpus-scenarios.txt"), format!("{header}{plan}")).unwrap();
    } else {
        assert!(
            mismatches.is_empty(),
            "runnability differs from tests/data/corpus-scenarios.txt:\n{}",
            mismatches.join("\n")
        );
    }
    assert!(!scenarios.is_empty(), "no corpus line is runnable: the scenarios test nothing");

    let c = Cluster::start(2);
    c.wait_nodes(2, Duration::from_secs(10));
    let shim = Ffmpeg::from_command(&c.shim()).env("FFCLUSTER_MODE", None);
    let started = Instant::now();
    // Files first, one at a time; the live lines, paced by their sources, together.
    let (live, files): (Vec<&Scenario>, Vec<&Scenario>) = scenarios.iter().partition(|s| s.live);
    let mut failures = Vec::new();
    for s in files {
        let before = jobs_by_mode(&c);
        failures.extend(compare(s, &shim));
        // A line the classifier sends to the cluster must reach the controller in
        // both modes (`whole` also sends most local ones; which is the shim's
        // business). The controller counts a job when its end reaches it, just
        // after the shim's.
        let expected = if s.decision == "local" { 0.0 } else { 2.0 };
        let total = |m: &BTreeMap<String, f64>| m.values().sum::<f64>();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut after = jobs_by_mode(&c);
        while total(&after) - total(&before) < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            after = jobs_by_mode(&c);
        }
        let ran: BTreeMap<&String, f64> =
            after.iter().map(|(m, n)| (m, n - before.get(m).unwrap_or(&0.0))).filter(|(_, n)| *n > 0.0).collect();
        eprintln!("#{} controller jobs by mode: {ran:?} (classified {})", s.idx, s.decision);
        if total(&after) - total(&before) < expected {
            failures.push(format!(
                "#{} {}: classified {}, so {expected} controller jobs were due; it counted {ran:?}",
                s.idx, s.kind, s.decision
            ));
        }
    }
    failures.extend(std::thread::scope(|t| {
        let running: Vec<_> = live.iter().map(|s| t.spawn(|| compare(s, &shim))).collect();
        running.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<_>>()
    }));
    eprintln!("{} corpus scenarios in {:.1} s", scenarios.len(), started.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} of {} corpus scenarios differ:\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n")
    );
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
}
