//! A Live TV channel as Jellyfin serves it (CONTRACT.md §5.8): a real ffmpeg
//! encodes a generated picture and tone in real time (`-re`) to MPEG-TS, which
//! grows in memory, and a small HTTP server on 127.0.0.1 serves it at
//! `/LiveTv/LiveStreamFiles/<id>/stream.ts`. Like Jellyfin's SharedHttpStream
//! re-serving its buffer file, every client gets the stream from its beginning
//! and then follows the live edge, chunked, for as long as the source runs. No
//! client can be further ahead than what has been produced, so a reader is
//! held to wall-clock time.
//!
//! Dropping the source stops everything: the encoder, the server, and every
//! connection, cut without the final chunk (a channel that goes away).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cluster::real;

/// What the channel carries.
#[derive(Clone, Debug)]
pub struct LiveOpts {
    pub size: &'static str,
    pub fps: u32,
    /// Keyframe interval in frames.
    pub gop: u32,
    /// B-frames between references (open GOPs with MPEG-2).
    pub bframes: u32,
    /// Encoded as interlaced (top field first), as broadcast SD/HD often is.
    pub interlaced: bool,
    /// `"libx264"` or `"mpeg2video"`.
    pub video: &'static str,
    /// AAC channels.
    pub audio_channels: u32,
    /// Seconds added to the stream's timestamps (`-output_ts_offset`): near
    /// 95443.7 s they pass the 33-bit limit and wrap, as a tuner's clock does.
    pub ts_offset: Option<f64>,
    /// Seconds of the stream there at once, before the rest follows in real
    /// time (what a tuner's buffer file holds when a client joins).
    pub backlog: Option<f64>,
    /// `(at, by)`: `at` seconds in, the clock jumps `by` seconds forward (a
    /// channel's stream restarting its clock).
    pub jump: Option<(f64, f64)>,
}

impl Default for LiveOpts {
    fn default() -> LiveOpts {
        LiveOpts {
            size: "320x240",
            fps: 25,
            gop: 50,
            bframes: 0,
            interlaced: false,
            video: "libx264",
            audio_channels: 2,
            ts_offset: None,
            backlog: None,
            jump: None,
        }
    }
}

/// The stream so far, shared by the encoder's reader and the clients.
#[derive(Default)]
struct Stream {
    data: Vec<u8>,
    /// The encoder stopped (by itself or because the source was dropped).
    ended: bool,
}

#[derive(Default)]
struct Shared {
    stream: Mutex<Stream>,
    grew: Condvar,
    stop: AtomicBool,
    served: AtomicUsize,
    open: AtomicUsize,
    /// Every client connection, to cut them when the source goes away.
    clients: Mutex<Vec<TcpStream>>,
    /// Each request's `User-Agent`, in the order they came.
    agents: Mutex<Vec<String>>,
}

/// A running live channel. Drop stops everything.
pub struct LiveSource {
    encoder: Child,
    shared: Arc<Shared>,
    port: u16,
    id: String,
    started: Instant,
    threads: Vec<JoinHandle<()>>,
}

