//! `ffcluster-node`: the node agent. It connects to a controller, says what its
//! ffmpeg can do, and runs the jobs it is sent: inputs read from the controller's
//! relay, outputs streamed back over the same WebSocket.

mod capabilities;
mod config;
mod fetch;
mod job;
mod link;
mod outputs;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Flags, Settings};

/// ffcluster node agent: runs ffmpeg jobs for an ffcluster controller.
///
/// Each setting is taken from its flag, else its environment variable, else the
/// config file (/etc/ffcluster/node.toml), else its default.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A configuration mistake is the usual cause: one readable line, the
            // way `ffcluster` reports errors, not a Debug dump.
            eprintln!("ffcluster-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let check_only = cli.flags.check_config;
    let settings = Settings::resolve(cli.flags, &ffcluster::config::process_env)?;
    if check_only {
        print!("{}", settings.report()?);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&settings.log_level.value)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Some(p) = &settings.file {
        tracing::info!(file = %p.display(), "configuration read");
    }
    let mut cfg = settings.into_config()?;
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
    let probed = tokio::select! {
        p = capabilities::probe(&cfg.ffmpeg, &cfg.hardware, &cfg.translations) => p?,
        // The probe's ffmpegs die with their futures (`kill_on_drop`).
        _ = stop.wait_for(|s| *s) => return Ok(()),
    };
    // Jobs apply the translations whose target this ffmpeg really has.
    cfg.translations = probed.translations;
    let cfg = Arc::new(cfg);
    let caps = probed.caps;
    tracing::info!(
        version = %caps.ffmpeg_version,
        encoders = caps.encoders.len(),
        decoders = caps.decoders.len(),
        filters = caps.filters.len(),
        hwaccels = ?caps.hwaccels,
        hardware = ?probed.hardware,
        probes = probed.answers.len(),
        cpus = caps.cpus,
        speed = format!("{:.1} fps", caps.speed),
        secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        "ffmpeg probed"
    );

    link::run(cfg.clone(), caps, probed.answers, stop_rx).await?;
    tracing::info!("stopped");
    Ok(())
}
