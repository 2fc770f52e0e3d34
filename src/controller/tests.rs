//! The controller in-process, with a fake node and fake shims speaking the
//! protocol over real sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::http_client::{self, HttpResponse, StatusError, fetch_status};
use super::status::{JobMode, JobState, NodeState, Status};
use super::{ControllerConfig, ControllerError, run};
use crate::ffmpeg::cmdline::CommandLine;
use crate::ffmpeg::decision::Needs;
use crate::plan::Chunk;
use crate::protocol::{
    Capabilities, FILES_PATH, FileOffer, Frame, FrameKind, JobId, JobRequest, JobSignal, JobSpec, NODE_PATH, NodeMsg,
    OutputEvent, PROTOCOL_VERSION, RemoteExit, SHIM_PATH, ShimMsg, ToNode, ToShim, WriteMode,
};
use crate::split::{self, Probe, SplitPlan};
use crate::tls::Trust;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const TOKEN: &str = "0123456789abcdef-test";
/// Longest wait for anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(2);

struct Controller {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ControllerError>>,
}

impl Controller {
    async fn start(config: ControllerConfig) -> Controller {
        let _ = tracing_subscriber::fmt().with_env_filter("ffcluster=debug").with_test_writer().try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, config, async {
            let _ = stopped.await;
        }));
        Controller { addr, stop, task }
    }

    async fn default() -> Controller {
        Controller::start(ControllerConfig::new(TOKEN)).await
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn connect(&self, path: &str, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
        let mut req = format!("ws://{}{path}", self.addr).into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
        }
        connect_async(req).await.map(|(ws, _)| ws)
    }

    /// A node that said hello and got its welcome.
    async fn node(&self, name: &str, slots: u32, encoders: &[&str]) -> Ws {
        let mut ws = self.connect(NODE_PATH, Some(TOKEN)).await.unwrap();
        send(&mut ws, &hello(name, slots, encoders, PROTOCOL_VERSION)).await;
        match node_recv(&mut ws).await {
            ToNode::Welcome { node_id, heartbeat_ms } => assert!(node_id > 0 && heartbeat_ms > 0),
            other => panic!("expected welcome, got {other:?}"),
        }
        ws
    }

    /// A shim that submitted `request`, and the controller's first answer.
    async fn shim(&self, request: JobRequest) -> (Ws, ToShim) {
        let mut ws = self.connect(SHIM_PATH, Some(TOKEN)).await.unwrap();
        send(&mut ws, &ShimMsg::Submit { request: Box::new(request) }).await;
        let first = recv_json(&mut ws).await;
        (ws, first)
    }

    async fn status(&self) -> Status {
        let base = self.base();
        tokio::task::spawn_blocking(move || fetch_status(&base, TOKEN, &Trust::default())).await.unwrap().unwrap()
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, http_client::HttpError> {
        let url = format!("{}{path}", self.base());
        let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            http_client::get(&url, &h, &Trust::default())
        })
        .await
        .unwrap()
    }

    async fn stop(self) {
        let started = Instant::now();
        let _ = self.stop.send(());
        let result = tokio::time::timeout(PROMPT, self.task).await.expect("run returns after shutdown");
        result.unwrap().unwrap();
        assert!(started.elapsed() < PROMPT);
    }
}

fn hello(name: &str, slots: u32, encoders: &[&str], protocol: u32) -> NodeMsg {
    NodeMsg::Hello {
        protocol,
        agent: "fake-node".into(),
        name: name.into(),
        slots,
        caps: Capabilities {
            ffmpeg_version: "ffmpeg version 5.1.9".into(),
            encoders: encoders.iter().map(|e| e.to_string()).collect(),
            cpus: 4,
            speed: 120.0,
            ..Default::default()
        },
    }
}

fn request(encoders: &[&str], files: Vec<FileOffer>) -> JobRequest {
    JobRequest {
        args: vec!["-i".into(), "/media/my film.mkv".into(), "-c:v".into(), "libx264".into(), "out.ts".into()],
        cwd: "/tmp/t".into(),
        files,
        needs: Needs { encoders: encoders.iter().map(|e| e.to_string()).collect(), ..Default::default() },
        reason: "whole.multiple_outputs".into(),
        split: None,
        not_split: None,
        resumed: None,
        priority: None,
    }
}

async fn send<T: Serialize>(ws: &mut Ws, msg: &T) {
    ws.send(Message::text(serde_json::to_string(msg).unwrap())).await.unwrap();
}

/// The next text or binary message (None when the connection closes).
async fn next(ws: &mut Ws) -> Option<Message> {
    let deadline = tokio::time::sleep(PROMPT);
    tokio::pin!(deadline);
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            () = &mut deadline => panic!("nothing received in time"),
        };
        match msg {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(m)) => return Some(m),
        }
    }
}

