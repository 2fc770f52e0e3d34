//! A live split job's incoming stream: read from the shim as the origin sends
//! it, cut into pieces on keyframes ([`Cutter`]) and handed to the job, which
//! offers each piece to a node as soon as it is whole. The pieces are kept in
//! memory until their chunk is encoded, so the relay serves them (and any
//! retry) without asking the shim again.
//!
//! The stream ends like the direct ffmpeg's input ends: cleanly at the origin's
//! end, or when it breaks; either way the rest becomes the last piece and the
//! job completes once that is encoded, as ffmpeg would finish its playlist.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use super::Shared;
use super::relay::StreamPull;
use super::shim_link::ShimConn;
use crate::protocol::JobId;
use crate::split::live::Cutter;

/// Pieces waiting for a node, at most: past this the cluster has fallen
/// minutes behind the stream (a 20 Mb/s channel makes 150 MiB a minute) and
/// the job fails rather than grow the controller without end.
const BACKLOG: usize = 512 << 20;

/// Reads offered stream `file` of live job `job` until it ends or the job
/// does; `piece` is the piece length in 90 kHz ticks.
pub(crate) async fn feed(shared: Arc<Shared>, job: JobId, shim: Arc<ShimConn>, file: u32, piece: u64) {
    let mut cutter = Cutter::new(piece);
    let mut stream = StreamPull::new(shim, shared.metrics.clone(), file);
    let error = loop {
        let bytes = match stream.next_chunk().await {
            None => break None,
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => break Some(e.to_string()),
        };
        let pieces = match cutter.feed(&bytes) {
            Ok(p) => p,
            Err(e) => {
                // Not an end: the finisher would go on with the stream's audio
                // and no video. The job fails, with the reason, for the shim.
                let reason = format!("cannot cut the live stream: {e}");
                shared.registry().fail_split(job, reason, Instant::now());
                return;
            }
        };
        for p in pieces {
            if !shared.registry().live_piece(job, p, BACKLOG, Instant::now()) {
                return;
            }
        }
    };
    let next = stream.offset();
    match &error {
        None => info!(job, bytes = next, "live stream ended"),
        Some(e) => info!(job, bytes = next, "live stream broke: {e}"),
    }
    let mut registry = shared.registry();
    if let Some(last) = cutter.finish() {
        debug!(job, piece = last.index, "last live piece");
        if !registry.live_piece(job, last, BACKLOG, Instant::now()) {
            return;
        }
    }
    registry.live_ended(job, error.as_deref(), Instant::now());
}
