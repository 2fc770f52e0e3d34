//! How far a job is and when it will end, for `ffcluster jobs` and the status
//! document. A split job knows it from its chunks (seconds of content done of
//! the span it encodes); a whole job from what its ffmpeg prints: the input's
//! `Duration:` and the last progress line's `time=`. Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A running job's progress.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Of the content the job encodes, 0 to 100.
    pub percent: f64,
    /// Seconds of content per second of wall time so far.
    pub speed: f64,
    /// Time left at that speed; none before anything is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
}

impl Estimate {
    /// `done` of `total` seconds of content after `elapsed`; none without a total.
    pub fn of(done: f64, total: f64, elapsed: Duration) -> Option<Estimate> {
        if !(total.is_finite() && total > 0.0 && done.is_finite()) {
            return None;
        }
        // Not clamp: an empty f64 sum is -0.0, which clamp keeps.
        let done = if done > 0.0 { done.min(total) } else { 0.0 };
        let wall = elapsed.as_secs_f64();
        let speed = if wall > 0.0 { done / wall } else { 0.0 };
        let eta_ms = (speed > 0.0).then(|| ((total - done) / speed * 1000.0).round() as u64);
        Some(Estimate { percent: done / total * 100.0, speed, eta_ms })
    }

    /// `42% 3.1x 1m20s left`.
    pub fn describe(&self) -> String {
        let left = self.eta_ms.map_or_else(
            || "-".to_owned(),
            |ms| {
                let s = ms / 1000;
                if s >= 3600 {
                    format!("{}h{:02}m left", s / 3600, s % 3600 / 60)
                } else if s >= 60 {
                    format!("{}m{:02}s left", s / 60, s % 60)
                } else {
                    format!("{s}s left")
                }
            },
        );
        format!("{:.0}% {:.1}x {left}", self.percent, self.speed)
    }
}

/// What ffmpeg's stderr has said so far of where it is.
#[derive(Debug, Default)]
pub struct StderrProgress {
    /// The first input's `Duration:`.
    duration: Option<f64>,
    /// The last progress line's `time=`.
    time: Option<f64>,
    /// A line not yet ended (progress lines end with `\r`).
    partial: Vec<u8>,
}

/// Longest line kept while it is not ended: a progress line is ~100 bytes.
const LINE_LIMIT: usize = 4096;

impl StderrProgress {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.partial);
                self.line(&String::from_utf8_lossy(&line));
            } else if self.partial.len() < LINE_LIMIT {
                self.partial.push(b);
            }
        }
    }

    fn line(&mut self, line: &str) {
        if self.duration.is_none()
            && let Some(rest) = line.trim_start().strip_prefix("Duration: ")
        {
            self.duration = clock(rest.split(',').next().unwrap_or(rest));
        }
        if let Some(at) = line.find("time=") {
            let value = line[at + 5..].split_whitespace().next().unwrap_or("");
            if let Some(t) = clock(value) {
                self.time = Some(t);
            }
        }
    }

    pub fn estimate(&self, elapsed: Duration) -> Option<Estimate> {
        Estimate::of(self.time?, self.duration?, elapsed)
    }
}

/// `01:02:03.45` in seconds (ffmpeg writes `-00:00:00.02` before the start).
fn clock(s: &str) -> Option<f64> {
    let s = s.trim();
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let mut parts = s.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    let t = h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + sec.parse::<f64>().ok()?;
    Some(if neg { -t } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_job_is_where_its_last_progress_line_says() {
        let mut p = StderrProgress::default();
        p.feed(
            b"Input #0, matroska,webm, from 'film.mkv':\n  Duration: 00:02:00.00, start: 0.000000, bitrate: 1 kb/s\n",
        );
        assert_eq!(p.estimate(Duration::from_secs(1)), None, "no progress line yet");
        p.feed(b"frame=  100 fps=50 q=28.0 size=     256kB time=00:00:30.00 bitrate= 69.9kbits/s speed=15x\r");
        p.feed(b"frame=  200 fps=50 q=28.0 size=     512kB time=00:01:");
        let e = p.estimate(Duration::from_secs(10)).unwrap();
        assert_eq!((e.percent, e.speed, e.eta_ms), (25.0, 3.0, Some(30_000)));
        p.feed(b"00.00 bitrate= 69.9kbits/s speed=15x\r");
        let e = p.estimate(Duration::from_secs(20)).unwrap();
        assert_eq!((e.percent, e.eta_ms), (50.0, Some(20_000)));
        assert_eq!(e.describe(), "50% 3.0x 20s left");
        // A later input's duration does not replace the first's.
        p.feed(b"  Duration: 00:00:05.00, start: 0\n");
        assert_eq!(p.estimate(Duration::from_secs(20)).unwrap().percent, 50.0);
    }

    #[test]
    fn estimates_from_content_done() {
        assert_eq!(Estimate::of(1.0, 0.0, Duration::from_secs(1)), None);
        let e = Estimate::of(std::iter::empty::<f64>().sum(), 60.0, Duration::from_secs(5)).unwrap();
        assert!(e.percent.is_sign_positive() && e.speed.is_sign_positive(), "{e:?}");
        assert_eq!((e.percent, e.eta_ms), (0.0, None));
        assert_eq!(e.describe(), "0% 0.0x -");
        let e = Estimate::of(600.0, 5400.0, Duration::from_secs(100)).unwrap();
        assert_eq!(e.describe(), "11% 6.0x 13m20s left");
        assert_eq!(Estimate::of(10.0, 7200.0, Duration::from_secs(10)).unwrap().describe(), "0% 1.0x 1h59m left");
        assert_eq!(clock("-00:00:00.02"), Some(-0.02));
    }
}
