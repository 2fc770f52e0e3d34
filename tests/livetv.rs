//! Live TV through the cluster: Jellyfin's Live TV inputs are growing HTTP
//! streams served by the Jellyfin host itself at `http://localhost:8096/…`
//! (CONTRACT.md §5.8), which no node can open. The shim fetches them and the
//! node's ffmpeg reads them through the controller's relay.
//!
//! Each scenario runs against the real ffmpeg and against the shim on a
//! two-node cluster, at the same time (each with its own live source, so both
//! see a stream from its beginning), and compares what Jellyfin would observe.
//!
//! What cannot be shown on one machine: that a node could not have opened the
//! origin itself (every process here can reach `localhost`). What is shown is
//! that it did not: the node's ffmpeg names the relay, not the origin, and the
//! origin served exactly one connection, the shim's.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::cluster::*;
use support::jellyfin::{Ffmpeg, Job, arguments_string};
use support::live::{LiveOpts, LiveSource};

const MD5: &str = "5d41402abc4b2a76b9719d911017c592";
/// `-hls_time` of the template, seconds.
const SEG: f64 = 3.0;
/// Jellyfin's `MinSegments` for 3 s segments (StreamState.cs).
const MIN_SEGMENTS: usize = 3;
/// How often HlsHelpers reads the playlist (§5.7).
const POLL: Duration = Duration::from_millis(150);

/// The scenarios run in real time against live sources and compare timings:
/// one at a time, so that they do not starve each other of the machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tuner's required `User-Agent`, which Jellyfin passes as `-user_agent`.
const TUNER_AGENT: &str = "Jellyfin-LiveTV/10.11";

/// Jellyfin 10.11's Live TV HLS template: the §5.3 template with the §5.7
/// event variant and a Live TV input modifier: `-analyzeduration 3000000
/// -user_agent … -fflags +igndts`, libx264 `superfast`, `-flags
/// -global_header`, `-hls_base_url`, event playlist.
fn live_hls(url: &str, dir: &Path, deinterlace: bool) -> Vec<String> {
    let mut a = jellyfin_hls(Path::new("input"), dir, MD5, false, SEG as u32);
    let at = |a: &[String], s: &str| a.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} in {a:?}"));
    let i = at(&a, "-analyzeduration");
    a[i + 1] = "3000000".into();
    let i = at(&a, "-i");
    a[i + 1] = url.into();
    a.splice(i..i, ["-user_agent", TUNER_AGENT, "-fflags", "+igndts"].map(str::to_owned));
    let i = at(&a, "-preset");
    a[i + 1] = "superfast".into();
    let i = at(&a, "-vf");
    if deinterlace {
        a[i + 1] = a[i + 1].replacen(",scale=", ",yadif=0:-1:0,scale=", 1);
    }
    a.splice(i + 2..i + 2, ["-flags".to_owned(), "-global_header".to_owned()]);
    let i = at(&a, "-start_number");
    a.splice(i + 2..i + 2, ["-hls_base_url".to_owned(), format!("hls/{MD5}/")]);
    let i = at(&a, "-hls_playlist_type");
    a[i + 1] = "event".into();
    a
}

/// What one Live TV HLS run looked like to Jellyfin.
#[derive(Debug)]
struct HlsRun {
    code: Option<i32>,
    exited_after_q: bool,
    /// Times the playlist was read while the job ran.
    reads: usize,
    /// When the playlist first had `MIN_SEGMENTS` entries (Jellyfin answers the client).
    ready_after: Duration,
    /// The final playlist.
    playlist: String,
    durations: Vec<f64>,
    /// Frames decoded from each segment as it was when first listed.
    frames: Vec<u64>,
    /// The PTS of each segment's first keyframe, as written (33 bits).
    first_pts: Vec<Option<u64>>,
    stderr: String,
}

/// The segment names a playlist lists, in order (`hls/<md5>/<md5>N.ts` → `<md5>N.ts`).
fn listed(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.rsplit('/').next().unwrap().trim().to_owned())
        .collect()
}

