//! Split jobs: one submission whose timeline is cut into chunks, each run as an
//! ordinary node job (an *attempt*) and streamed back to the shim, which joins
//! them with its local finisher.
//!
//! [`SplitJob`] is one job's state machine. It lives in the registry, under its
//! lock, and queues the shim's control messages itself; the registry owns the
//! nodes and applies what [`SplitJob`] decides (runs, cancels, throughput).
//!
//! The policy is pure and tested on its own:
//! * [`pick`]: which work a free slot takes. Every job's earliest unfinished
//!   chunk beats any job's later chunks, older jobs win ties, and a late chunk
//!   is re-issued only when no slot can take anything else.
//! * [`late`]: when a running attempt is overdue.
//! * [`throughputs`] and [`relative_speed`]: how fast nodes are, measured from
//!   finished chunks, estimated from the benchmark score until then.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::outbox::Reserved;
use super::scheduler::NoPlacement;
use super::shim_link::ShimConn;
use super::status::Reasons;
use crate::ffmpeg::decision::Needs;
use crate::plan::{Chunk, Planner, Sizing};
use crate::priority::Priority;
use crate::protocol::{
    AUDIO_CHUNK, Capabilities, FileOffer, JobId, JobRequest, JobSpec, OutputEvent, RemoteExit, ToShim,
};
use crate::split::live::{Piece, PieceClock, TICKS};
use crate::split::mpegts::{Invalid, Verifier};
use crate::split::{LiveSpan, SplitPlan};

/// Failed attempts of one chunk after which the whole job fails: a chunk that
/// fails that often fails for a reason another try will not fix.
pub(crate) const MAX_FAILURES: u32 = 3;
/// How long a job may have work but no connected node able to do it (all gone,
/// or none left with its ffmpeg build) before it fails, so that the shim can
/// fall back instead of waiting forever. Long enough to ride out a node's
/// reconnection.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(15);
/// Stderr kept per attempt for the failure reason.
const STDERR_TAIL: usize = 4096;
/// Weight of the newest sample in a node's throughput average.
const RATE_WEIGHT: f64 = 0.5;
/// The planner's largest chunk for a node of average speed.
const MAX_CHUNK_SECONDS: f64 = 30.0;
/// A chunk ending this close to the plan's end is the last one.
const END_SLACK: f64 = 1e-6;
/// [`Attempt::chunk`] of the audio track's attempts.
pub(crate) const AUDIO: usize = usize::MAX;
/// An audio track that sent nothing for this long is run again elsewhere (its
/// node may be gone without a word); the shim takes whichever is ahead.
const AUDIO_STALL: Duration = Duration::from_secs(5);

/// Why a split job is not taken; the text goes to the shim, which runs the job
/// locally.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum SplitRefused {
    #[error(transparent)]
    Placement(#[from] NoPlacement),
    #[error("the split plan is unusable: {0}")]
    Plan(String),
}

/// Refuses plans the planner cannot cut (it would loop or divide by zero).
pub(crate) fn check_plan(plan: &SplitPlan) -> Result<(), SplitRefused> {
    let p = plan.grid.period;
    if !(p.is_finite() && p > 0.0 && plan.grid.origin.is_finite()) {
        return Err(SplitRefused::Plan(format!("segment grid of period {p} at {}", plan.grid.origin)));
    }
    if let Some(live) = &plan.live {
        if !(live.piece.is_finite() && live.piece >= 0.04 && live.piece <= p + 1e-9) {
            return Err(SplitRefused::Plan(format!("live pieces of {} s on a {p} s grid", live.piece)));
        }
        return Ok(());
    }
    if !(plan.start.is_finite() && plan.end.is_finite() && plan.end > plan.start) {
        return Err(SplitRefused::Plan(format!("empty timeline {}..{}", plan.start, plan.end)));
    }
    Ok(())
}

/// How an attempt ended, as its node or the registry saw it.
#[derive(Debug, Clone)]
pub(crate) enum AttemptEnd {
    Exited(RemoteExit),
    Refused(String),
    /// The node went away (the reason says which).
    Lost(String),
    /// Its bytes failed verification while streaming; the node is told to stop.
    Invalid(String),
    /// Stopped to give its node to more urgent work (the reason says which).
    Preempted(String),
}

/// What the registry must do after an attempt ended.
#[derive(Debug)]
pub(crate) struct Ending {
    /// The node that ran the attempt.
    pub node: u64,
    /// Attempts of the same chunk that lost the race: to cancel on their nodes.
    pub losers: Vec<(JobId, u64)>,
    /// Seconds of content per wall second the attempt achieved, when it won.
    pub sample: Option<f64>,
    pub fate: Fate,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// It failed because what the node sent was wrong: not the node's bad luck
    /// but a broken node, which should get no more work for a while.
    pub bad_output: bool,
}

/// Where the job stands after an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    Running,
    /// Every chunk is done.
    Complete,
    /// A chunk failed [`MAX_FAILURES`] times.
    Failed(String),
}

/// Counters for the status document.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Progress {
    pub done: u32,
    pub running: u32,
    pub planned: u32,
    pub nodes: Vec<String>,
    pub reissued: u32,
    pub preempted: u32,
    pub live_lag_ms: Option<u64>,
}

/// One planned chunk.
#[derive(Debug)]
struct ChunkState {
    chunk: Chunk,
    last: bool,
    /// Bytes of the winning attempt, once one won.
    done: Option<u64>,
    failures: u32,
    /// Nodes an attempt failed on: another node is preferred for the retry.
    failed_on: BTreeSet<u64>,
}

/// The job's audio track, when a node encodes it.
#[derive(Debug, Default)]
struct AudioTrack {
    done: bool,
    failures: u32,
    failed_on: BTreeSet<u64>,
}

/// The audio track's call for a node (see [`SplitJob::audio_wanted`]).
#[derive(Debug)]
pub(crate) struct AudioWant<'a> {
    /// Nodes it failed on: not chosen while others can take it.
    pub avoid: &'a BTreeSet<u64>,
    /// Nodes that must not take it (they run it already).
    pub exclude: Vec<u64>,
    pub reissue: bool,
}

/// The node an attempt starts on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taker<'a> {
    pub id: u64,
    pub name: &'a str,
    /// Its `caps.ffmpeg_version`.
    pub version: &'a str,
}

/// One run of a chunk on a node.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) chunk: usize,
    pub(crate) node: u64,
    node_name: String,
    started: Instant,
    /// When its last output arrived (or it started).
    progressed: Instant,
    /// Bytes forwarded to the shim.
    sent: u64,
    /// The size the node announced in its `Done`.
    announced: Option<u64>,
    stderr: VecDeque<u8>,
    /// Checks its bytes before they reach the shim.
    check: Verifier,
    /// The video frames its span holds, when certain ([`ChunkRecipe::frames`]):
    /// a chunk that encoded another count is logged.
    pub(crate) frames: Option<u64>,
}

/// Node-side file ids of a live job's pieces start here (below are the shim's
/// offers), so that one relay serves both.
pub(crate) const PIECE_FILE_BASE: u32 = 1 << 30;

/// The name a node's command line gives piece `chunk`: the node offers it
/// through the relay like any input file.
fn piece_name(chunk: usize) -> String {
    format!("ffcluster-live-{chunk}.ts")
}

/// A live job's pieces, as the controller cuts them from the incoming stream
/// ([`crate::split::live::Cutter`]): chunk `i` is piece `i`.
#[derive(Debug, Default)]
struct LiveFeed {
    spans: Vec<LiveSpan>,
    /// How each piece's node places it on the stream's unwrapped timeline.
    clocks: Vec<PieceClock>,
    /// Each piece's bytes, until its chunk is done.
    bytes: BTreeMap<usize, Arc<[u8]>>,
    /// When each piece was cut: its chunk's output is due that long after.
    cut_at: Vec<Instant>,
    /// The stream ended: no piece will follow.
    ended: bool,
    /// The lag passed two segments (warned once, until it recovers).
    behind: bool,
}

#[derive(Debug)]
pub(crate) struct SplitJob {
    pub(crate) id: JobId,
    pub(crate) priority: Priority,
    plan: SplitPlan,
    planner: Planner,
    /// The planner ran dry without a chunk reaching the end (rounding): what
    /// was planned is all there is.
    exhausted: bool,
    needs: Needs,
    pub(crate) args: Vec<String>,
    pub(crate) reason: String,
    /// Why it runs as it does beyond `reason` (a resumed job's cause; the
    /// shim's fallback, once it says so).
    pub(crate) why: Reasons,
    cwd: String,
    pub(crate) files: Vec<FileOffer>,
    pub(crate) access: String,
    pub(crate) started: Instant,
    pub(crate) started_unix_ms: u64,
    pub(crate) shim: Arc<ShimConn>,
    /// The ffmpeg build every chunk is encoded with (`caps.ffmpeg_version` of
    /// the first node that took one): chunks from different builds need not
    /// join into the stream one ffmpeg would have made.
    version: Option<String>,
    chunks: Vec<ChunkState>,
    /// Encoded by a node (see [`SplitJob::new`]); `None`: by the shim's finisher.
    audio: Option<AudioTrack>,
    /// Running attempts.
    pub(crate) attempts: BTreeMap<JobId, Attempt>,
    nodes_used: BTreeSet<String>,
    reissued: u32,
    /// Attempts stopped to give their node to more urgent work.
    preempted: u32,
    /// Since when no connected node can run its chunks.
    stalled_since: Option<Instant>,
    /// A live job's pieces; `None` for a file.
    live: Option<LiveFeed>,
}

