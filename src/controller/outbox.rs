//! The ordered outgoing queue of one WebSocket and the task that drains it.
//!
//! Everything for a peer goes through one queue, so messages reach it in the order
//! they were queued, text and binary interleaved. Control messages never wait, so
//! they can be queued while holding the registry lock. Binary frames carry bulk
//! bytes and first take a share of a byte budget that the writer gives back once
//! the frame is on the socket; a peer that stops reading therefore stalls the
//! producer instead of growing the queue.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::shutdown::Signal;

/// WebSocket close codes (RFC 6455 §7.4.1).
pub(crate) const CLOSE_NORMAL: u16 = 1000;
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
pub(crate) const CLOSE_POLICY: u16 = 1008;

/// Messages written per flush when the queue is backed up: batches small
/// messages into fewer syscalls without delaying any of them.
const BATCH: usize = 64;

#[derive(Debug)]
pub(crate) enum Out<T> {
    Json(T),
    Binary(Vec<u8>, Option<OwnedSemaphorePermit>),
    Close(u16, &'static str),
}

/// A share of a peer's byte budget, given back once its bytes are on the socket.
#[derive(Debug)]
pub(crate) struct Reserved(OwnedSemaphorePermit);

/// Sending side of a peer's queue. Clones share the queue and the budget.
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    tx: mpsc::UnboundedSender<Out<T>>,
    budget: Arc<Semaphore>,
    budget_bytes: u32,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Outbox { tx: self.tx.clone(), budget: self.budget.clone(), budget_bytes: self.budget_bytes }
    }
}

impl<T> Outbox<T> {
    pub(crate) fn new(budget_bytes: u32) -> (Outbox<T>, mpsc::UnboundedReceiver<Out<T>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Outbox { tx, budget: Arc::new(Semaphore::new(budget_bytes as usize)), budget_bytes }, rx)
    }

    /// Queues a control message. False when the connection is gone.
    pub(crate) fn json(&self, msg: T) -> bool {
        self.tx.send(Out::Json(msg)).is_ok()
    }

    /// Queues bulk bytes once the budget allows. False when the connection is gone.
    pub(crate) async fn binary(&self, bytes: Vec<u8>) -> bool {
        let Some(share) = self.reserve(bytes.len()).await else {
            return false;
        };
        self.binary_reserved(bytes, share)
    }

    /// Waits until the budget allows `len` more bytes and takes that share. None
    /// when the connection is gone. Split in two from [`Outbox::binary`] so that
    /// a producer can wait without a lock, then decide under its lock whether
    /// the bytes are still wanted and queue them in order with control messages.
    pub(crate) async fn reserve(&self, len: usize) -> Option<Reserved> {
        // A frame larger than the whole budget takes all of it rather than waiting forever.
        let want = u32::try_from(len).unwrap_or(u32::MAX).clamp(1, self.budget_bytes);
        self.budget.clone().acquire_many_owned(want).await.ok().map(Reserved)
    }

    /// [`Outbox::reserve`] for tests that have the budget to spare and no runtime to wait in.
    #[cfg(test)]
    pub(crate) fn try_reserve(&self, len: usize) -> Option<Reserved> {
        let want = u32::try_from(len).unwrap_or(u32::MAX).clamp(1, self.budget_bytes);
        self.budget.clone().try_acquire_many_owned(want).ok().map(Reserved)
    }

    /// Queues bulk bytes with a share taken by [`Outbox::reserve`]; never waits.
    /// False when the connection is gone.
    pub(crate) fn binary_reserved(&self, bytes: Vec<u8>, share: Reserved) -> bool {
        self.tx.send(Out::Binary(bytes, Some(share.0))).is_ok()
    }

    /// Queues a close: the writer sends everything queued before it, then the
    /// close frame, then stops.
    pub(crate) fn close(&self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Out::Close(code, reason));
    }

    /// Releases producers waiting for budget: the connection is over.
    pub(crate) fn abandon(&self) {
        self.budget.close();
    }
}

/// Drains `rx` into `sink` until a queued close, the end of the queue, a write
/// error or shutdown. With `heartbeat`, also sends that message at that period.
pub(crate) async fn pump<T: Serialize + Clone>(
    mut rx: mpsc::UnboundedReceiver<Out<T>>,
    mut sink: SplitSink<WebSocket, Message>,
    shutdown: Signal,
    heartbeat: Option<(Duration, T)>,
) -> Result<(), axum::Error> {
    let mut ticker = heartbeat.as_ref().map(|(every, _)| {
        let mut t = tokio::time::interval_at(Instant::now() + *every, *every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.fired() => {
                let _ = sink.send(close(CLOSE_GOING_AWAY, "controller shutting down")).await;
                return Ok(());
            }
            out = rx.recv() => match out {
                Some(out) => out,
                None => return Ok(()),
            },
            () = tick(&mut ticker) => match &heartbeat {
                Some((_, msg)) => Out::Json(msg.clone()),
                None => continue,
            },
        };
        let mut next = Some(first);
        let mut written = 0;
        while let Some(out) = next.take() {
            if write(&mut sink, out).await? {
                sink.flush().await?;
                return Ok(());
            }
            written += 1;
            if written < BATCH {
                next = rx.try_recv().ok();
            }
        }
        sink.flush().await?;
    }
}

/// Feeds one message; true when it was the close.
async fn write<T: Serialize>(sink: &mut SplitSink<WebSocket, Message>, out: Out<T>) -> Result<bool, axum::Error> {
    match out {
        Out::Json(msg) => {
            // Our own message types always serialize.
            let text = serde_json::to_string(&msg).map_err(axum::Error::new)?;
            sink.feed(Message::Text(text.into())).await?;
            Ok(false)
        }
        Out::Binary(bytes, permit) => {
            sink.feed(Message::Binary(bytes.into())).await?;
            drop(permit);
            Ok(false)
        }
        Out::Close(code, reason) => {
            sink.feed(close(code, reason)).await?;
            Ok(true)
        }
    }
}

pub(crate) fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
