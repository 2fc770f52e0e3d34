//! `ffcluster bench live`: can a live channel that one node cannot transcode in
//! real time play in real time through the cluster, and with how much added
//! latency? (Issue 8.)
//!
//! It encodes a channel once (testsrc2 and a tone, H.264 and AAC in MPEG-TS,
//! a 1 s GOP, a broadcast HD bitrate), then makes these runs one after the
//! other. Each runs against a fresh real-time source (see `source.rs`) and is
//! stopped with `q` after `--seconds`, as Jellyfin stops a Live TV transcode:
//!
//! - **direct**: the real ffmpeg in a cgroup of `--cpu` cores, one node alone;
//! - **one node**: through the shim with `FFCLUSTER_MODE=whole` on a one-node
//!   cluster (`--skip-one-node` leaves it out);
//! - **cluster**: through the shim (mode `auto`) on `--nodes` node agents of
//!   `--cpu` cores each.
//!
//! The transcode is Jellyfin 10.11's Live TV HLS command line (CONTRACT.md
//! §5.7): an event playlist of 3 s segments. The benchmark reads the playlist
//! every 20 ms (Jellyfin reads it every 100 to 150 ms; reading it more often
//! times each segment's appearance more finely) and notes when each segment
//! first appears.
//! Segment k's content ends at the sum of the EXTINFs of segments 0..=k after
//! the stream's first frame, which the source emitted at a known wall time.
//! Its **added latency** is how much later than that end it was listed. The
//! **sustained speed** is the content published per wall second from segment 2
//! on (the first two carry the start-up). A run slower than real time falls
//! behind: its latency grows by 60 × (1 − speed) s per minute.
//!
//! The checks: every listed segment exists when it is listed, keeps its bytes,
//! and decodes to its EXTINF × fps frames (± 1). Segments are numbered from 0
//! without gaps. After `q` the playlist ends with `#EXT-X-ENDLIST` and the
//! process exits 0 within Jellyfin's 5 s. A failed check exits non-zero. A
//! missed goal does not: it is a measurement.

mod source;

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use self::source::LiveSource;
use super::{
    Cgroup, CgroupFs, Cluster, Running, STEM, STOP_GRACE, Tools, WorkDir, catch_interrupts, check_interrupted,
    children_cpu, conclude, delta, generate, generator, layout, parse_cpu, plural, quotas, shim_command,
};
use crate::demo::{HlsTemplate, SEGMENT_SECS, decode_frames, fetch_status, step};

/// The defaults make one node fall clearly behind and leave `--nodes` nodes
/// CPU to spare. They were calibrated on the 2-core development machine (a VM,
/// ffmpeg 5.1), with nothing else running:
///
/// - Jellyfin's template fixes x264's costliest choices
///   (`subme=0:me=hex:rc_lookahead=10`), so the preset matters less than
///   usual. On the clean test pattern even `veryslow` ran at 0.68x in 0.4
///   cores, and `medium` at 1.1x. The grain (`GRAIN`) makes the channel cost
///   what a real one does.
/// - With it, `medium` in 0.25 cores follows the live channel at 0.38x to
///   0.41x: direct, through the shim on one node, and on one node of four. That
///   is well under the goal's 0.6x. Jellyfin's own Live TV preset,
///   `superfast`, reached 0.51x there. That is also under 0.6x, but too close
///   for a clear verdict.
/// - Four such nodes have 1.0 core, about 1.6x real time. That leaves 35% for
///   what splitting costs (an encoder started per piece, on a small quota). The
///   other core is left for the controller, the shim, the source and the
///   playlist polling.
///
/// With 0.4 cores (`bench split`'s default) `medium` reached 0.77x from a
/// file: one node would be over the goal's 0.6x.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Node agents of the cluster run, each with --cpu cores.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    nodes: u32,
    /// CPU share of each node agent and of the direct run, in cores.
    #[arg(long, default_value_t = 0.25, value_parser = parse_cpu)]
    cpu: f64,
    /// How long each run follows the channel before it is stopped with `q`,
    /// in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(6..=3600))]
    seconds: u32,
    /// Height of the 16:9 channel; the transcode keeps its size.
    #[arg(long, default_value_t = 720, value_parser = clap::value_parser!(u32).range(144..=2160))]
    height: u32,
    /// libx264 preset of the transcode. Jellyfin's own for Live TV is
    /// superfast, which left one node too close to the goal's 0.6x.
    #[arg(long, default_value = "medium", value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    preset: String,
    /// Piece length in seconds of a split live job, given to the shim as
    /// FFCLUSTER_LIVE_PIECE; without it the shim's default applies.
    #[arg(long, value_parser = parse_piece)]
    piece: Option<f64>,
    /// Leave out the run through the shim on one node (FFCLUSTER_MODE=whole).
    #[arg(long)]
    skip_one_node: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep the working directory (channel, outputs, logs) after a successful
    /// run.
    #[arg(long)]
    keep: bool,
    /// Run without CPU limits, for machines without a writable cgroup (the
    /// comparison is then not fair).
    #[arg(long)]
    no_limit: bool,
}

const PRESETS: [&str; 9] =
    ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"];
