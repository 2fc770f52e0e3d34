//! Combines the classifier's verdict with local facts into what the shim does.

use ffcluster::ffmpeg::decision::{Decision, Reason, Verdict};

use crate::config::{Config, Mode, Probes};

/// What the shim does with one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Answer from the probe cache (or run and record).
    CachedProbe,
    /// Exec the real binary here.
    Local,
    /// Run it on the cluster (one node runs the whole job).
    Cluster,
    /// The job is for the cluster but runs here; the string says why.
    Fallback(String),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::CachedProbe => f.write_str("probe cache"),
            Route::Local => f.write_str("local"),
            Route::Cluster => f.write_str("cluster"),
            Route::Fallback(why) => write!(f, "local fallback: {why}"),
        }
    }
}

/// Probes whose answer can change without the binary changing.
const UNCACHEABLE_PROBES: &[&str] = &["sources", "sinks", "report"];

/// Local jobs that `FFCLUSTER_MODE=whole` may still send to a node: they read
/// files and write files, nothing else on this machine.
const FORCEABLE: &[Reason] = &[
    Reason::StreamCopy,
    Reason::VideoCopy,
    Reason::AudioOnly,
    Reason::SingleFrame,
    Reason::SubtitleExtract,
    Reason::NullOutput,
];

pub fn choose(v: &Verdict, args: &[String], cfg: &Config) -> Route {
    match (v.decision, cfg.mode) {
        (Decision::Probe, _) if v.reason == Reason::ProbeInfo && cacheable(args) => return Route::CachedProbe,
        (Decision::Probe | Decision::Ffprobe, _) => return Route::Local,
        (_, Mode::Local) if v.decision != Decision::Local => {
            return Route::Fallback("FFCLUSTER_MODE=local".into());
        }
        (Decision::Local, Mode::Whole | Mode::Split) if FORCEABLE.contains(&v.reason) => {}
        (Decision::Local, Mode::Whole | Mode::Split) => {
            return Route::Fallback(format!(
                "FFCLUSTER_MODE={} cannot apply: {} ({})",
                cfg.mode.as_str(),
                v.reason.describe(),
                v.reason.as_str()
            ));
        }
        // Jellyfin built it for hardware the cluster reported, which this host
        // may not have: a node that has it runs it (chapter images, remuxes).
        (Decision::Local, Mode::Auto)
            if cfg.probes == Probes::Cluster
                && FORCEABLE.contains(&v.reason)
                && !ffcluster::hardware::hardware_needs(&v.needs).is_empty() => {}
        (Decision::Local, _) => return Route::Local,
        (Decision::Whole | Decision::Split, _) => {}
    }
    if cfg.controller.is_none() {
        Route::Fallback("no controller configured (FFCLUSTER_CONTROLLER)".into())
    } else if cfg.token.is_none() {
        Route::Fallback("no token configured (FFCLUSTER_TOKEN)".into())
    } else {
        Route::Cluster
    }
}

/// Whether a `probe.info` invocation may be answered from the cache.
fn cacheable(args: &[String]) -> bool {
    !args.iter().any(|a| UNCACHEABLE_PROBES.iter().any(|p| a.strip_prefix('-') == Some(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffcluster::ffmpeg::{Program, classify};

    fn route(args: &str, mode: Mode, controller: bool) -> Route {
        let a: Vec<String> = args.split(' ').map(str::to_owned).collect();
        let cfg = Config {
            controller: controller.then(|| "http://c:9470".into()),
            token: Some("t".into()),
            mode,
            ..Config::default()
        };
        choose(&classify(Program::Ffmpeg, &a), &a, &cfg)
    }

    #[test]
    fn modes_override_the_classifier() {
        let enc = "-i in.mkv -c:v libx264 -f mpegts pipe:1";
        assert_eq!(route(enc, Mode::Auto, true), Route::Cluster);
        assert!(matches!(route(enc, Mode::Auto, false), Route::Fallback(w) if w.contains("FFCLUSTER_CONTROLLER")));
        assert_eq!(route(enc, Mode::Local, true), Route::Fallback("FFCLUSTER_MODE=local".into()));
        let audio = "-i in.flac -vn -c:a aac out.m4a";
        assert_eq!(route(audio, Mode::Auto, true), Route::Local);
        assert_eq!(route(audio, Mode::Whole, true), Route::Cluster);
        let stdin = "-i - -c:v libx264 out.mp4";
        assert!(matches!(route(stdin, Mode::Whole, true), Route::Fallback(w) if w.contains("cannot apply")));
        assert_eq!(route("-version", Mode::Whole, true), Route::CachedProbe);
    }

    #[test]
    fn hardware_jobs_follow_the_cluster_probes() {
        let a: Vec<String> = "-hwaccel vaapi -ss 10 -i in.mkv -frames:v 1 -c:v mjpeg_vaapi out.jpg"
            .split(' ')
            .map(str::to_owned)
            .collect();
        let v = classify(ffcluster::ffmpeg::Program::Ffmpeg, &a);
        assert_eq!(v.reason, Reason::SingleFrame);
        let mut cfg = Config { controller: Some("http://c:9470".into()), token: Some("t".into()), ..Config::default() };
        assert_eq!(choose(&v, &a, &cfg), Route::Local);
        cfg.probes = Probes::Cluster;
        assert_eq!(choose(&v, &a, &cfg), Route::Cluster);
        // Software jobs stay here.
        let sw: Vec<String> = "-ss 10 -i in.mkv -frames:v 1 out.jpg".split(' ').map(str::to_owned).collect();
        assert_eq!(choose(&classify(ffcluster::ffmpeg::Program::Ffmpeg, &sw), &sw, &cfg), Route::Local);
    }
}
