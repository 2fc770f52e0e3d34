//! Configuration, black-box: real `ffcluster serve`, `ffcluster-node` and shim
//! processes configured by TOML files, environment variables and flags, checked
//! by where they listen, which token they accept and what `ffcluster status`
//! reports. Also runs the example files in `contrib/config/` through the real
//! programs so that they cannot rot.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::cluster::*;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/config").join(name)
}

/// `ffcluster status --json` against `port` with `token`: did it succeed?
fn status_ok(port: u16, token: &str) -> bool {
    let out = Command::new(controller_exe())
        .args(["status", "--json", "--controller", &format!("http://127.0.0.1:{port}"), "--token", token])
        .output()
        .unwrap();
    out.status.success()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn serve() -> Command {
    let mut cmd = isolated(Command::new(controller_exe()));
    cmd.arg("serve").env_remove("RUST_LOG");
    cmd
}

fn node() -> Command {
    let mut cmd = isolated(Command::new(workspace_bin("ffcluster-node")));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs a command that must fail at start: its output, once it has exited.
fn fails(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} should have failed; stdout: {}", String::from_utf8_lossy(&out.stdout));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn controller_configured_by_file_alone() {
    let mut c = Cluster::bare();
    let file = c.dir.path().join("controller.toml");
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:{}\"\ntoken = \"{}\"\nlog_level = \"warn\"\n", c.port, c.token),
    )
    .unwrap();
    let mut cmd = serve();
    cmd.arg("--config").arg(&file);
    c.spawn_controller(cmd);
    // It listens where the file says, and takes the file's token and no other.
    assert!(status_ok(c.port, &c.token), "{}", c.all_logs());
    assert!(!status_ok(c.port, "not-the-token"), "a wrong token was accepted");
    assert_eq!(c.status()["nodes"], serde_json::json!([]));
    // At the file's log level, warn, the controller logs nothing about starting.
    let log = c.log("controller.log");
    assert!(!log.contains("INFO") && !log.contains("controller listening"), "log_level was not applied: {log}");
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let file = dir.path().join("controller.toml");
    std::fs::write(&file, format!("listen = \"127.0.0.1:{file_port}\"\ntoken = \"file-token-0123456789\"\n")).unwrap();

    // The file named by FFCLUSTER_CONFIG; the environment's listen and token win.
    let mut c = Cluster::bare();
    c.port = env_port;
    c.token = "env-token-0123456789".into();
    let mut cmd = serve();
    cmd.env("FFCLUSTER_CONFIG", &file)
        .env("FFCLUSTER_LISTEN", format!("127.0.0.1:{env_port}"))
        .env("FFCLUSTER_TOKEN", &c.token);
    c.spawn_controller(cmd);
    assert!(status_ok(env_port, "env-token-0123456789"), "{}", c.all_logs());
    assert!(!status_ok(env_port, "file-token-0123456789"), "the file's token beat the environment's");
    assert!(!listening(file_port), "listening where the file says despite FFCLUSTER_LISTEN");
    drop(c);

    // Flags beat the environment: --listen and --token-file.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "flag-token-0123456789\n").unwrap();
    let mut c = Cluster::bare();
    c.port = flag_port;
    c.token = "flag-token-0123456789".into();
    let mut cmd = serve();
    cmd.env("FFCLUSTER_CONFIG", &file)
        .env("FFCLUSTER_LISTEN", format!("127.0.0.1:{env_port}"))
        .env("FFCLUSTER_TOKEN", "env-token-0123456789")
        .args(["--listen", &format!("127.0.0.1:{flag_port}"), "--token-file"])
        .arg(&secret);
    c.spawn_controller(cmd);
    assert!(status_ok(flag_port, "flag-token-0123456789"), "{}", c.all_logs());
    assert!(!status_ok(flag_port, "env-token-0123456789"), "the environment's token beat --token-file");
    assert!(!listening(env_port) && !listening(file_port), "listening where the flag does not say");

    // --check-config says where each setting came from.
    let out = run_ok(
        serve()
            .arg("--check-config")
            .env("FFCLUSTER_CONFIG", &file)
            .env("FFCLUSTER_TOKEN", "env-token-0123456789")
            .args(["--dead-after", "5s"]),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| report.lines().find(|l| l.starts_with(key)).unwrap_or_default().to_owned();
    assert!(line("listen").contains(&file_port.to_string()) && line("listen").contains(file.to_str().unwrap()));
    assert!(line("token").contains("FFCLUSTER_TOKEN") && !report.contains("env-token"), "{report}");
    assert!(line("dead_after").contains("\"5s\"") && line("dead_after").contains("--dead-after"), "{report}");
    assert!(line("heartbeat_interval").contains("\"1s\"") && line("heartbeat_interval").contains("default"));
}