/// The channel's frame rate and keyframe interval (1 s).
const FPS: u32 = 25;
const GOP: u32 = 25;
/// The channel's video bitrate at 720p, like a broadcast HD channel; other
/// sizes scale it by their area.
const HD_BITS: f64 = 8_000_000.0;
/// Grain over the test picture: a real channel is much harder to encode than a
/// clean test pattern (this makes it cost about 1.7 times as much).
const GRAIN: &str = "noise=alls=16:allf=t";
/// The channel runs this much longer than a run, so that it never ends before
/// `q` (the transcode starts after the source, and reads 3 s before it starts).
const MARGIN_SECS: u32 = 15;
/// How often the playlist is read: finely enough that a short run's speed,
/// measured over two or three 3 s intervals, is not 3% off from when the
/// reads happened to fall (a 100 ms poll made an unlimited direct run that
/// keeps up read 0.96x).
const POLL: Duration = Duration::from_millis(20);
/// The first segments carry the start-up (input analysis, the first
/// encoder delay); the sustained speed is measured from this one on.
const STEADY_FROM: usize = 2;
/// A run keeps up when its speed is at least this: a run that keeps up is
/// held to the source's 1.0x, and the cut times and the polling make its
/// estimate wander by about 1% over a minute.
const KEEPS_UP: f64 = 0.98;
/// Issue 8's goal.
const GOAL_ONE_NODE_BELOW: f64 = 0.6;
const GOAL_LATENCY_SEGMENTS: f64 = 2.0;
/// The tuner's `User-Agent`, which Jellyfin passes as `-user_agent`.
const TUNER_AGENT: &str = "Jellyfin-LiveTV/10.11";

fn parse_piece(s: &str) -> Result<f64, String> {
    let piece: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.1..=60.0).contains(&piece) {
        return Err("expected a number of seconds between 0.1 and 60".into());
    }
    Ok(piece)
}

pub(super) fn run(args: Args) -> Result<ExitCode> {
    let tools = Tools::find()?;
    let (limits, direct_cgroup) = quotas(args.no_limit, args.cpu, args.nodes)?;
    catch_interrupts()?;
    let work = WorkDir::create()?;
    let result = measure(&args, &tools, limits.as_ref(), direct_cgroup, &work.path);
    conclude("ffcluster bench live", work, result, Report::passed, args.keep, args.json.as_deref())
}

fn measure(
    args: &Args,
    tools: &Tools,
    limits: Option<&CgroupFs>,
    direct_cgroup: Option<Cgroup>,
    dir: &Path,
) -> Result<Report> {
    let (bin, logs, out) = layout(dir, &tools.shim)?;
    let (width, height) = ((args.height * 16 / 9).div_ceil(2) * 2, args.height);
    let bits = channel_bits(width, height);
    let clip_secs = args.seconds + MARGIN_SECS;
    step(&format!(
        "encoding a {clip_secs} s {width}x{height} {FPS} fps channel ({:.1} Mbit/s H.264 and AAC, 1 s GOP)",
        bits as f64 / 1e6
    ));
    let clip = dir.join("channel.ts");
    encode_channel(&tools.ffmpeg, &clip, clip_secs, width, height, bits)?;
    let channel = Channel {
        tools,
        clip: &clip,
        width,
        height,
        preset: &args.preset,
        seconds: args.seconds,
        logs: &logs,
        out: &out,
    };

    let mut runs = Vec::new();
    step(&format!("direct ffmpeg, {} s", args.seconds));
    let mut cmd = Command::new(&tools.ffmpeg);
    let run = match &direct_cgroup {
        Some(cgroup) => {
            cgroup.confine(&mut cmd);
            channel.follow("direct", "direct", cmd, &|| cgroup.usage())?
        }
        // The transcode is the only child reaped meanwhile.
        None => channel.follow("direct", "direct", cmd, &|| children_cpu().ok())?,
    };
    runs.push(run);
    drop(direct_cgroup);

    let mut shim_runs = Vec::new();
    if !args.skip_one_node {
        shim_runs.push((1, "whole", "1 node, whole".to_owned(), "whole1".to_owned()));
    }
    let n = args.nodes;
    shim_runs.push((n, "auto", format!("{n} node{}", plural(n)), format!("nodes{n}")));
    for (nodes, mode, label, name) in shim_runs {
        step(&format!("starting a cluster of {nodes} node{}", plural(nodes)));
        let cluster = Cluster::start(tools, nodes, 1, limits, args.cpu, dir, &logs)?;
        step(&format!("{label} through the shim (FFCLUSTER_MODE={mode}), {} s", args.seconds));
        let mut run = channel.through_shim(&label, &name, &cluster, &bin, mode, args.piece)?;
        run.nodes = nodes;
        runs.push(run);
    }
    Ok(Report {
        seconds: args.seconds,
        width,
        height,
        fps: FPS,
        source_kbps: bits / 1000,
        preset: args.preset.clone(),
        segment_s: SEGMENT_SECS,
        cpu: args.cpu,
        limits: limits.map(CgroupFs::describe),
        piece_s: args.piece,
        runs,
    })
}

