//! The shim's side of a cluster job: submit it, serve the input ranges the node
//! asks for, forward `q`/keys and signals, publish the outputs, relay stderr, and
//! exit with ffmpeg's exit code.
//!
//! Whatever goes wrong before anything is visible to Jellyfin (the controller is
//! unreachable, no node can take the job, the job fails on the cluster before
//! publishing a file, a progress line or a stdout byte) ends in
//! [`Outcome::Fallback`]: the caller runs the job locally, and Jellyfin sees
//! exactly one ffmpeg run. Until then the remote stderr is held back so that a
//! fallback does not print two runs.
//!
//! A single-threaded tokio runtime is started only here; the local path never
//! pays for it.

use std::io::Write;
use std::time::{Duration, Instant};

use ffcluster::ffmpeg::CommandLine;
use ffcluster::ffmpeg::decision::Verdict;
use ffcluster::priority::Priority;
use ffcluster::protocol::{
    Frame, FrameKind, JobId, JobRequest, JobSignal, OutputEvent, SHIM_PATH, ShimMsg, ToShim, Why, ws_url,
};
use ffcluster::tls::Trust;
use futures_util::{SinkExt, StreamExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::config::Config;
use crate::log::Log;
use crate::offer::Offers;
use crate::publish::Publisher;

/// How long to wait for the controller's TCP/WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for the controller to place the job.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Held-back stderr is released after this long even without a progress line, so
/// a long-running job's log is not delayed indefinitely.
const STDERR_HOLD: Duration = Duration::from_secs(3);
/// … or once this much has accumulated.
const STDERR_HOLD_BYTES: usize = 1 << 20;

/// How a cluster attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The job ran on the cluster; exit with this code.
    Exit(u8),
    /// Run it locally instead; nothing of the attempt is visible. Why, as a
    /// `fallback.<cause>` code ([`fallback`]).
    Fallback(Why),
    /// The cluster lost the job after some of its output was published: the
    /// caller resumes it ([`crate::resume`]), the new run telling the
    /// controller this `resumed.<cause>` code, or exits 1 with its detail.
    Lost(Why),
}

/// The fallback for a `cause` (`unreachable`, `rejected`, `exit`, …
/// contrib/docs/how-it-works.md, "Why a job was not split"): code `fallback.<cause>`.
pub(crate) fn fallback(cause: Why) -> Outcome {
    Outcome::Fallback(Why::new(format!("fallback.{}", cause.code), cause.detail))
}

/// A lost job with output published, for `cause`: code `resumed.<cause>`,
/// which the resumed run carries.
pub(crate) fn lost(cause: Why, detail: String) -> Outcome {
    Outcome::Lost(Why::new(format!("resumed.{}", cause.code), detail))
}

/// `not_split`: why a job the classifier would split goes whole.
pub fn run(args: &[String], verdict: &Verdict, cfg: &Config, log: &Log, not_split: Option<Why>) -> Outcome {
    run_with(args, verdict, cfg, log, None, not_split)
}

/// [`run`] with the job's offers already prepared (`Some`): a live stream the
/// shim opened to split it goes to the node on the same connection.
pub fn run_with(
    args: &[String],
    verdict: &Verdict,
    cfg: &Config,
    log: &Log,
    offers: Option<Offers>,
    not_split: Option<Why>,
) -> Outcome {
    let (Some(controller), Some(token)) = (cfg.controller.as_deref(), cfg.token.as_deref()) else {
        return fallback(Why::new("unconfigured", "no controller or token configured"));
    };
    let cl = match CommandLine::parse_with(args, cfg.dialect) {
        Ok(cl) => cl,
        Err(e) => return fallback(Why::new("bad_args", e.to_string())),
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return fallback(Why::new("no_cwd", format!("no working directory: {e}"))),
    };
    let offers = match offers.map_or_else(|| Offers::prepare(&cl, &cwd, cfg.relay_inputs), Ok) {
        Ok(o) => o,
        Err(why) => return fallback(Why::new("inputs", why)),
    };
    for o in offers.offers.iter().filter(|o| o.stream) {
        log.line(format_args!("cluster: {} is read here and relayed to the node", o.reference));
    }
    let request = job_request(args, &cwd, &offers, verdict, None, not_split, cfg.priority);
    // ffmpeg reads keys from stdin unless told not to; so does its stand-in.
    let read_stdin = !cl.global_flag("nostdin");
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fallback(Why::new("shim", format!("cannot start the cluster client: {e}"))),
    };
    runtime.block_on(Session::new(offers, log).run(controller, token, &cfg.trust, request, read_stdin))
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Session<'a> {
    offers: Offers,
    log: &'a Log,
    publisher: Publisher,
    stderr: StderrGate,
    /// A key or signal asked ffmpeg to stop: its exit code is then not a failure
    /// to fall back from.
    stop_requested: bool,
    bytes_served: u64,
    /// Answers to reads of relayed streams, which wait for the origin and so
    /// are answered by tasks of their own, and the bytes each carries.
    stream_answers: (mpsc::UnboundedSender<Reply>, mpsc::UnboundedReceiver<Reply>),
}

