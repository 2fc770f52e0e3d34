//! `ffcluster bench split`: how much faster one Jellyfin HLS transcode gets when
//! the cluster splits it across 1, 2 and 4 nodes, measured on one machine.
//!
//! Every node agent and the direct ffmpeg run in a CPU cgroup of their own with
//! the same quota, so that "N nodes" has N times the CPU of the direct run. The
//! shim, its finisher and the controller run unlimited: they stand for the
//! Jellyfin host, whose CPU use is one of the figures. It is a measurement, not a
//! test: a missed goal still exits 0; a failed run or an output that differs from
//! the direct one does not.

use std::collections::{BTreeSet, HashSet};
use std::ffi::{CString, c_int};
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::demo::{Children, SEGMENT_SECS, count_frames, fetch_status, jellyfin_hls_args, sibling, step};

/// `bench cluster`: the running cluster's speedup (reuses this module's clip,
/// timing and checks).
mod cluster;
/// `bench live`: a live channel through the cluster against one node alone
/// (issue 8); reuses this module's cgroups, cluster and shim.
mod live;
/// `bench priority`: a playback's first segment and speed while a batch
/// encode holds the cluster, against the idle cluster (issue 20).
mod priority;
/// `bench soak`: many Jellyfin playback sessions with seeks and stops against
/// an embedded cluster, for minutes (reuses this module's clip and cluster).
mod soak;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Time Jellyfin's HLS transcode of a generated clip run directly and through
    /// clusters of 1, 2 and 4 local nodes, each node and the direct run limited to
    /// the same CPU share.
    Split(SplitArgs),
    /// Measure the running cluster: time Jellyfin's HLS transcode of a
    /// generated clip with the local ffmpeg, then through the shim against the
    /// configured controller, check both outputs match, and print the speedup.
    Cluster(cluster::Args),
    /// Follow a real-time live channel (Jellyfin's Live TV HLS transcode) with
    /// the real ffmpeg on one CPU-limited node's share, through the shim on one
    /// node, and split across a local cluster; report the sustained speed
    /// against real time and the latency each adds.
    Live(live::Args),
    /// Play many Jellyfin-style HLS sessions at once, with seeks and stops,
    /// against a cluster started on this machine, for minutes; report segments
    /// served and lost, time until a segment is ready and the controller's memory.
    Soak(soak::Args),
    /// Time a Jellyfin playback on an idle local cluster and while a long
    /// batch encode holds every node; print its first segment and speed side
    /// by side, and the batch chunks it preempted.
    Priority(priority::Args),
}

#[derive(Debug, clap::Args)]
struct SplitArgs {
    /// Cluster sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4", value_parser = clap::value_parser!(u32).range(1..=32))]
    nodes: Vec<u32>,
    /// Length of the generated clip in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    seconds: u32,
    /// Height of the generated 16:9 clip; the transcode keeps its size.
    #[arg(long, default_value_t = 720, value_parser = clap::value_parser!(u32).range(144..=2160))]
    height: u32,
    /// CPU share of each node agent and of the direct run, in cores.
    #[arg(long, default_value_t = 0.4, value_parser = parse_cpu)]
    cpu: f64,
    /// Runs of each configuration; the table shows the medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Keep the working directory (clip, outputs, logs) after a successful run.
    #[arg(long)]
    keep: bool,
    /// Run without CPU limits, for machines without a writable cgroup (the
    /// comparison is then not fair).
    #[arg(long)]
    no_limit: bool,
}

/// The file name stem Jellyfin gives a transcode (an MD5 of the request).
const STEM: &str = "d41d8cd98f00b204e9800998ecf8427e";
/// How often the segment files and the process are looked at.
const POLL: Duration = Duration::from_millis(5);
/// `TranscodingJob.Stop()`: after `q`, ffmpeg gets this long, then SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The CFS period the quotas are expressed in.
const PERIOD_US: u64 = 100_000;
/// Node agents measure a speed score before they register; under a small quota
/// that takes a while.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(180);
/// The goals.
const SPEEDUP_GOALS: [(u32, f64); 2] = [(2, 0.9), (4, 0.85)];
const FIRST_SEGMENT_GOAL_MS: f64 = 150.0;
const SHIM_CPU_GOAL_PERCENT: f64 = 10.0;

fn parse_cpu(s: &str) -> Result<f64, String> {
    let cpu: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.01..=1024.0).contains(&cpu) {
        return Err("expected a number of cores between 0.01 and 1024".into());
    }
    Ok(cpu)
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        BenchCommand::Split(a) => split(a),
        BenchCommand::Cluster(a) => cluster::run(a),
        BenchCommand::Live(a) => live::run(a),
        BenchCommand::Soak(a) => soak::run(a),
        BenchCommand::Priority(a) => priority::run(a),
    }
}

