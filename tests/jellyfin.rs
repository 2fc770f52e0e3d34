//! Jellyfin conformance: the Jellyfin 10.11 model (tests/support/jellyfin.rs)
//! drives the real ffmpeg and then the shim on a real controller with two
//! nodes, the same way each time; what Jellyfin would observe must be the same.
//! A failure names the first difference.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::cluster::*;
use support::jellyfin::*;

const MD5: &str = "9e107d9d372bb6826bd81d3542a419d6";
/// 120 s, 3 s segments; the seek goes to the middle, segment 20 (60 s). Nothing
/// here transcodes 60 s of 640x360 in the moment between serving segment 1 and
/// the seek, so segment 20 is missing and more than 24 s (8 segments) ahead of
/// the job: Jellyfin restarts (§6.2 step 3), with the real ffmpeg and the cluster.
const CLIP_SECONDS: u32 = 120;
const SEG: u32 = 3;
const SEEK_TO: i64 = 20;

/// The shim as Jellyfin's `ffmpeg`, in `mode` (None: the default, auto).
fn shim(c: &Cluster, mode: Option<&str>) -> Ffmpeg {
    Ffmpeg::from_command(&c.shim()).env("FFCLUSTER_MODE", mode)
}

/// What Jellyfin saw of one playback, in comparable form.
#[derive(Debug)]
struct Playback {
    /// (segment index, video frames decoded from the served bytes).
    served: Vec<(i64, u64)>,
    events: Vec<Event>,
    /// Per job: (start segment, progress reported at all, the last `time=` is
    /// past the seek). CONTRACT.md §4.4 says `-copyts` makes `time=`
    /// source-absolute (jellyfin-ffmpeg); stock 5.1's HLS output prints it from
    /// 0. Either way Jellyfin's position follows what ffmpeg prints, so the shim
    /// must print the same kind.
    progress: Vec<(u32, bool, bool)>,
    /// Per job, for the record: the `time=` values parsed (first and last
    /// three) and the last stderr line.
    times: Vec<(Vec<f64>, String)>,
}

/// Plays from the start, seeks into the middle and stops, by Jellyfin's rules.
fn play(ff: Ffmpeg, input: &Path, dir: &Path, fmp4: bool) -> Playback {
    let spec = HlsSpec {
        input: input.to_path_buf(),
        dir: dir.to_path_buf(),
        md5: MD5.into(),
        fmp4,
        seg: SEG,
        preset: "veryfast".into(),
        rewrite: None,
    };
    let mut s = HlsSession::new(ff, spec.clone());
    let mut order: Vec<i64> = if fmp4 { vec![-1] } else { vec![] };
    order.extend([0, 1]);
    order.extend([SEEK_TO, SEEK_TO + 1, SEEK_TO + 2]);
    // Requests back to back, as a player does; what was served is decoded after
    // the playback, so that checking does not slow the client down.
    let mut received = Vec::new();
    for n in order {
        match s.request(n) {
            Answer::Served(b) => received.push((n, b)),
            other => panic!("segment {n}: {other:?}; events {:?}", s.events),
        }
    }
    let stopped = s.stop().expect("a job was running");
    assert!(stopped.exited_after_q, "`q` did not end the job within 5 s: {stopped:?}");
    let mut served = Vec::new();
    let mut init = Vec::new();
    for (n, bytes) in received {
        if n == -1 {
            init = bytes;
            continue;
        }
        // Decode what the client received, as the client would: init + fragment.
        let file = dir.join(format!("served-{n}.{}", spec.ext()));
        let mut all = init.clone();
        all.extend(&bytes);
        std::fs::write(&file, all).unwrap();
        served.push((n, decode_frames(&file)));
    }
    let progress = s
        .logs
        .iter()
        .map(|(start, log)| {
            let from = f64::from(*start * SEG);
            let last = log.times.last().copied().unwrap_or(f64::NEG_INFINITY);
            (*start, log.reports > 0, last >= from)
        })
        .collect();
    let times = s
        .logs
        .iter()
        .map(|(_, log)| {
            let t = &log.times;
            let mut v: Vec<f64> = t.iter().take(3).copied().collect();
            v.extend(t.iter().skip(3.max(t.len().saturating_sub(3))));
            (v, log.lines.last().cloned().unwrap_or_default())
        })
        .collect();
    Playback { served, events: s.events.clone(), progress, times }
}

