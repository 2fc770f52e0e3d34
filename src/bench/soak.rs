//! `ffcluster bench soak`: many Jellyfin playback sessions at once against a
//! cluster started on this machine, for minutes.
//!
//! It starts a controller and `--nodes` node agents on loopback, generates a
//! clip, and runs `--sessions` players side by side. Each behaves as Jellyfin
//! and a browser do together: it starts the shim (installed as `ffmpeg`) with
//! Jellyfin 10.11's HLS template (sessions alternate mpegts and fMP4), asks for
//! segments faster than real time, serves each by Jellyfin's readiness rule,
//! seeks (Jellyfin stops the job with `q` and restarts it at the segment) and
//! stops. Every served segment is checked with ffprobe (packets, frame count)
//! and one in ten is decoded fully. At the end the cluster must be idle: no
//! job running, no ffmpeg left. Unlike the other benchmarks this is a test: a
//! lost segment, a leftover process or a controller whose memory grew exits
//! non-zero.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    Cluster, Prepared, STOP_GRACE, Tools, WorkDir, catch_interrupts, check_interrupted, children_cpu, clock_ticks,
    conclude, prepare, process_cpu, process_cpu_with, shim_command,
};
use ffcluster::controller::status::JobState;

use crate::demo::{HlsTemplate, SEGMENT_SECS, count_frames, fetch_status, step};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Playback sessions running at the same time.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=256))]
    sessions: u32,
    /// Node agents to start.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    nodes: u32,
    /// Job slots of each node agent; by default enough for every session to
    /// have a job running (sessions / nodes, rounded up).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    slots: Option<u32>,
    /// How long the sessions play (e.g. 600s, 10m).
    #[arg(long, default_value = "600s", value_parser = ffcluster::config::parse_duration)]
    duration: Duration,
    /// Seed of the players' choices (when to seek, where to, when to stop), so
    /// that a run can be repeated.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many times faster than real time the players ask for segments.
    #[arg(long, default_value_t = 2.0, value_parser = parse_pace)]
    pace: f64,
    /// Length of the generated clip in seconds.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u32).range(6..=3600))]
    seconds: u32,
    /// Height of the generated 16:9 clip; the transcodes keep its size.
    #[arg(long, default_value_t = 240, value_parser = clap::value_parser!(u32).range(144..=2160))]
    height: u32,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep the working directory (clip, logs) after a successful run.
    #[arg(long)]
    keep: bool,
}

fn parse_pace(s: &str) -> Result<f64, String> {
    let pace: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.1..=100.0).contains(&pace) {
        return Err("expected a factor between 0.1 and 100".into());
    }
    Ok(pace)
}

/// Jellyfin answers a segment request when it is ready however long that takes;
/// a player gives up long before. A segment not ready by then is lost.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a waiting request looks at the files.
const POLL: Duration = Duration::from_millis(20);
/// Per segment played: the chance that the viewer seeks, and that they stop.
const SEEK_CHANCE: f64 = 0.05;
const STOP_CHANCE: f64 = 0.015;
/// The share of served segments decoded in full (every one is probed).
const DECODE_SHARE: f64 = 0.1;
/// Segments one checking ffmpeg takes at most.
const BATCH: usize = 16;
/// Checks that run at once. While the players play they run at the lowest
/// priority and take what is left; the backlog after that runs at full
/// priority, on a busy machine best in a few processes.
const CHECKERS: usize = 4;
/// Frames per second of the clip `prepare` generates (24000/1001).
const FPS: (u64, u64) = (24000, 1001);
/// Audio and video of a segment may end this far apart (AAC frames are 21 ms,
/// and the muxer cuts on video keyframes).
const AUDIO_SLACK_SECS: f64 = 0.3;
/// The controller's memory is flat when its RSS at the end is at most this
/// factor of its RSS after warm-up plus `FLAT_SLACK_KIB`: the registry keeps
/// the last 100 jobs and the logs of the last 50 (up to 256 KiB each), which
/// fill up during a run without being a leak.
const FLAT_FACTOR: f64 = 1.2;
const FLAT_SLACK_KIB: u64 = 16 * 1024;
/// The warm-up: memory is compared from this point (or a quarter of the run
/// when that is shorter).
const WARM_UP: Duration = Duration::from_secs(60);
/// How long the cluster gets after the last session to have no job and no
/// ffmpeg left.
const SETTLE: Duration = Duration::from_secs(30);

pub(super) fn run(args: Args) -> Result<ExitCode> {
    let tools = Tools::find()?;
    catch_interrupts()?;
    let work = WorkDir::create()?;
    let result = soak(&args, &tools, &work.path);
    conclude("ffcluster bench soak", work, result, Report::passed, args.keep, args.json.as_deref())
}

