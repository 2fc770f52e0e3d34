//! Per-job logs that read like ffmpeg's: the command line, where the job ran,
//! re-issues and failures with their reasons, and the remote ffmpeg's own
//! stderr, served as text at `GET /api/v1/jobs/{id}/log`.
//!
//! ffmpeg's lines are kept verbatim; ffcluster's own lines carry a context
//! prefix the way ffmpeg's components do (`[ffcluster @ job 12] ...`), so one
//! reads the log as one would read `ffmpeg -report`'s. A whole job's log holds
//! the node's stderr as it is relayed; a split job's holds each chunk
//! attempt's stderr tail, labelled with its chunk and node, once the attempt
//! ends (while it runs, a full read shows it under "so far").
//!
//! Memory is bounded: each log keeps at most [`LOG_CAP`] (its beginning and
//! its newest lines, with a marker where the middle was dropped), each running
//! attempt a [`TAIL_CAP`] tail, and only the [`LOGS_KEPT`] most recently
//! finished jobs keep theirs. ffmpeg's progress lines (`frame= … speed=`,
//! ended by `\r`) overwrite each other as they do on a terminal, so a long
//! job's log is not all progress.
//!
//! The store has its own lock, taken after the registry's when both are held
//! and never the other way round, so that relaying a whole job's stderr does
//! not contend with scheduling.

use super::progress::{Estimate, StderrProgress};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::status::{JobMode, JobState, Reasons};
use crate::ffmpeg::cmdline::shell_join;
use crate::protocol::JobId;

/// `GET {JOBS_PATH}/{id}/log`: the job's log as text. With `?after=N`, only
/// the lines numbered above `N` (see [`NEXT_HEADER`]), for following a log.
pub const JOBS_PATH: &str = "/api/v1/jobs";
/// The job's state (`running`, `done`, `failed`, `cancelled`).
pub const STATE_HEADER: &str = "x-ffcluster-job-state";
/// The number of the log's last line: pass it as `after` to get what follows.
pub const NEXT_HEADER: &str = "x-ffcluster-log-next";

/// Most text one job's log keeps.
pub(crate) const LOG_CAP: usize = 256 << 10;
/// Of which the beginning (command line, placement, ffmpeg's input and output
/// description) that is never dropped.
const HEAD_CAP: usize = 32 << 10;
/// Stderr kept per running chunk attempt.
const TAIL_CAP: usize = 16 << 10;
/// Finished jobs whose logs are kept.
pub(crate) const LOGS_KEPT: usize = 50;
/// A line without an end is cut here (ffmpeg's own lines are short).
const MAX_LINE: usize = 8 << 10;

/// Every job's log.
#[derive(Debug, Default)]
pub(crate) struct JobLogs {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    logs: BTreeMap<JobId, JobLog>,
    /// Finished jobs, oldest first.
    finished: VecDeque<JobId>,
}

#[derive(Debug)]
struct JobLog {
    id: JobId,
    started: Instant,
    lines: Lines,
    /// Running attempts of a split job: their stderr until they end.
    attempts: BTreeMap<JobId, AttemptLog>,
    state: JobState,
    /// Where a whole job's ffmpeg says it is.
    progress: StderrProgress,
}

#[derive(Debug)]
struct AttemptLog {
    /// "chunk 3 (6.000-9.000 s) on node2".
    label: String,
    started: Instant,
    stderr: Lines,
}

/// What a read of a log returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogText {
    pub text: String,
    pub state: JobState,
    /// The number of the last line (see [`NEXT_HEADER`]).
    pub next: u64,
}

