//! The live channel `bench live` transcodes: a pre-encoded MPEG-TS clip paced
//! to real time by a real `ffmpeg -re … -c copy` and served over HTTP on
//! 127.0.0.1 the way Jellyfin serves a tuner (CONTRACT.md §5.8): Jellyfin
//! buffers the tuner's stream into a file and re-serves it at
//! `/LiveTv/LiveStreamFiles/<id>/stream.ts`, every client from the file's
//! beginning, then following the live edge, chunked. Nobody can read further
//! than what was paced out, so a reader is held to wall-clock time.
//!
//! The clip is encoded once, before the runs; pacing it costs no encoding
//! during a run. Dropping the source stops the pacer and cuts every connection.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// How long the pacer may take to emit its first bytes.
const FIRST_BYTES: Duration = Duration::from_secs(20);
/// The most one chunk of the answer carries.
const CHUNK: usize = 256 << 10;

/// How far the buffer file has grown, shared by the pacer's reader and the
/// clients.
#[derive(Debug, Default)]
struct Edge {
    /// Bytes written to the buffer file so far.
    len: u64,
    /// When the first of them arrived: the stream's time 0.
    first: Option<Instant>,
    /// The pacer stopped (the clip ended, or the source was dropped).
    ended: bool,
}

#[derive(Debug, Default)]
struct Shared {
    edge: Mutex<Edge>,
    grew: Condvar,
    stop: AtomicBool,
    /// Every client connection, to cut them when the source goes away.
    clients: Mutex<Vec<TcpStream>>,
}

/// A running channel. Drop stops it.
#[derive(Debug)]
pub(super) struct LiveSource {
    pacer: Child,
    shared: Arc<Shared>,
    url: String,
    started: Instant,
    threads: Vec<JoinHandle<()>>,
}

impl LiveSource {
    /// Starts pacing `clip` into `buffer` and serving it; returns once the
    /// first bytes are there. The pacer's stderr goes to `log`.
    pub(super) fn start(ffmpeg: &Path, clip: &Path, buffer: &Path, log: &Path) -> Result<LiveSource> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the live source's port")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        // Jellyfin's ids are 32 hex digits, as the token is.
        let id = crate::random_token()?;
        let path = format!("/LiveTv/LiveStreamFiles/{id}/stream.ts");
        let url = format!("http://127.0.0.1:{port}{path}");

        let mut pacer = Command::new(ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i"])
            .arg(clip)
            .args(["-map", "0", "-c", "copy", "-f", "mpegts", "-flush_packets", "1", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(log)?)
            .spawn()
            .context("starting the live source's pacer (ffmpeg -re)")?;
        let stdout = pacer.stdout.take().context("the pacer's stdout")?;
        let shared = Arc::new(Shared::default());
        let writer = File::create(buffer).with_context(|| format!("creating {}", buffer.display()))?;
        let s = shared.clone();
        let produce = std::thread::spawn(move || produce(&s, stdout, writer));
        let (s, buffer) = (shared.clone(), buffer.to_owned());
        let serve = std::thread::spawn(move || serve(&s, &listener, &path, &buffer));
        let mut source = LiveSource { pacer, shared, url, started: Instant::now(), threads: vec![produce, serve] };

        let deadline = Instant::now() + FIRST_BYTES;
        loop {
            let (first, ended) = {
                let edge = source.shared.edge.lock().unwrap_or_else(|e| e.into_inner());
                (edge.first, edge.ended)
            };
            if let Some(first) = first {
                source.started = first;
                return Ok(source);
            }
            if ended {
                bail!("the live source's pacer ended without output; see {}", log.display());
            }
            ensure!(
                Instant::now() < deadline,
                "the live source's pacer produced nothing in {} s",
                FIRST_BYTES.as_secs()
            );
            super::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `http://127.0.0.1:PORT/LiveTv/LiveStreamFiles/<hex id>/stream.ts`
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// When the first bytes came out of the pacer: the stream's time 0.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// Whether the pacer is still emitting (the clip has not run out).
    pub(super) fn running(&self) -> bool {
        !self.shared.edge.lock().unwrap_or_else(|e| e.into_inner()).ended
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.pacer.kill();
        let _ = self.pacer.wait();
        for c in self.shared.clients.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.shared.grew.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The pacer's output, appended to the buffer file.
fn produce(shared: &Shared, mut stdout: impl Read, mut file: File) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stdout.read(&mut buf).unwrap_or(0);
        let written = n > 0 && file.write_all(&buf[..n]).is_ok();
        let mut edge = shared.edge.lock().unwrap_or_else(|e| e.into_inner());
        if !written {
            edge.ended = true;
            shared.grew.notify_all();
            return;
        }
        edge.first.get_or_insert_with(Instant::now);
        edge.len += n as u64;
        shared.grew.notify_all();
    }
}

/// Accepts clients until the source stops; a thread each.
fn serve(shared: &Arc<Shared>, listener: &TcpListener, path: &str, buffer: &Path) {
    let mut clients = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let Ok(kept) = conn.try_clone() else { continue };
                shared.clients.lock().unwrap_or_else(|e| e.into_inner()).push(kept);
                let (s, path, buffer) = (shared.clone(), path.to_owned(), buffer.to_owned());
                clients.push(std::thread::spawn(move || {
                    let _ = client(&s, conn, &path, &buffer);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    for c in clients {
        let _ = c.join();
    }
}

/// One client: the request head, then the buffer file from its beginning,
/// chunked, following its growth until the pacer ends.
fn client(shared: &Shared, conn: TcpStream, path: &str, buffer: &Path) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && !line.trim_end().is_empty() {
        line.clear();
    }
    let mut out = conn;
    let target = request.split_whitespace().nth(1).unwrap_or_default();
    if !request.starts_with("GET ") || target != path {
        out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return out.shutdown(Shutdown::Both);
    }
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\
          Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
    )?;
    let mut file = File::open(buffer)?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let (available, ended) = {
            let mut edge = shared.edge.lock().unwrap_or_else(|e| e.into_inner());
            while edge.len == sent && !edge.ended && !shared.stop.load(Ordering::SeqCst) {
                edge = shared.grew.wait_timeout(edge, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
            }
            (edge.len, edge.ended)
        };
        if shared.stop.load(Ordering::SeqCst) {
            // Gone: no final chunk.
            return out.shutdown(Shutdown::Both);
        }
        if available > sent {
            let n = usize::try_from(available - sent).unwrap_or(CHUNK).min(CHUNK);
            file.seek(SeekFrom::Start(sent))?;
            file.read_exact(&mut buf[..n])?;
            out.write_all(format!("{n:x}\r\n").as_bytes())?;
            out.write_all(&buf[..n])?;
            out.write_all(b"\r\n")?;
            sent += n as u64;
        } else if ended {
            out.write_all(b"0\r\n\r\n")?;
            return out.shutdown(Shutdown::Write);
        }
    }
}
