//! Where to cut a job's timeline into chunks for several nodes. Pure: no IO.
//!
//! * [`Grid::of`]: the job's segment grid: the period of its forced keyframes
//!   (`-force_key_frames expr:gte(t,n_forced*N)`, or `-g` frames at a known rate)
//!   checked against `-hls_time`, and where the grid starts. ffmpeg measures the
//!   keyframe expression's `t` from the first frame it encodes, with or without
//!   `-copyts`, so the grid starts at the seek point; `split` moves it to the
//!   exact first frame once ffprobe has told it the frame rate.
//! * [`Planner`]: hands out chunks on that grid one at a time, as nodes ask
//!   for work. The first chunks are one segment long so that segment 0 is ready
//!   about as soon as a direct run would have it; later chunks grow with the
//!   asking node's measured speed, up to a cap that still leaves work for every
//!   node until near the end.

use serde::{Deserialize, Serialize};

use crate::ffmpeg::cmdline::{CommandLine, Output};
use crate::ffmpeg::decision::OutputShape;

/// The segment grid of one output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// Seconds between forced keyframes (= the segment length for HLS).
    pub period: f64,
    /// Output time of grid line 0.
    pub origin: f64,
}

impl Grid {
    /// The grid a job's output follows, if its keyframes are forced on one. For
    /// HLS the keyframe period must be a whole divisor of `-hls_time`, or the muxer
    /// would cut where no chunk boundary is.
    pub fn of(cl: &CommandLine, output: usize, shape: &OutputShape) -> Option<Grid> {
        let o = cl.outputs.get(output)?;
        let period = keyframe_period(o)?;
        if let OutputShape::Hls { hls_time, .. } = shape {
            let ratio = hls_time / period;
            if ratio < 0.999 || (ratio - ratio.round()).abs() > 1e-6 {
                return None;
            }
        }
        // ffmpeg measures `t` of the keyframe expression from the first frame it
        // encodes, with or without -copyts; `split` refines this to that frame.
        let seek = cl.inputs.first().and_then(|i| i.last_value("ss")).and_then(parse_time).unwrap_or(0.0);
        Some(Grid { period, origin: seek })
    }

    /// Grid line at or after `t`.
    pub fn ceil(&self, t: f64) -> f64 {
        let n = ((t - self.origin) / self.period - 1e-9).ceil();
        self.origin + n * self.period
    }
}

/// The forced keyframe period of an output in seconds.
fn keyframe_period(o: &Output) -> Option<f64> {
    if let Some(expr) = o.last_value("force_key_frames") {
        return expr_period(expr);
    }
    let gop: f64 = o.last_value("g")?.parse().ok()?;
    let keyint_min: Option<f64> = o.last_value("keyint_min").and_then(|v| v.parse().ok());
    // A fixed GOP only makes a grid when the encoder may not cut earlier.
    if keyint_min != Some(gop) {
        return None;
    }
    let rate = parse_rate(o.last_value("r")?)?;
    Some(gop / rate)
}

/// The period `N` of `expr:gte(t,n_forced*N)` (Jellyfin; before 10.9 also
/// written `0+n_forced*N`).
pub fn expr_period(expr: &str) -> Option<f64> {
    let body = expr.strip_prefix("expr:")?.replace(' ', "");
    let n = body.strip_prefix("gte(t,")?.strip_suffix(')')?;
    let n = n.strip_prefix("0+").unwrap_or(n);
    let n = n.strip_prefix("n_forced*")?;
    n.parse::<f64>().ok().filter(|p| *p > 0.0)
}

/// `HH:MM:SS.fff`, `MM:SS`, or seconds.
pub fn parse_time(s: &str) -> Option<f64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut total = 0.0;
    for part in s.split(':') {
        total = total * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(if neg { -total } else { total })
}

/// `24`, `23.976` or `24000/1001`.
fn parse_rate(s: &str) -> Option<f64> {
    let r = match s.split_once('/') {
        Some((n, d)) => n.parse::<f64>().ok()? / d.parse::<f64>().ok()?,
        None => s.parse().ok()?,
    };
    (r > 0.0 && r.is_finite()).then_some(r)
}

/// One piece of the timeline: output time `[start, end)`, starting at segment
/// `first_segment` (the HLS index of its first segment).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub index: usize,
    pub start: f64,
    pub end: f64,
    pub first_segment: i64,
}

/// How chunk sizes grow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    /// Segments in each of the first chunks.
    pub first: u32,
    /// How many chunks keep the first size (one per node is a good start).
    pub small_chunks: usize,
    /// Largest chunk, in seconds of output, for a node of speed 1.0.
    pub max_seconds: f64,
    /// Number of nodes sharing the job: no chunk takes more than an even share of
    /// what is left, so the end of the job does not wait on one long chunk.
    pub nodes: usize,
}

