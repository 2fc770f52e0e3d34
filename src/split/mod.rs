//! How one transcode is cut into chunks that several nodes encode at once, and
//! put back together so that the result is what one ffmpeg would have made.
//! Pure: the shim runs ffprobe and ffmpeg, the controller hands out chunks.
//!
//! The pipeline (checked against direct ffmpeg in
//! `shared/reference/pipeline-sketch.md`):
//!
//! 1. Each chunk `[a, b)` of the timeline, on the job's segment grid, is the
//!    video half of the job's own arguments, reading only that range and keeping
//!    source timestamps: `-ss a -i IN -map 0:v <the job's video options>
//!    -vf trim=end=b,<the job's filters> -copyts -f mpegts pipe:1`
//!    ([`ChunkRecipe::args`]).
//! 2. The chunks' MPEG-TS bytes, in timeline order, form one valid stream.
//! 3. One local ffmpeg, the *finisher*, runs the job's own command line with the
//!    video taken from that stream by stream copy ([`Split::finisher`]): file
//!    names, segment cuts, playlists, init segments and the order files appear in
//!    are ffmpeg's own, and the audio is encoded once, continuously.
//!
//! Frame exactness. `-force_key_frames expr:gte(t,n_forced*P)` measures `t` from
//! the first frame the encoder sees, in the encoder's time base (1/frame rate),
//! so for a constant-frame-rate source the direct run's keyframe `n` is frame
//! `ceil(n·P/fd)` counted from its first frame. A chunk starts exactly on such a
//! frame: its `-ss` sits half a frame before it (robust to millisecond-rounded
//! container timestamps), and its own keyframe expression is shifted by how far
//! that frame lies past the grid line, so the keyframes inside a chunk fall on
//! the same frames as in the direct run. The end of a chunk is an absolute
//! `trim=end=` on source timestamps (an input `-t` would count from the chunk's
//! first frame, which is not the grid line).

pub mod assemble;
pub mod live;
pub mod mpegts;
pub mod takeover;
pub mod timeline;

use serde::{Deserialize, Serialize};

use crate::ffmpeg::cmdline::{CommandLine, Opt};
use crate::ffmpeg::decision::{OutputShape, PlaylistType, classify_cmdline};
use crate::ffmpeg::url::Target;
use crate::plan::{Chunk, Grid, parse_time};

/// The finisher reads the joined video from this descriptor. A path rather than
/// `pipe:3`: ffmpeg stops reading keys from stdin when any input is `pipe:`,
/// and the finisher must still obey Jellyfin's `q`.
pub const FINISHER_VIDEO_FD: i32 = 3;
const FINISHER_VIDEO_INPUT: &str = "/dev/fd/3";
/// The finisher reads the audio a node encoded from this descriptor, when one
/// does ([`SplitPlan::audio`]).
pub const FINISHER_AUDIO_FD: i32 = 4;
const FINISHER_AUDIO_INPUT: &str = "/dev/fd/4";
/// A live job's finisher reads the incoming stream itself (for its audio) from
/// this descriptor: the shim copies what it fetches from the origin there.
pub const FINISHER_LIVE_FD: i32 = 5;
const FINISHER_LIVE_INPUT: &str = "/dev/fd/5";

/// Grid period for outputs without forced keyframes (progressive files, streams).
const FREE_GRID: f64 = 2.0;

/// Packets the planning probe reads (all streams together) for the first
/// pictures and the frame timing; [`PROBE_PACKETS_MORE`] when those did not
/// decode a picture.
pub const PROBE_PACKETS: u32 = 96;
pub const PROBE_PACKETS_MORE: u32 = 1200;

/// Why a job is not split (it then runs whole on one node).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotSplit {
    #[error("{0}")]
    Shape(String),
    #[error("option -{0} is not supported when splitting")]
    Option(String),
    #[error("stream selection {0:?} is not understood")]
    Map(String),
    #[error("{0}")]
    Streams(String),
    #[error("the input's duration is unknown")]
    NoDuration,
    #[error("ffprobe's answer cannot be read: {0}")]
    Probe(String),
    #[error("the input is too short to split ({0:.1} s)")]
    TooShort(f64),
    /// The source's frame timing is not on a constant grid, and the output's
    /// frame-rate mode would duplicate or drop frames by it.
    #[error("{0}")]
    VariableRate(String),
    /// `-r`, `-fps_mode` or a filter changes the frame rate: frames are
    /// duplicated or dropped on a timeline the chunks do not share.
    #[error("{0}")]
    RateChange(String),
    /// The video encoder's output cannot travel in the chunks' container.
    #[error("{0}")]
    ChunkCodec(String),
    /// The output timeline model cannot predict where ffmpeg puts the frames.
    #[error("{0}")]
    Timeline(String),
}

impl NotSplit {
    /// A stable code for why a job was not split: what `ffcluster status`,
    /// `ffcluster jobs`, the job log, the dashboard and the metrics show.
    pub fn code(&self) -> &'static str {
        match self {
            NotSplit::Shape(_) => "nosplit.shape",
            NotSplit::Option(_) => "nosplit.option",
            NotSplit::Map(_) => "nosplit.map",
            NotSplit::Streams(_) => "nosplit.streams",
            NotSplit::NoDuration => "nosplit.no_duration",
            NotSplit::Probe(_) => "nosplit.probe",
            NotSplit::TooShort(_) => "nosplit.too_short",
            NotSplit::VariableRate(_) => "nosplit.variable_rate",
            NotSplit::RateChange(_) => "nosplit.rate_change",
            NotSplit::ChunkCodec(_) => "nosplit.chunk_codec",
            NotSplit::Timeline(_) => "nosplit.timeline",
        }
    }
}

/// What ffprobe says about the input, as far as planning needs it. Times are in
/// seconds of the file's own timeline (`-ss` coordinates: the format's start
/// time is 0).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Probe {
    pub duration: Option<f64>,
    /// The format's start time in stream timestamps (what `-copyts` keeps).
    pub start_time: f64,
    pub streams: Vec<ProbeStream>,
    /// With `-noaccurate_seek`: the keyframe at or before `-ss`, where ffmpeg
    /// really starts.
    pub keyframe_before_seek: Option<f64>,
    /// The container stores timestamps in steps this long (Matroska: 1 ms), so
    /// a frame just before `-ss` may be stored at it, and kept by the seek.
    pub timestamp_step: Option<f64>,
    /// ffprobe's `format_name` (`mpegts`, `matroska,webm`, …).
    pub format_name: Option<String>,
    /// libavcodec's ident (`Lavc59.37.100`) of the ffprobe that answered,
    /// the build the finisher is of: the direct run's encoder writes it in
    /// the video stream's `encoder` tag.
    pub lavc: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStream {
    pub index: u32,
    pub kind: StreamKind,
    /// In `-ss` coordinates.
    pub start_time: Option<f64>,
    /// Seconds per frame when the rate is constant (`r_frame_rate` equals
    /// `avg_frame_rate`).
    pub frame_duration: Option<f64>,
    pub attached_pic: bool,
    pub channels: u32,
    /// The first picture the decoder gives (what the direct run's first frame
    /// is), when the probe decoded one: a file cut mid-GOP starts with
    /// pictures that cannot be decoded, and open GOPs lead with pictures that
    /// are dropped, so the stream's first timestamp is not it.
    pub first_picture: Option<FirstPicture>,
    /// Times of the pictures the probe decoded, in display order, in `-ss`
    /// coordinates: every picture up to [`ProbeStream::read_up_to`] (see
    /// [`Probe::ffprobe_args`] for how many packets it reads).
    pub frame_times: Vec<f64>,
    /// The decoding time of the last packet the probe read: every picture
    /// shown at or before it was read (decode order never runs ahead of
    /// display order), so the frame times up to it have no gaps the probe made.
    pub read_up_to: Option<f64>,
    /// The base frame rate as ffprobe writes it (`24000/1001`): the direct
    /// run's encoder counts time in its inverse.
    pub base_rate: Option<String>,
    /// Whether the stream's first packet is a keyframe (`None` when the
    /// probe read none): a file cut mid-GOP starts with pictures that cannot
    /// be decoded, which decoders treat differently from one run to another.
    pub starts_on_keyframe: Option<bool>,
    /// The longest time between two keyframes among the packets the probe
    /// read (`None` with fewer than two).
    pub keyframe_interval: Option<f64>,
    /// `disposition` flags set on the stream (`default`, `forced`…), which
    /// ffmpeg copies to the output stream.
    pub disposition: Vec<String>,
    /// The stream's metadata tags, which ffmpeg copies to the output stream.
    pub tags: Vec<(String, String)>,
    /// Degrees of the stream's display matrix, when it has one.
    pub rotation: Option<f64>,
}

/// The first decoded picture of a video stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstPicture {
    /// In `-ss` coordinates.
    pub time: f64,
    pub interlaced: bool,
    pub top_field_first: bool,
    /// `tv` or `pc`, when the picture says.
    pub color_range: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Video,
    Audio,
    Subtitle,
    Data,
    Attachment,
}

impl StreamKind {
    fn letter(self) -> char {
        match self {
            StreamKind::Video => 'v',
            StreamKind::Audio => 'a',
            StreamKind::Subtitle => 's',
            StreamKind::Data => 'd',
            StreamKind::Attachment => 't',
        }
    }
}

impl Probe {
    /// ffprobe arguments whose JSON answer [`Probe::from_json`] reads: the
    /// format and streams, and the first [`PROBE_PACKETS`] packets with the
    /// pictures they decode to (on 1080p H.264 about 70 ms of CPU more than the header alone).
    pub fn ffprobe_args(input: &str) -> Vec<String> {
        Probe::ffprobe_args_reading(input, PROBE_PACKETS)
    }

