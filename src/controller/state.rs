//! The registry: connected nodes, running jobs, recently finished jobs and the
//! input capabilities. One lock guards it; nothing awaits while holding it, which
//! is why everything queued from here is a control message (see `outbox`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::outbox::Outbox;
use super::scheduler::{self, Candidate};
use super::shim_link::ShimConn;
use super::status::{JobMode, JobState, JobStatus, NodeState, NodeStatus, Status};
use crate::ffmpeg::cmdline::shell_join;
use crate::protocol::{
    Capabilities, FileOffer, JobId, JobRequest, JobSpec, PROTOCOL_VERSION, RemoteExit, ToNode, ToShim,
};

/// Finished jobs kept for the status document.
const FINISHED_KEPT: usize = 100;

pub(crate) struct Registry {
    /// Time zero for `last_seen` stamps.
    epoch: Instant,
    next_node: u64,
    next_job: JobId,
    nodes: BTreeMap<u64, Node>,
    running: BTreeMap<JobId, RunningJob>,
    /// Newest first.
    finished: VecDeque<FinishedJob>,
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
    jobs: BTreeSet<JobId>,
    outbox: Outbox<ToNode>,
}

struct RunningJob {
    node: u64,
    node_name: String,
    args: Vec<String>,
    reason: String,
    files: Vec<FileOffer>,
    access: String,
    started_unix_ms: u64,
    started: Instant,
    shim: Arc<ShimConn>,
}

struct FinishedJob {
    id: JobId,
    node_name: String,
    args: String,
    reason: String,
    started_unix_ms: u64,
    duration: Duration,
    state: JobState,
    exit_code: Option<i32>,
    error: Option<String>,
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

/// A file the input relay may serve.
#[derive(Debug)]
pub(crate) struct Servable {
    pub job: JobId,
    pub size: u64,
    pub shim: Arc<ShimConn>,
}

impl Registry {
    pub(crate) fn new(epoch: Instant) -> Registry {
        Registry {
            epoch,
            next_node: 1,
            next_job: 1,
            nodes: BTreeMap::new(),
            running: BTreeMap::new(),
            finished: VecDeque::new(),
        }
    }

    /// Milliseconds since the epoch, the unit of `last_seen`.
    pub(crate) fn stamp(epoch: Instant, now: Instant) -> u64 {
        millis(now.saturating_duration_since(epoch))
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Registers a node; returns its id and the cell its link refreshes on every message.
    pub(crate) fn add_node(&mut self, info: NodeInfo, outbox: Outbox<ToNode>, now: Instant) -> (u64, Arc<AtomicU64>) {
        let id = self.next_node;
        self.next_node += 1;
        let last_seen = Arc::new(AtomicU64::new(Self::stamp(self.epoch, now)));
        self.nodes
            .insert(id, Node { info, connected: now, last_seen: last_seen.clone(), jobs: BTreeSet::new(), outbox });
        (id, last_seen)
    }

    /// Unregisters a node and fails every job it was running with `reason`.
    pub(crate) fn remove_node(&mut self, id: u64, reason: &str, now: Instant) -> Vec<Ended> {
        let Some(node) = self.nodes.remove(&id) else { return Vec::new() };
        node.jobs.iter().filter_map(|job| self.finish(*job, None, Outcome::Failed(reason.to_owned()), now)).collect()
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
        let candidates: Vec<Candidate<'_>> = self
            .nodes
            .iter()
            .map(|(id, n)| Candidate {
                id: *id,
                name: &n.info.name,
                slots: n.info.slots,
                running: count(n.jobs.len()),
                caps: &n.info.caps,
            })
            .collect();
        let node_id = scheduler::choose(&candidates, &request.needs)?;
        let node = self.nodes.get_mut(&node_id).expect("the scheduler picks a registered node");
        let job = self.next_job;
        self.next_job += 1;
        node.jobs.insert(job);
        let node_name = node.info.name.clone();
        shim.out.json(ToShim::Accepted { job, node: node_name.clone() });
        let spec = JobSpec { args: request.args.clone(), cwd: request.cwd, files: request.files.clone(), access };
        node.outbox.json(ToNode::Run { job, spec: spec.clone() });
        self.running.insert(
            job,
            RunningJob {
                node: node_id,
                node_name: node_name.clone(),
                args: request.args,
                reason: request.reason,
                files: request.files,
                access: spec.access,
                started_unix_ms: now_unix_ms,
                started: now,
                shim,
            },
        );
        Ok(Placed { job, node_name, node: node.outbox.clone() })
    }

    /// The shim of a running job, if node `node` runs it: a node never reaches
    /// another node's job.
    pub(crate) fn shim_of(&self, job: JobId, node: u64) -> Option<Arc<ShimConn>> {
        self.running.get(&job).filter(|j| j.node == node).map(|j| j.shim.clone())
    }

    /// Ends a running job. With `node`, only when that node runs it. Returns None
    /// when the job was not running (already ended, or another node's).
    pub(crate) fn finish(&mut self, job: JobId, node: Option<u64>, outcome: Outcome, now: Instant) -> Option<Ended> {
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
        self.finished.push_front(FinishedJob {
            id: job,
            node_name: run.node_name,
            args: shell_join(&run.args).to_string(),
            reason: run.reason,
            started_unix_ms: run.started_unix_ms,
            duration: now.saturating_duration_since(run.started),
            state,
            exit_code,
            error,
        });
        self.finished.truncate(FINISHED_KEPT);
        Some(Ended { shim: run.shim, node: node_outbox })
    }

    /// Jobs a node reports running that it was not given or that have ended:
    /// it should kill them.
    pub(crate) fn strays(&self, node: u64, reported: &[JobId]) -> Vec<JobId> {
        let mine = self.nodes.get(&node).map(|n| &n.jobs);
        reported.iter().copied().filter(|j| !mine.is_some_and(|m| m.contains(j))).collect()
    }

    /// The file `file` of the running job holding capability `access`.
    pub(crate) fn servable(&self, access: &str, file: u32) -> Option<Servable> {
        // Compare every capability in constant time rather than hashing: a lookup
        // whose timing depends on the secret would leak it.
        let mut found = None;
        for (id, job) in &self.running {
            if crate::protocol::secret_eq(job.access.as_bytes(), access.as_bytes()) {
                found = Some((*id, job));
            }
        }
        let (job, run) = found?;
        let offer = run.files.iter().find(|f| f.id == file)?;
        Some(Servable { job, size: offer.size, shim: run.shim.clone() })
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
                    state: if running >= n.info.slots { NodeState::Busy } else { NodeState::Ready },
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
            state: JobState::Running,
            node: Some(j.node_name.clone()),
            args: shell_join(&j.args).to_string(),
            reason: j.reason.clone(),
            started_unix_ms: j.started_unix_ms,
            duration_ms: millis(now.saturating_duration_since(j.started)),
            exit_code: None,
            error: None,
        });
        let finished = self.finished.iter().map(|j| JobStatus {
            id: j.id,
            mode: JobMode::Whole,
            state: j.state,
            node: Some(j.node_name.clone()),
            args: j.args.clone(),
            reason: j.reason.clone(),
            started_unix_ms: j.started_unix_ms,
            duration_ms: millis(j.duration),
            exit_code: j.exit_code,
            error: j.error.clone(),
        });
        let mut jobs: Vec<JobStatus> = running.chain(finished).collect();
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

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        }
    }

    fn offer(id: u32, size: u64) -> FileOffer {
        FileOffer { id, reference: "in put.mkv".into(), entry: None, size }
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
    fn capabilities_are_long_and_distinct() {
        let a = new_capability().unwrap();
        let b = new_capability().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