/// The channel's video bitrate at `width`x`height`, in bit/s.
fn channel_bits(width: u32, height: u32) -> u64 {
    let area = f64::from(width) * f64::from(height) / (1280.0 * 720.0);
    ((HD_BITS * area).clamp(1e6, 20e6) / 1000.0).round() as u64 * 1000
}

/// Encodes the channel once: what a tuner would deliver.
fn encode_channel(ffmpeg: &Path, clip: &Path, seconds: u32, width: u32, height: u32, bits: u64) -> Result<()> {
    let rate = bits.to_string();
    let mut cmd = generator(ffmpeg);
    cmd.args(["-f", "lavfi", "-i", &format!("testsrc2=size={width}x{height}:rate={FPS}:duration={seconds},{GRAIN}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=1000:sample_rate=48000:duration={seconds}")])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"])
        .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate])
        .args(["-g", &GOP.to_string(), "-keyint_min", &GOP.to_string(), "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "192k", "-ac", "2", "-f", "mpegts"])
        .arg(clip);
    generate(cmd, "encoding the channel")
}

/// Jellyfin 10.11's Live TV HLS command line (CONTRACT.md §5.7, §5.8): the HLS
/// template with the Live TV input options (`-analyzeduration 3000000
/// -user_agent … -fflags +igndts`), `-flags -global_header`, `-hls_base_url`
/// and an event playlist; `preset` replaces Jellyfin's `superfast`.
fn live_hls(url: &str, dir: &Path, width: u32, height: u32, preset: &str) -> Vec<String> {
    fn at(a: &[String], flag: &str) -> usize {
        a.iter().position(|x| x == flag).unwrap_or_else(|| unreachable!("{flag} is in Jellyfin's HLS template"))
    }
    let mut a = HlsTemplate { input: Path::new("-"), dir, md5: STEM, width, height, fmp4: false, start: 0 }.args();
    let i = at(&a, "-analyzeduration");
    a[i + 1] = "3000000".into();
    let i = at(&a, "-i");
    a[i + 1] = url.into();
    a.splice(i..i, ["-user_agent", TUNER_AGENT, "-fflags", "+igndts"].map(String::from));
    let i = at(&a, "-preset");
    a[i + 1] = preset.into();
    let i = at(&a, "-vf");
    a.splice(i + 2..i + 2, ["-flags", "-global_header"].map(String::from));
    let i = at(&a, "-start_number");
    a.splice(i + 2..i + 2, ["-hls_base_url".to_owned(), format!("hls/{STEM}/")]);
    let i = at(&a, "-hls_playlist_type");
    a[i + 1] = "event".into();
    a
}

/// The channel and where its runs write.
struct Channel<'a> {
    tools: &'a Tools,
    clip: &'a Path,
    width: u32,
    height: u32,
    preset: &'a str,
    seconds: u32,
    logs: &'a Path,
    out: &'a Path,
}

