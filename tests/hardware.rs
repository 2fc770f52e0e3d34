//! Hardware-aware routing on a real controller and real nodes (contrib/docs/hardware.md).
//! This machine has no GPU, so the hardware is played by a software encoder: a
//! node translating `h264_qsv` to `libx264` advertises `h264_qsv`, and a job
//! naming it must run there, never on a node without the translation, never
//! locally (where the QSV encoder would fail for want of a device).

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::cluster::*;

/// A node with `extra` arguments (`--hardware`, `--translate`).
fn add_node_with(c: &mut Cluster, name: &str, extra: &[&str]) {
    let scratch = c.dir.path().join(format!("scratch-{name}"));
    let mut cmd = isolated(Command::new(workspace_bin("ffcluster-node")));
    cmd.args(["--controller", &c.url(), "--token", &c.token, "--name", name, "--slots", "1"])
        .arg("--scratch")
        .arg(&scratch)
        .arg("--ffmpeg")
        .arg(real("ffmpeg"))
        .args(extra)
        .env("FFCLUSTER_NODE_CONFIG", "/dev/null")
        .env("RUST_LOG", "info");
    c.spawn_node(name, cmd);
}

/// `qsv`: no hardware of its own, `h264_qsv` translated to libx264.
/// `plain`: no hardware, no translation.
fn qsv_cluster() -> Cluster {
    real("ffmpeg");
    let mut c = Cluster::bare();
    c.start_controller();
    add_node_with(&mut c, "qsv", &["--hardware", "none", "--translate", "h264_qsv=libx264"]);
    add_node_with(&mut c, "plain", &["--hardware", "none"]);
    c.wait_nodes(2, Duration::from_secs(30));
    c
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("no node {name}"))
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_job_naming_a_translated_encoder_runs_only_on_the_node_that_declares_it() {
    let c = qsv_cluster();
    let status = c.status();
    let (qsv, plain) = (node(&status, "qsv"), node(&status, "plain"));
    assert!(names(&qsv["caps"]["encoders"]).contains("h264_qsv"), "qsv node does not advertise h264_qsv");
    // Debian's ffmpeg lists h264_qsv and h264_nvenc without the hardware: a node
    // without hardware must not advertise them.
    let plain_encoders = names(&plain["caps"]["encoders"]);
    assert!(!plain_encoders.contains("h264_qsv") && !plain_encoders.contains("h264_nvenc"), "{plain_encoders:?}");
    assert!(plain_encoders.contains("libx264"));
    assert!(names(&plain["caps"]["hwaccels"]).is_empty());

    let input = c.work.join("clip.mp4");
    make_clip(&input, 3, "320x240", &[]);
    // Twice: with both nodes idle each time, only eligibility decides.
    for round in 0..2 {
        let out_file = c.work.join(format!("out{round}.mp4"));
        let out = c
            .shim()
            .env("FFCLUSTER_MODE", "auto")
            .args(["-y", "-i"])
            .arg(&input)
            .args(["-c:v", "h264_qsv", "-preset", "veryfast", "-c:a", "aac"])
            .arg(&out_file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "shim failed: {}\n{}", String::from_utf8_lossy(&out.stderr), c.all_logs());
        let log = c.log("shim.log");
        assert!(log.matches("runs on node qsv").count() == round + 1, "not run on the qsv node: {log}");
        assert!(!log.contains("runs on node plain") && !log.contains("local fallback"), "{log}");
        // A hardware job is never split: the finisher would open the device here.
        assert!(log.contains("not split (nosplit.hardware: needs encoder h264_qsv)"), "{log}");
        assert_eq!(decode_frames(&out_file), 72, "3 s at 24 fps, decodable");
        let probe = run_ok(
            Command::new(real("ffprobe"))
                .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name", "-of", "csv=p=0"])
                .arg(&out_file),
        );
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "h264");
    }
    let node_log = c.log("qsv.log");
    assert!(node_log.contains("translation: encoder h264_qsv -> libx264"), "{node_log}");
    let status = c.status();
    let jobs = status["jobs"].as_array().unwrap();
    assert!(jobs.iter().filter(|j| j["node"] == "qsv").count() >= 2, "{jobs:?}");
    assert!(jobs.iter().all(|j| j["node"] != "plain"), "{jobs:?}");
}

