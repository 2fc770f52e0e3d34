//! The registry: connected nodes, running jobs (whole, and split into chunk
//! attempts), recently finished jobs and the input capabilities. One lock guards
//! it; nothing awaits while holding it, which is why everything queued from here
//! is a control message (see `outbox`).
//!
//! Split jobs wait for free slots rather than being refused when all are busy;
//! [`Registry::dispatch`] hands out their chunks whenever something changes
//! (submission, a node connecting or leaving, an attempt or whole job ending)
//! and on the controller's periodic tick.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use super::joblog::JobLogs;
use super::metrics::{JobResult, Metrics};
use super::outbox::{Outbox, Reserved};
use super::scheduler::{self, Candidate};
use super::shim_link::ShimConn;
use super::split::{
    AUDIO, AttemptEnd, Fate, NodeView, Occupant, Pace, Progress, SplitJob, SplitRefused, Taker, WorkKind, check_plan,
    ewma, pick, preemption, relative_speed, throughputs, victim,
};
use super::status::{ChunkRecord, ChunkState, JobMode, JobState, JobStatus, NodeState, NodeStatus, Reasons, Status};
use crate::ffmpeg::cmdline::shell_join;
use crate::priority::Priority;
use crate::protocol::{
    Capabilities, FileOffer, JobId, JobRequest, JobSpec, OutputEvent, PROTOCOL_VERSION, RemoteExit, ToNode, ToShim, Why,
};
use crate::split::live::Piece;

/// Finished jobs kept for the status document.
const FINISHED_KEPT: usize = 100;
/// Finished split jobs whose chunk records are kept: a long film has hundreds
/// of chunks, and the dashboard polls the status document every second.
pub(crate) const CHUNK_HISTORY_JOBS: usize = 10;
/// Node names remembered for `ffcluster_node_connected` after they leave.
const KNOWN_NODES: usize = 1024;

pub(crate) struct Registry {
    /// Time zero for `last_seen` stamps.
    epoch: Instant,
    next_node: u64,
    next_job: JobId,
    nodes: BTreeMap<u64, Node>,
    running: BTreeMap<JobId, RunningJob>,
    splits: BTreeMap<JobId, SplitJob>,
    /// Chunk attempt → its split job. Attempt ids come from `next_job` too, so a
    /// node's job id names either a whole job or an attempt, never both.
    attempts: BTreeMap<JobId, JobId>,
    /// Newest first.
    finished: VecDeque<FinishedJob>,
    /// Chunk attempts of running split jobs, in the order they started.
    chunk_log: BTreeMap<JobId, Vec<ChunkRecord>>,
    /// Names an admin drained: their nodes get no new work, across reconnects,
    /// until undrained.
    drained: BTreeSet<String>,
    /// Every node name seen since start (bounded), for the metrics.
    known: BTreeSet<String>,
    metrics: Arc<Metrics>,
    /// Each job's log (see `joblog`), which the links write too.
    logs: Arc<JobLogs>,
}

/// What a node announced in its `Hello`, plus where it connected from.
#[derive(Debug)]
pub(crate) struct NodeInfo {
    pub name: String,
    pub agent: String,
    pub slots: u32,
    pub caps: Capabilities,
    pub address: String,
}

struct Node {
    info: NodeInfo,
    connected: Instant,
    /// Milliseconds since `epoch` of the last message; written by the node's link
    /// without taking the lock.
    last_seen: Arc<AtomicU64>,
    /// Whole jobs and chunk attempts: both take a slot.
    jobs: BTreeSet<JobId>,
    outbox: Outbox<ToNode>,
    /// Seconds of content per second, averaged over its finished chunks.
    rate: Option<f64>,
    /// Drained by an admin: no new work.
    draining: bool,
    /// Sent a chunk that failed verification: no new work until then.
    quarantined_until: Option<Instant>,
}

/// How long a node that sent a broken chunk gets no work: long enough that a
/// job in progress does not go back to it, short enough that a passing fault
/// (a full disk, a flaky link) does not take it out for good.
pub(crate) const QUARANTINE: Duration = Duration::from_secs(600);

impl Node {
    fn quarantined(&self) -> bool {
        self.quarantined_until.is_some_and(|t| Instant::now() < t)
    }

    /// The slots new work may use: none while draining or quarantined.
    fn slots(&self) -> u32 {
        if self.draining || self.quarantined() { 0 } else { self.info.slots }
    }
}

struct RunningJob {
    priority: Priority,
    node: u64,
    node_name: String,
    args: Vec<String>,
    reason: String,
    why: Reasons,
    files: Vec<FileOffer>,
    access: String,
    started_unix_ms: u64,
    started: Instant,
    shim: Arc<ShimConn>,
}

struct FinishedJob {
    id: JobId,
    mode: JobMode,
    priority: Priority,
    /// None for split jobs.
    node_name: Option<String>,
    args: String,
    reason: String,
    why: Reasons,
    started_unix_ms: u64,
    duration: Duration,
    state: JobState,
    exit_code: Option<i32>,
    error: Option<String>,
    split: Option<Progress>,
    chunks: Vec<ChunkRecord>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Exited(RemoteExit),
    Failed(String),
    Cancelled,
}

/// A job leaving the running set: who must hear about it.
#[derive(Debug)]
pub(crate) struct Ended {
    pub shim: Arc<ShimConn>,
    pub node: Option<Outbox<ToNode>>,
}

/// A placed job, for the shim link.
#[derive(Debug)]
pub(crate) struct Placed {
    pub job: JobId,
    pub node_name: String,
    pub node: Outbox<ToNode>,
}

/// Whose a node's message about a job id is.
#[derive(Debug)]
pub(crate) enum Target {
    /// A whole job: relay as is.
    Whole(Arc<ShimConn>),
    /// A chunk attempt of a split job, for chunk `chunk`.
    Chunk { shim: Arc<ShimConn>, chunk: u32 },
}

/// A file the input relay may serve.
#[derive(Debug)]
pub(crate) struct Servable {
    pub job: JobId,
    pub size: u64,
    /// A relayed network stream ([`crate::protocol::FileOffer::stream`]).
    pub stream: bool,
    pub shim: Arc<ShimConn>,
    /// A live job's piece, served from the controller's memory.
    pub bytes: Option<Arc<[u8]>>,
}

impl Registry {
    pub(crate) fn new(epoch: Instant) -> Registry {
        Registry {
            epoch,
            next_node: 1,
            next_job: 1,
            nodes: BTreeMap::new(),
            running: BTreeMap::new(),
            splits: BTreeMap::new(),
            attempts: BTreeMap::new(),
            finished: VecDeque::new(),
            chunk_log: BTreeMap::new(),
            drained: BTreeSet::new(),
            known: BTreeSet::new(),
            metrics: Arc::new(Metrics::default()),
            logs: Arc::new(JobLogs::default()),
        }
    }

    /// The counters behind `/metrics`, which the links bump too.
    pub(crate) fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The job logs, which the links append the remote stderr to.
    pub(crate) fn logs(&self) -> Arc<JobLogs> {
        self.logs.clone()
    }

    /// Names of the nodes seen since start, for the metrics.
    pub(crate) fn known_nodes(&self) -> Vec<String> {
        self.known.iter().cloned().collect()
    }

