//! A model of Jellyfin 10.11 as an ffmpeg user (../shared/jellyfin/CONTRACT.md):
//! it launches ffmpeg the way Jellyfin does, runs EncoderValidator's probes and
//! draws Jellyfin's conclusions from them, serves HLS segments by Jellyfin's
//! readiness rule, seeks by stopping and restarting the job, stops with `q` and
//! parses stderr as JobLogger does.
//!
//! The model only acts and observes; the tests compare what it observed with
//! the real ffmpeg against what it observed with the shim on a cluster.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::cluster::real;
use super::dotnet_args;

/// How long the model waits for anything Jellyfin would wait for forever
/// (probes have no timeout, segment requests wait until the client leaves).
/// A test that would hang Jellyfin fails after this instead.
const FOREVER: Duration = Duration::from_secs(120);

/// The `ffmpeg` Jellyfin is configured with: a path (ffprobe is found next to
/// it, §1.1) and the environment and working directory Jellyfin's process has.
#[derive(Clone, Debug)]
pub struct Ffmpeg {
    pub path: PathBuf,
    envs: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
}

impl Ffmpeg {
    /// The real ffmpeg on PATH (fails loudly when missing).
    pub fn direct() -> Ffmpeg {
        Ffmpeg { path: real("ffmpeg"), envs: Vec::new(), cwd: None }
    }

    /// The program, environment and directory of `cmd` (e.g. `Cluster::shim()`).
    pub fn from_command(cmd: &Command) -> Ffmpeg {
        Ffmpeg {
            path: PathBuf::from(cmd.get_program()),
            envs: cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect(),
            cwd: cmd.get_current_dir().map(Path::to_path_buf),
        }
    }

    /// Sets (or with `None` removes) one variable of the environment.
    pub fn env(mut self, key: &str, value: Option<&str>) -> Ffmpeg {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.into(), value.map(OsString::from)));
        self
    }

    /// `MediaEncoder.cs:168-169`: the last path component replaced by `ffprobe`,
    /// extension kept. There is no separate setting.
    pub fn ffprobe(&self) -> PathBuf {
        let ext = self.path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        self.path.with_file_name(format!("ffprobe{ext}"))
    }

    /// `program` with Jellyfin's argument *string*, split as .NET does (§1.3),
    /// and Jellyfin's environment; the caller sets up the standard streams.
    fn command(&self, program: &Path, arguments: &str) -> Command {
        let mut c = Command::new(program);
        c.args(dotnet_args::split(arguments));
        for (k, v) in &self.envs {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c
    }
}

// ---------------------------------------------------------------------------
// EncoderValidator (§2)

/// Jellyfin's `_requiredDecoders` (EncoderValidator.cs:17-60).
const REQUIRED_DECODERS: &[&str] = &[
    "h264",
    "hevc",
    "vp8",
    "libvpx",
    "vp9",
    "libvpx-vp9",
    "av1",
    "libdav1d",
    "mpeg2video",
    "mpeg4",
    "msmpeg4",
    "dca",
    "ac3",
    "ac4",
    "aac",
    "mp3",
    "flac",
    "truehd",
    "h264_qsv",
    "hevc_qsv",
    "mpeg2_qsv",
    "vc1_qsv",
    "vp8_qsv",
    "vp9_qsv",
    "av1_qsv",
    "h264_cuvid",
    "hevc_cuvid",
    "mpeg2_cuvid",
    "vc1_cuvid",
    "mpeg4_cuvid",
    "vp8_cuvid",
    "vp9_cuvid",
    "av1_cuvid",
    "h264_rkmpp",
    "hevc_rkmpp",
    "mpeg1_rkmpp",
    "mpeg2_rkmpp",
    "mpeg4_rkmpp",
    "vp8_rkmpp",
    "vp9_rkmpp",
    "av1_rkmpp",
];

/// `_requiredEncoders` (EncoderValidator.cs:62-100).
const REQUIRED_ENCODERS: &[&str] = &[
    "libx264",
    "libx265",
    "libsvtav1",
    "mpeg4",
    "msmpeg4",
    "libvpx",
    "libvpx-vp9",
    "aac",
    "aac_at",
    "libfdk_aac",
    "ac3",
    "alac",
    "dca",
    "libmp3lame",
    "libopus",
    "libvorbis",
    "flac",
    "truehd",
    "srt",
    "h264_amf",
    "hevc_amf",
    "av1_amf",
    "h264_qsv",
    "hevc_qsv",
    "mjpeg_qsv",
    "av1_qsv",
    "h264_nvenc",
    "hevc_nvenc",
    "av1_nvenc",
    "h264_vaapi",
    "hevc_vaapi",
    "av1_vaapi",
    "mjpeg_vaapi",
    "h264_v4l2m2m",
    "h264_videotoolbox",
    "hevc_videotoolbox",
    "mjpeg_videotoolbox",
    "h264_rkmpp",
    "hevc_rkmpp",
];

