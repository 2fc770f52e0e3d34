//! The real `ffcluster-node` binary against a fake controller: a WebSocket
//! endpoint that checks the bearer token and a relay that serves input files with
//! byte ranges, both on one port like the real controller. Needs the real ffmpeg
//! on PATH; fails (never skips) without it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffcluster::protocol::{
    FileOffer, Frame, FrameKind, JobSignal, JobSpec, NodeMsg, OutputEvent, RemoteExit, ToNode, WriteMode,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

const TOKEN: &str = "s3cret-token";
/// Upper bound for any single test, so that a hang fails instead of blocking CI.
const TEST_LIMIT: Duration = Duration::from_secs(120);

fn ffmpeg_works() {
    let ok = Command::new("ffmpeg").arg("-version").stdout(Stdio::null()).status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "these tests need the real ffmpeg on PATH");
}

/// Generates a clip with the real ffmpeg.
fn make_clip(dir: &Path, seconds: u32) -> PathBuf {
    let path = dir.join("in.mkv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=320x240:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac", "-y"])
        .arg(&path)
        .status()
        .expect("running ffmpeg");
    assert!(status.success(), "generating the test clip failed");
    path
}

// ---------------------------------------------------------------------------
// The fake controller.

type Ws = WebSocketStream<TcpStream>;

struct FakeController {
    addr: std::net::SocketAddr,
    sessions: mpsc::UnboundedReceiver<Ws>,
}

impl FakeController {
    /// `files`: relay path (`/api/v1/files/{access}/{id}`) → file to serve.
    async fn start(files: HashMap<String, PathBuf>) -> FakeController {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        let files = Arc::new(files);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let files = files.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let line = first_line(&stream).await;
                    if line.starts_with("GET /api/v1/node ") {
                        // The callback's signature is tungstenite's.
                        #[allow(clippy::result_large_err)]
                        let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                            let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok());
                            if auth == Some(&format!("Bearer {TOKEN}")) {
                                Ok(resp)
                            } else {
                                let mut err = ErrorResponse::new(Some("bad token".into()));
                                *err.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
                                Err(err)
                            }
                        };
                        if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await {
                            let _ = tx.send(ws);
                        }
                    } else {
                        serve_file(stream, &files).await;
                    }
                });
            }
        });
        FakeController { addr, sessions }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn accept(&mut self) -> Session {
        let ws = tokio::time::timeout(Duration::from_secs(30), self.sessions.recv())
            .await
            .expect("the node did not connect")
            .unwrap();
        Session { ws, heartbeat: tokio::time::interval(Duration::from_millis(500)) }
    }
}

/// The request line, without consuming anything.
async fn first_line(stream: &TcpStream) -> String {
    let mut buf = [0u8; 2048];
    for _ in 0..400 {
        let n = stream.peek(&mut buf).await.unwrap_or(0);
        if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
            return String::from_utf8_lossy(&buf[..i]).into_owned();
        }
        if n == 0 || n == buf.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    String::new()
}

/// One request of the relay: `GET path` with an optional `Range: bytes=a-[b]`.
async fn serve_file(mut stream: TcpStream, files: &HashMap<String, PathBuf>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    // Nodes add the file's extension to its id (`…/0.mkv`); the controller ignores it.
    let path = match path.rsplit_once('/') {
        Some((dir, last)) => format!("{dir}/{}", last.split('.').next().unwrap_or(last)),
        None => path,
    };
    let Some(file) = files.get(&path) else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        return;
    };
    let data = tokio::fs::read(file).await.unwrap();
    let total = data.len() as u64;
    let range = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("range") {
            return None;
        }
        let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() { total.saturating_sub(1) } else { b.parse::<u64>().ok()?.min(total - 1) };
        Some((start, end))
    });
    let (status, body, extra) = match range {
        Some((start, _)) if start >= total => {
            let h = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(h.as_bytes()).await;
            return;
        }
        Some((start, end)) => (
            "206 Partial Content",
            &data[start as usize..=end as usize],
            format!("Content-Range: bytes {start}-{end}/{total}\r\n"),
        ),
        None => ("200 OK", &data[..], String::new()),
    };
    let h = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(h.as_bytes()).await.is_ok() {
        let _ = stream.write_all(body).await;
    }
}