/// The first difference between two playbacks, by segment and field.
fn first_difference(a: &Playback, b: &Playback) -> Option<String> {
    // Which segment was newest when the seek came depends on speed, not content.
    let norm = |e: &Vec<Event>| -> Vec<Event> {
        e.iter().map(|e| if let Event::DeletedNewest(_) = e { Event::DeletedNewest(-2) } else { e.clone() }).collect()
    };
    if norm(&a.events) != norm(&b.events) {
        return Some(format!("job events: direct {:?}, cluster {:?}", a.events, b.events));
    }
    for (x, y) in a.served.iter().zip(&b.served) {
        if x != y {
            return Some(format!("segment {MD5}{}: frames direct {}, cluster {}", x.0, x.1, y.1));
        }
    }
    if a.served.len() != b.served.len() {
        return Some(format!("served {:?} vs {:?}", a.served, b.served));
    }
    // Only whether each job reported progress is compared, not how far its
    // `time=` got: a split job's finisher copies both streams, and stock 5.1
    // measures `time=` under -copyts from the first report, which a finisher fed
    // in bursts makes late, so its `time=` lags the published segments (a known
    // gap, in contrib/docs/how-it-works.md, split jobs). The values are kept for
    // the message.
    for (i, (x, y)) in a.progress.iter().zip(&b.progress).enumerate() {
        if (x.0, x.1) != (y.0, y.1) {
            return Some(format!(
                "stderr progress of the job from segment {}: direct (reported, time≥seek) {:?}, cluster {:?}; \
                 time= values (first, last) and last line: direct {:?}, cluster {:?}",
                x.0,
                (x.1, x.2),
                (y.1, y.2),
                a.times.get(i),
                b.times.get(i)
            ));
        }
    }
    None
}

fn hls_scenario(fmp4: bool, mode: Option<&str>) {
    let c = Cluster::start(2);
    let input = c.work.join("movie.mkv");
    make_clip(&input, CLIP_SECONDS, "640x360", &[]);
    let started = Instant::now();
    let direct = play(Ffmpeg::direct(), &input, &c.work.join("direct"), fmp4);
    let cluster = play(shim(&c, mode), &input, &c.work.join("cluster"), fmp4);
    eprintln!("fmp4={fmp4} mode={mode:?}: {:?}\n  direct {direct:?}\n  cluster {cluster:?}", started.elapsed());
    // The model must have exercised what the scenario is about.
    let starts: Vec<&Event> = direct.events.iter().filter(|e| matches!(e, Event::Start(_))).collect();
    assert_eq!(starts, [&Event::Start(0), &Event::Start(SEEK_TO as u32)], "direct: the seek restarted the job");
    assert!(direct.served.iter().all(|(_, f)| *f == u64::from(SEG * 24)), "direct segments: {direct:?}");
    if let Some(d) = first_difference(&direct, &cluster) {
        panic!("Jellyfin would see a difference: {d}\n{}", c.all_logs());
    }
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
}

#[test]
fn hls_mpegts_from_start_with_seek_auto_mode() {
    hls_scenario(false, None);
}

#[test]
fn hls_fmp4_from_start_with_seek_split_mode() {
    hls_scenario(true, Some("split"));
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// `q`: exit 0 within 5 s, no SIGKILL needed.
    Stop,
    /// Paused by the throttler with the keys Jellyfin concluded (`c` for stock
    /// 5.1), then stopped: the resume key goes first, then `q`.
    ThrottledStop,
    /// SIGKILL without `q`: no ffmpeg of the job left anywhere within 5 s.
    Kill,
}

