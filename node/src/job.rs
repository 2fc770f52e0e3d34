//! One job: its scratch directory, its side files, the rewritten ffmpeg, its
//! stdin and signals, its stderr, and the end: `Exited`, then the scratch is gone.
//!
//! A job is one task that owns the ffmpeg `Child`. Signals go through that task,
//! never to a bare pid, so a signal can never hit a process that reused the pid
//! of an ffmpeg already reaped.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use ffcluster::ffmpeg::cmdline::{CommandLine, Opt};
use ffcluster::protocol::{
    FILES_PATH, FileOffer, Frame, FrameKind, JobId, JobSignal, JobSpec, MAX_FRAME_PAYLOAD, NodeMsg, RemoteExit,
    http_url,
};
use ffcluster::remote::{Access, Ended, FileRef, OutputTracker, Rewritten, Site, file_refs, replace_all, rewrite};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, map_path, sanitize};
use crate::fetch;
use crate::link::{Closed, Outbox};
use crate::outputs::{self, Watcher};
use ffcluster::tls::Trust;

/// How long a cancelled job may take to die and clean up before its task is
/// dropped (which still kills ffmpeg: `kill_on_drop`).
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// After ffmpeg exits, how long its stderr/stdout may stay open (only a child
/// ffmpeg left behind could hold them).
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// A stderr "line" longer than this is sent without waiting for its end.
const MAX_LINE: usize = 64 * 1024;
/// Side files downloaded at once.
const PARALLEL_FETCHES: usize = 4;

/// What the link asks of a running job.
#[derive(Debug)]
enum Control {
    /// Bytes for ffmpeg's stdin; empty closes it.
    Stdin(Vec<u8>),
    Signal(JobSignal),
    /// Kill, clean up, send nothing more.
    Cancel,
}

/// The link's side of a job.
#[derive(Debug)]
pub struct JobHandle {
    ctl: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
    dir: PathBuf,
    /// Set just before `Exited` (or `Refused`) goes out: from then on the job no
    /// longer takes a slot, even while its scratch is being deleted.
    over: Arc<AtomicBool>,
}

impl JobHandle {
    /// Whether the controller has been (or is being) told that the job ended.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    pub fn stdin(&self, bytes: Vec<u8>) {
        let _ = self.ctl.send(Control::Stdin(bytes));
    }

    pub fn signal(&self, signal: JobSignal) {
        let _ = self.ctl.send(Control::Signal(signal));
    }

    /// Kills the job and waits until its scratch is gone.
    pub async fn cancel(mut self) {
        let _ = self.ctl.send(Control::Cancel);
        if tokio::time::timeout(CANCEL_GRACE, &mut self.task).await.is_err() {
            tracing::warn!(dir = %self.dir.display(), "job did not end in time after a kill; dropping it");
            self.task.abort();
            let _ = (&mut self.task).await;
            remove_scratch(&self.dir).await;
        }
    }
}

/// Starts job `job` in the background. `done` gets the job's id when it is over.
pub fn start(
    job: JobId,
    spec: JobSpec,
    cfg: Arc<Config>,
    out: Outbox,
    done: mpsc::UnboundedSender<JobId>,
) -> JobHandle {
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    let dir = cfg.scratch.join(format!("job-{job}"));
    let task_dir = dir.clone();
    let over = Arc::new(AtomicBool::new(false));
    let task_over = over.clone();
    let task = tokio::spawn(async move {
        run(job, spec, &cfg, &out, ctl_rx, &task_dir, &task_over).await;
        let _ = done.send(job);
    });
    JobHandle { ctl, task, dir, over }
}

