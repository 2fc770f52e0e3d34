//! Fault tests with real processes: a node killed or frozen mid-chunk, the
//! controller restarted mid-job, a node whose scratch disk fills up. Each ends
//! with a correct output or a clear error, and no ffmpeg of the cluster left
//! running anywhere (SIGKILL of the shim is in tests/split.rs and tests/cluster.rs).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::cluster::*;

const MD5: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn split_shim(c: &Cluster) -> Command {
    let mut cmd = c.shim();
    cmd.env("FFCLUSTER_MODE", "split");
    cmd
}

/// ffmpeg processes started for this cluster: every one (finisher, chunk,
/// whole job) runs with its working directory inside the cluster's temporary
/// directory, so this finds them even once their parent is gone and they were
/// re-parented to init.
fn cluster_ffmpegs(c: &Cluster) -> Vec<i32> {
    let root = c.dir.path();
    processes()
        .into_iter()
        .filter(|p| p.comm == "ffmpeg" && p.cwd().is_some_and(|cwd| cwd.starts_with(root)))
        .map(|p| p.pid)
        .collect()
}

/// Waits until no ffmpeg of the cluster runs; how long that took.
fn wait_no_ffmpeg(c: &Cluster, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let left = cluster_ffmpegs(c);
        if left.is_empty() {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "ffmpeg still running after {limit:?}: {left:?}\n{}", c.all_logs());
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits for `child` up to `limit`.
fn wait_child(child: &mut Child, limit: Duration, c: &Cluster) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("the shim did not end within {limit:?}\n{}", c.all_logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The job these tests disturb: Jellyfin's HLS command line for a 30 s
/// 640x360 clip (24 fps, keyframes every 2 s), run directly into
/// `<work>/direct`, and `<work>/split` for the run under test.
struct HlsJob {
    input: PathBuf,
    direct: PathBuf,
    split: PathBuf,
}

impl HlsJob {
    fn new(c: &Cluster) -> HlsJob {
        let input = c.work.join("clip.mkv");
        make_clip(&input, 30, "640x360", &[]);
        let job = HlsJob { input, direct: c.work.join("direct"), split: c.work.join("split") };
        for dir in [&job.direct, &job.split] {
            std::fs::create_dir_all(dir).unwrap();
        }
        run_ok(Command::new(real("ffmpeg")).args(job.args(&job.direct)).stdin(Stdio::null()));
        job
    }

    /// The job's arguments, writing into `dir`.
    fn args(&self, dir: &Path) -> Vec<String> {
        jellyfin_hls(&self.input, dir, MD5, false, 3)
    }
}

fn playlist(dir: &Path) -> PathBuf {
    dir.join(format!("{MD5}.m3u8"))
}

/// The job's chunk records in the status document.
fn chunks(c: &Cluster) -> Vec<Value> {
    let s = c.status();
    s["jobs"].as_array().and_then(|j| j.first()).and_then(|j| j["chunks"].as_array()).cloned().unwrap_or_default()
}

/// A running chunk attempt that is not the one the finisher is being fed (the
/// lowest chunk not yet done): index ≥ 2 and past that head. Its node's name.
fn victim(c: &Cluster) -> Option<(String, u64)> {
    let recs = chunks(c);
    let done: BTreeSet<u64> =
        recs.iter().filter(|r| r["state"] == "done").filter_map(|r| r["chunk"].as_u64()).collect();
    let head = (0..).find(|i| !done.contains(i)).unwrap();
    recs.iter()
        .filter(|r| r["state"] == "running")
        .filter_map(|r| Some((r["node"].as_str()?.to_owned(), r["chunk"].as_u64()?)))
        .find(|(_, chunk)| *chunk >= 2 && *chunk > head)
}

/// Waits until some node runs a chunk `victim` accepts, and that node's ffmpegs.
fn find_victim(c: &Cluster) -> (usize, u64, Vec<i32>) {
    let t = Instant::now();
    loop {
        if let Some((node, chunk)) = victim(c) {
            let i = c.nodes.iter().position(|n| n.name == node).expect("a node of this cluster");
            let ffmpegs = children_named(&[c.nodes[i].pid()], "ffmpeg");
            if !ffmpegs.is_empty() {
                return (i, chunk, ffmpegs);
            }
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no chunk ≥ 2 ran past the head: {}", c.all_logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The split output matches the direct run: the same file names, the same
/// decoded frame count, a complete decode.
fn assert_matches_direct(direct: &Path, split: &Path) {
    assert_eq!(names(direct), names(split), "file names differ");
    assert_eq!(decode_frames(&playlist(direct)), decode_frames(&playlist(split)), "frame count");
}

/// Every segment of the direct run is in `out`, each decoding to the same
/// frames. (A resumed job's playlist lists the segments from where it resumed,
/// as after a seek restart: the playlist is not compared.)
fn assert_segments_match_direct(direct: &Path, out: &Path) {
    let segments = |dir: &Path| names(dir).into_iter().filter(|n| n.ends_with(".ts")).collect::<Vec<_>>();
    assert_eq!(segments(direct), segments(out), "segments differ");
    for name in segments(out) {
        assert_eq!(decode_frames(&direct.join(&name)), decode_frames(&out.join(&name)), "segment {name} differs");
    }
}

/// SIGKILL of a node agent while it runs a chunk that is not being streamed:
/// its ffmpeg dies with it (PR_SET_PDEATHSIG), the controller sees the socket
/// close, the chunk runs again on another node and the output is the direct run's.
#[test]
fn a_node_killed_mid_chunk_is_rerun_elsewhere() {
    let mut c = Cluster::start(3);
    let job = HlsJob::new(&c);
    let (direct, split) = (&job.direct, &job.split);
    let t = Instant::now();
    let mut shim = split_shim(&c).args(job.args(split)).stdin(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();

    let (i, chunk, ffmpegs) = find_victim(&c);
    c.nodes[i].signal(Signal::SIGKILL);
    let killed = Instant::now();
    let _ = c.nodes[i].child.wait();
    let name = c.nodes[i].name.clone();
    eprintln!("killed {name} running chunk {chunk} (ffmpeg {ffmpegs:?}) at {:?}", t.elapsed());
    // The orphaned ffmpeg dies with its agent.
    for pid in &ffmpegs {
        while Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
        {
            assert!(killed.elapsed() < Duration::from_secs(2), "ffmpeg {pid} outlived its node agent");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let orphan_gone = killed.elapsed();

    let status = wait_child(&mut shim, Duration::from_secs(60), &c);
    let wall = t.elapsed();
    assert!(status.success(), "{status:?}\n{}", c.all_logs());
    let recs = chunks(&c);
    let failed = recs.iter().find(|r| r["chunk"] == chunk && r["node"] == name.as_str()).expect("the killed attempt");
    assert_eq!(failed["state"], "failed", "{failed}");
    let winner = recs.iter().find(|r| r["chunk"] == chunk && r["state"] == "done").expect("chunk done");
    assert_ne!(winner["node"], name.as_str(), "{winner}");
    let rerun_after =
        winner["started_unix_ms"].as_u64().unwrap().saturating_sub(failed["started_unix_ms"].as_u64().unwrap());
    assert_matches_direct(direct, split);
    let gone = wait_no_ffmpeg(&c, Duration::from_secs(5));
    eprintln!(
        "orphan ffmpeg gone {orphan_gone:?} after the kill; chunk {chunk} re-ran on {} (started {rerun_after} ms after the \
         killed attempt); job {wall:?}; nothing left {gone:?} after",
        winner["node"]
    );
}

/// A node frozen with its sockets open (agent and ffmpeg SIGSTOPped): the
/// controller drops it after its heartbeats stop, the chunk runs elsewhere and
/// the job matches the direct run; once the node runs again it learns its
/// session is gone and kills the stale ffmpeg.
#[test]
fn a_frozen_node_is_expired_and_its_ffmpeg_killed_on_resume() {
    let c = Cluster::start(3);
    let job = HlsJob::new(&c);
    let (direct, split) = (&job.direct, &job.split);
    let t = Instant::now();
    let mut shim = split_shim(&c).args(job.args(split)).stdin(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();

    let (i, chunk, ffmpegs) = find_victim(&c);
    let signal_all = |sig| {
        c.nodes[i].signal(sig);
        for pid in &ffmpegs {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), sig);
        }
    };
    signal_all(Signal::SIGSTOP);
    let frozen = Instant::now();
    let name = c.nodes[i].name.clone();
    eprintln!("froze {name} running chunk {chunk} (ffmpeg {ffmpegs:?}) at {:?}", t.elapsed());
    c.wait_nodes(2, Duration::from_secs(6));
    let expired = frozen.elapsed();

    let status = wait_child(&mut shim, Duration::from_secs(60), &c);
    let wall = t.elapsed();
    assert!(status.success(), "{status:?}\n{}", c.all_logs());
    let recs = chunks(&c);
    let winner = recs.iter().find(|r| r["chunk"] == chunk && r["state"] == "done").expect("chunk done");
    assert_ne!(winner["node"], name.as_str(), "{winner}");
    assert_matches_direct(direct, split);
    // The stopped ffmpegs are still there until the node runs again.
    assert!(ffmpegs.iter().all(|p| Path::new(&format!("/proc/{p}")).exists()));

    signal_all(Signal::SIGCONT);
    let resumed = Instant::now();
    let gone = wait_no_ffmpeg(&c, Duration::from_secs(5));
    let back = c.wait_nodes(3, Duration::from_secs(15));
    eprintln!(
        "{name} dropped {expired:?} after freezing; job {wall:?}; stale ffmpeg gone {gone:?} after SIGCONT, node back \
         {:?} after",
        resumed.elapsed().max(back)
    );
}

/// SIGKILL of the controller mid split job, and a new controller on the same
/// port later. The finisher, the real ffmpeg writing the job's files, keeps
/// running: the shim drops what the nodes were running and encodes what is
/// left itself, with the nodes' own command lines, the head chunk going on
/// from the keyframe where the joined stream stopped and the audio track
/// re-encoded and checked against what the finisher already has. The job ends
/// as a clean run would: exit 0, no resume, and every file, the playlist,
/// each segment's timestamps, frames and audio equal to direct ffmpeg's. No
/// ffmpeg is left. The nodes reconnect to the new controller by themselves
/// (with backoff), and a new job through the shim then works.
#[test]
fn a_controller_restarted_mid_split_job() {
    controller_restarted_mid_job(true);
}

/// The same for a job running whole on one node, whose output the controller
/// relays: the shim resumes it from its newest segment (deleted, then made
/// again, as Jellyfin's own seek restart does) in a new run of itself, which
/// finds no controller and runs locally. Every segment decodes to the direct
/// run's frames and none is missing.
#[test]
fn a_controller_restarted_mid_whole_job() {
    controller_restarted_mid_job(false);
}

fn controller_restarted_mid_job(split_it: bool) {
    let mut c = Cluster::start(2);
    let job = HlsJob::new(&c);
    let (direct, split) = (&job.direct, &job.split);
    let mut shim = if split_it { split_shim(&c) } else { c.shim() }
        .args(job.args(split))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = collect_stderr(&mut shim);
    // Mid-job: a segment published and ffmpeg running on the nodes.
    c.wait_for_file(&split.join(format!("{MD5}1.ts")));
    let t = Instant::now();
    while c.remote_ffmpegs().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "no chunk running");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.controller.as_ref().unwrap().signal(Signal::SIGKILL);
    let _ = c.controller.as_mut().unwrap().child.wait();
    let killed = Instant::now();
    let first_log = c.log("controller.log");
    std::fs::write(c.dir.path().join("controller-before-restart.log"), first_log).unwrap();

    let status = wait_child(&mut shim, Duration::from_secs(60), &c);
    let shim_ended = killed.elapsed();
    let err = err.join().unwrap();
    c.start_controller();
    let reconnected = c.wait_nodes(2, Duration::from_secs(20));
    let gone = wait_no_ffmpeg(&c, Duration::from_secs(5));

    assert!(status.success(), "the job did not complete: {status:?}\n{err}\n{}", c.log("shim.log"));
    let how = if split_it {
        assert!(!err.contains("ffcluster:") && !err.contains("resuming"), "{err}");
        let shim_log = c.log("shim.log");
        let line = shim_log.lines().find(|l| l.contains("finishing it here")).unwrap_or_else(|| panic!("{shim_log}"));
        let scratch = c.work.join("compare");
        std::fs::create_dir_all(&scratch).unwrap();
        let compared = support::compare::outputs(direct, split, &scratch, &format!("{MD5}.m3u8"));
        assert!(compared.diffs.is_empty(), "differs from direct: {:#?}", compared.diffs);
        format!("finished by the shim, equal to direct ({})", line.split("split: ").nth(1).unwrap_or(line))
    } else {
        let resumed_at = err
            .split("resuming at segment ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no resume reported: {err}"));
        assert_segments_match_direct(direct, split);
        // The resumed run's playlist starts where it did, as after a seek restart.
        let text = std::fs::read_to_string(playlist(split)).unwrap();
        let resumed = format!("#EXT-X-MEDIA-SEQUENCE:{resumed_at}");
        assert!(text.contains(&resumed) && text.contains("#EXT-X-ENDLIST"), "{text}");
        format!("resumed at segment {resumed_at}")
    };
    eprintln!(
        "controller killed: {how}; shim ended {shim_ended:?} later with {status:?}; \
         nodes back {reconnected:?} after the new controller; nothing running {gone:?} after"
    );

    // A new job goes through the new controller.
    let again = c.work.join("again");
    std::fs::create_dir_all(&again).unwrap();
    let out =
        if split_it { split_shim(&c) } else { c.shim() }.args(job.args(&again)).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.all_logs());
    assert_eq!(c.status()["jobs"][0]["mode"], if split_it { "split" } else { "whole" }, "{}", c.log("shim.log"));
    assert_matches_direct(direct, &again);
    wait_no_ffmpeg(&c, Duration::from_secs(5));
}

/// A node whose ffmpeg hands back broken chunks and exits 0, as a faulty build
/// or disk would: cut short on a packet boundary (`truncate`: only the frame
/// count shows it) or with bytes overwritten mid-stream (`corrupt`). The
/// controller's verification fails each such attempt, the node is quarantined,
/// the chunk runs again on the good node (which goes on where the finisher's
/// stream of a broken attempt stopped, at a keyframe: nothing is resumed), and
/// every segment is the direct run's.
fn broken_chunks(mode: &str) {
    let mut c = Cluster::bare();
    c.start_controller();
    c.add_node("good");
    let wrapper = c.dir.path().join("broken-ffmpeg");
    let damage = match mode {
        "truncate" => r#"head -c $(( s * 6 / 10 / 188 * 188 )) "$t""#,
        _ => r#"h=$(( s / 2 / 188 * 188 )); head -c "$h" "$t"; printf 'garbage!'; tail -c +$(( h + 9 )) "$t""#,
    };
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# Damages video chunks (they end at a trim=); anything else is ffmpeg.\n\
             case \"$*\" in *trim=end=*) ;; *) exec {real} \"$@\" ;; esac\n\
             t=$(mktemp) || exit 1\n{real} \"$@\" > \"$t\"; rc=$?\ns=$(stat -c %s \"$t\")\n{damage}\nrm -f \"$t\"\nexit $rc\n",
            real = real("ffmpeg").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = isolated(Command::new(workspace_bin("ffcluster-node")));
    cmd.args(["--controller", &c.url(), "--token", &c.token, "--name", "broken", "--slots", "1"])
        .arg("--scratch")
        .arg(c.dir.path().join("scratch-broken"))
        .arg("--ffmpeg")
        .arg(&wrapper)
        .env("FFCLUSTER_NODE_CONFIG", "/dev/null")
        .env("RUST_LOG", "info");
    c.spawn_node("broken", cmd);
    c.wait_nodes(2, Duration::from_secs(30));

    let job = HlsJob::new(&c);
    let (direct, split) = (&job.direct, &job.split);
    let t = Instant::now();
    let out = split_shim(&c).args(job.args(split)).stdin(Stdio::null()).output().unwrap();
    let wall = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{err}\n{}", out.status, c.all_logs());
    assert_segments_match_direct(direct, split);
    // Chunk records of every job (a resumed job is a second one).
    let records: Vec<Value> = c.status()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|j| j["chunks"].as_array().cloned().unwrap_or_default())
        .collect();
    let caught: Vec<&Value> =
        records.iter().filter(|r| r["error"].as_str().is_some_and(|e| e.contains("failed verification"))).collect();
    assert!(!caught.is_empty(), "no attempt failed verification: {records:?}\n{}", c.log("controller.log"));
    assert!(caught.iter().all(|r| r["node"] == "broken"), "{caught:?}");
    let status = c.status();
    let broken = status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "broken").unwrap().clone();
    assert_eq!(broken["state"], "quarantined", "{broken}");
    let resumed = err.contains("resuming at segment");
    assert!(!resumed, "{err}");
    let gone = wait_no_ffmpeg(&c, Duration::from_secs(5));
    eprintln!(
        "{mode}: {} attempt(s) caught ({}); resumed: {resumed}; job {wall:?}; nothing left {gone:?} after",
        caught.len(),
        caught[0]["error"]
    );
}

#[test]
fn a_node_sending_truncated_chunks_is_caught_and_rerun() {
    broken_chunks("truncate");
}

#[test]
fn a_node_sending_corrupt_chunks_is_caught_and_rerun() {
    broken_chunks("corrupt");
}

/// A mounted tmpfs, unmounted on drop (lazily: a node may still have its
/// working directory there).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir));
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A node whose scratch disk fills up while its ffmpeg writes a progressive
/// mp4: no truncated file may be published as complete. The job ends with a
/// clear error or runs locally and produces the direct run's output.
#[test]
fn a_full_scratch_disk_publishes_nothing_truncated() {
    let mut c = Cluster::bare();
    c.start_controller();
    let scratch = c.dir.path().join("scratch-tiny");
    let _mount = Tmpfs::mount(&scratch, "1m");
    let mut cmd = isolated(Command::new(workspace_bin("ffcluster-node")));
    cmd.args(["--controller", &c.url(), "--token", &c.token, "--name", "tiny", "--slots", "1"])
        .arg("--scratch")
        .arg(&scratch)
        .arg("--ffmpeg")
        .arg(real("ffmpeg"))
        .env("FFCLUSTER_NODE_CONFIG", "/dev/null")
        .env("RUST_LOG", "info");
    c.spawn_node("tiny", cmd);
    c.wait_nodes(1, Duration::from_secs(30));

    let input = c.work.join("movie.mp4");
    make_clip(&input, 8, "640x360", &[]);
    // About 4 MB at 4 Mb/s: several times what the scratch disk holds.
    let args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = vec!["-i".into(), format!("file:{}", input.display())];
        a.extend(
            ["-codec:v:0", "libx264", "-preset", "ultrafast", "-b:v", "4M", "-codec:a:0", "aac"].map(String::from),
        );
        a.extend(["-f", "mp4", "-movflags", "frag_keyframe+empty_moov+delay_moov", "-y"].map(String::from));
        a.push(out.display().to_string());
        a
    };
    let direct = c.work.join("direct.mp4");
    run_ok(Command::new(real("ffmpeg")).args(args(&direct)).stdin(Stdio::null()));
    let out_file = c.work.join("out.mp4");
    let t = Instant::now();
    let out = c.shim().args(args(&out_file)).stdin(Stdio::null()).output().unwrap();
    let wall = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    let log = c.log("shim.log");
    assert!(log.contains("runs on node"), "the job did not go to the node: {log}");
    if out.status.success() {
        assert_eq!(decode_frames(&out_file), decode_frames(&direct), "a truncated output published as complete");
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("No space left on device"), "no clear error: {err}");
        assert!(err.contains("ffcluster-node: the node's scratch disk is full"), "no clear error: {err}");
    }
    let gone = wait_no_ffmpeg(&c, Duration::from_secs(5));
    eprintln!("full scratch: {:?} in {wall:?}; nothing running {gone:?} after; stderr:\n{err}", out.status);
}

