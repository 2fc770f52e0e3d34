//! The agent's settings: flags over environment variables over the config file
//! (`/etc/ffcluster/node.toml`) over defaults, and the two pure rules that touch
//! paths: `--path-map` and name sanitising.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ffcluster::config::{self, Key, Layers, Setting, Source};
use ffcluster::hardware::Translation;
use ffcluster::tls::Trust;
use serde::Deserialize;

/// Everything the agent needs to know about where it runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The controller's base URL (`http://host:9470`, or `https://`).
    pub controller: String,
    pub token: String,
    /// The servers trusted for an `https://` controller (`tls_ca`).
    pub trust: Trust,
    pub name: String,
    pub slots: u32,
    /// Absolute, UTF-8 (scratch paths end up in ffmpeg's arguments).
    pub scratch: PathBuf,
    pub ffmpeg: PathBuf,
    pub path_maps: Vec<PathMap>,
    /// Which hardware families to advertise (contrib/docs/hardware.md).
    pub hardware: Hardware,
    /// Argument translations; kinds are resolved against the probed ffmpeg.
    pub translations: Vec<Translation>,
}

/// Which hardware families (`cuda`, `vaapi`, `qsv`, …) this node advertises.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Hardware {
    /// Those whose device ffmpeg opens at start (`-init_hw_device TYPE`).
    #[default]
    Auto,
    /// Exactly these, unchecked (empty: none).
    Listed(BTreeSet<String>),
}

impl Hardware {
    fn parse(s: &str) -> Result<Hardware, String> {
        match s.trim() {
            "auto" => Ok(Hardware::Auto),
            "none" | "" => Ok(Hardware::Listed(BTreeSet::new())),
            list => Hardware::list(list.split(',')),
        }
    }

    fn list<'a>(items: impl Iterator<Item = &'a str>) -> Result<Hardware, String> {
        let mut out = BTreeSet::new();
        for item in items.map(str::trim).filter(|i| !i.is_empty()) {
            if !item.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("{item:?} is not a hardware family such as vaapi, qsv or cuda"));
            }
            out.insert(item.to_owned());
        }
        Ok(Hardware::Listed(out))
    }
}

impl std::fmt::Display for Hardware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hardware::Auto => f.write_str("\"auto\""),
            Hardware::Listed(l) => write!(f, "{:?}", l.iter().collect::<Vec<_>>()),
        }
    }
}

/// `hardware` in the file: `"auto"`, `"none"`, or a list of families.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HardwareFile {
    Text(String),
    List(Vec<String>),
}

/// The config file read when neither --config nor FFCLUSTER_NODE_CONFIG names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ffcluster/node.toml";
/// Not `FFCLUSTER_CONFIG`: that names the shim's file, and a Jellyfin host that
/// is also a node has both in one environment.
const CONFIG_ENV: &str = "FFCLUSTER_NODE_CONFIG";

const CONTROLLER: Key = Key { name: "controller", env: "FFCLUSTER_CONTROLLER", flag: "--controller" };
const TOKEN: Key = Key { name: "token", env: "FFCLUSTER_TOKEN", flag: "--token" };
const TOKEN_FILE: Key = Key { name: "token_file", env: "FFCLUSTER_TOKEN_FILE", flag: "--token-file" };
const TLS_CA: Key = Key { name: "tls_ca", env: "FFCLUSTER_TLS_CA", flag: "--tls-ca" };
const NAME: Key = Key { name: "name", env: "FFCLUSTER_NODE_NAME", flag: "--name" };
const SLOTS: Key = Key { name: "slots", env: "FFCLUSTER_NODE_SLOTS", flag: "--slots" };
const SCRATCH: Key = Key { name: "scratch", env: "FFCLUSTER_NODE_SCRATCH", flag: "--scratch" };
const FFMPEG: Key = Key { name: "ffmpeg", env: "FFCLUSTER_NODE_FFMPEG", flag: "--ffmpeg" };
const PATH_MAP: Key = Key { name: "path_map", env: "FFCLUSTER_NODE_PATH_MAP", flag: "--path-map" };
const HARDWARE: Key = Key { name: "hardware", env: "FFCLUSTER_NODE_HARDWARE", flag: "--hardware" };
const TRANSLATE: Key = Key { name: "translate", env: "FFCLUSTER_NODE_TRANSLATE", flag: "--translate" };
const LOG_LEVEL: Key = Key { name: "log_level", env: "FFCLUSTER_NODE_LOG_LEVEL", flag: "--log-level" };
/// Every key of `node.toml`, in the order of contrib/config/node.toml.
#[cfg(test)]
pub const KEYS: [Key; 12] =
    [CONTROLLER, TOKEN, TOKEN_FILE, TLS_CA, NAME, SLOTS, SCRATCH, FFMPEG, PATH_MAP, HARDWARE, TRANSLATE, LOG_LEVEL];

