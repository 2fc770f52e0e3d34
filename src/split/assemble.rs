//! Joins the chunks of a split job into the one stream the finisher reads, in
//! timeline order, whatever order the attempts' bytes arrive in.
//!
//! A chunk that is next in line (the *head*) is streamed as it arrives, from one
//! attempt (the committed one), so that the finisher can publish segment 0 about
//! when a direct run would. When a chunk has several attempts (a late chunk was
//! re-issued), the first to finish wins: if the committed attempt is behind, the
//! stream hands over to the winner at the next keyframe the committed attempt
//! reaches, where both encodes carry the same frame (chunks force their
//! keyframes on the job's grid). Chunks that are not the head yet are buffered.

use std::collections::BTreeMap;

use super::mpegts::{self, Continuity, Keyframe, PACKET};
use crate::protocol::JobId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("chunk {chunk}: bytes at offset {offset} do not follow the {have} received")]
    Gap { chunk: u32, offset: u64, have: u64 },
    #[error("chunk {chunk}: attempt {attempt} ended with {size} bytes but {have} arrived")]
    Size { chunk: u32, attempt: JobId, size: u64, have: u64 },
    #[error("chunk {chunk}: the attempt being streamed failed part-way through a keyframe interval")]
    Broken { chunk: u32 },
    #[error("chunk {chunk}: the winning attempt has no keyframe at {pts} to continue from")]
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

    /// Bytes that may be written: whole packets, or everything once done.
    fn ready(&self) -> usize {
        if self.done { self.bytes.len() } else { self.bytes.len() / PACKET * PACKET }
    }
}

#[derive(Debug, Default)]
struct Chunk {
    attempts: BTreeMap<JobId, Attempt>,
    /// The attempt being streamed, and how many of its bytes are written.
    committed: Option<(JobId, usize)>,
    /// After the committed attempt failed at a keyframe: the keyframe to go on
    /// from, in whichever attempt reaches it.
    resume: Option<u64>,
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
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// An assembler that writes a chunk only once an attempt has finished it,
    /// so that any attempt may fail without harm. For live pieces: each has a
    /// keyframe only at its start, so a streamed one that broke could not be
    /// handed over, and the job would be lost with its node.
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

