//! The shim's settings: environment variables first, then the TOML file named by
//! `FFCLUSTER_CONFIG` (or `/etc/ffcluster/shim.toml` when that exists).
//!
//! Reading is cheap on purpose: the shim starts for every probe Jellyfin makes,
//! so the file is only opened when it exists and nothing is resolved eagerly.

use std::path::{Path, PathBuf};

use ffcluster::config::{Key, Layers};
use ffcluster::ffmpeg::Dialect;
use ffcluster::priority::Priority;
use ffcluster::tls::Trust;
use serde::Deserialize;

/// The default config file, used when `FFCLUSTER_CONFIG` is not set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ffcluster/shim.toml";

/// What `FFCLUSTER_MODE` (or `mode` in the file) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Let the classifier decide.
    #[default]
    Auto,
    /// Always run the real ffmpeg here.
    Local,
    /// Offload whole jobs to one node where the job can run remotely at all.
    Whole,
    /// Split across nodes where possible.
    Split,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Mode::Auto),
            "local" => Some(Mode::Local),
            "whole" => Some(Mode::Whole),
            "split" => Some(Mode::Split),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Local => "local",
            Mode::Whole => "whole",
            Mode::Split => "split",
        }
    }
}

/// Who answers Jellyfin's capability probes (`FFCLUSTER_PROBES`, `probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Probes {
    /// The local ffmpeg (through the probe cache).
    #[default]
    Local,
    /// A node's ffmpeg, through the controller; the local one when the
    /// controller cannot answer.
    Cluster,
}

impl Probes {
    pub fn parse(s: &str) -> Option<Probes> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" | "" => Some(Probes::Local),
            "cluster" => Some(Probes::Cluster),
            _ => None,
        }
    }
}

/// Which network inputs the shim fetches itself and relays to the node
/// (`FFCLUSTER_RELAY_INPUTS`, `relay_inputs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayInputs {
    /// http(s) URLs whose host is this machine (loopback or one of its own
    /// addresses): Jellyfin's Live TV streams, which a node cannot reach.
    #[default]
    Local,
    /// Every http(s) input URL.
    All,
    /// None: the node's ffmpeg opens every URL itself.
    None,
}

impl RelayInputs {
    pub fn parse(s: &str) -> Option<RelayInputs> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" | "" => Some(RelayInputs::Local),
            "all" => Some(RelayInputs::All),
            "none" => Some(RelayInputs::None),
            _ => None,
        }
    }
}

const fn key(name: &'static str, env: &'static str) -> Key {
    Key { name, env, flag: "" }
}
const TOKEN: Key = key("token", "FFCLUSTER_TOKEN");
const TOKEN_FILE: Key = key("token_file", "FFCLUSTER_TOKEN_FILE");
/// Every key of `shim.toml` and its environment variable, in the order of
/// contrib/config/shim.toml.
#[cfg(test)]
pub const KEYS: [Key; 13] = [
    key("ffmpeg", "FFCLUSTER_FFMPEG"),
    key("ffprobe", "FFCLUSTER_FFPROBE"),
    key("controller", "FFCLUSTER_CONTROLLER"),
    TOKEN,
    TOKEN_FILE,
    key("tls_ca", "FFCLUSTER_TLS_CA"),
    key("mode", "FFCLUSTER_MODE"),
    key("probe_cache", "FFCLUSTER_PROBE_CACHE"),
    key("probes", "FFCLUSTER_PROBES"),
    key("relay_inputs", "FFCLUSTER_RELAY_INPUTS"),
    key("live_piece", "FFCLUSTER_LIVE_PIECE"),
    key("priority", "FFCLUSTER_PRIORITY"),
    key("log", "FFCLUSTER_LOG"),
];