impl LiveSource {
    /// Starts the encoder and the server; returns once the first bytes exist.
    pub fn start(opts: LiveOpts) -> LiveSource {
        // Paced by `-re`, or with a backlog by `realtime` filters that see the
        // backlog's frames all at time 0 (and the rest that much earlier);
        // the timestamps are then made whole again from the frame and sample
        // counts.
        let (pace, mut video, mut audio) = match (opts.backlog, opts.jump) {
            (None, None) => (Some("-re"), String::new(), String::new()),
            (b, _) => {
                let b = b.unwrap_or(0.0);
                (
                    None,
                    format!(",setpts='if(lt(T,{b}),0,T-{b})/TB',realtime,setpts=N/({}*TB)", opts.fps),
                    format!(",asetpts='if(lt(T,{b}),0,T-{b})/TB',arealtime,asetpts=N/SR/TB"),
                )
            }
        };
        // After the pacing, which would otherwise wait the jump out.
        if let Some((at, by)) = opts.jump {
            video.push_str(&format!(",setpts='PTS+if(gte(T,{at}),{by},0)/TB'"));
            audio.push_str(&format!(",asetpts='PTS+if(gte(T,{at}),{by},0)/TB'"));
        }
        let graph = format!(
            "testsrc2=size={}:rate={}{video}[out0];sine=frequency=440:sample_rate=48000{audio}[out1]",
            opts.size, opts.fps
        );
        let mut cmd = Command::new(real("ffmpeg"));
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"]).args(pace).args(["-f", "lavfi", "-i", &graph]);
        cmd.args(["-c:v", opts.video, "-g", &opts.gop.to_string(), "-bf", &opts.bframes.to_string()]);
        cmd.args(["-pix_fmt", "yuv420p"]);
        match opts.video {
            "libx264" => {
                cmd.args(["-preset", "ultrafast", "-b:v", "1M"]);
            }
            "mpeg2video" => {
                cmd.args(["-b:v", "3M"]);
            }
            other => panic!("LiveOpts::video {other:?} is not libx264 or mpeg2video"),
        }
        if opts.interlaced {
            cmd.args(["-flags", "+ildct+ilme", "-top", "1", "-field_order", "tt"]);
        }
        cmd.args(["-c:a", "aac", "-b:a", "128k", "-ac", &opts.audio_channels.to_string()]);
        if let Some(offset) = opts.ts_offset {
            cmd.args(["-output_ts_offset", &offset.to_string()]);
        }
        cmd.args(["-f", "mpegts", "-flush_packets", "1", "pipe:1"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut encoder = cmd.spawn().expect("start the live encoder (ffmpeg)");
        let stdout = encoder.stdout.take().unwrap();

        let shared = Arc::new(Shared::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let started = Instant::now();
        let id = format!("{:032x}", (u128::from(std::process::id()) << 64) ^ started.elapsed().as_nanos() ^ 0x5eed);
        let s = shared.clone();
        let produce = std::thread::spawn(move || produce(&s, stdout));
        let s = shared.clone();
        let serve = std::thread::spawn(move || serve(&s, &listener));
        let source = LiveSource { encoder, shared, port, id, started, threads: vec![produce, serve] };

        let deadline = Instant::now() + Duration::from_secs(20);
        while source.shared.stream.lock().unwrap().data.is_empty() {
            assert!(Instant::now() < deadline, "the live encoder produced nothing in 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        source
    }

    /// `http://localhost:PORT/LiveTv/LiveStreamFiles/<hex id>/stream.ts`
    pub fn url(&self) -> String {
        format!("http://localhost:{}/LiveTv/LiveStreamFiles/{}/stream.ts", self.port, self.id)
    }

    /// Connections accepted so far.
    pub fn clients_served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Connections still open.
    pub fn clients_open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The `User-Agent` of every request so far.
    pub fn user_agents(&self) -> Vec<String> {
        self.shared.agents.lock().unwrap().clone()
    }

    /// When the encoder started: the stream's time 0 in wall-clock time.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.encoder.kill();
        let _ = self.encoder.wait();
        for c in self.shared.clients.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.shared.grew.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The encoder's output into the shared stream.
fn produce(shared: &Shared, mut stdout: impl Read) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stdout.read(&mut buf).unwrap_or(0);
        let mut s = shared.stream.lock().unwrap();
        if n == 0 {
            s.ended = true;
            shared.grew.notify_all();
            return;
        }
        s.data.extend_from_slice(&buf[..n]);
        shared.grew.notify_all();
    }
}

/// Accepts clients until the source stops; one thread each.
fn serve(shared: &Arc<Shared>, listener: &TcpListener) {
    let mut clients = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                shared.served.fetch_add(1, Ordering::SeqCst);
                shared.open.fetch_add(1, Ordering::SeqCst);
                shared.clients.lock().unwrap().push(conn.try_clone().unwrap());
                let s = shared.clone();
                clients.push(std::thread::spawn(move || {
                    let keep = conn.try_clone();
                    let _ = client(&s, conn);
                    // The clone kept for Drop must not hold the connection open.
                    if let Ok(c) = keep {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                    s.open.fetch_sub(1, Ordering::SeqCst);
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("live source accept: {e}"),
        }
    }
    for c in clients {
        let _ = c.join();
    }
}

/// One client: the request head, then the stream from its beginning, chunked.
fn client(shared: &Shared, conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    let mut agent = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("user-agent")
        {
            agent = value.trim().to_owned();
        }
    }
    shared.agents.lock().unwrap().push(agent);
    let mut out = conn;
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\
          Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
    )?;
    let mut sent = 0usize;
    loop {
        let (piece, ended) = {
            let mut s = shared.stream.lock().unwrap();
            while s.data.len() == sent && !s.ended && !shared.stop.load(Ordering::SeqCst) {
                s = shared.grew.wait_timeout(s, Duration::from_millis(100)).unwrap().0;
            }
            if shared.stop.load(Ordering::SeqCst) {
                // Gone: no final chunk.
                let _ = out.shutdown(Shutdown::Both);
                return Ok(());
            }
            let end = s.data.len().min(sent + (256 << 10));
            (s.data[sent..end].to_vec(), s.ended && end == s.data.len())
        };
        if !piece.is_empty() {
            out.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
            out.write_all(&piece)?;
            out.write_all(b"\r\n")?;
            sent += piece.len();
        }
        if ended {
            out.write_all(b"0\r\n\r\n")?;
            return Ok(());
        }
    }
}
