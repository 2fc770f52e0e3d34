//! One shim's WebSocket: the submission, then the relay between the shim and the
//! node running its job, until ffmpeg exits or the shim goes away. For a split
//! job the registry streams the chunks' bytes to the shim; this link serves
//! the shim's answers to input reads and, when the shim goes, cancels what
//! still runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Shared;
use super::outbox::{CLOSE_NORMAL, CLOSE_POLICY, Outbox, pump};
use super::state::{Outcome, new_capability, unix_ms_now};
use super::status::JobMode;
use crate::protocol::{FRAME_HEADER, Frame, FrameKind, JobId, JobRequest, ShimMsg, ToNode, ToShim};

/// Bulk bytes queued for one shim before the node sending them is held back.
const SHIM_BUDGET: u32 = 8 << 20;
/// How long a shim that was told the job is over may take to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The answer to one input read: the bytes, or the shim's error.
pub(crate) type ReadResult = Result<Bytes, String>;

/// A shim connection as the rest of the controller reaches it: its outgoing
/// queue, and the input reads waiting for its answers.
#[derive(Debug)]
pub(crate) struct ShimConn {
    pub out: Outbox<ToShim>,
    reads: Mutex<Reads>,
    /// When the shim connected: time to first output is measured from here.
    pub connected: Instant,
    /// Whether output of its job has been relayed yet.
    pub first_output: AtomicBool,
}

#[derive(Debug)]
struct Reads {
    open: bool,
    next: u32,
    pending: HashMap<u32, oneshot::Sender<ReadResult>>,
}

impl ShimConn {
    pub(crate) fn new(out: Outbox<ToShim>) -> ShimConn {
        ShimConn {
            out,
            reads: Mutex::new(Reads { open: true, next: 0, pending: HashMap::new() }),
            connected: Instant::now(),
            first_output: AtomicBool::new(false),
        }
    }

    fn reads(&self) -> MutexGuard<'_, Reads> {
        // The table stays consistent across a panic elsewhere; keep serving.
        self.reads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the shim for `len` bytes of `file` at `offset`. None once the job is over.
    pub(crate) fn request_read(
        &self,
        file: u32,
        offset: u64,
        len: u32,
    ) -> Option<(u32, oneshot::Receiver<ReadResult>)> {
        let mut reads = self.reads();
        if !reads.open {
            return None;
        }
        let mut req = reads.next;
        while reads.pending.contains_key(&req) {
            req = req.wrapping_add(1);
        }
        reads.next = req.wrapping_add(1);
        let (tx, rx) = oneshot::channel();
        reads.pending.insert(req, tx);
        // Queued under the table's lock so that the answer cannot arrive before
        // the request is registered.
        if !self.out.json(ToShim::Read { req, file, offset, len }) {
            reads.pending.remove(&req);
            return None;
        }
        Some((req, rx))
    }

    fn complete_read(&self, req: u32, result: ReadResult) {
        let Some(tx) = self.reads().pending.remove(&req) else {
            debug!(req, "answer to a read nobody waits for");
            return;
        };
        // The reader may have given up (client gone); nothing to do then.
        let _ = tx.send(result);
    }

    /// Forgets a read whose answer is no longer wanted.
    pub(crate) fn forget_read(&self, req: u32) {
        self.reads().pending.remove(&req);
    }

    /// No more reads: the job is over. Waiting readers see their channel closed.
    fn close_reads(&self) {
        let mut reads = self.reads();
        reads.open = false;
        reads.pending.clear();
    }

    /// Sends the job's last message, then closes once everything queued is out.
    pub(crate) fn finish(&self, last: ToShim) {
        self.close_reads();
        self.out.json(last);
        self.out.close(CLOSE_NORMAL, "job over");
    }
}