    /// Drains (`on`) or undrains every node named `name`. Draining needs a
    /// connected node of that name (a typo should not pass silently);
    /// undraining also works for a drained name that is not connected. None
    /// when there is nothing of that name; otherwise how many are connected.
    pub(crate) fn set_draining(&mut self, name: &str, on: bool, now: Instant) -> Option<usize> {
        let connected = self.nodes.values().filter(|n| n.info.name == name).count();
        let was = self.drained.contains(name);
        // Undraining a drained name that is gone is the only change without a node.
        let undrain_gone = was && !on;
        if connected == 0 && !undrain_gone {
            return None;
        }
        if on {
            self.drained.insert(name.to_owned());
        } else {
            self.drained.remove(name);
        }
        for n in self.nodes.values_mut().filter(|n| n.info.name == name) {
            n.draining = on;
        }
        if was != on {
            info!(node = name, "node {}", if on { "drained: it gets no new work" } else { "undrained" });
        }
        if !on {
            // Slots came back: split jobs may be waiting for them.
            self.dispatch(now);
        }
        Some(connected)
    }

    /// Milliseconds since the epoch, the unit of `last_seen`.
    pub(crate) fn stamp(epoch: Instant, now: Instant) -> u64 {
        millis(now.saturating_duration_since(epoch))
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Registers a node; returns its id and the cell its link refreshes on every
    /// message. Gives it no work: the caller queues the welcome first, then
    /// calls [`Registry::dispatch`].
    pub(crate) fn add_node(&mut self, info: NodeInfo, outbox: Outbox<ToNode>, now: Instant) -> (u64, Arc<AtomicU64>) {
        let id = self.next_node;
        self.next_node += 1;
        let last_seen = Arc::new(AtomicU64::new(Self::stamp(self.epoch, now)));
        let draining = self.drained.contains(&info.name);
        if self.known.len() < KNOWN_NODES {
            self.known.insert(info.name.clone());
        }
        self.nodes.insert(
            id,
            Node {
                info,
                connected: now,
                last_seen: last_seen.clone(),
                jobs: BTreeSet::new(),
                outbox,
                rate: None,
                draining,
                quarantined_until: None,
            },
        );
        (id, last_seen)
    }

    /// Unregisters a node and fails every whole job it was running with
    /// `reason`; its chunk attempts fail too, and their chunks go elsewhere.
    pub(crate) fn remove_node(&mut self, id: u64, reason: &str, now: Instant) -> Vec<Ended> {
        let Some(node) = self.nodes.remove(&id) else { return Vec::new() };
        let mut ended = Vec::new();
        for job in node.jobs {
            if self.attempts.contains_key(&job) {
                self.end_attempt(job, AttemptEnd::Lost(reason.to_owned()), now);
            } else if let Some(e) = self.end_whole(job, None, Outcome::Failed(reason.to_owned()), now) {
                ended.push(e);
            }
        }
        self.dispatch(now);
        ended
    }

    /// Chooses a node for `request` and records the job. The `Accepted` to the
    /// shim and the `Run` to the node are queued here, under the lock, so that
    /// nothing about the job (a node loss, its output) can reach the shim before
    /// `Accepted`.
    pub(crate) fn place(
        &mut self,
        request: JobRequest,
        access: String,
        shim: Arc<ShimConn>,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<Placed, scheduler::NoPlacement> {
        let priority = request.priority.unwrap_or_else(|| Priority::of_args(&request.args));
        let node_id = match scheduler::choose(&self.candidates(), &request.needs) {
            Err(scheduler::NoPlacement::Busy(n)) => {
                // Less urgent chunks give a node back; whole jobs never do (they
                // would be lost).
                let Some(victim) = self.victim_for(&request.needs, priority) else {
                    return Err(scheduler::NoPlacement::Busy(n));
                };
                self.stop_for(victim, self.next_job, priority, now);
                scheduler::choose(&self.candidates(), &request.needs)?
            }
            chosen => chosen?,
        };
        let node = self.nodes.get_mut(&node_id).expect("the scheduler picks a registered node");
        let job = self.next_job;
        self.next_job += 1;
        node.jobs.insert(job);
        let node_name = node.info.name.clone();
        shim.out.json(ToShim::Accepted { job, node: node_name.clone(), audio: false });
        let spec = JobSpec {
            args: request.args.clone(),
            cwd: request.cwd,
            files: request.files.clone(),
            access,
            light: false,
        };
        node.outbox.json(ToNode::Run { job, spec: spec.clone() });
        let why = Reasons { not_split: request.not_split, resumed: request.resumed, fallback: None };
        self.logs.opened(job, JobMode::Whole, &request.args, &request.reason, &why, now, now_unix_ms);
        self.logs.note(job, now, &format!("priority {priority}"));
        self.metrics.accepted(&why);
        self.logs.note(job, now, &format!("whole job placed on {node_name}"));
        self.running.insert(
            job,
            RunningJob {
                priority,
                node: node_id,
                node_name: node_name.clone(),
                args: request.args,
                reason: request.reason,
                why,
                files: request.files,
                access: spec.access,
                started_unix_ms: now_unix_ms,
                started: now,
                shim,
            },
        );
        Ok(Placed { job, node_name, node: node.outbox.clone() })
    }

    /// Whose job `job` is, if node `node` runs it: a whole job, or a chunk
    /// attempt. A node never reaches another node's job.
    pub(crate) fn target(&self, job: JobId, node: u64) -> Option<Target> {
        if let Some(j) = self.running.get(&job) {
            return (j.node == node).then(|| Target::Whole(j.shim.clone()));
        }
        let split = self.splits.get(self.attempts.get(&job)?)?;
        let attempt = split.attempts.get(&job).filter(|a| a.node == node)?;
        Some(Target::Chunk { shim: split.shim.clone(), chunk: super::split::wire(attempt.chunk) })
    }

    /// The shim of a running job or attempt, if node `node` runs it.
    #[cfg(test)]
    pub(crate) fn shim_of(&self, job: JobId, node: u64) -> Option<Arc<ShimConn>> {
        self.target(job, node).map(|t| match t {
            Target::Whole(shim) | Target::Chunk { shim, .. } => shim,
        })
    }

    /// Ends a running whole job. With `node`, only when that node runs it.
    /// Returns None when the job was not running (already ended, or another
    /// node's).
    pub(crate) fn finish(&mut self, job: JobId, node: Option<u64>, outcome: Outcome, now: Instant) -> Option<Ended> {
        let ended = self.end_whole(job, node, outcome, now);
        if ended.is_some() {
            // A slot is free.
            self.dispatch(now);
        }
        ended
    }

    fn end_whole(&mut self, job: JobId, node: Option<u64>, outcome: Outcome, now: Instant) -> Option<Ended> {
        if node.is_some_and(|n| self.running.get(&job).is_none_or(|j| j.node != n)) {
            return None;
        }
        let run = self.running.remove(&job)?;
        let node_outbox = self.nodes.get_mut(&run.node).map(|n| {
            n.jobs.remove(&job);
            n.outbox.clone()
        });
        let (state, exit_code, error) = match outcome {
            Outcome::Exited(exit) => {
                (JobState::Done, exit.code, exit.signal.map(|s| format!("ffmpeg was killed by signal {s}")))
            }
            Outcome::Failed(reason) => (JobState::Failed, None, Some(reason)),
            Outcome::Cancelled => (JobState::Cancelled, None, None),
        };
        self.record(FinishedJob {
            id: job,
            mode: JobMode::Whole,
            priority: run.priority,
            node_name: Some(run.node_name),
            args: shell_join(&run.args).to_string(),
            reason: run.reason,
            why: run.why,
            started_unix_ms: run.started_unix_ms,
            duration: now.saturating_duration_since(run.started),
            state,
            exit_code,
            error,
            split: None,
            chunks: Vec::new(),
        });
        Some(Ended { shim: run.shim, node: node_outbox })
    }

    fn record(&mut self, job: FinishedJob) {
        self.logs.finished(job.id, job.state, job.exit_code, job.error.as_deref(), job.duration);
        self.metrics.job_ended(job.mode, JobResult::of(job.state, job.exit_code));
        self.finished.push_front(job);
        self.finished.truncate(FINISHED_KEPT);
        for old in self.finished.iter_mut().filter(|j| !j.chunks.is_empty()).skip(CHUNK_HISTORY_JOBS) {
            old.chunks = Vec::new();
        }
    }

    /// The shim of `job` says it runs the job locally after all (a split job:
    /// whole on one node or locally, as the detail says): recorded on the
    /// job, running or finished, once.
    pub(crate) fn fell_back(&mut self, job: JobId, why: Why, now: Instant) {
        let (slot, split) = if let Some(j) = self.running.get_mut(&job) {
            (&mut j.why.fallback, false)
        } else if let Some(j) = self.splits.get_mut(&job) {
            (&mut j.why.fallback, true)
        } else if let Some(j) = self.finished.iter_mut().find(|j| j.id == job) {
            (&mut j.why.fallback, j.mode == JobMode::Split)
        } else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let how = if split { "the split failed before any output" } else { "the shim runs the job locally instead" };
        info!(job, "{how}: {why}");
        self.logs.note(job, now, &format!("fell back: {how}: {why}"));
        self.metrics.fell_back(&why.code);
        *slot = Some(why);
    }

    /// Accepts a split job if any connected node could run it, busy or not
    /// (the same refusals as [`Registry::place`] otherwise), and hands out its
    /// first chunks. `Accepted` is queued before any `ChunkStarted`.
    pub(crate) fn place_split(
        &mut self,
        request: JobRequest,
        access: String,
        shim: Arc<ShimConn>,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<JobId, SplitRefused> {
        if let Some(plan) = &request.split {
            check_plan(plan)?;
        }
        let eligible = {
            let candidates = self.candidates();
            scheduler::eligible(&candidates, &request.needs)?.len()
        };
        let job = self.next_job;
        let split = SplitJob::new(job, request, access, shim, eligible, now, now_unix_ms)?;
        self.next_job += 1;
        split.shim.out.json(ToShim::Accepted { job, node: "split".into(), audio: split.remote_audio() });
        self.logs.opened(job, JobMode::Split, &split.args, &split.reason, &split.why, now, now_unix_ms);
        self.metrics.accepted(&split.why);
        self.logs.note(job, now, &format!("split job accepted: {eligible} capable nodes connected"));
        self.splits.insert(job, split);
        self.dispatch(now);
        Ok(job)
    }

    #[cfg(test)]
    pub(crate) fn split(&self, job: JobId) -> Option<&SplitJob> {
        self.splits.get(&job)
    }

    fn candidates(&self) -> Vec<Candidate<'_>> {
        self.nodes
            .iter()
            .map(|(id, n)| Candidate {
                id: *id,
                name: &n.info.name,
                slots: n.slots(),
                running: count(n.jobs.len()),
                caps: &n.info.caps,
            })
            .collect()
    }

    /// An `Output` event of attempt `attempt` from node `node`.
    pub(crate) fn chunk_output(&mut self, attempt: JobId, node: u64, event: &OutputEvent) {
        if let Some(split) = self.split_of(attempt, node) {
            split.output_event(attempt, event);
        }
    }

    /// Stderr bytes of attempt `attempt` from node `node`.
    pub(crate) fn chunk_stderr(&mut self, attempt: JobId, node: u64, bytes: &[u8]) {
        if let Some(split) = self.split_of(attempt, node) {
            split.stderr(attempt, bytes);
            let job = split.id;
            self.logs.attempt_stderr(job, attempt, bytes);
        }
    }

    /// Queues an encoded output frame of attempt `attempt` (`payload` bytes) to
    /// its shim with budget taken beforehand. Done under the lock so that no
    /// byte of an attempt follows its `ChunkFailed` or `ChunkDone`; false when
    /// the attempt is over.
    pub(crate) fn chunk_bytes(
        &mut self,
        attempt: JobId,
        node: u64,
        payload: usize,
        frame: Vec<u8>,
        share: Reserved,
    ) -> bool {
        let Some(split) = self.split_of(attempt, node) else { return false };
        let job = split.id;
        match split.forward(attempt, payload, frame, share) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(invalid) => {
                let now = Instant::now();
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.outbox.json(ToNode::Cancel { job: attempt });
                }
                self.end_attempt(attempt, AttemptEnd::Invalid(invalid.to_string()), now);
                self.dispatch(now);
                return false;
            }
        }
        self.metrics.output_bytes(JobMode::Split, payload);
        if let Some(r) = self.chunk_record(job, attempt) {
            r.bytes += payload as u64;
        }
        true
    }

