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
pub mod jellyfin;