fn soak(args: &Args, tools: &Tools, dir: &Path) -> Result<Report> {
    let load_start = load_average();
    let Prepared { bin, logs, out, clip, width, height } =
        prepare(dir, &tools.shim, &tools.ffmpeg, args.seconds, args.height)?;
    let grid = Grid::new(count_frames(&tools.ffprobe, &clip)?);
    let slots = args.slots.unwrap_or_else(|| args.sessions.div_ceil(args.nodes));
    step(&format!("starting a cluster of {} nodes with {slots} slots each", args.nodes));
    let cluster = Cluster::start(tools, args.nodes, slots, None, 0.0, dir, &logs)?;
    let node_pids: Vec<u32> = cluster.children.0.iter().skip(1).map(Child::id).collect();

    let served_dir = dir.join("served");
    std::fs::create_dir_all(&served_dir)?;
    let (checks, queue) = channel();
    let env = Env {
        bin: &bin,
        tools,
        controller: &cluster.url,
        token: &cluster.token,
        clip: &clip,
        width,
        height,
        grid,
        logs: &logs,
        out: &out,
        served: &served_dir,
        pace: args.pace,
        live: Live::default(),
    };
    let warm_up = WARM_UP.min(args.duration / 4);
    let memory = Memory::new(cluster.controller);
    let verified = Mutex::new(Verified::default());
    let playing = AtomicBool::new(true);
    let cpu_before = CpuUse::now(cluster.controller, &node_pids)?;
    let started = Instant::now();
    let deadline = started + args.duration;
    step(&format!(
        "playing {} sessions for {} s at {}x real time (mpegts and fMP4 alternate)",
        args.sessions,
        args.duration.as_secs(),
        args.pace
    ));
    let queue = Mutex::new(queue);
    let failed = dir.join("failed");
    let (tallies, check_wait) = std::thread::scope(|s| {
        let env = &env;
        let (queue, failed) = (&queue, &failed);
        let verifiers: Vec<_> =
            (0..CHECKERS).map(|_| s.spawn(|| verify_all(queue, tools, failed, &playing, &verified))).collect();
        let players: Vec<_> = (0..args.sessions)
            .map(|id| {
                let checks = checks.clone();
                s.spawn(move || Player::new(id, args.seed, env, checks).run(deadline))
            })
            .collect();
        drop(checks);
        let mut warm_taken = false;
        let mut last_line = Instant::now();
        while players.iter().any(|p| !p.is_finished()) {
            std::thread::sleep(Duration::from_millis(500));
            memory.sample(started);
            if !warm_taken && started.elapsed() >= warm_up {
                memory.mark_warm();
                warm_taken = true;
            }
            if last_line.elapsed() >= Duration::from_secs(30) {
                last_line = Instant::now();
                println!("    {}", env.live.line(started.elapsed(), memory.latest()));
            }
        }
        let tallies: Vec<Tally> = players.into_iter().map(|p| p.join().expect("a player panicked")).collect();
        // The players are done; what is left is the checks of the last segments.
        playing.store(false, Ordering::Relaxed);
        let waited = Instant::now();
        for v in verifiers {
            v.join().expect("a verifier panicked");
        }
        (tallies, waited.elapsed())
    });
    let played = started.elapsed();
    check_interrupted()?;

    step("waiting for the cluster to go idle");
    let settle = Instant::now();
    let (running_jobs, leftover) = loop {
        let running = fetch_status(&cluster.url, &cluster.token)
            .map(|s| s.jobs.iter().filter(|j| j.state == JobState::Running).count())
            .unwrap_or(usize::MAX);
        let leftover = leftover_ffmpegs(&node_pids, dir);
        if (running == 0 && leftover.is_empty()) || settle.elapsed() > SETTLE {
            break (running, leftover);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    memory.sample(started);
    let cpu = CpuUse::now(cluster.controller, &node_pids)?.since(&cpu_before);
    let (fallbacks, offloaded) = shim_routes(&logs);
    let verified = verified.into_inner().expect("verifier lock");
    let mut total = Tally::default();
    for t in &tallies {
        total.add(t);
    }
    total.lost.extend(verified.failures.iter().cloned());
    let sessions = tallies.iter().enumerate().map(|(i, t)| SessionRow::new(i as u32, t, &verified)).collect();
    Ok(Report {
        sessions: args.sessions,
        nodes: args.nodes,
        slots,
        duration_s: args.duration.as_secs_f64(),
        played_s: played.as_secs_f64(),
        seed: args.seed,
        pace: args.pace,
        clip: ClipInfo { seconds: args.seconds, width, height, frames: grid.frames, segments: grid.segments },
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_start,
        load_end: load_average(),
        playbacks: total.playbacks,
        finished: total.finished,
        requests: total.requests,
        segments_served: total.served,
        segments_lost: total.lost.len() as u64,
        seeks: total.seeks,
        stops: total.stops,
        restarts: total.restarts,
        stop_kills: total.stop_kills,
        slowest_stop_ms: total.slowest_stop_ms,
        ready_ms: Percentiles::of(&mut total.ready_ms),
        startup_ms: Percentiles::of(&mut total.startup_ms),
        checks: Checks {
            probed: verified.probed,
            decoded: verified.decoded,
            failed: verified.failures.len() as u64,
            waited_after_play_s: check_wait.as_secs_f64(),
        },
        shims: Shims { offloaded, local_fallbacks: fallbacks, failed: total.shim_failures },
        cpu,
        controller_rss: memory.figures(args.duration / 2),
        memory_rule: format!(
            "end <= {FLAT_FACTOR} x after-warm-up ({} s) + {} MiB",
            warm_up.as_secs(),
            FLAT_SLACK_KIB / 1024
        ),
        jobs_running_at_end: running_jobs as u64,
        leftover_ffmpeg: leftover.len() as u64,
        lost: total.lost,
        per_session: sessions,
    })
}

/// What every player shares.
struct Env<'a> {
    bin: &'a Path,
    tools: &'a Tools,
    controller: &'a str,
    token: &'a str,
    clip: &'a Path,
    width: u32,
    height: u32,
    grid: Grid,
    logs: &'a Path,
    out: &'a Path,
    /// Copies of served segments waiting for their check.
    served: &'a Path,
    pace: f64,
    live: Live,
}

/// Running totals for the progress line.
#[derive(Debug, Default)]
struct Live {
    served: AtomicU64,
    lost: AtomicU64,
}

impl Live {
    fn line(&self, elapsed: Duration, rss_kib: Option<u64>) -> String {
        format!(
            "{:>4} s: {} segments served, {} lost, controller RSS {}",
            elapsed.as_secs(),
            self.served.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
            rss_kib.map_or("?".to_owned(), mib)
        )
    }
}

/// The clip's segment grid: Jellyfin's template forces a keyframe on the first
/// frame at or after every multiple of the segment length, and the HLS muxer
/// cuts there.
#[derive(Debug, Clone, Copy)]
struct Grid {
    frames: u64,
    segments: u32,
}

impl Grid {
    fn new(frames: u64) -> Grid {
        let segments = (0..).take_while(|&k| Grid::boundary(k) < frames).count() as u32;
        Grid { frames, segments }
    }

    /// The first frame of segment `k`.
    fn boundary(k: u64) -> u64 {
        (k * u64::from(SEGMENT_SECS) * FPS.0).div_ceil(FPS.1)
    }

    /// How many video frames segment `k` holds: the grid's count give or take
    /// one (a frame on the boundary), or for the last segment anything up to a
    /// full one (an fMP4 job after a seek is shifted to the keyframe before).
    fn expected(&self, k: u32) -> std::ops::RangeInclusive<u64> {
        let k = u64::from(k);
        let n = Grid::boundary(k + 1).min(self.frames) - Grid::boundary(k);
        if k + 1 == u64::from(self.segments) { 1..=(Grid::boundary(1) + 1) } else { n - 1..=n + 1 }
    }
}

/// xorshift64*: repeatable choices from `--seed` without a dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// Stream `stream` of seed `seed` (one per session).
    fn new(seed: u64, stream: u64) -> Rng {
        // SplitMix64's finaliser spreads nearby seeds apart; xorshift needs a non-zero state.
        let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// One segment that a player asked for and did not get intact.
#[derive(Debug, Clone, Serialize)]
struct Lost {
    session: u32,
    playback: u32,
    /// -1: the fMP4 init file; none: the job failed between requests.
    segment: Option<i64>,
    reason: String,
}

/// What one session did.
#[derive(Debug, Default)]
struct Tally {
    playbacks: u64,
    /// Playbacks that reached the clip's last segment.
    finished: u64,
    requests: u64,
    served: u64,
    lost: Vec<Lost>,
    seeks: u64,
    stops: u64,
    /// Jobs stopped and started again at another segment (seeks the existing
    /// files could not answer).
    restarts: u64,
    /// Stops after which the job was still running `STOP_GRACE` after `q`.
    stop_kills: u64,
    slowest_stop_ms: f64,
    /// Shims that exited non-zero without being asked to stop.
    shim_failures: u64,
    /// Per request: from asking until the segment was ready (0 when it was).
    ready_ms: Vec<f64>,
    /// The same for the requests that started a job.
    startup_ms: Vec<f64>,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.playbacks += o.playbacks;
        self.finished += o.finished;
        self.requests += o.requests;
        self.served += o.served;
        self.lost.extend(o.lost.iter().cloned());
        self.seeks += o.seeks;
        self.stops += o.stops;
        self.restarts += o.restarts;
        self.stop_kills += o.stop_kills;
        self.slowest_stop_ms = self.slowest_stop_ms.max(o.slowest_stop_ms);
        self.shim_failures += o.shim_failures;
        self.ready_ms.extend(&o.ready_ms);
        self.startup_ms.extend(&o.startup_ms);
    }
}

/// A served segment waiting for its check.
#[derive(Debug)]
struct Check {
    session: u32,
    playback: u32,
    index: u32,
    /// The segment the playback's job started at when this one was served.
    job_start: u32,
    /// The served bytes (after the init file's, for fMP4), as a file.
    copy: PathBuf,
    frames: std::ops::RangeInclusive<u64>,
    decode: bool,
}

/// The shim running one job of a playback, as Jellyfin holds ffmpeg: stdin
/// piped (for `q`), stderr to a file (Jellyfin's job log).
#[derive(Debug)]
struct Job {
    child: Child,
    stdin: Option<ChildStdin>,
    exit: Option<ExitStatus>,
}

impl Job {
    /// Whether it has exited (reaping it if so).
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One playback: a transcode directory and the jobs that fill it.
struct Playback<'a> {
    number: u32,
    template: HlsTemplate<'a>,
    job: Option<Job>,
    jobs: u32,
    /// The init file as served at the start (fMP4): a player keeps it.
    init: Option<Vec<u8>>,
}

impl Playback<'_> {
    /// `GetLastTranscodingFile`: the newest segment file, by mtime.
    fn newest(&self) -> Option<(i64, PathBuf)> {
        let prefix = self.template.md5;
        let ext = if self.template.fmp4 { ".mp4" } else { ".ts" };
        let mut best: Option<(SystemTime, i64, PathBuf)> = None;
        for e in std::fs::read_dir(self.template.dir).ok()?.flatten() {
            let name = e.file_name();
            let Some(index) = name
                .to_str()
                .and_then(|n| n.strip_suffix(ext))
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            let Ok(mtime) = e.metadata().and_then(|m| m.modified()) else { continue };
            if best.as_ref().is_none_or(|(t, ..)| mtime > *t) {
                best = Some((mtime, index, e.path()));
            }
        }
        best.map(|(_, i, p)| (i, p))
    }

    /// `GetCurrentTranscodingIndex`: only while the job runs.
    fn current_index(&mut self) -> Option<i64> {
        let alive = self.job.as_mut().is_some_and(|j| j.exited().is_none());
        if alive { self.newest().map(|(i, _)| i) } else { None }
    }
}

