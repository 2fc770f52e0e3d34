//! `ffcluster explain [--json] [--ffprobe] -- ARGS...`: the parsed model, the
//! re-rendered argument list and the decision, so a user can ask why a command ran
//! where it did.

use std::fmt::Write as _;
use std::process::ExitCode;

use ffcluster::ffmpeg::cmdline::{InputKind, Opt, shell_join, shell_quote};
use ffcluster::ffmpeg::decision::{OutputShape, Verdict, classify};
use ffcluster::ffmpeg::url::Target;
use ffcluster::ffmpeg::{CommandLine, Program};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Explain an ffprobe invocation instead of an ffmpeg one.
    #[arg(long)]
    ffprobe: bool,
    /// The arguments, as ffmpeg would receive them (write them after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    args: Vec<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    program: Program,
    argv: &'a [String],
    rendered: Option<Vec<String>>,
    identical: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    parse_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<CommandLine>,
    verdict: Verdict,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let program = if a.ffprobe { Program::Ffprobe } else { Program::Ffmpeg };
    let parsed = (program == Program::Ffmpeg).then(|| CommandLine::parse(&a.args));
    let (model, parse_error) = match parsed {
        Some(Ok(m)) => (Some(m), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let rendered = model.as_ref().map(CommandLine::to_args);
    let report = Report {
        program,
        identical: rendered.as_deref() == Some(&a.args[..]),
        argv: &a.args,
        rendered,
        parse_error,
        verdict: classify(program, &a.args),
        model,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn text(r: &Report<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "program   {}", r.program.as_str());
    let _ = writeln!(s, "argv      {}", shell_join(r.argv));
    if let Some(e) = &r.parse_error {
        let _ = writeln!(s, "parse     error: {e}");
    }
    if let Some(m) = &r.model {
        let rendered = r.rendered.as_deref().unwrap_or_default();
        let same = if r.identical { "identical" } else { "DIFFERS" };
        let _ = writeln!(s, "rendered  {} ({same})", shell_join(rendered));
        if !m.globals.is_empty() {
            let _ = writeln!(s, "globals   {}", opts(&m.globals));
        }
        for (i, inp) in m.inputs.iter().enumerate() {
            let kind = match inp.kind {
                InputKind::File => "input ",
                InputKind::Decoder => "decoder",
            };
            let _ = writeln!(s, "{kind} #{i} {} [{}]", inp.url.raw, target(&inp.url.target));
            if !inp.opts.is_empty() {
                let _ = writeln!(s, "            {}", opts(&inp.opts));
            }
        }
        for (i, out) in m.outputs.iter().enumerate() {
            let shape = r.verdict.outputs.get(i).map(shape).unwrap_or_default();
            let _ = writeln!(s, "output #{i} {} [{shape}]", out.url.raw);
            if !out.opts.is_empty() {
                let _ = writeln!(s, "            {}", opts(&out.opts));
            }
        }
        if !m.trailing.is_empty() {
            let _ = writeln!(s, "trailing  {} (ffmpeg ignores these)", opts(&m.trailing));
        }
    }
    let v = &r.verdict;
    let _ = writeln!(s, "decision  {} ({}): {}", v.decision.as_str(), v.reason.as_str(), v.reason.describe());
    let n = &v.needs;
    for (label, set) in [
        ("encoders", &n.encoders),
        ("decoders", &n.decoders),
        ("filters", &n.filters),
        ("hwaccels", &n.hwaccels),
        ("hw devices", &n.hw_devices),
    ] {
        if !set.is_empty() {
            let _ = writeln!(s, "needs     {label}: {}", set.iter().cloned().collect::<Vec<_>>().join(", "));
        }
    }
    s
}

fn opts(list: &[Opt]) -> String {
    let mut words = Vec::new();
    for o in list {
        let mut w = format!("-{}", o.key);
        if let Some(v) = &o.value {
            w.push(' ');
            w.push_str(&shell_quote(v));
        }
        if o.avoption {
            w.push('*');
        }
        words.push(w);
    }
    words.join("  ")
}

fn target(t: &Target) -> String {
    match t {
        Target::File { .. } => "file".into(),
        Target::Pipe { fd } => fd.map_or("pipe".into(), |fd| format!("pipe {fd}")),
        Target::Concat { parts } => format!("concat of {}", parts.len()),
        Target::Bluray { .. } => "bluray".into(),
        Target::Network { scheme } => format!("network {scheme}"),
        Target::Other { scheme } => format!("protocol {scheme}"),
    }
}

/// The short shape, plus segment length and start number for HLS.
fn shape(s: &OutputShape) -> String {
    match s {
        OutputShape::Hls { hls_time, start_number, .. } => format!("{s}, {hls_time} s segments from #{start_number}"),
        _ => s.to_string(),
    }
}
