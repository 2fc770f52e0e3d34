//! Hardware-aware routing, as pure rules shared by the three programs:
//!
//! * which encoder, decoder, filter and hwaccel names belong to a hardware
//!   family (`h264_nvenc` and `scale_cuda` to `cuda`, `h264_vaapi` to `vaapi`…),
//!   so that a node advertises them only when the family works there, and the
//!   shim knows a job needs hardware;
//! * node-declared argument translations (`h264_qsv` runs as `h264_vaapi`),
//!   applied to the parsed command line, never to raw text;
//! * the capability probes Jellyfin runs, which nodes answer for the cluster, and
//!   the edits that keep a node's listings in line with what it advertises.
//!
//! No IO here: the node runs ffmpeg, the shim and the controller only look.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ffmpeg::cmdline::{CommandLine, Opt};
use crate::ffmpeg::decision::Needs;
use crate::ffmpeg::filtergraph;

/// Jellyfin's capability probes (CONTRACT.md §2, probes 1 to 7), argv after the
/// program name. Nodes run each once at start and upload the answers; the
/// controller serves them to shims with `probes = "cluster"`.
pub const CAPABILITY_PROBES: &[&[&str]] = &[
    &["-version"],
    &["-decoders"],
    &["-encoders"],
    &["-filters"],
    &["-hwaccels"],
    &["-h", "filter=scale_cuda"],
    &["-h", "filter=tonemap_cuda"],
    &["-h", "filter=tonemap_opencl"],
    &["-h", "filter=overlay_opencl"],
    &["-h", "filter=overlay_vaapi"],
    &["-h", "filter=overlay_vulkan"],
    &["-h", "filter=transpose_opencl"],
    &["-h", "filter=overlay_cuda"],
    &["-h", "bsf=hevc_metadata"],
    &["-h", "bsf=av1_metadata"],
    &["-h", "bsf=dovi_rpu"],
];

/// What kind of name a translation or a family lookup is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Encoder,
    Decoder,
    Filter,
    /// `-hwaccel NAME`, and the device type of the same name
    /// (`-init_hw_device NAME=…`, `-NAME_device`).
    Hwaccel,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Encoder => "encoder",
            Kind::Decoder => "decoder",
            Kind::Filter => "filter",
            Kind::Hwaccel => "hwaccel",
        }
    }
}

/// Codec name suffixes of hardware encoders and decoders, and their family.
const CODEC_SUFFIXES: &[(&str, &str)] = &[
    ("_nvenc", "cuda"),
    ("_cuvid", "cuda"),
    ("_vaapi", "vaapi"),
    ("_qsv", "qsv"),
    ("_videotoolbox", "videotoolbox"),
    ("_amf", "amf"),
    ("_rkmpp", "rkmpp"),
    ("_v4l2m2m", "v4l2m2m"),
    ("_mediacodec", "mediacodec"),
    ("_mf", "mf"),
    ("_omx", "omx"),
    ("_mmal", "mmal"),
    ("_vulkan", "vulkan"),
    ("_d3d12va", "d3d12va"),
];

/// Filter name suffixes of hardware filters, and their family.
const FILTER_SUFFIXES: &[(&str, &str)] = &[
    ("_cuda", "cuda"),
    ("_npp", "cuda"),
    ("_vaapi", "vaapi"),
    ("_qsv", "qsv"),
    ("_opencl", "opencl"),
    ("_vulkan", "vulkan"),
    ("_videotoolbox", "videotoolbox"),
    ("_vt", "videotoolbox"),
    ("_rkrga", "rkmpp"),
];

/// Families ffmpeg can open a device for (`-init_hw_device TYPE`), so a node can
/// check them itself. The others (`rkmpp`, `v4l2m2m`, …) have no device type
/// to open: a node advertises them only when its configuration lists them.
pub const DEVICE_TYPES: &[&str] = &[
    "cuda",
    "vaapi",
    "qsv",
    "drm",
    "opencl",
    "vulkan",
    "vdpau",
    "videotoolbox",
    "d3d11va",
    "d3d12va",
    "dxva2",
    "amf",
    "mediacodec",
];

