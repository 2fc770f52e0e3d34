//! What this node's ffmpeg can do, measured once at start-up: version, encoders,
//! decoders, filters, hwaccels, CPUs, and a speed score from a standard encode.
//!
//! Hardware is advertised only when it works here (contrib/docs/hardware.md): a build
//! lists NVENC, QSV or VAAPI whether or not the machine has the device, so each
//! family's device is opened once, or the configuration names the families.
//! Argument translations add the names they stand in for.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ffcluster::hardware::{self, CAPABILITY_PROBES, Kind, Listing, Translation, edit_listing};
use ffcluster::protocol::{Capabilities, ProbeAnswer};
use futures_util::StreamExt;
use tokio::process::Command;

use crate::config::Hardware;

/// A list probe answers in well under a second; anything near this is a hung binary.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// The standard encode's frame count (see [`Capabilities::speed`]).
const SPEED_FRAMES: u32 = 60;

/// What probing found: the capabilities the node advertises, its answers to
/// Jellyfin's capability probes, and the translations it applies (kinds resolved).
#[derive(Debug)]
pub struct Probed {
    pub caps: Capabilities,
    pub answers: Vec<ProbeAnswer>,
    pub translations: Vec<Translation>,
    /// The hardware families advertised.
    pub hardware: BTreeSet<String>,
}

/// How long opening one hardware device may take.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(10);
/// Probes run at once: enough to hide their start-up cost, few enough not to
/// starve the jobs of a node that reconnects.
const PROBE_CONCURRENCY: usize = 4;

/// Probes `ffmpeg`. Fails only when the binary cannot report its version: a node
/// without a working ffmpeg has nothing to offer.
pub async fn probe(ffmpeg: &Path, hardware: &Hardware, translations: &[Translation]) -> anyhow::Result<Probed> {
    // Jellyfin's own probes (which include the lists) run once; their answers
    // are both parsed here and uploaded for shims answering from the cluster.
    let mut answers: Vec<(Vec<String>, anyhow::Result<Captured>)> = futures_util::stream::iter(CAPABILITY_PROBES)
        .map(|args| async move {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let r = capture(ffmpeg, &args, PROBE_TIMEOUT).await;
            (args, r)
        })
        .buffered(PROBE_CONCURRENCY)
        .collect()
        .await;
    let stdout_of = |flag: &str| -> anyhow::Result<String> {
        match answers.iter().find(|(a, _)| a.len() == 1 && a[0] == flag) {
            Some((_, Ok(c))) if c.code == 0 => Ok(c.stdout.clone()),
            Some((_, Ok(c))) => bail!("ffmpeg {flag} failed (exit code {}): {}", c.code, tail(&c.stderr)),
            Some((_, Err(e))) => Err(anyhow::anyhow!("{e:#}")),
            None => bail!("ffmpeg {flag} was not run"),
        }
    };
    let version = stdout_of("-version").context("running ffmpeg -version")?;
    let ffmpeg_version = parse_version(&version).context("ffmpeg -version printed nothing")?;
    let list = |what: &str, parse: fn(&str) -> BTreeSet<String>| match stdout_of(what) {
        Ok(text) => parse(&text),
        Err(e) => {
            tracing::warn!("ffmpeg {what} failed, reporting none: {e:#}");
            BTreeSet::new()
        }
    };
    let mut caps = Capabilities {
        ffmpeg_version,
        encoders: list("-encoders", parse_codecs),
        decoders: list("-decoders", parse_codecs),
        filters: list("-filters", parse_filters),
        hwaccels: list("-hwaccels", parse_hwaccels),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        speed: 0.0,
    };

    let usable = usable_hardware(ffmpeg, &caps, hardware).await;
    restrict_to(&mut caps, &usable);
    let translations = resolve_translations(&mut caps, translations);
    let answers = edit_answers(ffmpeg, &mut answers, &caps, &translations).await;

    let encoder = if caps.encoders.contains("libx264") { "libx264" } else { "mpeg4" };
    match speed(ffmpeg, encoder).await {
        Ok(fps) => caps.speed = fps,
        Err(e) => tracing::warn!("speed test with {encoder} failed, reporting speed 0: {e:#}"),
    }
    Ok(Probed { caps, answers, translations, hardware: usable })
}