/// What the node sent.
#[derive(Debug)]
enum Event {
    Msg(NodeMsg),
    Stderr(Vec<u8>),
    Output { file: u32, offset: u64, data: Vec<u8> },
}

struct Session {
    ws: Ws,
    heartbeat: tokio::time::Interval,
}

impl Session {
    async fn send(&mut self, msg: &ToNode) {
        self.ws.send(Message::text(serde_json::to_string(msg).unwrap())).await.unwrap();
    }

    async fn stdin(&mut self, job: u64, bytes: &[u8]) {
        self.ws.send(Message::binary(Frame::new(FrameKind::Stdin, job, 0, 0, bytes).encode())).await.unwrap();
    }

    /// The next thing the node sent; heartbeats to the node keep flowing meanwhile.
    async fn next(&mut self) -> Event {
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                msg = self.ws.next() => {
                    match msg.expect("the node closed the connection").expect("read error") {
                        Message::Text(t) => return Event::Msg(serde_json::from_str(&t).expect("a NodeMsg")),
                        Message::Binary(b) => {
                            let f = Frame::decode(&b).expect("a valid frame");
                            return match f.kind {
                                FrameKind::Stderr => Event::Stderr(f.payload.to_vec()),
                                FrameKind::Output => {
                                    Event::Output { file: f.id, offset: f.offset, data: f.payload.to_vec() }
                                }
                                k => panic!("the node sent a {k:?} frame"),
                            };
                        }
                        _ => {}
                    }
                }
                _ = self.heartbeat.tick() => self.send(&ToNode::Heartbeat).await,
                _ = &mut deadline => panic!("the node sent nothing for 60 s"),
            }
        }
    }

    /// The next event within `limit`, if any.
    async fn next_within(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, self.next()).await.ok()
    }

    /// Hello → Welcome; returns what Hello said.
    async fn handshake(&mut self) -> NodeMsg {
        let hello = match self.next().await {
            Event::Msg(m @ NodeMsg::Hello { .. }) => m,
            other => panic!("expected Hello first, got {other:?}"),
        };
        self.send(&ToNode::Welcome { node_id: 1, heartbeat_ms: 1000 }).await;
        hello
    }
}

// ---------------------------------------------------------------------------
// The node under test.

struct Node {
    child: Child,
}

