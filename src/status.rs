//! `ffcluster status [--json]`: what the controller knows about nodes and jobs.

use std::fmt::Write as _;
use std::process::ExitCode;

use ffcluster::controller::status::{JobMode, JobStatus, NodeStatus, Status};

use crate::admin::Conn;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the status document as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Longest argument list shown in the jobs table.
const ARGS_WIDTH: usize = 60;

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let doc = a.conn.status()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", text(&doc));
    }
    Ok(ExitCode::SUCCESS)
}

fn text(doc: &Status) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "controller {} (protocol {}), up {}", doc.version, doc.protocol, duration(doc.uptime_ms));
    let _ = writeln!(s);
    if doc.nodes.is_empty() {
        let _ = writeln!(s, "no nodes connected");
    } else {
        let rows = doc.nodes.iter().map(node_row).collect();
        s.push_str(&table(&["NODE", "STATE", "RUN/SLOTS", "SPEED", "CPUS", "FFMPEG"], rows));
    }
    let _ = writeln!(s);
    if doc.jobs.is_empty() {
        let _ = writeln!(s, "no jobs yet");
    } else {
        let rows = doc.jobs.iter().map(job_row).collect();
        s.push_str(&table(&["JOB", "STATE", "NODE", "DURATION", "EXIT", "REASON", "ARGS"], rows));
    }
    s
}

pub(crate) fn node_row(n: &NodeStatus) -> Vec<String> {
    let version = n.ffmpeg_version.strip_prefix("ffmpeg version ").unwrap_or(&n.ffmpeg_version);
    vec![
        n.name.clone(),
        n.state.to_string(),
        format!("{}/{}", n.running, n.slots),
        format!("{:.0} fps", n.speed),
        n.cpus.to_string(),
        version.split_whitespace().next().unwrap_or("?").into(),
    ]
}

pub(crate) fn job_row(j: &JobStatus) -> Vec<String> {
    let exit = match (j.exit_code, &j.error) {
        (Some(c), _) => c.to_string(),
        (None, Some(_)) => "!".into(),
        (None, None) => "-".into(),
    };
    let mut args = shorten(&j.args, ARGS_WIDTH);
    if let Some(e) = &j.error {
        args = format!("{args}  [{e}]");
    }
    for (what, w) in j.why.each() {
        args = format!("{args}  [{what}: {}]", w.detail);
    }
    let node = match (j.mode, j.chunks_done, j.chunks_planned) {
        (JobMode::Split, Some(done), Some(planned)) => {
            let on = j.nodes.as_deref().filter(|n| !n.is_empty()).map(|n| format!(" on {}", n.join(",")));
            format!("split {done}/{planned} chunks{}", on.unwrap_or_default())
        }
        _ => j.node.clone().unwrap_or_else(|| "-".into()),
    };
    vec![j.id.to_string(), j.state.to_string(), node, duration(j.duration_ms), exit, reason(j), args]
}

/// The job's most telling reason code: why it was not split, resumed or fell
/// back when it was, else the shim's reason for offloading it.
fn reason(j: &JobStatus) -> String {
    let codes: Vec<&str> = j.why.each().map(|(_, w)| w.code.as_str()).collect();
    if codes.is_empty() { j.reason.clone() } else { codes.join(",") }
}

/// Columns padded to their widest cell; the last one is left ragged.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let last = row.len().saturating_sub(1);
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{cut}…")
}

pub(crate) fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffcluster::controller::status::{JobState, NodeState, Reasons};
    use ffcluster::protocol::Why;

    #[test]
    fn summary() {
        let doc = Status {
            version: "0.1.0".into(),
            protocol: 1,
            uptime_ms: 3_723_000,
            now_unix_ms: 0,
            nodes: vec![NodeStatus {
                id: 1,
                name: "gpu-box".into(),
                state: NodeState::Busy,
                slots: 2,
                running: 2,
                speed: 412.3,
                cpus: 16,
                ffmpeg_version: "ffmpeg version 5.1.9-0+deb12u1 Copyright (c)".into(),
                agent: String::new(),
                address: "10.0.0.5:50000".into(),
                connected_ms: 1,
                last_seen_ms_ago: 2,
                caps: Default::default(),
            }],
            jobs: vec![
                JobStatus {
                    id: 13,
                    mode: JobMode::Split,
                    priority: ffcluster::priority::Priority::Interactive,
                    state: JobState::Running,
                    node: None,
                    args: "-i /media/b.mkv".into(),
                    reason: "split.hls".into(),
                    why: Reasons::default(),
                    started_unix_ms: 0,
                    duration_ms: 4_000,
                    exit_code: None,
                    error: None,
                    chunks_done: Some(5),
                    chunks_running: Some(2),
                    chunks_planned: Some(9),
                    nodes: Some(vec!["a".into(), "b".into()]),
                    reissued: Some(0),
                    preempted: None,
                    live_lag_ms: None,
                    progress: None,
                    chunks: Vec::new(),
                },
                JobStatus {
                    id: 12,
                    mode: JobMode::Whole,
                    priority: ffcluster::priority::Priority::Batch,
                    state: JobState::Failed,
                    node: Some("gpu-box".into()),
                    args: "-i /media/a.mkv ".repeat(10),
                    reason: "split.hls".into(),
                    why: Reasons {
                        not_split: Some(Why::new("nosplit.too_short", "the input is too short to split (3.0 s)")),
                        ..Reasons::default()
                    },
                    started_unix_ms: 0,
                    duration_ms: 63_000,
                    exit_code: None,
                    error: Some("node gpu-box lost".into()),
                    chunks_done: None,
                    chunks_running: None,
                    chunks_planned: None,
                    nodes: None,
                    reissued: None,
                    preempted: None,
                    live_lag_ms: None,
                    progress: None,
                    chunks: Vec::new(),
                },
            ],
        };
        let t = text(&doc);
        assert!(t.starts_with("controller 0.1.0 (protocol 1), up 1h02m\n"), "{t}");
        assert!(t.contains("gpu-box  busy   2/2        412 fps  16    5.1.9-0+deb12u1\n"), "{t}");
        assert!(
            t.contains("12   failed   gpu-box                  1m03s     !     nosplit.too_short  -i /media/a.mkv"),
            "{t}"
        );
        assert!(
            t.contains("13   running  split 5/9 chunks on a,b  4.0s      -     split.hls          -i /media/b.mkv\n"),
            "{t}"
        );
        assert!(t.contains("…  [node gpu-box lost]  [not split: the input is too short to split (3.0 s)]\n"), "{t}");
        assert_eq!(duration(1500), "1.5s");
    }
}
