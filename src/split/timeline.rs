//! One model of where direct ffmpeg puts the video frames of a job's output,
//! from what the planning probe reads cheaply (the first packets and the
//! pictures they decode to). Every chunk boundary and the finisher's
//! placement of the joined video come from it, and what it cannot predict is
//! not split ([`NotSplit`]).
//!
//! The rules are ffmpeg 5.1's `fftools/ffmpeg.c` (`do_video_out`,
//! `init_output_stream_encode`) and `ffmpeg_opt.c` (`-copyts`,
//! `-start_at_zero`, `-itsoffset`):
//!
//! - The first frame is the first picture the decoder gives, not the stream's
//!   first timestamp: a recording cut mid-GOP starts with pictures that cannot
//!   be decoded, and open GOPs lead with pictures that are dropped.
//! - Each input is shifted by its own start time unless `-copyts` (without
//!   `-start_at_zero`) keeps the source clock, and by `-ss` as well without
//!   `-copyts`.
//! - The encoder counts time in frames of the source rate (its time base is
//!   1/frame rate), so the first frame lands on the nearest whole frame: the
//!   variable-rate and pass-through modes put it there, the constant-rate
//!   mode repeats it to fill the gap from zero when that is half a frame or
//!   more (the finisher copies the video and cannot repeat frames).
//! - The encoder's field order is the first frame's (`TB` for top field first,
//!   `BT` for bottom), or progressive; Matroska stores it, and a copy
//!   inherits none.

use super::{FirstPicture, NotSplit, ProbeStream};

/// How direct ffmpeg's automatic frame-rate mode treats the video
/// (`-fps_mode auto` in ffmpeg 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoSync {
    /// Constant rate from zero: frames are repeated to fill a late start.
    Cfr,
    /// Constant rate from the first frame (`-copyts`, or a video-only input).
    Vscfr,
    /// Variable rate, or pass-through: the first frame on its nearest tick.
    Vfr,
}

/// The timing facts of one job that the model needs.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// `-copyts` among the globals.
    pub copyts: bool,
    /// `-start_at_zero` among the globals.
    pub start_at_zero: bool,
    /// The input's `-ss`, in seconds.
    pub seek: Option<f64>,
    /// `-noaccurate_seek` on the input.
    pub noaccurate: bool,
    /// The output's automatic frame-rate mode.
    pub sync: VideoSync,
}

impl Job {
    /// The output's frame-rate mode: the muxer's, unless `-fps_mode` (or
    /// `-vsync`) names one; `-copyts` and a video-only input make ffmpeg's
    /// constant rate start at the first frame.
    pub fn sync(constant_rate_muxer: bool, fps_mode: Option<&str>, copyts: bool, streams: usize) -> VideoSync {
        let constant = match fps_mode {
            Some("0" | "passthrough" | "2" | "vfr") => false,
            Some("1" | "cfr") => true,
            _ => constant_rate_muxer,
        };
        match constant {
            false => VideoSync::Vfr,
            true if copyts || streams == 1 => VideoSync::Vscfr,
            true => VideoSync::Cfr,
        }
    }
}

/// The largest difference between two frame times of a constant-rate stream
/// that container rounding explains: Matroska's millisecond, a 90 kHz tick.
const ROUNDING: f64 = 0.0015;

/// Seconds per frame of a stream whose frames are on a constant grid, from
/// the rates ffprobe reports and the times of the pictures the probe decoded
/// (up to where it read: past that, pictures shown earlier than later ones
/// may not have been read yet).
pub fn frame_duration(stream: &ProbeStream) -> Result<f64, NotSplit> {
    let fd = stream.frame_duration.ok_or_else(|| {
        NotSplit::VariableRate("the video's frame rate is variable (its average rate is not its base rate)".into())
    })?;
    let mut times: Vec<f64> =
        stream.frame_times.iter().copied().filter(|t| stream.read_up_to.is_none_or(|r| *t <= r + 1e-6)).collect();
    times.sort_by(f64::total_cmp);
    for w in times.windows(2) {
        let d = w[1] - w[0];
        if (d - fd).abs() > ROUNDING.max(fd * 0.02) {
            return Err(NotSplit::VariableRate(format!(
                "the video's frame times vary: {:.1} ms between frames at {:.3} s, where the rate gives {:.1} ms",
                d * 1000.0,
                w[0],
                fd * 1000.0
            )));
        }
    }
    Ok(fd)
}