/// What a run of the HLS job left that a player or Jellyfin could tell apart:
/// the file names, the playlist, every packet's stream, timestamps and flags
/// (ffprobe over the playlist), and the decoded audio samples. Decoding the
/// playlist must give no error.
#[derive(Debug, PartialEq)]
struct Trace {
    names: Vec<String>,
    playlist: String,
    packets: Vec<String>,
    audio_samples: u64,
}

impl Trace {
    fn of(dir: &Path) -> Trace {
        let list = playlist(dir);
        decode_frames(&list);
        let out = run_ok(
            Command::new(real("ffprobe"))
                .args(["-v", "error", "-show_entries", "packet=stream_index,pts,dts,duration,flags"])
                .args(["-of", "csv=p=0"])
                .arg(&list),
        );
        let packets = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
        let audio = run_ok(
            Command::new(real("ffmpeg"))
                .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
                .arg(&list)
                .args(["-map", "0:a:0", "-f", "s16le", "-ac", "1", "-"]),
        );
        assert!(audio.stderr.is_empty(), "audio decode errors: {}", String::from_utf8_lossy(&audio.stderr));
        Trace {
            names: names(dir),
            playlist: std::fs::read_to_string(&list).unwrap(),
            packets,
            audio_samples: audio.stdout.len() as u64 / 2,
        }
    }

