//! The table of options the `ffmpeg` command line knows, as data.
//!
//! Only the facts that change how an argument list splits into groups are kept here
//! (does the option take a value, which group it belongs to, does it accept a
//! stream specifier). What an option *means* for distribution is decided in
//! [`super::decision`], by name, so that this table can be checked line by line
//! against ffmpeg's own `OptionDef` arrays.
//!
//! # Where the table comes from
//!
//! [`FFMPEG_OPTIONS`] is the union of the `options[]` array of `fftools/ffmpeg_opt.c`
//! plus `CMDUTILS_COMMON_OPTIONS` of `fftools/opt_common.h`, as released in
//! FFmpeg 5.1, 6.0, 6.1, 7.0, 7.1 and 8.0 (every `#if` branch included: deprecated
//! options, `CONFIG_AVDEVICE`, `CONFIG_VAAPI`, `CONFIG_QSV`), read at:
//!
//! | release | tag / commit |
//! | --- | --- |
//! | 5.1 | `n5.1.6` (`6338d19eb349`), same table as `n5.1` |
//! | 6.0 | `n6.0.1` (`c41ff724ede7`), same table as `n6.0` |
//! | 6.1 | `n6.1.2` (`b1a4534186ca`), same table as `n6.1` |
//! | 7.0 | `n7.0.2` (`e3a61e910306`), same table as `n7.0` |
//! | 7.1 | `n7.1` (`b08d7969c550`) |
//! | 8.0 | `1532caaab09a` "RELEASE: update to 8.0", the `release/8.0` branch point |
//!
//! plus five options of the master branch after 8.0 (marked in the table), so that a
//! newer ffmpeg's command line splits the same way. jellyfin-ffmpeg 5.1, 6.0 and 7.0
//! carry the upstream tables unchanged, and the 5.1 entries match
//! `ffmpeg -h full` of ffmpeg 5.1.9 name for name.
//!
//! An option that exists only in some releases is in the table all the same: a
//! version that lacks it would refuse the command line anyway. Where releases
//! disagree on the kind or scope of a name, the newest release wins and the line
//! says what the older ones did.
//!
//! Classification rules, from ffmpeg's flags:
//!
//! * kind: `OPT_EXIT` → [`ArgKind::Exit`]; else `OPT_BOOL` / `OPT_TYPE_BOOL` →
//!   [`ArgKind::Bool`]; else `HAS_ARG` (5.x, 6.x) or, in 7.x+, any type but
//!   `OPT_TYPE_FUNC` without `OPT_FUNC_ARG` → [`ArgKind::Value`]; the rest (function
//!   options without an argument: `-report`, `-vstats`, `-qphist`) → [`ArgKind::Flag`].
//!   5.1 to 6.1 have two `HAS_ARG | OPT_BOOL` options (`autorotate`, `autoscale`):
//!   the splitter checks `HAS_ARG` first, so they took a value there.
//! * scope: per-file iff `OPT_PERFILE` (7.x+, where `OPT_OFFSET`, `OPT_SPEC` and
//!   `OPT_PERSTREAM` imply it) or any of `OPT_PERFILE | OPT_SPEC | OPT_OFFSET`
//!   (5.x, 6.x); which files from `OPT_INPUT` / `OPT_OUTPUT`. Every per-file option
//!   of every release carries at least one of the two.
//! * `per_stream`: `OPT_SPEC` (7.x+: `OPT_SPEC` or `OPT_PERSTREAM`, the latter
//!   implies the former).
//!
//! Not in the table, on purpose: `-i` and (7.0+) `-dec`, which are group separators;
//! `-noNAME`, which the splitter derives from a boolean `NAME`; and every AVOption
//! (`-preset`, `-crf`, `-x264opts`, `-maxrate`, `-bufsize`, `-level`, `-threads`,
//! `-probesize`, `-analyzeduration`, `-max_delay`, `-hls_time`, `-sc_threshold`, …),
//! which ffmpeg only tries after the table.

/// How an option consumes the argument list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// `OPT_BOOL` / `OPT_TYPE_BOOL`: takes no value; `-name` sets it, `-noname` clears it.
    Bool,
    /// Takes no value and is not a boolean (no `-no` form): function options without an
    /// argument, e.g. `-report`, `-vstats`.
    Flag,
    /// `HAS_ARG` (5.x, 6.x) / any 7.x+ type but a function without `OPT_FUNC_ARG`: the
    /// next argument is the value, whatever it looks like.
    Value,
    /// A boolean that 5.1 to 6.1 declared `HAS_ARG | OPT_BOOL`: there the splitter
    /// took the next argument as its value (`-autorotate 0`, as Jellyfin ≤ 10.8
    /// wrote it); from 7.0 on it is a plain [`ArgKind::Bool`]. The parser's
    /// [`Dialect`](super::cmdline::Dialect) picks one.
    BoolValueBefore7,
    /// `OPT_EXIT`: prints something and exits. ffmpeg consumes the next argument as its
    /// optional value unconditionally (`-h filter=scale`, and `-version foo` eats `foo`).
    Exit,
}