async fn recv_json<T: DeserializeOwned>(ws: &mut Ws) -> T {
    match next(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}")),
        other => panic!("expected a text message, got {other:?}"),
    }
}

async fn recv_binary(ws: &mut Ws) -> Vec<u8> {
    match next(ws).await {
        Some(Message::Binary(b)) => b.to_vec(),
        other => panic!("expected a binary message, got {other:?}"),
    }
}

/// The next message to a node that is not a heartbeat.
async fn node_recv(ws: &mut Ws) -> ToNode {
    loop {
        match recv_json(ws).await {
            ToNode::Heartbeat => {}
            m => return m,
        }
    }
}

async fn expect_closed(ws: &mut Ws) {
    loop {
        match next(ws).await {
            None => return,
            Some(Message::Text(t)) if t.contains("heartbeat") => {}
            Some(m) => panic!("expected the connection to close, got {m:?}"),
        }
    }
}

async fn run_msg(node: &mut Ws) -> (u64, JobSpec) {
    match node_recv(node).await {
        ToNode::Run { job, spec } => (job, spec),
        other => panic!("expected run, got {other:?}"),
    }
}

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(|i| (i % 251) as u8).collect()
}

/// Answers the shim's reads until `done` completes: each time no new read has
/// come for a moment, all pending ones at once. Returns `done`'s result, the reads
/// in the order asked, and the most that were in flight together.
async fn serve_reads<T>(shim: &mut Ws, mut done: JoinHandle<T>) -> (T, Vec<(u64, u32)>, usize) {
    let (mut reads, mut pending, mut most) = (Vec::new(), Vec::new(), 0);
    loop {
        tokio::select! {
            r = &mut done => return (r.unwrap(), reads, most),
            m = tokio::time::timeout(Duration::from_millis(30), next(shim)) => match m {
                Ok(Some(Message::Text(t))) => match serde_json::from_str(&t).unwrap() {
                    ToShim::Read { req, file, offset, len } => {
                        assert_eq!(file, 0);
                        assert!(len as usize <= crate::protocol::MAX_FRAME_PAYLOAD);
                        reads.push((offset, len));
                        pending.push((req, offset, len));
                    }
                    other => panic!("expected a read, got {other:?}"),
                },
                Ok(other) => panic!("expected a read, got {other:?}"),
                Err(_) => {
                    most = most.max(pending.len());
                    for (req, offset, len) in pending.drain(..) {
                        let data = pattern(offset, len as usize);
                        let frame = Frame::new(FrameKind::ReadData, 0, req, 0, &data).encode();
                        shim.send(Message::binary(frame)).await.unwrap();
                    }
                }
            }
        }
    }
}

/// True when `reads` cover `start..end` exactly, in order.
fn contiguous(reads: &[(u64, u32)], start: u64, end: u64) -> bool {
    let mut at = start;
    for (offset, len) in reads {
        if *offset != at {
            return false;
        }
        at += u64::from(*len);
    }
    at == end
}

