//! A job's outputs on their way to the shim: ffmpeg's stdout, and the files it
//! writes into the plan's scratch directories.
//!
//! The watcher lists those directories every [`TICK`] (and once more when ffmpeg
//! has ended), lets [`OutputTracker`] decide what is complete and in which order
//! it may be published, and does it: whole files as `Atomic`, growing files
//! streamed `InPlace`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use ffcluster::protocol::{Frame, FrameKind, JobId, MAX_FRAME_PAYLOAD, NodeMsg, OutputEvent, WriteMode};
use ffcluster::remote::{Action, Ended, OutputTracker, Seen};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::process::ChildStdout;
use tokio::sync::watch;

use crate::link::{Closed, Outbox};

/// How often the scratch directories are listed while ffmpeg runs.
pub const TICK: Duration = Duration::from_millis(50);
/// Granularity of the end-of-job comparison of a streamed file (muxers seek back
/// and rewrite headers and indexes when they finish).
const BLOCK: usize = 64 * 1024;
/// Playlists are small; anything bigger than this is not read as one.
const MAX_PLAYLIST: u64 = 16 * 1024 * 1024;

/// Streams ffmpeg's stdout as one `Stdout` file.
pub async fn pump_stdout(job: JobId, mut stdout: ChildStdout, ids: Arc<AtomicU32>, out: Outbox) -> Result<(), Closed> {
    let file = ids.fetch_add(1, Ordering::Relaxed);
    let open = OutputEvent::Open { file, path: "pipe:1".into(), mode: WriteMode::Stdout };
    out.msg(&NodeMsg::Output { job, event: open }).await?;
    let mut buf = vec![0u8; MAX_FRAME_PAYLOAD];
    let mut offset = 0u64;
    loop {
        let n = stdout.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        out.frame(&Frame::new(FrameKind::Output, job, file, offset, &buf[..n])).await?;
        offset += n as u64;
    }
    out.msg(&NodeMsg::Output { job, event: OutputEvent::Done { file, size: offset } }).await
}

/// A file being streamed in place.
#[derive(Debug)]
struct Growing {
    file: u32,
    path: PathBuf,
    /// Bytes sent so far (from offset 0, contiguous).
    sent: u64,
    /// Hashes of the complete [`BLOCK`]s sent, to find what changed at the end.
    blocks: Vec<u64>,
    /// The sent bytes of the block after them.
    partial: Vec<u8>,
}

impl Growing {
    fn record(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == BLOCK {
                self.blocks.push(hash(&self.partial));
                self.partial.clear();
            }
        }
    }

    /// Whether `data`, the current content of block `i`, differs from what was sent.
    fn changed(&self, i: usize, data: &[u8]) -> bool {
        match i.cmp(&self.blocks.len()) {
            std::cmp::Ordering::Less => data.len() != BLOCK || hash(data) != self.blocks[i],
            std::cmp::Ordering::Equal => data != self.partial.as_slice(),
            std::cmp::Ordering::Greater => !data.is_empty(),
        }
    }
}

