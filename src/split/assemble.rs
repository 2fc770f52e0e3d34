//! Joins the chunks of a split job into the one stream the finisher reads, in
//! timeline order, whatever order the attempts' bytes arrive in.
//!
//! Any attempt of a chunk may die, freeze or lose the race to another at any
//! moment, so nothing written may commit the finisher to one attempt. Chunks
//! start on a keyframe, and the keyframes inside a chunk fall on the same frames
//! in every attempt, with the same source timestamps (they are forced on the
//! job's grid, re-anchored per chunk, under `-copyts`), each opening a closed
//! GOP. So the head chunk is written one keyframe interval at a time: an
//! interval goes out once the keyframe after it has arrived, and stops just
//! before that keyframe's packet. Where the written stream stops, every attempt
//! of the chunk holds the same keyframe, and whichever attempt is furthest ahead
//! continues from it: a re-issue that overtakes the attempt being streamed, or
//! the only one left after it died. Continuity counters are rewritten so that
//! they run on across the joins. The cost is latency: the finisher sees an
//! interval about one interval's encode later than it would see it streamed.
//!
//! [`Assembler::whole_chunks`] writes a chunk only once an attempt finished it:
//! for chunks whose keyframes are not forced on the same frames in every
//! attempt.

use std::collections::BTreeMap;

use super::mpegts::{self, Continuity, Keyframe, PACKET};
use crate::protocol::JobId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("chunk {chunk}: bytes at offset {offset} do not follow the {have} received")]
    Gap { chunk: u32, offset: u64, have: u64 },
    #[error("chunk {chunk}: attempt {attempt} ended with {size} bytes but {have} arrived")]
    Size { chunk: u32, attempt: JobId, size: u64, have: u64 },
    #[error("chunk {chunk}: the attempt that finished it has no keyframe at {pts} to continue from")]
    NoHandover { chunk: u32, pts: u64 },
    #[error("chunk {chunk} of attempt {attempt} was never announced")]
    Unknown { chunk: u32, attempt: JobId },
}

#[derive(Debug, Default)]
struct Attempt {
    bytes: Vec<u8>,
    done: bool,
    keyframes: Vec<Keyframe>,
    /// Bytes already searched for keyframes (a packet boundary).
    scanned: usize,
}

impl Attempt {
    fn scan(&mut self) {
        let whole = self.bytes.len() / PACKET * PACKET;
        self.keyframes.extend(mpegts::keyframes(&self.bytes[..whole], self.scanned));
        self.scanned = whole;
    }

    /// Where this attempt holds the point the written stream stopped at: its
    /// start, or its keyframe with that timestamp.
    fn position(&self, at: Option<u64>) -> Option<usize> {
        match at {
            None => Some(0),
            Some(pts) => self.keyframes.iter().find(|k| k.pts == pts).map(|k| k.offset),
        }
    }
}

#[derive(Debug, Default)]
struct Chunk {
    attempts: BTreeMap<JobId, Attempt>,
    /// Where the written part of this chunk ends: nowhere yet (`None`), or just
    /// before the keyframe with this timestamp, which every attempt holds.
    at: Option<u64>,
    /// The attempt the last bytes came from: it keeps the stream while no
    /// other is further ahead.
    source: Option<JobId>,
}

/// How far ahead an attempt is, the greatest first: finished, keyframes seen,
/// the one the last bytes came from, the older.
type Rank = (bool, usize, bool, std::cmp::Reverse<JobId>);

/// The next bytes of a chunk to write: `from`'s bytes `range`, after which the
/// written stream stops at the keyframe `then` (or the chunk is over).
struct Step {
    from: JobId,
    range: std::ops::Range<usize>,
    then: Option<u64>,
}

impl Chunk {
    /// What to write next, if any attempt can move the stream on. `whole`:
    /// only a finished attempt can.
    fn step(&self, chunk: u32, whole: bool) -> Result<Option<Step>, AssembleError> {
        let mut best: Option<(Rank, Step)> = None;
        let mut stuck = None;
        for (id, a) in &self.attempts {
            let Some(start) = a.position(self.at) else {
                if a.done {
                    stuck = self.at;
                }
                continue;
            };
            let step = if a.done {
                Step { from: *id, range: start..a.bytes.len(), then: None }
            } else {
                // Up to the newest keyframe: what lies past it may still change
                // hands.
                match a.keyframes.last().filter(|k| k.offset > start && !whole) {
                    Some(k) => Step { from: *id, range: start..k.offset, then: Some(k.pts) },
                    None => continue,
                }
            };
            let rank = (a.done, a.keyframes.len(), self.source == Some(*id), std::cmp::Reverse(*id));
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, step));
            }
        }
        match (best, stuck) {
            (Some((_, step)), _) => Ok(Some(step)),
            // The attempt that finished the chunk is the last one to come (the
            // controller cancels the others), and it cannot go on from here.
            (None, Some(pts)) => Err(AssembleError::NoHandover { chunk, pts }),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Debug, Default)]
