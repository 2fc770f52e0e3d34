//! System tests of what admins see and do: the dashboard (rendered by a real
//! headless Chromium), `/metrics`, and draining a node. A real controller and
//! real node agents on loopback run real jobs through the shim.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ffcluster::controller::http_client;
use ffcluster::tls::Trust;
use serde_json::Value;
use support::cluster::*;

/// A 12 s clip and the Jellyfin HLS command line for it, with 2 s segments:
/// enough chunks for both nodes.
fn hls_job(c: &Cluster, name: &str) -> Vec<String> {
    let input = c.work.join(format!("{name}.mkv"));
    make_clip(&input, 12, "640x360", &[]);
    let out = c.work.join(name);
    std::fs::create_dir_all(&out).unwrap();
    jellyfin_hls(&input, &out, "5f4dcc3b5aa765d61d8327deb882cf99", false, 2)
}

fn run_shim(c: &Cluster, mode: &str, args: &[String]) {
    let out = c.shim().env("FFCLUSTER_MODE", mode).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "shim failed: {}\n{}", String::from_utf8_lossy(&out.stderr), c.all_logs());
}

/// The value of one series (full name with labels) in a scrape.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in the scrape:\n{text}"))
        .parse()
        .unwrap()
}

/// Where test artifacts are kept: `<target>/test-artifacts`.
fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/dashboard-<hash>
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium with `extra` on `url`; fails loudly when it is not
/// installed (contrib/scripts/ensure-deps.sh installs it), never skips.
fn chromium(url: &str, extra: &[String]) -> Output {
    let (mut cmd, _profile) = support::headless_chromium("dashboard");
    let mut child = cmd
        // Enough virtual time for the page to load and poll a few times.
        .arg("--virtual-time-budget=4000")
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s: {}", String::from_utf8_lossy(&err.join().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// The opening tags of the timeline's chunk bars: `(data-chunk, data-node, data-state)`.
fn bars(dom: &str) -> Vec<(u32, String, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..].split('"').next()?.to_owned())
    };
    dom.split("<div class=\"bar ")
        .skip(1)
        .filter_map(|rest| {
            let tag = rest.split('>').next()?;
            Some((attr(tag, "data-chunk")?.parse().ok()?, attr(tag, "data-node")?, attr(tag, "data-state")?))
        })
        .collect()
}