impl SplitJob {
    /// The job for `request`, whose plan it checks. `nodes` is how many nodes
    /// could run it when it was submitted: chunks are sized so that each gets a
    /// share.
    pub(crate) fn new(
        id: JobId,
        mut request: JobRequest,
        access: String,
        shim: Arc<ShimConn>,
        nodes: usize,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<SplitJob, SplitRefused> {
        let plan = request.split.take().ok_or_else(|| SplitRefused::Plan("the job has no split plan".into()))?;
        check_plan(&plan)?;
        let sizing =
            // One-segment chunks get segment 0 out fast when several nodes share
            // the start; a lone node does better streaming one long chunk.
            Sizing {
                first: 1,
                small_chunks: if nodes <= 1 { 0 } else { nodes.max(3) },
                max_seconds: MAX_CHUNK_SECONDS,
                nodes: nodes.max(1),
            };
        let planner = Planner::new(plan.grid, plan.start, plan.end, plan.start_number, sizing);
        // A lone node would share its CPU between the audio and the chunk the
        // first segment waits for; the shim's machine then encodes the audio
        // (a few percent of a core). With more nodes another one takes it.
        // A seek without accurate_seek starts the audio where the direct run
        // does only when a node encodes it (the planner refuses the job
        // otherwise), even a lone node.
        let restart = plan.recipe.noaccurate_first && plan.recipe.first_seek.is_some();
        let audio = (plan.audio.is_some() && (nodes > 1 || restart)).then(AudioTrack::default);
        let live = plan.live.as_ref().map(|_| LiveFeed::default());
        let priority = request.priority.unwrap_or_else(|| Priority::of_args(&request.args));
        Ok(SplitJob {
            live,
            id,
            priority,
            plan,
            planner,
            exhausted: false,
            needs: request.needs,
            args: request.args,
            reason: request.reason,
            why: Reasons { not_split: request.not_split, resumed: request.resumed, fallback: None },
            cwd: request.cwd,
            files: request.files,
            access,
            started: now,
            started_unix_ms: now_unix_ms,
            shim,
            version: None,
            chunks: Vec::new(),
            audio,
            attempts: BTreeMap::new(),
            nodes_used: BTreeSet::new(),
            reissued: 0,
            preempted: 0,
            stalled_since: None,
        })
    }

    /// Whether a node with `caps` may run this job's chunks.
    pub(crate) fn can_use(&self, caps: &Capabilities) -> bool {
        self.version.as_deref().is_none_or(|v| v == caps.ffmpeg_version) && caps.missing(&self.needs).is_empty()
    }

    /// Index of the first chunk not done (the next to plan when all are).
    fn earliest(&self) -> usize {
        self.chunks.iter().position(|c| c.done.is_none()).unwrap_or(self.chunks.len())
    }

    fn planned_all(&self) -> bool {
        match &self.live {
            Some(l) => l.ended && self.chunks.len() == l.spans.len(),
            None => self.exhausted || self.chunks.last().is_some_and(|c| c.last),
        }
    }

    /// Whether a new chunk can be planned now (a live job waits for pieces).
    fn can_plan(&self) -> bool {
        match &self.live {
            Some(l) => self.chunks.len() < l.spans.len(),
            None => !self.planned_all(),
        }
    }

    /// The offered stream a live job's pieces are cut from, and their length
    /// in 90 kHz ticks.
    pub(crate) fn live_source(&self) -> Option<(u32, u64)> {
        let live = self.plan.live.as_ref()?;
        Some((live.stream, (live.piece * TICKS as f64).round() as u64))
    }

    /// A piece the controller cut from the live stream.
    pub(crate) fn add_piece(&mut self, piece: Piece, now: Instant) {
        let Some(l) = &mut self.live else { return };
        if l.ended || piece.index as usize != l.spans.len() {
            warn!(job = self.id, piece = piece.index, "live piece out of order; dropped");
            return;
        }
        let i = l.spans.len();
        l.spans.push(LiveSpan { start: piece.start, end: piece.end, origin: piece.origin });
        l.clocks.push(piece.clock);
        l.bytes.insert(i, Arc::from(piece.bytes.into_boxed_slice()));
        l.cut_at.push(now);
        // More than two segments behind the stream: the nodes together are
        // slower than real time, and the lag will grow.
        let limit = Duration::from_secs_f64(2.0 * self.plan.grid.period);
        let lag = self.live_lag(now).unwrap_or_default();
        let behind = lag > limit;
        if let Some(l) = &mut self.live
            && behind != l.behind
        {
            l.behind = behind;
            if behind {
                warn!(job = self.id, lag = format!("{:.1}", lag.as_secs_f64()), "live job falls behind its stream");
            } else {
                info!(job = self.id, "live job caught up with its stream");
            }
        }
    }

    /// The live stream ended (`error`: how it broke). The job completes once
    /// its last piece is encoded, or fails if the stream held no video.
    pub(crate) fn end_stream(&mut self, error: Option<&str>) -> Fate {
        let Some(l) = &mut self.live else { return Fate::Running };
        l.ended = true;
        if l.spans.is_empty() {
            let why = error.map_or(String::new(), |e| format!(": {e}"));
            return Fate::Failed(format!("the live stream ended before its first keyframe{why}"));
        }
        if self.complete() { Fate::Complete } else { Fate::Running }
    }

    /// Bytes of the live pieces kept for nodes.
    pub(crate) fn piece_bytes(&self) -> usize {
        self.live.as_ref().map_or(0, |l| l.bytes.values().map(|b| b.len()).sum())
    }

    /// The bytes of piece file `file` ([`PIECE_FILE_BASE`] + chunk), while a
    /// node may need them.
    pub(crate) fn piece(&self, file: u32) -> Option<Arc<[u8]>> {
        let chunk = file.checked_sub(PIECE_FILE_BASE)? as usize;
        self.live.as_ref()?.bytes.get(&chunk).cloned()
    }

    /// How long the oldest piece not yet encoded has waited since it was cut:
    /// what the cluster adds to the live stream's latency now.
    pub(crate) fn live_lag(&self, now: Instant) -> Option<Duration> {
        let l = self.live.as_ref()?;
        let waiting = self.chunks.iter().position(|c| c.done.is_none()).unwrap_or(self.chunks.len());
        let cut = l.cut_at.get(waiting)?;
        Some(now.saturating_duration_since(*cut))
    }

    pub(crate) fn complete(&self) -> bool {
        self.planned_all()
            && !self.chunks.is_empty()
            && self.chunks.iter().all(|c| c.done.is_some())
            && self.audio.as_ref().is_none_or(|a| a.done)
    }

    /// Whether a node encodes the audio track (the shim's finisher copies it).
    pub(crate) fn remote_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// Whether the audio track wants a node: none runs it, or the one that does
    /// has gone quiet (a second attempt, not on that node).
    pub(crate) fn audio_wanted(&self, now: Instant) -> Option<AudioWant<'_>> {
        let a = self.audio.as_ref().filter(|a| !a.done)?;
        let running: Vec<&Attempt> = self.running(AUDIO).map(|(_, a)| a).collect();
        match running.as_slice() {
            [] => Some(AudioWant { avoid: &a.failed_on, exclude: Vec::new(), reissue: false }),
            [one] if now.saturating_duration_since(one.progressed) >= AUDIO_STALL => {
                Some(AudioWant { avoid: &a.failed_on, exclude: vec![one.node], reissue: true })
            }
            _ => None,
        }
    }

    /// How close to the playhead the nearest chunk `node` runs for this job is
    /// (0: the earliest unfinished one); None when it runs none. The audio goes
    /// where it slows the chunks the next segments wait for least.
    pub(crate) fn nearest_chunk_on(&self, node: u64) -> Option<usize> {
        let earliest = self.earliest();
        self.attempts.values().filter(|a| a.node == node && a.chunk != AUDIO).map(|a| a.chunk - earliest).min()
    }

    fn running(&self, chunk: usize) -> impl Iterator<Item = (&JobId, &Attempt)> {
        self.attempts.iter().filter(move |(_, a)| a.chunk == chunk)
    }

