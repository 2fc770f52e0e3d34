//! System tests of TLS: a controller serving HTTPS with a certificate from a
//! private CA made by `ffcluster tls-init`, real nodes and the shim trusting that
//! CA (`tls_ca`), whole and split jobs compared with direct ffmpeg by decoding;
//! and every way a client without the right trust, or without TLS, is refused.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ffcluster::controller::http_client;
use ffcluster::tls::Trust;
use support::cluster::*;

/// Runs `args(dir)` directly and through the shim (`mode`), and checks the
/// outputs have the same files and decode to the same frames.
fn matches_direct(c: &Cluster, mode: &str, name: &str, args: impl Fn(&Path) -> Vec<String>) -> u64 {
    let (direct, cluster) = (c.work.join(format!("{name}-direct")), c.work.join(format!("{name}-cluster")));
    std::fs::create_dir_all(&direct).unwrap();
    std::fs::create_dir_all(&cluster).unwrap();
    run_ok(Command::new(real("ffmpeg")).args(args(&direct)).stdin(Stdio::null()));
    let out = c.shim().env("FFCLUSTER_MODE", mode).args(args(&cluster)).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shim failed: {stderr}\n{}", c.all_logs());
    assert_eq!(names(&direct), names(&cluster), "file names differ");
    let playlist = |d: &Path| d.join(format!("{name}.m3u8"));
    let frames = decode_frames(&playlist(&direct));
    assert_eq!(frames, decode_frames(&playlist(&cluster)), "frame count");
    frames
}

#[test]
fn whole_and_split_jobs_run_over_tls() {
    let c = Cluster::start_tls(2);
    assert!(c.url().starts_with("https://localhost:"), "{}", c.url());
    let input = c.work.join("movie.mkv");
    make_clip(&input, 12, "640x360", &[]);

    // (a) A whole job: one node reads the input from the relay over https.
    let frames = matches_direct(&c, "whole", "whole", |dir| jellyfin_hls(&input, dir, "whole", false, 2));
    assert_eq!(frames, 288, "12 s at 24 fps");
    let status = c.status();
    let job = &status["jobs"][0];
    assert_eq!((job["mode"].as_str(), job["state"].as_str()), (Some("whole"), Some("done")), "{job}");

    // (b) A split job: chunks on both nodes, audio on one, joined by the finisher.
    let frames = matches_direct(&c, "split", "split", |dir| jellyfin_hls(&input, dir, "split", false, 3));
    assert_eq!(frames, 288);
    let status = c.status();
    let job = status["jobs"].as_array().unwrap().iter().find(|j| j["mode"] == "split").expect("a split job");
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["nodes"].as_array().unwrap().len(), 2, "both nodes took chunks: {job}");

    // The nodes' ffmpegs read the relay over https and verify the controller
    // against the CA: the options come from the node's argument building.
    let ca = c.ca().unwrap();
    let relay = format!("https://localhost:{}/api/v1/files/", c.port);
    let verified = format!("\"-tls_verify\", \"1\", \"-ca_file\", \"{}\", \"-i\", \"{relay}", ca.display());
    let logs = c.all_logs();
    assert!(logs.matches(&verified).count() >= 3, "no verified https relay inputs ({verified}):\n{logs}");
    assert!(!logs.contains("\"-i\", \"http://"), "a plain relay input:\n{logs}");

    // (c) The admin commands over https, in text too, by IP address (the
    // certificate names 127.0.0.1 as well).
    let out = run_ok(
        isolated(Command::new(controller_exe()))
            .args(["nodes", "--controller", &format!("https://127.0.0.1:{}", c.port), "--token", &c.token])
            .env("FFCLUSTER_TLS_CA", &ca),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("node0") && text.contains("node1"), "{text}");

    // (d) Capability probes answered by a node, through the controller over https.
    let probe = c.shim().env("FFCLUSTER_PROBES", "cluster").arg("-version").stdin(Stdio::null()).output().unwrap();
    let local = run_ok(Command::new(real("ffmpeg")).arg("-version").stdin(Stdio::null()));
    assert_eq!(probe.stdout, local.stdout, "-version through the cluster");
    let log = c.log("shim.log");
    assert!(log.contains("probe -version answered by node"), "{log}");
}

/// Starts node `name` against `controller`, trusting `ca` if given.
fn spawn_node_at(c: &mut Cluster, name: &str, controller: &str, ca: Option<&Path>) {
    let mut cmd = isolated(Command::new(workspace_bin("ffcluster-node")));
    cmd.args(["--controller", controller, "--token", &c.token, "--name", name, "--ffmpeg"])
        .arg(real("ffmpeg"))
        .arg("--scratch")
        .arg(c.dir.path().join(format!("scratch-{name}")))
        .env("FFCLUSTER_NODE_CONFIG", "/dev/null")
        .env("RUST_LOG", "info");
    if let Some(ca) = ca {
        cmd.arg("--tls-ca").arg(ca);
    }
    c.spawn_node(name, cmd);
}

