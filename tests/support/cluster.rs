//! A real cluster on loopback for the system tests: one `ffcluster serve`, N
//! `ffcluster-node` processes, and a directory with `ffmpeg`/`ffprobe` symlinks to
//! the built shim, configured by environment as a Jellyfin host would be.
//!
//! Everything is a real process talking over real sockets; media is generated with
//! the real ffmpeg and checked by decoding it. ffmpeg is required: a missing one
//! fails the test loudly.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Names the directory of the ffmpeg build the tests run (direct runs, the
/// shim's real ffmpeg and finisher, the nodes), such as
/// `/opt/ffcluster/ffmpeg-7.1/bin`; unset, it is the one on PATH.
pub const FFMPEG_DIR_VAR: &str = "FFCLUSTER_TEST_FFMPEG_DIR";

/// The real binary: in `FFCLUSTER_TEST_FFMPEG_DIR` when set (not empty), else
/// on PATH.
/// Tests need it: fail loudly, never skip.
pub fn real(program: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(FFMPEG_DIR_VAR).filter(|d| !d.is_empty()) {
        let p = Path::new(&dir).join(program);
        assert!(
            p.is_file(),
            "{FFMPEG_DIR_VAR} names {}, which has no {program} (contrib/scripts/ensure-deps.sh installs 7.1 and 8.1 \
             under /opt/ffcluster)",
            Path::new(&dir).display()
        );
        return p;
    }
    real_on_path(program)
}

/// The major version of the ffmpeg the tests run ([`real`]), read once: where
/// releases behave differently (exit codes, keys, filters), a test states what
/// each expects from this rather than assuming Debian's 5.1.
pub fn ffmpeg_major() -> u32 {
    static MAJOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MAJOR.get_or_init(|| {
        let ffmpeg = real("ffmpeg");
        let out = run_ok(Command::new(&ffmpeg).arg("-version"));
        let text = String::from_utf8_lossy(&out.stdout);
        ffcluster::ffmpeg::Dialect::from_version_text(&text)
            .unwrap_or_else(|| panic!("{} does not say its version: {text}", ffmpeg.display()))
            .major
    })
}

