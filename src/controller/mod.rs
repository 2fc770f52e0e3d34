//! The controller daemon behind `ffcluster serve`.
//!
//! Node agents and shims connect to it over WebSocket (see [`crate::protocol`]);
//! it places each submitted job on a node, relays the node's output to the shim
//! and serves the job's input files to the node by asking the shim for byte
//! ranges.
//!
//! * `state`: the registry of nodes and jobs, behind one lock that is never held
//!   across an await.
//! * [`scheduler`]: the pure choice of a node for a job.
//! * `split`: split jobs, cut into chunks that run as node jobs of their own,
//!   and the pure policy of which slot takes which chunk.
//! * `node_link` / `shim_link`: one task per WebSocket, with its writer task.
//! * `outbox`: each peer's single ordered outgoing queue, with backpressure.
//! * `relay`: the input file route.
//! * [`status`]: the status document; [`http_client`]: the admin commands' requests
//!   (`ffcluster status`, `nodes`, drain…) over [`crate::http`].
//! * [`admin`] (draining nodes, `/metrics`), `metrics` (the counters) and
//!   `dashboard` (the web page at `/`).
//! * [`joblog`]: each job's log, which reads like ffmpeg's, at
//!   `/api/v1/jobs/{id}/log`.
//! * `tls_listener`: with `tls_cert`/`tls_key`, the listener that does each
//!   connection's TLS handshake.
//!
//! Every task watches one shutdown flag (`shutdown`), set when the future given
//! to [`run`] completes.

pub mod admin;
mod dashboard;
pub mod http_client;
pub mod joblog;
mod live_feed;
mod metrics;
mod node_link;
mod outbox;
mod probes;
pub mod progress;
pub mod relay;
pub mod scheduler;
mod shim_link;
mod shutdown;
mod split;
mod state;
pub mod status;
#[cfg(test)]
mod tests;
mod tls_listener;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::protocol::{
    DEAD_AFTER, FILES_PATH, FRAME_HEADER, HEARTBEAT_INTERVAL, MAX_FRAME_PAYLOAD, NODE_PATH, PROBES_PATH, SHIM_PATH,
    STATUS_PATH, bearer, secret_eq,
};
use state::{Registry, unix_ms_now};
pub use status::Status;

/// Largest WebSocket message accepted: a full binary frame, with room for large
/// JSON messages (a long argument list, many file offers).
const MAX_MESSAGE: usize = FRAME_HEADER + MAX_FRAME_PAYLOAD + (1 << 20);
/// How long `run` waits for connections to wind down after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often split jobs' chunks are looked at without an event: a chunk only
/// becomes late, and a job stalled, with time.
const DISPATCH_PERIOD: Duration = Duration::from_millis(250);

