//! Capability probes answered by the cluster (`probes = "cluster"`): the
//! controller serves the answer of a node's real ffmpeg, so Jellyfin sees what
//! the cluster can do, such as a GPU encoder only a node has.
//!
//! A blocking GET with `ffcluster::http` (ureq, TLS for an `https://`
//! controller): probes must stay cheap, and building an async runtime for one
//! request would cost more than the request.

use std::time::Duration;

use ffcluster::http::{HttpError, HttpResponse, Timeouts};
use ffcluster::protocol::{PROBE_CODE_HEADER, PROBE_NODE_HEADER, PROBE_STDOUT_HEADER, PROBES_PATH, probe_query};
use ffcluster::tls::Trust;

use crate::probe_cache::Answer;

/// Jellyfin waits on every probe at start-up: a controller that does not answer
/// quickly is treated as down, and the local ffmpeg answers.
const TIMEOUTS: Timeouts = Timeouts { connect: Duration::from_millis(500), io: Duration::from_secs(3) };
/// Far above any probe's output (the largest, `-filters`, is tens of KiB).
const MAX_RESPONSE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClusterProbeError {
    #[error("controller URL {0:?} is not http://HOST:PORT or https://HOST:PORT")]
    Url(String),
    #[error("cannot reach the controller at {url}: {source}")]
    Reach { url: String, source: Box<HttpError> },
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
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(ClusterProbeError::Url(base.into()));
    }
    let url = format!("{trimmed}{PROBES_PATH}?{}", probe_query(args));
    let auth = format!("Bearer {token}");
    let response = ffcluster::http::request("GET", &url, &[("Authorization", &auth)], trust, TIMEOUTS, MAX_RESPONSE)
        .map_err(|e| match e {
            HttpError::Scheme(_) | HttpError::Url(_) => ClusterProbeError::Url(base.into()),
            e => ClusterProbeError::Reach { url: base.to_owned(), source: Box::new(e) },
        })?;
    parse(response)
}

/// The controller's answer: stdout then stderr in the body, split where a
/// header says.
fn parse(response: HttpResponse) -> Result<ClusterAnswer, ClusterProbeError> {
    if response.status != 200 {
        return Err(ClusterProbeError::Status(response.status));
    }
    let number = |name: &str| response.header(name).and_then(|v| v.parse::<i64>().ok());
    let split = number(PROBE_STDOUT_HEADER).ok_or(ClusterProbeError::Malformed("no stdout length"))?;
    let code = number(PROBE_CODE_HEADER).ok_or(ClusterProbeError::Malformed("no exit code"))?;
    let split = usize::try_from(split).ok().filter(|s| *s <= response.body.len());
    let split = split.ok_or(ClusterProbeError::Malformed("body length"))?;
    let node = response.header(PROBE_NODE_HEADER).unwrap_or_default().to_owned();
    let (stdout, stderr) = response.body.split_at(split);
    Ok(ClusterAnswer { answer: Answer { stdout: stdout.to_vec(), stderr: stderr.to_vec(), code: code as i32 }, node })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        HttpResponse { status, headers, body: body.to_vec() }
    }

    #[test]
    fn parses_answers_and_refusals() {
        let headers = [("x-ffcluster-exit-code", "0"), ("x-ffcluster-stdout-bytes", "6"), ("x-ffcluster-node", "gpu")];
        let a = parse(answer(200, &headers, b"stdouterr")).unwrap();
        assert_eq!(a.answer, Answer { stdout: b"stdout".to_vec(), stderr: b"err".to_vec(), code: 0 });
        assert_eq!(a.node, "gpu");
        assert!(matches!(parse(answer(404, &[], b"")), Err(ClusterProbeError::Status(404))));
        let long = [("x-ffcluster-exit-code", "0"), ("x-ffcluster-stdout-bytes", "20")];
        assert!(matches!(parse(answer(200, &long, b"stdouterr")), Err(ClusterProbeError::Malformed(_))));
        assert!(matches!(fetch("ftp://c:1", "t", &Trust::default(), &[]), Err(ClusterProbeError::Url(_))));
    }

    #[test]
    fn an_unreachable_controller_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = fetch(&format!("http://127.0.0.1:{port}"), "t", &Trust::default(), &["-version".into()]).unwrap_err();
        assert!(
            matches!(&err, ClusterProbeError::Reach { source, .. } if matches!(**source, HttpError::Connect { .. })),
            "{err}"
        );
        assert!(err.to_string().starts_with("cannot reach the controller at http://127.0.0.1:"), "{err}");
    }
}