/// `_requiredFilters` (EncoderValidator.cs:102-153, 10.11 list of CONTRACT.md §2).
const REQUIRED_FILTERS: &[&str] = &[
    "alphasrc",
    "zscale",
    "tonemapx",
    "scale_qsv",
    "vpp_qsv",
    "deinterlace_qsv",
    "overlay_qsv",
    "scale_cuda",
    "yadif_cuda",
    "bwdif_cuda",
    "tonemap_cuda",
    "overlay_cuda",
    "transpose_cuda",
    "hwupload_cuda",
    "scale_opencl",
    "tonemap_opencl",
    "overlay_opencl",
    "transpose_opencl",
    "yadif_opencl",
    "bwdif_opencl",
    "scale_vaapi",
    "deinterlace_vaapi",
    "tonemap_vaapi",
    "procamp_vaapi",
    "overlay_vaapi",
    "transpose_vaapi",
    "hwupload_vaapi",
    "libplacebo",
    "scale_vulkan",
    "overlay_vulkan",
    "transpose_vulkan",
    "flip_vulkan",
    "yadif_videotoolbox",
    "bwdif_videotoolbox",
    "scale_vt",
    "transpose_vt",
    "overlay_videotoolbox",
    "tonemap_videotoolbox",
    "scale_rkrga",
    "vpp_rkrga",
    "overlay_rkrga",
];

/// `_filterOptionsDict` (§2 row 5): filter and the text its help must contain.
const FILTER_OPTIONS: &[(&str, &str)] = &[
    ("scale_cuda", "format"),
    ("tonemap_cuda", "GPU accelerated HDR to SDR tonemapping"),
    ("tonemap_opencl", "bt2390"),
    ("overlay_opencl", "Action to take when encountering EOF from secondary input"),
    ("overlay_vaapi", "Action to take when encountering EOF from secondary input"),
    ("overlay_vulkan", "Action to take when encountering EOF from secondary input"),
    ("transpose_opencl", "rotate by half-turn"),
    ("overlay_opencl", "alpha_format"),
    ("overlay_cuda", "alpha_format"),
];

/// `_bsfOptionsDict` (§2 row 6).
const BSF_OPTIONS: &[(&str, &str)] = &[
    ("hevc_metadata", "remove_dovi"),
    ("hevc_metadata", "remove_hdr10plus"),
    ("av1_metadata", "remove_dovi"),
    ("av1_metadata", "remove_hdr10plus"),
    ("dovi_rpu", "strip"),
];

/// The 4.4 minimum library versions (`_ffmpegMinimumLibraryVersions`).
const MIN_LIBS: &[(&str, u32, u32)] = &[
    ("libavutil", 56, 70),
    ("libavcodec", 58, 134),
    ("libavformat", 58, 76),
    ("libavdevice", 58, 13),
    ("libavfilter", 7, 110),
    ("libswscale", 5, 9),
    ("libswresample", 3, 9),
    ("libpostproc", 55, 9),
];

/// What Jellyfin concludes from the probes: everything that later shapes its
/// command lines (§2, "Effects of what the shim advertises").
#[derive(Clone, Debug, PartialEq)]
pub struct Conclusions {
    /// `Found ffmpeg version X` (None: unknown, ffmpeg rejected).
    pub version: Option<Vec<u32>>,
    /// ValidatePath's verdict: version known and ≥ 4.4, not Libav.
    pub accepted: bool,
    pub decoders: Vec<String>,
    pub encoders: Vec<String>,
    pub filters: Vec<String>,
    /// `(filter, option text)` → found, in probe order.
    pub filter_options: Vec<(String, bool)>,
    /// `(bsf, option text)` → found.
    pub bsf_options: Vec<(String, bool)>,
    pub hwaccels: Vec<String>,
    /// `IsPkeyPauseSupported` (§2 row 8).
    pub pkey_pause: bool,
    /// VideoToolbox `+low_priority` (§2 row 9): exit code 0.
    pub low_priority: bool,
    /// ffprobe `-only_first_vframe` (§2 row 10): exit code 0.
    pub only_first_vframe: bool,
}

impl Conclusions {
    /// Named fields, so that a difference can be reported by name.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("version", format!("{:?}", self.version)),
            ("accepted", self.accepted.to_string()),
            ("decoders", format!("{:?}", self.decoders)),
            ("encoders", format!("{:?}", self.encoders)),
            ("filters", format!("{:?}", self.filters)),
            ("filter_options", format!("{:?}", self.filter_options)),
            ("bsf_options", format!("{:?}", self.bsf_options)),
            ("hwaccels", format!("{:?}", self.hwaccels)),
            ("pkey_pause", self.pkey_pause.to_string()),
            ("low_priority", self.low_priority.to_string()),
            ("only_first_vframe", self.only_first_vframe.to_string()),
        ]
    }

    /// The throttler's keys (§4.3): `p`/`u` with the p-key patch, else `c`/newline
    /// for ffmpeg ≤ 6.1, else no throttling at all (`TranscodeManager.cs:542-558`).
    pub fn throttle_keys(&self) -> Option<(&'static str, &'static str)> {
        let old = self.version.as_ref().is_some_and(|v| version_cmp(v, &[6, 1]) != std::cmp::Ordering::Greater);
        if self.pkey_pause {
            Some(("p", "u"))
        } else if old {
            Some(("c", "\n"))
        } else {
            None
        }
    }
}