pub(crate) async fn handle(socket: WebSocket, shared: Arc<Shared>, peer: SocketAddr) {
    let shutdown = shared.shutdown.clone();
    let (sink, mut stream) = socket.split();
    let (outbox, rx) = Outbox::new(SHIM_BUDGET);
    let conn = Arc::new(ShimConn::new(outbox));
    let mut writer = tokio::spawn(pump(rx, sink, shutdown.clone(), None));

    let request = tokio::select! {
        r = tokio::time::timeout(shared.config.hello_timeout, submission(&mut stream)) => match r {
            Ok(Ok(request)) => Some(request),
            Ok(Err(why)) => {
                warn!(%peer, "shim: {why}");
                conn.out.close(CLOSE_POLICY, "expected a submit message");
                None
            }
            Err(_) => {
                warn!(%peer, "shim sent no job within {:?}", shared.config.hello_timeout);
                conn.out.close(CLOSE_POLICY, "no submit message in time");
                None
            }
        },
        () = shutdown.fired() => None,
    };
    let Some(request) = request else {
        conn.out.abandon();
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
        writer.abort();
        return;
    };

    let Some(link) = place(&shared, request, &conn, peer) else {
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
        writer.abort();
        return;
    };

    // Everything logged about the job from here on carries its id.
    let mode = if link.node.is_some() { JobMode::Whole } else { JobMode::Split };
    let span = info_span!("job", id = link.job, %mode);
    let live = shared.registry().live_source(link.job);
    let feed = live.map(|(file, piece)| {
        let feed = super::live_feed::feed(shared.clone(), link.job, conn.clone(), file, piece);
        tokio::spawn(feed.instrument(span.clone()))
    });
    let end = link.relay(&mut stream, &mut writer, &shared).instrument(span.clone()).await;
    if let Some(feed) = feed {
        feed.abort();
    }
    let _span = span.enter();
    let outcome = match end {
        End::Shutdown => Outcome::Failed("controller shutting down".into()),
        End::Gone => Outcome::Cancelled,
    };
    if link.node.is_none() {
        // A complete or failed split job is over already; the shim closing is
        // then the normal end (its finisher is done with the chunks).
        if shared.registry().abandon_split(link.job, outcome, Instant::now()) {
            match end {
                End::Gone => info!(job = link.job, "shim went away before the split job ended; cancelling its chunks"),
                End::Shutdown => info!(job = link.job, "cancelling the split job for shutdown"),
            }
        }
        conn.close_reads();
        conn.out.abandon();
        writer.abort();
        return;
    }
    let cancelled = shared.registry().finish(link.job, None, outcome, Instant::now());
    if let Some(ended) = cancelled {
        // Nobody will take the result (Jellyfin killed the shim, or we are
        // stopping): stop the remote ffmpeg now.
        match end {
            End::Gone => info!(job = link.job, "shim went away before the job ended; cancelling it"),
            End::Shutdown => info!(job = link.job, "cancelling the job for shutdown"),
        }
        if let Some(node) = ended.node {
            node.json(ToNode::Cancel { job: link.job });
        }
    }
    conn.close_reads();
    conn.out.abandon();
    writer.abort();
}

/// Waits for the first message, which must be the job.
async fn submission(stream: &mut SplitStream<WebSocket>) -> Result<JobRequest, String> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str::<ShimMsg>(&text) {
                    Ok(ShimMsg::Submit { request }) => Ok(*request),
                    Ok(other) => Err(format!("first message is not a submit: {other:?}")),
                    Err(e) => Err(format!("unreadable first message: {e}")),
                };
            }
            Some(Ok(Message::Binary(_))) => return Err("binary frame before the submit message".into()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => return Err("closed before submitting a job".into()),
            Some(Err(e)) => return Err(format!("connection failed before submitting a job: {e}")),
        }
    }
}

/// Schedules the job; on refusal tells the shim why and queues the close.
fn place(shared: &Shared, request: JobRequest, conn: &Arc<ShimConn>, peer: SocketAddr) -> Option<Link> {
    let access = match new_capability() {
        Ok(a) => a,
        Err(e) => {
            warn!("cannot make an access capability: {e}");
            conn.finish(ToShim::Rejected { reason: format!("controller cannot make a capability: {e}") });
            return None;
        }
    };
    let summary = format!("{} ({})", crate::ffmpeg::cmdline::shell_join(&request.args), request.reason);
    if request.split.is_some() {
        let placed = shared.registry().place_split(request, access, conn.clone(), Instant::now(), unix_ms_now());
        return match placed {
            Ok(job) => {
                info!(job, %peer, "split job accepted: {summary}");
                Some(Link { job, node: None, conn: conn.clone() })
            }
            Err(why) => {
                info!(%peer, "split job rejected: {why}: {summary}");
                shared.metrics.rejected(JobMode::Split);
                conn.finish(ToShim::Rejected { reason: why.to_string() });
                None
            }
        };
    }
    let placed = shared.registry().place(request, access, conn.clone(), Instant::now(), unix_ms_now());
    match placed {
        Ok(p) => {
            info!(job = p.job, node = %p.node_name, %peer, "job accepted: {summary}");
            Some(Link { job: p.job, node: Some(p.node), conn: conn.clone() })
        }
        Err(why) => {
            info!(%peer, "job rejected: {why}: {summary}");
            shared.metrics.rejected(JobMode::Whole);
            conn.finish(ToShim::Rejected { reason: why.to_string() });
            None
        }
    }
}