#[tokio::test]
async fn a_job_runs_on_a_node_end_to_end() {
    let c = Controller::default().await;
    let mut node = c.node("n1", 2, &["libx264"]).await;

    let doc = c.status().await;
    assert_eq!(doc.nodes.len(), 1);
    let n = &doc.nodes[0];
    assert_eq!((n.name.as_str(), n.state, n.slots, n.running, n.cpus), ("n1", NodeState::Ready, 2, 0, 4));
    assert_eq!(n.ffmpeg_version, "ffmpeg version 5.1.9");
    assert!(n.address.starts_with("127.0.0.1:"));

    const SIZE: u64 = 2_000_000;
    let offer = FileOffer { id: 0, reference: "/media/my film.mkv".into(), entry: None, size: SIZE, stream: false };
    let (mut shim, first) = c.shim(request(&["libx264"], vec![offer.clone()])).await;
    assert_eq!(first, ToShim::Accepted { job: 1, node: "n1".into(), audio: false });
    let (job, spec) = run_msg(&mut node).await;
    assert_eq!(job, 1);
    assert_eq!((spec.cwd.as_str(), spec.files.as_slice()), ("/tmp/t", &[offer][..]));
    assert_eq!(spec.args[1], "/media/my film.mkv");
    assert_eq!(spec.access.len(), 64);
    let file_path = format!("{FILES_PATH}/{}/0", spec.access);
    let get = |range: &'static str| {
        let url = format!("{}{file_path}", c.base());
        tokio::task::spawn_blocking(move || http_client::get(&url, &[("Range", range)], &Trust::default()).unwrap())
    };

    // A range read: small reads first, then up to four full frames in flight.
    let (r, reads, most) = serve_reads(&mut shim, get("bytes=100-")).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-1999999/2000000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.body == pattern(100, (SIZE - 100) as usize), "body differs");
    assert!(contiguous(&reads, 100, SIZE), "{reads:?}");
    assert_eq!(reads[0], (100, 32 << 10));
    assert_eq!(most, 4, "{reads:?}");

    // Suffix range, and the errors.
    let (r, reads, _) = serve_reads(&mut shim, get("bytes=-10")).await;
    assert_eq!((r.status, r.body, reads), (206, pattern(SIZE - 10, 10), vec![(SIZE - 10, 10)]));
    let r = c.get(&file_path, &[("Range", "bytes=2000000-")]).await.unwrap();
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */2000000")));
    // Nodes add the input's extension to the id for ffmpeg's format guess.
    let r = c.get(&format!("{file_path}.mkv"), &[("Range", "bytes=2000000-")]).await.unwrap();
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */2000000")));
    assert_eq!(c.get(&format!("{FILES_PATH}/{}/1.mkv", spec.access), &[]).await.unwrap().status, 404);
    assert_eq!(c.get(&format!("{FILES_PATH}/{}/1", spec.access), &[]).await.unwrap().status, 404);
    assert_eq!(c.get(&format!("{FILES_PATH}/{}0/0", &spec.access[1..]), &[]).await.unwrap().status, 404);

    // HEAD: the length without asking the shim for anything.
    let mut tcp = TcpStream::connect(c.addr).await.unwrap();
    let head = format!("HEAD {file_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("content-length: 2000000\r\n"), "{raw}");
    assert!(raw.ends_with("\r\n\r\n"), "{raw}");

    // Shim → node: signal and stdin, renumbered with the job.
    send(&mut shim, &ShimMsg::Signal { signal: JobSignal::Interrupt }).await;
    shim.send(Message::binary(Frame::new(FrameKind::Stdin, 0, 0, 0, b"q").encode())).await.unwrap();
    assert_eq!(node_recv(&mut node).await, ToNode::Signal { job: 1, signal: JobSignal::Interrupt });
    let stdin = recv_binary(&mut node).await;
    assert_eq!(Frame::decode(&stdin).unwrap(), Frame::new(FrameKind::Stdin, 1, 0, 0, b"q"));

    // Node → shim: text and binary interleaved arrive in order, renumbered to 0;
    // nothing for another job gets through.
    let open = OutputEvent::Open { file: 0, path: "/tmp/t/out.ts".into(), mode: WriteMode::InPlace };
    let done = OutputEvent::Done { file: 0, size: 3 };
    let exit = RemoteExit { code: Some(0), signal: None };
    send(&mut node, &NodeMsg::Output { job: 1, event: open.clone() }).await;
    node.send(Message::binary(Frame::new(FrameKind::Output, 1, 0, 0, b"abc").encode())).await.unwrap();
    node.send(Message::binary(Frame::new(FrameKind::Stderr, 99, 0, 0, b"not yours").encode())).await.unwrap();
    send(&mut node, &NodeMsg::Output { job: 99, event: done.clone() }).await;
    node.send(Message::binary(Frame::new(FrameKind::Stderr, 1, 0, 0, b"frame=1").encode())).await.unwrap();
    send(&mut node, &NodeMsg::Output { job: 1, event: done.clone() }).await;
    send(&mut node, &NodeMsg::Exited { job: 1, exit }).await;

    assert_eq!(recv_json::<ToShim>(&mut shim).await, ToShim::Output { event: open });
    let f = recv_binary(&mut shim).await;
    assert_eq!(Frame::decode(&f).unwrap(), Frame::new(FrameKind::Output, 0, 0, 0, b"abc"));
    let f = recv_binary(&mut shim).await;
    assert_eq!(Frame::decode(&f).unwrap(), Frame::new(FrameKind::Stderr, 0, 0, 0, b"frame=1"));
    assert_eq!(recv_json::<ToShim>(&mut shim).await, ToShim::Output { event: done });
    assert_eq!(recv_json::<ToShim>(&mut shim).await, ToShim::Exited { exit });
    expect_closed(&mut shim).await;

    let doc = c.status().await;
    let j = &doc.jobs[0];
    assert_eq!((j.id, j.state, j.exit_code, j.node.as_deref()), (1, JobState::Done, Some(0), Some("n1")));
    assert_eq!(j.args, "-i '/media/my film.mkv' -c:v libx264 out.ts");
    assert_eq!(doc.nodes[0].running, 0);
    // The capability died with the job.
    assert_eq!(c.get(&file_path, &[]).await.unwrap().status, 404);
    c.stop().await;
}