/// .NET `Version` comparison: missing components are smaller than present ones
/// (4.4 < 4.4.0), which is close enough for the ≥/≤ checks Jellyfin makes.
fn version_cmp(a: &[u32], b: &[u32]) -> std::cmp::Ordering {
    a.cmp(b)
}

/// Runs EncoderValidator's probes (§2 rows 1–10, in `MediaEncoder.cs` order;
/// rows 11–12 need a VAAPI/Vulkan device configured, which Jellyfin does not
/// probe by default) and returns Jellyfin's conclusions.
pub fn validate(ff: &Ffmpeg) -> Conclusions {
    let version_out = process_output(ff, &ff.path, "-version", Stream::Stdout, None);
    let version = parse_version(&version_out);
    let accepted = !version_out.to_lowercase().contains("libav developers")
        && version.as_ref().is_some_and(|v| version_cmp(v, &[4, 4]) != std::cmp::Ordering::Less);
    // GetFFmpegVersion runs -version a second time; its answer must agree.
    let again = parse_version(&process_output(ff, &ff.path, "-version", Stream::Stdout, None));
    assert_eq!(version, again, "two -version probes disagree");

    let decoders = matching(&process_output(ff, &ff.path, "-decoders", Stream::Stdout, None), 6, 6, REQUIRED_DECODERS);
    let encoders = matching(&process_output(ff, &ff.path, "-encoders", Stream::Stdout, None), 6, 6, REQUIRED_ENCODERS);
    let filters = matching(&process_output(ff, &ff.path, "-filters", Stream::Stdout, None), 2, 3, REQUIRED_FILTERS);
    let help = |kind: &str, heading: &str, name: &str, option: &str| {
        let out = process_output(ff, &ff.path, &format!("-h {kind}={name}"), Stream::Stdout, None);
        (format!("{name}:{option}"), out.contains(&format!("{heading} {name}")) && out.contains(option))
    };
    let filter_options = FILTER_OPTIONS.iter().map(|(f, o)| help("filter", "Filter", f, o)).collect();
    let bsf_options = BSF_OPTIONS.iter().map(|(b, o)| help("bsf", "Bit stream filter", b, o)).collect();
    // GetHwaccelTypes: split on \r and \n, drop empties, skip the header, distinct.
    let mut hwaccels: Vec<String> = Vec::new();
    for l in process_output(ff, &ff.path, "-hwaccels", Stream::Stdout, None)
        .split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .skip(1)
    {
        if !hwaccels.iter().any(|h| h == l) {
            hwaccels.push(l.to_owned());
        }
    }
    let d =
        if version.as_ref().is_some_and(|v| version_cmp(v, &[7]) != std::cmp::Ordering::Less) { 10000 } else { 1000 };
    let keys = process_output(
        ff,
        &ff.path,
        &format!("-hide_banner -f lavfi -i nullsrc=s=1x1:d={d} -f null -"),
        Stream::Stderr,
        Some("?"),
    );
    let pkey_pause = keys.contains("p      pause transcoding");
    let low_priority = exit_code_ok(
        ff,
        &ff.path,
        "-loglevel quiet -hwaccel_flags +low_priority -hide_banner -f lavfi -i nullsrc=s=1x1:d=100 -f null -",
    );
    let only_first_vframe =
        exit_code_ok(ff, &ff.ffprobe(), "-loglevel quiet -f lavfi -i nullsrc=s=1x1:d=1 -only_first_vframe");
    Conclusions {
        version,
        accepted,
        decoders,
        encoders,
        filters,
        filter_options,
        bsf_options,
        hwaccels,
        pkey_pause,
        low_priority,
        only_first_vframe,
    }
}