#[test]
fn dashboard_metrics_and_chunk_records_after_a_split_job() {
    let c = Cluster::start(2);

    // The page is static and open; the data behind it needs the token.
    let page = http_client::get(&format!("{}/", c.url()), &[], &Trust::default()).unwrap();
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("dashboard/app.js"));
    assert!(page.header("content-security-policy").is_some_and(|p| p.contains("script-src 'self'")));
    for path in ["/metrics", "/api/v1/status"] {
        assert_eq!(
            http_client::get(&format!("{}{path}", c.url()), &[], &Trust::default()).unwrap().status,
            401,
            "{path}"
        );
    }
    let before = c.metrics();
    assert_eq!(sample(&before, "ffcluster_jobs_total{mode=\"split\",result=\"ok\"}"), 0.0);
    assert_eq!(sample(&before, "ffcluster_node_connected{node=\"node0\"}"), 1.0);

    run_shim(&c, "split", &hls_job(&c, "film"));

    // Chunk records: every chunk done exactly once, on a named node, with times and bytes.
    let status = c.status();
    let job = &status["jobs"][0];
    assert_eq!((job["mode"].as_str(), job["state"].as_str()), (Some("split"), Some("done")), "{job}");
    let done_count = job["chunks_done"].as_u64().unwrap();
    let records = job["chunks"].as_array().expect("chunk records");
    let done: Vec<&Value> = records.iter().filter(|r| r["state"] == "done").collect();
    assert_eq!(done.len() as u64, done_count, "{records:?}");
    let indices: BTreeSet<u64> = done.iter().map(|r| r["chunk"].as_u64().unwrap()).collect();
    assert_eq!(indices, (0..done_count).collect(), "one winner per chunk");
    let started = job["started_unix_ms"].as_u64().unwrap();
    let mut media_end = 0.0;
    for r in &done {
        let (s, f) = (r["started_unix_ms"].as_u64().unwrap(), r["finished_unix_ms"].as_u64().unwrap());
        assert!(started <= s && s <= f, "{r}");
        assert!(r["bytes"].as_u64().unwrap() > 0, "{r}");
        assert!(r["node"] == "node0" || r["node"] == "node1", "{r}");
        assert!(r["end"].as_f64().unwrap() > r["start"].as_f64().unwrap(), "{r}");
        media_end = r["end"].as_f64().unwrap().max(media_end);
    }
    assert!((media_end - 12.0).abs() < 0.1, "the chunks cover the clip: {media_end}");
    let nodes: BTreeSet<&str> = done.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "both nodes encoded chunks: {records:?}");

    // The counters moved by what the job did.
    let after = c.metrics();
    assert_eq!(sample(&after, "ffcluster_jobs_total{mode=\"split\",result=\"ok\"}"), 1.0);
    assert_eq!(sample(&after, "ffcluster_chunk_attempts_total{result=\"done\"}"), done_count as f64);
    assert_eq!(sample(&after, "ffcluster_first_chunk_seconds_count"), 1.0);
    assert!(sample(&after, "ffcluster_first_chunk_seconds_sum") > 0.0);
    assert!(sample(&after, "ffcluster_relay_input_bytes_total") > sample(&before, "ffcluster_relay_input_bytes_total"));
    let out_bytes: u64 = done.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert!(sample(&after, "ffcluster_relay_output_bytes_total{mode=\"split\"}") >= out_bytes as f64);
    assert_eq!(sample(&after, "ffcluster_jobs_running{mode=\"split\"}"), 0.0);
    assert_eq!(sample(&after, "ffcluster_node_slots{node=\"node1\"}"), 1.0);
    assert_eq!(sample(&after, "ffcluster_node_running{node=\"node1\"}"), 0.0);

    // A whole job too: its first output is timed and its bytes counted.
    let clip = c.work.join("short.mp4");
    make_clip(&clip, 2, "320x240", &[]);
    let whole: Vec<String> = ["-i", &clip.display().to_string(), "-c:v", "libx264", "-preset", "ultrafast", "-an"]
        .iter()
        .map(|s| s.to_string())
        .chain(["-y".into(), c.work.join("whole.mp4").display().to_string()])
        .collect();
    run_shim(&c, "whole", &whole);
    let whole_id = c.status()["jobs"][0]["id"].as_u64().unwrap();
    let last = c.metrics();
    assert_eq!(sample(&last, "ffcluster_jobs_total{mode=\"whole\",result=\"ok\"}"), 1.0);
    assert_eq!(sample(&last, "ffcluster_first_output_seconds_count"), 1.0);
    assert!(sample(&last, "ffcluster_relay_output_bytes_total{mode=\"whole\"}") > 0.0);

    // The dashboard, as a browser renders it: both nodes, the jobs, and a bar per
    // chunk attributed to the node that encoded it. The split job is no longer
    // the newest, so it stays in the recent list and its timeline is still shown.
    let split_id = job["id"].as_u64().unwrap();
    let url = format!("{}/#token={}", c.url(), c.token);
    let out = chromium(&url, &["--dump-dom".into()]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && dom.contains("data-updated="), "the page did not render: {dom}\n{}", {
        String::from_utf8_lossy(&out.stderr)
    });
    for node in ["node0", "node1"] {
        assert!(dom.contains(&format!("<h3>{node}</h3>")), "no card for {node}: {dom}");
    }
    assert!(dom.contains(&format!("data-job=\"{split_id}\"")), "no split job {split_id}: {dom}");
    assert!(dom.contains(&format!("data-job=\"{whole_id}\"")), "no whole job {whole_id}: {dom}");
    for id in [split_id, whole_id] {
        assert!(dom.contains(&format!("data-log=\"{id}\"")), "no log button for job {id}: {dom}");
    }
    // Why the whole job was not split (it ran with `FFCLUSTER_MODE=whole`):
    // its code in the reason column, the detail under the command line.
    let not_split = &c.status()["jobs"][0]["not_split"];
    assert_eq!(not_split["code"], "nosplit.mode", "{not_split}");
    assert!(dom.contains("<code class=\"why\" data-why=\"nosplit.mode\""), "no reason code: {dom}");
    let detail = format!("not split: {}", not_split["detail"].as_str().unwrap());
    assert!(dom.contains(&detail), "no {detail:?}: {dom}");
    let drawn = bars(&dom);
    let won: BTreeSet<(u32, String)> =
        drawn.iter().filter(|b| b.2 == "done").map(|(chunk, node, _)| (*chunk, node.clone())).collect();
    let expected: BTreeSet<(u32, String)> =
        done.iter().map(|r| (r["chunk"].as_u64().unwrap() as u32, r["node"].as_str().unwrap().to_owned())).collect();
    assert_eq!(won, expected, "the bars say which node encoded which chunk: {drawn:?}");
    assert!(dom.contains("first chunk after"), "{dom}");
    assert!(!dom.contains(&c.token), "the token must not end up in the page");

    let shot = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&url, &[format!("--screenshot={}", shot.display()), "--window-size=1280,900".into()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000, "{} bytes", png.len());
    eprintln!("dashboard screenshot: {}", shot.display());
}