impl JobLogs {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the store consistent; a panic elsewhere must not
        // take the logs down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with(&self, job: JobId, f: impl FnOnce(&mut JobLog)) {
        if let Some(log) = self.inner().logs.get_mut(&job) {
            f(log);
        }
    }

    /// A job was accepted: its log starts with the command line, as ffmpeg's
    /// report does, then why it runs as it does (a job that could have been
    /// split: why it was not; a resumed run: why the one before was lost).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn opened(
        &self,
        job: JobId,
        mode: JobMode,
        args: &[String],
        reason: &str,
        why: &Reasons,
        at: Instant,
        unix_ms: u64,
    ) {
        let mut lines = Lines::new(LOG_CAP, HEAD_CAP);
        lines.push(format!("ffcluster {mode} job {job} started on {}", utc(unix_ms)));
        lines.push("Command line:".into());
        lines.push(format!("ffmpeg {}", shell_join(args)));
        lines.push(format!("{} the shim's reason: {reason}", prefix(job)));
        for (what, w) in why.each() {
            lines.push(format!("{} {what}: {w}", prefix(job)));
        }
        let log = JobLog {
            id: job,
            started: at,
            lines,
            attempts: BTreeMap::new(),
            state: JobState::Running,
            progress: StderrProgress::default(),
        };
        self.inner().logs.insert(job, log);
    }

    /// One of ffcluster's own lines, stamped with the time since the job started.
    pub(crate) fn note(&self, job: JobId, at: Instant, text: &str) {
        self.with(job, |log| log.note(at, text));
    }

    /// Stderr of a whole job, as its node relays it.
    pub(crate) fn stderr(&self, job: JobId, bytes: &[u8]) {
        self.with(job, |log| {
            log.lines.feed(bytes);
            log.progress.feed(bytes);
        });
    }

    /// A whole job's progress, from what its ffmpeg printed.
    pub(crate) fn estimate(&self, job: JobId, now: Instant) -> Option<Estimate> {
        let inner = self.inner();
        let log = inner.logs.get(&job)?;
        log.progress.estimate(now.saturating_duration_since(log.started))
    }

    /// An attempt of a split job (a chunk, or its audio track) started on `node`.
    pub(crate) fn attempt_started(
        &self,
        job: JobId,
        attempt: JobId,
        what: &str,
        node: &str,
        reissue: bool,
        at: Instant,
    ) {
        self.with(job, |log| {
            let label = format!("{what} on {node}");
            if reissue {
                log.note(at, &format!("{what} re-issued to {node} (attempt {attempt}): the running attempt is late"));
            } else {
                log.note(at, &format!("{label}: started (attempt {attempt})"));
            }
            log.attempts.insert(attempt, AttemptLog { label, started: at, stderr: Lines::new(TAIL_CAP, 0) });
        });
    }

    /// Stderr of a running attempt.
    pub(crate) fn attempt_stderr(&self, job: JobId, attempt: JobId, bytes: &[u8]) {
        self.with(job, |log| {
            if let Some(a) = log.attempts.get_mut(&attempt) {
                a.stderr.feed(bytes);
            }
        });
    }

    /// An attempt ended (`how`: "done", "failed: …", "superseded …"): the
    /// line, then the tail of its stderr.
    pub(crate) fn attempt_ended(&self, job: JobId, attempt: JobId, at: Instant, how: &str) {
        self.with(job, |log| log.end_attempt(attempt, at, how));
    }

    /// The job ended: attempts still open were cancelled with it, and the last
    /// line says how it ended. Older finished logs beyond [`LOGS_KEPT`] go.
    pub(crate) fn finished(
        &self,
        job: JobId,
        state: JobState,
        exit_code: Option<i32>,
        error: Option<&str>,
        took: Duration,
    ) {
        let mut inner = self.inner();
        let Some(log) = inner.logs.get_mut(&job) else { return };
        if log.state != JobState::Running {
            return;
        }
        let at = log.started + took;
        let open: Vec<JobId> = log.attempts.keys().copied().collect();
        for attempt in open {
            log.end_attempt(attempt, at, "cancelled with the job");
        }
        log.lines.flush();
        let how = match (state, exit_code, error) {
            (JobState::Done, Some(c), _) => format!("done: ffmpeg exited with code {c}"),
            (JobState::Done, None, Some(e)) => format!("done: {e}"),
            (JobState::Failed, _, Some(e)) => format!("failed: {e}"),
            (JobState::Cancelled, ..) => "cancelled: the shim went away before the job ended".to_owned(),
            (state, ..) => state.to_string(),
        };
        log.note(at, &format!("job {how} after {:.3} s", took.as_secs_f64()));
        log.state = state;
        inner.finished.push_back(job);
        while inner.finished.len() > LOGS_KEPT {
            if let Some(old) = inner.finished.pop_front() {
                inner.logs.remove(&old);
            }
        }
    }

    /// The log of `job`: everything, or with `after` only the lines numbered
    /// above it. None when the job is unknown or its log was dropped.
    pub(crate) fn read(&self, job: JobId, after: Option<u64>) -> Option<LogText> {
        let inner = self.inner();
        let log = inner.logs.get(&job)?;
        let mut text = String::new();
        log.lines.render(after.unwrap_or(0), &mut text, || {
            format!("{} … earlier lines dropped (a log keeps {} KiB) …", prefix(log.id), LOG_CAP >> 10)
        });
        if after.is_none() {
            // Running attempts are not numbered lines yet: only a full read
            // shows them, and following shows their tails when they end.
            for a in log.attempts.values() {
                if a.stderr.is_empty() {
                    continue;
                }
                let _ = writeln!(text, "{} {}: running; ffmpeg's stderr so far:", prefix(log.id), a.label);
                a.stderr.render(0, &mut text, || "…".into());
                if let Some(p) = &a.stderr.partial_text() {
                    let _ = writeln!(text, "{p}");
                }
            }
        }
        Some(LogText { text, state: log.state, next: log.lines.last_seq() })
    }
}

