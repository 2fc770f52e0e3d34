//! Capability probe answers uploaded by nodes (`NodeMsg::Probes`), served to
//! shims configured with `probes = "cluster"` so that Jellyfin sees what the
//! cluster can do, such as a GPU encoder only a node has.
//!
//! Every answer comes from one real node: the connected node with the most
//! hardware (then the most capabilities, then the longest connected). Text
//! outputs of different builds cannot be merged into something ffmpeg would
//! print, and answers from one build agree with each other (`-version` with
//! `-encoders`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::hardware::capability_score;
use crate::protocol::{
    Capabilities, PROBE_CODE_HEADER, PROBE_NODE_HEADER, PROBE_STDOUT_HEADER, ProbeAnswer, parse_probe_query,
};

/// One node's answers.
struct NodeProbes {
    name: String,
    score: (usize, usize),
    answers: HashMap<Vec<String>, ProbeAnswer>,
}

/// The answers of every connected node that sent some, by node id.
#[derive(Default)]
pub(crate) struct ProbeStore {
    nodes: BTreeMap<u64, NodeProbes>,
}

impl ProbeStore {
    pub(crate) fn insert(&mut self, id: u64, name: &str, caps: &Capabilities, answers: Vec<ProbeAnswer>) {
        let score = capability_score(&caps.encoders, &caps.filters, &caps.hwaccels);
        let answers = answers.into_iter().map(|a| (a.args.clone(), a)).collect();
        self.nodes.insert(id, NodeProbes { name: name.to_owned(), score, answers });
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.nodes.remove(&id);
    }

    /// The chosen node's answer to `args`, with the node's name.
    fn answer(&self, args: &[String]) -> Option<(&str, &ProbeAnswer)> {
        // Highest score; on a tie the lowest id, the longest connected.
        let (_, node) = self.nodes.iter().max_by(|(ia, a), (ib, b)| a.score.cmp(&b.score).then(ib.cmp(ia)))?;
        node.answers.get(args).map(|a| (node.name.as_str(), a))
    }
}

/// `GET /api/v1/probes?arg=…`: the answer of the chosen node's ffmpeg.
pub(crate) async fn serve(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let Some(args) = parse_probe_query(query.as_deref().unwrap_or("")) else {
        return (StatusCode::BAD_REQUEST, "the query must be arg=…&arg=…, percent-encoded\n").into_response();
    };
    let store = shared.probes();
    let Some((node, answer)) = store.answer(&args) else {
        return (StatusCode::NOT_FOUND, "no node has answered this probe\n").into_response();
    };
    let mut body = Vec::with_capacity(answer.stdout.len() + answer.stderr.len());
    body.extend_from_slice(answer.stdout.as_bytes());
    body.extend_from_slice(answer.stderr.as_bytes());
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(PROBE_CODE_HEADER, HeaderValue::from(answer.code));
    h.insert(PROBE_STDOUT_HEADER, HeaderValue::from(answer.stdout.len()));
    if let Ok(v) = HeaderValue::from_str(node) {
        h.insert(PROBE_NODE_HEADER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(args: &[&str], out: &str) -> ProbeAnswer {
        ProbeAnswer {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: 0,
            stdout: out.into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn the_most_capable_node_answers() {
        let cpu = Capabilities { encoders: ["libx264".into(), "aac".into()].into(), ..Default::default() };
        let gpu = Capabilities {
            encoders: ["libx264".into(), "h264_vaapi".into()].into(),
            hwaccels: ["vaapi".into()].into(),
            ..Default::default()
        };
        let mut store = ProbeStore::default();
        let args = vec!["-encoders".to_owned()];
        assert!(store.answer(&args).is_none());
        store.insert(1, "cpu", &cpu, vec![answer(&["-encoders"], "cpu list")]);
        assert_eq!(store.answer(&args).map(|(n, a)| (n, a.stdout.as_str())), Some(("cpu", "cpu list")));
        store.insert(2, "gpu", &gpu, vec![answer(&["-encoders"], "gpu list")]);
        assert_eq!(store.answer(&args).map(|(n, _)| n), Some("gpu"));
        // One node answers everything: what it lacks is a miss, not another node's text.
        assert!(store.answer(&["-hwaccels".to_owned()]).is_none());
        store.remove(2);
        assert_eq!(store.answer(&args).map(|(n, _)| n), Some("cpu"));
        // Equal nodes: the longest connected.
        store.insert(0, "cpu0", &cpu, vec![answer(&["-encoders"], "cpu0 list")]);
        assert_eq!(store.answer(&args).map(|(n, _)| n), Some("cpu0"));
    }
}