/// How a playback ended.
enum End {
    /// The viewer stopped.
    Stopped,
    /// It reached the last segment.
    Finished,
    /// A segment was lost: the player gives up on this playback.
    Lost,
    /// The soak's time is up.
    Deadline,
}

struct Player<'a> {
    id: u32,
    env: &'a Env<'a>,
    rng: Rng,
    checks: Sender<Check>,
    tally: Tally,
    copies: u64,
}

impl<'a> Player<'a> {
    fn new(id: u32, seed: u64, env: &'a Env<'a>, checks: Sender<Check>) -> Player<'a> {
        Player { id, env, rng: Rng::new(seed, u64::from(id)), checks, tally: Tally::default(), copies: 0 }
    }

    fn run(mut self, deadline: Instant) -> Tally {
        // Staggered, as viewers arrive one by one.
        pause(Duration::from_millis(self.rng.below(3000)), deadline);
        let mut number = 0;
        while Instant::now() < deadline && check_interrupted().is_ok() {
            number += 1;
            self.tally.playbacks += 1;
            let dir = self.env.out.join(format!("s{}-p{number}", self.id));
            if let Err(e) = std::fs::create_dir_all(&dir) {
                self.lose(number, 0, format!("cannot create {}: {e}", dir.display()));
                break;
            }
            let mut playback = Playback {
                number,
                template: HlsTemplate {
                    input: self.env.clip,
                    dir: &dir,
                    md5: super::STEM,
                    width: self.env.width,
                    height: self.env.height,
                    fmp4: (self.id + number) % 2 == 0,
                    start: 0,
                },
                job: None,
                jobs: 0,
                init: None,
            };
            let end = self.play(&mut playback, deadline);
            if let Some(job) = playback.job.take() {
                self.stop(&playback, job);
            }
            if !matches!(end, End::Lost) {
                let _ = std::fs::remove_dir_all(&dir);
            }
            match end {
                End::Deadline => break,
                End::Stopped => {
                    let away = Duration::from_millis(1000 + self.rng.below(2000));
                    pause(away, deadline);
                }
                End::Finished | End::Lost => pause(Duration::from_secs(1), deadline),
            }
        }
        self.tally
    }

    /// Plays from the start: segment after segment at the pace, seeking and
    /// stopping now and then.
    fn play(&mut self, p: &mut Playback, deadline: Instant) -> End {
        let interval = Duration::from_secs_f64(f64::from(SEGMENT_SECS) / self.env.pace);
        if p.template.fmp4 {
            match self.fetch(p, -1) {
                Some(bytes) => p.init = Some(bytes),
                None => return End::Lost,
            }
        }
        let mut n: u32 = 0;
        let mut due = Instant::now();
        loop {
            pause(due.saturating_duration_since(Instant::now()), deadline);
            if Instant::now() >= deadline || check_interrupted().is_err() {
                return End::Deadline;
            }
            if n > 0 {
                if self.rng.chance(STOP_CHANCE) {
                    self.tally.stops += 1;
                    return End::Stopped;
                }
                if self.rng.chance(SEEK_CHANCE) {
                    self.tally.seeks += 1;
                    n = self.rng.below(u64::from(self.env.grid.segments)) as u32;
                }
            }
            let Some(bytes) = self.fetch(p, i64::from(n)) else { return End::Lost };
            self.tally.served += 1;
            self.env.live.served.fetch_add(1, Ordering::Relaxed);
            self.queue_check(p, n, bytes);
            n += 1;
            if n >= self.env.grid.segments {
                self.tally.finished += 1;
                return End::Finished;
            }
            due = due.max(Instant::now()) + interval;
        }
    }

    /// Hands a served segment to the verifier, as a file (fMP4: after the init
    /// file the player holds).
    fn queue_check(&mut self, p: &Playback, index: u32, bytes: Vec<u8>) {
        self.copies += 1;
        let ext = if p.template.fmp4 { "mp4" } else { "ts" };
        let copy = self.env.served.join(format!("s{}-{}.{ext}", self.id, self.copies));
        let written = File::create(&copy).and_then(|mut f| {
            if let Some(init) = &p.init {
                f.write_all(init)?;
            }
            f.write_all(&bytes)
        });
        if let Err(e) = written {
            self.lose(p.number, i64::from(index), format!("cannot keep a copy for the check: {e}"));
            return;
        }
        let check = Check {
            session: self.id,
            playback: p.number,
            index,
            job_start: p.template.start,
            copy,
            frames: self.env.grid.expected(index),
            decode: self.rng.chance(DECODE_SHARE),
        };
        let _ = self.checks.send(check);
    }

    fn lose(&mut self, playback: u32, segment: impl Into<Option<i64>>, reason: String) {
        self.env.live.lost.fetch_add(1, Ordering::Relaxed);
        self.tally.lost.push(Lost { session: self.id, playback, segment: segment.into(), reason });
    }

    /// `GetDynamicSegment`: serves segment `n` (-1: the init file), restarting
    /// the job first when the file is not there and the job is not about to
    /// write it (Jellyfin's seek).
    fn fetch(&mut self, p: &mut Playback, n: i64) -> Option<Vec<u8>> {
        let asked = Instant::now();
        self.tally.requests += 1;
        if !self.reap(p) {
            return None;
        }
        let path = p.template.segment(n);
        let mut index = n;
        let mut started = false;
        if !path.exists() {
            let requested = n.max(0);
            let current = p.current_index();
            let too_far = i64::from(24 / SEGMENT_SECS);
            if n == -1 || current.is_none_or(|c| requested < c || requested - c > too_far) {
                if let Some(job) = p.job.take() {
                    self.stop(p, job);
                    self.tally.restarts += 1;
                }
                if current.is_some()
                    && let Some((_, newest)) = p.newest()
                {
                    // DeleteLastFile: the newest file is taken to be partial.
                    let _ = std::fs::remove_file(newest);
                }
                if let Err(e) = self.launch(p, requested as u32) {
                    self.lose(p.number, n, format!("cannot start the shim: {e:#}"));
                    return None;
                }
                // A fresh job's init file answers as segment 0 would.
                index = requested;
                started = true;
            }
        }
        let result = self.wait_ready(p, n, index, asked);
        if result.is_some() {
            let ms = asked.elapsed().as_secs_f64() * 1000.0;
            self.tally.ready_ms.push(ms);
            if started {
                self.tally.startup_ms.push(ms);
            }
        }
        result
    }

    /// `GetSegmentResult`: the file once it exists and the next one exists or
    /// the transcode is past it, or once the job exited.
    fn wait_ready(&mut self, p: &mut Playback, n: i64, index: i64, asked: Instant) -> Option<Vec<u8>> {
        let path = p.template.segment(n);
        let next = p.template.segment(index + 1);
        loop {
            if check_interrupted().is_err() {
                return None;
            }
            if !self.reap(p) {
                return None;
            }
            let alive = p.job.as_mut().is_some_and(|j| j.exited().is_none());
            let ready = path.exists() && (!alive || next.exists() || p.current_index().is_some_and(|c| c > index));
            if ready {
                match std::fs::read(&path) {
                    Ok(bytes) => return Some(bytes),
                    Err(e) => {
                        self.lose(p.number, n, format!("ready but unreadable: {e}"));
                        return None;
                    }
                }
            }
            if !alive {
                self.lose(p.number, n, "missing after the job ended".into());
                return None;
            }
            if asked.elapsed() > READY_TIMEOUT {
                self.lose(p.number, n, format!("not ready within {} s", READY_TIMEOUT.as_secs()));
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Notices a job that ended by itself. Exiting 0 is a transcode that
    /// reached the end; anything else loses the segment being waited for.
    /// False when it failed.
    fn reap(&mut self, p: &mut Playback) -> bool {
        let Some(job) = p.job.as_mut() else { return true };
        match job.exited() {
            Some(status) if !status.success() => {
                p.job = None;
                self.tally.shim_failures += 1;
                let log = self.stderr_log(p);
                self.lose(
                    p.number,
                    None,
                    format!("the shim exited with {status} unasked; its stderr is in {}", log.display()),
                );
                false
            }
            _ => true,
        }
    }

    fn stderr_log(&self, p: &Playback) -> PathBuf {
        self.env.logs.join(format!("s{}-p{}-j{}.stderr.log", self.id, p.number, p.jobs))
    }

    /// Starts the shim as Jellyfin starts ffmpeg, at segment `start`.
    fn launch(&mut self, p: &mut Playback, start: u32) -> Result<()> {
        p.jobs += 1;
        p.template.start = start;
        let shim_log = self.env.logs.join(format!("shim-s{}.log", self.id));
        let tools = self.env.tools;
        let mut cmd =
            shim_command(self.env.bin, (&tools.ffmpeg, &tools.ffprobe), self.env.controller, self.env.token, &shim_log);
        cmd.args(p.template.args())
            // What a Jellyfin host runs by default, whatever this shell has set.
            .env("FFCLUSTER_MODE", "auto")
            .env("FFCLUSTER_CONFIG", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(File::create(self.stderr_log(p))?);
        let mut child = cmd.spawn().context("starting the shim")?;
        let stdin = child.stdin.take();
        p.job = Some(Job { child, stdin, exit: None });
        Ok(())
    }

    /// `TranscodingJob.Stop()`: `q`, up to 5 s, then SIGKILL.
    fn stop(&mut self, p: &Playback, mut job: Job) {
        if job.exited().is_some() {
            // Ended by itself: `reap` judged it already (or does now).
            if job.exit.is_some_and(|s| !s.success()) {
                self.tally.shim_failures += 1;
                self.lose(p.number, None, format!("the shim exited with {} unasked", job.exit.unwrap()));
            }
            return;
        }
        let asked = Instant::now();
        if let Some(stdin) = job.stdin.as_mut() {
            let _ = stdin.write_all(b"q\n").and_then(|()| stdin.flush());
        }
        while job.exited().is_none() && asked.elapsed() < STOP_GRACE {
            std::thread::sleep(Duration::from_millis(10));
        }
        if job.exited().is_none() {
            self.tally.stop_kills += 1;
            let _ = job.child.kill();
            job.exit = job.child.wait().ok();
        }
        self.tally.slowest_stop_ms = self.tally.slowest_stop_ms.max(asked.elapsed().as_secs_f64() * 1000.0);
    }
}

/// Sleeps `d`, but not past `deadline` and not through an interrupt.
fn pause(d: Duration, deadline: Instant) {
    let until = (Instant::now() + d).min(deadline);
    while Instant::now() < until && check_interrupted().is_ok() {
        std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(200)));
    }
}

/// What the checks found.
#[derive(Debug, Default)]
struct Verified {
    probed: u64,
    decoded: u64,
    failures: Vec<Lost>,
    /// Per session: segments that failed their check.
    failed_by_session: std::collections::BTreeMap<u32, u64>,
}

/// Checks served segments as they come: every packet is read (the frame
/// count must match the grid, audio must cover the video), and a share is
/// decoded in full. While the players play, checks run at the lowest CPU
/// priority, so that they take what the cluster leaves and do not slow the
/// transcodes they check; the backlog then runs at full speed.
/// A segment that fails is kept in `failed` for a look.
fn verify_all(
    queue: &Mutex<Receiver<Check>>,
    tools: &Tools,
    failed: &Path,
    playing: &AtomicBool,
    verified: &Mutex<Verified>,
) {
    loop {
        let batch: Vec<Check> = {
            let queue = queue.lock().expect("queue lock");
            let Ok(first) = queue.recv() else { return };
            std::iter::once(first).chain(queue.try_iter().take(BATCH - 1)).collect()
        };
        if check_interrupted().is_err() {
            return;
        }
        let low_priority = playing.load(Ordering::Relaxed);
        // A batch that fails as a whole is checked again one by one, to say which.
        let results = match verify_batch(&batch, tools, low_priority) {
            Ok(results) => results,
            Err(_) => batch.iter().map(|c| verify(c, tools, low_priority)).collect(),
        };
        for (check, result) in batch.into_iter().zip(results) {
            record(check, result, failed, verified);
        }
    }
}

/// Counts a checked segment; one that failed is kept in `failed`.
fn record(check: Check, result: Result<(), String>, failed: &Path, verified: &Mutex<Verified>) {
    {
        let kept = match result {
            Ok(()) => {
                let _ = std::fs::remove_file(&check.copy);
                None
            }
            Err(_) => {
                let kept = failed.join(check.copy.file_name().unwrap_or_default());
                let _ = std::fs::create_dir_all(failed).and_then(|()| std::fs::rename(&check.copy, &kept));
                Some(kept)
            }
        };
        let mut v = verified.lock().expect("verifier lock");
        v.probed += 1;
        v.decoded += u64::from(check.decode);
        if let (Err(reason), Some(kept)) = (result, kept) {
            *v.failed_by_session.entry(check.session).or_default() += 1;
            v.failures.push(Lost {
                session: check.session,
                playback: check.playback,
                segment: Some(i64::from(check.index)),
                reason: format!(
                    "check: {reason} (served while the job started at segment {} ran; kept as {})",
                    check.job_start,
                    kept.display()
                ),
            });
        }
    }
}

/// Checks a batch of segments with one ffmpeg, which is much cheaper than a
/// process per segment: each is demuxed into a frame-by-frame listing
/// (framecrc, streams copied) and the ones to decode are decoded too. Any
/// error fails the whole batch.
fn verify_batch(batch: &[Check], tools: &Tools, low_priority: bool) -> Result<Vec<Result<(), String>>, String> {
    let mut cmd = checker(&tools.ffmpeg, low_priority);
    cmd.args(["-hide_banner", "-nostdin", "-v", "error"]);
    for check in batch {
        cmd.arg("-i").arg(&check.copy);
    }
    let listing = |check: &Check| check.copy.with_extension("framecrc");
    for (k, check) in batch.iter().enumerate() {
        let maps = [format!("{k}:v?"), format!("{k}:a?")];
        cmd.args(["-map", &maps[0], "-map", &maps[1], "-c", "copy", "-f", "framecrc"]).arg(listing(check));
        if check.decode {
            cmd.args(["-map", &maps[0], "-map", &maps[1], "-f", "null", "-"]);
        }
    }
    let out = cmd.output().map_err(|e| format!("ffmpeg: {e}"))?;
    let errors = String::from_utf8_lossy(&out.stderr);
    let listings: Vec<Result<String, String>> = batch
        .iter()
        .map(|c| {
            let path = listing(c);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()));
            let _ = std::fs::remove_file(&path);
            text
        })
        .collect();
    if !out.status.success() || !errors.trim().is_empty() {
        return Err(format!("ffmpeg: {} {}", out.status, errors.trim()));
    }
    Ok(batch.iter().zip(listings).map(|(check, listing)| frames_and_audio(check, &count_framecrc(&listing?))).collect())
}

