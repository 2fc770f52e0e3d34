//! What this node's ffmpeg can do, measured once at start-up: version, encoders,
//! decoders, filters, hwaccels, CPUs, and a speed score from a standard encode.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ffcluster::protocol::Capabilities;
use tokio::process::Command;

/// A list probe answers in well under a second; anything near this is a hung binary.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// The standard encode's frame count (see [`Capabilities::speed`]).
const SPEED_FRAMES: u32 = 60;

/// Probes `ffmpeg`. Fails only when the binary cannot report its version: a node
/// without a working ffmpeg has nothing to offer.
pub async fn probe(ffmpeg: &Path) -> anyhow::Result<Capabilities> {
    let version = run(ffmpeg, &["-version"]).await.context("running ffmpeg -version")?;
    let ffmpeg_version = parse_version(&version).context("ffmpeg -version printed nothing")?;
    // The list probes are independent; running them together saves most of their
    // start-up cost.
    let (encoders, decoders, filters, hwaccels) = tokio::join!(
        run(ffmpeg, &["-hide_banner", "-encoders"]),
        run(ffmpeg, &["-hide_banner", "-decoders"]),
        run(ffmpeg, &["-hide_banner", "-filters"]),
        run(ffmpeg, &["-hide_banner", "-hwaccels"]),
    );
    let list = |what: &str, r: anyhow::Result<String>, parse: fn(&str) -> BTreeSet<String>| match r {
        Ok(text) => parse(&text),
        Err(e) => {
            tracing::warn!("ffmpeg -{what} failed, reporting none: {e:#}");
            BTreeSet::new()
        }
    };
    let mut caps = Capabilities {
        ffmpeg_version,
        encoders: list("encoders", encoders, parse_codecs),
        decoders: list("decoders", decoders, parse_codecs),
        filters: list("filters", filters, parse_filters),
        hwaccels: list("hwaccels", hwaccels, parse_hwaccels),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        speed: 0.0,
    };
    let encoder = if caps.encoders.contains("libx264") { "libx264" } else { "mpeg4" };
    match speed(ffmpeg, encoder).await {
        Ok(fps) => caps.speed = fps,
        Err(e) => tracing::warn!("speed test with {encoder} failed, reporting speed 0: {e:#}"),
    }
    Ok(caps)
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
    let child = Command::new(ffmpeg)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", ffmpeg.display()))?;
    let out = tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("ffmpeg {} did not finish in {PROBE_TIMEOUT:?}", args.join(" ")))??;
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
