//! Finding the real ffmpeg and ffprobe, and never finding ourselves.
//!
//! Order: `FFCLUSTER_FFMPEG` / `FFCLUSTER_FFPROBE`, then the config file, then
//! `PATH` without the directory the shim was started from. Any candidate that is
//! the shim binary itself (same file by device and inode, so symlinks, hard links
//! and bind mounts are all caught) is refused, so the shim cannot exec itself in a
//! loop even when it is configured to.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ffcluster::ffmpeg::Program;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("{var} points at {path}, which is this shim, not the real {program}")]
    ConfiguredIsSelf { var: &'static str, path: PathBuf, program: &'static str },
    #[error("{var} points at {path}, which is not an executable file")]
    ConfiguredMissing { var: &'static str, path: PathBuf },
    #[error("no real {program} found on PATH (set {var} to its path)")]
    NotOnPath { program: &'static str, var: &'static str },
}

/// Identity of a file: (device, inode).
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where the shim binary is, and what it was started as.
#[derive(Debug)]
pub struct SelfLocation {
    exe: Option<FileId>,
    argv0: PathBuf,
}

impl SelfLocation {
    pub fn detect(argv0: &OsStr) -> SelfLocation {
        let exe = std::env::current_exe().ok().and_then(|p| file_id(&p));
        SelfLocation { exe, argv0: PathBuf::from(argv0) }
    }

    fn is_self(&self, path: &Path) -> bool {
        self.exe.is_some() && file_id(path) == self.exe
    }

    /// The directory of the path the shim was started as (the symlink's directory,
    /// not the target's), canonicalised. Only the PATH search needs it, so it is
    /// worked out there and not on every start.
    fn invoked_dir(&self, path_var: &OsStr) -> Option<PathBuf> {
        let dir = if self.argv0.components().count() > 1 {
            self.argv0.parent().map(Path::to_path_buf)
        } else {
            // Started through PATH: the first PATH entry holding that name is where we were found.
            std::env::split_paths(path_var).find(|dir| {
                let cand = dir.join(&self.argv0);
                is_executable_file(&cand) && self.is_self(&cand)
            })
        };
        dir.map(|d| d.canonicalize().unwrap_or(d))
    }
}

/// Finds the real binary for `program`.
pub fn find(program: Program, cfg: &Config, me: &SelfLocation) -> Result<PathBuf, FindError> {
    let (configured, var) = match program {
        Program::Ffmpeg => (cfg.ffmpeg.as_ref(), "FFCLUSTER_FFMPEG"),
        Program::Ffprobe => (cfg.ffprobe.as_ref(), "FFCLUSTER_FFPROBE"),
    };
    if let Some(path) = configured {
        if me.is_self(path) {
            return Err(FindError::ConfiguredIsSelf { var, path: path.clone(), program: program.as_str() });
        }
        if !is_executable_file(path) {
            return Err(FindError::ConfiguredMissing { var, path: path.clone() });
        }
        return Ok(path.clone());
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let own = me.invoked_dir(&path_var);
    let is_own =
        |dir: &Path| own.as_deref().is_some_and(|own| own == dir || dir.canonicalize().is_ok_and(|d| d == own));
    std::env::split_paths(&path_var)
        .filter(|dir| !dir.as_os_str().is_empty() && !is_own(dir))
        .map(|dir| dir.join(program.as_str()))
        .find(|cand| is_executable_file(cand) && !me.is_self(cand))
        .ok_or(FindError::NotOnPath { program: program.as_str(), var })
}
