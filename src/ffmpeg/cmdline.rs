//! An ffmpeg argument list split into option groups the way ffmpeg splits it.
//!
//! This is a port of `split_commandline()` from `fftools/cmdutils.c` (identical in
//! ffmpeg 5.1 to 7.1 for everything that matters here):
//!
//! * a lone `--` is dropped, and the argument after it is always an output URL;
//! * an argument that does not start with `-`, or is exactly `-`, closes the current
//!   group as an **output** (the "unnamed group separator");
//! * `-i URL` closes the current group as an **input** (`-dec` closes a 7.0+ loopback
//!   decoder group, ffmpeg 7.0+);
//! * a known option takes the next argument if the table says so (`Exit` options
//!   take it unconditionally, even when it looks like an option);
//! * global options go to the global group wherever they are written, per-file
//!   options to the group being built;
//! * an unknown option is an AVOption (codec, format, scaler or filter private
//!   option) and takes the next argument as its value; only if that fails does
//!   ffmpeg try the `-noNAME` form of a boolean.
//!
//! Every element remembers where it was written, so [`CommandLine::to_args`] gives
//! back the identical argument list; elements added by a planner are placed where
//! ffmpeg would accept them (globals first, per-file options before their file).

use serde::Serialize;

use super::options::{ArgKind, OptionDef, Scope, canonical_name, find_ffmpeg_option};
use super::url::Url;

/// Errors for argument lists that ffmpeg itself would refuse while splitting.
///
/// "We will not distribute this" is never an error: that is a
/// [`Decision`](super::decision::Decision).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// An option that needs a value was the last argument.
    #[error("Missing argument for option '{0}'.")]
    MissingArgument(String),
    /// `-name` with nothing after it that is neither a known option nor `-no<bool>`.
    #[error("Unrecognized option '{0}'.")]
    UnrecognizedOption(String),
}

/// Which program an invocation was addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Program {
    Ffmpeg,
    Ffprobe,
}

impl Program {
    /// Derives the program from the name the binary was invoked as (`argv[0]`):
    /// anything whose file stem is `ffprobe` (`ffprobe`, `ffprobe.exe`,
    /// `/opt/shim/ffprobe`) is ffprobe, everything else ffmpeg.
    pub fn from_argv0(argv0: &str) -> Program {
        let base = argv0.rsplit(['/', '\\']).next().unwrap_or(argv0);
        let stem = base.strip_suffix(".exe").unwrap_or(base);
        if stem == "ffprobe" { Program::Ffprobe } else { Program::Ffmpeg }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Program::Ffmpeg => "ffmpeg",
            Program::Ffprobe => "ffprobe",
        }
    }
}

/// One option as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opt {
    /// The option as written, without its leading dash: `codec:v:0`, `noaccurate_seek`,
    /// `x264opts:0`.
    pub key: String,
    /// The value it consumed, if any (`None` for booleans, flags and a trailing `-h`).
    pub value: Option<String>,
    /// Whether this is the `-noNAME` form of a boolean.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub negated: bool,
    /// `true` when the option is not in ffmpeg's own table: a codec, format, filter,
    /// scaler or resampler AVOption such as `preset`, `crf` or `hls_time`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub avoption: bool,
    #[serde(skip)]
    def: Option<&'static OptionDef>,
    #[serde(skip)]
    pos: Option<usize>,
}

impl Opt {
    /// Builds an option the way the parser would have read it from `-key [value]`.
    pub fn new(key: impl Into<String>, value: Option<impl Into<String>>) -> Opt {
        let key = key.into();
        let (def, negated) = lookup(&key);
        Opt { avoption: def.is_none(), key, value: value.map(Into::into), negated, def, pos: None }
    }

    /// The same option and value under another key, rendered where this one
    /// was written (an option renamed by a node's argument translation).
    pub fn with_key(&self, key: impl Into<String>) -> Opt {
        Opt { pos: self.pos, ..Opt::new(key, self.value.clone()) }
    }

