//! Finishing a split job on this machine when the cluster loses it after its
//! output became visible (the controller died or gave the job up).
//!
//! The finisher keeps running: it is the real ffmpeg writing the job's real
//! files, and it has no idea where its input comes from. What it still needs
//! is encoded here, with the nodes' own command lines
//! ([`ffcluster::split::takeover`]) on the local ffmpeg, and fed through the
//! same [`Assembler`](ffcluster::split::assemble::Assembler) and audio check as
//! a node's attempts: the head chunk goes on from the keyframe where the written
//! stream stopped, and a re-encoded audio track is only compared with what the
//! finisher already has until it is ahead. The output is then the clean run's,
//! and so direct ffmpeg's, with no seek restart, no new playlist and no audio
//! gap: a resume (`crate::resume`) is left for what this cannot carry on.
//!
//! Video chunks run one at a time, in timeline order (an encoder uses every
//! core of the machine by itself), beside the audio track.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ffcluster::protocol::{AUDIO_CHUNK, JobId};
use ffcluster::split::takeover::Work;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;

/// What one of this machine's encodes did, in the order it happened.
#[derive(Debug)]
pub enum Event {
    Data { chunk: u32, attempt: JobId, offset: u64, bytes: Vec<u8> },
    Done { chunk: u32, attempt: JobId, size: u64 },
    Failed { chunk: u32, reason: String },
}

/// The encodes running here; dropping it kills them.
pub struct LocalEncodes {
    pub events: mpsc::UnboundedReceiver<Event>,
    running: Arc<Running>,
}

#[derive(Default)]
struct Running {
    stopped: AtomicBool,
    pids: Mutex<Vec<Pid>>,
}

impl Running {
    fn kill_all(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for pid in self.pids.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

impl LocalEncodes {
    /// Starts `work` with `ffmpeg` in `cwd`: the video chunks one after the
    /// other, the audio track beside them.
    pub fn start(ffmpeg: &Path, cwd: &Path, work: Vec<Work>) -> LocalEncodes {
        let (tx, events) = mpsc::unbounded_channel();
        let running = Arc::new(Running::default());
        let (audio, video): (Vec<Work>, Vec<Work>) = work.into_iter().partition(|w| w.chunk == AUDIO_CHUNK);
        for queue in [video, audio].into_iter().filter(|q| !q.is_empty()) {
            let (tx, running, ffmpeg, cwd) = (tx.clone(), running.clone(), ffmpeg.to_owned(), cwd.to_owned());
            std::thread::spawn(move || {
                for w in queue {
                    if running.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    let chunk = w.chunk;
                    if let Err(reason) = encode(&ffmpeg, &cwd, w, &tx, &running) {
                        let _ = tx.send(Event::Failed { chunk, reason });
                        return;
                    }
                }
            });
        }
        LocalEncodes { events, running }
    }

    pub fn kill(&self) {
        self.running.kill_all();
    }
}

impl Drop for LocalEncodes {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs one encode, sending its bytes as they come and its end.
fn encode(
    ffmpeg: &PathBuf,
    cwd: &Path,
    w: Work,
    tx: &mpsc::UnboundedSender<Event>,
    running: &Running,
) -> Result<(), String> {
    let mut cmd = Command::new(ffmpeg);
    cmd.args(&w.args).current_dir(cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: `dies_with_shim` makes only async-signal-safe calls.
    unsafe {
        cmd.pre_exec(crate::child::dies_with_shim());
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", ffmpeg.display()))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    running.pids.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    if running.stopped.load(Ordering::SeqCst) {
        let _ = kill(pid, Signal::SIGKILL);
    }
    // Drained beside stdout so that a chatty encode cannot block on it; the
    // tail says why one failed.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = e.read_to_end(&mut all);
            let text = String::from_utf8_lossy(&all);
            text.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" / ")
        })
    });
    let mut offset = 0u64;
    if let Some(mut out) = child.stdout.take() {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let bytes = buf[..n].to_vec();
                    let _ = tx.send(Event::Data { chunk: w.chunk, attempt: w.attempt, offset, bytes });
                    offset += n as u64;
                }
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    running.pids.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pid);
    let said = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(format!("exited with {status}: {said}"));
    }
    let _ = tx.send(Event::Done { chunk: w.chunk, attempt: w.attempt, size: offset });
    Ok(())
}
