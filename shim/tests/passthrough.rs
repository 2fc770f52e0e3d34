//! Jobs the shim runs locally behave exactly like ffmpeg run directly: same files,
//! same stdout bytes, same stderr (up to timings and heap addresses), same exit
//! codes, `q` on stdin and signals reach ffmpeg.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Setup, assert_same, real, run};

/// A reproducible software encode (single-threaded, bit-exact) that the classifier
/// sends to the cluster; with no controller configured it must run locally and be
/// indistinguishable from ffmpeg. `head` goes first, `tail` last.
fn encode_args(head: &[&str], input: &str, tail: &[&str]) -> Vec<String> {
    let middle = [
        "-i",
        input,
        "-map",
        "0:0",
        "-map",
        "0:1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-threads",
        "1",
        "-c:a",
        "aac",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
        "-flags:a",
        "+bitexact",
    ];
    head.iter().chain(&middle).chain(tail).map(|s| (*s).to_owned()).collect()
}

fn transcode_args(input: &str, output: &str) -> Vec<String> {
    encode_args(&["-hide_banner", "-nostats"], input, &["-y", output])
}

#[test]
fn short_transcode_writes_identical_file() {
    let s = Setup::new();
    s.clip("in.mp4", 2);
    let direct = run(with(s.direct("ffmpeg"), &transcode_args("in.mp4", "direct.mp4")), b"");
    let shim = run(with(s.shim("ffmpeg"), &transcode_args("in.mp4", "shim.mp4")), b"");
    assert!(direct.status.success(), "{}", String::from_utf8_lossy(&direct.stderr));
    let norm = |o: &std::process::Output, name: &str| {
        let mut o = o.clone();
        o.stderr = String::from_utf8_lossy(&o.stderr).replace(name, "OUT").into_bytes();
        o
    };
    assert_same("transcode", &norm(&direct, "direct.mp4"), &norm(&shim, "shim.mp4"));
    let a = std::fs::read(s.work.join("direct.mp4")).unwrap();
    let b = std::fs::read(s.work.join("shim.mp4")).unwrap();
    assert!(a == b, "output files differ ({} vs {} bytes)", a.len(), b.len());
    assert_eq!(count_frames(&s.work.join("shim.mp4")), 50);
    assert!(s.log().contains("local fallback: no controller configured"), "log: {}", s.log());
}

#[test]
fn stdout_stream_is_byte_identical() {
    let s = Setup::new();
    s.clip("in.mp4", 1);
    let args = encode_args(&["-hide_banner", "-loglevel", "error"], "in.mp4", &["-f", "mpegts", "pipe:1"]);
    let direct = run(with(s.direct("ffmpeg"), &args), b"");
    let shim = run(with(s.shim("ffmpeg"), &args), b"");
    assert!(direct.status.success());
    assert!(direct.stdout.len() > 10_000, "a real stream was produced");
    assert_same("mpegts to stdout", &direct, &shim);
}

#[test]
fn missing_input_fails_like_ffmpeg() {
    let s = Setup::new();
    let args = transcode_args("does-not-exist.mkv", "out.mp4");
    let direct = run(with(s.direct("ffmpeg"), &args), b"");
    let shim = run(with(s.shim("ffmpeg"), &args), b"");
    assert_eq!(direct.status.code(), Some(1));
    assert_same("missing input", &direct, &shim);
    assert!(String::from_utf8_lossy(&shim.stderr).contains("No such file or directory"));
    assert!(!s.work.join("out.mp4").exists(), "no output appears");
}

