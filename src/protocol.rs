//! The wire protocol between the shim, the controller and the node agents.
//!
//! Everything travels over one WebSocket per peer, opened by the peer towards the
//! controller (nodes and shims may sit behind NAT or in Docker; only the
//! controller's port has to be reachable):
//!
//! * `GET /api/v1/node`: a node agent, for as long as it runs.
//! * `GET /api/v1/shim`: one shim, for the life of one job.
//!
//! Both authenticate with `Authorization: Bearer <token>` on the upgrade request.
//! Control messages are JSON in text frames ([`NodeMsg`], [`ToNode`], [`ShimMsg`],
//! [`ToShim`]); bulk bytes (stderr, output files, stdin, input reads) are binary
//! frames with a fixed header ([`Frame`]) so that media never goes through JSON.
//!
//! Nodes read a job's input files over plain HTTP from the controller at
//! `GET /api/v1/files/{access}/{file}` with byte ranges: `access` is an
//! unguessable per-job capability that dies with the job, and the controller
//! answers each range by asking the shim, which owns the files, for the bytes.
//!
//! This module is pure data and encoding: no IO, no async runtime.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ffmpeg::decision::Needs;

/// Bumped on any incompatible change; peers with another version are refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket endpoint for node agents.
pub const NODE_PATH: &str = "/api/v1/node";
/// WebSocket endpoint for shims (one connection per job).
pub const SHIM_PATH: &str = "/api/v1/shim";
/// JSON status document.
pub const STATUS_PATH: &str = "/api/v1/status";
/// Prefix of the input relay: `{FILES_PATH}/{access}/{file}`.
pub const FILES_PATH: &str = "/api/v1/files";
/// Capability probe answers from a node's real ffmpeg:
/// `GET {PROBES_PATH}?arg=-h&arg=filter%3Dscale_cuda` ([`probe_query`]). The body
/// is the probe's stdout then its stderr; the headers below give the split, the
/// exit code and the node. 404 when no node has an answer for that argv.
pub const PROBES_PATH: &str = "/api/v1/probes";
/// Header of a probe answer: the exit code.
pub const PROBE_CODE_HEADER: &str = "x-ffcluster-exit-code";
/// Header of a probe answer: how many leading body bytes are stdout.
pub const PROBE_STDOUT_HEADER: &str = "x-ffcluster-stdout-bytes";
/// Header of a probe answer: the node whose ffmpeg answered.
pub const PROBE_NODE_HEADER: &str = "x-ffcluster-node";

/// How often each side sends a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1000);
/// Silence after which a peer is declared dead. Well under the 5 s the product
/// promises for noticing a dead node, with two heartbeats of slack.
pub const DEAD_AFTER: Duration = Duration::from_millis(3000);

/// Largest payload of one binary frame. Keeps one slow stream from holding a
/// WebSocket for long and bounds what a peer must buffer per frame.
pub const MAX_FRAME_PAYLOAD: usize = 256 * 1024;
/// The chunk number of a split job's audio track: it is encoded once, whole,
/// by one node, alongside the video chunks.
pub const AUDIO_CHUNK: u32 = u32::MAX;

/// Controller-assigned job number, unique for the controller's lifetime.
pub type JobId = u64;

/// What a node can run, measured by the node itself at start-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// `ffmpeg -version`'s first line, e.g. `ffmpeg version 5.1.9-0+deb12u1`.
    pub ffmpeg_version: String,
    pub encoders: BTreeSet<String>,
    pub decoders: BTreeSet<String>,
    pub filters: BTreeSet<String>,
    pub hwaccels: BTreeSet<String>,
    /// Logical CPUs available to the agent.
    pub cpus: u32,
    /// Frames per second of the standard encode (libx264 `veryfast`, 640x360,
    /// testsrc2): comparable between nodes, higher is faster.
    pub speed: f64,
}

impl Capabilities {
    /// What `needs` asks for that this node does not have, as `kind name` strings
    /// (`encoder h264_nvenc`); empty when the node can run the job.
    pub fn missing(&self, needs: &Needs) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |kind: &str, want: &BTreeSet<String>, have: &BTreeSet<String>| {
            out.extend(want.iter().filter(|w| !have.contains(*w)).map(|w| format!("{kind} {w}")));
        };
        check("encoder", &needs.encoders, &self.encoders);
        check("decoder", &needs.decoders, &self.decoders);
        check("filter", &needs.filters, &self.filters);
        check("hwaccel", &needs.hwaccels, &self.hwaccels);
        // A device type is usable when the node has the hwaccel of the same name.
        check("hw device", &needs.hw_devices, &self.hwaccels);
        out
    }
}

