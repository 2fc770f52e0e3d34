//! `ffcluster bench priority`: what a long batch encode costs a Jellyfin
//! playback that starts while it holds every node. For each cluster size the
//! playback runs on the idle cluster, then again while a batch encode (split,
//! `-preset medium`, a clip `--batch-factor` times longer) runs through the
//! shim; the table puts the playback's first segment and speed side by side,
//! and checks that the batch output still has every frame of its direct run.
//!
//! Goals (issue 20): the loaded first segment within 1.25× of idle, the loaded
//! speed at least 0.9× of idle. A missed goal is reported and exits 1, as do
//! a failed run and a wrong output.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use super::{
    ClipRun, Cluster, Prepared, Running, Tools, WorkDir, check_interrupted, check_output, conclude, generate_clip,
    parse_cpu, plural, prepare, quotas, shim_command, timed,
};
use crate::demo::{count_frames, fetch_status, step};

const FIRST_SEGMENT_GOAL: f64 = 1.25;
const SPEED_GOAL: f64 = 0.9;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cluster sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4", value_parser = clap::value_parser!(u32).range(1..=32))]
    nodes: Vec<u32>,
    /// Length of the playback's clip in seconds.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(6..=600))]
    seconds: u32,
    /// The batch encode's clip is this many times as long as the playback's.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(2..=100))]
    batch_factor: u32,
    /// Height of the generated 16:9 clips.
    #[arg(long, default_value_t = 360, value_parser = clap::value_parser!(u32).range(144..=2160))]
    height: u32,
    /// CPU share of each node agent, in cores.
    #[arg(long, default_value_t = 0.4, value_parser = parse_cpu)]
    cpu: f64,
    /// Keep the working directory (clips, outputs, logs) after a successful run.
    #[arg(long)]
    keep: bool,
    /// Run without CPU limits, for machines without a writable cgroup.
    #[arg(long)]
    no_limit: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Row {
    nodes: u32,
    idle_first_segment_ms: f64,
    loaded_first_segment_ms: f64,
    idle_wall_s: f64,
    loaded_wall_s: f64,
    /// Batch chunk attempts stopped for the playback.
    preempted: u32,
    batch_frames: u64,
}

impl Row {
    fn first_segment_ratio(&self) -> f64 {
        self.loaded_first_segment_ms / self.idle_first_segment_ms.max(1.0)
    }

    /// The playback's speed under load against idle (wall time is per the same content).
    fn speed_ratio(&self) -> f64 {
        self.idle_wall_s / self.loaded_wall_s.max(1e-3)
    }

    fn passed(&self) -> bool {
        self.first_segment_ratio() <= FIRST_SEGMENT_GOAL && self.speed_ratio() >= SPEED_GOAL
    }
}

#[derive(Debug, Serialize)]
struct Report {
    seconds: u32,
    batch_seconds: u32,
    cpu: f64,
    rows: Vec<Row>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "\nA {} s Jellyfin playback on an idle cluster and while a {} s batch encode (split, preset medium) \
             holds it; nodes of {:.2} CPU each.",
            self.seconds, self.batch_seconds, self.cpu
        )?;
        writeln!(
            f,
            "{:<6} {:>14} {:>16} {:>9} {:>11} {:>13} {:>9} {:>10}  goals",
            "nodes", "first seg idle", "first seg loaded", "ratio", "speed idle", "speed loaded", "ratio", "preempted"
        )?;
        for r in &self.rows {
            let speed = |wall: f64| f64::from(self.seconds) / wall.max(1e-3);
            writeln!(
                f,
                "{:<6} {:>12.0}ms {:>14.0}ms {:>8.2}x {:>10.2}x {:>12.2}x {:>8.2}x {:>10}  {}",
                r.nodes,
                r.idle_first_segment_ms,
                r.loaded_first_segment_ms,
                r.first_segment_ratio(),
                speed(r.idle_wall_s),
                speed(r.loaded_wall_s),
                r.speed_ratio(),
                r.preempted,
                if r.passed() { "met" } else { "MISSED" }
            )?;
        }
        writeln!(
            f,
            "goals: loaded first segment ≤ {FIRST_SEGMENT_GOAL}× idle, loaded speed ≥ {SPEED_GOAL}× idle; \
             every batch output had its direct run's frames."
        )
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let tools = Tools::find()?;
    let most = args.nodes.iter().copied().max().unwrap_or(1);
    let (limits, _direct) = quotas(args.no_limit, args.cpu, most)?;
    super::catch_interrupts()?;
    let work = WorkDir::create()?;
    let result = measure(&args, &tools, limits.as_ref(), &work.path);
    conclude(
        "ffcluster bench priority",
        work,
        result,
        |r: &Report| r.rows.iter().all(Row::passed),
        args.keep,
        args.json.as_deref(),
    )
}