fn split(mut args: SplitArgs) -> Result<ExitCode> {
    let mut seen = HashSet::new();
    args.nodes.retain(|n| seen.insert(*n));
    let tools = Tools::find()?;
    let (limits, direct_cgroup) = quotas(args.no_limit, args.cpu, args.nodes.iter().copied().max().unwrap_or(1))?;
    catch_interrupts()?;

    let mut work = WorkDir::create()?;
    let result = measure(&args, &tools, limits.as_ref(), direct_cgroup, &work.path);
    work.keep_if("ffcluster bench split", result.is_err(), args.keep);
    let report = result?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// The CPU quotas of a benchmark run: where cgroups are made (`None` with
/// `--no-limit`, after a warning) and the direct run's cgroup of `cpu` cores.
/// Warns when `most` nodes of `cpu` cores each exceed this machine.
fn quotas(no_limit: bool, cpu: f64, most: u32) -> Result<(Option<CgroupFs>, Option<Cgroup>)> {
    let no_cgroup = "cannot limit CPU with a cgroup (that needs root); \
                     pass --no-limit to measure anyway (not a fair comparison)";
    if no_limit {
        eprintln!(
            "warning: --no-limit: nodes and the direct run share the machine unlimited; the comparison is not fair"
        );
        return Ok((None, None));
    }
    let limits = CgroupFs::detect().context(no_cgroup)?;
    // Made first: it is what fails without root or a writable cgroup.
    let direct = limits.create("direct", cpu).context(no_cgroup)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if f64::from(most) * cpu > cores as f64 {
        eprintln!("warning: {most} nodes x {cpu:.2} CPU exceeds this machine's {cores} CPUs: the nodes will compete");
    }
    Ok((Some(limits), Some(direct)))
}

/// Ends a benchmark that checks what it measures: keeps the working directory
/// when it failed (or when asked to), prints the report, also writes it as
/// JSON when asked to, and exits non-zero unless it passed.
fn conclude<R: std::fmt::Display + serde::Serialize>(
    what: &str,
    mut work: WorkDir,
    result: Result<R>,
    passed: fn(&R) -> bool,
    keep: bool,
    json: Option<&Path>,
) -> Result<ExitCode> {
    let ok = result.as_ref().is_ok_and(passed);
    work.keep_if(what, !ok, keep);
    let report = result?;
    print!("{report}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The programs the benchmark runs.
#[derive(Debug)]
struct Tools {
    ffcluster: PathBuf,
    node: PathBuf,
    shim: PathBuf,
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools> {
        let ffcluster = std::env::current_exe()?;
        let bins = ffcluster.parent().context("executable directory")?;
        let node = sibling(bins, "ffcluster-node")?;
        let shim = sibling(bins, "ffcluster-shim")?;
        Ok(Tools {
            ffmpeg: real_tool("FFCLUSTER_FFMPEG", "ffmpeg", &shim)?,
            ffprobe: real_tool("FFCLUSTER_FFPROBE", "ffprobe", &shim)?,
            ffcluster,
            node,
            shim,
        })
    }
}

/// The real `name` (ffmpeg or ffprobe): `var`, else `PATH`; never `shim`,
/// which on a Jellyfin host may be what `ffmpeg` on `PATH` is.
fn real_tool(var: &str, name: &str, shim: &Path) -> Result<PathBuf> {
    let wanted = std::env::var_os(var).filter(|v| !v.is_empty()).unwrap_or_else(|| name.into());
    let path = which::which(&wanted).with_context(|| {
        format!("{} not found (apt-get install ffmpeg, or set {var})", Path::new(&wanted).display())
    })?;
    if std::fs::canonicalize(&path)? == std::fs::canonicalize(shim)? {
        bail!("{} is ffcluster-shim; set {var} to the real {name}", path.display());
    }
    Ok(path)
}

/// The benchmark's working directory, removed on drop unless `keep`.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create() -> Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("ffcluster-bench-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("emptying {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path, keep: false })
    }
}

impl WorkDir {
    /// Keeps the directory after a failure (saying where) or when asked to.
    fn keep_if(&mut self, what: &str, failed: bool, asked: bool) {
        if failed {
            self.keep = true;
            eprintln!("{what}: the clip, outputs and logs are kept in {}", self.path.display());
        } else if asked {
            self.keep = true;
            println!("kept: {}", self.path.display());
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What one configuration (direct, or N nodes) measured: one run's figures, or
/// the medians of several.
#[derive(Debug, Clone)]
struct Figures {
    wall: Duration,
    /// Until segments 0 and 1 both exist (Jellyfin serves segment 0 then).
    first_segment: Duration,
    /// `first_segment` less the direct run's of the same round, in ms.
    vs_direct_ms: Option<f64>,
    /// CPU of the shim and the children it waited for (the finisher).
    shim_cpu: Option<Duration>,
    controller_cpu: Option<Duration>,
    /// CPU of the direct ffmpeg, or of every node agent and its ffmpegs.
    worker_cpu: Option<Duration>,
    frames: u64,
    segments: usize,
    /// The controller's job modes, "local" when it recorded no job.
    mode: String,
}

#[derive(Debug)]
struct Row {
    /// `None` for the direct run.
    nodes: Option<u32>,
    figures: Figures,
}

fn measure(
    args: &SplitArgs,
    tools: &Tools,
    limits: Option<&CgroupFs>,
    direct_cgroup: Option<Cgroup>,
    dir: &Path,
) -> Result<Report> {
    let Prepared { bin, logs, out, clip, width, height } =
        prepare(dir, &tools.shim, &tools.ffmpeg, args.seconds, args.height)?;

    // Every cluster starts first and each round runs direct and every cluster
    // size back to back: the machine drifts by more than the differences the
    // goals are about, and a round compares runs made under the same drift.
    let mut clusters = Vec::new();
    for &n in &args.nodes {
        step(&format!("starting a cluster of {n} node{}", plural(n)));
        clusters.push((n, Cluster::start(tools, n, 1, limits, args.cpu, dir, &logs)?));
    }
    let mut direct_samples: Vec<Figures> = Vec::new();
    let mut cluster_samples: Vec<Vec<Figures>> = vec![Vec::new(); clusters.len()];
    let mut reference = None;
    for r in 1..=args.runs {
        step(&format!("direct ffmpeg, run {r}/{}", args.runs));
        let clip_run = ClipRun { clip: &clip, width, height, out: &out, logs: &logs };
        let direct = clip_run.direct(&tools.ffmpeg, &tools.ffprobe, r, direct_cgroup.as_ref(), &mut reference)?;

        for ((n, cluster), samples) in clusters.iter().zip(&mut cluster_samples) {
            let n = *n;
            step(&format!("{n} node{} through the shim, run {r}/{}", plural(n), args.runs));
            let label = format!("nodes{n}-{r}");
            let target = out.join(&label);
            let known: HashSet<u64> = fetch_status(&cluster.url, &cluster.token)?.jobs.iter().map(|j| j.id).collect();
            let controller_before = process_cpu(cluster.controller);
            let workers_before = cluster.worker_cpu();
            let shim_log = logs.join(format!("shim-{label}.log"));
            let cmd = clip_run.through_shim(
                &bin,
                (&tools.ffmpeg, &tools.ffprobe),
                &target,
                &cluster.url,
                &cluster.token,
                &shim_log,
            );
            let t = timed(cmd, &target, &logs.join(format!("shim-{label}.stderr.log")))?;
            let controller_cpu = delta(process_cpu(cluster.controller), controller_before);
            let worker_cpu = delta(cluster.worker_cpu(), workers_before);
            let status = fetch_status(&cluster.url, &cluster.token)?;
            let modes: BTreeSet<String> =
                status.jobs.iter().filter(|j| !known.contains(&j.id)).map(|j| j.mode.to_string()).collect();
            let mode = if modes.is_empty() {
                eprintln!("warning: the controller recorded no job: the shim ran it here; see {}", shim_log.display());
                "local".to_owned()
            } else {
                modes.into_iter().collect::<Vec<_>>().join("+")
            };
            let (segments, frames) = check_output(&tools.ffprobe, &target, reference)?;
            let figures = Figures {
                wall: t.wall,
                first_segment: t.first_segment,
                vs_direct_ms: Some(later_ms(t.first_segment, direct.first_segment)),
                shim_cpu: Some(t.children_cpu),
                controller_cpu,
                worker_cpu,
                frames,
                segments,
                mode,
            };
            println!("    {}", figures.summary());
            samples.push(figures);
        }
        direct_samples.push(direct);
    }
    drop(direct_cgroup);
    let mut rows = vec![Row { nodes: None, figures: median(&direct_samples) }];
    for ((n, _), samples) in clusters.iter().zip(&cluster_samples) {
        rows.push(Row { nodes: Some(*n), figures: median(samples) });
    }
    Ok(Report {
        seconds: args.seconds,
        width,
        height,
        cpu: args.cpu,
        runs: args.runs,
        limits: limits.map(CgroupFs::describe),
        rows,
    })
}

/// A benchmark's working directory: the shim's `ffmpeg`/`ffprobe` links in
/// `bin`, `logs`, `out`, and the generated clip.
struct Prepared {
    bin: PathBuf,
    logs: PathBuf,
    out: PathBuf,
    clip: PathBuf,
    width: u32,
    height: u32,
}

/// Makes `dir`'s `bin` (the shim as `ffmpeg` and `ffprobe`), `logs` and `out`.
fn layout(dir: &Path, shim: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let (bin, logs, out) = (dir.join("bin"), dir.join("logs"), dir.join("out"));
    for d in [&bin, &logs, &out] {
        std::fs::create_dir_all(d)?;
    }
    symlink(shim, bin.join("ffmpeg"))?;
    symlink(shim, bin.join("ffprobe"))?;
    Ok((bin, logs, out))
}

/// Lays out `dir` and generates the standard clip (`seconds` long, 16:9 at
/// `height`).
fn prepare(dir: &Path, shim: &Path, ffmpeg: &Path, seconds: u32, height: u32) -> Result<Prepared> {
    let (bin, logs, out) = layout(dir, shim)?;
    let width = (height * 16 / 9).div_ceil(2) * 2;
    step(&format!("generating a {seconds} s {width}x{height} clip with 5.1 audio"));
    let clip = dir.join("source.mkv");
    generate_clip(ffmpeg, &clip, seconds, width, height)?;
    Ok(Prepared { bin, logs, out, clip, width, height })
}

/// The clip and where its runs write.
struct ClipRun<'a> {
    clip: &'a Path,
    width: u32,
    height: u32,
    out: &'a Path,
    logs: &'a Path,
}

impl ClipRun<'_> {
    /// Run `r` of the real ffmpeg on the clip (in `cgroup` if given), checked
    /// against `reference` (set by the first run).
    fn direct(
        &self,
        ffmpeg: &Path,
        ffprobe: &Path,
        r: u32,
        cgroup: Option<&Cgroup>,
        reference: &mut Option<(usize, u64)>,
    ) -> Result<Figures> {
        let target = self.out.join(format!("direct-{r}"));
        let mut cmd = Command::new(ffmpeg);
        cmd.args(jellyfin_hls_args(self.clip, &target, STEM, self.width, self.height));
        if let Some(cg) = cgroup {
            cg.confine(&mut cmd);
        }
        let t = timed(cmd, &target, &self.logs.join(format!("direct-{r}.stderr.log")))?;
        let (segments, frames) = check_output(ffprobe, &target, *reference)?;
        reference.get_or_insert((segments, frames));
        let direct = Figures {
            wall: t.wall,
            first_segment: t.first_segment,
            vs_direct_ms: None,
            shim_cpu: None,
            controller_cpu: None,
            worker_cpu: Some(t.children_cpu),
            frames,
            segments,
            mode: "-".into(),
        };
        println!("    {}", direct.summary());
        Ok(direct)
    }

    /// The same transcode through the shim (`bin/ffmpeg`), split on the
    /// cluster at `controller`; `real` is the real ffmpeg and ffprobe.
    fn through_shim(
        &self,
        bin: &Path,
        real: (&Path, &Path),
        target: &Path,
        controller: &str,
        token: &str,
        shim_log: &Path,
    ) -> Command {
        let mut cmd = shim_command(bin, real, controller, token, shim_log);
        cmd.args(jellyfin_hls_args(self.clip, target, STEM, self.width, self.height)).env("FFCLUSTER_MODE", "split");
        cmd
    }
}

/// The shim as `ffmpeg` in `bin`, as a Jellyfin host runs it, configured by
/// environment for the cluster at `controller`; `real` is the real ffmpeg and
/// ffprobe.
fn shim_command(bin: &Path, real: (&Path, &Path), controller: &str, token: &str, shim_log: &Path) -> Command {
    let mut cmd = Command::new(bin.join("ffmpeg"));
    cmd.env("FFCLUSTER_CONTROLLER", controller)
        .env("FFCLUSTER_TOKEN", token)
        .env("FFCLUSTER_FFMPEG", real.0)
        .env("FFCLUSTER_FFPROBE", real.1)
        .env("FFCLUSTER_LOG", shim_log);
    cmd
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl Figures {
    fn summary(&self) -> String {
        let mut s = format!(
            "{:.2} s, segments 0 and 1 after {:.2} s, {} segments, {} frames",
            self.wall.as_secs_f64(),
            self.first_segment.as_secs_f64(),
            self.segments,
            self.frames
        );
        if let Some(cpu) = self.shim_cpu {
            s.push_str(&format!(", shim CPU {:.2} s, mode {}", cpu.as_secs_f64(), self.mode));
        }
        s
    }
}

/// The median of each figure on its own (the lower middle for an even count).
fn median(samples: &[Figures]) -> Figures {
    fn mid<T: Ord + Copy>(mut v: Vec<T>) -> T {
        v.sort_unstable();
        v[(v.len() - 1) / 2]
    }
    let opt = |f: fn(&Figures) -> Option<Duration>| samples.iter().map(f).collect::<Option<Vec<_>>>().map(mid);
    let modes: BTreeSet<&str> = samples.iter().map(|s| s.mode.as_str()).collect();
    Figures {
        wall: mid(samples.iter().map(|s| s.wall).collect()),
        first_segment: mid(samples.iter().map(|s| s.first_segment).collect()),
        vs_direct_ms: samples.iter().map(|s| s.vs_direct_ms).collect::<Option<Vec<f64>>>().map(|mut v| {
            v.sort_unstable_by(f64::total_cmp);
            v[(v.len() - 1) / 2]
        }),
        shim_cpu: opt(|s| s.shim_cpu),
        controller_cpu: opt(|s| s.controller_cpu),
        worker_cpu: opt(|s| s.worker_cpu),
        frames: samples[0].frames,
        segments: samples[0].segments,
        mode: modes.into_iter().collect::<Vec<_>>().join(","),
    }
}

fn delta(after: Option<Duration>, before: Option<Duration>) -> Option<Duration> {
    Some(after?.saturating_sub(before?))
}

/// `testsrc2` at 23.976 fps with a 5.1 AC3 tone, keyframes every 48 frames (2 s).
fn generate_clip(ffmpeg: &Path, clip: &Path, seconds: u32, width: u32, height: u32) -> Result<()> {
    let mut cmd = generator(ffmpeg);
    cmd.args(["-f", "lavfi", "-i", &format!("testsrc2=size={width}x{height}:rate=24000/1001:duration={seconds}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={seconds}")])
        .args(["-filter:a", "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        .args(["-g", "48", "-keyint_min", "48", "-sc_threshold", "0"])
        .args(["-c:a", "ac3", "-b:a", "384k"])
        .arg(clip);
    generate(cmd, "generating the clip")
}

/// A quiet ffmpeg that writes a generated input, overwriting it.
fn generator(ffmpeg: &Path) -> Command {
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    cmd
}

/// Runs a `generator`; `what` it does names it in the error.
fn generate(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output().context("running ffmpeg")?;
    check_interrupted()?;
    ensure!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// Counts the `.ts` segments and decodes the playlist's video; with a reference
/// (the direct run's), both must match it.
fn check_output(ffprobe: &Path, dir: &Path, reference: Option<(usize, u64)>) -> Result<(usize, u64)> {
    let segments = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ts"))
        .count();
    let playlist = dir.join(format!("{STEM}.m3u8"));
    ensure!(playlist.is_file(), "no playlist in {}", dir.display());
    let frames = count_frames(ffprobe, &playlist)?;
    check_interrupted()?;
    ensure!(segments > 0 && frames > 0, "{}: {segments} segments, {frames} frames", dir.display());
    if let Some((want_segments, want_frames)) = reference {
        ensure!(
            (segments, frames) == (want_segments, want_frames),
            "{}: {segments} segments and {frames} frames; the direct run made {want_segments} and {want_frames}",
            dir.display()
        );
    }
    Ok((segments, frames))
}

#[derive(Debug)]
struct Timed {
    wall: Duration,
    first_segment: Duration,
    /// CPU of the process and the children it waited for.
    children_cpu: Duration,
}

/// Runs one transcode writing into `out` and times it: until it exits, and until
/// segments 0 and 1 both exist (Jellyfin's rule for serving segment 0).
fn timed(mut cmd: Command, out: &Path, stderr_log: &Path) -> Result<Timed> {
    std::fs::create_dir_all(out)?;
    let (seg0, seg1) = (out.join(format!("{STEM}0.ts")), out.join(format!("{STEM}1.ts")));
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(File::create(stderr_log)?);
    let program = cmd.get_program().to_string_lossy().into_owned();
    // The process is our only child that can end while it runs, so the rusage of
    // waited-for children grows by its CPU (and its own waited-for children's).
    let before = children_cpu()?;
    let started = Instant::now();
    let mut child = Running(cmd.spawn().with_context(|| format!("starting {program}"))?);
    // Jellyfin keeps ffmpeg's stdin open (it writes `q` there to stop a transcode).
    let _stdin = child.0.stdin.take();
    let mut first = None;
    let status: ExitStatus = loop {
        if first.is_none() && seg0.exists() && seg1.exists() {
            first = Some(started.elapsed());
        }
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        check_interrupted()?;
        std::thread::sleep(POLL);
    };
    let wall = started.elapsed();
    let children_cpu = children_cpu()?.saturating_sub(before);
    // A Ctrl-C reaches the process too; say so rather than that it failed.
    check_interrupted()?;
    ensure!(status.success(), "{program} exited with {status}; its stderr is in {}", stderr_log.display());
    Ok(Timed { wall, first_segment: first.unwrap_or(wall), children_cpu })
}

/// A child stopped (SIGTERM, then SIGKILL) if it is still running when dropped.
#[derive(Debug)]
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU of the children this process has waited for.
fn children_cpu() -> Result<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64) + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Ok(d(u.user_time()) + d(u.system_time()))
}

/// User plus system CPU of a running process (all its threads), from /proc.
fn process_cpu(pid: u32) -> Option<Duration> {
    process_cpu_with(pid, false)
}

/// `process_cpu`, with `children` also that of the children it waited for
/// (a node agent's ffmpegs).
fn process_cpu_with(pid: u32, children: bool) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let last = if children { 14 } else { 12 };
    let ticks: u64 = (11..=last).map(|i| fields.get(i)?.parse::<u64>().ok()).sum::<Option<u64>>()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks()? as f64))
}

/// The kernel's clock ticks per second, the unit of /proc's CPU times.
fn clock_ticks() -> Option<i64> {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()?
}

/// A controller and its node agents on loopback, each agent in its own cgroup.
#[derive(Debug)]
struct Cluster {
    url: String,
    token: String,
    controller: u32,
    /// What each child is, for errors: "controller", "node1", ...
    names: Vec<String>,
    /// Fields drop in order: the processes stop before their cgroups go.
    children: Children,
    cgroups: Vec<Cgroup>,
}

impl Cluster {
    /// `n` node agents of `slots` slots each (in cgroups of `cpu` cores each
    /// with `limits`) and their controller.
    fn start(
        tools: &Tools,
        n: u32,
        slots: u32,
        limits: Option<&CgroupFs>,
        cpu: f64,
        dir: &Path,
        logs: &Path,
    ) -> Result<Cluster> {
        let token = crate::random_token()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let url = format!("http://127.0.0.1:{port}");
        let controller = Command::new(&tools.ffcluster)
            // An installed /etc/ffcluster/controller.toml must not change the measurement.
            .args(["serve", "--config", "/dev/null", "--listen", &format!("127.0.0.1:{port}")])
            .env("FFCLUSTER_TOKEN", &token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(logs.join(format!("controller-nodes{n}.log")))?)
            .spawn()
            .context("starting the controller")?;
        let mut cluster = Cluster {
            url,
            token,
            controller: controller.id(),
            names: vec!["controller".into()],
            children: Children(vec![controller]),
            cgroups: Vec::new(),
        };
        for i in 1..=n {
            let name = format!("node{i}");
            let mut cmd = Command::new(&tools.node);
            cmd.args(["--config", "/dev/null", "--controller", &cluster.url, "--token", &cluster.token])
                .args(["--name", &name, "--slots", &slots.to_string()])
                .arg("--scratch")
                .arg(dir.join(format!("scratch-nodes{n}-{name}")))
                .arg("--ffmpeg")
                .arg(&tools.ffmpeg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(logs.join(format!("nodes{n}-{name}.log")))?);
            // Inside the cgroup from the first instruction, so that its speed score
            // and every ffmpeg it starts live under the quota.
            if let Some(fs) = limits {
                let cgroup = fs.create(&format!("nodes{n}-{name}"), cpu)?;
                cgroup.confine(&mut cmd);
                cluster.cgroups.push(cgroup);
            }
            cluster.children.0.push(cmd.spawn().with_context(|| format!("starting node agent {name}"))?);
            cluster.names.push(name);
        }
        cluster.wait_for_nodes(n as usize, logs)?;
        Ok(cluster)
    }

    fn wait_for_nodes(&mut self, n: usize, logs: &Path) -> Result<()> {
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        loop {
            check_interrupted()?;
            for (child, name) in self.children.0.iter_mut().zip(&self.names) {
                if let Some(status) = child.try_wait()? {
                    bail!("{name} exited ({status}) while the cluster started; see its log in {}", logs.display());
                }
            }
            if let Ok(status) = fetch_status(&self.url, &self.token)
                && status.nodes.len() >= n
            {
                for node in &status.nodes {
                    println!("    {} ready: {} cpus, speed {:.0} fps", node.name, node.cpus, node.speed);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the nodes did not register within {} s; see the logs in {}",
                    REGISTER_TIMEOUT.as_secs(),
                    logs.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// CPU used in the nodes' cgroups so far, when the cgroups account it.
    fn worker_cpu(&self) -> Option<Duration> {
        if self.cgroups.is_empty() {
            return None;
        }
        self.cgroups.iter().map(Cgroup::usage).sum()
    }
}

/// Where CPU cgroups can be made.
#[derive(Debug)]
enum CgroupFs {
    /// cgroup v1: the cpu hierarchy, and the cpuacct one (the same directory when
    /// they are mounted together) when it is there.
    V1 { cpu: PathBuf, cpuacct: Option<PathBuf> },
    /// cgroup v2: the unified hierarchy, with the cpu controller enabled for its
    /// children.
    V2 { root: PathBuf },
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl CgroupFs {
    fn detect() -> Result<CgroupFs> {
        let root = Path::new(CGROUP_ROOT);
        if let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers")) {
            ensure!(
                controllers.split_whitespace().any(|c| c == "cpu"),
                "the cgroup v2 hierarchy at {CGROUP_ROOT} has no cpu controller"
            );
            let subtree = root.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&subtree).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "cpu") {
                std::fs::write(&subtree, "+cpu")
                    .with_context(|| format!("enabling the cpu controller in {}", subtree.display()))?;
            }
            return Ok(CgroupFs::V2 { root: root.into() });
        }
        let cpu = root.join("cpu");
        ensure!(
            cpu.join("cpu.cfs_quota_us").is_file(),
            "found neither cgroup v2 ({CGROUP_ROOT}/cgroup.controllers) nor v1's cpu controller ({})",
            cpu.display()
        );
        let cpuacct = [cpu.clone(), root.join("cpuacct")].into_iter().find(|d| d.join("cpuacct.usage").is_file());
        Ok(CgroupFs::V1 { cpu, cpuacct })
    }

    fn describe(&self) -> &'static str {
        match self {
            CgroupFs::V1 { .. } => "cgroup v1 CFS quota",
            CgroupFs::V2 { .. } => "cgroup v2 cpu.max",
        }
    }

    /// A new cgroup `ffcluster-bench-<pid>-<label>` limited to `cpus` cores.
    fn create(&self, label: &str, cpus: f64) -> Result<Cgroup> {
        let name = format!("ffcluster-bench-{}-{label}", std::process::id());
        let quota = ((cpus * PERIOD_US as f64).round() as u64).max(1000);
        let mut cgroup = Cgroup { dirs: Vec::new(), procs: Vec::new(), usage: None };
        match self {
            CgroupFs::V1 { cpu, cpuacct } => {
                let dir = cgroup.mkdir(cpu.join(&name))?;
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                if let Some(acct) = cpuacct {
                    let acct = acct.join(&name);
                    if acct != dir {
                        cgroup.mkdir(acct.clone())?;
                    }
                    cgroup.usage = Some(Usage::CpuacctNanos(acct.join("cpuacct.usage")));
                }
            }
            CgroupFs::V2 { root } => {
                let dir = cgroup.mkdir(root.join(&name))?;
                write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
                cgroup.usage = Some(Usage::CpuStat(dir.join("cpu.stat")));
            }
        }
        Ok(cgroup)
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value} to {}", path.display()))
}

/// A cgroup this benchmark made (one directory per hierarchy), removed on drop.
#[derive(Debug)]
struct Cgroup {
    dirs: Vec<PathBuf>,
    /// Each directory's `cgroup.procs`, ready for use between fork and exec.
    procs: Vec<CString>,
    usage: Option<Usage>,
}

#[derive(Debug)]
enum Usage {
    /// v1 `cpuacct.usage`: nanoseconds.
    CpuacctNanos(PathBuf),
    /// v2 `cpu.stat`: a `usage_usec` line.
    CpuStat(PathBuf),
}

impl Cgroup {
    fn mkdir(&mut self, dir: PathBuf) -> Result<PathBuf> {
        // Left by an earlier run that had this pid and died; empty, or this fails.
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("creating the cgroup {}", dir.display()))?;
        self.dirs.push(dir.clone());
        self.procs.push(CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())?);
        Ok(dir)
    }

    /// Makes the command's process enter this cgroup before it executes, so that
    /// it and everything it starts run under the quota from the beginning.
    fn confine(&self, cmd: &mut Command) {
        let procs = self.procs.clone();
        // SAFETY: the hook runs between fork and exec; it allocates nothing and
        // only makes system calls (getpid, open, write, close) on memory prepared
        // before the fork.
        unsafe {
            cmd.pre_exec(move || enter_cgroup(&procs));
        }
    }

    /// CPU used in this cgroup so far.
    fn usage(&self) -> Option<Duration> {
        match self.usage.as_ref()? {
            Usage::CpuacctNanos(path) => {
                Some(Duration::from_nanos(std::fs::read_to_string(path).ok()?.trim().parse().ok()?))
            }
            Usage::CpuStat(path) => std::fs::read_to_string(path)
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_micros),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            if let Err(e) = remove_cgroup(dir) {
                eprintln!("warning: cannot remove the cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// Removes an (emptying) cgroup directory. Whatever is still inside after a
/// grace period is ours (an ffmpeg a node left behind) and is killed.
fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    for last_try in [false, true] {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    if last_try {
                        return Err(e);
                    }
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    Ok(())
}

/// Writes the calling process's pid to each `cgroup.procs`. It runs in the child
/// between fork and exec, so it must not allocate.
fn enter_cgroup(procs: &[CString]) -> std::io::Result<()> {
    use nix::fcntl::{OFlag, open};
    let mut buf = [0u8; 10];
    let pid = decimal(nix::unistd::getpid().as_raw().unsigned_abs(), &mut buf);
    for path in procs {
        let fd = open(path.as_c_str(), OFlag::O_WRONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?;
        nix::unistd::write(&fd, pid)?;
    }
    Ok(())
}

/// `n` in decimal, in `buf`, without allocating.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C (or SIGTERM, SIGHUP) sets a flag instead of ending the process, so that
/// the waits notice it and the guards stop the children and remove the cgroups.
/// Children get the default actions back when they execute.
fn catch_interrupts() -> Result<()> {
    let action = SigAction::new(SigHandler::Handler(on_interrupt), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { nix::sys::signal::sigaction(signal, &action) }.with_context(|| format!("handling {signal}"))?;
    }
    Ok(())
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// The table and the goals.
#[derive(Debug)]
struct Report {
    seconds: u32,
    width: u32,
    height: u32,
    cpu: f64,
    runs: u32,
    /// How the CPU was limited; `None` with --no-limit.
    limits: Option<&'static str>,
    rows: Vec<Row>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(Row { figures: direct, .. }) = self.rows.first() else { return Ok(()) };
        let limits = match self.limits {
            Some(how) => format!("{:.2} CPU per node and for the direct run ({how})", self.cpu),
            None => "no CPU limits (not a fair comparison)".to_owned(),
        };
        let runs = if self.runs > 1 { format!(", medians of {} runs", self.runs) } else { String::new() };
        writeln!(f)?;
        writeln!(
            f,
            "ffcluster bench split: {} s of {}x{} 24000/1001, {SEGMENT_SECS} s segments, {limits}{runs}",
            self.seconds, self.width, self.height
        )?;
        let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        let opt_secs = |d: Option<Duration>| d.map_or("-".to_owned(), secs);
        let header = [
            "run",
            "wall",
            "speedup",
            "efficiency",
            "first segment",
            "vs direct",
            "shim CPU",
            "controller CPU",
            "worker CPU",
            "frames",
            "segments",
            "mode",
        ];
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let r = &row.figures;
                let speedup = direct.wall.as_secs_f64() / r.wall.as_secs_f64();
                let (label, efficiency, vs_direct) = match row.nodes {
                    None => ("direct".to_owned(), "-".to_owned(), "-".to_owned()),
                    Some(n) => (
                        format!("{n} node{}", plural(n)),
                        format!("{:.0}%", 100.0 * speedup / f64::from(n)),
                        format!("{:+.0} ms", vs_direct(r, direct)),
                    ),
                };
                let shim = r.shim_cpu.map_or("-".to_owned(), |c| format!("{} ({:.1}%)", secs(c), percent(c, r.wall)));
                vec![
                    label,
                    secs(r.wall),
                    format!("{speedup:.2}x"),
                    efficiency,
                    secs(r.first_segment),
                    vs_direct,
                    shim,
                    opt_secs(r.controller_cpu),
                    opt_secs(r.worker_cpu),
                    r.frames.to_string(),
                    r.segments.to_string(),
                    r.mode.clone(),
                ]
            })
            .collect();
        f.write_str(&crate::status::table(&header, rows))?;

        let cluster: Vec<(u32, &Figures)> = self.rows.iter().filter_map(|r| Some((r.nodes?, &r.figures))).collect();
        let mut goals = Vec::new();
        for (n, factor) in SPEEDUP_GOALS {
            let want = factor * f64::from(n);
            let verdict = match cluster.iter().find(|(m, _)| *m == n) {
                Some((_, r)) => {
                    let got = direct.wall.as_secs_f64() / r.wall.as_secs_f64();
                    format!("{} ({got:.2}x)", yes_no(got >= want))
                }
                None => "not measured".to_owned(),
            };
            goals.push(format!("{n} nodes >= {want:.2}x: {verdict}"));
        }
        let worst = |f: &dyn Fn(&Figures) -> f64| cluster.iter().map(|(_, r)| f(r)).reduce(f64::max);
        goals.push(match worst(&|r| vs_direct(r, direct)) {
            Some(ms) => format!(
                "first segment <= +{FIRST_SEGMENT_GOAL_MS:.0} ms: {} (worst {ms:+.0} ms)",
                yes_no(ms <= FIRST_SEGMENT_GOAL_MS)
            ),
            None => format!("first segment <= +{FIRST_SEGMENT_GOAL_MS:.0} ms: not measured"),
        });
        goals.push(match worst(&|r| r.shim_cpu.map_or(f64::INFINITY, |c| percent(c, r.wall))) {
            Some(p) => {
                format!("shim CPU < {SHIM_CPU_GOAL_PERCENT:.0}%: {} (worst {p:.1}%)", yes_no(p < SHIM_CPU_GOAL_PERCENT))
            }
            None => format!("shim CPU < {SHIM_CPU_GOAL_PERCENT:.0}%: not measured"),
        });
        writeln!(f, "goals: {}", goals.join("; "))?;
        if cluster.iter().any(|(_, r)| !r.mode.split(['+', ',']).any(|m| m == "split")) {
            writeln!(
                f,
                "note: not every cluster run was split (see the mode column): a whole job runs on one node, \
                 so more nodes cannot make it faster"
            )?;
        }
        Ok(())
    }
}

/// How much later than the direct run segment 0 was ready, in milliseconds.
fn later_ms(first: Duration, direct: Duration) -> f64 {
    (first.as_secs_f64() - direct.as_secs_f64()) * 1000.0
}

/// How much later than direct a configuration's first segment comes: the
/// median of each round's difference.
fn vs_direct(r: &Figures, direct: &Figures) -> f64 {
    r.vs_direct_ms.unwrap_or_else(|| later_ms(r.first_segment, direct.first_segment))
}

fn percent(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_without_allocating() {
        let mut buf = [0u8; 10];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(4_194_304, &mut buf), b"4194304");
        assert_eq!(decimal(u32::MAX, &mut buf), b"4294967295");
    }

    fn figures(wall: f64, first: f64, shim: Option<f64>, mode: &str) -> Figures {
        Figures {
            wall: Duration::from_secs_f64(wall),
            first_segment: Duration::from_secs_f64(first),
            vs_direct_ms: None,
            shim_cpu: shim.map(Duration::from_secs_f64),
            controller_cpu: None,
            worker_cpu: None,
            frames: 1438,
            segments: 20,
            mode: mode.into(),
        }
    }

    #[test]
    fn medians_and_goals() {
        let runs = [
            figures(40.0, 1.0, Some(0.5), "split"),
            figures(38.0, 1.2, Some(0.7), "split"),
            figures(39.0, 1.1, Some(0.6), "split"),
        ];
        let m = median(&runs);
        assert_eq!((m.wall.as_secs(), m.first_segment.as_millis(), m.mode.as_str()), (39, 1100, "split"));

        let report = Report {
            seconds: 60,
            width: 1280,
            height: 720,
            cpu: 0.4,
            runs: 1,
            limits: Some("cgroup v1 CFS quota"),
            rows: vec![
                Row { nodes: None, figures: figures(40.0, 1.0, None, "-") },
                Row { nodes: Some(2), figures: figures(20.0, 1.1, Some(0.4), "split") },
            ],
        };
        let text = report.to_string();
        assert!(text.contains("2 nodes  20.00 s  2.00x    100%"), "{text}");
        assert!(text.contains("+100 ms"), "{text}");
        assert!(text.contains("0.40 s (2.0%)"), "{text}");
        assert!(
            text.contains(
                "goals: 2 nodes >= 1.80x: yes (2.00x); 4 nodes >= 3.40x: not measured; \
                 first segment <= +150 ms: yes (worst +100 ms); shim CPU < 10%: yes (worst 2.0%)"
            ),
            "{text}"
        );
        assert!(!text.contains("note:"), "{text}");
    }
}
