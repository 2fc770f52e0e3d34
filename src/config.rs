//! Layered settings for the two daemons, `ffcluster serve` and `ffcluster-node`:
//! a TOML file, an environment variable per key over it, a command-line flag per
//! key over both.
//!
//! Each program keeps its own table of [`Key`]s and its own file struct (with
//! `deny_unknown_fields`); this module has what they share: finding and reading
//! the file, taking each setting from the first layer that has it, remembering
//! where it came from so that a bad value names its key and its source, and the
//! value syntaxes (durations, log levels) the programs have in common.
//!
//! The shim has its own, more forgiving reader (`shim/src/config.rs`): it is
//! ffmpeg, so it has no flags, and a broken file must never stop a transcode.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// One setting: its key in the file, its environment variable and its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub env: &'static str,
    /// Empty for the shim, whose command line is ffmpeg's.
    pub flag: &'static str,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "{flag}"),
            Source::Env(var) => write!(f, "{var}"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Syntax errors, unknown keys and values of the wrong type; toml's message
    /// names the key and quotes the line.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("bad value for `{key}` (from {from}): {message}")]
    Invalid { key: &'static str, from: Source, message: String },
    #[error("`{first}` and `{second}` are both set (by {from}); set only one")]
    Conflict { first: &'static str, second: &'static str, from: String },
    #[error("no {what}: give {flag}, set {env}, or set `{key}` in the config file")]
    Missing { what: &'static str, key: &'static str, env: &'static str, flag: &'static str },
}

/// The environment as the programs read it: unset and empty are the same, so
/// that `FOO=` in a Docker env file does not override the config file.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()).filter(|v| !v.is_empty())
}

/// The config file to read: the flag's, else the environment variable's, else
/// `default` if it exists. A file named explicitly must exist; the default one
/// is optional so that a bare install runs on flags and environment alone.
pub fn locate(
    flag: Option<PathBuf>,
    env_var: &'static str,
    env: &dyn Fn(&str) -> Option<String>,
    default: &str,
) -> Option<PathBuf> {
    flag.or_else(|| env(env_var).map(PathBuf::from)).or_else(|| {
        let p = Path::new(default);
        p.exists().then(|| p.to_path_buf())
    })
}

/// Reads and parses a config file.
pub fn read_file<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse_file(path, &text)
}

/// Parses a config file's text (`path` is only for messages).
pub fn parse_file<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string().trim().to_owned() })
}

/// The layers below the flags: the environment and the file.
pub struct Layers<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The file that was read, if any (for naming the source).
    pub file: Option<&'a Path>,
}

impl fmt::Debug for Layers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layers").field("file", &self.file).finish_non_exhaustive()
    }
}

impl Layers<'_> {
    /// The setting from the first layer that has it: `flag`, then the key's
    /// environment variable, then `file` (the file's value, already typed by
    /// serde). Text from the flag or the environment goes through `parse`, the
    /// file's value through `from_file`; a failure names the key and the layer.
    pub fn pick<T, F>(
        &self,
        key: &Key,
        flag: Option<String>,
        file: Option<F>,
        parse: impl Fn(&str) -> Result<T, String>,
        from_file: impl Fn(F) -> Result<T, String>,
    ) -> Result<Option<Setting<T>>, ConfigError> {
        let (result, source) = if let Some(text) = flag {
            (parse(&text), Source::Flag(key.flag))
        } else if let Some(text) = (self.env)(key.env) {
            (parse(&text), Source::Env(key.env))
        } else if let Some(v) = file {
            (from_file(v), self.file_source())
        } else {
            return Ok(None);
        };
        match result {
            Ok(value) => Ok(Some(Setting { value, source })),
            Err(message) => Err(ConfigError::Invalid { key: key.name, from: source, message }),
        }
    }

    /// [`pick`](Self::pick) for a key whose file value is text like the flag's.
    pub fn pick_str<T>(
        &self,
        key: &Key,
        flag: Option<String>,
        file: Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<Setting<T>>, ConfigError> {
        self.pick(key, flag, file, &parse, |s: String| parse(&s))
    }

    /// The shared secret, from `token` or `token_file` (a Docker or Kubernetes
    /// secret). They are one setting spelt two ways: the first layer that sets
    /// either wins, and a layer that sets both is an error rather than a guess.
    pub fn token(
        &self,
        keys: (&Key, &Key),
        flags: (Option<String>, Option<PathBuf>),
        file: (Option<String>, Option<PathBuf>),
    ) -> Result<Option<Setting<String>>, ConfigError> {
        let (tk, fk) = keys;
        let layers = [
            (flags.0, flags.1, Source::Flag(tk.flag), Source::Flag(fk.flag)),
            ((self.env)(tk.env), (self.env)(fk.env).map(PathBuf::from), Source::Env(tk.env), Source::Env(fk.env)),
            (file.0, file.1, self.file_source(), self.file_source()),
        ];
        for (token, path, token_source, file_source) in layers {
            let (key, source, value) = match (token, path) {
                (Some(_), Some(_)) => {
                    let from = if token_source == file_source {
                        token_source.to_string()
                    } else {
                        format!("{token_source} and {file_source}")
                    };
                    return Err(ConfigError::Conflict { first: tk.name, second: fk.name, from });
                }
                (Some(t), None) => (tk, token_source, check_token(t)),
                (None, Some(p)) => (fk, file_source, read_token(&p)),
                (None, None) => continue,
            };
            return match value {
                Ok(value) => Ok(Some(Setting { value, source })),
                Err(message) => Err(ConfigError::Invalid { key: key.name, from: source, message }),
            };
        }
        Ok(None)
    }

    fn file_source(&self) -> Source {
        self.file.map_or(Source::Default, |p| Source::File(p.to_path_buf()))
    }
}