#[test]
fn a_drained_node_gets_no_new_work_until_undrained() {
    let c = Cluster::start(2);
    let job = hls_job(&c, "film");

    let out = c.admin(&["drain", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node named \"nosuch\""), "{out:?}");
    assert!(c.admin_ok(&["drain", "node0"]).contains("node0: draining"));

    let table = c.admin_ok(&["nodes"]);
    let row = table.lines().find(|l| l.starts_with("node0 ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("draining"), "{table}");
    let nodes: Value = serde_json::from_str(&c.admin_ok(&["nodes", "--json"])).unwrap();
    let state = |name: &str| {
        let n = nodes.as_array().unwrap().iter().find(|n| n["name"] == name).unwrap();
        n["state"].as_str().unwrap().to_owned()
    };
    assert_eq!((state("node0"), state("node1")), ("draining".to_owned(), "ready".to_owned()));

    // A split job would use both nodes; drained, node0 gets none of it.
    run_shim(&c, "split", &job);
    let jobs: Value = serde_json::from_str(&c.admin_ok(&["jobs", "--json"])).unwrap();
    let j = &jobs[0];
    assert_eq!((j["mode"].as_str(), j["state"].as_str()), (Some("split"), Some("done")), "{j}");
    assert_eq!(j["nodes"], serde_json::json!(["node1"]), "{j}");
    assert!(j["chunks"].as_array().unwrap().iter().all(|r| r["node"] == "node1"), "{j}");
    let m = c.metrics();
    assert_eq!(sample(&m, "ffcluster_node_draining{node=\"node0\"}"), 1.0);

    // Undrained (both spellings), it takes work again: the next split job's
    // first two chunks go to both free nodes at once.
    assert!(c.admin_ok(&["undrain", "node0"]).contains("node0: undrained"));
    assert!(c.admin_ok(&["drain", "--undo", "node0"]).contains("node0: undrained"));
    run_shim(&c, "split", &job);
    let jobs_table = c.admin_ok(&["jobs"]);
    let header: Vec<&str> = jobs_table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[..4], ["JOB", "MODE", "PRIORITY", "STATE"], "{jobs_table}");
    // A Jellyfin HLS playback: someone waits on it.
    let row: Vec<&str> = jobs_table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[1..3], ["split", "interactive"], "{jobs_table}");
    let status = c.status();
    assert_eq!(status["nodes"][0]["state"], "ready");
    assert_eq!(status["jobs"][0]["nodes"], serde_json::json!(["node0", "node1"]), "{}", status["jobs"][0]);
}
