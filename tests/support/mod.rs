//! Test support shared by the black-box tests.

#![allow(dead_code)]

pub mod dotnet_args;

use std::path::PathBuf;

/// Jellyfin's command-line corpus: `../shared/jellyfin/cmdlines.json` beside the
/// repository when present (it grows), else the copy kept in `tests/data`.
pub fn corpus_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/jellyfin/cmdlines.json");
    if shared.exists() { shared } else { root.join("tests/data/jellyfin-cmdlines.json") }
}
pub mod cluster;
pub mod compare;
pub mod jellyfin;
pub mod live;
pub mod media;

/// Debian's Chromium, which the browser tests drive headless.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium with the flags this machine needs (no sandbox as root, no
/// background connections a closed network refuses) and a fresh profile,
/// which the caller keeps alive while the browser runs. Fails loudly when
/// Chromium is missing (`contrib/scripts/ensure-deps.sh` installs it): `test`
/// names the test that needs it.
pub fn headless_chromium(test: &str) -> (std::process::Command, tempfile::TempDir) {
    assert!(
        std::path::Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: the {test} test needs a real browser (contrib/scripts/ensure-deps.sh, \
         or apt-get install chromium)"
    );
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(CHROMIUM);
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    (cmd, profile)
}
