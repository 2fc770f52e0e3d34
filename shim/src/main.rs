//! `ffcluster-shim`: a drop-in `ffmpeg` and `ffprobe`.
//!
//! Installed as symlinks named `ffmpeg` and `ffprobe` (Jellyfin derives the
//! ffprobe path from the ffmpeg path). Each invocation is classified by the pure
//! model in `ffcluster::ffmpeg`; then:
//!
//! * capability probes are answered from the probe cache, or by the real binary
//!   whose answer is recorded for next time;
//! * everything that runs locally `exec`s the real binary, so the process *is*
//!   ffmpeg from then on;
//! * jobs worth a node go to the cluster when one is configured (see `route` and
//!   `cluster`); if the cluster cannot take them before anything is visible, they
//!   run locally after all, and the log says why.
//!
//! The shim writes nothing of its own to stdout, ever.

mod child;
mod cluster;
mod cluster_probe;
mod config;
mod local;
mod local_chunks;
mod log;
mod offer;
mod origin;
mod probe_cache;
mod publish;
mod real;
mod resume;
mod route;
mod split;
mod stdin;
mod visible;

use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::process::ExitCode;

use ffcluster::ffmpeg::cmdline::shell_join;
use ffcluster::ffmpeg::{self, CommandLine, Dialect, Program};
use ffcluster::protocol::Why;

use crate::config::Config;
use crate::log::Log;
use crate::probe_cache::{Answer, BinaryId, Key, ProbeCache};
use crate::route::Route;

/// Exit code when the real binary cannot be found, as a shell reports it.
const EXIT_NOT_FOUND: u8 = 127;
/// Exit code when the real binary exists but cannot be executed.
const EXIT_CANNOT_EXEC: u8 = 126;

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_else(|| OsString::from("ffmpeg"));
    let args: Vec<OsString> = argv.collect();
    let program = Program::from_argv0(&argv0.to_string_lossy());

    let (mut cfg, cfg_err) = Config::load();
    let log = Log::new(cfg.log.as_deref());
    match (&cfg_err, &cfg.file) {
        (Some(e), _) => log.line(format_args!("config: {e}; using the environment only")),
        (None, Some(file)) => log.line(format_args!("config: {}", file.display())),
        (None, None) => {}
    }
    if let Some((bad, source)) = &cfg.bad_mode {
        log.line(format_args!("mode {bad:?} (from {source}) is not one of auto|local|whole|split; using auto"));
    }
    if let Some(bad) = &cfg.bad_probes {
        log.line(format_args!("probes {bad:?} is not one of local|cluster; using local"));
    }
    if let Some(bad) = &cfg.bad_live_piece {
        log.line(format_args!("live_piece {bad:?} is not a positive number of seconds; using {}", cfg.live_piece));
    }
    if let Some(bad) = &cfg.bad_priority {
        log.line(format_args!("priority {bad:?} is not one of interactive|streaming|batch; each job's shape gives it"));
    }
    if let Some(bad) = &cfg.bad_relay_inputs {
        log.line(format_args!("relay_inputs {bad:?} is not one of local|all|none; using local"));
    }
    let me = real::SelfLocation::detect(&argv0);

    // Arguments that are not UTF-8 cannot be modelled; ffmpeg takes them as bytes.
    let utf8: Option<Vec<String>> = args.iter().map(|a| a.to_str().map(str::to_owned)).collect();
    if program == Program::Ffmpeg
        && let Some(a) = &utf8
        && CommandLine::splits_by_release(a)
    {
        cfg.dialect = real_dialect(&cfg, &me, &log);
    }
    let verdict = utf8.as_deref().map(|a| ffmpeg::classify_with(program, a, cfg.dialect));
    let route = match (&utf8, &verdict) {
        (Some(a), Some(verdict)) => {
            let route = route::choose(verdict, a, &cfg);
            log.line(format_args!(
                "{} {}: {} ({}) -> {}",
                program.as_str(),
                shell_join(a),
                verdict.decision.as_str(),
                verdict.reason.as_str(),
                route
            ));
            route
        }
        _ => {
            log.line(format_args!("{}: argument list is not UTF-8; running locally", program.as_str()));
            Route::Local
        }
    };

    if let (Route::CachedProbe, Some(a)) = (&route, &utf8)
        && let Some(code) = answer_probe(program, &argv0, a, &cfg, &me, &log)
    {
        return ExitCode::from(code);
    }
    if let (Route::Cluster, Some(a), Some(v)) = (&route, &utf8, &verdict) {
        let hardware = ffcluster::hardware::hardware_needs(&v.needs);
        // Why a job the classifier would split goes whole; the controller shows it.
        let mut not_split = None;
        if !hardware.is_empty() && v.decision == ffmpeg::Decision::Split {
            // The finisher would open the job's devices on this host.
            not_split = Some(Why::new("nosplit.hardware", format!("needs {}", hardware.join(", "))));
        } else if v.decision == ffmpeg::Decision::Split && cfg.mode == config::Mode::Whole {
            not_split = Some(Why::new("nosplit.mode", "mode is whole (FFCLUSTER_MODE or mode in shim.toml)"));
        } else if v.decision == ffmpeg::Decision::Split {
            match try_split(a, v, &cfg, &me, &log) {
                Ok(cluster::Outcome::Exit(code)) => return ExitCode::from(code),
                Ok(cluster::Outcome::Lost(why)) => return resume_or_fail(&argv0, a, &why, &cfg, &log),
                Ok(cluster::Outcome::Fallback(why)) => {
                    log.line(format_args!("local fallback: {} ({})", why.detail, why.code));
                    return exec_local(program, &argv0, &args, &cfg, &me, &log);
                }
                Err(why) => not_split = Some(why),
            }
        }
        match &not_split {
            // The split failed before anything of it showed (`split`).
            Some(why) if why.code.starts_with("fallback.") => {
                log.line(format_args!("split: fell back ({why}); the whole job goes to one node"));
            }
            Some(why) => log.line(format_args!("split: not split ({why}); the whole job goes to one node")),
            None => {}
        }
        match cluster::run(a, v, &cfg, &log, not_split) {
            cluster::Outcome::Exit(code) => return ExitCode::from(code),
            cluster::Outcome::Lost(why) => return resume_or_fail(&argv0, a, &why, &cfg, &log),
            cluster::Outcome::Fallback(why) => log.line(format_args!("local fallback: {} ({})", why.detail, why.code)),
        }
    }
    exec_local(program, &argv0, &args, &cfg, &me, &log)
}