pub struct Assembler {
    head: u32,
    chunks: BTreeMap<u32, Chunk>,
    last: Option<u32>,
    continuity: Continuity,
    out: Vec<u8>,
    written: u64,
    /// Only finished attempts are written: see [`Assembler::whole_chunks`].
    whole: bool,
    /// Times the written stream went on from another attempt than the one it
    /// came from, at a keyframe.
    handovers: u32,
}

impl Assembler {
    /// An assembler that writes the head chunk one keyframe interval at a
    /// time: for chunks whose keyframes fall on the same frames in every
    /// attempt (the module's documentation says why).
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// An assembler that writes a chunk only once an attempt has finished it,
    /// so that any attempt may fail without harm even when the attempts of a
    /// chunk do not share their keyframes: live pieces (a keyframe only at the
    /// start) and chunks of outputs without forced keyframes.
    pub fn whole_chunks() -> Assembler {
        Assembler { whole: true, ..Assembler::default() }
    }

    pub fn started(&mut self, chunk: u32, attempt: JobId, last: bool) {
        if chunk < self.head {
            return;
        }
        let c = self.chunks.entry(chunk).or_default();
        c.attempts.entry(attempt).or_default();
        if last {
            self.last = Some(chunk);
        }
    }

    pub fn data(&mut self, chunk: u32, attempt: JobId, offset: u64, bytes: &[u8]) -> Result<(), AssembleError> {
        if chunk < self.head {
            return Ok(());
        }
        let a = self.attempt(chunk, attempt)?;
        if offset != a.bytes.len() as u64 {
            return Err(AssembleError::Gap { chunk, offset, have: a.bytes.len() as u64 });
        }
        a.bytes.extend_from_slice(bytes);
        a.scan();
        self.pump()
    }

    pub fn done(&mut self, chunk: u32, attempt: JobId, size: u64) -> Result<(), AssembleError> {
        if chunk < self.head {
            return Ok(());
        }
        let a = self.attempt(chunk, attempt)?;
        if a.bytes.len() as u64 != size {
            return Err(AssembleError::Size { chunk, attempt, size, have: a.bytes.len() as u64 });
        }
        a.done = true;
        self.pump()
    }

    /// An attempt failed or lost the race: its bytes are dropped. What was
    /// written of it ends at a keyframe every attempt holds, so another attempt
    /// of the chunk (running, or the next one) goes on from there.
    pub fn failed(&mut self, chunk: u32, attempt: JobId) -> Result<(), AssembleError> {
        if chunk < self.head {
            return Ok(());
        }
        if let Some(c) = self.chunks.get_mut(&chunk) {
            c.attempts.remove(&attempt);
        }
        self.pump()
    }

    /// Every attempt still running is dropped, as if each had failed: the
    /// cluster that ran them is gone, and new attempts (the shim's own) take
    /// over from where the written stream stopped.
    pub fn drop_running(&mut self) -> Result<(), AssembleError> {
        for c in self.chunks.values_mut() {
            c.attempts.retain(|_, a| a.done);
        }
        self.pump()
    }

    /// Whether `chunk` needs no more attempts: it was written, or an attempt
    /// finished it.
    pub fn has(&self, chunk: u32) -> bool {
        chunk < self.head || self.chunks.get(&chunk).is_some_and(|c| c.attempts.values().any(|a| a.done))
    }

    /// Bytes for the finisher, in order; empty when nothing new is ready.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Every chunk up to the last one has been handed out.
    pub fn complete(&self) -> bool {
        self.last.is_some_and(|l| self.head > l)
    }

    /// Bytes handed out so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The chunk the finisher waits for.
    pub fn head(&self) -> u32 {
        self.head
    }