/// The hardware family `name` belongs to, if it is a hardware name at all.
pub fn family(kind: Kind, name: &str) -> Option<&'static str> {
    let by_suffix = |table: &[(&str, &'static str)]| {
        table.iter().find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix)).map(|(_, f)| *f)
    };
    match kind {
        Kind::Encoder | Kind::Decoder => by_suffix(CODEC_SUFFIXES),
        Kind::Filter if name == "libplacebo" => Some("vulkan"),
        Kind::Filter => by_suffix(FILTER_SUFFIXES),
        // Every hwaccel is hardware; a name ffmpeg may add later is its own family.
        Kind::Hwaccel => Some(DEVICE_TYPES.iter().find(|d| **d == name).copied().unwrap_or("other")),
    }
}

/// The hardware a job asks for, as `kind name` strings (`encoder h264_nvenc`,
/// `hwaccel vaapi`, `hw device qsv`); empty for a software job. A job with any is
/// never split: its local finisher would open the same devices on the Jellyfin
/// host.
pub fn hardware_needs(needs: &Needs) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |label: &str, kind: Option<Kind>, names: &BTreeSet<String>| {
        for n in names {
            if kind.is_none_or(|k| family(k, n).is_some()) {
                out.push(format!("{label} {n}"));
            }
        }
    };
    add("encoder", Some(Kind::Encoder), &needs.encoders);
    add("decoder", Some(Kind::Decoder), &needs.decoders);
    add("filter", Some(Kind::Filter), &needs.filters);
    add("hwaccel", None, &needs.hwaccels);
    add("hw device", None, &needs.hw_devices);
    out
}

/// One argument translation a node declares: jobs naming `from` run with `to`.
/// The node advertises `from` (when it has `to`), so the controller sends it
/// such jobs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Translation {
    /// Which name space `from` and `to` live in. Unset: the kind the node's
    /// ffmpeg has `to` in (encoders, then filters, decoders, hwaccels).
    #[serde(default)]
    pub kind: Option<Kind>,
    pub from: String,
    pub to: String,
    /// AVOptions removed (with their value) from the inputs or outputs that use
    /// `from`: options `to` does not know (`look_ahead` for QSV).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
    /// AVOptions renamed in the inputs or outputs that use `from`
    /// (`global_quality = "qp"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
}

/// Why a translation is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslationError {
    #[error("translation {0:?} is not FROM=TO")]
    Syntax(String),
    #[error("translation {0:?}: a name may only hold letters, digits, `_` and `-`")]
    Name(String),
}

impl std::str::FromStr for Translation {
    type Err = TranslationError;

    /// `FROM=TO`, the form of the flag and the environment variable.
    fn from_str(s: &str) -> Result<Translation, TranslationError> {
        let (from, to) = s.split_once('=').ok_or_else(|| TranslationError::Syntax(s.to_owned()))?;
        let t = Translation {
            kind: None,
            from: from.trim().to_owned(),
            to: to.trim().to_owned(),
            drop: Vec::new(),
            rename: BTreeMap::new(),
        };
        t.check()?;
        Ok(t)
    }
}

impl Translation {
    /// Names are plain identifiers: they end up as option values and in filter
    /// graphs, where punctuation would change the meaning.
    pub fn check(&self) -> Result<(), TranslationError> {
        let plain = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let options = self.drop.iter().chain(self.rename.keys()).chain(self.rename.values());
        for n in [&self.from, &self.to].into_iter().chain(options) {
            if !plain(n) {
                return Err(TranslationError::Name(n.clone()));
            }
        }
        Ok(())
    }

    fn edit_opts(&self, opts: &mut Vec<Opt>) {
        opts.retain(|o| !(o.avoption && self.drop.iter().any(|d| d == o.name())));
        for o in opts.iter_mut() {
            if let Some(new) = self.rename.get(o.name()).filter(|_| o.avoption) {
                let key = match o.spec() {
                    Some(spec) => format!("{new}:{spec}"),
                    None => new.clone(),
                };
                *o = o.with_key(key);
            }
        }
    }
}

