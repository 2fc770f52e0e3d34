//! Never fail where ffmpeg succeeds: every way a split job can fail before
//! anything of it is visible (contrib/docs/how-it-works.md, "When something fails"), injected by
//! real means into a real controller, real nodes, the real shim and real
//! ffmpeg. Each job must end as the direct ffmpeg run does (the same files,
//! decoding to the same frames, exit 0, one run's banner on stderr and none of
//! the failure's), with the `fallback.*` code in the shim's log and, once the
//! controller had accepted the job, in its status and metrics; and nothing of
//! it may be left running.
//!
//! The failures: every node's ffmpeg rejecting the chunks' command lines, a
//! node whose ffmpeg lacks the encoder it claims, the audio track failing on
//! every node, a node sending chunks that fail verification, the controller
//! refusing the split (no node has the encoder), the controller gone before
//! and after accepting the job, the finisher failing at once, rejecting the
//! joined chunks, or not starting at all. And the line itself: a finisher that
//! failed after its first byte of output is not run again.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::cluster::*;

const MD5: &str = "5a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn split_shim(c: &Cluster) -> Command {
    let mut cmd = c.shim();
    cmd.env("FFCLUSTER_MODE", "split");
    cmd
}

/// An executable `name` in the cluster's directory: `body` (shell), then the
/// real ffmpeg on the same arguments.
fn wrapper(c: &Cluster, name: &str, body: &str) -> PathBuf {
    let path = c.dir.path().join(name);
    let real = real("ffmpeg");
    std::fs::write(&path, format!("#!/bin/sh\nREAL='{}'\n{body}\nexec \"$REAL\" \"$@\"\n", real.display())).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// A node agent whose ffmpeg is `ffmpeg` (a [`wrapper`]).
fn add_node_with(c: &mut Cluster, name: &str, ffmpeg: &Path) {
    let mut cmd = isolated(Command::new(workspace_bin("ffcluster-node")));
    cmd.args(["--controller", &c.url(), "--token", &c.token, "--name", name, "--slots", "1"])
        .arg("--scratch")
        .arg(c.dir.path().join(format!("scratch-{name}")))
        .arg("--ffmpeg")
        .arg(ffmpeg)
        .env("FFCLUSTER_NODE_CONFIG", "/dev/null")
        .env("RUST_LOG", "info,ffcluster_node=debug");
    c.spawn_node(name, cmd);
}

/// A controller and `n` nodes, each running `node_ffmpeg` (a [`wrapper`]
/// body) in front of the real ffmpeg.
fn cluster_of(n: usize, node_ffmpeg: &str) -> Cluster {
    let mut c = Cluster::bare();
    c.start_controller();
    let ffmpeg = wrapper(&c, "node-ffmpeg", node_ffmpeg);
    for i in 0..n {
        add_node_with(&mut c, &format!("node{i}"), &ffmpeg);
    }
    c.wait_nodes(n, Duration::from_secs(90));
    c
}

/// Jellyfin's HLS job on a 12 s clip (3 s segments), run directly into
/// `<work>/direct`; `<work>/out` is for the run under test.
struct Job {
    input: PathBuf,
    direct: PathBuf,
    out: PathBuf,
    direct_stderr: String,
}

impl Job {
    fn new(c: &Cluster) -> Job {
        let input = c.work.join("clip.mkv");
        make_clip(&input, 12, "640x360", &[]);
        let (direct, out) = (c.work.join("direct"), c.work.join("out"));
        for d in [&direct, &out] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut job = Job { input, direct, out, direct_stderr: String::new() };
        let run = run_ok(Command::new(real("ffmpeg")).args(job.args(&job.direct)).stdin(Stdio::null()));
        job.direct_stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        job
    }

    fn args(&self, dir: &Path) -> Vec<String> {
        jellyfin_hls(&self.input, dir, MD5, false, 3)
    }

    /// The shim (`cmd`) on the job; its output.
    fn run(&self, mut cmd: Command, c: &Cluster) -> Output {
        let t = Instant::now();
        let out = cmd.args(self.args(&self.out)).stdin(Stdio::null()).output().unwrap();
        eprintln!("the job took {:?} through the shim", t.elapsed());
        eprintln!("---- shim.log\n{}", c.log("shim.log"));
        out
    }

    /// The run is the direct run: exit 0, the same files decoding to the same
    /// frames, one run's banner and none of `failure` on stderr.
    fn assert_direct(&self, out: &Output, failure: &str, c: &Cluster) {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?}\n{err}\n{}", out.status, c.all_logs());
        assert_eq!(names(&self.direct), names(&self.out), "file names differ");
        let playlist = |d: &Path| d.join(format!("{MD5}.m3u8"));
        assert_eq!(decode_frames(&playlist(&self.direct)), decode_frames(&playlist(&self.out)), "frame count");
        let banners = |s: &str| s.matches("Output #0, hls").count();
        assert_eq!(banners(&err), banners(&self.direct_stderr), "one run's stderr, as direct:\n{err}");
        assert!(!err.contains(failure), "the failure shows on stderr:\n{err}");
    }
}

