//! The connection to the controller: connect, `Hello`/`Welcome`, heartbeats,
//! dispatching commands to jobs, noticing a dead controller, and reconnecting.
//!
//! Jobs live and die with a session: the controller forgets a node's jobs when it
//! loses the node, so when the link is lost every ffmpeg is killed and its scratch
//! deleted before reconnecting; a result nobody waits for is only wasted CPU.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ffcluster::protocol::{
    Capabilities, DEAD_AFTER, Frame, FrameKind, HEARTBEAT_INTERVAL, JobId, NODE_PATH, NodeMsg, PROTOCOL_VERSION,
    ProbeAnswer, ToNode, ws_url,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::config::Config;
use crate::job::{self, JobHandle};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A session that lasted this long was healthy: the next failure retries quickly.
const STABLE_SESSION: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for the socket writer. Bounded so that a job producing output
/// faster than the network carries it waits instead of filling memory
/// (at most this many frames of `MAX_FRAME_PAYLOAD`).
const OUTBOX_DEPTH: usize = 64;

/// The one ordered way out to the controller. Every message of a session goes
/// through the same queue into the single socket writer, so what one task sends
/// arrives in the order it was sent (a file's `Open`, its data, its `Done`; a
/// job's output before its `Exited`).
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Message>,
}

/// The session is gone; the message was dropped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the controller connection is closed")]
pub struct Closed;

impl Outbox {
    pub async fn msg(&self, msg: &NodeMsg) -> Result<(), Closed> {
        self.tx.send(encode(msg)).await.map_err(|_| Closed)
    }

    pub async fn frame(&self, frame: &Frame<'_>) -> Result<(), Closed> {
        self.tx.send(Message::binary(frame.encode())).await.map_err(|_| Closed)
    }

    /// Queues `msg` unless the queue is full (heartbeats: when the queue is full,
    /// data is flowing and the controller knows the node is alive).
    fn try_msg(&self, msg: &NodeMsg) -> bool {
        self.tx.try_send(encode(msg)).is_ok()
    }
}

fn encode(msg: &NodeMsg) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(msg).expect("protocol messages serialise")))
}