/// Every hardware family the build names (by its encoders, decoders, filters and
/// hwaccels).
fn families(caps: &Capabilities) -> BTreeSet<&'static str> {
    let names = |kind: Kind, set: &BTreeSet<String>| {
        set.iter().filter_map(move |n| hardware::family(kind, n)).collect::<Vec<_>>()
    };
    [
        names(Kind::Encoder, &caps.encoders),
        names(Kind::Decoder, &caps.decoders),
        names(Kind::Filter, &caps.filters),
        names(Kind::Hwaccel, &caps.hwaccels),
    ]
    .concat()
    .into_iter()
    .collect()
}

/// The families this node advertises. A build lists hardware whether or not the
/// machine has it (Debian's ffmpeg lists NVENC, QSV and VAAPI everywhere), so
/// `auto` opens each family's device once and keeps those that open.
async fn usable_hardware(ffmpeg: &Path, caps: &Capabilities, hardware: &Hardware) -> BTreeSet<String> {
    let testable: Vec<&'static str> =
        families(caps).into_iter().filter(|f| hardware::DEVICE_TYPES.contains(f)).collect();
    match hardware {
        Hardware::Listed(families) => families.clone(),
        Hardware::Auto => {
            let results: Vec<(&str, anyhow::Result<Captured>)> = futures_util::stream::iter(testable)
                .map(|family| async move {
                    let args: Vec<String> = [
                        "-hide_banner",
                        "-nostdin",
                        "-v",
                        "error",
                        "-init_hw_device",
                        family,
                        "-f",
                        "lavfi",
                        "-i",
                        "nullsrc=s=16x16:d=0.04",
                        "-frames:v",
                        "1",
                        "-f",
                        "null",
                        "-",
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    (family, capture(ffmpeg, &args, DEVICE_TIMEOUT).await)
                })
                .buffer_unordered(PROBE_CONCURRENCY)
                .collect()
                .await;
            let mut usable = BTreeSet::new();
            for (family, r) in results {
                match r {
                    Ok(c) if c.code == 0 => {
                        usable.insert(family.to_owned());
                    }
                    Ok(c) => {
                        tracing::info!(family, "hardware not advertised: its device does not open: {}", tail(&c.stderr))
                    }
                    Err(e) => tracing::info!(family, "hardware not advertised: {e:#}"),
                }
            }
            usable
        }
    }
}

/// Drops the hardware names of families that are not usable.
fn restrict_to(caps: &mut Capabilities, usable: &BTreeSet<String>) {
    let ok = |kind: Kind, n: &String| hardware::family(kind, n).is_none_or(|f| usable.contains(f));
    caps.encoders.retain(|n| ok(Kind::Encoder, n));
    caps.decoders.retain(|n| ok(Kind::Decoder, n));
    caps.filters.retain(|n| ok(Kind::Filter, n));
    caps.hwaccels.retain(|n| usable.contains(n));
}

fn set_of(caps: &mut Capabilities, kind: Kind) -> &mut BTreeSet<String> {
    match kind {
        Kind::Encoder => &mut caps.encoders,
        Kind::Decoder => &mut caps.decoders,
        Kind::Filter => &mut caps.filters,
        Kind::Hwaccel => &mut caps.hwaccels,
    }
}

/// Gives each translation its kind (where the node has `to`, unless configured)
/// and advertises its `from`. A translation whose `to` the node does not have
/// is left out, with a warning: advertising it would attract jobs that fail.
pub fn resolve_translations(caps: &mut Capabilities, translations: &[Translation]) -> Vec<Translation> {
    let mut out = Vec::new();
    for t in translations {
        let kind = t.kind.or_else(|| {
            [Kind::Encoder, Kind::Filter, Kind::Decoder, Kind::Hwaccel]
                .into_iter()
                .find(|k| set_of(caps, *k).contains(&t.to))
        });
        let Some(kind) = kind.filter(|k| set_of(caps, *k).contains(&t.to)) else {
            tracing::warn!(from = %t.from, to = %t.to, "translation ignored: this node's ffmpeg has no usable {}", t.to);
            continue;
        };
        set_of(caps, kind).insert(t.from.clone());
        tracing::info!(from = %t.from, to = %t.to, kind = kind.as_str(), "translation: advertising {}", t.from);
        out.push(Translation { kind: Some(kind), ..t.clone() });
    }
    out
}

/// The probe answers to upload: listings edited to list exactly what the node
/// advertises (translated names as copies of their target's entry), and
/// `-h filter=FROM` of a translated filter answered with the target's help.
/// Answers that failed to run or are not UTF-8 are left out: the shim then
/// answers that probe from its local ffmpeg.
async fn edit_answers(
    ffmpeg: &Path,
    answers: &mut Vec<(Vec<String>, anyhow::Result<Captured>)>,
    caps: &Capabilities,
    translations: &[Translation],
) -> Vec<ProbeAnswer> {
    let adds = |kind: Kind| -> Vec<(String, String)> {
        translations.iter().filter(|t| t.kind == Some(kind)).map(|t| (t.from.clone(), t.to.clone())).collect()
    };
    let mut out = Vec::new();
    for (args, result) in answers.drain(..) {
        let Ok(mut c) = result else { continue };
        match args.as_slice() {
            [flag] if flag == "-encoders" => {
                c.stdout = edit_listing(&c.stdout, Listing::Codecs, |n| caps.encoders.contains(n), &adds(Kind::Encoder))
            }
            [flag] if flag == "-decoders" => {
                c.stdout = edit_listing(&c.stdout, Listing::Codecs, |n| caps.decoders.contains(n), &adds(Kind::Decoder))
            }
            [flag] if flag == "-filters" => {
                c.stdout = edit_listing(&c.stdout, Listing::Filters, |n| caps.filters.contains(n), &adds(Kind::Filter))
            }
            [flag] if flag == "-hwaccels" => {
                c.stdout =
                    edit_listing(&c.stdout, Listing::Hwaccels, |n| caps.hwaccels.contains(n), &adds(Kind::Hwaccel))
            }
            [h, what] if h == "-h" => {
                let name = what.strip_prefix("filter=").unwrap_or("");
                if let Some(t) = translations.iter().find(|t| t.kind == Some(Kind::Filter) && t.from == name) {
                    let target = vec!["-h".to_owned(), format!("filter={}", t.to)];
                    match capture(ffmpeg, &target, PROBE_TIMEOUT).await {
                        Ok(mut help) => {
                            help.stdout = help.stdout.replace(&t.to, &t.from);
                            c = help;
                        }
                        Err(e) => {
                            tracing::warn!("ffmpeg -h filter={}: {e:#}", t.to);
                            continue;
                        }
                    }
                }
            }
            _ => {}
        }
        out.push(ProbeAnswer { args, code: c.code, stdout: c.stdout, stderr: c.stderr });
    }
    out
}

/// One run of ffmpeg: exit code (128 + signal when killed), stdout and stderr.
#[derive(Debug)]
struct Captured {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs ffmpeg with `args`, killed after `limit`.
async fn output<S: AsRef<str>>(ffmpeg: &Path, args: &[S], limit: Duration) -> anyhow::Result<std::process::Output> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let child = Command::new(ffmpeg)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", ffmpeg.display()))?;
    Ok(tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("ffmpeg {} did not finish in {limit:?}", args.join(" ")))??)
}

