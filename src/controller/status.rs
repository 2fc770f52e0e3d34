//! The status document served at [`STATUS_PATH`](crate::protocol::STATUS_PATH)
//! and read back by `ffcluster status`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::priority::Priority;
use crate::protocol::{Capabilities, JobId, Why};

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The controller's version.
    pub version: String,
    /// The wire protocol version it speaks.
    #[serde(default)]
    pub protocol: u32,
    pub uptime_ms: u64,
    /// The controller's clock when the document was made (for `started_unix_ms`).
    #[serde(default)]
    pub now_unix_ms: u64,
    /// Connected nodes, oldest connection first.
    pub nodes: Vec<NodeStatus>,
    /// Running jobs and the last 100 finished ones, newest first.
    pub jobs: Vec<JobStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Controller-assigned, for this connection.
    pub id: u64,
    pub name: String,
    pub state: NodeState,
    pub slots: u32,
    pub running: u32,
    /// Frames per second of the standard encode (see [`Capabilities::speed`]).
    pub speed: f64,
    pub cpus: u32,
    pub ffmpeg_version: String,
    /// The agent's self-description from its `Hello`.
    #[serde(default)]
    pub agent: String,
    /// Where the node connected from.
    pub address: String,
    /// How long it has been connected.
    pub connected_ms: u64,
    pub last_seen_ms_ago: u64,
    pub caps: Capabilities,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Has a free slot.
    Ready,
    /// Every slot is taken.
    Busy,
    /// An admin drained it (`ffcluster drain`): it gets no new work, and what
    /// it runs finishes.
    Draining,
    /// A chunk it sent failed verification: it gets no new work for
    /// [`QUARANTINE`](crate::controller::state::QUARANTINE).
    Quarantined,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: JobId,
    pub mode: JobMode,
    /// How urgently it wants nodes (`interactive`, `streaming`, `batch`).
    #[serde(default)]
    pub priority: Priority,
    pub state: JobState,
    /// The name of the node it runs or ran on.
    pub node: Option<String>,
    /// The ffmpeg arguments, shell-quoted.
    pub args: String,
    /// The shim's reason code for offloading.
    pub reason: String,
    /// Why it did not run as that reason says: not split, resumed, fell back.
    #[serde(flatten)]
    pub why: Reasons,
    pub started_unix_ms: u64,
    /// Run time so far for a running job, total otherwise.
    pub duration_ms: u64,
    /// ffmpeg's exit status, when it exited.
    pub exit_code: Option<i32>,
    /// Why it failed (or how ffmpeg died).
    pub error: Option<String>,
    /// Split jobs: chunks finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_done: Option<u32>,
    /// Split jobs: chunks with an attempt running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_running: Option<u32>,
    /// Split jobs: chunks planned so far (chunks are planned as nodes take them,
    /// so this grows until the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_planned: Option<u32>,
    /// Split jobs: the nodes that ran its chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// Split jobs: chunks given a second attempt because the first was late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reissued: Option<u32>,
    /// Split jobs: chunk attempts stopped to give their node to more urgent
    /// work (they ran again later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted: Option<u32>,
    /// Live split jobs: how long the oldest piece not yet encoded has waited
    /// since it was cut, what the cluster adds to the stream's latency now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_lag_ms: Option<u64>,
    /// Running jobs: how much of the content is done, the speed so far and the
    /// time left (split jobs from their chunks, whole ones from ffmpeg's
    /// progress lines; live jobs have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<super::progress::Estimate>,
    /// Split jobs: every chunk attempt, in the order they started. Present for
    /// running split jobs and the most recent finished ones (see
    /// `CHUNK_HISTORY_JOBS` in the registry): a long film has hundreds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRecord>,
}

/// Why a job ran the way it did beyond the shim's offload reason, each a
/// stable code and its detail (contrib/docs/how-it-works.md, "Why a job was not split").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reasons {
    /// The classifier would split it, but it ran whole (`nosplit.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_split: Option<Why>,
    /// It resumes a job the cluster lost after publishing output (`resumed.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Why>,
    /// It failed on the cluster before anything was visible, and the shim ran
    /// it locally instead (`fallback.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Why>,
}

impl Reasons {
    /// Each present reason with what it means: `("not split", why)`, …
    pub fn each(&self) -> impl Iterator<Item = (&'static str, &Why)> {
        [("not split", &self.not_split), ("resumed", &self.resumed), ("fell back", &self.fallback)]
            .into_iter()
            .filter_map(|(what, w)| Some((what, w.as_ref()?)))
    }
}