#[tokio::test]
async fn a_relayed_stream_is_served_forward_chunked_and_cut_when_the_origin_breaks() {
    let c = Controller::default().await;
    let mut node = c.node("n1", 2, &["libx264"]).await;
    let url = "http://localhost:8096/LiveTv/LiveStreamFiles/ab/stream.ts";
    let offer = FileOffer { id: 0, reference: url.into(), entry: None, size: 0, stream: true };
    let (mut shim, _) = c.shim(request(&["libx264"], vec![offer])).await;
    let (_, spec) = run_msg(&mut node).await;
    let file_path = format!("{FILES_PATH}/{}/0.ts", spec.access);
    let get = |range: Option<&'static str>| {
        let url = format!("{}{file_path}", c.base());
        let headers: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        tokio::task::spawn_blocking(move || http_client::get(&url, &headers, &Trust::default()))
    };
    // The shim answers each read with what it has: pieces of any size, then
    // an empty answer at the origin's end, or a failure when it broke.
    async fn answer(shim: &mut Ws, pieces: &[&[u8]], end: Option<&str>) -> Vec<u64> {
        let mut offsets = Vec::new();
        for i in 0..=pieces.len() {
            let ToShim::Read { req, file: 0, offset, len } = recv_json(shim).await else { panic!("expected a read") };
            assert_eq!(len as usize, crate::protocol::MAX_FRAME_PAYLOAD);
            offsets.push(offset);
            let msg = match (pieces.get(i), end) {
                (Some(p), _) => Message::binary(Frame::new(FrameKind::ReadData, 0, req, offset, p).encode()),
                (None, None) => Message::binary(Frame::new(FrameKind::ReadData, 0, req, offset, b"").encode()),
                (None, Some(e)) => {
                    Message::text(serde_json::to_string(&ShimMsg::ReadFailed { req, error: e.into() }).unwrap())
                }
            };
            shim.send(msg).await.unwrap();
        }
        offsets
    }

    // ffmpeg asks for `bytes=0-`: the stream from its start, with no length.
    let response = get(Some("bytes=0-"));
    assert_eq!(answer(&mut shim, &[b"abc", b"defg"], None).await, [0, 3, 7]);
    let r = response.await.unwrap().unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abcdefg"[..]));
    assert_eq!(r.header("accept-ranges"), Some("none"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);

    // A broken origin cuts the body short, as the origin's own would be.
    let response = get(None);
    assert_eq!(answer(&mut shim, &[b"abc"], Some("connection reset")).await, [0, 3]);
    assert!(response.await.unwrap().is_err(), "a cut body must not look complete");

    // A stream cannot be entered in the middle.
    let r = c.get(&file_path, &[("Range", "bytes=5-")]).await.unwrap();
    assert_eq!((r.status, r.header("accept-ranges")), (416, Some("none")));
}

#[tokio::test]
async fn wrong_or_missing_token_is_refused() {
    let c = Controller::default().await;
    for path in [NODE_PATH, SHIM_PATH] {
        for token in [Some("wrong"), None] {
            match c.connect(path, token).await {
                Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
                other => panic!("{path} with {token:?}: {other:?}"),
            }
        }
    }
    let base = c.base();
    let err = tokio::task::spawn_blocking(move || fetch_status(&base, "wrong", &Trust::default())).await.unwrap();
    assert!(matches!(err, Err(StatusError::Unauthorized)), "{err:?}");
    let r = c.get("/healthz", &[]).await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    c.stop().await;
}

#[tokio::test]
async fn a_silent_node_is_dropped_and_its_job_fails() {
    let mut config = ControllerConfig::new(TOKEN);
    config.heartbeat_interval = Duration::from_millis(100);
    config.dead_after = Duration::from_millis(400);
    let dead_after = config.dead_after;
    let c = Controller::start(config).await;
    let mut node = c.node("n1", 1, &[]).await;
    let (mut shim, first) = c.shim(request(&[], vec![])).await;
    assert!(matches!(first, ToShim::Accepted { job: 1, .. }));
    run_msg(&mut node).await;
    let silent_since = Instant::now();
    // The node now says nothing (and reads nothing).
    let failed = recv_json::<ToShim>(&mut shim).await;
    assert_eq!(failed, ToShim::Failed { reason: "node n1 lost".into() });
    let noticed = silent_since.elapsed();
    assert!(noticed >= dead_after && noticed < dead_after + Duration::from_secs(1), "{noticed:?}");
    expect_closed(&mut shim).await;
    let doc = c.status().await;
    assert!(doc.nodes.is_empty());
    assert_eq!((doc.jobs[0].state, doc.jobs[0].error.as_deref()), (JobState::Failed, Some("node n1 lost")));
    expect_closed(&mut node).await;
    c.stop().await;
}