/// A message answering a read, and the input bytes it carries.
pub(crate) type Reply = (Message, u64);

impl<'a> Session<'a> {
    fn new(offers: Offers, log: &'a Log) -> Session<'a> {
        Session {
            offers,
            log,
            publisher: Publisher::default(),
            stderr: StderrGate::new(),
            stop_requested: false,
            bytes_served: 0,
            stream_answers: mpsc::unbounded_channel(),
        }
    }

    async fn run(
        mut self,
        controller: &str,
        token: &str,
        trust: &Trust,
        request: JobRequest,
        read_stdin: bool,
    ) -> Outcome {
        let started = Instant::now();
        let Placed { mut tx, mut rx, job, node, .. } = match submit(controller, token, trust, request).await {
            Ok(placed) => placed,
            Err(why) => return fallback(why),
        };
        self.log.line(format_args!("cluster: job {job} runs on node {node}"));

        let (keys_tx, mut keys) = mpsc::channel::<Vec<u8>>(16);
        if read_stdin {
            spawn_stdin_reader(keys_tx);
        } else {
            drop(keys_tx);
        }
        let (Ok(mut sigterm), Ok(mut sigint)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return fell_back(&mut tx, Why::new("shim", "cannot install signal handlers")).await;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut stdin_open = read_stdin;

        let outcome = loop {
            tokio::select! {
                msg = rx.next() => {
                    let step = match msg {
                        Some(Ok(Message::Binary(b))) => self.on_frame(&b),
                        Some(Ok(Message::Text(t))) => match serde_json::from_str::<ToShim>(&t) {
                            Ok(m) => self.on_message(m, &mut tx).await,
                            Err(e) => Step::Lost(Why::new("protocol", format!("bad message from controller: {e}"))),
                        },
                        Some(Ok(Message::Close(_))) | None => {
                            Step::Lost(Why::new("controller_gone", "the controller closed the connection"))
                        }
                        Some(Err(e)) => {
                            Step::Lost(Why::new("controller_gone", format!("connection to the controller failed: {e}")))
                        }
                        Some(Ok(_)) => Step::Continue,
                    };
                    match step {
                        Step::Continue => {}
                        Step::Exit(code) => break Outcome::Exit(code),
                        Step::Lost(why) => break self.lost(why),
                    }
                }
                Some((reply, served)) = self.stream_answers.1.recv() => {
                    self.bytes_served += served;
                    if let Err(e) = tx.send(reply).await {
                        break self.lost(Why::new("controller_gone", format!("connection to the controller failed: {e}")));
                    }
                }
                bytes = keys.recv(), if stdin_open => {
                    let bytes = bytes.unwrap_or_default();
                    stdin_open = !bytes.is_empty();
                    // Jellyfin stops with "q\n"; the stop is then expected to end in 0.
                    self.stop_requested |= bytes.contains(&b'q');
                    let frame = Frame::new(FrameKind::Stdin, 0, 0, 0, &bytes).encode();
                    if let Err(e) = tx.send(Message::Binary(frame.into())).await {
                        break self.lost(Why::new("controller_gone", format!("connection to the controller failed: {e}")));
                    }
                }
                _ = sigterm.recv() => {
                    self.stop_requested = true;
                    let _ = tx.send(text(&ShimMsg::Signal { signal: JobSignal::Terminate })).await;
                }
                _ = sigint.recv() => {
                    self.stop_requested = true;
                    let _ = tx.send(text(&ShimMsg::Signal { signal: JobSignal::Interrupt })).await;
                }
                _ = tick.tick() => {
                    if started.elapsed() >= STDERR_HOLD || self.publisher.visible {
                        self.stderr.release();
                    }
                }
            }
        };
        if let Outcome::Fallback(why) = &outcome {
            tell_fallback(&mut tx, why).await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), tx.close()).await;
        self.log.line(format_args!(
            "cluster: job {job} on {node}: {outcome:?} after {:.2} s; {} files published, {} input bytes served",
            started.elapsed().as_secs_f64(),
            self.publisher.published,
            self.bytes_served
        ));
        outcome
    }

    fn on_frame(&mut self, bytes: &[u8]) -> Step {
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => return Step::Lost(Why::new("protocol", format!("bad frame from controller: {e}"))),
        };
        match frame.kind {
            FrameKind::Stderr => {
                self.stderr.write(frame.payload);
                Step::Continue
            }
            FrameKind::Output => match self.publisher.write(frame.id, frame.offset, frame.payload) {
                Ok(()) => {
                    if self.publisher.visible {
                        self.stderr.release();
                    }
                    Step::Continue
                }
                Err(e) => Step::Lost(Why::new("output", format!("cannot write output: {e}"))),
            },
            FrameKind::Stdin | FrameKind::ReadData => Step::Continue,
        }
    }