    /// Panics with the first difference from `want`.
    fn assert_eq(&self, want: &Trace, what: &str) {
        assert_eq!(self.names, want.names, "{what}: file names");
        assert_eq!(self.playlist, want.playlist, "{what}: playlist");
        assert_eq!(self.audio_samples, want.audio_samples, "{what}: audio samples");
        assert_eq!(self.packets.len(), want.packets.len(), "{what}: packet count");
        if let Some(i) = (0..want.packets.len()).find(|&i| self.packets[i] != want.packets[i]) {
            panic!("{what}: packet {i} is {} where the direct run has {}", self.packets[i], want.packets[i]);
        }
    }
}

/// splitmix64, for reproducible fault schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The MPEG-TS packets that start a video PES: (pts, dts, keyframe) of each
/// frame of a stream, from ffprobe.
fn frame_stamps(file: &Path) -> Vec<String> {
    let out = run_ok(
        Command::new(real("ffprobe"))
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts,dts,flags"])
            .args(["-of", "csv=p=0"])
            .arg(file),
    );
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// The assembler on real encodes: two encodes of one chunk at different
/// qualities (different bytes, the same frames and keyframes, where two
/// nodes' encodes differ at most in their bytes), the one being streamed cut off at random bytes (a node
/// killed), frozen and overtaken, or beaten by the other: the joined stream has
/// every frame of a clean encode once, with its timestamps and keyframe flags,
/// and decodes without an error.
#[test]
fn a_chunk_handed_over_mid_stream_on_real_encodes_keeps_every_frame() {
    use ffcluster::split::assemble::Assembler;
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mkv");
    make_clip(&clip, 12, "640x360", &[]);
    let encode = |crf: &str| {
        let out = dir.path().join(format!("crf{crf}.ts"));
        run_ok(
            Command::new(real("ffmpeg"))
                .args(["-nostdin", "-v", "error", "-y", "-copyts", "-i"])
                .arg(&clip)
                .args(["-map", "0:v", "-c:v", "libx264", "-preset", "veryfast", "-crf", crf])
                .args(["-x264opts:0", "subme=0:me_range=16:rc_lookahead=10:me=hex:open_gop=0"])
                .args(["-force_key_frames:0", "expr:gte(t,n_forced*2)", "-sc_threshold:v:0", "0", "-an"])
                .args(["-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0", "-flush_packets", "1"])
                .arg(&out),
        );
        (std::fs::read(&out).unwrap(), out)
    };
    let ((a, a_file), (b, _)) = (encode("23"), encode("30"));
    let clean = frame_stamps(&a_file);
    assert!(clean.iter().filter(|l| l.contains('K')).count() >= 6, "{clean:?}");
    let mut rng = Rng(0xfa11_0000);
    let mut handovers = 0;
    for run in 0..18 {
        let mut asm = Assembler::new();
        let mut out = Vec::new();
        let (first, second) = if run % 2 == 0 { (&a, &b) } else { (&b, &a) };
        asm.started(0, 1, true);
        // The first attempt streams up to a random byte in random pieces.
        let cut = rng.below(first.len() as u64) as usize;
        let mut at = 0;
        while at < cut {
            let n = (1 + rng.below(20_000) as usize).min(cut - at);
            asm.data(0, 1, at as u64, &first[at..at + n]).unwrap();
            at += n;
            out.extend(asm.take());
        }
        // Then it is killed (its node gone), or frozen while a re-issue
        // overtakes and finishes it, or it loses a race it was still running.
        asm.started(0, 2, true);
        let how = run % 3;
        if how == 0 {
            asm.failed(0, 1).unwrap();
        }
        let mut at2 = 0;
        while at2 < second.len() {
            let n = (1 + rng.below(30_000) as usize).min(second.len() - at2);
            asm.data(0, 2, at2 as u64, &second[at2..at2 + n]).unwrap();
            at2 += n;
            out.extend(asm.take());
            if how == 2 && at < first.len() {
                let n = (1 + rng.below(10_000) as usize).min(first.len() - at);
                asm.data(0, 1, at as u64, &first[at..at + n]).unwrap();
                at += n;
                out.extend(asm.take());
            }
        }
        asm.done(0, 2, second.len() as u64).unwrap();
        asm.failed(0, 1).unwrap();
        out.extend(asm.take());
        assert!(asm.complete());
        handovers += asm.handovers();
        let joined = dir.path().join(format!("joined{run}.ts"));
        std::fs::write(&joined, &out).unwrap();
        assert_eq!(frame_stamps(&joined), clean, "run {run}: cut at {cut} of {}", first.len());
        decode_frames(&joined);
    }
    eprintln!("18 joins of encodes of {} and {} bytes, {handovers} handovers mid-chunk", a.len(), b.len());
    assert!(handovers >= 9, "{handovers}");
}

/// What the chaos test does to a node.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL of the node agent (its ffmpeg dies with it); a new node starts
    /// in its place a moment later.
    Kill,
    /// The agent and its ffmpegs SIGSTOPped, as a frozen machine; SIGCONT a few
    /// seconds later.
    Freeze,
    /// Only its chunk's ffmpeg SIGSTOPped, as a node busy with something else:
    /// the chunk runs late, is re-issued, and the re-issue wins.
    Stall,
}

