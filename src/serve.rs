//! `ffcluster serve`: the controller daemon.

use std::process::ExitCode;

use anyhow::{Context, bail};
use ffcluster::controller::{self, ControllerConfig};
use tracing_subscriber::EnvFilter;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address and port to listen on (nodes, shims and admins connect here).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9470")]
    listen: String,
    /// Shared secret that nodes, shims and admins present.
    #[arg(long, env = "FFCLUSTER_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let Some(token) = a.token.filter(|t| !t.trim().is_empty()) else {
        bail!(
            "no token: nodes, shims and admins authenticate with a shared secret.\n\
             Make one with `openssl rand -hex 16` and pass it with --token or FFCLUSTER_TOKEN"
        );
    };
    init_logging();
    if token.len() < 16 {
        tracing::warn!("the token is short ({} characters); `openssl rand -hex 16` makes a good one", token.len());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
        controller::run(listener, ControllerConfig::new(token), stop_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Logs to stderr; `RUST_LOG` overrides the default level, info.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            None
        }
    };
    let term = async {
        match &mut term {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}