    /// What this job offers free slots now: chunks waiting for a retry, the next
    /// new chunk, and chunks whose only attempt is late (`rates`: throughput of
    /// each node, see [`throughputs`]).
    pub(crate) fn work(&self, now: Instant, rates: &BTreeMap<u64, Option<f64>>) -> Vec<Work<'_>> {
        let earliest = self.earliest();
        let base = |kind, chunk, exclude| Work {
            job: self.id,
            priority: self.priority,
            kind,
            chunk,
            earliest,
            needs: &self.needs,
            version: self.version.as_deref(),
            avoid: self.chunks.get(chunk).map(|c| &c.failed_on),
            exclude,
        };
        let mut out = Vec::new();
        for (i, c) in self.chunks.iter().enumerate().skip(earliest) {
            if c.done.is_some() {
                continue;
            }
            let running: Vec<&Attempt> = self.running(i).map(|(_, a)| a).collect();
            match running.as_slice() {
                [] => out.push(base(WorkKind::Pending, i, Vec::new())),
                // Only a chunk's single attempt is re-issued: at most two run.
                [a] => {
                    let rate = rates.get(&a.node).copied().flatten();
                    if late(now.saturating_duration_since(a.started), c.chunk.end - c.chunk.start, rate) {
                        out.push(base(WorkKind::Reissue, i, vec![a.node]));
                    }
                }
                _ => {}
            }
        }
        if self.can_plan() {
            out.push(base(WorkKind::New, self.chunks.len(), Vec::new()));
        }
        out
    }

    /// Plans the next chunk for a node of relative `speed`; its index, or None
    /// when the timeline is covered.
    pub(crate) fn plan_next(&mut self, speed: f64, rates: &BTreeMap<u64, Option<f64>>, now: Instant) -> Option<usize> {
        if let Some(l) = &self.live {
            let i = self.chunks.len();
            let span = *l.spans.get(i)?;
            let period = self.plan.grid.period;
            let at = |t: u64| t.saturating_sub(span.origin) as f64 / TICKS as f64;
            let start = at(span.start);
            let end = span.end.map_or(start + self.plan.live.as_ref().map_or(period, |p| p.piece), at);
            let first_segment = self.plan.start_number + (start / period + 1e-9).floor() as i64;
            let chunk = Chunk { index: i, start, end, first_segment };
            let last = span.end.is_none();
            self.chunks.push(ChunkState { chunk, last, done: None, failures: 0, failed_on: BTreeSet::new() });
            return Some(i);
        }
        if self.planned_all() {
            return None;
        }
        let in_flight = self.in_flight(rates, now);
        let Some(chunk) = self.planner.next(speed, in_flight) else {
            self.exhausted = true;
            return None;
        };
        let last = chunk.end >= self.plan.end - END_SLACK;
        self.chunks.push(ChunkState { chunk, last, done: None, failures: 0, failed_on: BTreeSet::new() });
        Some(self.chunks.len() - 1)
    }

    /// Seconds of planned content not encoded yet, as far as the nodes'
    /// throughputs tell: chunks waiting for a retry whole, running ones less
    /// what their node should have done since it started (the fastest attempt
    /// of a re-issued chunk counts).
    fn in_flight(&self, rates: &BTreeMap<u64, Option<f64>>, now: Instant) -> f64 {
        let mut total = 0.0;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.done.is_some() {
                continue;
            }
            let len = c.chunk.end - c.chunk.start;
            let left = self
                .running(i)
                .map(|(_, a)| {
                    let rate = rates.get(&a.node).copied().flatten().unwrap_or(0.0);
                    (len - rate * now.saturating_duration_since(a.started).as_secs_f64()).max(0.0)
                })
                .reduce(f64::min)
                .unwrap_or(len);
            total += left;
        }
        total
    }

    /// Starts attempt `attempt` of `chunk` on a node: tells the shim (before any
    /// of the attempt's bytes can exist) and returns what the node must run.
    pub(crate) fn start(
        &mut self,
        chunk: usize,
        attempt: JobId,
        on: Taker<'_>,
        reissue: bool,
        now: Instant,
    ) -> JobSpec {
        let c = &self.chunks[chunk];
        let (span, last) = ((c.chunk.start, c.chunk.end), c.last);
        let first = c.chunk.index == 0;
        let (args, frames, piece) = match &self.live {
            Some(l) => {
                let size = l.bytes.get(&chunk).map_or(0, |b| b.len() as u64);
                let offer = FileOffer {
                    id: PIECE_FILE_BASE + chunk as u32,
                    reference: piece_name(chunk),
                    entry: None,
                    size,
                    stream: false,
                };
                let args = self.plan.recipe.live_args_on(&l.spans[chunk], &l.clocks[chunk], &offer.reference);
                (args, None, Some(offer))
            }
            None => {
                (self.plan.recipe.args(&c.chunk, first, c.last), self.plan.recipe.frames(&c.chunk, first, c.last), None)
            }
        };
        let mut spec = self.launch(chunk, attempt, on, reissue, span, last, args, now);
        spec.files.extend(piece);
        if let Some(a) = self.attempts.get_mut(&attempt) {
            a.frames = frames;
        }
        spec
    }

    /// Starts the audio track's attempt `attempt` on a node, like [`Self::start`].
    pub(crate) fn start_audio(
        &mut self,
        attempt: JobId,
        on: Taker<'_>,
        reissue: bool,
        now: Instant,
    ) -> Option<JobSpec> {
        let args = self.plan.recipe.audio_args(self.plan.audio.as_ref()?);
        let span = (self.plan.start, self.plan.end);
        Some(self.launch(AUDIO, attempt, on, reissue, span, false, args, now))
    }

    /// What starting any attempt records: the build it pins, the node, a
    /// re-issue; the shim's `ChunkStarted`; the running attempt.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &mut self,
        chunk: usize,
        attempt: JobId,
        on: Taker<'_>,
        reissue: bool,
        (start, end): (f64, f64),
        last: bool,
        args: Vec<String>,
        now: Instant,
    ) -> JobSpec {
        self.version.get_or_insert_with(|| on.version.to_owned());
        self.nodes_used.insert(on.name.to_owned());
        if reissue {
            self.reissued += 1;
        }
        self.shim.out.json(ToShim::ChunkStarted {
            chunk: wire(chunk),
            attempt,
            node: on.name.to_owned(),
            start,
            end,
            last,
        });
        self.attempts.insert(
            attempt,
            Attempt {
                chunk,
                node: on.id,
                node_name: on.name.to_owned(),
                started: now,
                progressed: now,
                sent: 0,
                announced: None,
                stderr: VecDeque::new(),
                check: Verifier::default(),
                frames: None,
            },
        );
        JobSpec {
            args,
            cwd: self.cwd.clone(),
            files: self.files.clone(),
            access: self.access.clone(),
            light: chunk == AUDIO,
        }
    }

    /// An `Output` event of an attempt: only its announced size matters (the
    /// shim knows where chunk bytes go).
    pub(crate) fn output_event(&mut self, attempt: JobId, event: &OutputEvent) {
        if let (Some(a), OutputEvent::Done { size, .. }) = (self.attempts.get_mut(&attempt), event) {
            a.announced = Some(*size);
        }
    }

    /// Stderr of an attempt: nobody reads it live, but its end explains a failure.
    pub(crate) fn stderr(&mut self, attempt: JobId, bytes: &[u8]) {
        let Some(a) = self.attempts.get_mut(&attempt) else { return };
        a.stderr.extend(bytes);
        let over = a.stderr.len().saturating_sub(STDERR_TAIL);
        a.stderr.drain(..over);
    }

    /// Queues an output frame of a running attempt (`payload` bytes of the
    /// encoded `frame`). False when the attempt is over: its bytes are void.
    /// A chunk's bytes are checked first ([`Verifier`]): bytes that fail go
    /// nowhere, and the caller ends the attempt with the error.
    pub(crate) fn forward(
        &mut self,
        attempt: JobId,
        payload: usize,
        frame: Vec<u8>,
        share: Reserved,
    ) -> Result<bool, Invalid> {
        let Some(a) = self.attempts.get_mut(&attempt) else { return Ok(false) };
        if a.chunk != AUDIO {
            a.check.feed(&frame[frame.len() - payload..])?;
        }
        a.sent += payload as u64;
        a.progressed = Instant::now();
        Ok(self.shim.out.binary_reserved(frame, share))
    }

    /// The video chunk attempts holding slots, for [`preemption`].
    pub(crate) fn occupants(&self) -> impl Iterator<Item = Occupant> + '_ {
        self.attempts.iter().filter(|(_, a)| a.chunk != AUDIO).map(|(id, a)| Occupant {
            attempt: *id,
            job: self.id,
            priority: self.priority,
            node: a.node,
            started: a.started,
        })
    }

    /// Ends a running attempt. None when it was not running.
    pub(crate) fn end_attempt(&mut self, attempt: JobId, end: AttemptEnd, now: Instant) -> Option<Ending> {
        let a = self.attempts.remove(&attempt)?;
        let invalid =
            |why: &dyn std::fmt::Display| format!("the chunk {} sent failed verification: {why}", a.node_name);
        let mut bad_output = matches!(end, AttemptEnd::Invalid(_));
        let failure = match &end {
            AttemptEnd::Exited(exit) if exit.success() => match a.announced {
                Some(n) if n != a.sent => {
                    Some(format!("{} announced {n} bytes of output but {} arrived", a.node_name, a.sent))
                }
                _ if a.chunk == AUDIO => None,
                _ => {
                    // The frames ffmpeg says it encoded must all have arrived. Fewer
                    // than the span holds is the input's business (a truncated
                    // file gives the direct run fewer frames too), not the node's.
                    let encoded = encoded_frames(&a.stderr);
                    if let (Some(e), Some(planned)) = (encoded, a.frames)
                        && e != planned
                    {
                        warn!(job = self.id, attempt, "chunk encoded {e} frames where its span holds {planned}");
                    }
                    a.check.finish(encoded).err().map(|e| {
                        bad_output = true;
                        invalid(&e)
                    })
                }
            },
            AttemptEnd::Exited(exit) => Some(exit_reason(*exit, &a)),
            AttemptEnd::Refused(why) => Some(format!("refused by {}: {why}", a.node_name)),
            AttemptEnd::Lost(why) | AttemptEnd::Preempted(why) => Some(why.clone()),
            AttemptEnd::Invalid(why) => Some(invalid(why)),
        };
        let preempted = matches!(end, AttemptEnd::Preempted(_));
        let mut ending = match (failure.clone(), a.chunk == AUDIO) {
            (None, false) => self.won(attempt, a, now),
            (Some(reason), false) if preempted => self.requeued(attempt, a, reason),
            (Some(reason), false) => self.failed(attempt, a, reason),
            (None, true) => self.audio_done(attempt, a),
            (Some(reason), true) => self.audio_failed(attempt, a, reason),
        };
        ending.failure = failure;
        ending.bad_output = bad_output;
        Some(ending)
    }

    fn audio_done(&mut self, attempt: JobId, a: Attempt) -> Ending {
        if let Some(t) = &mut self.audio {
            t.done = true;
        }
        self.shim.out.json(ToShim::ChunkDone { chunk: AUDIO_CHUNK, attempt, size: a.sent });
        info!(job = self.id, attempt, node = %a.node_name, bytes = a.sent, "audio track done");
        let beaten: Vec<JobId> = self.running(AUDIO).map(|(id, _)| *id).collect();
        let mut losers = Vec::new();
        for id in beaten {
            if let Some(l) = self.attempts.remove(&id) {
                self.shim.out.json(ToShim::ChunkFailed {
                    chunk: AUDIO_CHUNK,
                    attempt: id,
                    reason: "superseded".into(),
                });
                losers.push((id, l.node));
            }
        }
        let fate = if self.complete() { Fate::Complete } else { Fate::Running };
        // Audio says nothing about how fast a node encodes video.
        Ending { node: a.node, losers, sample: None, fate, failure: None, bad_output: false }
    }

    fn audio_failed(&mut self, attempt: JobId, a: Attempt, reason: String) -> Ending {
        warn!(job = self.id, attempt, node = %a.node_name, "audio track attempt failed: {reason}");
        self.shim.out.json(ToShim::ChunkFailed { chunk: AUDIO_CHUNK, attempt, reason: reason.clone() });
        let t = self.audio.get_or_insert_with(AudioTrack::default);
        t.failures += 1;
        t.failed_on.insert(a.node);
        // A new attempt starts over; the shim checks what it repeats against
        // what the finisher already has.
        let fate = if t.failures >= MAX_FAILURES {
            Fate::Failed(format!("the audio track failed {} times; last: {reason}", t.failures))
        } else {
            Fate::Running
        };
        Ending { node: a.node, losers: Vec::new(), sample: None, fate, failure: None, bad_output: false }
    }

    fn won(&mut self, attempt: JobId, a: Attempt, now: Instant) -> Ending {
        let idx = a.chunk;
        let c = &mut self.chunks[idx];
        // Losers are removed when a chunk is won, so no second result arrives.
        c.done = Some(a.sent);
        let chunk = c.chunk;
        if let Some(l) = &mut self.live {
            l.bytes.remove(&idx);
        }
        self.shim.out.json(ToShim::ChunkDone { chunk: wire(idx), attempt, size: a.sent });
        let wall = now.saturating_duration_since(a.started).as_secs_f64().max(1e-3);
        info!(
            job = self.id,
            chunk = idx,
            attempt,
            node = %a.node_name,
            bytes = a.sent,
            seconds = format!("{:.1}-{:.1}", chunk.start, chunk.end),
            wall = format!("{wall:.2}"),
            "chunk done"
        );
        let beaten: Vec<JobId> = self.running(idx).map(|(id, _)| *id).collect();
        let mut losers = Vec::new();
        for id in beaten {
            if let Some(l) = self.attempts.remove(&id) {
                self.shim.out.json(ToShim::ChunkFailed { chunk: wire(idx), attempt: id, reason: "superseded".into() });
                losers.push((id, l.node));
            }
        }
        let fate = if self.complete() { Fate::Complete } else { Fate::Running };
        Ending {
            node: a.node,
            losers,
            sample: Some((chunk.end - chunk.start) / wall),
            fate,
            failure: None,
            bad_output: false,
        }
    }

    /// An attempt stopped to give its node to more urgent work: the chunk
    /// waits for a slot again, and nothing counts against it or the node.
    fn requeued(&mut self, attempt: JobId, a: Attempt, reason: String) -> Ending {
        info!(job = self.id, chunk = a.chunk, attempt, node = %a.node_name, "chunk attempt stopped: {reason}");
        self.shim.out.json(ToShim::ChunkFailed { chunk: wire(a.chunk), attempt, reason });
        self.preempted += 1;
        Ending { node: a.node, losers: Vec::new(), sample: None, fate: Fate::Running, failure: None, bad_output: false }
    }

    fn failed(&mut self, attempt: JobId, a: Attempt, reason: String) -> Ending {
        let idx = a.chunk;
        warn!(job = self.id, chunk = idx, attempt, node = %a.node_name, "chunk attempt failed: {reason}");
        self.shim.out.json(ToShim::ChunkFailed { chunk: wire(idx), attempt, reason: reason.clone() });
        let c = &mut self.chunks[idx];
        c.failures += 1;
        c.failed_on.insert(a.node);
        let fate = if c.failures >= MAX_FAILURES {
            Fate::Failed(format!(
                "chunk {idx} ({:.3}-{:.3} s) failed {} times; last: {reason}",
                c.chunk.start, c.chunk.end, c.failures
            ))
        } else {
            Fate::Running
        };
        // Nothing encoded survives: the next chunk may pin another build.
        if self.attempts.is_empty()
            && self.chunks.iter().all(|c| c.done.is_none())
            && self.audio.as_ref().is_none_or(|a| !a.done)
        {
            self.version = None;
        }
        Ending { node: a.node, losers: Vec::new(), sample: None, fate, failure: None, bad_output: false }
    }

    /// Takes every running attempt (the job is ending): `(attempt, node)`.
    pub(crate) fn take_attempts(&mut self) -> Vec<(JobId, u64)> {
        std::mem::take(&mut self.attempts).into_iter().map(|(id, a)| (id, a.node)).collect()
    }

    /// Notes whether a connected node could run this job's chunks; true when
    /// none could for [`STALL_LIMIT`] while work waits.
    pub(crate) fn stalled(&mut self, capable: bool, now: Instant) -> bool {
        if capable || !self.attempts.is_empty() || self.complete() {
            self.stalled_since = None;
            return false;
        }
        let since = *self.stalled_since.get_or_insert(now);
        now.saturating_duration_since(since) >= STALL_LIMIT
    }

    pub(crate) fn stall_reason(&self) -> String {
        match &self.version {
            Some(v) => format!("no connected node can run its chunks with {v}"),
            None => "no connected node can run its chunks".into(),
        }
    }

    pub(crate) fn progress(&self, now: Instant) -> Progress {
        let chunks_running: BTreeSet<usize> = self.attempts.values().map(|a| a.chunk).filter(|c| *c != AUDIO).collect();
        Progress {
            done: count(self.chunks.iter().filter(|c| c.done.is_some()).count()),
            running: count(chunks_running.len()),
            planned: count(self.chunks.len()),
            nodes: self.nodes_used.iter().cloned().collect(),
            reissued: self.reissued,
            preempted: self.preempted,
            live_lag_ms: self.live_lag(now).map(super::state::millis),
        }
    }

    /// How much of the span it encodes is done (chunks won), for a file.
    pub(crate) fn estimate(&self, now: Instant) -> Option<super::progress::Estimate> {
        if self.live.is_some() {
            return None;
        }
        let done: f64 = self.chunks.iter().filter(|c| c.done.is_some()).map(|c| c.chunk.end - c.chunk.start).sum();
        super::progress::Estimate::of(
            done,
            self.plan.end - self.plan.start,
            now.saturating_duration_since(self.started),
        )
    }

    /// Media seconds `[start, end)` of a planned chunk, for the status
    /// document's chunk records (kept by the registry).
    pub(crate) fn chunk_span(&self, chunk: usize) -> Option<(f64, f64)> {
        self.chunks.get(chunk).map(|c| (c.chunk.start, c.chunk.end))
    }
}

