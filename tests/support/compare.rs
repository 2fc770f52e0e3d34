//! What a user or player would see of two runs of one command line, compared:
//! file names, ffmpeg's playlist, and per output file (per HLS segment, fMP4
//! with its init segment) each stream's properties, packet timestamps and
//! keyframes, audio samples and start, the A/V offset, and a clean decode.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::cluster::{names, real};

/// How far the A/V start offsets of the two runs may be apart.
const AV_TOLERANCE: f64 = 0.002;

/// How the second run's outputs differ from the first's (`diffs`), and what
/// is odd about the first's own (`notes`: its decode errors).
#[derive(Debug, Default)]
pub struct Compared {
    pub diffs: Vec<String>,
    pub notes: Vec<String>,
}

/// The outputs in `sdir` against those in `ddir` (`playlist`: the HLS
/// playlist's name, when the job writes one); `scratch` holds joined fMP4
/// segments.
pub fn outputs(ddir: &Path, sdir: &Path, scratch: &Path, playlist: &str) -> Compared {
    let mut compared = Compared::default();
    outputs_into(ddir, sdir, scratch, playlist, &mut compared);
    compared
}

fn outputs_into(ddir: &Path, sdir: &Path, scratch: &Path, playlist: &str, case: &mut Compared) {
    let (dn, sn) = (names(ddir), names(sdir));
    if dn != sn {
        let missing: Vec<&String> = dn.iter().filter(|n| !sn.contains(n)).collect();
        let extra: Vec<&String> = sn.iter().filter(|n| !dn.contains(n)).collect();
        case.diffs.push(format!("files: missing {missing:?}, extra {extra:?}"));
    }
    if dn.iter().any(|n| n == playlist) {
        let (dp, sp) = (ddir.join(playlist), sdir.join(playlist));
        let dtext = std::fs::read_to_string(&dp).unwrap();
        let stext = std::fs::read_to_string(&sp).unwrap_or_default();
        compare_playlists(&dtext, &stext, &mut case.diffs);
        decode_check(&dp, &sp, playlist, case);
        let init = init_segment(&dtext);
        for seg in Playlist::parse(&dtext).segments {
            if !sn.contains(&seg) {
                continue;
            }
            let (d, s) = match &init {
                Some(init) => {
                    let d = scratch.join(format!("direct-{seg}"));
                    let s = scratch.join(format!("split-{seg}"));
                    concat(&[ddir.join(init), ddir.join(&seg)], &d);
                    concat(&[sdir.join(init), sdir.join(&seg)], &s);
                    (d, s)
                }
                None => (ddir.join(&seg), sdir.join(&seg)),
            };
            compare_media(&d, &s, &seg, Keyframes::Forced, &mut case.diffs);
        }
    } else {
        for name in dn.iter().filter(|n| sn.contains(n)) {
            let (d, s) = (ddir.join(name), sdir.join(name));
            decode_check(&d, &s, name, case);
            compare_media(&d, &s, name, Keyframes::Encoders, &mut case.diffs);
        }
    }
}

fn concat(parts: &[std::path::PathBuf], to: &Path) {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend(std::fs::read(p).unwrap_or_default());
    }
    std::fs::write(to, bytes).unwrap();
}

/// `ffmpeg -v error -i F -f null -` must print nothing for the split output
/// (what it prints for the direct one is noted).
fn decode_check(direct: &Path, split: &Path, label: &str, case: &mut Compared) {
    let (d, s) = (decode_errors(direct), decode_errors(split));
    if !d.is_empty() {
        case.notes.push(format!("{label}: direct decodes with {} error lines: {}", d.len(), d[0]));
    }
    if !s.is_empty() && s != d {
        case.diffs.push(format!("{label}: {} decode error lines ({})", s.len(), s[0]));
    }
}

fn decode_errors(path: &Path) -> Vec<String> {
    let out = Command::new(real("ffmpeg"))
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Matroska's millisecond timestamps make the null muxer (not a decoder)
    // complain about equal dts once rescaled; that is no decode error.
    let mut lines: Vec<String> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("non monotonically increasing dts to muxer"))
        .map(str::to_owned)
        .collect();
    if !out.status.success() && lines.is_empty() {
        lines.push(format!("exit {:?}", out.status.code()));
    }
    lines
}

// ---- playlists