    async fn on_message(&mut self, m: ToShim, tx: &mut futures_util::stream::SplitSink<Ws, Message>) -> Step {
        match m {
            ToShim::Read { req, file, offset, len } => {
                if let Some(origin) = self.offers.stream(file) {
                    answer_stream_read(origin, req, offset, len, self.stream_answers.0.clone());
                    return Step::Continue;
                }
                let (reply, served) = answer_read(&self.offers, req, file, offset, len);
                self.bytes_served += served;
                match tx.send(reply).await {
                    Ok(()) => Step::Continue,
                    Err(e) => {
                        Step::Lost(Why::new("controller_gone", format!("connection to the controller failed: {e}")))
                    }
                }
            }
            ToShim::Output { event } => {
                let r = match event {
                    OutputEvent::Open { file, path, mode } => self.publisher.open(file, &path, mode),
                    OutputEvent::Done { file, size } => self.publisher.done(file, size),
                };
                match r {
                    Ok(()) => {
                        if self.publisher.visible {
                            self.stderr.release();
                        }
                        Step::Continue
                    }
                    Err(e) => Step::Lost(Why::new("output", format!("cannot write output: {e}"))),
                }
            }
            ToShim::Exited { exit } => {
                self.publisher.abandon();
                if !exit.success() && !self.stop_requested && !self.publisher.visible && !self.stderr.released {
                    let why = format!("ffmpeg exited with code {} on the node", exit.shim_code());
                    return Step::Lost(Why::new("exit", why));
                }
                self.stderr.release();
                Step::Exit(exit.shim_code())
            }
            ToShim::Failed { reason } => Step::Lost(Why::new("job_failed", reason)),
            ToShim::Accepted { .. }
            | ToShim::Rejected { .. }
            | ToShim::ChunkStarted { .. }
            | ToShim::ChunkDone { .. }
            | ToShim::ChunkFailed { .. } => Step::Continue,
        }
    }

    /// The cluster lost the job, for `cause`: fall back if nothing is visible
    /// yet, else resume or fail (a stopping job just fails: Jellyfin wanted it
    /// to end).
    fn lost(&mut self, cause: Why) -> Outcome {
        self.publisher.abandon();
        if !self.publisher.visible && !self.stderr.released {
            return fallback(cause);
        }
        self.stderr.release();
        let why = format!("the job was lost on the cluster: {}", cause.detail);
        if self.stop_requested {
            let _ = writeln!(std::io::stderr().lock(), "ffcluster: {why}");
            return Outcome::Exit(1);
        }
        lost(cause, why)
    }
}

