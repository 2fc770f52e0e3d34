//! The live cutter (`ffcluster::split::live`) against the real ffmpeg: a clip
//! with B frames and a GOP that does not match the piece length is cut into
//! 1 s pieces, fed in odd slices as a tuner's stream would arrive, and each
//! piece is decoded alone the way a node reads it (`-copyts`, `trim` on the
//! piece's PTS range). Together the pieces must give every frame of the
//! clip from its first keyframe on, exactly once and pixel for pixel.
//!
//! ffmpeg is required: a missing one fails the test loudly. Only the HEVC
//! variant is skipped, with a note, when this ffmpeg has no libx265.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use ffcluster::split::live::{Piece, TICKS, WRAP, cut_stream};
use support::cluster::{real, run_ok};

const PACKET: usize = 188;

/// A 12 s clip with a moving pattern and a tone, video encoded with `video`.
fn clip(dir: &Path, name: &str, video: &[&str]) -> PathBuf {
    clip_of(dir, name, 12.0, video)
}

/// A clip of `secs` seconds, like [`clip`].
fn clip_of(dir: &Path, name: &str, secs: f64, video: &[&str]) -> PathBuf {
    let path = dir.join(name);
    run_ok(
        Command::new(real("ffmpeg"))
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &secs.to_string()])
            .args(video)
            .args(["-c:a", "aac", "-f", "mpegts"])
            .arg(&path),
    );
    path
}

/// Frames of a decode: the time base, then each frame's PTS (in that time
/// base) and MD5.
fn framemd5(input: &Path, trim: Option<String>) -> ((i128, i128), Vec<(i128, String)>) {
    framemd5_with(input, &[], trim)
}

/// [`framemd5`] with input options (a piece's clock).
fn framemd5_with(input: &Path, input_opts: &[String], trim: Option<String>) -> ((i128, i128), Vec<(i128, String)>) {
    let mut cmd = Command::new(real("ffmpeg"));
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-copyts"]).args(input_opts).arg("-i").arg(input);
    cmd.args(["-map", "0:v:0"]);
    if let Some(t) = trim {
        cmd.args(["-vf", &t]);
    }
    cmd.args(["-f", "framemd5", "-"]);
    let out = String::from_utf8(run_ok(&mut cmd).stdout).unwrap();
    let mut tb = None;
    let mut frames = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("#tb 0: ") {
            let (n, d) = rest.trim().split_once('/').unwrap();
            tb = Some((n.parse().unwrap(), d.parse().unwrap()));
        } else if !line.starts_with('#') {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            assert_eq!(f.len(), 6, "a framemd5 line: {line}");
            frames.push((f[2].parse().unwrap(), f[5].to_owned()));
        }
    }
    (tb.unwrap_or_else(|| panic!("no time base in the framemd5 of {}:\n{out}", input.display())), frames)
}

/// The clip with the random access indicator cleared everywhere: keyframes
/// then show only in the elementary stream.
fn without_rai(ts: &[u8]) -> Vec<u8> {
    let mut ts = ts.to_vec();
    for p in ts.chunks_exact_mut(PACKET) {
        if p[3] & 0x20 != 0 && p[4] > 0 {
            p[5] &= !0x40;
        }
    }
    ts
}

/// Cuts the clip, decodes each piece alone and compares with the whole.
fn pieces_decode_to_the_clip(name: &str, video: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), &format!("{name}.ts"), video);
    let ts = std::fs::read(&path).unwrap();
    let pieces = cut_stream(TICKS, ts.chunks(1000)).unwrap();
    assert!(pieces.len() >= 10, "{name}: {} pieces of a 12 s clip", pieces.len());

    // The same cuts when only the elementary stream tells keyframes.
    let es_only = cut_stream(TICKS, without_rai(&ts).chunks(777)).unwrap();
    let span = |p: &Piece| (p.index, p.start, p.end, p.bytes.len());
    assert_eq!(
        es_only.iter().map(span).collect::<Vec<_>>(),
        pieces.iter().map(span).collect::<Vec<_>>(),
        "{name}: keyframes found in the elementary stream are the ones ffmpeg marks"
    );

    let mut joined = Vec::new();
    let mut pieces_tb = None;
    for p in &pieces {
        let file = dir.path().join(format!("{name}_{}.ts", p.index));
        std::fs::write(&file, &p.bytes).unwrap();
        let trim = match p.end {
            Some(e) => format!("trim=start_pts={}:end_pts={e}", p.start),
            None => format!("trim=start_pts={}", p.start),
        };
        let (t, frames) = framemd5(&file, Some(trim));
        assert!(!frames.is_empty(), "{name}: piece {} [{}, {:?}) decodes to no frame", p.index, p.start, p.end);
        assert!(pieces_tb.is_none_or(|tb| tb == t), "{name}: one time base");
        pieces_tb = Some(t);
        joined.extend(frames);
    }

    let (tb, whole) = framemd5(&path, None);
    assert_eq!(pieces_tb, Some(tb), "{name}: the pieces' time base is the clip's");
    // The first keyframe's PTS in the decoder's time base.
    let t0 = pieces[0].origin as i128;
    let t0_tb = (t0 * tb.1 + 45_000 * tb.0) / (90_000 * tb.0);
    let due: Vec<(i128, String)> = whole.into_iter().filter(|(pts, _)| *pts >= t0_tb).collect();
    assert!(due.len() >= 250, "{name}: {} frames from the first keyframe on", due.len());
    if joined != due {
        let first = joined.iter().zip(&due).position(|(a, b)| a != b).unwrap_or(joined.len().min(due.len()));
        panic!(
            "{name}: the pieces give {} frames, the clip {} from t0; first difference at frame {first}: {:?} vs {:?}",
            joined.len(),
            due.len(),
            joined.get(first),
            due.get(first)
        );
    }

    let sizes: Vec<usize> = pieces.iter().map(|p| p.bytes.len()).collect();
    let total: usize = sizes.iter().sum();
    println!(
        "{name}: {} pieces, {} frames, piece sizes (KiB) {:?}; clip {} KiB; overlap ratio {:.2}",
        pieces.len(),
        due.len(),
        sizes.iter().map(|s| s / 1024).collect::<Vec<_>>(),
        ts.len() / 1024,
        total as f64 / ts.len() as f64
    );
}