impl JobLog {
    fn note(&mut self, at: Instant, text: &str) {
        // A relayed line without its end yet stays apart from ours.
        self.lines.flush();
        let since = at.saturating_duration_since(self.started).as_secs_f64();
        self.lines.push(format!("{} +{since:.3}s {text}", prefix(self.id)));
    }

    fn end_attempt(&mut self, attempt: JobId, at: Instant, how: &str) {
        let Some(mut a) = self.attempts.remove(&attempt) else { return };
        a.stderr.flush();
        let took = at.saturating_duration_since(a.started).as_secs_f64();
        self.note(at, &format!("{} (attempt {attempt}): {how} after {took:.3} s", a.label));
        if a.stderr.is_empty() {
            return;
        }
        let (n, cut) = (a.stderr.len(), a.stderr.dropped > 0);
        let which = if cut { format!("last {n} lines") } else { format!("{n} lines") };
        self.lines.push(format!("{} {} (attempt {attempt}): ffmpeg's stderr, {which}:", prefix(self.id), a.label));
        for (_, line) in a.stderr.all() {
            self.lines.push(line.clone());
        }
    }
}

fn prefix(job: JobId) -> String {
    format!("[ffcluster @ job {job}]")
}

/// Numbered lines, bounded: a beginning that stays, then the newest lines;
/// what falls between is counted and dropped.
#[derive(Debug)]
struct Lines {
    cap: usize,
    head_cap: usize,
    head: Vec<(u64, String)>,
    /// Once a line went to `tail`, `head` takes no more.
    sealed: bool,
    tail: VecDeque<(u64, String)>,
    bytes: usize,
    /// Lines dropped, and the number of the newest of them.
    dropped: u64,
    dropped_last: u64,
    seq: u64,
    /// Whether the newest line is a progress line (the next overwrites it).
    progress: bool,
    /// Bytes of a line whose end has not arrived.
    partial: Vec<u8>,
}

impl Lines {
    fn new(cap: usize, head_cap: usize) -> Lines {
        Lines {
            cap,
            head_cap,
            head: Vec::new(),
            sealed: head_cap == 0,
            tail: VecDeque::new(),
            bytes: 0,
            dropped: 0,
            dropped_last: 0,
            seq: 0,
            progress: false,
            partial: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty() && self.partial.is_empty()
    }

    fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    fn last_seq(&self) -> u64 {
        self.seq
    }

    fn all(&self) -> impl Iterator<Item = &(u64, String)> {
        self.head.iter().chain(&self.tail)
    }

    fn partial_text(&self) -> Option<String> {
        (!self.partial.is_empty()).then(|| String::from_utf8_lossy(&self.partial).into_owned())
    }

    /// Raw stderr bytes: whole lines (ended by `\n` or `\r`) are taken, the
    /// rest waits for its end.
    fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|b| matches!(b, b'\n' | b'\r')) {
            let end = start + i;
            let line = String::from_utf8_lossy(&self.partial[start..end]).into_owned();
            let cr = self.partial[end] == b'\r';
            start = end + 1;
            self.stderr_line(line, cr);
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_LINE {
            self.flush();
        }
    }

