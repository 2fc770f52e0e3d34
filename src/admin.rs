//! `ffcluster nodes`, `jobs`, `log`, `drain` and `undrain`: the admin commands
//! beyond `status`, all talking to the controller's authenticated API.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use ffcluster::controller::http_client::{fetch_log, fetch_status, set_drain, set_priority};
use ffcluster::controller::status::{JobState, Status};
use ffcluster::tls::Trust;

use crate::status::{job_row, node_row, table};

/// Where the controller is and how to authenticate (every admin command, `status`
/// and `bench cluster`).
#[derive(Debug, clap::Args)]
pub struct Conn {
    /// The controller's base URL (https:// for a controller with TLS).
    #[arg(long, value_name = "URL", env = "FFCLUSTER_CONTROLLER", default_value = "http://127.0.0.1:9470")]
    pub controller: String,
    /// The controller's shared secret.
    #[arg(long, env = "FFCLUSTER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's, for an
    /// https:// controller whose certificate a private CA signed.
    #[arg(long, value_name = "FILE", env = "FFCLUSTER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl Conn {
    pub fn token(&self) -> anyhow::Result<&str> {
        match self.token.as_deref().filter(|t| !t.trim().is_empty()) {
            Some(t) => Ok(t),
            None => bail!("no token: pass the controller's token with --token or FFCLUSTER_TOKEN"),
        }
    }

    pub fn trust(&self) -> Trust {
        Trust::new(self.tls_ca.clone())
    }

    pub fn status(&self) -> anyhow::Result<Status> {
        fetch_status(&self.controller, self.token()?, &self.trust())
            .with_context(|| format!("controller at {}", self.controller))
    }
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON (the status document's `nodes` or `jobs` array).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The job's id, as `ffcluster jobs` shows it.
    job: u64,
    /// Keep printing the log as it grows until the job ends.
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The node's name, as `ffcluster nodes` shows it.
    node: String,
    /// Undrain instead: the node gets work again.
    #[arg(long)]
    undo: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct PriorityArgs {
    /// The job's id, as `ffcluster jobs` shows it.
    job: u64,
    /// `interactive`, `streaming` or `batch`.
    level: ffcluster::priority::Priority,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct UndrainArgs {
    /// The node's name, as `ffcluster nodes` shows it.
    node: String,
    #[command(flatten)]
    conn: Conn,
}

pub fn nodes(a: ListArgs) -> anyhow::Result<ExitCode> {
    let doc = a.conn.status()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc.nodes)?);
    } else if doc.nodes.is_empty() {
        println!("no nodes connected");
    } else {
        let rows = doc
            .nodes
            .iter()
            .map(|n| {
                let mut row = node_row(n);
                row.insert(row.len() - 1, n.address.clone());
                row
            })
            .collect();
        print!("{}", table(&["NODE", "STATE", "RUN/SLOTS", "SPEED", "CPUS", "ADDRESS", "FFMPEG"], rows));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn jobs(a: ListArgs) -> anyhow::Result<ExitCode> {
    let doc = a.conn.status()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc.jobs)?);
    } else if doc.jobs.is_empty() {
        println!("no jobs yet");
    } else {
        let rows = doc
            .jobs
            .iter()
            .map(|j| {
                let mut row = job_row(j);
                row.insert(1, j.mode.to_string());
                row.insert(2, j.priority.to_string());
                row.insert(5, j.progress.as_ref().map_or_else(|| "-".to_owned(), |p| p.describe()));
                row
            })
            .collect();
        let header = ["JOB", "MODE", "PRIORITY", "STATE", "NODE", "PROGRESS", "DURATION", "EXIT", "REASON", "ARGS"];
        print!("{}", table(&header, rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// How often `log --follow` asks for more.
const FOLLOW_PERIOD: Duration = Duration::from_millis(500);

pub fn log(a: LogArgs) -> anyhow::Result<ExitCode> {
    let token = a.conn.token()?;
    let trust = a.conn.trust();
    let fetch = |after| fetch_log(&a.conn.controller, token, &trust, a.job, after);
    let context = || format!("controller at {}", a.conn.controller);
    if !a.follow {
        print!("{}", fetch(None).with_context(context)?.text);
        return Ok(ExitCode::SUCCESS);
    }
    // Following reads numbered lines only: a running chunk's stderr shows up
    // when the chunk ends, so that nothing is printed twice.
    let mut next = 0;
    loop {
        let log = fetch(Some(next)).with_context(context)?;
        let mut out = std::io::stdout().lock();
        out.write_all(log.text.as_bytes())?;
        out.flush()?;
        next = log.next;
        if log.state != JobState::Running {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(FOLLOW_PERIOD);
    }
}

pub fn drain(a: DrainArgs) -> anyhow::Result<ExitCode> {
    set(&a.conn, &a.node, !a.undo)
}

pub fn undrain(a: UndrainArgs) -> anyhow::Result<ExitCode> {
    set(&a.conn, &a.node, false)
}

pub fn priority(a: PriorityArgs) -> anyhow::Result<ExitCode> {
    let reply = set_priority(&a.conn.controller, a.conn.token()?, &a.conn.trust(), a.job, a.level)
        .with_context(|| format!("controller at {}", a.conn.controller))?;
    println!("job {}: priority {} (was {})", reply.job, reply.priority, reply.was);
    Ok(ExitCode::SUCCESS)
}

fn set(conn: &Conn, node: &str, draining: bool) -> anyhow::Result<ExitCode> {
    let reply = set_drain(&conn.controller, conn.token()?, &conn.trust(), node, draining)
        .with_context(|| format!("controller at {}", conn.controller))?;
    match (reply.draining, reply.connected) {
        (true, _) => println!("{}: draining (no new work; running jobs finish)", reply.node),
        (false, 0) => println!("{}: undrained (not connected)", reply.node),
        (false, _) => println!("{}: undrained (takes new work)", reply.node),
    }
    Ok(ExitCode::SUCCESS)
}