/// `^ffmpeg version n?((?:[0-9]+\.?)+)` on the start of the output, parsed by
/// `Version.TryParse` (2–4 numeric components, no trailing dot); else the
/// library versions against the 4.4 minimums, giving 4.4.
fn parse_version(out: &str) -> Option<Vec<u32>> {
    if let Some(rest) = out.strip_prefix("ffmpeg version ") {
        let rest = rest.strip_prefix('n').unwrap_or(rest);
        let captured: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let parts: Vec<&str> = captured.split('.').collect();
        if (2..=4).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty()) {
            return Some(parts.iter().map(|p| p.parse().unwrap()).collect());
        }
    }
    // `((?<name>lib\w+)\s+(?<major>[0-9]+)\.\s*(?<minor>[0-9]+))` over the whole output.
    let mut libs = BTreeMap::new();
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if let [name, major, minor, ..] = t.as_slice()
            && name.starts_with("lib")
            && let (Some(major), Ok(minor)) = (major.strip_suffix('.'), minor.trim_end_matches('/').parse::<u32>())
            && let Ok(major) = major.parse::<u32>()
        {
            libs.insert(name.to_string(), (major, minor));
        }
    }
    MIN_LIBS.iter().all(|(name, maj, min)| libs.get(*name).is_some_and(|v| *v >= (*maj, *min))).then(|| vec![4, 4])
}

/// The codec/filter regexes: `^\s\S{lo,hi}\s(?<name>[\w|-]+)\s+.+$` per line,
/// kept when the name is in `required` (in output order, like the LINQ query).
fn matching(out: &str, lo: usize, hi: usize, required: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for line in out.lines() {
        let c: Vec<char> = line.chars().collect();
        if c.first().is_none_or(|c| !c.is_whitespace()) {
            continue;
        }
        let flags = c[1..].iter().take_while(|c| !c.is_whitespace()).count();
        if !(lo..=hi).contains(&flags) || c.get(1 + flags).is_none_or(|c| !c.is_whitespace()) {
            continue;
        }
        let rest: String = c[2 + flags..].iter().collect();
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || "_|-".contains(*c)).collect();
        let after = &rest[name.len()..];
        let tail = after.trim_start();
        if !name.is_empty() && after.len() > tail.len() && !tail.is_empty() && required.contains(&name.as_str()) {
            found.push(name);
        }
    }
    found
}

#[derive(Clone, Copy, PartialEq)]
enum Stream {
    Stdout,
    Stderr,
}

/// `GetProcessOutput` (`EncoderValidator.cs:636-666`): stdout and stderr both
/// redirected, stdin only when a test key is written (then closed), and only
/// ONE stream read to its end, with no timeout. The other pipe is left unread,
/// as Jellyfin leaves it: a program that fills it blocks, and so would Jellyfin.
fn process_output(ff: &Ffmpeg, program: &Path, arguments: &str, read: Stream, key: Option<&str>) -> String {
    let mut cmd = ff.command(program, arguments);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if key.is_some() { Stdio::piped() } else { Stdio::inherit() });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {} {arguments}: {e}", program.display()));
    if let Some(k) = key {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(k.as_bytes());
    }
    // The other pipe stays open and unread until the read one is done.
    let (mut out, unread): (Box<dyn Read + Send>, Box<dyn Send>) = match read {
        Stream::Stdout => (Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take())),
        Stream::Stderr => (Box::new(child.stderr.take().unwrap()), Box::new(child.stdout.take())),
    };
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    let text = match rx.recv_timeout(FOREVER) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "`{} {arguments}` did not close the stream Jellyfin reads: Jellyfin's startup would hang",
                program.display()
            )
        }
    };
    drop(unread);
    // Jellyfin disposes the Process without waiting; reap it so no zombie stays.
    let _ = child.wait();
    text
}

