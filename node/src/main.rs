//! `ffcluster-node`: the node agent. It connects to a controller, says what its
//! ffmpeg can do, and runs the jobs it is sent: inputs read from the controller's
//! relay, outputs streamed back over the same WebSocket.

mod capabilities;
mod config;
mod fetch;
mod job;
mod link;
mod outputs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, PathMap};

/// ffcluster node agent: runs ffmpeg jobs for an ffcluster controller.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The controller's base URL, e.g. http://10.0.0.2:9470.
    #[arg(long, env = "FFCLUSTER_CONTROLLER")]
    controller: String,
    /// The shared secret for the controller.
    #[arg(long, env = "FFCLUSTER_TOKEN", hide_env_values = true)]
    token: String,
    /// This node's name [default: the host name].
    #[arg(long, env = "FFCLUSTER_NODE_NAME")]
    name: Option<String>,
    /// Jobs run at once.
    #[arg(long, env = "FFCLUSTER_NODE_SLOTS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    slots: u32,
    /// Working directory for jobs [default: $TMPDIR/ffcluster-node-<name>].
    #[arg(long, env = "FFCLUSTER_NODE_SCRATCH")]
    scratch: Option<PathBuf>,
    /// The ffmpeg to run [default: ffmpeg found on PATH].
    #[arg(long, env = "FFCLUSTER_NODE_FFMPEG")]
    ffmpeg: Option<PathBuf>,
    /// FROM=TO: the shim's files under FROM are readable here under TO (a shared
    /// mount); such inputs are read directly instead of through the controller.
    /// Repeatable; the environment variable takes a comma-separated list.
    #[arg(long = "path-map", env = "FFCLUSTER_NODE_PATH_MAP", value_delimiter = ',')]
    path_map: Vec<PathMap>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let cfg = Arc::new(config(cli)?);
    tracing::info!(
        name = %cfg.name,
        slots = cfg.slots,
        scratch = %cfg.scratch.display(),
        ffmpeg = %cfg.ffmpeg.display(),
        path_maps = ?cfg.path_maps.iter().map(|m| format!("{}={}", m.from, m.to)).collect::<Vec<_>>(),
        "starting"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{which}: stopping every job and exiting");
        let _ = stop_tx.send(true);
    });
    let started = Instant::now();
    let mut stop = stop_rx.clone();
    let caps = tokio::select! {
        caps = capabilities::probe(&cfg.ffmpeg) => caps?,
        // The probe's ffmpegs die with their futures (`kill_on_drop`).
        _ = stop.wait_for(|s| *s) => return Ok(()),
    };
    tracing::info!(
        version = %caps.ffmpeg_version,
        encoders = caps.encoders.len(),
        decoders = caps.decoders.len(),
        filters = caps.filters.len(),
        hwaccels = ?caps.hwaccels,
        cpus = caps.cpus,
        speed = format!("{:.1} fps", caps.speed),
        secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        "ffmpeg probed"
    );

    link::run(cfg.clone(), caps, stop_rx).await?;
    tracing::info!("stopped");
    Ok(())
}

fn config(cli: Cli) -> anyhow::Result<Config> {
    let name = match cli.name {
        Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
        _ => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".to_owned()),
    };
    let ffmpeg = match cli.ffmpeg {
        // Jobs run with the job directory as their working directory, so a relative
        // path must be made absolute now; a bare name is looked up on PATH.
        Some(p) => which::which(&p).with_context(|| format!("--ffmpeg {}: not an executable", p.display()))?,
        None => which::which("ffmpeg").context("no ffmpeg on PATH; give one with --ffmpeg")?,
    };
    let ffmpeg = std::path::absolute(&ffmpeg).with_context(|| format!("resolving {}", ffmpeg.display()))?;
    let scratch = cli.scratch.unwrap_or_else(|| config::default_scratch(&name));
    let scratch = config::prepare_scratch(&scratch)?;
    Ok(Config {
        controller: cli.controller,
        token: cli.token,
        name,
        slots: cli.slots,
        scratch,
        ffmpeg,
        path_maps: cli.path_map,
    })
}
