//! What of a split job's finisher the user can see, which decides whether a
//! failure may still fall back (contrib/docs/how-it-works.md, "When something fails").
//!
//! A split job is *visible* once the finisher has
//!
//! * written a byte to stdout,
//! * written a byte to a file of the job's output (the progressive file; the
//!   playlist, a segment or the fMP4 init file, temporary names included),
//!   a file it merely created empty not counting: ffmpeg creates a progressive
//!   output when it opens it, before it has anything to write, and the run
//!   that replaces it truncates it again, or
//! * had its stderr released: stderr is held back until one of the above (or
//!   until [`HOLD_BYTES`] of it piled up), so that a fallback does not show
//!   two runs' banners.
//!
//! Before that, nothing of the finisher's run can be told from a run that
//! never happened, and any failure falls back (to a whole job or locally).
//! After it, a failure resumes or fails as before. Whether a file was written
//! is checked with the finisher dead, so the answer is final.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ffcluster::ffmpeg::CommandLine;
use ffcluster::ffmpeg::decision::{OutputShape, SegmentType, classify_cmdline};
use ffcluster::ffmpeg::url::Url;

/// Held-back stderr beyond this is released (and the job becomes visible).
pub const HOLD_BYTES: usize = 1 << 20;

/// Size and modification time of a file.
type Stamp = (u64, Option<SystemTime>);

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    (meta.len(), meta.modified().ok())
}

/// The files of a job's one output, and how they were before the finisher
/// started.
pub struct OutputWatch {
    /// Directories and the name prefixes of the job's files in them.
    dirs: Vec<(PathBuf, Vec<String>)>,
    /// Single files (a progressive output).
    files: Vec<PathBuf>,
    before: BTreeMap<PathBuf, Stamp>,
}

impl OutputWatch {
    /// The output files of `cl` (relative paths from `cwd`), as they are now.
    pub fn new(cl: &CommandLine, cwd: &Path) -> OutputWatch {
        let mut w = OutputWatch { dirs: Vec::new(), files: Vec::new(), before: BTreeMap::new() };
        let (Some(out), Some(shape)) = (cl.outputs.first(), classify_cmdline(cl).outputs.first().cloned()) else {
            return w;
        };
        let Some(path) = out.url.local_path().map(|p| cwd.join(p)) else { return w };
        match shape {
            OutputShape::Hls { segment_type, segment_filename, .. } => {
                let dir = parent(&path);
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let init = out.last_value("hls_fmp4_init_filename").unwrap_or("init.mp4").to_owned();
                let init = Path::new(&init).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(init);
                let ext = if segment_type == SegmentType::Fmp4 { "m4s" } else { "ts" };
                let pattern = segment_filename
                    .and_then(|p| Url::parse(&p).local_path().map(|p| cwd.join(p)))
                    .unwrap_or_else(|| dir.join(format!("{stem}%d.{ext}")));
                let name = pattern.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                // The literal part before the index (or a strftime field).
                let head = name.split('%').next().unwrap_or_default().to_owned();
                let pattern_dir = parent(&pattern);
                w.dirs.push((dir.clone(), vec![stem, init.clone(), head.clone()]));
                if pattern_dir != dir {
                    w.dirs.push((pattern_dir, vec![head, init]));
                }
            }
            OutputShape::Progressive { .. } | OutputShape::Stream { .. } => w.files.push(path),
            _ => {}
        }
        w.before = w.scan();
        w
    }

