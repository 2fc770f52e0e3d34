//! The wire protocol's decoders, fed what a hostile or broken peer could send.
//!
//! The same bytes are tried as a binary frame, as each JSON message type (text
//! frames) and as a probe query string. Checks:
//!
//! * no decoder panics;
//! * a frame that decodes encodes back to the identical bytes;
//! * a message that decodes re-encodes to JSON that decodes to the same value
//!   (and to the same JSON again);
//! * a probe query that parses re-encodes to a query that parses the same.
#![no_main]

use std::fmt::Debug;

use ffcluster::protocol::{
    Frame, NodeMsg, ShimMsg, ToNode, ToShim, bearer, http_url, parse_probe_query, probe_query, ws_url,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else { return };
    let text = serde_json::to_vec(&value).expect("a decoded message encodes");
    let again: T = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("re-encoded {value:?} does not decode: {e}: {}", String::from_utf8_lossy(&text)));
    assert_eq!(again, value, "JSON round trip changed the message");
    assert_eq!(serde_json::to_vec(&again).unwrap(), text, "JSON encoding is not stable");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.encode(), data, "frame round trip");
        assert_eq!(Frame::decode(&frame.encode()), Ok(frame.clone()));
        let _ = frame.with_job(frame.job.wrapping_add(1)).encode();
    }

    json_round_trip::<NodeMsg>(data);
    json_round_trip::<ToNode>(data);
    json_round_trip::<ShimMsg>(data);
    json_round_trip::<ToShim>(data);

    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(args) = parse_probe_query(text) {
            let q = probe_query(&args);
            assert_eq!(parse_probe_query(&q), Some(args), "probe query round trip via {q:?}");
        }
        let _ = bearer(text);
        let _ = ws_url(text, "/x");
        let _ = http_url(text, "/x");
    }
});