/// Starts a node without `tls_ca` against `controller`, and returns its log once
/// it has failed to connect.
fn failed_node(c: &mut Cluster, name: &str, controller: &str) -> String {
    spawn_node_at(c, name, controller, None);
    let log = format!("{name}.log");
    // A node measures its ffmpeg before it connects: long on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !c.log(&log).contains("cannot connect") {
        assert!(Instant::now() < deadline, "{}", c.log(&log));
        std::thread::sleep(Duration::from_millis(100));
    }
    c.log(&log)
}

/// A TCP relay on loopback to `port` that keeps a copy of every byte that
/// crosses it, both ways: what a capture on the wire would see.
struct Tap {
    port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    fn to(port: u16) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tap = Tap { port: listener.local_addr().unwrap().port(), seen: seen.clone() };
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                let pairs = [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)];
                for (mut from, mut to) in pairs {
                    let seen = seen.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        tap
    }

    fn saw(&self, needle: &str) -> bool {
        self.seen.lock().unwrap().windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    fn bytes(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[test]
fn the_wire_carries_no_plaintext() {
    let mut c = Cluster::bare();
    c.make_certs();
    c.start_controller();
    // The node reaches the controller, and its ffmpeg the relay, through the tap.
    let tap = Tap::to(c.port);
    let via_tap = format!("https://localhost:{}", tap.port);
    let ca = c.ca().unwrap();
    spawn_node_at(&mut c, "tapped", &via_tap, Some(&ca));
    c.wait_nodes(1, Duration::from_secs(90));
    let input = c.work.join("movie.mkv");
    make_clip(&input, 4, "640x360", &[]);
    let out = c.work.join("out");
    std::fs::create_dir_all(&out).unwrap();
    run_ok(c.shim().args(jellyfin_hls(&input, &out, "tapped", false, 2)).stdin(Stdio::null()));
    assert_eq!(decode_frames(&out.join("tapped.m3u8")), 96);
    let input_size = std::fs::metadata(&input).unwrap().len() as usize;
    assert!(tap.bytes() > input_size, "the input and outputs crossed the tap: {} bytes", tap.bytes());
    for secret in [c.token.as_str(), "Bearer", "/api/v1/files/", "#EXTM3U", "libx264"] {
        assert!(!tap.saw(secret), "{secret:?} crossed the wire in clear");
    }
    // The tap does see plaintext when there is some: a plain request's token.
    let plain = format!("http://127.0.0.1:{}", tap.port);
    let _ =
        http_client::get(&format!("{plain}/healthz"), &[("Authorization", "Bearer visible-secret")], &Trust::default());
    assert!(tap.saw("visible-secret"));
}

#[test]
fn clients_without_trust_or_tls_are_refused() {
    let mut c = Cluster::bare();
    c.make_certs();
    c.start_controller();
    c.add_node("trusted");
    c.wait_nodes(1, Duration::from_secs(90));
    let plain = format!("http://127.0.0.1:{}", c.port);
    // A client that connects and never starts its handshake holds up nobody:
    // everything below is served while it waits.
    let _silent = std::net::TcpStream::connect(("127.0.0.1", c.port)).unwrap();

    // A node without the CA: the certificate problem is named, it never registers.
    let url = c.url();
    let log = failed_node(&mut c, "untrusting", &url);
    assert!(log.contains("signed by an unknown authority") && log.contains("tls_ca"), "{log}");
    assert_eq!(c.node_names(), ["trusted"]);

    // A node with the https controller given as http://: refused in words.
    let log = failed_node(&mut c, "plain", &plain);
    assert!(log.contains("400"), "{log}");
    assert_eq!(c.node_names(), ["trusted"]);

    // What the node gives its ffmpeg for an https relay input really verifies
    // the controller: with the right CA the handshake passes (the relay then
    // answers 404 for an unknown job), with another CA it fails.
    let ffmpeg_relay = |ca: &Path| {
        let out = Command::new(real("ffmpeg"))
            .args(["-hide_banner", "-nostdin", "-tls_verify", "1", "-ca_file"])
            .arg(ca)
            .args(["-i", &format!("https://localhost:{}/api/v1/files/nojob/0", c.port), "-f", "null", "-"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = ffmpeg_relay(&c.ca().unwrap());
    assert!(err.contains("404"), "{err}");
    let wrong = c.dir.path().join("wrong-ca");
    run_ok(Command::new(controller_exe()).args(["tls-init", "--name", "localhost", "--dir"]).arg(&wrong));
    let err = ffmpeg_relay(&wrong.join("ca.pem"));
    assert!(!err.contains("404") && err.to_lowercase().contains("verif"), "{err}");

    // Plain HTTP is not served, not even the relay: a 400 that says to use https.
    for path in ["/api/v1/status", "/api/v1/files/x/0", "/healthz"] {
        let auth = format!("Bearer {}", c.token);
        let r = http_client::get(&format!("{plain}{path}"), &[("Authorization", &auth)], &Trust::default()).unwrap();
        assert_eq!(r.status, 400, "{path}");
        assert!(String::from_utf8_lossy(&r.body).contains("https://"), "{path}: {r:?}");
    }
    let out = isolated(Command::new(controller_exe()))
        .args(["status", "--controller", &plain, "--token", &c.token])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTPS only"), "{out:?}");

    // `status` without the CA names the problem and the URL.
    let out = isolated(Command::new(controller_exe()))
        .args(["status", "--controller", &c.url(), "--token", &c.token])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown authority") && err.contains(&c.url()), "{err}");

    // An https client against a plain-HTTP controller is told so.
    let mut p = Cluster::bare();
    p.start_controller();
    let out = isolated(Command::new(controller_exe()))
        .args(["status", "--controller", &format!("https://127.0.0.1:{}", p.port), "--token", &p.token])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("does not speak TLS"), "{err}");

    // A certificate for another name: the mismatch is named.
    let mut other = Cluster::bare();
    let other_tls = other.dir.path().join("tls");
    run_ok(Command::new(controller_exe()).args(["tls-init", "--name", "other.invalid", "--dir"]).arg(&other_tls));
    other.tls = Some(other_tls.clone());
    other.start_controller();
    let out = isolated(Command::new(controller_exe()))
        .args(["status", "--controller", &format!("https://127.0.0.1:{}", other.port), "--token", &other.token])
        .arg("--tls-ca")
        .arg(other_tls.join("ca.pem"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not issued for the host name"), "{err}");

    // The shim without the CA runs the job here, and its log says why.
    let input = c.work.join("clip.mkv");
    make_clip(&input, 2, "320x240", &[]);
    let out_file = c.work.join("local.mkv");
    let mut shim = c.shim();
    shim.env_remove("FFCLUSTER_TLS_CA").args(["-i"]).arg(&input).args(["-c:v", "libx264", "-y"]).arg(&out_file);
    run_ok(shim.stdin(Stdio::null()));
    assert_eq!(decode_frames(&out_file), 48);
    let log = c.log("shim.log");
    assert!(log.contains("unknown authority"), "{log}");
}

#[test]
fn a_certificate_without_its_key_is_refused_at_start() {
    let mut c = Cluster::bare();
    c.make_certs();
    let tls = c.tls.clone().unwrap();
    for (flag, file, missing) in [("--tls-cert", "server.pem", "tls_key"), ("--tls-key", "server.key", "tls_cert")] {
        let out = isolated(Command::new(controller_exe()))
            .args(["serve", "--config", "/dev/null", "--token", "t0123456789abcdef", "--listen"])
            .arg(format!("127.0.0.1:{}", c.port))
            .arg(flag)
            .arg(tls.join(file))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(&format!("but {missing} is not")), "{flag}: {err}");
    }
    // The key of another certificate is refused too, naming both files.
    let other = c.dir.path().join("other");
    run_ok(Command::new(controller_exe()).args(["tls-init", "--name", "x.invalid", "--dir"]).arg(&other));
    let out = isolated(Command::new(controller_exe()))
        .args(["serve", "--config", "/dev/null", "--token", "t0123456789abcdef", "--listen"])
        .arg(format!("127.0.0.1:{}", c.port))
        .arg("--tls-cert")
        .arg(tls.join("server.pem"))
        .arg("--tls-key")
        .arg(other.join("server.key"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("server.pem") && err.contains("server.key"), "{err}");
    // --check-config shows where the files come from.
    let out = run_ok(
        isolated(Command::new(controller_exe()))
            .args(["serve", "--config", "/dev/null", "--token", "t", "--check-config"])
            .env("FFCLUSTER_TLS_CERT", tls.join("server.pem"))
            .env("FFCLUSTER_TLS_KEY", tls.join("server.key")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tls_cert") && text.contains("# from FFCLUSTER_TLS_CERT"), "{text}");
}