#[test]
fn mistakes_fail_at_start_and_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("controller.toml");
    let port = free_port();
    std::fs::write(&file, format!("lisen = \"127.0.0.1:{port}\"\ntoken = \"0123456789abcdef\"\n")).unwrap();
    let started = Instant::now();
    let out = fails(serve().arg("--config").arg(&file));
    let err = stderr(&out);
    assert!(err.contains("unknown field `lisen`") && err.contains(file.to_str().unwrap()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10) && !listening(port));

    // A bad value names the key and where it came from.
    std::fs::write(&file, "token = \"0123456789abcdef\"\nheartbeat_interval = \"often\"\n").unwrap();
    let err = stderr(&fails(serve().arg("--config").arg(&file)));
    assert!(err.contains("heartbeat_interval") && err.contains(file.to_str().unwrap()), "{err}");
    let err = stderr(&fails(serve().arg("--config").arg(&file).env("FFCLUSTER_HEARTBEAT_INTERVAL", "5")));
    assert!(err.contains("heartbeat_interval") && err.contains("FFCLUSTER_HEARTBEAT_INTERVAL"), "{err}");
    let err = stderr(&fails(serve().arg("--config").arg(dir.path().join("missing.toml"))));
    assert!(err.contains("missing.toml"), "{err}");

    // The node checks its file the same way.
    let node_file = dir.path().join("node.toml");
    std::fs::write(&node_file, "controller = \"http://127.0.0.1:1\"\ntoken = \"t\"\nslot = 2\n").unwrap();
    let err = stderr(&fails(node().arg("--config").arg(&node_file)));
    assert!(err.contains("unknown field `slot`") && err.contains(node_file.to_str().unwrap()), "{err}");
    std::fs::write(&node_file, "controller = \"http://127.0.0.1:1\"\ntoken = \"t\"\n").unwrap();
    let err = stderr(&fails(node().env("FFCLUSTER_NODE_CONFIG", &node_file).env("FFCLUSTER_NODE_SLOTS", "0")));
    assert!(err.contains("`slots`") && err.contains("FFCLUSTER_NODE_SLOTS"), "{err}");
}

#[test]
fn node_configured_by_file_alone() {
    let mut c = Cluster::bare();
    c.start_controller();
    let file = c.dir.path().join("node.toml");
    let scratch = c.dir.path().join("scratch-from-file");
    std::fs::write(
        &file,
        format!(
            "controller = {:?}\ntoken = {:?}\nname = \"from-file\"\nslots = 3\nscratch = {:?}\nffmpeg = {:?}\n\
             path_map = [\"/nowhere=/nowhere\"]\n",
            c.url(),
            c.token,
            scratch.to_str().unwrap(),
            real("ffmpeg").to_str().unwrap(),
        ),
    )
    .unwrap();
    let mut cmd = node();
    cmd.arg("--config").arg(&file);
    c.spawn_node("from-file", cmd);
    c.wait_nodes(1, Duration::from_secs(30));
    let status = c.status();
    let n = &status["nodes"][0];
    assert_eq!(n["name"], "from-file", "{status}");
    assert_eq!(n["slots"], 3, "{status}");
    assert!(scratch.is_dir(), "the file's scratch directory was not used");
}

/// Every example file, with all its settings switched on, is accepted by the
/// program that reads it; so is each file as shipped (everything commented out).
#[test]
fn example_files_are_accepted_by_the_programs() {
    let dir = tempfile::tempdir().unwrap();
    let activate = |name: &str| {
        let text = std::fs::read_to_string(example(name)).unwrap();
        // token and token_file are two spellings of one setting: switch on the token.
        let path = dir.path().join(name);
        std::fs::write(&path, ffcluster::config::activate_example(&text, &["token_file"])).unwrap();
        path
    };

    let controller = activate("controller.toml");
    let out = run_ok(serve().arg("--check-config").arg("--config").arg(&controller));
    let report = String::from_utf8_lossy(&out.stdout);
    let from_file = format!("# from {}", controller.display());
    for key in ["listen", "token", "heartbeat_interval", "dead_after", "hello_timeout", "log_level"] {
        let line = report.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_default();
        assert!(line.ends_with(&from_file), "{key} not taken from the example: {report}");
    }
    run_ok(serve().arg("--check-config").arg("--config").arg(example("controller.toml")).env("FFCLUSTER_TOKEN", "t"));

    // The example's ffmpeg is a bare name looked up on PATH; use the one the tests use.
    let ffmpeg = real("ffmpeg");
    let node_file = activate("node.toml");
    let out =
        run_ok(node().arg("--check-config").arg("--config").arg(&node_file).env("FFCLUSTER_NODE_FFMPEG", &ffmpeg));
    let report = String::from_utf8_lossy(&out.stdout);
    let from_file = format!("# from {}", node_file.display());
    for key in ["controller", "token", "name", "slots", "scratch", "path_map", "log_level"] {
        let line = report.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_default();
        assert!(line.ends_with(&from_file), "{key} not taken from the example: {report}");
    }
    run_ok(
        node()
            .args(["--check-config", "--config"])
            .arg(example("node.toml"))
            .args(["--controller", "http://127.0.0.1:1", "--token", "t"])
            .env("FFCLUSTER_NODE_FFMPEG", &ffmpeg),
    );

    // The shim reports a bad file in its log and carries on, so read the log.
    let c = Cluster::bare();
    let shim_file = activate("shim.toml");
    let log = dir.path().join("shim.log");
    let out = isolated(Command::new(c.bin.join("ffmpeg")))
        .arg("-version")
        .env("FFCLUSTER_CONFIG", &shim_file)
        .env("FFCLUSTER_FFMPEG", &ffmpeg)
        .env("FFCLUSTER_FFPROBE", real("ffprobe"))
        .env("FFCLUSTER_PROBE_CACHE", "off")
        .env("FFCLUSTER_MODE", "local")
        .env("FFCLUSTER_LOG", &log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(&format!("config: {}", shim_file.display())), "{log}");
    assert!(!log.contains("invalid") && !log.contains("cannot read"), "{log}");
}
