//! Playback first on a shared cluster: a Jellyfin playback that starts while
//! a batch encode holds every node takes a node back (the batch chunk's
//! attempt is stopped and runs again later), and both jobs' outputs still
//! equal direct ffmpeg's. Timings are the benchmark's business
//! (contrib/docs/benchmarks.md); this checks the behaviour: who waited, who was stopped, and
//! that nothing was lost.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::*;
use support::compare;

const MD5: &str = "5d41402abc4b2a76b9719d911017c592";

fn batch_args(input: &Path, dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["-nostdin".into(), "-i".into(), input.display().to_string()];
    for s in ["-c:v", "libx264", "-preset", "medium", "-crf", "22", "-c:a", "aac", "-y"] {
        a.push(s.into());
    }
    a.push(dir.join("film.mkv").display().to_string());
    a
}

fn job<'a>(status: &'a serde_json::Value, args_contain: &str) -> &'a serde_json::Value {
    let jobs = status["jobs"].as_array().unwrap();
    jobs.iter()
        .find(|j| j["args"].as_str().is_some_and(|a| a.contains(args_contain)))
        .unwrap_or_else(|| panic!("no job with {args_contain}: {status:#}"))
}

#[test]
fn a_playback_takes_a_node_back_from_a_batch_encode() {
    let c = Cluster::start(2);
    let film = c.work.join("film-src.mkv");
    make_clip(&film, 90, "640x360", &[]);
    let clip = c.work.join("clip.mkv");
    make_clip(&clip, 12, "640x360", &[]);
    let dirs: Vec<_> = ["batch-direct", "batch-split", "play-direct", "play-split", "scratch"]
        .iter()
        .map(|d| {
            let p = c.work.join(d);
            std::fs::create_dir_all(&p).unwrap();
            p
        })
        .collect();
    let (bd, bs, pd, ps, scratch) = (&dirs[0], &dirs[1], &dirs[2], &dirs[3], &dirs[4]);
    run_ok(Command::new(real("ffmpeg")).args(batch_args(&film, bd)).stdin(Stdio::null()));
    run_ok(Command::new(real("ffmpeg")).args(jellyfin_hls(&clip, pd, MD5, false, 3)).stdin(Stdio::null()));

    // The batch encode, split, until it holds both nodes.
    let mut batch = c
        .shim()
        .env("FFCLUSTER_MODE", "split")
        .args(batch_args(&film, bs))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let batch_err = collect_stderr(&mut batch);
    let t = Instant::now();
    loop {
        let s = c.status();
        if s["jobs"].as_array().is_some_and(|j| !j.is_empty()) && job(&s, "film-src.mkv")["chunks_running"] == 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the batch job never held both nodes: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A playback starts: it gets a node at once.
    let out = c
        .shim()
        .env("FFCLUSTER_MODE", "split")
        .args(jellyfin_hls(&clip, ps, MD5, false, 3))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "playback: {}\n{}", String::from_utf8_lossy(&out.stderr), c.all_logs());
    let during = c.status();
    // The batch job is still running: its progress, from its chunks.
    let progress = &job(&during, "film-src.mkv")["progress"];
    let percent = progress["percent"].as_f64().unwrap_or(-1.0);
    assert!((0.0..100.0).contains(&percent) && progress["speed"].as_f64().is_some(), "{during:#}");
    let status = batch.wait().unwrap();
    let err = batch_err.join().unwrap();
    assert!(status.success(), "batch: {err}\n{}", c.all_logs());

    let s = c.status();
    let (b, p) = (job(&s, "film-src.mkv"), job(&s, "clip.mkv"));
    assert_eq!((b["mode"].as_str(), b["priority"].as_str()), (Some("split"), Some("batch")), "{b:#}");
    assert_eq!((p["mode"].as_str(), p["priority"].as_str()), (Some("split"), Some("interactive")), "{p:#}");
    let preempted = b["preempted"].as_u64().unwrap_or(0);
    assert!(preempted >= 1, "no batch chunk gave its node back: {b:#}");
    // The playback never waited behind the batch job: it was not preempted.
    assert_eq!(p["preempted"].as_u64(), Some(0), "{p:#}");
    let id = b["id"].to_string();
    let log = c.admin_ok(&["log", &id]);
    let by = format!("preempted by job {} (interactive)", p["id"]);
    assert!(log.contains(&by), "{log}");
    let scrape = c.metrics();
    let series = "ffcluster_chunk_preemptions_total{priority=\"interactive\"} ";
    let counted = scrape.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(counted, Some(preempted), "{scrape}");

    for (what, d, s, playlist) in [("batch", bd, bs, ""), ("playback", pd, ps, &format!("{MD5}.m3u8")[..])] {
        let compared = compare::outputs(d, s, scratch, playlist);
        assert!(compared.diffs.is_empty(), "{what} differs from direct: {:#?}", compared.diffs);
    }
    c.wait_no_remote_ffmpeg(Duration::from_secs(5));
    eprintln!(
        "batch chunks preempted: {preempted}; the playback ran {} chunks while the batch job had {} done \
         ({progress})",
        p["chunks_done"],
        job(&during, "film-src.mkv")["chunks_done"]
    );
}

/// `ffcluster priority JOB LEVEL` changes a running job's priority, which the
/// status document and the job's log then show; a job that is not running and
/// a level that is not one are refused with a clear error.
#[test]
fn the_admin_sets_a_running_jobs_priority() {
    let c = Cluster::start(1);
    let film = c.work.join("film-src.mkv");
    make_clip(&film, 60, "640x360", &[]);
    let out = c.work.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut batch = c
        .shim()
        .env("FFCLUSTER_MODE", "split")
        .args(batch_args(&film, &out))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let id = loop {
        let s = c.status();
        if let Some(j) = s["jobs"].as_array().and_then(|j| j.first()).filter(|j| j["state"] == "running") {
            assert_eq!(j["priority"], "batch", "{j:#}");
            break j["id"].to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the job never ran: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = c.admin_ok(&["priority", &id, "streaming"]);
    assert_eq!(said.trim(), format!("job {id}: priority streaming (was batch)"));
    assert_eq!(job(&c.status(), "film-src.mkv")["priority"], "streaming");
    assert!(c.admin_ok(&["log", &id]).contains("priority batch -> streaming (admin)"));

    let missing = c.admin(&["priority", "999999", "batch"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no job 999999 is running"), "{missing:?}");
    let bad = c.admin(&["priority", &id, "urgent"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown priority \"urgent\""), "{bad:?}");

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(batch.id() as i32), nix::sys::signal::Signal::SIGKILL);
    let _ = batch.wait();
    c.wait_no_remote_ffmpeg(Duration::from_secs(10));
}