    /// [`Probe::ffprobe_args`] reading `packets` packets.
    pub fn ffprobe_args_reading(input: &str, packets: u32) -> Vec<String> {
        [
            "-v",
            "error",
            "-of",
            "json",
            "-show_library_versions",
            "-read_intervals",
            &format!("%+#{packets}"),
            "-show_entries",
            "format=start_time,duration,format_name:stream=index,codec_type,start_time,r_frame_rate,avg_frame_rate,channels:stream_disposition:stream_tags:stream_side_data_list:packet=stream_index,pts_time,dts_time,flags:frame=stream_index,best_effort_timestamp_time,interlaced_frame,top_field_first,color_range",
            input,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Whether the probe found the first picture of every video stream; when
    /// not (a long run of undecodable pictures), probe again reading more.
    pub fn pictures_found(&self) -> bool {
        self.streams
            .iter()
            .filter(|s| s.kind == StreamKind::Video && !s.attached_pic)
            .all(|s| s.first_picture.is_some())
    }

    /// ffprobe arguments that print the first video packet from `seek` on (which
    /// a seek without `accurate_seek` starts at): [`Probe::parse_keyframe`].
    pub fn keyframe_args(input: &str, seek: &str) -> Vec<String> {
        [
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-read_intervals",
            &format!("{seek}%+#1"),
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
            input,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    pub fn parse_keyframe(&mut self, csv: &str) {
        let pts = csv.lines().find_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok());
        self.keyframe_before_seek = pts.map(|t| t - self.start_time);
    }

    pub fn from_json(text: &str) -> Result<Probe, NotSplit> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            streams: Vec<Stream>,
            format: Option<Format>,
            #[serde(default)]
            packets_and_frames: Vec<Entry>,
            #[serde(default)]
            packets: Vec<Entry>,
            #[serde(default)]
            frames: Vec<Entry>,
            #[serde(default)]
            library_versions: Vec<Library>,
        }
        #[derive(Deserialize)]
        struct Library {
            name: String,
            major: u32,
            minor: u32,
            micro: u32,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "type")]
            kind: Option<String>,
            stream_index: Option<u32>,
            pts_time: Option<String>,
            dts_time: Option<String>,
            flags: Option<String>,
            best_effort_timestamp_time: Option<String>,
            interlaced_frame: Option<u8>,
            top_field_first: Option<u8>,
            color_range: Option<String>,
        }
        #[derive(Deserialize)]
        struct SideData {
            rotation: Option<f64>,
        }
        #[derive(Deserialize)]
        struct Format {
            start_time: Option<String>,
            duration: Option<String>,
            format_name: Option<String>,
        }
        #[derive(Deserialize)]
        struct Stream {
            index: u32,
            codec_type: Option<String>,
            start_time: Option<String>,
            r_frame_rate: Option<String>,
            avg_frame_rate: Option<String>,
            channels: Option<u32>,
            disposition: Option<Disposition>,
            #[serde(default)]
            tags: std::collections::BTreeMap<String, serde_json::Value>,
            #[serde(default)]
            side_data_list: Vec<SideData>,
        }
        #[derive(Deserialize)]
        struct Disposition {
            #[serde(default)]
            attached_pic: u8,
            #[serde(flatten)]
            others: std::collections::BTreeMap<String, serde_json::Value>,
        }
        let doc: Doc = serde_json::from_str(text).map_err(|e| NotSplit::Probe(e.to_string()))?;
        let num = |s: &Option<String>| s.as_deref().and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite());
        let format = doc.format.ok_or_else(|| NotSplit::Probe("no format section".into()))?;
        let lavc = doc
            .library_versions
            .iter()
            .find(|l| l.name == "libavcodec")
            .map(|l| format!("Lavc{}.{}.{}", l.major, l.minor, l.micro));
        let start = num(&format.start_time).unwrap_or(0.0);
        // Packets and frames, in the order ffprobe read and decoded them
        // (`packets_and_frames` when both are shown).
        let entries: Vec<Entry> = doc.packets_and_frames.into_iter().chain(doc.packets).chain(doc.frames).collect();
        let streams = doc
            .streams
            .into_iter()
            .map(|s| {
                let index = s.index;
                let mine = entries.iter().filter(|e| e.stream_index == Some(index));
                let is_frame =
                    |e: &&Entry| e.kind.as_deref() == Some("frame") || e.best_effort_timestamp_time.is_some();
                let first_picture = mine.clone().filter(is_frame).find_map(|e| {
                    Some(FirstPicture {
                        time: num(&e.best_effort_timestamp_time)? - start,
                        interlaced: e.interlaced_frame.unwrap_or(0) != 0,
                        top_field_first: e.top_field_first.unwrap_or(0) != 0,
                        color_range: match e.color_range.as_deref() {
                            Some("tv") => Some("tv"),
                            Some("pc") => Some("pc"),
                            _ => None,
                        },
                    })
                });
                let frame_times = mine
                    .clone()
                    .filter(is_frame)
                    .filter_map(|e| num(&e.best_effort_timestamp_time))
                    .map(|t| t - start)
                    .collect();
                let starts_on_keyframe =
                    mine.clone().find(|e| !is_frame(e)).and_then(|e| e.flags.as_deref().map(|f| f.starts_with('K')));
                let keys: Vec<f64> = mine
                    .clone()
                    .filter(|e| !is_frame(e) && e.flags.as_deref().is_some_and(|f| f.starts_with('K')))
                    .filter_map(|e| num(&e.pts_time))
                    .collect();
                let keyframe_interval = keys.windows(2).map(|w| (w[1] - w[0]).abs()).reduce(f64::max);
                let read_up_to = mine
                    .filter(|e| !is_frame(e))
                    .filter_map(|e| num(&e.dts_time).or_else(|| num(&e.pts_time)))
                    .map(|t| t - start)
                    .reduce(f64::max);
                let disposition: Vec<String> = s
                    .disposition
                    .as_ref()
                    .map(|d| {
                        d.others
                            .iter()
                            .filter(|(k, v)| {
                                v.as_u64() == Some(1) && !matches!(k.as_str(), "attached_pic" | "timed_thumbnails")
                            })
                            .map(|(k, _)| k.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let tags = s
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect();
                let rotation = s.side_data_list.iter().find_map(|d| d.rotation);
                let kind = match s.codec_type.as_deref() {
                    Some("video") => StreamKind::Video,
                    Some("audio") => StreamKind::Audio,
                    Some("subtitle") => StreamKind::Subtitle,
                    Some("attachment") => StreamKind::Attachment,
                    _ => StreamKind::Data,
                };
                let r = s.r_frame_rate.as_deref().and_then(rate);
                let avg = s.avg_frame_rate.as_deref().and_then(rate);
                let cfr = match (r, avg) {
                    (Some(r), Some(avg)) if (r - avg).abs() <= r * 1e-3 => Some(1.0 / r),
                    _ => None,
                };
                ProbeStream {
                    index: s.index,
                    kind,
                    start_time: num(&s.start_time).map(|t| t - start),
                    frame_duration: cfr,
                    base_rate: s.r_frame_rate.clone(),
                    starts_on_keyframe,
                    keyframe_interval,
                    attached_pic: s.disposition.is_some_and(|d| d.attached_pic != 0),
                    channels: s.channels.unwrap_or(0),
                    first_picture,
                    frame_times,
                    read_up_to,
                    disposition,
                    tags,
                    rotation,
                }
            })
            .collect();
        // Matroska's default timecode scale is a millisecond.
        let ms = format.format_name.as_deref().is_some_and(|f| f.split(',').any(|n| n == "matroska" || n == "webm"));
        Ok(Probe {
            duration: num(&format.duration),
            start_time: start,
            streams,
            keyframe_before_seek: None,
            timestamp_step: ms.then_some(0.001),
            format_name: format.format_name,
            lavc,
        })
    }
}

#[cfg(test)]
impl Probe {
    /// For answers written by hand without packets and frames: each video
    /// stream's first picture at its start time, progressive.
    pub(crate) fn assume_first_pictures(mut self) -> Probe {
        for s in self.streams.iter_mut().filter(|s| s.kind == StreamKind::Video) {
            let time = s.start_time.unwrap_or(0.0);
            s.first_picture.get_or_insert(FirstPicture {
                time,
                interlaced: false,
                top_field_first: false,
                color_range: None,
            });
        }
        self
    }
}

fn rate(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let r = n.parse::<f64>().ok()? / d.parse::<f64>().ok()?;
    (r.is_finite() && r > 0.0 && r < 1000.0).then_some(r)
}

/// How a split job's chunks are made; the controller plans the chunks and asks
/// [`ChunkRecipe::args`] for each one's command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitPlan {
    pub recipe: ChunkRecipe,
    pub grid: Grid,
    /// The span to encode, in `-ss` coordinates: the first frame, and the end of
    /// the input.
    pub start: f64,
    pub end: f64,
    /// HLS index of the segment that starts at `start`.
    pub start_number: i64,
    /// How a node may encode the audio, once and continuously, so that the
    /// shim's machine only muxes; `None` when only the finisher can (see
    /// [`Split::finisher_audio_copy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioPart>,
    /// A live input: the controller cuts the stream into pieces as it arrives
    /// (`start` and `end` are then unused: the timeline ends when the stream does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LivePlan>,
}

