//! Which node runs a job: a pure function of the nodes' capabilities and load.

use std::cmp::Ordering;

use crate::ffmpeg::decision::Needs;
use crate::protocol::Capabilities;

/// A connected node as the scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub id: u64,
    pub name: &'a str,
    pub slots: u32,
    pub running: u32,
    pub caps: &'a Capabilities,
}

impl Candidate<'_> {
    fn free(&self) -> bool {
        self.running < self.slots
    }
}

/// Why a job cannot be placed; the text goes to the shim, which runs the job
/// locally, and to the log.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoPlacement {
    #[error("no nodes connected")]
    NoNodes,
    /// What every connected node lacks.
    #[error("no node has {}", .0.join(", "))]
    Missing(Vec<String>),
    /// Each requirement is met somewhere, but never all on one node.
    #[error("no single node has everything the job needs: {}", describe_lacks(.0))]
    Scattered(Vec<(String, Vec<String>)>),
    #[error("all {0} capable nodes are busy")]
    Busy(usize),
}

fn describe_lacks(lacks: &[(String, Vec<String>)]) -> String {
    lacks.iter().map(|(node, missing)| format!("{node} lacks {}", missing.join(", "))).collect::<Vec<_>>().join("; ")
}

/// Picks the node for a job needing `needs`. Eligible nodes have everything the
/// job needs; among those with a free slot the least loaded (running/slots) wins,
/// then the fastest, then the longest connected (lowest id), so the choice is
/// deterministic.
pub fn choose(nodes: &[Candidate<'_>], needs: &Needs) -> Result<u64, NoPlacement> {
    let eligible = eligible(nodes, needs)?;
    eligible
        .iter()
        .filter(|n| n.free())
        .min_by(|a, b| better(a, b))
        .map(|n| n.id)
        .ok_or(NoPlacement::Busy(eligible.len()))
}

/// The nodes that have everything `needs` asks for, busy or not; the error says
/// why there are none. Split jobs use it alone: they wait for a free slot.
pub fn eligible<'n, 'a>(nodes: &'n [Candidate<'a>], needs: &Needs) -> Result<Vec<&'n Candidate<'a>>, NoPlacement> {
    if nodes.is_empty() {
        return Err(NoPlacement::NoNodes);
    }
    let mut lacks = Vec::new();
    let mut eligible = Vec::new();
    for n in nodes {
        let missing = n.caps.missing(needs);
        if missing.is_empty() {
            eligible.push(n);
        } else {
            lacks.push((n.name.to_owned(), missing));
        }
    }
    if eligible.is_empty() {
        let everywhere: Vec<String> =
            lacks[0].1.iter().filter(|m| lacks.iter().all(|(_, l)| l.contains(m))).cloned().collect();
        return Err(if everywhere.is_empty() {
            NoPlacement::Scattered(lacks)
        } else {
            NoPlacement::Missing(everywhere)
        });
    }
    Ok(eligible)
}

/// `Less` when `a` should get the job before `b`.
fn better(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    // running/slots compared without division; slots > 0 for free nodes.
    let load = (u64::from(a.running) * u64::from(b.slots)).cmp(&(u64::from(b.running) * u64::from(a.slots)));
    load.then_with(|| b.caps.speed.total_cmp(&a.caps.speed)).then_with(|| a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(encoders: &[&str], speed: f64) -> Capabilities {
        Capabilities { encoders: encoders.iter().map(|s| s.to_string()).collect(), speed, ..Default::default() }
    }

    fn needs(encoders: &[&str]) -> Needs {
        Needs { encoders: encoders.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn cand<'a>(id: u64, name: &'a str, slots: u32, running: u32, caps: &'a Capabilities) -> Candidate<'a> {
        Candidate { id, name, slots, running, caps }
    }

    #[test]
    fn no_nodes() {
        assert_eq!(choose(&[], &needs(&[])), Err(NoPlacement::NoNodes));
        assert_eq!(NoPlacement::NoNodes.to_string(), "no nodes connected");
    }

    #[test]
    fn missing_everywhere_is_named() {
        let c = caps(&["libx264"], 100.0);
        let nodes = [cand(1, "a", 2, 0, &c), cand(2, "b", 2, 0, &c)];
        let err = choose(&nodes, &needs(&["libx264", "h264_nvenc"])).unwrap_err();
        assert_eq!(err.to_string(), "no node has encoder h264_nvenc");
    }

    #[test]
    fn scattered_requirements_are_explained_per_node() {
        let a = caps(&["libx264"], 100.0);
        let b = caps(&["h264_nvenc"], 100.0);
        let nodes = [cand(1, "a", 2, 0, &a), cand(2, "b", 2, 0, &b)];
        let err = choose(&nodes, &needs(&["libx264", "h264_nvenc"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no single node has everything the job needs: a lacks encoder h264_nvenc; b lacks encoder libx264"
        );
    }

    #[test]
    fn busy_when_every_capable_node_is_full() {
        let c = caps(&["libx264"], 100.0);
        let weak = caps(&[], 999.0);
        let nodes = [cand(1, "a", 1, 1, &c), cand(2, "b", 2, 2, &c), cand(3, "c", 4, 0, &weak)];
        let err = choose(&nodes, &needs(&["libx264"])).unwrap_err();
        assert_eq!(err, NoPlacement::Busy(2));
        assert_eq!(err.to_string(), "all 2 capable nodes are busy");
    }

    #[test]
    fn least_loaded_wins_then_fastest() {
        let slow = caps(&["libx264"], 50.0);
        let fast = caps(&["libx264"], 200.0);
        // a: 1/4 loaded, b: 1/2 loaded but faster: load comes first.
        let nodes = [cand(1, "a", 4, 1, &slow), cand(2, "b", 2, 1, &fast)];
        assert_eq!(choose(&nodes, &needs(&["libx264"])), Ok(1));
        // Same load: the faster one.
        let nodes = [cand(1, "a", 2, 1, &slow), cand(2, "b", 4, 2, &fast)];
        assert_eq!(choose(&nodes, &needs(&["libx264"])), Ok(2));
        // Same load and speed: the older one.
        let nodes = [cand(7, "a", 2, 0, &fast), cand(3, "b", 2, 0, &fast)];
        assert_eq!(choose(&nodes, &needs(&[])), Ok(3));
    }

    #[test]
    fn ineligible_and_full_nodes_are_skipped() {
        let gpu = caps(&["h264_nvenc", "libx264"], 10.0);
        let cpu = caps(&["libx264"], 500.0);
        let nodes = [cand(1, "cpu", 8, 0, &cpu), cand(2, "gpu-full", 1, 1, &gpu), cand(3, "gpu", 2, 1, &gpu)];
        assert_eq!(choose(&nodes, &needs(&["h264_nvenc"])), Ok(3));
        // A node announcing no slots never takes a job.
        let nodes = [cand(1, "zero", 0, 0, &cpu)];
        assert_eq!(choose(&nodes, &needs(&[])), Err(NoPlacement::Busy(1)));
    }
}