/// Each setting is taken from its flag, else its environment variable, else the
/// config file, else the default (contrib/docs/configuration.md).
#[derive(Debug, Default, clap::Args)]
pub struct Flags {
    /// TOML config file (env FFCLUSTER_NODE_CONFIG) [default: /etc/ffcluster/node.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the settings in effect, each with where it came from, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// The controller's base URL, e.g. http://10.0.0.2:9470 (env FFCLUSTER_CONTROLLER). Required.
    #[arg(long, value_name = "URL")]
    pub controller: Option<String>,
    /// The shared secret for the controller (env FFCLUSTER_TOKEN).
    #[arg(long, value_name = "SECRET")]
    pub token: Option<String>,
    /// Read the shared secret from this file, e.g. a Docker secret (env FFCLUSTER_TOKEN_FILE).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// PEM file of CA certificates trusted besides the system's, for an https://
    /// controller whose certificate a private CA signed (env FFCLUSTER_TLS_CA)
    /// [default: none].
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<String>,
    /// This node's name (env FFCLUSTER_NODE_NAME) [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// Jobs run at once (env FFCLUSTER_NODE_SLOTS) [default: 1].
    #[arg(long, value_name = "N")]
    pub slots: Option<String>,
    /// Working directory for jobs (env FFCLUSTER_NODE_SCRATCH) [default: $TMPDIR/ffcluster-node-<name>].
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<String>,
    /// The ffmpeg to run (env FFCLUSTER_NODE_FFMPEG) [default: ffmpeg found on PATH].
    #[arg(long, value_name = "PATH")]
    pub ffmpeg: Option<String>,
    /// FROM=TO: the shim's files under FROM are readable here under TO (a shared
    /// mount); such inputs are read directly instead of through the controller.
    /// Repeatable (env FFCLUSTER_NODE_PATH_MAP, comma-separated).
    #[arg(long = "path-map", value_name = "FROM=TO")]
    pub path_map: Vec<String>,
    /// Hardware families to advertise: auto (those whose device opens), none, or a
    /// comma-separated list such as vaapi,qsv (env FFCLUSTER_NODE_HARDWARE) [default: auto].
    #[arg(long, value_name = "auto|none|LIST")]
    pub hardware: Option<String>,
    /// FROM=TO: run jobs naming FROM (an encoder, filter, decoder or hwaccel) with
    /// TO instead, and advertise FROM. Repeatable (env FFCLUSTER_NODE_TRANSLATE,
    /// comma-separated).
    #[arg(long = "translate", value_name = "FROM=TO")]
    pub translate: Vec<String>,
    /// Log level or tracing directives, e.g. debug or info,ffcluster_node=debug
    /// (env FFCLUSTER_NODE_LOG_LEVEL) [default: $RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// The keys of `node.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    controller: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    tls_ca: Option<String>,
    name: Option<String>,
    slots: Option<u32>,
    scratch: Option<String>,
    ffmpeg: Option<String>,
    path_map: Option<Vec<String>>,
    hardware: Option<HardwareFile>,
    translate: Option<Vec<Translation>>,
    log_level: Option<String>,
}

/// The agent's settings before anything is resolved on disk, each with where it
/// came from. `None` values are defaults computed later (the scratch directory
/// depends on the name, the ffmpeg on `PATH`).
#[derive(Debug)]
pub struct Settings {
    pub file: Option<PathBuf>,
    pub controller: Setting<String>,
    pub token: Setting<String>,
    pub tls_ca: Setting<Option<PathBuf>>,
    pub name: Setting<String>,
    pub slots: Setting<u32>,
    pub scratch: Setting<Option<PathBuf>>,
    pub ffmpeg: Setting<Option<PathBuf>>,
    pub path_maps: Setting<Vec<PathMap>>,
    pub hardware: Setting<Hardware>,
    pub translations: Setting<Vec<Translation>>,
    pub log_level: Setting<String>,
}