/// Packets per media type in a framecrc listing: its header names each
/// stream's type (`#media_type 0: video`), then one line per packet starts
/// with the stream's index.
fn count_framecrc(listing: &str) -> Vec<(String, u64)> {
    let mut types: Vec<(String, u64)> = Vec::new();
    for line in listing.lines() {
        if let Some(decl) = line.strip_prefix("#media_type ") {
            if let Some((_, kind)) = decl.split_once(": ") {
                types.push((kind.trim().to_owned(), 0));
            }
        } else if !line.starts_with('#')
            && let Some(index) = line.split(',').next().and_then(|i| i.trim().parse::<usize>().ok())
            && let Some(entry) = types.get_mut(index)
        {
            entry.1 += 1;
        }
    }
    types
}

/// Whether a segment's packet counts (per media type) are what the grid
/// expects: the video frames, and audio covering the same time.
fn frames_and_audio(check: &Check, counts: &[(String, u64)]) -> Result<(), String> {
    let count = |kind: &str| counts.iter().find(|(k, _)| k == kind).map(|(_, n)| *n);
    let video = count("video").ok_or_else(|| format!("no video stream: {counts:?}"))?;
    let audio = count("audio").ok_or_else(|| format!("no audio stream: {counts:?}"))?;
    if !check.frames.contains(&video) {
        return Err(format!("{video} video frames, expected {:?}", check.frames));
    }
    let video_secs = video as f64 * FPS.1 as f64 / FPS.0 as f64;
    // The template's AAC: 1024 samples a frame at the source's 48 kHz.
    let audio_secs = audio as f64 * 1024.0 / 48000.0;
    if (audio_secs - video_secs).abs() > AUDIO_SLACK_SECS {
        return Err(format!("{audio_secs:.3} s of audio for {video_secs:.3} s of video"));
    }
    Ok(())
}

