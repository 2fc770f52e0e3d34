//! One node agent's WebSocket: the handshake, heartbeats both ways, the watchdog,
//! and the relay of its jobs' output to their shims.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tracing::{debug, info, warn};

use super::Shared;
use super::outbox::{CLOSE_GOING_AWAY, CLOSE_POLICY, Outbox, close, pump};
use super::split::AttemptEnd;
use super::state::{NodeInfo, Outcome, Registry, Target, millis};
use super::status::JobMode;
use crate::protocol::{Capabilities, Frame, FrameKind, NodeMsg, PROTOCOL_VERSION, ToNode, ToShim};

/// Stdin bytes queued for one node before the shims sending them are held back.
const NODE_BUDGET: u32 = 1 << 20;
/// How often the watchdog looks at a node's last message.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(250);

pub(crate) async fn handle(socket: WebSocket, shared: Arc<Shared>, peer: SocketAddr) {
    let (mut sink, mut stream) = socket.split();
    let hello = tokio::select! {
        r = tokio::time::timeout(shared.config.hello_timeout, first_message(&mut stream)) => r,
        () = shared.shutdown.fired() => return,
    };
    let info = match hello {
        Ok(Ok(NodeMsg::Hello { protocol, agent, name, slots, caps })) => {
            if protocol != PROTOCOL_VERSION {
                let reason = format!(
                    "protocol version {protocol} is not supported: this controller speaks version {PROTOCOL_VERSION}"
                );
                warn!(%peer, node = %name, "refusing node: {reason}");
                goodbye(&mut sink, reason).await;
                return;
            }
            NodeInfo { name, agent, slots, caps, address: peer.to_string() }
        }
        Ok(Ok(other)) => {
            warn!(%peer, "node's first message is not a hello: {other:?}");
            goodbye(&mut sink, "the first message must be a hello".into()).await;
            return;
        }
        Ok(Err(why)) => {
            warn!(%peer, "node handshake failed: {why}");
            goodbye(&mut sink, why).await;
            return;
        }
        Err(_) => {
            warn!(%peer, "node sent no hello within {:?}", shared.config.hello_timeout);
            goodbye(&mut sink, "no hello in time".into()).await;
            return;
        }
    };

    let name = info.name.clone();
    let caps = info.caps.clone();
    let (outbox, rx) = Outbox::new(NODE_BUDGET);
    if info.slots == 0 {
        warn!(node = %name, "node announces no slots; it will get no jobs");
    }
    let heartbeat_ms = millis(shared.config.heartbeat_interval);
    let (id, last_seen, epoch) = {
        let mut reg = shared.registry();
        let (id, seen) = reg.add_node(info, outbox.clone(), Instant::now());
        // Under the lock: once registered the node can be given a job, and its
        // `Run` must not overtake the welcome.
        outbox.json(ToNode::Welcome { node_id: id, heartbeat_ms });
        // Split jobs may be waiting for a slot.
        reg.dispatch(Instant::now());
        (id, seen, reg.epoch())
    };
    info!(node = %name, id, %peer, "node connected");
    let mut writer = tokio::spawn(pump(
        rx,
        sink,
        shared.shutdown.clone(),
        Some((shared.config.heartbeat_interval, ToNode::Heartbeat)),
    ));

    let link = Link { id, name, caps, shared: shared.clone(), outbox: outbox.clone(), last_seen, epoch };
    let end = link.relay(&mut stream).await;
    let reason = match end {
        End::Shutdown => "controller shutting down".to_owned(),
        _ => format!("node {} lost", link.name),
    };
    match &end {
        End::Closed(why) => info!(node = %link.name, id, "node disconnected: {why}"),
        End::Silent(quiet) => warn!(node = %link.name, id, "node silent for {} ms; dropping it", millis(*quiet)),
        End::Shutdown => debug!(node = %link.name, id, "closing node link for shutdown"),
    }
    shared.probes().remove(id);
    let lost = shared.registry().remove_node(id, &reason, Instant::now());
    for ended in lost {
        ended.shim.finish(ToShim::Failed { reason: reason.clone() });
    }
    if !matches!(end, End::Shutdown) {
        outbox.close(CLOSE_GOING_AWAY, "declared lost");
    }
    outbox.abandon();
    // A dead peer may never drain the socket; do not wait on it for long.
    let _ = tokio::time::timeout(Duration::from_millis(500), &mut writer).await;
    writer.abort();
}