fn default<T>(value: T) -> Setting<T> {
    Setting { value, source: Source::Default }
}

fn non_empty(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() { Err("empty".into()) } else { Ok(s.to_owned()) }
}

fn parse_slots(s: &str) -> Result<u32, String> {
    let n: u32 = s.trim().parse().map_err(|_| format!("{s:?} is not a whole number"))?;
    check_slots(n)
}

fn check_slots(n: u32) -> Result<u32, String> {
    if n == 0 { Err("must be at least 1".into()) } else { Ok(n) }
}

fn parse_translations<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<Translation>, String> {
    items.filter(|s| !s.trim().is_empty()).map(|s| s.parse::<Translation>().map_err(|e| e.to_string())).collect()
}

fn parse_path_maps<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<PathMap>, String> {
    items.filter(|s| !s.trim().is_empty()).map(|s| s.parse::<PathMap>().map_err(|e| e.to_string())).collect()
}

impl Settings {
    pub fn resolve(f: Flags, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
        let file_path = config::locate(f.config, CONFIG_ENV, env, DEFAULT_CONFIG_PATH);
        let file: FileConfig = match &file_path {
            Some(p) => config::read_file(p)?,
            None => FileConfig::default(),
        };
        let layers = Layers { env, file: file_path.as_deref() };
        let Some(controller) = layers.pick_str(&CONTROLLER, f.controller, file.controller, non_empty)? else {
            bail!(config::ConfigError::Missing {
                what: "controller URL",
                key: CONTROLLER.name,
                env: CONTROLLER.env,
                flag: CONTROLLER.flag
            });
        };
        let Some(token) =
            layers.token((&TOKEN, &TOKEN_FILE), (f.token, f.token_file), (file.token, file.token_file))?
        else {
            bail!(
                "no token: give the controller's shared secret with --token or FFCLUSTER_TOKEN, \
                 --token-file or FFCLUSTER_TOKEN_FILE, or `token`/`token_file` in the config file"
            );
        };
        let name = match layers.pick_str(&NAME, f.name, file.name, non_empty)? {
            Some(n) => n,
            None => default(
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "node".to_owned()),
            ),
        };
        let slots = layers.pick(&SLOTS, f.slots, file.slots, parse_slots, check_slots)?.unwrap_or_else(|| default(1));
        let path = |s: &str| non_empty(s).map(|p| Some(PathBuf::from(p)));
        let tls_ca = layers.pick_str(&TLS_CA, f.tls_ca, file.tls_ca, path)?.unwrap_or_else(|| default(None));
        let scratch = layers.pick_str(&SCRATCH, f.scratch, file.scratch, path)?.unwrap_or_else(|| default(None));
        let ffmpeg = layers.pick_str(&FFMPEG, f.ffmpeg, file.ffmpeg, path)?.unwrap_or_else(|| default(None));
        // The flag repeats; the environment variable is a comma-separated list.
        let flag_maps = (!f.path_map.is_empty()).then(|| f.path_map.join(","));
        let path_maps = layers
            .pick(
                &PATH_MAP,
                flag_maps,
                file.path_map,
                |s| parse_path_maps(s.split(',')),
                |v| parse_path_maps(v.iter().map(String::as_str)),
            )?
            .unwrap_or_else(|| default(Vec::new()));
        let hardware = layers
            .pick(&HARDWARE, f.hardware, file.hardware, Hardware::parse, |v| match v {
                HardwareFile::Text(s) => Hardware::parse(&s),
                HardwareFile::List(l) => Hardware::list(l.iter().map(String::as_str)),
            })?
            .unwrap_or_else(|| default(Hardware::Auto));
        let flag_translations = (!f.translate.is_empty()).then(|| f.translate.join(","));
        let translations = layers
            .pick(
                &TRANSLATE,
                flag_translations,
                file.translate,
                |s| parse_translations(s.split(',')),
                |v| {
                    v.iter().try_for_each(|t| t.check().map_err(|e| e.to_string()))?;
                    Ok(v)
                },
            )?
            .unwrap_or_else(|| default(Vec::new()));
        let log_level = match layers.pick_str(&LOG_LEVEL, f.log_level, file.log_level, config::parse_log_level)? {
            Some(level) => level,
            None => match env("RUST_LOG") {
                Some(filter) => Setting { value: filter, source: Source::Env("RUST_LOG") },
                None => default("info".to_owned()),
            },
        };
        Ok(Settings {
            file: file_path,
            controller,
            token,
            tls_ca,
            name,
            slots,
            scratch,
            ffmpeg,
            path_maps,
            hardware,
            translations,
            log_level,
        })
    }

    /// The ffmpeg to run, absolute: jobs run with the job directory as their
    /// working directory, so a relative path must be made absolute now; a bare
    /// name is looked up on `PATH`.
    pub fn ffmpeg_path(&self) -> anyhow::Result<PathBuf> {
        let found = match &self.ffmpeg.value {
            Some(p) => which::which(p)
                .with_context(|| format!("ffmpeg {} (from {}): not an executable", p.display(), self.ffmpeg.source))?,
            None => which::which("ffmpeg").context("no ffmpeg on PATH; give one with --ffmpeg")?,
        };
        std::path::absolute(&found).with_context(|| format!("resolving {}", found.display()))
    }

    /// The scratch directory as configured, or the default for this name.
    pub fn scratch_path(&self) -> PathBuf {
        self.scratch.value.clone().unwrap_or_else(|| default_scratch(&self.name.value))
    }

    /// What `--check-config` prints. Nothing is created or cleaned.
    pub fn report(&self) -> anyhow::Result<String> {
        let ffmpeg = self.ffmpeg_path()?;
        let maps: Vec<String> =
            self.path_maps.value.iter().map(|m| format!("{:?}", format!("{}={}", m.from, m.to))).collect();
        let translations: Vec<String> =
            self.translations.value.iter().map(|t| format!("{}={}", t.from, t.to)).collect();
        let rows = [
            (CONTROLLER.name, format!("{:?}", self.controller.value), self.controller.source.clone()),
            (TOKEN.name, "<hidden>".to_owned(), self.token.source.clone()),
            (
                TLS_CA.name,
                self.tls_ca.value.as_ref().map_or("none".into(), |p| format!("{p:?}")),
                self.tls_ca.source.clone(),
            ),
            (NAME.name, format!("{:?}", self.name.value), self.name.source.clone()),
            (SLOTS.name, self.slots.value.to_string(), self.slots.source.clone()),
            (SCRATCH.name, format!("{:?}", self.scratch_path()), self.scratch.source.clone()),
            (FFMPEG.name, format!("{:?}", ffmpeg), self.ffmpeg.source.clone()),
            (PATH_MAP.name, format!("[{}]", maps.join(", ")), self.path_maps.source.clone()),
            (HARDWARE.name, self.hardware.value.to_string(), self.hardware.source.clone()),
            (TRANSLATE.name, translations.join(", "), self.translations.source.clone()),
            (LOG_LEVEL.name, format!("{:?}", self.log_level.value), self.log_level.source.clone()),
        ];
        Ok(config::report(self.file.as_deref(), &rows))
    }

    /// The agent's configuration: ffmpeg found, scratch created and emptied of
    /// jobs a previous run left.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let ffmpeg = self.ffmpeg_path()?;
        // Absolute: the node's ffmpeg reads it too, from the job's directory.
        let ca = match &self.tls_ca.value {
            Some(p) => Some(std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?),
            None => None,
        };
        let trust = Trust::new(ca);
        if ffcluster::tls::is_tls_url(&self.controller.value) || trust.ca_file().is_some() {
            // A bad CA file is a configuration mistake: say so now, not at each reconnect.
            trust.client_config().with_context(|| format!("tls_ca (from {})", self.tls_ca.source))?;
        }
        let scratch = prepare_scratch(&self.scratch_path())?;
        Ok(Config {
            controller: self.controller.value,
            token: self.token.value,
            trust,
            name: self.name.value,
            slots: self.slots.value,
            scratch,
            ffmpeg,
            path_maps: self.path_maps.value,
            hardware: self.hardware.value,
            translations: self.translations.value,
        })
    }
}

