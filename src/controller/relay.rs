//! The input relay: `GET|HEAD {FILES_PATH}/{access}/{file}` serves a job's input
//! files to its node, answering each byte range by asking the job's shim.
//!
//! ffmpeg's http protocol sends `Range: bytes=N-` and treats the input as
//! seekable only when the answer carries `Accept-Ranges` and `Content-Range`, so
//! ranges are honoured exactly. The body is pulled: reads go to the shim only as
//! the response is written out, so a client that stops reading stops them. A few
//! run ahead to hide the round trip, starting small because ffmpeg abandons many
//! responses after a few kilobytes when it seeks.
//!
//! A relayed network stream (a Live TV input the shim fetches) has no length:
//! it is answered `200` with a chunked body and `Accept-Ranges: none`, so ffmpeg
//! treats it as unseekable, and read forward one piece at a time, each as long
//! as what the shim has when asked ([`StreamPull`]). The client's pace is the
//! pace of the reads; the shim's buffer ahead of them is bounded.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tracing::debug;

use super::Shared;
use super::metrics::Metrics;
use super::shim_link::{ReadResult, ShimConn};
use super::state::Servable;
use crate::protocol::MAX_FRAME_PAYLOAD;

/// Reads in flight per response, at most.
const READ_AHEAD: usize = 4;
/// Size of a response's first read; later ones double up to a full frame.
const FIRST_READ: usize = 32 << 10;
/// How long one read may wait for the shim before the response fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The same for a stream, where a read waits for the origin to send more. A
/// live source that sends nothing for this long is dead; ffmpeg reading it
/// directly would wait forever, but a relay must not hold a job that long.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// What a `Range` header asks of a file of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range: the whole file, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Interprets a `Range` header (RFC 9110 §14). Forms other than one `bytes`
/// range (other units, several ranges, garbage) are ignored, which the RFC
/// allows: the answer is then the whole file.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAnswer::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    if first.is_empty() {
        // Suffix: the last n bytes.
        return match number(last) {
            None => RangeAnswer::Full,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if size == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Partial { start: size.saturating_sub(n), end: size - 1 },
        };
    }
    let Some(start) = number(first) else { return RangeAnswer::Full };
    let end = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(end) if end >= start => Some(end),
            _ => return RangeAnswer::Full,
        }
    };
    if start >= size {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial { start, end: end.map_or(size - 1, |e| e.min(size - 1)) }
}

pub(crate) async fn serve_file(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path((access, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such file\n").into_response();
    // Nodes add the file's extension (`1.mkv`) for ffmpeg's format guess.
    let id = file.split_once('.').map_or(file.as_str(), |(id, _)| id);
    let Ok(file) = id.parse::<u32>() else { return not_found() };
    let Some(found) = shared.registry().servable(&access, file) else { return not_found() };
    if found.stream {
        return serve_stream(found, shared.metrics.clone(), method, file, &headers);
    }
    let size = found.size;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match parse_range(range, size) {
        RangeAnswer::Full => (StatusCode::OK, 0, size),
        RangeAnswer::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeAnswer::Unsatisfiable => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            r.headers_mut().insert(header::CONTENT_RANGE, value(format!("bytes */{size}")));
            r.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return r;
        }
    };
    debug!(job = found.job, file, start, len, "relaying input");
    let body = if method == Method::HEAD || len == 0 {
        Body::empty()
    } else if let Some(bytes) = found.bytes {
        // A live piece, cut and kept here: no round trip to the shim.
        let (from, to) = (start as usize, (start + len) as usize);
        Body::from(Bytes::copy_from_slice(&bytes[from..to]))
    } else {
        let pull = Pull::new(found.shim, shared.metrics.clone(), file, start, len);
        Body::from_stream(futures_util::stream::unfold(pull, |mut pull| async {
            pull.next_chunk().await.map(|chunk| (chunk, pull))
        }))
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, value(len.to_string()));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(header::CONTENT_RANGE, value(format!("bytes {start}-{}/{size}", start + len - 1)));
    }
    r
}