#[test]
fn q_on_stdin_stops_a_long_encode_cleanly() {
    let s = Setup::new();
    for (name, mut cmd) in [("direct", s.direct("ffmpeg")), ("shim", s.shim("ffmpeg"))] {
        let out = s.work.join(format!("{name}.mkv"));
        let mut child = cmd
            .args(["-hide_banner", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "600"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-y"])
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(20), || std::fs::metadata(&out).is_ok_and(|m| m.len() > 20_000));
        let asked = Instant::now();
        child.stdin.as_mut().unwrap().write_all(b"q\n").unwrap();
        let out_ = child.wait_with_output().unwrap();
        let took = asked.elapsed();
        assert_eq!(out_.status.code(), Some(0), "{name}: q exits 0");
        assert!(took < Duration::from_secs(3), "{name}: stopped in {took:?}");
        let frames = count_frames(&out);
        assert!(frames > 25, "{name}: output has {frames} frames and decodes");
        let err = String::from_utf8_lossy(&out_.stderr);
        assert!(err.contains("Press [q] to stop"), "{name}: ffmpeg's own prompt: {err}");
    }
}

#[test]
fn sigterm_reaches_ffmpeg_and_sigkill_leaves_nothing() {
    let s = Setup::new();
    let long = [
        "-hide_banner",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "600",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-f",
        "null",
        "-",
    ];
    let mut codes = Vec::new();
    for mut cmd in [s.direct("ffmpeg"), s.shim("ffmpeg")] {
        let child = cmd.args(long).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(700));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let st = child.wait_with_output().unwrap().status;
        codes.push((st.code(), st.signal()));
    }
    assert_eq!(codes[0], codes[1], "SIGTERM: direct vs shim");
    assert_eq!(codes[1].0, Some(255), "ffmpeg exits 255 after a termination signal");

    let mut child =
        s.shim("ffmpeg").args(long).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id();
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(9), "death by signal is reported as such");
    // The shim exec'd ffmpeg: the killed PID was ffmpeg itself, so nothing is left.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let stray = Command::new("pgrep").args(["-f", &format!("{}", s.work.display())]).output().unwrap();
    assert!(stray.stdout.is_empty(), "no ffmpeg left running");
}

#[test]
fn environment_and_working_directory_are_kept() {
    let s = Setup::new();
    s.clip("in.mp4", 1);
    for (name, mut cmd) in [("direct", s.direct("ffmpeg")), ("shim", s.shim("ffmpeg"))] {
        let report = format!("{name}-report.log");
        let st = cmd
            .env("FFREPORT", format!("file={report}:level=32"))
            .args(["-hide_banner", "-loglevel", "error", "-i", "in.mp4", "-t", "0.2", "-f", "null", "-"])
            .status()
            .unwrap();
        assert!(st.success());
        assert!(s.work.join(&report).exists(), "{name}: FFREPORT honoured, report written into the working directory");
    }
}

#[test]
fn invoked_as_ffcluster_shim_or_via_config_file() {
    let s = Setup::new();
    let direct = run(with(s.direct("ffmpeg"), &["-version".into()]), b"");

    let mut plain = Command::new(common::shim_exe());
    plain
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("FFCLUSTER_PROBE_CACHE", "off")
        .arg("-version");
    assert_same("ffcluster-shim -version (PATH search)", &direct, &run(plain, b""));

    let cfg = s.dir.path().join("shim.toml");
    std::fs::write(&cfg, format!("ffmpeg = {:?}\nprobe_cache = \"off\"\n", real("ffmpeg").display().to_string()))
        .unwrap();
    let mut c = Command::new(s.bin.join("ffmpeg"));
    c.env_clear().env("PATH", "/nonexistent").env("FFCLUSTER_CONFIG", &cfg).arg("-version");
    assert_same("config file", &direct, &run(c, b""));
}

#[test]
fn never_executes_itself() {
    let s = Setup::new();
    // Pointed at itself: refuses at once instead of looping.
    let mut c = s.shim("ffmpeg");
    c.env("FFCLUSTER_FFMPEG", s.bin.join("ffmpeg")).arg("-version");
    let started = Instant::now();
    let out = run(c, b"");
    assert_eq!(out.status.code(), Some(127));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(out.stdout.is_empty(), "nothing of the shim's on stdout");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is this shim"));

    // Only the shim's own directory (and another link to it) on PATH: not found.
    let other = s.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::symlink(common::shim_exe(), other.join("ffmpeg")).unwrap();
    let path = std::env::join_paths([&s.bin, &other]).unwrap();
    let mut c = Command::new(s.bin.join("ffmpeg"));
    c.env_clear().env("PATH", &path).env("FFCLUSTER_PROBE_CACHE", "off").arg("-version");
    let out = run(c, b"");
    assert_eq!(out.status.code(), Some(127), "{}", String::from_utf8_lossy(&out.stderr));

    // Shim's directory first, the real ffmpeg after it: the real one is found.
    let real_dir = real("ffmpeg").parent().unwrap().to_path_buf();
    let path = std::env::join_paths([&s.bin, &other, &real_dir]).unwrap();
    let mut c = Command::new("ffmpeg");
    c.env_clear().env("PATH", &path).env("FFCLUSTER_PROBE_CACHE", "off").arg("-version");
    let out = run(c, b"");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ffmpeg version"));
}

fn with(mut c: Command, args: &[String]) -> Command {
    c.args(args);
    c
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "condition not reached in {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Decodes the file and counts video frames; any decode error fails the test.
fn count_frames(path: &std::path::Path) -> u64 {
    let out = Command::new(real("ffprobe"))
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.stderr.is_empty(), "decode errors: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