/// The first frame of the output: the first picture, or with an accurate
/// `-ss` the first frame at or after it. The seek compares stored timestamps,
/// so a frame a fraction of a `timestamp_step` before `-ss`, stored rounded,
/// is at `-ss` and kept (found by `bench soak`: -ss 78 on 24000/1001 Matroska).
pub fn first_frame(first_picture: f64, fd: f64, job: &Job, timestamp_step: Option<f64>) -> f64 {
    match job.seek {
        Some(ss) if !job.noaccurate && ss > first_picture => {
            let mut k = ((ss - first_picture) / fd - 1e-6).ceil();
            let stored = |t: f64| timestamp_step.map_or(t, |step| (t / step).round() * step);
            if k >= 1.0 && stored(first_picture + (k - 1.0) * fd) >= ss - 1e-9 {
                k -= 1.0;
            }
            first_picture + k * fd
        }
        _ => first_picture,
    }
}

/// The model: where the finisher must place the joined video's first frame,
/// `first` (in `-ss` coordinates; see [`first_frame`]), on its output
/// timeline (`-itsoffset` of its video input), for a video of `fd` seconds a
/// frame, when ffmpeg shifts the inputs by their start; `None` when `-copyts`
/// keeps source times.
pub fn place(fd: f64, job: &Job, first: f64) -> Result<Option<f64>, NotSplit> {
    // Without -copyts each input starts at zero (less its -ss); with it and
    // -start_at_zero each starts at zero; with -copyts alone the source clock
    // stays, in the direct run and in the finisher alike.
    if job.copyts && !job.start_at_zero {
        return Ok(None);
    }
    if job.noaccurate && !job.copyts {
        // Frames before -ss then have negative times, which the constant-rate
        // mode drops and the others keep; not modelled.
        return Err(NotSplit::Timeline("-noaccurate_seek without -copyts".into()));
    }
    let origin = if job.copyts { 0.0 } else { job.seek.unwrap_or(0.0) };
    let lead = (first - origin) / fd;
    let video_offset = match job.sync {
        VideoSync::Cfr if lead < 0.5 - 1e-3 => 0.0,
        VideoSync::Cfr => {
            return Err(NotSplit::Shape(format!(
                "the output repeats the first frame to fill the {:.0} ms before it (constant frame rate)",
                lead * fd * 1000.0
            )));
        }
        VideoSync::Vscfr | VideoSync::Vfr => {
            if (lead.fract().abs() - 0.5).abs() < 2e-3 {
                return Err(NotSplit::Timeline(format!(
                    "the first frame lies halfway between two frame ticks ({:.3} frames from the start)",
                    lead
                )));
            }
            lead.round() * fd
        }
    };
    Ok(Some(video_offset))
}

/// Filters that change how many frames there are, or their times, in ways
/// the chunks cannot reproduce on their own stretch of the timeline.
const RATE_CHANGING: &[&str] = &[
    "fps",
    "framerate",
    "minterpolate",
    "telecine",
    "detelecine",
    "interlace",
    "tinterlace",
    "separatefields",
    "weave",
    "doubleweave",
    "pullup",
    "fieldmatch",
    "dejudder",
    "w3fdif",
    "framepack",
    "random",
    "fieldorder",
    "setfield",
    "il",
    "phase",
];

/// Filters that output progressive frames.
const DEINTERLACERS: &[&str] = &[
    "yadif",
    "yadif_cuda",
    "yadif_videotoolbox",
    "bwdif",
    "bwdif_cuda",
    "bwdif_vulkan",
    "kerndeint",
    "nnedi",
    "estdif",
    "deinterlace_vaapi",
    "deinterlace_qsv",
];

/// The filters of a `-vf` chain: each one's name and arguments.
fn filters(chain: &str) -> impl Iterator<Item = (&str, &str)> {
    chain.split([',', ';']).map(|f| {
        let mut f = f.trim();
        // Leading link labels: `[in]scale=…`.
        while let Some((_, rest)) = f.strip_prefix('[').and_then(|r| r.split_once(']')) {
            f = rest.trim_start();
        }
        let (name, args) = f.split_once('=').unwrap_or((f, ""));
        (name.trim(), args)
    })
}

/// Frames per second of a `-r` value: a number, a fraction or an abbreviation.
fn frame_rate(r: &str) -> Option<f64> {
    match r {
        "ntsc" => Some(30000.0 / 1001.0),
        "pal" | "qntsc" | "qpal" | "sntsc" | "spal" => Some(if r.ends_with("ntsc") { 30000.0 / 1001.0 } else { 25.0 }),
        "film" => Some(24.0),
        "ntsc-film" => Some(24000.0 / 1001.0),
        _ => super::rate(r),
    }
}

