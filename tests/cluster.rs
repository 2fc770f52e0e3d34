//! System tests: a real controller and two real node agents on loopback, jobs run
//! through the shim exactly as Jellyfin runs them, outputs compared with a direct
//! ffmpeg run by decoding them.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::cluster::*;

/// Runs the same Jellyfin HLS job directly and through the cluster, and compares
/// names, segment count, segment durations, frame counts and decode errors.
fn hls_matches_direct(fmp4: bool) {
    hls_matches_direct_on(&Cluster::start(2), fmp4);
}

fn hls_matches_direct_on(c: &Cluster, fmp4: bool) {
    let input = c.work.join("movie.mkv");
    make_clip(&input, 6, "640x360", &[]);
    let md5 = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let (direct, cluster) = (c.work.join("direct"), c.work.join("cluster"));
    std::fs::create_dir_all(&direct).unwrap();
    std::fs::create_dir_all(&cluster).unwrap();

    let t = Instant::now();
    run_ok(Command::new(real("ffmpeg")).args(jellyfin_hls(&input, &direct, md5, fmp4, 2)).stdin(Stdio::null()));
    let direct_time = t.elapsed();
    let t = Instant::now();
    let out = c.shim().args(jellyfin_hls(&input, &cluster, md5, fmp4, 2)).stdin(Stdio::null()).output().unwrap();
    let cluster_time = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shim failed: {stderr}\n{}", c.all_logs());
    assert!(out.stdout.is_empty(), "HLS jobs write nothing on stdout");
    eprintln!("direct {direct_time:?}, cluster {cluster_time:?}");

    // It really ran on a node, and stderr reads like a local run.
    let log = c.log("shim.log");
    assert!(log.contains("runs on node"), "not offloaded: {log}");
    assert!(stderr.contains("frame=") && stderr.contains("time="), "no progress lines: {stderr}");
    assert!(stderr.contains(&format!("{}/{md5}", cluster.display())), "stderr names the scratch dir: {stderr}");
    assert!(!stderr.contains("scratch-node"), "scratch path leaked: {stderr}");
    assert!(!stderr.contains("/api/v1/files"), "relay URL leaked: {stderr}");

    assert_eq!(names(&direct), names(&cluster), "file names differ");
    let (d, k) = (extinf(&direct.join(format!("{md5}.m3u8"))), extinf(&cluster.join(format!("{md5}.m3u8"))));
    assert_eq!(d.len(), k.len(), "segment count");
    assert!(d.len() >= 3, "expected several segments: {d:?}");
    for (i, (a, b)) in d.iter().zip(&k).enumerate() {
        assert!((a - b).abs() <= 1.0 / 24.0, "segment {i}: direct {a} s, cluster {b} s");
    }
    let frames = |dir: &Path| decode_frames(&dir.join(format!("{md5}.m3u8")));
    let (fd, fc) = (frames(&direct), frames(&cluster));
    assert_eq!(fd, fc, "frame count");
    assert_eq!(fc, 144, "6 s at 24 fps");
    // Jellyfin takes the newest segment as the current position: modification
    // times must rise with the index.
    let ext = if fmp4 { "mp4" } else { "ts" };
    let mtimes: Vec<std::time::SystemTime> = (0..k.len())
        .map(|i| std::fs::metadata(cluster.join(format!("{md5}{i}.{ext}"))).unwrap().modified().unwrap())
        .collect();
    assert!(mtimes.windows(2).all(|w| w[0] < w[1]), "segment mtimes do not rise with the index: {mtimes:?}");
    // No debris from the publisher.
    assert!(names(&cluster).iter().all(|n| !n.starts_with('.')), "{:?}", names(&cluster));

    let status = c.status();
    let job = &status["jobs"][0];
    assert_eq!(job["mode"], "whole");
    assert_eq!(job["state"], "done");
    assert_eq!(job["exit_code"], 0);
    assert!(job["node"].as_str().unwrap().starts_with("node"));
}