async fn run(
    job: JobId,
    spec: JobSpec,
    cfg: &Config,
    out: &Outbox,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    dir: &Path,
    over: &AtomicBool,
) {
    // Stdin and signals that arrive while side files download are applied as soon
    // as ffmpeg exists, as they would have been had it started at once.
    let mut early = Vec::new();
    let prepared = {
        let prep = prepare(&spec, cfg, dir);
        tokio::pin!(prep);
        loop {
            tokio::select! {
                r = &mut prep => break Some(r),
                c = ctl.recv() => match c {
                    Some(Control::Cancel) | None => break None,
                    Some(c) => early.push(c),
                },
            }
        }
    };
    let spawned = match prepared {
        None => {
            tracing::info!(job, "cancelled before ffmpeg started");
            remove_scratch(dir).await;
            return;
        }
        Some(Ok(rw)) => spawn(cfg, dir, &rw).map(|child| (child, rw)).context("starting ffmpeg"),
        Some(Err(e)) => Err(e),
    };
    let (child, rw) = match spawned {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(job, "refusing the job: {e:#}");
            over.store(true, Ordering::Relaxed);
            let _ = out.msg(&NodeMsg::Refused { job, reason: format!("{e:#}") }).await;
            remove_scratch(dir).await;
            return;
        }
    };
    supervise(job, child, rw, out, ctl, early, over).await;
    remove_scratch(dir).await;
}

/// Everything before ffmpeg starts: the rewritten arguments, a fresh scratch
/// directory with the plan's output directories, and the side files in place.
async fn prepare(spec: &JobSpec, cfg: &Config, dir: &Path) -> anyhow::Result<Rewritten> {
    let mut cl = CommandLine::parse(&spec.args).map_err(|e| anyhow!("cannot parse the arguments: {e}"))?;
    // Translations edit the parsed model, so ffmpeg still runs only an argument
    // list rendered from it.
    for change in ffcluster::hardware::translate(&mut cl, &cfg.translations) {
        tracing::info!(scratch = %dir.display(), "translation: {change}");
    }
    let refs = file_refs(&cl)?;
    let dir_str = dir.to_str().context("scratch path is not UTF-8")?;
    let files = SideFiles::plan(spec, cfg, dir_str, &refs);
    let out_root = format!("{dir_str}/out");
    let rw = {
        // `Access` holds `dyn Fn`s that are not `Sync`: keep it away from the awaits.
        let input = |f: &FileOffer| files.input(f);
        let input_options = |url: &str| files.input_options(url);
        let side = |f: &FileOffer| files.side(f);
        let side_dir = |p: &str| files.side_dir(p);
        let access = Access {
            files: &spec.files,
            input: &input,
            input_options: &input_options,
            side: &side,
            side_dir: &side_dir,
            out_root: &out_root,
        };
        rewrite(&cl, &refs, &access)?
    };

    // Fresh: a directory with the same name can only be a leftover.
    if tokio::fs::try_exists(dir).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(dir).await.with_context(|| format!("clearing {}", dir.display()))?;
    }
    tokio::fs::create_dir_all(format!("{dir_str}/side")).await.context("creating the scratch directory")?;
    for d in &rw.plan.dirs {
        ensure!(Path::new(&d.scratch).starts_with(dir), "output directory {} is outside scratch", d.scratch);
        tokio::fs::create_dir_all(&d.scratch).await.with_context(|| format!("creating {}", d.scratch))?;
    }
    files.fetch_all().await?;
    Ok(rw)
}

/// Where each of the shim's files comes from on this node.
#[derive(Debug, Default)]
struct SideFiles {
    controller: String,
    trust: Trust,
    access: String,
    /// Offer id → a local path through `--path-map` (the file is there, same size).
    local: HashMap<u32, String>,
    /// Filter file offer id → its path for ffmpeg.
    side: HashMap<u32, String>,
    /// Directory reference → its scratch copy.
    dirs: HashMap<String, String>,
    fetches: Vec<Fetch>,
}

#[derive(Debug, Clone)]
struct Fetch {
    offer: FileOffer,
    dest: PathBuf,
    /// A local copy source, else the relay.
    local: Option<String>,
}