/// The real ffmpeg's command-line dialect, from its `-version` (recorded in the
/// probe cache like any probe's answer, so it is read once per binary). The
/// default when it cannot be run or does not say its version.
fn real_dialect(cfg: &Config, me: &real::SelfLocation, log: &Log) -> Dialect {
    let Ok(path) = real::find(Program::Ffmpeg, cfg, me) else {
        return Dialect::default();
    };
    let cache = cfg.probe_cache.as_ref().map(ProbeCache::new);
    let key = Key::new(Program::Ffmpeg.as_str(), &["-version".to_owned()], BinaryId::of(&path));
    let answer = probe_cache::get_or_capture(cache.as_ref(), &key, &path, OsStr::new("ffmpeg"), log);
    match answer.ok().and_then(|a| Dialect::from_version_text(&String::from_utf8_lossy(&a.stdout))) {
        Some(d) => d,
        None => {
            log.line(format_args!("{} does not say its version; splitting as ffmpeg 5.1-6.1", path.display()));
            Dialect::default()
        }
    }
}

/// After the cluster lost a job with output already published: carries on from
/// the newest segment in a new run of the shim (which tells the controller
/// `why`), or fails as before.
fn resume_or_fail(argv0: &OsString, args: &[String], why: &Why, cfg: &Config, log: &Log) -> ExitCode {
    let cwd = std::env::current_dir().unwrap_or_default();
    let detail = &why.detail;
    let failed = match resume::plan(args, &cwd, cfg.dialect) {
        Ok((resumed, n)) => {
            log.line(format_args!("{detail}; resuming at segment {n} ({}): {}", why.code, shell_join(&resumed)));
            eprintln!("ffcluster: {detail}; resuming at segment {n}");
            let err = resume::exec(argv0, &resumed, &Why::new(&why.code, format!("{detail}; resumed at segment {n}")));
            format!("cannot resume: {err}")
        }
        Err(e) => format!("not resumed: {e}"),
    };
    log.line(format_args!("{detail}; {failed}"));
    eprintln!("ffcluster: {detail}");
    ExitCode::from(1)
}

