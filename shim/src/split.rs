//! The shim's side of a split job: nodes encode the video in chunks, the
//! controller streams the chunks here, and a local ffmpeg (the *finisher*) runs
//! the job's own command line with the video copied from the joined chunks and
//! the audio encoded once, continuously: by another node, which streams it here
//! too, or, with a lone node, by the finisher itself (see `ffcluster::split`).
//!
//! Because the finisher is the real ffmpeg writing the job's real outputs, the
//! files, their names, the order they appear in, stdout, the progress on stderr,
//! `q` and `c` on stdin and the exit code are ffmpeg's own. The shim feeds it the
//! video on descriptor 3 (and the audio on 4) and forwards stdin and signals.
//!
//! Nothing may fail through the shim that succeeds directly. Until the job is
//! *visible* (the finisher wrote a byte of output or stdout, or its held-back
//! stderr was released: `crate::visible`), any failure falls back, and the
//! user sees one run: whole to one node when the failure was the split's own
//! (the controller refused the plan, a chunk or the audio track failed for
//! good, the finisher rejected the joined chunks), else locally (the
//! controller is unreachable or gone, the finisher failed on the job's own
//! command line). After that, a lost job resumes where it was
//! (`crate::resume`) or ends with an error; its outputs stay as incomplete as
//! an interrupted ffmpeg leaves them (no playlist end, no trailer).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ffcluster::ffmpeg::CommandLine;
use ffcluster::ffmpeg::decision::Verdict;
use ffcluster::protocol::{AUDIO_CHUNK, Frame, FrameKind, JobId, JobRequest, ToShim, Why};
use ffcluster::split::assemble::Assembler;
use ffcluster::split::takeover::{self, Announced};
use ffcluster::split::{FINISHER_AUDIO_FD, FINISHER_LIVE_FD, FINISHER_VIDEO_FD, Probe, Split, SplitPlan};
use ffcluster::tls::Trust;
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{self, Outcome, Ws, fallback};
use crate::config::Config;
use crate::local_chunks::{Event as LocalEvent, LocalEncodes};
use crate::log::Log;
use crate::offer::Offers;
use crate::origin::Origin;
use crate::visible::{FinisherStdout, HeldStderr, OutputWatch, Visibility};
use std::sync::Arc;

/// How often a split job that shows nothing yet looks for the finisher's
/// first output (`crate::visible`).
const VISIBLE_POLL: Duration = Duration::from_millis(100);

/// After a stop (`q`, a signal) the finisher gets this long to stop by itself;
/// then its video input is closed, which ends a read it may be blocked in.
const STOP_GRACE: Duration = Duration::from_millis(300);

/// What became of a split attempt.
pub enum Attempt {
    Done(Outcome),
    /// The job cannot be split; offload it whole instead (the reason is logged
    /// and goes with the job: a `nosplit.*` code and its detail).
    Whole(Why),
}

pub fn run(args: &[String], verdict: &Verdict, cfg: &Config, ffmpeg: &Path, ffprobe: &Path, log: &Log) -> Attempt {
    let (controller, token, cl) = match prologue(args, cfg) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let started = Instant::now();
    let probe = match probe(&cl, ffprobe) {
        Ok(p) => p,
        Err(why) => return Attempt::Whole(Why::new("nosplit.probe", why)),
    };
    let split = match ffcluster::split::split(&cl, &probe) {
        Ok(s) => s,
        Err(e) => return Attempt::Whole(Why::from(&e)),
    };
    log.line(format_args!(
        "split: {:.1} s from {:.3} s on a {} s grid; probed in {} ms",
        split.plan.end - split.plan.start,
        split.plan.start,
        split.plan.grid.period,
        started.elapsed().as_millis()
    ));
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return Attempt::Done(fallback(Why::new("no_cwd", format!("no working directory: {e}")))),
    };
    let offers = match Offers::prepare(&cl, &cwd, cfg.relay_inputs) {
        Ok(o) => o,
        Err(why) => return Attempt::Done(fallback(Why::new("inputs", why))),
    };
    let request = cluster::job_request(args, &cwd, &offers, verdict, Some(split.plan.clone()), None, cfg.priority);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return Attempt::Done(fallback(Why::new("shim", format!("cannot start the cluster client: {e}")))),
    };
    let session = Session { offers, log, ffmpeg: ffmpeg.to_path_buf(), split, live: None, cl, cwd };
    runtime.block_on(session.run(controller, token, &cfg.trust, request))
}

/// What every split needs: a cluster to talk to and one input and output.
fn prologue<'c>(args: &[String], cfg: &'c Config) -> Result<(&'c str, &'c str, CommandLine), Attempt> {
    let (Some(controller), Some(token)) = (cfg.controller.as_deref(), cfg.token.as_deref()) else {
        return Err(Attempt::Done(fallback(Why::new("unconfigured", "no controller or token configured"))));
    };
    let cl = CommandLine::parse_with(args, cfg.dialect)
        .map_err(|e| Attempt::Done(fallback(Why::new("bad_args", e.to_string()))))?;
    if cl.inputs.len() != 1 || cl.outputs.len() != 1 {
        return Err(Attempt::Whole(Why::new("nosplit.shape", "splitting needs exactly one input and one output")));
    }
    Ok((controller, token, cl))
}

