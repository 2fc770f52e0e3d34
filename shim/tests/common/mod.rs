//! Shared set-up for the shim's integration tests: the real ffmpeg (required, never
//! skipped), a directory with `ffmpeg`/`ffprobe` symlinks to the built shim, and
//! runners that feed both the same arguments.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The real binary, found on PATH. Tests need it: fail loudly, never skip.
pub fn real(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed: these tests need the real one (apt-get install ffmpeg)"))
}

pub fn shim_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ffcluster-shim"))
}

/// A directory holding `ffmpeg` and `ffprobe` symlinks to the shim, plus scratch space.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub work: PathBuf,
    pub cache: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let work = dir.path().join("work");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        symlink(shim_exe(), bin.join("ffmpeg")).unwrap();
        symlink(shim_exe(), bin.join("ffprobe")).unwrap();
        Setup { dir, bin, work, cache }
    }

    /// `ffmpeg`/`ffprobe` through the shim symlink, configured by environment only.
    pub fn shim(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.current_dir(&self.work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("FFCLUSTER_FFMPEG", real("ffmpeg"))
            .env("FFCLUSTER_FFPROBE", real("ffprobe"))
            .env("FFCLUSTER_PROBE_CACHE", &self.cache)
            .env("FFCLUSTER_LOG", self.dir.path().join("shim.log"));
        c
    }

    /// The real binary, with the same working directory and a comparable environment.
    pub fn direct(&self, program: &str) -> Command {
        let mut c = Command::new(real(program));
        c.current_dir(&self.work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path());
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("shim.log")).unwrap_or_default()
    }

    /// A short clip with video and audio, made by the real ffmpeg.
    pub fn clip(&self, name: &str, seconds: u32) -> PathBuf {
        let path = self.work.join(name);
        let st = Command::new(real("ffmpeg"))
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size=320x240:rate=25:duration={seconds}"))
            .args(["-f", "lavfi", "-i"])
            .arg(format!("sine=frequency=440:duration={seconds}"))
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac", "-shortest"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "could not generate {name}");
        path
    }
}

/// Runs with the given stdin bytes and captures everything.
pub fn run(mut c: Command, stdin: &[u8]) -> Output {
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut sin = child.stdin.take().unwrap();
    sin.write_all(stdin).unwrap();
    drop(sin);
    child.wait_with_output().unwrap()
}

/// ffmpeg prints heap addresses (`[libx264 @ 0x55d0c1a2b3c0]`) and timings that
/// differ between any two runs; everything else must be equal. How many
/// progress lines a run prints before its last depends on how long it took
/// (one per half second), so a run of equal ones counts as one.
pub fn normalise_stderr(s: &[u8]) -> String {
    let text = String::from_utf8_lossy(s);
    let mut out = String::new();
    let mut last_progress = String::new();
    for line in text.split_inclusive(['\n', '\r']) {
        let line = mask_hex_addresses(line);
        if line.contains("frame=") || line.contains("size=") && line.contains("time=") {
            let keys = progress_keys(&line);
            if !(keys.ends_with('\r') && out.ends_with(&last_progress) && keys == last_progress) {
                out.push_str(&keys);
            }
            last_progress = keys;
        } else {
            out.push_str(&line);
        }
    }
    out
}

fn mask_hex_addresses(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let n = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
        out.push_str(if n >= 6 { "0xADDR" } else { &rest[i..i + 2 + n] });
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

/// A progress line reduced to its `key=` fields in order (what Jellyfin's JobLogger
/// looks for); their values depend on timing (`speed=N/A` or `speed=120x`).
fn progress_keys(line: &str) -> String {
    let mut keys = Vec::new();
    let bytes = line.as_bytes();
    for (i, _) in line.match_indices('=') {
        let start = bytes[..i].iter().rposition(|b| !b.is_ascii_alphabetic()).map_or(0, |p| p + 1);
        if start < i {
            keys.push(&line[start..=i]);
        }
    }
    let end = if line.ends_with('\r') { "\r" } else { "\n" };
    format!("{}{end}", keys.join(" "))
}

pub fn assert_same(what: &str, direct: &Output, shim: &Output) {
    assert_eq!(direct.status.code(), shim.status.code(), "{what}: exit codes differ");
    assert!(
        direct.stdout == shim.stdout,
        "{what}: stdout differs ({} vs {} bytes)",
        direct.stdout.len(),
        shim.stdout.len()
    );
    assert_eq!(normalise_stderr(&direct.stderr), normalise_stderr(&shim.stderr), "{what}: stderr differs");
}
