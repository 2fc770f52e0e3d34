//! The agent's settings after the command line and the environment are read, and
//! the two pure rules that touch paths: `--path-map` and name sanitising.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Everything the agent needs to know about where it runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The controller's base URL (`http://host:9470`).
    pub controller: String,
    pub token: String,
    pub name: String,
    pub slots: u32,
    /// Absolute, UTF-8 (scratch paths end up in ffmpeg's arguments).
    pub scratch: PathBuf,
    pub ffmpeg: PathBuf,
    pub path_maps: Vec<PathMap>,
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