/// One attempt of one chunk of a split job: which node encoded which part of
/// the timeline, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// The chunk's index in the job (timeline order).
    pub chunk: u32,
    /// The attempt's node job id.
    pub attempt: JobId,
    /// Media time of the chunk, seconds on the input's timeline: `[start, end)`.
    pub start: f64,
    pub end: f64,
    pub node: String,
    pub state: ChunkState,
    /// A second attempt started because the first ran late.
    #[serde(default)]
    pub reissue: bool,
    pub started_unix_ms: u64,
    /// When it ended; None while it runs.
    pub finished_unix_ms: Option<u64>,
    /// Encoded bytes relayed to the shim.
    pub bytes: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkState {
    Running,
    /// Its result is the chunk's.
    Done,
    /// ffmpeg failed, the node refused or was lost: the chunk runs again.
    Failed,
    /// Another attempt of the same chunk finished first.
    Superseded,
    /// The job ended (its shim went away, or another chunk failed for good).
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    /// The whole command line on one node.
    Whole,
    /// Cut into chunks encoded on several nodes and joined by the shim.
    Split,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    /// ffmpeg exited, whatever its exit code.
    Done,
    /// The cluster lost it (node lost, refused).
    Failed,
    /// Its shim went away before it finished.
    Cancelled,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Busy => "busy",
            NodeState::Draining => "draining",
            NodeState::Quarantined => "quarantined",
        }
    }
}

impl JobMode {
    pub fn as_str(self) -> &'static str {
        match self {
            JobMode::Whole => "whole",
            JobMode::Split => "split",
        }
    }
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// The wire names, for text output.
macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
impl ChunkState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkState::Running => "running",
            ChunkState::Done => "done",
            ChunkState::Failed => "failed",
            ChunkState::Superseded => "superseded",
            ChunkState::Cancelled => "cancelled",
        }
    }
}

display_as_str!(NodeState, JobMode, JobState, ChunkState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        let j = JobStatus {
            id: 3,
            mode: JobMode::Whole,
            priority: Priority::Interactive,
            state: JobState::Cancelled,
            node: Some("n".into()),
            args: "-i a b".into(),
            reason: "split.hls".into(),
            why: Reasons::default(),
            started_unix_ms: 1,
            duration_ms: 2,
            exit_code: None,
            error: None,
            chunks_done: None,
            chunks_running: None,
            chunks_planned: None,
            nodes: None,
            reissued: None,
            preempted: None,
            live_lag_ms: None,
            progress: None,
            chunks: Vec::new(),
        };
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["mode"], "whole");
        assert_eq!(v["state"], "cancelled");
        assert!(v.get("chunks_done").is_none(), "split fields are left out of whole jobs: {v}");
        assert!(v.get("not_split").is_none() && v.get("resumed").is_none() && v.get("fallback").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<JobStatus>(v).unwrap(), j);
        let whole = JobStatus {
            why: Reasons {
                not_split: Some(Why::new("nosplit.option", "option -t is not supported when splitting")),
                resumed: None,
                fallback: Some(Why::new("fallback.exit", "ffmpeg exited with code 1 on the node")),
            },
            ..j.clone()
        };
        let v = serde_json::to_value(&whole).unwrap();
        assert_eq!(v["not_split"]["code"], "nosplit.option");
        assert_eq!(v["fallback"]["detail"], "ffmpeg exited with code 1 on the node");
        assert!(v.get("resumed").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<JobStatus>(v).unwrap(), whole);
        let listed: Vec<(&str, &str)> = whole.why.each().map(|(what, w)| (what, w.code.as_str())).collect();
        assert_eq!(listed, [("not split", "nosplit.option"), ("fell back", "fallback.exit")]);
        let split = JobStatus {
            mode: JobMode::Split,
            node: None,
            chunks_done: Some(5),
            chunks_running: Some(2),
            chunks_planned: Some(9),
            nodes: Some(vec!["a".into(), "b".into()]),
            reissued: Some(1),
            preempted: None,
            live_lag_ms: None,
            progress: None,
            chunks: vec![ChunkRecord {
                chunk: 0,
                attempt: 4,
                start: 0.0,
                end: 3.0,
                node: "a".into(),
                state: ChunkState::Superseded,
                reissue: false,
                started_unix_ms: 10,
                finished_unix_ms: Some(20),
                bytes: 7,
                error: None,
            }],
            ..j
        };
        let v = serde_json::to_value(&split).unwrap();
        assert_eq!((&v["mode"], &v["chunks_done"], &v["nodes"][1]), (&"split".into(), &5.into(), &"b".into()));
        assert_eq!((&v["chunks"][0]["state"], &v["chunks"][0]["node"]), (&"superseded".into(), &"a".into()));
        assert!(v["chunks"][0].get("error").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<JobStatus>(v).unwrap(), split);
        for s in [NodeState::Ready, NodeState::Busy, NodeState::Draining] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.to_string());
        }
        for s in
            [ChunkState::Running, ChunkState::Done, ChunkState::Failed, ChunkState::Superseded, ChunkState::Cancelled]
        {
            assert_eq!(serde_json::to_value(s).unwrap(), s.to_string());
        }
        for s in [JobState::Running, JobState::Done, JobState::Failed, JobState::Cancelled] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.to_string());
        }
        for m in [JobMode::Whole, JobMode::Split] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.to_string());
        }
    }
}
