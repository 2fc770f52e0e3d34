//! Jellyfin conformance: the Jellyfin 10.11 model (tests/support/jellyfin.rs)
//! drives the real ffmpeg and then the shim on a real controller with two
//! nodes, the same way each time; what Jellyfin would observe must be the same.
//! A failure names the first difference.

mod support;

use std::path::Path;
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
    Playback { served, events: s.events.clone(), progress }
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
    for (x, y) in a.progress.iter().zip(&b.progress) {
        if x != y {
            return Some(format!(
                "stderr progress of the job from segment {}: direct (reported, time≥seek) {:?}, cluster {:?}",
                x.0,
                (x.1, x.2),
                (y.1, y.2)
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
    for (name, ff) in [("direct", Ffmpeg::direct()), ("cluster", shim(&c, Some("split")))] {
        let keys = validate(&ff).throttle_keys().expect("Jellyfin can throttle this ffmpeg");
        for end in [End::Stop, End::ThrottledStop, End::Kill] {
            let md5 = format!("{MD5}{name}{end:?}");
            let spec = HlsSpec {
                input: input.clone(),
                dir: c.work.join(&md5),
                md5: md5.clone(),
                fmp4: false,
                seg: SEG,
                preset: "veryfast".into(),
            };
            let mut s = HlsSession::new(ff.clone(), spec);
            assert!(matches!(s.request(0), Answer::Served(_)), "{name} {end:?}: segment 0");
            let t = Instant::now();
            match end {
                End::Stop | End::ThrottledStop => {
                    if end == End::ThrottledStop {
                        s.pause(keys);
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
    // codecs, filters and hwaccels the nodes cannot use are hidden on purpose (README, tests/hardware.rs);
    // everything else Jellyfin concludes must stay the same.
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
