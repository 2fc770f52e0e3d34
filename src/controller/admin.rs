//! The admin routes besides the status document: draining nodes and the
//! Prometheus metrics. Both sit behind the bearer token like everything else
//! that carries data or changes something.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::state::unix_ms_now;
use crate::priority::Priority;

/// `POST {NODES_PATH}/{name}/drain` drains a node, `DELETE` undrains it.
pub const NODES_PATH: &str = "/api/v1/nodes";
/// `PUT /api/v1/jobs/{id}/priority/{level}` sets a running job's priority.
pub const PRIORITY_SUFFIX: &str = "priority";

/// The answer to a priority change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityReply {
    pub job: u64,
    pub priority: Priority,
    /// The priority it had.
    pub was: Priority,
}

/// Sets a running job's priority (`interactive`, `streaming`, `batch`). 404
/// for a job that is not running.
pub(crate) async fn set_priority(
    State(shared): State<Arc<Shared>>,
    Path((job, level)): Path<(u64, String)>,
) -> Response {
    let priority = match level.parse::<Priority>() {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match shared.registry().set_priority(job, priority, Instant::now()) {
        Some(was) => Json(PriorityReply { job, priority, was }).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no job {job} is running\n")).into_response(),
    }
}

/// Prometheus text format.
pub const METRICS_PATH: &str = "/metrics";

/// The answer to a drain or undrain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    pub node: String,
    pub draining: bool,
    /// Connected nodes of that name.
    pub connected: usize,
}

pub(crate) async fn drain(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    set(&shared, name, true)
}

pub(crate) async fn undrain(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    set(&shared, name, false)
}

fn set(shared: &Shared, name: String, draining: bool) -> Response {
    match shared.registry().set_draining(&name, draining, Instant::now()) {
        Some(connected) => Json(DrainReply { node: name, draining, connected }).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no node named {name:?} is connected\n")).into_response(),
    }
}

pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let (status, known) = {
        let reg = shared.registry();
        (reg.status(Instant::now(), unix_ms_now()), reg.known_nodes())
    };
    let text = shared.metrics.render(&status, &known);
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
}