/// The file's keys. Every key has an environment variable of the same meaning.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Path of the real ffmpeg (`FFCLUSTER_FFMPEG`).
    pub ffmpeg: Option<PathBuf>,
    /// Path of the real ffprobe (`FFCLUSTER_FFPROBE`).
    pub ffprobe: Option<PathBuf>,
    /// Controller base URL, e.g. `http://10.0.0.2:9470` (`FFCLUSTER_CONTROLLER`).
    pub controller: Option<String>,
    /// Shared secret (`FFCLUSTER_TOKEN`).
    pub token: Option<String>,
    /// A file holding the shared secret (`FFCLUSTER_TOKEN_FILE`).
    pub token_file: Option<PathBuf>,
    /// CA certificates trusted besides the system's for an https controller
    /// (`FFCLUSTER_TLS_CA`).
    pub tls_ca: Option<PathBuf>,
    /// `auto`, `local`, `whole` or `split` (`FFCLUSTER_MODE`).
    pub mode: Option<String>,
    /// Directory of cached probe answers (`FFCLUSTER_PROBE_CACHE`); `"off"` disables it.
    pub probe_cache: Option<String>,
    /// `local` or `cluster`: who answers capability probes (`FFCLUSTER_PROBES`).
    pub probes: Option<String>,
    /// `local`, `all` or `none`: which http(s) inputs the shim relays
    /// (`FFCLUSTER_RELAY_INPUTS`).
    pub relay_inputs: Option<String>,
    /// Seconds of a live stream each node encodes at a time
    /// (`FFCLUSTER_LIVE_PIECE`): the segment length divided by a whole number.
    pub live_piece: Option<f64>,
    /// `interactive`, `streaming` or `batch`: every job's priority, instead of
    /// the one its shape gives (`FFCLUSTER_PRIORITY`).
    pub priority: Option<String>,
    /// File the shim appends its own log lines to (`FFCLUSTER_LOG`).
    pub log: Option<PathBuf>,
}

/// Errors reading the config file. The shim reports them on stderr and carries on
/// with the environment alone, as a missing file must never stop a transcode.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    /// A token file that cannot be read, or token and token_file both set.
    #[error(transparent)]
    Token(#[from] ffcluster::config::ConfigError),
}

/// Resolved settings.
#[derive(Debug, Default)]
pub struct Config {
    pub ffmpeg: Option<PathBuf>,
    pub ffprobe: Option<PathBuf>,
    pub controller: Option<String>,
    pub token: Option<String>,
    /// Who an `https://` controller may be (`tls_ca` and the system's roots).
    pub trust: Trust,
    pub mode: Mode,
    /// The mode string when it was not understood, and where it came from
    /// (logged, then treated as auto).
    pub bad_mode: Option<(String, String)>,
    pub probe_cache: Option<PathBuf>,
    pub probes: Probes,
    /// The probes string when it was not understood (logged, then local).
    pub bad_probes: Option<String>,
    pub relay_inputs: RelayInputs,
    /// The relay_inputs string when it was not understood (logged, then local).
    pub bad_relay_inputs: Option<String>,
    /// Seconds per piece of a live stream split across nodes.
    pub live_piece: f64,
    /// The live_piece string when it was not a positive number (logged, then the default).
    pub bad_live_piece: Option<String>,
    /// Every job's priority, when set; else each job's shape gives it.
    pub priority: Option<Priority>,
    /// The priority string when it was not understood (logged, then by shape).
    pub bad_priority: Option<String>,
    pub log: Option<PathBuf>,
    pub file: Option<PathBuf>,
    /// How the real ffmpeg splits its command line: the default until `main`
    /// reads the real binary's version, which it does only for a command line
    /// that releases split differently.
    pub dialect: Dialect,
}

/// A live piece's default length: a node at half real time returns it about
/// two seconds after the stream delivered it, within one 3 s segment.
pub const DEFAULT_LIVE_PIECE: f64 = 1.0;

impl Config {
    /// Reads the environment and the config file.
    pub fn load() -> (Config, Option<ConfigError>) {
        Self::load_from(|k| std::env::var_os(k).filter(|v| !v.is_empty()).and_then(|v| v.into_string().ok()))
    }