    /// How often the written stream went on from another attempt of a chunk
    /// than the one it had come from so far.
    pub fn handovers(&self) -> u32 {
        self.handovers
    }

    fn attempt(&mut self, chunk: u32, attempt: JobId) -> Result<&mut Attempt, AssembleError> {
        self.chunks
            .get_mut(&chunk)
            .and_then(|c| c.attempts.get_mut(&attempt))
            .ok_or(AssembleError::Unknown { chunk, attempt })
    }

    /// Queues whole packets for the finisher (every range written ends at a
    /// keyframe or at the end of a finished attempt, which the controller
    /// checked ends on a packet boundary).
    fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let at = self.out.len();
        self.out.extend_from_slice(bytes);
        let whole = (self.out.len() - at) / PACKET * PACKET;
        self.continuity.fix(&mut self.out[at..at + whole]);
        self.written += bytes.len() as u64;
    }

    fn pump(&mut self) -> Result<(), AssembleError> {
        loop {
            let head = self.head;
            let Some(c) = self.chunks.get_mut(&head) else { return Ok(()) };
            let Some(step) = c.step(head, self.whole)? else { return Ok(()) };
            if c.source.is_some_and(|s| s != step.from) && c.at.is_some() {
                self.handovers += 1;
            }
            c.source = Some(step.from);
            c.at = step.then;
            let bytes = c.attempts[&step.from].bytes[step.range].to_vec();
            self.emit(&bytes);
            if step.then.is_some() {
                // The attempt furthest ahead went as far as it can.
                return Ok(());
            }
            self.chunks.remove(&head);
            self.head += 1;
            if self.last == Some(head) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::mpegts::Verifier;
    use crate::split::mpegts::tests::{packet, pes_header, ts_packet};

    /// A chunk's stream: PAT, then `gops` keyframe intervals of `len` packets
    /// starting at `pts0`, 3 s apart; every packet carries its GOP number.
    fn chunk(pts0: u64, gops: u64, len: usize) -> Vec<u8> {
        let mut s = packet(0, 0, None);
        for g in 0..gops {
            let mut k = packet(256, 0, Some(pts0 + g * 270_000));
            k[PACKET - 1] = g as u8;
            s.extend(k);
            for _ in 1..len {
                s.extend(packet(256, 0, None));
            }
        }
        s
    }

    fn feed(a: &mut Assembler, c: u32, id: JobId, bytes: &[u8], step: usize) {
        for (i, piece) in bytes.chunks(step).enumerate() {
            a.data(c, id, (i * step) as u64, piece).unwrap();
        }
    }

    fn feed_from(a: &mut Assembler, c: u32, id: JobId, bytes: &[u8], from: usize) {
        a.data(c, id, from as u64, &bytes[from..]).unwrap();
    }

    fn pts_of(stream: &[u8]) -> Vec<u64> {
        mpegts::keyframes(stream, 0).iter().map(|k| k.pts).collect()
    }

    #[test]
    fn chunks_come_out_in_order_and_the_head_streams_by_keyframe_interval() {
        let mut a = Assembler::new();
        a.started(0, 10, false);
        a.started(1, 11, true);
        let (c0, c1) = (chunk(0, 2, 3), chunk(540_000, 1, 3));
        feed(&mut a, 1, 11, &c1, 100);
        a.done(1, 11, c1.len() as u64).unwrap();
        assert!(a.take().is_empty(), "chunk 1 waits for chunk 0");
        // The PAT and the first keyframe's packet: up to that keyframe.
        feed(&mut a, 0, 10, &c0[..400], 100);
        assert_eq!(a.take().len(), 188, "written up to the newest keyframe");
        // The second keyframe arrives: the first interval goes out.
        feed_from(&mut a, 0, 10, &c0[..5 * 188 + 10], 400);
        assert_eq!(a.take().len(), 3 * 188);
        feed_from(&mut a, 0, 10, &c0, 5 * 188 + 10);
        assert!(a.take().is_empty(), "the last interval waits for the attempt's end");
        a.done(0, 10, c0.len() as u64).unwrap();
        let out = a.take();
        assert_eq!(out.len() + 4 * 188, c0.len() + c1.len());
        assert!(a.complete());
        assert_eq!(a.written(), (c0.len() + c1.len()) as u64);
    }

    #[test]
    fn a_reissue_that_finishes_first_takes_over_where_the_stream_stopped() {
        let mut a = Assembler::new();
        a.started(0, 1, true);
        let slow = chunk(0, 3, 4);
        // The slow attempt has sent its first interval and part of the second:
        // the first is written.
        feed(&mut a, 0, 1, &slow[..188 * 7], 188);
        let mut out = a.take();
        assert_eq!(out.len(), 188 * 5);
        a.started(0, 2, true);
        let mut fast = chunk(0, 3, 4);
        fast[188 * 6 + 100] = 0xaa; // tell the attempts apart
        feed(&mut a, 0, 2, &fast, 188);
        // Ahead of the slow one: it writes up to its newest keyframe already.
        out.extend(a.take());
        assert_eq!(out.len(), 188 * 9);
        a.done(0, 2, fast.len() as u64).unwrap();
        out.extend(a.take());
        assert!(a.complete());
        // The controller cancels the loser; nothing changes.
        a.failed(0, 1).unwrap();
        assert_eq!(pts_of(&out), [0, 270_000, 540_000]);
        assert_eq!((out.len(), out[188 * 6 + 100]), (fast.len(), 0xaa), "the second interval is the fast one's");
        assert_eq!(a.handovers(), 1);
    }

    #[test]
    fn an_attempt_that_dies_mid_interval_is_continued_by_the_next() {
        let mut a = Assembler::new();
        a.started(0, 1, false);
        a.started(1, 2, true);
        let (c0, c1) = (chunk(0, 1, 3), chunk(270_000, 3, 3));
        // Chunk 1 dies before it is the head; chunk 0's attempt dies while
        // streamed, between two keyframes.
        feed(&mut a, 1, 2, &c1[..188 * 5], 188);
        a.failed(1, 2).unwrap();
        feed(&mut a, 0, 1, &c0[..188 * 2], 100);
        a.failed(0, 1).unwrap();
        let mut out = a.take();
        assert_eq!(out.len(), 188, "the PAT before the first keyframe");
        a.started(0, 4, false);
        a.started(1, 3, true);
        feed(&mut a, 1, 3, &c1[..188 * 6], 188);
        a.failed(1, 3).unwrap();
        a.started(1, 5, true);
        feed(&mut a, 0, 4, &c0, 188);
        a.done(0, 4, c0.len() as u64).unwrap();
        out.extend(a.take());
        // Chunk 1 is the head: its new attempt goes on where attempt 3 would have.
        feed(&mut a, 1, 5, &c1, 188);
        a.done(1, 5, c1.len() as u64).unwrap();
        out.extend(a.take());
        assert_eq!(pts_of(&out), [0, 270_000, 540_000, 810_000]);
        assert_eq!(out.len(), c0.len() + c1.len());
        assert!(a.complete());
        // Before anything was written a failure costs nothing either.
        let mut c = Assembler::new();
        c.started(0, 1, true);
        c.failed(0, 1).unwrap();
        assert!(c.take().is_empty());
    }

    #[test]
    fn a_finished_attempt_without_the_keyframe_to_go_on_from_is_an_error() {
        let mut a = Assembler::new();
        a.started(0, 1, true);
        a.started(0, 2, true);
        let c = chunk(0, 3, 3);
        feed(&mut a, 0, 1, &c[..188 * 5], 188);
        let other = chunk(90_000, 3, 3);
        feed(&mut a, 0, 2, &other, 188);
        assert_eq!(a.done(0, 2, other.len() as u64), Err(AssembleError::NoHandover { chunk: 0, pts: 270_000 }));
    }

    #[test]
    fn whole_chunks_wait_for_an_attempt_to_finish_and_survive_its_failure() {
        let c0 = chunk(0, 2, 6);
        let mut a = Assembler::whole_chunks();
        a.started(0, 1, true);
        a.started(0, 2, true);
        feed(&mut a, 0, 1, &c0[..c0.len() / 2], 100);
        assert!(a.take().is_empty(), "nothing of a running attempt is written");
        // The attempt that was ahead fails mid-chunk: no harm, the other finishes it.
        a.failed(0, 1).unwrap();
        feed(&mut a, 0, 2, &c0, 100);
        a.done(0, 2, c0.len() as u64).unwrap();
        let out = a.take();
        assert_eq!((out.len(), pts_of(&out)), (c0.len(), pts_of(&c0)));
        assert!(a.complete());
    }

    #[test]
    fn running_attempts_dropped_at_once_are_taken_over_by_new_ones() {
        let mut a = Assembler::new();
        a.started(0, 1, false);
        a.started(1, 2, false);
        a.started(2, 3, true);
        let (c0, c1, c2) = (chunk(0, 3, 3), chunk(810_000, 2, 3), chunk(1_350_000, 1, 3));
        // Chunk 0 streamed to its second keyframe, chunk 1 finished ahead of it,
        // chunk 2 half done: then the cluster is gone.
        feed(&mut a, 0, 1, &c0[..188 * 5], 188);
        feed(&mut a, 1, 2, &c1, 188);
        a.done(1, 2, c1.len() as u64).unwrap();
        feed(&mut a, 2, 3, &c2[..188 * 2], 188);
        a.drop_running().unwrap();
        assert!(!a.has(0) && a.has(1) && !a.has(2));
        let mut out = a.take();
        // The shim's own attempts of what is missing.
        a.started(0, 100, false);
        feed(&mut a, 0, 100, &c0, 188);
        a.done(0, 100, c0.len() as u64).unwrap();
        a.started(2, 101, true);
        feed(&mut a, 2, 101, &c2, 188);
        a.done(2, 101, c2.len() as u64).unwrap();
        out.extend(a.take());
        assert_eq!(pts_of(&out), [0, 270_000, 540_000, 810_000, 1_080_000, 1_350_000]);
        assert_eq!(out.len(), c0.len() + c1.len() + c2.len());
        assert!(a.complete() && a.has(2));
    }

    #[test]
    fn bytes_out_of_place_are_refused() {
        let mut a = Assembler::new();
        a.started(0, 1, false);
        assert!(matches!(a.data(0, 1, 5, b"x"), Err(AssembleError::Gap { .. })));
        assert!(matches!(a.data(3, 9, 0, b"x"), Err(AssembleError::Unknown { .. })));
        assert!(matches!(a.done(0, 1, 7), Err(AssembleError::Size { .. })));
    }

    /// splitmix64: reproducible randomness without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    const VIDEO: u16 = 256;
    const FRAME: u64 = 3600;

    /// One encode of a chunk: frames `first..first + count`, a keyframe at each
    /// of `keys` (frame numbers), PAT and PMT before each keyframe as ffmpeg's
    /// muxer writes them. Every attempt makes frames of its own sizes (1 to 4
    /// packets) and marks each video packet's last byte with `tag`: attempts of
    /// one chunk hold the same frames and keyframes but different bytes, as two
    /// nodes' encodes do.
    fn encode(first: u64, count: u64, keys: &[u64], tag: u8, rng: &mut Rng) -> Vec<u8> {
        let mut s = Vec::new();
        let mut cc = [0u8; 3];
        let mut put = |s: &mut Vec<u8>, which: usize, mut p: Vec<u8>| {
            p[3] = (p[3] & 0xf0) | cc[which];
            cc[which] = (cc[which] + 1) & 0x0f;
            s.extend(p);
        };
        for f in first..first + count {
            let key = keys.contains(&f);
            if key {
                put(&mut s, 0, ts_packet(0, 0, true, false, &[0, 0]));
                put(&mut s, 1, ts_packet(4096, 0, true, false, &[0, 2]));
            }
            let mut p = ts_packet(VIDEO, 0, true, key, &pes_header(f * FRAME, None));
            p[PACKET - 1] = tag;
            put(&mut s, 2, p);
            for _ in 0..rng.below(4) {
                let mut p = ts_packet(VIDEO, 0, false, false, &[]);
                p[PACKET - 1] = tag;
                put(&mut s, 2, p);
            }
        }
        s
    }

    /// Checks a joined stream: valid continuity throughout, every frame of
    /// `0..frames` once and in order, and each keyframe interval from one
    /// attempt (the same tag on all its video packets).
    fn check(out: &[u8], frames: u64, what: &str) {
        let mut v = Verifier::default();
        v.feed(out).unwrap_or_else(|e| panic!("{what}: {e}"));
        v.finish(Some(frames)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut pts = Vec::new();
        let mut tag = None;
        for p in out.chunks_exact(PACKET) {
            if mpegts::pid(p) != VIDEO {
                continue;
            }
            if mpegts::random_access(p) {
                tag = Some(p[PACKET - 1]);
            }
            assert_eq!(Some(p[PACKET - 1]), tag, "{what}: an interval mixes two attempts");
            if p[1] & 0x40 != 0 {
                let pes = &p[mpegts::payload_start(p).unwrap()..];
                pts.push(mpegts::timestamp(&pes[9..14]) / FRAME);
            }
        }
        assert_eq!(pts, (0..frames).collect::<Vec<_>>(), "{what}");
    }

    /// A job of random chunks, each attempt of which may be killed at any
    /// byte, frozen, raced by a re-issue that wins or loses, with bytes
    /// arriving in random pieces and the attempts' messages interleaved as the
    /// controller sends them: the joined stream is always the clean one.
    fn random_job(seed: u64, whole: bool) -> u32 {
        let mut rng = Rng(seed);
        // The chunks: (first frame, frames, keyframes).
        let mut plan = Vec::new();
        let mut f = 0;
        for _ in 0..1 + rng.below(5) {
            let n = 1 + rng.below(40);
            let mut keys = vec![f];
            let gop = 1 + rng.below(8);
            keys.extend((f + gop..f + n).step_by(gop as usize));
            plan.push((f, n, keys));
            f += n;
        }
        let frames = f;
        let last = plan.len() - 1;
        let mut a = if whole { Assembler::whole_chunks() } else { Assembler::new() };
        // Running attempts: (chunk, id, stream, sent, frozen).
        let mut running: Vec<(usize, JobId, Vec<u8>, usize, bool)> = Vec::new();
        let mut done = vec![false; plan.len()];
        let mut next_id: JobId = 1;
        let mut out = Vec::new();
        let mut start = |c: usize, running: &mut Vec<_>, a: &mut Assembler, rng: &mut Rng| {
            let (first, n, keys) = &plan[c];
            let id = next_id;
            next_id += 1;
            a.started(c as u32, id, c == last);
            running.push((c, id, encode(*first, *n, keys, id as u8, rng), 0, false));
        };
        for c in 0..plan.len() {
            start(c, &mut running, &mut a, &mut rng);
        }
        let mut rounds = 0;
        while done.iter().any(|d| !d) {
            rounds += 1;
            assert!(rounds < 100_000, "seed {seed}: no progress");
            // Chunks without an attempt get one; a chunk with one may get a
            // re-issue (at most two run, as the controller has it).
            for (c, &finished) in done.iter().enumerate() {
                let n = running.iter().filter(|r| r.0 == c).count();
                if !finished && (n == 0 || (n == 1 && rng.chance(2))) {
                    start(c, &mut running, &mut a, &mut rng);
                }
            }
            let i = rng.below(running.len() as u64) as usize;
            let (c, id) = (running[i].0, running[i].1);
            match rng.below(100) {
                // Killed (or lost its node) at whatever byte it had sent.
                0..=2 => {
                    running.remove(i);
                    a.failed(c as u32, id).unwrap();
                }
                // Frozen: it sends nothing more until the controller gives up on it.
                3..=4 => running[i].4 = true,
                5 if running[i].4 => {
                    running.remove(i);
                    a.failed(c as u32, id).unwrap();
                }
                _ if running[i].4 => {}
                _ => {
                    let r = &mut running[i];
                    let piece = (1 + rng.below(700) as usize).min(r.2.len() - r.3);
                    a.data(c as u32, id, r.3 as u64, &r.2[r.3..r.3 + piece]).unwrap();
                    r.3 += piece;
                    if r.3 == r.2.len() {
                        let size = r.2.len() as u64;
                        running.remove(i);
                        a.done(c as u32, id, size).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                        done[c] = true;
                        // The controller cancels the losers.
                        let losers: Vec<JobId> = running.iter().filter(|r| r.0 == c).map(|r| r.1).collect();
                        running.retain(|r| r.0 != c);
                        for l in losers {
                            a.failed(c as u32, l).unwrap();
                        }
                    }
                }
            }
            out.extend(a.take());
        }
        assert!(a.complete(), "seed {seed}");
        check(&out, frames, &format!("seed {seed}"));
        a.handovers()
    }

    #[test]
    fn any_attempt_may_die_freeze_or_lose_and_the_joined_stream_is_the_clean_one() {
        let handovers: u32 = (0..400).map(|seed| random_job(seed, false)).sum();
        assert!(handovers > 100, "the runs hand over mid-chunk: {handovers}");
        for seed in 0..100 {
            random_job(seed, true);
        }
    }
}