async fn first_message(stream: &mut SplitStream<WebSocket>) -> Result<NodeMsg, String> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| format!("unreadable hello: {e}"));
            }
            Some(Ok(Message::Binary(_))) => return Err("binary frame before hello".into()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => return Err("closed before hello".into()),
            Some(Err(e)) => return Err(format!("connection failed before hello: {e}")),
        }
    }
}

async fn goodbye(sink: &mut SplitSink<WebSocket, Message>, reason: String) {
    let text = serde_json::to_string(&ToNode::Goodbye { reason }).unwrap_or_default();
    let _ = sink.send(Message::Text(text.into())).await;
    let _ = sink.send(close(CLOSE_POLICY, "goodbye")).await;
}

struct Link {
    id: u64,
    name: String,
    /// What the node advertised, for ranking its probe answers.
    caps: Capabilities,
    shared: Arc<Shared>,
    outbox: Outbox<ToNode>,
    last_seen: Arc<AtomicU64>,
    epoch: Instant,
}

enum End {
    Closed(String),
    Silent(Duration),
    Shutdown,
}

impl Link {
    fn seen(&self) {
        self.last_seen.store(Registry::stamp(self.epoch, Instant::now()), Ordering::Relaxed);
    }

    async fn relay(&self, stream: &mut SplitStream<WebSocket>) -> End {
        let shutdown = self.shared.shutdown.clone();
        let dead_after = self.shared.config.dead_after;
        let mut watchdog = tokio::time::interval(WATCHDOG_PERIOD);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.fired() => return End::Shutdown,
                _ = watchdog.tick() => {
                    let last = Duration::from_millis(self.last_seen.load(Ordering::Relaxed));
                    let quiet = self.epoch.elapsed().saturating_sub(last);
                    if quiet > dead_after {
                        return End::Silent(quiet);
                    }
                }
                msg = stream.next() => {
                    self.seen();
                    match msg {
                        Some(Ok(Message::Text(text))) => self.on_text(&text),
                        Some(Ok(Message::Binary(bytes))) => self.on_binary(bytes).await,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map(|f| format!("closed ({} {})", f.code, f.reason));
                            return End::Closed(why.unwrap_or_else(|| "closed".into()));
                        }
                        None => return End::Closed("connection ended".into()),
                        Some(Err(e)) => return End::Closed(format!("connection failed: {e}")),
                    }
                    // Time spent waiting for a slow shim is not the node's silence.
                    self.seen();
                }
            }
        }
    }

    fn on_text(&self, text: &str) {
        let msg = match serde_json::from_str::<NodeMsg>(text) {
            Ok(m) => m,
            Err(e) => {
                warn!(node = %self.name, "unreadable message from the node: {e}");
                return;
            }
        };
        match msg {
            NodeMsg::Heartbeat { running } => {
                let strays = self.shared.registry().strays(self.id, &running);
                for job in strays {
                    debug!(node = %self.name, job, "node runs a job it should not; cancelling it");
                    self.outbox.json(ToNode::Cancel { job });
                }
            }
            NodeMsg::Output { job, event } => {
                let mut reg = self.shared.registry();
                match reg.target(job, self.id) {
                    Some(Target::Whole(shim)) => {
                        shim.out.json(ToShim::Output { event });
                    }
                    // The shim knows where a chunk's bytes go; only the size matters.
                    Some(Target::Chunk { .. }) => reg.chunk_output(job, self.id, &event),
                    None => debug!(node = %self.name, job, "output for a job this node does not run; dropped"),
                }
            }
            NodeMsg::Exited { job, exit } => {
                if self.attempt_ended(job, AttemptEnd::Exited(exit)) {
                    return;
                }
                let ended = self.shared.registry().finish(job, Some(self.id), Outcome::Exited(exit), Instant::now());
                match ended {
                    Some(ended) => {
                        info!(node = %self.name, job, code = ?exit.code, signal = ?exit.signal, "job exited");
                        ended.shim.finish(ToShim::Exited { exit });
                    }
                    None => debug!(node = %self.name, job, "exit of a job this node does not run; dropped"),
                }
            }
            NodeMsg::Refused { job, reason } => {
                if self.attempt_ended(job, AttemptEnd::Refused(reason.clone())) {
                    return;
                }
                let outcome = Outcome::Failed(format!("refused by {}: {reason}", self.name));
                let ended = self.shared.registry().finish(job, Some(self.id), outcome, Instant::now());
                match ended {
                    Some(ended) => {
                        warn!(node = %self.name, job, "node refused the job: {reason}");
                        ended.shim.finish(ToShim::Failed { reason });
                    }
                    None => debug!(node = %self.name, job, "refusal of a job this node does not run; dropped"),
                }
            }
            NodeMsg::Probes { answers } => {
                debug!(node = %self.name, answers = answers.len(), "capability probe answers received");
                self.shared.probes().insert(self.id, &self.name, &self.caps, answers);
            }
            NodeMsg::Hello { .. } => warn!(node = %self.name, "repeated hello ignored"),
        }
    }

    /// Ends `job` if it is a chunk attempt of this node; false otherwise.
    fn attempt_ended(&self, job: u64, end: AttemptEnd) -> bool {
        self.shared.registry().attempt_ended(job, self.id, end, Instant::now())
    }

    async fn on_binary(&self, bytes: Bytes) {
        let frame = match Frame::decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                warn!(node = %self.name, "bad frame from the node: {e}");
                return;
            }
        };
        if !matches!(frame.kind, FrameKind::Stderr | FrameKind::Output) {
            warn!(node = %self.name, kind = ?frame.kind, "the node sent a frame only shims send; ignored");
            return;
        }
        let target = self.shared.registry().target(frame.job, self.id);
        match target {
            // Waits while the shim is behind: that holds this node back rather
            // than buffering without bound (see `outbox`).
            Some(Target::Whole(shim)) => {
                if frame.kind == FrameKind::Output {
                    let metrics = &self.shared.metrics;
                    metrics.output_bytes(JobMode::Whole, frame.payload.len());
                    metrics.first_output(&shim.first_output, shim.connected.elapsed());
                } else {
                    self.shared.logs.stderr(frame.job, frame.payload);
                }
                shim.out.binary(frame.with_job(0).encode()).await;
            }
            Some(Target::Chunk { .. }) if frame.kind == FrameKind::Stderr => {
                self.shared.registry().chunk_stderr(frame.job, self.id, frame.payload);
            }
            Some(Target::Chunk { shim, chunk }) => {
                // The shim tells attempts apart by job and joins chunks by id.
                let out = Frame::new(FrameKind::Output, frame.job, chunk, frame.offset, frame.payload).encode();
                let Some(share) = shim.out.reserve(out.len()).await else { return };
                // The attempt may have lost its race or failed while we waited;
                // its bytes must not follow the shim's ChunkFailed.
                let queued = self.shared.registry().chunk_bytes(frame.job, self.id, frame.payload.len(), out, share);
                if !queued {
                    debug!(node = %self.name, job = frame.job, "bytes of an attempt that ended; dropped");
                }
            }
            None => debug!(node = %self.name, job = frame.job, "frame for a job this node does not run; dropped"),
        }
    }
}