#[tokio::test]
async fn a_closed_node_socket_fails_its_job_at_once() {
    let c = Controller::default().await;
    let mut node = c.node("n1", 1, &[]).await;
    let (mut shim, _) = c.shim(request(&[], vec![])).await;
    run_msg(&mut node).await;
    let t = Instant::now();
    drop(node);
    assert_eq!(recv_json::<ToShim>(&mut shim).await, ToShim::Failed { reason: "node n1 lost".into() });
    assert!(t.elapsed() < Duration::from_millis(500));
    c.stop().await;
}

#[tokio::test]
async fn a_vanished_shim_cancels_its_job() {
    let c = Controller::default().await;
    let mut node = c.node("n1", 1, &[]).await;
    let offer = FileOffer { id: 0, reference: "a".into(), entry: None, size: 1 << 20, stream: false };
    let (shim, _) = c.shim(request(&[], vec![offer])).await;
    let (job, spec) = run_msg(&mut node).await;

    // A read in flight when the shim dies fails instead of hanging.
    let get = {
        let url = format!("{}{FILES_PATH}/{}/0", c.base(), spec.access);
        tokio::task::spawn_blocking(move || http_client::get(&url, &[], &Trust::default()))
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    drop(shim); // as SIGKILL does: no close frame
    assert_eq!(node_recv(&mut node).await, ToNode::Cancel { job });
    assert!(t.elapsed() < Duration::from_millis(500));
    let r = get.await.unwrap();
    assert!(r.is_err(), "a cut body must not look complete: {r:?}");

    let doc = c.status().await;
    assert_eq!(doc.jobs[0].state, JobState::Cancelled);
    assert_eq!(doc.nodes[0].running, 0);
    let r = c.get(&format!("{FILES_PATH}/{}/0", spec.access), &[]).await.unwrap();
    assert_eq!(r.status, 404);
    // Output for the cancelled job goes nowhere; the node stays connected.
    send(&mut node, &NodeMsg::Exited { job, exit: RemoteExit { code: None, signal: Some(9) } }).await;
    send(&mut node, &NodeMsg::Heartbeat { running: vec![] }).await;
    assert_eq!(c.status().await.nodes.len(), 1);
    c.stop().await;
}

#[tokio::test]
async fn jobs_are_rejected_with_a_reason() {
    let c = Controller::default().await;
    let (_, r) = c.shim(request(&[], vec![])).await;
    assert_eq!(r, ToShim::Rejected { reason: "no nodes connected".into() });

    let mut node = c.node("cpu", 1, &["libx264"]).await;
    let (mut shim, r) = c.shim(request(&["h264_nvenc"], vec![])).await;
    assert_eq!(r, ToShim::Rejected { reason: "no node has encoder h264_nvenc".into() });
    expect_closed(&mut shim).await;

    let (mut busy, r) = c.shim(request(&["libx264"], vec![])).await;
    assert!(matches!(r, ToShim::Accepted { .. }));
    let (job, _) = run_msg(&mut node).await;
    let (_, r) = c.shim(request(&["libx264"], vec![])).await;
    assert_eq!(r, ToShim::Rejected { reason: "all 1 capable nodes are busy".into() });

    // A refusal fails the job and frees the slot.
    send(&mut node, &NodeMsg::Refused { job, reason: "no scratch space".into() }).await;
    assert_eq!(recv_json::<ToShim>(&mut busy).await, ToShim::Failed { reason: "no scratch space".into() });
    let (_, r) = c.shim(request(&["libx264"], vec![])).await;
    assert!(matches!(r, ToShim::Accepted { .. }), "{r:?}");
    c.stop().await;
}

#[tokio::test]
async fn a_node_speaking_another_protocol_is_told_goodbye() {
    let c = Controller::default().await;
    let mut ws = c.connect(NODE_PATH, Some(TOKEN)).await.unwrap();
    send(&mut ws, &hello("old", 1, &[], PROTOCOL_VERSION + 1)).await;
    match recv_json::<ToNode>(&mut ws).await {
        ToNode::Goodbye { reason } => assert!(reason.contains("protocol version 2"), "{reason}"),
        other => panic!("expected goodbye, got {other:?}"),
    }
    expect_closed(&mut ws).await;
    assert!(c.status().await.nodes.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_link() {
    let c = Controller::default().await;
    let mut node = c.node("n1", 1, &[]).await;
    let (mut shim, _) = c.shim(request(&[], vec![])).await;
    run_msg(&mut node).await;
    c.stop().await;
    while next(&mut node).await.is_some() {}
    while next(&mut shim).await.is_some() {}
}

#[tokio::test]
async fn no_token_no_controller() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = run(listener, ControllerConfig::new(" "), async {}).await;
    assert!(matches!(r, Err(ControllerError::NoToken)));
}

/// A split job: an HLS transcode of 20 s of 25 fps video on a 3 s grid, planned
/// as the shim plans it.
fn split_request() -> (JobRequest, SplitPlan) {
    let args: Vec<&str> = "-i /media/in.mkv -map 0:0 -c:v libx264 -preset veryfast \
         -force_key_frames expr:gte(t,n_forced*3) -f hls -hls_time 3 -hls_playlist_type vod \
         -hls_segment_filename /tmp/t/x%d.ts /tmp/t/x.m3u8"
        .split_whitespace()
        .collect();
    let probe = Probe::from_json(
        r#"{"streams":[{"index":0,"codec_type":"video","r_frame_rate":"25/1","avg_frame_rate":"25/1",
            "start_time":"0.000000","disposition":{"attached_pic":0}}],
            "format":{"start_time":"0.000000","duration":"20.000000"}}"#,
    )
    .unwrap()
    .assume_first_pictures();
    let mut plan = split::split(&CommandLine::parse(&args).unwrap(), &probe).unwrap().plan;
    // The fake nodes cannot know how many frames a chunk holds: verification
    // then checks only the stream's structure.
    plan.recipe.frame_duration = None;
    let offer = FileOffer { id: 0, reference: "/media/in.mkv".into(), entry: None, size: 1 << 20, stream: false };
    let request = JobRequest {
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: "/tmp/t".into(),
        files: vec![offer],
        needs: Needs { encoders: ["libx264".to_owned()].into(), ..Default::default() },
        reason: "split.hls".into(),
        split: Some(plan.clone()),
        not_split: None,
        resumed: None,
        priority: None,
    };
    (request, plan)
}