fn verify(check: &Check, tools: &Tools, low_priority: bool) -> Result<(), String> {
    let out = checker(&tools.ffprobe, low_priority)
        .args(["-v", "error", "-count_packets", "-show_entries", "stream=codec_type,nb_read_packets"])
        .args(["-of", "csv=p=0"])
        .arg(&check.copy)
        .output()
        .map_err(|e| format!("ffprobe: {e}"))?;
    let errors = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !errors.trim().is_empty() {
        return Err(format!("ffprobe: {} {}", out.status, errors.trim()));
    }
    // mpegts lists its streams twice (in the program and on their own).
    let text = String::from_utf8_lossy(&out.stdout);
    let mut counts: Vec<(String, u64)> = Vec::new();
    for line in text.lines() {
        if let Some((kind, n)) = line.trim().trim_end_matches(',').split_once(',')
            && let Ok(n) = n.parse()
            && !counts.iter().any(|(k, _)| k == kind)
        {
            counts.push((kind.to_owned(), n));
        }
    }
    frames_and_audio(check, &counts)?;
    if check.decode {
        let out = checker(&tools.ffmpeg, low_priority)
            .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
            .arg(&check.copy)
            .args(["-f", "null", "-"])
            .output()
            .map_err(|e| format!("ffmpeg: {e}"))?;
        let errors = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !errors.trim().is_empty() {
            return Err(format!("decoding: {} {}", out.status, errors.trim()));
        }
    }
    Ok(())
}