/// A live job (a growing http stream to an HLS playlist): the shim reads the
/// stream once, from the origin; the controller cuts what it relays into
/// pieces for the nodes, and the finisher gets its own copy for the audio.
pub fn run_live(args: &[String], verdict: &Verdict, cfg: &Config, ffmpeg: &Path, ffprobe: &Path, log: &Log) -> Attempt {
    let (controller, token, cl) = match prologue(args, cfg) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let input = &cl.inputs[0].url.raw;
    if !crate::origin::relayed(input, cfg.relay_inputs, &crate::origin::own_addresses) {
        let why = format!("the live input is not relayed (relay_inputs = {:?})", cfg.relay_inputs);
        return Attempt::Whole(Why::new("nosplit.live_not_relayed", why));
    }
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return Attempt::Done(fallback(Why::new("no_cwd", format!("no working directory: {e}")))),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return Attempt::Done(fallback(Why::new("shim", format!("cannot start the cluster client: {e}")))),
    };
    // Opens the origin, which is then read once for the probe, the nodes and
    // the finisher.
    let offers = match Offers::prepare(&cl, &cwd, cfg.relay_inputs) {
        Ok(o) => o,
        Err(why) => return Attempt::Done(fallback(Why::new("inputs", why))),
    };
    let Some((stream, origin)) =
        offers.offers.iter().find(|o| o.stream).and_then(|o| Some((o.id, offers.stream(o.id)?)))
    else {
        return Attempt::Whole(Why::new("nosplit.live_not_relayed", "the live input is not relayed"));
    };
    let started = Instant::now();
    let probed = runtime.block_on(probe_live(&cl, ffprobe, &origin));
    let probed = probed.map_err(|why| Why::new("nosplit.probe", why));
    let split = probed.and_then(|p| ffcluster::split::split_live(&cl, &p, cfg.live_piece).map_err(|e| Why::from(&e)));
    let mut split = match split {
        Ok(s) => s,
        Err(why) => {
            // Whole on one node, relaying the connection already open: the
            // probe consumed none of it.
            log.line(format_args!("split: not split ({why}); the whole job goes to one node"));
            drop(runtime);
            return Attempt::Done(cluster::run_with(args, verdict, cfg, log, Some(offers), Some(why)));
        }
    };
    let piece = split.plan.live.as_ref().map_or(0.0, |l| l.piece);
    if let Some(live) = &mut split.plan.live {
        live.stream = stream;
    }
    log.line(format_args!(
        "split: live stream in {piece:.3} s pieces on a {} s grid; probed in {} ms",
        split.plan.grid.period,
        started.elapsed().as_millis()
    ));
    let request = cluster::job_request(args, &cwd, &offers, verdict, Some(split.plan.clone()), None, cfg.priority);
    let session = Session { offers, log, ffmpeg: ffmpeg.to_path_buf(), split, live: Some(origin), cl, cwd };
    runtime.block_on(session.run(controller, token, &cfg.trust, request))
}

/// ffprobe on the stream's first bytes, fed through a pipe as they arrive
/// (without consuming them: the job reads the stream from its start). It
/// stops reading once it knows every stream, as the direct ffmpeg would.
async fn probe_live(cl: &CommandLine, ffprobe: &Path, origin: &Origin) -> Result<Probe, String> {
    let input = &cl.inputs[0];
    // The plan needs the streams and the format, which the PMT and the first
    // packets give; the job's own -analyzeduration (Jellyfin: 3 s) would hold
    // the whole job back by as much, and the finisher analyses the stream
    // again as the job says anyway.
    let mut args: Vec<String> = ["-analyzeduration", "1000000"].map(str::to_owned).to_vec();
    for name in ["probesize", "fflags", "f"] {
        if let Some(v) = input.last_value(name) {
            args.extend([format!("-{name}"), v.to_owned()]);
        }
    }
    args.extend(Probe::ffprobe_args("pipe:0"));
    let mut child = tokio::process::Command::new(ffprobe)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", ffprobe.display()))?;
    let mut stdin = child.stdin.take().ok_or("ffprobe has no stdin")?;
    let feed = async move {
        use tokio::io::AsyncWriteExt;
        let mut offset = 0u64;
        loop {
            let bytes = match origin.peek(offset, 256 << 10).await {
                Ok(b) if !b.is_empty() => b,
                // The end of the stream ends ffprobe's input (stdin drops).
                _ => return,
            };
            offset += bytes.len() as u64;
            // ffprobe closes its end once it knows enough.
            if stdin.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let answer = async {
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("ffprobe could not read the live stream ({})", out.status));
        }
        let text = String::from_utf8(out.stdout).map_err(|_| "ffprobe's answer is not UTF-8".to_owned())?;
        Probe::from_json(&text).map_err(|e| e.to_string())
    };
    let limit = async {
        tokio::time::sleep(LIVE_PROBE_LIMIT).await;
        Err(format!("the live stream could not be probed in {} s", LIVE_PROBE_LIMIT.as_secs()))
    };
    let feed = async {
        feed.await;
        std::future::pending::<Result<Probe, String>>().await
    };
    tokio::select! {
        r = answer => r,
        r = limit => r,
        r = feed => r,
    }
}

/// How long probing a live stream may take: a stream that has not shown its
/// streams by then is not split.
const LIVE_PROBE_LIMIT: Duration = Duration::from_secs(15);

