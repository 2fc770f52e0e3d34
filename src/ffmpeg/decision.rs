//! Where an invocation should run, and why: a pure function of the argument list.
//!
//! The classifier never looks at files or the cluster. It answers "what kind of job
//! is this?"; the shim combines the answer with local facts (is a controller
//! configured, is it up, can a node do it) and may still fall back to running
//! locally. Every outcome carries a stable [`Reason`] code so that logs, metrics
//! and `ffcluster explain` can say why a command ran where it did.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::cmdline::{CommandLine, Dialect, Input, Opt, Output, Program};
use super::filtergraph;
use super::url::Target;

/// Where the job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// A capability probe (`-version`, `-encoders`, `-h filter=…`, the synthetic runs
    /// Jellyfin uses to test features). Answered locally or from the probe cache.
    Probe,
    /// An ffprobe invocation: always local.
    Ffprobe,
    /// Run the real ffmpeg here.
    Local,
    /// Run the whole job on one node.
    Whole,
    /// Cut the timeline into chunks and encode them on many nodes.
    Split,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Probe => "probe",
            Decision::Ffprobe => "ffprobe",
            Decision::Local => "local",
            Decision::Whole => "whole",
            Decision::Split => "split",
        }
    }
}

macro_rules! reasons {
    ($($variant:ident => $decision:ident, $code:literal, $doc:literal;)*) => {
        /// Why a job got its [`Decision`]. The codes are stable: they appear in logs,
        /// metrics and the golden corpus.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $(#[doc = $doc] $variant,)*
        }

        impl Reason {
            /// All reasons, for documentation and tests.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $code,)* }
            }

            /// The decision this reason belongs to.
            pub fn decision(self) -> Decision {
                match self { $(Reason::$variant => Decision::$decision,)* }
            }

            /// One line for humans.
            pub fn describe(self) -> &'static str {
                match self { $(Reason::$variant => $doc,)* }
            }

            pub fn from_code(code: &str) -> Option<Reason> {
                match code { $($code => Some(Reason::$variant),)* _ => None }
            }
        }
    };
}

reasons! {
    ProbeInfo => Probe, "probe.info", "prints build information and exits (-version, -encoders, -h filter=…)";
    ProbeRuntime => Probe, "probe.runtime", "synthetic lavfi run with null output, used to test features (Jellyfin's keyboard and exit-code probes)";
    ProbeHwDevice => Probe, "probe.hw_device", "initialises a hardware device and exits (Jellyfin's VAAPI/Vulkan driver probes)";
    Ffprobe => Ffprobe, "ffprobe", "ffprobe always runs locally";
    ParseError => Local, "local.parse_error", "ffmpeg would reject the argument list; the real ffmpeg prints its own error";
    NoOutput => Local, "local.no_output", "no output file: ffmpeg prints usage or an error";
    StdinInput => Local, "local.stdin_input", "reads its input from standard input";
    CaptureDevice => Local, "local.capture_device", "reads from a capture device attached to this machine";
    AttachmentDump => Local, "local.attachment_dump", "dumps attachments (fonts) next to the input: cheap, writes into the working directory";
    SubtitleExtract => Local, "local.subtitle_extract", "extracts or converts subtitle streams: cheap";
    StreamCopy => Local, "local.stream_copy", "stream copy (remux): nothing to encode";
    VideoCopy => Local, "local.video_copy", "video is copied, only audio is encoded: cheap";
    AudioOnly => Local, "local.audio_only", "audio-only transcode: cheap";
    SingleFrame => Local, "local.single_frame", "extracts a single image: cheap and latency-sensitive";
    NullOutput => Local, "local.null_output", "analysis run with null output (loudness, benchmarks)";
    TwoPass => Local, "local.two_pass", "two-pass encode with a pass log on this machine";
    SideFiles => Local, "local.side_files", "writes side files (-report, -vstats, -sdp_file, -progress to a file)";
    NetworkOutput => Local, "local.network_output", "publishes to a network URL";
    ScriptFile => Local, "local.script_file", "reads a filter or option script from this machine";
    FilterComplex => Whole, "whole.filter_complex", "uses -filter_complex: one node runs the whole graph";
    MultipleInputs => Whole, "whole.multiple_inputs", "several inputs: one node runs the whole job";
    MultipleOutputs => Whole, "whole.multiple_outputs", "several outputs: one node runs the whole job";
    ImageSequence => Whole, "whole.image_sequence", "writes an image sequence (trickplay): one node, files streamed back in order";
    FrameCountingFilter => Whole, "whole.frame_counting_filter", "a filter depends on frame numbers or the whole stream (select, setpts, reverse, loop, trim…)";
    UnsplittableOutput => Whole, "whole.unsplittable_output", "the output format cannot be assembled from chunks";
    LiveInput => Whole, "whole.live_input", "a live or real-time input without a segment playlist";
    SplitHls => Split, "split.hls", "video transcode to HLS: chunks on the segment grid";
    SplitLive => Split, "split.live", "live input to an HLS playlist: pieces of the incoming stream pipelined across nodes";
    SplitProgressive => Split, "split.progressive", "video transcode to a progressive file: chunks joined in order";
    SplitStream => Split, "split.stream", "video transcode to standard output: chunks joined in order";
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// HLS segment container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentType {
    Mpegts,
    Fmp4,
}

