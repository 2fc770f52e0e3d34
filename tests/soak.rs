//! `ffcluster bench soak` in miniature, so that the soak program keeps working:
//! three Jellyfin-style sessions against two nodes for 20 s, with real
//! processes and the real ffmpeg; the program's own verdict and its JSON
//! report are checked.

mod support;

use serde_json::Value;
use support::cluster::*;

#[test]
fn a_short_soak_loses_nothing_and_reports_every_figure() {
    real("ffmpeg");
    workspace_bin("ffcluster-shim");
    workspace_bin("ffcluster-node");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let args = ["soak", "--sessions", "3", "--nodes", "2", "--duration", "20s", "--seconds", "30", "--seed", "7"];
    let stdout = run_bench(&args, &json, dir.path());
    assert!(stdout.contains("\nverdict: PASS\n"), "{stdout}");

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n =
        |path: &str| r.pointer(path).and_then(Value::as_f64).unwrap_or_else(|| panic!("no number at {path} in {r:#}"));
    assert_eq!((n("/sessions"), n("/nodes")), (3.0, 2.0), "{r:#}");
    assert_eq!(n("/segments_lost"), 0.0, "{r:#}");
    assert!(r["lost"].as_array().is_some_and(Vec::is_empty), "{r:#}");
    // Three players asking every 1.5 s for 20 s: at least a few segments each.
    let served = n("/segments_served");
    assert!(served >= 9.0, "{r:#}");
    assert!(n("/requests") >= served, "{r:#}");
    // Every served segment was probed; the 30 s clip has 10 segments.
    assert_eq!(n("/checks/probed"), served, "{r:#}");
    assert_eq!(n("/checks/failed"), 0.0, "{r:#}");
    assert_eq!(n("/clip/segments"), 10.0, "{r:#}");
    let (p50, p99, max) = (n("/ready_ms/p50"), n("/ready_ms/p99"), n("/ready_ms/max"));
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max && max <= 30_000.0, "{r:#}");
    assert!(n("/shims/offloaded") >= 3.0, "{r:#}");
    for key in ["start_kib", "after_warm_up_kib", "end_kib", "peak_kib"] {
        assert!(n(&format!("/controller_rss/{key}")) > 1024.0, "{key} in {r:#}");
    }
    assert_eq!(r["controller_rss"]["flat"], Value::Bool(true), "{r:#}");
    assert_eq!((n("/jobs_running_at_end"), n("/leftover_ffmpeg")), (0.0, 0.0), "{r:#}");
    assert_eq!(r["per_session"].as_array().map(Vec::len), Some(3), "{r:#}");
    // The working directory is removed after a passing run.
    assert_bench_dir_removed(dir.path());
}
