//! `ffcluster serve`: the controller daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use ffcluster::config::{self, ConfigError, Key, Layers, Setting, Source};
use ffcluster::controller::{self, ControllerConfig};
use ffcluster::protocol::{DEAD_AFTER, HEARTBEAT_INTERVAL};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// The config file read when neither --config nor FFCLUSTER_CONFIG names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ffcluster/controller.toml";
const CONFIG_ENV: &str = "FFCLUSTER_CONFIG";
const DEFAULT_LISTEN: &str = "127.0.0.1:9470";
const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Nodes clamp the heartbeat period they are asked for to at least this.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);

const LISTEN: Key = Key { name: "listen", env: "FFCLUSTER_LISTEN", flag: "--listen" };
const TOKEN: Key = Key { name: "token", env: "FFCLUSTER_TOKEN", flag: "--token" };
const TOKEN_FILE: Key = Key { name: "token_file", env: "FFCLUSTER_TOKEN_FILE", flag: "--token-file" };
const HEARTBEAT: Key =
    Key { name: "heartbeat_interval", env: "FFCLUSTER_HEARTBEAT_INTERVAL", flag: "--heartbeat-interval" };
const DEAD: Key = Key { name: "dead_after", env: "FFCLUSTER_DEAD_AFTER", flag: "--dead-after" };
const HELLO: Key = Key { name: "hello_timeout", env: "FFCLUSTER_HELLO_TIMEOUT", flag: "--hello-timeout" };
const TLS_CERT: Key = Key { name: "tls_cert", env: "FFCLUSTER_TLS_CERT", flag: "--tls-cert" };
const TLS_KEY: Key = Key { name: "tls_key", env: "FFCLUSTER_TLS_KEY", flag: "--tls-key" };
const LOG_LEVEL: Key = Key { name: "log_level", env: "FFCLUSTER_LOG_LEVEL", flag: "--log-level" };
/// Every key of `controller.toml`, in the order of contrib/config/controller.toml.
#[cfg(test)]
pub const KEYS: [Key; 9] = [LISTEN, TOKEN, TOKEN_FILE, HEARTBEAT, DEAD, HELLO, TLS_CERT, TLS_KEY, LOG_LEVEL];

/// Each setting is taken from its flag, else its environment variable, else the
/// config file, else the default (contrib/docs/configuration.md).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML config file (env FFCLUSTER_CONFIG) [default: /etc/ffcluster/controller.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings in effect, each with where it came from, and exit.
    #[arg(long)]
    check_config: bool,
    /// Address and port to listen on; nodes, shims and admins connect here
    /// (env FFCLUSTER_LISTEN) [default: 127.0.0.1:9470].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Shared secret that nodes, shims and admins present (env FFCLUSTER_TOKEN).
    #[arg(long, value_name = "SECRET")]
    token: Option<String>,
    /// Read the shared secret from this file, e.g. a Docker secret (env FFCLUSTER_TOKEN_FILE).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// How often the controller heartbeats to nodes, e.g. 500ms (env FFCLUSTER_HEARTBEAT_INTERVAL) [default: 1s].
    #[arg(long, value_name = "DURATION")]
    heartbeat_interval: Option<String>,
    /// Silence after which a node is dropped and its jobs fail (env FFCLUSTER_DEAD_AFTER) [default: 3s].
    #[arg(long, value_name = "DURATION")]
    dead_after: Option<String>,
    /// Time a new connection has to say who it is (env FFCLUSTER_HELLO_TIMEOUT) [default: 10s].
    #[arg(long, value_name = "DURATION")]
    hello_timeout: Option<String>,
    /// PEM certificate chain: serve HTTPS and WSS only, with --tls-key
    /// (env FFCLUSTER_TLS_CERT) [default: none, plain HTTP].
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// PEM private key of --tls-cert (env FFCLUSTER_TLS_KEY) [default: none].
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
    /// Log level or tracing directives, e.g. debug or info,ffcluster=debug
    /// (env FFCLUSTER_LOG_LEVEL) [default: $RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

/// The keys of `controller.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    heartbeat_interval: Option<String>,
    dead_after: Option<String>,
    hello_timeout: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    log_level: Option<String>,
}

/// The controller's settings, each with where it came from.
#[derive(Debug)]
struct Settings {
    file: Option<PathBuf>,
    listen: Setting<String>,
    token: Setting<String>,
    heartbeat_interval: Setting<Duration>,
    dead_after: Setting<Duration>,
    hello_timeout: Setting<Duration>,
    /// Certificate and key files; both or neither.
    tls: Option<(Setting<PathBuf>, Setting<PathBuf>)>,
    log_level: Setting<String>,
}

