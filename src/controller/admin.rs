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

/// `POST {NODES_PATH}/{name}/drain` drains a node, `DELETE` undrains it.
pub const NODES_PATH: &str = "/api/v1/nodes";
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