/// `FROM=TO`: the shim's files under `FROM` are visible on this node under `TO`
/// (a shared NAS mount), so ffmpeg can read them without the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMap {
    pub from: String,
    pub to: String,
}

impl std::str::FromStr for PathMap {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<PathMap> {
        let (from, to) = s.split_once('=').with_context(|| format!("path map {s:?} is not FROM=TO"))?;
        let (from, to) = (from.trim(), to.trim());
        if !from.starts_with('/') || !to.starts_with('/') {
            bail!("path map {s:?}: both sides must be absolute paths");
        }
        // A trailing slash would make "/media/" miss "/media" itself and is otherwise
        // meaningless; "/" stays "/".
        let strip = |p: &str| if p.len() > 1 { p.trim_end_matches('/').to_owned() } else { p.to_owned() };
        Ok(PathMap { from: strip(from), to: strip(to) })
    }
}

impl PathMap {
    /// `reference` under this map's `to`, when it lies under `from` (whole path
    /// components only: `/media` maps `/media/a` but not `/media2/a`).
    pub fn apply(&self, reference: &str) -> Option<String> {
        let rest = reference.strip_prefix(self.from.as_str())?;
        if self.from == "/" {
            return Some(format!("{}/{}", self.to.trim_end_matches('/'), rest));
        }
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        Some(format!("{}{rest}", self.to))
    }
}