impl Settings {
    fn resolve(a: Args, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
        let file_path = config::locate(a.config, CONFIG_ENV, env, DEFAULT_CONFIG_PATH);
        let file: FileConfig = match &file_path {
            Some(p) => config::read_file(p)?,
            None => FileConfig::default(),
        };
        let layers = Layers { env, file: file_path.as_deref() };
        fn default<T>(value: T) -> Setting<T> {
            Setting { value, source: Source::Default }
        }
        let duration = |key: &Key, flag, file, fallback| -> Result<Setting<Duration>, ConfigError> {
            Ok(layers.pick_str(key, flag, file, config::parse_duration)?.unwrap_or_else(|| default(fallback)))
        };
        let listen = layers
            .pick_str(&LISTEN, a.listen, file.listen, parse_listen)?
            .unwrap_or_else(|| default(DEFAULT_LISTEN.into()));
        let Some(token) =
            layers.token((&TOKEN, &TOKEN_FILE), (a.token, a.token_file), (file.token, file.token_file))?
        else {
            bail!(
                "no token: nodes, shims and admins authenticate with a shared secret.\n\
                 Make one with `openssl rand -hex 16` and give it with --token or FFCLUSTER_TOKEN, \
                 --token-file or FFCLUSTER_TOKEN_FILE, or `token`/`token_file` in the config file"
            );
        };
        let heartbeat_interval =
            duration(&HEARTBEAT, a.heartbeat_interval, file.heartbeat_interval, HEARTBEAT_INTERVAL)?;
        let dead_after = duration(&DEAD, a.dead_after, file.dead_after, DEAD_AFTER)?;
        let hello_timeout = duration(&HELLO, a.hello_timeout, file.hello_timeout, DEFAULT_HELLO_TIMEOUT)?;
        let path = |s: &str| -> Result<PathBuf, String> {
            let s = s.trim();
            if s.is_empty() { Err("empty path".into()) } else { Ok(PathBuf::from(s)) }
        };
        let tls_cert = layers.pick_str(&TLS_CERT, a.tls_cert, file.tls_cert, path)?;
        let tls_key = layers.pick_str(&TLS_KEY, a.tls_key, file.tls_key, path)?;
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(set), None) => bail!(half_tls(&TLS_CERT, &set.source, &TLS_KEY)),
            (None, Some(set)) => bail!(half_tls(&TLS_KEY, &set.source, &TLS_CERT)),
        };
        let log_level = match layers.pick_str(&LOG_LEVEL, a.log_level, file.log_level, config::parse_log_level)? {
            Some(level) => level,
            None => match env("RUST_LOG") {
                Some(filter) => Setting { value: filter, source: Source::Env("RUST_LOG") },
                None => default("info".into()),
            },
        };
        if heartbeat_interval.value < MIN_HEARTBEAT {
            bail!(ConfigError::Invalid {
                key: HEARTBEAT.name,
                from: heartbeat_interval.source,
                message: format!("must be at least {}", config::format_duration(MIN_HEARTBEAT)),
            });
        }
        // Nodes heartbeat at the controller's period but never less often than
        // every HEARTBEAT_INTERVAL; one lost heartbeat must not drop a node.
        let node_period = heartbeat_interval.value.min(HEARTBEAT_INTERVAL);
        if dead_after.value < node_period * 2 {
            bail!(ConfigError::Invalid {
                key: DEAD.name,
                from: dead_after.source,
                message: format!(
                    "{} is less than two node heartbeats ({} each, from heartbeat_interval by {})",
                    config::format_duration(dead_after.value),
                    config::format_duration(node_period),
                    heartbeat_interval.source
                ),
            });
        }
        Ok(Settings { file: file_path, listen, token, heartbeat_interval, dead_after, hello_timeout, tls, log_level })
    }

    /// What `--check-config` prints.
    fn report(&self) -> String {
        let d = |s: &Setting<Duration>| format!("\"{}\"", config::format_duration(s.value));
        let file = |s: &Setting<PathBuf>| (format!("{:?}", s.value), s.source.clone());
        let ((cert, cert_from), (key, key_from)) = match &self.tls {
            Some((cert, key)) => (file(cert), file(key)),
            None => (("none (plain HTTP)".to_owned(), Source::Default), ("none".to_owned(), Source::Default)),
        };
        let rows = [
            (LISTEN.name, format!("{:?}", self.listen.value), self.listen.source.clone()),
            (TOKEN.name, "<hidden>".to_owned(), self.token.source.clone()),
            (HEARTBEAT.name, d(&self.heartbeat_interval), self.heartbeat_interval.source.clone()),
            (DEAD.name, d(&self.dead_after), self.dead_after.source.clone()),
            (HELLO.name, d(&self.hello_timeout), self.hello_timeout.source.clone()),
            (TLS_CERT.name, cert, cert_from),
            (TLS_KEY.name, key, key_from),
            (LOG_LEVEL.name, format!("{:?}", self.log_level.value), self.log_level.source.clone()),
        ];
        config::report(self.file.as_deref(), &rows)
    }
}

