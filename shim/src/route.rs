//! Combines the classifier's verdict with local facts into what the shim does.

use ffcluster::ffmpeg::decision::{Decision, Reason, Verdict};

use crate::config::{Config, Mode};

/// What the shim does with one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Answer from the probe cache (or run and record).
    CachedProbe,
    /// Exec the real binary here.
    Local,
    /// The job is for the cluster but runs here; the string says why.
    Fallback(String),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::CachedProbe => f.write_str("probe cache"),
            Route::Local => f.write_str("local"),
            Route::Fallback(why) => write!(f, "local fallback: {why}"),
        }
    }
}

/// Probes whose answer can change without the binary changing.
const UNCACHEABLE_PROBES: &[&str] = &["sources", "sinks", "report"];

pub fn choose(v: &Verdict, args: &[String], cfg: &Config) -> Route {
    match v.decision {
        Decision::Probe if v.reason == Reason::ProbeInfo && cacheable(args) => Route::CachedProbe,
        Decision::Probe | Decision::Ffprobe | Decision::Local => Route::Local,
        Decision::Whole | Decision::Split => {
            if cfg.mode == Mode::Local {
                Route::Fallback("FFCLUSTER_MODE=local".into())
            } else if cfg.controller.is_none() {
                Route::Fallback("no controller configured (FFCLUSTER_CONTROLLER)".into())
            } else if cfg.token.is_none() {
                Route::Fallback("no token configured (FFCLUSTER_TOKEN)".into())
            } else {
                Route::Fallback("this shim build has no cluster client".into())
            }
        }
    }
}

/// Whether a `probe.info` invocation may be answered from the cache.
fn cacheable(args: &[String]) -> bool {
    !args.iter().any(|a| UNCACHEABLE_PROBES.iter().any(|p| a.strip_prefix('-') == Some(p)))
}