/// Node agent → controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeMsg {
    /// First message on every connection.
    Hello { protocol: u32, agent: String, name: String, slots: u32, caps: Capabilities },
    /// Sent every [`HEARTBEAT_INTERVAL`]; lists the jobs the node is running.
    Heartbeat { running: Vec<JobId> },
    /// A file of the job's output: opened, finished, …
    Output { job: JobId, event: OutputEvent },
    /// ffmpeg ended (after all its output was sent).
    Exited { job: JobId, exit: RemoteExit },
    /// The node could not run the job at all (nothing was started or published).
    Refused { job: JobId, reason: String },
    /// Sent once after `Hello`: the node's answers to Jellyfin's capability probes
    /// ([`crate::hardware::CAPABILITY_PROBES`]). A controller that predates it
    /// logs an unreadable message and carries on.
    Probes { answers: Vec<ProbeAnswer> },
}

/// What a node's ffmpeg printed for one capability probe, edited only to match
/// what the node advertises (contrib/docs/hardware.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    /// Arguments after the program name, e.g. `["-h", "filter=scale_cuda"]`.
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The query string of a [`PROBES_PATH`] request: one `arg=` per argument,
/// percent-encoded.
pub fn probe_query(args: &[String]) -> String {
    let enc = |a: &str| {
        a.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    args.iter().map(|a| format!("arg={}", enc(a))).collect::<Vec<_>>().join("&")
}

/// The arguments of a [`probe_query`]; `None` when it is malformed.
pub fn parse_probe_query(query: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let value = pair.strip_prefix("arg=")?;
        let mut bytes = Vec::with_capacity(value.len());
        let mut it = value.bytes();
        while let Some(b) = it.next() {
            bytes.push(match b {
                b'%' => {
                    let hex = [it.next()?, it.next()?];
                    u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
                }
                b'+' => b' ',
                b => b,
            });
        }
        args.push(String::from_utf8(bytes).ok()?);
    }
    Some(args)
}

/// Controller → node agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToNode {
    /// Answer to `Hello`.
    Welcome {
        node_id: u64,
        heartbeat_ms: u64,
    },
    /// Refusal of `Hello` (wrong protocol version); the node stops.
    Goodbye {
        reason: String,
    },
    Heartbeat,
    /// Run this job.
    Run {
        job: JobId,
        spec: JobSpec,
    },
    /// Deliver a signal to the job's ffmpeg (the shim got it, or Jellyfin's `q`
    /// could not be delivered otherwise).
    Signal {
        job: JobId,
        signal: JobSignal,
    },
    /// Kill the job's ffmpeg now and throw its scratch away: nobody wants the result.
    Cancel {
        job: JobId,
    },
}

/// Shim → controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShimMsg {
    /// First message: the job.
    Submit { request: Box<JobRequest> },
    /// The shim could not read a file range it was asked for.
    ReadFailed { req: u32, error: String },
    /// The shim received a signal; forward it to ffmpeg.
    Signal { signal: JobSignal },
    /// The shim runs the accepted job locally after all (it failed on the
    /// cluster before anything was visible): why, as a `fallback.*` code. Sent
    /// just before the shim closes; a controller that predates it logs an
    /// unreadable message and carries on.
    FellBack { reason: Why },
}

/// Controller → shim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToShim {
    /// The job runs on `node` (`split` for a split job).
    Accepted {
        job: JobId,
        node: String,
        /// Split jobs: a node encodes the audio track (chunk [`AUDIO_CHUNK`]),
        /// so the finisher copies it rather than encoding it itself.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        audio: bool,
    },
    /// The cluster will not run this job (no capable node, all busy…): run it locally.
    Rejected {
        reason: String,
    },
    /// Send `len` bytes of offered file `file` from `offset` as a
    /// [`FrameKind::ReadData`] frame with id `req` (fewer bytes only at end of file).
    /// For a [`FileOffer::stream`], the answer comes as soon as at least one byte
    /// at `offset` has arrived and may be shorter; an empty answer is the end of
    /// the stream.
    Read {
        req: u32,
        file: u32,
        offset: u64,
        len: u32,
    },
    Output {
        event: OutputEvent,
    },
    /// ffmpeg ended; everything it wrote has been sent.
    Exited {
        exit: RemoteExit,
    },
    /// The cluster lost the job (node died, node refused it). Nothing more follows.
    Failed {
        reason: String,
    },
    /// Split job: chunk `chunk` (timeline `[start, end)`, `-ss` coordinates)
    /// started on `node` as attempt `attempt`. The attempt's MPEG-TS bytes follow
    /// in [`FrameKind::Output`] frames with `job` = attempt, `id` = chunk and
    /// `offset` = the byte offset in the chunk. A chunk may have several
    /// attempts at once (a late chunk is re-issued); the first to finish wins.
    /// `last` marks the chunk that ends the job.
    ChunkStarted {
        /// [`AUDIO_CHUNK`] for the job's audio track.
        chunk: u32,
        attempt: JobId,
        node: String,
        start: f64,
        end: f64,
        last: bool,
    },
    /// The attempt finished: all its `size` bytes were sent before this message.
    ChunkDone {
        chunk: u32,
        attempt: JobId,
        size: u64,
    },
    /// The attempt failed or was cancelled; its bytes are void. The controller
    /// retries the chunk (or ends the job with `Failed`).
    ChunkFailed {
        chunk: u32,
        attempt: JobId,
        reason: String,
    },
}

