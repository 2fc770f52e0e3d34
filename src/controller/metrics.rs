//! `GET /metrics`: the controller's counters in the OpenMetrics text format,
//! through `prometheus-client`, the Prometheus project's Rust client, which
//! owns the format (escaping, `_total`, histogram buckets, `# EOF`) so that we
//! only say what is counted.
//!
//! Counters and histograms live in [`Metrics`] and are bumped as things
//! happen; gauges (nodes, running jobs) are read from the status document when
//! scraped, so they can never drift from what `status` shows.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use super::status::{ChunkState, JobMode, JobState, NodeState, NodeStatus, Reasons, Status};
use crate::priority::Priority;

/// What `GET /metrics` answers with: OpenMetrics 1.0, which the crate writes
/// and Prometheus asks for first.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the time-to-first-output histograms: from a fast
/// local cluster (a fraction of a second) to one that makes Jellyfin's player
/// give up (a minute).
const BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0];

/// A series' labels, in the order they are written.
type Labels = Vec<(&'static str, String)>;

/// How a job ended, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobResult {
    /// ffmpeg exited 0.
    Ok,
    /// ffmpeg exited non-zero or was killed: the job's own failure.
    ExitError,
    /// The cluster lost it (node lost or refused, a chunk failed for good).
    Failed,
    /// Its shim went away first.
    Cancelled,
}

impl JobResult {
    const ALL: [JobResult; 4] = [JobResult::Ok, JobResult::ExitError, JobResult::Failed, JobResult::Cancelled];

    pub(crate) fn of(state: JobState, exit_code: Option<i32>) -> JobResult {
        match state {
            JobState::Done if exit_code == Some(0) => JobResult::Ok,
            JobState::Done | JobState::Running => JobResult::ExitError,
            JobState::Failed => JobResult::Failed,
            JobState::Cancelled => JobResult::Cancelled,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            JobResult::Ok => "ok",
            JobResult::ExitError => "exit_error",
            JobResult::Failed => "failed",
            JobResult::Cancelled => "cancelled",
        }
    }
}

const MODES: [JobMode; 2] = [JobMode::Whole, JobMode::Split];
const CHUNK_ENDS: [ChunkState; 4] =
    [ChunkState::Done, ChunkState::Failed, ChunkState::Superseded, ChunkState::Cancelled];

fn mode(m: JobMode) -> Labels {
    vec![("mode", m.to_string())]
}

/// Counters by a reason code the shim sends (`nosplit.*`, `resumed.*`,
/// `fallback.*`). The codes come from the wire, so a code that is not a plain
/// dotted name, and any code past the first [`CODES_KEPT`], count as `other`:
/// a shim cannot grow the exposition without bound.
#[derive(Debug, Default)]
pub(crate) struct ByCode {
    counts: Family<Labels, Counter>,
    kept: Mutex<BTreeSet<String>>,
}

/// Distinct codes one [`ByCode`] keeps apart.
const CODES_KEPT: usize = 64;

impl ByCode {
    fn add(&self, code: &str) {
        let plain = !code.is_empty()
            && code.len() <= 64
            && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let key = if plain && (kept.contains(code) || kept.len() < CODES_KEPT) { code } else { "other" };
        kept.insert(key.to_owned());
        self.counts.get_or_create(&vec![("reason", key.to_owned())]).inc();
    }
}

/// The controller's counters since it started.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// By mode and result.
    jobs: Family<Labels, Counter>,
    /// Submissions refused (no capable node, unusable plan): the shim runs them
    /// locally.
    rejected: Family<Labels, Counter>,
    /// Ended chunk attempts by result.
    chunk_attempts: Family<Labels, Counter>,
    reissues: Counter,
    /// Chunk attempts stopped to give their node to more urgent work, by the
    /// priority they made room for.
    preemptions: Family<Labels, Counter>,
    /// Input bytes served to nodes through the relay.
    input_bytes: Counter,
    /// Encoded bytes relayed from nodes to shims, by mode.
    output_bytes: Family<Labels, Counter>,
    /// Whole jobs: shim connection to the first output bytes relayed.
    first_output: Histogram,
    /// Split jobs: submission to the first chunk finished.
    first_chunk: Histogram,
    /// Accepted jobs the classifier would split that run whole, by why.
    not_split: ByCode,
    /// Accepted runs that resume a lost job, by why it was lost.
    resumed: ByCode,
    /// Accepted jobs the shim ran locally after all, by why.
    fallback: ByCode,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            jobs: Family::default(),
            rejected: Family::default(),
            chunk_attempts: Family::default(),
            reissues: Counter::default(),
            preemptions: Family::default(),
            input_bytes: Counter::default(),
            output_bytes: Family::default(),
            first_output: Histogram::new(BUCKETS),
            first_chunk: Histogram::new(BUCKETS),
            not_split: ByCode::default(),
            resumed: ByCode::default(),
            fallback: ByCode::default(),
        };
        // Every mode and result reads 0 before its first event, as a scrape
        // that compares two readings expects.
        for m_ in MODES {
            for r in JobResult::ALL {
                let _ = m.jobs.get_or_create(&[mode(m_), vec![("result", r.as_str().to_owned())]].concat());
            }
            let _ = m.rejected.get_or_create(&mode(m_));
            let _ = m.output_bytes.get_or_create(&mode(m_));
        }
        for p in [Priority::Interactive, Priority::Streaming] {
            let _ = m.preemptions.get_or_create(&vec![("priority", p.to_string())]);
        }
        for s in CHUNK_ENDS {
            let _ = m.chunk_attempts.get_or_create(&vec![("result", s.to_string())]);
        }
        m
    }
}

