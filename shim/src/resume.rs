//! Carrying on after the cluster lost a job that had already published output:
//! the newest segment (perhaps incomplete) is deleted and the shim runs again,
//! as itself, on the command line that makes that segment and the rest
//! ([`ffcluster::resume`]). The new run goes to the cluster if the controller is
//! back, and runs locally if not; Jellyfin keeps the same process.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ffcluster::ffmpeg::{CommandLine, Dialect};
use ffcluster::protocol::Why;
use ffcluster::resume::Segments;

/// How many times one job may be resumed; each resume starts at a later or the
/// same segment, so this only stops a controller that loses every job at once.
const MAX_RESUMES: u32 = 3;
/// Set on the resumed run: how many resumes came before it.
const RESUMES_ENV: &str = "FFCLUSTER_RESUMED";
/// Set on the resumed run: why the run before it was lost, `CODE: detail`
/// (`resumed.*`), which it tells the controller.
const WHY_ENV: &str = "FFCLUSTER_RESUMED_WHY";

/// Why this run resumes a lost job, when it does.
pub fn why() -> Option<Why> {
    parse_why(&std::env::var(WHY_ENV).ok()?)
}

fn parse_why(v: &str) -> Option<Why> {
    let (code, detail) = v.split_once(": ").unwrap_or((v, ""));
    (!code.is_empty()).then(|| Why::new(code, detail))
}

/// How many resumes came before this run.
fn resumes_done() -> u32 {
    std::env::var(RESUMES_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The resumed command line and the segment it starts at; the newest segment
/// file is deleted. `Err`: the job cannot resume, and why.
pub fn plan(args: &[String], cwd: &Path, dialect: Dialect) -> Result<(Vec<String>, u64), String> {
    let done = resumes_done();
    if done >= MAX_RESUMES {
        return Err(format!("resumed {done} times already"));
    }
    let cl = CommandLine::parse_with(args, dialect).map_err(|e| e.to_string())?;
    let segments = Segments::of(&cl).map_err(|e| e.to_string())?;
    let dir = cwd.join(segments.dir());
    let newest = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = format!("{}{}", segments.dir(), e.file_name().to_str()?);
            Some((segments.index(&name)?, e.path()))
        })
        .max_by_key(|(n, _)| *n);
    // Nothing written yet: start over.
    let Some((n, path)) = newest else {
        let n = segments.first();
        return Ok((segments.resume_at(&cl, n).map_err(|e| e.to_string())?, n));
    };
    let args = segments.resume_at(&cl, n).map_err(|e| e.to_string())?;
    std::fs::remove_file(&path).map_err(|e| format!("cannot delete {}: {e}", path.display()))?;
    Ok((args, n))
}

/// Replaces this process with the shim on `args` (same program name, same
/// standard streams, so Jellyfin's `q` and kill reach the new run), which
/// tells the controller `why`.
///
/// `execve` itself, not `Command::exec`: that one first resets SIGPIPE to its
/// default in this process, while threads feeding the dead finisher may still
/// write to its pipes, and one such write would kill the shim.
pub fn exec(argv0: &OsString, args: &[String], why: &Why) -> std::io::Error {
    let done = resumes_done();
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let cstr = |b: &[u8]| CString::new(b).map_err(std::io::Error::other);
    let build = || -> std::io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = cstr(exe.as_os_str().as_bytes())?;
        let mut argv = vec![cstr(argv0.as_bytes())?];
        for a in args {
            argv.push(cstr(a.as_bytes())?);
        }
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os().filter(|(k, _)| k != RESUMES_ENV && k != WHY_ENV) {
            env.push(cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
        env.push(cstr(format!("{RESUMES_ENV}={}", done + 1).as_bytes())?);
        // A NUL in the detail would make the variable unrepresentable.
        env.push(cstr(format!("{WHY_ENV}={why}").replace('\0', " ").as_bytes())?);
        Ok((path, argv, env))
    };
    match build() {
        Ok((path, argv, env)) => match nix::unistd::execve(&path, &argv, &env) {
            Err(e) => e.into(),
        },
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_travels_in_one_variable() {
        let why = Why::new("resumed.controller_gone", "the controller closed the connection: 1: 2");
        assert_eq!(parse_why(&why.to_string()), Some(why));
        assert_eq!(parse_why("resumed.chunk"), Some(Why::new("resumed.chunk", "")));
        assert_eq!(parse_why(""), None);
    }
}