/// `-hls_playlist_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaylistType {
    Vod,
    Event,
    /// Not given: a sliding live playlist.
    Live,
}

/// What one output looks like on disk or on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "shape", rename_all = "snake_case")]
pub enum OutputShape {
    Hls {
        segment_type: SegmentType,
        playlist_type: PlaylistType,
        /// `-hls_time` in seconds (ffmpeg's default is 2).
        hls_time: f64,
        start_number: i64,
        /// `-hls_segment_filename`, if given.
        #[serde(skip_serializing_if = "Option::is_none")]
        segment_filename: Option<String>,
    },
    /// A regular file, written sequentially (Jellyfin tails it while it grows).
    Progressive { format: String },
    /// Standard output or another pipe.
    Stream { format: String },
    /// Numbered images (`%08d.jpg`).
    ImageSequence { format: String },
    /// One image file.
    Image { format: String },
    /// Subtitle files.
    Subtitles { format: String },
    /// Attachment files written by `-dump_attachment` (carried by a null output).
    Attachments,
    /// `-f null`.
    Null,
    /// Legacy segment muxer and other multi-file formats.
    SegmentFiles { format: String },
    /// Network publishing (RTMP, UDP, …).
    Network { format: String },
}

/// The short form used in logs, `explain` and the corpus golden file:
/// `hls fmp4 vod`, `progressive mp4`, `image-sequence image2`, …
impl std::fmt::Display for OutputShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputShape::Hls { segment_type, playlist_type, .. } => {
                let seg = match segment_type {
                    SegmentType::Mpegts => "mpegts",
                    SegmentType::Fmp4 => "fmp4",
                };
                let pl = match playlist_type {
                    PlaylistType::Vod => "vod",
                    PlaylistType::Event => "event",
                    PlaylistType::Live => "live",
                };
                write!(f, "hls {seg} {pl}")
            }
            OutputShape::Progressive { format } => write!(f, "progressive {format}"),
            OutputShape::Stream { format } => write!(f, "stream {format}"),
            OutputShape::ImageSequence { format } => write!(f, "image-sequence {format}"),
            OutputShape::Image { format } => write!(f, "image {format}"),
            OutputShape::Subtitles { format } => write!(f, "subtitles {format}"),
            OutputShape::Attachments => f.write_str("attachments"),
            OutputShape::Null => f.write_str("null"),
            OutputShape::SegmentFiles { format } => write!(f, "segment-files {format}"),
            OutputShape::Network { format } => write!(f, "network {format}"),
        }
    }
}