/// A placed job's shim side.
struct Link {
    job: JobId,
    /// The node of a whole job; None for a split job, whose chunks run on
    /// several nodes and come and go.
    node: Option<Outbox<ToNode>>,
    conn: Arc<ShimConn>,
}

enum End {
    /// The shim closed or dropped its socket (normal after the job ended).
    Gone,
    Shutdown,
}

impl Link {
    async fn relay(
        &self,
        stream: &mut SplitStream<WebSocket>,
        writer: &mut tokio::task::JoinHandle<Result<(), axum::Error>>,
        shared: &Shared,
    ) -> End {
        let shutdown = shared.shutdown.clone();
        loop {
            tokio::select! {
                () = shutdown.fired() => return End::Shutdown,
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => self.on_text(&text, shared),
                    Some(Ok(Message::Binary(bytes))) => self.on_binary(bytes).await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => return End::Gone,
                    Some(Err(e)) => {
                        debug!(job = self.job, "shim connection failed: {e}");
                        return End::Gone;
                    }
                },
                // Polled once at most: every way out of this branch returns.
                r = &mut *writer => {
                    if let Ok(Err(e)) = r {
                        debug!(job = self.job, "writing to the shim failed: {e}");
                        return End::Gone;
                    }
                    // The job is over and the close is sent; give the shim a
                    // moment to answer it (it may say it falls back), then hang up.
                    tokio::select! {
                        _ = tokio::time::timeout(CLOSE_GRACE, self.drain(stream, shared)) => {}
                        () = shutdown.fired() => {}
                    }
                    return End::Gone;
                }
            }
        }
    }

    fn on_text(&self, text: &str, shared: &Shared) {
        match serde_json::from_str::<ShimMsg>(text) {
            Ok(ShimMsg::FellBack { reason }) => shared.registry().fell_back(self.job, reason, Instant::now()),
            Ok(ShimMsg::Signal { signal }) => match &self.node {
                Some(node) => {
                    debug!(job = self.job, ?signal, "forwarding signal");
                    node.json(ToNode::Signal { job: self.job, signal });
                }
                // The shim's finisher is what the signal is for; chunks stop
                // when the shim goes.
                None => debug!(job = self.job, ?signal, "signal for a split job; not forwarded"),
            },
            Ok(ShimMsg::ReadFailed { req, error }) => self.conn.complete_read(req, Err(error)),
            Ok(ShimMsg::Submit { .. }) => warn!(job = self.job, "shim submitted a second job; ignored"),
            Err(e) => warn!(job = self.job, "unreadable message from the shim: {e}"),
        }
    }

    async fn on_binary(&self, bytes: Bytes) {
        let frame = match Frame::decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                warn!(job = self.job, "bad frame from the shim: {e}");
                return;
            }
        };
        match frame.kind {
            FrameKind::ReadData => self.conn.complete_read(frame.id, Ok(bytes.slice(FRAME_HEADER..))),
            FrameKind::Stdin => match &self.node {
                Some(node) => {
                    let out = frame.with_job(self.job).encode();
                    node.binary(out).await;
                }
                None => debug!(job = self.job, "stdin for a split job; chunks read none"),
            },
            FrameKind::Stderr | FrameKind::Output => {
                warn!(job = self.job, kind = ?frame.kind, "the shim sent a frame only nodes send; ignored")
            }
        }
    }

    /// Reads what the shim still sends after the job ended, until it closes.
    async fn drain(&self, stream: &mut SplitStream<WebSocket>, shared: &Shared) {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Text(text) = msg {
                self.on_text(&text, shared);
            }
        }
    }
}