/// Splits the job across nodes. `Err`: offload it whole instead, and why: it
/// cannot be split (a `nosplit.*` code and its detail), or the split failed
/// before anything of it showed, for a reason of its own (`fallback.*`).
fn try_split(
    args: &[String],
    verdict: &ffmpeg::decision::Verdict,
    cfg: &Config,
    me: &real::SelfLocation,
    log: &Log,
) -> Result<cluster::Outcome, Why> {
    let found = real::find(Program::Ffmpeg, cfg, me).and_then(|f| Ok((f, real::find(Program::Ffprobe, cfg, me)?)));
    let (ffmpeg, ffprobe) = found.map_err(|e| Why::new("nosplit.no_binary", e.to_string()))?;
    let attempt = if verdict.reason == ffmpeg::decision::Reason::SplitLive {
        split::run_live(args, verdict, cfg, &ffmpeg, &ffprobe, log)
    } else {
        split::run(args, verdict, cfg, &ffmpeg, &ffprobe, log)
    };
    match attempt {
        split::Attempt::Done(outcome) => Ok(outcome),
        split::Attempt::Whole(why) => Err(why),
    }
}

/// Answers a cacheable probe. `None` means "just run it for real".
fn answer_probe(
    program: Program,
    argv0: &OsString,
    args: &[String],
    cfg: &Config,
    me: &real::SelfLocation,
    log: &Log,
) -> Option<u8> {
    // Interactive use gets colours and the real thing; caching is for Jellyfin's pipes.
    if std::io::stderr().is_terminal() || std::io::stdout().is_terminal() || std::env::var_os("FFREPORT").is_some() {
        return None;
    }
    if program == Program::Ffmpeg
        && cfg.probes == config::Probes::Cluster
        && let Some(answer) = cluster_answer(args, cfg, log)
    {
        return Some(probe_cache::replay(&answer).clamp(0, 255) as u8);
    }
    let dir = cfg.probe_cache.as_ref()?;
    let cache = ProbeCache::new(dir);
    let real = real::find(program, cfg, me);
    let key = Key::new(program.as_str(), args, real.as_ref().ok().and_then(|p| BinaryId::of(p)));
    let answer: Answer = match &real {
        Ok(path) => probe_cache::get_or_capture(Some(&cache), &key, path, argv0, log).ok()?,
        Err(e) => {
            let a = cache.get_any_binary(&key)?;
            log.line(format_args!("{e}; answering {} from the probe cache", shell_join(args)));
            a
        }
    };
    Some(probe_cache::replay(&answer).clamp(0, 255) as u8)
}

/// How long an answer from the cluster is reused before the controller is asked
/// again: long enough for Jellyfin's burst of start-up probes, short enough to
/// notice a GPU node that joined.
const CLUSTER_ANSWER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The cluster's answer to a capability probe (`probes = "cluster"`), from the
/// probe cache while fresh, else from the controller. `None`: answer locally.
fn cluster_answer(args: &[String], cfg: &Config, log: &Log) -> Option<Answer> {
    let (Some(controller), Some(token)) = (&cfg.controller, &cfg.token) else {
        log.line(format_args!(
            "probes from the cluster need FFCLUSTER_CONTROLLER and FFCLUSTER_TOKEN; answering locally"
        ));
        return None;
    };
    let cache = cfg.probe_cache.as_ref().map(ProbeCache::new);
    let key = Key::new("ffmpeg@cluster", args, None);
    if let Some(a) = cache.as_ref().and_then(|c| c.get_fresh(&key, CLUSTER_ANSWER_TTL)) {
        return Some(a);
    }
    match cluster_probe::fetch(controller, token, &cfg.trust, args) {
        Ok(got) => {
            log.line(format_args!("probe {} answered by node {}", shell_join(args), got.node));
            if let Some(Err(e)) = cache.as_ref().map(|c| c.put(&key, &got.answer)) {
                log.line(format_args!("{e}"));
            }
            Some(got.answer)
        }
        Err(e) => {
            log.line(format_args!("probe {} from the cluster: {e}; answering locally", shell_join(args)));
            None
        }
    }
}

fn exec_local(
    program: Program,
    argv0: &OsString,
    args: &[OsString],
    cfg: &Config,
    me: &real::SelfLocation,
    log: &Log,
) -> ExitCode {
    let real = match real::find(program, cfg, me) {
        Ok(p) => p,
        Err(e) => {
            log.line(format_args!("{e}"));
            eprintln!("ffcluster-shim: {e}");
            return ExitCode::from(EXIT_NOT_FOUND);
        }
    };
    let err = local::exec(&real, argv0, args);
    log.line(format_args!("cannot execute {}: {err}", real.display()));
    eprintln!("ffcluster-shim: cannot execute {}: {err}", real.display());
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound { EXIT_NOT_FOUND } else { EXIT_CANNOT_EXEC })
}