/// Why one of `tls_cert` and `tls_key` alone is refused.
fn half_tls(given: &Key, from: &Source, missing: &Key) -> String {
    format!(
        "{} is set (from {from}) but {} is not: TLS needs the certificate (tls_cert) and its private key \
         (tls_key). Give {} with {} or {}, or neither for plain HTTP",
        given.name, missing.name, missing.name, missing.flag, missing.env
    )
}

/// `host:port`, with a port; the host may be a name, so binding is the real check.
fn parse_listen(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not HOST:PORT, e.g. 0.0.0.0:9470")),
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let check_only = a.check_config;
    let s = Settings::resolve(a, &config::process_env)?;
    if check_only {
        print!("{}", s.report());
        return Ok(ExitCode::SUCCESS);
    }
    init_logging(&s.log_level.value);
    if let Some(p) = &s.file {
        tracing::info!(file = %p.display(), "configuration read");
    }
    let token = s.token.value;
    if token.len() < 16 {
        tracing::warn!("the token is short ({} characters); `openssl rand -hex 16` makes a good one", token.len());
    }
    let mut config = ControllerConfig::new(token);
    config.heartbeat_interval = s.heartbeat_interval.value;
    config.dead_after = s.dead_after.value;
    config.hello_timeout = s.hello_timeout.value;
    if let Some((cert, key)) = &s.tls {
        let tls = ffcluster::tls::server_config(&cert.value, &key.value)
            .with_context(|| format!("TLS (tls_cert from {}, tls_key from {})", cert.source, key.source))?;
        config.tls = Some(tls);
    }
    let listen = s.listen;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen.value)
            .await
            .with_context(|| format!("cannot listen on {} (listen, from {})", listen.value, listen.source))?;
        controller::run(listener, config, stop_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Logs to stderr at `level`, a level or a list of tracing directives.
pub fn init_logging(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            None
        }
    };
    let term = async {
        match &mut term {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;
    use std::path::Path;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn resolve(argv: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let m: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))?;
        Settings::resolve(cli.args, &|k| m.get(k).cloned())
    }

    fn example() -> (tempfile::TempDir, PathBuf) {
        let text = include_str!("../contrib/config/controller.toml");
        let dir = tempfile::tempdir().unwrap();
        // token and token_file are alternatives: activate the token.
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, config::activate_example(text, &["token_file"])).unwrap();
        (dir, path)
    }

    #[test]
    fn the_example_documents_every_key() {
        let problems = config::check_example(include_str!("../contrib/config/controller.toml"), &KEYS);
        assert!(problems.is_empty(), "contrib/config/controller.toml: {problems:#?}");
    }

    #[test]
    fn the_example_parses_and_its_values_are_the_defaults() {
        let (_dir, path) = example();
        let s = resolve(&["--config", path.to_str().unwrap()], &[]).unwrap();
        assert_eq!(s.listen.value, DEFAULT_LISTEN);
        assert_eq!(s.listen.source, Source::File(path.clone()));
        assert_eq!(s.heartbeat_interval.value, HEARTBEAT_INTERVAL);
        assert_eq!(s.dead_after.value, DEAD_AFTER);
        assert_eq!(s.hello_timeout.value, DEFAULT_HELLO_TIMEOUT);
        assert_eq!(s.log_level.value, "info");
        // The example as shipped, everything commented out, is the defaults too.
        let s = resolve(
            &["--config", concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/config/controller.toml")],
            &[("FFCLUSTER_TOKEN", "t")],
        )
        .unwrap();
        assert_eq!((s.listen.value.as_str(), s.listen.source), (DEFAULT_LISTEN, Source::Default));
    }

    #[test]
    fn precedence_and_sources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\ntoken = \"file-token\"\ndead_after = \"5s\"\n").unwrap();
        let p = path.to_str().unwrap();
        let env = [("FFCLUSTER_CONFIG", p), ("FFCLUSTER_LISTEN", "127.0.0.1:2"), ("FFCLUSTER_TOKEN", "env-token")];
        let s = resolve(&["--listen", "127.0.0.1:3"], &env).unwrap();
        assert_eq!(s.listen, Setting { value: "127.0.0.1:3".into(), source: Source::Flag("--listen") });
        assert_eq!(s.token, Setting { value: "env-token".into(), source: Source::Env("FFCLUSTER_TOKEN") });
        assert_eq!(s.dead_after, Setting { value: Duration::from_secs(5), source: Source::File(path.clone()) });
        let report = s.report();
        assert!(report.contains("listen") && report.contains("# from --listen"), "{report}");
        assert!(!report.contains("env-token"), "the report shows the secret: {report}");
    }

    #[test]
    fn tls_needs_the_certificate_and_its_key() {
        let env = [("FFCLUSTER_TOKEN", "t"), ("FFCLUSTER_TLS_KEY", "/k.pem")];
        let err = resolve(&[], &env).unwrap_err().to_string();
        assert!(err.contains("tls_key is set (from FFCLUSTER_TLS_KEY) but tls_cert is not"), "{err}");
        assert!(err.contains("--tls-cert"), "{err}");
        let s = resolve(&["--tls-cert", "/c.pem"], &env).unwrap();
        let (cert, key) = s.tls.as_ref().unwrap();
        assert_eq!((cert.value.as_path(), &cert.source), (Path::new("/c.pem"), &Source::Flag("--tls-cert")));
        assert_eq!(key.source, Source::Env("FFCLUSTER_TLS_KEY"));
        assert!(s.report().contains("tls_cert") && s.report().contains("\"/c.pem\""), "{}", s.report());
        let plain = resolve(&[], &[("FFCLUSTER_TOKEN", "t")]).unwrap();
        assert!(plain.tls.is_none() && plain.report().contains("none (plain HTTP)"));
    }

    #[test]
    fn mistakes_name_the_key_and_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "token = \"t\"\nlisten_on = \"0.0.0.0:1\"\n").unwrap();
        let err = resolve(&["--config", path.to_str().unwrap()], &[]).unwrap_err().to_string();
        assert!(err.contains("listen_on") && err.contains("c.toml"), "{err}");
        let err = resolve(&["--dead-after", "3"], &[("FFCLUSTER_TOKEN", "t")]).unwrap_err().to_string();
        assert!(err.contains("dead_after") && err.contains("--dead-after") && err.contains("unit"), "{err}");
        let err = resolve(&[], &[("FFCLUSTER_TOKEN", "t"), ("FFCLUSTER_DEAD_AFTER", "1s")]).unwrap_err().to_string();
        assert!(err.contains("dead_after") && err.contains("FFCLUSTER_DEAD_AFTER"), "{err}");
        let err = resolve(&[], &[("FFCLUSTER_TOKEN", "t"), ("FFCLUSTER_LISTEN", "9470")]).unwrap_err().to_string();
        assert!(err.contains("FFCLUSTER_LISTEN"), "{err}");
        let err = resolve(&[], &[("FFCLUSTER_LOG_LEVEL", "verbose"), ("FFCLUSTER_TOKEN", "t")]).unwrap_err();
        assert!(err.to_string().contains("FFCLUSTER_LOG_LEVEL"), "{err}");
        let err = resolve(&[], &[]).unwrap_err().to_string();
        assert!(err.starts_with("no token"), "{err}");
        assert!(resolve(&["--config", "/nonexistent/c.toml"], &[]).unwrap_err().to_string().contains("/nonexistent"));
    }

    #[test]
    fn token_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef\n").unwrap();
        let s = resolve(&["--token-file", secret.to_str().unwrap()], &[]).unwrap();
        assert_eq!(s.token, Setting { value: "0123456789abcdef".into(), source: Source::Flag("--token-file") });
    }

    #[test]
    fn default_config_path_is_optional() {
        // Only meaningful where no real controller.toml is installed.
        if !Path::new(DEFAULT_CONFIG_PATH).exists() {
            let s = resolve(&[], &[("FFCLUSTER_TOKEN", "t")]).unwrap();
            assert_eq!(s.file, None);
        }
        assert_eq!(config::locate(None, CONFIG_ENV, &|_| None, "/nonexistent/x.toml"), None);
    }
}