/// Runs the Live TV template for `run_for` as Jellyfin does: waits for the
/// playlist, reads it every 150 ms, takes every segment it lists as a client
/// fetching it would (HlsSegmentController serves files as they are), then
/// stops with `q`. `during` is called once while the job runs with segments
/// listed.
fn live_hls_run(ff: &Ffmpeg, url: &str, dir: &Path, deinterlace: bool, run_for: Duration, during: &dyn Fn()) -> HlsRun {
    std::fs::create_dir_all(dir).unwrap();
    let playlist = dir.join(format!("{MD5}.m3u8"));
    let mut job = Job::launch(ff, &arguments_string(&live_hls(url, dir, deinterlace)));
    let started = Instant::now();
    // Each segment as a client got it the first time the playlist listed it.
    let mut fetched: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut reads = 0;
    let mut ready_after = None;
    let mut called = false;
    while started.elapsed() < run_for {
        assert!(!job.exited(), "the job ended by itself: {}", job.log.lock().unwrap().lines.join("\n"));
        std::thread::sleep(POLL);
        let Ok(text) = std::fs::read_to_string(&playlist) else { continue };
        reads += 1;
        let names = listed(&text);
        for name in &names {
            let bytes = std::fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("the playlist lists {name}, which cannot be read: {e}\n{text}"));
            match fetched.get(name) {
                None => {
                    fetched.insert(name.clone(), bytes);
                }
                Some(first) => assert!(
                    *first == bytes,
                    "{name} changed after the playlist listed it ({} bytes, then {})",
                    first.len(),
                    bytes.len()
                ),
            }
        }
        if ready_after.is_none() && extinf_text(&text).len() >= MIN_SEGMENTS {
            ready_after = Some(started.elapsed());
        }
        if !called && names.len() >= 2 {
            called = true;
            during();
        }
    }
    let stopped = job.stop();
    let final_text = std::fs::read_to_string(&playlist).unwrap();
    let names = listed(&final_text);
    let dir_tmp = tempfile::tempdir().unwrap();
    let mut frames = Vec::new();
    let mut first_pts = Vec::new();
    for name in &names {
        let now = std::fs::read(dir.join(name)).unwrap();
        let bytes = match fetched.get(name) {
            Some(first) => {
                assert!(*first == now, "{name} changed after the playlist listed it");
                first.clone()
            }
            None => now,
        };
        // Decoded as the client got it.
        let copy = dir_tmp.path().join(name);
        std::fs::write(&copy, &bytes).unwrap();
        frames.push(decode_frames(&copy));
        first_pts.push(ffcluster::split::mpegts::keyframes(&bytes, 0).first().map(|k| k.pts));
    }
    let stderr = job.log.lock().unwrap().lines.join("\n");
    HlsRun {
        code: stopped.code,
        exited_after_q: stopped.exited_after_q,
        reads,
        ready_after: ready_after.unwrap_or_else(|| panic!("the playlist never had {MIN_SEGMENTS} segments: {stderr}")),
        durations: extinf_text(&final_text),
        playlist: final_text,
        frames,
        first_pts,
        stderr,
    }
}

/// The command line of a running process.
fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Checks one run on its own: a clean stop, a properly ended event playlist
/// whose segments all decode and last what `-hls_time` says.
fn check_hls(what: &str, run: &HlsRun, fps: f64) {
    assert!(run.exited_after_q && run.code == Some(0), "{what}: stopped {run:?}");
    assert!(run.playlist.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{what}: {}", run.playlist);
    assert!(run.playlist.trim_end().ends_with("#EXT-X-ENDLIST"), "{what}: {}", run.playlist);
    assert!(run.reads > 20, "{what}: the playlist was read only {} times", run.reads);
    let n = run.durations.len();
    assert!(n >= MIN_SEGMENTS, "{what}: {}", run.playlist);
    // Every segment but the last (cut by `q`) is one `-hls_time`.
    for (i, d) in run.durations[..n - 1].iter().enumerate() {
        assert!((d - SEG).abs() < 0.05, "{what}: segment {i} lasts {d} s: {}", run.playlist);
    }
    assert!(run.durations[n - 1] <= SEG + 0.05, "{what}: {}", run.playlist);
    for (i, (f, d)) in run.frames.iter().zip(&run.durations).enumerate() {
        let want = d * fps;
        assert!((*f as f64 - want).abs() <= 1.5, "{what}: segment {i} decodes to {f} frames, {d} s wants {want}");
    }
}

/// How the cluster runs a Live TV job.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// `FFCLUSTER_MODE=whole`: one node follows the stream.
    Whole,
    /// `FFCLUSTER_MODE=split`: the controller cuts the stream into pieces
    /// (`FFCLUSTER_LIVE_PIECE` seconds) that the nodes encode.
    Split { piece: f64 },
}