impl Channel<'_> {
    /// A run through the shim on `cluster`, with the controller's record of
    /// its job: the mode and the nodes that took part.
    fn through_shim(
        &self,
        label: &str,
        name: &str,
        cluster: &Cluster,
        bin: &Path,
        mode: &str,
        piece: Option<f64>,
    ) -> Result<Run> {
        let known: HashSet<u64> = fetch_status(&cluster.url, &cluster.token)?.jobs.iter().map(|j| j.id).collect();
        let shim_log = self.logs.join(format!("shim-{name}.log"));
        let real = (self.tools.ffmpeg.as_path(), self.tools.ffprobe.as_path());
        let mut cmd = shim_command(bin, real, &cluster.url, &cluster.token, &shim_log);
        cmd.env("FFCLUSTER_MODE", mode);
        if let Some(piece) = piece {
            cmd.env("FFCLUSTER_LIVE_PIECE", piece.to_string());
        }
        let mut run = self.follow(label, name, cmd, &|| cluster.worker_cpu())?;
        run.shim_mode = Some(mode.to_owned());
        let status = fetch_status(&cluster.url, &cluster.token)?;
        let ours: Vec<_> = status.jobs.iter().filter(|j| !known.contains(&j.id)).collect();
        if ours.is_empty() {
            run.job = "local".into();
            run.failures.push(format!(
                "the controller recorded no job: the shim ran it on this machine; see {}",
                shim_log.display()
            ));
        } else {
            let mut modes: Vec<String> = ours.iter().map(|j| j.mode.to_string()).collect();
            modes.sort();
            modes.dedup();
            run.job = modes.join("+");
            run.reasons = ours.iter().map(|j| j.reason.clone()).collect();
            run.reasons.sort();
            run.reasons.dedup();
            run.nodes_used = ours
                .iter()
                .flat_map(|j| {
                    let chunks = j.chunks.iter().map(|c| c.node.clone());
                    j.node.clone().into_iter().chain(j.nodes.clone().unwrap_or_default()).chain(chunks)
                })
                .collect();
            run.nodes_used.sort();
            run.nodes_used.dedup();
        }
        Ok(run)
    }

    /// Starts a fresh source and `cmd` (the program, its environment) with the
    /// Live TV command line on it; follows the playlist for `--seconds`; stops
    /// it with `q`; checks what it published. `cpu` reads the CPU the workers
    /// used so far.
    fn follow(&self, label: &str, name: &str, mut cmd: Command, cpu: &dyn Fn() -> Option<Duration>) -> Result<Run> {
        let dir = self.out.join(name);
        std::fs::create_dir_all(&dir)?;
        let buffer = self.out.join(format!("{name}-channel.ts"));
        let source =
            LiveSource::start(&self.tools.ffmpeg, self.clip, &buffer, &self.logs.join(format!("{name}-source.log")))?;
        cmd.args(live_hls(source.url(), &dir, self.width, self.height, self.preset));
        let stderr_log = self.logs.join(format!("{name}.stderr.log"));
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(File::create(&stderr_log)?);
        let program = cmd.get_program().to_string_lossy().into_owned();

        let cpu_before = cpu();
        let launched = Instant::now();
        let mut child = Running(cmd.spawn().with_context(|| format!("starting {program}"))?);
        // Jellyfin keeps ffmpeg's stdin open and writes `q` there to stop it.
        let mut stdin = child.0.stdin.take();
        let mut seen = Follower::new(&dir, source.started());
        let deadline = launched + Duration::from_secs(self.seconds.into());
        let mut exited: Option<ExitStatus> = None;
        while Instant::now() < deadline {
            check_interrupted()?;
            seen.poll(false);
            if let Some(status) = child.0.try_wait()? {
                seen.fail(format!(
                    "it exited by itself ({status}) after {:.1} s, before q; its stderr is in {}",
                    launched.elapsed().as_secs_f64(),
                    stderr_log.display()
                ));
                exited = Some(status);
                break;
            }
            if !source.running() {
                seen.fail("the channel ran out before the run ended".into());
            }
            std::thread::sleep(POLL);
        }

        let stopping = Instant::now();
        let status = match exited {
            Some(status) => status,
            None => {
                if let Some(pipe) = stdin.as_mut() {
                    let _ = pipe.write_all(b"q\n").and_then(|()| pipe.flush());
                }
                loop {
                    seen.poll(true);
                    if let Some(status) = child.0.try_wait()? {
                        break status;
                    }
                    if stopping.elapsed() >= STOP_GRACE {
                        seen.fail(format!(
                            "it did not exit within {} s of q (Jellyfin kills it then)",
                            STOP_GRACE.as_secs()
                        ));
                        let _ = child.0.kill();
                        break child.0.wait()?;
                    }
                    check_interrupted()?;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let stopped_in = stopping.elapsed();
        let wall = launched.elapsed();
        let worker_cpu = delta(cpu(), cpu_before);
        drop(stdin);
        seen.poll(true);
        drop(source);
        let _ = std::fs::remove_file(&buffer);
        // A Ctrl-C reaches the process too: say so rather than that it failed.
        check_interrupted()?;
        if status.code() != Some(0) {
            seen.fail(format!("it exited with {status}; its stderr is in {}", stderr_log.display()));
        }
        seen.check_output(&self.tools.ffprobe)?;
        let run =
            Run::new(label, seen, stopped_in, status.code(), worker_cpu.map(|c| c.as_secs_f64() / wall.as_secs_f64()));
        println!("    {}", run.summary());
        for why in &run.failures {
            println!("    check failed: {why}");
        }
        Ok(run)
    }
}

/// One segment as the playlist reader saw it.
#[derive(Debug, Clone, Serialize)]
struct Listed {
    index: u64,
    /// Its EXTINF, in seconds.
    duration_s: f64,
    /// The sum of the EXTINFs up to and including this one: where its content
    /// ends after the stream's first frame.
    content_end_s: f64,
    /// When the playlist first listed it, after the source's first bytes.
    listed_s: f64,
    /// `listed_s - content_end_s`.
    latency_s: f64,
    /// Listed only after `q` (the last segment, cut short by the stop).
    after_stop: bool,
    /// Its size when first listed.
    bytes: u64,
}

/// Reads an event playlist the way Jellyfin does and records when each
/// segment first appears; collects what breaks the rules.
#[derive(Debug)]
struct Follower {
    dir: PathBuf,
    playlist: PathBuf,
    origin: Instant,
    listed: Vec<Listed>,
    failures: Vec<String>,
}

impl Follower {
    fn new(dir: &Path, origin: Instant) -> Follower {
        Follower {
            dir: dir.to_owned(),
            playlist: dir.join(format!("{STEM}.m3u8")),
            origin,
            listed: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn fail(&mut self, why: String) {
        if !self.failures.contains(&why) {
            self.failures.push(why);
        }
    }

    fn segment(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{STEM}{index}.ts"))
    }

    /// One read of the playlist (if it exists yet).
    fn poll(&mut self, after_stop: bool) {
        let Ok(text) = std::fs::read_to_string(&self.playlist) else { return };
        let now = self.origin.elapsed().as_secs_f64();
        let entries = match parse_playlist(&text) {
            Ok(entries) => entries,
            Err(why) => return self.fail(why),
        };
        if entries.len() < self.listed.len() {
            self.fail(format!(
                "the playlist dropped segments: it listed {}, then {}",
                self.listed.len(),
                entries.len()
            ));
        }
        for (pos, &(index, duration)) in entries.iter().enumerate() {
            if let Some(seen) = self.listed.get(pos) {
                if (seen.index, seen.duration_s) != (index, duration) {
                    let was = (seen.index, seen.duration_s);
                    self.fail(format!("the playlist's entry {pos} changed from {was:?} to {:?}", (index, duration)));
                }
                continue;
            }
            if index != pos as u64 {
                self.fail(format!("segment {index} is listed where segment {pos} was due (numbered from 0, no gaps)"));
            }
            let bytes = match std::fs::metadata(self.segment(index)) {
                Ok(m) => m.len(),
                Err(_) => {
                    self.fail(format!("segment {index} was listed before its file existed"));
                    0
                }
            };
            let content_end_s = self.listed.last().map_or(0.0, |l| l.content_end_s) + duration;
            self.listed.push(Listed {
                index,
                duration_s: duration,
                content_end_s,
                listed_s: now,
                latency_s: now - content_end_s,
                after_stop,
                bytes,
            });
        }
    }

    /// After the stop: the playlist is ended, and every segment it listed is
    /// as it was when listed and decodes to the frames its EXTINF says.
    fn check_output(&mut self, ffprobe: &Path) -> Result<()> {
        let text = std::fs::read_to_string(&self.playlist).unwrap_or_default();
        if !text.contains("#EXT-X-PLAYLIST-TYPE:EVENT") {
            self.fail("the playlist is not an event playlist".into());
        }
        if !text.trim_end().ends_with("#EXT-X-ENDLIST") {
            self.fail("the playlist does not end with #EXT-X-ENDLIST after q".into());
        }
        if self.listed.is_empty() {
            self.fail("no segment was listed".into());
        }
        for l in self.listed.clone() {
            let path = self.segment(l.index);
            let Ok(meta) = std::fs::metadata(&path) else {
                self.fail(format!("segment {} is gone", l.index));
                continue;
            };
            if meta.len() != l.bytes {
                self.fail(format!(
                    "segment {} changed after it was listed ({} bytes, then {})",
                    l.index,
                    l.bytes,
                    meta.len()
                ));
            }
            let decoded = decode_frames(ffprobe, &path);
            check_interrupted()?;
            let (frames, errors) = match decoded {
                Ok(decoded) => decoded,
                Err(e) => {
                    self.fail(format!("segment {} does not decode: {e:#}", l.index));
                    continue;
                }
            };
            let want = l.duration_s * f64::from(FPS);
            if (frames as f64 - want).abs() > 1.0 + 1e-6 {
                self.fail(format!(
                    "segment {} decodes to {frames} frames; {} s wants {want:.0}",
                    l.index, l.duration_s
                ));
            }
            if !errors.is_empty() {
                self.fail(format!("segment {} decodes with errors: {errors}", l.index));
            }
        }
        Ok(())
    }
}

/// The (index, EXTINF) of every segment an event playlist lists, in order.
fn parse_playlist(text: &str) -> Result<Vec<(u64, f64)>, String> {
    let mut entries = Vec::new();
    let mut duration = None;
    let base = format!("hls/{STEM}/{STEM}");
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let value = rest.split(',').next().unwrap_or_default();
            duration = Some(value.parse::<f64>().map_err(|_| format!("the playlist has a bad EXTINF: {line}"))?);
        } else if !line.starts_with('#') {
            let index = line
                .strip_prefix(&base)
                .and_then(|n| n.strip_suffix(".ts"))
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| format!("the playlist lists {line}, not hls/<md5>/<md5>N.ts"))?;
            let duration = duration.take().ok_or_else(|| format!("the playlist lists {line} without an EXTINF"))?;
            entries.push((index, duration));
        }
    }
    Ok(entries)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    p50: f64,
    p95: f64,
    max: f64,
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct Run {
    run: String,
    /// Node agents of its cluster; 0 for the direct run.
    nodes: u32,
    /// `FFCLUSTER_MODE` given to the shim.
    shim_mode: Option<String>,
    /// Content seconds published per wall second, over `steady`.
    speed: Option<f64>,
    /// The segments the speed is measured over, first and last.
    steady: Option<(u64, u64)>,
    /// How many seconds the latency grows per minute (60 × (1 − speed)).
    behind_s_per_minute: Option<f64>,
    /// Added latency of the segments listed before `q`, in seconds.
    latency_s: Option<Spread>,
    /// When the source emitted its first bytes (the stream's time 0), in
    /// milliseconds since the Unix epoch.
    source_started_unix_ms: u64,
    /// Segments listed before `q`, and after it (the one cut short).
    segments: usize,
    segments_after_stop: usize,
    /// Average cores used by the workers (the direct ffmpeg, or the nodes).
    cores_used: Option<f64>,
    /// From `q` to the exit.
    stopped_in_s: f64,
    exit_code: Option<i32>,
    /// The controller's job mode(s), "-" for the direct run, "local" when the
    /// controller recorded no job.
    job: String,
    /// The classifier's reason codes the controller recorded for its jobs.
    reasons: Vec<String>,
    nodes_used: Vec<String>,
    failures: Vec<String>,
    listed: Vec<Listed>,
}

impl Run {
    fn new(label: &str, seen: Follower, stopped_in: Duration, exit_code: Option<i32>, cores_used: Option<f64>) -> Run {
        let during: Vec<&Listed> = seen.listed.iter().filter(|l| !l.after_stop).collect();
        let steady = sustained(&during);
        let mut latencies: Vec<f64> = during.iter().map(|l| l.latency_s).collect();
        latencies.sort_unstable_by(f64::total_cmp);
        let latency_s = (!latencies.is_empty()).then(|| Spread {
            p50: percentile(&latencies, 0.5),
            p95: percentile(&latencies, 0.95),
            max: percentile(&latencies, 1.0),
        });
        Run {
            run: label.to_owned(),
            nodes: 0,
            shim_mode: None,
            speed: steady.map(|s| s.0),
            steady: steady.map(|s| s.1),
            behind_s_per_minute: steady.map(|s| 60.0 * (1.0 - s.0)),
            latency_s,
            source_started_unix_ms: unix_ms(seen.origin),
            segments: during.len(),
            segments_after_stop: seen.listed.len() - during.len(),
            cores_used,
            stopped_in_s: stopped_in.as_secs_f64(),
            exit_code,
            job: "-".into(),
            reasons: Vec::new(),
            nodes_used: Vec::new(),
            failures: seen.failures,
            listed: seen.listed,
        }
    }

    fn keeps_up(&self) -> bool {
        self.speed.is_some_and(|s| s >= KEEPS_UP)
    }

    fn summary(&self) -> String {
        let speed = self.speed.map_or("speed not measured".to_owned(), |s| format!("{s:.2}x real time"));
        let latency = self.latency_s.map_or("-".to_owned(), |l| format!("{:.1} s", l.max));
        format!(
            "{speed}, {} segments, added latency up to {latency}, stopped {:.1} s after q",
            self.segments, self.stopped_in_s
        )
    }
}

/// The wall-clock time of `at`, in milliseconds since the Unix epoch.
fn unix_ms(at: Instant) -> u64 {
    let then = std::time::SystemTime::now() - at.elapsed();
    then.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The sustained speed and the segments it is measured over: content
/// published per wall second from segment `STEADY_FROM` (earlier on a short
/// run) to the last, as the least-squares slope of content against wall time.
/// A run that keeps up is held to the source's pace, and the moment any one
/// segment is listed jitters by a few hundred milliseconds: a slope over all
/// of them is not thrown by the last one.
fn sustained(during: &[&Listed]) -> Option<(f64, (u64, u64))> {
    let last = during.last()?;
    let from = STEADY_FROM.min(during.len().checked_sub(2)?);
    let first = during.get(from)?;
    let points = &during[from..];
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |(x, y), p| (x + p.listed_s / n, y + p.content_end_s / n));
    let (cov, var) = points.iter().fold((0.0, 0.0), |(c, v), p| {
        let dx = p.listed_s - mx;
        (c + dx * (p.content_end_s - my), v + dx * dx)
    });
    (var > 0.0).then(|| (cov / var, (first.index, last.index)))
}

/// The table, the goal and the checks.
#[derive(Debug, Serialize)]
struct Report {
    seconds: u32,
    width: u32,
    height: u32,
    fps: u32,
    source_kbps: u64,
    preset: String,
    segment_s: u32,
    cpu: f64,
    /// How the CPU was limited; `None` with --no-limit.
    limits: Option<&'static str>,
    /// FFCLUSTER_LIVE_PIECE; `None`: the shim's default.
    piece_s: Option<f64>,
    runs: Vec<Run>,
}

impl Report {
    fn passed(&self) -> bool {
        self.runs.iter().all(|r| r.failures.is_empty())
    }

    /// Issue 8's goal: met, or missed and why.
    fn goal(&self) -> (bool, Vec<String>) {
        let mut why = Vec::new();
        let seg = f64::from(self.segment_s);
        let (Some(direct), Some(cluster)) = (self.runs.first(), self.runs.last().filter(|r| r.nodes > 0)) else {
            return (false, vec!["not measured".into()]);
        };
        match direct.speed {
            Some(s) if s < GOAL_ONE_NODE_BELOW => {}
            Some(s) => why.push(format!(
                "one node alone reached {s:.2}x, so the workload is too light to show it (a slower --preset, a \
                 larger --height or a smaller --cpu)"
            )),
            None => why.push("one node's speed was not measured".into()),
        }
        match cluster.speed {
            Some(s) if s >= KEEPS_UP => {}
            Some(s) => why.push(format!("the cluster ran at {s:.2}x")),
            None => why.push("the cluster's speed was not measured".into()),
        }
        match cluster.latency_s {
            Some(l) if l.max < GOAL_LATENCY_SEGMENTS * seg => {}
            Some(l) => why.push(format!("its added latency reached {:.1} s ({:.1} segments)", l.max, l.max / seg)),
            None => why.push("its latency was not measured".into()),
        }
        if !cluster.job.split('+').any(|m| m == "split") {
            why.push(format!(
                "the controller ran the job {} on {}, not split",
                cluster.job,
                if cluster.nodes_used.is_empty() { "no node".to_owned() } else { cluster.nodes_used.join(", ") }
            ));
        }
        if !cluster.failures.is_empty() {
            why.push("its checks failed".into());
        }
        (why.is_empty(), why)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seg = f64::from(self.segment_s);
        let limits = match self.limits {
            Some(how) => format!("{:.2} CPU per node and for the direct run ({how})", self.cpu),
            None => "no CPU limits (not a fair comparison)".to_owned(),
        };
        let piece = self.piece_s.map_or("the shim's default".to_owned(), |p| format!("{p} s"));
        writeln!(f)?;
        writeln!(
            f,
            "ffcluster bench live: {} s runs of a {}x{} {} fps channel ({:.1} Mbit/s), Jellyfin's Live TV HLS \
             (libx264 {}, {} s segments), {limits}, live pieces: {piece}",
            self.seconds,
            self.width,
            self.height,
            self.fps,
            self.source_kbps as f64 / 1000.0,
            self.preset,
            self.segment_s
        )?;
        let header =
            ["run", "speed", "vs direct", "latency p50", "p95", "max", "segments", "cores used", "job", "nodes"];
        let direct_speed = self.runs.first().and_then(|r| r.speed);
        let latency = |s: f64| format!("{s:.1} s ({:.1} seg)", s / seg);
        let rows = self
            .runs
            .iter()
            .map(|r| {
                let spread =
                    |pick: fn(&Spread) -> f64| r.latency_s.as_ref().map_or("-".to_owned(), |l| latency(pick(l)));
                vec![
                    r.run.clone(),
                    r.speed.map_or("-".to_owned(), |s| format!("{s:.2}x")),
                    match (r.speed, direct_speed) {
                        (Some(s), Some(d)) if d > 0.0 => format!("{:.2}x", s / d),
                        _ => "-".to_owned(),
                    },
                    spread(|l| l.p50),
                    spread(|l| l.p95),
                    spread(|l| l.max),
                    r.segments.to_string(),
                    r.cores_used.map_or("-".to_owned(), |c| format!("{c:.2}")),
                    r.job.clone(),
                    if r.nodes_used.is_empty() { "-".to_owned() } else { r.nodes_used.join(",") },
                ]
            })
            .collect();
        f.write_str(&crate::status::table(&header, rows))?;
        for r in &self.runs {
            let verdict = match (r.speed, r.behind_s_per_minute) {
                (Some(_), _) if r.keeps_up() => "keeps up with the channel".to_owned(),
                (Some(_), Some(behind)) => format!("falls behind: +{behind:.1} s per minute"),
                _ => "too few segments to tell".to_owned(),
            };
            let over = match r.steady {
                Some((a, b)) if b - a < 3 => format!(" (speed over segments {a} to {b} only: rough)"),
                Some((a, b)) => format!(" (speed over segments {a} to {b})"),
                None => String::new(),
            };
            writeln!(f, "{}: {verdict}{over}", r.run)?;
        }
        let (met, why) = self.goal();
        writeln!(
            f,
            "goal: cluster >= 1.0x where one node < {GOAL_ONE_NODE_BELOW}x, added latency < {GOAL_LATENCY_SEGMENTS} \
             segments: {}",
            if met { "met".to_owned() } else { format!("missed ({})", why.join("; ")) }
        )?;
        let failed: Vec<String> =
            self.runs.iter().flat_map(|r| r.failures.iter().map(move |w| format!("{}: {w}", r.run))).collect();
        if failed.is_empty() {
            writeln!(f, "checks: passed (every segment listed, intact and decoded; playlists ended; exit code 0)")
        } else {
            writeln!(f, "checks: FAILED")?;
            failed.iter().try_for_each(|w| writeln!(f, "  {w}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(index: u64, content_end_s: f64, listed_s: f64) -> Listed {
        Listed {
            index,
            duration_s: 3.0,
            content_end_s,
            listed_s,
            latency_s: listed_s - content_end_s,
            after_stop: false,
            bytes: 1,
        }
    }

    #[test]
    fn the_command_line_is_jellyfins_live_tv_template() {
        let a =
            live_hls("http://127.0.0.1:1/LiveTv/LiveStreamFiles/ab/stream.ts", Path::new("/t"), 1280, 720, "medium");
        let line = a.join(" ");
        for want in [
            "-analyzeduration 3000000 -probesize 1G -user_agent Jellyfin-LiveTV/10.11 -fflags +igndts \
             -i http://127.0.0.1:1/LiveTv/LiveStreamFiles/ab/stream.ts ",
            " -preset medium ",
            "-force_key_frames:0 expr:gte(t,n_forced*3) ",
            ",format=yuv420p -flags -global_header -codec:a:0 aac ",
            " -copyts ",
            " -hls_time 3 ",
            &format!(" -start_number 0 -hls_base_url hls/{STEM}/ -hls_segment_filename /t/{STEM}%d.ts "),
            " -hls_playlist_type event ",
        ] {
            assert!(line.contains(want), "{want:?} in {line}");
        }
        assert!(!line.contains(" file:"), "{line}");
    }

    #[test]
    fn playlists_are_read_as_jellyfin_lists_them() {
        let text = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:EVENT\n#EXTINF:3.000000,\nhls/{STEM}/{STEM}0.ts\n#EXTINF:2.960000,\n\
             hls/{STEM}/{STEM}1.ts\n#EXT-X-ENDLIST\n"
        );
        assert_eq!(parse_playlist(&text), Ok(vec![(0, 3.0), (1, 2.96)]));
        assert!(parse_playlist(&format!("#EXTINF:3,\n{STEM}0.ts\n")).unwrap_err().contains("not hls/<md5>/"));
        assert!(parse_playlist(&format!("hls/{STEM}/{STEM}0.ts\n")).unwrap_err().contains("without an EXTINF"));
    }

    #[test]
    fn a_run_that_falls_behind_says_by_how_much() {
        // Segments of 3 s listed every 6 s: half real time.
        let slow: Vec<Listed> = (0..8).map(|k| listed(k, 3.0 * (k + 1) as f64, 5.0 + 6.0 * k as f64)).collect();
        let refs: Vec<&Listed> = slow.iter().collect();
        assert_eq!(sustained(&refs), Some((0.5, (2, 7))));
        // Too few for the steady state: measured over what there is.
        assert_eq!(sustained(&refs[..3]), Some((0.5, (1, 2))));
        assert_eq!(sustained(&refs[..1]), None);
        let seen = Follower {
            dir: PathBuf::new(),
            playlist: PathBuf::new(),
            origin: Instant::now(),
            listed: slow,
            failures: Vec::new(),
        };
        let run = Run::new("direct", seen, Duration::from_secs(1), Some(0), Some(0.4));
        assert_eq!(run.behind_s_per_minute, Some(30.0));
        let l = run.latency_s.unwrap();
        assert_eq!((l.p50, l.p95, l.max), (11.0, 23.0, 23.0));
        assert!(!run.keeps_up());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.95), percentile(&v, 1.0)), (10.0, 19.0, 20.0));
        assert_eq!(percentile(&[4.0], 0.5), 4.0);
    }

    fn run(label: &str, nodes: u32, speed: f64, max_latency: f64, job: &str) -> Run {
        Run {
            run: label.into(),
            nodes,
            shim_mode: None,
            speed: Some(speed),
            steady: Some((2, 18)),
            behind_s_per_minute: Some(60.0 * (1.0 - speed)),
            latency_s: Some(Spread { p50: max_latency / 2.0, p95: max_latency, max: max_latency }),
            source_started_unix_ms: 0,
            segments: 19,
            segments_after_stop: 1,
            cores_used: Some(0.4),
            stopped_in_s: 0.5,
            exit_code: Some(0),
            job: job.into(),
            reasons: Vec::new(),
            nodes_used: if nodes > 0 { vec!["node1".into(), "node2".into()] } else { Vec::new() },
            failures: Vec::new(),
            listed: Vec::new(),
        }
    }

    fn report(runs: Vec<Run>) -> Report {
        Report {
            seconds: 60,
            width: 1280,
            height: 720,
            fps: 25,
            source_kbps: 8000,
            preset: "medium".into(),
            segment_s: 3,
            cpu: 0.4,
            limits: Some("cgroup v1 CFS quota"),
            piece_s: None,
            runs,
        }
    }

    #[test]
    fn the_table_and_the_goal() {
        let met = report(vec![run("direct", 0, 0.45, 20.0, "-"), run("4 nodes", 4, 0.995, 4.5, "split")]);
        let text = met.to_string();
        assert!(text.contains("direct   0.45x  1.00x      10.0 s (3.3 seg)"), "{text}");
        assert!(text.contains("4 nodes  0.99x  2.21x      2.2 s (0.8 seg)"), "{text}");
        assert!(text.contains("split  node1,node2\n"), "{text}");
        assert!(text.contains("direct: falls behind: +33.0 s per minute (speed over segments 2 to 18)\n"), "{text}");
        assert!(text.contains("4 nodes: keeps up with the channel"), "{text}");
        assert!(text.contains("added latency < 2 segments: met\n"), "{text}");
        assert!(text.contains("checks: passed"), "{text}");

        let mut whole = run("4 nodes", 4, 0.45, 21.0, "whole");
        whole.nodes_used = vec!["node3".into()];
        whole.failures.push("segment 3 was listed before its file existed".into());
        let missed = report(vec![run("direct", 0, 0.7, 20.0, "-"), whole]);
        assert!(!missed.passed());
        let text = missed.to_string();
        assert!(
            text.contains(
                "missed (one node alone reached 0.70x, so the workload is too light to show it (a slower --preset, \
                 a larger --height or a smaller --cpu); the cluster ran at 0.45x; its added latency reached 21.0 s \
                 (7.0 segments); the controller ran the job whole on node3, not split; its checks failed)"
            ),
            "{text}"
        );
        assert!(text.contains("checks: FAILED\n  4 nodes: segment 3 was listed before its file existed\n"), "{text}");
    }
}