/// Asks the real ffprobe what the plan needs (tens of milliseconds).
fn probe(cl: &CommandLine, ffprobe: &Path) -> Result<Probe, String> {
    let input = &cl.inputs[0];
    let out = run_ffprobe(ffprobe, &Probe::ffprobe_args(&input.url.raw))?;
    let mut probe = Probe::from_json(&out).map_err(|e| e.to_string())?;
    if !probe.pictures_found() {
        // A long run of pictures that cannot be decoded (a recording cut
        // mid-GOP with long GOPs): read further for the first one.
        let more = Probe::ffprobe_args_reading(&input.url.raw, ffcluster::split::PROBE_PACKETS_MORE);
        probe = Probe::from_json(&run_ffprobe(ffprobe, &more)?).map_err(|e| e.to_string())?;
    }
    let noaccurate = input.opts_named("accurate_seek").last().is_some_and(|o| !o.is_on());
    if let (true, Some(ss)) = (noaccurate, input.last_value("ss")) {
        probe.parse_keyframe(&run_ffprobe(ffprobe, &Probe::keyframe_args(&input.url.raw, ss))?);
    }
    Ok(probe)
}

fn run_ffprobe(ffprobe: &Path, args: &[String]) -> Result<String, String> {
    let out = Command::new(ffprobe)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", ffprobe.display()))?;
    if !out.status.success() {
        return Err(format!("ffprobe could not read the input ({})", out.status));
    }
    String::from_utf8(out.stdout).map_err(|_| "ffprobe's answer is not UTF-8".into())
}

struct Session<'a> {
    offers: Offers,
    log: &'a Log,
    ffmpeg: PathBuf,
    split: Split,
    /// A live job's stream, which the finisher reads a copy of.
    live: Option<Arc<Origin>>,
    /// The job's command line and working directory: where its output goes.
    cl: CommandLine,
    cwd: PathBuf,
}

/// Why the loop ended.
enum End {
    Finished(ExitStatus),
    /// The cluster lost the job; the cause (`controller_gone`, `job_failed`,
    /// `chunk`, …: contrib/docs/how-it-works.md, "Why a job was not split").
    Lost(Why),
}

