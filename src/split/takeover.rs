//! What is left of a split job when the cluster loses it after its output
//! became visible: the encodes the shim then runs itself, with the nodes' own
//! command lines, so that the finisher, still running, gets exactly what the
//! cluster would have sent (the shim's `local_chunks` runs them).

use std::collections::BTreeMap;

use super::SplitPlan;
use crate::plan::{Chunk, Planner, Sizing};
use crate::protocol::{AUDIO_CHUNK, JobId};

/// Attempt ids of this machine's encodes: far above any the controller hands out.
pub const FIRST_ATTEMPT: JobId = 1 << 62;

/// Seconds of output per chunk planned here (a chunk the cluster never started).
const CHUNK_SECONDS: f64 = 30.0;

/// One encode to run here: a video chunk, or the audio track ([`AUDIO_CHUNK`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub chunk: u32,
    pub attempt: JobId,
    pub last: bool,
    pub args: Vec<String>,
}

/// A chunk the controller announced: its span and whether it ends the job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Announced {
    pub start: f64,
    pub end: f64,
    pub last: bool,
}

/// The encodes that finish the job: each announced chunk no attempt finished
/// (`has` says which are had), the rest of the timeline after the newest
/// announced chunk in chunks of its own, and the audio track unless `audio_done`.
pub fn remaining(
    plan: &SplitPlan,
    announced: &BTreeMap<u32, Announced>,
    has: impl Fn(u32) -> bool,
    audio_done: bool,
) -> Vec<Work> {
    let mut spans: Vec<(u32, Chunk, bool)> = announced
        .iter()
        .map(|(&i, a)| (i, Chunk { index: i as usize, start: a.start, end: a.end, first_segment: 0 }, a.last))
        .collect();
    let newest = announced.iter().next_back();
    if newest.is_none_or(|(_, a)| !a.last) {
        let (mut index, from) = newest.map_or((0, plan.start), |(&i, a)| (i + 1, a.end));
        let sizing = Sizing { first: 1, small_chunks: 0, max_seconds: CHUNK_SECONDS, nodes: 1 };
        let mut planner = Planner::new(plan.grid, from, plan.end, 0, sizing);
        while let Some(mut c) = planner.next(1.0, 0.0) {
            c.index = index as usize;
            spans.push((index, c, c.end >= plan.end - 1e-9));
            index += 1;
        }
    }
    let mut work: Vec<Work> = spans
        .into_iter()
        .filter(|(i, _, _)| !has(*i))
        .map(|(i, c, last)| Work { chunk: i, attempt: 0, last, args: plan.recipe.args(&c, i == 0, last) })
        .collect();
    if let Some(audio) = plan.audio.as_ref().filter(|_| !audio_done) {
        work.push(Work { chunk: AUDIO_CHUNK, attempt: 0, last: false, args: plan.recipe.audio_args(audio) });
    }
    for (n, w) in work.iter_mut().enumerate() {
        w.attempt = FIRST_ATTEMPT + n as JobId;
    }
    work
}