impl SideFiles {
    fn plan(spec: &JobSpec, cfg: &Config, dir: &str, refs: &[FileRef]) -> SideFiles {
        let mut files = SideFiles {
            controller: cfg.controller.clone(),
            trust: cfg.trust.clone(),
            access: encode_component(&spec.access),
            ..SideFiles::default()
        };
        let mapped = |reference: &str, size: u64| -> Option<String> {
            let path = map_path(&cfg.path_maps, reference, &spec.cwd)?;
            let meta = std::fs::metadata(&path).ok()?;
            (meta.is_file() && meta.len() == size).then_some(path)
        };
        for r in refs {
            match r.site {
                Site::Input(_) => {
                    let offer = spec.files.iter().find(|f| f.reference == r.path && f.entry.is_none());
                    if let Some(f) = offer.filter(|f| !f.stream)
                        && let Some(path) = mapped(&f.reference, f.size)
                    {
                        tracing::info!(reference = %f.reference, local = %path, "input read through a path map");
                        files.local.insert(f.id, path);
                    }
                }
                Site::Filter { .. } if r.dir => {
                    if files.dirs.contains_key(&r.path) {
                        continue;
                    }
                    let scratch = format!("{dir}/side/dir{}", files.dirs.len());
                    let mut names = std::collections::HashSet::new();
                    for f in spec.files.iter().filter(|f| f.reference == r.path) {
                        // An empty entry stands for an empty directory: nothing to fetch.
                        let Some(entry) = f.entry.as_ref().filter(|e| !e.is_empty()) else { continue };
                        // The entry name comes from the controller: it only ever
                        // becomes one sanitised component.
                        let mut name = sanitize(entry);
                        if !names.insert(name.clone()) {
                            name = format!("{}-{name}", f.id);
                            names.insert(name.clone());
                        }
                        let local = mapped(&format!("{}/{entry}", r.path.trim_end_matches('/')), f.size)
                            .filter(|_| crate::config::is_plain_name(entry));
                        files.fetches.push(Fetch { offer: f.clone(), dest: format!("{scratch}/{name}").into(), local });
                    }
                    files.dirs.insert(r.path.clone(), scratch);
                }
                // Read through the relay like the input it also is.
                Site::Filter { .. } if r.streamed => {}
                Site::Filter { .. } => {
                    let Some(f) = spec.files.iter().find(|f| f.reference == r.path && f.entry.is_none()) else {
                        continue; // rewrite() reports it as not offered
                    };
                    if files.side.contains_key(&f.id) {
                        continue;
                    }
                    // A file this node can see is used where it is.
                    if let Some(path) = mapped(&f.reference, f.size) {
                        files.side.insert(f.id, path);
                        continue;
                    }
                    let dest = format!("{dir}/side/{}/{}", f.id, sanitize(base_name(&f.reference)));
                    files.side.insert(f.id, dest.clone());
                    files.fetches.push(Fetch { offer: f.clone(), dest: dest.into(), local: None });
                }
            }
        }
        files
    }

    fn relay(&self, f: &FileOffer) -> String {
        http_url(&self.controller, &format!("{FILES_PATH}/{}/{}{}", self.access, f.id, relay_extension(f)))
    }

    fn input(&self, f: &FileOffer) -> String {
        match self.local.get(&f.id) {
            // `file:` so that a colon in the path is never read as a protocol.
            Some(path) => format!("file:{path}"),
            None => self.relay(f),
        }
    }

    /// ffmpeg does not verify a TLS peer unless asked: for an https relay, it
    /// checks the controller's certificate and name like the node's own link,
    /// against `tls_ca` when set (ffmpeg then trusts that file alone), else the
    /// system's roots.
    fn input_options(&self, url: &str) -> Vec<Opt> {
        if !ffcluster::tls::is_tls_url(url) {
            return Vec::new();
        }
        let mut opts = vec![Opt::new("tls_verify", Some("1"))];
        if let Some(ca) = self.trust.ca_file() {
            opts.push(Opt::new("ca_file", Some(ca.to_string_lossy())));
        }
        opts
    }

    fn side(&self, f: &FileOffer) -> String {
        self.side.get(&f.id).cloned().unwrap_or_else(|| self.relay(f))
    }

    fn side_dir(&self, reference: &str) -> String {
        self.dirs.get(reference).cloned().unwrap_or_default()
    }

    async fn fetch_all(&self) -> anyhow::Result<()> {
        // A directory with no entries (an empty fonts directory) still has to exist.
        for dir in self.dirs.values() {
            tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {dir}"))?;
        }
        let mut running = tokio::task::JoinSet::new();
        let mut queue = self.fetches.iter().map(|f| (f.clone(), self.relay(&f.offer)));
        loop {
            while running.len() < PARALLEL_FETCHES {
                let Some((f, url)) = queue.next() else { break };
                running.spawn(fetch_one(f, url, self.trust.clone()));
            }
            match running.join_next().await {
                None => return Ok(()),
                Some(r) => r.context("fetch task failed")??,
            }
        }
    }
}