/// Which option group the option is stored in when the command line is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Applies to the whole invocation, wherever it is written (no `OPT_PERFILE`).
    Global,
    /// Per file, only meaningful before `-i` (`OPT_INPUT`).
    Input,
    /// Per file, only meaningful before an output URL (`OPT_OUTPUT`).
    Output,
    /// Per file, valid for inputs and outputs (`OPT_INPUT | OPT_OUTPUT`).
    InputOutput,
}

/// One entry of the option table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionDef {
    /// Name without the leading dash, e.g. `"codec"`.
    pub name: &'static str,
    pub kind: ArgKind,
    pub scope: Scope,
    /// Accepts a `:stream_specifier` suffix (`OPT_SPEC` / `OPT_PERSTREAM`).
    pub per_stream: bool,
}

const fn def(name: &'static str, kind: ArgKind, scope: Scope, per_stream: bool) -> OptionDef {
    OptionDef { name, kind, scope, per_stream }
}

/// Every `ffmpeg` CLI option of FFmpeg 5.1 to 8.0, sorted by name (byte order) for
/// [`find_ffmpeg_option`]. A trailing comment gives the releases that have the option
/// when that is not all of them, and what older releases did differently.
#[rustfmt::skip]
pub static FFMPEG_OPTIONS: &[OptionDef] = &[
    def("-help",                        ArgKind::Exit,  Scope::Global,      false), // the argv token `--help`
    def("?",                            ArgKind::Exit,  Scope::Global,      false),
    def("L",                            ArgKind::Exit,  Scope::Global,      false),
    def("ab",                           ArgKind::Value, Scope::Output,      false),
    def("abort_on",                     ArgKind::Value, Scope::Global,      false),
    def("absf",                         ArgKind::Value, Scope::Output,      false), // 5.1-6.1
    def("ac",                           ArgKind::Value, Scope::InputOutput, true),
    def("accurate_seek",                ArgKind::Bool,  Scope::Input,       false),
    def("acodec",                       ArgKind::Value, Scope::InputOutput, false),
    def("adrift_threshold",             ArgKind::Value, Scope::Global,      false), // gone from master after 8.0; deprecated
    def("af",                           ArgKind::Value, Scope::Output,      false), // `filter:a`; per-file, no specifier of its own
    def("aframes",                      ArgKind::Value, Scope::Output,      false),
    def("an",                           ArgKind::Bool,  Scope::InputOutput, false),
    def("apad",                         ArgKind::Value, Scope::Output,      true),
    def("apply_cropping",               ArgKind::Value, Scope::Input,       true),  // 7.1+
    def("apre",                         ArgKind::Value, Scope::Output,      false),
    def("aq",                           ArgKind::Value, Scope::Output,      false),
    def("ar",                           ArgKind::Value, Scope::InputOutput, true),
    def("aspect",                       ArgKind::Value, Scope::Output,      true),
    def("async",                        ArgKind::Value, Scope::Global,      false), // 5.1 only
    def("atag",                         ArgKind::Value, Scope::Output,      false),
    def("attach",                       ArgKind::Value, Scope::Output,      false),
    def("auto_conversion_filters",      ArgKind::Bool,  Scope::Global,      false),
    def("autorotate",                   ArgKind::BoolValueBefore7, Scope::Input, true),  // 5.1-6.1: HAS_ARG|OPT_BOOL (`-autorotate 0` ate the `0`)
    def("autoscale",                    ArgKind::BoolValueBefore7, Scope::Output, true), // 5.1-6.1: HAS_ARG|OPT_BOOL (`-autoscale 0` ate the `0`)
    def("b",                            ArgKind::Value, Scope::Output,      false),
    def("benchmark",                    ArgKind::Bool,  Scope::Global,      false),
    def("benchmark_all",                ArgKind::Bool,  Scope::Global,      false),
    def("bitexact",                     ArgKind::Bool,  Scope::InputOutput, false),
    def("bits_per_raw_sample",          ArgKind::Value, Scope::Output,      true),
    def("bsf",                          ArgKind::Value, Scope::InputOutput, true),  // 5.1-6.1: Output only
    def("bsfs",                         ArgKind::Exit,  Scope::Global,      false),
    def("buildconf",                    ArgKind::Exit,  Scope::Global,      false),
    def("c",                            ArgKind::Value, Scope::InputOutput, true),
    def("canvas_size",                  ArgKind::Value, Scope::Input,       true),
    def("ch_layout",                    ArgKind::Value, Scope::InputOutput, true),
    def("channel_layout",               ArgKind::Value, Scope::InputOutput, true),
    def("chroma_intra_matrix",          ArgKind::Value, Scope::Output,      true),
    def("codec",                        ArgKind::Value, Scope::InputOutput, true),
    def("codecs",                       ArgKind::Exit,  Scope::Global,      false),
    def("colors",                       ArgKind::Exit,  Scope::Global,      false),
    def("content_light",                ArgKind::Value, Scope::Input,       true),  // post-8.0 master only, in no release yet
    def("copy_unknown",                 ArgKind::Bool,  Scope::Global,      false),
    def("copyinkf",                     ArgKind::Bool,  Scope::Output,      true),
    def("copypriorss",                  ArgKind::Value, Scope::Output,      true),
    def("copytb",                       ArgKind::Value, Scope::Global,      false),
    def("copyts",                       ArgKind::Bool,  Scope::Global,      false),
    def("cpucount",                     ArgKind::Value, Scope::Global,      false),
    def("cpuflags",                     ArgKind::Value, Scope::Global,      false),
    def("dcodec",                       ArgKind::Value, Scope::InputOutput, false),
    def("debug_ts",                     ArgKind::Bool,  Scope::Global,      false),
    def("decoders",                     ArgKind::Exit,  Scope::Global,      false),
    def("demuxers",                     ArgKind::Exit,  Scope::Global,      false),
    def("devices",                      ArgKind::Exit,  Scope::Global,      false),
    def("dframes",                      ArgKind::Value, Scope::Output,      false),
    def("discard",                      ArgKind::Value, Scope::Input,       true),
    def("display_hflip",                ArgKind::Bool,  Scope::Input,       true),  // 6.0+
    def("display_rotation",             ArgKind::Value, Scope::Input,       true),  // 6.0+
    def("display_vflip",                ArgKind::Bool,  Scope::Input,       true),  // 6.0+
    def("disposition",                  ArgKind::Value, Scope::Output,      true),
    def("dispositions",                 ArgKind::Exit,  Scope::Global,      false),
    def("dn",                           ArgKind::Bool,  Scope::InputOutput, false),
    def("drop_changed",                 ArgKind::Value, Scope::Input,       true),  // 8.0+
    def("dts_delta_threshold",          ArgKind::Value, Scope::Global,      false),
    def("dts_error_threshold",          ArgKind::Value, Scope::Global,      false),
    def("dump",                         ArgKind::Bool,  Scope::Global,      false),
    def("dump_attachment",              ArgKind::Value, Scope::Input,       true),  // OPT_SPEC (7.x: not OPT_PERSTREAM)
    def("enc_time_base",                ArgKind::Value, Scope::Output,      true),
    def("encoders",                     ArgKind::Exit,  Scope::Global,      false),
    def("f",                            ArgKind::Value, Scope::InputOutput, false),
    def("filter",                       ArgKind::Value, Scope::Output,      true),
    def("filter_buffered_frames",       ArgKind::Value, Scope::Global,      false), // 8.0+
    def("filter_complex",               ArgKind::Value, Scope::Global,      false),
    def("filter_complex_script",        ArgKind::Value, Scope::Global,      false), // gone from master after 8.0; deprecated
    def("filter_complex_threads",       ArgKind::Value, Scope::Global,      false),
    def("filter_hw_device",             ArgKind::Value, Scope::Global,      false),
    def("filter_script",                ArgKind::Value, Scope::Output,      true),  // gone from master after 8.0; deprecated
    def("filter_threads",               ArgKind::Value, Scope::Global,      false),
    def("filters",                      ArgKind::Exit,  Scope::Global,      false),
    def("find_stream_info",             ArgKind::Bool,  Scope::Input,       false),
    def("fix_sub_duration",             ArgKind::Bool,  Scope::Input,       true),
    def("fix_sub_duration_heartbeat",   ArgKind::Bool,  Scope::Output,      true),  // 6.0+
    def("force_fps",                    ArgKind::Bool,  Scope::Output,      true),
    def("force_key_frames",             ArgKind::Value, Scope::Output,      true),
    def("formats",                      ArgKind::Exit,  Scope::Global,      false),
    def("fpre",                         ArgKind::Value, Scope::Output,      false),
    def("fps_mode",                     ArgKind::Value, Scope::Output,      true),
    def("fpsmax",                       ArgKind::Value, Scope::Output,      true),
    def("frame_drop_threshold",         ArgKind::Value, Scope::Global,      false),
    def("frames",                       ArgKind::Value, Scope::Output,      true),
    def("fs",                           ArgKind::Value, Scope::Output,      false),
    def("guess_layout_max",             ArgKind::Value, Scope::Input,       true),
    def("h",                            ArgKind::Exit,  Scope::Global,      false),
    def("help",                         ArgKind::Exit,  Scope::Global,      false),
    def("hex",                          ArgKind::Bool,  Scope::Global,      false),
    def("hide_banner",                  ArgKind::Bool,  Scope::Global,      false),
    def("hwaccel",                      ArgKind::Value, Scope::Input,       true),
    def("hwaccel_device",               ArgKind::Value, Scope::Input,       true),
    def("hwaccel_output_format",        ArgKind::Value, Scope::Input,       true),
    def("hwaccels",                     ArgKind::Exit,  Scope::Global,      false),
    def("ignore_unknown",               ArgKind::Bool,  Scope::Global,      false),
    def("init_hw_device",               ArgKind::Value, Scope::Global,      false),
    def("inter_matrix",                 ArgKind::Value, Scope::Output,      true),
    def("intra_matrix",                 ArgKind::Value, Scope::Output,      true),
    def("isync",                        ArgKind::Value, Scope::Input,       false),
    def("itsoffset",                    ArgKind::Value, Scope::Input,       false),
    def("itsscale",                     ArgKind::Value, Scope::Input,       true),
    def("keep_metadata",                ArgKind::Value, Scope::Output,      true),  // post-8.0 master only, in no release yet; OPT_SPEC, not OPT_PERSTREAM
    def("lavfi",                        ArgKind::Value, Scope::Global,      false),
    def("layouts",                      ArgKind::Exit,  Scope::Global,      false),
    def("license",                      ArgKind::Exit,  Scope::Global,      false), // post-8.0 master only, in no release yet; `-L` long form
    def("loglevel",                     ArgKind::Value, Scope::Global,      false),
    def("map",                          ArgKind::Value, Scope::Output,      false),
    def("map_channel",                  ArgKind::Value, Scope::Output,      false), // 5.1-6.1; deprecated
    def("map_chapters",                 ArgKind::Value, Scope::Output,      false),
    def("map_metadata",                 ArgKind::Value, Scope::Output,      true),  // OPT_SPEC (7.x: not OPT_PERSTREAM)
    def("mastering_display",            ArgKind::Value, Scope::Input,       true),  // post-8.0 master only, in no release yet
    def("max_alloc",                    ArgKind::Value, Scope::Global,      false),
    def("max_error_rate",               ArgKind::Value, Scope::Global,      false),
    def("max_muxing_queue_size",        ArgKind::Value, Scope::Output,      true),
    def("metadata",                     ArgKind::Value, Scope::Output,      true),  // OPT_SPEC (7.x: not OPT_PERSTREAM); `-metadata:s:a:0`
    def("muxdelay",                     ArgKind::Value, Scope::Output,      false),
    def("muxers",                       ArgKind::Exit,  Scope::Global,      false),
    def("muxing_queue_data_threshold",  ArgKind::Value, Scope::Output,      true),
    def("muxpreload",                   ArgKind::Value, Scope::Output,      false),
    def("n",                            ArgKind::Bool,  Scope::Global,      false),
    def("pass",                         ArgKind::Value, Scope::Output,      true),
    def("passlogfile",                  ArgKind::Value, Scope::Output,      true),
    def("pix_fmt",                      ArgKind::Value, Scope::InputOutput, true),
    def("pix_fmts",                     ArgKind::Exit,  Scope::Global,      false),
    def("pre",                          ArgKind::Value, Scope::Output,      true),
    def("print_graphs",                 ArgKind::Bool,  Scope::Global,      false), // 8.0+
    def("print_graphs_file",            ArgKind::Value, Scope::Global,      false), // 8.0+
    def("print_graphs_format",          ArgKind::Value, Scope::Global,      false), // 8.0+
    def("profile",                      ArgKind::Value, Scope::Output,      false), // a CLI option in every version, not only the AVOption
    def("program",                      ArgKind::Value, Scope::Output,      true),  // OPT_SPEC (7.x: not OPT_PERSTREAM)
    def("progress",                     ArgKind::Value, Scope::Global,      false),
    def("protocols",                    ArgKind::Exit,  Scope::Global,      false),
    def("psnr",                         ArgKind::Bool,  Scope::Global,      false), // 5.1-6.1; deprecated
    def("q",                            ArgKind::Value, Scope::Output,      true),
    def("qphist",                       ArgKind::Flag,  Scope::Global,      false), // gone from master after 8.0; deprecated; 5.1-6.0: Bool
    def("qscale",                       ArgKind::Value, Scope::Output,      false),
    def("qsv_device",                   ArgKind::Value, Scope::Global,      false), // only with CONFIG_QSV
    def("r",                            ArgKind::Value, Scope::InputOutput, true),
    def("rc_override",                  ArgKind::Value, Scope::Output,      true),
    def("re",                           ArgKind::Bool,  Scope::Input,       false),
    def("readrate",                     ArgKind::Value, Scope::Input,       false),
    def("readrate_catchup",             ArgKind::Value, Scope::Input,       false), // 8.0+
    def("readrate_initial_burst",       ArgKind::Value, Scope::Input,       false), // 6.1+
    def("recast_media",                 ArgKind::Bool,  Scope::Global,      false),
    def("reinit_filter",                ArgKind::Value, Scope::Input,       true),
    def("reinit_opts",                  ArgKind::Value, Scope::Output,      true),  // post-8.0 master only, in no release yet
    def("report",                       ArgKind::Flag,  Scope::Global,      false),
    def("s",                            ArgKind::Value, Scope::InputOutput, true),
    def("sample_fmt",                   ArgKind::Value, Scope::InputOutput, true),
    def("sample_fmts",                  ArgKind::Exit,  Scope::Global,      false),
    def("scodec",                       ArgKind::Value, Scope::InputOutput, false),
    def("sdp_file",                     ArgKind::Value, Scope::Global,      false), // OPT_OUTPUT, but not per-file
    def("seek_timestamp",               ArgKind::Value, Scope::Input,       false),
    def("shortest",                     ArgKind::Bool,  Scope::Output,      false),
    def("shortest_buf_duration",        ArgKind::Value, Scope::Output,      false), // 6.0+
    def("sinks",                        ArgKind::Exit,  Scope::Global,      false), // only with CONFIG_AVDEVICE
    def("sn",                           ArgKind::Bool,  Scope::InputOutput, false),
    def("sources",                      ArgKind::Exit,  Scope::Global,      false), // only with CONFIG_AVDEVICE
    def("spre",                         ArgKind::Value, Scope::Output,      false),
    def("ss",                           ArgKind::Value, Scope::InputOutput, false),
    def("sseof",                        ArgKind::Value, Scope::Input,       false),
    def("stag",                         ArgKind::Value, Scope::Output,      false),
    def("start_at_zero",                ArgKind::Bool,  Scope::Global,      false),
    def("stats",                        ArgKind::Bool,  Scope::Global,      false),
    def("stats_enc_post",               ArgKind::Value, Scope::Output,      true),  // 6.0+
    def("stats_enc_post_fmt",           ArgKind::Value, Scope::Output,      true),  // 6.0+
    def("stats_enc_pre",                ArgKind::Value, Scope::Output,      true),  // 6.0+
    def("stats_enc_pre_fmt",            ArgKind::Value, Scope::Output,      true),  // 6.0+
    def("stats_mux_pre",                ArgKind::Value, Scope::Output,      true),  // 6.0+
    def("stats_mux_pre_fmt",            ArgKind::Value, Scope::Output,      true),  // 6.0+
    def("stats_period",                 ArgKind::Value, Scope::Global,      false),
    def("stdin",                        ArgKind::Bool,  Scope::Global,      false),
    def("stream_group",                 ArgKind::Value, Scope::Output,      true),  // 7.0+; OPT_SPEC, not OPT_PERSTREAM
    def("stream_loop",                  ArgKind::Value, Scope::Input,       false),
    def("streamid",                     ArgKind::Value, Scope::Output,      false),
    def("t",                            ArgKind::Value, Scope::InputOutput, false),
    def("tag",                          ArgKind::Value, Scope::InputOutput, true),
    def("target",                       ArgKind::Value, Scope::Output,      false),
    def("thread_queue_size",            ArgKind::Value, Scope::InputOutput, false), // 5.1: Input only
    def("time_base",                    ArgKind::Value, Scope::Output,      true),
    def("timecode",                     ArgKind::Value, Scope::Output,      false),
    def("timelimit",                    ArgKind::Value, Scope::Global,      false),
    def("timestamp",                    ArgKind::Value, Scope::Output,      false),
    def("to",                           ArgKind::Value, Scope::InputOutput, false),
    def("top",                          ArgKind::Value, Scope::InputOutput, true),  // gone from master after 8.0; deprecated
    def("v",                            ArgKind::Value, Scope::Global,      false),
    def("vaapi_device",                 ArgKind::Value, Scope::Global,      false), // only with CONFIG_VAAPI
    def("vbsf",                         ArgKind::Value, Scope::Output,      false), // 5.1-6.1
    def("vcodec",                       ArgKind::Value, Scope::InputOutput, false),
    def("version",                      ArgKind::Exit,  Scope::Global,      false),
    def("vf",                           ArgKind::Value, Scope::Output,      false), // `filter:v`; per-file, no specifier of its own
    def("vframes",                      ArgKind::Value, Scope::Output,      false),
    def("vn",                           ArgKind::Bool,  Scope::InputOutput, false),
    def("vol",                          ArgKind::Value, Scope::Global,      false), // 5.1 only
    def("vpre",                         ArgKind::Value, Scope::Output,      false),
    def("vstats",                       ArgKind::Flag,  Scope::Global,      false),
    def("vstats_file",                  ArgKind::Value, Scope::Global,      false),
    def("vstats_version",               ArgKind::Value, Scope::Global,      false),
    def("vsync",                        ArgKind::Value, Scope::Global,      false), // gone from master after 8.0; deprecated
    def("vtag",                         ArgKind::Value, Scope::InputOutput, false),
    def("xerror",                       ArgKind::Bool,  Scope::Global,      false),
    def("y",                            ArgKind::Bool,  Scope::Global,      false),
];