/// `GetProcessExitCode`: nothing redirected (Jellyfin's own streams are
/// inherited; as a service its stdin is /dev/null), exit code 0 means yes.
fn exit_code_ok(ff: &Ffmpeg, program: &Path, arguments: &str) -> bool {
    let mut cmd = ff.command(program, arguments);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let deadline = Instant::now() + FOREVER;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`{} {arguments}` never exited: Jellyfin's startup would hang", program.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Transcoding jobs (§4)

/// What JobLogger (§4.4) extracted from one job's stderr.
#[derive(Clone, Debug, Default)]
pub struct JobLog {
    /// Every line, `\r` and `\n` both ending one (.NET `ReadLineAsync`).
    pub lines: Vec<String>,
    /// Last `fps=` parsed.
    pub framerate: Option<f64>,
    /// Every `time=` parsed, in seconds (the request's start is NOT added here).
    pub times: Vec<f64>,
    /// Last `speed=` seen. Jellyfin ignores it; kept for the record.
    pub speed: Option<String>,
    /// How many lines made Jellyfin report progress (fps or percent parsed).
    pub reports: usize,
}

impl JobLog {
    /// One line as JobLogger reads it: split on single spaces, tokens compared
    /// case-insensitively (`JobLogger.cs:70-160`).
    fn parse(&mut self, line: &str) {
        let parts: Vec<&str> = line.split(' ').collect();
        let (mut rate, mut time) = (None, None);
        for (i, p) in parts.iter().enumerate() {
            let lower = p.to_ascii_lowercase();
            if lower == "fps=" && i + 1 < parts.len() {
                rate = parts[i + 1].parse::<f64>().ok().or(rate);
            } else if let Some(v) = lower.strip_prefix("fps=") {
                rate = v.parse::<f64>().ok().or(rate);
            } else if let Some(v) = lower.strip_prefix("time=") {
                time = timespan(v).or(time);
            } else if let Some(v) = lower.strip_prefix("speed=") {
                let v =
                    if v.is_empty() { parts[i + 1..].iter().find(|s| !s.is_empty()).copied().unwrap_or("") } else { v };
                self.speed = Some(v.to_owned());
            }
        }
        if let Some(r) = rate {
            self.framerate = Some(r);
        }
        if let Some(t) = time {
            self.times.push(t);
        }
        if rate.is_some() || time.is_some() {
            self.reports += 1;
        }
    }
}

/// .NET `TimeSpan.TryParse` for what ffmpeg prints: `[-]hh:mm:ss[.fraction]`.
fn timespan(s: &str) -> Option<f64> {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let p: Vec<&str> = s.split(':').collect();
    let [h, m, sec] = p.as_slice() else { return None };
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let sec: f64 = sec.parse().ok().filter(|_| sec.chars().all(|c| c.is_ascii_digit() || c == '.'))?;
    // In f64: 7.1 printed a time whose hours overflow u32 seconds in the
    // libx265 fMP4 scenario; the parse must not panic on it.
    (m < 60 && sec < 60.0).then(|| (if neg { -1.0 } else { 1.0 }) * (f64::from(h) * 3600.0 + f64::from(m) * 60.0 + sec))
}

/// How a job ended when Jellyfin stopped it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stopped {
    /// It exited within `WaitForExit(5000)` after `q`; otherwise it was SIGKILLed.
    pub exited_after_q: bool,
    pub code: Option<i32>,
}

/// A running transcode as `TranscodeManager.StartFfMpeg` holds it (§4.1):
/// stdin and stderr redirected, stdout not.
pub struct Job {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub log: Arc<Mutex<JobLog>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub arguments: String,
}

impl Job {
    pub fn launch(ff: &Ffmpeg, arguments: &str) -> Job {
        let mut cmd = ff.command(&ff.path, arguments);
        cmd.stdin(Stdio::piped()).stderr(Stdio::piped()).stdout(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", ff.path.display()));
        let stdin = child.stdin.take();
        let log = Arc::new(Mutex::new(JobLog::default()));
        let err = child.stderr.take().unwrap();
        let l2 = log.clone();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut buf = Vec::new();
            let mut pending_cr = false;
            let mut byte = [0u8; 1];
            // Byte by byte: `\r`, `\n` and `\r\n` each end exactly one line.
            while r.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
                match byte[0] {
                    b'\n' if pending_cr => pending_cr = false,
                    b'\r' | b'\n' => {
                        pending_cr = byte[0] == b'\r';
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        buf.clear();
                        let mut l = l2.lock().unwrap();
                        l.parse(&line);
                        l.lines.push(line);
                    }
                    b => {
                        pending_cr = false;
                        buf.push(b);
                    }
                }
            }
            if !buf.is_empty() {
                let line = String::from_utf8_lossy(&buf).into_owned();
                let mut l = l2.lock().unwrap();
                l.parse(&line);
                l.lines.push(line);
            }
        });
        Job { child, stdin, log, reader: Some(reader), arguments: arguments.to_owned() }
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Writes a key as the throttler does: no newline, flushed at once.
    pub fn write_key(&mut self, key: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = s.write_all(key.as_bytes());
            let _ = s.flush();
        }
    }

    /// `TranscodingJob.Stop()` (§4.2): `q` + newline, `WaitForExit(5000)`, then
    /// SIGKILL of the PID only.
    pub fn stop(&mut self) -> Stopped {
        if self.exited() {
            return Stopped { exited_after_q: true, code: self.child.try_wait().unwrap().and_then(|s| s.code()) };
        }
        self.write_key("q\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.finish();
                return Stopped { exited_after_q: true, code: s.code() };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let s = self.child.wait().unwrap();
        self.finish();
        Stopped { exited_after_q: false, code: s.code() }
    }

    /// `Process.Kill()` without `q` first.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.finish();
    }

    /// Waits for the stderr reader, so the log is complete.
    fn finish(&mut self) {
        self.stdin.take();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.exited() {
            self.kill();
        }
    }
}

// ---------------------------------------------------------------------------
// HLS serving (§6)

/// One HLS playback session: the job's names and Jellyfin's 10.11 template.
#[derive(Clone, Debug)]
pub struct HlsSpec {
    pub input: PathBuf,
    pub dir: PathBuf,
    pub md5: String,
    pub fmp4: bool,
    /// `SegmentLength` in seconds.
    pub seg: u32,
    /// The x264 preset (`EncoderPreset` in Jellyfin's settings).
    pub preset: String,
    /// Turns the libx264 template into another of Jellyfin's variants (another
    /// encoder, audio copy, audio only…); applied before the seek options.
    pub rewrite: Option<fn(Vec<String>) -> Vec<String>>,
}

