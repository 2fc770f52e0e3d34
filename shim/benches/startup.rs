//! Start-up cost the shim adds in front of the real `ffmpeg`/`ffprobe`.
//!
//! A report, not a test: it prints median and p95 wall-clock times and exits 0
//! whether or not the goal is met. It only fails when it cannot measure (no
//! real ffmpeg, or a run that does not exit successfully).
//!
//!     cargo bench -p ffcluster-shim --bench startup
//!
//! `FFCLUSTER_BENCH_RUNS` sets the runs per variant (default 200, the first 10
//! discarded as warm-up); `FFCLUSTER_BENCH_JSON=path` also writes the figures
//! there as JSON.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

const SHIM: &str = env!("CARGO_BIN_EXE_ffcluster-shim");
const DEFAULT_RUNS: usize = 200;
// Page cache, dynamic loader and CPU frequency settle during the first runs.
const WARMUP: usize = 10;
const GOAL_MS: f64 = 2.0;

#[derive(Clone, Copy)]
enum Tool {
    Ffmpeg,
    Ffprobe,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ffmpeg => "ffmpeg",
            Tool::Ffprobe => "ffprobe",
        }
    }
}

struct Case {
    name: &'static str,
    tool: Tool,
    args: Vec<OsString>,
}

#[derive(Clone, Copy)]
enum Variant {
    Direct,
    /// Real binaries given by `FFCLUSTER_FFMPEG`/`FFCLUSTER_FFPROBE`.
    ShimEnv,
    /// No override: the shim must search PATH and skip itself.
    ShimPath,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::ShimEnv => "env",
            Variant::ShimPath => "PATH",
        }
    }
}

const VARIANTS: [Variant; 3] = [Variant::Direct, Variant::ShimEnv, Variant::ShimPath];

struct Real {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
}

impl Real {
    fn locate(shim: &Path) -> Self {
        Self { ffmpeg: find_real("ffmpeg", shim), ffprobe: find_real("ffprobe", shim) }
    }

    fn path(&self, tool: Tool) -> &Path {
        match tool {
            Tool::Ffmpeg => &self.ffmpeg,
            Tool::Ffprobe => &self.ffprobe,
        }
    }
}

struct Stats {
    median: f64,
    p95: f64,
}

impl Stats {
    fn of(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self { median: percentile(&sorted, 50.0), p95: percentile(&sorted, 95.0) }
    }

    fn to_json(&self) -> Value {
        json!({ "median_ms": self.median, "p95_ms": self.p95 })
    }
}

struct ShimReport {
    variant: Variant,
    shim: Stats,
    /// Per-iteration `shim_i - direct_i`: neighbours in time share the same
    /// machine load, so this is less noisy than subtracting two medians.
    paired: Stats,
}

struct CaseReport {
    name: &'static str,
    direct: Stats,
    shims: Vec<ShimReport>,
}

impl CaseReport {
    fn new(case: &Case, samples: &[Vec<f64>; 3]) -> Self {
        let [direct, shim_env, shim_path] = samples;
        let shim_report = |variant, shim: &[f64]| ShimReport {
            variant,
            shim: Stats::of(shim),
            paired: Stats::of(&pairwise_diff(shim, direct)),
        };
        Self {
            name: case.name,
            direct: Stats::of(direct),
            shims: vec![shim_report(Variant::ShimEnv, shim_env), shim_report(Variant::ShimPath, shim_path)],
        }
    }

    fn to_json(&self) -> Value {
        let shims: Vec<Value> = self
            .shims
            .iter()
            .map(|s| {
                json!({
                    "lookup": s.variant.label(),
                    "shim": s.shim.to_json(),
                    "added_median_ms": s.shim.median - self.direct.median,
                    "added_p95_ms": s.shim.p95 - self.direct.p95,
                    "ratio_median": s.shim.median / self.direct.median,
                    "paired_added": s.paired.to_json(),
                    "goal_met": goal_met(s),
                })
            })
            .collect();
        json!({ "case": self.name, "direct": self.direct.to_json(), "shim": shims })
    }
}

fn main() {
    let runs = runs_from_env();
    let shim = fs::canonicalize(SHIM).unwrap_or_else(|e| panic!("shim binary {SHIM}: {e}"));
    let real = Real::locate(&shim);
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    link_shim(dir.path(), &shim);
    let media = make_media(&real.ffmpeg, dir.path());

    println!("shim:    {}", shim.display());
    println!("ffmpeg:  {}", real.ffmpeg.display());
    println!("ffprobe: {}", real.ffprobe.display());
    println!("{runs} runs per variant, first {WARMUP} discarded, interleaved direct/shim(env)/shim(PATH)");

    let reports: Vec<CaseReport> = cases(&media).iter().map(|case| measure(case, &real, dir.path(), runs)).collect();

    println!();
    print_table(&reports);
    println!();
    print_goals(&reports);

    if let Some(path) = env::var_os("FFCLUSTER_BENCH_JSON") {
        write_json(Path::new(&path), &reports, &real, runs);
    }
}