#[test]
fn h264_with_b_frames() {
    pieces_decode_to_the_clip("h264", &["-c:v", "libx264", "-preset", "ultrafast", "-g", "37", "-bf", "2"]);
}

#[test]
fn mpeg2_open_gops() {
    pieces_decode_to_the_clip("mpeg2", &["-c:v", "mpeg2video", "-g", "12", "-bf", "2"]);
}

#[test]
fn mpeg2_interlaced_open_gops() {
    pieces_decode_to_the_clip(
        "mpeg2i",
        &["-c:v", "mpeg2video", "-g", "12", "-bf", "2", "-flags", "+ildct+ilme", "-top", "1"],
    );
}

#[test]
fn hevc_open_gops() {
    let encoders = run_ok(Command::new(real("ffmpeg")).args(["-hide_banner", "-encoders"])).stdout;
    if !String::from_utf8_lossy(&encoders).lines().any(|l| l.split_whitespace().nth(1) == Some("libx265")) {
        println!("NOTE: this ffmpeg has no libx265: the HEVC variant is skipped");
        return;
    }
    // x265 opens its GOPs by default: CRA keyframes with leading pictures.
    pieces_decode_to_the_clip(
        "hevc",
        &["-c:v", "libx265", "-preset", "ultrafast", "-g", "37", "-bf", "2", "-x265-params", "log-level=error"],
    );
}

/// A clip whose 33-bit clock wraps 64.6 s in, read by ffmpeg on its
/// unwrapped timeline (it starts more than 60 s before the wrap): each piece
/// near the wrap, and near where ffmpeg's demuxer would take a piece for one
/// that starts within 60 s of a wrap, decoded alone the way a node reads it
/// (its clock's options, then `trim` on the unwrapped PTS range), gives the
/// clip's own frames at the clip's own times.
#[test]
fn pieces_across_a_clock_wrap() {
    let dir = tempfile::tempdir().unwrap();
    // 2^33 ticks is 95443.7177 s; the muxer's own delay adds 1.4 s.
    let offset = format!("{:.6}", WRAP as f64 / 90_000.0 - 66.0);
    let video = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "37", "-bf", "2", "-output_ts_offset", &offset];
    let path = clip_of(dir.path(), "wrap.ts", 72.0, &video);
    let ts = std::fs::read(&path).unwrap();
    let pieces = cut_stream(TICKS, ts.chunks(4096)).unwrap();
    let wrap_at = pieces.iter().position(|p| p.start >= WRAP).expect("a piece after the wrap");
    assert!(
        pieces.len() >= 70 && (60..70).contains(&wrap_at),
        "{} pieces, the first after the wrap {wrap_at}",
        pieces.len()
    );
    assert!(pieces[0].origin < WRAP - 60 * TICKS, "ffmpeg reads this clip on an unwrapped timeline");

    let (tb, whole) = framemd5(&path, None);
    let at = |t: u64| (i128::from(t) * tb.1 + 45_000 * tb.0) / (90_000 * tb.0);
    // The pieces where ffmpeg's demuxer could take one for a piece that
    // starts within 60 s of a wrap (-correct_ts_overflow 0), and those about
    // the wrap (the one across it: -correct_ts_overflow 1, -itsoffset 2^33).
    let near: Vec<&Piece> = pieces
        .iter()
        .filter(|p| p.index < 8 || p.index as usize + 9 >= wrap_at && p.index as usize <= wrap_at + 3)
        .collect();
    let mut clocks = Vec::new();
    for p in near {
        let file = dir.path().join(format!("wrap_{}.ts", p.index));
        std::fs::write(&file, &p.bytes).unwrap();
        let trim = format!("trim=start_pts={}:end_pts={}", p.start, p.end.unwrap());
        let (t, frames) = framemd5_with(&file, &p.clock.args(), Some(trim));
        assert_eq!(t, tb, "piece {}: the clip's time base", p.index);
        let due: Vec<(i128, String)> =
            whole.iter().filter(|(pts, _)| *pts >= at(p.start) && *pts < at(p.end.unwrap())).cloned().collect();
        assert!(due.len() >= 24, "piece {}: {} frames", p.index, due.len());
        assert!(frames == due, "piece {} ({:?}): {:?}\nwhere the clip has {:?}", p.index, p.clock, frames, due);
        clocks.push(p.clock.args().join(" "));
    }
    clocks.dedup();
    println!("clock options of the pieces decoded, in order: {clocks:?}");
    assert!(clocks.iter().any(|c| c.contains("-correct_ts_overflow 1 -itsoffset")), "{clocks:?}");
}