/// Applies `translations` (kinds resolved) to a parsed command line, and says
/// what changed (for the node's log). Only option values the model knows the
/// meaning of are touched: codec names of inputs and outputs, `-hwaccel` and
/// `-hwaccel_output_format`, device types of `-init_hw_device` and
/// `-vaapi_device`/`-qsv_device`, and filter names in filter graphs.
pub fn translate(cl: &mut CommandLine, translations: &[Translation]) -> Vec<String> {
    let mut done = Vec::new();
    for t in translations {
        let mut hit = false;
        match t.kind {
            Some(Kind::Encoder) => {
                for o in &mut cl.outputs {
                    if rename_codecs(&mut o.opts, &t.from, &t.to) {
                        t.edit_opts(&mut o.opts);
                        hit = true;
                    }
                }
            }
            Some(Kind::Decoder) => {
                for i in &mut cl.inputs {
                    if rename_codecs(&mut i.opts, &t.from, &t.to) {
                        t.edit_opts(&mut i.opts);
                        hit = true;
                    }
                }
            }
            Some(Kind::Filter) => {
                let graphs = cl.outputs.iter_mut().flat_map(|o| o.opts.iter_mut()).chain(cl.globals.iter_mut());
                for o in graphs.filter(|o| matches!(o.name(), "filter" | "vf" | "af" | "filter_complex" | "lavfi")) {
                    if let Some(v) = &o.value
                        && let Some(renamed) = filtergraph::rename_filter(v, &t.from, &t.to)
                    {
                        o.value = Some(renamed);
                        hit = true;
                    }
                }
            }
            Some(Kind::Hwaccel) => hit = rename_hwaccel(cl, t),
            None => {}
        }
        if hit {
            done.push(format!("{} {} -> {}", t.kind.map_or("?", Kind::as_str), t.from, t.to));
        }
    }
    done
}

fn rename_codecs(opts: &mut [Opt], from: &str, to: &str) -> bool {
    let mut hit = false;
    for o in opts.iter_mut().filter(|o| matches!(o.name(), "codec" | "vcodec" | "acodec" | "scodec" | "dcodec")) {
        if o.value.as_deref() == Some(from) {
            o.value = Some(to.to_owned());
            hit = true;
        }
    }
    hit
}

fn rename_hwaccel(cl: &mut CommandLine, t: &Translation) -> bool {
    let mut hit = false;
    for i in &mut cl.inputs {
        let mut used = false;
        for o in i.opts.iter_mut().filter(|o| matches!(o.name(), "hwaccel" | "hwaccel_output_format")) {
            if o.value.as_deref() == Some(t.from.as_str()) {
                o.value = Some(t.to.clone());
                used = true;
            }
        }
        if used {
            t.edit_opts(&mut i.opts);
            hit = true;
        }
    }
    let from_device = format!("{}_device", t.from);
    let to_device = format!("{}_device", t.to);
    let to_is_option = matches!(t.to.as_str(), "vaapi" | "qsv");
    for o in &mut cl.globals {
        if o.name() == "init_hw_device"
            && let Some(v) = &o.value
        {
            // TYPE, TYPE=NAME[:DEV…], TYPE:DEV, TYPE@SOURCE
            let end = v.find(['=', ':', '@']).unwrap_or(v.len());
            if v[..end] == t.from {
                o.value = Some(format!("{}{}", t.to, &v[end..]));
                hit = true;
            }
        } else if o.key == from_device && to_is_option {
            *o = o.with_key(to_device.clone());
            hit = true;
        }
        // `-filter_hw_device` names a device, not a type: nothing to do.
    }
    hit
}

/// How a listing probe's entries are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `-encoders` / `-decoders`: ` FLAGS name  description` after a ` ------` line.
    Codecs,
    /// `-filters`: ` FLAGS name  X->Y  description`.
    Filters,
    /// `-hwaccels`: one name per line after `Hardware acceleration methods:`.
    Hwaccels,
}