/// The shim's log has `line`.
fn assert_logged(c: &Cluster, line: &str) {
    let log = c.log("shim.log");
    assert!(log.contains(line), "{line:?} is not in the shim's log:\n{log}");
}

/// The controller's jobs, newest first.
fn jobs(c: &Cluster) -> Vec<Value> {
    c.status()["jobs"].as_array().cloned().unwrap_or_default()
}

fn job_of(c: &Cluster, mode: &str) -> Value {
    jobs(c).into_iter().find(|j| j["mode"] == mode).unwrap_or_else(|| panic!("no {mode} job: {:?}", jobs(c)))
}

/// `/metrics`' value of `series` (0 when absent).
fn metric(c: &Cluster, series: &str) -> f64 {
    let text = c.metrics();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// The split job fell back for `code`, whole to one node (`whole`) or
/// locally, as the controller shows it: status and metrics.
fn assert_split_fell_back(c: &Cluster, code: &str, whole: bool) {
    let split = job_of(c, "split");
    assert_eq!(split["fallback"]["code"], code, "{split:#}");
    let next = if whole { "; the whole job goes to one node" } else { "; it runs locally" };
    assert!(split["fallback"]["detail"].as_str().unwrap().ends_with(next), "{split:#}");
    assert_eq!(metric(c, &format!("ffcluster_jobs_fallback_total{{reason=\"{code}\"}}")), 1.0);
    if whole {
        let job = job_of(c, "whole");
        assert_eq!(job["not_split"]["code"], code, "{job:#}");
        assert_eq!(metric(c, &format!("ffcluster_jobs_not_split_total{{reason=\"{code}\"}}")), 1.0);
    } else {
        assert!(jobs(c).iter().all(|j| j["mode"] != "whole"), "{:#?}", jobs(c));
    }
}

/// Processes of this cluster's jobs: whatever runs with its working
/// directory in the cluster's directory (ffmpeg, finisher, wrappers), even
/// once re-parented to init.
fn job_processes(c: &Cluster) -> Vec<(i32, String)> {
    let root = c.dir.path();
    processes()
        .into_iter()
        .filter(|p| p.cwd().is_some_and(|cwd| cwd.starts_with(root)))
        .map(|p| (p.pid, p.comm))
        .collect()
}

fn assert_nothing_left(c: &Cluster) {
    let t = Instant::now();
    loop {
        let left = job_processes(c);
        if left.is_empty() {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "still running: {left:?}\n{}", c.all_logs());
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Every node's ffmpeg rejects the chunks' command lines (as an older build
/// rejects an option the local one accepts): the first chunk fails three
/// times, the controller fails the job, and it goes whole to a node, whose
/// ffmpeg runs the job's own command line.
#[test]
fn every_node_failing_the_first_chunk_goes_whole() {
    let fail = "Unrecognized option 'enc_time_base:v'.";
    let c = cluster_of(2, &format!("case \"$*\" in *trim=end=*) echo \"{fail}\" >&2; exit 8;; esac"));
    let job = Job::new(&c);
    let out = job.run(split_shim(&c), &c);
    job.assert_direct(&out, fail, &c);
    assert_logged(&c, "split: fell back (fallback.job_failed: chunk ");
    assert_logged(&c, "; the whole job goes to one node");
    assert_split_fell_back(&c, "fallback.job_failed", true);
    assert_eq!(job_of(&c, "whole")["state"], "done");
    assert_nothing_left(&c);
}

/// A node whose ffmpeg claims an encoder it cannot open: the chunks fail,
/// the whole job fails on the node before any output, and the job runs
/// locally: split, then whole, then local, and still one run to see.
#[test]
fn a_node_lacking_the_encoder_falls_back_whole_then_locally() {
    let fail = "Unknown encoder 'libx264'";
    // The node's own speed test (testsrc2) still works.
    let c = cluster_of(1, &format!("case \"$*\" in *testsrc2*) ;; *libx264*) echo \"{fail}\" >&2; exit 1;; esac"));
    let job = Job::new(&c);
    let out = job.run(split_shim(&c), &c);
    job.assert_direct(&out, fail, &c);
    assert_logged(&c, "split: fell back (fallback.job_failed: ");
    assert_logged(&c, "local fallback: ffmpeg exited with code 1 on the node (fallback.exit)");
    assert_split_fell_back(&c, "fallback.job_failed", true);
    assert_eq!(job_of(&c, "whole")["fallback"]["code"], "fallback.exit");
    assert_eq!(metric(&c, "ffcluster_jobs_fallback_total{reason=\"fallback.exit\"}"), 1.0);
    assert_nothing_left(&c);
}

/// The audio track fails on every node (its command line is the only one
/// with `-vn`): the job goes whole.
#[test]
fn the_audio_track_failing_everywhere_goes_whole() {
    let fail = "Error initializing output stream 0:0 -- audio";
    let c = cluster_of(2, &format!("case \"$*\" in *-vn*pipe:1*) echo \"{fail}\" >&2; exit 1;; esac"));
    let job = Job::new(&c);
    let out = job.run(split_shim(&c), &c);
    job.assert_direct(&out, fail, &c);
    assert_logged(&c, "split: fell back (fallback.job_failed: the audio track failed 3 times");
    assert_split_fell_back(&c, "fallback.job_failed", true);
    assert_nothing_left(&c);
}

/// The only node sends chunks that fail verification (bytes overwritten near
/// the start): it is quarantined, no node is left for the job, which fails,
/// and with no node for the whole job either the job runs locally.
#[test]
fn chunks_failing_verification_before_the_first_segment_fall_back() {
    // Every chunk (a lone node's is one long one); nothing else on the node
    // writes MPEG-TS to stdout.
    let corrupt = "case \"$*\" in *mpegts*pipe:1*) t=$(mktemp) || exit 1; \"$REAL\" \"$@\" > \"$t\"; rc=$?; \
                    head -c 3760 \"$t\"; printf 'garbage!'; tail -c +3769 \"$t\"; rm -f \"$t\"; exit $rc;; esac";
    let c = cluster_of(1, corrupt);
    let job = Job::new(&c);
    let out = job.run(split_shim(&c), &c);
    job.assert_direct(&out, "failed verification", &c);
    assert_logged(&c, "split: fell back (fallback.job_failed: no connected node can run its chunks");
    assert_logged(&c, "(fallback.rejected)");
    let split = job_of(&c, "split");
    let chunks = split["chunks"].as_array().unwrap();
    assert!(chunks.iter().any(|r| r["error"].as_str().is_some_and(|e| e.contains("failed verification"))), "{split:#}");
    assert_eq!(split["fallback"]["code"], "fallback.job_failed", "{split:#}");
    assert_eq!(metric(&c, "ffcluster_jobs_rejected_total{mode=\"whole\"}"), 1.0);
    assert_nothing_left(&c);
}

/// No node has the encoder (its ffmpeg does not list it): the controller
/// refuses the split, then the whole job, and the job runs locally.
#[test]
fn a_refused_split_tries_whole_then_runs_locally() {
    let c = cluster_of(1, "case \"$*\" in *-encoders*) \"$REAL\" \"$@\" | grep -v libx264; exit 0;; esac");
    let job = Job::new(&c);
    let out = job.run(split_shim(&c), &c);
    job.assert_direct(&out, "declined", &c);
    assert_logged(&c, "split: fell back (fallback.rejected: the cluster declined: ");
    assert_logged(&c, "; the whole job goes to one node");
    assert_logged(&c, "(fallback.rejected)\n");
    assert_eq!(metric(&c, "ffcluster_jobs_rejected_total{mode=\"split\"}"), 1.0);
    assert_eq!(metric(&c, "ffcluster_jobs_rejected_total{mode=\"whole\"}"), 1.0);
    assert!(jobs(&c).is_empty(), "{:#?}", jobs(&c));
    assert_nothing_left(&c);
}

/// The controller dies while the shim waits for it to accept the split (it
/// is stopped, then killed with the connection open): the job runs locally.
#[test]
fn the_controller_gone_before_accepting_runs_locally() {
    let mut c = Cluster::start(1);
    let job = Job::new(&c);
    let controller = c.controller.as_ref().unwrap();
    controller.signal(Signal::SIGSTOP);
    let mut cmd = split_shim(&c);
    let child = cmd.args(job.args(&job.out)).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = child.spawn().unwrap();
    // The shim probes (tens of ms), connects, and waits for the handshake.
    std::thread::sleep(Duration::from_millis(1500));
    controller.signal(Signal::SIGKILL);
    let _ = c.controller.as_mut().unwrap().child.wait();
    let out = child.wait_with_output().unwrap();
    eprintln!("---- shim.log\n{}", c.log("shim.log"));
    job.assert_direct(&out, "ffcluster:", &c);
    assert_logged(&c, "local fallback: cannot reach the controller at ");
    assert_logged(&c, "(fallback.unreachable)");
    assert_nothing_left(&c);
}

/// The controller dies after accepting the split, before the nodes (slow to
/// start their chunks) sent anything: the job runs locally.
#[test]
fn the_controller_gone_before_any_output_runs_locally() {
    let mut c = cluster_of(2, "case \"$*\" in *pipe:1*) exec sleep 60;; esac");
    let job = Job::new(&c);
    let mut cmd = split_shim(&c);
    let child = cmd.args(job.args(&job.out)).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = child.spawn().unwrap();
    let t = Instant::now();
    while !c.log("shim.log").contains(" accepted; finisher pid ") {
        assert!(t.elapsed() < Duration::from_secs(20), "not accepted: {}", c.all_logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    c.controller.as_ref().unwrap().signal(Signal::SIGKILL);
    let _ = c.controller.as_mut().unwrap().child.wait();
    let out = child.wait_with_output().unwrap();
    eprintln!("---- shim.log\n{}", c.log("shim.log"));
    job.assert_direct(&out, "ffcluster:", &c);
    assert_logged(&c, "(controller_gone: ");
    assert_logged(&c, "(fallback.controller_gone)");
    // The nodes kill what ran for the controller that went.
    assert_nothing_left(&c);
}

/// The finisher fails at once (as on an option the local ffmpeg rejects):
/// that is what the local ffmpeg will say, so the job runs locally, where it
/// succeeds here (the wrapper fails only finishers).
#[test]
fn a_finisher_failing_at_once_runs_locally() {
    let fail = "Unrecognized option 'itsoffset_fake'.";
    let c = Cluster::start(2);
    let finisher = wrapper(&c, "finisher", &format!("case \"$*\" in */dev/fd/3*) echo \"{fail}\" >&2; exit 8;; esac"));
    let job = Job::new(&c);
    let mut cmd = split_shim(&c);
    cmd.env("FFCLUSTER_FFMPEG", &finisher);
    let out = job.run(cmd, &c);
    job.assert_direct(&out, fail, &c);
    assert_logged(&c, &format!("the finisher exited with code 8 before any output: {fail}); it runs locally"));
    assert_logged(&c, "(fallback.finisher)");
    assert_split_fell_back(&c, "fallback.finisher", false);
    assert_nothing_left(&c);
}

/// The finisher reads the joined chunks and rejects them: a whole job does
/// without them.
#[test]
fn a_finisher_rejecting_the_joined_chunks_goes_whole() {
    let fail = "/dev/fd/3: Invalid data found when processing input";
    let c = Cluster::start(2);
    let body = format!(
        "case \"$*\" in */dev/fd/3*) echo 'ffmpeg version finisher' >&2; head -c 2000 <&3 >/dev/null; \
         echo \"{fail}\" >&2; exit 1;; esac"
    );
    let finisher = wrapper(&c, "finisher", &body);
    let job = Job::new(&c);
    let mut cmd = split_shim(&c);
    cmd.env("FFCLUSTER_FFMPEG", &finisher);
    let out = job.run(cmd, &c);
    job.assert_direct(&out, "ffmpeg version finisher", &c);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(fail));
    assert_logged(
        &c,
        &format!("split: fell back (fallback.finisher: the finisher exited with code 1 before any output: {fail})"),
    );
    assert_split_fell_back(&c, "fallback.finisher", true);
    assert_nothing_left(&c);
}

/// The finisher cannot even start (its interpreter is missing): the local
/// run could not either, a node runs the job whole.
#[test]
fn a_finisher_that_cannot_start_goes_whole() {
    let c = Cluster::start(2);
    let finisher = c.dir.path().join("broken-ffmpeg");
    std::fs::write(&finisher, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&finisher, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let job = Job::new(&c);
    let mut cmd = split_shim(&c);
    cmd.env("FFCLUSTER_FFMPEG", &finisher);
    let out = job.run(cmd, &c);
    job.assert_direct(&out, "ffcluster:", &c);
    assert_logged(&c, "split: fell back (fallback.finisher: cannot start the finisher ");
    assert_split_fell_back(&c, "fallback.finisher", true);
    assert_nothing_left(&c);
}

/// The line: a finisher that wrote to stdout and then failed has shown
/// output, so the job is not run again: its bytes once, its error, its code.
#[test]
fn a_failure_after_the_first_byte_of_output_is_not_run_again() {
    let c = Cluster::start(2);
    let body = "case \"$*\" in */dev/fd/3*) head -c 2000 <&3 >/dev/null; printf 'partial'; \
                echo 'finisher: Broken pipe' >&2; exit 1;; esac";
    let finisher = wrapper(&c, "finisher", body);
    let input = c.work.join("clip.mkv");
    make_clip(&input, 12, "640x360", &[]);
    let out = split_shim(&c)
        .env("FFCLUSTER_FFMPEG", &finisher)
        .args(["-i", &input.display().to_string(), "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-c:a", "aac", "-f", "mpegts", "pipe:1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!("---- shim.log\n{}", c.log("shim.log"));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"partial");
    assert!(String::from_utf8_lossy(&out.stderr).contains("finisher: Broken pipe"));
    assert_logged(&c, ": output visible: stdout");
    assert!(!c.log("shim.log").contains("fell back"), "{}", c.log("shim.log"));
    assert!(job_of(&c, "split").get("fallback").is_none());
    assert_nothing_left(&c);
}