/// The node-local path of the shim's file `reference` (relative references are
/// relative to the shim's `cwd`), by the first map that matches. Whether the file
/// is really there is the caller's business.
pub fn map_path(maps: &[PathMap], reference: &str, cwd: &str) -> Option<String> {
    let absolute = if reference.starts_with('/') {
        reference.to_owned()
    } else if cwd.starts_with('/') {
        format!("{}/{reference}", cwd.trim_end_matches('/'))
    } else {
        return None;
    };
    // `..` could walk out of the mapped tree on this machine even though the
    // prefix matched; the relay is always correct, so just do not map it.
    if absolute.split('/').any(|c| c == "..") {
        return None;
    }
    maps.iter().find_map(|m| m.apply(&absolute))
}

/// A single path component made from a name someone else chose (a node name, a
/// font file's name): never empty, never `.` or `..`, no `/`, no control
/// characters, at most 100 bytes. Keeps letters, digits, `.`, `-` and `_`; the
/// rest becomes `_`.
pub fn sanitize(name: &str) -> String {
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    if out.len() > 100 {
        // Keep the end: it has the extension, which some filters look at.
        out = out[out.len() - 100..].to_owned();
    }
    if out.chars().all(|c| c == '.') {
        out = format!("_{out}");
    }
    if out.is_empty() || out == "_" { "file".to_owned() } else { out }
}

/// Whether `name` can be used as one path component as it is.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The default scratch directory: `$TMPDIR/ffcluster-node-<name>`.
pub fn default_scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ffcluster-node-{}", sanitize(name)))
}