/// One of the cluster's three node places: which of `Cluster::nodes` fills it.
struct Place {
    node: usize,
    /// Frozen until then (SIGCONT due), with the processes to wake.
    frozen: Option<(Instant, Vec<i32>)>,
    /// Killed; a new node starts at that moment.
    restart: Option<Instant>,
}

/// Nodes SIGKILLed, frozen or made busy at 20 seeded pseudo-random moments of
/// split HLS jobs (Jellyfin's command line, three nodes): each job's output is
/// the direct run's (the same files, playlist, packet timestamps and audio
/// samples, no decode error), no job was resumed or lost, and nothing is left
/// running. `FFCLUSTER_FAULT_SEED` picks another schedule.
#[test]
fn failover_at_random_moments_leaves_no_trace() {
    let seed = std::env::var("FFCLUSTER_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut rng = Rng(seed);
    let mut c = Cluster::start(3);
    let job = HlsJob::new(&c);
    let want = Trace::of(&job.direct);
    let mut places: Vec<Place> = (0..3).map(|node| Place { node, frozen: None, restart: None }).collect();
    let mut restarts = 0;
    let (mut faults, mut mid_stream, mut on_chunks, mut handovers) = (0, 0, 0, 0);
    let mut runs = 0;
    let started = Instant::now();
    // The first run is clean: its length sets when the faults fall.
    let mut span = Duration::from_secs(3);
    while faults < 20 {
        let dir = c.work.join(format!("run{runs}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut shim = split_shim(&c)
            .args(job.args(&dir))
            .env("FFCLUSTER_LOG", c.dir.path().join(format!("shim{runs}.log")))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = collect_stderr(&mut shim);
        let t = Instant::now();
        // Each fault: when, and whether it waits (up to 3 s) for an attempt
        // being streamed to hit, so that half of them hit one.
        let mut moments: Vec<(Duration, bool)> = if runs == 0 {
            Vec::new()
        } else {
            (0..1 + rng.below(3)).map(|_| (span.mul_f64(rng.unit()), rng.below(2) == 0)).collect()
        };
        moments.sort_by_key(|m| std::cmp::Reverse(m.0));
        let (mut log, mut losses) = (Vec::new(), 0);
        let status = loop {
            if let Some(s) = shim.try_wait().unwrap() {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(90), "run {runs} did not end\n{}", c.all_logs());
            tend(&mut c, &mut places, &mut restarts);
            if let Some(&(at, wait)) = moments.last()
                && t.elapsed() >= at
            {
                let kind = [Fault::Kill, Fault::Kill, Fault::Freeze, Fault::Stall][rng.below(4) as usize];
                // Two node losses per job at most: three under the audio track
                // (or one chunk) fail the job, as they should.
                let kind = if kind != Fault::Stall && losses >= 2 { Fault::Stall } else { kind };
                let streamed_only = wait && t.elapsed() < at + Duration::from_secs(3);
                if let Some(what) = inject(&c, &mut places, kind, streamed_only, &mut rng) {
                    moments.pop();
                    losses += usize::from(what.kind != Fault::Stall);
                    faults += 1;
                    on_chunks += usize::from(what.on_chunk);
                    mid_stream += usize::from(what.streamed);
                    log.push(format!("{:?} at {:?}: {}", what.kind, t.elapsed(), what.text));
                } else if !streamed_only {
                    moments.pop();
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let wall = t.elapsed();
        let err = err.join().unwrap();
        let shim_log = c.log(&format!("shim{runs}.log"));
        assert!(status.success(), "run {runs}: {status:?}\n{log:?}\n{err}\n{}", c.all_logs());
        assert!(!err.contains("ffcluster:"), "run {runs} was resumed or lost: {err}\n{log:?}");
        assert!(shim_log.contains("split: job") && !shim_log.contains(" lost: "), "run {runs}: {shim_log}");
        Trace::of(&dir).assert_eq(&want, &format!("run {runs} ({log:?})"));
        let handed = shim_log
            .split(" handed over at a keyframe")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        handovers += handed;
        eprintln!("run {runs}: {wall:?}, {handed} handover(s) mid-chunk; {log:?}");
        if runs == 0 {
            span = wall.mul_f64(1.2);
        }
        runs += 1;
        // Every place filled and awake again before the next job.
        let t = Instant::now();
        while places.iter().any(|p| p.frozen.is_some() || p.restart.is_some()) {
            tend(&mut c, &mut places, &mut restarts);
            std::thread::sleep(Duration::from_millis(20));
        }
        c.wait_nodes(3, Duration::from_secs(60));
        while !c.remote_ffmpegs().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(30), "ffmpeg left running after run {runs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Every job is one in the controller's history: none was run again.
    let jobs = c.status()["jobs"].as_array().map_or(0, Vec::len);
    assert_eq!(jobs, runs, "a job was run again");
    let gone = wait_no_ffmpeg(&c, Duration::from_secs(5));
    eprintln!(
        "{faults} faults over {} faulty runs in {:?}: {on_chunks} on a node running a chunk, {mid_stream} on the \
         attempt being streamed; {handovers} handovers mid-chunk; {restarts} nodes restarted; {jobs} jobs in the \
         history, none resumed or lost; nothing left {gone:?} after",
        runs - 1,
        started.elapsed()
    );
}

/// What a fault hit.
struct Hit {
    /// What was done (a kill or freeze of the last working node becomes a stall).
    kind: Fault,
    text: String,
    /// The node ran a chunk attempt.
    on_chunk: bool,
    /// That attempt was the one the finisher is fed from: the earliest chunk
    /// not done, with bytes already relayed.
    streamed: bool,
}

/// Wakes frozen nodes and starts replacements for killed ones when due.
fn tend(c: &mut Cluster, places: &mut [Place], restarts: &mut usize) {
    let now = Instant::now();
    for p in places.iter_mut() {
        if let Some((at, pids)) = &p.frozen
            && now >= *at
        {
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGCONT);
            }
            p.frozen = None;
        }
        if p.restart.is_some_and(|at| now >= at) {
            *restarts += 1;
            c.add_node(&format!("node-r{restarts}"));
            p.node = c.nodes.len() - 1;
            p.restart = None;
        }
    }
}

/// Does `kind` to a node: with two chances in three the one whose attempt is
/// being streamed (else the one running the earliest chunk not done), else
/// any; only the first with `streamed_only`. At least one node is left running.
fn inject(c: &Cluster, places: &mut [Place], kind: Fault, streamed_only: bool, rng: &mut Rng) -> Option<Hit> {
    let recs = chunks(c);
    let done: BTreeSet<u64> =
        recs.iter().filter(|r| r["state"] == "done").filter_map(|r| r["chunk"].as_u64()).collect();
    let head = (0..).find(|i| !done.contains(i)).unwrap();
    let failures = |chunk: u64| recs.iter().filter(|r| r["chunk"] == chunk && r["state"] == "failed").count();
    let running = |name: &str| {
        recs.iter()
            .find(|r| r["state"] == "running" && r["node"] == name)
            .and_then(|r| Some((r["chunk"].as_u64()?, r["bytes"].as_u64().unwrap_or(0))))
    };
    let healthy: Vec<usize> =
        (0..places.len()).filter(|&i| places[i].frozen.is_none() && places[i].restart.is_none()).collect();
    // A chunk that failed twice would fail the job on a third failure (a
    // cluster that loses three nodes under one chunk): leave it be.
    let fair: Vec<usize> = healthy
        .iter()
        .copied()
        .filter(|&i| running(&c.nodes[places[i].node].name).is_none_or(|(chunk, _)| failures(chunk) < 2))
        .collect();
    let on_head = |i: &usize, streamed: bool| {
        running(&c.nodes[places[*i].node].name).is_some_and(|(chunk, bytes)| chunk == head && (bytes > 0 || !streamed))
    };
    let streamed: Vec<usize> = fair.iter().copied().filter(|i| on_head(i, true)).collect();
    let head_ones: Vec<usize> = fair.iter().copied().filter(|i| on_head(i, false)).collect();
    let pool = match rng.below(3) {
        _ if streamed_only => streamed,
        0 => fair,
        _ if !streamed.is_empty() => streamed,
        _ if !head_ones.is_empty() => head_ones,
        _ => fair,
    };
    let i = *pool.get(rng.below(pool.len() as u64) as usize)?;
    // Killing or freezing the last working node would stall the job.
    let kind = if healthy.len() < 2 && kind != Fault::Stall { Fault::Stall } else { kind };
    let node = &c.nodes[places[i].node];
    let at = running(&node.name);
    let ffmpegs: Vec<i32> = processes()
        .into_iter()
        .filter(|p| p.comm == "ffmpeg" && p.ppid == node.pid())
        .filter(|p| kind != Fault::Stall || p.cmdline().contains("\0-an\0"))
        .map(|p| p.pid)
        .collect();
    match kind {
        Fault::Kill => {
            node.signal(Signal::SIGKILL);
            places[i].restart = Some(Instant::now() + Duration::from_millis(300 + rng.below(1500)));
        }
        Fault::Freeze => {
            node.signal(Signal::SIGSTOP);
            for pid in &ffmpegs {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGSTOP);
            }
            let mut wake = ffmpegs.clone();
            wake.push(node.pid());
            places[i].frozen = Some((Instant::now() + Duration::from_millis(3500 + rng.below(2500)), wake));
        }
        Fault::Stall => {
            if ffmpegs.is_empty() {
                return None;
            }
            for pid in &ffmpegs {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGSTOP);
            }
            // The node kills it once the re-issue wins; else it goes on then.
            places[i].frozen = Some((Instant::now() + Duration::from_millis(4000 + rng.below(3000)), ffmpegs.clone()));
        }
    }
    let streamed = at.is_some_and(|(chunk, bytes)| chunk == head && bytes > 0);
    Some(Hit { kind, text: format!("{} on chunk {at:?} (head {head})", node.name), on_chunk: at.is_some(), streamed })
}