/// Answers a GET of a relayed stream: from its start (a stream cannot be
/// entered anywhere else), chunked, until the origin ends.
fn serve_stream(found: Servable, metrics: Arc<Metrics>, method: Method, file: u32, headers: &HeaderMap) -> Response {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    if !matches!(parse_range(range, u64::MAX), RangeAnswer::Full | RangeAnswer::Partial { start: 0, .. }) {
        let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        r.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
        return r;
    }
    debug!(job = found.job, file, "relaying a stream");
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let pull = StreamPull::new(found.shim, metrics, file);
        Body::from_stream(futures_util::stream::unfold(pull, |mut pull| async {
            pull.next_chunk().await.map(|chunk| (chunk, pull))
        }))
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r
}

/// The body of a stream response (and a live job's feed): one read at a time,
/// each at the offset the previous answer ended at.
pub(crate) struct StreamPull {
    shim: Arc<ShimConn>,
    metrics: Arc<Metrics>,
    file: u32,
    next: u64,
    /// The read being waited for, forgotten if the client goes away meanwhile.
    waiting: Option<u32>,
    failed: bool,
}

impl StreamPull {
    pub(crate) fn new(shim: Arc<ShimConn>, metrics: Arc<Metrics>, file: u32) -> StreamPull {
        StreamPull { shim, metrics, file, next: 0, waiting: None, failed: false }
    }

    /// Bytes read so far.
    pub(crate) fn offset(&self) -> u64 {
        self.next
    }

    /// The next bytes; `None` at the origin's clean end (and after an error).
    pub(crate) async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.failed {
            return None;
        }
        let Some((req, rx)) = self.shim.request_read(self.file, self.next, MAX_FRAME_PAYLOAD as u32) else {
            self.failed = true;
            return Some(Err(io::Error::other("the job is over")));
        };
        self.waiting = Some(req);
        let answer = answer(&self.shim, req, rx, STREAM_READ_TIMEOUT, "the origin failed").await;
        self.waiting = None;
        let answer = match answer {
            // The origin ended: so does the body, cleanly.
            Ok(bytes) if bytes.is_empty() => return None,
            Ok(bytes) => {
                self.next += bytes.len() as u64;
                self.metrics.input_bytes(bytes.len());
                Ok(bytes)
            }
            Err(e) => Err(e),
        };
        // An error ends the body without its last chunk, so the client sees the
        // connection break as it would have seen the origin's.
        self.failed = answer.is_err();
        Some(answer.map_err(|e| {
            debug!(file = self.file, "stream relay failed: {e}");
            io::Error::other(e)
        }))
    }
}

fn value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("digits, dashes and slashes are valid header text")
}

/// The body of one response: reads issued in order, answered in order.
struct Pull {
    shim: Arc<ShimConn>,
    metrics: Arc<Metrics>,
    file: u32,
    /// Next offset to ask for.
    next: u64,
    /// End of the range (exclusive).
    end: u64,
    inflight: VecDeque<(u32, u32, oneshot::Receiver<ReadResult>)>,
    /// Chunks handed to the client so far.
    delivered: usize,
    failed: bool,
}

