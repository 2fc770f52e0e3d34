//! `ffcluster`: the controller daemon and the admin CLI.

mod admin;
mod bench;
mod demo;
mod explain;
mod serve;
mod status;
mod tls_init;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ffcluster", version, about = "Distributed ffmpeg for Jellyfin: controller and admin commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a controller and two nodes on loopback and run a Jellyfin-style
    /// HLS transcode through the shim on a generated clip.
    Demo(demo::Args),
    /// Run the controller: nodes and shims connect to it.
    Serve(serve::Args),
    /// Show the controller's nodes and jobs.
    Status(status::Args),
    /// List the connected nodes.
    Nodes(admin::ListArgs),
    /// List running and recent jobs.
    Jobs(admin::ListArgs),
    /// Print a job's log: its command line, where it ran, and the remote
    /// ffmpeg's stderr.
    Log(admin::LogArgs),
    /// Stop giving a node new work; what it runs finishes.
    Drain(admin::DrainArgs),
    /// Give a drained node work again (same as `drain --undo`).
    Undrain(admin::UndrainArgs),
    /// Set a running job's priority: interactive, streaming or batch.
    Priority(admin::PriorityArgs),
    /// Show how an ffmpeg command line is parsed and where the shim would run it.
    Explain(explain::Args),
    /// Measure the cluster on this machine (see contrib/docs/benchmarks.md).
    Bench(bench::Args),
    /// Write a private CA and a controller certificate it signs, for TLS.
    TlsInit(tls_init::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Status(args) => status::run(args),
        Command::Nodes(args) => admin::nodes(args),
        Command::Jobs(args) => admin::jobs(args),
        Command::Log(args) => admin::log(args),
        Command::Drain(args) => admin::drain(args),
        Command::Undrain(args) => admin::undrain(args),
        Command::Priority(args) => admin::priority(args),
        Command::Explain(args) => explain::run(args),
        Command::Bench(args) => bench::run(args),
        Command::TlsInit(args) => tls_init::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ffcluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A fresh 128-bit secret, hex-encoded.
fn random_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