    fn scan(&self) -> BTreeMap<PathBuf, Stamp> {
        let mut found = BTreeMap::new();
        for f in &self.files {
            if let Ok(meta) = std::fs::metadata(f) {
                found.insert(f.clone(), stamp(&meta));
            }
        }
        for (dir, prefixes) in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                    continue;
                }
                if let Ok(meta) = e.metadata()
                    && meta.is_file()
                {
                    found.insert(e.path(), stamp(&meta));
                }
            }
        }
        found
    }

    /// A file of the output that the finisher wrote bytes to, if any.
    pub fn written(&self) -> Option<PathBuf> {
        self.scan().into_iter().find(|(p, s)| s.0 > 0 && self.before.get(p) != Some(s)).map(|(p, _)| p)
    }

    /// Removes the empty files the finisher created, leaving the output's
    /// directory as it found it for the run that replaces it.
    pub fn remove_created_empty(&self) {
        for (p, s) in self.scan() {
            if s.0 == 0 && !self.before.contains_key(&p) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The finisher's stderr, held back until the job is visible.
#[derive(Clone)]
pub struct HeldStderr {
    state: Arc<Mutex<Held>>,
}

struct Held {
    bytes: Vec<u8>,
    released: bool,
    /// Dropped from now on (the job falls back).
    discarded: bool,
    /// The reader reached the end of the pipe.
    ended: bool,
}

impl HeldStderr {
    /// Reads `pipe` on a thread of its own.
    pub fn start(pipe: ChildStderr) -> (HeldStderr, Receiver<()>) {
        let held = HeldStderr {
            state: Arc::new(Mutex::new(Held { bytes: Vec::new(), released: false, discarded: false, ended: false })),
        };
        let (done_tx, done) = channel();
        let h = held.clone();
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut buf = [0u8; 8192];
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut s = h.lock();
                if s.discarded {
                    continue;
                }
                if s.released {
                    write_stderr(&buf[..n]);
                    continue;
                }
                s.bytes.extend_from_slice(&buf[..n]);
                if s.bytes.len() > HOLD_BYTES {
                    s.released = true;
                    write_stderr(&std::mem::take(&mut s.bytes));
                }
            }
            h.lock().ended = true;
            let _ = done_tx.send(());
        });
        (held, done)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes what was held and passes the rest through.
    pub fn release(&self) {
        let mut s = self.lock();
        if !s.released && !s.discarded {
            s.released = true;
            write_stderr(&std::mem::take(&mut s.bytes));
        }
    }

    pub fn released(&self) -> bool {
        self.lock().released
    }

    /// Drops what was held and anything after; the last line held, for the log.
    pub fn discard(&self) -> String {
        let mut s = self.lock();
        s.discarded = true;
        let text = String::from_utf8_lossy(&std::mem::take(&mut s.bytes)).into_owned();
        last_line(&text)
    }
}

/// Waits up to `limit` for a reader thread's end.
pub fn wait(done: &Receiver<()>, limit: Duration) {
    match done.recv_timeout(limit) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) | Err(RecvTimeoutError::Timeout) => {}
    }
}

fn last_line(text: &str) -> String {
    text.split(['\n', '\r']).map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default().to_owned()
}

fn write_stderr(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
}

/// The finisher's stdout: through a pipe the shim copies to its own stdout,
/// which shows when the first byte goes out, or (when the shim's stdout is a
/// regular file, which ffmpeg may seek in) the shim's own descriptor, watched
/// for growth.
pub enum FinisherStdout {
    Relayed { wrote: Arc<AtomicBool>, done: Option<Receiver<()>> },
    Inherited { before: Option<Stamp> },
}

impl FinisherStdout {
    /// How the finisher gets its stdout, and the [`Stdio`] to spawn it with.
    pub fn choose() -> (FinisherStdout, Stdio) {
        match own_stdout() {
            Some(meta) if meta.is_file() => {
                (FinisherStdout::Inherited { before: Some(stamp(&meta)) }, Stdio::inherit())
            }
            _ => (FinisherStdout::Relayed { wrote: Arc::new(AtomicBool::new(false)), done: None }, Stdio::piped()),
        }
    }

    /// Starts copying the spawned finisher's stdout, when relayed.
    pub fn start(&mut self, pipe: Option<ChildStdout>) {
        let (FinisherStdout::Relayed { wrote, done }, Some(mut pipe)) = (self, pipe) else { return };
        let (tx, rx) = channel();
        *done = Some(rx);
        let wrote = wrote.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                wrote.store(true, Ordering::SeqCst);
                let mut out = std::io::stdout().lock();
                // Whoever reads our stdout stopped: the finisher's next write
                // fails as it would have without us in between.
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
            let _ = tx.send(());
        });
    }

    /// Whether a byte of stdout went out. With the finisher dead, after
    /// [`Self::drain`], the answer is final.
    pub fn written(&self) -> bool {
        match self {
            FinisherStdout::Relayed { wrote, .. } => wrote.load(Ordering::SeqCst),
            FinisherStdout::Inherited { before } => {
                own_stdout().is_some_and(|meta| Some(stamp(&meta)) != *before && meta.len() > 0)
            }
        }
    }

    /// Waits (up to `limit`) until everything the finisher wrote went out.
    pub fn drain(&self, limit: Duration) {
        if let FinisherStdout::Relayed { done: Some(done), .. } = self {
            wait(done, limit);
        }
    }
}