impl Metrics {
    pub(crate) fn job_ended(&self, m: JobMode, result: JobResult) {
        self.jobs.get_or_create(&[mode(m), vec![("result", result.as_str().to_owned())]].concat()).inc();
    }

    /// A job was accepted: counts why it was not split, or why it resumes.
    pub(crate) fn accepted(&self, why: &Reasons) {
        if let Some(w) = &why.not_split {
            self.not_split.add(&w.code);
        }
        if let Some(w) = &why.resumed {
            self.resumed.add(&w.code);
        }
    }

    pub(crate) fn fell_back(&self, code: &str) {
        self.fallback.add(code);
    }

    pub(crate) fn rejected(&self, m: JobMode) {
        self.rejected.get_or_create(&mode(m)).inc();
    }

    pub(crate) fn chunk_ended(&self, state: ChunkState) {
        if CHUNK_ENDS.contains(&state) {
            self.chunk_attempts.get_or_create(&vec![("result", state.to_string())]).inc();
        }
    }

    pub(crate) fn reissued(&self) {
        self.reissues.inc();
    }

    /// A chunk attempt was stopped for work of priority `p`.
    pub(crate) fn preempted(&self, p: Priority) {
        self.preemptions.get_or_create(&vec![("priority", p.to_string())]).inc();
    }

    pub(crate) fn input_bytes(&self, n: usize) {
        self.input_bytes.inc_by(n as u64);
    }

    pub(crate) fn output_bytes(&self, m: JobMode, n: usize) {
        self.output_bytes.get_or_create(&mode(m)).inc_by(n as u64);
    }

    /// The first output of a whole job, `after` its shim connected; `seen` is
    /// the job's own flag, so that only the first counts.
    pub(crate) fn first_output(&self, seen: &AtomicBool, after: Duration) {
        if !seen.swap(true, Ordering::Relaxed) {
            self.first_output.observe(after.as_secs_f64());
        }
    }

    pub(crate) fn first_chunk(&self, after: Duration) {
        self.first_chunk.observe(after.as_secs_f64());
    }