    /// The option's name without stream specifier or `no` prefix, aliases resolved:
    /// `codec` for `codec:v:0` and `c:v`, `accurate_seek` for `noaccurate_seek`.
    pub fn name(&self) -> &str {
        match self.def {
            Some(def) => canonical_name(def.name),
            None => self.key.split(':').next().unwrap_or(&self.key),
        }
    }

    /// The stream specifier after the first `:`, if any (`v:0` for `codec:v:0`).
    pub fn spec(&self) -> Option<&str> {
        self.key.split_once(':').map(|(_, spec)| spec)
    }

    /// The table entry, for options ffmpeg's CLI defines itself.
    pub fn def(&self) -> Option<&'static OptionDef> {
        self.def
    }

    /// Whether a boolean option is on: `-copyts` yes, `-nocopyts` no. (Booleans take
    /// no value on the command line: in `-copyts 0` the `0` is an output file.)
    pub fn is_on(&self) -> bool {
        !self.negated
    }

    fn tokens(&self) -> Vec<String> {
        std::iter::once(format!("-{}", self.key)).chain(self.value.clone()).collect()
    }
}

/// What the group separator was for an input-like group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// `-i URL`
    File,
    /// `-dec SPEC` (ffmpeg 7.0+ loopback decoder)
    Decoder,
}

/// The options that precede one `-i` and the URL it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    pub kind: InputKind,
    pub opts: Vec<Opt>,
    pub url: Url,
    #[serde(skip)]
    pos: Option<usize>,
}

/// The options that precede one output URL and the URL itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    pub opts: Vec<Opt>,
    pub url: Url,
    /// The URL was written right after `--`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_dashdash: bool,
    #[serde(skip)]
    pos: Option<usize>,
}

macro_rules! group_accessors {
    ($ty:ty) => {
        impl $ty {
            /// Options of this group with the given name (stream specifiers ignored), in order.
            pub fn opts_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Opt> + 'a {
                self.opts.iter().filter(move |o| o.name() == name)
            }

            /// The value of the last option with this name: ffmpeg lets a later
            /// occurrence override an earlier one for single-valued options.
            pub fn last_value(&self, name: &str) -> Option<&str> {
                self.opts.iter().rev().filter(|o| o.name() == name).find_map(|o| o.value.as_deref())
            }

            /// Whether a boolean/flag option with this name is set and not negated.
            pub fn flag(&self, name: &str) -> bool {
                self.opts_named(name).last().is_some_and(Opt::is_on)
            }

            /// Appends an option, placed just before this group's URL when rendered.
            pub fn push(&mut self, opt: Opt) {
                self.opts.push(opt);
            }
        }
    };
}
group_accessors!(Input);
group_accessors!(Output);

impl Input {
    pub fn new(url: impl Into<String>) -> Input {
        Input { kind: InputKind::File, opts: Vec::new(), url: Url::parse(&url.into()), pos: None }
    }
}

impl Output {
    pub fn new(url: impl Into<String>) -> Output {
        Output { opts: Vec::new(), url: Url::parse(&url.into()), after_dashdash: false, pos: None }
    }
}

/// Which ffmpeg's splitting rules to follow where releases differ.
///
/// Only two options split differently between 5.1 and 7.x
/// ([`ArgKind::BoolValueBefore7`]). The default follows 5.1–6.1, where
/// `-autorotate 0` is an option and its value: under 7.x rules the same words
/// would make `0` an output file, which is never what a command line that says
/// `-autorotate 0` meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// ffmpeg's major version.
    pub major: u32,
}

impl Default for Dialect {
    fn default() -> Dialect {
        Dialect { major: 6 }
    }
}

impl Dialect {
    /// The dialect of the ffmpeg whose `-version` printed `text`: its first line
    /// is `ffmpeg version V ...`, where V is `5.1.9-0+deb12u1` (Debian), `n7.1`
    /// (a git tag build), `7.1.2-Jellyfin` or `8.1`. `None` for a build that
    /// does not say (`N-113245-g...` from git master): the caller keeps the
    /// default then, as ffmpeg's own version cannot be known.
    pub fn from_version_text(text: &str) -> Option<Dialect> {
        let line = text.lines().next()?;
        let rest = line.split_once(" version ")?.1.trim_start();
        let rest = rest.strip_prefix('n').unwrap_or(rest);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        // A version is MAJOR.MINOR; a bare number is a git revision count.
        if !rest[digits.len()..].starts_with('.') {
            return None;
        }
        digits.parse().ok().map(|major| Dialect { major })
    }
}