async fn capture(ffmpeg: &Path, args: &[String], limit: Duration) -> anyhow::Result<Captured> {
    use std::os::unix::process::ExitStatusExt;
    let out = output(ffmpeg, args, limit).await?;
    let code = out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
    // Uploaded answers must be byte-exact: text that is not UTF-8 is not sent.
    let text =
        |b: Vec<u8>| String::from_utf8(b).map_err(|_| anyhow::anyhow!("ffmpeg {} printed non-UTF-8", args.join(" ")));
    Ok(Captured { code, stdout: text(out.stdout)?, stderr: text(out.stderr)? })
}

fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

/// Frames per second of the standard encode with `encoder`.
pub async fn speed(ffmpeg: &Path, encoder: &str) -> anyhow::Result<f64> {
    let frames = SPEED_FRAMES.to_string();
    let mut args = vec![
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-frames:v",
        &frames,
        "-c:v",
        encoder,
    ];
    if encoder == "libx264" {
        args.extend(["-preset", "veryfast"]);
    }
    args.extend(["-f", "null", "-"]);
    let start = Instant::now();
    run(ffmpeg, &args).await?;
    let secs = start.elapsed().as_secs_f64().max(1e-3);
    Ok(f64::from(SPEED_FRAMES) / secs)
}

/// Runs ffmpeg with `args` and returns its stdout; a non-zero exit is an error that
/// carries the end of stderr.
async fn run(ffmpeg: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = output(ffmpeg, args, PROBE_TIMEOUT).await?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        bail!(
            "ffmpeg {} failed ({}): {}",
            args.join(" "),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first line of `-version`.
pub fn parse_version(text: &str) -> Option<String> {
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
}

/// Names from `-encoders` / `-decoders`: the lines after the ` ------` separator,
/// each `FLAGS name description`.
pub fn parse_codecs(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("---"))
        .skip(1)
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let _flags = fields.next()?;
            fields.next().map(str::to_owned)
        })
        .collect()
}