impl Default for Sizing {
    fn default() -> Sizing {
        Sizing { first: 1, small_chunks: 2, max_seconds: 30.0, nodes: 2 }
    }
}

/// Hands out chunks of `[start, end)` in timeline order.
#[derive(Debug, Clone)]
pub struct Planner {
    grid: Grid,
    end: f64,
    cursor: f64,
    next_segment: i64,
    issued: usize,
    sizing: Sizing,
}

impl Planner {
    /// `start` is where output begins (after a seek), `end` where it stops, and
    /// `start_number` the index of the segment that begins at `start`.
    pub fn new(grid: Grid, start: f64, end: f64, start_number: i64, sizing: Sizing) -> Planner {
        Planner { grid, end, cursor: start, next_segment: start_number, issued: 0, sizing }
    }

    /// The next chunk for a node whose speed, relative to the cluster's average,
    /// is `speed` (1.0 = average), while other nodes still have `in_flight`
    /// seconds of this job's content to encode. `None` once the timeline is
    /// covered.
    ///
    /// Near the end every node should finish at the same moment: the work left,
    /// planned or in flight, is shared out by speed. Counting what is in flight
    /// keeps the share right when nodes come free at different times (a share of
    /// the unplanned part alone would shrink chunk by chunk, or leave one long
    /// chunk to a node that came free just before the others).
    pub fn next(&mut self, speed: f64, in_flight: f64) -> Option<Chunk> {
        if self.cursor >= self.end - 1e-9 {
            return None;
        }
        let p = self.grid.period;
        let speed = speed.clamp(0.1, 4.0);
        let segments = if self.issued < self.sizing.small_chunks {
            f64::from(self.sizing.first)
        } else {
            let by_speed = (self.sizing.max_seconds * speed / p).floor().max(1.0);
            let left = ((self.end - self.cursor) / p).ceil();
            let nodes = self.sizing.nodes.max(1) as f64;
            let work = left + in_flight.max(0.0) / p;
            if work <= nodes * by_speed { (work / nodes * speed).round().clamp(1.0, by_speed) } else { by_speed }
        };
        // The first boundary may be off the grid (a seek without -copyts lands on
        // the grid by construction; with it, the seek point is a grid line too).
        let mut stop = self.grid.ceil(self.cursor + segments * p - p * 1e-6);
        if stop <= self.cursor + 1e-9 {
            stop = self.grid.ceil(self.cursor + p);
        }
        // What is left after the last grid line (the input rarely ends on one)
        // is not worth a chunk of its own: it would start an ffmpeg for a frame
        // or none.
        if self.end - stop < p * (1.0 - 1e-6) {
            stop = self.end;
        }
        let stop = stop.min(self.end);
        let chunk = Chunk { index: self.issued, start: self.cursor, end: stop, first_segment: self.next_segment };
        self.next_segment += ((stop - self.cursor) / p).round().max(1.0) as i64;
        self.cursor = stop;
        self.issued += 1;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffmpeg::decision::classify_cmdline;

    fn grid(args: &str) -> Option<Grid> {
        let a: Vec<&str> = args.split(' ').collect();
        let cl = CommandLine::parse(&a).unwrap();
        let v = classify_cmdline(&cl);
        Grid::of(&cl, 0, &v.outputs[0])
    }

    #[test]
    fn grids_from_jellyfin_keyframe_options() {
        let hls =
            "-i in.mkv -c:v libx264 -force_key_frames:0 expr:gte(t,n_forced*3) -copyts -f hls -hls_time 3 -y a.m3u8";
        assert_eq!(grid(hls), Some(Grid { period: 3.0, origin: 0.0 }));
        let seek = format!("-ss 00:27:33.000 {hls}");
        assert_eq!(grid(&seek), Some(Grid { period: 3.0, origin: 1653.0 }), "keyframes count from the first frame");
        let no_copyts =
            "-ss 9 -i in.mkv -c:v libx264 -force_key_frames expr:gte(t,n_forced*2) -f hls -hls_time 6 a.m3u8";
        assert_eq!(grid(no_copyts), Some(Grid { period: 2.0, origin: 9.0 }));
        let gop = "-i in.mkv -c:v h264_nvenc -r 25 -g:v:0 75 -keyint_min:v:0 75 -f hls -hls_time 3 a.m3u8";
        assert_eq!(grid(gop), Some(Grid { period: 3.0, origin: 0.0 }));
        assert_eq!(grid("-i in.mkv -c:v libx264 -f hls -hls_time 3 a.m3u8"), None, "keyframes not forced");
        let off = "-i in.mkv -c:v libx264 -force_key_frames expr:gte(t,n_forced*4) -f hls -hls_time 6 a.m3u8";
        assert_eq!(grid(off), None, "4 s keyframes cannot make 6 s segments");
        assert_eq!(parse_time("00:06:48.000"), Some(408.0));
        assert_eq!(parse_rate("24000/1001").map(|r| (r * 1000.0).round()), Some(23976.0));
    }

    #[test]
    fn first_chunks_are_one_segment_then_grow_and_cover_the_timeline() {
        let g = Grid { period: 3.0, origin: 0.0 };
        let mut p = Planner::new(g, 0.0, 100.0, 0, Sizing { first: 1, small_chunks: 2, max_seconds: 30.0, nodes: 2 });
        let mut chunks = Vec::new();
        while let Some(c) = p.next(1.0, 0.0) {
            chunks.push(c);
        }
        assert_eq!((chunks[0].start, chunks[0].end, chunks[0].first_segment), (0.0, 3.0, 0));
        assert_eq!((chunks[1].start, chunks[1].end, chunks[1].first_segment), (3.0, 6.0, 1));
        assert_eq!((chunks[2].start, chunks[2].end, chunks[2].first_segment), (6.0, 36.0, 2));
        // Contiguous, on the grid, in order, ending exactly at the end.
        for w in chunks.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_eq!(w[1].first_segment, w[0].first_segment + ((w[0].end - w[0].start) / 3.0).round() as i64);
        }
        assert_eq!(chunks.last().unwrap().end, 100.0);
        assert!(chunks.iter().all(|c| (c.start / 3.0).fract() == 0.0));
        // Near the end no chunk takes more than an even share of what is left.
        let last_two: Vec<f64> = chunks.iter().rev().take(2).map(|c| c.end - c.start).collect();
        assert!(last_two.iter().all(|d| *d <= 30.0), "{last_two:?}");
    }