    /// An attempt failed or lost the race. Fatal only when its stream was being
    /// written and stopped between two keyframes.
    pub fn failed(&mut self, chunk: u32, attempt: JobId) -> Result<(), AssembleError> {
        if chunk < self.head {
            return Ok(());
        }
        let c = self.chunks.entry(chunk).or_default();
        let Some(a) = c.attempts.remove(&attempt) else { return Ok(()) };
        if let Some((id, written)) = c.committed
            && id == attempt
        {
            c.committed = None;
            if written > 0 {
                // Another attempt takes over from the keyframe where this one
                // stopped, if it stopped at one.
                let k = a.keyframes.iter().find(|k| k.offset == written);
                c.resume = Some(k.ok_or(AssembleError::Broken { chunk })?.pts);
            }
        }
        self.pump()
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

    fn attempt(&mut self, chunk: u32, attempt: JobId) -> Result<&mut Attempt, AssembleError> {
        self.chunks
            .get_mut(&chunk)
            .and_then(|c| c.attempts.get_mut(&attempt))
            .ok_or(AssembleError::Unknown { chunk, attempt })
    }

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
            if c.committed.is_none()
                && let Some(pts) = c.resume
            {
                let from = c
                    .attempts
                    .iter()
                    .find_map(|(id, a)| a.keyframes.iter().find(|k| k.pts == pts).map(|k| (*id, k.offset)));
                match from {
                    Some(f) => {
                        c.committed = Some(f);
                        c.resume = None;
                    }
                    None if c.attempts.values().any(|a| a.done) => {
                        return Err(AssembleError::NoHandover { chunk: head, pts });
                    }
                    None => return Ok(()),
                }
            }
            if c.committed.is_none() {
                let whole = self.whole;
                let pick = c
                    .attempts
                    .iter()
                    .max_by_key(|(id, a)| (a.done, a.bytes.len(), std::cmp::Reverse(**id)))
                    .filter(|(_, a)| a.done || (!whole && !a.bytes.is_empty()))
                    .map(|(id, _)| *id);
                match pick {
                    Some(id) => c.committed = Some((id, 0)),
                    None => return Ok(()),
                }
            }
            let (id, written) = c.committed.expect("committed above");
            let winner = c.attempts.iter().find(|(other, a)| **other != id && a.done).map(|(o, _)| *o);
            let a = &c.attempts[&id];
            let (upto, handover) = match winner {
                Some(w) if !a.done => {
                    // Write up to the committed attempt's next keyframe, then
                    // hand over to the winner there.
                    match a.keyframes.iter().find(|k| k.offset >= written) {
                        Some(k) => (k.offset, Some((w, k.pts))),
                        None => (written, None),
                    }
                }
                _ => (a.ready(), None),
            };
            let bytes = a.bytes[written..upto].to_vec();
            let finished = a.done && upto == a.bytes.len();
            self.emit(&bytes);
            let c = self.chunks.get_mut(&head).expect("head exists");
            c.committed = Some((id, upto));
            if let Some((w, pts)) = handover {
                let k = c.attempts[&w].keyframes.iter().find(|k| k.pts == pts).copied();
                let Some(k) = k else { return Err(AssembleError::NoHandover { chunk: head, pts }) };
                c.committed = Some((w, k.offset));
                continue;
            }
            if finished {
                self.chunks.remove(&head);
                self.head += 1;
                if self.last == Some(head) {
                    return Ok(());
                }
                continue;
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::mpegts::tests::packet;

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

    fn pts_of(stream: &[u8]) -> Vec<u64> {
        mpegts::keyframes(stream, 0).iter().map(|k| k.pts).collect()
    }

    #[test]
    fn chunks_come_out_in_order_and_the_head_streams() {
        let mut a = Assembler::new();
        a.started(0, 10, false);
        a.started(1, 11, true);
        let (c0, c1) = (chunk(0, 2, 3), chunk(540_000, 1, 3));
        feed(&mut a, 1, 11, &c1, 100);
        a.done(1, 11, c1.len() as u64).unwrap();
        assert!(a.take().is_empty(), "chunk 1 waits for chunk 0");
        feed(&mut a, 0, 10, &c0[..400], 100);
        assert_eq!(a.take().len(), 376, "whole packets of the head stream at once");
        feed_from(&mut a, 0, 10, &c0, 400);
        a.done(0, 10, c0.len() as u64).unwrap();
        let out = a.take();
        assert_eq!(out.len() + 376, c0.len() + c1.len());
        assert!(a.complete());
        assert_eq!(a.written(), (c0.len() + c1.len()) as u64);
    }

    fn feed_from(a: &mut Assembler, c: u32, id: JobId, bytes: &[u8], from: usize) {
        a.data(c, id, from as u64, &bytes[from..]).unwrap();
    }

    #[test]
    fn a_faster_second_attempt_takes_over_at_a_keyframe() {
        let mut a = Assembler::new();
        a.started(0, 1, true);
        let slow = chunk(0, 3, 4);
        // The slow attempt has sent its first interval and part of the second.
        feed(&mut a, 0, 1, &slow[..188 * 7], 188);
        a.started(0, 2, true);
        let fast = chunk(0, 3, 4);
        feed(&mut a, 0, 2, &fast, 188);
        a.done(0, 2, fast.len() as u64).unwrap();
        let mut out = a.take();
        assert!(!a.complete(), "the slow attempt is mid-interval: wait for its next keyframe");
        // The slow attempt reaches its next keyframe: hand over there.
        a.data(0, 1, (188 * 7) as u64, &slow[188 * 7..188 * 10]).unwrap();
        out.extend(a.take());
        assert!(a.complete());
        assert_eq!(pts_of(&out), [0, 270_000, 540_000]);
        assert_eq!(out.len(), slow.len());
        a.failed(0, 1).unwrap();
    }

    #[test]
    fn a_failed_attempt_is_replaced_unless_it_was_being_streamed() {
        let mut a = Assembler::new();
        a.started(0, 1, false);
        a.started(1, 2, true);
        let (c0, c1) = (chunk(0, 1, 3), chunk(270_000, 2, 3));
        feed(&mut a, 1, 2, &c1[..188 * 5], 188);
        a.failed(1, 2).unwrap();
        a.started(1, 3, true);
        feed(&mut a, 1, 3, &c1, 188);
        a.done(1, 3, c1.len() as u64).unwrap();
        feed(&mut a, 0, 1, &c0, 188);
        a.done(0, 1, c0.len() as u64).unwrap();
        let out = a.take();
        assert_eq!(pts_of(&out), [0, 270_000, 540_000]);
        assert!(a.complete());

        let mut b = Assembler::new();
        b.started(0, 1, true);
        feed(&mut b, 0, 1, &c1[..188 * 5], 188);
        assert_eq!(b.failed(0, 1), Err(AssembleError::Broken { chunk: 0 }));
        // Before anything was written a failure costs nothing.
        let mut c = Assembler::new();
        c.started(0, 1, true);
        c.failed(0, 1).unwrap();
        assert!(c.take().is_empty());
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
    fn bytes_out_of_place_are_refused() {
        let mut a = Assembler::new();
        a.started(0, 1, false);
        assert!(matches!(a.data(0, 1, 5, b"x"), Err(AssembleError::Gap { .. })));
        assert!(matches!(a.data(3, 9, 0, b"x"), Err(AssembleError::Unknown { .. })));
        assert!(matches!(a.done(0, 1, 7), Err(AssembleError::Size { .. })));
    }
}
