//! `ffcluster`: the controller daemon and the admin CLI.

mod explain;

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
    /// Show how an ffmpeg command line is parsed and where the shim would run it.
    Explain(explain::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Explain(args) => explain::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ffcluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}