fn exit_reason(exit: RemoteExit, a: &Attempt) -> String {
    let how = match (exit.code, exit.signal) {
        (Some(c), _) => format!("ffmpeg exited with code {c} on {}", a.node_name),
        (None, Some(s)) => format!("ffmpeg was killed by signal {s} on {}", a.node_name),
        (None, None) => format!("ffmpeg ended without a status on {}", a.node_name),
    };
    let tail: Vec<u8> = a.stderr.iter().copied().collect();
    let text = String::from_utf8_lossy(&tail);
    // A cut tail starts mid-line; start at the next whole one.
    let text = if a.stderr.len() >= STDERR_TAIL { text.split_once('\n').map_or(&*text, |(_, r)| r) } else { &text };
    let text = text.trim();
    if text.is_empty() { how } else { format!("{how}: {text}") }
}

/// The frame count of ffmpeg's last report (`frame=  72 fps=…`, which it prints
/// at the end even with `-nostats`), from an attempt's stderr tail.
fn encoded_frames(stderr: &VecDeque<u8>) -> Option<u64> {
    let (a, b) = stderr.as_slices();
    let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
    let at = text.rfind("frame=")?;
    let digits: String = text[at + 6..].trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The chunk index as the protocol carries it ([`AUDIO_CHUNK`] for the audio).
pub(crate) fn wire(chunk: usize) -> u32 {
    if chunk == AUDIO { AUDIO_CHUNK } else { u32::try_from(chunk).unwrap_or(u32::MAX) }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------
// Policy (pure).

/// What kind of work a free slot may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkKind {
    /// A planned chunk with no attempt running (its last one failed).
    Pending,
    /// The next chunk of the job's planner.
    New,
    /// A second attempt of a late chunk.
    Reissue,
}

/// One piece of work a free slot could take.
#[derive(Debug, Clone)]
pub(crate) struct Work<'a> {
    pub job: JobId,
    pub priority: Priority,
    pub kind: WorkKind,
    /// The chunk's index (for `New`, the index it will get).
    pub chunk: usize,
    /// The job's earliest unfinished chunk.
    pub earliest: usize,
    pub needs: &'a Needs,
    /// The ffmpeg build the job is pinned to.
    pub version: Option<&'a str>,
    /// Nodes the chunk failed on: not chosen while the job has other capable nodes.
    pub avoid: Option<&'a BTreeSet<u64>>,
    /// Nodes that must not take it (they run it already).
    pub exclude: Vec<u64>,
}

impl Work<'_> {
    /// Lower is more urgent: how far the chunk lies past its job's earliest
    /// unfinished one, then the older job.
    fn urgency(&self) -> (usize, JobId) {
        (self.chunk.saturating_sub(self.earliest), self.job)
    }

    fn capable(&self, n: &NodeView<'_>) -> bool {
        n.slots > 0
            && !self.exclude.contains(&n.id)
            && self.version.is_none_or(|v| v == n.caps.ffmpeg_version)
            && n.caps.missing(self.needs).is_empty()
    }

    fn avoided(&self, node: u64) -> bool {
        self.avoid.is_some_and(|a| a.contains(&node))
    }
}

/// A connected node as dispatch sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeView<'a> {
    pub id: u64,
    pub caps: &'a Capabilities,
    /// Whole jobs and chunk attempts.
    pub running: u32,
    pub slots: u32,
    /// Only compared between nodes (throughput, or the benchmark score).
    pub speed: f64,
}