    fn chunk_record(&mut self, job: JobId, attempt: JobId) -> Option<&mut ChunkRecord> {
        self.chunk_log.get_mut(&job)?.iter_mut().rev().find(|r| r.attempt == attempt)
    }

    /// Closes the record of a running chunk attempt. Attempts without one (the
    /// audio track) are not chunks and count nowhere here.
    /// `at`: the job's wall clock (see [`wall`]).
    fn chunk_ended(&mut self, job: JobId, attempt: JobId, state: ChunkState, error: Option<String>, at: u64) {
        let Some(r) = self.chunk_record(job, attempt).filter(|r| r.state == ChunkState::Running) else { return };
        r.state = state;
        r.finished_unix_ms = Some(at);
        r.error = error;
        self.metrics.chunk_ended(state);
    }

    /// A running chunk attempt's chunk and the frames it must hold.
    #[cfg(test)]
    pub(crate) fn split_attempt(&self, attempt: JobId) -> Option<(usize, Option<u64>)> {
        let split = self.splits.get(self.attempts.get(&attempt)?)?;
        split.attempts.get(&attempt).map(|a| (a.chunk, a.frames))
    }

    fn split_of(&mut self, attempt: JobId, node: u64) -> Option<&mut SplitJob> {
        let split = self.splits.get_mut(self.attempts.get(&attempt)?)?;
        split.attempts.get(&attempt).is_some_and(|a| a.node == node).then_some(split)
    }

    /// Attempt `attempt` ended on node `node`; false when that node does not
    /// run it. Retries, the job's end and new work follow from here.
    pub(crate) fn attempt_ended(&mut self, attempt: JobId, node: u64, end: AttemptEnd, now: Instant) -> bool {
        if self.split_of(attempt, node).is_none() {
            return false;
        }
        self.end_attempt(attempt, end, now);
        self.dispatch(now);
        true
    }