/// Creates the scratch directory, makes it absolute and removes jobs a previous
/// run left behind (a crash, SIGKILL). Only `job-*` entries are touched, so a
/// mistaken `--scratch /home` does no harm.
pub fn prepare_scratch(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating scratch directory {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    if dir.to_str().is_none() {
        bail!("scratch directory {} is not valid UTF-8", dir.display());
    }
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(|n| n.starts_with("job-")) {
            tracing::info!(path = %entry.path().display(), "removing a job left over from a previous run");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }

    const EXAMPLE: &str = include_str!("../../contrib/config/node.toml");

    fn resolve(argv: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let m: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let cli = Cli::try_parse_from(std::iter::once("ffcluster-node").chain(argv.iter().copied()))?;
        Settings::resolve(cli.flags, &|k| m.get(k).cloned())
    }

    #[test]
    fn the_example_documents_every_key() {
        let problems = config::check_example(EXAMPLE, &KEYS);
        assert!(problems.is_empty(), "contrib/config/node.toml: {problems:#?}");
    }

    #[test]
    fn the_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        // token and token_file are alternatives: activate the token.
        std::fs::write(&path, config::activate_example(EXAMPLE, &["token_file"])).unwrap();
        let s = resolve(&["--config", path.to_str().unwrap()], &[]).unwrap();
        let from_file = Source::File(path.clone());
        assert_eq!(s.controller, Setting { value: "http://10.0.0.2:9470".into(), source: from_file.clone() });
        assert_eq!(s.name.value, "gpu-box");
        assert_eq!(s.slots, Setting { value: 1, source: from_file.clone() });
        assert_eq!(s.ffmpeg.value.as_deref(), Some(Path::new("ffmpeg")));
        assert_eq!(s.path_maps.value, vec![map("/media=/mnt/nas/media")]);
        assert_eq!(s.hardware.value, Hardware::Auto);
        assert_eq!(s.translations.value.len(), 1);
        assert_eq!(s.translations.value[0].from, "h264_qsv");
        assert_eq!(s.log_level.value, "info");
    }

    #[test]
    fn flags_over_env_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "controller = \"http://file:1\"\ntoken = \"t\"\nname = \"file\"\nslots = 2\npath_map = [\"/a=/b\"]\n",
        )
        .unwrap();
        let env = [
            ("FFCLUSTER_NODE_CONFIG", path.to_str().unwrap()),
            ("FFCLUSTER_NODE_SLOTS", "3"),
            ("FFCLUSTER_NODE_PATH_MAP", "/c=/d,/e=/f"),
            ("FFCLUSTER_CONFIG", "/the/shims/file.toml"),
        ];
        let s = resolve(&["--name", "flag"], &env).unwrap();
        assert_eq!(s.file.as_deref(), Some(path.as_path()));
        assert_eq!(s.name, Setting { value: "flag".into(), source: Source::Flag("--name") });
        assert_eq!(s.slots, Setting { value: 3, source: Source::Env("FFCLUSTER_NODE_SLOTS") });
        assert_eq!(s.path_maps.value, vec![map("/c=/d"), map("/e=/f")]);
        assert_eq!(s.controller.source, Source::File(path.clone()));
        let s = resolve(&["--path-map", "/x=/y", "--path-map", "/z=/w"], &env).unwrap();
        assert_eq!(s.path_maps.value, vec![map("/x=/y"), map("/z=/w")]);
        assert_eq!(s.scratch_path(), default_scratch("file"));
    }

    #[test]
    fn mistakes_name_the_key_and_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let p = path.to_str().unwrap();
        let base = [("FFCLUSTER_CONTROLLER", "http://c:1"), ("FFCLUSTER_TOKEN", "t")];
        std::fs::write(&path, "slot = 2\n").unwrap();
        let err = resolve(&["--config", p], &base).unwrap_err().to_string();
        assert!(err.contains("`slot`") && err.contains(p), "{err}");
        std::fs::write(&path, "slots = 0\n").unwrap();
        let err = resolve(&["--config", p], &base).unwrap_err().to_string();
        assert!(err.contains("`slots`") && err.contains(p) && err.contains("at least 1"), "{err}");
        std::fs::write(&path, "path_map = [\"media=/m\"]\n").unwrap();
        let err = resolve(&["--config", p], &base).unwrap_err().to_string();
        assert!(err.contains("`path_map`") && err.contains(p), "{err}");
        let err = resolve(&["--slots", "two"], &base).unwrap_err().to_string();
        assert!(err.contains("--slots") && err.contains("two"), "{err}");
        let err = resolve(&[], &[("FFCLUSTER_TOKEN", "t")]).unwrap_err().to_string();
        assert!(err.contains("--controller") && err.contains("FFCLUSTER_CONTROLLER"), "{err}");
        let err = resolve(&["--controller", "http://c:1"], &[]).unwrap_err().to_string();
        assert!(err.starts_with("no token"), "{err}");
    }

    #[test]
    fn hardware_and_translations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let p = path.to_str().unwrap();
        let base = [("FFCLUSTER_CONTROLLER", "http://c:1"), ("FFCLUSTER_TOKEN", "t")];
        std::fs::write(
            &path,
            "hardware = [\"vaapi\", \"rkmpp\"]\n[[translate]]\nfrom = \"h264_qsv\"\nto = \"h264_vaapi\"\nkind = \"encoder\"\ndrop = [\"look_ahead\"]\n",
        )
        .unwrap();
        let s = resolve(&["--config", p], &base).unwrap();
        assert_eq!(s.hardware.value, Hardware::Listed(["rkmpp".to_owned(), "vaapi".to_owned()].into()));
        let t = &s.translations.value[0];
        assert_eq!(
            (t.from.as_str(), t.to.as_str(), t.kind),
            ("h264_qsv", "h264_vaapi", Some(ffcluster::hardware::Kind::Encoder))
        );
        assert_eq!(t.drop, ["look_ahead"]);
        let s = resolve(&["--hardware", "none", "--translate", "a=b", "--translate", "c=d"], &base).unwrap();
        assert_eq!(s.hardware.value, Hardware::Listed(BTreeSet::new()));
        assert_eq!(s.translations.value.iter().map(|t| t.to.as_str()).collect::<Vec<_>>(), ["b", "d"]);
        let env =
            [base[0], base[1], ("FFCLUSTER_NODE_TRANSLATE", "h264_qsv=libx264"), ("FFCLUSTER_NODE_HARDWARE", "auto")];
        let s = resolve(&[], &env).unwrap();
        assert_eq!(s.translations.value[0].to, "libx264");
        assert_eq!(s.hardware.source, Source::Env("FFCLUSTER_NODE_HARDWARE"));
        let err = resolve(&["--translate", "x"], &base).unwrap_err().to_string();
        assert!(err.contains("--translate"), "{err}");
        std::fs::write(&path, "[[translate]]\nfrom = \"a,b\"\nto = \"c\"\n").unwrap();
        let err = resolve(&["--config", p], &base).unwrap_err().to_string();
        assert!(err.contains("`translate`") && err.contains(p), "{err}");
        let err = resolve(&["--hardware", "va api"], &base).unwrap_err().to_string();
        assert!(err.contains("--hardware"), "{err}");
    }

    fn map(s: &str) -> PathMap {
        s.parse().unwrap()
    }

    #[test]
    fn path_maps_match_whole_components() {
        let maps = [map("/media=/mnt/nas/media"), map("/data/=/srv/data/")];
        assert_eq!(map_path(&maps, "/media/movies/a.mkv", "/"), Some("/mnt/nas/media/movies/a.mkv".into()));
        assert_eq!(map_path(&maps, "/media", "/"), Some("/mnt/nas/media".into()));
        assert_eq!(map_path(&maps, "/media2/a.mkv", "/"), None);
        assert_eq!(map_path(&maps, "/data/x/y.srt", "/"), Some("/srv/data/x/y.srt".into()));
        assert_eq!(map_path(&maps, "/other/a.mkv", "/"), None);
        // Relative references are relative to the shim's directory.
        assert_eq!(map_path(&maps, "movies/a.mkv", "/media/"), Some("/mnt/nas/media/movies/a.mkv".into()));
        assert_eq!(map_path(&maps, "a.mkv", "relative"), None);
        // No escaping the mapped tree.
        assert_eq!(map_path(&maps, "/media/../etc/passwd", "/"), None);
        // The first match wins; a root map catches everything.
        let root = [map("/=/mnt/host")];
        assert_eq!(map_path(&root, "/a/b", "/"), Some("/mnt/host/a/b".into()));
    }

    #[test]
    fn path_map_syntax() {
        assert_eq!(map("/a=/b"), PathMap { from: "/a".into(), to: "/b".into() });
        assert!("/a".parse::<PathMap>().is_err());
        assert!("a=/b".parse::<PathMap>().is_err());
        assert!("/a=b".parse::<PathMap>().is_err());
    }

    #[test]
    fn sanitised_names_stay_one_component() {
        assert_eq!(sanitize("node-1.lan"), "node-1.lan");
        assert_eq!(sanitize("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(sanitize(".."), "_..");
        assert_eq!(sanitize("."), "_.");
        assert_eq!(sanitize(""), "file");
        assert_eq!(sanitize("/"), "file");
        assert_eq!(sanitize("Noto Sans CJK.ttf"), "Noto_Sans_CJK.ttf");
        assert_eq!(sanitize("a\0b\nc"), "a_b_c");
        assert_eq!(sanitize("ü.ttf"), "_.ttf");
        let long = format!("{}.ttf", "x".repeat(300));
        assert_eq!(sanitize(&long).len(), 100);
        assert!(sanitize(&long).ends_with(".ttf"));
        for name in ["a", "../x", "..", "/", "", ".", "a/b"] {
            assert!(is_plain_name(&sanitize(name)), "{name}");
        }
        assert!(!is_plain_name(".."));
        assert!(!is_plain_name("a/b"));
        assert!(is_plain_name("font.ttf"));
    }
}