    #[test]
    fn the_last_round_is_shared_evenly_and_leaves_no_sliver() {
        // 60 s from 0.005 s (a Matroska video start), 4 nodes: four one-segment
        // chunks, then the 48 s left go out as four equal chunks; the 37 ms after
        // the last grid line ride with the last chunk.
        let g = Grid { period: 3.0, origin: 0.005 };
        let mut p =
            Planner::new(g, 0.005, 60.042, 0, Sizing { first: 1, small_chunks: 4, max_seconds: 30.0, nodes: 4 });
        let mut lens = Vec::new();
        let mut last = None;
        // The four nodes come free together: what the others took is in flight.
        let mut in_flight = 0.0;
        for i in 0.. {
            let Some(c) = p.next(1.0, in_flight) else { break };
            lens.push(((c.end - c.start) / 3.0).round() as i64);
            in_flight = if i < 4 { 0.0 } else { in_flight + (c.end - c.start) };
            last = Some(c);
        }
        assert_eq!(lens, [1, 1, 1, 1, 4, 4, 4, 4]);
        assert_eq!(last.unwrap().end, 60.042);
        // One node comes free while three still have 12 s each to go: it takes
        // a share of all 48 s, not of the 12 s nobody has yet.
        let g0 = Grid { period: 3.0, origin: 0.0 };
        let mut p = Planner::new(g0, 48.0, 60.0, 16, Sizing { first: 1, small_chunks: 0, max_seconds: 30.0, nodes: 4 });
        assert_eq!(p.next(1.0, 36.0).map(|c| c.end - c.start), Some(12.0));
        // The others have little left: the 12 s are cut for all four.
        let mut p = Planner::new(g0, 48.0, 60.0, 16, Sizing { first: 1, small_chunks: 0, max_seconds: 30.0, nodes: 4 });
        assert_eq!(p.next(1.0, 0.5).map(|c| c.end - c.start), Some(3.0));
        // One node: no small chunks, one long chunk streamed from the start.
        let mut one =
            Planner::new(g, 0.005, 60.042, 0, Sizing { first: 1, small_chunks: 0, max_seconds: 30.0, nodes: 1 });
        assert_eq!(one.next(1.0, 0.0).map(|c| c.end), Some(30.005));
    }

    #[test]
    fn a_seek_restart_starts_at_its_segment_and_fast_nodes_get_more() {
        // Jellyfin's restart: -ss 00:27:33 -start_number 551 with 3 s segments.
        let g = Grid { period: 3.0, origin: 0.0 };
        let mut p = Planner::new(g, 1653.0, 1800.0, 551, Sizing::default());
        let c = p.next(1.0, 0.0).unwrap();
        assert_eq!((c.start, c.end, c.first_segment), (1653.0, 1656.0, 551));
        p.next(1.0, 0.0).unwrap();
        let slow = p.clone().next(0.5, 0.0).unwrap();
        let fast = p.next(2.0, 0.0).unwrap();
        assert!(fast.end - fast.start > slow.end - slow.start, "{fast:?} vs {slow:?}");
    }
}