/// What a node must have to run the job exactly as asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Needs {
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub encoders: BTreeSet<String>,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub decoders: BTreeSet<String>,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub filters: BTreeSet<String>,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub hwaccels: BTreeSet<String>,
    /// Device types from `-init_hw_device TYPE=…` and `-vaapi_device`/`-qsv_device`.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub hw_devices: BTreeSet<String>,
}

/// The classifier's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Reason,
    pub outputs: Vec<OutputShape>,
    pub needs: Needs,
}

impl Verdict {
    fn new(reason: Reason, outputs: Vec<OutputShape>, needs: Needs) -> Verdict {
        Verdict { decision: reason.decision(), reason, outputs, needs }
    }
}

/// Options whose presence means the job reads or writes files beside its inputs and
/// outputs on this machine.
const SIDE_FILE_OPTS: &[&str] =
    &["report", "vstats", "vstats_file", "sdp_file", "passlogfile", "stats_enc_pre", "stats_enc_post", "stats_mux_pre"];
/// Options that read a file named in their value (ffmpeg 7.1 also reads any option's
/// value from a file when its name is written with a leading `/`).
const SCRIPT_OPTS: &[&str] = &["filter_complex_script", "filter_script", "attach"];
const CAPTURE_FORMATS: &[&str] = &[
    "v4l2",
    "video4linux2",
    "x11grab",
    "alsa",
    "pulse",
    "jack",
    "oss",
    "sndio",
    "fbdev",
    "kmsgrab",
    "decklink",
    "dshow",
    "gdigrab",
    "vfwcap",
    "avfoundation",
    "openal",
    "xcbgrab",
    "android_camera",
    "iec61883",
    "dv1394",
    "lavfi_device",
];
/// Filters whose output depends on frame numbers or on the stream as a whole, so a
/// chunk cannot reproduce its part of the output on its own.
const FRAME_COUNTING_FILTERS: &[&str] = &[
    "select",
    "aselect",
    "setpts",
    "asetpts",
    "reverse",
    "areverse",
    "loop",
    "aloop",
    "trim",
    "atrim",
    "framestep",
    "concat",
    "settb",
    "asettb",
    "shuffleframes",
    "tpad",
    "apad",
    "palettegen",
    "loudnorm",
    "ebur128",
    "fieldhint",
    "decimate",
    "mpdecimate",
    "freezedetect",
    "blackdetect",
    "silencedetect",
    "scdet",
];
const SUBTITLE_EXTS: &[(&str, &str)] = &[
    ("srt", "srt"),
    ("ass", "ass"),
    ("ssa", "ass"),
    ("vtt", "webvtt"),
    ("sup", "sup"),
    ("sub", "microdvd"),
    ("ttml", "ttml"),
    ("lrc", "lrc"),
];
const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "jxl", "avif"];
const AUDIO_FORMATS: &[&str] = &[
    "mp3",
    "adts",
    "aac",
    "flac",
    "ogg",
    "opus",
    "wav",
    "ipod",
    "ac3",
    "eac3",
    "alac",
    "caf",
    "w64",
    "s16le",
    "f32le",
    "oga",
    "wv",
    "mka_audio",
];
const SPLITTABLE_PROGRESSIVE: &[&str] = &["mp4", "mov", "matroska", "webm", "mpegts", "ismv"];

/// Classifies an invocation of `program` with `args` (without `argv[0]`), split
/// as the default [`Dialect`] does.
pub fn classify<S: AsRef<str>>(program: Program, args: &[S]) -> Verdict {
    classify_with(program, args, Dialect::default())
}

/// [`classify`] with the real binary's [`Dialect`].
pub fn classify_with<S: AsRef<str>>(program: Program, args: &[S], dialect: Dialect) -> Verdict {
    if program == Program::Ffprobe {
        return Verdict::new(Reason::Ffprobe, Vec::new(), Needs::default());
    }
    match CommandLine::parse_with(args, dialect) {
        Ok(cl) => classify_cmdline(&cl),
        Err(_) => Verdict::new(Reason::ParseError, Vec::new(), Needs::default()),
    }
}