/// What a fake node writes for attempt `job`: MPEG-TS, distinct per attempt,
/// three frames (its ffmpeg's stderr says `frame=3`).
fn chunk_payload(job: JobId) -> Vec<u8> {
    ts(format!("attempt {job}").as_bytes())
}

/// A few valid MPEG-TS packets carrying `tag`.
fn ts(tag: &[u8]) -> Vec<u8> {
    split::mpegts::tests::stream(3, tag)
}

async fn send_frame(ws: &mut Ws, frame: Frame<'_>) {
    ws.send(Message::binary(frame.encode())).await.unwrap();
}

/// A node that runs each chunk it is given at once, as the real agent streams
/// `pipe:1`: Open, stderr and output frames, Done, Exited. Returns the runs it
/// got once the controller closes the connection.
async fn chunk_node(mut ws: Ws) -> Vec<(JobId, JobSpec)> {
    let mut runs = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        match serde_json::from_str::<ToNode>(&text).unwrap() {
            ToNode::Run { job, spec } => {
                let data = chunk_payload(job);
                let (a, b) = data.split_at(data.len() / 2);
                let open = OutputEvent::Open { file: 0, path: "pipe:1".into(), mode: WriteMode::Stdout };
                send(&mut ws, &NodeMsg::Output { job, event: open }).await;
                send_frame(&mut ws, Frame::new(FrameKind::Stderr, job, 0, 0, b"frame=3 fps=99")).await;
                send_frame(&mut ws, Frame::new(FrameKind::Output, job, 0, 0, a)).await;
                send_frame(&mut ws, Frame::new(FrameKind::Output, job, 0, a.len() as u64, b)).await;
                let done = OutputEvent::Done { file: 0, size: data.len() as u64 };
                send(&mut ws, &NodeMsg::Output { job, event: done }).await;
                send(&mut ws, &NodeMsg::Exited { job, exit: RemoteExit { code: Some(0), signal: None } }).await;
                runs.push((job, spec));
            }
            ToNode::Heartbeat => send(&mut ws, &NodeMsg::Heartbeat { running: vec![] }).await,
            ToNode::Cancel { .. } => {}
            other => panic!("unexpected message to a node: {other:?}"),
        }
    }
    runs
}

/// A chunk as the shim learnt it from `ChunkStarted`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Started {
    chunk: u32,
    start: f64,
    end: f64,
    last: bool,
}