/// §4.2 and §4.3 with the real ffmpeg and with the shim splitting across two nodes.
#[test]
fn stop_throttle_and_kill_paths() {
    let c = Cluster::start(2);
    let input = c.work.join("movie.mkv");
    // Long enough that the job is still running when it is stopped or killed.
    make_clip(&input, CLIP_SECONDS, "640x360", &[]);
    // Jellyfin throttles with `c` up to 6.1 and with jellyfin-ffmpeg's `p`;
    // stock 7.1 and 8.1 have neither, so it never throttles them.
    let throttles = ffmpeg_major() < 7;
    for (name, ff) in [("direct", Ffmpeg::direct()), ("cluster", shim(&c, Some("split")))] {
        let keys = validate(&ff).throttle_keys();
        assert_eq!(keys.is_some(), throttles, "{name}: can Jellyfin throttle ffmpeg {}?", ffmpeg_major());
        let ends = if throttles { &[End::Stop, End::ThrottledStop, End::Kill][..] } else { &[End::Stop, End::Kill] };
        for &end in ends {
            let md5 = format!("{MD5}{name}{end:?}");
            let spec = HlsSpec {
                input: input.clone(),
                dir: c.work.join(&md5),
                md5: md5.clone(),
                fmp4: false,
                seg: SEG,
                preset: "veryfast".into(),
                rewrite: None,
            };
            let mut s = HlsSession::new(ff.clone(), spec);
            assert!(matches!(s.request(0), Answer::Served(_)), "{name} {end:?}: segment 0");
            let t = Instant::now();
            match end {
                End::Stop | End::ThrottledStop => {
                    if end == End::ThrottledStop {
                        s.pause(keys.unwrap());
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    let stopped = s.stop().unwrap();
                    assert_eq!(
                        stopped,
                        Stopped { exited_after_q: true, code: Some(0) },
                        "{name} {end:?}: q → exit 0 within 5 s\n{}",
                        c.all_logs()
                    );
                    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
                }
                End::Kill => {
                    // Something of the job must be running, or the check below proves nothing.
                    let running = if name == "direct" { ffmpegs_mentioning(&md5) } else { c.remote_ffmpegs() };
                    assert!(!running.is_empty(), "{name}: the job was still running before the kill");
                    s.job.as_mut().unwrap().kill();
                    while !ffmpegs_mentioning(&md5).is_empty() || !c.remote_ffmpegs().is_empty() {
                        assert!(
                            t.elapsed() < Duration::from_secs(5),
                            "{name}: ffmpeg left 5 s after SIGKILL: {:?} {:?}\n{}",
                            ffmpegs_mentioning(&md5),
                            c.remote_ffmpegs(),
                            c.all_logs()
                        );
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            eprintln!("{name} {end:?}: nothing left after {:?}", t.elapsed());
        }
    }
}

/// §2: the probes Jellyfin runs at startup lead it to the same conclusions with
/// the shim (on a cluster, default settings) as with the real ffmpeg.
#[test]
fn encoder_validator_conclusions_are_equal() {
    let c = Cluster::start(2);
    let direct = validate(&Ffmpeg::direct());
    assert!(direct.accepted, "the real ffmpeg is accepted: {direct:?}");
    assert!(direct.encoders.contains(&"libx264".to_owned()), "{direct:?}");
    let by_shim = validate(&shim(&c, None));
    for ((name, d), (_, s)) in direct.fields().into_iter().zip(by_shim.fields()) {
        assert_eq!(d, s, "EncoderValidator conclusion `{name}` differs (direct vs shim)\n{}", c.all_logs());
    }
    // With the cluster answering (`FFCLUSTER_PROBES=cluster`), the hardware
    // codecs, filters and hwaccels the nodes cannot use are hidden on purpose
    // (contrib/docs/hardware.md, tests/hardware.rs); everything else Jellyfin
    // concludes must stay the same.
    let by_cluster = validate(&shim(&c, None).env("FFCLUSTER_PROBES", Some("cluster")));
    for (name, d, s) in
        [("decoders", &direct.decoders, &by_cluster.decoders), ("encoders", &direct.encoders, &by_cluster.encoders)]
    {
        let hidden: Vec<&String> = d.iter().filter(|e| !s.contains(e)).collect();
        assert!(s.iter().all(|e| d.contains(e)), "cluster {name} the real ffmpeg lacks: {s:?}");
        // Jellyfin's hardware names all carry a suffix: h264_qsv, vp9_cuvid, scale_vaapi.
        assert!(
            hidden.iter().all(|e| e.contains('_') && !e.starts_with("lib")),
            "{name}: only hardware hidden: {hidden:?}"
        );
        eprintln!("cluster probes hide {name} {hidden:?}");
    }
    let same = |c: &Conclusions| Conclusions {
        decoders: Vec::new(),
        encoders: Vec::new(),
        filters: Vec::new(),
        hwaccels: Vec::new(),
        ..c.clone()
    };
    for ((name, d), (_, s)) in same(&direct).fields().into_iter().zip(same(&by_cluster).fields()) {
        assert_eq!(d, s, "conclusion `{name}` differs (direct vs cluster probes)\n{}", c.all_logs());
    }
    // Stock ffmpeg 5.1 has no `p` key (jellyfin-ffmpeg's patch 0032), so Jellyfin
    // would throttle with `c`/newline (§4.3).
    eprintln!("conclusions: {direct:?}; throttle keys {:?}", direct.throttle_keys());
    let version = Command::new(real("ffmpeg")).arg("-version").output().unwrap();
    if String::from_utf8_lossy(&version.stdout).starts_with("ffmpeg version 5.1") {
        assert!(!direct.pkey_pause);
        assert_eq!(direct.throttle_keys(), Some(("c", "\n")));
    }
}

// ---------------------------------------------------------------------------
// More of Jellyfin's command lines (CONTRACT.md §5), each run to its end by the
// model against the real ffmpeg and against the shim on two nodes (auto mode),
// compared file by file.

/// Clips for these scenarios are short; their cost is ffmpeg's, twice.
const SHORT: u32 = 10;

/// Decoded audio samples (per channel) of the first audio stream, 0 if none.
fn audio_samples(path: &Path) -> u64 {
    let out = run_ok(
        Command::new(real("ffmpeg"))
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(path)
            .args(["-map", "0:a:0?", "-ac", "1", "-f", "s16le", "-"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim().is_empty(), "audio decode errors in {}: {err}", path.display());
    out.stdout.len() as u64 / 2
}

/// What Jellyfin (and its client) got from one job, in comparable form.
#[derive(Debug)]
struct Outcome {
    /// Exit code (and, for HLS, whether `q` was needed: it must not be).
    code: Option<i32>,
    /// File names in the output directory after the job.
    names: Vec<String>,
    /// Per served file (segment, tailed stream, image): decoded video frames
    /// and audio samples.
    media: Vec<(String, u64, u64)>,
    /// Anything else of the scenario that must be equal (watchdog, failure).
    other: String,
    /// The first served file's streams: codec, tag, channels (ffprobe).
    streams: String,
}

/// One audio frame (AAC: 1024 samples per channel).
const AUDIO_FRAME: u64 = 1024;

/// The first difference, naming the file and the field.
fn first_outcome_difference(a: &Outcome, b: &Outcome) -> Option<String> {
    if a.code != b.code {
        return Some(format!("exit code: direct {:?}, cluster {:?}", a.code, b.code));
    }
    if a.other != b.other {
        return Some(format!("{}: direct, cluster {}", a.other, b.other));
    }
    if a.names != b.names {
        return Some(format!("output files: direct {:?}, cluster {:?}", a.names, b.names));
    }
    if a.streams != b.streams {
        return Some(format!("streams of the first served file: direct {:?}, cluster {:?}", a.streams, b.streams));
    }
    for ((name, fa, sa), (_, fb, sb)) in a.media.iter().zip(&b.media) {
        if fa != fb {
            return Some(format!("{name}: video frames direct {fa}, cluster {fb}"));
        }
        if sa.abs_diff(*sb) > AUDIO_FRAME {
            return Some(format!("{name}: audio samples direct {sa}, cluster {sb} (more than one frame apart)"));
        }
    }
    if a.media.len() != b.media.len() {
        return Some(format!("served files: direct {:?}, cluster {:?}", a.media, b.media));
    }
    None
}

/// `codec_name,codec_tag_string,channels` of every stream of `path`, `;`-joined.
fn streams(path: &Path) -> String {
    let out = run_ok(
        Command::new(real("ffprobe"))
            .args(["-v", "error", "-show_entries", "stream=codec_name,codec_tag_string,channels", "-of", "csv=p=0"])
            .arg(path),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // MPEG-TS: ffprobe lists the streams once per program, then once more.
    let half = lines.len() / 2;
    if lines.len() % 2 == 0 && lines[..half] == lines[half..] {
        lines.truncate(half);
    }
    lines.join(";")
}

/// Decodes one served file: video frames (if `video`) and audio samples.
fn measure(name: String, path: &Path, video: bool, audio: bool) -> (String, u64, u64) {
    let frames = if video { decode_frames(path) } else { 0 };
    (name, frames, if audio { audio_samples(path) } else { 0 })
}

/// The modes the controller recorded for jobs writing into `dir` ("local" if
/// it recorded none: the shim ran ffmpeg itself).
fn recorded_modes(c: &Cluster, dir: &Path) -> String {
    let needle = dir.display().to_string();
    let s = c.status();
    let mut modes: Vec<String> = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["args"].as_str().is_some_and(|a| a.contains(&needle)))
        .map(|j| j["mode"].as_str().unwrap_or("?").to_owned())
        .collect();
    modes.dedup();
    if modes.is_empty() { "local".into() } else { modes.join(",") }
}

/// Runs `scenario` (which writes into the directory it is given) directly and
/// through the shim in auto mode, prints both outcomes and the mode, and fails
/// on the first difference. `check` asserts what the direct run must show, so
/// that the scenario exercised what it is about.
fn compare(c: &Cluster, label: &str, scenario: impl Fn(Ffmpeg, &Path) -> Outcome, check: impl Fn(&Outcome)) {
    compare_in(c, label, None, scenario, check);
}

/// [`compare`] with the shim in `mode` (None: the default, auto).
fn compare_in(
    c: &Cluster,
    label: &str,
    mode: Option<&str>,
    scenario: impl Fn(Ffmpeg, &Path) -> Outcome,
    check: impl Fn(&Outcome),
) {
    let t = Instant::now();
    let direct = scenario(Ffmpeg::direct(), &c.work.join(format!("direct-{label}")));
    let td = t.elapsed();
    let dir = c.work.join(format!("cluster-{label}"));
    let cluster = scenario(shim(c, mode), &dir);
    let mode = recorded_modes(c, &dir);
    eprintln!(
        "{label}: direct {td:?}, cluster {:?} (mode {mode})\n  direct  {direct:?}\n  cluster {cluster:?}",
        t.elapsed() - td
    );
    check(&direct);
    if let Some(d) = first_outcome_difference(&direct, &cluster) {
        panic!("{label}: Jellyfin would see a difference: {d}\n{}", c.all_logs());
    }
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
}

/// A whole HLS playback by Jellyfin's rules: the init file (fMP4), then every
/// segment in order; the job must end by itself with exit 0.
fn hls_playback(ff: Ffmpeg, input: &Path, dir: &Path, fmp4: bool, rewrite: fn(Vec<String>) -> Vec<String>) -> Outcome {
    let md5 = MD5.to_owned();
    let spec = HlsSpec {
        input: input.to_path_buf(),
        dir: dir.to_path_buf(),
        md5: md5.clone(),
        fmp4,
        seg: SEG,
        preset: "veryfast".into(),
        rewrite: Some(rewrite),
    };
    let has_video = !spec.argv(0).iter().any(|a| a == "-vn");
    let mut s = HlsSession::new(ff, spec.clone());
    let last = i64::from(SHORT.div_ceil(SEG)) - 1;
    let mut init = Vec::new();
    if fmp4 {
        match s.request(-1) {
            Answer::Served(b) => init = b,
            other => panic!("init: {other:?}; events {:?}", s.events),
        }
    }
    let mut received = Vec::new();
    for n in 0..=last {
        match s.request(n) {
            Answer::Served(b) => received.push((n, b)),
            other => panic!("segment {n}: {other:?}; events {:?}", s.events),
        }
    }
    let stopped = s.stop().expect("a job was started");
    let names = names(dir);
    let served = dir.with_extension("served");
    std::fs::create_dir_all(&served).unwrap();
    let media: Vec<_> = received
        .into_iter()
        .map(|(n, bytes)| {
            let name = format!("{md5}{n}.{}", spec.ext());
            let file = served.join(&name);
            let mut all = init.clone();
            all.extend(&bytes);
            std::fs::write(&file, all).unwrap();
            measure(name, &file, has_video, true)
        })
        .collect();
    Outcome {
        streams: streams(&served.join(&media[0].0)),
        code: stopped.code,
        names,
        media,
        other: format!("exited by itself {}, events {:?}", stopped.exited_after_q, s.events),
    }
}

/// Replaces the value(s) after `opt` (which must be there).
fn set(mut a: Vec<String>, opt: &str, values: &[&str]) -> Vec<String> {
    let i = a.iter().position(|s| s == opt).unwrap_or_else(|| panic!("{opt} not in {a:?}"));
    a.splice(i + 1..i + 2, values.iter().map(|s| s.to_string()));
    a
}

/// Removes `opt` and its value.
fn remove(mut a: Vec<String>, opt: &str) -> Vec<String> {
    let i = a.iter().position(|s| s == opt).unwrap_or_else(|| panic!("{opt} not in {a:?}"));
    a.drain(i..i + 2);
    a
}

/// Inserts `tokens` before `opt`.
fn before(mut a: Vec<String>, opt: &str, tokens: &[&str]) -> Vec<String> {
    let i = a.iter().position(|s| s == opt).unwrap_or_else(|| panic!("{opt} not in {a:?}"));
    a.splice(i..i, tokens.iter().map(|s| s.to_string()));
    a
}

/// §5.3 with libx265 (fMP4 only, as Jellyfin does for HEVC): `-tag:v:0 hvc1`,
/// `-crf 28`, `-x265-params:0`, no `-sc_threshold`/`-level`, and `-bf 0` because
/// the reported version (stock 5.1) is below 7.0.1.
fn x265(a: Vec<String>) -> Vec<String> {
    let a = set(a, "-codec:v:0", &["libx265", "-tag:v:0", "hvc1"]);
    let a = set(a, "-crf", &["28"]);
    let a = set(a, "-profile:v:0", &["main"]);
    let a = remove(a, "-level");
    let a = remove(a, "-x264opts:0");
    let a = before(a, "-force_key_frames:0", &["-x265-params:0", "no-scenecut=1:no-open-gop=1:no-info=1"]);
    let a = remove(a, "-sc_threshold:v:0");
    before(a, "-vf", &["-bf", "0"])
}

/// `-codec:a:0 copy` (DirectStream-like: the AAC source is copied).
fn audio_copy(a: Vec<String>) -> Vec<String> {
    let a = remove(a, "-ac");
    let a = remove(a, "-ab");
    let a = remove(a, "-af");
    set(a, "-codec:a:0", &["copy"])
}

/// 5.1 → stereo with the "Dave750" downmix Jellyfin puts in `-af` (§5.3 pos 9).
fn downmix(a: Vec<String>) -> Vec<String> {
    set(a, "-af", &["pan=stereo|c0=0.5*c2+0.707*c0+0.707*c4+0.5*c3|c1=0.5*c2+0.707*c1+0.707*c5+0.5*c3,volume=2"])
}

/// §5.4: audio-only HLS (music): no map, no video block, `-vn -acodec aac`.
fn audio_only(a: Vec<String>) -> Vec<String> {
    let from = a.iter().position(|s| s == "-map").unwrap();
    let to = a.iter().position(|s| s == "-copyts").unwrap();
    let mut out = a[..from].to_vec();
    out.extend(["-vn", "-acodec", "aac", "-ab", "256000", "-ac", "2", "-ar", "44100"].map(String::from));
    out.extend_from_slice(&a[to..]);
    out
}

/// A text subtitle burned in by the software chain: `subtitles=f='…':fontsdir='…'`
/// after the main filters (the .srt is written by the test beside the input).
fn burn_in(a: Vec<String>) -> Vec<String> {
    let i = a.iter().position(|s| s.starts_with("file:")).unwrap();
    let input = PathBuf::from(a[i].strip_prefix("file:").unwrap());
    let srt = input.with_extension("srt");
    let fonts = input.parent().unwrap().join("fonts");
    let vf = a.iter().position(|s| s == "-vf").unwrap() + 1;
    let chain = format!("{},subtitles=f='{}':fontsdir='{}'", a[vf], srt.display(), fonts.display());
    let mut a = a;
    a[vf] = chain;
    a
}

/// A short 640x360 clip whose audio is 5.1 AAC (a 440 Hz tone in every channel).
fn make_surround_clip(path: &Path, seconds: u32) {
    run_ok(
        Command::new(real("ffmpeg"))
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
            .args(["-f", "lavfi", "-i", &format!("testsrc2=size=640x360:rate=24:duration={seconds}")])
            .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={seconds}")])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "48", "-pix_fmt", "yuv420p"])
            .args(["-af", "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0", "-c:a", "aac", "-b:a", "192k"])
            .arg(path),
    );
}

/// What the direct run of an HLS scenario must show: exit 0 by itself, every
/// segment served, full segments of 3 s (72 frames at 24 fps) and audio in each.
fn check_hls(video: bool) -> impl Fn(&Outcome) {
    move |d: &Outcome| {
        assert_eq!(d.code, Some(0), "direct exit code: {d:?}");
        assert_eq!(d.media.len() as u32, SHORT.div_ceil(SEG), "direct served segments: {d:?}");
        for (i, (name, frames, samples)) in d.media.iter().enumerate() {
            let secs = SEG.min(SHORT - i as u32 * SEG);
            if video {
                assert_eq!(*frames, u64::from(secs * 24), "direct {name}: {d:?}");
            }
            assert!(*samples > 0, "direct {name} has audio: {d:?}");
        }
    }
}

/// Split (auto mode splits it): the finisher's fMP4 must carry the `hvc1` tag
/// `-tag:v:0 hvc1` asks for, as direct's does (Apple clients need it).
#[test]
fn hls_libx265_fmp4_auto_mode() {
    let c = Cluster::start(2);
    let input = c.work.join("movie.mkv");
    make_clip(&input, SHORT, "640x360", &[]);
    compare_in(
        &c,
        "x265",
        None,
        |ff, dir| hls_playback(ff, &input, dir, true, x265),
        |d| {
            check_hls(true)(d);
            assert!(d.streams.starts_with("hevc,hvc1"), "direct: HEVC tagged hvc1: {d:?}");
        },
    );
}

#[test]
fn hls_audio_copy_auto_mode() {
    let c = Cluster::start(2);
    let input = c.work.join("movie.mkv");
    make_clip(&input, SHORT, "640x360", &[]);
    compare(&c, "acopy", |ff, dir| hls_playback(ff, &input, dir, false, audio_copy), check_hls(true));
}

#[test]
fn hls_surround_downmix_auto_mode() {
    let c = Cluster::start(2);
    let input = c.work.join("surround.mkv");
    make_surround_clip(&input, SHORT);
    compare(
        &c,
        "downmix",
        |ff, dir| hls_playback(ff, &input, dir, false, downmix),
        |d| {
            check_hls(true)(d);
            assert!(d.streams.ends_with(";aac,[15][0][0][0],2"), "direct: stereo AAC from 5.1: {d:?}");
        },
    );
}

#[test]
fn hls_audio_only_auto_mode() {
    let c = Cluster::start(2);
    let input = c.work.join("track.flac");
    run_ok(
        Command::new(real("ffmpeg"))
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
            .arg(format!("sine=frequency=440:sample_rate=48000:duration={SHORT}"))
            .args(["-ac", "2", "-c:a", "flac"])
            .arg(&input),
    );
    compare(
        &c,
        "audio",
        |ff, dir| hls_playback(ff, &input, dir, false, audio_only),
        |d| {
            check_hls(false)(d);
            assert_eq!(d.streams, "aac,[15][0][0][0],2", "direct: only stereo AAC: {d:?}");
        },
    );
}

/// §5.5: Jellyfin's progressive video template writing `<dir>/<md5>.<ext>`.
fn progressive_argv(input: &Path, output: &Path, mp4: bool) -> Vec<String> {
    let mut a: Vec<String> = ["-analyzeduration", "200M", "-probesize", "1G", "-i"].map(String::from).to_vec();
    a.push(format!("file:{}", input.display()));
    a.extend(
        [
            "-map",
            "0:0",
            "-map",
            "0:1",
            "-map",
            "-0:s",
            "-codec:v:0",
            "libx264",
            "-force_key_frames:0",
            "expr:gte(t,n_forced*5)",
            "-vf",
            "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709,scale=trunc(min(max(iw\\,ih*a)\\,min(640\\,360*a))/2)*2:trunc(min(max(iw/a\\,ih)\\,min(640/a\\,360))/2)*2,format=yuv420p",
            "-preset",
            "superfast",
            "-crf",
            "23",
            "-maxrate",
            "2000000",
            "-bufsize",
            "4000000",
            "-profile:v:0",
            "high",
            "-level",
            "41",
            "-x264opts:0",
            "subme=0:me_range=16:rc_lookahead=10:me=hex:open_gop=0",
            "-map_metadata",
            "-1",
            "-map_chapters",
            "-1",
            "-threads",
            "0",
            "-codec:a:0",
            "aac",
            "-ac",
            "2",
            "-ab",
            "128000",
        ]
        .map(String::from),
    );
    if mp4 {
        a.extend(["-f", "mp4", "-movflags", "frag_keyframe+empty_moov+delay_moov"].map(String::from));
    }
    a.extend(["-y".to_owned(), output.display().to_string()]);
    a
}

/// A progressive stream tailed while it is written; the client's bytes decoded.
fn progressive_playback(ff: Ffmpeg, input: &Path, dir: &Path, ext: &str) -> Outcome {
    std::fs::create_dir_all(dir).unwrap();
    let output = dir.join(format!("{MD5}.{ext}"));
    let t = progressive(&ff, &arguments_string(&progressive_argv(input, &output, ext == "mp4")), &output);
    let names = names(dir);
    let client = dir.with_extension(format!("client.{ext}"));
    std::fs::write(&client, &t.bytes).unwrap();
    let media = vec![measure(format!("{MD5}.{ext} as tailed"), &client, true, true)];
    let streams = streams(&client);
    Outcome { code: t.code, names, media, other: format!("failed before the file appeared: {}", t.failed), streams }
}

fn check_progressive(d: &Outcome) {
    assert_eq!(d.code, Some(0), "direct: {d:?}");
    // ffmpeg may repeat a frame at the Matroska source's millisecond timestamps.
    assert!(d.media[0].1 >= u64::from(SHORT * 24), "direct: every frame reached the client: {d:?}");
    let want = u64::from(SHORT) * 48000;
    assert!(d.media[0].2 + AUDIO_FRAME >= want, "direct: all the audio reached the client: {d:?}");
}

#[test]
fn progressive_mp4_and_mkv_tailed_auto_mode() {
    let c = Cluster::start(2);
    let input = c.work.join("movie.mkv");
    make_clip(&input, SHORT, "640x360", &[]);
    for ext in ["mp4", "mkv"] {
        compare(
            &c,
            &format!("progressive-{ext}"),
            |ff, dir| progressive_playback(ff, &input, dir, ext),
            check_progressive,
        );
    }
}

/// §5.13: software trickplay, one image every 2 s (interval 2000 ms), 320 wide.
fn trickplay_run(ff: Ffmpeg, input: &Path, dir: &Path) -> Outcome {
    let mut a: Vec<String> = ["-loglevel", "error", "-threads", "1", "-i"].map(String::from).to_vec();
    a.push(format!("file:{}", input.display()));
    a.extend(
        [
            "-an",
            "-sn",
            "-vf",
            "fps=0.5,setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709,scale=trunc(min(max(iw\\,ih*(a*sar))\\,320)/2)*2:trunc(ow/(a*sar)/2)*2,format=yuv420p",
            "-threads",
            "1",
            "-c:v",
            "mjpeg",
            "-qscale:v",
            "4",
            "-fps_mode",
            "passthrough",
            "-f",
            "image2",
        ]
        .map(String::from),
    );
    a.push(dir.join("%08d.jpg").display().to_string());
    let t = trickplay(&ff, &arguments_string(&a), dir);
    let media = t.images.iter().map(|n| measure(n.clone(), &dir.join(n), true, false)).collect();
    let streams = t.images.first().map(|n| streams(&dir.join(n))).unwrap_or_default();
    Outcome {
        code: t.code,
        names: t.images.clone(),
        media,
        other: format!("watchdog kill: {}", t.killed_by_watchdog),
        streams,
    }
}

#[test]
fn trickplay_images_auto_mode() {
    let c = Cluster::start(2);
    let input = c.work.join("movie.mkv");
    make_clip(&input, SHORT, "640x360", &[]);
    compare(
        &c,
        "trickplay",
        |ff, dir| trickplay_run(ff, &input, dir),
        |d| {
            assert_eq!(d.code, Some(0), "direct: {d:?}");
            assert!(d.names.len() as u32 >= SHORT / 2, "direct: one image per 2 s: {d:?}");
            assert_eq!(d.names[0], "00000001.jpg", "{d:?}");
            assert!(d.media.iter().all(|m| m.1 == 1), "direct: every image decodes: {d:?}");
        },
    );
}

#[test]
fn hls_text_subtitle_burn_in_auto_mode() {
    let c = Cluster::start(2);
    let input = c.work.join("movie.mkv");
    make_clip(&input, SHORT, "640x360", &[]);
    std::fs::create_dir_all(c.work.join("fonts")).unwrap();
    let srt = "1\n00:00:00,500 --> 00:00:03,000\nFirst line\n\n2\n00:00:04,000 --> 00:00:06,500\nSecond <i>line</i>\n\n3\n00:00:07,000 --> 00:00:09,500\nThird line\n";
    std::fs::write(input.with_extension("srt"), srt).unwrap();
    if !has_filter("subtitles") {
        // A build without libass (the static 7.1 and 8.1): Jellyfin's line
        // fails, through the shim exactly as directly.
        let run = |name: &str, mut cmd: Command| {
            let dir = c.work.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let spec = HlsSpec {
                input: input.clone(),
                dir: dir.clone(),
                md5: MD5.into(),
                fmp4: false,
                seg: SEG,
                preset: "veryfast".into(),
                rewrite: Some(burn_in),
            };
            let out = cmd.args(spec.argv(0)).stdin(std::process::Stdio::null()).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).replace(&dir.display().to_string(), "DIR");
            (out.status.code(), err.lines().last().unwrap_or_default().to_owned(), names(&dir))
        };
        let direct = run("direct-subtitles", Command::new(real("ffmpeg")));
        let mut shim = c.shim();
        shim.env_remove("FFCLUSTER_MODE");
        assert_ne!(direct.0, Some(0), "{direct:?}");
        assert_eq!(run("cluster-subtitles", shim), direct, "{}", c.log("shim.log"));
        return;
    }
    compare(&c, "subtitles", |ff, dir| hls_playback(ff, &input, dir, false, burn_in), check_hls(true));
}