impl Session<'_> {
    async fn run(self, controller: &str, token: &str, trust: &Trust, request: JobRequest) -> Attempt {
        let cluster::Placed { mut tx, mut rx, job, audio, .. } =
            match cluster::submit(controller, token, trust, request).await {
                Ok(placed) => placed,
                // Nothing has happened yet. A refusal of the split (its plan,
                // a message this shim does not expect) need not be one of the
                // whole job; an unreachable controller takes neither.
                Err(why) => {
                    let whole = matches!(why.code.as_str(), "rejected" | "protocol");
                    return after_split(why, whole);
                }
            };
        let started = Instant::now();
        let args = match (audio, &self.split.finisher_audio_copy) {
            (false, _) => &self.split.finisher,
            (true, Some(args)) => args,
            // Dropping the socket cancels the job; nothing has been written yet.
            (true, None) => {
                let why = Why::new("protocol", "the controller sent audio this job does not have");
                return self.fall_back(job, &mut tx, why, true).await;
            }
        };
        // How the job's output is before the finisher touches it.
        let watch = OutputWatch::new(&self.cl, &self.cwd);
        let (mut stdout, stdout_to) = FinisherStdout::choose();
        let spawned = spawn_finisher(&self.ffmpeg, args, audio, self.live.is_some(), stdout_to);
        let (mut finisher, video, audio, stream) = match spawned {
            Ok(f) => f,
            Err(e) => {
                // The local run would exec the same binary: a node runs it.
                let why = format!("cannot start the finisher {}: {e}", self.ffmpeg.display());
                return self.fall_back(job, &mut tx, Why::new("finisher", why), true).await;
            }
        };
        let Some(stderr_pipe) = finisher.child.stderr.take() else {
            finisher.kill_and_wait();
            return self.fall_back(job, &mut tx, Why::new("finisher", "the finisher has no stderr"), true).await;
        };
        stdout.start(finisher.child.stdout.take());
        let shown = Visibility::new(watch, HeldStderr::start(stderr_pipe), stdout);
        let audio_from = if audio.is_some() { "a node" } else { "the finisher" };
        self.log.line(format_args!(
            "split: job {job} accepted; finisher pid {} started; audio encoded by {audio_from}",
            finisher.pid
        ));
        // The head chunk streams one keyframe interval at a time where every
        // attempt of a chunk has its keyframes on the same frames (forced on the
        // grid); otherwise a chunk is written once an attempt finished it. Either
        // way any attempt may die or lose the race without harm.
        let assembler = if self.live.is_none() && self.split.plan.recipe.keyframe_period.is_some() {
            Assembler::new()
        } else {
            Assembler::whole_chunks()
        };
        let mut run = Running::new(finisher, video, audio, assembler);
        if let (Some(origin), Some(fd)) = (&self.live, stream) {
            tokio::spawn(copy_stream(origin.clone(), feeder(fd)));
        }
        let mut end = run.pump(&mut tx, &mut rx, &self.offers, self.log, &shown).await;
        if let End::Lost(cause) = &end
            && self.may_take_over(cause, &run, &shown)
        {
            match run.take_over(&self.split.plan, &self.ffmpeg, &self.cwd) {
                Ok(n) => {
                    self.log.line(format_args!(
                        "split: job {job} lost on the cluster ({}: {}); finishing it here: {n} encode(s) left",
                        cause.code, cause.detail
                    ));
                    end = run.pump(&mut tx, &mut rx, &self.offers, self.log, &shown).await;
                }
                Err(e) => self.log.line(format_args!("split: job {job}: cannot finish it here: {e}")),
            }
        }
        let (status, cause) = match end {
            End::Finished(status) => (Some(status), None),
            End::Lost(cause) => {
                run.kill();
                (run.exited.recv().await, Some(cause))
            }
        };
        // With the finisher gone, whether anything of it can be seen is final.
        let visible = shown.settle();
        let failed = cause.is_some() || !status.is_some_and(|s| s.success());
        if failed && !run.stopping && visible.is_none() {
            let held = shown.discard();
            let (cause, whole) = match cause {
                Some(cause) => {
                    let whole = matches!(cause.code.as_str(), "job_failed" | "chunk" | "protocol");
                    (cause, whole)
                }
                None => {
                    let how = status.map_or_else(|| "without a status".to_owned(), describe_exit);
                    let said = if held.is_empty() { String::new() } else { format!(": {held}") };
                    let why = format!("the finisher exited {how} before any output{said}");
                    // Before any video reached it, it failed on the job's own
                    // command line or input, as the local ffmpeg will, whose
                    // error is then the one to show; after, on the joined
                    // chunks, which a whole job does not have.
                    (Why::new("finisher", why), run.assembler.written() > 0)
                }
            };
            shown.watch.remove_created_empty();
            self.log.line(format_args!("split: job {job}: {}", run.timeline.describe()));
            return self.fall_back(job, &mut tx, cause, whole).await;
        }
        // Closing the socket tells the controller to cancel whatever still runs.
        let _ = tokio::time::timeout(Duration::from_millis(200), tx.close()).await;
        shown.finish();
        if let (Some(what), None) = (&visible, run.timeline.visible) {
            self.log.line(format_args!("split: job {job}: output visible: {what}"));
        }
        let mut lost = None;
        let code = match (cause, status) {
            (None, Some(status)) => exit_code(status),
            (None, None) => 1,
            (Some(cause), _) => {
                self.log.line(format_args!("split: job {job} lost: {cause}"));
                let why = format!("the split job was lost on the cluster: {}", cause.detail);
                // A stopping job just fails: Jellyfin wanted it to end.
                if run.stopping {
                    let _ = writeln!(std::io::stderr().lock(), "ffcluster: {why}");
                } else {
                    lost = Some(cluster::lost(cause, why));
                }
                1
            }
        };
        self.log.line(format_args!("split: job {job}: {}", run.timeline.describe()));
        let cpu = |who| {
            nix::sys::resource::getrusage(who).map_or(0.0, |u| {
                let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
                secs(u.user_time()) + secs(u.system_time())
            })
        };
        self.log.line(format_args!(
            "split: job {job}: exit {code} after {:.2} s; {} chunks, {} handed over at a keyframe, {} video bytes \
             joined, {} audio bytes, {} input bytes served; CPU: shim {:.2} s, finisher {:.2} s",
            started.elapsed().as_secs_f64(),
            run.assembler.head(),
            run.assembler.handovers(),
            run.assembler.written(),
            run.audio.as_ref().map_or(0, |a| a.written),
            run.bytes_served,
            cpu(nix::sys::resource::UsageWho::RUSAGE_SELF),
            cpu(nix::sys::resource::UsageWho::RUSAGE_CHILDREN),
        ));
        Attempt::Done(lost.unwrap_or(Outcome::Exit(code)))
    }

    /// Whether a job the cluster lost is finished here rather than resumed: its
    /// output is visible (before that, falling back is as exact and simpler),
    /// nobody asked it to stop, the cluster itself failed (not the joining of
    /// what it sent), and it is not live (the controller cuts a live stream).
    fn may_take_over(&self, cause: &Why, run: &Running, shown: &Visibility) -> bool {
        let visible = run.timeline.visible.is_some() || shown.poll().is_some();
        visible
            && !run.stopping
            && self.live.is_none()
            && matches!(cause.code.as_str(), "controller_gone" | "job_failed")
    }

    /// The accepted job `job` failed with nothing of it visible, for `cause`:
    /// the controller is told (`fallback.*`, and where the job goes), the
    /// socket closed (which cancels what still runs), and the job goes whole
    /// to one node (`whole`: the failure was the split's own) or runs locally.
    async fn fall_back(
        &self,
        job: JobId,
        tx: &mut futures_util::stream::SplitSink<Ws, Message>,
        cause: Why,
        whole: bool,
    ) -> Attempt {
        let next = if whole { "the whole job goes to one node" } else { "it runs locally" };
        self.log
            .line(format_args!("split: job {job} failed before any output ({}: {}); {next}", cause.code, cause.detail));
        let told = Why::new(format!("fallback.{}", cause.code), format!("{}; {next}", cause.detail));
        cluster::tell_fallback(tx, &told).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), tx.close()).await;
        after_split(cause, whole)
    }
}

/// Where a split that failed with nothing visible goes, for `cause`: whole to
/// one node (a `fallback.*` reason not to split it), or locally.
fn after_split(cause: Why, whole: bool) -> Attempt {
    match fallback(cause) {
        Outcome::Fallback(why) if whole => Attempt::Whole(why),
        outcome => Attempt::Done(outcome),
    }
}

/// `with code 1`, `on signal 9`.
fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("with code {c}"),
        (None, Some(s)) => format!("on signal {s}"),
        _ => "without a status".to_owned(),
    }
}

fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        _ => 255,
    }
}

/// The finisher process and the ends the shim holds.
struct Finisher {
    pid: Pid,
    child: Child,
}