/// `program`, at the lowest CPU priority (coreutils' `nice`) if asked.
fn checker(program: &Path, low_priority: bool) -> Command {
    let mut cmd = if low_priority {
        let mut nice = Command::new("nice");
        nice.args(["-n", "19"]).arg(program);
        nice
    } else {
        Command::new(program)
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// Where the machine's CPU went, in core-seconds: from the first session
/// until the cluster was idle again.
#[derive(Debug, Clone, Serialize)]
struct CpuUse {
    wall_s: f64,
    /// `wall_s` times the CPUs.
    available_s: f64,
    /// The node agents and the ffmpegs they ran.
    nodes_s: f64,
    /// This program's children: the shims, their finishers and the checks.
    shims_and_checks_s: f64,
    controller_s: f64,
    /// Everything else the machine ran meanwhile (other users' work).
    other_s: f64,
}

impl CpuUse {
    /// Running totals (`since` makes a span of two).
    fn now(controller: u32, nodes: &[u32]) -> Result<CpuUse> {
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        let busy = machine_busy().context("reading /proc/stat")?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let uptime = std::fs::read_to_string("/proc/uptime")?;
        let wall: f64 = uptime.split_whitespace().next().and_then(|u| u.parse().ok()).context("/proc/uptime")?;
        Ok(CpuUse {
            wall_s: wall,
            available_s: wall * cpus as f64,
            nodes_s: nodes.iter().map(|&pid| secs(process_cpu_with(pid, true))).sum(),
            shims_and_checks_s: children_cpu()?.as_secs_f64(),
            controller_s: secs(process_cpu(controller)),
            other_s: busy,
        })
    }

    fn since(&self, before: &CpuUse) -> CpuUse {
        let mut d = CpuUse {
            wall_s: self.wall_s - before.wall_s,
            available_s: self.available_s - before.available_s,
            nodes_s: self.nodes_s - before.nodes_s,
            shims_and_checks_s: self.shims_and_checks_s - before.shims_and_checks_s,
            controller_s: self.controller_s - before.controller_s,
            other_s: self.other_s - before.other_s,
        };
        // `other_s` held the machine's busy time until here.
        d.other_s = (d.other_s - d.nodes_s - d.shims_and_checks_s - d.controller_s).max(0.0);
        d
    }
}

/// Busy CPU time of the whole machine so far (`/proc/stat`: all but idle and
/// iowait), in seconds.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> =
        stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle) as f64 / clock_ticks()? as f64)
}

/// The controller's resident memory over the run.
#[derive(Debug)]
struct Memory {
    pid: u32,
    start: Option<u64>,
    samples: Mutex<Vec<(f64, u64)>>,
    warm: Mutex<Option<u64>>,
}

impl Memory {
    fn new(pid: u32) -> Memory {
        Memory { pid, start: rss_kib(pid), samples: Mutex::new(Vec::new()), warm: Mutex::new(None) }
    }

    fn sample(&self, started: Instant) {
        if let Some(kib) = rss_kib(self.pid) {
            self.samples.lock().expect("memory lock").push((started.elapsed().as_secs_f64(), kib));
        }
    }

    fn latest(&self) -> Option<u64> {
        self.samples.lock().expect("memory lock").last().map(|s| s.1)
    }

    fn mark_warm(&self) {
        *self.warm.lock().expect("memory lock") = self.latest();
    }