impl Node {
    fn start(controller: &str, scratch: &Path, extra: &[&str]) -> Node {
        let child = Command::new(env!("CARGO_BIN_EXE_ffcluster-node"))
            .args(["--controller", controller, "--name", "test-node", "--slots", "1"])
            .arg("--scratch")
            .arg(scratch)
            .args(extra)
            .env("FFCLUSTER_TOKEN", TOKEN)
            .env("RUST_LOG", "ffcluster_node=debug")
            .env_remove("FFCLUSTER_NODE_FFMPEG")
            .env_remove("FFCLUSTER_NODE_PATH_MAP")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting ffcluster-node");
        Node { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's ffmpeg children (pids), from /proc.
    fn ffmpeg_children(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // "pid (comm) state ppid …": comm may hold spaces and parentheses.
            let Some(close) = stat.rfind(')') else { continue };
            let comm = &stat[stat.find('(').unwrap() + 1..close];
            let ppid: u32 = stat[close + 2..].split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            if ppid == self.pid() && comm.starts_with("ffmpeg") {
                out.push(pid);
            }
        }
        out
    }

    /// Whether the node's ffmpeg children are all gone within `limit`.
    async fn ffmpeg_gone(&self, limit: Duration) -> bool {
        wait_until(limit, || self.ffmpeg_children().is_empty()).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn job_dirs(scratch: &Path) -> Vec<String> {
    std::fs::read_dir(scratch)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// A received output file.
#[derive(Debug, Default)]
struct Received {
    path: String,
    mode: Option<WriteMode>,
    data: Vec<u8>,
    /// `Done`'s size.
    done: Option<u64>,
    /// Data frames that rewrote bytes already received (a muxer patching its header).
    rewrites: usize,
}

impl Received {
    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset as usize + bytes.len();
        if (offset as usize) < self.data.len() {
            self.rewrites += 1;
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(bytes);
    }
}

/// Everything the node sent for one job, until `Exited`.
#[derive(Debug, Default)]
struct JobLog {
    files: BTreeMap<u32, Received>,
    /// `Open` paths in order.
    opens: Vec<String>,
    /// Paths whose `Done` had arrived when each `Open` came (for order checks).
    done_before_open: Vec<Vec<String>>,
    stderr: Vec<u8>,
    exit: Option<RemoteExit>,
    refused: Option<String>,
}

impl JobLog {
    fn take(&mut self, job: u64, e: Event) {
        match e {
            Event::Msg(NodeMsg::Output { job: j, event }) => {
                assert_eq!(j, job);
                match event {
                    OutputEvent::Open { file, path, mode } => {
                        let done: Vec<String> =
                            self.files.values().filter(|f| f.done.is_some()).map(|f| f.path.clone()).collect();
                        self.done_before_open.push(done);
                        self.opens.push(path.clone());
                        let prev = self.files.insert(file, Received { path, mode: Some(mode), ..Default::default() });
                        assert!(prev.is_none(), "file id {file} opened twice");
                    }
                    OutputEvent::Done { file, size } => {
                        let f = self.files.get_mut(&file).expect("Done for a file never opened");
                        assert!(f.done.is_none(), "{} done twice", f.path);
                        assert_eq!(f.data.len() as u64, size, "{}: Done size differs from the bytes received", f.path);
                        f.done = Some(size);
                    }
                }
            }
            Event::Msg(NodeMsg::Exited { job: j, exit }) => {
                assert_eq!(j, job);
                self.exit = Some(exit);
            }
            Event::Msg(NodeMsg::Refused { job: j, reason }) => {
                assert_eq!(j, job);
                self.refused = Some(reason);
            }
            // Sent once after the welcome; its content is tested in tests/hardware.rs.
            Event::Msg(NodeMsg::Heartbeat { .. } | NodeMsg::Probes { .. }) => {}
            Event::Msg(m) => panic!("unexpected {m:?}"),
            Event::Stderr(b) => self.stderr.extend_from_slice(&b),
            Event::Output { file, offset, data } => {
                let f = self.files.get_mut(&file).expect("data for a file never opened");
                assert!(f.done.is_none(), "{}: data after Done", f.path);
                f.write(offset, &data);
            }
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

async fn collect_until_exit(s: &mut Session, job: u64, log: &mut JobLog) {
    while log.exit.is_none() && log.refused.is_none() {
        let e = s.next().await;
        log.take(job, e);
    }
}

/// Reads events until ffmpeg has printed progress.
async fn until_progress(s: &mut Session, job: u64, log: &mut JobLog) {
    while !log.stderr().contains("frame=") {
        let e = s.next().await;
        log.take(job, e);
        assert!(log.exit.is_none() && log.refused.is_none(), "ended early: {}", log.stderr());
    }
}

impl Session {
    /// Runs `spec` as `job`; everything the node sent for it until it exited or refused.
    async fn run(&mut self, job: u64, spec: JobSpec) -> JobLog {
        self.send(&ToNode::Run { job, spec }).await;
        let mut log = JobLog::default();
        collect_until_exit(self, job, &mut log).await;
        log
    }

    /// Starts [`slow_job`] as `job`; what the node sent until ffmpeg printed progress.
    async fn run_slow(&mut self, job: u64, access: &str) -> JobLog {
        self.send(&ToNode::Run { job, spec: slow_job(access) }).await;
        let mut log = JobLog::default();
        until_progress(self, job, &mut log).await;
        log
    }
}

impl JobLog {
    /// Asserts that ffmpeg exited with status 0.
    fn assert_clean_exit(&self) {
        assert_eq!(self.exit, Some(RemoteExit { code: Some(0), signal: None }), "stderr: {}", self.stderr());
    }

    /// The first output file (by id).
    fn first_file(&self) -> &Received {
        self.files.values().next().unwrap()
    }
}

/// A job with the shim's working folder `/orig`.
fn job_spec(command: &str, files: Vec<FileOffer>, access: &str) -> JobSpec {
    JobSpec { args: args(command), cwd: "/orig".into(), files, access: access.into(), light: false }
}

/// A long real-time job whose output is one growing file.
fn slow_job(access: &str) -> JobSpec {
    job_spec(
        "-re -f lavfi -i testsrc2=size=320x240:rate=25:duration=60 -c:v libx264 -preset ultrafast \
         -f mpegts /orig/dir/live.ts",
        Vec::new(),
        access,
    )
}

/// Asserts that the node's job folders in `scratch` are all gone within `limit`.
async fn assert_scratch_empties(scratch: &Path, limit: Duration) {
    assert!(wait_until(limit, || job_dirs(scratch).is_empty()).await, "{:?}", job_dirs(scratch));
}

/// Runs one test body, failing it if it hangs.
async fn limited(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("test took too long");
}

// ---------------------------------------------------------------------------
// One test's set-up.

/// A temporary folder for one test, once the real ffmpeg is known to be there.
fn test_dir() -> tempfile::TempDir {
    ffmpeg_works();
    tempfile::tempdir().unwrap()
}

/// The node under test connected to a fake controller, past the handshake.
/// Fields drop in this order: the session, the node, the controller, the
/// temporary folder.
struct Rig {
    s: Session,
    /// What the node's `Hello` said.
    hello: NodeMsg,
    node: Node,
    /// `<tmp>/scratch`, the node's scratch folder.
    scratch: PathBuf,
    ctl: FakeController,
    tmp: tempfile::TempDir,
}

impl Rig {
    /// Nothing on the relay, no extra node arguments.
    async fn start() -> Rig {
        Rig::start_in(test_dir(), HashMap::new(), &[]).await
    }

    /// In `tmp`, with the relay serving `files` and the node given `extra` arguments.
    async fn start_in(tmp: tempfile::TempDir, files: HashMap<String, PathBuf>, extra: &[&str]) -> Rig {
        let mut ctl = FakeController::start(files).await;
        let scratch = tmp.path().join("scratch");
        let node = Node::start(&ctl.base(), &scratch, extra);
        let mut s = ctl.accept().await;
        let hello = s.handshake().await;
        Rig { s, hello, node, scratch, ctl, tmp }
    }
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_transcode_publishes_segments_in_order() {
    limited(hls_transcode()).await;
}

async fn hls_transcode() {
    let tmp = test_dir();
    let clip = make_clip(tmp.path(), 4);
    let size = std::fs::metadata(&clip).unwrap().len();
    let files = HashMap::from([("/api/v1/files/cap-hls/0".to_owned(), clip.clone())]);
    let mut rig = Rig::start_in(tmp, files, &[]).await;

    let NodeMsg::Hello { protocol, name, slots, caps, .. } = rig.hello.clone() else { unreachable!() };
    assert_eq!(protocol, ffcluster::protocol::PROTOCOL_VERSION);
    assert_eq!(name, "test-node");
    assert_eq!(slots, 1);
    assert!(caps.encoders.contains("libx264"), "{caps:?}");
    assert!(caps.decoders.contains("h264"));
    assert!(caps.filters.contains("scale"));
    assert!(caps.speed > 0.0, "speed {}", caps.speed);
    assert!(caps.cpus >= 1);
    assert!(caps.ffmpeg_version.starts_with("ffmpeg version"));

    let spec = job_spec(
        "-i file:/media/movies/in.mkv -map 0:v:0 -map 0:a:0 -c:v libx264 -preset veryfast \
         -force_key_frames expr:gte(t,n_forced*1) -c:a aac -f hls -hls_time 1 -hls_segment_type mpegts \
         -hls_playlist_type vod -hls_list_size 0 -start_number 0 \
         -hls_segment_filename /orig/dir/abc%d.ts -y /orig/dir/abc.m3u8",
        vec![FileOffer { id: 0, reference: "/media/movies/in.mkv".into(), entry: None, size, stream: false }],
        "cap-hls",
    );
    let log = rig.s.run(7, spec).await;
    let stderr = log.stderr();
    assert_eq!(log.refused, None, "refused; stderr: {stderr}");
    log.assert_clean_exit();

    // Segments strictly in order, each once; the playlist only after what it
    // lists, and last.
    let segments: Vec<&String> = log.opens.iter().filter(|p| p.ends_with(".ts")).collect();
    assert!(segments.len() >= 4, "opens: {:?}", log.opens);
    for (i, p) in segments.iter().enumerate() {
        assert_eq!(**p, format!("/orig/dir/abc{i}.ts"), "opens: {:?}", log.opens);
    }
    assert_eq!(log.opens.last().map(String::as_str), Some("/orig/dir/abc.m3u8"), "opens: {:?}", log.opens);
    assert!(log.opens.iter().all(|p| p.ends_with(".ts") || p == "/orig/dir/abc.m3u8"), "{:?}", log.opens);
    for f in log.files.values() {
        assert_eq!(f.mode, Some(WriteMode::Atomic), "{}", f.path);
        assert!(f.done.is_some(), "{} never finished", f.path);
        if f.path.ends_with(".m3u8") {
            let text = String::from_utf8_lossy(&f.data);
            let k = log.opens.iter().position(|p| *p == f.path).unwrap();
            for seg in text.lines().filter(|l| l.ends_with(".ts")) {
                let seg = format!("/orig/dir/{seg}");
                assert!(log.done_before_open[k].contains(&seg), "playlist listed {seg} before it was published");
            }
        } else {
            assert!(!f.data.is_empty() && f.data.chunks(188).all(|p| p[0] == 0x47), "{} is not MPEG-TS", f.path);
        }
    }
    let last = log.files.values().rev().find(|f| f.path.ends_with(".m3u8")).unwrap();
    let playlist = String::from_utf8_lossy(&last.data).into_owned();
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    assert_eq!(playlist.lines().filter(|l| l.ends_with(".ts")).count(), segments.len(), "{playlist}");

    // ffmpeg's own messages, with the names the shim gave.
    assert!(stderr.contains("/orig/dir/abc"), "{stderr}");
    assert!(stderr.contains("file:/media/movies/in.mkv"), "{stderr}");
    assert!(!stderr.contains(rig.scratch.to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("/api/v1/files"), "{stderr}");

    // The result decodes.
    let out = rig.tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for f in log.files.values() {
        std::fs::write(out.join(f.path.rsplit('/').next().unwrap()), &f.data).unwrap();
    }
    let check = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(out.join("abc.m3u8"))
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(check.status.success() && check.stderr.is_empty(), "{}", String::from_utf8_lossy(&check.stderr));

    assert_scratch_empties(&rig.scratch, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_on_stdin_stops_the_job() {
    limited(q_on_stdin()).await;
}

async fn q_on_stdin() {
    let mut rig = Rig::start().await;
    let mut log = rig.s.run_slow(3, "cap-q").await;

    let asked = Instant::now();
    rig.s.stdin(3, b"q").await;
    collect_until_exit(&mut rig.s, 3, &mut log).await;
    assert!(asked.elapsed() < Duration::from_secs(5), "took {:?} to stop", asked.elapsed());
    log.assert_clean_exit();

    // The growing file was streamed in place and is whole.
    assert_eq!(log.opens, ["/orig/dir/live.ts"]);
    let f = log.first_file();
    assert_eq!(f.mode, Some(WriteMode::InPlace));
    assert!(f.done.is_some_and(|n| n > 0));
    assert!(f.data.chunks(188).all(|p| p[0] == 0x47), "not whole MPEG-TS packets");
    assert_scratch_empties(&rig.scratch, Duration::from_secs(5)).await;

    // SIGTERM: a clean exit.
    let pid = nix::unistd::Pid::from_raw(rig.node.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            status = rig.node.child.try_wait().unwrap();
            status.is_some()
        })
        .await
    );
    assert_eq!(status.unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_controller_kills_ffmpeg() {
    limited(losing_the_controller()).await;
}

async fn losing_the_controller() {
    let mut rig = Rig::start().await;
    rig.s.run_slow(5, "cap-lost").await;
    assert_eq!(rig.node.ffmpeg_children().len(), 1, "expected one ffmpeg child");
    assert_eq!(job_dirs(&rig.scratch), ["job-5"]);

    drop(rig.s);
    assert!(
        rig.node.ffmpeg_gone(Duration::from_secs(5)).await,
        "ffmpeg still running: {:?}",
        rig.node.ffmpeg_children()
    );
    assert_scratch_empties(&rig.scratch, Duration::from_secs(5)).await;
    assert!(rig.node.child.try_wait().unwrap().is_none(), "the node exited");

    // It comes back.
    let mut s = rig.ctl.accept().await;
    assert!(matches!(s.handshake().await, NodeMsg::Hello { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_controller_is_dropped() {
    limited(silent_controller()).await;
}

async fn silent_controller() {
    let mut rig = Rig::start().await;
    rig.s.run_slow(6, "cap-silent").await;

    // The socket stays open, but nothing is sent or read any more.
    let silent = Instant::now();
    assert!(
        rig.node.ffmpeg_gone(Duration::from_secs(6)).await,
        "ffmpeg still running {:?} after the controller went silent",
        silent.elapsed()
    );
    let gone = silent.elapsed();
    assert!(gone >= Duration::from_millis(2500), "killed after only {gone:?} of silence");
    assert_scratch_empties(&rig.scratch, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_and_cancel() {
    limited(signals_then_cancel()).await;
}

/// Starts a slow job, sends it `signal` and collects until it exits.
async fn signalled(s: &mut Session, job: u64, access: &str, signal: JobSignal) -> JobLog {
    let mut log = s.run_slow(job, access).await;
    s.send(&ToNode::Signal { job, signal }).await;
    collect_until_exit(s, job, &mut log).await;
    log
}

async fn signals_then_cancel() {
    let mut rig = Rig::start().await;

    // SIGINT: ffmpeg stops cleanly and says so with its own exit code.
    let log = signalled(&mut rig.s, 31, "cap-int", JobSignal::Interrupt).await;
    assert_eq!(log.exit, Some(RemoteExit { code: Some(255), signal: None }), "{}", log.stderr());
    assert!(log.files.values().all(|f| f.done.is_some()));

    // SIGKILL: reported as a death by signal.
    let log = signalled(&mut rig.s, 32, "cap-kill", JobSignal::Kill).await;
    assert_eq!(log.exit, Some(RemoteExit { code: None, signal: Some(9) }));

    // Cancel: ffmpeg and its scratch are gone, and nothing more comes for the job.
    rig.s.run_slow(33, "cap-cancel").await;
    rig.s.send(&ToNode::Cancel { job: 33 }).await;
    assert!(rig.node.ffmpeg_gone(Duration::from_secs(3)).await);
    assert_scratch_empties(&rig.scratch, Duration::from_secs(3)).await;
    let quiet = Instant::now() + Duration::from_millis(1500);
    while let Some(e) = rig.s.next_within(quiet.saturating_duration_since(Instant::now())).await {
        match e {
            Event::Msg(NodeMsg::Heartbeat { running }) => assert!(!running.contains(&33), "{running:?}"),
            Event::Msg(m @ (NodeMsg::Exited { .. } | NodeMsg::Refused { .. })) => panic!("after Cancel: {m:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_files_path_maps_and_refusals() {
    limited(side_files()).await;
}

async fn side_files() {
    let tmp = test_dir();
    // The input is on a "shared mount": /media on the shim is <tmp>/nas here.
    let nas = tmp.path().join("nas");
    std::fs::create_dir_all(&nas).unwrap();
    let clip = make_clip(&nas, 2);
    let size = std::fs::metadata(&clip).unwrap().len();
    let srt = tmp.path().join("a.srt");
    std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:02,000\nHello from the relay\n\n").unwrap();
    let srt_size = std::fs::metadata(&srt).unwrap().len();
    // Only the subtitle is on the relay: reading the input through it would fail.
    let files = HashMap::from([("/api/v1/files/cap-side/1".to_owned(), srt)]);
    let map = format!("/media={}", nas.display());
    let mut rig = Rig::start_in(tmp, files, &["--path-map", &map]).await;

    let offers = vec![
        FileOffer { id: 0, reference: "/media/in.mkv".into(), entry: None, size, stream: false },
        FileOffer { id: 1, reference: "/subs/a.srt".into(), entry: None, size: srt_size, stream: false },
    ];
    let spec = job_spec(
        "-re -i file:/media/in.mkv -vf subtitles=f=/subs/a.srt -c:v libx264 -preset ultrafast -g 10 -an \
         -t 1.5 -flush_packets 1 -y /orig/dir/out.mkv",
        offers.clone(),
        "cap-side",
    );
    let log = rig.s.run(41, spec).await;
    assert_eq!(log.refused, None);
    log.assert_clean_exit();
    assert!(!log.stderr().contains(rig.scratch.to_str().unwrap()), "{}", log.stderr());
    assert_eq!(log.opens, ["/orig/dir/out.mkv"]);
    let f = log.first_file();
    assert_eq!(f.mode, Some(WriteMode::InPlace));
    // Matroska rewrites its header at the end: the node must have sent it again.
    assert!(f.rewrites > 0, "the header rewrite never reached the shim");
    let out = rig.tmp.path().join("out.mkv");
    std::fs::write(&out, &f.data).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1"])
        .arg(&out)
        .output()
        .unwrap();
    let duration: f64 = String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap_or(0.0);
    assert!((1.4..1.7).contains(&duration), "duration {duration}: {}", String::from_utf8_lossy(&probe.stderr));

    // Refused: an output the node cannot send back.
    let spec =
        job_spec("-i file:/media/in.mkv -c:v libx264 -f flv rtmp://example.invalid/live", offers.clone(), "cap-side");
    let log = rig.s.run(42, spec).await;
    assert!(log.refused.as_deref().is_some_and(|r| r.contains("rtmp://")), "{:?}", log.refused);

    // Refused: a side file the relay does not have.
    let missing = FileOffer { id: 9, reference: "/subs/b.srt".into(), entry: None, size: 5, stream: false };
    let spec = job_spec(
        "-i file:/media/in.mkv -vf subtitles=/subs/b.srt -c:v libx264 -y /orig/dir/x.mkv",
        vec![offers[0].clone(), missing],
        "cap-side",
    );
    let log = rig.s.run(43, spec).await;
    assert!(log.refused.as_deref().is_some_and(|r| r.contains("404")), "{:?}", log.refused);
    assert!(log.opens.is_empty());

    // Standard output: one Stdout file, whole, before Exited.
    let spec = job_spec(
        "-i file:/media/in.mkv -t 1 -c:v libx264 -preset ultrafast -an -f mpegts pipe:1",
        vec![offers[0].clone()],
        "cap-side",
    );
    let log = rig.s.run(44, spec).await;
    log.assert_clean_exit();
    assert_eq!(log.opens, ["pipe:1"]);
    let f = log.first_file();
    assert_eq!(f.mode, Some(WriteMode::Stdout));
    assert!(f.done.is_some_and(|n| n > 10_000 && n % 188 == 0), "{:?}", f.done);
    assert_eq!(f.rewrites, 0);

    assert_scratch_empties(&rig.scratch, Duration::from_secs(5)).await;
}