impl Finisher {
    fn kill_and_wait(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The finisher, and the write ends of its video pipe, of its audio pipe when a
/// node encodes the audio, and of its copy of a live stream.
type Spawned = (Finisher, OwnedFd, Option<OwnedFd>, Option<OwnedFd>);

fn spawn_finisher(
    ffmpeg: &Path,
    args: &[String],
    with_audio: bool,
    live: bool,
    stdout: Stdio,
) -> std::io::Result<Spawned> {
    let (video_read, video_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let audio = if with_audio { Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?) } else { None };
    let stream = if live { Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?) } else { None };
    // Moved above the descriptors they become, so that putting one in place
    // cannot overwrite the other.
    let high = |fd: &OwnedFd| -> std::io::Result<OwnedFd> {
        let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))?;
        // SAFETY: fcntl just returned this new descriptor, owned by nobody else.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
    };
    let video_high = high(&video_read)?;
    let audio_high = audio.as_ref().map(|(r, _)| high(r)).transpose()?;
    let stream_high = stream.as_ref().map(|(r, _)| high(r)).transpose()?;
    drop(video_read);
    let moves: Vec<(i32, i32)> = std::iter::once((video_high.as_raw_fd(), FINISHER_VIDEO_FD))
        .chain(audio_high.as_ref().map(|fd| (fd.as_raw_fd(), FINISHER_AUDIO_FD)))
        .chain(stream_high.as_ref().map(|fd| (fd.as_raw_fd(), FINISHER_LIVE_FD)))
        .collect();
    let mut dies_with_shim = crate::child::dies_with_shim();
    let mut cmd = Command::new(ffmpeg);
    // stderr is held back until the job is visible (`crate::visible`).
    cmd.arg0("ffmpeg").args(args).stdin(Stdio::piped()).stdout(stdout).stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (dup2, and those of `dies_with_shim`);
    // `moves` was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 leaves the new descriptor without close-on-exec.
            for &(from, to) in &moves {
                if libc_dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            dies_with_shim()
        });
    }
    let child = cmd.spawn()?;
    drop((video_high, audio_high, stream_high));
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    Ok((Finisher { pid, child }, video_write, audio.map(|(_, w)| w), stream.map(|(_, w)| w)))
}

/// Copies a live stream to the finisher as it arrives, and closes the
/// finisher's copy where the stream ends (cleanly or broken, as ffmpeg reading
/// it directly would see its input end).
async fn copy_stream(origin: Arc<Origin>, to: std::sync::mpsc::Sender<Vec<u8>>) {
    let mut offset = 0u64;
    loop {
        match origin.read(offset, 256 << 10).await {
            Ok(bytes) if !bytes.is_empty() => {
                offset += bytes.len() as u64;
                if to.send(bytes).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

fn libc_dup2(from: i32, to: i32) -> i32 {
    // SAFETY: plain dup2 on descriptors this process owns (between fork and exec).
    unsafe { nix::libc::dup2(from, to) }
}

/// The audio track a node encodes, on its way to the finisher.
///
/// A track that fails or stalls runs again from the start, maybe beside the
/// first attempt: the same ffmpeg build with the same arguments writes the same
/// bytes, so each attempt's bytes up to what the finisher already has are only
/// checked (by the hash of every [`AUDIO_BLOCK`] bytes), and whichever attempt is
/// ahead extends the track.
struct AudioFeed {
    /// `None` once closed.
    pipe: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    /// Bytes handed to the finisher.
    written: u64,
    /// Hashes of the finished blocks of what was written, and of the block in
    /// progress.
    blocks: Vec<u64>,
    current: Fnv,
    attempts: std::collections::BTreeMap<JobId, AudioAttempt>,
    done: bool,
}

/// How much of the audio track one attempt has delivered.
#[derive(Default)]
struct AudioAttempt {
    received: u64,
    current: Fnv,
}

const AUDIO_BLOCK: u64 = 64 * 1024;

/// FNV-1a: enough to tell two encodes of the same audio apart, and cheap.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl AudioFeed {
    fn new(pipe: std::sync::mpsc::Sender<Vec<u8>>) -> AudioFeed {
        AudioFeed {
            pipe: Some(pipe),
            written: 0,
            blocks: Vec::new(),
            current: Fnv::default(),
            attempts: std::collections::BTreeMap::new(),
            done: false,
        }
    }

    fn started(&mut self, attempt: JobId) {
        self.attempts.insert(attempt, AudioAttempt::default());
    }

    fn data(&mut self, attempt: JobId, offset: u64, mut payload: &[u8]) -> Result<(), String> {
        let Some(a) = self.attempts.get_mut(&attempt) else { return Ok(()) };
        if offset != a.received {
            return Err(format!("audio bytes out of order: {offset} where {} was due", a.received));
        }
        let mut pos = offset;
        while !payload.is_empty() {
            // Up to the end of the block `pos` lies in.
            let take = (AUDIO_BLOCK - pos % AUDIO_BLOCK).min(payload.len() as u64) as usize;
            let (piece, rest) = payload.split_at(take);
            let end = pos + take as u64;
            a.current.update(piece);
            if end > self.written {
                // New to the finisher (what lies before `written` was checked).
                let fresh = &piece[(self.written.max(pos) - pos) as usize..];
                self.current.update(fresh);
                self.written = end;
                if let Some(p) = &self.pipe
                    && p.send(fresh.to_vec()).is_err()
                {
                    self.pipe = None;
                }
                if end % AUDIO_BLOCK == 0 {
                    self.blocks.push(std::mem::take(&mut self.current).0);
                }
            }
            if end % AUDIO_BLOCK == 0 {
                let block = (end / AUDIO_BLOCK - 1) as usize;
                if self.blocks.get(block) != Some(&a.current.0) {
                    return Err(format!("two encodes of the audio track differ at byte {}", end - AUDIO_BLOCK));
                }
                a.current = Fnv::default();
            }
            pos = end;
            payload = rest;
        }
        a.received = pos;
        Ok(())
    }

    fn finished(&mut self, attempt: JobId, size: u64) -> Result<(), String> {
        let Some(a) = self.attempts.remove(&attempt) else { return Ok(()) };
        if a.received != size || self.written != size {
            return Err(format!(
                "the audio track ended at {size} bytes, {} of them received, {} written",
                a.received, self.written
            ));
        }
        if size % AUDIO_BLOCK != 0 && a.current.0 != self.current.0 {
            return Err("two encodes of the audio track differ in their last block".into());
        }
        self.done = true;
        self.pipe = None;
        Ok(())
    }

    fn failed(&mut self, attempt: JobId) {
        self.attempts.remove(&attempt);
    }
}

/// A writer thread for one of the finisher's input pipes.
fn feeder(fd: OwnedFd) -> std::sync::mpsc::Sender<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut pipe = std::fs::File::from(fd);
        for buf in rx {
            if pipe.write_all(&buf).is_err() {
                // The finisher is gone; its exit says why.
                return;
            }
        }
    });
    tx
}