/// Classifies an already parsed ffmpeg command line.
pub fn classify_cmdline(cl: &CommandLine) -> Verdict {
    let dumps_attachments = cl.inputs.iter().any(|i| i.opts_named("dump_attachment").next().is_some());
    let shapes: Vec<OutputShape> = cl
        .outputs
        .iter()
        .map(|o| match output_shape(o) {
            // The null output only carries the job; the files it makes are the attachments.
            OutputShape::Null if dumps_attachments => OutputShape::Attachments,
            s => s,
        })
        .collect();
    let needs = needs(cl);
    let reason = reason(cl, &shapes, &needs, dumps_attachments);
    Verdict::new(reason, shapes, needs)
}

/// The first rule that applies, in order: probes, then what must stay local, then
/// what only one node can do, then what splits.
fn reason(cl: &CommandLine, shapes: &[OutputShape], needs: &Needs, dumps_attachments: bool) -> Reason {
    // ffmpeg runs global options in order; the first one that prints and exits wins.
    if cl.globals.iter().any(|o| matches!(o.def().map(|d| d.kind), Some(super::options::ArgKind::Exit))) {
        return Reason::ProbeInfo;
    }
    if cl.outputs.is_empty() {
        if cl.inputs.is_empty() && cl.globals_named("init_hw_device").next().is_some() {
            return Reason::ProbeHwDevice;
        }
        return Reason::NoOutput;
    }
    let all_null = shapes.iter().all(|s| matches!(s, OutputShape::Null));
    if all_null && !cl.inputs.is_empty() && cl.inputs.iter().all(|i| input_format(i) == Some("lavfi")) {
        return Reason::ProbeRuntime;
    }
    if cl.inputs.iter().any(|i| i.url.is_pipe()) {
        return Reason::StdinInput;
    }
    if cl.inputs.iter().any(is_capture) {
        return Reason::CaptureDevice;
    }
    if dumps_attachments {
        return Reason::AttachmentDump;
    }
    if shapes.iter().all(|s| matches!(s, OutputShape::Subtitles { .. })) {
        return Reason::SubtitleExtract;
    }
    if all_null {
        return Reason::NullOutput;
    }
    if shapes.iter().any(|s| matches!(s, OutputShape::Network { .. })) {
        return Reason::NetworkOutput;
    }
    let all_opts = || {
        cl.globals.iter().chain(cl.outputs.iter().flat_map(|o| &o.opts)).chain(cl.inputs.iter().flat_map(|i| &i.opts))
    };
    if all_opts().any(|o| o.name() == "pass") {
        return Reason::TwoPass;
    }
    if all_opts().any(|o| SCRIPT_OPTS.contains(&o.name()) || o.key.starts_with('/')) {
        return Reason::ScriptFile;
    }
    if all_opts().any(|o| SIDE_FILE_OPTS.contains(&o.name()))
        || cl.global_value("progress").is_some_and(|p| !matches!(super::url::Url::parse(p).target, Target::Pipe { .. }))
    {
        return Reason::SideFiles;
    }

    let video: Vec<VideoUse> = cl.outputs.iter().zip(shapes).map(|(o, s)| video_use(cl, o, s)).collect();
    if video.iter().all(|u| *u == VideoUse::None) {
        return Reason::AudioOnly;
    }
    if !video.contains(&VideoUse::Encode) {
        let audio_encoded = cl.outputs.iter().any(encodes_audio);
        return if audio_encoded { Reason::VideoCopy } else { Reason::StreamCopy };
    }
    if shapes.iter().all(|s| matches!(s, OutputShape::Image { .. })) {
        return Reason::SingleFrame;
    }

    // From here on the job encodes video: it is worth a node.
    let live = cl.inputs.iter().any(|i| i.url.is_network() || i.flag("re") || i.last_value("readrate").is_some());
    if cl.outputs.len() > 1 {
        return Reason::MultipleOutputs;
    }
    let shape = &shapes[0];
    if matches!(shape, OutputShape::ImageSequence { .. }) {
        return Reason::ImageSequence;
    }
    if cl.globals_named("filter_complex").next().is_some() {
        return Reason::FilterComplex;
    }
    if cl.inputs.len() > 1 {
        return Reason::MultipleInputs;
    }
    if needs.filters.iter().any(|f| FRAME_COUNTING_FILTERS.contains(&f.as_str())) {
        return Reason::FrameCountingFilter;
    }
    match shape {
        OutputShape::Hls { .. } if live => Reason::SplitLive,
        OutputShape::Hls { .. } => Reason::SplitHls,
        _ if live => Reason::LiveInput,
        OutputShape::Progressive { format } if SPLITTABLE_PROGRESSIVE.contains(&format.as_str()) => {
            Reason::SplitProgressive
        }
        OutputShape::Stream { format } if SPLITTABLE_PROGRESSIVE.contains(&format.as_str()) => Reason::SplitStream,
        _ => Reason::UnsplittableOutput,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoUse {
    None,
    Copy,
    Encode,
}

fn input_format(i: &Input) -> Option<&str> {
    i.last_value("f")
}

fn is_capture(i: &Input) -> bool {
    input_format(i).is_some_and(|f| CAPTURE_FORMATS.contains(&f))
        || i.url.local_path().is_some_and(|p| p.starts_with("/dev/video") || p.starts_with("/dev/dvb"))
}

/// Whether a codec option with stream specifier `spec` applies to streams of
/// `media` (`v`, `a`, `s`, `d`, `t`); `None` applies to every stream.
fn spec_matches(spec: Option<&str>, media: char) -> bool {
    match spec.and_then(|s| s.chars().next()) {
        None => true,
        Some(c) if c.is_ascii_digit() => true,
        Some('V') => media == 'v',
        Some(c) => c == media,
    }
}

/// The codec chosen for `media` streams of this output, following ffmpeg's rule
/// that the last matching option wins; the media-specific aliases count too.
fn codec_for(o: &Output, media: char) -> Option<&str> {
    let alias = match media {
        'v' => "vcodec",
        'a' => "acodec",
        's' => "scodec",
        _ => "dcodec",
    };
    o.opts
        .iter()
        .filter(|opt| (opt.name() == "codec" && spec_matches(opt.spec(), media)) || opt.name() == alias)
        .filter_map(|opt| opt.value.as_deref())
        .next_back()
}

fn disabled(o: &Output, media: char) -> bool {
    o.flag(&format!("{media}n"))
}

fn maps(o: &Output) -> impl Iterator<Item = &str> {
    o.opts_named("map").filter_map(|m| m.value.as_deref())
}

fn video_use(cl: &CommandLine, o: &Output, shape: &OutputShape) -> VideoUse {
    if disabled(o, 'v') {
        return VideoUse::None;
    }
    match shape {
        OutputShape::Subtitles { .. } | OutputShape::Null | OutputShape::Attachments => return VideoUse::None,
        OutputShape::Progressive { format } | OutputShape::Stream { format }
            if AUDIO_FORMATS.contains(&format.as_str()) =>
        {
            return VideoUse::None;
        }
        _ => {}
    }
    let codec = codec_for(o, 'v');
    // Positive maps that name only audio or subtitle streams leave no video.
    let positive: Vec<&str> = maps(o).filter(|m| !m.starts_with('-')).collect();
    let maps_video = positive.is_empty()
        || positive.iter().any(|m| {
            let spec = m.split_once(':').map(|(_, s)| s).unwrap_or("");
            m.starts_with('[')
                || !(spec.starts_with('a') || spec.starts_with('s') || spec.starts_with('d') || spec.starts_with('t'))
        });
    let filtered = o.opts.iter().any(|x| (x.name() == "filter" && spec_matches(x.spec(), 'v')) || x.name() == "vf")
        || cl.globals_named("filter_complex").next().is_some();
    match codec {
        Some("copy") if !filtered => VideoUse::Copy,
        Some(_) => VideoUse::Encode,
        None if maps_video => VideoUse::Encode,
        None => VideoUse::None,
    }
}

fn encodes_audio(o: &Output) -> bool {
    !disabled(o, 'a') && codec_for(o, 'a') != Some("copy")
}

fn extension(path: &str) -> Option<String> {
    let name = path.rsplit(['/', '\\']).next()?;
    name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())
}

/// ffmpeg's `av_guess_format()` by extension, for the formats that matter here.
fn format_from_extension(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "m3u8" => "hls",
        "ts" | "m2ts" | "mts" | "m2t" => "mpegts",
        "mp4" | "m4v" => "mp4",
        "m4a" => "ipod",
        "mov" => "mov",
        "mkv" => "matroska",
        "mka" => "matroska",
        "webm" => "webm",
        "mp3" => "mp3",
        "aac" => "adts",
        "flac" => "flac",
        "ogg" | "oga" => "ogg",
        "opus" => "opus",
        "wav" => "wav",
        "flv" => "flv",
        "avi" => "avi",
        "mpd" => "dash",
        "ismv" => "ismv",
        e if IMAGE_EXTS.contains(&e) => "image2",
        e => SUBTITLE_EXTS.iter().find(|(x, _)| *x == e).map(|(_, f)| *f)?,
    })
}