    /// Takes a line still waiting for its end as it is.
    fn flush(&mut self) {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            self.stderr_line(line, false);
        }
    }

    fn stderr_line(&mut self, line: String, cr: bool) {
        // `\r\n`, or the newline ffmpeg prints after its last progress line.
        if line.is_empty() && self.progress {
            return;
        }
        let progress = cr || is_progress(&line);
        if progress && self.progress {
            self.pop_last();
        }
        self.push(line);
        self.progress = progress;
    }

    fn pop_last(&mut self) {
        let popped = if self.tail.is_empty() { self.head.pop() } else { self.tail.pop_back() };
        if let Some((_, l)) = popped {
            self.bytes -= l.len() + 1;
        }
    }

    fn push(&mut self, mut line: String) {
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        self.progress = false;
        self.seq += 1;
        let size = line.len() + 1;
        let head_bytes: usize = if self.sealed { 0 } else { self.bytes };
        if !self.sealed && head_bytes + size <= self.head_cap {
            self.head.push((self.seq, line));
        } else {
            self.sealed = true;
            self.tail.push_back((self.seq, line));
        }
        self.bytes += size;
        while self.bytes > self.cap && self.tail.len() > 1 {
            let Some((seq, l)) = self.tail.pop_front() else { break };
            self.bytes -= l.len() + 1;
            self.dropped += 1;
            self.dropped_last = seq;
        }
    }

    /// Appends the lines numbered above `after` to `out`, with `marker()`
    /// where lines of that range were dropped.
    fn render(&self, after: u64, out: &mut String, marker: impl Fn() -> String) {
        for (seq, line) in &self.head {
            if *seq > after {
                out.push_str(line);
                out.push('\n');
            }
        }
        if self.dropped > 0 && self.dropped_last > after {
            out.push_str(&marker());
            out.push('\n');
        }
        for (seq, line) in &self.tail {
            if *seq > after {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

/// ffmpeg's status line: `frame=  240 fps=…` or, without video, `size=…`.
fn is_progress(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("frame=") || l.starts_with("size=")
}

/// `2025-06-01 at 12:00:00 UTC`, as ffmpeg's report header dates itself.
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} at {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `GET /api/v1/jobs/{id}/log[?after=N]`.
pub(crate) async fn serve(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(job) = id.parse::<JobId>() else {
        return (StatusCode::BAD_REQUEST, format!("{id:?} is not a job id\n")).into_response();
    };
    let mut after = None;
    for pair in query.as_deref().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("after", n)) => match n.parse::<u64>() {
                Ok(n) => after = Some(n),
                Err(_) => return (StatusCode::BAD_REQUEST, format!("after={n:?} is not a number\n")).into_response(),
            },
            _ => return (StatusCode::BAD_REQUEST, format!("unknown parameter {pair:?}\n")).into_response(),
        }
    }
    match shared.logs.read(job, after) {
        Some(log) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                (header::CACHE_CONTROL, "no-store".to_owned()),
                (header::HeaderName::from_static(STATE_HEADER), log.state.to_string()),
                (header::HeaderName::from_static(NEXT_HEADER), log.next.to_string()),
            ],
            log.text,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no log for job {job}: unknown, or older than the {LOGS_KEPT} most recent finished jobs\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Vec<String> {
        ["-i", "in put.mkv", "-c:v", "libx264", "out.ts"].map(String::from).to_vec()
    }

    #[test]
    fn a_whole_job_reads_like_ffmpeg() {
        let t0 = Instant::now();
        let logs = JobLogs::default();
        let why = Reasons {
            not_split: Some(crate::protocol::Why::new("nosplit.map", "stream selection \"0\" is not understood")),
            ..Reasons::default()
        };
        logs.opened(12, JobMode::Whole, &args(), "split.hls", &why, t0, 1_717_243_200_000);
        logs.note(12, t0 + Duration::from_millis(5), "placed on node2");
        logs.stderr(12, b"Input #0, matroska,webm, from 'in put.mkv':\n  Duration: 00:00");
        logs.stderr(12, b":12.00\nStream mapping:\n");
        for i in 0..1000 {
            logs.stderr(12, format!("frame={i:5} fps=100 q=28.0 size=1kB time=00:00:01.00 speed=4x\r").as_bytes());
        }
        logs.stderr(12, b"frame= 1000 fps=100 q=-1.0 Lsize=9kB time=00:00:12.00 speed=4x\n\n");
        logs.stderr(12, b"[libx264 @ 0x55] kb/s:1.00\n");
        logs.finished(12, JobState::Done, Some(0), None, Duration::from_millis(4100));
        let log = logs.read(12, None).unwrap();
        let want = "ffcluster whole job 12 started on 2024-06-01 at 12:00:00 UTC\n\
                    Command line:\n\
                    ffmpeg -i 'in put.mkv' -c:v libx264 out.ts\n\
                    [ffcluster @ job 12] the shim's reason: split.hls\n\
                    [ffcluster @ job 12] not split: nosplit.map: stream selection \"0\" is not understood\n\
                    [ffcluster @ job 12] +0.005s placed on node2\n\
                    Input #0, matroska,webm, from 'in put.mkv':\n  Duration: 00:00:12.00\n\
                    Stream mapping:\n\
                    frame= 1000 fps=100 q=-1.0 Lsize=9kB time=00:00:12.00 speed=4x\n\
                    [libx264 @ 0x55] kb/s:1.00\n\
                    [ffcluster @ job 12] +4.100s job done: ffmpeg exited with code 0 after 4.100 s\n";
        assert_eq!(log.text, want);
        assert_eq!(log.state, JobState::Done);
        // Following: only what comes after a line number.
        let tail = logs.read(12, Some(log.next - 2)).unwrap();
        assert_eq!(tail.text.lines().count(), 2, "{}", tail.text);
        assert!(tail.text.starts_with("[libx264 @ 0x55]"), "{}", tail.text);
        assert!(logs.read(12, Some(log.next)).unwrap().text.is_empty());
        assert!(logs.read(13, None).is_none());
    }

    #[test]
    fn split_attempts_are_labelled_and_cancelled_ones_closed() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let logs = JobLogs::default();
        let why = Reasons {
            resumed: Some(crate::protocol::Why::new("resumed.controller_gone", "the controller closed the connection")),
            ..Reasons::default()
        };
        logs.opened(7, JobMode::Split, &args(), "split.hls", &why, t0, 0);
        logs.attempt_started(7, 8, "chunk 0 (0.000-3.000 s)", "a", false, at(1));
        logs.attempt_started(7, 9, "chunk 1 (3.000-6.000 s)", "b", false, at(2));
        logs.attempt_stderr(7, 8, b"Output #0, mpegts, to 'pipe:1':\nframe=   72 fps=0.0 q=-1.0 Lsize=1kB\n");
        logs.attempt_stderr(7, 9, b"Stream mapping:\n");
        logs.attempt_ended(7, 8, at(900), "done");
        let running = logs.read(7, None).unwrap().text;
        assert!(
            running.contains(
                "[ffcluster @ job 7] chunk 1 (3.000-6.000 s) on b: running; ffmpeg's stderr so far:\nStream mapping:\n"
            ),
            "{running}"
        );
        logs.attempt_started(7, 10, "chunk 1 (3.000-6.000 s)", "a", true, at(1000));
        logs.finished(7, JobState::Failed, None, Some("node b lost"), Duration::from_secs(2));
        let text = logs.read(7, None).unwrap().text;
        for want in [
            "ffcluster split job 7 started on 1970-01-01 at 00:00:00 UTC\n",
            "[ffcluster @ job 7] the shim's reason: split.hls\n\
             [ffcluster @ job 7] resumed: resumed.controller_gone: the controller closed the connection\n",
            "[ffcluster @ job 7] +0.001s chunk 0 (0.000-3.000 s) on a: started (attempt 8)\n",
            "[ffcluster @ job 7] +0.900s chunk 0 (0.000-3.000 s) on a (attempt 8): done after 0.899 s\n\
             [ffcluster @ job 7] chunk 0 (0.000-3.000 s) on a (attempt 8): ffmpeg's stderr, 2 lines:\n\
             Output #0, mpegts, to 'pipe:1':\nframe=   72 fps=0.0 q=-1.0 Lsize=1kB\n",
            "[ffcluster @ job 7] +1.000s chunk 1 (3.000-6.000 s) re-issued to a (attempt 10): the running attempt is late\n",
            "[ffcluster @ job 7] +2.000s chunk 1 (3.000-6.000 s) on b (attempt 9): cancelled with the job after 1.998 s\n\
             [ffcluster @ job 7] chunk 1 (3.000-6.000 s) on b (attempt 9): ffmpeg's stderr, 1 lines:\nStream mapping:\n",
            "[ffcluster @ job 7] +2.000s job failed: node b lost after 2.000 s\n",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        assert!(!text.contains("so far"), "{text}");
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let logs = JobLogs::default();
        for job in 1..=(LOGS_KEPT as u64 + 5) {
            logs.opened(job, JobMode::Whole, &args(), "r", &Reasons::default(), t0, 0);
            for i in 0..20_000 {
                logs.stderr(job, format!("[hls @ 0x1] Opening 'seg{i}.ts' for writing\n").as_bytes());
            }
            logs.finished(job, JobState::Done, Some(0), None, Duration::ZERO);
            let log = logs.read(job, None).unwrap();
            assert!(log.text.len() <= LOG_CAP + 200, "{} bytes", log.text.len());
            assert!(log.text.starts_with("ffcluster whole job"), "the beginning stays");
            assert!(log.text.contains("earlier lines dropped"));
            assert!(log.text.contains("seg19999.ts"), "the newest lines stay");
            assert!(log.text.ends_with("after 0.000 s\n"));
            // A follower that saw the beginning is told what it missed.
            assert!(logs.read(job, Some(10)).unwrap().text.contains("earlier lines dropped"));
        }
        assert!(logs.read(5, None).is_none(), "the oldest finished logs go");
        assert!(logs.read(6, None).is_some());
        assert_eq!(logs.inner().logs.len(), LOGS_KEPT);
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 at 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000 + 3_723_000), "2000-02-29 at 01:02:03 UTC");
        assert_eq!(utc(4_102_444_799_000), "2099-12-31 at 23:59:59 UTC");
    }
}
