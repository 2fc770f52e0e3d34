//! The shim's own log lines. They never go to stdout (ffmpeg may be writing media
//! there) and, for jobs that run normally, not to stderr either (Jellyfin copies
//! stderr into its ffmpeg log and parses it). They go to the file named by
//! `FFCLUSTER_LOG` / `log`, when one is configured.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct Log {
    path: Option<PathBuf>,
}

impl Log {
    pub fn new(path: Option<&Path>) -> Log {
        Log { path: path.map(Path::to_path_buf) }
    }

    /// Appends one line; failures to log are ignored, never fatal.
    pub fn line(&self, msg: std::fmt::Arguments<'_>) {
        let Some(path) = &self.path else { return };
        let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) else { return };
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        // One write call per line so concurrent shims do not interleave within a line.
        let line = format!("{}.{:03} ffcluster-shim[{}] {}\n", t.as_secs(), t.subsec_millis(), std::process::id(), msg);
        let _ = f.write_all(line.as_bytes());
    }
}
