//! Capability probes answered by the cluster (`probes = "cluster"`): the
//! controller serves the answer of a node's real ffmpeg, so Jellyfin sees what
//! the cluster can do, such as a GPU encoder only a node has.
//!
//! A plain blocking HTTP/1.1 GET on a `std` socket (TLS for an `https://`
//! controller): probes must stay cheap, and building an async runtime for one
//! request would cost more than the request.

use std::io::{Read, Write};
use std::time::Duration;

use ffcluster::protocol::{PROBE_CODE_HEADER, PROBE_NODE_HEADER, PROBE_STDOUT_HEADER, PROBES_PATH, probe_query};
use ffcluster::tls::{DialError, Trust, dial};

use crate::probe_cache::Answer;

/// Jellyfin waits on every probe at start-up: a controller that does not answer
/// quickly is treated as down, and the local ffmpeg answers.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Far above any probe's output (the largest, `-filters`, is tens of KiB).
const MAX_RESPONSE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClusterProbeError {
    #[error("controller URL {0:?} is not http://HOST:PORT or https://HOST:PORT")]
    Url(String),
    #[error("cannot reach the controller at {url}: {source}")]
    Dial { url: String, source: Box<DialError> },
    #[error("cannot reach the controller at {url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("the controller has no answer for this probe (HTTP {0})")]
    Status(u16),
    #[error("the controller's answer is malformed: {0}")]
    Malformed(&'static str),
}

/// A node's answer, with the node's name.
#[derive(Debug)]
pub struct ClusterAnswer {
    pub answer: Answer,
    pub node: String,
}

/// Asks the controller at `base` for the answer to `ffmpeg ARGS`.
pub fn fetch(base: &str, token: &str, trust: &Trust, args: &[String]) -> Result<ClusterAnswer, ClusterProbeError> {
    let trimmed = base.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| ClusterProbeError::Url(base.into()))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let io = |source| ClusterProbeError::Io { url: base.to_owned(), source };
    let mut stream = dial(base, authority, trust, CONNECT_TIMEOUT, IO_TIMEOUT)
        .map_err(|e| ClusterProbeError::Dial { url: base.to_owned(), source: Box::new(e) })?;
    let request = format!(
        "GET {prefix}{PROBES_PATH}?{} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        probe_query(args)
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut response).map_err(io)?;
    parse(&response)
}

/// Parses the controller's response (`Connection: close`, a `Content-Length` body).
fn parse(response: &[u8]) -> Result<ClusterAnswer, ClusterProbeError> {
    let end =
        response.windows(4).position(|w| w == b"\r\n\r\n").ok_or(ClusterProbeError::Malformed("no header end"))?;
    let head = std::str::from_utf8(&response[..end]).map_err(|_| ClusterProbeError::Malformed("header not UTF-8"))?;
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(ClusterProbeError::Malformed("status line"))?;
    if status != 200 {
        return Err(ClusterProbeError::Status(status));
    }
    let mut headers = std::collections::HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let number = |name: &str| headers.get(name).and_then(|v| v.parse::<i64>().ok());
    if headers.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Err(ClusterProbeError::Malformed("chunked body"));
    }
    let length = number("content-length").ok_or(ClusterProbeError::Malformed("no content-length"))?;
    let split = number(PROBE_STDOUT_HEADER).ok_or(ClusterProbeError::Malformed("no stdout length"))?;
    let code = number(PROBE_CODE_HEADER).ok_or(ClusterProbeError::Malformed("no exit code"))?;
    if length < 0 || body.len() as i64 != length || split < 0 || split > length {
        return Err(ClusterProbeError::Malformed("body length"));
    }
    let (stdout, stderr) = body.split_at(split as usize);
    Ok(ClusterAnswer {
        answer: Answer { stdout: stdout.to_vec(), stderr: stderr.to_vec(), code: code as i32 },
        node: headers.get(PROBE_NODE_HEADER).cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_and_refusals() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nx-ffcluster-exit-code: 0\r\nx-ffcluster-stdout-bytes: 6\r\nx-ffcluster-node: gpu\r\n\r\nstdouterr";
        let a = parse(ok).unwrap();
        assert_eq!(a.answer, Answer { stdout: b"stdout".to_vec(), stderr: b"err".to_vec(), code: 0 });
        assert_eq!(a.node, "gpu");
        assert!(matches!(
            parse(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            Err(ClusterProbeError::Status(404))
        ));
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\nx-ffcluster-exit-code: 0\r\nx-ffcluster-stdout-bytes: 6\r\n\r\nstdouterr";
        assert!(matches!(parse(short), Err(ClusterProbeError::Malformed(_))));
        assert!(matches!(fetch("ftp://c:1", "t", &Trust::default(), &[]), Err(ClusterProbeError::Url(_))));
    }

    #[test]
    fn an_unreachable_controller_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = fetch(&format!("http://127.0.0.1:{port}"), "t", &Trust::default(), &["-version".into()]).unwrap_err();
        assert!(
            matches!(&err, ClusterProbeError::Dial { source, .. } if matches!(**source, DialError::Connect { .. })),
            "{err}"
        );
        assert!(err.to_string().starts_with("cannot reach the controller at http://127.0.0.1:"), "{err}");
    }
}