/// How a live job's incoming stream is cut ([`live::Cutter`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivePlan {
    /// Seconds of video per piece: the segment period divided by a whole
    /// number, so that every segment starts a piece. Shorter pieces come back
    /// sooner (less added latency) but each starts with a keyframe of its own.
    pub piece: f64,
    /// The offered stream ([`crate::protocol::FileOffer::stream`]) the
    /// controller reads.
    pub stream: u32,
}

/// One piece of a live stream as a node encodes it, in 90 kHz ticks of the
/// source's own timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSpan {
    /// The piece's first frame.
    pub start: u64,
    /// The next piece's first frame; `None` for the last piece.
    pub end: Option<u64>,
    /// The stream's first keyframe: the segment grid's origin.
    pub origin: u64,
}

/// The job's audio encode, as a node runs it: the same input, seek and audio
/// options as the direct run, source timestamps kept, MPEG-TS out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioPart {
    /// `-map` of the audio stream, e.g. `0:1`.
    pub map: String,
    /// The job's audio encoding options, stream specifiers pointed at `a:0`.
    pub opts: Vec<String>,
}

/// The parts of the job's command line a chunk is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecipe {
    /// Global options (the job's, minus those that do not apply to a chunk).
    pub globals: Vec<String>,
    /// The input's own options, without its seek.
    pub input_opts: Vec<String>,
    /// The input as written in the job: the node maps it to the relay.
    pub input: String,
    /// The job's own seek, used as is by the first chunk (`-ss` value, and
    /// whether it was `-noaccurate_seek`).
    pub first_seek: Option<String>,
    pub noaccurate_first: bool,
    /// `-map` of the video stream, e.g. `0:0`.
    pub map: String,
    /// The job's video encoding options, stream specifiers pointed at `v:0`.
    pub video_opts: Vec<String>,
    /// The job's `-vf` chain, if any.
    pub filter: Option<String>,
    /// The keyframe period of `-force_key_frames expr:gte(t,n_forced*P)`, which
    /// each chunk re-anchors; `None` when the job forces no keyframes that way.
    pub keyframe_period: Option<f64>,
    /// Seconds per frame of a constant-rate source.
    pub frame_duration: Option<f64>,
    /// Time of the job's first frame (`-ss` coordinates).
    pub first_frame: f64,
    /// Added to `-ss` coordinates to get source timestamps (what `trim` sees
    /// under `-copyts`).
    pub pts_offset: f64,
    /// Seconds a chunk's seek lands before its first frame, which a `trim`
    /// then reaches exactly: demuxers without a keyframe index (MPEG-TS, PS)
    /// seek to a packet near the time, not to a keyframe before it, and the
    /// decoder drops everything up to the next keyframe (found by the
    /// exactness corpus: `-ss 3.02` on a TS with 2 s GOPs started at 4.08).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub preroll: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl ChunkRecipe {
    /// The frame a grid line really falls on: the first frame at or after it,
    /// as the direct run's forced-keyframe rule picks it.
    fn frame_at(&self, t: f64) -> Option<f64> {
        let fd = self.frame_duration?;
        let k = ((t - self.first_frame) / fd - 1e-6).ceil().max(0.0);
        Some(self.first_frame + k * fd)
    }

    /// Where to cut before the frame at grid line `t`: half a frame early, so that
    /// rounding in the container's timestamps cannot move the cut by a frame.
    fn cut(&self, t: f64) -> f64 {
        match (self.frame_at(t), self.frame_duration) {
            (Some(f), Some(fd)) => f - fd / 2.0,
            _ => t,
        }
    }

    /// What every node command line of the job starts with: its globals,
    /// quiet and overwriting, source timestamps kept, the input's own options.
    fn head(&self) -> Vec<String> {
        let mut a: Vec<String> = self.globals.clone();
        a.extend(["-nostdin", "-nostats", "-hide_banner", "-y", "-copyts"].map(str::to_owned));
        a.extend(self.input_opts.iter().cloned());
        a
    }

    /// The job's own seek, as written (the first chunk and the audio start there).
    fn job_seek(&self, a: &mut Vec<String>) {
        if let Some(ss) = &self.first_seek {
            if self.noaccurate_first {
                a.push("-noaccurate_seek".into());
            }
            a.extend(["-ss".into(), ss.clone()]);
        }
    }

    /// The rest of a video command line after `head` and any seek: `input`
    /// encoded with the job's video options, keyframes on the grid for a first
    /// frame `late` seconds past its grid line, `trim` ahead of the job's
    /// filters, MPEG-TS on stdout.
    fn video(&self, mut a: Vec<String>, input: &str, late: f64, trim: Option<String>) -> Vec<String> {
        a.extend(["-i".into(), input.to_owned(), "-map".into(), self.map.clone()]);
        a.extend(self.video_opts.iter().cloned());
        if let Some(p) = self.keyframe_period {
            let expr = if late > 1e-9 {
                format!("expr:gte(t,n_forced*{}-{})", num(p), secs(late))
            } else {
                format!("expr:gte(t,n_forced*{})", num(p))
            };
            a.extend(["-force_key_frames:v:0".into(), expr]);
        }
        let vf = match (trim, &self.filter) {
            (Some(t), Some(f)) => Some(format!("{t},{f}")),
            (Some(t), None) => Some(t),
            (None, f) => f.clone(),
        };
        if let Some(vf) = vf {
            a.extend(["-vf".into(), vf]);
        }
        // -flush_packets: each frame leaves at once instead of waiting in a
        // 32 KiB buffer (a quarter second of video at 1 Mb/s), which the
        // finisher, and so segment 0, would wait for.
        a.push("-an".into());
        a.extend(PIPE_TAIL.split(' ').map(str::to_owned));
        a
    }

    /// The node's command line for `chunk`. `last` chunks read to the end of input.
    pub fn args(&self, chunk: &Chunk, first: bool, last: bool) -> Vec<String> {
        let mut a = self.head();
        let preroll = !first && self.preroll > 0.0;
        if first {
            self.job_seek(&mut a);
        } else {
            let at = if preroll { (self.cut(chunk.start) - self.preroll).max(0.0) } else { self.cut(chunk.start) };
            a.extend(["-ss".into(), secs(at)]);
        }
        // The direct run's keyframe n is the first frame with t - t0 >= n·P;
        // this chunk's first frame lies `late` past its grid line.
        let late = if first { 0.0 } else { self.frame_at(chunk.start).map_or(0.0, |f| f - chunk.start) };
        let start = preroll.then(|| format!("start={}", secs(self.cut(chunk.start) + self.pts_offset)));
        let end = (!last).then(|| format!("end={}", secs(self.cut(chunk.end) + self.pts_offset)));
        let bounds: Vec<String> = start.into_iter().chain(end).collect();
        let trim = (!bounds.is_empty()).then(|| format!("trim={}", bounds.join(":")));
        self.video(a, &self.input, late, trim)
    }
}

/// How every node command line ends, after `-an` or `-vn`: MPEG-TS on stdout,
/// timestamps as they are, each packet out at once.
const PIPE_TAIL: &str =
    "-sn -dn -avoid_negative_ts disabled -f mpegts -muxdelay 0 -muxpreload 0 -flush_packets 1 pipe:1";

impl ChunkRecipe {
    /// The node's command line for one piece of a live stream: `input` is the
    /// piece (a whole MPEG-TS of its own, from a keyframe before its first
    /// frame), trimmed to its frames on the source's timestamps. The trim comes
    /// first in the chain, on the decoder's own time base (90 kHz for MPEG-TS:
    /// exact, no rounding), and the keyframe expression is re-anchored so that
    /// keyframes fall on the segment grid counted from the stream's first frame.
    pub fn live_args(&self, span: &LiveSpan, input: &str) -> Vec<String> {
        self.live_args_on(span, &live::PieceClock::default(), input)
    }

    /// [`Self::live_args`] for a piece that `clock` places on the stream's
    /// unwrapped timeline (across a wrap of the 33-bit clock), which `span`
    /// counts in.
    pub fn live_args_on(&self, span: &LiveSpan, clock: &live::PieceClock, input: &str) -> Vec<String> {
        // Counted in whole ticks: a piece on a grid line is exactly late 0.
        let late = self.keyframe_period.map_or(0, |p| {
            let period = (p * live::TICKS as f64).round().max(1.0) as u64;
            span.start.saturating_sub(span.origin) % period
        });
        let trim = match span.end {
            Some(end) => format!("trim=start_pts={}:end_pts={end}", span.start),
            None => format!("trim=start_pts={}", span.start),
        };
        let mut a = self.head();
        a.extend(clock.args());
        self.video(a, input, late as f64 / live::TICKS as f64, Some(trim))
    }
}

/// Filters that may change how many frames leave the chain: a chunk's frame
/// count is then not known in advance.
const RATE_FILTERS: &[&str] = &[
    "fps",
    "framerate",
    "yadif",
    "bwdif",
    "w3fdif",
    "select",
    "setpts",
    "interlace",
    "telecine",
    "decimate",
    "minterpolate",
    "tpad",
    "trim",
    "loop",
    "framestep",
    "random",
    "tblend",
    "deflicker",
];

impl ChunkRecipe {
    /// How many video frames `chunk`'s encode must hold, when that is certain:
    /// a constant-rate source, a chain that keeps every frame, a chunk that
    /// starts on a frame this recipe places and ends at a cut (not the input's
    /// end). What [`mpegts::Verifier`] checks a finished chunk against.
    pub fn frames(&self, chunk: &Chunk, first: bool, last: bool) -> Option<u64> {
        let fd = self.frame_duration?;
        let rate_changing = self.filter.as_deref().is_some_and(|f| {
            f.split([',', ';', '[', ']'])
                .map(|e| e.split('=').next().unwrap_or(e).trim())
                .any(|name| RATE_FILTERS.contains(&name))
        });
        if last || rate_changing || (first && self.noaccurate_first) {
            return None;
        }
        let (a, b) = (self.frame_at(chunk.start)?, self.frame_at(chunk.end)?);
        Some(((b - a) / fd).round().max(0.0) as u64)
    }

