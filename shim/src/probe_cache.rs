//! Cached answers to capability probes (`-version`, `-encoders`, `-h filter=X`, …).
//!
//! A probe's stdout, stderr and exit status are a pure function of the binary that
//! answered it, its arguments and a few environment variables, so they are kept on
//! disk and replayed byte for byte. That makes Jellyfin's start-up probes cheap,
//! and lets them be answered when the binary that was probed is not reachable
//! (the cluster is down, or no ffmpeg is installed beside the shim at all).
//!
//! Entry file: `FFCPROBE1\n`, one JSON line of metadata (the full key, exit status,
//! byte counts), then the stdout bytes and the stderr bytes. Entries are written
//! to a temporary name and renamed, so readers never see half an entry; the key is
//! stored in the entry and compared on read, so a hash collision is only a miss.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

const MAGIC: &[u8] = b"FFCPROBE1\n";

/// Environment variables that change what ffmpeg prints.
const ENV_IN_KEY: &[&str] = &["AV_LOG_FORCE_NOCOLOR", "AV_LOG_FORCE_COLOR", "AV_LOG_FORCE_256COLOR", "TERM"];

/// Identifies one probe answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    pub program: String,
    pub args: Vec<String>,
    /// The binary that answered: path, size and modification time, so an upgrade
    /// of ffmpeg invalidates its entries.
    pub binary: Option<BinaryId>,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinaryId {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
}

