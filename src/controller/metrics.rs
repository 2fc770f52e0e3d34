//! `GET /metrics`: the controller's counters in the Prometheus text format
//! (version 0.0.4), written by hand: a dozen series do not need a crate.
//!
//! Counters live in [`Metrics`], atomics that the links and the registry bump
//! as things happen; gauges (nodes, running jobs) are read from the status
//! document when scraped, so they can never drift from what `status` shows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::status::{ChunkState, JobMode, JobState, NodeState, Reasons, Status};

/// Upper bounds (seconds) of the time-to-first-output histograms: from a fast
/// local cluster (a fraction of a second) to one that makes Jellyfin's player
/// give up (a minute).
const BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0];

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

fn mode_index(m: JobMode) -> usize {
    match m {
        JobMode::Whole => 0,
        JobMode::Split => 1,
    }
}

/// Counters by a reason code the shim sends (`nosplit.*`, `resumed.*`,
/// `fallback.*`). The codes come from the wire, so a code that is not a plain
/// dotted name, and any code past the first [`CODES_KEPT`], count as `other`:
/// a shim cannot grow the exposition without bound.
#[derive(Debug, Default)]
pub(crate) struct ByCode(Mutex<BTreeMap<String, u64>>);

/// Distinct codes one [`ByCode`] keeps apart.
const CODES_KEPT: usize = 64;

impl ByCode {
    fn add(&self, code: &str) {
        let plain = !code.is_empty()
            && code.len() <= 64
            && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = if plain && (m.contains_key(code) || m.len() < CODES_KEPT) { code } else { "other" };
        *m.entry(key.to_owned()).or_default() += 1;
    }

    fn write(&self, out: &mut String, name: &str) {
        for (code, n) in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", escape(code));
        }
    }
}