/// A parsed `ffmpeg` invocation (without `argv[0]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct CommandLine {
    /// Global options, wherever they were written.
    pub globals: Vec<Opt>,
    /// Inputs in `-i` order (their index is the file index in stream specifiers).
    pub inputs: Vec<Input>,
    /// Outputs in command-line order.
    pub outputs: Vec<Output>,
    /// Per-file options after the last file: ffmpeg warns "Trailing option(s) found
    /// in the command: may be ignored." and ignores them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trailing: Vec<Opt>,
    /// Positions of lone `--` arguments, kept only so rendering is exact.
    #[serde(skip)]
    dashdash: Vec<usize>,
}

impl CommandLine {
    /// Splits `args` (without `argv[0]`) exactly as ffmpeg does, with the default
    /// [`Dialect`].
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<CommandLine, CmdlineError> {
        Self::parse_with(args, Dialect::default())
    }

    /// Whether releases split `args` differently (`-autorotate 0`), so that
    /// only then is the real binary's version worth reading.
    pub fn splits_by_release<S: AsRef<str>>(args: &[S]) -> bool {
        Self::parse_with(args, Dialect { major: 6 }) != Self::parse_with(args, Dialect { major: 7 })
    }

    /// Splits `args` (without `argv[0]`) exactly as the given ffmpeg release does.
    pub fn parse_with<S: AsRef<str>>(args: &[S], dialect: Dialect) -> Result<CommandLine, CmdlineError> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let mut cl = CommandLine::default();
        let mut cur: Vec<Opt> = Vec::new();
        // Index of the argument just after the last `--` (ffmpeg's `dashdash + 1`).
        let mut after_dashdash: Option<usize> = None;
        let mut i = 0;
        while i < args.len() {
            let pos = i;
            let arg = args[i];
            i += 1;

            if arg == "--" {
                cl.dashdash.push(pos);
                after_dashdash = Some(i);
                continue;
            }
            let forced = after_dashdash == Some(pos);
            if !arg.starts_with('-') || arg.len() == 1 || forced {
                cl.outputs.push(Output {
                    opts: std::mem::take(&mut cur),
                    url: Url::parse(arg),
                    after_dashdash: forced,
                    pos: Some(pos),
                });
                continue;
            }
            let key = &arg[1..];

            if key == "i" || key == "dec" {
                let url = take(&args, &mut i).ok_or_else(|| CmdlineError::MissingArgument(key.to_owned()))?;
                cl.inputs.push(Input {
                    kind: if key == "i" { InputKind::File } else { InputKind::Decoder },
                    opts: std::mem::take(&mut cur),
                    url: Url::parse(&url),
                    pos: Some(pos),
                });
                continue;
            }

            let (def, negated) = lookup(key);
            let kind = match def.map(|d| d.kind) {
                Some(ArgKind::BoolValueBefore7) if dialect.major < 7 && !negated => Some(ArgKind::Value),
                Some(ArgKind::BoolValueBefore7) => Some(ArgKind::Bool),
                k => k,
            };
            let value = match kind {
                Some(ArgKind::Exit) => take(&args, &mut i),
                Some(ArgKind::Value) => {
                    Some(take(&args, &mut i).ok_or_else(|| CmdlineError::MissingArgument(key.to_owned()))?)
                }
                Some(_) => None,
                // An AVOption: ffmpeg only recognises it if a value follows.
                None => Some(take(&args, &mut i).ok_or_else(|| CmdlineError::UnrecognizedOption(key.to_owned()))?),
            };
            let opt = Opt { key: key.to_owned(), value, negated, avoption: def.is_none(), def, pos: Some(pos) };
            match def.map(|d| d.scope) {
                Some(Scope::Global) => cl.globals.push(opt),
                _ => cur.push(opt),
            }
        }
        cl.trailing = cur;
        Ok(cl)
    }

    /// Renders the argument list. For a parsed, unmodified command line this is the
    /// identical list that was parsed; added elements go where ffmpeg accepts them.
    pub fn to_args(&self) -> Vec<String> {
        // Sort key: (primary position, tie-breaker). Parsed elements sort by where
        // they were; added ones sort just before their group's separator (or, for
        // added globals, before everything).
        let mut units: Vec<((i64, usize), Vec<String>)> = Vec::new();
        let mut seq = 0usize;
        let mut key = |pos: Option<usize>, fallback: i64| {
            seq += 1;
            (pos.map_or(fallback, |p| 2 * p as i64), seq)
        };
        // Added groups go after every parsed element (keys are 2 × argv index).
        let end = i64::MAX / 4;

        for o in &self.globals {
            units.push((key(o.pos, -1), o.tokens()));
        }
        // `after_dashdash`: the separator was written right after a `--`, so added
        // options go before that `--` (after it, the first would be the output).
        let mut group = |opts: &[Opt],
                         sep_pos: Option<usize>,
                         after_dashdash: bool,
                         sep: Vec<String>,
                         units: &mut Vec<_>,
                         gi: usize| {
            let sep_key = sep_pos.map_or(end + 2 * gi as i64, |p| 2 * p as i64);
            let added_key = if after_dashdash && sep_pos.is_some() { sep_key - 3 } else { sep_key - 1 };
            for o in opts {
                units.push((key(o.pos, added_key), o.tokens()));
            }
            units.push((key(sep_pos, sep_key), sep));
        };
        for (gi, inp) in self.inputs.iter().enumerate() {
            let flag = match inp.kind {
                InputKind::File => "-i",
                InputKind::Decoder => "-dec",
            };
            group(&inp.opts, inp.pos, false, vec![flag.to_owned(), inp.url.raw.clone()], &mut units, gi);
        }
        let n_in = self.inputs.len();
        for (gi, out) in self.outputs.iter().enumerate() {
            let mut sep = Vec::new();
            if out.after_dashdash && out.pos.is_none() {
                sep.push("--".to_owned());
            }
            sep.push(out.url.raw.clone());
            group(&out.opts, out.pos, out.after_dashdash, sep, &mut units, n_in + gi);
        }
        for o in &self.trailing {
            units.push((key(o.pos, i64::MAX), o.tokens()));
        }
        for &p in &self.dashdash {
            units.push((key(Some(p), 0), vec!["--".to_owned()]));
        }
        units.sort_by_key(|(k, _)| *k);
        units.into_iter().flat_map(|(_, t)| t).collect()
    }

    /// Global options with this name (stream specifiers ignored), in order.
    pub fn globals_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Opt> + 'a {
        self.globals.iter().filter(move |o| o.name() == name)
    }

    /// Whether a global boolean is set and not negated (`-y`, `-copyts`).
    pub fn global_flag(&self, name: &str) -> bool {
        self.globals_named(name).last().is_some_and(Opt::is_on)
    }

    /// The value of the last global option with this name.
    pub fn global_value(&self, name: &str) -> Option<&str> {
        self.globals.iter().rev().filter(|o| o.name() == name).find_map(|o| o.value.as_deref())
    }

    /// Appends a global option (rendered before everything else).
    pub fn push_global(&mut self, opt: Opt) {
        self.globals.push(opt);
    }
}