/// Runs sessions until `shutdown` turns true (Ok) or the controller says goodbye (Err).
pub async fn run(
    cfg: Arc<Config>,
    caps: Capabilities,
    probes: Vec<ProbeAnswer>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let url = ws_url(&cfg.controller, NODE_PATH);
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut welcomed_at = None;
        match session(&cfg, &caps, &probes, &url, &mut shutdown, &mut welcomed_at).await {
            Ok(End::Shutdown) => return Ok(()),
            Ok(End::Goodbye(reason)) => bail!("the controller refused this node: {reason}"),
            Ok(End::Lost(why)) => tracing::warn!(controller = %url, "controller lost: {why}"),
            Err(e) => {
                let why = ffcluster::tls::explain(e.as_ref()).unwrap_or_else(|| chain(&e));
                tracing::warn!(controller = %url, "cannot connect: {why}")
            }
        }
        if welcomed_at.is_some_and(|t: Instant| t.elapsed() > STABLE_SESSION) {
            backoff = BACKOFF_MIN;
        }
        tracing::info!("reconnecting in {:.1} s", backoff.as_secs_f64());
        tokio::select! {
            _ = sleep(backoff) => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// An error and its causes, skipping a cause its parent already quotes
/// (tungstenite's IO errors do).
fn chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    Shutdown,
    Goodbye(String),
    Lost(String),
}

async fn session(
    cfg: &Arc<Config>,
    caps: &Capabilities,
    probes: &[ProbeAnswer],
    url: &str,
    shutdown: &mut watch::Receiver<bool>,
    welcomed_at: &mut Option<Instant>,
) -> anyhow::Result<End> {
    let mut request = url.into_client_request().with_context(|| format!("bad controller URL {url:?}"))?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", cfg.token)).context("the token is not a valid header")?;
    request.headers_mut().insert("Authorization", auth);
    tracing::info!(controller = %url, "connecting");
    let tls = match ffcluster::tls::is_tls_url(url) {
        true => Some(Connector::Rustls(cfg.trust.client_config()?)),
        false => None,
    };
    let connect = timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async_tls_with_config(request, None, true, tls));
    let ws = tokio::select! {
        r = connect => r.context("timed out")??.0,
        _ = shutdown.wait_for(|s| *s) => return Ok(End::Shutdown),
    };
    let (mut sink, mut stream) = ws.split();

    let (tx, mut rx) = mpsc::channel::<Message>(OUTBOX_DEPTH);
    let out = Outbox { tx };
    let mut writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            // Feed what is queued, flush once: many small frames, few syscalls.
            sink.feed(msg).await?;
            while let Ok(more) = rx.try_recv() {
                sink.feed(more).await?;
            }
            sink.flush().await?;
        }
        sink.close().await
    });

    let hello = NodeMsg::Hello {
        protocol: PROTOCOL_VERSION,
        agent: env!("CARGO_PKG_VERSION").to_owned(),
        name: cfg.name.clone(),
        slots: cfg.slots,
        caps: caps.clone(),
    };
    let _ = out.msg(&hello).await;

    // Until Welcome, only Goodbye means anything.
    let heartbeat_ms = loop {
        let next = tokio::select! {
            n = timeout(CONNECT_TIMEOUT, stream.next()) => n,
            _ = shutdown.wait_for(|s| *s) => { writer.abort(); return Ok(End::Shutdown) }
        };
        let text = match next {
            Err(_) => {
                writer.abort();
                return Ok(End::Lost("no Welcome in time".into()));
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                writer.abort();
                return Ok(End::Lost("closed before Welcome".into()));
            }
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
        };
        match serde_json::from_str::<ToNode>(&text) {
            Ok(ToNode::Welcome { node_id, heartbeat_ms }) => {
                tracing::info!(node_id, "connected, welcomed by the controller");
                break heartbeat_ms;
            }
            Ok(ToNode::Goodbye { reason }) => {
                writer.abort();
                return Ok(End::Goodbye(reason));
            }
            Ok(ToNode::Heartbeat) => {}
            Ok(other) => tracing::warn!("ignoring {other:?} before Welcome"),
            Err(e) => tracing::warn!("unreadable message from the controller: {e}"),
        }
    };
    *welcomed_at = Some(Instant::now());
    if !probes.is_empty() {
        // For shims answering Jellyfin's probes from the cluster (contrib/docs/hardware.md).
        let _ = out.msg(&NodeMsg::Probes { answers: probes.to_vec() }).await;
    }

    // The controller may ask for heartbeats more often than the default, never less.
    let every = if heartbeat_ms == 0 { HEARTBEAT_INTERVAL } else { Duration::from_millis(heartbeat_ms) };
    let every = every.clamp(Duration::from_millis(50), HEARTBEAT_INTERVAL);
    let mut heartbeat = tokio::time::interval(every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<JobId>();
    let mut jobs =
        Jobs { cfg: cfg.clone(), out: out.clone(), done: done_tx, running: HashMap::new(), ending: JoinSet::new() };
    // A controller that heartbeats slowly is not dead after DEAD_AFTER.
    let dead_after = DEAD_AFTER.max(Duration::from_millis(heartbeat_ms.saturating_mul(3)));
    let dead = sleep_until(Instant::now() + dead_after);
    tokio::pin!(dead);

    let end = loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break End::Shutdown,
            msg = stream.next() => {
                dead.as_mut().reset(Instant::now() + dead_after);
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(end) = jobs.command(&text) {
                            break end;
                        }
                    }
                    Some(Ok(Message::Binary(bytes))) => jobs.frame(&bytes),
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map_or("no reason".into(), |f| f.reason.to_string());
                        break End::Lost(format!("closed by the controller ({reason})"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break End::Lost(format!("read error: {e}")),
                    None => break End::Lost("connection closed".into()),
                }
            }
            _ = heartbeat.tick() => {
                let running: Vec<JobId> =
                    jobs.running.iter().filter(|(_, h)| !h.is_over()).map(|(id, _)| *id).collect();
                out.try_msg(&NodeMsg::Heartbeat { running });
            }
            _ = &mut dead => break End::Lost(format!("nothing received for {dead_after:?}")),
            r = &mut writer => break End::Lost(match r {
                Ok(Ok(())) => "writer ended".into(),
                Ok(Err(e)) => format!("write error: {e}"),
                Err(e) => format!("writer failed: {e}"),
            }),
            Some(id) = done_rx.recv() => { jobs.running.remove(&id); }
        }
    };

    let shutting_down = matches!(end, End::Shutdown);
    if !shutting_down {
        // Nobody will read what is queued; dropping the queue also frees jobs
        // waiting to send, so they notice the kill at once.
        writer.abort();
    }
    jobs.kill_all().await;
    drop(jobs);
    drop(out);
    if shutting_down {
        // Everything queued is sent and the socket closed properly.
        let _ = timeout(Duration::from_secs(2), &mut writer).await;
        writer.abort();
    }
    Ok(end)
}