struct Playlist {
    /// Every `#` line but `#EXTINF`, in order.
    tags: Vec<String>,
    extinf: Vec<f64>,
    segments: Vec<String>,
}

impl Playlist {
    fn parse(text: &str) -> Playlist {
        let mut p = Playlist { tags: Vec::new(), extinf: Vec::new(), segments: Vec::new() };
        for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(v) = l.strip_prefix("#EXTINF:") {
                p.extinf.push(v.split(',').next().unwrap_or("").parse().unwrap_or(f64::NAN));
            } else if l.starts_with('#') {
                p.tags.push(l.to_owned());
            } else {
                p.segments.push(l.to_owned());
            }
        }
        p
    }
}

fn init_segment(playlist: &str) -> Option<String> {
    let l = playlist.lines().find(|l| l.starts_with("#EXT-X-MAP:"))?;
    Some(l.split("URI=\"").nth(1)?.split('"').next()?.to_owned())
}

fn compare_playlists(direct: &str, split: &str, diffs: &mut Vec<String>) {
    let (d, s) = (Playlist::parse(direct), Playlist::parse(split));
    if d.tags != s.tags {
        let only_d: Vec<&String> = d.tags.iter().filter(|t| !s.tags.contains(t)).collect();
        let only_s: Vec<&String> = s.tags.iter().filter(|t| !d.tags.contains(t)).collect();
        diffs.push(format!("playlist tags: direct has {only_d:?}, split has {only_s:?}"));
    }
    if d.segments != s.segments {
        diffs.push(format!("playlist segments: direct {:?}, split {:?}", d.segments, s.segments));
    }
    if d.extinf.len() != s.extinf.len() {
        diffs.push(format!("EXTINF: direct {:?}, split {:?}", d.extinf, s.extinf));
    } else if let Some((i, a, b)) = max_diff(&d.extinf, &s.extinf) {
        if (a - b).abs() > 0.5e-6 {
            diffs.push(format!(
                "EXTINF: {} of {} differ, most #{i}: {a:.6} vs {b:.6} s (direct {:?}, split {:?})",
                d.extinf.iter().zip(&s.extinf).filter(|(a, b)| (*a - *b).abs() > 0.5e-6).count(),
                d.extinf.len(),
                d.extinf,
                s.extinf
            ));
        }
    }
}

/// The index and values where two equally long lists differ most.
fn max_diff(a: &[f64], b: &[f64]) -> Option<(usize, f64, f64)> {
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| (i, *x, *y))
        .max_by(|p, q| (p.1 - p.2).abs().total_cmp(&(q.1 - q.2).abs()))
}

// ---- media files

/// What a player sees of one stream of one file.
struct Stream {
    /// `v0`, `a1`, …: the codec type's letter and the stream index.
    label: String,
    kind: String,
    props: BTreeMap<String, String>,
    /// One tick of the stream's time base, in seconds.
    tick: f64,
    /// Presentation timestamps, sorted.
    pts: Vec<f64>,
    /// Decode timestamps, in file order.
    dts: Vec<f64>,
    /// Presentation timestamps of keyframes, sorted.
    keys: Vec<f64>,
    /// The end of the last frame (pts + duration).
    end: Option<f64>,
    /// Audio: decoded samples and the first decoded frame's time.
    samples: u64,
    audio_start: Option<f64>,
}

/// Stream properties a player uses (ffprobe's names; `tag:`, `rotation`,
/// `disposition` gathered).
const PROPS: &[&str] = &[
    "codec_type",
    "codec_name",
    "profile",
    "codec_tag_string",
    "width",
    "height",
    "field_order",
    "sample_aspect_ratio",
    "display_aspect_ratio",
    "pix_fmt",
    "color_range",
    "color_space",
    "color_transfer",
    "color_primaries",
    "chroma_location",
    "time_base",
    "r_frame_rate",
    "sample_fmt",
    "sample_rate",
    "channels",
    "channel_layout",
];