impl NodeView<'_> {
    fn free(&self) -> bool {
        self.running < self.slots
    }
}

/// The order work is served in: the more urgent priority first; within one,
/// re-issues last, so a late chunk gets a second attempt only when no free
/// slot can take anything else of its priority; then by [`Work::urgency`].
fn serving_order(work: &[Work<'_>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..work.len()).collect();
    order.sort_by_key(|&i| (work[i].priority, work[i].kind == WorkKind::Reissue, work[i].urgency()));
    order
}

/// The most urgent work any free slot can take, and the node to run it on:
/// `(index into work, node id)` (see [`serving_order`]). Among free capable
/// nodes the least loaded wins, then the fastest, then the oldest.
pub(crate) fn pick(work: &[Work<'_>], nodes: &[NodeView<'_>]) -> Option<(usize, u64)> {
    for i in serving_order(work) {
        let w = &work[i];
        let capable: Vec<&NodeView<'_>> = nodes.iter().filter(|n| w.capable(n)).collect();
        // A retry goes elsewhere when the job has anywhere else to go, even if
        // that means waiting for a slot there.
        let elsewhere = capable.iter().any(|n| !w.avoided(n.id));
        let best =
            capable.into_iter().filter(|n| n.free() && !(elsewhere && w.avoided(n.id))).min_by(|a, b| better(a, b));
        if let Some(n) = best {
            return Some((i, n.id));
        }
    }
    None
}

/// A video chunk attempt holding a node's slot, as preemption sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Occupant {
    pub attempt: JobId,
    pub job: JobId,
    pub priority: Priority,
    pub node: u64,
    pub started: Instant,
}

/// When work waits that no free slot can take: the attempt of less urgent
/// work to stop so that the most urgent waiting work gets its node, and the
/// job it makes room for. Among the attempts on nodes that could run that
/// work, the one started last, which loses the least. A re-issue never
/// preempts (its chunk has an attempt running), nor does work of the same
/// priority: equals share nodes as they come free.
pub(crate) fn preemption(work: &[Work<'_>], nodes: &[NodeView<'_>], occupants: &[Occupant]) -> Option<(JobId, JobId)> {
    serving_order(work).into_iter().map(|i| &work[i]).filter(|w| w.kind != WorkKind::Reissue).find_map(|w| {
        let others = occupants.iter().filter(|o| o.job != w.job);
        let victim = victim(others, w.priority, |node| nodes.iter().any(|n| n.id == node && w.capable(n)))?;
        Some((victim, w.job))
    })
}

/// The attempt among `occupants` to stop for work of `priority`: of less
/// urgent work, on a node where `runs_there` says that work could run, the one
/// started last (it loses the least). Whole jobs placed on a busy cluster use
/// it too.
pub(crate) fn victim<'a>(
    occupants: impl IntoIterator<Item = &'a Occupant>,
    priority: Priority,
    runs_there: impl Fn(u64) -> bool,
) -> Option<JobId> {
    occupants
        .into_iter()
        .filter(|o| o.priority > priority && runs_there(o.node))
        .max_by_key(|o| (o.started, o.attempt))
        .map(|o| o.attempt)
}

fn better(a: &NodeView<'_>, b: &NodeView<'_>) -> std::cmp::Ordering {
    // running/slots compared without division; slots > 0 for capable nodes.
    let load = (u64::from(a.running) * u64::from(b.slots)).cmp(&(u64::from(b.running) * u64::from(a.slots)));
    load.then_with(|| b.speed.total_cmp(&a.speed)).then_with(|| a.id.cmp(&b.id))
}

/// Whether an attempt running for `elapsed` on `seconds` of content is late on
/// a node doing `throughput` seconds of content per second: past half again
/// what it should take, and at least a second past it (start-up costs dominate
/// short chunks). Never without a throughput to expect anything from.
pub(crate) fn late(elapsed: Duration, seconds: f64, throughput: Option<f64>) -> bool {
    let Some(t) = throughput.filter(|t| t.is_finite() && *t > 0.0) else { return false };
    let expected = seconds / t;
    elapsed.as_secs_f64() > (1.5 * expected).max(expected + 1.0)
}

/// The next value of a node's throughput average.
pub(crate) fn ewma(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(o) => RATE_WEIGHT * sample + (1.0 - RATE_WEIGHT) * o,
        None => sample,
    }
}

/// What is known of a node's speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pace {
    /// The benchmark score (`caps.speed`, frames per second of a standard encode).
    pub score: f64,
    /// Measured seconds of content per second, from finished chunks.
    pub measured: Option<f64>,
}

/// Seconds of content per second for each node: its measurement, else its
/// benchmark score converted at the mean ratio measured nodes show between the
/// two. None where neither exists (nothing measured yet, or no score).
pub(crate) fn throughputs(paces: &[Pace]) -> Vec<Option<f64>> {
    let ratios: Vec<f64> =
        paces.iter().filter_map(|p| p.measured.filter(|_| p.score > 0.0).map(|m| m / p.score)).collect();
    let ratio = (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64);
    paces
        .iter()
        .map(|p| p.measured.or_else(|| ratio.map(|r| r * p.score)).filter(|t| t.is_finite() && *t > 0.0))
        .collect()
}