fn output_shape(o: &Output) -> OutputShape {
    if let Target::Network { scheme } = &o.url.target {
        return OutputShape::Network { format: o.last_value("f").unwrap_or(scheme).to_owned() };
    }
    let path = match &o.url.target {
        Target::File { path } => Some(path.as_str()),
        _ => None,
    };
    let ext = path.and_then(extension);
    let format = o
        .last_value("f")
        .map(str::to_owned)
        .or_else(|| ext.as_deref().and_then(format_from_extension).map(str::to_owned))
        // ffmpeg itself would fail with "Unable to find a suitable output format".
        .unwrap_or_else(|| "unknown".to_owned());
    let is_null_url = matches!(o.url.raw.as_str(), "null" | "/dev/null" | "NUL");
    if format == "null" || (format == "unknown" && is_null_url) {
        return OutputShape::Null;
    }
    if o.url.is_pipe() {
        return OutputShape::Stream { format };
    }
    match format.as_str() {
        "hls" => hls_shape(o),
        "image2" | "image2pipe" | "mjpeg" | "apng" | "webp" if path.is_some_and(is_sequence_pattern) => {
            OutputShape::ImageSequence { format }
        }
        "image2" => {
            if path.is_some_and(is_sequence_pattern) {
                OutputShape::ImageSequence { format }
            } else {
                OutputShape::Image { format }
            }
        }
        "segment" | "ssegment" | "stream_segment" | "dash" | "tee" => OutputShape::SegmentFiles { format },
        f if SUBTITLE_EXTS.iter().any(|(_, sf)| *sf == f) || ["subrip", "ass", "webvtt", "srt"].contains(&f) => {
            OutputShape::Subtitles { format }
        }
        _ if ext.as_deref().is_some_and(|e| SUBTITLE_EXTS.iter().any(|(x, _)| *x == e)) => {
            OutputShape::Subtitles { format }
        }
        _ if is_subtitle_only(o) => OutputShape::Subtitles { format },
        _ => OutputShape::Progressive { format },
    }
}