fn ffprobe_json(path: &Path, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(real("ffprobe"))
        .args(["-v", "error"])
        .args(args)
        .args(["-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("ffprobe failed").to_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("ffprobe JSON: {e}"))
}

fn num(v: &Value) -> Option<f64> {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_f64())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn analyze(path: &Path) -> Result<Vec<Stream>, String> {
    let v = ffprobe_json(
        path,
        &[
            "-show_entries",
            "stream:stream_tags:stream_disposition:stream_side_data_list:\
             packet=stream_index,pts_time,dts_time,duration_time,flags",
        ],
    )?;
    let mut streams: Vec<Stream> = Vec::new();
    for s in v["streams"].as_array().cloned().unwrap_or_default() {
        let kind = s["codec_type"].as_str().unwrap_or("?").to_owned();
        let mut props = BTreeMap::new();
        for k in PROPS {
            if let Some(t) = text(&s[*k]) {
                props.insert(k.to_string(), t);
            }
        }
        for k in ["language", "title", "rotate", "encoder", "ENCODER"] {
            if let Some(t) = text(&s["tags"][k]) {
                props.insert(format!("tag:{k}"), t);
            }
        }
        for sd in s["side_data_list"].as_array().cloned().unwrap_or_default() {
            if let Some(r) = text(&sd["rotation"]) {
                props.insert("rotation".into(), r);
            }
        }
        let on: Vec<String> = s["disposition"]
            .as_object()
            .map(|o| o.iter().filter(|(_, v)| v.as_i64() == Some(1)).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        props.insert("disposition".into(), on.join("+"));
        let tick = s["time_base"]
            .as_str()
            .and_then(|tb| tb.split_once('/'))
            .and_then(|(n, d)| Some(n.parse::<f64>().ok()? / d.parse::<f64>().ok()?))
            .unwrap_or(1e-6);
        let index = s["index"].as_u64().unwrap_or(0);
        streams.push(Stream {
            label: format!("{}{index}", kind.chars().next().unwrap_or('?')),
            kind,
            props,
            tick,
            pts: Vec::new(),
            dts: Vec::new(),
            keys: Vec::new(),
            end: None,
            samples: 0,
            audio_start: None,
        });
    }
    for p in v["packets"].as_array().cloned().unwrap_or_default() {
        let Some(st) = p["stream_index"].as_u64().and_then(|i| streams.get_mut(i as usize)) else { continue };
        if let Some(dts) = num(&p["dts_time"]) {
            st.dts.push(dts);
        }
        if let Some(pts) = num(&p["pts_time"]) {
            st.pts.push(pts);
            if p["flags"].as_str().is_some_and(|f| f.starts_with('K')) {
                st.keys.push(pts);
            }
            let end = pts + num(&p["duration_time"]).unwrap_or(0.0);
            st.end = Some(st.end.map_or(end, |e: f64| e.max(end)));
        }
    }
    for st in &mut streams {
        st.pts.sort_by(f64::total_cmp);
        st.keys.sort_by(f64::total_cmp);
    }
    if streams.iter().any(|s| s.kind == "audio") {
        let f =
            ffprobe_json(path, &["-select_streams", "a", "-show_entries", "frame=stream_index,pts_time,nb_samples"])?;
        for fr in f["frames"].as_array().cloned().unwrap_or_default() {
            let Some(st) = fr["stream_index"].as_u64().and_then(|i| streams.get_mut(i as usize)) else { continue };
            st.samples += fr["nb_samples"].as_u64().unwrap_or(0);
            if st.audio_start.is_none() {
                st.audio_start = num(&fr["pts_time"]);
            }
        }
    }
    Ok(streams)
}

fn secs(v: Option<f64>) -> String {
    v.map_or("none".into(), |v| format!("{v:.6}"))
}

/// Who places the video's keyframes.
#[derive(Clone, Copy, PartialEq)]
enum Keyframes {
    /// The job forces them on its segment grid (every HLS template here):
    /// a split job must place them on the same frames.
    Forced,
    /// The encoder's own GOP decisions: a split job necessarily adds one at
    /// each chunk's start, which changes no frame's time, so only the frames
    /// and their times are compared.
    Encoders,
}

/// Compares one output file (or HLS segment) of the split run with direct's.
fn compare_media(direct: &Path, split: &Path, label: &str, keyframes: Keyframes, diffs: &mut Vec<String>) {
    let (d, s) = match (analyze(direct), analyze(split)) {
        (Ok(d), Ok(s)) => (d, s),
        (Err(e), _) => return diffs.push(format!("{label}: direct unreadable: {e}")),
        (_, Err(e)) => return diffs.push(format!("{label}: unreadable: {e}")),
    };
    let kinds = |v: &[Stream]| v.iter().map(|s| s.label.clone()).collect::<Vec<_>>();
    if kinds(&d) != kinds(&s) {
        diffs.push(format!("{label}: streams {:?} vs {:?}", kinds(&d), kinds(&s)));
    }
    for (a, b) in d.iter().zip(&s) {
        let at = format!("{label} {}", a.label);
        for k in a.props.keys().chain(b.props.keys()).collect::<BTreeSet<_>>() {
            let (x, y) = (a.props.get(k), b.props.get(k));
            if x != y {
                diffs.push(format!("{at} {k}: {} vs {}", x.map_or("-", |s| s), y.map_or("-", |s| s)));
            }
        }
        let tol = a.tick.max(b.tick) + 1.5e-6;
        compare_times(&at, "pts", &a.pts, &b.pts, tol, diffs);
        if a.pts.len() == b.pts.len() {
            compare_times(&at, "dts", &a.dts, &b.dts, tol, diffs);
        }
        let (fa, fb) = (a.pts.first().copied(), b.pts.first().copied());
        if let (Some(x), Some(y)) = (fa, fb)
            && (x - y).abs() > tol
        {
            diffs.push(format!("{at} starts at {x:.6} vs {y:.6} s"));
        }
        let dur = |s: &Stream| Some(s.end? - s.pts.first()?);
        if let (Some(x), Some(y)) = (dur(a), dur(b))
            && (x - y).abs() > tol
        {
            diffs.push(format!("{at} lasts {x:.6} vs {y:.6} s"));
        }
        if a.kind == "video" && keyframes == Keyframes::Forced && !same_times(&a.keys, &b.keys, tol) {
            diffs.push(format!(
                "{at} keyframes: {} at {} vs {} at {}",
                a.keys.len(),
                list(&a.keys),
                b.keys.len(),
                list(&b.keys)
            ));
        }
        if a.kind == "audio" {
            if a.samples != b.samples {
                diffs.push(format!(
                    "{at} decodes {} vs {} samples ({:+})",
                    a.samples,
                    b.samples,
                    b.samples as i64 - a.samples as i64
                ));
            }
            if let (Some(x), Some(y)) = (a.audio_start, b.audio_start) {
                if (x - y).abs() > tol {
                    diffs.push(format!("{at} audio starts at {x:.6} vs {y:.6} s"));
                }
            } else if a.audio_start != b.audio_start {
                diffs.push(format!("{at} audio starts at {} vs {}", secs(a.audio_start), secs(b.audio_start)));
            }
        }
    }
    let offset = |v: &[Stream]| {
        let video = v.iter().find(|s| s.kind == "video")?.pts.first()?;
        let audio = v.iter().find(|s| s.kind == "audio")?.audio_start?;
        Some(video - audio)
    };
    if let (Some(x), Some(y)) = (offset(&d), offset(&s))
        && (x - y).abs() > AV_TOLERANCE
    {
        diffs.push(format!("{label}: A/V offset (video − audio start) {:.1} vs {:.1} ms", x * 1e3, y * 1e3));
    }
}

fn same_times(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

/// The first few of a list of times, for a message.
fn list(v: &[f64]) -> String {
    let shown: Vec<String> = v.iter().take(6).map(|t| format!("{t:.3}")).collect();
    if v.len() > 6 { format!("[{}, …]", shown.join(", ")) } else { format!("[{}]", shown.join(", ")) }
}

/// Two timestamp lists: the same count, each within `tol`; else where and how
/// much they differ.
fn compare_times(at: &str, what: &str, a: &[f64], b: &[f64], tol: f64, diffs: &mut Vec<String>) {
    if same_times(a, b, tol) {
        return;
    }
    let first = a.iter().zip(b).position(|(x, y)| (x - y).abs() > tol);
    let mut msg = if a.len() != b.len() {
        format!("{at} {} vs {} packets", a.len(), b.len())
    } else {
        let (i, x, y) = max_diff(a, b).unwrap();
        format!("{at} {what} differ by up to {:.3} ms (#{i}: {x:.6} vs {y:.6})", (x - y).abs() * 1e3)
    };
    if let Some(i) = first {
        msg.push_str(&format!("; first {what} difference at #{i}: {:.6} vs {:.6}", a[i], b[i]));
    }
    diffs.push(msg);
}