/// Signals the shim forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSignal {
    Interrupt,
    Terminate,
    Kill,
}

/// How ffmpeg ended on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteExit {
    /// Exit status when it exited.
    pub code: Option<i32>,
    /// Signal number when it was killed.
    pub signal: Option<i32>,
}

impl RemoteExit {
    /// The code the shim exits with: ffmpeg's own, or what a shell reports for a
    /// death by signal (128 + n).
    pub fn shim_code(self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) => (c & 0xff) as u8,
            (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
            (None, None) => 255,
        }
    }

    pub fn success(self) -> bool {
        self.code == Some(0)
    }
}

/// How the shim must write one output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Write under a temporary name, rename to the final name on `Done`: HLS
    /// segments, init segments, playlists, images. Files are opened in the order
    /// they must become visible.
    Atomic,
    /// Create the final name at once and write at the given offsets as data arrives
    /// (a progressive file that Jellyfin tails while it grows). `Done` gives the
    /// final size.
    InPlace,
    /// Standard output of the shim.
    Stdout,
}

/// One step in the life of an output file. File data travels in
/// [`FrameKind::Output`] frames between `Open` and `Done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OutputEvent {
    /// `path` is as ffmpeg would have opened it on the shim's machine (absolute, or
    /// relative to the shim's working directory).
    Open { file: u32, path: String, mode: WriteMode },
    /// The file is complete with `size` bytes.
    Done { file: u32, size: u64 },
}

/// What a shim asks the cluster to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    /// `ffmpeg` arguments, without `argv[0]`, exactly as the shim received them.
    pub args: Vec<String>,
    /// The shim's working directory (relative paths in `args` are relative to it).
    pub cwd: String,
    /// Files on the shim's machine the job reads, found by
    /// [`crate::remote::file_refs`].
    pub files: Vec<FileOffer>,
    /// What a node must have.
    pub needs: Needs,
    /// Why the shim offloads it (a reason code, for status and logs).
    pub reason: String,
    /// Present when the job is to be split across nodes: the controller plans the
    /// chunks and runs each as its own node job (`Run` with
    /// [`crate::split::ChunkRecipe::args`]), and streams their bytes back to the
    /// shim, which joins them with a local finisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<crate::split::SplitPlan>,
    /// A job the classifier would split that goes whole instead: why
    /// (`nosplit.*`, see [`crate::split::NotSplit::code`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_split: Option<Why>,
    /// This run resumes a job the cluster lost after it had published output:
    /// why it was lost (`resumed.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Why>,
    /// How urgently the job wants nodes (the shim's `FFCLUSTER_PRIORITY`, else
    /// its shape); a shim that sends none gets the one its arguments' shape gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<crate::priority::Priority>,
}

/// A reason with a stable code, beyond the offload reason of [`JobRequest`]:
/// why a job that could have been split runs whole (`nosplit.*`), why a run
/// resumes a lost job (`resumed.*`), why the shim ran an accepted job locally
/// after all (`fallback.*`). The code is for counting and matching, the detail
/// for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Why {
    pub code: String,
    pub detail: String,
}