/// Only subtitle streams reach this output (`-an -vn` with a subtitle codec).
fn is_subtitle_only(o: &Output) -> bool {
    disabled(o, 'a') && disabled(o, 'v') && codec_for(o, 's').is_some()
}

/// `%d`, `%03d` … as the image2 muxer expands them (`av_get_frame_filename`).
fn is_sequence_pattern(path: &str) -> bool {
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        while chars.peek().is_some_and(char::is_ascii_digit) {
            chars.next();
        }
        if chars.peek() == Some(&'d') {
            return true;
        }
        chars.next();
    }
    false
}

fn hls_shape(o: &Output) -> OutputShape {
    let segment_type = match o.last_value("hls_segment_type") {
        Some("fmp4") | Some("1") => SegmentType::Fmp4,
        _ => SegmentType::Mpegts,
    };
    let playlist_type = match o.last_value("hls_playlist_type") {
        Some("vod") | Some("2") => PlaylistType::Vod,
        Some("event") | Some("1") => PlaylistType::Event,
        _ => PlaylistType::Live,
    };
    OutputShape::Hls {
        segment_type,
        playlist_type,
        hls_time: o.last_value("hls_time").and_then(|t| t.parse().ok()).unwrap_or(2.0),
        start_number: o.last_value("start_number").and_then(|t| t.parse().ok()).unwrap_or(0),
        segment_filename: o.last_value("hls_segment_filename").map(str::to_owned),
    }
}