/// The jobs of one session.
struct Jobs {
    cfg: Arc<Config>,
    out: Outbox,
    done: mpsc::UnboundedSender<JobId>,
    running: HashMap<JobId, JobHandle>,
    /// Cancelled jobs still being killed and cleaned up.
    ending: JoinSet<()>,
}

impl Jobs {
    /// Handles one control message; `Some` ends the session.
    fn command(&mut self, text: &str) -> Option<End> {
        let msg = match serde_json::from_str::<ToNode>(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("unreadable message from the controller: {e}");
                return None;
            }
        };
        match msg {
            ToNode::Run { job, spec } => {
                if self.running.contains_key(&job) {
                    tracing::warn!(job, "the controller sent job {job} twice; ignoring the second");
                    return None;
                }
                if !spec.light && self.running.values().filter(|h| !h.is_over()).count() >= self.cfg.slots as usize {
                    tracing::warn!(job, slots = self.cfg.slots, "job beyond this node's slots; running it anyway");
                }
                tracing::info!(job, args = ?spec.args, "job received");
                let handle = job::start(job, spec, self.cfg.clone(), self.out.clone(), self.done.clone());
                self.running.insert(job, handle);
            }
            ToNode::Signal { job, signal } => match self.running.get(&job) {
                Some(h) => h.signal(signal),
                None => tracing::debug!(job, "signal for a job that is not running"),
            },
            ToNode::Cancel { job } => match self.running.remove(&job) {
                Some(h) => {
                    tracing::info!(job, "cancelled by the controller");
                    self.ending.spawn(h.cancel());
                }
                None => tracing::debug!(job, "cancel for a job that is not running"),
            },
            ToNode::Heartbeat => {}
            ToNode::Goodbye { reason } => return Some(End::Goodbye(reason)),
            ToNode::Welcome { .. } => tracing::warn!("ignoring a second Welcome"),
        }
        None
    }

    fn frame(&mut self, bytes: &[u8]) {
        match Frame::decode(bytes) {
            Ok(f) if f.kind == FrameKind::Stdin => match self.running.get(&f.job) {
                Some(h) => h.stdin(f.payload.to_vec()),
                None => tracing::debug!(job = f.job, "stdin for a job that is not running"),
            },
            Ok(f) => tracing::warn!(kind = ?f.kind, "ignoring a binary frame a node does not take"),
            Err(e) => tracing::warn!("bad binary frame from the controller: {e}"),
        }
    }

    /// Kills every job and waits until each one's scratch is gone.
    async fn kill_all(&mut self) {
        if !self.running.is_empty() {
            tracing::info!(jobs = self.running.len(), "killing every running job");
        }
        for (_, h) in self.running.drain() {
            self.ending.spawn(h.cancel());
        }
        while self.ending.join_next().await.is_some() {}
    }
}