    /// `half`: the time (from the first session) of the mid-run figure.
    fn figures(&self, half: Duration) -> Rss {
        let samples = self.samples.lock().expect("memory lock");
        let half_time = samples.iter().find(|s| s.0 >= half.as_secs_f64()).map(|s| s.1);
        let warm = self.warm.lock().expect("memory lock").or(self.start);
        let end = samples.last().map(|s| s.1);
        let flat = match (warm, end) {
            (Some(w), Some(e)) => e as f64 <= w as f64 * FLAT_FACTOR + FLAT_SLACK_KIB as f64,
            _ => false,
        };
        Rss {
            start_kib: self.start,
            after_warm_up_kib: warm,
            half_time_kib: half_time,
            end_kib: end,
            peak_kib: samples.iter().map(|s| s.1).max(),
            hwm_kib: status_kib(self.pid, "VmHWM:"),
            samples: samples.len(),
            flat,
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` line of `/proc/PID/status`.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Live ffmpeg processes that belong to this run: children of the node agents,
/// or any whose command line names the working directory (a finisher the shim
/// left, a node's orphan).
fn leftover_ffmpegs(node_pids: &[u32], dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid …: the name may hold spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let mut fields = tail.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if comm != "ffmpeg" || state == "Z" {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if node_pids.contains(&ppid) || String::from_utf8_lossy(&cmdline).contains(&needle) {
            found.push(pid);
        }
    }
    found
}

/// From the shims' logs: transcodes that fell back to this machine, and those
/// the cluster ran.
fn shim_routes(logs: &Path) -> (u64, u64) {
    let (mut fallbacks, mut offloaded) = (0, 0);
    for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("shim-s") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text.lines() {
            if line.contains("local fallback") {
                fallbacks += 1;
            } else if line.contains("-> cluster") {
                offloaded += 1;
            }
        }
    }
    (fallbacks, offloaded)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Percentiles {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles.
    fn of(values: &mut [f64]) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_unstable_by(f64::total_cmp);
        let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Percentiles { count: values.len(), p50: rank(0.5), p99: rank(0.99), max: values[values.len() - 1] }
    }
}

#[derive(Debug, Serialize)]
struct ClipInfo {
    seconds: u32,
    width: u32,
    height: u32,
    frames: u64,
    segments: u32,
}

#[derive(Debug, Serialize)]
struct Checks {
    /// Served segments whose packets ffprobe read and counted.
    probed: u64,
    /// Of those, decoded in full.
    decoded: u64,
    failed: u64,
    /// How long the last checks took after the players stopped.
    waited_after_play_s: f64,
}

#[derive(Debug, Serialize)]
struct Shims {
    /// Transcodes the shim sent to the cluster.
    offloaded: u64,
    /// Transcodes the shim ran on this machine instead (see its log).
    local_fallbacks: u64,
    /// Shims that exited non-zero without being asked to stop.
    failed: u64,
}

#[derive(Debug, Serialize)]
struct Rss {
    /// Before the first session.
    start_kib: Option<u64>,
    after_warm_up_kib: Option<u64>,
    /// Half-way through the play: the registry's bounded lists (jobs, logs)
    /// are full by then in a long run, so from here the RSS should not move.
    half_time_kib: Option<u64>,
    /// Once the cluster was idle again.
    end_kib: Option<u64>,
    /// The largest sample (every 0.5 s).
    peak_kib: Option<u64>,
    /// The kernel's high-water mark.
    hwm_kib: Option<u64>,
    samples: usize,
    flat: bool,
}

#[derive(Debug, Serialize)]
struct SessionRow {
    session: u32,
    playbacks: u64,
    served: u64,
    lost: u64,
    seeks: u64,
    stops: u64,
    restarts: u64,
    ready_ms: Percentiles,
}

impl SessionRow {
    fn new(session: u32, t: &Tally, verified: &Verified) -> SessionRow {
        let failed = verified.failed_by_session.get(&session).copied().unwrap_or(0);
        SessionRow {
            session,
            playbacks: t.playbacks,
            served: t.served,
            lost: t.lost.len() as u64 + failed,
            seeks: t.seeks,
            stops: t.stops,
            restarts: t.restarts,
            ready_ms: Percentiles::of(&mut t.ready_ms.clone()),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    sessions: u32,
    nodes: u32,
    /// Job slots of each node.
    slots: u32,
    duration_s: f64,
    played_s: f64,
    seed: u64,
    pace: f64,
    clip: ClipInfo,
    cpus: usize,
    /// `/proc/loadavg` before the clip was made and at the end.
    load_start: String,
    load_end: String,
    playbacks: u64,
    finished: u64,
    requests: u64,
    segments_served: u64,
    segments_lost: u64,
    seeks: u64,
    stops: u64,
    restarts: u64,
    stop_kills: u64,
    slowest_stop_ms: f64,
    ready_ms: Percentiles,
    startup_ms: Percentiles,
    checks: Checks,
    shims: Shims,
    cpu: CpuUse,
    controller_rss: Rss,
    memory_rule: String,
    jobs_running_at_end: u64,
    leftover_ffmpeg: u64,
    lost: Vec<Lost>,
    per_session: Vec<SessionRow>,
}

impl Report {
    fn passed(&self) -> bool {
        self.segments_lost == 0
            && self.controller_rss.flat
            && self.jobs_running_at_end == 0
            && self.leftover_ffmpeg == 0
            && self.segments_served > 0
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: f64| format!("{v:.0}");
        let c = &self.clip;
        writeln!(f)?;
        writeln!(
            f,
            "ffcluster bench soak: {} sessions, {} nodes of {} slots, {:.0} s at {}x real time, seed {}; clip {} s \
             {}x{} 24000/1001, {} segments of {SEGMENT_SECS} s",
            self.sessions,
            self.nodes,
            self.slots,
            self.played_s,
            self.pace,
            self.seed,
            c.seconds,
            c.width,
            c.height,
            c.segments
        )?;
        let header =
            ["session", "playbacks", "served", "lost", "seeks", "stops", "restarts", "ready p50 ms", "p99", "max"];
        let row = |name: String, r: &SessionRow| {
            vec![
                name,
                r.playbacks.to_string(),
                r.served.to_string(),
                r.lost.to_string(),
                r.seeks.to_string(),
                r.stops.to_string(),
                r.restarts.to_string(),
                ms(r.ready_ms.p50),
                ms(r.ready_ms.p99),
                ms(r.ready_ms.max),
            ]
        };
        let mut rows: Vec<Vec<String>> = self.per_session.iter().map(|r| row(r.session.to_string(), r)).collect();
        let all = SessionRow {
            session: 0,
            playbacks: self.playbacks,
            served: self.segments_served,
            lost: self.segments_lost,
            seeks: self.seeks,
            stops: self.stops,
            restarts: self.restarts,
            ready_ms: self.ready_ms,
        };
        rows.push(row("all".into(), &all));
        f.write_str(&crate::status::table(&header, rows))?;
        let opt = |k: Option<u64>| k.map_or("?".to_owned(), mib);
        let r = &self.controller_rss;
        let s = &self.startup_ms;
        writeln!(
            f,
            "  segments served   {} ({} requests, {} playbacks, {} to the end)",
            self.segments_served, self.requests, self.playbacks, self.finished
        )?;
        writeln!(f, "  segments lost     {}", self.segments_lost)?;
        writeln!(
            f,
            "  time until ready  p50 {} ms, p99 {} ms, max {} ms over {} requests; after a (re)start p50 {} ms, p99 {} ms, max {} ms",
            ms(self.ready_ms.p50),
            ms(self.ready_ms.p99),
            ms(self.ready_ms.max),
            self.ready_ms.count,
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        )?;
        writeln!(
            f,
            "  checks            {} segments probed (frames, audio), {} decoded in full, {} failed; {:.1} s of checks after the players stopped",
            self.checks.probed, self.checks.decoded, self.checks.failed, self.checks.waited_after_play_s
        )?;
        writeln!(
            f,
            "  shims             {} transcodes offloaded, {} local fallbacks, {} failed; {} stops needed SIGKILL, slowest stop {} ms",
            self.shims.offloaded,
            self.shims.local_fallbacks,
            self.shims.failed,
            self.stop_kills,
            ms(self.slowest_stop_ms)
        )?;
        let c = &self.cpu;
        writeln!(
            f,
            "  CPU               {:.0} of {:.0} core-seconds: nodes' ffmpegs {:.0}, shims+finishers+checks {:.0}, \
             controller {:.1}, other processes on the machine {:.0}",
            c.nodes_s + c.shims_and_checks_s + c.controller_s + c.other_s,
            c.available_s,
            c.nodes_s,
            c.shims_and_checks_s,
            c.controller_s,
            c.other_s
        )?;
        writeln!(
            f,
            "  controller RSS    start {}, after warm-up {}, half-way {}, end {}, peak {} ({}): {}",
            opt(r.start_kib),
            opt(r.after_warm_up_kib),
            opt(r.half_time_kib),
            opt(r.end_kib),
            opt(r.peak_kib),
            self.memory_rule,
            if r.flat { "flat" } else { "GREW" }
        )?;
        writeln!(
            f,
            "  at the end        {} jobs running, {} ffmpeg processes left",
            self.jobs_running_at_end, self.leftover_ffmpeg
        )?;
        writeln!(
            f,
            "  machine           {} CPUs, load {} at start, {} at end",
            self.cpus, self.load_start, self.load_end
        )?;
        for l in self.lost.iter().take(10) {
            let what = l.segment.map_or("job".to_owned(), |n| format!("segment {n}"));
            writeln!(f, "  lost: session {} playback {} {what}: {}", l.session, l.playback, l.reason)?;
        }
        if self.lost.len() > 10 {
            writeln!(f, "  lost: … {} more (see --json)", self.lost.len() - 10)?;
        }
        writeln!(f, "verdict: {}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_follows_the_forced_keyframes() {
        // 60 s at 24000/1001: 1439 frames (the last one starts before 60 s).
        let g = Grid::new(1439);
        assert_eq!(g.segments, 20);
        assert_eq!(Grid::boundary(1), 72);
        assert_eq!(g.expected(0), 71..=73);
        // 71.93 frames a segment: one in about fourteen holds 71.
        assert_eq!(Grid::boundary(14) - Grid::boundary(13), 71);
        assert_eq!(g.expected(13), 70..=72);
        assert_eq!(g.expected(19), 1..=73);
    }

    #[test]
    fn the_rng_repeats_per_seed_and_differs_per_session() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7, 0).next()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut r = Rng::new(7, 0);
        let mut s = Rng::new(7, 1);
        assert_ne!(r.next(), s.next());
        let hits = (0..10_000).filter(|_| r.chance(0.1)).count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert!((0..1000).all(|_| r.below(5) < 5));
    }

    #[test]
    fn a_seek_restarts_the_template_at_the_segment() {
        let (input, dir) = (Path::new("/m/a.mkv"), Path::new("/t"));
        let job = HlsTemplate { input, dir, md5: "x", width: 426, height: 240, fmp4: true, start: 26 };
        let a = job.args().join(" ");
        assert!(
            a.starts_with("-analyzeduration 200M -probesize 1G -ss 00:01:18.000 -noaccurate_seek -i file:/m/a.mkv ")
        );
        assert!(a.contains(" -hls_segment_type fmp4 -hls_fmp4_init_filename x-1.mp4 -start_number 26 "), "{a}");
        assert!(
            a.ends_with(
                " -hls_segment_filename /t/x%d.mp4 -hls_playlist_type vod -hls_list_size 0 \
                               -hls_segment_options movflags=+frag_discont -y /t/x.m3u8"
            ),
            "{a}"
        );
        assert_eq!(job.segment(-1), Path::new("/t/x-1.mp4"));
        let ts = HlsTemplate { fmp4: false, start: 0, ..job }.args().join(" ");
        assert!(ts.starts_with("-analyzeduration 200M -probesize 1G -i file:/m/a.mkv "), "{ts}");
        assert!(ts.contains(" -force_key_frames:0 expr:gte(t,n_forced*3) "), "{ts}");
        assert!(
            ts.ends_with(
                " -hls_time 3 -hls_segment_type mpegts -start_number 0 -hls_segment_filename /t/x%d.ts \
                              -hls_playlist_type vod -hls_list_size 0 -y /t/x.m3u8"
            ),
            "{ts}"
        );
    }

    #[test]
    fn a_framecrc_listing_counts_packets_per_media_type() {
        let listing = "#tb 0: 1/24000\n#media_type 0: video\n#tb 1: 1/48000\n#media_type 1: audio\n\
                       #stream#, dts, pts, duration, size, hash\n0, 0, 0, 1001, 1, 0x1\n1, 0, 0, 1024, 1, 0x2\n\
                       0, 1001, 1001, 1001, 1, 0x3\n";
        assert_eq!(count_framecrc(listing), [("video".to_owned(), 2), ("audio".to_owned(), 1)]);
        let check = Check {
            session: 0,
            playback: 1,
            index: 0,
            job_start: 0,
            copy: PathBuf::new(),
            frames: 71..=73,
            decode: false,
        };
        let ok = [("video".to_owned(), 72), ("audio".to_owned(), 141)];
        assert_eq!(frames_and_audio(&check, &ok), Ok(()));
        let short = [("video".to_owned(), 70), ("audio".to_owned(), 141)];
        assert!(frames_and_audio(&check, &short).unwrap_err().contains("70 video frames"));
        let silent = [("video".to_owned(), 72), ("audio".to_owned(), 100)];
        assert!(frames_and_audio(&check, &silent).unwrap_err().contains("of audio for"));
        assert!(frames_and_audio(&check, &ok[..1]).unwrap_err().contains("no audio stream"));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut []).count, 0);
    }
}