impl BinaryId {
    pub fn of(path: &Path) -> Option<BinaryId> {
        let m = std::fs::metadata(path).ok()?;
        Some(BinaryId {
            path: path.to_path_buf(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}

impl Key {
    pub fn new(program: &str, args: &[String], binary: Option<BinaryId>) -> Key {
        let env = ENV_IN_KEY.iter().filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v))).collect();
        Key { program: program.to_owned(), args: args.to_vec(), binary, env }
    }

    /// The same probe regardless of which binary answered it.
    fn without_binary(&self) -> Key {
        Key { binary: None, ..self.clone() }
    }

    fn file_name(&self) -> String {
        // FNV-1a over the serialised key: stable across runs and Rust versions,
        // unlike std's hashers.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
        format!("{h:016x}.probe")
    }
}

/// One recorded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Exit code, or `128 + signal` for a probe that died by a signal.
    pub code: i32,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    key: Key,
    code: i32,
    stdout_len: usize,
    stderr_len: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("probe cache {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A directory of probe answers.
#[derive(Debug, Clone)]
pub struct ProbeCache {
    dir: PathBuf,
}

impl ProbeCache {
    pub fn new(dir: impl Into<PathBuf>) -> ProbeCache {
        ProbeCache { dir: dir.into() }
    }

    /// The exact answer for `key`, if recorded.
    pub fn get(&self, key: &Key) -> Option<Answer> {
        read_entry(&self.dir.join(key.file_name()), key)
    }

    /// The answer for `key` if it was recorded less than `max_age` ago (answers
    /// from the cluster, which change when nodes come and go).
    pub fn get_fresh(&self, key: &Key, max_age: std::time::Duration) -> Option<Answer> {
        let path = self.dir.join(key.file_name());
        let age = std::fs::metadata(&path).ok()?.modified().ok()?.elapsed().ok()?;
        if age > max_age {
            return None;
        }
        read_entry(&path, key)
    }

    /// The last answer recorded for this probe by any binary: what Jellyfin gets
    /// when the binary that answered before cannot be run now.
    pub fn get_any_binary(&self, key: &Key) -> Option<Answer> {
        let k = key.without_binary();
        read_entry(&self.dir.join(k.file_name()), &k)
    }

    /// Records an answer under its exact key and as the latest for any binary.
    pub fn put(&self, key: &Key, answer: &Answer) -> Result<(), CacheError> {
        let io = |source| CacheError::Io { path: self.dir.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        write_entry(&self.dir, key, answer).map_err(io)?;
        if key.binary.is_some() {
            write_entry(&self.dir, &key.without_binary(), answer).map_err(io)?;
        }
        Ok(())
    }
}

fn read_entry(path: &Path, key: &Key) -> Option<Answer> {
    let mut buf = Vec::new();
    std::fs::File::open(path).ok()?.read_to_end(&mut buf).ok()?;
    let rest = buf.strip_prefix(MAGIC)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let meta: Meta = serde_json::from_slice(&rest[..nl]).ok()?;
    let body = &rest[nl + 1..];
    if meta.key != *key || body.len() != meta.stdout_len + meta.stderr_len {
        return None;
    }
    let (stdout, stderr) = body.split_at(meta.stdout_len);
    Some(Answer { stdout: stdout.to_vec(), stderr: stderr.to_vec(), code: meta.code })
}

fn write_entry(dir: &Path, key: &Key, a: &Answer) -> std::io::Result<()> {
    let meta = Meta { key: key.clone(), code: a.code, stdout_len: a.stdout.len(), stderr_len: a.stderr.len() };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(MAGIC)?;
    serde_json::to_writer(&mut tmp, &meta)?;
    tmp.write_all(b"\n")?;
    tmp.write_all(&a.stdout)?;
    tmp.write_all(&a.stderr)?;
    tmp.persist(dir.join(key.file_name())).map_err(|e| e.error)?;
    Ok(())
}

/// What `real` answers to `key`'s arguments: the recorded answer when `cache`
/// has one, else the binary's, recorded for next time (a cache that cannot be
/// written is logged, and the answer given all the same).
pub fn get_or_capture(
    cache: Option<&ProbeCache>,
    key: &Key,
    real: &Path,
    argv0: &std::ffi::OsStr,
    log: &crate::log::Log,
) -> std::io::Result<Answer> {
    if let Some(a) = cache.and_then(|c| c.get(key)) {
        return Ok(a);
    }
    let a = capture(real, argv0, &key.args)?;
    if let Some(Err(e)) = cache.map(|c| c.put(key, &a)) {
        log.line(format_args!("{e}"));
    }
    Ok(a)
}

/// Runs the real binary with stdin closed and records what it printed.
pub fn capture(real: &Path, argv0: &std::ffi::OsStr, args: &[String]) -> std::io::Result<Answer> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let out = Command::new(real).arg0(argv0).args(args).stdin(Stdio::null()).output()?;
    let code = out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
    Ok(Answer { stdout: out.stdout, stderr: out.stderr, code })
}

/// Writes a recorded answer to our stdout and stderr, in the order ffmpeg writes
/// them (the banner on stderr comes before the listing on stdout).
pub fn replay(a: &Answer) -> i32 {
    let _ = std::io::stderr().write_all(&a.stderr);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&a.stdout);
    let _ = out.flush();
    a.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_exact_and_any_binary() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ProbeCache::new(dir.path());
        let bin = BinaryId { path: "/usr/bin/ffmpeg".into(), size: 10, mtime_ns: 5 };
        let key = Key::new("ffmpeg", &["-encoders".into()], Some(bin.clone()));
        let ans = Answer { stdout: b"Encoders:\n V....D libx264\n".to_vec(), stderr: b"banner\n".to_vec(), code: 0 };
        assert_eq!(cache.get(&key), None);
        cache.put(&key, &ans).unwrap();
        assert_eq!(cache.get(&key), Some(ans.clone()));
        let upgraded = Key::new("ffmpeg", &["-encoders".into()], Some(BinaryId { size: 11, ..bin }));
        assert_eq!(cache.get(&upgraded), None, "another binary misses the exact entry");
        assert_eq!(cache.get_any_binary(&upgraded), Some(ans));
    }

    #[test]
    fn fresh_entries_expire() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ProbeCache::new(dir.path());
        let key = Key::new("ffmpeg@cluster", &["-encoders".into()], None);
        let ans = Answer { stdout: b"list".to_vec(), stderr: vec![], code: 0 };
        assert_eq!(cache.get_fresh(&key, std::time::Duration::from_secs(60)), None);
        cache.put(&key, &ans).unwrap();
        assert_eq!(cache.get_fresh(&key, std::time::Duration::from_secs(60)), Some(ans));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(cache.get_fresh(&key, std::time::Duration::from_millis(10)), None);
    }

    #[test]
    fn corrupt_entries_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ProbeCache::new(dir.path());
        let key = Key::new("ffmpeg", &["-version".into()], None);
        cache.put(&key, &Answer { stdout: b"x".to_vec(), stderr: vec![], code: 0 }).unwrap();
        let path = dir.path().join(key.file_name());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(cache.get(&key), None);
    }
}
