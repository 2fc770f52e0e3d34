//! The ffmpeg argument parser and what is derived from it without IO.
//!
//! Input: the arguments (without `argv[0]`) separated by NUL bytes, each taken
//! as UTF-8 (invalid sequences replaced). Checks, for both splitting dialects:
//!
//! * `CommandLine::parse` never panics;
//! * a parsed command line renders back to the identical argument list;
//! * the classifier, the input file finder and the splitter (against a fixed
//!   probe of a 24 s video with 5.1 audio) never panic;
//! * every command line the splitter makes (chunks, audio part, finishers)
//!   parses and renders back identically, with the inputs and the one output
//!   where the planner meant them: the job's input first (the finisher's joined
//!   video `/dev/fd/3` and node audio `/dev/fd/4` after it), the job's output
//!   last (`pipe:1` for a node's part).
#![no_main]

use std::sync::OnceLock;

use ffcluster::ffmpeg::decision::{Reason, classify_cmdline};
use ffcluster::ffmpeg::filtergraph::filter_names;
use ffcluster::ffmpeg::{CommandLine, Dialect};
use ffcluster::plan::Chunk;
use ffcluster::split::{Probe, split};
use libfuzzer_sys::fuzz_target;

fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| {
        let json = r#"{"streams":[
            {"index":0,"codec_type":"video","r_frame_rate":"24000/1001","avg_frame_rate":"24000/1001","start_time":"0.005000","disposition":{"attached_pic":0}},
            {"index":1,"codec_type":"audio","r_frame_rate":"0/0","avg_frame_rate":"0/0","channels":6,"start_time":"0.000000","disposition":{"attached_pic":0}}],
            "format":{"start_time":"0.000000","duration":"24.000000"}}"#;
        Probe::from_json(json).expect("fixed probe parses")
    })
}

/// A command line the program generated itself: it must parse, render back to
/// the same words, and read `inputs` and write `output`, in that order.
fn check_generated(what: &str, args: &[String], inputs: &[&str], output: &str, from: &[String]) {
    let cl = match CommandLine::parse(args) {
        Ok(cl) => cl,
        Err(e) => panic!("{what} does not parse ({e}): {args:?}; made from {from:?}"),
    };
    assert_eq!(cl.to_args(), args, "{what} does not round-trip; made from {from:?}");
    let got: Vec<&str> = cl.inputs.iter().map(|i| i.url.raw.as_str()).collect();
    assert_eq!(got, inputs, "{what} reads the wrong inputs: {args:?}; made from {from:?}");
    let got: Vec<&str> = cl.outputs.iter().map(|o| o.url.raw.as_str()).collect();
    assert_eq!(got, [output], "{what} writes the wrong outputs: {args:?}; made from {from:?}");
}

fn check(args: &[String], dialect: Dialect) {
    let Ok(cl) = CommandLine::parse_with(args, dialect) else { return };
    assert_eq!(cl.to_args(), args, "round trip under {dialect:?}");
    // Equality must survive a re-parse of the rendering.
    assert_eq!(CommandLine::parse_with(&cl.to_args(), dialect).as_ref(), Ok(&cl));

    let verdict = classify_cmdline(&cl);
    assert_eq!(Reason::from_code(verdict.reason.as_str()), Some(verdict.reason));
    let _ = serde_json::to_string(&cl).expect("serialises");

    for o in cl.globals.iter().chain(cl.outputs.iter().flat_map(|o| &o.opts)) {
        if matches!(o.name(), "filter" | "vf" | "af" | "filter_complex") {
            let _ = filter_names(o.value.as_deref().unwrap_or(""));
        }
    }
    let _ = ffcluster::remote::file_refs(&cl);

    // The splitter reads the default dialect's parse (what the shim submits).
    if dialect != Dialect::default() {
        return;
    }
    let Ok(s) = split(&cl, probe()) else { return };
    let p = &s.plan;
    let (input, output) = (cl.inputs[0].url.raw.as_str(), cl.outputs[0].url.raw.as_str());
    check_generated("finisher", &s.finisher, &[input, "/dev/fd/3"], output, args);
    if let Some(f) = &s.finisher_audio_copy {
        check_generated("audio-copy finisher", f, &[input, "/dev/fd/3", "/dev/fd/4"], output, args);
    }
    if let Some(audio) = &p.audio {
        check_generated("audio part", &p.recipe.audio_args(audio), &[&p.recipe.input], "pipe:1", args);
    }
    let period = if p.grid.period.is_finite() && p.grid.period > 0.0 { p.grid.period } else { 1.0 };
    let mid = (p.start + period).min(p.end);
    let chunks = [
        (Chunk { index: 0, start: p.start, end: mid, first_segment: p.start_number }, true, false),
        (Chunk { index: 1, start: mid, end: p.end, first_segment: p.start_number + 1 }, false, true),
        (Chunk { index: 0, start: p.start, end: p.end, first_segment: p.start_number }, true, true),
    ];
    for (chunk, first, last) in chunks {
        check_generated("chunk", &p.recipe.args(&chunk, first, last), &[&p.recipe.input], "pipe:1", args);
    }
}

fuzz_target!(|data: &[u8]| {
    let args: Vec<String> = data.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    check(&args, Dialect::default());
    check(&args, Dialect { major: 7 });
});
