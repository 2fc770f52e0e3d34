//! `ffcluster bench live` in miniature, so that the live benchmark keeps
//! working: a small channel for 24 s, directly and through the shim on two
//! nodes, with real processes and the real ffmpeg. Nothing is CPU-limited, so
//! the goal is not the point: the program must run, check its outputs, and
//! print and save sane figures.

mod support;

use serde_json::Value;
use support::cluster::*;

#[test]
fn a_short_live_benchmark_follows_the_channel_and_reports_its_figures() {
    real("ffmpeg");
    real("ffprobe");
    workspace_bin("ffcluster-shim");
    workspace_bin("ffcluster-node");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("live.json");
    // The one-node run is left out to keep this under a minute.
    let args = [
        "live",
        "--no-limit",
        "--nodes",
        "2",
        "--seconds",
        // Long enough for the speed to be a slope over four 3 s intervals:
        // over two (a 12 s run) the moments segments appear moved a run
        // that keeps up to 0.96-0.98x.
        "24",
        "--height",
        "240",
        "--preset",
        "ultrafast",
        "--skip-one-node",
    ];
    let stdout = run_bench(&args, &json, dir.path());

    // The table: a row per run with a speed and the latency in seconds and segments.
    let table: Vec<&str> = stdout.lines().skip_while(|l| !l.starts_with("ffcluster bench live: 24 s runs")).collect();
    assert!(table.len() > 3, "{stdout}");
    assert!(table[1].starts_with("run ") && table[1].contains("latency p50"), "{stdout}");
    for (row, label) in table[2..4].iter().zip(["direct ", "2 nodes "]) {
        assert!(row.starts_with(label), "{row:?} in\n{stdout}");
        let speed: f64 = row[label.len()..].split_whitespace().next().unwrap().trim_end_matches('x').parse().unwrap();
        // Unlimited, ultrafast and small: both keep up with the channel.
        assert!((0.9..1.2).contains(&speed), "{row}");
        assert!(row.contains(" seg)"), "{row}");
    }
    assert!(stdout.contains("\ndirect: keeps up with the channel"), "{stdout}");
    assert!(stdout.contains("\ngoal: cluster >= 1.0x where one node < 0.6x, added latency < 2 segments: "), "{stdout}");
    assert!(stdout.contains("\nchecks: passed"), "{stdout}");

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = r["runs"].as_array().unwrap_or_else(|| panic!("no runs in {r:#}"));
    assert_eq!(runs.len(), 2, "{r:#}");
    let n =
        |v: &Value, path: &str| v.pointer(path).and_then(Value::as_f64).unwrap_or_else(|| panic!("{path} in {v:#}"));
    for run in runs {
        // 24 s of 3 s segments: 7 listed while it ran, the 8th (cut by q) after.
        let segments = n(run, "/segments");
        assert!((7.0..=8.0).contains(&segments), "{run:#}");
        assert!(n(run, "/segments_after_stop") <= 1.0, "{run:#}");
        let (p50, p95, max) = (n(run, "/latency_s/p50"), n(run, "/latency_s/p95"), n(run, "/latency_s/max"));
        // Held to the source's pace: not before the content, and not far behind it.
        assert!(0.0 < p50 && p50 <= p95 && p95 <= max && max < 6.0, "{run:#}");
        assert!(n(run, "/stopped_in_s") < 5.0, "{run:#}");
        assert_eq!(n(run, "/exit_code"), 0.0, "{run:#}");
        assert!(run["failures"].as_array().is_some_and(Vec::is_empty), "{run:#}");
        for (k, seg) in run["listed"].as_array().unwrap().iter().enumerate() {
            assert_eq!(n(seg, "/index"), k as f64, "{run:#}");
        }
    }
    // The cluster run went through the controller, as a live split job.
    assert_eq!(runs[1]["reasons"], serde_json::json!(["split.live"]), "{r:#}");
    assert!(runs[1]["nodes_used"].as_array().is_some_and(|n| !n.is_empty()), "{r:#}");
    assert_eq!(n(&r, "/fps"), 25.0, "{r:#}");
    // The working directory is removed after a passing run.
    assert_bench_dir_removed(dir.path());
}