enum Step {
    Continue,
    Exit(u8),
    /// The cluster lost the job; the cause (contrib/docs/how-it-works.md, "Why a job was not split").
    Lost(Why),
}

/// Tells the controller that the shim runs its accepted job locally after all
/// ([`ShimMsg::FellBack`]), so that its status, log and metrics say why.
pub(crate) async fn tell_fallback(tx: &mut futures_util::stream::SplitSink<Ws, Message>, why: &Why) {
    let msg = text(&ShimMsg::FellBack { reason: why.clone() });
    // The bound only matters for a controller that stopped reading; 200 ms
    // was too short on a loaded machine (a CI run lost the message, and the
    // job's status had no fallback).
    let _ = tokio::time::timeout(Duration::from_secs(2), tx.send(msg)).await;
}

/// The fallback for `cause` after the controller accepted the job: told to
/// the controller first.
pub(crate) async fn fell_back(tx: &mut futures_util::stream::SplitSink<Ws, Message>, cause: Why) -> Outcome {
    let outcome = fallback(cause);
    if let Outcome::Fallback(why) = &outcome {
        tell_fallback(tx, why).await;
    }
    outcome
}

/// The socket's two halves once the controller has placed a job, and how.
pub(crate) struct Placed {
    pub tx: futures_util::stream::SplitSink<Ws, Message>,
    pub rx: futures_util::stream::SplitStream<Ws>,
    pub job: JobId,
    /// Where it runs (`split` for a split job).
    pub node: String,
    /// A split job's audio comes from a node.
    pub audio: bool,
}

/// Connects, submits `request` and waits until the controller places it: the
/// socket, the job's id and where it runs. An error (a cause: `unreachable`,
/// `rejected`, `protocol`) means nothing has happened yet, so the caller can
/// still fall back.
pub(crate) async fn submit(controller: &str, token: &str, trust: &Trust, request: JobRequest) -> Result<Placed, Why> {
    let ws = connect(controller, token, trust)
        .await
        .map_err(|e| Why::new("unreachable", format!("cannot reach the controller at {controller}: {e}")))?;
    let (mut tx, mut rx) = ws.split();
    tx.send(text(&ShimMsg::Submit { request: Box::new(request) }))
        .await
        .map_err(|e| Why::new("unreachable", format!("controller closed the connection: {e}")))?;
    let (job, node, audio) = accepted(&mut rx).await?;
    Ok(Placed { tx, rx, job, node, audio })
}