    fn end_attempt(&mut self, attempt: JobId, end: AttemptEnd, now: Instant) {
        let Some(job) = self.attempts.remove(&attempt) else { return };
        let Some(split) = self.splits.get_mut(&job) else { return };
        let why = match &end {
            AttemptEnd::Exited(exit) if exit.success() => "its output was incomplete".to_owned(),
            AttemptEnd::Exited(RemoteExit { code: Some(c), .. }) => format!("ffmpeg exited with code {c}"),
            AttemptEnd::Exited(RemoteExit { signal: Some(s), .. }) => format!("ffmpeg was killed by signal {s}"),
            AttemptEnd::Exited(_) => "ffmpeg ended without a status".to_owned(),
            AttemptEnd::Refused(why) => format!("refused: {why}"),
            AttemptEnd::Lost(why) | AttemptEnd::Invalid(why) | AttemptEnd::Preempted(why) => why.clone(),
        };
        let started = split.started;
        let at = wall(split, now);
        let audio = split.attempts.get(&attempt).is_some_and(|a| a.chunk == AUDIO);
        let clean = matches!(&end, AttemptEnd::Exited(exit) if exit.success());
        let Some(ending) = split.end_attempt(attempt, end, now) else { return };
        // Verification says what was wrong; otherwise the end says enough.
        let why = if ending.bad_output { ending.failure.clone().unwrap_or(why) } else { why };
        if ending.bad_output
            && let Some(n) = self.nodes.get_mut(&ending.node)
        {
            warn!(node = %n.info.name, "quarantined for {} s: {why}", QUARANTINE.as_secs());
            n.quarantined_until = Some(now + QUARANTINE);
        }
        let how = match (ending.sample.is_some(), audio && clean) {
            (true, _) => "done".to_owned(),
            (false, true) => "ffmpeg exited with code 0".to_owned(),
            (false, false) => format!("failed: {why}"),
        };
        self.logs.attempt_ended(job, attempt, now, &how);
        for (loser, _) in &ending.losers {
            self.logs.attempt_ended(job, *loser, now, &format!("superseded by attempt {attempt}"));
        }
        if ending.sample.is_some() {
            let log = self.chunk_log.get(&job).map(Vec::as_slice).unwrap_or_default();
            let first = log.iter().any(|r| r.attempt == attempt) && log.iter().all(|r| r.state != ChunkState::Done);
            if first {
                self.metrics.first_chunk(now.saturating_duration_since(started));
            }
            self.chunk_ended(job, attempt, ChunkState::Done, None, at);
        } else {
            self.chunk_ended(job, attempt, ChunkState::Failed, Some(why), at);
        }
        for (loser, _) in &ending.losers {
            self.chunk_ended(job, *loser, ChunkState::Superseded, None, at);
        }
        if let Some(n) = self.nodes.get_mut(&ending.node) {
            n.jobs.remove(&attempt);
            if let Some(sample) = ending.sample {
                n.rate = Some(ewma(n.rate, sample));
            }
        }
        for (loser, node) in ending.losers {
            self.attempts.remove(&loser);
            if let Some(n) = self.nodes.get_mut(&node) {
                n.jobs.remove(&loser);
                n.outbox.json(ToNode::Cancel { job: loser });
            }
        }
        self.settle(job, ending.fate, now);
    }

    /// Ends split job `job` if `fate` says it is over; true while it runs.
    fn settle(&mut self, job: JobId, fate: Fate, now: Instant) -> bool {
        match fate {
            Fate::Running => return true,
            Fate::Complete => {
                info!(job, "split job complete");
                let done = RemoteExit { code: Some(0), signal: None };
                self.end_split(job, Outcome::Exited(done), now);
            }
            Fate::Failed(reason) => self.fail_split(job, reason, now),
        }
        false
    }

    /// The stream live job `job` is cut from, and its piece length in ticks.
    pub(crate) fn live_source(&self, job: JobId) -> Option<(u32, u64)> {
        self.splits.get(&job)?.live_source()
    }

    /// A piece cut from live job `job`'s stream; false when the job is over
    /// (nobody wants more pieces). Fails the job when the cluster has fallen so
    /// far behind that the pieces waiting outgrow `max_bytes`.
    pub(crate) fn live_piece(&mut self, job: JobId, piece: Piece, max_bytes: usize, now: Instant) -> bool {
        let Some(split) = self.splits.get_mut(&job) else { return false };
        let index = piece.index;
        split.add_piece(piece, now);
        if split.piece_bytes() > max_bytes {
            let lag = split.live_lag(now).unwrap_or_default().as_secs_f64();
            let reason = format!(
                "the cluster fell {lag:.1} s behind the live stream ({} MiB of pieces waiting)",
                split.piece_bytes() >> 20
            );
            self.fail_split(job, reason, now);
            return false;
        }
        debug!(job, piece = index, "live piece cut");
        self.dispatch(now);
        true
    }

    /// Live job `job`'s stream ended (`error`: how it broke, if it did).
    pub(crate) fn live_ended(&mut self, job: JobId, error: Option<&str>, now: Instant) {
        let Some(split) = self.splits.get_mut(&job) else { return };
        let fate = split.end_stream(error);
        if self.settle(job, fate, now) {
            self.logs.note(job, now, "live stream ended; encoding its last pieces");
            self.dispatch(now);
        }
    }

    /// Fails a split job: the shim is told why, its attempts are cancelled.
    pub(crate) fn fail_split(&mut self, job: JobId, reason: String, now: Instant) {
        warn!(job, "split job failed: {reason}");
        if let Some(split) = self.splits.get(&job) {
            split.shim.finish(ToShim::Failed { reason: reason.clone() });
        }
        self.end_split(job, Outcome::Failed(reason), now);
    }

    /// Ends a split job because its shim went away (or the controller stops):
    /// cancels its running attempts. False when it is not running (complete,
    /// failed, or not a split job).
    pub(crate) fn abandon_split(&mut self, job: JobId, outcome: Outcome, now: Instant) -> bool {
        let ended = self.end_split(job, outcome, now);
        if ended {
            self.dispatch(now);
        }
        ended
    }

    /// Removes a split job, cancelling whatever of it still runs, and records it.
    fn end_split(&mut self, job: JobId, outcome: Outcome, now: Instant) -> bool {
        let Some(mut split) = self.splits.remove(&job) else { return false };
        let at = wall(&split, now);
        for (attempt, node) in split.take_attempts() {
            self.chunk_ended(job, attempt, ChunkState::Cancelled, None, at);
            self.attempts.remove(&attempt);
            if let Some(n) = self.nodes.get_mut(&node) {
                n.jobs.remove(&attempt);
                n.outbox.json(ToNode::Cancel { job: attempt });
            }
        }
        let (state, exit_code, error) = match outcome {
            Outcome::Exited(exit) => (JobState::Done, exit.code, None),
            Outcome::Failed(reason) => (JobState::Failed, None, Some(reason)),
            Outcome::Cancelled => (JobState::Cancelled, None, None),
        };
        let progress = split.progress(now);
        let chunks = self.chunk_log.remove(&job).unwrap_or_default();
        self.record(FinishedJob {
            id: job,
            mode: JobMode::Split,
            priority: split.priority,
            node_name: None,
            args: shell_join(&split.args).to_string(),
            reason: split.reason,
            why: split.why,
            started_unix_ms: split.started_unix_ms,
            duration: now.saturating_duration_since(split.started),
            state,
            exit_code,
            error,
            split: Some(progress),
            chunks,
        });
        true
    }

    /// The periodic look: late chunks, stalled jobs, slots freed without an
    /// event (none today, but dispatch is cheap and idempotent).
    pub(crate) fn tick(&mut self, now: Instant) {
        self.dispatch(now);
    }

    /// Hands out split jobs' chunks to free slots, most urgent first (see
    /// [`pick`]), until no free slot can take anything; fails jobs that no
    /// connected node has been able to run for too long.
    pub(crate) fn dispatch(&mut self, now: Instant) {
        if self.splits.is_empty() {
            return;
        }
        self.fail_stalled(now);
        let rates = self.rates();
        self.dispatch_chunks(&rates, now);
        self.dispatch_audio(&rates, now);
    }