impl Why {
    pub fn new(code: impl Into<String>, detail: impl Into<String>) -> Why {
        Why { code: code.into(), detail: detail.into() }
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl From<&crate::split::NotSplit> for Why {
    fn from(e: &crate::split::NotSplit) -> Why {
        Why::new(e.code(), e.to_string())
    }
}

/// One file the shim can serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    pub id: u32,
    /// The reference as written in the arguments (after URL parsing: a path).
    pub reference: String,
    /// For a directory reference (a fonts directory), the file's name inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Bytes; 0 for a stream.
    pub size: u64,
    /// A network input the shim relays (a Live TV stream): its length is
    /// unknown, it is read forward only, and a read waits for bytes that have
    /// not arrived yet. The reference is then the input URL as written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// What the controller tells a node to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub args: Vec<String>,
    pub cwd: String,
    pub files: Vec<FileOffer>,
    /// Capability for `{FILES_PATH}/{access}/{file}`.
    pub access: String,
    /// Work so small next to a chunk (a split job's audio track) that it does
    /// not take one of the node's slots.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub light: bool,
}

/// Binary frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// ffmpeg's stderr bytes (node → controller → shim).
    Stderr = 1,
    /// Output file bytes at `offset` of file `id` (node → controller → shim).
    Output = 2,
    /// Bytes for ffmpeg's stdin (shim → controller → node); empty means EOF.
    Stdin = 3,
    /// Answer to [`ToShim::Read`] with request id `id` (shim → controller).
    ReadData = 4,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Stderr,
            2 => FrameKind::Output,
            3 => FrameKind::Stdin,
            4 => FrameKind::ReadData,
            _ => return None,
        })
    }
}

/// A binary frame: `kind u8 | job u64 | id u32 | offset u64 | payload`, little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: FrameKind,
    /// The job (0 on the shim's connection, which carries one job).
    pub job: JobId,
    /// File id for `Output`, request id for `ReadData`, 0 otherwise.
    pub id: u32,
    pub offset: u64,
    pub payload: &'a [u8],
}

/// Size of [`Frame`]'s header.
pub const FRAME_HEADER: usize = 1 + 8 + 4 + 8;

/// Why a binary frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("binary frame of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown binary frame kind {0}")]
    Kind(u8),
    #[error("binary frame payload of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

impl<'a> Frame<'a> {
    pub fn new(kind: FrameKind, job: JobId, id: u32, offset: u64, payload: &'a [u8]) -> Frame<'a> {
        Frame { kind, job, id, offset, payload }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAME_HEADER + self.payload.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.job.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(self.payload);
        out
    }

    pub fn decode(buf: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        if buf.len() < FRAME_HEADER {
            return Err(FrameError::Short(buf.len()));
        }
        if buf.len() - FRAME_HEADER > MAX_FRAME_PAYLOAD {
            return Err(FrameError::TooLarge(buf.len() - FRAME_HEADER));
        }
        let kind = FrameKind::from_u8(buf[0]).ok_or(FrameError::Kind(buf[0]))?;
        let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        let id = u32::from_le_bytes(buf[9..13].try_into().expect("4 bytes"));
        Ok(Frame { kind, job: u64_at(1), id, offset: u64_at(13), payload: &buf[FRAME_HEADER..] })
    }

    /// The same frame for another job number (the controller renumbers when relaying).
    pub fn with_job(&self, job: JobId) -> Frame<'a> {
        Frame { job, ..self.clone() }
    }
}

/// Compares two secrets in time that depends only on their lengths, so that a
/// network peer cannot learn a token byte by byte from response times.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token from an `Authorization: Bearer …` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Turns a controller base URL (`http://host:9470`, with or without a trailing
/// slash) into the WebSocket URL of `path`.
pub fn ws_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .map(|r| format!("ws://{r}"))
        .or_else(|| base.strip_prefix("https://").map(|r| format!("wss://{r}")))
        .unwrap_or_else(|| if base.contains("://") { base.to_owned() } else { format!("ws://{base}") });
    format!("{rest}{path}")
}