/// Whether the tests' ffmpeg has filter `name`: the static 7.1 and 8.1 builds
/// have no libass, so no `subtitles` filter, where Debian's 5.1 has it.
pub fn has_filter(name: &str) -> bool {
    static FILTERS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let listing = FILTERS.get_or_init(|| {
        let out = run_ok(Command::new(real("ffmpeg")).args(["-hide_banner", "-filters"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    // Entries are ` FLAGS name  X->Y  description`.
    listing.lines().any(|l| l.split_whitespace().nth(1) == Some(name))
}

/// The real binary on PATH, whatever `FFCLUSTER_TEST_FFMPEG_DIR` says.
pub fn real_on_path(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed: these tests need the real one (apt-get install ffmpeg)"))
}

/// A binary of this workspace. Integration tests of the root package only get
/// `ffcluster` from cargo; the shim and node come from the same target directory,
/// which `cargo build --workspace` (run by contrib/scripts/test.sh) fills.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` first (contrib/scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn controller_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ffcluster"))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills a child on drop (SIGTERM, then SIGKILL after a grace period).
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(nix::sys::signal::Signal::SIGCONT);
            self.signal(nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub token: String,
    pub controller: Option<Proc>,
    pub nodes: Vec<Proc>,
    /// Holds `ffmpeg` and `ffprobe` symlinks to the shim.
    pub bin: PathBuf,
    pub work: PathBuf,
    /// With TLS: the directory `ffcluster tls-init` wrote ca.pem, server.pem and
    /// server.key to, for `localhost` and `127.0.0.1`.
    pub tls: Option<PathBuf>,
}

impl Cluster {
    /// A controller and `nodes` node agents, all registered.
    pub fn start(nodes: usize) -> Cluster {
        Cluster::launch(nodes, false)
    }

    /// [`start`](Self::start) with TLS everywhere: the controller serves HTTPS
    /// at `https://localhost:PORT` with a certificate of a fresh private CA, and
    /// the nodes, the shim and `status` trust that CA (`tls_ca`).
    pub fn start_tls(nodes: usize) -> Cluster {
        Cluster::launch(nodes, true)
    }

    fn launch(nodes: usize, tls: bool) -> Cluster {
        real("ffmpeg");
        let mut c = Cluster::bare();
        if tls {
            c.make_certs();
        }
        c.start_controller();
        for i in 0..nodes {
            c.add_node(&format!("node{i}"));
        }
        // A node measures its ffmpeg before it connects: 36 s at load average 50.
        c.wait_nodes(nodes, Duration::from_secs(90));
        c
    }

    /// Makes a CA and a controller certificate with `ffcluster tls-init`; from
    /// now on the controller URL is https.
    pub fn make_certs(&mut self) {
        let dir = self.dir.path().join("tls");
        run_ok(
            Command::new(controller_exe())
                .args(["tls-init", "--name", "localhost", "--name", "127.0.0.1", "--dir"])
                .arg(&dir),
        );
        self.tls = Some(dir);
    }

    /// The CA file clients trust, with TLS.
    pub fn ca(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|d| d.join("ca.pem"))
    }

    /// The directories, a port and a token, but no processes yet.
    pub fn bare() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let shim = workspace_bin("ffcluster-shim");
        symlink(&shim, bin.join("ffmpeg")).unwrap();
        symlink(&shim, bin.join("ffprobe")).unwrap();
        Cluster {
            dir,
            port: free_port(),
            token: format!("test-token-{}", std::process::id()),
            controller: None,
            nodes: Vec::new(),
            bin,
            work,
            tls: None,
        }
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    pub fn start_controller(&mut self) {
        let mut cmd = isolated(Command::new(controller_exe()));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("FFCLUSTER_CONFIG", "/dev/null")
            .env("FFCLUSTER_TOKEN", &self.token)
            .env("RUST_LOG", "info");
        if let Some(d) = &self.tls {
            cmd.arg("--tls-cert").arg(d.join("server.pem")).arg("--tls-key").arg(d.join("server.key"));
        }
        self.spawn_controller(cmd);
    }

    /// Starts `cmd` (an `ffcluster serve`), logging to `controller.log`, and waits
    /// until something listens on `self.port`.
    pub fn spawn_controller(&mut self, mut cmd: Command) {
        let log = std::fs::File::create(self.dir.path().join("controller.log")).unwrap();
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("start ffcluster serve");
        self.controller = Some(Proc { child, name: "controller".into() });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "controller did not listen: {}", self.log("controller.log"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn add_node(&mut self, name: &str) {
        self.add_node_with(name, &real("ffmpeg"));
    }

    /// A node whose ffmpeg is `ffmpeg`, another build than the rest of the
    /// cluster's for a mixed cluster.
    pub fn add_node_with(&mut self, name: &str, ffmpeg: &Path) {
        let scratch = self.dir.path().join(format!("scratch-{name}"));
        let mut cmd = isolated(Command::new(workspace_bin("ffcluster-node")));
        cmd.args(["--controller", &self.url(), "--token", &self.token, "--name", name, "--slots", "1"])
            .arg("--scratch")
            .arg(&scratch)
            .arg("--ffmpeg")
            .arg(ffmpeg)
            .env("FFCLUSTER_NODE_CONFIG", "/dev/null")
            // debug: the node logs the arguments its ffmpeg really runs.
            .env("RUST_LOG", "info,ffcluster_node=debug");
        if let Some(ca) = self.ca() {
            cmd.arg("--tls-ca").arg(ca);
        }
        self.spawn_node(name, cmd);
    }

    /// Starts `cmd` (an `ffcluster-node`), logging to `<name>.log`.
    pub fn spawn_node(&mut self, name: &str, mut cmd: Command) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("start ffcluster-node");
        self.nodes.push(Proc { child, name: name.into() });
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".log") {
                s.push_str(&format!("==== {n}\n{}\n", self.log(&n)));
            }
        }
        s
    }

    /// `ffcluster status --json`.
    /// The admin CLI (`ffcluster ARGS`) against this cluster: its URL, token
    /// and CA given by the environment, as an admin's shell would.
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = isolated(Command::new(controller_exe()));
        cmd.args(args).env("FFCLUSTER_CONTROLLER", self.url()).env("FFCLUSTER_TOKEN", &self.token);
        if let Some(ca) = self.ca() {
            cmd.env("FFCLUSTER_TLS_CA", ca);
        }
        cmd.output().unwrap()
    }

    /// [`Cluster::admin`] that must succeed; its stdout.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "ffcluster {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.all_logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.admin_ok(&["status", "--json"])).expect("status JSON")
    }

    /// A `/metrics` scrape (Prometheus text), with the token.
    pub fn metrics(&self) -> String {
        let auth = format!("Bearer {}", self.token);
        let url = format!("{}/metrics", self.url());
        let trust = ffcluster::tls::Trust::new(self.ca());
        let r = ffcluster::controller::http_client::get(&url, &[("Authorization", &auth)], &trust).unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        // OpenMetrics 1.0, which prometheus-client writes: its content type
        // and its end marker, so that a scrape knows it got the whole text.
        assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text; version=1.0.0")));
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        text
    }

    pub fn node_names(&self) -> Vec<String> {
        let s = self.status();
        let mut names: Vec<String> =
            s["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        names
    }

    pub fn wait_nodes(&self, n: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.node_names().len() == n {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "expected {n} nodes; logs:\n{}", self.all_logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The shim as Jellyfin runs it: `ffmpeg` from the symlink directory, with the
    /// cluster configured by environment, offloading whole jobs
    /// (`FFCLUSTER_MODE=whole`; tests/split.rs sets `split`).
    pub fn shim(&self) -> Command {
        let mut c = Command::new(self.bin.join("ffmpeg"));
        c.current_dir(&self.work)
            .env("FFCLUSTER_CONTROLLER", self.url())
            .env("FFCLUSTER_TOKEN", &self.token)
            .env("FFCLUSTER_FFMPEG", real("ffmpeg"))
            .env("FFCLUSTER_FFPROBE", real("ffprobe"))
            .env("FFCLUSTER_PROBE_CACHE", "off")
            .env("FFCLUSTER_LOG", self.dir.path().join("shim.log"))
            .env("FFCLUSTER_MODE", "whole")
            .env_remove("FFCLUSTER_CONFIG");
        match self.ca() {
            Some(ca) => c.env("FFCLUSTER_TLS_CA", ca),
            None => c.env_remove("FFCLUSTER_TLS_CA"),
        };
        c
    }

    /// Waits (up to 20 s) until a published file exists.
    pub fn wait_for_file(&self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !path.exists() {
            assert!(Instant::now() < deadline, "{} was not published: {}", path.display(), self.all_logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// ffmpeg processes whose parent is one of the nodes.
    pub fn remote_ffmpegs(&self) -> Vec<i32> {
        let nodes: Vec<i32> = self.nodes.iter().map(Proc::pid).collect();
        children_named(&nodes, "ffmpeg")
    }

    pub fn wait_no_remote_ffmpeg(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.remote_ffmpegs().is_empty() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "remote ffmpeg still running after {limit:?}: {:?}",
                self.remote_ffmpegs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// `cmd` without the `FFCLUSTER_*` variables of the environment running the
/// tests, so that a developer's own settings do not leak into the cluster.
pub fn isolated(mut cmd: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FFCLUSTER_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs `ffcluster bench <args> --json <json>` (a benchmark that starts its
/// own cluster), isolated, with `tmp` as its temporary directory; returns its
/// standard output once it has exited 0 (and shows it).
pub fn run_bench(args: &[&str], json: &Path, tmp: &Path) -> String {
    let out = isolated(Command::new(controller_exe()))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(json)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffcluster bench {args:?} failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    stdout
}

/// A passing benchmark removes its working directory from `tmp`.
pub fn assert_bench_dir_removed(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ffcluster-bench-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// One running (not zombie) process, as `/proc/PID/stat` describes it.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: i32,
    pub comm: String,
    pub ppid: i32,
}

impl Process {
    /// Its working directory, if it can be read.
    pub fn cwd(&self) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{}/cwd", self.pid)).ok()
    }

    /// Its arguments, joined by NULs.
    pub fn cmdline(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default()).into_owned()
    }
}

/// Every process running now, zombies left out.
pub fn processes() -> Vec<Process> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid …: comm may contain spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("").to_owned();
        let mut fields = tail.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if state != "Z" {
            out.push(Process { pid, comm, ppid });
        }
    }
    out
}

/// Processes named `name` whose parent is in `parents`.
pub fn children_named(parents: &[i32], name: &str) -> Vec<i32> {
    processes().into_iter().filter(|p| p.comm == name && parents.contains(&p.ppid)).map(|p| p.pid).collect()
}

/// Runs a command to completion, panicking with its stderr on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A clip like a small movie: H.264 video with a moving pattern and AAC audio.
pub fn make_clip(path: &Path, seconds: u32, size: &str, container_args: &[&str]) {
    let mut c = Command::new(real("ffmpeg"));
    c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate=24:duration={seconds}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={seconds}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "48", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "96k"])
        .args(container_args)
        .arg(path);
    run_ok(&mut c);
}

/// Jellyfin 10.11's HLS template (CONTRACT.md §5.3) with libx264, for `input`,
/// writing `<dir>/<md5>.m3u8` and its segments.
pub fn jellyfin_hls(input: &Path, dir: &Path, md5: &str, fmp4: bool, seg: u32) -> Vec<String> {
    let ext = if fmp4 { "mp4" } else { "ts" };
    let mut a: Vec<String> =
        ["-analyzeduration", "200M", "-probesize", "1G", "-i"].iter().map(|s| s.to_string()).collect();
    a.push(format!("file:{}", input.display()));
    for s in [
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-threads",
        "0",
        "-map",
        "0:0",
        "-map",
        "0:1",
        "-map",
        "-0:s",
        "-codec:v:0",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        "-maxrate",
        "2000000",
        "-bufsize",
        "4000000",
        "-profile:v:0",
        "high",
        "-level",
        "41",
        "-x264opts:0",
        "subme=0:me_range=16:rc_lookahead=10:me=hex:open_gop=0",
    ] {
        a.push(s.into());
    }
    a.push("-force_key_frames:0".into());
    a.push(format!("expr:gte(t,n_forced*{seg})"));
    for s in [
        "-sc_threshold:v:0",
        "0",
        "-vf",
        "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709,scale=trunc(min(max(iw\\,ih*a)\\,min(640\\,360*a))/2)*2:trunc(min(max(iw/a\\,ih)\\,min(640/a\\,360))/2)*2,format=yuv420p",
        "-codec:a:0",
        "aac",
        "-ac",
        "2",
        "-ab",
        "128000",
        "-af",
        "volume=2",
        "-copyts",
        "-avoid_negative_ts",
        "disabled",
        "-max_muxing_queue_size",
        "2048",
        "-f",
        "hls",
        "-max_delay",
        "5000000",
        "-hls_time",
    ] {
        a.push(s.into());
    }
    a.push(seg.to_string());
    a.push("-hls_segment_type".into());
    if fmp4 {
        a.extend(["fmp4".into(), "-hls_fmp4_init_filename".into(), format!("{md5}-1.mp4")]);
    } else {
        a.push("mpegts".into());
    }
    a.extend(["-start_number".into(), "0".into(), "-hls_segment_filename".into()]);
    a.push(format!("{}/{md5}%d.{ext}", dir.display()));
    a.extend(["-hls_playlist_type".into(), "vod".into(), "-hls_list_size".into(), "0".into()]);
    if fmp4 {
        a.extend(["-hls_segment_options".into(), "movflags=+frag_discont".into()]);
    }
    a.extend(["-y".into(), format!("{}/{md5}.m3u8", dir.display())]);
    a
}

/// The `#EXTINF` durations of a playlist.
pub fn extinf(playlist: &Path) -> Vec<f64> {
    extinf_text(&std::fs::read_to_string(playlist).unwrap_or_else(|e| panic!("{}: {e}", playlist.display())))
}

/// The `#EXTINF` durations of a playlist's text.
pub fn extinf_text(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| l.trim_end_matches(',').split(',').next().unwrap().parse().unwrap())
        .collect()
}

/// Sorted file names in `dir`.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Decodes a file (or an HLS playlist) fully; returns the number of video frames.
/// Fails on any decode error.
pub fn decode_frames(path: &Path) -> u64 {
    let out = run_ok(
        Command::new(real("ffmpeg"))
            .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
            .arg(path)
            .args(["-map", "0:v:0", "-f", "null", "-"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // Matroska's millisecond timestamps make the null muxer (not the decoder)
    // complain about equal dts once rescaled; that is no decode error.
    let err: Vec<&str> = err.lines().filter(|l| !l.contains("non monotonically increasing dts to muxer")).collect();
    assert!(err.is_empty(), "decode errors in {}: {}", path.display(), err.join("\n"));
    let out = run_ok(
        Command::new(real("ffprobe"))
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
            .arg(path),
    );
    // An HLS playlist is one program per variant: ffprobe prints the stream once per program.
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|l| l.trim().trim_end_matches(','))
        .find(|l| !l.is_empty())
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("frame count of {}: {text:?}", path.display()))
}

/// Reads a child's stderr on a thread, collecting lines (`\r` or `\n` ended).
pub fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let err = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut r = BufReader::new(err);
        let mut all = Vec::new();
        let mut buf = Vec::new();
        while r.read_until(b'\r', &mut buf).map(|n| n > 0).unwrap_or(false) {
            all.extend_from_slice(&buf);
            buf.clear();
        }
        String::from_utf8_lossy(&all).into_owned()
    })
}
