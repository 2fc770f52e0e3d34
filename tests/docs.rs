//! The documentation (README.md and every `contrib/docs/*.md`, read as one text) must
//! document every reason code the classifier can give, and every command, flag and
//! environment variable of the three programs.

use ffcluster::ffmpeg::Reason;
use std::path::{Path, PathBuf};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// README.md and every Markdown file under `contrib/docs/`, in name order.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<_> = std::fs::read_dir(root.join("contrib/docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "no documentation under contrib/docs");
    pages.insert(0, root.join("README.md"));
    pages
}

/// The documentation set as one text: README.md, then every `contrib/docs/*.md`.
fn documentation() -> String {
    pages().iter().map(|p| std::fs::read_to_string(p).unwrap()).collect::<Vec<_>>().join("\n")
}

#[test]
fn docs_list_every_reason_code() {
    let docs = documentation();
    for r in Reason::ALL {
        assert!(
            docs.contains(&format!("| `{}` | {} |", r.as_str(), r.decision().as_str())),
            "the docs lack {}",
            r.as_str()
        );
    }
}

#[test]
fn docs_list_every_variable() {
    let docs = documentation();
    for file in ["shim/src/config.rs", "node/src/config.rs", "src/serve.rs", "src/admin.rs"] {
        let source = read(file);
        let vars: Vec<&str> = source
            .split('"')
            .filter(|s| s.starts_with("FFCLUSTER_") && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        assert!(!vars.is_empty(), "no variables found in {file}");
        for v in vars {
            assert!(docs.contains(&format!("`{v}`")), "the docs lack {v} (read in {file})");
        }
    }
}

#[test]
fn docs_list_every_command_and_flag() {
    let docs = documentation();
    for cmd in ["ffcluster serve", "ffcluster status", "ffcluster demo", "ffcluster explain", "ffcluster-node"] {
        assert!(docs.contains(&format!("`{cmd}")), "the docs lack {cmd}");
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
        assert!(docs.contains(cmd), "the docs lack {cmd}");
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
        assert!(docs.contains(&format!("`{flag}")), "the docs lack {flag}");
    }
}