impl HlsSpec {
    pub fn ext(&self) -> &'static str {
        if self.fmp4 { "mp4" } else { "ts" }
    }

    /// `<md5>N.ext`; N = -1 is the fMP4 init file `<md5>-1.mp4`.
    pub fn segment(&self, n: i64) -> PathBuf {
        self.dir.join(format!("{}{n}.{}", self.md5, self.ext()))
    }

    /// The argv Jellyfin's template gives for a job starting at segment `start`
    /// (§5.3, §6.3: `-ss` = start·len, `-noaccurate_seek` for fMP4, `-start_number`).
    pub fn argv(&self, start: u32) -> Vec<String> {
        let mut a = super::cluster::jellyfin_hls(&self.input, &self.dir, &self.md5, self.fmp4, self.seg);
        let i = a.iter().position(|s| s == "-start_number").unwrap();
        a[i + 1] = start.to_string();
        if let Some(p) = a.iter().position(|s| s == "-preset") {
            a[p + 1] = self.preset.clone();
        }
        if let Some(f) = self.rewrite {
            a = f(a);
        }
        if start > 0 {
            let t = start * self.seg;
            let mut seek = vec!["-ss".to_owned(), format!("{:02}:{:02}:{:02}.000", t / 3600, t / 60 % 60, t % 60)];
            if self.fmp4 {
                seek.push("-noaccurate_seek".into());
            }
            let i = a.iter().position(|s| s == "-i").unwrap();
            a.splice(i..i, seek);
        }
        a
    }

    /// The same as the one string Jellyfin builds: paths as `file:"…"` and
    /// `"…"`, filter graphs and expressions in double quotes.
    pub fn arguments(&self, start: u32) -> String {
        arguments_string(&self.argv(start))
    }
}

/// The one string Jellyfin builds for `argv`: paths as `file:"…"` and `"…"`,
/// filter graphs and expressions in double quotes. Panics unless .NET's
/// splitting gives `argv` back.
pub fn arguments_string(argv: &[String]) -> String {
    let quoted_after = [
        "-vf",
        "-af",
        "-force_key_frames:0",
        "-force_key_frames",
        "-hls_fmp4_init_filename",
        "-hls_segment_filename",
        "-y",
    ];
    let mut s = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if !s.is_empty() {
            s.push(' ');
        }
        if let Some(path) = arg.strip_prefix("file:") {
            s.push_str(&format!("file:\"{path}\""));
        } else if (i > 0 && quoted_after.contains(&argv[i - 1].as_str())) || i + 1 == argv.len() {
            s.push_str(&format!("\"{arg}\""));
        } else {
            s.push_str(arg);
        }
    }
    // The string must reach ffmpeg as exactly the template's argv.
    assert_eq!(dotnet_args::split(&s), argv, "argument string does not split back: {s}");
    s
}

/// One segment request's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// 200 with these bytes.
    Served(Vec<u8>),
    /// The job ended and the file is missing.
    NotFound,
    /// `FfmpegException`: the job exited with this code before the awaited file appeared.
    Failed(Option<i32>),
}

/// What the session did, for the comparison.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A job started at this segment index.
    Start(u32),
    /// A job was stopped (restart or end of playback).
    Stop(Stopped),
    /// The newest segment file was deleted on a restart (§6.3).
    DeletedNewest(i64),
}

/// DynamicHlsController's segment serving for one playlist (§6.2, §6.3).
pub struct HlsSession {
    pub ff: Ffmpeg,
    pub spec: HlsSpec,
    pub job: Option<Job>,
    pub events: Vec<Event>,
    /// Logs of finished jobs, with the segment each started at.
    pub logs: Vec<(u32, JobLog)>,
    job_start: u32,
    /// The throttler's (pause, resume) keys while it has the job paused.
    paused_with: Option<(String, String)>,
}

impl HlsSession {
    pub fn new(ff: Ffmpeg, spec: HlsSpec) -> HlsSession {
        std::fs::create_dir_all(&spec.dir).unwrap();
        HlsSession { ff, spec, job: None, events: Vec::new(), logs: Vec::new(), job_start: 0, paused_with: None }
    }

    fn job_alive(&mut self) -> bool {
        self.job.as_mut().is_some_and(|j| !j.exited())
    }

    /// `GetLastTranscodingFile`: the newest-mtime `<md5>*.ext` file.
    fn newest(&self) -> Option<(i64, PathBuf)> {
        let mut best: Option<(SystemTime, i64, PathBuf)> = None;
        for e in std::fs::read_dir(&self.spec.dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(&format!(".{}", self.spec.ext())) else { continue };
            let Some(idx) = stem.strip_prefix(&self.spec.md5) else { continue };
            let Ok(idx) = idx.parse::<i64>() else { continue };
            let Ok(mtime) = e.metadata().and_then(|m| m.modified()) else { continue };
            if best.as_ref().is_none_or(|(t, ..)| mtime > *t) {
                best = Some((mtime, idx, e.path()));
            }
        }
        best.map(|(_, i, p)| (i, p))
    }