/// How the controller runs. [`ControllerConfig::new`] gives the protocol's timings.
#[derive(Clone)]
pub struct ControllerConfig {
    /// The shared secret nodes, shims and admins present as `Bearer`.
    pub token: String,
    /// Period of the controller's heartbeats to nodes.
    pub heartbeat_interval: Duration,
    /// Silence after which a node is dropped and its jobs fail.
    pub dead_after: Duration,
    /// Time a new connection has to send its first message (and, with TLS, to
    /// complete its handshake).
    pub hello_timeout: Duration,
    /// Serve HTTPS and WSS only, with this certificate (contrib/docs/running-a-cluster.md, TLS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ControllerConfig {
    pub fn new(token: impl Into<String>) -> ControllerConfig {
        ControllerConfig {
            token: token.into(),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            dead_after: DEAD_AFTER,
            hello_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerConfig")
            .field("token", &"<redacted>")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("dead_after", &self.dead_after)
            .field("hello_timeout", &self.hello_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(
        "no token configured: nodes, shims and admins authenticate with a shared secret. \
         Make one with `openssl rand -hex 16` and pass it with --token or FFCLUSTER_TOKEN"
    )]
    NoToken,
    #[error("the listening socket is unusable: {0}")]
    Listener(std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// What every handler and link shares.
pub(crate) struct Shared {
    config: ControllerConfig,
    registry: Mutex<Registry>,
    /// The registry's counters, bumped by the links without its lock.
    metrics: Arc<metrics::Metrics>,
    /// Every job's log; the registry writes it too.
    logs: Arc<joblog::JobLogs>,
    shutdown: shutdown::Signal,
    /// Nodes' capability probe answers (contrib/docs/hardware.md), apart from the
    /// registry: large, and never needed under its lock.
    probes: Mutex<probes::ProbeStore>,
    /// Dropped with the last `Shared`: `run` knows every link has finished.
    _alive: mpsc::Sender<()>,
}

impl Shared {
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registry updates are single statements that leave it consistent; a
        // panic in one handler must not take the whole controller down.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn probes(&self) -> MutexGuard<'_, probes::ProbeStore> {
        self.probes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves the controller on `listener` until `shutdown` completes, then closes
/// every connection (nodes and shims are told, running jobs fail) and returns.
pub async fn run(
    listener: TcpListener,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    if config.token.trim().is_empty() {
        return Err(ControllerError::NoToken);
    }
    let addr = listener.local_addr().map_err(ControllerError::Listener)?;
    let tls = config.tls.clone();
    let hello_timeout = config.hello_timeout;
    let trigger = shutdown::Trigger::new();
    let (alive, mut all_gone) = mpsc::channel(1);
    let registry = Registry::new(Instant::now());
    let shared = Arc::new(Shared {
        config,
        metrics: registry.metrics(),
        logs: registry.logs(),
        registry: Mutex::new(registry),
        shutdown: trigger.signal(),
        probes: Mutex::new(probes::ProbeStore::default()),
        _alive: alive,
    });
    let app = router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let ticker = tokio::spawn(tick(shared.clone()));
    let watcher = {
        let trigger = trigger.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.fire();
        })
    };
    info!(%addr, tls = tls.is_some(), "controller listening");
    let signal = trigger.signal();
    let graceful = {
        let signal = signal.clone();
        async move { signal.fired().await }
    };
    let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls {
        None => Box::pin(axum::serve(listener, app).with_graceful_shutdown(graceful).into_future()),
        Some(tls) => {
            // axum gives `ConnectInfo<SocketAddr>` for a TcpListener or for a
            // tapped listener of any kind; the tap does nothing else.
            let listener = tls_listener::TlsListener::new(listener, tls, hello_timeout).tap_io(|_| ());
            Box::pin(axum::serve(listener, app).with_graceful_shutdown(graceful).into_future())
        }
    };
    let result = tokio::select! {
        r = server => r,
        // A client that never reads would hold graceful shutdown forever.
        () = async { signal.fired().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
            warn!("connections still open {} s after shutdown; leaving them", DRAIN_TIMEOUT.as_secs());
            Ok(())
        }
    };
    trigger.fire();
    watcher.abort();
    ticker.abort();
    drop(shared);
    if tokio::time::timeout(DRAIN_TIMEOUT, all_gone.recv()).await.is_err() {
        warn!("some links did not finish within {} s of shutdown", DRAIN_TIMEOUT.as_secs());
    }
    info!("controller stopped");
    result.map_err(ControllerError::Serve)
}

/// Runs the registry's periodic dispatch until shutdown.
async fn tick(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(DISPATCH_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => shared.registry().tick(Instant::now()),
            () = shared.shutdown.fired() => return,
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let authed = Router::new()
        .route(NODE_PATH, get(node_ws))
        .route(SHIM_PATH, get(shim_ws))
        .route(STATUS_PATH, get(status))
        .route(PROBES_PATH, get(probes::serve))
        .route(admin::METRICS_PATH, get(admin::metrics))
        .route(&format!("{}/{{name}}/drain", admin::NODES_PATH), post(admin::drain).delete(admin::undrain))
        .route(&format!("{}/{{id}}/log", joblog::JOBS_PATH), get(joblog::serve))
        .route(
            &format!("{}/{{id}}/{}/{{level}}", joblog::JOBS_PATH, admin::PRIORITY_SUFFIX),
            axum::routing::put(admin::set_priority),
        )
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_token));
    let open = Router::new()
        .route(&format!("{FILES_PATH}/{{access}}/{{file}}"), get(relay::serve_file))
        .route("/healthz", get(|| async { "ok" }))
        .route("/", get(dashboard::index))
        .route("/dashboard", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style));
    authed.merge(open).with_state(shared)
}

async fn require_token(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
    if presented.is_some_and(|t| secret_eq(t.as_bytes(), shared.config.token.as_bytes())) {
        return next.run(request).await;
    }
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "missing or wrong token\n").into_response()
}

async fn node_ws(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| node_link::handle(socket, shared, peer))
}

async fn shim_ws(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| shim_link::handle(socket, shared, peer))
}

async fn status(State(shared): State<Arc<Shared>>) -> axum::Json<Status> {
    axum::Json(shared.registry().status(Instant::now(), unix_ms_now()))
}