/// A split job whose finisher runs.
struct Running {
    pid: Pid,
    assembler: Assembler,
    /// When a node encodes the audio.
    audio: Option<AudioFeed>,
    /// Joined video on its way to the finisher; `None` once closed.
    video: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    exited: mpsc::Receiver<ExitStatus>,
    /// A stop was asked for: close the video input at this moment if the
    /// finisher is still running then.
    close_video_at: Option<tokio::time::Instant>,
    /// A stop was asked for (`q`, a signal): the finisher's end is no failure.
    stopping: bool,
    stops: mpsc::UnboundedReceiver<()>,
    bytes_served: u64,
    /// When things first happened, for the log: where a slow start comes from.
    timeline: Timeline,
    /// Answers to reads of a live stream, which wait for the origin.
    stream_answers: (mpsc::UnboundedSender<cluster::Reply>, mpsc::UnboundedReceiver<cluster::Reply>),
    /// The video chunks the controller started, by chunk.
    announced: BTreeMap<u32, Announced>,
    /// The connection to the controller is still read.
    socket_open: bool,
    /// This machine's encodes, once the job was taken over from a lost cluster.
    local: Option<LocalEncodes>,
}

/// Milliseconds since the finisher started at which the job's pieces arrived.
#[derive(Default)]
struct Timeline {
    started: Option<Instant>,
    first_video: Option<u128>,
    /// The finisher's first output showed.
    visible: Option<u128>,
    first_audio: Option<u128>,
    audio_done: Option<u128>,
    /// When each chunk was joined whole (the head moved past it).
    joined: Vec<u128>,
}

impl Timeline {
    fn now(&self) -> u128 {
        self.started.map_or(0, |s| s.elapsed().as_millis())
    }

    fn describe(&self) -> String {
        let ms = |v: Option<u128>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
        let joined: Vec<String> = self.joined.iter().map(|v| v.to_string()).collect();
        format!(
            "first video {}, first audio {}, output visible {}, audio done {}, chunks joined at [{}] ms",
            ms(self.first_video),
            ms(self.first_audio),
            ms(self.visible),
            ms(self.audio_done),
            joined.join(", ")
        )
    }
}