/// Finds the table entry for an option as written, without its leading dash, the way
/// `find_option()` in `fftools/cmdutils.c` does: the part before the first `:` (the
/// stream specifier) must equal the entry's name. `codec:v:0` finds `codec`,
/// `x264opts:0` finds nothing, and the argv token `--help` (name `-help`) finds the
/// entry named `-help`.
///
/// Like ffmpeg 7.0+, one leading `/` is skipped first (`-/filter_complex file` loads
/// the option's value from a file); 5.1 to 6.1 know no such form and would refuse it.
/// The `-noNAME` form of booleans is not resolved here.
pub fn find_ffmpeg_option(name: &str) -> Option<&'static OptionDef> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let base = name.split_once(':').map_or(name, |(base, _)| base);
    FFMPEG_OPTIONS.binary_search_by(|def| def.name.cmp(base)).ok().map(|i| &FFMPEG_OPTIONS[i])
}

/// The name ffmpeg documents for an option that is spelled more than one way with
/// exactly the same meaning (`-c` is `-codec`, `-lavfi` is `-filter_complex`).
/// Media-specific shorthands (`-vcodec`, `-vf`, `-ab`) are different options: they
/// imply a stream specifier, so they keep their own names.
pub fn canonical_name(name: &'static str) -> &'static str {
    match name {
        "c" => "codec",
        "lavfi" => "filter_complex",
        "v" => "loglevel",
        "?" | "help" | "-help" => "h",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(name: &str) -> &'static OptionDef {
        find_ffmpeg_option(name).unwrap_or_else(|| panic!("`{name}` should be an ffmpeg option"))
    }

    fn check(name: &str, kind: ArgKind, scope: Scope, per_stream: bool) {
        let def = get(name);
        assert_eq!((def.kind, def.scope, def.per_stream), (kind, scope, per_stream), "classification of `{name}`");
    }

    #[test]
    fn table_is_strictly_sorted_without_duplicates() {
        for pair in FFMPEG_OPTIONS.windows(2) {
            assert!(
                pair[0].name.as_bytes() < pair[1].name.as_bytes(),
                "`{}` must come before `{}`",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn names_are_plain() {
        for def in FFMPEG_OPTIONS {
            assert!(!def.name.is_empty());
            assert!(!def.name.contains(':'), "`{}` has a ':'", def.name);
            assert!(!def.name.starts_with('/'), "`{}` starts with '/'", def.name);
        }
    }

    #[test]
    fn every_entry_is_found_by_its_name() {
        for def in FFMPEG_OPTIONS {
            assert!(std::ptr::eq(find_ffmpeg_option(def.name).unwrap(), def));
        }
    }

    #[test]
    fn stream_specifiers_are_stripped() {
        assert_eq!(get("codec:v:0").name, "codec");
        assert_eq!(get("c:a").name, "c");
        assert_eq!(get("b:v").name, "b");
        assert_eq!(get("filter:v:0").name, "filter");
        assert_eq!(get("metadata:s:a:0").name, "metadata");
        assert_eq!(get("disposition:s:0").name, "disposition");
        assert_eq!(get("map:").name, "map");
        assert!(find_ffmpeg_option("x264opts:0").is_none());
        assert!(find_ffmpeg_option(":v").is_none());
        assert!(find_ffmpeg_option("").is_none());
        // Prefixes are not matches.
        assert!(find_ffmpeg_option("cod").is_none());
        assert!(find_ffmpeg_option("codecs:x").is_some_and(|d| d.name == "codecs"));
        assert!(find_ffmpeg_option("codec_tag").is_none());
    }

    #[test]
    fn file_form_prefix_is_skipped() {
        assert_eq!(get("/filter_complex").name, "filter_complex");
        assert_eq!(get("/filter:v").name, "filter");
        assert!(find_ffmpeg_option("//filter").is_none());
    }

    #[test]
    fn help_entries() {
        for name in [
            "h",
            "?",
            "help",
            "-help",
            "L",
            "version",
            "buildconf",
            "formats",
            "muxers",
            "demuxers",
            "devices",
            "codecs",
            "decoders",
            "encoders",
            "bsfs",
            "protocols",
            "filters",
            "pix_fmts",
            "layouts",
            "sample_fmts",
            "dispositions",
            "colors",
            "sources",
            "sinks",
            "hwaccels",
        ] {
            check(name, ArgKind::Exit, Scope::Global, false);
        }
    }

    #[test]
    fn common_options() {
        check("loglevel", ArgKind::Value, Scope::Global, false);
        check("v", ArgKind::Value, Scope::Global, false);
        check("report", ArgKind::Flag, Scope::Global, false);
        check("max_alloc", ArgKind::Value, Scope::Global, false);
        check("cpuflags", ArgKind::Value, Scope::Global, false);
        check("cpucount", ArgKind::Value, Scope::Global, false);
        check("hide_banner", ArgKind::Bool, Scope::Global, false);
    }

    #[test]
    fn global_booleans_and_flags() {
        for name in [
            "y",
            "n",
            "copyts",
            "start_at_zero",
            "stats",
            "benchmark",
            "dump",
            "hex",
            "xerror",
            "stdin",
            "debug_ts",
            "ignore_unknown",
            "copy_unknown",
        ] {
            check(name, ArgKind::Bool, Scope::Global, false);
        }
        check("vstats", ArgKind::Flag, Scope::Global, false);
        check("qphist", ArgKind::Flag, Scope::Global, false);
    }

    #[test]
    fn jellyfin_options() {
        check("ss", ArgKind::Value, Scope::InputOutput, false);
        check("t", ArgKind::Value, Scope::InputOutput, false);
        check("to", ArgKind::Value, Scope::InputOutput, false);
        check("f", ArgKind::Value, Scope::InputOutput, false);
        check("accurate_seek", ArgKind::Bool, Scope::Input, false);
        check("re", ArgKind::Bool, Scope::Input, false);
        check("readrate", ArgKind::Value, Scope::Input, false);
        check("stream_loop", ArgKind::Value, Scope::Input, false);
        check("itsoffset", ArgKind::Value, Scope::Input, false);
        check("autorotate", ArgKind::BoolValueBefore7, Scope::Input, true);
        check("hwaccel", ArgKind::Value, Scope::Input, true);
        check("hwaccel_output_format", ArgKind::Value, Scope::Input, true);
        check("dump_attachment", ArgKind::Value, Scope::Input, true);
        check("init_hw_device", ArgKind::Value, Scope::Global, false);
        check("filter_hw_device", ArgKind::Value, Scope::Global, false);
        check("filter_complex", ArgKind::Value, Scope::Global, false);
        check("map", ArgKind::Value, Scope::Output, false);
        check("map_metadata", ArgKind::Value, Scope::Output, true);
        check("map_chapters", ArgKind::Value, Scope::Output, false);
        check("c", ArgKind::Value, Scope::InputOutput, true);
        check("codec", ArgKind::Value, Scope::InputOutput, true);
        check("vcodec", ArgKind::Value, Scope::InputOutput, false);
        check("acodec", ArgKind::Value, Scope::InputOutput, false);
        check("scodec", ArgKind::Value, Scope::InputOutput, false);
        check("force_key_frames", ArgKind::Value, Scope::Output, true);
        check("max_muxing_queue_size", ArgKind::Value, Scope::Output, true);
        check("vf", ArgKind::Value, Scope::Output, false);
        check("af", ArgKind::Value, Scope::Output, false);
        check("filter", ArgKind::Value, Scope::Output, true);
        check("ab", ArgKind::Value, Scope::Output, false);
        check("b", ArgKind::Value, Scope::Output, false);
        check("ac", ArgKind::Value, Scope::InputOutput, true);
        check("ar", ArgKind::Value, Scope::InputOutput, true);
        check("profile", ArgKind::Value, Scope::Output, false);
        check("pix_fmt", ArgKind::Value, Scope::InputOutput, true);
        check("r", ArgKind::Value, Scope::InputOutput, true);
        check("s", ArgKind::Value, Scope::InputOutput, true);
        check("metadata", ArgKind::Value, Scope::Output, true);
        check("disposition", ArgKind::Value, Scope::Output, true);
        check("start_at_zero", ArgKind::Bool, Scope::Global, false);
        check("copyts", ArgKind::Bool, Scope::Global, false);
        check("fps_mode", ArgKind::Value, Scope::Output, true);
        check("vsync", ArgKind::Value, Scope::Global, false);
        check("vn", ArgKind::Bool, Scope::InputOutput, false);
        check("an", ArgKind::Bool, Scope::InputOutput, false);
        check("sn", ArgKind::Bool, Scope::InputOutput, false);
        check("dn", ArgKind::Bool, Scope::InputOutput, false);
        check("shortest", ArgKind::Bool, Scope::Output, false);
        check("frames", ArgKind::Value, Scope::Output, true);
        check("vframes", ArgKind::Value, Scope::Output, false);
        check("tag", ArgKind::Value, Scope::InputOutput, true);
        check("bsf", ArgKind::Value, Scope::InputOutput, true);
        check("thread_queue_size", ArgKind::Value, Scope::InputOutput, false);
        check("filter_threads", ArgKind::Value, Scope::Global, false);
        check("filter_complex_threads", ArgKind::Value, Scope::Global, false);
    }

    #[test]
    fn options_of_some_versions_only() {
        check("map_channel", ArgKind::Value, Scope::Output, false);
        check("psnr", ArgKind::Bool, Scope::Global, false);
        check("async", ArgKind::Value, Scope::Global, false);
        check("absf", ArgKind::Value, Scope::Output, false);
        check("vbsf", ArgKind::Value, Scope::Output, false);
        check("stats_enc_pre", ArgKind::Value, Scope::Output, true);
        check("enc_time_base", ArgKind::Value, Scope::Output, true);
        check("bits_per_raw_sample", ArgKind::Value, Scope::Output, true);
        check("readrate_initial_burst", ArgKind::Value, Scope::Input, false);
        check("readrate_catchup", ArgKind::Value, Scope::Input, false);
        check("fix_sub_duration_heartbeat", ArgKind::Bool, Scope::Output, true);
        check("display_rotation", ArgKind::Value, Scope::Input, true);
        check("display_hflip", ArgKind::Bool, Scope::Input, true);
        check("autoscale", ArgKind::BoolValueBefore7, Scope::Output, true);
        check("apply_cropping", ArgKind::Value, Scope::Input, true);
        check("print_graphs", ArgKind::Bool, Scope::Global, false);
        check("filter_buffered_frames", ArgKind::Value, Scope::Global, false);
        check("stream_group", ArgKind::Value, Scope::Output, true);
    }

    #[test]
    fn not_options() {
        // Group separators, `-no` forms and AVOptions are handled by the parser.
        for name in [
            "i",
            "dec",
            "noaccurate_seek",
            "noautorotate",
            "nostdin",
            "nostats",
            "x264opts",
            "x265-params",
            "preset",
            "crf",
            "maxrate",
            "bufsize",
            "level",
            "threads",
            "hls_time",
            "hls_segment_type",
            "sc_threshold",
            "max_delay",
            "probesize",
            "analyzeduration",
            "fflags",
            "avoid_negative_ts",
            "g",
            "keyint_min",
            "flags",
            "movflags",
            "start_number",
            "vaapi",
            "codec_tag",
        ] {
            assert!(find_ffmpeg_option(name).is_none(), "`{name}` must not be in the table");
        }
    }
}
