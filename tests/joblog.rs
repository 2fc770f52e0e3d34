//! System tests of operating the cluster like a product: each job's log
//! (`GET /api/v1/jobs/{id}/log`, `ffcluster log`) and `ffcluster bench
//! cluster`, against a real controller and real node agents on loopback
//! running real ffmpeg through the shim.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ffcluster::controller::http_client;
use ffcluster::tls::Trust;
use serde_json::Value;
use support::cluster::*;

fn newest_job(c: &Cluster) -> Value {
    c.status()["jobs"][0].clone()
}

#[test]
fn whole_and_split_jobs_leave_logs_that_read_like_ffmpeg() {
    let c = Cluster::start(2);

    // A whole job, followed while it runs: `log --follow` prints as it goes
    // and returns when the job ends.
    let clip = c.work.join("clip.mp4");
    make_clip(&clip, 8, "640x360", &[]);
    let out_file = c.work.join("whole.mp4");
    let whole_args: Vec<String> = ["-i", &clip.display().to_string(), "-c:v", "libx264", "-preset", "veryfast"]
        .iter()
        .map(|s| s.to_string())
        .chain(["-c:a".into(), "aac".into(), "-y".into(), out_file.display().to_string()])
        .collect();
    let mut shim = c.shim().args(&whole_args).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let shim_err = collect_stderr(&mut shim);
    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        let j = newest_job(&c);
        if !j.is_null() {
            break j;
        }
        assert!(Instant::now() < deadline, "the whole job never reached the controller: {}", c.all_logs());
        std::thread::sleep(Duration::from_millis(20));
    };
    let id = job["id"].as_u64().unwrap().to_string();
    let followed = c.admin_ok(&["log", "--follow", &id]);
    assert!(shim.wait().unwrap().success(), "{}", shim_err.join().unwrap());
    let job = newest_job(&c);
    assert_eq!((job["mode"].as_str(), job["state"].as_str()), (Some("whole"), Some("done")), "{job}");
    let node = job["node"].as_str().unwrap();

    let log = c.admin_ok(&["log", &id]);
    eprintln!("{log}");
    let prefix = format!("[ffcluster @ job {id}]");
    for want in [
        format!("ffcluster whole job {id} started on "),
        "Command line:\nffmpeg -i ".to_owned(),
        format!("{}", clip.display()),
        format!("{prefix} the shim's reason: "),
        format!("whole job placed on {node}\n"),
        // ffmpeg's own lines, as the node's ffmpeg printed them (paths as the shim gave them).
        format!("Input #0, mov,mp4,m4a,3gp,3g2,mj2, from '{}':\n", clip.display()),
        "Stream mapping:\n".to_owned(),
        format!("Output #0, mp4, to '{}':\n", out_file.display()),
        "[libx264 @ ".to_owned(),
        "job done: ffmpeg exited with code 0 after ".to_owned(),
    ] {
        assert!(log.contains(&want), "{want:?} is not in the log:\n{log}");
    }
    let progress: Vec<&str> = log.lines().filter(|l| l.starts_with("frame=")).collect();
    assert_eq!(progress.len(), 1, "progress lines overwrite each other: {progress:?}\n{log}");
    assert!(log.lines().last().unwrap().starts_with(&prefix), "{log}");
    // Following printed the same lines (and maybe progress lines since overwritten).
    for line in log.lines().filter(|l| !l.starts_with("frame=")) {
        assert!(followed.contains(line), "{line:?} not followed:\n{followed}");
    }

    // A split job: its chunks' placement, each attempt's stderr labelled with
    // its chunk and node.
    let input = c.work.join("film.mkv");
    make_clip(&input, 12, "640x360", &[]);
    let hls = c.work.join("film");
    std::fs::create_dir_all(&hls).unwrap();
    let split_args = jellyfin_hls(&input, &hls, "5f4dcc3b5aa765d61d8327deb882cf99", false, 2);
    let out = c.shim().env("FFCLUSTER_MODE", "split").args(&split_args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.all_logs());
    let job = newest_job(&c);
    assert_eq!((job["mode"].as_str(), job["state"].as_str()), (Some("split"), Some("done")), "{job}");
    let id = job["id"].as_u64().unwrap().to_string();
    let log = c.admin_ok(&["log", &id]);
    let prefix = format!("[ffcluster @ job {id}]");
    for want in [
        format!("ffcluster split job {id} started on "),
        format!("Command line:\nffmpeg -analyzeduration 200M -probesize 1G -i file:{}", input.display()),
        format!("{prefix} +"),
        "split job accepted: 2 capable nodes connected".to_owned(),
        "chunk 0 (".to_owned(),
        // A chunk's ffmpeg writes MPEG-TS to the shim.
        "Output #0, mpegts, to 'pipe:1':\n".to_owned(),
        "Stream mapping:\n".to_owned(),
        "job done: ffmpeg exited with code 0 after ".to_owned(),
    ] {
        assert!(log.contains(&want), "{want:?} is not in the log:\n{log}");
    }
    let records = job["chunks"].as_array().unwrap();
    for r in records.iter().filter(|r| r["state"] == "done") {
        let (chunk, node, attempt) = (&r["chunk"], r["node"].as_str().unwrap(), &r["attempt"]);
        let started = format!("chunk {chunk} (");
        let line = log
            .lines()
            .find(|l| l.contains(&started) && l.contains(&format!(" on {node} (attempt {attempt}): done after ")))
            .unwrap_or_else(|| panic!("no line for chunk {chunk} done on {node}:\n{log}"));
        assert!(line.starts_with(&prefix), "{line}");
        let stderr_header = format!(" on {node} (attempt {attempt}): ffmpeg's stderr, ");
        assert!(log.contains(&stderr_header), "{stderr_header:?} is not in the log:\n{log}");
    }
    for node in job["nodes"].as_array().unwrap() {
        assert!(log.contains(&format!(" on {}: started (attempt ", node.as_str().unwrap())), "{node} in\n{log}");
    }

    // Following a finished job prints its log and returns.
    assert_eq!(c.admin_ok(&["log", "-f", &id]), log);

    // The route needs the token, and says when there is no such log.
    let url = format!("{}/api/v1/jobs/{id}/log", c.url());
    assert_eq!(http_client::get(&url, &[], &Trust::default()).unwrap().status, 401);
    let auth = format!("Bearer {}", c.token);
    let r = http_client::get(&url, &[("Authorization", &auth)], &Trust::default()).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-ffcluster-job-state"), Some("done"));
    let missing = c.admin(&["log", "999999"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no log for job 999999"), "{missing:?}");
}

/// Polls the status document until the newest job satisfies `done`.
fn wait_newest(c: &Cluster, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = newest_job(c);
        if done(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "{what}: {j}\n{}", c.all_logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of one series (full name with labels) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A job the shim would split but cannot says why in every place an admin
/// looks: the status document, `ffcluster jobs`, `ffcluster status`, the
/// job's log and `/metrics`; so do a job that failed on its node before any
/// output and that the shim then ran locally, and a run resuming a lost job.
#[test]
fn why_a_job_was_not_split_or_fell_back_is_shown_everywhere() {
    let c = Cluster::start(2);
    let clip = c.work.join("clip.mp4");
    make_clip(&clip, 8, "320x240", &[]);
    let input = clip.display().to_string();

    // `-t` is a time limit the split planner refuses: the job goes whole.
    let args = ["-i", &input, "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-y", "short.mp4"];
    let out = c.shim().env("FFCLUSTER_MODE", "split").args(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.all_logs());
    let (code, detail) = ("nosplit.option", "option -t is not supported when splitting");
    let shim_log = c.log("shim.log");
    let logged = format!("split: not split ({code}: {detail}); the whole job goes to one node");
    assert!(shim_log.contains(&logged), "{shim_log}");

    let job = newest_job(&c);
    assert_eq!((job["mode"].as_str(), job["state"].as_str()), (Some("whole"), Some("done")), "{job}");
    assert_eq!(job["reason"], "split.progressive", "{job}");
    assert_eq!(job["not_split"], serde_json::json!({"code": code, "detail": detail}), "{job}");
    assert!(job.get("fallback").is_none() && job.get("resumed").is_none(), "{job}");
    let id = job["id"].as_u64().unwrap().to_string();

    for cmd in ["jobs", "status"] {
        let table = c.admin_ok(&[cmd]);
        eprintln!("ffcluster {cmd}:\n{table}");
        assert!(table.contains("  REASON  "), "{table}");
        let row = table.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("{table}"));
        assert!(row.contains(&format!("  {code}  ")), "{row}");
        assert!(row.ends_with(&format!("  [not split: {detail}]")), "{row}");
    }
    let log = c.admin_ok(&["log", &id]);
    let line = format!("[ffcluster @ job {id}] not split: {code}: {detail}\n");
    assert!(log.contains(&line), "{line:?} is not in the log:\n{log}");
    let metrics = c.metrics();
    assert_eq!(
        sample(&metrics, &format!("ffcluster_jobs_not_split_total{{reason=\"{code}\"}}")),
        Some(1.0),
        "{metrics}"
    );

    // A whole job (`FFCLUSTER_MODE=whole`, which is a reason not to split too)
    // whose ffmpeg fails on the node before any output: the shim runs it
    // locally, and tells the controller so.
    let bad = ["-i", &input, "-c:v", "libx264", "-vf", "scale=nosuchoption=1", "-y", "bad.mp4"];
    let out = c.shim().args(bad).stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "the local run fails as the remote one did");
    let job = wait_newest(&c, "no fallback recorded", |j| !j["fallback"].is_null());
    assert_eq!(job["not_split"]["code"], "nosplit.mode", "{job}");
    assert_eq!(job["fallback"]["code"], "fallback.exit", "{job}");
    let detail = job["fallback"]["detail"].as_str().unwrap();
    assert!(detail.starts_with("ffmpeg exited with code ") && detail.ends_with(" on the node"), "{job}");
    let id = job["id"].as_u64().unwrap().to_string();
    let jobs = c.admin_ok(&["jobs"]);
    let row = jobs.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("{jobs}"));
    assert!(row.contains("  nosplit.mode,fallback.exit  "), "{row}");
    assert!(row.ends_with(&format!("  [fell back: {detail}]")), "{row}");
    let log = c.admin_ok(&["log", &id]);
    eprintln!("{log}");
    let line = format!("s fell back: the shim runs the job locally instead: fallback.exit: {detail}\n");
    assert!(log.contains(&format!("[ffcluster @ job {id}] not split: nosplit.mode: ")), "{log}");
    assert!(log.contains(&line), "{line:?} is not in the log:\n{log}");
    let metrics = c.metrics();
    for series in [
        "ffcluster_jobs_fallback_total{reason=\"fallback.exit\"}",
        "ffcluster_jobs_not_split_total{reason=\"nosplit.mode\"}",
        "ffcluster_jobs_not_split_total{reason=\"nosplit.option\"}",
    ] {
        assert_eq!(sample(&metrics, series), Some(1.0), "{series} in\n{metrics}");
    }
    assert!(c.log("shim.log").contains("local fallback: ffmpeg exited with code "), "{}", c.log("shim.log"));

    // A run that resumes a lost job, as the shim starts it (`resume::exec`):
    // it tells the controller why the run before it was lost.
    let why = "the job was lost on the cluster: the controller closed the connection; resumed at segment 3";
    let out = c
        .shim()
        .env("FFCLUSTER_RESUMED", "1")
        .env("FFCLUSTER_RESUMED_WHY", format!("resumed.controller_gone: {why}"))
        .args(["-i", &input, "-c:v", "libx264", "-preset", "ultrafast", "-an", "-y", "resumed.mp4"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.all_logs());
    let job = newest_job(&c);
    assert_eq!(job["resumed"], serde_json::json!({"code": "resumed.controller_gone", "detail": why}), "{job}");
    let id = job["id"].as_u64().unwrap().to_string();
    let log = c.admin_ok(&["log", &id]);
    let line = format!("[ffcluster @ job {id}] resumed: resumed.controller_gone: {why}\n");
    assert!(log.contains(&line), "{line:?} is not in the log:\n{log}");
    let row = c.admin_ok(&["jobs"]).lines().find(|l| l.starts_with(&format!("{id} "))).unwrap().to_owned();
    assert!(row.contains("  nosplit.mode,resumed.controller_gone  "), "{row}");
    let metrics = c.metrics();
    let series = "ffcluster_jobs_resumed_total{reason=\"resumed.controller_gone\"}";
    assert_eq!(sample(&metrics, series), Some(1.0), "{metrics}");
    eprintln!("{}", metrics.lines().filter(|l| l.contains("reason=")).collect::<Vec<_>>().join("\n"));
}

#[test]
fn bench_cluster_measures_the_running_cluster() {
    let c = Cluster::start(2);
    let out = isolated(Command::new(controller_exe()))
        .args(["bench", "cluster", "--seconds", "8", "--height", "240"])
        .env("FFCLUSTER_CONTROLLER", c.url())
        .env("FFCLUSTER_TOKEN", &c.token)
        .env("FFCLUSTER_FFMPEG", real("ffmpeg"))
        .env("FFCLUSTER_FFPROBE", real("ffprobe"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench cluster failed:\n{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), {
        c.all_logs()
    });
    eprintln!("{stdout}");
    let line = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
            .trim()
            .to_owned()
    };
    let speedup: f64 = line("  speedup ").strip_suffix('x').and_then(|s| s.parse().ok()).expect("a speedup");
    assert!(speedup > 0.0, "{stdout}");
    assert!(line("  wall time ").starts_with("direct "), "{stdout}");
    assert!(line("  first segment ").contains(", cluster "), "{stdout}");
    // 8 s in 3 s segments, the same both ways (bench checks the frames match).
    let matched = line("  outputs match ");
    assert!(matched.starts_with("3 segments, ") && matched.ends_with(" frames, both ways"), "{stdout}");
    let frames: u64 = matched["3 segments, ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!((190..=193).contains(&frames), "{stdout}");
    let used = line("  nodes used ");
    assert!(used.contains(" of 2 connected (") && used.contains("split job"), "{used}");
    assert!(stdout.contains("\nverdict: "), "{stdout}");
    // The cluster really ran it: the controller has the split job, done.
    let job = newest_job(&c);
    assert_eq!((job["mode"].as_str(), job["state"].as_str()), (Some("split"), Some("done")), "{job}");
}