async fn fetch_one(f: Fetch, url: String, trust: Trust) -> anyhow::Result<()> {
    if let Some(parent) = f.dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let what = match &f.offer.entry {
        Some(e) => format!("{}/{e}", f.offer.reference),
        None => f.offer.reference.clone(),
    };
    if let Some(local) = &f.local {
        let n = tokio::fs::copy(local, &f.dest).await.with_context(|| format!("copying {local}"))?;
        ensure!(n == f.offer.size, "{local} changed size while being copied");
    } else {
        fetch::download(&url, &trust, &f.dest, f.offer.size).await.with_context(|| format!("fetching {what}"))?;
    }
    tracing::debug!(file = %what, bytes = f.offer.size, "side file ready");
    Ok(())
}

/// The offered file's extension, with its dot, for its relay URL (`…/1.mkv`;
/// the controller ignores it). ffmpeg guesses a format from the name when the
/// content alone is not conclusive (a damaged header): without the extension
/// the node could read a file as another format than a local ffmpeg does, and
/// fail differently. Only a short alphanumeric extension is kept, so the URL
/// stays one plain path segment.
fn relay_extension(f: &FileOffer) -> String {
    // A relayed URL's name is its path's last segment (`…/stream.ts?x=1`).
    let reference = if f.stream { f.reference.split(['?', '#']).next().unwrap_or("") } else { &f.reference };
    let name = base_name(f.entry.as_deref().unwrap_or(reference));
    match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty() && (1..=8).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            format!(".{ext}")
        }
        _ => String::new(),
    }
}