/// Whether a deinterlacer's arguments ask for one frame per field.
fn per_field(args: &str) -> bool {
    let first = args.split(':').next().unwrap_or("");
    let mode = args.split(':').find_map(|a| a.strip_prefix("mode=")).unwrap_or(first);
    matches!(mode, "1" | "3" | "send_field" | "send_field_nospatial")
}

/// The frame rate the job's own options ask for, with the source's: refuses
/// what would duplicate or drop frames on a timeline the chunks do not share.
pub fn rate_options(rate: Option<&str>, fps_mode: Option<&str>, chain: Option<&str>, fd: f64) -> Result<(), NotSplit> {
    if let Some(r) = rate {
        let same = frame_rate(r).is_some_and(|r| (r - 1.0 / fd).abs() < 1e-6);
        if !same {
            return Err(NotSplit::RateChange(format!("-r {r} changes the frame rate of a {:.3} fps video", 1.0 / fd)));
        }
    }
    if let Some(m) = fps_mode {
        if !matches!(m, "-1" | "auto" | "0" | "passthrough" | "2" | "vfr") {
            return Err(NotSplit::RateChange(format!("frame-rate mode {m}")));
        }
    }
    for (name, args) in chain.into_iter().flat_map(filters) {
        if RATE_CHANGING.contains(&name) {
            return Err(NotSplit::RateChange(format!("the {name} filter changes the frames' number or times")));
        }
        if DEINTERLACERS.contains(&name) && per_field(args) {
            return Err(NotSplit::RateChange(format!("{name}={args} outputs a frame per field")));
        }
    }
    Ok(())
}

/// The colour range direct ffmpeg's encoder gets from the first frame, which
/// the video's bitstream may not carry for a copy to find; `None` when the
/// picture does not say, or a filter may change it.
pub fn color_range(first: &FirstPicture, chain: Option<&str>) -> Option<&'static str> {
    let changes = chain.into_iter().flat_map(filters).any(|(name, args)| {
        name.starts_with("tonemap")
            || name.starts_with("scale")
            || matches!(name, "zscale" | "colorspace" | "colormatrix" | "libplacebo" | "setrange")
            || (name == "setparams" && args.contains("range"))
            || (name == "format" && args.contains("yuvj"))
    });
    if changes { None } else { first.color_range }
}