impl Listing {
    /// The listing probe that lists names of `kind`.
    pub fn of(kind: Kind) -> Listing {
        match kind {
            Kind::Encoder | Kind::Decoder => Listing::Codecs,
            Kind::Filter => Listing::Filters,
            Kind::Hwaccel => Listing::Hwaccels,
        }
    }

    /// The entry's name, if `line` is an entry; `body` says whether the header is
    /// over (for codec and hwaccel listings).
    fn entry(self, line: &str, body: bool) -> Option<&str> {
        match self {
            Listing::Codecs if body => line.split_whitespace().nth(1),
            Listing::Filters => {
                let f: Vec<&str> = line.split_whitespace().take(3).collect();
                (f.len() == 3 && f[2].contains("->")).then(|| f[1])
            }
            Listing::Hwaccels if body => Some(line.trim()).filter(|l| !l.is_empty()),
            _ => None,
        }
    }

    fn header_ends(self, line: &str) -> bool {
        match self {
            Listing::Codecs => line.trim_start().starts_with("---"),
            Listing::Filters => false,
            Listing::Hwaccels => line.starts_with("Hardware acceleration methods"),
        }
    }
}

/// A listing probe's stdout with the entries `keep` refuses removed, and for each
/// `(new, like)` of `add` whose `new` is not listed, a copy of `like`'s entry
/// under the name `new` right after it. The rest (header, order, column widths)
/// stays ffmpeg's own, so parsers of ffmpeg's output read it as usual.
pub fn edit_listing(text: &str, listing: Listing, keep: impl Fn(&str) -> bool, add: &[(String, String)]) -> String {
    let listed: BTreeSet<&str> = {
        let mut body = false;
        text.lines()
            .filter_map(|l| {
                let name = listing.entry(l, body);
                body |= listing.header_ends(l);
                name
            })
            .collect()
    };
    let mut out = String::with_capacity(text.len() + 256);
    let mut body = false;
    let mut added = BTreeSet::new();
    for line in text.split_inclusive('\n') {
        let name = listing.entry(line.trim_end_matches('\n'), body);
        body |= listing.header_ends(line);
        let Some(name) = name else {
            out.push_str(line);
            continue;
        };
        if keep(name) {
            out.push_str(line);
        }
        for (new, like) in add {
            if like == name && !listed.contains(new.as_str()) && added.insert(new.clone()) {
                let copy = rename_entry(line, name, new);
                out.push_str(&copy);
                if !copy.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// `line` with its entry name `old` replaced by `new`, keeping the columns after
/// it where they were when `new` fits.
fn rename_entry(line: &str, old: &str, new: &str) -> String {
    let Some(at) = line.match_indices(old).map(|(i, _)| i).find(|&i| {
        let before = line[..i].chars().next_back();
        let after = line[i + old.len()..].chars().next();
        before.is_none_or(char::is_whitespace) && after.is_none_or(char::is_whitespace)
    }) else {
        return line.to_owned();
    };
    let rest = &line[at + old.len()..];
    let spaces = rest.len() - rest.trim_start_matches(' ').len();
    let width = old.len() + spaces;
    let tail = &rest[spaces..];
    if tail.is_empty() || tail == "\n" {
        return format!("{}{new}{tail}", &line[..at]);
    }
    format!("{}{new:<w$}{tail}", &line[..at], w = width.max(new.len() + 1))
}

/// How much hardware a node offers, for picking the node whose probe answers
/// the cluster reports: hardware names first, then everything else.
pub fn capability_score(
    encoders: &BTreeSet<String>,
    filters: &BTreeSet<String>,
    hwaccels: &BTreeSet<String>,
) -> (usize, usize) {
    let hw = encoders.iter().filter(|n| family(Kind::Encoder, n).is_some()).count()
        + filters.iter().filter(|n| family(Kind::Filter, n).is_some()).count()
        + hwaccels.len();
    (hw, encoders.len() + filters.len() + hwaccels.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn tr(kind: Kind, from: &str, to: &str) -> Translation {
        Translation { kind: Some(kind), ..from_to(from, to) }
    }

    fn from_to(from: &str, to: &str) -> Translation {
        format!("{from}={to}").parse().unwrap()
    }

    #[test]
    fn families() {
        assert_eq!(family(Kind::Encoder, "h264_nvenc"), Some("cuda"));
        assert_eq!(family(Kind::Encoder, "hevc_qsv"), Some("qsv"));
        assert_eq!(family(Kind::Encoder, "h264_vaapi"), Some("vaapi"));
        assert_eq!(family(Kind::Encoder, "h264_rkmpp"), Some("rkmpp"));
        assert_eq!(family(Kind::Encoder, "libx264"), None);
        assert_eq!(family(Kind::Encoder, "_qsv"), None);
        assert_eq!(family(Kind::Decoder, "h264_cuvid"), Some("cuda"));
        assert_eq!(family(Kind::Filter, "scale_vaapi"), Some("vaapi"));
        assert_eq!(family(Kind::Filter, "hwupload_cuda"), Some("cuda"));
        assert_eq!(family(Kind::Filter, "scale_vt"), Some("videotoolbox"));
        assert_eq!(family(Kind::Filter, "scale"), None);
        assert_eq!(family(Kind::Filter, "hwupload"), None);
        assert_eq!(family(Kind::Hwaccel, "vaapi"), Some("vaapi"));
    }

    #[test]
    fn hardware_needs_of_jobs() {
        use crate::ffmpeg::{Program, classify};
        let needs = |s: &str| hardware_needs(&classify(Program::Ffmpeg, &args(s)).needs);
        assert!(needs("-i in.mkv -c:v libx264 -vf scale=640:-2 out.mp4").is_empty());
        assert_eq!(needs("-i in.mkv -c:v h264_nvenc out.mp4"), ["encoder h264_nvenc"]);
        assert_eq!(
            needs(
                "-init_hw_device vaapi=va:/dev/dri/renderD128 -hwaccel vaapi -i in.mkv -vf scale_vaapi=w=1280 -c:v h264_vaapi out.mp4"
            ),
            ["encoder h264_vaapi", "filter scale_vaapi", "hwaccel vaapi", "hw device vaapi"]
        );
    }

    #[test]
    fn translation_syntax() {
        let t: Translation = " h264_qsv = h264_vaapi ".parse().unwrap();
        assert_eq!((t.from.as_str(), t.to.as_str(), t.kind), ("h264_qsv", "h264_vaapi", None));
        assert!(matches!("h264_qsv".parse::<Translation>(), Err(TranslationError::Syntax(_))));
        assert!(matches!("a=b,c".parse::<Translation>(), Err(TranslationError::Name(_))));
        assert!(matches!("=b".parse::<Translation>(), Err(TranslationError::Name(_))));
    }

    #[test]
    fn encoder_translation_with_option_edits() {
        let mut cl = CommandLine::parse(&args(
            "-i in.mkv -c:v h264_qsv -preset veryfast -look_ahead 0 -global_quality:v 25 -c:a aac out.mp4",
        ))
        .unwrap();
        let mut t = tr(Kind::Encoder, "h264_qsv", "libx264");
        t.drop = vec!["look_ahead".into()];
        t.rename = [("global_quality".to_owned(), "crf".to_owned())].into();
        let done = translate(&mut cl, &[t]);
        assert_eq!(done, ["encoder h264_qsv -> libx264"]);
        assert_eq!(cl.to_args(), args("-i in.mkv -c:v libx264 -preset veryfast -crf:v 25 -c:a aac out.mp4"));
        // An output not using it is left alone.
        let mut cl = CommandLine::parse(&args("-i in.mkv -c:v libx264 -look_ahead 0 out.mp4")).unwrap();
        assert!(translate(&mut cl, &[tr(Kind::Encoder, "h264_qsv", "libx264")]).is_empty());
        assert_eq!(cl.to_args(), args("-i in.mkv -c:v libx264 -look_ahead 0 out.mp4"));
    }

    #[test]
    fn hwaccel_and_filter_translation() {
        let mut cl = CommandLine::parse(&args(
            "-init_hw_device qsv=hw:/dev/dri/renderD128 -filter_hw_device hw -hwaccel qsv -hwaccel_output_format qsv -i in.mkv -vf scale_qsv=w=1280:h=720,format=nv12 -c:v h264_qsv out.mp4",
        ))
        .unwrap();
        let done = translate(
            &mut cl,
            &[
                tr(Kind::Hwaccel, "qsv", "vaapi"),
                tr(Kind::Filter, "scale_qsv", "scale_vaapi"),
                tr(Kind::Encoder, "h264_qsv", "h264_vaapi"),
            ],
        );
        assert_eq!(done.len(), 3, "{done:?}");
        assert_eq!(
            cl.to_args(),
            args(
                "-init_hw_device vaapi=hw:/dev/dri/renderD128 -filter_hw_device hw -hwaccel vaapi -hwaccel_output_format vaapi -i in.mkv -vf scale_vaapi=w=1280:h=720,format=nv12 -c:v h264_vaapi out.mp4"
            )
        );
        let mut cl =
            CommandLine::parse(&args("-qsv_device /dev/dri/renderD128 -hwaccel qsv -i in.mkv out.mp4")).unwrap();
        translate(&mut cl, &[tr(Kind::Hwaccel, "qsv", "vaapi")]);
        assert_eq!(cl.to_args(), args("-vaapi_device /dev/dri/renderD128 -hwaccel vaapi -i in.mkv out.mp4"));
    }

    const ENCODERS: &str = "Encoders:
 V..... = Video
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D h264_nvenc           NVIDIA NVENC H.264 encoder (codec h264)
 V..... h264_qsv             H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (Intel Quick Sync Video acceleration) (codec h264)
 A....D aac                  AAC (Advanced Audio Coding)
";

    #[test]
    fn listings_drop_unusable_and_add_translated_entries() {
        let keep = |n: &str| family(Kind::Encoder, n).is_none();
        let add = [("h264_amf".to_owned(), "libx264".to_owned())];
        let edited = edit_listing(ENCODERS, Listing::Codecs, keep, &add);
        assert_eq!(
            edited,
            "Encoders:
 V..... = Video
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D h264_amf             libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 A....D aac                  AAC (Advanced Audio Coding)
"
        );
        // A name already listed keeps its own line rather than a copy.
        let keep_qsv = |n: &str| n != "h264_nvenc";
        let add = [("h264_qsv".to_owned(), "libx264".to_owned())];
        let edited = edit_listing(ENCODERS, Listing::Codecs, keep_qsv, &add);
        assert_eq!(edited.matches("h264_qsv").count(), 1);
        assert!(edited.contains("Intel Quick Sync"));

        let hw = "Hardware acceleration methods:\nvdpau\ncuda\nvulkan\n\n";
        let edited = edit_listing(hw, Listing::Hwaccels, |n| n == "vulkan", &[("qsv".into(), "vulkan".into())]);
        assert_eq!(edited, "Hardware acceleration methods:\nvulkan\nqsv\n\n");

        // Header lines of fewer than three fields are not entries.
        assert_eq!(
            edit_listing("Filters:\n  T.. = Timeline support\n", Listing::Filters, |_| false, &[]),
            "Filters:\n  T.. = Timeline support\n"
        );
        let filters = " ... scale_vaapi       V->V       Scale to/from VAAPI surfaces.\n TSC scale             V->V       Scale the input video size.\n";
        let edited = edit_listing(filters, Listing::Filters, |n| n == "scale", &[("scale_qsv".into(), "scale".into())]);
        assert_eq!(
            edited,
            " TSC scale             V->V       Scale the input video size.\n TSC scale_qsv         V->V       Scale the input video size.\n"
        );
    }

    #[test]
    fn probe_source_prefers_hardware() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let gpu = capability_score(&set(&["libx264", "h264_vaapi"]), &set(&["scale"]), &set(&["vaapi"]));
        let cpu = capability_score(&set(&["libx264", "libx265", "aac"]), &set(&["scale", "crop"]), &set(&[]));
        assert!(gpu > cpu, "{gpu:?} {cpu:?}");
    }
}