/// Waits for the controller to place the submitted job: its id and where it runs.
async fn accepted(rx: &mut futures_util::stream::SplitStream<Ws>) -> Result<(JobId, String, bool), Why> {
    let placed = tokio::time::timeout(ACCEPT_TIMEOUT, async {
        while let Some(msg) = rx.next().await {
            match msg {
                Ok(Message::Text(t)) => match serde_json::from_str::<ToShim>(&t) {
                    Ok(ToShim::Accepted { job, node, audio }) => return Ok((job, node, audio)),
                    Ok(ToShim::Rejected { reason }) => {
                        return Err(Why::new("rejected", format!("the cluster declined: {reason}")));
                    }
                    Ok(other) => {
                        return Err(Why::new("protocol", format!("unexpected message before acceptance: {other:?}")));
                    }
                    Err(e) => return Err(Why::new("protocol", format!("bad message from controller: {e}"))),
                },
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Err(Why::new("unreachable", "controller closed the connection"))
    })
    .await;
    placed.unwrap_or_else(|_| Err(Why::new("unreachable", "the controller did not place the job in time")))
}

/// The answer to the controller's read of an offered file, and the bytes it carries.
pub(crate) fn answer_read(offers: &Offers, req: u32, file: u32, offset: u64, len: u32) -> Reply {
    read_reply(req, offset, offers.read(file, offset, len).map_err(|e| e.to_string()))
}

/// The message that answers read `req`, and the bytes it carries.
/// The submission of a job with these offers (a split job's with its plan).
pub(crate) fn job_request(
    args: &[String],
    cwd: &std::path::Path,
    offers: &Offers,
    verdict: &Verdict,
    split: Option<ffcluster::split::SplitPlan>,
    not_split: Option<Why>,
    priority: Option<Priority>,
) -> JobRequest {
    let priority = priority.unwrap_or_else(|| {
        let paths: Vec<String> = CommandLine::parse(args)
            .map(|cl| cl.outputs.iter().map(|o| o.url.raw.clone()).collect())
            .unwrap_or_default();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        Priority::of_job(&verdict.outputs, &paths)
    });
    JobRequest {
        args: args.to_vec(),
        cwd: cwd.to_string_lossy().into_owned(),
        files: offers.offers.clone(),
        needs: verdict.needs.clone(),
        reason: verdict.reason.as_str().to_owned(),
        split,
        not_split,
        // A resumed run says why the run before it was lost.
        resumed: crate::resume::why(),
        priority: Some(priority),
    }
}

/// Answers a read of relayed stream `origin` once the origin has the bytes
/// (it may wait for a live source), on `answers`.
pub(crate) fn answer_stream_read(
    origin: std::sync::Arc<crate::origin::Origin>,
    req: u32,
    offset: u64,
    len: u32,
    answers: mpsc::UnboundedSender<Reply>,
) {
    tokio::spawn(async move {
        let answer = origin.read(offset, len as usize).await;
        let _ = answers.send(read_reply(req, offset, answer));
    });
}

fn read_reply(req: u32, offset: u64, read: Result<Vec<u8>, String>) -> Reply {
    match read {
        Ok(data) => {
            let n = data.len() as u64;
            (Message::Binary(Frame::new(FrameKind::ReadData, 0, req, offset, &data).encode().into()), n)
        }
        Err(error) => (text(&ShimMsg::ReadFailed { req, error }), 0),
    }
}

async fn connect(controller: &str, token: &str, trust: &Trust) -> Result<Ws, String> {
    let url = ws_url(controller, SHIM_PATH);
    let mut req = url.as_str().into_client_request().map_err(|e| e.to_string())?;
    let auth = format!("Bearer {token}").parse().map_err(|_| "the token is not a valid header value".to_owned())?;
    req.headers_mut().insert("authorization", auth);
    let tls = match ffcluster::tls::is_tls_url(&url) {
        true => Some(Connector::Rustls(trust.client_config().map_err(|e| e.to_string())?)),
        false => None,
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(req, None, false, tls);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(ffcluster::tls::explain(&e).unwrap_or_else(|| e.to_string())),
        Err(_) => Err("timed out".into()),
    }
}

pub(crate) fn text(m: &ShimMsg) -> Message {
    Message::Text(serde_json::to_string(m).expect("protocol messages serialise").into())
}

/// Hands stdin ([`crate::stdin`]) to the session on a plain thread (tokio's
/// stdin cannot be abandoned at exit); an empty vector means end of file.
fn spawn_stdin_reader(tx: mpsc::Sender<Vec<u8>>) {
    let taker = crate::stdin::take();
    std::thread::spawn(move || {
        loop {
            let Ok(bytes) = taker.rx.recv() else { return };
            let eof = bytes.is_empty();
            if let Err(e) = tx.blocking_send(bytes) {
                // The session is over: whatever runs next takes them.
                return crate::stdin::give_back(taker, e.0);
            }
            if eof {
                return;
            }
        }
    });
}

/// Holds the remote stderr back until the job is past the point where a local
/// fallback could still happen (see the module comment).
#[derive(Debug)]
struct StderrGate {
    held: Vec<u8>,
    released: bool,
}

impl StderrGate {
    fn new() -> StderrGate {
        StderrGate { held: Vec::new(), released: false }
    }

    fn write(&mut self, data: &[u8]) {
        if self.released {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(data);
            let _ = err.flush();
            return;
        }
        self.held.extend_from_slice(data);
        // ffmpeg's first statistics line means encoding is under way.
        if self.held.len() > STDERR_HOLD_BYTES || contains(&self.held, b"frame=") || contains(&self.held, b"size=") {
            self.release();
        }
    }

    fn release(&mut self) {
        if !self.released {
            self.released = true;
            let held = std::mem::take(&mut self.held);
            self.write(&held);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