/// Everything a finisher can be seen by.
pub struct Visibility {
    pub watch: OutputWatch,
    stderr: HeldStderr,
    stderr_done: Receiver<()>,
    stdout: FinisherStdout,
}

/// How long a finisher's pipes may stay open after it died (a child of its
/// own may hold them).
const PIPE_END: Duration = Duration::from_secs(2);
/// How long the rest of a finisher's stdout may take to go out at its end.
const STDOUT_END: Duration = Duration::from_secs(60);

impl Visibility {
    pub fn new(watch: OutputWatch, (stderr, stderr_done): (HeldStderr, Receiver<()>), stdout: FinisherStdout) -> Self {
        Visibility { watch, stderr, stderr_done, stdout }
    }

    fn shown(&self) -> Option<String> {
        if self.stdout.written() {
            return Some("stdout".into());
        }
        if let Some(p) = self.watch.written() {
            return Some(p.display().to_string());
        }
        self.stderr.released().then(|| format!("more than {} KiB of stderr", HOLD_BYTES >> 10))
    }

    /// While the finisher runs: what first showed, once something did (its
    /// stderr is released then).
    pub fn poll(&self) -> Option<String> {
        let what = self.shown()?;
        self.stderr.release();
        Some(what)
    }

    /// With the finisher dead: what of it showed, if anything (final).
    pub fn settle(&self) -> Option<String> {
        self.stdout.drain(PIPE_END);
        // Its stderr to the end too: the last line it held is the failure's
        // detail (found by CI under load: the line before it was logged).
        wait(&self.stderr_done, PIPE_END);
        self.shown()
    }

    /// The job falls back: its stderr is dropped; the last line held.
    pub fn discard(&self) -> String {
        self.stderr.discard()
    }

    /// The job ends as it is: stderr released, and both pipes passed on to
    /// their end.
    pub fn finish(&self) {
        self.stderr.release();
        wait(&self.stderr_done, PIPE_END);
        // Every byte must go out before the shim exits; a reader that stops
        // reading would hold the direct ffmpeg as long.
        self.stdout.drain(STDOUT_END);
    }
}

fn own_stdout() -> Option<std::fs::Metadata> {
    let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    std::fs::File::from(fd).metadata().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(args: &str, cwd: &Path) -> OutputWatch {
        let args: Vec<&str> = args.split(' ').collect();
        OutputWatch::new(&CommandLine::parse(&args).unwrap(), cwd)
    }

    #[test]
    fn hls_files_of_the_job_count_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("other.ts"), b"x").unwrap();
        std::fs::write(d.join("abc0.ts"), b"old").unwrap();
        let w = watch(
            "-i in.mkv -c:v libx264 -force_key_frames expr:gte(t,n_forced*3) -f hls -hls_time 3 \
             -hls_segment_filename seg/abc%d.ts -hls_playlist_type vod -y abc.m3u8",
            d,
        );
        std::fs::create_dir_all(d.join("seg")).unwrap();
        // Another job's file, an unchanged one, an empty new segment: nothing.
        std::fs::write(d.join("other2.ts"), b"y").unwrap();
        std::fs::write(d.join("seg/abc0.ts"), b"").unwrap();
        assert_eq!(w.written(), None);
        std::fs::write(d.join("abc.m3u8.tmp"), b"#EXTM3U").unwrap();
        assert_eq!(w.written(), Some(d.join("abc.m3u8.tmp")));
        std::fs::remove_file(d.join("abc.m3u8.tmp")).unwrap();
        w.remove_created_empty();
        assert!(!d.join("seg/abc0.ts").exists());
        std::fs::write(d.join("seg/abc1.ts"), b"data").unwrap();
        assert_eq!(w.written(), Some(d.join("seg/abc1.ts")));
    }

    #[test]
    fn a_progressive_file_counts_once_it_has_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("out.mp4"), b"an earlier run").unwrap();
        let w = watch("-i in.mkv -c:v libx264 -y out.mp4", d);
        assert_eq!(w.written(), None);
        // ffmpeg opens (truncates) it first.
        std::fs::write(d.join("out.mp4"), b"").unwrap();
        assert_eq!(w.written(), None);
        std::fs::write(d.join("out.mp4"), b"ftyp").unwrap();
        assert_eq!(w.written(), Some(d.join("out.mp4")));
    }

    #[test]
    fn the_last_line_held_explains_a_failure() {
        assert_eq!(last_line("banner\nInput #0\r\nInvalid data found\n\n"), "Invalid data found");
        assert_eq!(last_line(""), "");
    }
}