    /// The node's command line for the job's whole audio track.
    pub fn audio_args(&self, audio: &AudioPart) -> Vec<String> {
        let mut a = self.head();
        self.job_seek(&mut a);
        a.extend(["-i".into(), self.input.clone(), "-map".into(), audio.map.clone()]);
        a.extend(audio.opts.iter().cloned());
        // -flush_packets: the finisher cannot write segment 0 before it has the
        // audio up to segment 1, and 32 KiB held back is a second of audio.
        a.push("-vn".into());
        a.extend(PIPE_TAIL.split(' ').map(str::to_owned));
        if self.noaccurate_first && self.first_seek.is_some() {
            // Where a seek without accurate_seek starts reading depends on the
            // streams in use: Matroska skips the blocks before the seek's
            // keyframe only until it reads a keyframe of a stream in use, and
            // audio alone started 213 ms later than the direct run's (found by
            // the exactness corpus). The video, copied to the null muxer, stays
            // in use as in the direct run.
            a.extend(["-map", &self.map, "-c", "copy", "-f", "null", "-"].map(str::to_owned));
        }
        a
    }
}

/// A job that will be split: what the controller needs, and the finisher's
/// command line for the shim.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub plan: SplitPlan,
    /// The local ffmpeg that joins the chunks (reads them on
    /// [`FINISHER_VIDEO_FD`]), encodes the audio and writes the job's outputs.
    pub finisher: Vec<String>,
    /// The finisher when a node encodes the audio ([`SplitPlan::audio`]): it
    /// copies the audio from [`FINISHER_AUDIO_FD`] too. The controller decides
    /// which of the two runs.
    pub finisher_audio_copy: Option<Vec<String>>,
}

fn secs(t: f64) -> String {
    format!("{t:.6}")
}

