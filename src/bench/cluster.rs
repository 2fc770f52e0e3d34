//! `ffcluster bench cluster`: this cluster's speedup on a standard clip.
//!
//! Unlike `bench split`, which builds its own CPU-limited cluster on this
//! machine, this measures the cluster that is running: it generates the
//! standard clip here, runs Jellyfin's HLS transcode of it with the local
//! ffmpeg, then through the shim against the configured controller (as a split
//! job), checks that both made the same segments and frames, and prints the
//! wall times, the speedup, the time to the first segment both ways and which
//! nodes took part. It needs no root: nothing is limited, so "direct" is this
//! machine as it is, the honest comparison for a Jellyfin host.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use super::{
    ClipRun, Figures, Prepared, SEGMENT_SECS, WorkDir, catch_interrupts, check_output, later_ms, median, plural,
    prepare, real_tool, timed,
};
use crate::admin::Conn;
use crate::demo::{sibling, step};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    conn: Conn,
    /// Length of the generated clip in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3600))]
    seconds: u32,
    /// Height of the generated 16:9 clip; the transcode keeps its size.
    #[arg(long, default_value_t = 720, value_parser = clap::value_parser!(u32).range(144..=2160))]
    height: u32,
    /// Runs of each way; the figures are the medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Keep the working directory (clip, outputs, logs) after a successful run.
    #[arg(long)]
    keep: bool,
}

/// A speedup within this factor of 1 is "about as fast".
const SAME: f64 = 1.1;