#[test]
fn hls_mpegts_matches_direct() {
    hls_matches_direct(false);
}

#[test]
fn hls_fmp4_matches_direct() {
    hls_matches_direct(true);
}

/// The other ffmpeg of a mixed cluster: 7.1, or 8.1 when the tests run 7.1
/// (`contrib/scripts/ensure-deps.sh` installs both).
fn other_ffmpeg() -> std::path::PathBuf {
    let root = std::env::var_os("FFCLUSTER_FFMPEG_VERSIONS_ROOT").unwrap_or_else(|| "/opt/ffcluster".into());
    let version = if ffmpeg_major() == 7 { "8.1" } else { "7.1" };
    let p = Path::new(&root).join(format!("ffmpeg-{version}/bin/ffmpeg"));
    assert!(p.is_file(), "{} is missing: contrib/scripts/ensure-deps.sh installs it", p.display());
    p
}

/// Node owners install what their distribution has: one node on the tests'
/// ffmpeg and one on another release. Both register with their own version,
/// and a Jellyfin job through the shim still matches direct ffmpeg.
#[test]
fn a_mixed_cluster_matches_direct() {
    let mut c = Cluster::bare();
    c.start_controller();
    c.add_node("node0");
    c.add_node_with("node1", &other_ffmpeg());
    c.wait_nodes(2, Duration::from_secs(90));
    let versions = |name: &str| {
        let out = run_ok(Command::new(if name == "node0" { real("ffmpeg") } else { other_ffmpeg() }).arg("-version"));
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap().to_owned()
    };
    let status = c.status();
    // What an admin checks: `ffcluster nodes` names each node's release.
    let listing = c.admin_ok(&["nodes"]);
    for n in status["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        assert_eq!(n["ffmpeg_version"].as_str(), Some(versions(name).as_str()), "{status}");
        let release = versions(name).split_whitespace().nth(2).unwrap().to_owned();
        let row = listing.lines().find(|l| l.starts_with(name)).unwrap_or_default();
        assert!(row.contains(&release), "{name} on {release}: {listing}");
    }
    hls_matches_direct_on(&c, false);
}

/// `-autorotate 0` is an option and its value up to 6.1, and an option and an
/// output file named `0` from 7.0: through the shim it must be what the real
/// ffmpeg makes of it, exit code and error text included, whole or split.
#[test]
fn autorotate_splits_as_the_real_ffmpeg_does() {
    let c = Cluster::start(2);
    let input = c.work.join("movie.mkv");
    // Long enough to split.
    make_clip(&input, 8, "320x240", &[]);
    // Jellyfin's HLS line, which the shim splits, and a plain one.
    let hls = |dir: &str| {
        let dir = c.work.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut a = jellyfin_hls(&input, &dir, "rot", false, 1);
        a.splice(0..0, ["-autorotate".to_owned(), "0".to_owned()]);
        a
    };
    let args = |out: &str| -> Vec<String> {
        ["-autorotate", "0", "-i", input.to_str().unwrap(), "-c:v", "libx264", "-c:a", "aac", "-y", out]
            .map(String::from)
            .to_vec()
    };
    let direct_hls = Command::new(real("ffmpeg")).args(hls("direct")).stdin(Stdio::null()).output().unwrap();
    for mode in ["whole", "split"] {
        let shim = c.shim().env("FFCLUSTER_MODE", mode).args(hls(mode)).stdin(Stdio::null()).output().unwrap();
        assert_eq!(shim.status.code(), direct_hls.status.code(), "{mode} HLS: {}", c.log("shim.log"));
        assert_eq!(names(&c.work.join(mode)), names(&c.work.join("direct")), "{mode} HLS");
    }
    // Split as 7.x splits it, the line has two outputs: no chunk is started
    // for a job the real ffmpeg rejects (split as 5.1 splits it, each chunk
    // failed on a node before the job fell back).
    if ffmpeg_major() >= 7 {
        let log = c.log("shim.log");
        assert!(!log.contains("split: job"), "a chunk of a job the real ffmpeg rejects: {log}");
    }
    let direct =
        Command::new(real("ffmpeg")).current_dir(&c.work).args(args("direct.mp4")).stdin(Stdio::null()).output();
    let direct = direct.unwrap();
    let last_line = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or_default().replace("shim.mp4", "direct.mp4")
    };
    let expected = if ffmpeg_major() >= 7 { 234 } else { 0 };
    assert_eq!(direct.status.code(), Some(expected), "{}", String::from_utf8_lossy(&direct.stderr));
    for mode in ["whole", "split"] {
        let _ = std::fs::remove_file(c.work.join("shim.mp4"));
        let shim = c.shim().env("FFCLUSTER_MODE", mode).args(args("shim.mp4")).stdin(Stdio::null()).output();
        let shim = shim.unwrap();
        assert_eq!(shim.status.code(), direct.status.code(), "{mode}: {}\n{}", last_line(&shim), c.log("shim.log"));
        if expected != 0 {
            assert_eq!(last_line(&shim), last_line(&direct), "{mode}");
        }
        assert_eq!(c.work.join("shim.mp4").exists(), c.work.join("direct.mp4").exists(), "{mode}");
    }
}