/// The field order direct ffmpeg's encoder gets from the first frame, as the
/// value of the `field_order` option.
pub fn field_order(first: &FirstPicture, chain: Option<&str>) -> &'static str {
    let deinterlaced = chain.into_iter().flat_map(filters).any(|(name, _)| DEINTERLACERS.contains(&name));
    match (first.interlaced && !deinterlaced, first.top_field_first) {
        (false, _) => "progressive",
        (true, true) => "tb",
        (true, false) => "bt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::StreamKind;

    fn stream(fd: f64, first: f64, times: &[f64]) -> ProbeStream {
        ProbeStream {
            index: 0,
            kind: StreamKind::Video,
            start_time: times.first().copied(),
            frame_duration: Some(fd),
            attached_pic: false,
            channels: 0,
            first_picture: Some(FirstPicture {
                time: first,
                interlaced: false,
                top_field_first: false,
                color_range: None,
            }),
            frame_times: times.to_vec(),
            read_up_to: None,
            base_rate: None,
            starts_on_keyframe: Some(true),
            keyframe_interval: None,
            disposition: Vec::new(),
            tags: Vec::new(),
            rotation: None,
        }
    }

    fn job(copyts: bool, sync: VideoSync) -> Job {
        Job { copyts, start_at_zero: false, seek: None, noaccurate: false, sync }
    }

    #[test]
    fn the_first_frame_lands_on_its_nearest_tick() {
        // A film whose video starts 21 ms after its AAC (half a 41.7 ms frame
        // and more): Matroska output puts it at one frame.
        let fd = 1001.0 / 24000.0;
        let p = place(fd, &job(false, VideoSync::Vfr), 0.021).unwrap();
        assert!((p.unwrap() - fd).abs() < 1e-9);
        // A recording whose first picture is 270 ms into the file, at 25 fps.
        let p = place(0.04, &job(false, VideoSync::Vfr), 0.27).unwrap();
        assert!((p.unwrap() - 0.28).abs() < 1e-9, "{p:?}");
        // Exactly half a tick: which way ffmpeg's rounding goes is not modelled.
        assert!(matches!(place(0.04, &job(false, VideoSync::Vfr), 0.26), Err(NotSplit::Timeline(_))));
        // -copyts keeps source times: nothing to place.
        assert_eq!(place(0.04, &job(true, VideoSync::Vscfr), 0.27).unwrap(), None);
        // The constant-rate mode repeats the first frame: not split.
        assert!(matches!(place(0.04, &job(false, VideoSync::Cfr), 0.27), Err(NotSplit::Shape(_))));
        // ... unless it is less than half a frame late.
        assert_eq!(place(0.04, &job(false, VideoSync::Cfr), 0.01).unwrap(), Some(0.0));
    }

    #[test]
    fn an_accurate_seek_starts_at_the_first_frame_at_or_after_it() {
        let j = Job { seek: Some(2.995), ..job(false, VideoSync::Vfr) };
        // Frames at 0.26 + 0.04·k: the first at or after 2.995 is 3.02, 25 ms
        // in, which the encoder's 40 ms ticks put at one frame.
        let first = first_frame(0.26, 0.04, &j, None);
        assert!((first - 3.02).abs() < 1e-9);
        let p = place(0.04, &j, first).unwrap();
        assert!((p.unwrap() - 0.04).abs() < 1e-9, "{p:?}");
        let j = Job { noaccurate: true, ..j };
        assert!(matches!(place(0.04, &j, 0.26), Err(NotSplit::Timeline(_))));
    }

    #[test]
    fn variable_frame_times_are_refused() {
        let fd = 1.0 / 30.0;
        let even: Vec<f64> = (0..30).map(|k| k as f64 * fd).collect();
        assert!(frame_duration(&stream(fd, 0.0, &even)).is_ok());
        // Matroska's millisecond rounding is not variable.
        let rounded: Vec<f64> = even.iter().map(|t| (t * 1000.0).round() / 1000.0).collect();
        assert!(frame_duration(&stream(fd, 0.0, &rounded)).is_ok());
        // A dropped frame, as phones and damaged recordings have, is.
        let mut gap = even.clone();
        gap.remove(10);
        assert!(matches!(frame_duration(&stream(fd, 0.0, &gap)), Err(NotSplit::VariableRate(_))));
        // Pictures past where the probe read may be missing their neighbours.
        let mut cut = stream(fd, 0.0, &gap);
        cut.read_up_to = Some(gap[9] + 1e-3);
        assert!(frame_duration(&cut).is_ok());
        let mut vfr = stream(fd, 0.0, &even);
        vfr.frame_duration = None;
        assert!(matches!(frame_duration(&vfr), Err(NotSplit::VariableRate(_))));
    }

    #[test]
    fn rate_changing_options_are_refused() {
        let fd = 1001.0 / 24000.0;
        assert!(rate_options(None, None, Some("scale=480:-2,format=yuv420p"), fd).is_ok());
        assert!(matches!(rate_options(Some("30"), None, None, fd), Err(NotSplit::RateChange(_))));
        assert!(rate_options(Some("24000/1001"), None, None, fd).is_ok());
        assert!(rate_options(None, Some("-1"), None, fd).is_ok());
        assert!(matches!(rate_options(None, Some("cfr"), None, fd), Err(NotSplit::RateChange(_))));
        assert!(matches!(rate_options(None, None, Some("scale=480:-2,fps=30"), fd), Err(NotSplit::RateChange(_))));
        assert!(rate_options(None, None, Some("yadif=0:-1:0,format=yuv420p"), fd).is_ok());
        assert!(matches!(rate_options(None, None, Some("bwdif=1:-1:0"), fd), Err(NotSplit::RateChange(_))));
        assert!(matches!(rate_options(None, None, Some("yadif=mode=send_field"), fd), Err(NotSplit::RateChange(_))));
    }

    #[test]
    fn the_field_order_follows_the_first_frame() {
        let tff = FirstPicture { time: 0.0, interlaced: true, top_field_first: true, color_range: Some("tv") };
        assert_eq!(color_range(&tff, Some("yadif=0:-1:0")), Some("tv"));
        assert_eq!(color_range(&tff, Some("scale=480:-2")), None);
        let bff = FirstPicture { top_field_first: false, ..tff };
        assert_eq!(field_order(&tff, None), "tb");
        assert_eq!(field_order(&bff, Some("scale=320:-2")), "bt");
        assert_eq!(field_order(&tff, Some("yadif=0:-1:0,format=yuv420p")), "progressive");
        assert_eq!(field_order(&FirstPicture { interlaced: false, ..tff }, None), "progressive");
    }
}
