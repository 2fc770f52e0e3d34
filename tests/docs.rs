//! The README is the front door: it must document every reason code the classifier
//! can give and every environment variable the shim reads.

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
fn readme_lists_every_shim_variable() {
    let readme = read("README.md");
    let config = read("shim/src/config.rs");
    let vars: Vec<&str> = config
        .split('"')
        .filter(|s| s.starts_with("FFCLUSTER_") && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(vars.len() >= 8, "found {vars:?}");
    for v in vars {
        assert!(readme.contains(&format!("`{v}`")), "README lacks {v}");
    }
}