/// Names from `-filters`: entries are ` FLAGS name  X->Y  description`, where the
/// flags column is 2 or 3 characters depending on the version. Header lines never
/// have an `->` in the third field, so that tells entries apart.
pub fn parse_filters(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().take(3).collect();
            (fields.len() == 3 && fields[2].contains("->")).then(|| fields[1].to_owned())
        })
        .collect()
}

/// Names from `-hwaccels`: one per line after `Hardware acceleration methods:`.
pub fn parse_hwaccels(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Hardware acceleration methods"))
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENCODERS: &str = "Encoders:
 V..... = Video
 A..... = Audio
 S..... = Subtitle
 .F.... = Frame-level multithreading
 ..S... = Slice-level multithreading
 ...X.. = Codec is experimental
 ....B. = Supports draw_horiz_band
 .....D = Supports direct rendering method 1
 ------
 V....D a64multi             Multicolor charset for Commodore 64 (codec a64_multi)
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V..... h264_nvenc           NVIDIA NVENC H.264 encoder (codec h264)
 A....D aac                  AAC (Advanced Audio Coding)
 S..... ass                  ASS (Advanced SubStation Alpha) subtitle
";

    // ffmpeg 5.1: three flag characters.
    const FILTERS_51: &str = "Filters:
  T.. = Timeline support
  .S. = Slice threading
  ..C = Command support
  A = Audio input/output
  V = Video input/output
  N = Dynamic number and/or type of input/output
  | = Source or sink filter
 ... abench            A->A       Benchmark part of a filtergraph.
 ..C acompressor       A->A       Audio compressor.
 TSC scale             V->V       Scale the input video size and/or convert the image format.
 ... testsrc2          |->V       Generate another test pattern.
 ... amix              N->A       Audio mixing.
";

    // Older builds: two flag characters.
    const FILTERS_OLD: &str = "Filters:
  T. = Timeline support
  .S = Slice threading
  A = Audio input/output
  | = Source or sink filter
 T. yadif            V->V       Deinterlace the input image.
 .. subtitles        V->V       Render text subtitles onto input video using the libass library.
";

    #[test]
    fn parses_version_line() {
        let text = "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers\nbuilt with gcc 12\n";
        assert_eq!(
            parse_version(text).as_deref(),
            Some("ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers")
        );
        assert_eq!(parse_version("\n\n"), None);
    }

    #[test]
    fn parses_codec_lists() {
        let names = parse_codecs(ENCODERS);
        assert_eq!(names, ["a64multi", "aac", "ass", "h264_nvenc", "libx264"].map(String::from).into());
        assert!(parse_codecs("no separator here\n V..... x y\n").is_empty());
    }

    #[test]
    fn parses_filter_lists_of_either_flag_width() {
        let names = parse_filters(FILTERS_51);
        assert_eq!(names, ["abench", "acompressor", "amix", "scale", "testsrc2"].map(String::from).into());
        assert_eq!(parse_filters(FILTERS_OLD), ["subtitles", "yadif"].map(String::from).into());
    }

    #[test]
    fn parses_hwaccels() {
        let text = "Hardware acceleration methods:\nvdpau\ncuda\nvaapi\n\n";
        assert_eq!(parse_hwaccels(text), ["cuda", "vaapi", "vdpau"].map(String::from).into());
        assert!(parse_hwaccels("Hardware acceleration methods:\n\n").is_empty());
    }
}
