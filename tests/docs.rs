//! The documentation (README.md and every `contrib/docs/*.md`, read as one text) must
//! document every reason code the classifier can give, and every command, flag and
//! environment variable of the three programs. The README stays a front door (at most
//! 300 lines), and every link between the pages points at a file and heading that exist.

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

/// The lines of a Markdown page outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchors GitHub gives a page's headings: lower case, punctuation dropped,
/// spaces as hyphens.
fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter_map(|l| {
            let title = l.trim_start_matches('#');
            (title.len() < l.len() && title.starts_with(' ')).then_some(title.trim())
        })
        .map(|t| {
            t.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
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
        "ffcluster bench priority",
        "ffcluster priority",
        "FFCLUSTER_PRIORITY",
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

/// The README is the front door; the reference lives under `contrib/docs/`.
#[test]
fn readme_is_short() {
    let lines = read("README.md").lines().count();
    assert!(lines <= 300, "README.md has {lines} lines; at most 300 (move the detail to contrib/docs/)");
}

/// Every relative link of the documentation names a file that exists and, with
/// `#anchor`, a heading of that file.
#[test]
fn docs_links_resolve() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for line in prose(&text) {
            for link in line.split("](").skip(1).filter_map(|rest| rest.split_once(')')).map(|(l, _)| l) {
                if link.contains("://") || link.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
                let target = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
                let ok = match std::fs::read_to_string(&target) {
                    Ok(t) => anchor.is_empty() || anchors(&t).iter().any(|a| a == anchor),
                    Err(_) => target.is_dir() && anchor.is_empty(),
                };
                if !ok {
                    broken.push(format!(
                        "{}: ]({link})",
                        page.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(&page).display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "links that point nowhere:\n{}", broken.join("\n"));
}
