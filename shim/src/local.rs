//! Running the real ffmpeg on this machine.
//!
//! [`exec`] replaces the shim with the real binary: the process keeps its PID,
//! stdin, stdout, stderr, environment, working directory and signal dispositions,
//! so Jellyfin's `q`, its SIGKILL of the PID it started, and the exit status
//! (death by signal included) are ffmpeg's own with nothing in between.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Builds the command: the real binary, the caller's `argv[0]` and arguments.
fn command(real: &Path, argv0: &OsString, args: &[OsString]) -> Command {
    let mut cmd = Command::new(real);
    cmd.arg0(argv0).args(args);
    cmd
}

/// Replaces this process with the real binary. Only returns on failure.
pub fn exec(real: &Path, argv0: &OsString, args: &[OsString]) -> std::io::Error {
    command(real, argv0, args).exec()
}
