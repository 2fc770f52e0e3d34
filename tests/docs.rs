//! The README is the front door: it must document every reason code the classifier
//! can give, and every command, flag and environment variable of the three programs.

use ffcluster::ffmpeg::Reason;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn readme_lists_every_reason_code() {
    let readme = read("README.md");
    for r in Reason::ALL {
        assert!(
            readme.contains(&format!("| `{}` | {} |", r.as_str(), r.decision().as_str())),
            "README lacks {}",
            r.as_str()
        );
    }
}

#[test]
fn readme_lists_every_variable() {
    let readme = read("README.md");
    for file in ["shim/src/config.rs", "node/src/config.rs", "src/serve.rs", "src/admin.rs"] {
        let source = read(file);
        let vars: Vec<&str> = source
            .split('"')
            .filter(|s| s.starts_with("FFCLUSTER_") && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        assert!(!vars.is_empty(), "no variables found in {file}");
        for v in vars {
            assert!(readme.contains(&format!("`{v}`")), "README lacks {v} (read in {file})");
        }
    }
}

#[test]
fn readme_lists_every_command_and_flag() {
    let readme = read("README.md");
    for cmd in ["ffcluster serve", "ffcluster status", "ffcluster demo", "ffcluster explain", "ffcluster-node"] {
        assert!(readme.contains(&format!("`{cmd}")), "README lacks {cmd}");
    }
    for cmd in [
        "ffcluster tls-init",
        "ffcluster nodes",
        "ffcluster jobs",
        "ffcluster log",
        "--follow",
        "/api/v1/jobs/{id}/log",
        "ffcluster drain",
        "ffcluster undrain",
        "--undo",
        "/metrics",
        "ffcluster bench cluster",
        "ffcluster bench split",
        "ffcluster bench live",
        "ffcluster bench soak",
        "FFCLUSTER_LIVE_PIECE",
    ] {
        assert!(readme.contains(cmd), "README lacks {cmd}");
    }
    for flag in [
        "--listen",
        "--controller",
        "--token",
        "--name",
        "--slots",
        "--scratch",
        "--ffmpeg",
        "--path-map",
        "--hardware",
        "--translate",
        "--config",
        "--check-config",
        "--token-file",
        "--heartbeat-interval",
        "--dead-after",
        "--hello-timeout",
        "--log-level",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
    ] {
        assert!(readme.contains(&format!("`{flag}")), "README lacks {flag}");
    }
}