impl Running {
    fn new(f: Finisher, video: OwnedFd, audio: Option<OwnedFd>, assembler: Assembler) -> Running {
        let Finisher { pid, mut child } = f;
        let video_tx = feeder(video);
        let audio = audio.map(|fd| AudioFeed::new(feeder(fd)));
        let (stop_tx, stops) = mpsc::unbounded_channel();
        if let Some(stdin) = child.stdin.take() {
            forward_stdin(stdin, stop_tx);
        }
        let (exit_tx, exited) = mpsc::channel(1);
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.blocking_send(status);
            }
        });
        Running {
            pid,
            assembler,
            audio,
            video: Some(video_tx),
            exited,
            close_video_at: None,
            stopping: false,
            stops,
            bytes_served: 0,
            timeline: Timeline { started: Some(Instant::now()), ..Timeline::default() },
            stream_answers: mpsc::unbounded_channel(),
            announced: BTreeMap::new(),
            socket_open: true,
            local: None,
        }
    }

    fn kill(&self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        if let Some(l) = &self.local {
            l.kill();
        }
    }

    /// Goes on without the cluster: every attempt it ran is dropped and this
    /// machine encodes what the finisher still needs (`crate::local_chunks`).
    /// Returns how many encodes that is.
    fn take_over(&mut self, plan: &SplitPlan, ffmpeg: &Path, cwd: &Path) -> Result<usize, String> {
        self.socket_open = false;
        self.assembler.drop_running().map_err(|e| e.to_string())?;
        let audio_done = self.audio.as_ref().is_none_or(|a| a.done);
        if let Some(a) = &mut self.audio {
            a.attempts.clear();
        }
        let work = takeover::remaining(plan, &self.announced, |c| self.assembler.has(c), audio_done);
        for w in &work {
            match &mut self.audio {
                Some(a) if w.chunk == AUDIO_CHUNK => a.started(w.attempt),
                _ => self.assembler.started(w.chunk, w.attempt, w.last),
            }
        }
        let n = work.len();
        self.local = Some(LocalEncodes::start(ffmpeg, cwd, work));
        self.flush();
        Ok(n)
    }

    fn on_local(&mut self, event: LocalEvent) -> Result<(), Why> {
        match event {
            LocalEvent::Data { chunk: AUDIO_CHUNK, attempt, offset, bytes } => match &mut self.audio {
                Some(a) => a.data(attempt, offset, &bytes).map_err(unjoinable),
                None => Ok(()),
            },
            LocalEvent::Data { chunk, attempt, offset, bytes } => {
                self.assembler.data(chunk, attempt, offset, &bytes).map_err(unjoinable)
            }
            LocalEvent::Done { chunk: AUDIO_CHUNK, attempt, size } => {
                self.audio.as_mut().map_or(Ok(()), |a| a.finished(attempt, size)).map_err(unjoinable)
            }
            LocalEvent::Done { chunk, attempt, size } => self.assembler.done(chunk, attempt, size).map_err(unjoinable),
            LocalEvent::Failed { chunk, reason } => {
                let what = if chunk == AUDIO_CHUNK { "the audio track".to_owned() } else { format!("chunk {chunk}") };
                Err(Why::new("local", format!("{what} failed on this machine too: {reason}")))
            }
        }
    }

    fn stop_requested(&mut self) {
        self.stopping = true;
        self.close_video_at.get_or_insert(tokio::time::Instant::now() + STOP_GRACE);
    }

    async fn pump(
        &mut self,
        tx: &mut futures_util::stream::SplitSink<Ws, Message>,
        rx: &mut futures_util::stream::SplitStream<Ws>,
        offers: &Offers,
        log: &Log,
        shown: &Visibility,
    ) -> End {
        let (Ok(mut sigterm), Ok(mut sigint)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return End::Lost(Why::new("shim", "cannot install signal handlers"));
        };
        // Until the job is visible: looks for the finisher's first output,
        // which releases its stderr.
        let mut look = tokio::time::interval(VISIBLE_POLL);
        let mut visible = false;
        loop {
            let close_at = self.close_video_at;
            tokio::select! {
                _ = look.tick(), if !visible => {
                    if let Some(what) = shown.poll() {
                        visible = true;
                        self.timeline.visible.get_or_insert(self.timeline.now());
                        log.line(format_args!("split: output visible: {what}"));
                    }
                }
                status = self.exited.recv() => {
                    return match status {
                        Some(s) => End::Finished(s),
                        None => End::Lost(Why::new("shim", "lost track of the finisher")),
                    };
                }
                Some(event) = next_local(&mut self.local) => {
                    if let Err(why) = self.on_local(event) {
                        return End::Lost(why);
                    }
                    self.flush();
                }
                msg = rx.next(), if self.socket_open => {
                    let step = match msg {
                        Some(Ok(Message::Binary(b))) => self.on_frame(&b),
                        Some(Ok(Message::Text(t))) => match serde_json::from_str::<ToShim>(&t) {
                            Ok(m) => self.on_message(m, tx, offers, log).await,
                            Err(e) => Err(Why::new("protocol", format!("bad message from controller: {e}"))),
                        },
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            self.socket_open = false;
                            if self.complete() { Ok(()) } else {
                                Err(Why::new("controller_gone", "the controller closed the connection"))
                            }
                        }
                        Some(Ok(_)) => Ok(()),
                    };
                    if let Err(why) = step {
                        return End::Lost(why);
                    }
                    self.flush();
                }
                Some((reply, served)) = self.stream_answers.1.recv() => {
                    self.bytes_served += served;
                    if let Err(e) = tx.send(reply).await {
                        return End::Lost(Why::new("controller_gone", format!("connection to the controller failed: {e}")));
                    }
                }
                Some(()) = self.stops.recv() => self.stop_requested(),
                _ = sigterm.recv() => {
                    let _ = kill(self.pid, Signal::SIGTERM);
                    self.stop_requested();
                }
                _ = sigint.recv() => {
                    let _ = kill(self.pid, Signal::SIGINT);
                    self.stop_requested();
                }
                () = sleep_until(close_at), if close_at.is_some() => {
                    self.close_video_at = None;
                    self.video = None;
                    if let Some(a) = &mut self.audio {
                        a.pipe = None;
                    }
                }
            }
        }
    }

    /// Every chunk, and the audio track if a node encodes it, arrived whole.
    fn complete(&self) -> bool {
        self.assembler.complete() && self.audio.as_ref().is_none_or(|a| a.done)
    }

    /// Hands the finisher what is ready, and ends its input after the last chunk.
    fn flush(&mut self) {
        let bytes = self.assembler.take();
        let now = self.timeline.now();
        if !bytes.is_empty() {
            self.timeline.first_video.get_or_insert(now);
        }
        while self.timeline.joined.len() < self.assembler.head() as usize {
            self.timeline.joined.push(now);
        }
        if let Some(a) = &self.audio {
            if a.written > 0 {
                self.timeline.first_audio.get_or_insert(now);
            }
            if a.done {
                self.timeline.audio_done.get_or_insert(now);
            }
        }
        if let Some(v) = &self.video {
            if !bytes.is_empty() && v.send(bytes).is_err() {
                self.video = None;
            }
            if self.assembler.complete() {
                self.video = None;
            }
        }
    }

    fn on_frame(&mut self, bytes: &[u8]) -> Result<(), Why> {
        let frame =
            Frame::decode(bytes).map_err(|e| Why::new("protocol", format!("bad frame from controller: {e}")))?;
        match frame.kind {
            FrameKind::Output if frame.id == AUDIO_CHUNK => match &mut self.audio {
                Some(a) => a.data(frame.job, frame.offset, frame.payload).map_err(unjoinable),
                None => Err(Why::new("protocol", "audio arrived for a job whose finisher encodes its own")),
            },
            FrameKind::Output => {
                self.assembler.data(frame.id, frame.job, frame.offset, frame.payload).map_err(unjoinable)
            }
            _ => Ok(()),
        }
    }

    async fn on_message(
        &mut self,
        m: ToShim,
        tx: &mut futures_util::stream::SplitSink<Ws, Message>,
        offers: &Offers,
        log: &Log,
    ) -> Result<(), Why> {
        match m {
            ToShim::ChunkStarted { chunk: AUDIO_CHUNK, attempt, node, .. } => match &mut self.audio {
                Some(a) => {
                    if a.written > 0 {
                        log.line(format_args!(
                            "split: audio track attempt {attempt} on {node} replays the {} bytes the finisher has",
                            a.written
                        ));
                    }
                    a.started(attempt);
                    Ok(())
                }
                None => Err(Why::new("protocol", "audio started for a job whose finisher encodes its own")),
            },
            ToShim::ChunkDone { chunk: AUDIO_CHUNK, attempt, size } => {
                self.audio.as_mut().map_or(Ok(()), |a| a.finished(attempt, size)).map_err(unjoinable)
            }
            ToShim::ChunkFailed { chunk: AUDIO_CHUNK, attempt, .. } => {
                if let Some(a) = &mut self.audio {
                    a.failed(attempt);
                }
                Ok(())
            }
            ToShim::ChunkStarted { chunk, attempt, last, start, end, .. } => {
                self.announced.insert(chunk, Announced { start, end, last });
                self.assembler.started(chunk, attempt, last);
                Ok(())
            }
            ToShim::ChunkDone { chunk, attempt, size } => self.assembler.done(chunk, attempt, size).map_err(unjoinable),
            ToShim::ChunkFailed { chunk, attempt, reason } => {
                if chunk >= self.assembler.head() {
                    log.line(format_args!("split: chunk {chunk} attempt {attempt} ended: {reason}"));
                }
                self.assembler.failed(chunk, attempt).map_err(unjoinable)
            }
            ToShim::Read { req, file, offset, len } => {
                if let Some(origin) = offers.stream(file) {
                    cluster::answer_stream_read(origin, req, offset, len, self.stream_answers.0.clone());
                    return Ok(());
                }
                let (reply, served) = cluster::answer_read(offers, req, file, offset, len);
                self.bytes_served += served;
                tx.send(reply)
                    .await
                    .map_err(|e| Why::new("controller_gone", format!("connection to the controller failed: {e}")))
            }
            ToShim::Failed { reason } => Err(Why::new("job_failed", reason)),
            ToShim::Accepted { .. } | ToShim::Rejected { .. } | ToShim::Output { .. } | ToShim::Exited { .. } => Ok(()),
        }
    }
}