fn hash(data: &[u8]) -> u64 {
    // In-process comparison only, so the std hasher's unstable algorithm is fine;
    // 64 bits make an accidental match of changed content negligible.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// Watches one job's output directories.
#[derive(Debug)]
pub struct Watcher {
    job: JobId,
    tracker: OutputTracker,
    dirs: Vec<PathBuf>,
    ids: Arc<AtomicU32>,
    out: Outbox,
    growing: BTreeMap<(usize, String), Growing>,
}

impl Watcher {
    pub fn new(job: JobId, tracker: OutputTracker, ids: Arc<AtomicU32>, out: Outbox) -> Watcher {
        let dirs = tracker.plan().dirs.iter().map(|d| PathBuf::from(&d.scratch)).collect();
        Watcher { job, tracker, dirs, ids, out, growing: BTreeMap::new() }
    }

    /// Publishes until `ended` says how ffmpeg ended, then does the last poll.
    pub async fn run(mut self, mut ended: watch::Receiver<Option<Ended>>) -> Result<(), Closed> {
        if self.dirs.is_empty() {
            return Ok(());
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let state = *ended.borrow_and_update();
            if let Some(how) = state {
                return self.poll(how).await;
            }
            tokio::select! {
                _ = tick.tick() => self.poll(Ended::Running).await?,
                changed = ended.changed() => if changed.is_err() {
                    // The job is gone without telling how ffmpeg ended: nothing more to send.
                    return Ok(());
                },
            }
        }
    }

    async fn poll(&mut self, ended: Ended) -> Result<(), Closed> {
        let seen = self.list().await;
        // What the tracker read of each playlist is what gets published, so the
        // published playlist never lists a segment the tracker has not seen complete.
        let mut texts: HashMap<(usize, String), Vec<u8>> = HashMap::new();
        let dirs = &self.dirs;
        let actions = self.tracker.poll(&seen, ended, &mut |dir, name| {
            let path = dirs.get(dir)?.join(name);
            if std::fs::metadata(&path).ok()?.len() > MAX_PLAYLIST {
                return None;
            }
            let bytes = std::fs::read(&path).ok()?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            texts.insert((dir, name.to_owned()), bytes);
            Some(text)
        });
        for action in actions {
            match action {
                Action::Publish { dir, name, original } => {
                    let text = texts.remove(&(dir, name.clone()));
                    self.publish(dir, &name, original, text).await?;
                }
                Action::Stream { dir, name, original } => self.start_stream(dir, name, original).await?,
                Action::Finish { dir, name } => self.finish(dir, name).await?,
            }
        }
        if ended == Ended::Running {
            let keys: Vec<(usize, String)> = self.growing.keys().cloned().collect();
            for key in keys {
                self.tail(&key).await?;
            }
        }
        Ok(())
    }

    async fn list(&self) -> Vec<Seen> {
        let mut seen = Vec::new();
        for (dir, path) in self.dirs.iter().enumerate() {
            let Ok(mut entries) = tokio::fs::read_dir(path).await else { continue };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let Ok(name) = entry.file_name().into_string() else { continue };
                let Ok(meta) = entry.metadata().await else { continue };
                if !meta.is_file() {
                    continue;
                }
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as i128);
                seen.push(Seen { dir, name, size: meta.len(), mtime });
            }
        }
        seen
    }

    fn next_id(&self) -> u32 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    async fn event(&self, event: OutputEvent) -> Result<(), Closed> {
        self.out.msg(&NodeMsg::Output { job: self.job, event }).await
    }

    async fn data(&self, file: u32, offset: u64, bytes: &[u8]) -> Result<(), Closed> {
        for (i, chunk) in bytes.chunks(MAX_FRAME_PAYLOAD).enumerate() {
            let at = offset + (i * MAX_FRAME_PAYLOAD) as u64;
            self.out.frame(&Frame::new(FrameKind::Output, self.job, file, at, chunk)).await?;
        }
        Ok(())
    }

    /// Sends a complete file: `Open`, its bytes, `Done`.
    async fn publish(&self, dir: usize, name: &str, original: String, text: Option<Vec<u8>>) -> Result<(), Closed> {
        let path = self.dirs[dir].join(name);
        let file = self.next_id();
        if let Some(bytes) = text {
            self.event(OutputEvent::Open { file, path: original, mode: WriteMode::Atomic }).await?;
            self.data(file, 0, &bytes).await?;
            return self.event(OutputEvent::Done { file, size: bytes.len() as u64 }).await;
        }
        let mut f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                // ffmpeg deleted it (hls delete_segments) between listing and now.
                tracing::warn!(job = self.job, file = %path.display(), "cannot publish: {e}");
                return Ok(());
            }
        };
        self.event(OutputEvent::Open { file, path: original.clone(), mode: WriteMode::Atomic }).await?;
        let mut buf = vec![0u8; MAX_FRAME_PAYLOAD];
        let mut size = 0u64;
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(job = self.job, file = %path.display(), "read error, publishing what was read: {e}");
                    0
                }
            };
            if n == 0 {
                break;
            }
            self.data(file, size, &buf[..n]).await?;
            size += n as u64;
        }
        tracing::debug!(job = self.job, file = %original, size, "published");
        self.event(OutputEvent::Done { file, size }).await
    }

    async fn start_stream(&mut self, dir: usize, name: String, original: String) -> Result<(), Closed> {
        let file = self.next_id();
        self.event(OutputEvent::Open { file, path: original, mode: WriteMode::InPlace }).await?;
        let path = self.dirs[dir].join(&name);
        let key = (dir, name);
        self.growing.insert(key.clone(), Growing { file, path, sent: 0, blocks: Vec::new(), partial: Vec::new() });
        self.tail(&key).await
    }

    /// Sends what was appended to a growing file since the last time.
    async fn tail(&mut self, key: &(usize, String)) -> Result<(), Closed> {
        let Some(g) = self.growing.get(key) else { return Ok(()) };
        let (path, file, mut sent) = (g.path.clone(), g.file, g.sent);
        let Ok(mut f) = tokio::fs::File::open(&path).await else { return Ok(()) };
        if f.seek(SeekFrom::Start(sent)).await.is_err() {
            return Ok(());
        }
        let mut buf = vec![0u8; MAX_FRAME_PAYLOAD];
        loop {
            let n = f.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            self.data(file, sent, &buf[..n]).await?;
            sent += n as u64;
            if let Some(g) = self.growing.get_mut(key) {
                g.record(&buf[..n]);
                g.sent = sent;
            }
        }
        Ok(())
    }

    /// The file is final: send the rest, then every block that changed since it
    /// was sent, then `Done`.
    async fn finish(&mut self, dir: usize, name: String) -> Result<(), Closed> {
        let key = (dir, name);
        self.tail(&key).await?;
        let Some(g) = self.growing.remove(&key) else { return Ok(()) };
        let mut size = g.sent;
        let mut resent = 0usize;
        if let Ok(mut f) = tokio::fs::File::open(&g.path).await {
            size = f.metadata().await.map_or(g.sent, |m| m.len());
            let mut buf = vec![0u8; BLOCK];
            let mut i = 0usize;
            loop {
                let n = read_full(&mut f, &mut buf).await;
                if n == 0 {
                    break;
                }
                if g.changed(i, &buf[..n]) {
                    self.data(g.file, (i * BLOCK) as u64, &buf[..n]).await?;
                    resent += 1;
                }
                i += 1;
                if n < BLOCK {
                    break;
                }
            }
        }
        tracing::debug!(job = self.job, file = %g.path.display(), size, resent, "stream finished");
        self.event(OutputEvent::Done { file: g.file, size }).await
    }
}

/// Reads until `buf` is full or the file ends; the byte count.
async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_files_find_rewritten_blocks() {
        let mut g = Growing { file: 0, path: PathBuf::new(), sent: 0, blocks: Vec::new(), partial: Vec::new() };
        let mut content = vec![7u8; BLOCK * 2 + 100];
        // Sent in odd pieces, as a tail would.
        for piece in content.chunks(1000) {
            g.record(piece);
        }
        assert_eq!(g.blocks.len(), 2);
        assert_eq!(g.partial.len(), 100);
        let block = |c: &[u8], i: usize| c[i * BLOCK..((i + 1) * BLOCK).min(c.len())].to_vec();
        assert!((0..3).all(|i| !g.changed(i, &block(&content, i))));
        // A header patched at the start, an index patched at the end.
        content[10] = 1;
        content[BLOCK * 2 + 50] = 1;
        assert!(g.changed(0, &block(&content, 0)));
        assert!(!g.changed(1, &block(&content, 1)));
        assert!(g.changed(2, &block(&content, 2)));
        assert!(g.changed(3, b"more"));
        assert!(!g.changed(3, b""));
    }
}