    /// `load`, with the environment given as a function (for tests).
    pub fn load_from(env: impl Fn(&str) -> Option<String>) -> (Config, Option<ConfigError>) {
        let path = env("FFCLUSTER_CONFIG").map(PathBuf::from).or_else(|| {
            let p = Path::new(DEFAULT_CONFIG_PATH);
            p.exists().then(|| p.to_path_buf())
        });
        let (mut file, mut err) = match &path {
            Some(p) => match read_file(p) {
                Ok(f) => (f, None),
                Err(e) => (FileConfig::default(), Some(e)),
            },
            None => (FileConfig::default(), None),
        };
        // Read only when a token file is configured, so probes stay cheap.
        let layers = Layers { env: &env, file: path.as_deref() };
        let token = match layers.token((&TOKEN, &TOKEN_FILE), (None, None), (file.token.take(), file.token_file.take()))
        {
            Ok(t) => t.map(|t| t.value),
            Err(e) => {
                err = err.or(Some(ConfigError::Token(e)));
                None
            }
        };
        let mode_source = match (env("FFCLUSTER_MODE").is_some(), &path) {
            (false, Some(p)) => format!("`mode` in {}", p.display()),
            _ => "FFCLUSTER_MODE".to_owned(),
        };
        let mode_str = env("FFCLUSTER_MODE").or(file.mode);
        let mode = mode_str.as_deref().map(Mode::parse);
        let probe_cache = match env("FFCLUSTER_PROBE_CACHE").or(file.probe_cache) {
            Some(s) if s == "off" => None,
            Some(s) => Some(PathBuf::from(s)),
            None => default_cache_dir(&env),
        };
        let probes_str = env("FFCLUSTER_PROBES").or(file.probes);
        let probes = probes_str.as_deref().map(Probes::parse);
        let relay_str = env("FFCLUSTER_RELAY_INPUTS").or(file.relay_inputs);
        let relay_inputs = relay_str.as_deref().map(RelayInputs::parse);
        let piece_str = env("FFCLUSTER_LIVE_PIECE").or(file.live_piece.map(|p| p.to_string()));
        let piece = piece_str.as_deref().map(|p| p.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0));
        let priority_str = env("FFCLUSTER_PRIORITY").or(file.priority);
        let priority = priority_str.as_deref().map(|p| p.parse::<Priority>().ok());
        let cfg = Config {
            ffmpeg: env("FFCLUSTER_FFMPEG").map(PathBuf::from).or(file.ffmpeg),
            ffprobe: env("FFCLUSTER_FFPROBE").map(PathBuf::from).or(file.ffprobe),
            controller: env("FFCLUSTER_CONTROLLER").or(file.controller),
            token,
            trust: Trust::new(env("FFCLUSTER_TLS_CA").map(PathBuf::from).or(file.tls_ca)),
            mode: mode.flatten().unwrap_or_default(),
            bad_mode: if mode == Some(None) { mode_str.map(|m| (m, mode_source)) } else { None },
            probe_cache,
            probes: probes.flatten().unwrap_or_default(),
            bad_probes: if probes == Some(None) { probes_str } else { None },
            relay_inputs: relay_inputs.flatten().unwrap_or_default(),
            bad_relay_inputs: if relay_inputs == Some(None) { relay_str } else { None },
            live_piece: piece.flatten().unwrap_or(DEFAULT_LIVE_PIECE),
            bad_live_piece: if piece == Some(None) { piece_str } else { None },
            priority: priority.flatten(),
            bad_priority: if priority == Some(None) { priority_str } else { None },
            log: env("FFCLUSTER_LOG").map(PathBuf::from).or(file.log),
            file: path,
            dialect: Dialect::default(),
        };
        (cfg, err)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
}