/// A cumulative histogram of durations.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Per bucket (not cumulative), plus one for `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| s <= *b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = BUCKETS.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {total}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let bare = labels.trim_end_matches(',');
        let braces = if bare.is_empty() { String::new() } else { format!("{{{bare}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// The controller's counters since it started.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// `[mode][result]`.
    jobs: [[AtomicU64; 4]; 2],
    /// Submissions refused (no capable node, unusable plan): the shim runs them
    /// locally.
    rejected: [AtomicU64; 2],
    /// Ended chunk attempts by `CHUNK_ENDS`.
    chunk_attempts: [AtomicU64; 4],
    reissues: AtomicU64,
    /// Input bytes served to nodes through the relay.
    input_bytes: AtomicU64,
    /// Encoded bytes relayed from nodes to shims, by mode.
    output_bytes: [AtomicU64; 2],
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

impl Metrics {
    pub(crate) fn job_ended(&self, mode: JobMode, result: JobResult) {
        let r = JobResult::ALL.iter().position(|x| *x == result).unwrap_or(0);
        self.jobs[mode_index(mode)][r].fetch_add(1, Ordering::Relaxed);
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

    pub(crate) fn rejected(&self, mode: JobMode) {
        self.rejected[mode_index(mode)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn chunk_ended(&self, state: ChunkState) {
        if let Some(i) = CHUNK_ENDS.iter().position(|s| *s == state) {
            self.chunk_attempts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reissued(&self) {
        self.reissues.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn input_bytes(&self, n: usize) {
        self.input_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn output_bytes(&self, mode: JobMode, n: usize) {
        self.output_bytes[mode_index(mode)].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The first output of a whole job, `after` its shim connected; `seen` is
    /// the job's own flag, so that only the first counts.
    pub(crate) fn first_output(&self, seen: &AtomicBool, after: Duration) {
        if !seen.swap(true, Ordering::Relaxed) {
            self.first_output.observe(after);
        }
    }

    pub(crate) fn first_chunk(&self, after: Duration) {
        self.first_chunk.observe(after);
    }

    /// The exposition: these counters, and gauges from `status`. `known` are
    /// names of nodes seen since start, so that a node that went away reads
    /// `ffcluster_node_connected 0` instead of vanishing.
    pub(crate) fn render(&self, status: &Status, known: &[String]) -> String {
        let mut o = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        help(&mut o, "ffcluster_build_info", "gauge", "The controller's version (always 1).");
        let _ = writeln!(
            o,
            "ffcluster_build_info{{version=\"{}\",protocol=\"{}\"}} 1",
            escape(&status.version),
            status.protocol
        );
        help(&mut o, "ffcluster_uptime_seconds", "gauge", "Seconds since the controller started.");
        let _ = writeln!(o, "ffcluster_uptime_seconds {}", status.uptime_ms as f64 / 1000.0);

        help(&mut o, "ffcluster_jobs_total", "counter", "Jobs that ended, by mode and result.");
        for m in MODES {
            for (r, result) in JobResult::ALL.iter().enumerate() {
                let v = load(&self.jobs[mode_index(m)][r]);
                let _ = writeln!(o, "ffcluster_jobs_total{{mode=\"{m}\",result=\"{}\"}} {v}", result.as_str());
            }
        }
        help(&mut o, "ffcluster_jobs_running", "gauge", "Jobs running now, by mode.");
        for m in MODES {
            let n = status.jobs.iter().filter(|j| j.mode == m && j.state == JobState::Running).count();
            let _ = writeln!(o, "ffcluster_jobs_running{{mode=\"{m}\"}} {n}");
        }
        help(
            &mut o,
            "ffcluster_jobs_rejected_total",
            "counter",
            "Submissions the controller refused (no capable node, bad plan): the shim ran them locally.",
        );
        for m in MODES {
            let _ =
                writeln!(o, "ffcluster_jobs_rejected_total{{mode=\"{m}\"}} {}", load(&self.rejected[mode_index(m)]));
        }
        help(
            &mut o,
            "ffcluster_jobs_not_split_total",
            "counter",
            "Accepted jobs the shim would split that run whole, by reason code (nosplit.*).",
        );
        self.not_split.write(&mut o, "ffcluster_jobs_not_split_total");
        help(
            &mut o,
            "ffcluster_jobs_resumed_total",
            "counter",
            "Accepted runs that resume a job the cluster lost, by reason code (resumed.*).",
        );
        self.resumed.write(&mut o, "ffcluster_jobs_resumed_total");
        help(
            &mut o,
            "ffcluster_jobs_fallback_total",
            "counter",
            "Accepted jobs the shim ran locally after all, by reason code (fallback.*).",
        );
        self.fallback.write(&mut o, "ffcluster_jobs_fallback_total");

        help(&mut o, "ffcluster_chunk_attempts_total", "counter", "Ended chunk attempts of split jobs, by result.");
        for (i, s) in CHUNK_ENDS.iter().enumerate() {
            let _ = writeln!(o, "ffcluster_chunk_attempts_total{{result=\"{s}\"}} {}", load(&self.chunk_attempts[i]));
        }
        help(&mut o, "ffcluster_chunks_running", "gauge", "Chunk attempts running now.");
        let running: u64 =
            status.jobs.iter().flat_map(|j| &j.chunks).filter(|c| c.state == ChunkState::Running).count() as u64;
        let _ = writeln!(o, "ffcluster_chunks_running {running}");
        help(&mut o, "ffcluster_chunk_reissues_total", "counter", "Late chunks given a second attempt.");
        let _ = writeln!(o, "ffcluster_chunk_reissues_total {}", load(&self.reissues));

        help(&mut o, "ffcluster_relay_input_bytes_total", "counter", "Input file bytes served to nodes.");
        let _ = writeln!(o, "ffcluster_relay_input_bytes_total {}", load(&self.input_bytes));
        help(&mut o, "ffcluster_relay_output_bytes_total", "counter", "Output bytes relayed from nodes to shims.");
        for m in MODES {
            let v = load(&self.output_bytes[mode_index(m)]);
            let _ = writeln!(o, "ffcluster_relay_output_bytes_total{{mode=\"{m}\"}} {v}");
        }

        help(
            &mut o,
            "ffcluster_first_output_seconds",
            "histogram",
            "Whole jobs: from the shim's connection to the first output bytes relayed.",
        );
        self.first_output.write(&mut o, "ffcluster_first_output_seconds", "");
        help(
            &mut o,
            "ffcluster_first_chunk_seconds",
            "histogram",
            "Split jobs: from submission to the first chunk finished.",
        );
        self.first_chunk.write(&mut o, "ffcluster_first_chunk_seconds", "");

        help(&mut o, "ffcluster_nodes", "gauge", "Connected nodes.");
        let _ = writeln!(o, "ffcluster_nodes {}", status.nodes.len());
        help(&mut o, "ffcluster_node_connected", "gauge", "1 while the node is connected, 0 after it went away.");
        for name in known {
            let up = status.nodes.iter().any(|n| &n.name == name);
            let _ = writeln!(o, "ffcluster_node_connected{{node=\"{}\"}} {}", escape(name), u8::from(up));
        }
        type Gauge = fn(&super::status::NodeStatus) -> f64;
        let gauges: [(&str, &str, Gauge); 5] = [
            ("ffcluster_node_running", "Jobs and chunk attempts the node runs.", |n| f64::from(n.running)),
            ("ffcluster_node_slots", "Jobs the node runs at once.", |n| f64::from(n.slots)),
            ("ffcluster_node_speed", "The node's benchmark score (frames per second).", |n| n.speed),
            ("ffcluster_node_draining", "1 when drained: no new work.", |n| {
                f64::from(u8::from(n.state == NodeState::Draining))
            }),
            ("ffcluster_node_last_seen_seconds", "Seconds since the node's last message.", |n| {
                n.last_seen_ms_ago as f64 / 1000.0
            }),
        ];
        for (name, what, get) in gauges {
            help(&mut o, name, "gauge", what);
            for n in &status.nodes {
                let _ = writeln!(o, "{name}{{node=\"{}\"}} {}", escape(&n.name), get(n));
            }
        }
        o
    }
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
        assert_eq!(value(&t, "ffcluster_first_output_seconds_bucket{le=\"1\"}"), "1");
        assert_eq!(value(&t, "ffcluster_first_output_seconds_bucket{le=\"+Inf\"}"), "1");
        assert_eq!(value(&t, "ffcluster_first_output_seconds_count"), "1");
        assert_eq!(value(&t, "ffcluster_first_output_seconds_sum"), "0.7");
        assert_eq!(value(&t, "ffcluster_first_chunk_seconds_bucket{le=\"60\"}"), "0");
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
        assert!(t.contains("# TYPE ffcluster_jobs_resumed_total counter\n"), "{t}");
        assert!(!t.contains("ffcluster_jobs_resumed_total{"), "nothing resumed yet: {t}");
        // Every sample line belongs to a declared family.
        let families: Vec<&str> = t.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(families.contains(&name) || families.contains(&family), "undeclared {l}");
        }
    }
}