    /// `GetCurrentTranscodingIndex`: only while a job for the playlist is alive.
    pub fn current_index(&mut self) -> Option<i64> {
        if self.job_alive() { self.newest().map(|(i, _)| i) } else { None }
    }

    /// The throttler pauses the job (§4.3); `keys` from `Conclusions::throttle_keys`.
    pub fn pause(&mut self, keys: (&str, &str)) {
        if let Some(j) = self.job.as_mut() {
            j.write_key(keys.0);
            self.paused_with = Some((keys.0.to_owned(), keys.1.to_owned()));
        }
    }

    /// The throttler resumes a paused job (new segment requests and stopping do).
    pub fn resume(&mut self) {
        if let (Some((_, resume)), Some(j)) = (self.paused_with.take(), self.job.as_mut()) {
            j.write_key(&resume);
        }
    }

    /// Stops the job (`TranscodingJob.Stop`: the throttler resumes it first, then
    /// `q`, 5 s, SIGKILL) and keeps its log.
    pub fn stop(&mut self) -> Option<Stopped> {
        self.resume();
        let mut job = self.job.take()?;
        let s = job.stop();
        self.logs.push((self.job_start, job.log.lock().unwrap().clone()));
        self.events.push(Event::Stop(s.clone()));
        Some(s)
    }