/// `$XDG_CACHE_HOME/ffcluster/probes`, else `$HOME/.cache/ffcluster/probes`.
fn default_cache_dir(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|base| base.join("ffcluster").join("probes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("shim.toml");
        std::fs::write(&f, "ffmpeg = \"/from/file/ffmpeg\"\nffprobe = \"/from/file/ffprobe\"\nmode = \"whole\"\n")
            .unwrap();
        let (c, err) = Config::load_from(env(&[
            ("FFCLUSTER_CONFIG", f.to_str().unwrap()),
            ("FFCLUSTER_FFMPEG", "/from/env/ffmpeg"),
            ("HOME", "/home/j"),
        ]));
        assert!(err.is_none());
        assert_eq!(c.ffmpeg.as_deref(), Some(Path::new("/from/env/ffmpeg")));
        assert_eq!(c.ffprobe.as_deref(), Some(Path::new("/from/file/ffprobe")));
        assert_eq!(c.mode, Mode::Whole);
        assert_eq!(c.probe_cache.as_deref(), Some(Path::new("/home/j/.cache/ffcluster/probes")));
    }

    #[test]
    fn bad_file_and_bad_mode_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("shim.toml");
        std::fs::write(&f, "ffmpeg = [").unwrap();
        let (c, err) = Config::load_from(env(&[("FFCLUSTER_CONFIG", f.to_str().unwrap()), ("FFCLUSTER_MODE", "fast")]));
        assert!(matches!(err, Some(ConfigError::Parse { .. })));
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(c.bad_mode, Some(("fast".into(), "FFCLUSTER_MODE".into())));
        let (_, err) = Config::load_from(env(&[("FFCLUSTER_CONFIG", "/nonexistent/shim.toml")]));
        assert!(matches!(err, Some(ConfigError::Read { .. })));
    }

    const EXAMPLE: &str = include_str!("../../contrib/config/shim.toml");

    #[test]
    fn the_example_documents_every_key() {
        let problems = ffcluster::config::check_example(EXAMPLE, &KEYS);
        assert!(problems.is_empty(), "contrib/config/shim.toml: {problems:#?}");
    }

    #[test]
    fn the_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("shim.toml");
        // token and token_file are alternatives: activate the token.
        std::fs::write(&f, ffcluster::config::activate_example(EXAMPLE, &["token_file"])).unwrap();
        let (c, err) = Config::load_from(env(&[("FFCLUSTER_CONFIG", f.to_str().unwrap())]));
        assert!(err.is_none(), "{err:?}");
        assert_eq!(c.controller.as_deref(), Some("http://10.0.0.2:9470"));
        assert_eq!(c.mode, Mode::Auto);
        assert!(c.bad_mode.is_none());
        assert_eq!(c.probe_cache.as_deref(), Some(Path::new("/var/cache/ffcluster/probes")));
        assert_eq!(c.probes, Probes::Local);
        assert!(c.token.is_some());
    }

    #[test]
    fn token_file_and_bad_mode_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let f = dir.path().join("shim.toml");
        std::fs::write(&f, format!("token_file = {:?}\nmode = \"fast\"\n", secret.to_str().unwrap())).unwrap();
        let (c, err) = Config::load_from(env(&[("FFCLUSTER_CONFIG", f.to_str().unwrap())]));
        assert!(err.is_none(), "{err:?}");
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        let (value, source) = c.bad_mode.unwrap();
        assert_eq!(value, "fast");
        assert!(source.contains("`mode`") && source.contains("shim.toml"), "{source}");
        // The environment's token beats the file's token_file.
        let (c, _) = Config::load_from(env(&[("FFCLUSTER_CONFIG", f.to_str().unwrap()), ("FFCLUSTER_TOKEN", "e")]));
        assert_eq!(c.token.as_deref(), Some("e"));
        // Both in the file: reported, and no token (so jobs run here) rather than a guess.
        std::fs::write(&f, format!("token = \"t\"\ntoken_file = {:?}\n", secret.to_str().unwrap())).unwrap();
        let (c, err) = Config::load_from(env(&[("FFCLUSTER_CONFIG", f.to_str().unwrap())]));
        assert!(err.unwrap().to_string().contains("token_file"));
        assert_eq!(c.token, None);
    }

    #[test]
    fn probes_from_the_cluster() {
        let (c, _) = Config::load_from(env(&[("FFCLUSTER_PROBES", "cluster")]));
        assert_eq!((c.probes, c.bad_probes), (Probes::Cluster, None));
        let (c, _) = Config::load_from(env(&[("FFCLUSTER_PROBES", "gpu")]));
        assert_eq!((c.probes, c.bad_probes.as_deref()), (Probes::Local, Some("gpu")));
        let (c, _) = Config::load_from(env(&[]));
        assert_eq!(c.probes, Probes::Local);
    }

    #[test]
    fn relayed_inputs() {
        let (c, _) = Config::load_from(env(&[]));
        assert_eq!((c.relay_inputs, c.bad_relay_inputs), (RelayInputs::Local, None));
        let (c, _) = Config::load_from(env(&[("FFCLUSTER_RELAY_INPUTS", "All")]));
        assert_eq!(c.relay_inputs, RelayInputs::All);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("shim.toml");
        std::fs::write(&f, "relay_inputs = \"none\"\n").unwrap();
        let (c, err) = Config::load_from(env(&[("FFCLUSTER_CONFIG", f.to_str().unwrap())]));
        assert!(err.is_none(), "{err:?}");
        assert_eq!(c.relay_inputs, RelayInputs::None);
        let (c, _) = Config::load_from(env(&[("FFCLUSTER_RELAY_INPUTS", "remote")]));
        assert_eq!((c.relay_inputs, c.bad_relay_inputs.as_deref()), (RelayInputs::Local, Some("remote")));
    }

    #[test]
    fn probe_cache_can_be_switched_off() {
        let (c, _) = Config::load_from(env(&[("FFCLUSTER_PROBE_CACHE", "off"), ("HOME", "/h")]));
        assert_eq!(c.probe_cache, None);
    }
}