/// A chunk or the audio track cannot be joined (an attempt died between two
/// keyframes, two encodes differ): the cause `chunk`.
fn unjoinable(e: impl std::fmt::Display) -> Why {
    Why::new("chunk", e.to_string())
}

async fn next_local(local: &mut Option<LocalEncodes>) -> Option<LocalEvent> {
    match local {
        Some(l) => l.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Copies the shim's stdin to the finisher's (keys such as `q` and `c` are the
/// finisher's to obey) and reports a `q`, after which the finisher may need its
/// video input closed to finish. Keys the finisher can no longer take go to
/// whatever runs the job next ([`crate::stdin`]).
fn forward_stdin(mut child: ChildStdin, stops: mpsc::UnboundedSender<()>) {
    let taker = crate::stdin::take();
    std::thread::spawn(move || {
        loop {
            let Ok(buf) = taker.rx.recv() else { return };
            if buf.is_empty() {
                return;
            }
            if child.write_all(&buf).and_then(|()| child.flush()).is_err() {
                return crate::stdin::give_back(taker, buf);
            }
            if buf.contains(&b'q') {
                let _ = stops.send(());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> (AudioFeed, std::sync::mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (AudioFeed::new(tx), rx)
    }

    fn track(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_rerun_audio_track_continues_where_the_finisher_is() {
        let t = track(200_000);
        let (mut f, rx) = feed();
        f.started(1);
        f.data(1, 0, &t[..150_000]).unwrap();
        // Attempt 1 dies; attempt 2 replays from the start, in odd pieces.
        f.failed(1);
        f.started(2);
        let mut at = 0;
        for size in [1000, 64_000, 90_000, 45_000] {
            f.data(2, at as u64, &t[at..at + size]).unwrap();
            at += size;
        }
        f.finished(2, t.len() as u64).unwrap();
        assert!(f.done && f.pipe.is_none());
        let written: Vec<u8> = rx.try_iter().flatten().collect();
        assert_eq!(written, t, "each byte once, in order");
    }

    #[test]
    fn two_attempts_race_and_the_one_ahead_extends_the_track() {
        let t = track(300_000);
        let (mut f, rx) = feed();
        f.started(1);
        f.started(2);
        f.data(1, 0, &t[..70_000]).unwrap();
        f.data(2, 0, &t[..200_000]).unwrap();
        f.data(1, 70_000, &t[70_000..300_000]).unwrap();
        f.finished(1, 300_000).unwrap();
        let written: Vec<u8> = rx.try_iter().flatten().collect();
        assert_eq!(written, t);
    }

    #[test]
    fn a_rerun_that_differs_is_an_error() {
        let t = track(200_000);
        let mut other = t.clone();
        other[10] ^= 1;
        let (mut f, _rx) = feed();
        f.started(1);
        f.data(1, 0, &t[..100_000]).unwrap();
        f.started(2);
        assert!(f.data(2, 0, &other[..70_000]).unwrap_err().contains("differ"));
        // Out of order within an attempt.
        let (mut f, _rx) = feed();
        f.started(1);
        assert!(f.data(1, 5, &t[..10]).is_err());
    }
}