/// Runs `opts`'s channel through direct ffmpeg and the cluster in `mode` at
/// once and compares them; returns (direct, cluster).
fn live_tv_hls(opts: LiveOpts, deinterlace: bool, mode: Mode) -> (HlsRun, HlsRun) {
    let _serial = one_at_a_time();
    let fps = f64::from(opts.fps);
    let jump = opts.jump;
    let c = Cluster::start(2);
    let direct_source = LiveSource::start(opts.clone());
    let cluster_source = LiveSource::start(opts);
    let run_for = Duration::from_secs(20);
    let cluster_dir = c.dir.path().join("transcodes");
    let direct_url = direct_source.url();
    let direct = std::thread::spawn(move || {
        // Its own directory: it must outlive a failure of the cluster run.
        let dir = tempfile::tempdir().unwrap();
        live_hls_run(&Ffmpeg::direct(), &direct_url, dir.path(), deinterlace, run_for, &|| {})
    });
    let relay = format!("{}/api/v1/files/", c.url());
    let origin = cluster_source.url();
    let node_argv = std::cell::RefCell::new(String::new());
    let cluster =
        live_hls_run(&Ffmpeg::from_command(&shim_in(&c, mode)), &origin, &cluster_dir, deinterlace, run_for, &|| {
            // A piece's encode is short: wait for one to be running.
            let deadline = Instant::now() + Duration::from_secs(10);
            let pids = loop {
                let pids = c.remote_ffmpegs();
                if !pids.is_empty() || Instant::now() > deadline {
                    break pids;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            match mode {
                Mode::Whole => assert_eq!(pids.len(), 1, "one node runs the job: {pids:?}"),
                Mode::Split { .. } => {
                    assert!(!pids.is_empty(), "no node encodes a piece");
                    // The controller shows how far behind the stream the job is.
                    let status = c.status();
                    let job = status["jobs"].as_array().unwrap().iter().find(|j| j["state"] == "running").cloned();
                    let lag = job.as_ref().and_then(|j| j["live_lag_ms"].as_u64());
                    assert!(lag.is_some_and(|l| (l as f64) < 2000.0 * SEG), "live lag {lag:?}: {job:#?}");
                    eprintln!("live lag while running: {lag:?} ms");
                }
            }
            // A piece's ffmpeg may be gone before its command line is read:
            // then another's.
            let mut argv = cmdline(pids[0]);
            while argv.is_empty() && Instant::now() < deadline {
                argv = c.remote_ffmpegs().into_iter().map(cmdline).find(|a| !a.is_empty()).unwrap_or_default();
            }
            *node_argv.borrow_mut() = argv;
        });
    let direct = direct.join().unwrap();
    eprintln!(
        "direct: {} segments {:?}, ready after {:?}, {} playlist reads; cluster: {} segments {:?}, ready after {:?}, {} reads",
        direct.durations.len(),
        direct.durations,
        direct.ready_after,
        direct.reads,
        cluster.durations.len(),
        cluster.durations,
        cluster.ready_after,
        cluster.reads
    );
    check_hls("direct", &direct, fps);
    match jump {
        None => check_hls("cluster", &cluster, fps),
        Some((_, by)) => check_carries_on(&cluster, &direct, by),
    }
    // The same wall time: the cluster's start-up costs it at most a segment or two.
    let (n_direct, n_cluster) = (direct.durations.len() as i64, cluster.durations.len() as i64);
    assert!((n_direct - n_cluster).abs() <= 2, "direct {n_direct} segments, cluster {n_cluster}");
    // What the cluster adds to the stream's latency: under two segments.
    let added = cluster.ready_after.as_secs_f64() - direct.ready_after.as_secs_f64();
    eprintln!("added latency until ready: {added:.2} s ({:.2} segments)", added / SEG);
    assert!(added < 2.0 * SEG, "the cluster made the playlist ready {added:.2} s later than ffmpeg did");
    if let Mode::Split { piece } = mode {
        check_live_split(&c, piece, run_for, jump.map_or(0.0, |(_, by)| by));
    }

    // The node's ffmpeg read the relay, and only the shim read the origin.
    let argv = node_argv.into_inner();
    assert!(argv.contains(&relay), "the node's ffmpeg does not read the relay: {argv}");
    assert!(!argv.contains("localhost"), "the node's ffmpeg names the origin: {argv}");
    // A whole job's stderr is the node's, with the relay named as the input
    // was; a split job's is the finisher's, which reads its copy of the stream
    // from a descriptor (its banner names that).
    if mode == Mode::Whole {
        assert!(cluster.stderr.contains(&origin), "stderr names the input as given: {}", cluster.stderr);
    }
    assert_eq!(direct_source.clients_served(), 1);
    assert_eq!(cluster_source.clients_served(), 1, "only the shim may read the origin");
    // The shim asked the origin the way ffmpeg asks it.
    assert_eq!(direct_source.user_agents(), [TUNER_AGENT]);
    assert_eq!(cluster_source.user_agents(), [TUNER_AGENT]);
    assert!(!argv.contains(TUNER_AGENT), "the relay does not need the tuner's headers: {argv}");
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
    // The job is over: so is the shim's connection to the origin.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster_source.clients_open() > 0 {
        assert!(Instant::now() < deadline, "the origin connection outlived the job");
        std::thread::sleep(Duration::from_millis(20));
    }
    (direct, cluster)
}

/// The controller's record of a live split job: cut into pieces of the
/// asked length (one may span a forward `jump` of the clock, seconds), every
/// piece encoded once and in order, on the nodes.
fn check_live_split(c: &Cluster, piece: f64, run_for: Duration, jump: f64) {
    let job = &split_job(c);
    assert_eq!(job["reason"], "split.live", "{job:#?}");
    assert!(job["error"].is_null(), "{job:#?}");
    let chunks = job["chunks"].as_array().unwrap();
    let done: BTreeMap<u64, &serde_json::Value> =
        chunks.iter().filter(|r| r["state"] == "done").map(|r| (r["chunk"].as_u64().unwrap(), r)).collect();
    // Pieces were cut for the whole run, less the start-up and the stop.
    let want = run_for.as_secs_f64() / piece;
    assert!(done.len() as f64 >= want * 0.6, "{} pieces encoded in {run_for:?} of {piece} s pieces", done.len());
    // Each piece once, contiguous on the stream's timeline; only the last
    // few may have been cut short by the stop.
    let last = *done.keys().last().unwrap();
    for i in 0..last.saturating_sub(2) {
        assert!(done.contains_key(&i), "piece {i} was never encoded: {chunks:#?}");
    }
    let mut spanned = 0;
    for (i, r) in &done {
        let (start, end) = (r["start"].as_f64().unwrap(), r["end"].as_f64().unwrap());
        // The piece before a forward jump of the clock ends where the frames
        // go on.
        let long = jump > 0.0 && end - start > piece + 0.041 && end - start <= piece + jump + 0.041;
        spanned += usize::from(long);
        assert!(end > start && (end - start <= piece + 0.041 || long && spanned == 1), "piece {i}: {start}..{end}");
        if let Some(next) = done.get(&(i + 1)) {
            assert!((next["start"].as_f64().unwrap() - end).abs() < 1e-6, "pieces {i} and {} do not meet", i + 1);
        }
    }
    let done: Vec<&serde_json::Value> = done.into_values().collect();
    let nodes: std::collections::BTreeSet<&str> = done.iter().map(|r| r["node"].as_str().unwrap()).collect();
    eprintln!("{} pieces on {nodes:?}", done.len());
}

#[test]
fn live_tv_hls_event_playlist() {
    live_tv_hls(LiveOpts::default(), false, Mode::Whole);
}

#[test]
fn live_tv_hls_interlaced_mpeg2_with_yadif() {
    live_tv_hls(LiveOpts { interlaced: true, video: "mpeg2video", ..LiveOpts::default() }, true, Mode::Whole);
}

#[test]
fn live_tv_hls_split_into_pieces_across_nodes() {
    // B-frames, and a keyframe interval that does not divide the pieces.
    let opts = LiveOpts { gop: 37, bframes: 2, ..LiveOpts::default() };
    live_tv_hls(opts, false, Mode::Split { piece: 1.0 });
}

#[test]
fn live_tv_hls_split_interlaced_mpeg2_open_gops() {
    let opts = LiveOpts { interlaced: true, video: "mpeg2video", gop: 12, bframes: 2, ..LiveOpts::default() };
    live_tv_hls(opts, true, Mode::Split { piece: 1.5 });
}

/// EncodedRecorder's command line (§5.9).
fn recorder(url: &str, out: &Path, re: bool) -> Vec<String> {
    let mut a: Vec<String> =
        ["-async", "1", "-fflags", "+igndts+ignidx+genpts"].iter().map(|s| s.to_string()).collect();
    if re {
        a.push("-re".into());
    }
    for s in ["-analyzeduration", "5000000", "-i", url, "-codec:v:0", "copy", "-fflags", "+genpts"] {
        a.push(s.into());
    }
    for s in ["-map_metadata", "-1", "-threads", "0", "-codec:a:0", "copy", "-sn", "-y"] {
        a.push(s.into());
    }
    a.push(out.display().to_string());
    a
}

fn duration_of(path: &Path) -> f64 {
    let out = run_ok(
        Command::new(real("ffprobe"))
            .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
            .arg(path),
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A recording stopped with `q` after `secs`: (exit code, duration, frames).
fn record(ff: &Ffmpeg, url: &str, out: &Path, re: bool, secs: u64, during: &dyn Fn()) -> (Option<i32>, f64, u64) {
    let mut job = Job::launch(ff, &arguments_string(&recorder(url, out, re)));
    std::thread::sleep(Duration::from_secs(secs / 2));
    during();
    std::thread::sleep(Duration::from_secs(secs - secs / 2));
    assert!(!job.exited(), "the recording ended by itself: {}", job.log.lock().unwrap().lines.join("\n"));
    // EncodedRecorder: `q`, then WaitForExit(10000).
    let stopped = job.stop();
    assert!(stopped.exited_after_q, "{stopped:?}");
    (stopped.code, duration_of(out), decode_frames(out))
}

/// How long the channel runs before the recording starts: the recorder gets
/// that much backlog first (from the stream's beginning), as from Jellyfin.
const HEAD_START: Duration = Duration::from_secs(4);
/// `-analyzeduration` of the recorder, seconds.
const ANALYZE: f64 = 5.0;

fn live_tv_recording(re: bool) {
    let _serial = one_at_a_time();
    let c = Cluster::start(2);
    let direct_source = LiveSource::start(LiveOpts::default());
    let cluster_source = LiveSource::start(LiveOpts::default());
    std::thread::sleep(HEAD_START);
    let secs = 10;
    let url = direct_source.url();
    let direct = std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        record(&Ffmpeg::direct(), &url, &dir.path().join("direct.ts"), re, secs, &|| {})
    });
    let rec = c.work.join("recording.ts");
    // A stream copy runs here unless told otherwise; the shim's FFCLUSTER_MODE=whole sends it to a node.
    let node_argv = std::cell::RefCell::new(String::new());
    let cluster = record(&Ffmpeg::from_command(&c.shim()), &cluster_source.url(), &rec, re, secs, &|| {
        let pids = c.remote_ffmpegs();
        assert_eq!(pids.len(), 1, "one node runs the recording: {pids:?}");
        *node_argv.borrow_mut() = cmdline(pids[0]);
    });
    let direct = direct.join().unwrap();
    eprintln!("recording (-re {re}) for {secs} s: direct {direct:?}, cluster {cluster:?}");
    let secs = secs as f64;
    let head = HEAD_START.as_secs_f64();
    // Without -re the recorder reads the backlog at once and then follows the
    // live edge: it holds the head start too. That holds through the cluster
    // only if the shim does not pace its reading of the origin (-re applied
    // twice). With -re it reads at the stream's own rate from its beginning,
    // starting once it has analysed ANALYZE seconds, of which the head start
    // was there at once.
    let expected = if re { secs - (ANALYZE - head).max(0.0) } else { secs + head };
    for (what, (code, duration, frames)) in [("direct", direct), ("cluster", cluster)] {
        assert_eq!(code, Some(0), "{what}");
        assert!((expected - 2.5..=expected + 1.0).contains(&duration), "{what}: {duration} s, expected {expected} s");
        assert!((frames as f64 - duration * 25.0).abs() <= 3.0, "{what}: {frames} frames in {duration} s");
    }
    assert!((direct.1 - cluster.1).abs() <= 2.0, "direct {} s, cluster {} s", direct.1, cluster.1);
    let argv = node_argv.into_inner();
    assert!(argv.contains(&format!("{}/api/v1/files/", c.url())), "the node's ffmpeg does not read the relay: {argv}");
    assert_eq!(argv.contains(" -re "), re, "-re stays with the node's ffmpeg: {argv}");
    assert_eq!(cluster_source.clients_served(), 1, "only the shim may read the origin");
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
}

#[test]
fn live_tv_recording_stopped_with_q() {
    live_tv_recording(false);
}

#[test]
fn live_tv_recording_at_native_rate() {
    live_tv_recording(true);
}

#[test]
fn relay_inputs_none_leaves_the_url_to_the_node() {
    let _serial = one_at_a_time();
    let c = Cluster::start(1);
    let source = LiveSource::start(LiveOpts::default());
    let ff = Ffmpeg::from_command(&c.shim()).env("FFCLUSTER_RELAY_INPUTS", Some("none"));
    let node_argv = std::cell::RefCell::new(String::new());
    let (code, duration, _) = record(&ff, &source.url(), &c.work.join("rec.ts"), false, 8, &|| {
        let pids = c.remote_ffmpegs();
        assert_eq!(pids.len(), 1, "one node runs the recording: {pids:?}");
        *node_argv.borrow_mut() = cmdline(pids[0]);
    });
    assert_eq!(code, Some(0));
    // It analyses 5 s of the stream first, then catches up.
    assert!(duration > 5.0, "{duration} s");
    // On one machine the node can open `localhost`; on a real cluster it could not.
    let argv = node_argv.into_inner();
    assert!(argv.contains(&source.url()), "the node's ffmpeg opens the URL itself: {argv}");
    assert_eq!(source.clients_served(), 1, "the node, not the shim");
    assert!(source.user_agents()[0].starts_with("Lavf/"), "{:?}", source.user_agents());
}

/// What a job did when its live source went away.
#[derive(Debug)]
struct Orphaned {
    code: Option<i32>,
    /// From the source's end to the job's exit.
    exit_after: Duration,
    playlist: String,
}

/// Starts a Live TV HLS job writing to `dir` and waits until its playlist
/// lists two segments.
fn launch_live(ff: &Ffmpeg, args: &[String], dir: &Path) -> Job {
    let mut job = Job::launch(ff, &arguments_string(args));
    let playlist = dir.join(format!("{MD5}.m3u8"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while extinf_text(&std::fs::read_to_string(&playlist).unwrap_or_default()).len() < 2 {
        assert!(
            Instant::now() < deadline && !job.exited(),
            "no segments: {}",
            job.log.lock().unwrap().lines.join("\n")
        );
        std::thread::sleep(POLL);
    }
    job
}

fn lose_the_source(ff: &Ffmpeg, dir: &Path) -> Orphaned {
    std::fs::create_dir_all(dir).unwrap();
    let source = LiveSource::start(LiveOpts::default());
    let playlist = dir.join(format!("{MD5}.m3u8"));
    let mut job = launch_live(ff, &live_hls(&source.url(), dir, false), dir);
    drop(source);
    let gone = Instant::now();
    while !job.exited() {
        assert!(gone.elapsed() < Duration::from_secs(60), "the job hangs without its source");
        std::thread::sleep(Duration::from_millis(20));
    }
    let exit_after = gone.elapsed();
    let code = job.child.wait().unwrap().code();
    Orphaned { code, exit_after, playlist: std::fs::read_to_string(&playlist).unwrap() }
}

/// The shim configured for `mode`.
fn shim_in(c: &Cluster, mode: Mode) -> Command {
    let mut shim = c.shim();
    if let Mode::Split { piece } = mode {
        shim.env("FFCLUSTER_MODE", "split").env("FFCLUSTER_LIVE_PIECE", piece.to_string());
    }
    shim
}

#[test]
fn live_tv_source_that_goes_away() {
    source_goes_away(Mode::Whole);
}

#[test]
fn live_tv_split_source_that_goes_away() {
    source_goes_away(Mode::Split { piece: 1.0 });
}

fn source_goes_away(mode: Mode) {
    let _serial = one_at_a_time();
    let c = Cluster::start(2);
    let direct = std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        lose_the_source(&Ffmpeg::direct(), dir.path())
    });
    let cluster = lose_the_source(&Ffmpeg::from_command(&shim_in(&c, mode)), &c.dir.path().join("transcodes"));
    let direct = direct.join().unwrap();
    eprintln!("source gone: direct {direct:?}\ncluster {cluster:?}");
    assert_eq!(direct.code.map(|c| c == 0), cluster.code.map(|c| c == 0), "direct {direct:?}, cluster {cluster:?}");
    assert!(cluster.exit_after < direct.exit_after + Duration::from_secs(10), "{cluster:?}");
    assert_eq!(
        direct.playlist.trim_end().ends_with("#EXT-X-ENDLIST"),
        cluster.playlist.trim_end().ends_with("#EXT-X-ENDLIST"),
        "direct:\n{}\ncluster:\n{}",
        direct.playlist,
        cluster.playlist
    );
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
}

/// What the split scenarios start from: a two-node cluster, a live channel
/// with `opts`, the transcode directory, and the shim splitting live jobs into
/// 1 s pieces.
fn split_scene(opts: LiveOpts) -> (Cluster, LiveSource, std::path::PathBuf, Ffmpeg) {
    let c = Cluster::start(2);
    let source = LiveSource::start(opts);
    let dir = c.dir.path().join("transcodes");
    std::fs::create_dir_all(&dir).unwrap();
    let ff = Ffmpeg::from_command(&shim_in(&c, Mode::Split { piece: 1.0 }));
    (c, source, dir, ff)
}

/// The controller's record of the cluster's one split job.
fn split_job(c: &Cluster) -> serde_json::Value {
    let status = c.status();
    let jobs = status["jobs"].as_array().unwrap();
    let split: Vec<&serde_json::Value> = jobs.iter().filter(|j| j["mode"] == "split").collect();
    assert_eq!(split.len(), 1, "one split job: {jobs:#?}");
    split[0].clone()
}

/// SIGKILL of a node while it encodes a piece: the piece runs again on the
/// other node, and the playlist goes on as if nothing happened (pieces are
/// joined only once encoded whole, so no half piece reached the finisher).
#[test]
fn live_tv_split_survives_a_node_killed_mid_piece() {
    use nix::sys::signal::Signal;
    let _serial = one_at_a_time();
    let (mut c, source, dir, ff) = split_scene(LiveOpts::default());
    let killed = std::cell::Cell::new(None);
    let run = live_hls_run(&ff, &source.url(), &dir, false, Duration::from_secs(20), &|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let busy = (0..c.nodes.len()).find(|&i| !children_named(&[c.nodes[i].pid()], "ffmpeg").is_empty());
            if let Some(i) = busy {
                c.nodes[i].signal(Signal::SIGKILL);
                killed.set(Some(i));
                return;
            }
            assert!(Instant::now() < deadline, "no node ever ran a piece");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    eprintln!("node {:?} killed; segments {:?}", killed.get(), run.durations);
    check_hls("cluster", &run, 25.0);
    let job = split_job(&c);
    let chunks = job["chunks"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = chunks.iter().filter(|r| r["state"] == "failed").collect();
    assert!(!failed.is_empty(), "no piece failed with its node: {chunks:#?}");
    for f in &failed {
        let rerun = chunks.iter().any(|r| r["chunk"] == f["chunk"] && r["state"] == "done");
        assert!(rerun, "piece {} was not encoded again: {chunks:#?}", f["chunk"]);
    }
    c.nodes.remove(killed.get().unwrap());
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
    assert_eq!(source.clients_served(), 1);
}

/// Jellyfin SIGKILLs the shim of a live split job (the client went away):
/// the finisher, every piece's ffmpeg and the origin connection go with it,
/// and the controller records the job cancelled.
#[test]
fn live_tv_split_shim_killed() {
    let _serial = one_at_a_time();
    let (c, source, dir, ff) = split_scene(LiveOpts::default());
    let mut job = launch_live(&ff, &live_hls(&source.url(), &dir, false), &dir);
    let shim = i32::try_from(job.child.id()).unwrap();
    let finisher = children_named(&[shim], "ffmpeg");
    assert_eq!(finisher.len(), 1, "one finisher under the shim: {finisher:?}");
    job.child.kill().unwrap();
    job.child.wait().unwrap();
    let killed = Instant::now();
    while processes().iter().any(|p| p.pid == finisher[0]) {
        assert!(killed.elapsed() < Duration::from_secs(5), "the finisher outlived the shim");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
    while source.clients_open() > 0 {
        assert!(killed.elapsed() < Duration::from_secs(5), "the origin connection outlived the shim");
        std::thread::sleep(Duration::from_millis(20));
    }
    let split = split_job(&c);
    assert_eq!(split["state"], "cancelled", "{split:#?}");
    assert!(split["chunks"].as_array().unwrap().iter().all(|r| r["state"] != "running"), "{split:#?}");
    eprintln!("shim killed: finisher, pieces and origin gone within {:?}", killed.elapsed());
}

/// A live job the cluster cannot split (here: without `-copyts`) runs whole on
/// one node, relaying the origin connection the shim opened to probe it.
#[test]
fn live_tv_that_cannot_be_split_runs_whole_on_the_same_connection() {
    let _serial = one_at_a_time();
    let (c, source, dir, ff) = split_scene(LiveOpts::default());
    let args: Vec<String> = live_hls(&source.url(), &dir, false).into_iter().filter(|a| a != "-copyts").collect();
    let mut job = launch_live(&ff, &args, &dir);
    let playlist = dir.join(format!("{MD5}.m3u8"));
    let stopped = job.stop();
    assert_eq!(stopped.code, Some(0), "{stopped:?}");
    assert!(std::fs::read_to_string(&playlist).unwrap().trim_end().ends_with("#EXT-X-ENDLIST"));
    let status = c.status();
    let jobs = status["jobs"].as_array().unwrap();
    assert!(jobs.iter().all(|j| j["mode"] == "whole" && j["reason"] == "split.live"), "{jobs:#?}");
    assert_eq!(source.clients_served(), 1, "the probe's connection is the job's");
    let log = std::fs::read_to_string(c.dir.path().join("shim.log")).unwrap();
    assert!(log.contains("not split (nosplit.shape: a live input is split only with -copyts"), "{log}");
}

/// Live TV to fMP4 segments (Jellyfin's HLS for clients that take them),
/// split into pieces: every fragment, decoded with the init segment, holds
/// its 3 s of frames.
#[test]
fn live_tv_split_to_fmp4_segments() {
    let _serial = one_at_a_time();
    let (c, source, dir, ff) = split_scene(LiveOpts::default());
    let mut args = jellyfin_hls(Path::new("input"), &dir, MD5, true, SEG as u32);
    let at = |a: &[String], s: &str| a.iter().position(|x| x == s).unwrap();
    let i = at(&args, "-i");
    args[i + 1] = source.url();
    let i = at(&args, "-analyzeduration");
    args[i + 1] = "3000000".into();
    let i = at(&args, "vod");
    args[i] = "event".into();
    let mut job = launch_live(&ff, &args, &dir);
    std::thread::sleep(Duration::from_secs(8));
    let stopped = job.stop();
    assert!(stopped.exited_after_q && stopped.code == Some(0), "{stopped:?}");
    let text = std::fs::read_to_string(dir.join(format!("{MD5}.m3u8"))).unwrap();
    assert!(text.contains("#EXT-X-MAP:URI=") && text.trim_end().ends_with("#EXT-X-ENDLIST"), "{text}");
    let durations = extinf_text(&text);
    let init = std::fs::read(dir.join(format!("{MD5}-1.mp4"))).unwrap();
    for (n, (name, d)) in listed(&text).iter().zip(&durations).enumerate() {
        let mut whole = init.clone();
        whole.extend(std::fs::read(dir.join(name)).unwrap());
        let joined = c.dir.path().join(format!("decode-{name}"));
        std::fs::write(&joined, whole).unwrap();
        let frames = decode_frames(&joined);
        if n + 1 < durations.len() {
            assert!((d - SEG).abs() < 0.05, "segment {n} lasts {d} s: {text}");
        }
        assert!((frames as f64 - d * 25.0).abs() <= 1.5, "segment {n}: {frames} frames in {d} s");
    }
    assert!(durations.len() >= 4, "{text}");
    assert_eq!(source.clients_served(), 1);
}

/// The 33-bit clock's period in seconds: a tuner's clock wraps to 0 every 26.5 hours.
const WRAP: f64 = (1u64 << 33) as f64 / 90_000.0;

/// A stream whose 33-bit clock wraps (a tuner's clock passing 26.5 hours, at
/// some point of one viewing in thirteen): ffmpeg's demuxer reads it on one
/// timeline that goes on past 2^33 ticks, and so do the pieces. The split job
/// publishes what direct ffmpeg does: the same segments, each 3 s and
/// decodable, whose timestamps (written in 33 bits) are the direct run's and
/// run on across the wrap; it stops cleanly with `q` and leaves nothing
/// running.
#[test]
fn live_tv_split_across_a_clock_wrap() {
    // The stream starts 65.6 s before the wrap (more than a minute: ffmpeg
    // then counts on past it, as for most wraps), 55 s of it there at once
    // as in a tuner's buffer: the wrap comes about 10 s into the run.
    let opts = LiveOpts { ts_offset: Some(WRAP - 67.0), backlog: Some(55.0), ..LiveOpts::default() };
    let (direct, cluster) = live_tv_hls(opts, false, Mode::Split { piece: 1.0 });
    let wraps = |run: &HlsRun| {
        let pts: Vec<u64> = run.first_pts.iter().map(|p| p.expect("every segment starts with a keyframe")).collect();
        // Each segment starts 3 s after the one before, modulo 2^33.
        for (i, w) in pts.windows(2).enumerate() {
            let step = w[1].wrapping_sub(w[0]) & ((1 << 33) - 1);
            assert_eq!(step, 270_000, "segment {} starts {step} ticks after segment {i}: {pts:?}", i + 1);
        }
        pts.windows(2).position(|w| w[1] < w[0])
    };
    let (wrap_direct, wrap_cluster) = (wraps(&direct), wraps(&cluster));
    eprintln!(
        "clock wrap: direct after segment {wrap_direct:?} of {}, cluster after segment {wrap_cluster:?} of {}",
        direct.first_pts.len(),
        cluster.first_pts.len()
    );
    assert!(wrap_direct.is_some() && wrap_direct == wrap_cluster, "the clock wraps at the same segment");
    let n = direct.first_pts.len().min(cluster.first_pts.len());
    assert_eq!(direct.first_pts[..n], cluster.first_pts[..n], "the segments' timestamps are the direct run's");
}

/// A stream whose clock wraps within a minute of its start: ffmpeg reads it
/// on a timeline that starts below 0 and drops the video up to 0, which
/// pieces cannot follow. The job runs whole on one node (exactly ffmpeg) and
/// publishes what the direct run does.
#[test]
fn live_tv_clock_wrapping_within_a_minute_of_the_start_runs_whole() {
    let _serial = one_at_a_time();
    // The wrap about 6 s in.
    let opts = LiveOpts { ts_offset: Some(WRAP - 6.0), ..LiveOpts::default() };
    let c = Cluster::start(2);
    let direct_source = LiveSource::start(opts.clone());
    let cluster_source = LiveSource::start(opts);
    let run_for = Duration::from_secs(15);
    let direct_url = direct_source.url();
    let direct = std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        live_hls_run(&Ffmpeg::direct(), &direct_url, dir.path(), false, run_for, &|| {})
    });
    let dir = c.dir.path().join("transcodes");
    let ff = Ffmpeg::from_command(&shim_in(&c, Mode::Split { piece: 1.0 }));
    let cluster = live_hls_run(&ff, &cluster_source.url(), &dir, false, run_for, &|| {});
    let direct = direct.join().unwrap();
    eprintln!("direct {:?}\ncluster {:?}", direct.durations, cluster.durations);
    check_hls("direct", &direct, 25.0);
    check_hls("cluster", &cluster, 25.0);
    let (n_direct, n_cluster) = (direct.durations.len() as i64, cluster.durations.len() as i64);
    assert!((n_direct - n_cluster).abs() <= 2, "direct {n_direct} segments, cluster {n_cluster}");
    let n = direct.first_pts.len().min(cluster.first_pts.len());
    assert_eq!(direct.first_pts[..n], cluster.first_pts[..n], "the segments' timestamps are the direct run's");
    let status = c.status();
    let jobs = status["jobs"].as_array().unwrap();
    assert!(jobs.iter().all(|j| j["mode"] == "whole" && j["reason"] == "split.live"), "{jobs:#?}");
    let log = std::fs::read_to_string(c.dir.path().join("shim.log")).unwrap();
    assert!(log.contains("not split (nosplit.shape: a live stream whose timestamps start below 0"), "{log}");
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
}

/// A split job over a stream whose clock jumps `by` seconds forward, against
/// the direct run: it stops cleanly with `q`, every segment decodes, and its
/// segments are the direct run's up to the one that spans the jump and on the
/// same timeline after it. ffmpeg's constant-rate output repeats the picture
/// before the jump until the frames after it (3 s segments throughout); the
/// pieces leave the jump's time without pictures, so that segment lasts the
/// jump longer, and the next few end at each piece's keyframe until the
/// playlist's time catches up with the grid.
fn check_carries_on(cluster: &HlsRun, direct: &HlsRun, by: f64) {
    assert!(cluster.exited_after_q && cluster.code == Some(0), "cluster: stopped {cluster:?}");
    assert!(cluster.playlist.trim_end().ends_with("#EXT-X-ENDLIST"), "{}", cluster.playlist);
    assert!(cluster.frames.iter().all(|&f| f > 0), "every segment decodes: {:?}", cluster.frames);
    let k = cluster.durations.iter().position(|d| *d > SEG + 0.05).expect("a segment spans the jump");
    assert!((cluster.durations[k] - SEG - by).abs() < 1.05, "segment {k} spans the jump: {:?}", cluster.durations);
    assert_eq!(cluster.durations[..k], direct.durations[..k], "the segments before the jump");
    assert_eq!(cluster.first_pts[..=k], direct.first_pts[..=k], "the segments before the jump");
    // After it every segment starts on the piece grid (1 s), and the full ones
    // where the direct run's start.
    let first = cluster.first_pts[0].unwrap();
    for (i, p) in cluster.first_pts.iter().enumerate().skip(k + 1) {
        let p = p.unwrap();
        assert_eq!((p - first) % 90_000, 0, "segment {i} starts off the grid: {:?}", cluster.first_pts);
        if (cluster.durations[i] - SEG).abs() < 0.05 {
            assert!(
                direct.first_pts.contains(&Some(p)),
                "segment {i} is not the direct run's: {:?}",
                cluster.first_pts
            );
        }
    }
    let (d, c): (f64, f64) = (direct.durations.iter().sum(), cluster.durations.iter().sum());
    assert!((d - c).abs() <= 2.0 * SEG, "direct {d} s of segments, cluster {c} s");
}

/// A stream whose clock jumps forward (a channel's stream restarting its
/// clock ahead) 6 s in: the split job carries on, as ffmpeg does.
#[test]
fn live_tv_split_across_a_forward_jump() {
    let opts = LiveOpts { jump: Some((6.0, 10.0)), ..LiveOpts::default() };
    let (direct, cluster) = live_tv_hls(opts, false, Mode::Split { piece: 1.0 });
    eprintln!("forward jump: direct {:?}\ncluster {:?}", direct.durations, cluster.durations);
}