impl Pull {
    fn new(shim: Arc<ShimConn>, metrics: Arc<Metrics>, file: u32, start: u64, len: u64) -> Pull {
        let inflight = VecDeque::new();
        Pull { shim, metrics, file, next: start, end: start + len, inflight, delivered: 0, failed: false }
    }

    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.failed {
            return None;
        }
        let r = self.step().await;
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }

    async fn step(&mut self) -> Option<io::Result<Bytes>> {
        // Slow start: ffmpeg often reads a few kilobytes of a response and then
        // seeks elsewhere on a new connection; whatever was asked of the shim
        // for the old one is wasted. So the first reads are small and few, and
        // the window opens as the client keeps consuming.
        let depth = READ_AHEAD.min(1 + self.delivered);
        let size = (FIRST_READ << self.delivered.min(8)).min(MAX_FRAME_PAYLOAD) as u64;
        while self.inflight.len() < depth && self.next < self.end {
            let len = (self.end - self.next).min(size) as u32;
            let Some((req, rx)) = self.shim.request_read(self.file, self.next, len) else {
                return Some(Err(io::Error::other("the job is over")));
            };
            self.inflight.push_back((req, len, rx));
            self.next += u64::from(len);
        }
        let (req, len, rx) = self.inflight.pop_front()?;
        let answer = match answer(&self.shim, req, rx, READ_TIMEOUT, "the shim could not read the file").await {
            Ok(bytes) if bytes.len() == len as usize => {
                self.delivered += 1;
                self.metrics.input_bytes(bytes.len());
                Ok(bytes)
            }
            Ok(bytes) => Err(format!("the shim answered {} bytes for a read of {len}", bytes.len())),
            Err(e) => Err(e),
        };
        Some(answer.map_err(|e| {
            debug!(file = self.file, "input relay failed: {e}");
            io::Error::other(e)
        }))
    }
}

impl Drop for StreamPull {
    fn drop(&mut self) {
        // The client went away while a read waited for the origin.
        if let Some(req) = self.waiting {
            self.shim.forget_read(req);
        }
    }
}

/// The shim's answer to read `req`, waited for at most `limit`; a failed read
/// is reported as `failed: <the shim's error>`.
async fn answer(
    shim: &ShimConn,
    req: u32,
    rx: oneshot::Receiver<ReadResult>,
    limit: Duration,
    failed: &str,
) -> Result<Bytes, String> {
    match tokio::time::timeout(limit, rx).await {
        Err(_) => {
            shim.forget_read(req);
            Err(format!("the shim did not answer a read within {} s", limit.as_secs()))
        }
        Ok(Err(_)) => Err("the job ended or its shim went away".to_owned()),
        Ok(Ok(Err(e))) => Err(format!("{failed}: {e}")),
        Ok(Ok(Ok(bytes))) => Ok(bytes),
    }
}

impl Drop for Pull {
    fn drop(&mut self) {
        // The client went away: answers still due are of no use to anyone.
        for (req, _, _) in &self.inflight {
            self.shim.forget_read(*req);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RangeAnswer::*;
    use super::*;

    #[test]
    fn ranges() {
        let p = |h: &str| parse_range(Some(h), 1000);
        assert_eq!(parse_range(None, 1000), Full);
        assert_eq!(p("bytes=0-"), Partial { start: 0, end: 999 });
        assert_eq!(p("bytes=100-199"), Partial { start: 100, end: 199 });
        assert_eq!(p("bytes=100-100"), Partial { start: 100, end: 100 });
        assert_eq!(p("bytes=900-5000"), Partial { start: 900, end: 999 });
        assert_eq!(p("bytes=999-"), Partial { start: 999, end: 999 });
        assert_eq!(p("bytes=-10"), Partial { start: 990, end: 999 });
        assert_eq!(p("bytes=-5000"), Partial { start: 0, end: 999 });
        assert_eq!(p(" bytes= 5 - 9 "), Partial { start: 5, end: 9 });
        assert_eq!(p("bytes=1000-"), Unsatisfiable);
        assert_eq!(p("bytes=1000-2000"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        // Ignored: whole file.
        assert_eq!(p("bytes=200-100"), Full);
        assert_eq!(p("bytes=0-1,5-9"), Full);
        assert_eq!(p("items=0-1"), Full);
        assert_eq!(p("bytes=abc"), Full);
        assert_eq!(p("bytes=+1-2"), Full);
        assert_eq!(p("bytes=-"), Full);
        // An empty file has no byte to give.
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-1"), 0), Unsatisfiable);
        assert_eq!(parse_range(None, 0), Full);
    }
}