#[test]
fn probes_are_answered_by_the_cluster_and_locally_without_it() {
    let mut c = qsv_cluster();
    let probe = |c: &Cluster, args: &[&str], probes: &str| {
        let out = c.shim().env("FFCLUSTER_PROBES", probes).args(args).stdin(Stdio::null()).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let local_run = |args: &[&str]| {
        let out = Command::new(real("ffmpeg")).args(args).stdin(Stdio::null()).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };

    // -version: byte for byte the node's ffmpeg (the same build here).
    assert_eq!(probe(&c, &["-version"], "cluster"), local_run(&["-version"]));
    // -encoders: the qsv node answers (it has more to offer): h264_qsv stays, the
    // hardware it does not have is gone, the rest is ffmpeg's own text.
    let (code, enc, _) = probe(&c, &["-encoders"], "cluster");
    assert_eq!(code, Some(0));
    let (_, local_enc, _) = local_run(&["-encoders"]);
    assert!(enc.lines().any(|l| l.split_whitespace().nth(1) == Some("h264_qsv")), "{enc}");
    assert!(!enc.contains("h264_nvenc") && local_enc.contains("h264_nvenc"));
    let software = |l: &&str| {
        l.split_whitespace()
            .nth(1)
            .is_none_or(|n| ffcluster::hardware::family(ffcluster::hardware::Kind::Encoder, n).is_none())
    };
    for line in local_enc.lines().filter(software) {
        assert!(enc.lines().any(|e| e == line), "line missing from the cluster's answer: {line:?}");
    }
    // -hwaccels: the node advertises none; the local build lists several.
    let (_, hw, _) = probe(&c, &["-hwaccels"], "cluster");
    assert_eq!(hw.lines().filter(|l| !l.trim().is_empty()).count(), 1, "only the header: {hw:?}");
    let log = c.log("shim.log");
    assert!(log.contains("probe -encoders answered by node qsv"), "{log}");
    // Local mode is untouched.
    assert_eq!(probe(&c, &["-hwaccels"], "local"), local_run(&["-hwaccels"]));

    // Controller gone: the local ffmpeg answers, exactly. (The shim's cache is
    // off in these tests, so nothing stale is replayed.)
    drop(c.controller.take());
    assert_eq!(probe(&c, &["-hwaccels"], "cluster"), local_run(&["-hwaccels"]));
    assert_eq!(probe(&c, &["-encoders"], "cluster"), local_run(&["-encoders"]));
    let log = c.log("shim.log");
    assert!(log.contains("from the cluster: cannot reach the controller"), "{log}");
}

#[test]
fn automatic_hardware_is_what_opens_here() {
    real("ffmpeg");
    let mut c = Cluster::bare();
    c.start_controller();
    add_node_with(&mut c, "auto", &[]);
    c.wait_nodes(1, Duration::from_secs(30));
    let status = c.status();
    let advertised = names(&node(&status, "auto")["caps"]["hwaccels"]);
    // What the node should have found: every hwaccel of the build whose device
    // opens on this machine, checked here with the real ffmpeg.
    let listed = run_ok(Command::new(real("ffmpeg")).args(["-hide_banner", "-hwaccels"]));
    let mut opens = BTreeSet::new();
    for hw in String::from_utf8_lossy(&listed.stdout).lines().skip(1).map(str::trim).filter(|l| !l.is_empty()) {
        let ok = Command::new(real("ffmpeg"))
            .args(["-hide_banner", "-nostdin", "-v", "error", "-init_hw_device", hw])
            .args(["-f", "lavfi", "-i", "nullsrc=s=16x16:d=0.04", "-frames:v", "1", "-f", "null", "-"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success();
        if ok {
            opens.insert(hw.to_owned());
        }
    }
    assert_eq!(advertised, opens, "advertised hwaccels against devices that open");
    let encoders = names(&node(&status, "auto")["caps"]["encoders"]);
    for (encoder, family) in [("h264_nvenc", "cuda"), ("h264_qsv", "qsv"), ("h264_vaapi", "vaapi")] {
        if !opens.contains(family) {
            assert!(!encoders.contains(encoder), "{encoder} advertised without a {family} device");
        }
    }
}