fn num(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn tokens(o: &Opt) -> Vec<String> {
    std::iter::once(format!("-{}", o.key)).chain(o.value.clone()).collect()
}

/// Options a chunk cannot honour: they need the whole timeline or more files.
const UNSUPPORTED: &[&str] = &[
    "t",
    "to",
    "frames",
    "vframes",
    "fs",
    "pass",
    "passlogfile",
    "filter_complex",
    "filter_complex_script",
    "filter_script",
    "stream_loop",
    "itsoffset",
    "itsscale",
    "sseof",
    "re",
    "readrate",
    "dframes",
    "aframes",
    "ss",
];

/// ffmpeg's own output options that concern the video stream only.
const VIDEO_ONLY: &[&str] = &[
    "vcodec",
    "vf",
    "force_key_frames",
    "pix_fmt",
    "r",
    "fpsmax",
    "s",
    "aspect",
    "vtag",
    "fps_mode",
    "force_fps",
    "top",
    "enc_time_base",
    "autoscale",
    "vstats",
    "vstats_file",
    "vn",
];

/// ffmpeg's own output options that belong to the muxer or the other streams:
/// the finisher keeps them, chunks never see them.
const FINISHER_ONLY: &[&str] = &[
    "f",
    "map_metadata",
    "map_chapters",
    "metadata",
    "disposition",
    "acodec",
    "scodec",
    "dcodec",
    "ab",
    "ac",
    "ar",
    "af",
    "aq",
    "atag",
    "stag",
    "an",
    "sn",
    "dn",
    "shortest",
    "attach",
    "streamid",
    "program",
    "max_muxing_queue_size",
    "muxing_queue_data_threshold",
    "y",
    "n",
    "bitexact",
    "fflags",
    "muxdelay",
    "muxpreload",
    "alang",
    "copyinkf",
    "copytb",
];

/// AVOptions of muxers (not encoders) that Jellyfin and common command lines
/// use: a chunk's mpegts muxer would refuse them.
fn is_muxer_avoption(name: &str) -> bool {
    const PREFIXES: &[&str] =
        &["hls", "segment_", "seg_", "frag_", "master_pl", "mpegts_", "strftime", "dash", "use_", "write_", "cluster_"];
    const NAMES: &[&str] = &[
        "start_number",
        "movflags",
        "var_stream_map",
        "avoid_negative_ts",
        "max_delay",
        "max_interleave_delta",
        "min_frag_duration",
        "brand",
        "method",
        "headers",
        "user_agent",
        "live_start_index",
        "reserve_index_space",
        "cues_to_front",
        "default_mode",
        "flush_packets",
        "moov_size",
        "timeout",
        "http_persistent",
        "ignore_io_errors",
        "metadata_header_padding",
        "output_ts_offset",
        "fragment_index",
        "pcr_period",
        "pat_period",
        "sdt_period",
        "service_name",
        "service_provider",
        "omit_video_pes_length",
        "initial_discontinuity",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// One output stream: its input stream.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OutStream {
    index: u32,
    kind: StreamKind,
}

/// Which input streams a stream specifier (`v`, `v:0`, `a`, `1`, `V`) selects
/// among `streams`; `None` when the specifier is not understood.
fn select(spec: &str, streams: &[ProbeStream]) -> Option<Vec<u32>> {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [] | [""] => Some(streams.iter().map(|s| s.index).collect()),
        [n] if n.parse::<u32>().is_ok() => {
            let n: u32 = n.parse().ok()?;
            Some(streams.iter().filter(|s| s.index == n).map(|s| s.index).collect())
        }
        [t] | [t, _] if t.len() == 1 && "vVasdt".contains(*t) => {
            let of_type: Vec<&ProbeStream> = streams
                .iter()
                .filter(|s| match *t {
                    "V" => s.kind == StreamKind::Video && !s.attached_pic,
                    t => s.kind.letter().to_string() == t,
                })
                .collect();
            match parts.get(1) {
                None => Some(of_type.iter().map(|s| s.index).collect()),
                Some(i) => {
                    let i: usize = i.parse().ok()?;
                    Some(of_type.get(i).map(|s| vec![s.index]).unwrap_or_default())
                }
            }
        }
        _ => None,
    }
}

/// The output streams of `-map` options, as ffmpeg 5.1 resolves them for a
/// single input: positive maps in order, negative maps removing earlier matches.
fn resolve_maps(maps: &[&str], streams: &[ProbeStream]) -> Result<Vec<OutStream>, NotSplit> {
    let mut out: Vec<OutStream> = Vec::new();
    for m in maps {
        let (neg, body) = m.strip_prefix('-').map_or((false, *m), |b| (true, b));
        let body = body.strip_suffix('?').unwrap_or(body);
        let Some(spec) = body.strip_prefix("0:").or((body == "0").then_some("")) else {
            return Err(NotSplit::Map((*m).to_owned()));
        };
        let picked = select(spec, streams).ok_or_else(|| NotSplit::Map((*m).to_owned()))?;
        if neg {
            out.retain(|o| !picked.contains(&o.index));
        } else {
            for i in picked {
                let kind = streams.iter().find(|s| s.index == i).map(|s| s.kind).unwrap_or(StreamKind::Data);
                out.push(OutStream { index: i, kind });
            }
        }
    }
    Ok(out)
}

/// Whether an output option's stream specifier covers output stream `idx` of `outs`.
fn spec_covers(spec: &str, idx: usize, outs: &[OutStream]) -> Option<bool> {
    let parts: Vec<&str> = spec.split(':').collect();
    let s = outs.get(idx)?;
    Some(match parts.as_slice() {
        [n] if n.parse::<usize>().is_ok() => n.parse::<usize>().ok()? == idx,
        [t] | [t, _] if t.len() == 1 && "vVasdt".contains(*t) => {
            let letter = if *t == "V" { 'v' } else { t.chars().next()? };
            if s.kind.letter() != letter {
                false
            } else {
                match parts.get(1) {
                    None => true,
                    Some(i) => {
                        let i: usize = i.parse().ok()?;
                        outs.iter().take(idx).filter(|o| o.kind == s.kind).count() == i
                    }
                }
            }
        }
        _ => return None,
    })
}

/// Decides whether the job can be split and, if so, how.
pub fn split(cl: &CommandLine, probe: &Probe) -> Result<Split, NotSplit> {
    plan(cl, probe, None)
}

/// The plan for a live input (a growing MPEG-TS stream, read once, by the
/// shim) to an HLS playlist, cut into pieces of about `piece` seconds. `probe`
/// describes the stream's first seconds. The finisher reads the stream too,
/// from [`FINISHER_LIVE_FD`], for the audio it encodes.
pub fn split_live(cl: &CommandLine, probe: &Probe, piece: f64) -> Result<Split, NotSplit> {
    plan(cl, probe, Some(piece))
}

/// Input options that pace reading to real time: a live piece is read from
/// memory as fast as the node can, and the finisher's copy of the stream
/// arrives in real time already.
const PACING: &[&str] = &["re", "readrate", "readrate_initial_burst", "readrate_catchup"];

/// Demuxer options the finisher keeps on its copy of a live stream (a pipe):
/// protocol options would be refused there ("Option … not found").
const LIVE_FINISHER_INPUT: &[&str] = &[
    "f",
    "fflags",
    "analyzeduration",
    "probesize",
    "fpsprobesize",
    "max_delay",
    "err_detect",
    "thread_queue_size",
    "scan_all_pmts",
    "merge_pmt_versions",
    "correct_ts_overflow",
    "resync_size",
    "skip_changes",
    "discard",
    "codec",
    "acodec",
    "vcodec",
    "scodec",
    "c",
];

fn plan(cl: &CommandLine, probe: &Probe, live: Option<f64>) -> Result<Split, NotSplit> {
    let verdict = classify_cmdline(cl);
    if cl.inputs.len() != 1 || cl.outputs.len() != 1 {
        return Err(NotSplit::Shape("splitting needs exactly one input and one output".into()));
    }
    let shape = &verdict.outputs[0];
    match shape {
        OutputShape::Hls { playlist_type: PlaylistType::Vod | PlaylistType::Event, .. } => {}
        OutputShape::Hls { .. } => return Err(NotSplit::Shape("a sliding live playlist is not split".into())),
        OutputShape::Progressive { .. } | OutputShape::Stream { .. } => {}
        other => return Err(NotSplit::Shape(format!("output {other} is not split"))),
    }
    let input = &cl.inputs[0];
    match (&input.url.target, live) {
        (Target::File { .. }, None) => {}
        (Target::Network { .. }, Some(_)) => {
            if !matches!(shape, OutputShape::Hls { .. }) {
                return Err(NotSplit::Shape("a live input is split only to an HLS playlist".into()));
            }
            if !probe.format_name.as_deref().is_some_and(|f| f.split(',').any(|n| n == "mpegts")) {
                return Err(NotSplit::Shape("a live input is split only when it is MPEG-TS".into()));
            }
        }
        (_, None) => return Err(NotSplit::Shape("only a file input is split".into())),
        (_, Some(_)) => return Err(NotSplit::Shape("only a network stream is split live".into())),
    }
    let output = &cl.outputs[0];
    // A file's own seek is the first chunk's; a live stream's pacing is left
    // to the stream (see [`PACING`]).
    let input_rejects = input.opts.iter().filter(|o| match live {
        None => o.name() != "ss",
        Some(_) => !PACING.contains(&o.name()),
    });
    if let Some(o) =
        cl.globals.iter().chain(input_rejects).chain(&output.opts).find(|o| UNSUPPORTED.contains(&o.name()))
    {
        return Err(NotSplit::Option(o.key.clone()));
    }

    // The output's streams.
    let maps: Vec<&str> = output.opts_named("map").filter_map(|o| o.value.as_deref()).collect();
    let outs = if maps.is_empty() {
        default_streams(probe, output)?
    } else {
        if output.flag("vn") || output.flag("an") || output.flag("sn") || output.flag("dn") {
            // With explicit maps these only disable streams; keep it simple.
            return Err(NotSplit::Option("vn/an/sn/dn with -map".into()));
        }
        resolve_maps(&maps, &probe.streams)?
    };
    let videos: Vec<usize> =
        outs.iter().enumerate().filter(|(_, o)| o.kind == StreamKind::Video).map(|(i, _)| i).collect();
    let [vidx] = videos.as_slice() else {
        return Err(NotSplit::Streams(format!("{} video streams in the output; splitting needs one", videos.len())));
    };
    let vidx = *vidx;
    let vstream = probe.streams.iter().find(|s| s.index == outs[vidx].index).expect("resolved from the probe");
    if vstream.attached_pic {
        return Err(NotSplit::Streams("the video stream is a cover picture".into()));
    }
    if outs.iter().any(|o| matches!(o.kind, StreamKind::Subtitle | StreamKind::Data | StreamKind::Attachment)) {
        return Err(NotSplit::Streams("subtitle or data streams in the output".into()));
    }

    // Sort the output options into the chunk's and the finisher's.
    let mut video_opts = Vec::new();
    let mut filter = None;
    let mut keyframe_period = None;
    let mut keyframes_verbatim = None;
    let mut codec_seen = false;
    let mut fin_out = output.clone();
    fin_out.opts.clear();
    for o in &output.opts {
        let name = o.name();
        let covers_video = match o.spec() {
            None => None,
            Some(spec) => Some(spec_covers(spec, vidx, &outs).ok_or_else(|| NotSplit::Option(o.key.clone()))?),
        };
        let only_video = covers_video == Some(true)
            && (0..outs.len()).all(|i| i == vidx || spec_covers(o.spec().unwrap_or(""), i, &outs) == Some(false));
        match name {
            "map" => {
                // The finisher takes the video from its second input.
                let mut m = o.clone();
                let v = o.value.as_deref().unwrap_or("");
                let picked = if v.starts_with('-') { Vec::new() } else { resolve_maps(&[v], &probe.streams)? };
                if picked.iter().any(|s| s.index == vstream.index) {
                    if picked.len() != 1 {
                        return Err(NotSplit::Map(v.to_owned()));
                    }
                    m.value = Some("1:0".into());
                }
                fin_out.opts.push(m);
                continue;
            }
            "codec" | "vcodec" if covers_video != Some(false) => {
                if covers_video.is_none() && name == "codec" && outs.len() > 1 {
                    return Err(NotSplit::Option(format!("{} without a stream specifier", o.key)));
                }
                if o.value.as_deref() == Some("copy") {
                    return Err(NotSplit::Streams("the video is copied, not encoded".into()));
                }
                codec_seen = true;
                video_opts.extend(["-codec:v:0".to_owned(), o.value.clone().unwrap_or_default()]);
                let mut c = o.clone();
                c.value = Some("copy".into());
                fin_out.opts.push(c);
                continue;
            }
            // The codec tag is the container's: the finisher writes it (hvc1
            // for Apple players); the chunks' MPEG-TS has none.
            "tag" | "vtag" if covers_video != Some(false) => {
                fin_out.opts.push(o.clone());
                continue;
            }
            "vf" => {
                filter = o.value.clone();
                continue;
            }
            "filter" if covers_video == Some(true) => {
                if !only_video {
                    return Err(NotSplit::Option(o.key.clone()));
                }
                filter = o.value.clone();
                continue;
            }
            "force_key_frames" if covers_video != Some(false) => {
                let v = o.value.as_deref().unwrap_or("");
                match crate::plan::expr_period(v) {
                    Some(p) => keyframe_period = Some(p),
                    None => keyframes_verbatim = Some(v.to_owned()),
                }
                continue;
            }
            _ => {}
        }
        if o.def().is_some() && FINISHER_ONLY.contains(&name) {
            fin_out.opts.push(o.clone());
        } else if o.def().is_some() && VIDEO_ONLY.contains(&name) {
            if name == "vn" {
                return Err(NotSplit::Streams("-vn: no video to split".into()));
            }
            video_opts.extend(retarget(o, covers_video));
        } else if (o.avoption && o.spec().is_none() && is_muxer_avoption(name)) || covers_video == Some(false) {
            fin_out.opts.push(o.clone());
        } else if only_video {
            video_opts.extend(retarget(o, covers_video));
        } else {
            // Generic options (`-preset`, `-threads`, `-maxrate` without a
            // specifier) apply to every encoder, in the direct run too.
            video_opts.extend(retarget(o, covers_video));
            if o.def().is_none_or(|d| d.per_stream) {
                fin_out.opts.push(o.clone());
            }
        }
    }
    if !codec_seen {
        return Err(NotSplit::Streams("no video encoder is named".into()));
    }
    let encoder = video_encoder(&video_opts).to_owned();
    chunk_codec(&encoder)?;
    if let Some(k) = keyframes_verbatim {
        video_opts.extend(["-force_key_frames:v:0".to_owned(), k]);
    }

    if let Some(piece) = live {
        return plan_live(cl, probe, shape, piece, video_opts, filter, keyframe_period, vstream, fin_out, &outs, vidx);
    }

    // Timing: where direct ffmpeg puts the frames (`timeline`).
    let duration = probe.duration.ok_or(NotSplit::NoDuration)?;
    let seek = input.last_value("ss").map(str::to_owned);
    let seek_t = match &seek {
        Some(s) => Some(parse_time(s).ok_or_else(|| NotSplit::Option(format!("ss {s}")))?),
        None => None,
    };
    let noaccurate = input.opts_named("accurate_seek").last().is_some_and(|o| !o.is_on());
    let copyts = cl.global_flag("copyts");
    let fps_mode = output
        .opts
        .iter()
        .chain(&cl.globals)
        .rev()
        .filter(|o| matches!(o.name(), "vsync" | "fps_mode"))
        .find_map(|o| o.value.as_deref());
    let model = timeline::Job {
        copyts,
        start_at_zero: cl.global_flag("start_at_zero"),
        seek: seek_t,
        noaccurate,
        sync: timeline::Job::sync(constant_rate_muxer(shape), fps_mode, copyts, probe.streams.len()),
    };
    let fd = timeline::frame_duration(vstream)?;
    timeline::rate_options(output.last_value("r"), fps_mode, filter.as_deref(), fd)?;
    let picture = vstream
        .first_picture
        .ok_or_else(|| NotSplit::Timeline("no picture of the video decoded in the probe's packets".into()))?;
    if input.opts_named("autorotate").last().is_some_and(|o| !o.is_on()) && vstream.rotation.is_some_and(|r| r != 0.0) {
        return Err(NotSplit::Streams("the video's rotation is kept (-noautorotate) and a copy would lose it".into()));
    }
    if noaccurate && seek_t.is_some() && !seeks_by_index(probe) {
        // Such a demuxer lands near the time, not on a keyframe: where the
        // direct run's decoding really starts is not modelled.
        return Err(NotSplit::Timeline("-noaccurate_seek on an input without a keyframe index".into()));
    }
    let first_frame = match (seek_t, noaccurate) {
        (Some(_), true) => probe
            .keyframe_before_seek
            .ok_or_else(|| NotSplit::Streams("where -noaccurate_seek starts is unknown".into()))?,
        _ => timeline::first_frame(picture.time, fd, &model, probe.timestamp_step),
    };
    let video_offset = timeline::place(fd, &model, first_frame)?;
    let field_order = timeline::field_order(&picture, filter.as_deref());
    let color_range = timeline::color_range(&picture, filter.as_deref());
    let fd = Some(fd);
    let (period, start_number) = match shape {
        OutputShape::Hls { start_number, .. } => {
            let grid = Grid::of(cl, 0, shape).ok_or_else(|| {
                NotSplit::Shape("HLS keyframes are not forced on a grid that divides -hls_time".into())
            })?;
            (grid.period, *start_number)
        }
        _ => (keyframe_period.unwrap_or(FREE_GRID), 0),
    };
    let end = duration;
    if end - first_frame < 2.0 * period {
        return Err(NotSplit::TooShort(end - first_frame));
    }
    let grid = Grid { period, origin: first_frame };
    // Measured on ffmpeg 7.1 (tests/jellyfin.rs, a Jellyfin seek restart to
    // fMP4 segments): the split output missed a forced keyframe, making a 5 s
    // segment where direct cuts at 3 s; 5.1 and 8.1 match. Until the cause is
    // known such jobs run whole there.
    let fmp4 = matches!(shape, OutputShape::Hls { segment_type: crate::ffmpeg::decision::SegmentType::Fmp4, .. });
    if fmp4 && seek.is_some() && probe.lavc.as_deref().is_some_and(|l| l.starts_with("Lavc61.")) {
        return Err(NotSplit::Timeline(
            "a seek into fMP4 segments with ffmpeg 7.x (libavcodec 61) is not split: its forced keyframes \
             were measured to differ"
                .into(),
        ));
    }
    // Measured on ffmpeg 8.1 (the exactness corpus): the last fMP4 segment's
    // audio ran 3 to 20 ms longer split than direct for several sources.
    if fmp4 && probe.lavc.as_deref().is_some_and(|l| l.starts_with("Lavc62.")) {
        return Err(NotSplit::Timeline(
            "fMP4 segments with ffmpeg 8.x (libavcodec 62) are not split: the last segment's audio was \
             measured to differ"
                .into(),
        ));
    }

    let recipe = ChunkRecipe {
        globals: chunk_globals(cl),
        input_opts: input
            .opts
            .iter()
            .filter(|o| !matches!(o.name(), "ss" | "accurate_seek"))
            .flat_map(tokens)
            .collect(),
        input: input.url.raw.clone(),
        first_seek: seek,
        noaccurate_first: noaccurate,
        map: format!("0:{}", vstream.index),
        video_opts,
        filter,
        keyframe_period,
        frame_duration: fd,
        first_frame,
        pts_offset: probe.start_time,
        preroll: preroll(probe),
    };

    // What the direct run's encoder gives the video stream and a copy does
    // not: the first frame's field order and the input stream's tags.
    fin_out.push(Opt::new("field_order:v:0", Some(field_order)));
    if let Some(range) = color_range
        && output.last_value("color_range").is_none()
    {
        fin_out.push(Opt::new("color_range:v:0", Some(range)));
    }
    if !vstream.disposition.is_empty() && output.opts_named("disposition").next().is_none() {
        // A disposition given by hand stops ffmpeg marking the first of several
        // streams of a kind default when none is: only where that rule is idle.
        let idle = [StreamKind::Audio, StreamKind::Subtitle, StreamKind::Data].iter().all(|kind| {
            let of_kind: Vec<&ProbeStream> = outs
                .iter()
                .filter(|o| o.kind == *kind)
                .filter_map(|o| probe.streams.iter().find(|s| s.index == o.index))
                .collect();
            of_kind.len() < 2 || of_kind.iter().any(|s| s.disposition.iter().any(|d| d == "default"))
        });
        if !idle {
            return Err(NotSplit::Streams(
                "the video's disposition would stop ffmpeg choosing a default stream".into(),
            ));
        }
        fin_out.push(Opt::new("disposition:v:0", Some(vstream.disposition.join("+"))));
    }
    for (key, value) in stream_tags(cl, output, vstream, &encoder, probe.lavc.as_deref())? {
        fin_out.push(Opt::new("metadata:s:v:0", Some(format!("{key}={value}"))));
    }
    if let (OutputShape::Progressive { format } | OutputShape::Stream { format }, Some(scale)) =
        (shape, vstream.base_rate.as_deref().and_then(track_timescale))
    {
        // The mp4 muxer times a track in its stream's time base, the encoder's
        // 1/rate in the direct run and 1/90000 in a copy from MPEG-TS.
        if constant_rate_muxer(shape) && format != "ismv" && output.last_value("video_track_timescale").is_none() {
            fin_out.push(Opt::new("video_track_timescale", Some(scale.to_string())));
        }
    }
    // From 7.0 ffmpeg gives a copied stream its input's time base, 1/90000 from
    // the joined MPEG-TS, where 5.1 took the frame rate's as the direct encoder
    // does: fMP4 segments were then timed in 90 kHz ticks and their EXTINF
    // rounded to them (1.000800 against 1.001000 s). HLS hands the mp4 muxer
    // its segment options, which name the direct run's timescale on every
    // version; options of the job's own are kept, as only the last
    // `-hls_segment_options` counts.
    if let (OutputShape::Hls { segment_type: crate::ffmpeg::decision::SegmentType::Fmp4, .. }, Some(scale)) =
        (shape, vstream.base_rate.as_deref().and_then(track_timescale))
    {
        let own = fin_out.last_value("hls_segment_options").map(str::to_owned);
        if !own.as_deref().is_some_and(|o| o.contains("video_track_timescale")) {
            let timescale = format!("video_track_timescale={scale}");
            let value = own.map_or(timescale.clone(), |o| format!("{o}:{timescale}"));
            fin_out.push(Opt::new("hls_segment_options", Some(value)));
        }
    }
    // HLS times the last MPEG-TS segment by its packets' durations: the copied
    // packets get the direct encoder's, unless the finisher already filters
    // the video. Both the joined input and the segments count in 90 kHz ticks,
    // so the filter sees them in those whichever ffmpeg muxes with; other
    // muxers time the video more coarsely, where the two durations agree.
    // ffmpeg 5.1's setts sets PTS and DTS both to its `ts` (DTS) unless told:
    // B-frames would lose their order.
    let hls_ts = matches!(shape, OutputShape::Hls { segment_type: crate::ffmpeg::decision::SegmentType::Mpegts, .. });
    let bsf_on_video = fin_out.opts.iter().any(|o| {
        matches!(o.name(), "bsf" | "vbsf") && o.spec().is_none_or(|s| spec_covers(s, vidx, &outs) != Some(false))
    });
    if let Some(ticks) =
        vstream.base_rate.as_deref().and_then(|r| frame_ticks(&encoder, r)).filter(|_| hls_ts && !bsf_on_video)
    {
        fin_out.push(Opt::new("bsf:v:0", Some(format!("setts=pts=PTS:dts=DTS:duration={ticks}"))));
    }
    let offset = video_offset.filter(|x| x.abs() > 1e-9).map(secs);
    let joined: Vec<&str> = offset.as_deref().map(|x| vec!["-itsoffset", x]).unwrap_or_default();

    let audio = audio_offload(cl, shape, &outs, &probe.streams, &fin_out);
    if audio.is_none() && noaccurate && seek_t.is_some() && outs.iter().any(|o| o.kind == StreamKind::Audio) {
        // The finisher reads the audio from an input whose video it does not
        // use, so a seek without accurate_seek would start it elsewhere than
        // the direct run's (see [`ChunkRecipe::audio_args`]); only a node's
        // encode can read it as the direct run does.
        return Err(NotSplit::Timeline("-noaccurate_seek with audio only the finisher can encode".into()));
    }
    let explicit_maps = maps.is_empty();
    let finisher = finisher_args(cl, &fin_out, &input.url.raw, explicit_maps.then_some(&outs), vidx, None, &joined)?;
    let (audio, finisher_audio_copy) = match audio {
        Some(a) => {
            let fin = finisher_args(
                cl,
                &a.finisher,
                &input.url.raw,
                explicit_maps.then_some(&outs),
                vidx,
                Some(a.index),
                &joined,
            )?;
            (Some(a.part), Some(fin))
        }
        None => (None, None),
    };

    Ok(Split {
        plan: SplitPlan { recipe, grid, start: first_frame, end, start_number, audio, live: None },
        finisher,
        finisher_audio_copy,
    })
}

/// Whether the input's demuxer seeks through an index of keyframes (so that
/// `-ss` starts decoding at the keyframe at or before the time).
fn seeks_by_index(probe: &Probe) -> bool {
    probe.format_name.as_deref().is_none_or(|f| {
        f.split(',').any(|n| matches!(n, "matroska" | "webm" | "mov" | "mp4" | "avi" | "asf" | "nut" | "flv" | "ogg"))
    })
}

/// How far before a chunk's first frame its seek goes ([`ChunkRecipe::preroll`]):
/// none where the demuxer seeks by index; elsewhere twice the longest
/// keyframe interval the probe saw, and at least 4 s.
fn preroll(probe: &Probe) -> f64 {
    if seeks_by_index(probe) {
        return 0.0;
    }
    let gop = probe.streams.iter().filter_map(|s| s.keyframe_interval).fold(0.0_f64, f64::max);
    (2.0 * gop + 1.0).max(4.0)
}

/// How long each video packet of the direct run is where it reaches the muxer,
/// in 90 kHz ticks: one frame of the encoder's rate (`num/den`, the source's,
/// which MPEG-1/2 encoders keep only when it is a standard rate and MPEG-4 ones
/// only below 65536/1), rounded to the nearest tick as `av_rescale_q` does
/// (ffmpeg 5.1's `write_packet` for a constant rate, libavformat's
/// `compute_muxer_pkt_fields` for a variable one). A copy from MPEG-TS carries
/// the demuxer's duration instead, rounded down (`compute_pkt_fields`): 3753
/// against 3754 at 24000/1001, 1501 against 1502 at 60000/1001. The HLS
/// muxer adds up packet durations for the last segment's `#EXTINF`.
fn frame_ticks(encoder: &str, rate: &str) -> Option<u64> {
    let (n, d) = reduced_rate(rate)?;
    const MPEG12: [(u64, u64); 8] =
        [(24000, 1001), (24, 1), (25, 1), (30000, 1001), (30, 1), (50, 1), (60000, 1001), (60, 1)];
    let kept = match encoder {
        "mpeg1video" | "mpeg2video" => MPEG12.contains(&(n, d)),
        "mpeg4" | "libxvid" => n <= 65535 && d <= 65535,
        _ => true,
    };
    kept.then(|| (90_000 * d + n / 2) / n)
}

/// A rate as ffprobe writes it (`24000/1001`, `25`) in lowest terms.
fn reduced_rate(rate: &str) -> Option<(u64, u64)> {
    let (n, d) = rate.split_once('/').unwrap_or((rate, "1"));
    let (n, d): (u64, u64) = (n.parse().ok()?, d.parse().ok()?);
    if n == 0 || d == 0 {
        return None;
    }
    let (mut a, mut b) = (n, d);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    Some((n / a, d / a))
}

/// The mp4 muxer's timescale for a video encoded at `rate` (`num/den`): the
/// denominator of the encoder's time base, doubled until it reaches 10000.
fn track_timescale(rate: &str) -> Option<u64> {
    let (mut scale, _) = reduced_rate(rate)?;
    while scale < 10000 {
        scale *= 2;
    }
    Some(scale)
}

/// The video encoder the job names (the chunk's `-codec:v:0`).
fn video_encoder(video_opts: &[String]) -> &str {
    video_opts.windows(2).rfind(|w| w[0] == "-codec:v:0").map_or("", |w| w[1].as_str())
}

/// Encoders whose streams the chunks' MPEG-TS carries unchanged; other codecs
/// would need another chunk container, so their jobs are not split.
fn chunk_codec(encoder: &str) -> Result<(), NotSplit> {
    let carried = ["libx264", "libx264rgb", "libopenh264", "libx265", "mpeg2video", "mpeg1video", "mpeg4", "libxvid"]
        .contains(&encoder)
        || ["h264_", "hevc_", "mpeg2_"].iter().any(|p| encoder.starts_with(p));
    if carried {
        Ok(())
    } else {
        Err(NotSplit::ChunkCodec(format!("{encoder} output does not travel in MPEG-TS chunks")))
    }
}

/// The video stream's tags as the direct run writes them: the input stream's
/// (none after `-map_metadata -1`) but its `encoder`, which ffmpeg drops for
/// an encoded stream, and the encoder's own (`Lavc59.37.100 libx264`, or
/// `Lavc libx264` in bitexact mode; found by the exactness corpus on a WebM
/// whose tag named libvpx-vp9). A copy would have neither.
fn stream_tags(
    cl: &CommandLine,
    output: &crate::ffmpeg::cmdline::Output,
    vstream: &ProbeStream,
    encoder: &str,
    lavc: Option<&str>,
) -> Result<Vec<(String, String)>, NotSplit> {
    let map_metadata: Vec<&Opt> =
        output.opts_named("map_metadata").chain(cl.globals.iter().filter(|o| o.name() == "map_metadata")).collect();
    let copied = !map_metadata.iter().any(|o| o.value.as_deref().is_some_and(|v| v.starts_with("-1")));
    let mut tags: Vec<(String, String)> = match copied {
        true => vstream.tags.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("encoder")).cloned().collect(),
        false => Vec::new(),
    };
    let per_stream = |o: &&Opt| o.spec().is_some_and(|s| s.starts_with('s'));
    if map_metadata.iter().any(per_stream) || output.opts_named("metadata").any(|o| per_stream(&o)) {
        // Those would set tags before the encoder's, which the finisher's
        // copy could not order the same way.
        return Err(NotSplit::Option("per-stream metadata options on the video".into()));
    }
    let name = match encoder {
        "h264" => "libx264",
        "hevc" => "libx265",
        e => e,
    };
    let bitexact = cl.globals.iter().chain(&output.opts).any(|o| {
        o.name() == "bitexact"
            || (matches!(o.name(), "fflags" | "flags") && o.value.as_deref().is_some_and(|v| v.contains("+bitexact")))
    });
    match (bitexact, lavc) {
        (true, _) => tags.push(("encoder".into(), format!("Lavc {name}"))),
        (false, Some(lavc)) => tags.push(("encoder".into(), format!("{lavc} {name}"))),
        (false, None) => {}
    }
    Ok(tags)
}