#[test]
fn progressive_mp4_and_stdout_stream() {
    let c = Cluster::start(2);
    let input = c.work.join("movie.mp4");
    make_clip(&input, 4, "320x240", &["-movflags", "+faststart"]);
    let enc = ["-codec:v:0", "libx264", "-preset", "superfast", "-crf", "23", "-codec:a:0", "aac", "-ac", "2"];

    // Progressive mp4 as Jellyfin's stream.mp4 writes it (CONTRACT.md §5.5).
    let out_file = c.work.join("prog.mp4");
    let mut args: Vec<String> = ["-analyzeduration", "200M", "-probesize", "1G", "-i"].map(String::from).to_vec();
    args.push(format!("file:{}", input.display()));
    args.extend(["-map_metadata", "-1", "-map_chapters", "-1", "-threads", "0"].map(String::from));
    args.extend(enc.map(String::from));
    args.extend(["-f", "mp4", "-movflags", "frag_keyframe+empty_moov+delay_moov", "-y"].map(String::from));
    args.push(out_file.display().to_string());
    let out = c.shim().args(&args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.all_logs());
    assert_eq!(decode_frames(&out_file), 96);

    // A non-fragmented mp4: the muxer rewrites its header at the end; the node
    // must carry that rewrite over.
    let plain = c.work.join("plain.mp4");
    let mut args2: Vec<String> = vec!["-i".into(), input.display().to_string()];
    args2.extend(enc.map(String::from));
    args2.extend(["-y".into(), plain.display().to_string()]);
    let out = c.shim().args(&args2).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(decode_frames(&plain), 96);

    // Standard output.
    let mut args3: Vec<String> = vec!["-i".into(), input.display().to_string()];
    args3.extend(enc.map(String::from));
    args3.extend(["-f", "mpegts", "pipe:1"].map(String::from));
    let out = c.shim().args(&args3).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ts = c.work.join("stdout.ts");
    std::fs::write(&ts, &out.stdout).unwrap();
    assert_eq!(decode_frames(&ts), 96);
    let direct = run_ok(Command::new(real("ffmpeg")).args(&args3).stdin(Stdio::null()));
    let dts = c.work.join("direct.ts");
    std::fs::write(&dts, &direct.stdout).unwrap();
    assert_eq!(decode_frames(&dts), 96);

    let log = c.log("shim.log");
    assert_eq!(log.matches("runs on node").count(), 3, "{log}");
}

