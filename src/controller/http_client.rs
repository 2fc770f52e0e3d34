//! A tiny blocking HTTP/1.1 client for `ffcluster status` and the other admin
//! commands: one request per connection, over TLS for an `https://` controller.
//! Enough for the controller's own answers (Content-Length or chunked bodies).

use std::io::{self, Read, Write};
use std::time::Duration;

use super::admin::{DrainReply, NODES_PATH};
use super::joblog::{JOBS_PATH, LogText, NEXT_HEADER, STATE_HEADER};
use super::status::JobState;
use super::status::Status;
use crate::protocol::{STATUS_PATH, http_url};
use crate::tls::{DialError, Trust, dial};

/// Connect, read and write timeout.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted.
const MAX_RESPONSE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}: only http:// and https:// URLs are supported")]
    Scheme(String),
    #[error("{0}: not a valid URL")]
    Url(String),
    #[error(transparent)]
    Dial(#[from] DialError),
    // The io error is part of the message rather than a `source`, so that the
    // text is complete however the error is printed.
    #[error("talking to {host}: {error}")]
    Io { host: String, error: io::Error },
    #[error("malformed HTTP response from {host}: {what}")]
    Malformed { host: String, what: String },
}

/// Why the status could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the controller refused the token (401): check --token / FFCLUSTER_TOKEN")]
    Unauthorized,
    #[error("the controller answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the controller's status document is unreadable: {0}")]
    Json(serde_json::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Fetches the status document from the controller at `base` (`http://host:port`
/// or `https://…`, trusting `trust`).
pub fn fetch_status(base: &str, token: &str, trust: &Trust) -> Result<Status, StatusError> {
    let auth = format!("Bearer {token}");
    let r = get(&http_url(base, STATUS_PATH), &[("Authorization", &auth)], trust)?;
    match r.status {
        200 => serde_json::from_slice(&r.body).map_err(StatusError::Json),
        401 => Err(StatusError::Unauthorized),
        status => {
            let body = String::from_utf8_lossy(&r.body).trim().chars().take(200).collect();
            Err(StatusError::Status { status, body })
        }
    }
}

/// Why a node could not be drained or undrained.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the controller refused the token (401): check --token / FFCLUSTER_TOKEN")]
    Unauthorized,
    #[error("no node named {0:?} is connected (see `ffcluster nodes`)")]
    NoSuchNode(String),
    #[error("the controller answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the controller's answer is unreadable: {0}")]
    Json(serde_json::Error),
}

/// Drains (`draining`) or undrains the nodes named `node` on the controller at
/// `base`.
pub fn set_drain(base: &str, token: &str, trust: &Trust, node: &str, draining: bool) -> Result<DrainReply, DrainError> {
    let auth = format!("Bearer {token}");
    let url = http_url(base, &format!("{NODES_PATH}/{}/drain", percent_encode(node)));
    let method = if draining { "POST" } else { "DELETE" };
    let r = request(method, &url, &[("Authorization", &auth)], trust)?;
    match r.status {
        200 => serde_json::from_slice(&r.body).map_err(DrainError::Json),
        401 => Err(DrainError::Unauthorized),
        404 => Err(DrainError::NoSuchNode(node.to_owned())),
        status => {
            let body = String::from_utf8_lossy(&r.body).trim().chars().take(200).collect();
            Err(DrainError::Status { status, body })
        }
    }
}

/// Why a job's log could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the controller refused the token (401): check --token / FFCLUSTER_TOKEN")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("the controller answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the controller's answer lacks a valid {0} header")]
    Header(&'static str),
}

/// Fetches the log of `job` from the controller at `base`: all of it, or with
/// `after` the lines numbered above it (the `next` of an earlier fetch).
pub fn fetch_log(base: &str, token: &str, trust: &Trust, job: u64, after: Option<u64>) -> Result<LogText, LogError> {
    let auth = format!("Bearer {token}");
    let query = after.map(|n| format!("?after={n}")).unwrap_or_default();
    let r = get(&http_url(base, &format!("{JOBS_PATH}/{job}/log{query}")), &[("Authorization", &auth)], trust)?;
    let body = String::from_utf8_lossy(&r.body).into_owned();
    match r.status {
        200 => {
            let state = match r.header(STATE_HEADER) {
                Some("running") => JobState::Running,
                Some("done") => JobState::Done,
                Some("failed") => JobState::Failed,
                Some("cancelled") => JobState::Cancelled,
                _ => return Err(LogError::Header(STATE_HEADER)),
            };
            let next = r.header(NEXT_HEADER).and_then(|n| n.parse().ok()).ok_or(LogError::Header(NEXT_HEADER))?;
            Ok(LogText { text: body, state, next })
        }
        401 => Err(LogError::Unauthorized),
        404 => Err(LogError::NotFound(body.trim().to_owned())),
        status => Err(LogError::Status { status, body: body.trim().chars().take(200).collect() }),
    }
}

/// A path segment with everything but RFC 3986's unreserved characters escaped.
fn percent_encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET url` with extra request headers.
pub fn get(url: &str, headers: &[(&str, &str)], trust: &Trust) -> Result<HttpResponse, HttpError> {
    request("GET", url, headers, trust)
}

/// `method url` with extra request headers and no body.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], trust: &Trust) -> Result<HttpResponse, HttpError> {
    let (authority, path) = split_url(url)?;
    let host = authority.to_owned();
    let mut conn = dial(url, authority, trust, TIMEOUT, TIMEOUT)?;
    let io_err = |error| HttpError::Io { host: host.clone(), error };
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if method != "GET" {
        request.push_str("Content-Length: 0\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    conn.write_all(request.as_bytes()).map_err(io_err)?;
    let mut raw = Vec::new();
    conn.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io_err)?;
    parse_response(&raw).map_err(|what| HttpError::Malformed { host, what })
}

/// `http://authority/path` or `https://…` → (authority, path).
fn split_url(url: &str) -> Result<(&str, &str), HttpError> {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return Err(if url.contains("://") { HttpError::Scheme(url.into()) } else { HttpError::Url(url.into()) });
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
        return Err(HttpError::Url(url.into()));
    }
    Ok((authority, path))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let version = words.next().unwrap_or_default();
    let status = words.next().and_then(|s| s.parse::<u16>().ok());
    let status = match status {
        Some(s) if version.starts_with("HTTP/1.") => s,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut r = HttpResponse { status, headers, body: Vec::new() };
    let rest = &raw[end + 4..];
    let chunked = r.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    r.body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = r.header("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad content-length {len:?}"))?;
        if rest.len() < len {
            return Err(format!("body ended after {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(r)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or("chunk size line not terminated")?;
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "chunk size is not text")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {hex:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers, if any, are not needed.
            return Ok(body);
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err("chunked body ended early".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(split_url("http://h:1/api/v1/status").unwrap(), ("h:1", "/api/v1/status"));
        assert_eq!(split_url("http://h:1").unwrap(), ("h:1", "/"));
        assert_eq!(split_url("http://[::1]:9470/x").unwrap(), ("[::1]:9470", "/x"));
        assert_eq!(split_url("https://h/x").unwrap(), ("h", "/x"));
        assert!(matches!(split_url("ftp://h/x"), Err(HttpError::Scheme(_))));
        assert!(matches!(split_url("h:1/x"), Err(HttpError::Url(_))));
        assert!(matches!(split_url("http:///x"), Err(HttpError::Url(_))));
        assert_eq!(percent_encode("gpu-box_1.lan~"), "gpu-box_1.lan~");
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
    }

    #[test]
    fn content_length_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloextra").unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.header("x-a")), (200, &b"hello"[..], Some("b")));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello").is_err());
        let r = parse_response(b"HTTP/1.0 401 Unauthorized\r\n\r\nno").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (401, &b"no"[..]));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies() {
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n, world!!!\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, b"hello, world!!!");
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        assert!(parse_response(cut).is_err());
    }
}