#[tokio::test]
async fn a_split_job_runs_its_chunks_across_nodes_end_to_end() {
    let c = Controller::default().await;
    let n1 = tokio::spawn(chunk_node(c.node("n1", 1, &["libx264"]).await));
    let n2 = tokio::spawn(chunk_node(c.node("n2", 1, &["libx264"]).await));
    let (request, plan) = split_request();
    let (mut shim, first) = c.shim(request.clone()).await;
    let ToShim::Accepted { job, node, .. } = first else { panic!("expected accepted, got {first:?}") };
    assert_eq!(node, "split");

    // The shim's view: every attempt announced before its bytes, bytes in order
    // and re-tagged (job = attempt, id = chunk), each chunk done once.
    let mut started: BTreeMap<JobId, Started> = BTreeMap::new();
    let mut bytes: BTreeMap<JobId, Vec<u8>> = BTreeMap::new();
    let mut done: BTreeMap<u32, JobId> = BTreeMap::new();
    let mut void: BTreeSet<JobId> = BTreeSet::new();
    let mut last = None;
    while !last.is_some_and(|l| (0..=l).all(|i| done.contains_key(&i))) {
        match next(&mut shim).await {
            Some(Message::Text(t)) => match serde_json::from_str::<ToShim>(&t).unwrap() {
                ToShim::ChunkStarted { chunk, attempt, node, start, end, last: is_last } => {
                    assert!(node == "n1" || node == "n2", "{node}");
                    let s = Started { chunk, start, end, last: is_last };
                    assert!(started.insert(attempt, s).is_none(), "attempt {attempt} started twice");
                    if is_last {
                        last = Some(chunk);
                    }
                }
                ToShim::ChunkDone { chunk, attempt, size } => {
                    assert_eq!(started[&attempt].chunk, chunk);
                    let got = bytes.remove(&attempt).unwrap_or_default();
                    assert!(got == chunk_payload(attempt), "chunk {chunk}: bytes differ");
                    assert_eq!(size, got.len() as u64);
                    assert!(done.insert(chunk, attempt).is_none(), "chunk {chunk} done twice");
                }
                // A slow test machine may see a chunk re-issued; the loser is void.
                ToShim::ChunkFailed { attempt, reason, .. } => {
                    assert_eq!(reason, "superseded");
                    void.insert(attempt);
                }
                other => panic!("unexpected message to the shim: {other:?}"),
            },
            Some(Message::Binary(b)) => {
                let f = Frame::decode(&b).unwrap();
                assert_eq!(f.kind, FrameKind::Output, "stderr of chunks stays with the controller");
                let s = started.get(&f.job).expect("ChunkStarted comes before the attempt's bytes");
                assert_eq!(f.id, s.chunk);
                assert!(!void.contains(&f.job), "bytes after the attempt was void");
                let have = bytes.entry(f.job).or_default();
                assert_eq!(f.offset, have.len() as u64);
                have.extend_from_slice(f.payload);
            }
            other => panic!("the shim's connection ended before the job was complete: {other:?}"),
        }
    }

    // The chunks cover the plan's timeline exactly, in order, and each ran the
    // recipe's command line for its bounds.
    let chunks: Vec<Started> = done.values().map(|a| started[a]).collect();
    assert!(chunks.len() >= 4, "{chunks:?}");
    assert_eq!(chunks[0].start, plan.start);
    assert!((chunks.last().unwrap().end - plan.end).abs() < 1e-6, "{chunks:?}");
    for (i, w) in chunks.windows(2).enumerate() {
        assert_eq!(w[0].end, w[1].start, "chunk {i}");
        assert!(!w[0].last);
    }

    let doc = c.status().await;
    let j = &doc.jobs[0];
    assert_eq!(
        (j.id, j.mode, j.state, j.exit_code, j.node.as_deref()),
        (job, JobMode::Split, JobState::Done, Some(0), None)
    );
    let planned = u32::try_from(chunks.len()).unwrap();
    assert_eq!((j.chunks_done, j.chunks_planned, j.chunks_running), (Some(planned), Some(planned), Some(0)));
    assert_eq!(j.nodes.as_deref(), Some(&["n1".to_owned(), "n2".to_owned()][..]));
    assert!(doc.nodes.iter().all(|n| n.running == 0));

    // The shim closes once its finisher is done: the job stays done.
    drop(shim);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.status().await.jobs[0].state, JobState::Done);

    c.stop().await;
    let runs: Vec<(JobId, JobSpec)> = [n1.await.unwrap(), n2.await.unwrap()].concat();
    assert_eq!(runs.len(), started.len());
    for (attempt, spec) in &runs {
        let s = started[attempt];
        let chunk = Chunk { index: s.chunk as usize, start: s.start, end: s.end, first_segment: 0 };
        assert_eq!(spec.args, plan.recipe.args(&chunk, s.chunk == 0, s.last));
        assert!(spec.args.windows(2).any(|w| w == ["-f", "mpegts"]), "{:?}", spec.args);
        assert_eq!(spec.args.last().map(String::as_str), Some("pipe:1"));
        assert_eq!((spec.cwd.as_str(), &spec.files), (request.cwd.as_str(), &request.files));
        assert_eq!(spec.access, runs[0].1.access, "attempts share the job's capability");
    }
}