/// A job that runs for a while: the input is read at real time (`-re`).
fn long_job(c: &Cluster, seconds: u32) -> (Vec<String>, std::path::PathBuf) {
    let input = c.work.join("long.mkv");
    make_clip(&input, seconds, "320x240", &[]);
    let dir = c.work.join("hls");
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = jellyfin_hls(&input, &dir, "abcdef", false, 1);
    a.insert(0, "-re".into());
    (a, dir)
}

#[test]
fn q_stops_everywhere_and_exits_zero() {
    let c = Cluster::start(2);
    let (args, dir) = long_job(&c, 30);
    let mut child = c.shim().args(&args).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let err = collect_stderr(&mut child);
    c.wait_for_file(&dir.join("abcdef1.ts"));
    assert!(!c.remote_ffmpegs().is_empty(), "the job should run on a node");
    let t = Instant::now();
    child.stdin.as_mut().unwrap().write_all(b"q\n").unwrap();
    let status = child.wait().unwrap();
    let took = t.elapsed();
    let err = err.join().unwrap();
    eprintln!("q -> exit in {took:?}");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(took < Duration::from_secs(1), "q took {took:?}");
    c.wait_no_remote_ffmpeg(Duration::from_secs(2));
    // Every published segment decodes; the playlist was written at the end.
    let segs: Vec<String> = names(&dir).into_iter().filter(|n| n.ends_with(".ts")).collect();
    assert!(segs.len() >= 2, "{segs:?}");
    for s in &segs {
        let out =
            run_ok(Command::new(real("ffmpeg")).args(["-v", "error", "-i"]).arg(dir.join(s)).args(["-f", "null", "-"]));
        assert!(out.stderr.is_empty(), "{s}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(dir.join("abcdef.m3u8").exists());
}

#[test]
fn c_pauses_and_newline_resumes_where_ffmpeg_does() {
    let c = Cluster::start(1);
    let (args, dir) = long_job(&c, 30);
    let mut child = c.shim().args(&args).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let err = collect_stderr(&mut child);
    let count = |dir: &Path| names(dir).iter().filter(|n| n.ends_with(".ts")).count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&dir) < 2 {
        assert!(Instant::now() < deadline, "no segment published: {}", c.all_logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Legacy pause (ffmpeg <= 6.1, CONTRACT.md §4.3): `c` makes ffmpeg wait for a
    // command line; nothing more is produced until the newline. Stock 7.1 and
    // 8.1 (n7.1, n8.1.2) prompt too, but their threads carry on encoding while
    // the prompt waits, and so must the job.
    let pauses = ffmpeg_major() < 7;
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"c").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let paused_at = count(&dir);
    std::thread::sleep(Duration::from_millis(2500));
    if pauses {
        assert_eq!(count(&dir), paused_at, "segments kept coming while paused");
    } else {
        assert!(count(&dir) > paused_at, "ffmpeg {} does not pause on `c`, but the job did", ffmpeg_major());
    }
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&dir) <= paused_at {
        assert!(Instant::now() < deadline, "did not resume");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.stdin.as_mut().unwrap().write_all(b"q\n").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let err = err.join().unwrap();
    assert!(err.contains("Enter command"), "ffmpeg's own prompt is relayed: {err}");
}

#[test]
fn sigkill_of_the_shim_stops_the_remote_ffmpeg() {
    let c = Cluster::start(2);
    let (args, dir) = long_job(&c, 30);
    let child = c.shim().args(&args).stdin(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut shim = Proc { child, name: "shim".into() };
    c.wait_for_file(&dir.join("abcdef0.ts"));
    assert!(!c.remote_ffmpegs().is_empty());
    shim.signal(Signal::SIGKILL);
    let _ = shim.child.wait();
    let gone = c.wait_no_remote_ffmpeg(Duration::from_secs(5));
    eprintln!("remote ffmpeg gone {gone:?} after SIGKILL of the shim");
    // Nothing half-written became visible.
    assert!(names(&dir).iter().all(|n| !n.starts_with('.')), "{:?}", names(&dir));
    let status = c.status();
    assert_eq!(status["jobs"][0]["state"], "cancelled", "{status}");
}

#[test]
fn sigterm_is_forwarded_and_exit_code_matches_ffmpeg() {
    let c = Cluster::start(1);
    let (args, dir) = long_job(&c, 30);
    let mut child = c.shim().args(&args).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let err = collect_stderr(&mut child);
    c.wait_for_file(&dir.join("abcdef0.ts"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let err = err.join().unwrap();
    // ffmpeg exits 255 after SIGTERM ("Exiting normally, received signal 15.").
    assert_eq!(status.code(), Some(255), "{err}");
    assert!(err.contains("received signal 15"), "{err}");
    c.wait_no_remote_ffmpeg(Duration::from_secs(2));
}

#[test]
fn falls_back_locally_when_the_controller_is_down() {
    let mut c = Cluster::start(0);
    c.controller = None; // dropped: stopped
    let input = c.work.join("movie.mkv");
    make_clip(&input, 2, "320x240", &[]);
    let dir = c.work.join("hls");
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    let out = c.shim().args(jellyfin_hls(&input, &dir, "fb", false, 1)).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("fallback run took {:?}", t.elapsed());
    assert_eq!(decode_frames(&dir.join("fb.m3u8")), 48);
    let log = c.log("shim.log");
    assert!(log.contains("local fallback: cannot reach the controller"), "{log}");
}

#[test]
fn falls_back_when_no_node_can_run_it_and_on_early_failure() {
    let c = Cluster::start(1);
    let input = c.work.join("movie.mkv");
    make_clip(&input, 2, "320x240", &[]);
    // An encoder no node has: the controller declines, the local ffmpeg reports it.
    let out = c
        .shim()
        .args(["-i", input.to_str().unwrap(), "-c:v", "h264_nvenc", "-y", "out.mp4"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let direct = Command::new(real("ffmpeg"))
        .current_dir(&c.work)
        .args(["-i", input.to_str().unwrap(), "-c:v", "h264_nvenc", "-y", "direct.mp4"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), direct.status.code());
    let log = c.log("shim.log");
    assert!(log.contains("no node has encoder h264_nvenc") || log.contains("h264_nvenc"), "{log}");

    // A job that fails on the node before any output: runs locally, one stderr.
    // (A filter no node has is declined up front; a bad argument to a filter
    // every node has is only found by running it.)
    let out = c
        .shim()
        .args(["-i", input.to_str().unwrap(), "-c:v", "libx264", "-vf", "scale=nosuchoption=1", "-y", "bad.mp4"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let direct = Command::new(real("ffmpeg"))
        .current_dir(&c.work)
        .args(["-i", input.to_str().unwrap(), "-c:v", "libx264", "-vf", "scale=nosuchoption=1", "-y", "bad-direct.mp4"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), direct.status.code(), "{err}");
    assert_ne!(out.status.code(), Some(0));
    let once = String::from_utf8_lossy(&direct.stderr).matches("nosuchoption").count();
    assert!(once > 0);
    assert_eq!(err.matches("nosuchoption").count(), once, "one run's error text, not two: {err}");
    assert_eq!(c.work.join("bad.mp4").exists(), c.work.join("bad-direct.mp4").exists());
    assert!(c.log("shim.log").contains("local fallback: ffmpeg exited with code"), "{}", c.log("shim.log"));
}

#[test]
fn a_dead_node_is_noticed_within_five_seconds() {
    let c = Cluster::start(2);
    // A stopped process keeps its sockets open: only the heartbeat can tell.
    c.nodes[1].signal(Signal::SIGSTOP);
    let t = Instant::now();
    c.wait_nodes(1, Duration::from_secs(5));
    let took = t.elapsed();
    eprintln!("stopped node dropped after {took:?}");
    assert!(took < Duration::from_secs(5));
    // It comes back by itself once it runs again.
    c.nodes[1].signal(Signal::SIGCONT);
    c.wait_nodes(2, Duration::from_secs(15));
}

#[test]
fn subtitle_burn_in_ships_the_subtitle_and_fonts() {
    let c = Cluster::start(1);
    let input = c.work.join("movie.mkv");
    make_clip(&input, 3, "320x240", &[]);
    let subs = c.work.join("subs dir");
    std::fs::create_dir_all(subs.join("fonts")).unwrap();
    std::fs::write(subs.join("a.srt"), "1\n00:00:00,000 --> 00:00:03,000\nHello from the cluster\n").unwrap();
    // Any font file will do for the test; libass falls back to fontconfig.
    let vf = format!(
        "subtitles=f='{}':fontsdir='{}',format=yuv420p",
        subs.join("a.srt").display(),
        subs.join("fonts").display()
    );
    let args = |out: &str| -> Vec<String> {
        vec![
            "-i".into(),
            input.display().to_string(),
            "-vf".into(),
            vf.clone(),
            "-c:v".into(),
            "libx264".into(),
            "-preset".into(),
            "veryfast".into(),
            "-an".into(),
            "-y".into(),
            out.into(),
        ]
    };
    let out = c.shim().args(args("burned.mkv")).stdin(Stdio::null()).output().unwrap();
    if !has_filter("subtitles") {
        // A build without libass: the shim fails as that ffmpeg does.
        let direct = Command::new(real("ffmpeg")).current_dir(&c.work).args(args("direct.mkv")).output().unwrap();
        let last = |o: &std::process::Output| {
            let text = String::from_utf8_lossy(&o.stderr).replace("burned.mkv", "direct.mkv");
            text.lines().last().unwrap_or_default().to_owned()
        };
        assert_ne!(direct.status.code(), Some(0));
        assert_eq!(out.status.code(), direct.status.code(), "{}", c.log("shim.log"));
        assert_eq!(last(&out), last(&direct));
        return;
    }
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.all_logs());
    assert!(c.log("shim.log").contains("runs on node"), "{}", c.log("shim.log"));
    run_ok(Command::new(real("ffmpeg")).current_dir(&c.work).args(args("direct.mkv")).stdin(Stdio::null()));
    assert_eq!(decode_frames(&c.work.join("burned.mkv")), decode_frames(&c.work.join("direct.mkv")));
    // The burned-in text is there: the frames match the direct run closely.
    let psnr = run_ok(Command::new(real("ffmpeg")).current_dir(&c.work).args([
        "-i",
        "burned.mkv",
        "-i",
        "direct.mkv",
        "-lavfi",
        "psnr",
        "-f",
        "null",
        "-",
    ]));
    let text = String::from_utf8_lossy(&psnr.stderr);
    let avg: f64 = text
        .split("average:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(|s| if s == "inf" { f64::INFINITY } else { s.parse().unwrap() })
        .unwrap_or_else(|| panic!("no PSNR in {text}"));
    assert!(avg > 45.0, "PSNR {avg}");
}

#[test]
fn seeking_reads_only_part_of_the_input() {
    let c = Cluster::start(1);
    let input = c.work.join("big.mkv");
    make_clip(&input, 60, "640x360", &[]);
    let size = std::fs::metadata(&input).unwrap().len();
    let out = c
        .shim()
        .args(["-ss", "56", "-i", input.to_str().unwrap(), "-c:v", "libx264", "-preset", "ultrafast", "-an"])
        .args(["-y", "tail.mp4"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let frames = decode_frames(&c.work.join("tail.mp4"));
    assert!((90..=100).contains(&frames), "{frames}");
    let log = c.log("shim.log");
    let served: u64 = log
        .lines()
        .filter_map(|l| l.split(" files published, ").nth(1))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("{log}"));
    eprintln!("served {served} of {size} bytes for a seek to 56 s of 60 s");
    assert!(served < size / 2, "served {served} of {size}");
}