fn needs(cl: &CommandLine) -> Needs {
    let mut n = Needs::default();
    let codec_values = |opts: &[Opt]| -> Vec<String> {
        opts.iter()
            .filter(|o| matches!(o.name(), "codec" | "vcodec" | "acodec" | "scodec" | "dcodec"))
            .filter_map(|o| o.value.clone())
            .filter(|v| v != "copy")
            .collect()
    };
    for i in &cl.inputs {
        n.decoders.extend(codec_values(&i.opts));
        n.hwaccels
            .extend(i.opts_named("hwaccel").filter_map(|o| o.value.clone()).filter(|v| v != "none" && v != "auto"));
    }
    for o in &cl.outputs {
        n.encoders.extend(codec_values(&o.opts));
        for f in o.opts.iter().filter(|x| matches!(x.name(), "filter" | "vf" | "af")) {
            n.filters.extend(filtergraph::filter_names(f.value.as_deref().unwrap_or("")));
        }
    }
    for g in cl.globals_named("filter_complex") {
        n.filters.extend(filtergraph::filter_names(g.value.as_deref().unwrap_or("")));
    }
    for g in &cl.globals {
        match g.name() {
            "init_hw_device" => {
                if let Some(v) = &g.value {
                    let ty = v.split(['=', ':', '@']).next().unwrap_or(v);
                    n.hw_devices.insert(ty.to_owned());
                }
            }
            "vaapi_device" => {
                n.hw_devices.insert("vaapi".into());
            }
            "qsv_device" => {
                n.hw_devices.insert("qsv".into());
            }
            _ => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> Reason {
        let args: Vec<&str> = s.split_whitespace().collect();
        classify(Program::Ffmpeg, &args).reason
    }

    #[test]
    fn every_reason_code_round_trips_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate code {}", r.as_str());
            assert_eq!(Reason::from_code(r.as_str()), Some(*r));
            assert!(r.as_str().starts_with(r.decision().as_str()) || r.decision() == Decision::Ffprobe);
        }
    }

    #[test]
    fn probes() {
        assert_eq!(reason("-version"), Reason::ProbeInfo);
        assert_eq!(reason("-hide_banner -encoders"), Reason::ProbeInfo);
        assert_eq!(reason("-h filter=scale_cuda"), Reason::ProbeInfo);
        assert_eq!(reason("-hide_banner -f lavfi -i nullsrc=s=1x1:d=10000 -f null -"), Reason::ProbeRuntime);
        assert_eq!(
            reason(
                "-loglevel quiet -hwaccel_flags +low_priority -hide_banner -f lavfi -i nullsrc=s=1x1:d=100 -f null -"
            ),
            Reason::ProbeRuntime
        );
        assert_eq!(
            reason("-v verbose -hide_banner -init_hw_device vaapi=va:/dev/dri/renderD128"),
            Reason::ProbeHwDevice
        );
        assert_eq!(classify(Program::Ffprobe, &["-version"]).reason, Reason::Ffprobe);
    }

    #[test]
    fn cheap_jobs_stay_local() {
        assert_eq!(reason("-i in.mkv -c copy out.mp4"), Reason::StreamCopy);
        assert_eq!(reason("-i in.mkv -codec:v:0 copy -codec:a:0 aac out.ts"), Reason::VideoCopy);
        assert_eq!(reason("-i in.flac -vn -ab 256000 -acodec libmp3lame out.mp3"), Reason::AudioOnly);
        assert_eq!(reason("-i in.mkv -map 0:2 -an -vn -c:s copy 2.ass"), Reason::SubtitleExtract);
        assert_eq!(reason("-dump_attachment:t \"\" -y -i in.mkv -t 0 -f null null"), Reason::AttachmentDump);
        assert_eq!(reason("-ss 5 -i in.mkv -vframes 1 -f image2 /tmp/x.jpg"), Reason::SingleFrame);
        assert_eq!(reason("-hide_banner -i t.flac -af ebur128=framelog=verbose -f null -"), Reason::NullOutput);
        assert_eq!(reason("-i - -c:v libx264 out.mp4"), Reason::StdinInput);
        assert_eq!(reason("-i in.mkv -c:v libx264 -pass 1 -f null /dev/null"), Reason::NullOutput);
        assert_eq!(reason("-i in.mkv -c:v libx264 -pass 2 out.mp4"), Reason::TwoPass);
        assert_eq!(reason("-f v4l2 -i /dev/video0 -c:v libx264 out.mp4"), Reason::CaptureDevice);
        assert_eq!(reason("-i in.mkv -c:v libx264 -f flv rtmp://x/live"), Reason::NetworkOutput);
        assert_eq!(reason("-i in.mkv"), Reason::NoOutput);
        assert_eq!(reason("-i"), Reason::ParseError);
    }

    #[test]
    fn video_encodes_go_to_the_cluster() {
        assert_eq!(reason("-i in.mkv -c:v libx264 -crf 20 -c:a aac out.mp4"), Reason::SplitProgressive);
        assert_eq!(reason("-i in.mkv -c:v libx264 -f mpegts pipe:1"), Reason::SplitStream);
        assert_eq!(reason("-i in.mkv -c:v libx264 -f hls -hls_time 3 out.m3u8"), Reason::SplitHls);
        assert_eq!(
            reason("-i http://h/stream.ts -c:v libx264 -f hls -hls_playlist_type event out.m3u8"),
            Reason::SplitLive
        );
        assert_eq!(reason("-i in.mkv -c:v libx264 out.avi"), Reason::UnsplittableOutput);
        assert_eq!(reason("-i in.mkv -c:v mjpeg -f image2 /tmp/t/%08d.jpg"), Reason::ImageSequence);
        assert_eq!(
            reason("-i in.mkv -filter_complex [0:v]scale=640:-2[v] -map [v] -c:v libx264 out.mp4"),
            Reason::FilterComplex
        );
        assert_eq!(reason("-i in.mkv -vf setpts=N/25/TB -c:v libx264 out.mp4"), Reason::FrameCountingFilter);
        assert_eq!(reason("-i a.mkv -i b.mkv -c:v libx264 out.mp4"), Reason::MultipleInputs);
        assert_eq!(reason("-i a.mkv -c:v libx264 a.mp4 -c:v libx264 b.mp4"), Reason::MultipleOutputs);
    }

    #[test]
    fn hls_shape_reads_the_muxer_options() {
        let args: Vec<&str> = "-i in.mkv -c:v libx264 -f hls -hls_time 3 -hls_segment_type fmp4 -start_number 7 -hls_segment_filename /t/a%d.mp4 -hls_playlist_type vod -y /t/a.m3u8"
            .split_whitespace()
            .collect();
        let v = classify(Program::Ffmpeg, &args);
        assert_eq!(
            v.outputs[0],
            OutputShape::Hls {
                segment_type: SegmentType::Fmp4,
                playlist_type: PlaylistType::Vod,
                hls_time: 3.0,
                start_number: 7,
                segment_filename: Some("/t/a%d.mp4".into())
            }
        );
        assert_eq!(v.needs.encoders.iter().collect::<Vec<_>>(), ["libx264"]);
    }
}