/// The rest of [`split_live`], once the options are sorted.
#[allow(clippy::too_many_arguments)]
fn plan_live(
    cl: &CommandLine,
    probe: &Probe,
    shape: &OutputShape,
    piece: f64,
    video_opts: Vec<String>,
    filter: Option<String>,
    keyframe_period: Option<f64>,
    vstream: &ProbeStream,
    fin_out: crate::ffmpeg::cmdline::Output,
    outs: &[OutStream],
    vidx: usize,
) -> Result<Split, NotSplit> {
    // Without -copyts the finisher would shift its two inputs (the stream and
    // the joined video, which starts at the first keyframe) by different
    // amounts; with it both keep the source's clock.
    if !cl.global_flag("copyts") || cl.global_flag("start_at_zero") {
        return Err(NotSplit::Shape("a live input is split only with -copyts (and no -start_at_zero)".into()));
    }
    // ffmpeg's demuxer puts a stream that starts within 60 s of a wrap of its
    // 33-bit clock on a negative timeline, and the encoder drops the video up
    // to 0, which pieces could not follow (a later wrap they do follow).
    if probe.start_time < 0.0 {
        return Err(NotSplit::Shape(format!(
            "a live stream whose timestamps start below 0 ({:.3} s: its 33-bit clock wraps within a minute) is not split",
            probe.start_time
        )));
    }
    let OutputShape::Hls { start_number, .. } = shape else {
        return Err(NotSplit::Shape("a live input is split only to an HLS playlist".into()));
    };
    let grid = Grid::of(cl, 0, shape)
        .ok_or_else(|| NotSplit::Shape("HLS keyframes are not forced on a grid that divides -hls_time".into()))?;
    if !(piece.is_finite() && piece > 0.0) {
        return Err(NotSplit::Shape(format!("live piece length {piece} s")));
    }
    let per_segment = (grid.period / piece).round().max(1.0);
    let input = &cl.inputs[0];
    let recipe = ChunkRecipe {
        globals: chunk_globals(cl),
        input_opts: input
            .opts
            .iter()
            .filter(|o| !PACING.contains(&o.name()) && !crate::remote::ORIGIN_OPTIONS.contains(&o.name()))
            .flat_map(tokens)
            .collect(),
        input: input.url.raw.clone(),
        first_seek: None,
        noaccurate_first: false,
        map: format!("0:{}", vstream.index),
        video_opts,
        filter,
        keyframe_period,
        frame_duration: vstream.frame_duration,
        first_frame: 0.0,
        pts_offset: probe.start_time,
        preroll: 0.0,
    };
    // The finisher reads the stream from a pipe: only demuxer options apply.
    let mut fin_cl = cl.clone();
    let fin_input = &mut fin_cl.inputs[0];
    fin_input.opts.retain(|o| LIVE_FINISHER_INPUT.contains(&o.name()));
    if fin_input.last_value("f").is_none() {
        fin_input.push(Opt::new("f", Some("mpegts")));
    }
    if fin_input.last_value("thread_queue_size").is_none() {
        // The stream's audio runs ahead of the joined video by the cluster's
        // latency: seconds of packets wait in this queue.
        fin_input.push(Opt::new("thread_queue_size", Some("4096")));
    }
    let explicit = cl.outputs[0].opts_named("map").next().is_none();
    let outs = outs.to_vec();
    // The joined video is probed for ffmpeg's default 5 s of it, which a live
    // job receives in real time: the first segment would wait for that. Its
    // parameters are in its first keyframe; a second is plenty.
    let probe_joined = ["-analyzeduration", "1000000"];
    let finisher =
        finisher_args(&fin_cl, &fin_out, FINISHER_LIVE_INPUT, explicit.then_some(&outs), vidx, None, &probe_joined)?;
    Ok(Split {
        plan: SplitPlan {
            recipe,
            grid: Grid { period: grid.period, origin: 0.0 },
            start: 0.0,
            end: 0.0,
            start_number: *start_number,
            audio: None,
            live: Some(LivePlan { piece: grid.period / per_segment, stream: 0 }),
        },
        finisher,
        finisher_audio_copy: None,
    })
}