    /// Starts the audio track of every split job whose track waits, on the
    /// node best placed for it: one without a chunk of the job, else the one
    /// whose chunks the playhead reaches last (the first segments wait for the
    /// others), then the least loaded, the fastest.
    /// Audio does not need a free slot: it is a few percent of a chunk's work.
    fn dispatch_audio(&mut self, rates: &BTreeMap<u64, Option<f64>>, now: Instant) {
        let waiting: Vec<JobId> =
            self.splits.iter().filter(|(_, s)| s.audio_wanted(now).is_some()).map(|(id, _)| *id).collect();
        for job in waiting {
            let Some(split) = self.splits.get(&job) else { continue };
            let Some(want) = split.audio_wanted(now) else { continue };
            let (avoid, exclude, reissue) = (want.avoid.clone(), want.exclude, want.reissue);
            let capable = |id: &u64, n: &Node| n.slots() > 0 && !exclude.contains(id) && split.can_use(&n.info.caps);
            let elsewhere = self.nodes.iter().any(|(id, n)| capable(id, n) && !avoid.contains(id));
            let best = self
                .nodes
                .iter()
                .filter(|(id, n)| capable(id, n) && !(elsewhere && avoid.contains(id)))
                .min_by(|(a_id, a), (b_id, b)| {
                    // Nodes without a chunk of this job first, then the one
                    // whose chunks lie furthest from the playhead.
                    let load = |id: &u64, n: &Node| {
                        let near = split.nearest_chunk_on(*id).map_or(0, |d| usize::MAX - d);
                        (near, u64::from(self.chunk_load(n)) * 1000 / u64::from(n.slots().max(1)))
                    };
                    let speed = |id: &u64, n: &Node| rates.get(id).copied().flatten().unwrap_or(n.info.caps.speed);
                    load(a_id, a)
                        .cmp(&load(b_id, b))
                        .then_with(|| speed(b_id, b).total_cmp(&speed(a_id, a)))
                        .then_with(|| a_id.cmp(b_id))
                })
                .map(|(id, _)| *id);
            let Some(node_id) = best else { continue };
            let attempt = self.next_job;
            let Some(split) = self.splits.get_mut(&job) else { continue };
            let Some(node) = self.nodes.get_mut(&node_id) else { continue };
            let (name, version) = (node.info.name.clone(), node.info.caps.ffmpeg_version.clone());
            let on = Taker { id: node_id, name: &name, version: &version };
            let Some(spec) = split.start_audio(attempt, on, reissue, now) else { continue };
            self.logs.attempt_started(job, attempt, "audio track", &name, reissue, now);
            self.next_job += 1;
            debug!(job, attempt, node = %name, "audio track started");
            node.jobs.insert(attempt);
            node.outbox.json(ToNode::Run { job: attempt, spec });
            self.attempts.insert(attempt, job);
        }
    }

    /// Chunk attempts and whole jobs on `n`: what its slots hold (an audio
    /// track does not take one).
    fn chunk_load(&self, n: &Node) -> u32 {
        let light = |j: &JobId| {
            self.attempts
                .get(j)
                .and_then(|job| self.splits.get(job))
                .and_then(|s| s.attempts.get(j))
                .is_some_and(|a| a.chunk == AUDIO)
        };
        count(n.jobs.iter().filter(|j| !light(j)).count())
    }

    /// Hands free slots the most urgent chunks.
    fn dispatch_chunks(&mut self, rates: &BTreeMap<u64, Option<f64>>, now: Instant) {
        // Each round takes a slot or finds a planner dry; this bounds the loop
        // even if something else went wrong.
        let slots: usize = self.nodes.values().map(|n| n.info.slots as usize).sum();
        for _ in 0..slots + self.splits.len() + 1 {
            let choice = {
                let views = self.node_views(rates);
                if !views.iter().any(|v| v.running < v.slots) {
                    if self.preempt(rates, now) {
                        continue;
                    }
                    return;
                }
                let work: Vec<_> = self.splits.values().flat_map(|s| s.work(now, rates)).collect();
                pick(&work, &views).map(|(i, node)| (work[i].job, work[i].kind, work[i].chunk, node))
            };
            match choice {
                Some((job, kind, chunk, node)) => self.assign(job, kind, chunk, node, rates, now),
                None if self.preempt(rates, now) => {}
                None => return,
            }
        }
    }

    /// The chunk attempt of less urgent work than `priority` to stop for a
    /// whole job needing `needs`: on a node that has what it needs, the one
    /// started last.
    fn victim_for(&self, needs: &crate::ffmpeg::decision::Needs, priority: Priority) -> Option<JobId> {
        let eligible =
            |node: u64| self.nodes.get(&node).is_some_and(|n| n.slots() > 0 && n.info.caps.missing(needs).is_empty());
        let occupants: Vec<Occupant> = self.splits.values().flat_map(SplitJob::occupants).collect();
        victim(&occupants, priority, eligible)
    }

    /// Sets running job `job`'s priority (the admin CLI); the one it had, or
    /// None when no such job runs. Dispatch follows at once: a job made more
    /// urgent may take nodes back now.
    pub(crate) fn set_priority(&mut self, job: JobId, priority: Priority, now: Instant) -> Option<Priority> {
        let was = if let Some(s) = self.splits.get_mut(&job) {
            std::mem::replace(&mut s.priority, priority)
        } else {
            std::mem::replace(&mut self.running.get_mut(&job)?.priority, priority)
        };
        self.logs.note(job, now, &format!("priority {was} -> {priority} (admin)"));
        self.dispatch(now);
        Some(was)
    }