    /// `GetDynamicSegment` for segment `n` (-1: the fMP4 init file).
    pub fn request(&mut self, n: i64) -> Answer {
        let path = self.spec.segment(n);
        if path.exists() {
            // Step 1: an existing file goes to the readiness check untouched.
            return self.serve_when_ready(n, n);
        }
        let requested = n.max(0);
        let current = self.current_index();
        let too_far = i64::from(24 / self.spec.seg);
        let restart = n == -1 || current.is_none_or(|c| requested < c || requested - c > too_far);
        if !restart {
            // Every segment request resumes a paused throttler (DynamicHlsController.cs:1557-1561).
            self.resume();
            return self.serve_when_ready(n, requested);
        }
        if self.job.is_some() {
            self.stop();
        }
        if current.is_some()
            && let Some((i, p)) = self.newest()
        {
            // The newest file is assumed partial (DeleteLastFile).
            let _ = std::fs::remove_file(p);
            self.events.push(Event::DeletedNewest(i));
        }
        let start = requested as u32;
        let mut job = Job::launch(&self.ff, &self.spec.arguments(start));
        self.job_start = start;
        self.events.push(Event::Start(start));
        // StartFfMpeg: poll every 100 ms until WaitForPath exists or the process exited.
        let deadline = Instant::now() + FOREVER;
        while !path.exists() {
            if let Some(s) = job.child.try_wait().unwrap() {
                if !path.exists() && !s.success() {
                    self.job = Some(job);
                    self.stop();
                    return Answer::Failed(s.code());
                }
                break;
            }
            assert!(Instant::now() < deadline, "{} never appeared", path.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        self.job = Some(job);
        self.serve_when_ready(n, requested)
    }

    /// `GetSegmentResult`: serve once the job exited, or the file exists and the
    /// next one exists or the transcode is already past it. `index` is the
    /// request's segment index (the init file counts as 0 after a fresh start,
    /// as -1 when it already existed).
    fn serve_when_ready(&mut self, n: i64, index: i64) -> Answer {
        let path = self.spec.segment(n);
        let next = self.spec.segment(index + 1);
        let deadline = Instant::now() + FOREVER;
        loop {
            if !self.job_alive() {
                return match std::fs::read(&path) {
                    Ok(b) => Answer::Served(b),
                    Err(_) => Answer::NotFound,
                };
            }
            if path.exists() && (next.exists() || self.current_index().is_some_and(|c| c > index)) {
                return Answer::Served(std::fs::read(&path).unwrap());
            }
            assert!(Instant::now() < deadline, "segment {n} was never ready (events {:?})", self.events);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for HlsSession {
    fn drop(&mut self) {
        if let Some(mut j) = self.job.take() {
            j.kill();
        }
    }
}

// ---------------------------------------------------------------------------
// Progressive streams (§4.1, §5.5) and trickplay (§4.5, §5.13)

/// What a client of a progressive stream received.
#[derive(Debug)]
pub struct Tailed {
    /// The bytes `ProgressiveFileStream` read, in order, from the one handle it
    /// opened.
    pub bytes: Vec<u8>,
    /// The job's exit code; `Failed` if it exited non-zero before the file appeared.
    pub code: Option<i32>,
    /// The job exited non-zero before the output existed (`FfmpegException`, HTTP 500).
    pub failed: bool,
}

/// A progressive transcode served as Jellyfin serves it: `StartFfMpeg` polls
/// every 100 ms until `output` exists (or the job exited), waits 1 s more
/// (progressive video), then `ProgressiveFileStream` opens the file once with
/// `FileShare.ReadWrite` and reads; at EOF it sleeps 50 ms and reads again,
/// until the job has exited and nothing more is there.
pub fn progressive(ff: &Ffmpeg, arguments: &str, output: &Path) -> Tailed {
    let mut job = Job::launch(ff, arguments);
    let deadline = Instant::now() + FOREVER;
    while !output.exists() {
        if let Some(s) = job.child.try_wait().unwrap() {
            if !output.exists() {
                job.finish();
                return Tailed { bytes: Vec::new(), code: s.code(), failed: !s.success() };
            }
            break;
        }
        assert!(Instant::now() < deadline, "{} never appeared", output.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut file = std::fs::File::open(output).unwrap();
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n > 0 {
            bytes.extend_from_slice(&buf[..n]);
            continue;
        }
        if job.exited() {
            // The job's last bytes were written before it exited.
            file.read_to_end(&mut bytes).unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "{} kept growing past {FOREVER:?}", output.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = job.child.wait().unwrap().code();
    job.finish();
    Tailed { bytes, code, failed: false }
}

/// How a trickplay extraction went by `ExtractVideoImagesOnIntervalInternal`'s rules.
#[derive(Debug, PartialEq)]
pub struct Trickplay {
    /// Must be exactly 0.
    pub code: Option<i32>,
    /// The watchdog saw 20 s without a new image and killed the job.
    pub killed_by_watchdog: bool,
    /// The images, read sorted by name (`TrickplayManager.cs:345-347`).
    pub images: Vec<String>,
}

/// Runs a trickplay command (§5.13) and watches `dir` as Jellyfin's watchdog
/// does: every 20 s the number of files must have grown, or the job is stopped.
pub fn trickplay(ff: &Ffmpeg, arguments: &str, dir: &Path) -> Trickplay {
    std::fs::create_dir_all(dir).unwrap();
    let mut job = Job::launch(ff, arguments);
    let count = || std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let (mut last, mut since) = (0, Instant::now());
    let mut killed_by_watchdog = false;
    while !job.exited() {
        let n = count();
        if n > last {
            (last, since) = (n, Instant::now());
        } else if since.elapsed() > Duration::from_secs(20) {
            killed_by_watchdog = true;
            job.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let code = job.child.wait().unwrap().code();
    job.finish();
    let mut images: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    images.sort();
    Trickplay { code, killed_by_watchdog, images }
}

/// Processes named `ffmpeg` whose command line mentions `needle` (a job's
/// output name): what is left of a job anywhere on this machine, whoever the
/// parent now is.
pub fn ffmpegs_mentioning(needle: &str) -> Vec<i32> {
    super::cluster::processes()
        .into_iter()
        .filter(|p| p.comm == "ffmpeg" && p.cmdline().contains(needle))
        .map(|p| p.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joblogger_tokens() {
        let mut l = JobLog::default();
        l.parse("frame=  240 fps= 96 q=28.0 size=     512kB time=00:00:09.98 bitrate= 420.1kbits/s speed=3.99x");
        assert_eq!(l.framerate, Some(96.0));
        assert_eq!(l.times, [9.98]);
        assert_eq!(l.speed.as_deref(), Some("3.99x"));
        l.parse("frame=    0 fps=0.0 q=0.0 size=       0kB time=-00:00:00.04 bitrate=N/A speed=N/A");
        assert_eq!(l.times, [9.98, -0.04]);
        l.parse("time=N/A");
        assert_eq!(l.reports, 2);
    }

    #[test]
    fn validator_parsers() {
        assert_eq!(parse_version("ffmpeg version 5.1.9-0+deb12u1 Copyright"), Some(vec![5, 1, 9]));
        assert_eq!(parse_version("ffmpeg version n7.1-Jellyfin"), Some(vec![7, 1]));
        let libs = "ffmpeg version N-1234-gabc\nlibavutil      56. 70.100 / 56. 70.100\n";
        assert_eq!(parse_version(libs), None, "not all libraries listed");
        let enc = " V....D libx264              libx264 H.264\n A....D aac                  AAC\n";
        assert_eq!(matching(enc, 6, 6, REQUIRED_ENCODERS), ["libx264", "aac"]);
        // One space after the flags, then the name: two spaces do not match.
        let f = " ... zscale            V->V       Apply resizing\n TS alphasrc x\n TS  tonemapx x\n";
        assert_eq!(matching(f, 2, 3, REQUIRED_FILTERS), ["zscale", "alphasrc"]);
    }
}
