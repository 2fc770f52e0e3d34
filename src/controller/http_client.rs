//! The admin commands' requests (`ffcluster status`, `nodes`, `log`, drain…)
//! and what the controller's answers mean, over the blocking client of
//! [`crate::http`] (ureq, TLS for an `https://` controller).

use std::time::Duration;

use super::admin::{DrainReply, NODES_PATH, PRIORITY_SUFFIX, PriorityReply};
use super::joblog::{JOBS_PATH, LogText, NEXT_HEADER, STATE_HEADER};
use super::status::JobState;
use super::status::Status;
use crate::http::Timeouts;
pub use crate::http::{HttpError, HttpResponse};
use crate::protocol::{STATUS_PATH, http_url};
use crate::tls::Trust;

/// Connect, read and write timeout.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted.
const MAX_RESPONSE: u64 = 64 << 20;

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

/// Why an admin change (drain, priority) was not made.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the controller refused the token (401): check --token / FFCLUSTER_TOKEN")]
    Unauthorized,
    /// What was not there: "no node named … is connected", "no job … is running".
    #[error("{0}")]
    NotFound(String),
    #[error("the controller answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the controller's answer is unreadable: {0}")]
    Json(serde_json::Error),
}

/// Sends an admin change (`method` to `path`) and reads its JSON answer; a 404
/// means `missing`.
fn change<T: serde::de::DeserializeOwned>(
    base: &str,
    token: &str,
    trust: &Trust,
    method: &str,
    path: &str,
    missing: impl FnOnce() -> String,
) -> Result<T, AdminError> {
    let auth = format!("Bearer {token}");
    let r = request(method, &http_url(base, path), &[("Authorization", &auth)], trust)?;
    match r.status {
        200 => serde_json::from_slice(&r.body).map_err(AdminError::Json),
        401 => Err(AdminError::Unauthorized),
        404 => Err(AdminError::NotFound(missing())),
        status => {
            let body = String::from_utf8_lossy(&r.body).trim().chars().take(200).collect();
            Err(AdminError::Status { status, body })
        }
    }
}

/// Drains (`draining`) or undrains the nodes named `node` on the controller at
/// `base`.
pub fn set_drain(base: &str, token: &str, trust: &Trust, node: &str, draining: bool) -> Result<DrainReply, AdminError> {
    let path = format!("{NODES_PATH}/{}/drain", percent_encode(node));
    let method = if draining { "POST" } else { "DELETE" };
    change(base, token, trust, method, &path, || format!("no node named {node:?} is connected (see `ffcluster nodes`)"))
}

/// Sets running job `job`'s priority on the controller at `base`.
pub fn set_priority(
    base: &str,
    token: &str,
    trust: &Trust,
    job: u64,
    priority: crate::priority::Priority,
) -> Result<PriorityReply, AdminError> {
    let path = format!("{JOBS_PATH}/{job}/{PRIORITY_SUFFIX}/{priority}");
    change(base, token, trust, "PUT", &path, || format!("no job {job} is running (see `ffcluster jobs`)"))
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
    crate::http::request(method, url, headers, trust, Timeouts { connect: TIMEOUT, io: TIMEOUT }, MAX_RESPONSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(percent_encode("gpu-box_1.lan~"), "gpu-box_1.lan~");
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