    /// The connected nodes as dispatch sees them.
    fn node_views(&self, rates: &BTreeMap<u64, Option<f64>>) -> Vec<NodeView<'_>> {
        self.nodes
            .iter()
            .map(|(id, n)| NodeView {
                id: *id,
                caps: &n.info.caps,
                running: self.chunk_load(n),
                slots: n.slots(),
                speed: rates.get(id).copied().flatten().unwrap_or(n.info.caps.speed),
            })
            .collect()
    }

    /// Stops the chunk attempt [`preemption`] names, if any, so that more urgent
    /// waiting work gets its node; whether one was stopped.
    fn preempt(&mut self, rates: &BTreeMap<u64, Option<f64>>, now: Instant) -> bool {
        let choice = {
            let views = self.node_views(rates);
            let work: Vec<_> = self.splits.values().flat_map(|s| s.work(now, rates)).collect();
            let occupants: Vec<Occupant> = self.splits.values().flat_map(SplitJob::occupants).collect();
            preemption(&work, &views, &occupants)
        };
        let Some((victim, for_job)) = choice else { return false };
        let priority = self.splits.get(&for_job).map(|s| s.priority).unwrap_or_default();
        self.stop_for(victim, for_job, priority, now);
        true
    }

    /// Stops chunk attempt `victim` for job `for_job` of `priority`: its node
    /// is told to cancel it and its chunk waits for a slot again.
    fn stop_for(&mut self, victim: JobId, for_job: JobId, priority: Priority, now: Instant) {
        let Some(&job) = self.attempts.get(&victim) else { return };
        let node = self.splits.get(&job).and_then(|s| s.attempts.get(&victim)).map(|a| a.node);
        if let Some(n) = node.and_then(|id| self.nodes.get_mut(&id)) {
            n.outbox.json(ToNode::Cancel { job: victim });
            info!(job, attempt = victim, node = %n.info.name, for_job, "chunk attempt preempted");
        }
        let why = format!("preempted by job {for_job} ({priority})");
        self.logs.note(job, now, &format!("attempt {victim} {why}"));
        self.metrics.preempted(priority);
        self.end_attempt(victim, AttemptEnd::Preempted(why), now);
    }

    /// Starts an attempt of a chunk of `job` on `node_id` (planning it first
    /// when it is new).
    fn assign(
        &mut self,
        job: JobId,
        kind: WorkKind,
        chunk: usize,
        node_id: u64,
        rates: &BTreeMap<u64, Option<f64>>,
        now: Instant,
    ) {
        let Some(split) = self.splits.get_mut(&job) else { return };
        let Some(node) = self.nodes.get(&node_id) else { return };
        let chunk = match kind {
            WorkKind::New => {
                let pace = |id: &u64, n: &Node| (rates.get(id).copied().flatten(), n.info.caps.speed);
                let among: Vec<(Option<f64>, f64)> = self
                    .nodes
                    .iter()
                    .filter(|(id, n)| n.slots() > 0 && (**id == node_id || split.can_use(&n.info.caps)))
                    .map(|(id, n)| pace(id, n))
                    .collect();
                let speed = relative_speed(pace(&node_id, node), &among);
                match split.plan_next(speed, rates, now) {
                    Some(i) => i,
                    None => {
                        // Only when rounding left the planner short of the end:
                        // what was planned is the job, and it may be done.
                        if split.complete() {
                            self.settle(job, Fate::Complete, now);
                        }
                        return;
                    }
                }
            }
            WorkKind::Pending | WorkKind::Reissue => chunk,
        };
        let attempt = self.next_job;
        self.next_job += 1;
        let node = self.nodes.get_mut(&node_id).expect("looked up above");
        let (name, version) = (node.info.name.clone(), node.info.caps.ffmpeg_version.clone());
        let on = Taker { id: node_id, name: &name, version: &version };
        let reissue = kind == WorkKind::Reissue;
        let spec = split.start(chunk, attempt, on, reissue, now);
        let (start, end) = split.chunk_span(chunk).unwrap_or_default();
        let started_unix_ms = wall(split, now);
        debug!(job, chunk, attempt, node = %name, ?kind, "chunk attempt started");
        if reissue {
            self.metrics.reissued();
        }
        let record = ChunkRecord {
            chunk: count(chunk),
            attempt,
            start,
            end,
            node: name,
            state: ChunkState::Running,
            reissue,
            started_unix_ms,
            finished_unix_ms: None,
            bytes: 0,
            error: None,
        };
        let what = format!("chunk {chunk} ({start:.3}-{end:.3} s)");
        self.logs.attempt_started(job, attempt, &what, &record.node, reissue, now);
        self.chunk_log.entry(job).or_default().push(record);
        node.jobs.insert(attempt);
        node.outbox.json(ToNode::Run { job: attempt, spec });
        self.attempts.insert(attempt, job);
    }

    /// Seconds of content per second of every node (see [`throughputs`]).
    fn rates(&self) -> BTreeMap<u64, Option<f64>> {
        let paces: Vec<Pace> =
            self.nodes.values().map(|n| Pace { score: n.info.caps.speed, measured: n.rate }).collect();
        self.nodes.keys().copied().zip(throughputs(&paces)).collect()
    }

    fn fail_stalled(&mut self, now: Instant) {
        let mut stalled = Vec::new();
        for (id, split) in &mut self.splits {
            let capable = self.nodes.values().any(|n| n.slots() > 0 && split.can_use(&n.info.caps));
            if split.stalled(capable, now) {
                stalled.push((*id, split.stall_reason()));
            }
        }
        for (job, reason) in stalled {
            self.fail_split(job, reason, now);
        }
    }

    /// Jobs a node reports running that it was not given or that have ended:
    /// it should kill them.
    pub(crate) fn strays(&self, node: u64, reported: &[JobId]) -> Vec<JobId> {
        let mine = self.nodes.get(&node).map(|n| &n.jobs);
        reported.iter().copied().filter(|j| !mine.is_some_and(|m| m.contains(j))).collect()
    }

    /// The file `file` of the running job holding capability `access` (a split
    /// job's attempts share the job's).
    pub(crate) fn servable(&self, access: &str, file: u32) -> Option<Servable> {
        // Compare every capability in constant time rather than hashing: a lookup
        // whose timing depends on the secret would leak it.
        let whole = self.running.iter().map(|(id, j)| (*id, &j.access, &j.files, &j.shim, None));
        let split = self.splits.iter().map(|(id, j)| (*id, &j.access, &j.files, &j.shim, Some(j)));
        let mut found = None;
        for (id, cap, files, shim, split) in whole.chain(split) {
            if crate::protocol::secret_eq(cap.as_bytes(), access.as_bytes()) {
                found = Some((id, files, shim, split));
            }
        }
        let (job, files, shim, split) = found?;
        if let Some(bytes) = split.and_then(|s| s.piece(file)) {
            return Some(Servable {
                job,
                size: bytes.len() as u64,
                stream: false,
                shim: shim.clone(),
                bytes: Some(bytes),
            });
        }
        let offer = files.iter().find(|f| f.id == file)?;
        Some(Servable { job, size: offer.size, stream: offer.stream, shim: shim.clone(), bytes: None })
    }

    pub(crate) fn status(&self, now: Instant, now_unix_ms: u64) -> Status {
        let now_stamp = Self::stamp(self.epoch, now);
        let nodes = self
            .nodes
            .iter()
            .map(|(id, n)| {
                let running = count(n.jobs.len());
                NodeStatus {
                    id: *id,
                    name: n.info.name.clone(),
                    state: if n.draining {
                        NodeState::Draining
                    } else if n.quarantined() {
                        NodeState::Quarantined
                    } else if running >= n.info.slots {
                        NodeState::Busy
                    } else {
                        NodeState::Ready
                    },
                    slots: n.info.slots,
                    running,
                    speed: n.info.caps.speed,
                    cpus: n.info.caps.cpus,
                    ffmpeg_version: n.info.caps.ffmpeg_version.clone(),
                    agent: n.info.agent.clone(),
                    address: n.info.address.clone(),
                    connected_ms: millis(now.saturating_duration_since(n.connected)),
                    last_seen_ms_ago: now_stamp.saturating_sub(n.last_seen.load(Ordering::Relaxed)),
                    caps: n.info.caps.clone(),
                }
            })
            .collect();
        let running = self.running.iter().rev().map(|(id, j)| JobStatus {
            id: *id,
            mode: JobMode::Whole,
            priority: j.priority,
            state: JobState::Running,
            node: Some(j.node_name.clone()),
            args: shell_join(&j.args).to_string(),
            reason: j.reason.clone(),
            why: j.why.clone(),
            started_unix_ms: j.started_unix_ms,
            duration_ms: millis(now.saturating_duration_since(j.started)),
            exit_code: None,
            error: None,
            progress: self.logs.estimate(*id, now),
            ..split_fields(None)
        });
        let splits = self.splits.iter().map(|(id, j)| JobStatus {
            id: *id,
            mode: JobMode::Split,
            priority: j.priority,
            state: JobState::Running,
            node: None,
            args: shell_join(&j.args).to_string(),
            reason: j.reason.clone(),
            why: j.why.clone(),
            started_unix_ms: j.started_unix_ms,
            duration_ms: millis(now.saturating_duration_since(j.started)),
            exit_code: None,
            error: None,
            chunks: self.chunk_log.get(id).cloned().unwrap_or_default(),
            progress: j.estimate(now),
            ..split_fields(Some(j.progress(now)))
        });
        let finished = self.finished.iter().map(|j| JobStatus {
            id: j.id,
            mode: j.mode,
            priority: j.priority,
            state: j.state,
            node: j.node_name.clone(),
            args: j.args.clone(),
            reason: j.reason.clone(),
            why: j.why.clone(),
            started_unix_ms: j.started_unix_ms,
            duration_ms: millis(j.duration),
            exit_code: j.exit_code,
            error: j.error.clone(),
            chunks: j.chunks.clone(),
            ..split_fields(j.split.clone())
        });
        let mut jobs: Vec<JobStatus> = running.chain(splits).chain(finished).collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL_VERSION,
            uptime_ms: millis(now.saturating_duration_since(self.epoch)),
            now_unix_ms,
            nodes,
            jobs,
        }
    }
}