/// Quotes one argument for a POSIX shell, only when it needs it, so that log
/// lines and `explain` output can be pasted back into a terminal.
pub fn shell_quote(arg: &str) -> std::borrow::Cow<'_, str> {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=:/.,+%@".contains(&b)) {
        std::borrow::Cow::Borrowed(arg)
    } else {
        std::borrow::Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''")))
    }
}

/// [`shell_quote`] for a whole argument list, space separated. Formatted only when
/// displayed, so a log line that is never written costs nothing.
pub fn shell_join<S: AsRef<str>>(args: &[S]) -> impl std::fmt::Display + '_ {
    struct Join<'a, S>(&'a [S]);
    impl<S: AsRef<str>> std::fmt::Display for Join<'_, S> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for (n, a) in self.0.iter().enumerate() {
                if n > 0 {
                    f.write_str(" ")?;
                }
                f.write_str(&shell_quote(a.as_ref()))?;
            }
            Ok(())
        }
    }
    Join(args)
}

/// The next argument, if any, advancing past it.
fn take(args: &[&str], i: &mut usize) -> Option<String> {
    let v = args.get(*i).map(|s| (*s).to_owned());
    *i += v.is_some() as usize;
    v
}

/// Finds the table entry for `key` (an option as written, without the dash), and
/// whether it is the `-noNAME` form of a boolean.
fn lookup(key: &str) -> (Option<&'static OptionDef>, bool) {
    if let Some(def) = find_ffmpeg_option(key) {
        return (Some(def), false);
    }
    if let Some(rest) = key.strip_prefix("no")
        && let Some(def) = find_ffmpeg_option(rest)
        && matches!(def.kind, ArgKind::Bool | ArgKind::BoolValueBefore7)
    {
        return (Some(def), true);
    }
    (None, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CommandLine {
        let args: Vec<&str> = s.split_whitespace().collect();
        let cl = CommandLine::parse(&args).expect("parses");
        assert_eq!(cl.to_args(), args, "round trip of {s}");
        cl
    }

    #[test]
    fn groups_inputs_and_outputs() {
        let cl = parse("-y -ss 5 -i in.mkv -map 0:0 -c:v libx264 -crf 20 out.mp4");
        assert_eq!(cl.globals.len(), 1);
        assert_eq!(cl.inputs.len(), 1);
        assert_eq!(cl.inputs[0].last_value("ss"), Some("5"));
        assert_eq!(cl.outputs.len(), 1);
        let out = &cl.outputs[0];
        assert_eq!(out.url.raw, "out.mp4");
        assert_eq!(out.last_value("crf"), Some("20"));
        let c = out.opts_named("codec").next().unwrap();
        assert_eq!((c.key.as_str(), c.spec()), ("c:v", Some("v")));
        assert!(out.opts_named("crf").next().unwrap().avoption);
    }

    #[test]
    fn globals_anywhere_collect_in_order() {
        let cl = parse("-i a -hide_banner -c copy -y b -loglevel error");
        assert_eq!(cl.globals.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["hide_banner", "y", "loglevel"]);
        assert_eq!(cl.outputs[0].opts.len(), 1);
    }

    #[test]
    fn negated_boolean_takes_no_value() {
        let cl = parse("-ss 10 -noaccurate_seek -i in.mkv out.ts");
        let o = &cl.inputs[0].opts[1];
        assert!(o.negated);
        assert_eq!(o.name(), "accurate_seek");
        assert_eq!(o.value, None);
        assert!(!cl.inputs[0].flag("accurate_seek"));
    }

    #[test]
    fn exit_options_consume_the_next_argument_unconditionally() {
        let cl = parse("-h filter=scale_cuda");
        assert_eq!(cl.globals[0].value.as_deref(), Some("filter=scale_cuda"));
        let cl = parse("-version -hide_banner");
        assert_eq!(cl.globals.len(), 1, "-hide_banner is -version's argument");
        let cl = parse("-encoders");
        assert_eq!(cl.globals[0].value, None);
    }

    #[test]
    fn dash_is_an_output_and_dashdash_forces_one() {
        let cl = parse("-i x -f null -");
        assert_eq!(cl.outputs[0].url.raw, "-");
        let cl = parse("-i x -f mp4 -- -weird-name.mp4");
        assert_eq!(cl.outputs[0].url.raw, "-weird-name.mp4");
        assert!(cl.outputs[0].after_dashdash);
    }

    #[test]
    fn autorotate_splits_by_release() {
        let args = ["-autorotate", "0", "-i", "in.mp4", "out.mp4"];
        let old = CommandLine::parse(&args).unwrap();
        assert_eq!(old.inputs[0].last_value("autorotate"), Some("0"));
        assert_eq!(old.outputs.len(), 1);
        let new = CommandLine::parse_with(&args, Dialect { major: 7 }).unwrap();
        assert_eq!(new.outputs.len(), 2, "7.x makes `0` an output file");
        assert_eq!(new.to_args(), args);
        assert!(CommandLine::splits_by_release(&args));
        assert!(!CommandLine::splits_by_release(&["-noautorotate", "-i", "in.mp4", "out.mp4"]));
        assert!(!CommandLine::splits_by_release(&["-i", "in.mp4", "-c:v", "libx264", "out.mp4"]));
        let neg = CommandLine::parse(&["-noautorotate", "-i", "in.mp4", "out.mp4"]).unwrap();
        assert!(neg.inputs[0].opts[0].negated && neg.inputs[0].opts[0].value.is_none());
    }

    #[test]
    fn dialect_from_version_banners() {
        let major = |t: &str| Dialect::from_version_text(t).map(|d| d.major);
        assert_eq!(major("ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2025"), Some(5));
        assert_eq!(major("ffmpeg version n7.1 Copyright (c) 2000-2024 the FFmpeg developers\nbuilt"), Some(7));
        assert_eq!(major("ffmpeg version n8.1.2 Copyright"), Some(8));
        assert_eq!(major("ffprobe version 7.1.2-Jellyfin Copyright"), Some(7));
        assert_eq!(major("ffmpeg version N-113245-gabcdef Copyright"), None);
        assert_eq!(major("ffmpeg version 2024-01-01-git-abc Copyright"), None);
        assert_eq!(major(""), None);
    }

    #[test]
    fn trailing_options_are_kept() {
        let cl = parse("-i x out.mp4 -c:v libx264");
        assert_eq!(cl.trailing.len(), 1);
    }

    #[test]
    fn errors_like_ffmpeg() {
        assert_eq!(CommandLine::parse(&["-i"]), Err(CmdlineError::MissingArgument("i".into())));
        assert_eq!(CommandLine::parse(&["-i", "x", "-c:v"]), Err(CmdlineError::MissingArgument("c:v".into())));
        assert_eq!(
            CommandLine::parse(&["-i", "x", "-frobnicate"]),
            Err(CmdlineError::UnrecognizedOption("frobnicate".into()))
        );
    }

    #[test]
    fn values_that_look_like_options_are_values() {
        let cl = parse("-i x -itsoffset -5 -map -0:s -af -ac out.mp4");
        let out = &cl.outputs[0];
        assert_eq!(out.last_value("map"), Some("-0:s"));
        assert_eq!(out.last_value("af"), Some("-ac"));
    }

    #[test]
    fn added_options_render_before_their_group() {
        let mut cl = parse("-i in.mkv -c:v libx264 out.mp4");
        cl.inputs[0].push(Opt::new("ss", Some("12")));
        cl.outputs[0].push(Opt::new("t", Some("6")));
        cl.push_global(Opt::new("y", None::<String>));
        cl.outputs.push(Output::new("second.mkv"));
        assert_eq!(
            cl.to_args(),
            ["-y", "-ss", "12", "-i", "in.mkv", "-c:v", "libx264", "-t", "6", "out.mp4", "second.mkv"]
        );
    }

    #[test]
    fn added_options_go_before_a_dashdash() {
        // Found while fuzzing (`argv`): an option added to an output written
        // after `--` was rendered after the `--`, so ffmpeg took it for the output.
        let mut cl = parse("-i x -f mp4 -- -weird-name.mp4");
        cl.outputs[0].push(Opt::new("t", Some("6")));
        let args = cl.to_args();
        assert_eq!(args, ["-i", "x", "-f", "mp4", "-t", "6", "--", "-weird-name.mp4"]);
        let again = CommandLine::parse(&args).unwrap();
        assert_eq!(again.outputs.len(), 1);
        assert_eq!(again.outputs[0].last_value("t"), Some("6"));
    }

    #[test]
    fn program_from_argv0() {
        assert_eq!(Program::from_argv0("/opt/shim/ffprobe"), Program::Ffprobe);
        assert_eq!(Program::from_argv0(r"C:\x\ffprobe.exe"), Program::Ffprobe);
        assert_eq!(Program::from_argv0("ffmpeg"), Program::Ffmpeg);
        assert_eq!(Program::from_argv0("ffcluster-shim"), Program::Ffmpeg);
    }
}