    /// The exposition: these counters, and gauges from `status`. `known` are
    /// names of nodes seen since start, so that a node that went away reads
    /// `ffcluster_node_connected 0` instead of vanishing. A registry per
    /// scrape: the counters are shared handles, the gauges are made here.
    pub(crate) fn render(&self, status: &Status, known: &[String]) -> String {
        let mut r = Registry::default();
        let build = vec![("version", status.version.clone()), ("protocol", status.protocol.to_string())];
        reg(&mut r, "ffcluster_build_info", "The controller's version (always 1).", gauges([(build, 1)]));
        let uptime = Gauge::<f64, AtomicU64>::default();
        uptime.set(status.uptime_ms as f64 / 1000.0);
        reg(&mut r, "ffcluster_uptime_seconds", "Seconds since the controller started.", uptime);

        reg(&mut r, "ffcluster_jobs_total", "Jobs that ended, by mode and result.", self.jobs.clone());
        let running = |m| status.jobs.iter().filter(|j| j.mode == m && j.state == JobState::Running).count();
        let running = gauges(MODES.map(|m| (mode(m), running(m) as i64)));
        reg(&mut r, "ffcluster_jobs_running", "Jobs running now, by mode.", running);
        reg(
            &mut r,
            "ffcluster_jobs_rejected_total",
            "Submissions the controller refused (no capable node, bad plan): the shim ran them locally.",
            self.rejected.clone(),
        );
        reg(
            &mut r,
            "ffcluster_jobs_not_split_total",
            "Accepted jobs the shim would split that run whole, by reason code (nosplit.*).",
            self.not_split.counts.clone(),
        );
        reg(
            &mut r,
            "ffcluster_jobs_resumed_total",
            "Accepted runs that resume a job the cluster lost, by reason code (resumed.*).",
            self.resumed.counts.clone(),
        );
        reg(
            &mut r,
            "ffcluster_jobs_fallback_total",
            "Accepted jobs the shim ran locally after all, by reason code (fallback.*).",
            self.fallback.counts.clone(),
        );

        reg(
            &mut r,
            "ffcluster_chunk_attempts_total",
            "Ended chunk attempts of split jobs, by result.",
            self.chunk_attempts.clone(),
        );
        let chunks_running =
            status.jobs.iter().flat_map(|j| &j.chunks).filter(|c| c.state == ChunkState::Running).count();
        let chunks = Gauge::<i64>::default();
        chunks.set(chunks_running as i64);
        reg(&mut r, "ffcluster_chunks_running", "Chunk attempts running now.", chunks);
        reg(&mut r, "ffcluster_chunk_reissues_total", "Late chunks given a second attempt.", self.reissues.clone());
        reg(
            &mut r,
            "ffcluster_chunk_preemptions_total",
            "Chunk attempts stopped to give their node to more urgent work, by the priority it was for.",
            self.preemptions.clone(),
        );

        reg(&mut r, "ffcluster_relay_input_bytes_total", "Input file bytes served to nodes.", self.input_bytes.clone());
        reg(
            &mut r,
            "ffcluster_relay_output_bytes_total",
            "Output bytes relayed from nodes to shims.",
            self.output_bytes.clone(),
        );

        reg(
            &mut r,
            "ffcluster_first_output_seconds",
            "Whole jobs: from the shim's connection to the first output bytes relayed.",
            self.first_output.clone(),
        );
        reg(
            &mut r,
            "ffcluster_first_chunk_seconds",
            "Split jobs: from submission to the first chunk finished.",
            self.first_chunk.clone(),
        );

        let nodes = Gauge::<i64>::default();
        nodes.set(status.nodes.len() as i64);
        reg(&mut r, "ffcluster_nodes", "Connected nodes.", nodes);
        let connected = known.iter().map(|name| {
            let up = status.nodes.iter().any(|n| &n.name == name);
            (node(name), i64::from(up))
        });
        reg(
            &mut r,
            "ffcluster_node_connected",
            "1 while the node is connected, 0 after it went away.",
            gauges(connected),
        );
        let per_node = |f: fn(&NodeStatus) -> i64| gauges(status.nodes.iter().map(|n| (node(&n.name), f(n))));
        reg(&mut r, "ffcluster_node_running", "Jobs and chunk attempts the node runs.", per_node(|n| n.running.into()));
        reg(&mut r, "ffcluster_node_slots", "Jobs the node runs at once.", per_node(|n| n.slots.into()));
        let speed = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let seen = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for n in &status.nodes {
            speed.get_or_create(&node(&n.name)).set(n.speed);
            seen.get_or_create(&node(&n.name)).set(n.last_seen_ms_ago as f64 / 1000.0);
        }
        reg(&mut r, "ffcluster_node_speed", "The node's benchmark score (frames per second).", speed);
        let draining = per_node(|n| i64::from(n.state == NodeState::Draining));
        reg(&mut r, "ffcluster_node_draining", "1 when drained: no new work.", draining);
        reg(&mut r, "ffcluster_node_last_seen_seconds", "Seconds since the node's last message.", seen);

        let mut o = String::new();
        encode(&mut o, &r).expect("writing to a String cannot fail");
        o
    }
}

fn node(name: &str) -> Labels {
    vec![("node", name.to_owned())]
}

/// A gauge family with these values.
fn gauges(values: impl IntoIterator<Item = (Labels, i64)>) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).set(v);
    }
    family
}

/// Registers `metric` as `name` with `help` as the docs write it. The crate adds
/// `_total` to a counter's samples and a full stop to the help text itself.
fn reg(r: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    let name = name.strip_suffix("_total").unwrap_or(name);
    r.register(name, help.strip_suffix('.').unwrap_or(help), Declared(metric));
}