/// Turns a controller base URL into the HTTP URL of `path`.
pub fn http_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.contains("://") { format!("{base}{path}") } else { format!("http://{base}{path}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = Frame::new(FrameKind::Output, 7, 3, 1 << 40, b"hello");
        let bytes = f.encode();
        assert_eq!(bytes.len(), FRAME_HEADER + 5);
        assert_eq!(Frame::decode(&bytes).unwrap(), f);
        assert_eq!(Frame::decode(&bytes[..4]), Err(FrameError::Short(4)));
        let mut bad = bytes.clone();
        bad[0] = 99;
        assert_eq!(Frame::decode(&bad), Err(FrameError::Kind(99)));
        let big = vec![0u8; FRAME_HEADER + MAX_FRAME_PAYLOAD + 1];
        let mut big = big;
        big[0] = 1;
        assert_eq!(Frame::decode(&big), Err(FrameError::TooLarge(MAX_FRAME_PAYLOAD + 1)));
    }

    #[test]
    fn messages_are_tagged_json() {
        let m = ToShim::Read { req: 1, file: 0, offset: 5, len: 10 };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(s, r#"{"type":"read","req":1,"file":0,"offset":5,"len":10}"#);
        assert_eq!(serde_json::from_str::<ToShim>(&s).unwrap(), m);
        let o = NodeMsg::Output {
            job: 1,
            event: OutputEvent::Open { file: 2, path: "/t/a0.ts".into(), mode: WriteMode::Atomic },
        };
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<NodeMsg>(&s).unwrap(), o);
    }

    #[test]
    fn reasons_are_optional_on_the_wire() {
        let mut r = JobRequest {
            args: vec!["-i".into(), "a".into()],
            cwd: "/".into(),
            files: Vec::new(),
            needs: Needs::default(),
            reason: "split.progressive".into(),
            split: None,
            not_split: None,
            resumed: None,
            priority: None,
        };
        // A request without them reads and writes as before they existed.
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains("not_split") && !s.contains("resumed") && !s.contains("priority"), "{s}");
        assert_eq!(serde_json::from_str::<JobRequest>(&s).unwrap(), r);
        r.not_split = Some(Why::new("nosplit.option", "option -t is not supported when splitting"));
        r.resumed = Some(Why::new("resumed.controller_gone", "the controller closed the connection"));
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains(r#""not_split":{"code":"nosplit.option","detail":"option -t is not supported"#), "{s}");
        assert_eq!(serde_json::from_str::<JobRequest>(&s).unwrap(), r);
        assert_eq!(r.not_split.unwrap().to_string(), "nosplit.option: option -t is not supported when splitting");
        let m = ShimMsg::FellBack { reason: Why::new("fallback.exit", "ffmpeg exited with code 1 on the node") };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(
            s,
            r#"{"type":"fell_back","reason":{"code":"fallback.exit","detail":"ffmpeg exited with code 1 on the node"}}"#
        );
        assert_eq!(serde_json::from_str::<ShimMsg>(&s).unwrap(), m);
        let e = crate::split::NotSplit::Map("0".into());
        assert_eq!(Why::from(&e), Why::new("nosplit.map", "stream selection \"0\" is not understood"));
    }

    #[test]
    fn floats_survive_a_json_round_trip() {
        // Found by the `protocol` fuzz target: without serde_json's
        // `float_roundtrip`, 3.0048e85 decoded one ULP off, so a message did not
        // decode to what was encoded.
        for start in [3.0048e85, 3.0045, 1e-300, f64::MAX, 5e-324] {
            let m = ToShim::ChunkStarted { chunk: 1, attempt: 2, node: "n".into(), start, end: start, last: false };
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ToShim>(&s).unwrap(), m, "{s}");
        }
    }

    #[test]
    fn secrets_and_headers() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"abcd"));
        assert_eq!(bearer("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer("bearer  s3cret "), Some("s3cret"));
        assert_eq!(bearer("Basic abc"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(ws_url("http://h:9470/", NODE_PATH), "ws://h:9470/api/v1/node");
        assert_eq!(ws_url("https://h", SHIM_PATH), "wss://h/api/v1/shim");
        assert_eq!(ws_url("h:1", SHIM_PATH), "ws://h:1/api/v1/shim");
        assert_eq!(http_url("h:1", STATUS_PATH), "http://h:1/api/v1/status");
    }

    #[test]
    fn probe_queries_round_trip() {
        let args = vec!["-h".to_owned(), "filter=scale_cuda".to_owned(), "a b&c%".to_owned()];
        let q = probe_query(&args);
        assert_eq!(q, "arg=-h&arg=filter%3Dscale_cuda&arg=a%20b%26c%25");
        assert_eq!(parse_probe_query(&q), Some(args));
        assert_eq!(parse_probe_query("x=1"), None);
        assert_eq!(parse_probe_query("arg=%4"), None);
        let probes = NodeMsg::Probes {
            answers: vec![ProbeAnswer {
                args: vec!["-hwaccels".into()],
                code: 0,
                stdout: "x\n".into(),
                stderr: String::new(),
            }],
        };
        let s = serde_json::to_string(&probes).unwrap();
        assert_eq!(serde_json::from_str::<NodeMsg>(&s).unwrap(), probes);
    }

    #[test]
    fn missing_capabilities() {
        let caps = Capabilities {
            encoders: ["libx264".into(), "aac".into()].into(),
            filters: ["scale".into()].into(),
            ..Default::default()
        };
        let mut needs = Needs::default();
        needs.encoders.insert("libx264".into());
        needs.filters.insert("scale".into());
        assert!(caps.missing(&needs).is_empty());
        needs.encoders.insert("h264_nvenc".into());
        needs.hwaccels.insert("cuda".into());
        assert_eq!(caps.missing(&needs), ["encoder h264_nvenc", "hwaccel cuda"]);
    }
}