/// The last component of a path (the whole string when it has no `/`).
fn base_name(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or(path)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so that the
/// controller's capability string can only ever be one URL path segment.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn spawn(cfg: &Config, dir: &Path, rw: &Rewritten) -> std::io::Result<Child> {
    let mut cmd = Command::new(&cfg.ffmpeg);
    cmd.args(&rw.args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(if rw.plan.stdout { Stdio::piped() } else { Stdio::null() })
        .kill_on_drop(true)
        // Its own group: a Ctrl-C meant for the agent in a terminal does not reach
        // ffmpeg behind the agent's back; the agent decides what ffmpeg gets.
        .process_group(0);
    let agent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (prctl, getppid); it allocates nothing
    // (errors are raw OS errors).
    unsafe {
        cmd.pre_exec(move || {
            // If the agent dies, so does ffmpeg: nobody would collect its output.
            // The signal fires when the forking *thread* ends; this runs on a
            // runtime worker thread, which lives as long as the agent.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The agent may have died before the prctl took effect.
            if nix::unistd::getppid() != agent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// From spawn to `Exited`.
async fn supervise(
    job: JobId,
    mut child: Child,
    rw: Rewritten,
    out: &Outbox,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    early: Vec<Control>,
    over: &AtomicBool,
) {
    let started = Instant::now();
    let pid = child.id();
    tracing::info!(job, pid, "ffmpeg started");
    // What ffmpeg really runs (relay URLs, scratch paths, TLS options), unlike
    // the arguments the job arrived with.
    tracing::debug!(job, args = ?rw.args, "ffmpeg arguments");

    let file_ids = Arc::new(AtomicU32::new(0));
    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdin_task = tokio::spawn(feed_stdin(stdin, stdin_rx));
    let stderr = child.stderr.take().expect("stderr is piped");
    let disk_full = Arc::new(AtomicBool::new(false));
    let mut stderr_task = tokio::spawn(pump_stderr(
        job,
        stderr,
        rw.replacements.clone(),
        out.clone(),
        DiskFull { flag: disk_full.clone(), ffmpeg: pid },
    ));
    let stdout_task =
        child.stdout.take().map(|s| tokio::spawn(outputs::pump_stdout(job, s, file_ids.clone(), out.clone())));
    let (ended_tx, ended_rx) = watch::channel(None);
    let watcher = Watcher::new(job, OutputTracker::new(rw.plan.clone()), file_ids, out.clone());
    let watcher_task = tokio::spawn(watcher.run(ended_rx));
    let mut aborts = vec![stdin_task.abort_handle(), stderr_task.abort_handle(), watcher_task.abort_handle()];
    aborts.extend(stdout_task.as_ref().map(|t| t.abort_handle()));

    let mut cancelled = false;
    for c in early {
        cancelled |= apply(job, &child, &stdin_tx, c);
    }
    let status = loop {
        if cancelled {
            kill_group(&child);
            break child.wait().await;
        }
        tokio::select! {
            status = child.wait() => break status,
            c = ctl.recv() => cancelled = apply(job, &child, &stdin_tx, c.unwrap_or(Control::Cancel)),
        }
    };
    drop(stdin_tx);
    if cancelled {
        aborts.iter().for_each(|a| a.abort());
        tracing::info!(job, "ffmpeg killed, job dropped");
        return;
    }
    // ffmpeg reports a full scratch disk only on stderr, and may still exit 0
    // (it does when closing an mp4 fails): read stderr to the end before
    // judging how the job ended. Its pipe closes as ffmpeg exits.
    let stderr_read = tokio::time::timeout(Duration::from_secs(1), &mut stderr_task).await.is_ok();
    let disk_full = disk_full.load(Ordering::Relaxed);
    // Exit code 1, as an ffmpeg that gave up on a write error, whether it exited
    // 0 or was killed for it.
    let status = if disk_full { Ok(std::process::ExitStatus::from_raw(1 << 8)) } else { status };
    let (exit, ended) = match status {
        Ok(s) => {
            let exit = RemoteExit { code: s.code(), signal: s.signal() };
            (exit, if s.code().is_some() { Ended::Exited } else { Ended::Killed })
        }
        Err(e) => {
            // Only if the child was reaped behind tokio's back; say "ended
            // somehow" and publish nothing that might be partial.
            tracing::error!(job, "waiting for ffmpeg failed: {e}");
            (RemoteExit { code: None, signal: None }, Ended::Killed)
        }
    };
    // What was written after the disk filled up is damaged: publish no more of it.
    let _ = ended_tx.send(Some(if disk_full { Ended::Killed } else { ended }));

    // Everything ffmpeg said and wrote goes out before Exited; a Cancel still wins.
    let drain = async {
        let streams = async {
            if !stderr_read {
                let _ = stderr_task.await;
            }
            if let Some(t) = stdout_task {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(DRAIN_GRACE, streams).await.is_err() {
            tracing::warn!(job, "ffmpeg's stderr/stdout stayed open after it exited");
        }
        let _ = watcher_task.await;
    };
    tokio::pin!(drain);
    let drained = loop {
        tokio::select! {
            _ = &mut drain => break true,
            c = ctl.recv() => if matches!(c, None | Some(Control::Cancel)) { break false },
        }
    };
    if !drained {
        aborts.iter().for_each(|a| a.abort());
        tracing::info!(job, "cancelled while sending its last output");
        return;
    }
    aborts.iter().for_each(|a| a.abort());
    tracing::info!(job, code = exit.code, signal = exit.signal, secs = started.elapsed().as_secs_f64(), "ffmpeg ended");
    over.store(true, Ordering::Relaxed);
    let _ = out.msg(&NodeMsg::Exited { job, exit }).await;
}

/// Applies one control message; true when it was a cancel (ffmpeg is then being killed).
fn apply(job: JobId, child: &Child, stdin: &mpsc::UnboundedSender<Vec<u8>>, c: Control) -> bool {
    match c {
        Control::Stdin(bytes) => {
            let _ = stdin.send(bytes);
            false
        }
        Control::Signal(s) => {
            let sig = match s {
                JobSignal::Interrupt => Signal::SIGINT,
                JobSignal::Terminate => Signal::SIGTERM,
                JobSignal::Kill => Signal::SIGKILL,
            };
            tracing::info!(job, signal = %sig, "signal from the controller");
            // The child is not reaped while this task holds it, so the pid is still ffmpeg's.
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), sig);
            }
            false
        }
        Control::Cancel => {
            kill_group(child);
            true
        }
    }
}

fn kill_group(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Writes what the controller relays to ffmpeg's stdin, one write per frame
/// (keys like `q` must arrive at once); an empty frame closes it.
async fn feed_stdin(mut stdin: ChildStdin, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if bytes.is_empty() {
            break;
        }
        if stdin.write_all(&bytes).await.is_err() || stdin.flush().await.is_err() {
            break;
        }
    }
}

/// Watches ffmpeg's stderr for a full disk. On a node every output file is in
/// the job's scratch directory, so "No space left on device" always means the
/// node's scratch filled up and the output is incomplete, whatever ffmpeg's
/// exit code says.
struct DiskFull {
    flag: Arc<AtomicBool>,
    ffmpeg: Option<u32>,
}

impl DiskFull {
    /// True (once) when `line` reports a full disk; ffmpeg is then killed, so
    /// that it writes nothing more that could be published.
    fn check(&self, line: &[u8]) -> bool {
        let full = [nix::errno::Errno::ENOSPC, nix::errno::Errno::EDQUOT]
            .iter()
            .any(|e| line.windows(e.desc().len()).any(|w| w == e.desc().as_bytes()));
        if !full || self.flag.swap(true, Ordering::Relaxed) {
            return false;
        }
        if let Some(pid) = self.ffmpeg {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        true
    }
}

/// Sends ffmpeg's stderr a line at a time (so no path is cut in two), with the
/// node's paths and relay URLs turned back into the names the shim gave.
/// A full disk is reported after the line that says so.
async fn pump_stderr(
    job: JobId,
    mut stderr: ChildStderr,
    replacements: Vec<(String, String)>,
    out: Outbox,
    disk_full: DiskFull,
) -> Result<(), Closed> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut offset = 0u64;
    loop {
        let n = stderr.read(&mut buf).await.unwrap_or(0);
        let eof = n == 0;
        pending.extend_from_slice(&buf[..n]);
        let cut = match pending.iter().rposition(|b| matches!(b, b'\n' | b'\r')) {
            _ if eof => pending.len(),
            Some(i) => i + 1,
            None if pending.len() >= MAX_LINE => pending.len(),
            None => 0,
        };
        if cut > 0 {
            let mut text = translate(&pending[..cut], &replacements);
            if pending[..cut].split_inclusive(|b| matches!(b, b'\n' | b'\r')).any(|l| disk_full.check(l)) {
                tracing::error!(job, "the scratch disk is full; ffmpeg stopped, the output is incomplete");
                text.extend_from_slice(b"ffcluster-node: the node's scratch disk is full; the output is incomplete\n");
            }
            pending.drain(..cut);
            for chunk in text.chunks(MAX_FRAME_PAYLOAD) {
                out.frame(&Frame::new(FrameKind::Stderr, job, 0, offset, chunk)).await?;
                offset += chunk.len() as u64;
            }
        }
        if eof {
            return Ok(());
        }
    }
}

/// Applies the replacements line by line (each line keeps its terminator).
fn translate(bytes: &[u8], replacements: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|b| matches!(b, b'\n' | b'\r')) {
        out.extend_from_slice(&replace_all(line, replacements));
    }
    out
}

async fn remove_scratch(dir: &Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), "cannot remove job scratch: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PathMap;

    fn cfg(scratch: &Path, maps: Vec<PathMap>) -> Config {
        Config {
            controller: "http://ctl:9470".into(),
            token: "t".into(),
            trust: ffcluster::tls::Trust::default(),
            name: "n".into(),
            slots: 1,
            scratch: scratch.into(),
            ffmpeg: "ffmpeg".into(),
            path_maps: maps,
            hardware: crate::config::Hardware::Auto,
            translations: Vec::new(),
        }
    }

    fn offer(id: u32, reference: &str, entry: Option<&str>, size: u64) -> FileOffer {
        FileOffer { id, reference: reference.into(), entry: entry.map(Into::into), size, stream: false }
    }

    #[test]
    fn stderr_lines_name_the_shims_files() {
        let repl = vec![
            ("/s/job-1/out/d0/".to_owned(), "/tc/".to_owned()),
            ("http://ctl/api/v1/files/x/0".to_owned(), "file:/m/a.mkv".to_owned()),
        ];
        let text = b"Input #0, matroska, from 'http://ctl/api/v1/files/x/0':\r\
                     [hls @ 0x1] Opening '/s/job-1/out/d0/a1.ts' for writing\n";
        assert_eq!(
            translate(text, &repl),
            b"Input #0, matroska, from 'file:/m/a.mkv':\r[hls @ 0x1] Opening '/tc/a1.ts' for writing\n"
        );
        let latin1 = b"Opening '/s/job-1/out/d0/caf\xe9.ts'\n";
        assert_eq!(translate(latin1, &repl), b"Opening '/tc/caf\xe9.ts'\n");
    }

    #[test]
    fn side_files_stay_in_scratch_and_use_path_maps() {
        let tmp = tempfile::tempdir().unwrap();
        let nas = tmp.path().join("nas");
        std::fs::create_dir_all(nas.join("movies")).unwrap();
        std::fs::write(nas.join("movies/a.mkv"), b"12345").unwrap();
        let maps = vec![format!("/media={}", nas.display()).parse().unwrap()];
        let c = cfg(tmp.path(), maps);
        let graph = "subtitles=f=/subs/../x.srt:fontsdir=/att/fonts";
        let args = [
            "-i",
            "file:/media/movies/a.mkv",
            "-i",
            "/media/movies/b.mkv",
            "-vf",
            graph,
            "-c:v",
            "libx264",
            "/tc/o.mp4",
        ];
        let spec = JobSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            files: vec![
                offer(0, "/media/movies/a.mkv", None, 5),
                // Mapped but a different size: the relay is used.
                offer(1, "/media/movies/b.mkv", None, 9),
                offer(2, "/subs/../x.srt", None, 3),
                offer(3, "/att/fonts", Some("../../evil.ttf"), 4),
                offer(4, "/att/fonts", Some("ok.ttf"), 4),
                offer(5, "/att/fonts", Some("ok.ttf"), 4),
            ],
            access: "cap/../x".into(),
            light: false,
        };
        let cl = CommandLine::parse(&spec.args).unwrap();
        let refs = file_refs(&cl).unwrap();
        let dir = tmp.path().join("job-1");
        let dir = dir.to_str().unwrap();
        let files = SideFiles::plan(&spec, &c, dir, &refs);
        assert_eq!(files.input(&spec.files[0]), format!("file:{}/movies/a.mkv", nas.display()));
        assert_eq!(files.input(&spec.files[1]), "http://ctl:9470/api/v1/files/cap%2F..%2Fx/1.mkv");
        assert_eq!(files.side(&spec.files[2]), format!("{dir}/side/2/x.srt"));
        assert_eq!(files.side_dir("/att/fonts"), format!("{dir}/side/dir0"));
        let dests: Vec<String> = files.fetches.iter().map(|f| f.dest.to_str().unwrap().to_owned()).collect();
        assert_eq!(
            dests,
            [
                format!("{dir}/side/2/x.srt"),
                format!("{dir}/side/dir0/.._.._evil.ttf"),
                format!("{dir}/side/dir0/ok.ttf"),
                format!("{dir}/side/dir0/5-ok.ttf"),
            ]
        );
        for d in &dests {
            assert!(!d[dir.len()..].contains("/../"), "{d}");
        }
    }

    #[test]
    fn relay_urls_keep_a_plain_extension_only() {
        let ext = |r: &str, e: Option<&str>| relay_extension(&offer(0, r, e, 1));
        assert_eq!(ext("/m/My Film (2001).mkv", None), ".mkv");
        assert_eq!(ext("/att/fonts", Some("a.TTF")), ".TTF");
        for odd in ["/m/noext", "/m/.hidden", "/m/a.b c", "/m/a.%2e", "/m/a.verylongext", "/m/a."] {
            assert_eq!(ext(odd, None), "", "{odd}");
        }
        let stream = |r: &str| relay_extension(&FileOffer { stream: true, ..offer(0, r, None, 0) });
        assert_eq!(stream("http://localhost:8096/LiveTv/LiveStreamFiles/ab/stream.ts?x=1.y"), ".ts");
        assert_eq!(stream("http://h:5004/auto/v1"), "");
    }
}