pub(super) fn run(args: Args) -> Result<ExitCode> {
    let token = args.conn.token()?.to_owned();
    let tools = Tools::find()?;
    // Before any work: an unreachable controller or a wrong token is the
    // likeliest mistake.
    let status = args.conn.status()?;
    ensure!(!status.nodes.is_empty(), "the controller at {} has no nodes connected", args.conn.controller);
    catch_interrupts()?;
    let mut work = WorkDir::create()?;
    let result = measure(&args, &token, &tools, status.nodes.len(), &work.path);
    work.keep_if("ffcluster bench cluster", result.is_err(), args.keep);
    print!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

/// What this benchmark runs: the shim beside this executable and the real
/// ffmpeg (no node agent: the nodes are the cluster's).
#[derive(Debug)]
struct Tools {
    shim: PathBuf,
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools> {
        let exe = std::env::current_exe()?;
        let shim = sibling(exe.parent().context("executable directory")?, "ffcluster-shim")?;
        let ffmpeg = real_tool("FFCLUSTER_FFMPEG", "ffmpeg", &shim)?;
        Ok(Tools { ffprobe: real_tool("FFCLUSTER_FFPROBE", "ffprobe", &shim)?, ffmpeg, shim })
    }
}

/// The cluster run's job as the controller recorded it.
#[derive(Debug, Clone)]
struct ClusterJob {
    /// "split", "whole", or "local" when the controller recorded none.
    mode: String,
    nodes: Vec<String>,
    ids: Vec<u64>,
}

#[derive(Debug)]
struct Report {
    controller: String,
    seconds: u32,
    width: u32,
    height: u32,
    runs: u32,
    connected: usize,
    direct: Figures,
    cluster: Figures,
    jobs: Vec<ClusterJob>,
}

fn measure(args: &Args, token: &str, tools: &Tools, connected: usize, dir: &Path) -> Result<Report> {
    let Prepared { bin, logs, out, clip, width, height } =
        prepare(dir, &tools.shim, &tools.ffmpeg, args.seconds, args.height)?;

    let mut direct_samples = Vec::new();
    let mut cluster_samples = Vec::new();
    let mut jobs = Vec::new();
    let mut reference = None;
    for r in 1..=args.runs {
        step(&format!("direct ffmpeg on this machine, run {r}/{}", args.runs));
        let clip_run = ClipRun { clip: &clip, width, height, out: &out, logs: &logs };
        let direct = clip_run.direct(&tools.ffmpeg, &tools.ffprobe, r, None, &mut reference)?;

        let controller = &args.conn.controller;
        step(&format!("through the cluster at {controller}, run {r}/{}", args.runs));
        let target = out.join(format!("cluster-{r}"));
        let known: HashSet<u64> = args.conn.status()?.jobs.iter().map(|j| j.id).collect();
        let shim_log = logs.join(format!("shim-{r}.log"));
        let mut cmd =
            clip_run.through_shim(&bin, (&tools.ffmpeg, &tools.ffprobe), &target, controller, token, &shim_log);
        if let Some(ca) = &args.conn.tls_ca {
            cmd.env("FFCLUSTER_TLS_CA", ca);
        }
        let t = timed(cmd, &target, &logs.join(format!("cluster-{r}.stderr.log")))?;
        let status = args.conn.status()?;
        let new: Vec<_> = status.jobs.iter().filter(|j| !known.contains(&j.id)).collect();
        // Another client's job may have started meanwhile: ours ran this clip.
        let clip_name = clip.display().to_string();
        let ours: Vec<_> = new.iter().filter(|j| j.args.contains(&clip_name)).collect();
        let job = match ours.as_slice() {
            [] => ClusterJob { mode: "local".into(), nodes: Vec::new(), ids: Vec::new() },
            jobs => {
                let mut nodes: Vec<String> = jobs
                    .iter()
                    .flat_map(|j| j.nodes.clone().unwrap_or_default().into_iter().chain(j.node.clone()))
                    .collect();
                nodes.sort();
                nodes.dedup();
                let mut modes: Vec<String> = jobs.iter().map(|j| j.mode.to_string()).collect();
                modes.dedup();
                ClusterJob { mode: modes.join("+"), nodes, ids: jobs.iter().map(|j| j.id).collect() }
            }
        };
        if job.mode == "local" {
            bail!(
                "the controller recorded no job: the shim ran the transcode on this machine, so there is no \
                 cluster time to report; the reason is in {}",
                shim_log.display()
            );
        }
        let (segments, frames) = check_output(&tools.ffprobe, &target, reference)?;
        let figures = Figures {
            wall: t.wall,
            first_segment: t.first_segment,
            vs_direct_ms: Some(later_ms(t.first_segment, direct.first_segment)),
            shim_cpu: Some(t.children_cpu),
            controller_cpu: None,
            worker_cpu: None,
            frames,
            segments,
            mode: job.mode.clone(),
        };
        println!("    {} on {}", figures.summary(), job.nodes.join(", "));
        jobs.push(job);
        direct_samples.push(direct);
        cluster_samples.push(figures);
    }
    Ok(Report {
        controller: args.conn.controller.clone(),
        seconds: args.seconds,
        width,
        height,
        runs: args.runs,
        connected,
        direct: median(&direct_samples),
        cluster: median(&cluster_samples),
        jobs,
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (d, c) = (&self.direct, &self.cluster);
        let secs = |x: Duration| format!("{:.2} s", x.as_secs_f64());
        let speedup = d.wall.as_secs_f64() / c.wall.as_secs_f64().max(1e-9);
        let mut used: Vec<&str> = self.jobs.iter().flat_map(|j| j.nodes.iter().map(String::as_str)).collect();
        used.sort_unstable();
        used.dedup();
        let split = self.jobs.iter().all(|j| j.mode.split('+').any(|m| m == "split"));
        let runs = if self.runs > 1 { format!(", medians of {} runs", self.runs) } else { String::new() };
        let ids: Vec<String> = self.jobs.iter().flat_map(|j| j.ids.iter().map(|i| i.to_string())).collect();
        writeln!(f)?;
        writeln!(
            f,
            "ffcluster bench cluster: {} s of {}x{} 24000/1001, {SEGMENT_SECS} s segments, cluster at {}{runs}",
            self.seconds, self.width, self.height, self.controller
        )?;
        writeln!(f, "  wall time       direct {}, cluster {}", secs(d.wall), secs(c.wall))?;
        writeln!(f, "  speedup         {speedup:.2}x")?;
        writeln!(
            f,
            "  first segment   direct {}, cluster {} ({:+.0} ms)",
            secs(d.first_segment),
            secs(c.first_segment),
            later_ms(c.first_segment, d.first_segment)
        )?;
        writeln!(
            f,
            "  nodes used      {} of {} connected ({}), {} job{} {}",
            used.len(),
            self.connected,
            used.join(", "),
            self.jobs.iter().map(|j| j.mode.as_str()).collect::<Vec<_>>().join(", "),
            plural(u32::try_from(ids.len()).unwrap_or(u32::MAX)),
            ids.join(", ")
        )?;
        writeln!(f, "  outputs match   {} segments, {} frames, both ways", c.segments, c.frames)?;
        let verdict = if !split {
            "the transcode was not split (see `ffcluster log` for its job): it ran whole on one node, so the \
             figures say how fast that node is, not the cluster"
                .to_owned()
        } else if speedup >= SAME {
            format!("the cluster transcodes this clip {speedup:.2}x as fast as this machine alone")
        } else if speedup > 1.0 / SAME {
            "the cluster is about as fast as this machine alone: its nodes add little over the local CPU".to_owned()
        } else {
            format!(
                "the cluster is slower than this machine alone ({speedup:.2}x): its nodes are slower than this \
                 machine, busy, or held back by the network"
            )
        };
        writeln!(f, "verdict: {verdict}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(wall: f64, first: f64, mode: &str) -> Figures {
        Figures {
            wall: Duration::from_secs_f64(wall),
            first_segment: Duration::from_secs_f64(first),
            vs_direct_ms: None,
            shim_cpu: None,
            controller_cpu: None,
            worker_cpu: None,
            frames: 719,
            segments: 10,
            mode: mode.into(),
        }
    }

    fn report(cluster_wall: f64, mode: &str) -> String {
        Report {
            controller: "http://c:9470".into(),
            seconds: 30,
            width: 1280,
            height: 720,
            runs: 1,
            connected: 3,
            direct: figures(10.0, 2.0, "-"),
            cluster: figures(cluster_wall, 1.5, mode),
            jobs: vec![ClusterJob { mode: mode.into(), nodes: vec!["a".into(), "b".into()], ids: vec![7] }],
        }
        .to_string()
    }

    #[test]
    fn the_report_says_what_the_cluster_is_worth() {
        let r = report(4.0, "split");
        for want in [
            "  wall time       direct 10.00 s, cluster 4.00 s\n",
            "  speedup         2.50x\n",
            "  first segment   direct 2.00 s, cluster 1.50 s (-500 ms)\n",
            "  nodes used      2 of 3 connected (a, b), split job 7\n",
            "  outputs match   10 segments, 719 frames, both ways\n",
            "verdict: the cluster transcodes this clip 2.50x as fast as this machine alone\n",
        ] {
            assert!(r.contains(want), "{want:?} in\n{r}");
        }
        assert!(report(10.5, "split").contains("verdict: the cluster is about as fast"));
        assert!(report(20.0, "split").contains("verdict: the cluster is slower than this machine alone (0.50x)"));
        assert!(report(4.0, "whole").contains("verdict: the transcode was not split"));
    }
}