fn chunk_globals(cl: &CommandLine) -> Vec<String> {
    cl.globals
        .iter()
        .filter(|o| !matches!(o.name(), "y" | "n" | "stats" | "progress" | "report" | "nostdin" | "benchmark"))
        .flat_map(tokens)
        .collect()
}

/// The finisher: the job as written, with the joined video added as input 1
/// (and a node's audio as input 2, when `audio` names its output stream), both
/// copied, the joined video read with `video_opts` besides its format.
/// `explicit` lists the output's streams when the job has no `-map`:
/// the finisher must not choose by its own rules among several inputs.
fn finisher_args(
    cl: &CommandLine,
    out: &crate::ffmpeg::cmdline::Output,
    input: &str,
    explicit: Option<&Vec<OutStream>>,
    vidx: usize,
    audio: Option<usize>,
    video_opts: &[&str],
) -> Result<Vec<String>, NotSplit> {
    let mut fin = cl.clone();
    let mut out = out.clone();
    if let Some(outs) = explicit {
        for (i, o) in outs.iter().enumerate() {
            let m = if i == vidx {
                "1:0".to_owned()
            } else if Some(i) == audio {
                "2:0".to_owned()
            } else {
                format!("0:{}", o.index)
            };
            // Added options render just before the output (and before a `--`).
            out.push(Opt::new("map", Some(m)));
        }
    }
    fin.outputs[0] = out;
    // The input's `-i`, found by a URL no argument can hold (argv strings end at
    // a NUL): an option's value may be `-i` followed by a word equal to the input.
    const MARK: &str = "\0input";
    fin.inputs[0].url = crate::ffmpeg::url::Url::parse(MARK);
    let mut args = fin.to_args();
    let at = args
        .windows(2)
        .position(|w| w[0] == "-i" && w[1] == MARK)
        .ok_or_else(|| NotSplit::Shape("cannot place the finisher's input".into()))?;
    args[at + 1] = input.to_owned();
    let mut joined: Vec<String> = video_opts.iter().map(|o| o.to_string()).collect();
    joined.extend(["-f", "mpegts", "-thread_queue_size", "1024", "-i", FINISHER_VIDEO_INPUT].map(str::to_owned));
    if audio.is_some() {
        joined.extend(["-f", "mpegts", "-thread_queue_size", "1024", "-i", FINISHER_AUDIO_INPUT].map(str::to_owned));
    }
    args.splice(at + 2..at + 2, joined);
    Ok(args)
}