/// A status entry carrying only a split job's counters (the rest is replaced).
fn split_fields(p: Option<Progress>) -> JobStatus {
    JobStatus {
        id: 0,
        mode: JobMode::Whole,
        priority: Priority::default(),
        state: JobState::Running,
        node: None,
        args: String::new(),
        reason: String::new(),
        why: Reasons::default(),
        started_unix_ms: 0,
        duration_ms: 0,
        exit_code: None,
        error: None,
        chunks_done: p.as_ref().map(|p| p.done),
        chunks_running: p.as_ref().map(|p| p.running),
        chunks_planned: p.as_ref().map(|p| p.planned),
        reissued: p.as_ref().map(|p| p.reissued),
        preempted: p.as_ref().map(|p| p.preempted),
        live_lag_ms: p.as_ref().and_then(|p| p.live_lag_ms),
        progress: None,
        nodes: p.map(|p| p.nodes),
        chunks: Vec::new(),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `now` on a split job's wall clock: its start plus the monotonic time since,
/// so that its chunk records never precede it whatever the system clock does.
fn wall(split: &SplitJob, now: Instant) -> u64 {
    split.started_unix_ms + millis(now.saturating_duration_since(split.started))
}

pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

/// A fresh unguessable capability: 32 bytes from the kernel, hex.
pub(crate) fn new_capability() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffmpeg::decision::Needs;

    fn info(name: &str, slots: u32) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            agent: "test".into(),
            slots,
            caps: Capabilities { speed: 100.0, ..Default::default() },
            address: "127.0.0.1:1".into(),
        }
    }

    fn request(files: Vec<FileOffer>) -> JobRequest {
        JobRequest {
            args: vec!["-i".into(), "in put.mkv".into(), "out.ts".into()],
            cwd: "/tmp".into(),
            files,
            needs: Needs::default(),
            reason: "whole.multiple_inputs".into(),
            split: None,
            not_split: None,
            resumed: None,
            priority: None,
        }
    }

    fn offer(id: u32, size: u64) -> FileOffer {
        FileOffer { id, reference: "in put.mkv".into(), entry: None, size, stream: false }
    }

    #[test]
    fn jobs_belong_to_their_node() {
        let t0 = Instant::now();
        let mut reg = Registry::new(t0);
        let (node_box, mut node_rx) = Outbox::new(1024);
        let (a, _) = reg.add_node(info("a", 1), node_box, t0);
        let (b, _) = reg.add_node(info("b", 0), Outbox::new(1024).0, t0);
        let (shim_box, mut shim_rx) = Outbox::new(1024);
        let shim = Arc::new(ShimConn::new(shim_box));
        let placed = reg.place(request(vec![offer(0, 10)]), "cap".into(), shim, t0, 5).unwrap();
        assert_eq!((placed.job, placed.node_name.as_str()), (1, "a"));
        assert!(matches!(shim_rx.try_recv(), Ok(super::super::outbox::Out::Json(ToShim::Accepted { job: 1, .. }))));
        assert!(matches!(node_rx.try_recv(), Ok(super::super::outbox::Out::Json(ToNode::Run { job: 1, .. }))));

        assert!(reg.shim_of(1, a).is_some());
        assert!(reg.shim_of(1, b).is_none());
        assert!(reg.finish(1, Some(b), Outcome::Cancelled, t0).is_none());
        assert_eq!(reg.strays(a, &[1, 9]), [9]);

        assert!(reg.servable("cap", 0).is_some_and(|s| s.size == 10 && s.job == 1));
        assert!(reg.servable("cap", 1).is_none());
        assert!(reg.servable("cax", 0).is_none());

        // The only slot is taken; the other node has none.
        let err = reg.place(request(vec![]), "cap2".into(), Arc::new(ShimConn::new(Outbox::new(1).0)), t0, 5);
        assert_eq!(err.unwrap_err().to_string(), "all 2 capable nodes are busy");

        let exit = RemoteExit { code: Some(0), signal: None };
        let later = t0 + Duration::from_millis(1500);
        assert!(reg.finish(1, Some(a), Outcome::Exited(exit), later).is_some());
        assert!(reg.servable("cap", 0).is_none(), "the capability dies with the job");
        let doc = reg.status(later, 7);
        assert_eq!(doc.jobs.len(), 1);
        let j = &doc.jobs[0];
        assert_eq!((j.state, j.exit_code, j.duration_ms), (JobState::Done, Some(0), 1500));
        assert_eq!(j.args, "-i 'in put.mkv' out.ts");
        assert_eq!(doc.nodes[0].state, NodeState::Ready);
        assert_eq!(doc.nodes[1].state, NodeState::Busy);
    }

    #[test]
    fn removing_a_node_fails_its_jobs_and_history_is_bounded() {
        let t0 = Instant::now();
        let mut reg = Registry::new(t0);
        let (a, _) = reg.add_node(info("a", 1000), Outbox::new(1024).0, t0);
        for _ in 0..150 {
            let shim = Arc::new(ShimConn::new(Outbox::new(1).0));
            reg.place(request(vec![]), "c".into(), shim, t0, 0).unwrap();
        }
        for job in 1..=120 {
            reg.finish(job, None, Outcome::Cancelled, t0).unwrap();
        }
        let lost = reg.remove_node(a, "node a lost", t0);
        assert_eq!(lost.len(), 30);
        let doc = reg.status(t0, 0);
        assert!(doc.nodes.is_empty());
        assert_eq!(doc.jobs.len(), FINISHED_KEPT);
        assert_eq!(doc.jobs[0].id, 150);
        assert_eq!(doc.jobs[0].state, JobState::Failed);
        assert_eq!(doc.jobs[0].error.as_deref(), Some("node a lost"));
    }

    #[test]
    fn a_drained_node_keeps_its_jobs_and_gets_no_new_ones() {
        let t0 = Instant::now();
        let mut reg = Registry::new(t0);
        let (a, _) = reg.add_node(info("a", 2), Outbox::new(1024).0, t0);
        let shim = || Arc::new(ShimConn::new(Outbox::new(1024).0));
        let running = reg.place(request(vec![]), "c1".into(), shim(), t0, 0).unwrap().job;
        assert_eq!(reg.set_draining("nosuch", true, t0), None, "a typo is an error");
        assert_eq!(reg.set_draining("a", true, t0), Some(1));
        assert_eq!(reg.status(t0, 0).nodes[0].state, NodeState::Draining);
        let refused = reg.place(request(vec![]), "c2".into(), shim(), t0, 0).unwrap_err();
        assert_eq!(refused.to_string(), "all 1 capable nodes are busy");
        // What it runs goes on and ends normally.
        assert!(reg.shim_of(running, a).is_some());
        let exit = RemoteExit { code: Some(0), signal: None };
        assert!(reg.finish(running, Some(a), Outcome::Exited(exit), t0).is_some());
        // The drain outlives the connection: the same name reconnecting stays drained.
        reg.remove_node(a, "node a lost", t0);
        let (a2, _) = reg.add_node(info("a", 2), Outbox::new(1024).0, t0);
        assert_eq!(reg.status(t0, 0).nodes[0].state, NodeState::Draining);
        assert!(reg.place(request(vec![]), "c3".into(), shim(), t0, 0).is_err());
        assert_eq!(reg.set_draining("a", false, t0), Some(1));
        assert_eq!(reg.place(request(vec![]), "c4".into(), shim(), t0, 0).unwrap().node_name, "a");
        assert_eq!(reg.status(t0, 0).nodes[0].state, NodeState::Ready);
        // Undraining a name that left is fine; draining one is not.
        reg.set_draining("a", true, t0);
        reg.remove_node(a2, "gone", t0);
        assert_eq!(reg.set_draining("a", true, t0), None);
        assert_eq!(reg.set_draining("a", false, t0), Some(0));
        assert_eq!(reg.set_draining("a", false, t0), None);
    }

    /// The chunk records and counters a split job leaves: winners, a late
    /// chunk's re-issue beating the first attempt, a failure, and the attempts
    /// cancelled with the job.
    #[tokio::test]
    async fn chunk_records_follow_every_attempt() {
        use super::super::outbox::Out;
        use super::super::split::tests::{plan, split_request};
        use crate::protocol::{Frame, FrameKind};

        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut reg = Registry::new(t0);
        // Jobs are placed with a wall clock of 0: records read as ms since.
        let base = 0;
        let mut rx = Vec::new();
        let mut ids = Vec::new();
        for name in ["a", "b"] {
            let (outbox, r) = Outbox::new(1 << 20);
            let mut i = info(name, 1);
            i.caps.encoders = ["libx264".to_owned()].into();
            ids.push(reg.add_node(i, outbox, t0).0);
            rx.push(r);
        }
        let mut runs = |n: usize| -> Vec<JobId> {
            let mut out = Vec::new();
            while let Ok(m) = rx[n].try_recv() {
                if let Out::Json(ToNode::Run { job, .. }) = m {
                    out.push(job);
                }
            }
            out
        };
        let ok = || AttemptEnd::Exited(RemoteExit { code: Some(0), signal: None });
        let (out, _shim_rx) = Outbox::new(1 << 20);
        let shim = Arc::new(ShimConn::new(out));
        // A chunk's encode, as verification expects it.
        let output = |reg: &mut Registry, attempt: JobId, node: u64| -> usize {
            let (chunk, frames) = reg.split_attempt(attempt).unwrap();
            let ts = crate::split::mpegts::tests::stream(frames.unwrap_or(1), b"");
            let frame = Frame::new(FrameKind::Output, attempt, chunk as u32, 0, &ts).encode();
            let share = shim.out.try_reserve(frame.len()).unwrap();
            assert!(reg.chunk_bytes(attempt, node, ts.len(), frame, share));
            ts.len()
        };

        // 9 s in three 3 s chunks: a takes 0, b takes 1.
        let job = reg.place_split(split_request(plan(9.0)), "cap".into(), shim.clone(), t0, 0).unwrap();
        let (a0, b1) = (runs(0)[0], runs(1)[0]);
        let a0_bytes = output(&mut reg, a0, ids[0]);
        assert!(reg.attempt_ended(a0, ids[0], ok(), at(1000)));
        let a2 = runs(0)[0];
        let mut relayed = a0_bytes + output(&mut reg, b1, ids[1]);
        assert!(reg.attempt_ended(b1, ids[1], ok(), at(1200)));
        // Chunk 2 runs late on a: b gets a second attempt, which wins.
        reg.tick(at(3100));
        let b2 = runs(1)[0];
        relayed += output(&mut reg, b2, ids[1]);
        assert!(reg.attempt_ended(b2, ids[1], ok(), at(3200)));
        let doc = reg.status(at(3200), 0);
        let j = &doc.jobs[0];
        assert_eq!((j.id, j.state), (job, JobState::Done));
        let seen: Vec<_> = j
            .chunks
            .iter()
            .map(|c| (c.chunk, c.attempt, c.node.as_str(), c.state, c.reissue, c.finished_unix_ms.map(|f| f - base)))
            .collect();
        assert_eq!(
            seen,
            [
                (0, a0, "a", ChunkState::Done, false, Some(1000)),
                (1, b1, "b", ChunkState::Done, false, Some(1200)),
                (2, a2, "a", ChunkState::Superseded, false, Some(3200)),
                (2, b2, "b", ChunkState::Done, true, Some(3200)),
            ]
        );
        assert_eq!((j.chunks[0].bytes, j.chunks[0].start, j.chunks[0].end), (a0_bytes as u64, 0.0, 3.0));
        assert_eq!(j.chunks[2].started_unix_ms - base, 1000);

        // A second job: a's attempt fails, the rest is cancelled with the job.
        let job2 = reg.place_split(split_request(plan(9.0)), "cap2".into(), shim.clone(), at(4000), 0).unwrap();
        // Which chunk each node got depends on their measured speeds.
        let (a0, _b) = (runs(0)[0], runs(1)[0]);
        let failed = AttemptEnd::Exited(RemoteExit { code: Some(1), signal: None });
        assert!(reg.attempt_ended(a0, ids[0], failed, at(4500)));
        assert!(reg.abandon_split(job2, Outcome::Cancelled, at(5000)));
        let doc = reg.status(at(5000), 0);
        let j = &doc.jobs[0];
        assert_eq!((j.id, j.state), (job2, JobState::Cancelled));
        let (failed, rest): (Vec<_>, Vec<_>) = j.chunks.iter().partition(|c| c.attempt == a0);
        assert_eq!(failed[0].state, ChunkState::Failed);
        assert_eq!(failed[0].error.as_deref(), Some("ffmpeg exited with code 1"));
        assert!(!rest.is_empty());
        assert!(rest.iter().all(|c| c.state == ChunkState::Cancelled && c.finished_unix_ms == Some(1000)));
        assert!(doc.jobs[1].chunks.len() == 4, "the first job keeps its records");

        let m = reg.metrics().render(&doc, &reg.known_nodes());
        for (series, v) in [
            ("ffcluster_jobs_total{mode=\"split\",result=\"ok\"} ", 1),
            ("ffcluster_jobs_total{mode=\"split\",result=\"cancelled\"} ", 1),
            ("ffcluster_chunk_attempts_total{result=\"done\"} ", 3),
            ("ffcluster_chunk_attempts_total{result=\"superseded\"} ", 1),
            ("ffcluster_chunk_attempts_total{result=\"failed\"} ", 1),
            ("ffcluster_chunk_reissues_total ", 1),
            ("ffcluster_relay_output_bytes_total{mode=\"split\"} ", relayed),
            ("ffcluster_first_chunk_seconds_count ", 1),
        ] {
            assert!(m.contains(&format!("{series}{v}\n")), "{series}{v} in\n{m}");
        }
        assert!(m.contains("ffcluster_chunk_attempts_total{result=\"cancelled\"} "), "{m}");
    }

    #[test]
    fn capabilities_are_long_and_distinct() {
        let a = new_capability().unwrap();
        let b = new_capability().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