/// `of`'s speed relative to the mean of `among` (which includes it), as the
/// planner wants it: by throughput when all have one, else by benchmark score,
/// else 1.0.
pub(crate) fn relative_speed(of: (Option<f64>, f64), among: &[(Option<f64>, f64)]) -> f64 {
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let measured: Option<Vec<f64>> = among.iter().map(|(t, _)| *t).collect();
    if let (Some(t), Some(all)) = (of.0, measured) {
        let m = mean(&all);
        if m > 0.0 {
            return t / m;
        }
    }
    let scores: Vec<f64> = among.iter().map(|(_, s)| *s).collect();
    let m = mean(&scores);
    if of.1 > 0.0 && m > 0.0 { of.1 / m } else { 1.0 }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::outbox::{Out, Outbox};
    use super::super::state::{NodeInfo, Outcome, Registry};
    use super::super::status::{JobMode, JobState};
    use super::*;
    use crate::ffmpeg::cmdline::CommandLine;
    use crate::protocol::{Frame, FrameKind, ToNode};
    use tokio::sync::mpsc::UnboundedReceiver;

    // ---- pure policy ----

    fn caps(version: &str, speed: f64) -> Capabilities {
        Capabilities {
            ffmpeg_version: version.into(),
            encoders: ["libx264".to_owned()].into(),
            speed,
            ..Default::default()
        }
    }

    fn view(id: u64, caps: &Capabilities, running: u32, slots: u32) -> NodeView<'_> {
        NodeView { id, caps, running, slots, speed: caps.speed }
    }

    fn work<'a>(job: JobId, kind: WorkKind, chunk: usize, earliest: usize, needs: &'a Needs) -> Work<'a> {
        Work {
            job,
            priority: Priority::Batch,
            kind,
            chunk,
            earliest,
            needs,
            version: None,
            avoid: None,
            exclude: Vec::new(),
        }
    }

    #[test]
    fn every_jobs_earliest_chunk_comes_first() {
        let needs = Needs::default();
        let c = caps("v1", 100.0);
        let nodes = [view(1, &c, 0, 1)];
        // Job 1 (older) is at chunk 5; job 2 just started.
        let w = [
            work(1, WorkKind::New, 6, 5, &needs),
            work(1, WorkKind::Pending, 5, 5, &needs),
            work(2, WorkKind::New, 0, 0, &needs),
        ];
        // Both earliest chunks tie on distance; the older job wins.
        assert_eq!(pick(&w, &nodes), Some((1, 1)));
        // Job 1's chunk 5 done: its next (6) is its earliest now; job 2's chunk 0 ties, older job wins.
        let w = [work(1, WorkKind::New, 6, 6, &needs), work(2, WorkKind::New, 0, 0, &needs)];
        assert_eq!(pick(&w, &nodes), Some((0, 1)));
        // Job 1 runs chunk 5 already: its chunk 6 is behind job 2's chunk 0.
        let w = [work(1, WorkKind::New, 6, 5, &needs), work(2, WorkKind::New, 0, 0, &needs)];
        assert_eq!(pick(&w, &nodes), Some((1, 1)));
        // A new job's chunk 0 beats an older job's chunk 5 waiting behind its chunk 4.
        let w = [work(1, WorkKind::Pending, 5, 4, &needs), work(3, WorkKind::New, 0, 0, &needs)];
        assert_eq!(pick(&w, &nodes), Some((1, 1)));
        // No free slot, no work.
        assert_eq!(pick(&w, &[view(1, &c, 1, 1)]), None);
        assert_eq!(pick(&[], &nodes), None);
    }

    #[test]
    fn urgent_work_is_served_first_and_takes_a_node_back_from_batch_chunks() {
        let needs = Needs::default();
        let c = caps("v1", 100.0);
        fn at(p: Priority, w: Work<'_>) -> Work<'_> {
            Work { priority: p, ..w }
        }
        // A batch job (older, at its earliest chunk) and a playback's first chunk.
        let batch = work(1, WorkKind::New, 3, 3, &needs);
        let play = at(Priority::Interactive, work(2, WorkKind::New, 0, 0, &needs));
        let nodes = [view(1, &c, 0, 1)];
        assert_eq!(pick(&[batch.clone(), play.clone()], &nodes), Some((1, 1)));
        // A late interactive chunk's second attempt still beats new batch work;
        // a streaming job sits between the two.
        let reissue = at(Priority::Interactive, work(2, WorkKind::Reissue, 0, 0, &needs));
        let stream = at(Priority::Streaming, work(3, WorkKind::New, 0, 0, &needs));
        assert_eq!(pick(&[batch.clone(), stream.clone(), reissue.clone()], &nodes), Some((2, 1)));
        assert_eq!(pick(&[batch.clone(), stream.clone()], &nodes), Some((1, 1)));

        // Both nodes busy with the batch job's chunks: the playback takes back
        // the node whose attempt started last.
        let t0 = Instant::now();
        let busy = [view(1, &c, 1, 1), view(2, &c, 1, 1)];
        let occ = |attempt, job, priority, node, after: u64| Occupant {
            attempt,
            job,
            priority,
            node,
            started: t0 + Duration::from_secs(after),
        };
        let batch_chunks = [occ(10, 1, Priority::Batch, 1, 0), occ(11, 1, Priority::Batch, 2, 5)];
        assert_eq!(preemption(&[batch.clone(), play.clone()], &busy, &batch_chunks), Some((11, 2)));
        // Nothing more urgent waits, or only a re-issue: nothing is stopped.
        assert_eq!(preemption(std::slice::from_ref(&batch), &busy, &batch_chunks), None);
        assert_eq!(preemption(&[reissue], &busy, &batch_chunks), None);
        // Equals share: a second playback does not stop the first one's chunks.
        let playing = [occ(12, 4, Priority::Interactive, 1, 0), occ(13, 4, Priority::Interactive, 2, 1)];
        assert_eq!(preemption(std::slice::from_ref(&play), &busy, &playing), None);
        // Streaming work takes a node from batch work only.
        let mixed = [occ(12, 4, Priority::Interactive, 1, 9), occ(11, 1, Priority::Batch, 2, 0)];
        assert_eq!(preemption(&[stream], &busy, &mixed), Some((11, 3)));
        // A node that cannot run the waiting work is not emptied for it.
        let pinned = Work { version: Some("v2"), ..play };
        assert_eq!(preemption(&[pinned], &busy, &batch_chunks), None);
    }

    #[test]
    fn the_least_loaded_then_fastest_node_takes_it_and_incapable_ones_never() {
        let needs = Needs { encoders: ["libx264".to_owned()].into(), ..Default::default() };
        let slow = caps("v1", 50.0);
        let fast = caps("v1", 200.0);
        let none = Capabilities { speed: 999.0, ..Default::default() };
        let w = [work(1, WorkKind::New, 0, 0, &needs)];
        assert_eq!(pick(&w, &[view(1, &slow, 0, 2), view(2, &fast, 0, 2), view(3, &none, 0, 9)]), Some((0, 2)));
        assert_eq!(pick(&w, &[view(1, &slow, 0, 2), view(2, &fast, 1, 2)]), Some((0, 1)));
        assert_eq!(pick(&w, &[view(3, &none, 0, 9)]), None);
    }

    #[test]
    fn a_failed_chunk_prefers_another_node_while_the_job_has_one() {
        let needs = Needs::default();
        let c = caps("v1", 100.0);
        let failed_on: BTreeSet<u64> = [1].into();
        let retry = Work { avoid: Some(&failed_on), ..work(1, WorkKind::Pending, 3, 3, &needs) };
        let later = work(1, WorkKind::New, 4, 3, &needs);
        // Node 2 is busy: node 1 takes the new chunk rather than the retry.
        let nodes = [view(1, &c, 0, 1), view(2, &c, 1, 1)];
        assert_eq!(pick(&[retry.clone(), later.clone()], &nodes), Some((1, 1)));
        // Node 2 free: the retry goes there.
        let nodes = [view(1, &c, 0, 1), view(2, &c, 0, 1)];
        assert_eq!(pick(&[retry.clone(), later], &nodes), Some((0, 2)));
        // Node 1 is all there is: it retries.
        assert_eq!(pick(&[retry], &[view(1, &c, 0, 1)]), Some((0, 1)));
    }

    #[test]
    fn a_late_chunk_is_reissued_only_to_another_node_when_nothing_else_waits() {
        let needs = Needs::default();
        let c = caps("v1", 100.0);
        let reissue = Work { exclude: vec![1], ..work(1, WorkKind::Reissue, 2, 2, &needs) };
        let new = work(2, WorkKind::New, 7, 3, &needs);
        let nodes = [view(1, &c, 0, 2), view(2, &c, 0, 1)];
        // Any other work first, however far down its job it is.
        assert_eq!(pick(&[reissue.clone(), new], &nodes), Some((1, 1)));
        // Nothing else: to node 2, never to node 1 which runs it.
        assert_eq!(pick(std::slice::from_ref(&reissue), &nodes), Some((0, 2)));
        assert_eq!(pick(&[reissue], &[view(1, &c, 0, 2)]), None);
    }

    #[test]
    fn a_pinned_version_excludes_other_builds() {
        let needs = Needs::default();
        let v1 = caps("ffmpeg version 5.1", 100.0);
        let v2 = caps("ffmpeg version 6.0", 900.0);
        let w = [Work { version: Some("ffmpeg version 5.1"), ..work(1, WorkKind::New, 1, 0, &needs) }];
        assert_eq!(pick(&w, &[view(1, &v1, 1, 1), view(2, &v2, 0, 4)]), None);
        assert_eq!(pick(&w, &[view(1, &v1, 0, 1), view(2, &v2, 0, 4)]), Some((0, 1)));
    }

    #[test]
    fn lateness() {
        let s = Duration::from_secs_f64;
        // 3 s of content at 1.0: expected 3 s, late after 4.5 s.
        assert!(!late(s(4.4), 3.0, Some(1.0)));
        assert!(late(s(4.6), 3.0, Some(1.0)));
        // Short chunks: at least a second of slack.
        assert!(!late(s(1.4), 1.0, Some(2.0)));
        assert!(late(s(1.6), 1.0, Some(2.0)));
        // Without a throughput nothing is late.
        assert!(!late(s(1000.0), 3.0, None));
        assert!(!late(s(1000.0), 3.0, Some(0.0)));
    }

    #[test]
    fn speeds_are_measured_then_estimated_from_the_score() {
        assert_eq!(ewma(None, 2.0), 2.0);
        assert_eq!(ewma(Some(2.0), 4.0), 3.0);
        // Nothing measured: no throughput, relative speed by score.
        let p = [Pace { score: 100.0, measured: None }, Pace { score: 300.0, measured: None }];
        assert_eq!(throughputs(&p), [None, None]);
        assert_eq!(relative_speed((None, 300.0), &[(None, 100.0), (None, 300.0)]), 1.5);
        // One measured at 2 s/s for score 100: the other is estimated at 6 s/s.
        let p = [
            Pace { score: 100.0, measured: Some(2.0) },
            Pace { score: 300.0, measured: None },
            Pace { score: 0.0, measured: None },
        ];
        assert_eq!(throughputs(&p), [Some(2.0), Some(6.0), None]);
        assert_eq!(relative_speed((Some(2.0), 100.0), &[(Some(2.0), 100.0), (Some(6.0), 300.0)]), 0.5);
        // Unknown everything: average.
        assert_eq!(relative_speed((None, 0.0), &[(None, 0.0)]), 1.0);
    }

    #[test]
    fn the_frames_ffmpeg_reports_come_from_its_last_report() {
        let tail = |s: &str| s.bytes().collect::<VecDeque<u8>>();
        let t = tail("frame=   10 fps=0.0 q=28.0 size=1kB\rframe=   72 fps= 61 q=-1.0 Lsize=  300kB\nvideo:290kB");
        assert_eq!(encoded_frames(&t), Some(72));
        assert_eq!(encoded_frames(&tail("[hls @ 0x1] Opening 'x' for writing")), None);
    }

    // ---- the state machine, through the registry ----

    /// A Jellyfin-like HLS job on a 3 s grid over `duration` seconds of 25 fps video.
    pub(crate) fn plan(duration: f64) -> SplitPlan {
        let args = "-i /media/in.mkv -map 0:0 -c:v libx264 -preset veryfast -force_key_frames expr:gte(t,n_forced*3) \
                    -f hls -hls_time 3 -hls_playlist_type vod -hls_segment_filename /tmp/t/x%d.ts /tmp/t/x.m3u8";
        let args: Vec<&str> = args.split_whitespace().collect();
        let json = format!(
            r#"{{"streams":[{{"index":0,"codec_type":"video","r_frame_rate":"25/1","avg_frame_rate":"25/1","start_time":"0.000000"}}],
                "format":{{"start_time":"0.000000","duration":"{duration:.6}"}}}}"#
        );
        let probe = crate::split::Probe::from_json(&json).unwrap().assume_first_pictures();
        crate::split::split(&CommandLine::parse(&args).unwrap(), &probe).unwrap().plan
    }

    /// Like [`plan`], with a stereo AAC audio track a node can encode.
    fn plan_with_audio(duration: f64) -> SplitPlan {
        let args = "-i /media/in.mkv -map 0:0 -map 0:1 -c:v libx264 -force_key_frames expr:gte(t,n_forced*3) \
                    -c:a aac -ac 2 -copyts -f hls -hls_time 3 -hls_playlist_type vod /tmp/t/x.m3u8";
        let args: Vec<&str> = args.split_whitespace().collect();
        let json = format!(
            r#"{{"streams":[{{"index":0,"codec_type":"video","r_frame_rate":"25/1","avg_frame_rate":"25/1","start_time":"0.000000"}},
                {{"index":1,"codec_type":"audio","channels":6,"start_time":"0.000000"}}],
                "format":{{"start_time":"0.000000","duration":"{duration:.6}"}}}}"#
        );
        let probe = crate::split::Probe::from_json(&json).unwrap().assume_first_pictures();
        let plan = crate::split::split(&CommandLine::parse(&args).unwrap(), &probe).unwrap().plan;
        assert!(plan.audio.is_some());
        plan
    }

    pub(crate) fn split_request(plan: SplitPlan) -> JobRequest {
        JobRequest {
            args: vec!["-i".into(), "/media/in.mkv".into(), "/tmp/t/x.m3u8".into()],
            cwd: "/tmp/t".into(),
            files: vec![FileOffer { id: 0, reference: "/media/in.mkv".into(), entry: None, size: 1000, stream: false }],
            needs: Needs { encoders: ["libx264".to_owned()].into(), ..Default::default() },
            reason: "split.hls".into(),
            split: Some(plan),
            not_split: None,
            resumed: None,
            priority: None,
        }
    }

    struct Rig {
        t0: Instant,
        reg: Registry,
        nodes: Vec<(u64, UnboundedReceiver<Out<ToNode>>)>,
        shim: UnboundedReceiver<Out<ToShim>>,
        shim_conn: Arc<ShimConn>,
    }

    impl Rig {
        /// Nodes as `(name, slots, ffmpeg version, speed score)`.
        fn new(nodes: &[(&str, u32, &str, f64)]) -> Rig {
            let t0 = Instant::now();
            let mut reg = Registry::new(t0);
            let nodes = nodes
                .iter()
                .map(|(name, slots, version, speed)| {
                    let (outbox, rx) = Outbox::new(1 << 20);
                    let info = NodeInfo {
                        name: (*name).into(),
                        agent: "test".into(),
                        slots: *slots,
                        caps: caps(version, *speed),
                        address: "127.0.0.1:1".into(),
                    };
                    (reg.add_node(info, outbox, t0).0, rx)
                })
                .collect();
            let (out, shim) = Outbox::new(1 << 20);
            Rig { t0, reg, nodes, shim, shim_conn: Arc::new(ShimConn::new(out)) }
        }

        /// What a node's ffmpeg writes for a chunk attempt: MPEG-TS with the
        /// video frames its span holds (one when that is not certain), which
        /// passes the controller's verification. Nothing for the audio track.
        fn output(&mut self, attempt: JobId, n: usize) {
            let Some((chunk, frames)) = self.reg.split_attempt(attempt).filter(|(c, _)| *c != AUDIO) else {
                return;
            };
            let ts = crate::split::mpegts::tests::stream(frames.unwrap_or(1), b"");
            let frame = Frame::new(FrameKind::Output, attempt, wire(chunk), 0, &ts).encode();
            let share = self.shim_conn.out.try_reserve(frame.len()).unwrap();
            assert!(self.reg.chunk_bytes(attempt, self.node_id(n), ts.len(), frame, share));
        }

        fn submit(&mut self, duration: f64) -> JobId {
            let shim = self.shim_conn.clone();
            self.reg.place_split(split_request(plan(duration)), "cap".into(), shim, self.t0, 0).unwrap()
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// Runs node `n` was sent since last asked: `(attempt, args)`.
        fn runs(&mut self, n: usize) -> Vec<(JobId, Vec<String>)> {
            let mut out = Vec::new();
            while let Ok(m) = self.nodes[n].1.try_recv() {
                if let Out::Json(ToNode::Run { job, spec }) = m {
                    out.push((job, spec.args));
                }
            }
            out
        }

        fn cancels(&mut self, n: usize) -> Vec<JobId> {
            let mut out = Vec::new();
            while let Ok(m) = self.nodes[n].1.try_recv() {
                if let Out::Json(ToNode::Cancel { job }) = m {
                    out.push(job);
                }
            }
            out
        }

        fn shim_msgs(&mut self) -> Vec<ToShim> {
            let mut out = Vec::new();
            while let Ok(m) = self.shim.try_recv() {
                if let Out::Json(j) = m {
                    out.push(j);
                }
            }
            out
        }

        fn node_id(&self, n: usize) -> u64 {
            self.nodes[n].0
        }

        fn exit(&mut self, attempt: JobId, n: usize, code: i32, ms: u64) {
            if code == 0 {
                self.output(attempt, n);
            }
            let end = AttemptEnd::Exited(RemoteExit { code: Some(code), signal: None });
            assert!(self.reg.attempt_ended(attempt, self.node_id(n), end, self.at(ms)), "attempt {attempt} ran");
        }
    }

    fn started(msgs: &[ToShim]) -> Vec<(u32, JobId, String, f64, f64, bool)> {
        msgs.iter()
            .filter_map(|m| match m {
                ToShim::ChunkStarted { chunk, attempt, node, start, end, last } => {
                    Some((*chunk, *attempt, node.clone(), *start, *end, *last))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn chunks_are_planned_lazily_and_sized_by_speed() {
        // a is three times as fast as b by score; one slot each.
        let mut rig = Rig::new(&[("a", 1, "v1", 300.0), ("b", 1, "v1", 100.0)]);
        let job = rig.submit(120.0);
        let first = started(&rig.shim_msgs());
        // One chunk per free slot, nothing planned ahead.
        assert_eq!(first.len(), 2, "{first:?}");
        assert_eq!((first[0].0, &*first[0].2, first[1].0, &*first[1].2), (0, "a", 1, "b"));
        assert_eq!(rig.reg.status(rig.t0, 0).jobs[0].chunks_planned, Some(2));
        let (a0, args) = rig.runs(0).remove(0);
        assert!(args.windows(2).any(|w| w == ["-f", "mpegts"]) && args.last().unwrap() == "pipe:1", "{args:?}");
        let (b1, _) = rig.runs(1).remove(0);
        // The first max(3, nodes) chunks are one segment each.
        rig.exit(a0, 0, 0, 1000);
        let (a2, _) = rig.runs(0).remove(0);
        rig.exit(a2, 0, 0, 2000);
        let s = started(&rig.shim_msgs());
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s.iter().all(|c| (c.4 - c.3 - 3.0).abs() < 1e-9 || c.0 == 3), "{s:?}");
        // Chunk 3 went to the fast node; chunk 4 to the slow one gets less.
        rig.exit(b1, 1, 0, 3000);
        let s = started(&rig.shim_msgs());
        assert_eq!(s.len(), 1);
        let fast = rig.reg.split(job).unwrap().chunks[3].chunk;
        let slow = rig.reg.split(job).unwrap().chunks[4].chunk;
        assert!(fast.end - fast.start > slow.end - slow.start, "{fast:?} vs {slow:?}");
        // Contiguous.
        assert_eq!(fast.end, slow.start);
    }

    #[test]
    fn the_audio_track_runs_beside_the_chunks_on_another_node_without_a_slot() {
        let mut rig = Rig::new(&[("a", 1, "v1", 100.0), ("b", 1, "v1", 100.0)]);
        let shim = rig.shim_conn.clone();
        let job = rig.reg.place_split(split_request(plan_with_audio(60.0)), "cap".into(), shim, rig.t0, 0).unwrap();
        let msgs = rig.shim_msgs();
        assert!(matches!(msgs[0], ToShim::Accepted { audio: true, .. }), "{msgs:?}");
        let s: Vec<(u32, String)> = started(&msgs).into_iter().map(|c| (c.0, c.2)).collect();
        // Chunk 0 on a, chunk 1 on b (one slot each), the audio beside chunk 1.
        assert_eq!(s, [(0, "a".into()), (1, "b".into()), (AUDIO_CHUNK, "b".into())]);
        let b = rig.runs(1);
        let audio = &b[1];
        assert!(audio.1.iter().any(|a| a == "-vn") && audio.1.iter().any(|a| a == "aac"), "{audio:?}");
        // It failed before sending anything: it runs again, on the other node.
        rig.exit(audio.0, 1, 1, 500);
        let again = started(&rig.shim_msgs());
        assert_eq!(again.iter().map(|c| (c.0, c.2.as_str())).collect::<Vec<_>>(), [(AUDIO_CHUNK, "a")]);
        let (retry, _) = rig.runs(0).pop().unwrap();
        // Every chunk done is not the job done while the audio runs.
        rig.exit(retry, 0, 0, 900);
        assert!(matches!(rig.shim_msgs().last(), Some(ToShim::ChunkDone { chunk: AUDIO_CHUNK, .. })));
        assert!(!rig.reg.split(job).unwrap().complete());

        // Three nodes: the audio goes beside chunk 2, which the playhead reaches
        // last; chunk 1 on b must not slow down for it.
        let mut rig = Rig::new(&[("a", 1, "v1", 100.0), ("b", 1, "v1", 100.0), ("c", 1, "v1", 100.0)]);
        let shim = rig.shim_conn.clone();
        rig.reg.place_split(split_request(plan_with_audio(60.0)), "cap".into(), shim, rig.t0, 0).unwrap();
        let s: Vec<(u32, String)> = started(&rig.shim_msgs()).into_iter().map(|c| (c.0, c.2)).collect();
        assert_eq!(s[3], (AUDIO_CHUNK, "c".into()), "{s:?}");

        // A lone node keeps the audio with the shim's finisher.
        let mut rig = Rig::new(&[("a", 1, "v1", 100.0)]);
        let shim = rig.shim_conn.clone();
        rig.reg.place_split(split_request(plan_with_audio(60.0)), "cap".into(), shim, rig.t0, 0).unwrap();
        let msgs = rig.shim_msgs();
        assert!(matches!(msgs[0], ToShim::Accepted { audio: false, .. }), "{msgs:?}");
        assert!(started(&msgs).iter().all(|c| c.0 != AUDIO_CHUNK), "{msgs:?}");
    }

    #[test]
    fn a_failed_chunk_is_retried_with_the_same_bounds_elsewhere() {
        let mut rig = Rig::new(&[("a", 1, "v1", 100.0), ("b", 1, "v1", 100.0)]);
        rig.submit(60.0);
        let (a0, args0) = rig.runs(0).remove(0);
        let (b1, _) = rig.runs(1).remove(0);
        let before = started(&rig.shim_msgs());
        // Stderr explains the failure.
        rig.reg.chunk_stderr(a0, rig.node_id(0), b"frame=1\n[libx264] broken\n");
        rig.exit(a0, 0, 1, 500);
        let msgs = rig.shim_msgs();
        assert!(
            matches!(&msgs[0], ToShim::ChunkFailed { chunk: 0, attempt, reason }
                if *attempt == a0 && reason == "ffmpeg exited with code 1 on a: frame=1\n[libx264] broken"),
            "{msgs:?}"
        );
        // b is busy; a does not retry chunk 0 while b could: it moves on to chunk 2.
        let s = started(&msgs);
        assert_eq!(s.iter().map(|c| c.0).collect::<Vec<_>>(), [2]);
        let (a2, _) = rig.runs(0).remove(0);
        rig.exit(b1, 1, 0, 1000);
        // The retry runs on b with the same bounds and the same command line.
        let s = started(&rig.shim_msgs());
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0, &*s[0].2, s[0].3, s[0].4), (0, "b", before[0].3, before[0].4));
        let (b0, args) = rig.runs(1).remove(0);
        assert_eq!(args, args0);
        assert_ne!(b0, a0);
        rig.exit(a2, 0, 0, 1500);
        rig.exit(b0, 1, 0, 2000);
        assert!(
            rig.shim_msgs().iter().any(|m| matches!(m, ToShim::ChunkDone { chunk: 0, attempt, .. } if *attempt == b0))
        );
    }

    #[test]
    fn three_failures_of_one_chunk_end_the_job() {
        let mut rig = Rig::new(&[("a", 1, "v1", 100.0)]);
        let job = rig.submit(60.0);
        for i in 0..3 {
            let (attempt, _) = rig.runs(0).remove(0);
            let end = AttemptEnd::Refused(format!("no scratch space {i}"));
            assert!(rig.reg.attempt_ended(attempt, rig.node_id(0), end, rig.at(i * 100)));
        }
        let msgs = rig.shim_msgs();
        let failed: Vec<&ToShim> = msgs.iter().filter(|m| matches!(m, ToShim::ChunkFailed { .. })).collect();
        assert_eq!(failed.len(), 3);
        match msgs.last() {
            Some(ToShim::Failed { reason }) => {
                assert_eq!(reason, "chunk 0 (0.000-30.000 s) failed 3 times; last: refused by a: no scratch space 2")
            }
            other => panic!("{other:?}"),
        }
        assert!(rig.runs(0).is_empty(), "nothing more is run");
        assert!(rig.reg.split(job).is_none());
        let doc = rig.reg.status(rig.at(300), 0);
        assert_eq!((doc.jobs[0].mode, doc.jobs[0].state), (JobMode::Split, JobState::Failed));
        assert_eq!(doc.nodes[0].running, 0);
        assert!(rig.reg.servable("cap", 0).is_none());
    }

    #[tokio::test]
    async fn the_first_result_wins_and_the_loser_is_cancelled() {
        // a's chunk 2 runs late while b idles: b gets a second attempt of it.
        let mut rig = Rig::new(&[("a", 1, "v1", 100.0), ("b", 1, "v1", 100.0)]);
        let job = rig.submit(9.0);
        let (a0, _) = rig.runs(0).remove(0);
        let (b1, _) = rig.runs(1).remove(0);
        // Chunk 0 takes 1 s: a does 3 s of content per second.
        rig.exit(a0, 0, 0, 1000);
        let (a2, _) = rig.runs(0).remove(0);
        assert_eq!(rig.reg.split(job).unwrap().attempts[&a2].chunk, 2);
        rig.exit(b1, 1, 0, 1200);
        // Nothing left to plan (9 s = 3 chunks): b idles until chunk 2 is late
        // (3 s at 3 s/s: expected 1 s, late after 2 s).
        assert!(rig.runs(1).is_empty());
        rig.reg.tick(rig.at(2900));
        assert!(rig.runs(1).is_empty(), "not late yet");
        rig.reg.tick(rig.at(3100));
        let (b2, _) = rig.runs(1).remove(0);
        let s = started(&rig.shim_msgs());
        assert_eq!((s.last().unwrap().0, s.last().unwrap().1, &*s.last().unwrap().2), (2, b2, "b"));
        assert_eq!(rig.reg.status(rig.at(3100), 0).jobs[0].reissued, Some(1));
        // Never a third attempt, never on a again.
        rig.reg.tick(rig.at(9000));
        assert!(rig.runs(0).is_empty() && rig.runs(1).is_empty());
        // b's copy finishes first: a's is cancelled and void.
        rig.exit(b2, 1, 0, 9100);
        assert_eq!(rig.cancels(0), [a2]);
        let msgs = rig.shim_msgs();
        assert!(
            msgs.iter().any(|m| matches!(m, ToShim::ChunkDone { chunk: 2, attempt, .. } if *attempt == b2)),
            "{msgs:?}"
        );
        assert!(msgs.contains(&ToShim::ChunkFailed { chunk: 2, attempt: a2, reason: "superseded".into() }));
        // The job is complete; a's late exit is nobody's.
        assert!(rig.reg.split(job).is_none());
        assert!(!rig.reg.attempt_ended(a2, rig.node_id(0), AttemptEnd::Lost("x".into()), rig.at(9200)));
        let doc = rig.reg.status(rig.at(9200), 0);
        let j = &doc.jobs[0];
        assert_eq!(
            (j.state, j.exit_code, j.chunks_done, j.chunks_planned),
            (JobState::Done, Some(0), Some(3), Some(3))
        );
        assert_eq!(j.nodes.as_deref(), Some(&["a".to_owned(), "b".to_owned()][..]));
        assert_eq!((doc.nodes[0].running, doc.nodes[1].running), (0, 0));
    }

    #[test]
    fn the_first_chunk_pins_the_ffmpeg_build() {
        let mut rig = Rig::new(&[("old", 1, "ffmpeg version 5.1", 100.0), ("new", 2, "ffmpeg version 6.0", 100.0)]);
        let job = rig.submit(60.0);
        // Equal load and speed: the older node takes chunk 0 and pins 5.1.
        assert_eq!(rig.runs(0).len(), 1);
        assert!(rig.runs(1).is_empty(), "another build gets none of the job's chunks");
        let doc = rig.reg.status(rig.t0, 0);
        assert_eq!(doc.jobs[0].chunks_planned, Some(1));
        // The 5.1 node goes before anything was encoded: the pin is lifted and
        // the other build takes over, chunk 0 included.
        rig.reg.remove_node(rig.node_id(0), "node old lost", rig.at(100));
        assert!(rig.reg.split(job).is_some());
        assert_eq!(rig.runs(1).len(), 2);
        let s = started(&rig.shim_msgs());
        assert_eq!(s.iter().map(|c| (c.0, &*c.2)).collect::<Vec<_>>(), [(0, "old"), (0, "new"), (1, "new")]);
    }

    #[test]
    fn a_job_with_no_capable_node_left_fails_after_a_while() {
        let mut rig = Rig::new(&[("a", 1, "v1", 100.0), ("b", 1, "v2", 100.0)]);
        let job = rig.submit(60.0);
        let (a0, _) = rig.runs(0).remove(0);
        rig.exit(a0, 0, 0, 500);
        let (a1, _) = rig.runs(0).remove(0);
        assert!(rig.runs(1).is_empty());
        rig.reg.remove_node(rig.node_id(0), "node a lost", rig.at(600));
        let msgs = rig.shim_msgs();
        assert!(msgs.contains(&ToShim::ChunkFailed { chunk: 1, attempt: a1, reason: "node a lost".into() }));
        rig.reg.tick(rig.at(600) + STALL_LIMIT - Duration::from_millis(1));
        assert!(rig.reg.split(job).is_some());
        rig.reg.tick(rig.at(600) + STALL_LIMIT);
        assert!(rig.reg.split(job).is_none());
        assert_eq!(rig.shim_msgs(), [ToShim::Failed { reason: "no connected node can run its chunks with v1".into() }]);
    }

    #[test]
    fn split_jobs_are_refused_like_whole_ones_and_share_the_slots() {
        let mut rig = Rig::new(&[]);
        let shim = rig.shim_conn.clone();
        let err = rig.reg.place_split(split_request(plan(60.0)), "c".into(), shim.clone(), rig.t0, 0).unwrap_err();
        assert_eq!(err.to_string(), "no nodes connected");
        let mut bad = plan(60.0);
        bad.grid.period = 0.0;
        let err = rig.reg.place_split(split_request(bad), "c".into(), shim, rig.t0, 0).unwrap_err();
        assert!(matches!(err, SplitRefused::Plan(_)), "{err}");

        // A split job holding the only slot makes a whole job wait elsewhere.
        let mut rig = Rig::new(&[("a", 1, "v1", 100.0)]);
        let job = rig.submit(60.0);
        let (a0, _) = rig.runs(0).remove(0);
        let mut whole = split_request(plan(60.0));
        whole.split = None;
        let err = rig.reg.place(whole, "w".into(), rig.shim_conn.clone(), rig.t0, 0).unwrap_err();
        assert_eq!(err.to_string(), "all 1 capable nodes are busy");
        // The attempt's node reaches its job; the job's capability serves its files.
        assert!(rig.reg.shim_of(a0, rig.node_id(0)).is_some());
        assert_eq!(rig.reg.strays(rig.node_id(0), &[a0, 99]), [99]);
        assert!(rig.reg.servable("cap", 0).is_some_and(|s| s.job == job && s.size == 1000));
        // The shim goes: the attempt is cancelled and the job recorded as cancelled.
        assert!(rig.reg.abandon_split(job, Outcome::Cancelled, rig.at(10)));
        assert_eq!(rig.cancels(0), [a0]);
        assert!(rig.reg.servable("cap", 0).is_none());
        assert_eq!(rig.reg.status(rig.at(10), 0).jobs[0].state, JobState::Cancelled);
    }
}
