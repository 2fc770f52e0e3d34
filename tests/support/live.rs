//! A live TV source as Jellyfin re-serves a tuner: MPEG-TS produced in real time
//! (`ffmpeg -re`), served over HTTP to every client from its beginning, then at
//! the live edge as it grows (`SharedHttpStream`, CONTRACT.md §5.8).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::cluster::real;

#[derive(Debug, Clone)]
pub struct LiveOpts {
    pub size: &'static str,
    pub fps: u32,
    pub gop: u32,
    pub interlaced: bool,
    /// `libx264` or `mpeg2video`.
    pub video: &'static str,
    pub audio_channels: u32,
}

impl Default for LiveOpts {
    fn default() -> LiveOpts {
        LiveOpts { size: "320x240", fps: 25, gop: 50, interlaced: false, video: "libx264", audio_channels: 2 }
    }
}

#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
    ended: bool,
}

pub struct LiveSource {
    port: u16,
    id: String,
    encoder: Child,
    stop: Arc<AtomicBool>,
    clients: Arc<AtomicUsize>,
}

impl LiveSource {
    pub fn start(opts: LiveOpts) -> LiveSource {
        let layout = if opts.audio_channels >= 6 { "5.1" } else { "stereo" };
        let mut cmd = Command::new(real("ffmpeg"));
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", &format!("testsrc2=size={}:rate={}", opts.size, opts.fps)])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-c:v", opts.video, "-g", &opts.gop.to_string(), "-pix_fmt", "yuv420p"])
            .args(["-af", &format!("aformat=channel_layouts={layout}"), "-c:a", "aac", "-b:a", "128k"]);
        if opts.video == "libx264" {
            cmd.args(["-preset", "ultrafast", "-tune", "zerolatency"]);
        } else {
            cmd.args(["-b:v", "2M"]);
        }
        if opts.interlaced {
            cmd.args(["-flags", "+ildct+ilme", "-field_order", "tt"]);
        }
        cmd.args(["-f", "mpegts", "pipe:1"]).stdin(Stdio::null()).stdout(Stdio::piped());
        let mut encoder = cmd.spawn().expect("start the live source's ffmpeg");
        let mut out = encoder.stdout.take().unwrap();

        let stream = Arc::new((Mutex::new(Stream::default()), Condvar::new()));
        let s2 = stream.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = out.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*s2;
                let mut s = lock.lock().unwrap();
                if n == 0 {
                    s.ended = true;
                    cv.notify_all();
                    return;
                }
                s.bytes.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(AtomicUsize::new(0));
        let (stop2, clients2) = (stop.clone(), clients.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        clients2.fetch_add(1, Ordering::Relaxed);
                        let (stream, stop) = (stream.clone(), stop2.clone());
                        std::thread::spawn(move || serve(conn, &stream, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        let id = format!("{:032x}", u128::from(port) * 0x9e37_79b9_7f4a_7c15);
        LiveSource { port, id, encoder, stop, clients }
    }

    pub fn url(&self) -> String {
        format!("http://localhost:{}/LiveTv/LiveStreamFiles/{}/stream.ts", self.port, self.id)
    }

    pub fn clients_served(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// One client: the whole stream so far, then each new piece, until the client
/// goes away or the source stops. No length: the body ends with the connection.
fn serve(conn: TcpStream, stream: &(Mutex<Stream>, Condvar), stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
        line.clear();
    }
    let mut conn = conn;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\nAccept-Ranges: none\r\n\r\n";
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut sent = 0;
    let (lock, cv) = stream;
    loop {
        let piece = {
            let mut s = lock.lock().unwrap();
            while s.bytes.len() == sent && !s.ended && !stop.load(Ordering::Relaxed) {
                s = cv.wait_timeout(s, Duration::from_millis(200)).unwrap().0;
            }
            if s.bytes.len() == sent {
                return;
            }
            s.bytes[sent..].to_vec()
        };
        if conn.write_all(&piece).is_err() {
            return;
        }
        sent += piece.len();
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.encoder.kill();
        let _ = self.encoder.wait();
    }
}