/// A metric whose `# HELP` and `# TYPE` are written even before its first
/// series (no reason code counted yet, no node connected): the crate leaves
/// an empty family out, and a scrape would not show that the series exists.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: Metric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::status::NodeStatus;

    fn value<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn exposition() {
        let m = Metrics::default();
        m.job_ended(JobMode::Split, JobResult::Ok);
        m.job_ended(JobMode::Split, JobResult::Ok);
        m.job_ended(JobMode::Whole, JobResult::of(JobState::Done, Some(1)));
        m.rejected(JobMode::Whole);
        m.chunk_ended(ChunkState::Done);
        m.chunk_ended(ChunkState::Superseded);
        m.chunk_ended(ChunkState::Running);
        m.input_bytes(1000);
        m.output_bytes(JobMode::Split, 7);
        let seen = AtomicBool::new(false);
        m.first_output(&seen, Duration::from_millis(700));
        m.first_output(&seen, Duration::from_secs(100));
        m.first_chunk(Duration::from_secs(100));
        let not_split =
            |code: &str| Reasons { not_split: Some(crate::protocol::Why::new(code, "detail")), ..Reasons::default() };
        m.accepted(&not_split("nosplit.map"));
        m.accepted(&not_split("nosplit.map"));
        m.accepted(&not_split("nosplit.too_short"));
        m.accepted(&not_split("Bad\"code"));
        m.accepted(&Reasons::default());
        m.fell_back("fallback.exit");
        let status = Status {
            version: "0.1.0".into(),
            protocol: 1,
            uptime_ms: 1500,
            now_unix_ms: 0,
            nodes: vec![NodeStatus {
                id: 1,
                name: "a \"quoted\" box".into(),
                state: NodeState::Draining,
                slots: 2,
                running: 1,
                speed: 250.5,
                cpus: 4,
                ffmpeg_version: String::new(),
                agent: String::new(),
                address: String::new(),
                connected_ms: 0,
                last_seen_ms_ago: 250,
                caps: Default::default(),
            }],
            jobs: Vec::new(),
        };
        let t = m.render(&status, &["a \"quoted\" box".into(), "gone".into()]);
        assert_eq!(value(&t, "ffcluster_jobs_total{mode=\"split\",result=\"ok\"}"), "2");
        assert_eq!(value(&t, "ffcluster_jobs_total{mode=\"whole\",result=\"exit_error\"}"), "1");
        assert_eq!(value(&t, "ffcluster_jobs_total{mode=\"whole\",result=\"ok\"}"), "0");
        assert_eq!(value(&t, "ffcluster_jobs_rejected_total{mode=\"whole\"}"), "1");
        assert_eq!(value(&t, "ffcluster_chunk_attempts_total{result=\"done\"}"), "1");
        assert_eq!(value(&t, "ffcluster_chunk_attempts_total{result=\"superseded\"}"), "1");
        assert_eq!(value(&t, "ffcluster_relay_input_bytes_total"), "1000");
        assert_eq!(value(&t, "ffcluster_relay_output_bytes_total{mode=\"split\"}"), "7");
        // Only the first output counts; buckets are cumulative.
        assert_eq!(value(&t, "ffcluster_first_output_seconds_bucket{le=\"0.5\"}"), "0");
        assert_eq!(value(&t, "ffcluster_first_output_seconds_bucket{le=\"1.0\"}"), "1");
        assert_eq!(value(&t, "ffcluster_first_output_seconds_bucket{le=\"+Inf\"}"), "1");
        assert_eq!(value(&t, "ffcluster_first_output_seconds_count"), "1");
        assert_eq!(value(&t, "ffcluster_first_output_seconds_sum"), "0.7");
        assert_eq!(value(&t, "ffcluster_first_chunk_seconds_bucket{le=\"60.0\"}"), "0");
        assert_eq!(value(&t, "ffcluster_first_chunk_seconds_bucket{le=\"+Inf\"}"), "1");
        assert_eq!(value(&t, "ffcluster_node_connected{node=\"a \\\"quoted\\\" box\"}"), "1");
        assert_eq!(value(&t, "ffcluster_node_connected{node=\"gone\"}"), "0");
        assert_eq!(value(&t, "ffcluster_node_draining{node=\"a \\\"quoted\\\" box\"}"), "1");
        assert_eq!(value(&t, "ffcluster_node_speed{node=\"a \\\"quoted\\\" box\"}"), "250.5");
        assert_eq!(value(&t, "ffcluster_uptime_seconds"), "1.5");
        assert_eq!(value(&t, "ffcluster_jobs_not_split_total{reason=\"nosplit.map\"}"), "2");
        assert_eq!(value(&t, "ffcluster_jobs_not_split_total{reason=\"nosplit.too_short\"}"), "1");
        assert_eq!(value(&t, "ffcluster_jobs_not_split_total{reason=\"other\"}"), "1");
        assert_eq!(value(&t, "ffcluster_jobs_fallback_total{reason=\"fallback.exit\"}"), "1");
        // OpenMetrics names a counter's family without `_total`; its samples
        // carry it.
        assert!(t.contains("# TYPE ffcluster_jobs_resumed counter\n"), "{t}");
        assert!(t.contains("# HELP ffcluster_jobs Jobs that ended, by mode and result.\n"), "{t}");
        assert!(t.ends_with("\n# EOF\n"), "{t}");
        assert!(!t.contains("ffcluster_jobs_resumed_total{"), "nothing resumed yet: {t}");
        // Every sample line belongs to a declared family.
        let families: Vec<&str> = t.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family =
                ["_bucket", "_sum", "_count", "_total"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(families.contains(&name) || families.contains(&family), "undeclared {l}");
        }
    }
}