fn measure(args: &Args, tools: &Tools, limits: Option<&super::CgroupFs>, dir: &Path) -> Result<Report> {
    let Prepared { bin, logs, out, clip, width, height } =
        prepare(dir, &tools.shim, &tools.ffmpeg, args.seconds, args.height)?;
    let batch_seconds = args.seconds * args.batch_factor;
    step(&format!("generating the batch encode's {batch_seconds} s clip"));
    let film = dir.join("film.mkv");
    generate_clip(&tools.ffmpeg, &film, batch_seconds, width, height)?;
    let batch_frames = {
        step("the batch encode directly, for its frame count");
        let target = out.join("batch-direct.mkv");
        let st = Command::new(&tools.ffmpeg)
            .args(batch_args(&film, &target))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        ensure!(st.success(), "the direct batch encode failed ({st})");
        count_frames(&tools.ffprobe, &target)?
    };
    let clip_run = ClipRun { clip: &clip, width, height, out: &out, logs: &logs };
    let mut reference = None;
    step("the playback directly, for its reference output");
    clip_run.direct(&tools.ffmpeg, &tools.ffprobe, 0, None, &mut reference)?;

    let mut rows = Vec::new();
    for &n in &args.nodes {
        step(&format!("starting a cluster of {n} node{}", plural(n)));
        let cluster = Cluster::start(tools, n, 1, limits, args.cpu, dir, &logs)?;
        let shim = |label: &str| {
            shim_command(
                &bin,
                (&tools.ffmpeg, &tools.ffprobe),
                &cluster.url,
                &cluster.token,
                &logs.join(format!("shim-{label}.log")),
            )
        };
        let playback = |label: &str| -> Result<super::Timed> {
            let target = out.join(label);
            let mut cmd = shim(label);
            cmd.args(crate::demo::jellyfin_hls_args(&clip, &target, super::STEM, width, height))
                .env("FFCLUSTER_MODE", "split");
            let t = timed(cmd, &target, &logs.join(format!("{label}.stderr.log")))?;
            check_output(&tools.ffprobe, &target, reference)?;
            Ok(t)
        };
        step(&format!("{n} node{}: the playback on the idle cluster", plural(n)));
        let idle = playback(&format!("idle-{n}"))?;

        step(&format!("{n} node{}: the batch encode, until it holds every node", plural(n)));
        let batch_out = out.join(format!("batch-{n}.mkv"));
        let mut cmd = shim(&format!("batch-{n}"));
        cmd.args(batch_args(&film, &batch_out))
            .env("FFCLUSTER_MODE", "split")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join(format!("batch-{n}.stderr.log")))?);
        let mut batch = Running(cmd.spawn().context("starting the batch encode")?);
        let t = Instant::now();
        loop {
            check_interrupted()?;
            let status = fetch_status(&cluster.url, &cluster.token)?;
            let running = status.jobs.iter().find(|j| j.state.to_string() == "running").and_then(|j| j.chunks_running);
            if running.is_some_and(|r| r >= n) {
                break;
            }
            ensure!(t.elapsed() < Duration::from_secs(120), "the batch encode never held all {n} nodes");
            ensure!(batch.0.try_wait()?.is_none(), "the batch encode ended before it held all {n} nodes");
            std::thread::sleep(Duration::from_millis(50));
        }
        step(&format!("{n} node{}: the playback while the batch encode runs", plural(n)));
        let loaded = playback(&format!("loaded-{n}"))?;
        let st = batch.0.wait()?;
        ensure!(st.success(), "the batch encode through the shim failed ({st})");
        let frames = count_frames(&tools.ffprobe, &batch_out)?;
        ensure!(frames == batch_frames, "the batch output has {frames} frames; its direct run {batch_frames}");
        let status = fetch_status(&cluster.url, &cluster.token)?;
        let preempted = status
            .jobs
            .iter()
            .filter(|j| j.priority == ffcluster::priority::Priority::Batch)
            .filter_map(|j| j.preempted)
            .sum();
        let row = Row {
            nodes: n,
            idle_first_segment_ms: idle.first_segment.as_secs_f64() * 1000.0,
            loaded_first_segment_ms: loaded.first_segment.as_secs_f64() * 1000.0,
            idle_wall_s: idle.wall.as_secs_f64(),
            loaded_wall_s: loaded.wall.as_secs_f64(),
            preempted,
            batch_frames: frames,
        };
        println!(
            "    first segment {:.0} ms idle, {:.0} ms loaded; {preempted} batch attempt{} preempted",
            row.idle_first_segment_ms,
            row.loaded_first_segment_ms,
            if preempted == 1 { "" } else { "s" }
        );
        rows.push(row);
    }
    Ok(Report { seconds: args.seconds, batch_seconds, cpu: args.cpu, rows })
}

/// A plain batch encode of `input` to a Matroska file.
fn batch_args(input: &Path, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["-nostdin".into(), "-y".into(), "-i".into(), input.display().to_string()];
    a.extend(["-c:v", "libx264", "-preset", "medium", "-crf", "22", "-c:a", "aac"].map(str::to_owned));
    a.push(out.display().to_string());
    a
}