fn check_token(t: String) -> Result<String, String> {
    let t = t.trim().to_owned();
    if t.is_empty() { Err("the token is empty".into()) } else { Ok(t) }
}

/// A secret file holds the token and perhaps a trailing newline.
fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check_token(text).map_err(|_| format!("{} is empty", path.display()))
}

/// `250ms`, `1s`, `1.5s`, `2m`. A bare number is refused: seconds or
/// milliseconds would be a guess.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "" => return Err(format!("{s:?} has no unit: write e.g. \"1s\" or \"500ms\"")),
        other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s or m)")),
    };
    let n: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration like \"1s\" or \"500ms\""))?;
    let d = Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

/// How a duration is shown back (`--check-config`, the example files).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A log level (`info`) or a list of `tracing` directives
/// (`info,ffcluster_node=debug`). Each directive must end in a level name, so
/// that a typo like `verbose` is refused instead of silently logging nothing.
pub fn parse_log_level(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty log level".into());
    }
    for directive in s.split(',') {
        let level = directive.rsplit('=').next().unwrap_or("").trim().to_ascii_lowercase();
        if !LEVELS.contains(&level.as_str()) {
            return Err(format!(
                "{directive:?} is not a log level; use one of {} or directives like \"info,ffcluster=debug\"",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(s.to_owned())
}

/// The settings in effect, one per line with its source, for `--check-config`.
/// Secrets are given as `<hidden>` by the caller.
pub fn report(file: Option<&Path>, rows: &[(&str, String, Source)]) -> String {
    let mut out = match file {
        Some(p) => format!("config file: {}\n", p.display()),
        None => "config file: none\n".to_owned(),
    };
    let width = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|(_, v, _)| v.len()).max().unwrap_or(0);
    for (key, value, source) in rows {
        out.push_str(&format!("{key:width$} = {value:value_width$}  # from {source}\n"));
    }
    out
}

/// The lines of an example config file with every commented-out setting
/// (`#key = value`, no space after `#`) made active, except `skip`; prose
/// comments (`# …`) stay comments. For tests that keep `contrib/config/` honest.
pub fn activate_example(text: &str, skip: &[&str]) -> String {
    text.lines()
        .map(|line| match example_key(line) {
            Some(key) if !skip.contains(&key) => &line[1..],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The key of a commented-out setting line of an example file.
pub fn example_key(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('#')?;
    let (key, _) = rest.split_once(" = ")?;
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then_some(key)
}

/// Checks that an example file documents every key: a `#key = …` line, and in
/// the comment block just above it the key's environment variable, its flag and
/// the word `default`. Returns the problems found.
pub fn check_example(text: &str, keys: &[Key]) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut problems = Vec::new();
    for key in keys {
        let Some(at) = lines.iter().position(|l| example_key(l) == Some(key.name)) else {
            problems.push(format!("no `#{} = …` line", key.name));
            continue;
        };
        let block: Vec<&str> =
            lines[..at].iter().rev().take_while(|l| l.starts_with("# ") || **l == "#").copied().collect();
        let block = block.join("\n");
        for (what, needle) in [("environment variable", key.env), ("flag", key.flag), ("default", "default")] {
            if !needle.is_empty() && !block.contains(needle) {
                problems.push(format!("`{}`: the comment above it does not give its {what} ({needle})", key.name));
            }
        }
    }
    for line in &lines {
        if let Some(k) = example_key(line)
            && !keys.iter().any(|key| key.name == k)
        {
            problems.push(format!("`{k}` is not a key"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: Key = Key { name: "slots", env: "FFCLUSTER_SLOTS", flag: "--slots" };
    const TOKEN: Key = Key { name: "token", env: "FFCLUSTER_TOKEN", flag: "--token" };
    const TOKEN_FILE: Key = Key { name: "token_file", env: "FFCLUSTER_TOKEN_FILE", flag: "--token-file" };

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn slots(s: &str) -> Result<u32, String> {
        s.parse().map_err(|e| format!("{s:?}: {e}"))
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let e = env(&[("FFCLUSTER_SLOTS", "3")]);
        let file = Path::new("/f.toml");
        let l = Layers { env: &e, file: Some(file) };
        let got = l.pick(&KEY, Some("4".into()), Some(2u32), slots, Ok).unwrap().unwrap();
        assert_eq!(got, Setting { value: 4, source: Source::Flag("--slots") });
        let got = l.pick(&KEY, None, Some(2u32), slots, Ok).unwrap().unwrap();
        assert_eq!(got, Setting { value: 3, source: Source::Env("FFCLUSTER_SLOTS") });
        let none = env(&[]);
        let l = Layers { env: &none, file: Some(file) };
        let got = l.pick(&KEY, None, Some(2u32), slots, Ok).unwrap().unwrap();
        assert_eq!(got, Setting { value: 2, source: Source::File(file.into()) });
        assert_eq!(l.pick(&KEY, None, None::<u32>, slots, Ok).unwrap(), None);
    }

    #[test]
    fn a_bad_value_names_its_key_and_source() {
        let e = env(&[("FFCLUSTER_SLOTS", "many")]);
        let l = Layers { env: &e, file: None };
        let err = l.pick(&KEY, None, None::<u32>, slots, Ok).unwrap_err().to_string();
        assert!(err.contains("`slots`") && err.contains("FFCLUSTER_SLOTS") && err.contains("many"), "{err}");
        let file = Path::new("/etc/x.toml");
        let l = Layers { env: &env(&[]), file: Some(file) };
        let err = l.pick(&KEY, None, Some(0u32), slots, |_| Err("must be at least 1".into())).unwrap_err();
        assert_eq!(err.to_string(), "bad value for `slots` (from /etc/x.toml): must be at least 1");
    }

    #[test]
    fn token_or_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let file = Path::new("/c.toml");
        let e = env(&[("FFCLUSTER_TOKEN_FILE", secret.to_str().unwrap())]);
        let l = Layers { env: &e, file: Some(file) };
        // The environment's token_file beats the file's token.
        let got = l.token((&TOKEN, &TOKEN_FILE), (None, None), (Some("from-file".into()), None)).unwrap().unwrap();
        assert_eq!(got, Setting { value: "s3cret".into(), source: Source::Env("FFCLUSTER_TOKEN_FILE") });
        // The flag beats both.
        let got =
            l.token((&TOKEN, &TOKEN_FILE), (Some("flag".into()), None), (Some("f".into()), None)).unwrap().unwrap();
        assert_eq!(got.value, "flag");
        // One layer setting both is an error naming the layer.
        let none = env(&[]);
        let l = Layers { env: &none, file: Some(file) };
        let err = l.token((&TOKEN, &TOKEN_FILE), (None, None), (Some("a".into()), Some(secret.clone()))).unwrap_err();
        assert!(err.to_string().contains("/c.toml") && err.to_string().contains("token_file"), "{err}");
        // A missing secret file names the file.
        let err = l
            .token((&TOKEN, &TOKEN_FILE), (None, None), (None, Some(dir.path().join("nope"))))
            .unwrap_err()
            .to_string();
        assert!(err.contains("token_file") && err.contains("nope"), "{err}");
        assert_eq!(l.token((&TOKEN, &TOKEN_FILE), (None, None), (None, None)).unwrap(), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3").unwrap_err().contains("no unit"));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn log_levels() {
        assert_eq!(parse_log_level(" debug "), Ok("debug".into()));
        assert!(parse_log_level("info,ffcluster_node=trace").is_ok());
        assert!(parse_log_level("verbose").is_err());
        assert!(parse_log_level("info,x=loud").is_err());
        assert!(parse_log_level("").is_err());
    }

    #[test]
    fn examples_are_checked() {
        let good = "# Jobs at once.\n# env: FFCLUSTER_SLOTS  flag: --slots  default: 1\n#slots = 1\n";
        assert!(check_example(good, &[KEY]).is_empty());
        assert_eq!(
            activate_example(good, &[]),
            "# Jobs at once.\n# env: FFCLUSTER_SLOTS  flag: --slots  default: 1\nslots = 1"
        );
        let bad = "# Jobs.\n#slots = 1\n#slotz = 2\n";
        let problems = check_example(bad, &[KEY]);
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