#[tokio::test]
async fn a_chunk_of_a_lost_node_runs_again_on_another() {
    let c = Controller::default().await;
    let mut n1 = c.node("n1", 1, &["libx264"]).await;
    let mut n2 = c.node("n2", 1, &["libx264"]).await;
    let (request, _) = split_request();
    let (mut shim, first) = c.shim(request).await;
    assert!(matches!(first, ToShim::Accepted { .. }), "{first:?}");

    // Chunk 0 to the older node, chunk 1 to the other.
    let (a0, spec0) = run_msg(&mut n1).await;
    let (b1, _) = run_msg(&mut n2).await;
    let chunk0 = match recv_json::<ToShim>(&mut shim).await {
        ToShim::ChunkStarted { chunk: 0, attempt, node, start, end, last: false } if attempt == a0 && node == "n1" => {
            (start, end)
        }
        other => panic!("{other:?}"),
    };
    assert!(matches!(recv_json(&mut shim).await, ToShim::ChunkStarted { chunk: 1, attempt, .. } if attempt == b1));

    // n1 dies part-way through chunk 0.
    let open = OutputEvent::Open { file: 0, path: "pipe:1".into(), mode: WriteMode::Stdout };
    send(&mut n1, &NodeMsg::Output { job: a0, event: open.clone() }).await;
    let half = ts(b"half");
    send_frame(&mut n1, Frame::new(FrameKind::Output, a0, 0, 0, &half)).await;
    let f = recv_binary(&mut shim).await;
    assert_eq!(Frame::decode(&f).unwrap(), Frame::new(FrameKind::Output, a0, 0, 0, &half));
    drop(n1);
    assert_eq!(
        recv_json::<ToShim>(&mut shim).await,
        ToShim::ChunkFailed { chunk: 0, attempt: a0, reason: "node n1 lost".into() }
    );

    // n2 finishes chunk 1; then, before anything later, it re-runs chunk 0 with
    // the same bounds and the same command line.
    send(&mut n2, &NodeMsg::Output { job: b1, event: open }).await;
    let one = ts(b"one");
    send_frame(&mut n2, Frame::new(FrameKind::Output, b1, 0, 0, &one)).await;
    let size = one.len() as u64;
    send(&mut n2, &NodeMsg::Output { job: b1, event: OutputEvent::Done { file: 0, size } }).await;
    send(&mut n2, &NodeMsg::Exited { job: b1, exit: RemoteExit { code: Some(0), signal: None } }).await;
    let f = recv_binary(&mut shim).await;
    assert_eq!(Frame::decode(&f).unwrap(), Frame::new(FrameKind::Output, b1, 1, 0, &one));
    assert_eq!(recv_json::<ToShim>(&mut shim).await, ToShim::ChunkDone { chunk: 1, attempt: b1, size });
    let (c0, spec) = run_msg(&mut n2).await;
    assert_eq!(spec.args, spec0.args);
    match recv_json::<ToShim>(&mut shim).await {
        ToShim::ChunkStarted { chunk: 0, attempt, node, start, end, last: false } => {
            assert_eq!((attempt, node.as_str(), (start, end)), (c0, "n2", chunk0));
        }
        other => panic!("{other:?}"),
    }
    let doc = c.status().await;
    assert_eq!(
        (doc.jobs[0].state, doc.jobs[0].chunks_done, doc.jobs[0].chunks_running),
        (JobState::Running, Some(1), Some(1))
    );

    // The shim goes before the job is complete: the running attempt is cancelled.
    drop(shim);
    assert_eq!(node_recv(&mut n2).await, ToNode::Cancel { job: c0 });
    let doc = c.status().await;
    assert_eq!((doc.jobs[0].mode, doc.jobs[0].state), (JobMode::Split, JobState::Cancelled));
    assert_eq!(doc.nodes[0].running, 0);
    c.stop().await;
}

#[tokio::test]
async fn a_split_job_no_node_can_run_is_rejected() {
    let c = Controller::default().await;
    let _node = c.node("n1", 1, &["h264_nvenc"]).await;
    let (request, _) = split_request();
    let (mut shim, r) = c.shim(request).await;
    assert_eq!(r, ToShim::Rejected { reason: "no node has encoder libx264".into() });
    expect_closed(&mut shim).await;
    c.stop().await;
}