fn runs_from_env() -> usize {
    let Some(raw) = env::var_os("FFCLUSTER_BENCH_RUNS") else {
        return DEFAULT_RUNS;
    };
    let runs = raw
        .to_str()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("FFCLUSTER_BENCH_RUNS must be a whole number, got {raw:?}"));
    assert!(runs > WARMUP, "FFCLUSTER_BENCH_RUNS must exceed the {WARMUP} warm-up runs, got {runs}");
    runs
}

/// If the shim is already installed as `ffmpeg` on this machine, the first PATH
/// hit would be the shim itself and "direct" would measure the wrong thing.
fn find_real(name: &str, shim: &Path) -> PathBuf {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate) && !resolves_to(candidate, shim))
        .unwrap_or_else(|| {
            panic!(
                "real `{name}` not found on PATH; the benchmark needs it as the baseline \
                 (install it with `apt-get install ffmpeg`)"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn resolves_to(path: &Path, target: &Path) -> bool {
    fs::canonicalize(path).is_ok_and(|p| p == target)
}

/// The shim picks its personality from argv[0], so it is run through links
/// named like the tools, as it would be installed.
fn link_shim(dir: &Path, shim: &Path) {
    for tool in [Tool::Ffmpeg, Tool::Ffprobe] {
        let link = dir.join(tool.name());
        symlink(shim, &link).unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
    }
}

fn make_media(ffmpeg: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("small.mp4");
    let status = Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=25:duration=2")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=2"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-c:a", "aac", "-shortest"])
        .arg(&out)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", ffmpeg.display()));
    assert!(
        status.success(),
        "generating the test clip failed ({status}); the real ffmpeg needs lavfi, libx264 and aac \
         (Debian/Ubuntu: `apt-get install ffmpeg`)"
    );
    out
}

fn cases(media: &Path) -> Vec<Case> {
    let with_media = |words: &[&str]| {
        let mut args: Vec<OsString> = words.iter().map(OsString::from).collect();
        args.push(media.into());
        args
    };
    vec![
        Case { name: "ffmpeg -version", tool: Tool::Ffmpeg, args: vec!["-version".into()] },
        Case { name: "ffprobe -show_format", tool: Tool::Ffprobe, args: with_media(&["-v", "error", "-show_format"]) },
        // The exact shape Jellyfin uses when it probes a library item.
        Case {
            name: "ffprobe json (Jellyfin)",
            tool: Tool::Ffprobe,
            args: with_media(&["-v", "warning", "-print_format", "json", "-show_streams", "-show_format", "-i"]),
        },
    ]
}

fn measure(case: &Case, real: &Real, dir: &Path, runs: usize) -> CaseReport {
    eprintln!("measuring {} ...", case.name);
    check_same_output(case, real, dir);
    let mut commands = VARIANTS.map(|variant| command(case, variant, real, dir));
    let mut samples: [Vec<f64>; 3] = Default::default();
    for i in 0..runs {
        // Rotating the starting variant means none of them always runs right
        // after another one, so ordering effects (caches, scheduler) cancel out.
        for k in 0..VARIANTS.len() {
            let v = (i + k) % VARIANTS.len();
            samples[v].push(time_run(&mut commands[v], case, VARIANTS[v]));
        }
    }
    for s in &mut samples {
        s.drain(..WARMUP);
    }
    CaseReport::new(case, &samples)
}

/// Exit status alone would accept a shim that exits 0 without running the
/// real tool (the placeholder does), and its "start-up" would look free.
fn check_same_output(case: &Case, real: &Real, dir: &Path) {
    let [direct, shim_env, shim_path] = VARIANTS.map(|variant| stdout_of(case, variant, real, dir));
    for (variant, shim) in [(Variant::ShimEnv, shim_env), (Variant::ShimPath, shim_path)] {
        assert!(
            shim == direct,
            "{} [{}]: shim stdout differs from the real tool's ({} vs {} bytes); \
             it is not running the real binary, so its timings would be meaningless",
            case.name,
            variant.label(),
            shim.len(),
            direct.len()
        );
    }
}

fn stdout_of(case: &Case, variant: Variant, real: &Real, dir: &Path) -> Vec<u8> {
    let output = command(case, variant, real, dir)
        .stdout(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running {} [{}]: {e}", case.name, variant.label()));
    assert!(
        output.status.success(),
        "{} [{}] exited with {}; timings of a failing run would be meaningless",
        case.name,
        variant.label(),
        output.status
    );
    output.stdout
}

fn command(case: &Case, variant: Variant, real: &Real, dir: &Path) -> Command {
    let program = match variant {
        Variant::Direct => real.path(case.tool).to_path_buf(),
        Variant::ShimEnv | Variant::ShimPath => dir.join(case.tool.name()),
    };
    let mut cmd = Command::new(program);
    cmd.args(&case.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    match variant {
        Variant::Direct => {}
        Variant::ShimEnv => {
            cmd.env("FFCLUSTER_FFMPEG", &real.ffmpeg).env("FFCLUSTER_FFPROBE", &real.ffprobe);
        }
        Variant::ShimPath => {
            cmd.env_remove("FFCLUSTER_FFMPEG").env_remove("FFCLUSTER_FFPROBE").env("PATH", shim_first_path(dir, real));
        }
    }
    cmd
}

/// The shim's own links come first, as when it is installed over ffmpeg, so
/// the PATH variant exercises self-exclusion, not just a lookup.
fn shim_first_path(dir: &Path, real: &Real) -> OsString {
    let mut dirs = vec![dir.to_path_buf()];
    for binary in [&real.ffmpeg, &real.ffprobe] {
        let parent = binary.parent().unwrap_or(Path::new("/")).to_path_buf();
        if !dirs.contains(&parent) {
            dirs.push(parent);
        }
    }
    env::join_paths(dirs).expect("directory names usable in PATH")
}

/// Milliseconds from spawn to the return of wait(): what a caller like
/// Jellyfin actually waits for.
fn time_run(cmd: &mut Command, case: &Case, variant: Variant) -> f64 {
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {} [{}]: {e}", case.name, variant.label()));
    let status = child.wait().unwrap_or_else(|e| panic!("waiting for {} [{}]: {e}", case.name, variant.label()));
    let elapsed = start.elapsed();
    assert!(
        status.success(),
        "{} [{}] exited with {status}; timings of a failing run would be meaningless",
        case.name,
        variant.label()
    );
    elapsed.as_secs_f64() * 1e3
}

fn pairwise_diff(shim: &[f64], direct: &[f64]) -> Vec<f64> {
    shim.iter().zip(direct).map(|(s, d)| s - d).collect()
}

/// Nearest-rank percentile of ascending `sorted`: always an observed value,
/// no interpolation.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Judged on the paired median, the figure least disturbed by other load.
fn goal_met(shim: &ShimReport) -> bool {
    shim.paired.median < GOAL_MS
}

fn print_table(reports: &[CaseReport]) {
    println!("all times in ms; added = shim - direct; paired = per-run shim_i - direct_i");
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>10} {:>10}",
        "case [shim lookup]",
        "dir med",
        "dir p95",
        "shim med",
        "shim p95",
        "add med",
        "add p95",
        "ratio",
        "pair med",
        "pair p95",
    );
    for report in reports {
        let d = &report.direct;
        for s in &report.shims {
            println!(
                "{:<32} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>6.3} {:>10.3} {:>10.3}",
                format!("{} [{}]", report.name, s.variant.label()),
                d.median,
                d.p95,
                s.shim.median,
                s.shim.p95,
                s.shim.median - d.median,
                s.shim.p95 - d.p95,
                s.shim.median / d.median,
                s.paired.median,
                s.paired.p95,
            );
        }
    }
}

fn print_goals(reports: &[CaseReport]) {
    for report in reports {
        for s in &report.shims {
            let verdict = if goal_met(s) { "met" } else { "NOT met" };
            println!(
                "GOAL added median < {GOAL_MS:.1} ms: {verdict} ({:.2} ms)  [{} [{}], paired]",
                s.paired.median,
                report.name,
                s.variant.label()
            );
        }
    }
}

fn write_json(path: &Path, reports: &[CaseReport], real: &Real, runs: usize) {
    let figures = json!({
        "runs": runs,
        "warmup": WARMUP,
        "measured": runs - WARMUP,
        "goal_added_median_ms": GOAL_MS,
        "shim": SHIM,
        "ffmpeg": real.ffmpeg.display().to_string(),
        "ffprobe": real.ffprobe.display().to_string(),
        "cases": reports.iter().map(CaseReport::to_json).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&figures).expect("figures serialise");
    fs::write(path, text + "\n").unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("figures written to {}", path.display());
}