/// Whether ffmpeg 5.1's automatic frame-rate mode for this output is constant:
/// muxers without AVFMT_VARIABLE_FPS (Matroska, MPEG-TS, FLV, NUT, WebM and AVI
/// have it or are treated as variable).
fn constant_rate_muxer(shape: &OutputShape) -> bool {
    match shape {
        OutputShape::Hls { .. } => true,
        OutputShape::Progressive { format } | OutputShape::Stream { format } => {
            matches!(format.as_str(), "mp4" | "mov" | "ipod" | "ismv" | "3gp" | "3g2" | "psp" | "f4v")
        }
        _ => false,
    }
}

/// Audio encoders whose output survives a trip through MPEG-TS unchanged, and
/// whether it is AAC (which leaves MPEG-TS with ADTS headers that MP4-family
/// muxers must have stripped).
fn offloadable_encoder(name: &str) -> Option<bool> {
    match name {
        "aac" | "libfdk_aac" => Some(true),
        "ac3" | "ac3_fixed" | "eac3" | "libmp3lame" | "mp2" | "mp2fixed" | "libtwolame" => Some(false),
        _ => None,
    }
}

/// ffmpeg's own options that shape the audio encode: they move to the node.
const AUDIO_ENCODE: &[&str] = &[
    "ab",
    "ac",
    "ar",
    "af",
    "aq",
    "filter",
    "filter_script",
    "q",
    "qscale",
    "sample_fmt",
    "channel_layout",
    "ch_layout",
    "frame_size",
];

/// A node's audio encode and the finisher output that copies it.
#[derive(Debug)]
struct AudioOffload {
    part: AudioPart,
    finisher: crate::ffmpeg::cmdline::Output,
    /// The audio's index among the output's streams.
    index: usize,
}

/// Whether a node can encode the job's audio, and how. Only where the result is
/// exactly the direct run's: one audio stream, an encoder whose packets MPEG-TS
/// carries unchanged, and `-copyts` without `-start_at_zero`, so that the
/// finisher keeps the node's timestamps as they are (otherwise it would shift
/// them by the encoder's priming delay, which starts the node's stream).
fn audio_offload(
    cl: &CommandLine,
    shape: &OutputShape,
    outs: &[OutStream],
    streams: &[ProbeStream],
    fin_out: &crate::ffmpeg::cmdline::Output,
) -> Option<AudioOffload> {
    if !cl.global_flag("copyts") || cl.global_flag("start_at_zero") {
        return None;
    }
    let audios: Vec<usize> =
        outs.iter().enumerate().filter(|(_, o)| o.kind == StreamKind::Audio).map(|(i, _)| i).collect();
    let [aidx] = audios.as_slice() else { return None };
    let aidx = *aidx;
    let covers = |o: &Opt| o.spec().map(|s| spec_covers(s, aidx, outs));
    let only = |o: &Opt| {
        let spec = o.spec().unwrap_or("");
        (0..outs.len()).all(|i| i == aidx || spec_covers(spec, i, outs) == Some(false))
    };
    let mut part = AudioPart { map: format!("0:{}", outs[aidx].index), opts: Vec::new() };
    let mut fin = fin_out.clone();
    fin.opts.clear();
    let mut aac = None;
    for o in &fin_out.opts {
        let name = o.name();
        // Muxer-side settings of an output stream, whichever input it copies.
        if matches!(name, "metadata" | "field_order" | "color_range") {
            fin.opts.push(o.clone());
            continue;
        }
        let cov = match covers(o) {
            None => None,
            Some(Some(c)) => Some(c),
            // A specifier this model does not follow: leave the audio local.
            Some(None) => return None,
        };
        let retargeted = || retarget_to(o, "a:0", cov == Some(true));
        match name {
            "map" => {
                let mut m = o.clone();
                let v = o.value.as_deref().unwrap_or("");
                if !v.starts_with('-') && v != "1:0" {
                    let picked = resolve_maps(&[v], streams).ok()?;
                    if picked.iter().any(|p| p.index == outs[aidx].index) {
                        if picked.len() != 1 {
                            return None;
                        }
                        m.value = Some("2:0".into());
                    }
                }
                fin.opts.push(m);
            }
            "codec" | "acodec" if cov != Some(false) => {
                let encoder = o.value.as_deref().unwrap_or("");
                aac = Some(offloadable_encoder(encoder)?);
                part.opts.extend(["-codec:a:0".to_owned(), encoder.to_owned()]);
                let mut c = o.clone();
                c.value = Some("copy".into());
                fin.opts.push(c);
            }
            "bsf" | "apad" if cov != Some(false) => return None,
            _ if o.def().is_some() && AUDIO_ENCODE.contains(&name) && cov != Some(false) => {
                if cov.is_some() && !only(o) {
                    return None;
                }
                part.opts.extend(retargeted());
            }
            _ if o.avoption && cov == Some(true) && only(o) => part.opts.extend(retargeted()),
            _ if o.avoption && cov.is_none() && !is_muxer_avoption(name) => {
                // A generic encoder option (`-strict`, `-threads`) applied to the
                // audio encoder in the direct run too.
                part.opts.extend(retargeted());
                fin.opts.push(o.clone());
            }
            _ => fin.opts.push(o.clone()),
        }
    }
    let aac = aac?;
    let mpegts = match shape {
        OutputShape::Hls { segment_type, .. } => *segment_type == crate::ffmpeg::decision::SegmentType::Mpegts,
        OutputShape::Progressive { format } | OutputShape::Stream { format } => format == "mpegts",
        _ => false,
    };
    if aac && !mpegts {
        fin.opts.push(Opt::new("bsf:a:0", Some("aac_adtstoasc")));
    }
    Some(AudioOffload { part, finisher: fin, index: aidx })
}

/// An option with its stream specifier pointed at `to` (when it has one).
fn retarget_to(o: &Opt, to: &str, has_spec: bool) -> Vec<String> {
    let key = if has_spec { format!("{}:{to}", o.key.split(':').next().unwrap_or(&o.key)) } else { o.key.clone() };
    std::iter::once(format!("-{key}")).chain(o.value.clone()).collect()
}

/// A video option for the chunk, its specifier pointed at the chunk's only stream.
fn retarget(o: &Opt, covers_video: Option<bool>) -> Vec<String> {
    retarget_to(o, "v:0", covers_video == Some(true))
}

/// ffmpeg's automatic stream selection for one input: the first video stream
/// (not a cover picture) and the audio stream with the most channels. Subtitles
/// are refused (whether ffmpeg adds them depends on the muxer).
fn default_streams(probe: &Probe, output: &crate::ffmpeg::cmdline::Output) -> Result<Vec<OutStream>, NotSplit> {
    let mut outs = Vec::new();
    if !output.flag("vn") {
        if let Some(v) = probe.streams.iter().find(|s| s.kind == StreamKind::Video && !s.attached_pic) {
            outs.push(OutStream { index: v.index, kind: StreamKind::Video });
        }
    }
    if !output.flag("an") {
        let mut best: Option<&ProbeStream> = None;
        for s in probe.streams.iter().filter(|s| s.kind == StreamKind::Audio) {
            if best.is_none_or(|b| s.channels > b.channels) {
                best = Some(s);
            }
        }
        if let Some(a) = best {
            outs.push(OutStream { index: a.index, kind: StreamKind::Audio });
        }
    }
    if !output.flag("sn") && probe.streams.iter().any(|s| s.kind == StreamKind::Subtitle) {
        return Err(NotSplit::Streams("subtitle streams chosen by ffmpeg's own rules".into()));
    }
    Ok(outs)
}

#[cfg(test)]
mod tests;
