//! Writes the node's output files on this machine the way a local ffmpeg would
//! have them appear (CONTRACT.md §5.5, §6).
//!
//! * `Atomic` files (HLS segments, init segments, playlists, images) are written
//!   under a hidden temporary name in the target directory and renamed when
//!   complete, so Jellyfin never sees a partial segment, and in the order the node
//!   opens them, so segment N+1 never appears before N.
//! * `InPlace` files (progressive outputs) exist under their final name from the
//!   start and grow while Jellyfin tails them.
//! * `Stdout` bytes go to the shim's standard output, in order.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ffcluster::protocol::WriteMode;

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("output file {0} was never opened")]
    Unknown(u32),
    #[error("standard output bytes out of order (at {got}, expected {want})")]
    OutOfOrder { got: u64, want: u64 },
}

#[derive(Debug)]
enum Open {
    Atomic { file: File, temp: PathBuf, target: PathBuf },
    InPlace { file: File, target: PathBuf },
    Stdout { written: u64 },
}

#[derive(Debug, Default)]
pub struct Publisher {
    open: HashMap<u32, Open>,
    /// Something Jellyfin can see has been written (a published file, progressive
    /// bytes or stdout bytes): from then on the job cannot silently start over.
    pub visible: bool,
    /// Files published, for the log.
    pub published: u64,
    last_stamp: Option<SystemTime>,
}

impl Publisher {
    pub fn open(&mut self, id: u32, path: &str, mode: WriteMode) -> Result<(), PublishError> {
        let target = PathBuf::from(path);
        let io = |source| PublishError::Io { path: target.clone(), source };
        let entry = match mode {
            WriteMode::Atomic => {
                let temp = temp_name(&target, id);
                let file = OpenOptions::new().write(true).create(true).truncate(true).open(&temp).map_err(io)?;
                Open::Atomic { file, temp, target: target.clone() }
            }
            WriteMode::InPlace => {
                let file = OpenOptions::new().write(true).create(true).truncate(true).open(&target).map_err(io)?;
                Open::InPlace { file, target: target.clone() }
            }
            WriteMode::Stdout => Open::Stdout { written: 0 },
        };
        self.open.insert(id, entry);
        Ok(())
    }

    pub fn write(&mut self, id: u32, offset: u64, data: &[u8]) -> Result<(), PublishError> {
        match self.open.get_mut(&id).ok_or(PublishError::Unknown(id))? {
            Open::Atomic { file, temp, .. } => {
                file.write_all_at(data, offset).map_err(|source| PublishError::Io { path: temp.clone(), source })
            }
            Open::InPlace { file, target } => {
                self.visible |= !data.is_empty();
                file.write_all_at(data, offset).map_err(|source| PublishError::Io { path: target.clone(), source })
            }
            Open::Stdout { written } => {
                if offset != *written {
                    return Err(PublishError::OutOfOrder { got: offset, want: *written });
                }
                *written += data.len() as u64;
                self.visible |= !data.is_empty();
                let mut out = std::io::stdout().lock();
                out.write_all(data)
                    .and_then(|()| out.flush())
                    .map_err(|source| PublishError::Io { path: "pipe:1".into(), source })
            }
        }
    }

    pub fn done(&mut self, id: u32, size: u64) -> Result<(), PublishError> {
        match self.open.remove(&id).ok_or(PublishError::Unknown(id))? {
            Open::Atomic { file, temp, target } => {
                let io = |source| PublishError::Io { path: target.clone(), source };
                file.set_len(size).map_err(io)?;
                // Jellyfin takes the newest file as the transcode position, and the
                // kernel stamps files with a coarse clock: two segments published in
                // one tick would tie. Stamp each strictly later than the last.
                let now = SystemTime::now();
                let stamp = match self.last_stamp {
                    Some(last) if now <= last => last + Duration::from_micros(1),
                    _ => now,
                };
                file.set_modified(stamp).map_err(io)?;
                self.last_stamp = Some(stamp);
                drop(file);
                std::fs::rename(&temp, &target).map_err(io)?;
                self.visible = true;
            }
            Open::InPlace { file, target } => {
                file.set_len(size).map_err(|source| PublishError::Io { path: target, source })?;
            }
            Open::Stdout { .. } => {}
        }
        self.published += 1;
        Ok(())
    }

    /// Removes temporary files of unfinished atomic outputs (a failed or abandoned
    /// job must not leave hidden debris in Jellyfin's transcode directory).
    pub fn abandon(&mut self) {
        for (_, o) in self.open.drain() {
            if let Open::Atomic { temp, .. } = o {
                let _ = std::fs::remove_file(temp);
            }
        }
    }
}

/// `.<name>.ffcluster-<pid>-<id>.part` beside the target: hidden, and matching none
/// of Jellyfin's `<md5>*.ts|mp4|m3u8` patterns. A playlist goes through
/// `<name>.tmp`, as ffmpeg's HLS muxer writes event and live playlists
/// (CONTRACT.md §5.7): Jellyfin reads an event playlist while the job runs.
fn temp_name(target: &Path, id: u32) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.ends_with(".m3u8") {
        return target.with_file_name(format!("{name}.tmp"));
    }
    target.with_file_name(format!(".{name}.ffcluster-{}-{id}.part", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_files_appear_complete_and_in_place_files_grow() {
        let d = tempfile::tempdir().unwrap();
        let seg = d.path().join("a0.ts");
        let prog = d.path().join("p.mp4");
        let mut p = Publisher::default();
        p.open(1, seg.to_str().unwrap(), WriteMode::Atomic).unwrap();
        p.write(1, 0, b"hello ").unwrap();
        p.write(1, 6, b"world").unwrap();
        assert!(!seg.exists());
        assert!(!p.visible);
        p.done(1, 11).unwrap();
        assert_eq!(std::fs::read(&seg).unwrap(), b"hello world");
        assert!(p.visible);
        // Published back to back, still strictly ordered by modification time.
        let seg1 = d.path().join("a1.ts");
        p.open(4, seg1.to_str().unwrap(), WriteMode::Atomic).unwrap();
        p.done(4, 0).unwrap();
        let mtime = |f: &Path| std::fs::metadata(f).unwrap().modified().unwrap();
        assert!(mtime(&seg) < mtime(&seg1));

        p.open(2, prog.to_str().unwrap(), WriteMode::InPlace).unwrap();
        assert!(prog.exists());
        p.write(2, 0, b"abcdef").unwrap();
        p.write(2, 0, b"X").unwrap();
        p.done(2, 4).unwrap();
        assert_eq!(std::fs::read(&prog).unwrap(), b"Xbcd");

        // A playlist is replaced the way ffmpeg replaces an event playlist.
        let playlist = d.path().join("a.m3u8");
        p.open(5, playlist.to_str().unwrap(), WriteMode::Atomic).unwrap();
        p.write(5, 0, b"#EXTM3U\n").unwrap();
        assert!(d.path().join("a.m3u8.tmp").exists() && !playlist.exists());
        p.done(5, 8).unwrap();
        assert!(!d.path().join("a.m3u8.tmp").exists());
        assert_eq!(std::fs::read(&playlist).unwrap(), b"#EXTM3U\n");

        p.open(3, d.path().join("b.ts").to_str().unwrap(), WriteMode::Atomic).unwrap();
        p.write(3, 0, b"partial").unwrap();
        p.abandon();
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(matches!(p.write(9, 0, b""), Err(PublishError::Unknown(9))));
    }
}
