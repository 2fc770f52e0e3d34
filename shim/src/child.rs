//! The shim's own ffmpeg processes (the finisher, the encodes of a job taken
//! over from a lost cluster) must not outlive it: Jellyfin kills only the
//! shim's PID, and nobody else would collect their output.

use nix::sys::signal::Signal;

/// A `pre_exec` hook: the child is SIGKILLed when the shim dies, and fails to
/// start if the shim died before that took effect. The signal fires when the
/// forking *thread* ends, so the thread that spawns must outlive the child.
///
/// Only async-signal-safe calls (prctl, getppid), nothing allocated: it runs
/// between fork and exec.
pub fn dies_with_shim() -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    let shim = nix::unistd::getpid();
    move || {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        if nix::unistd::getppid() != shim {
            return Err(nix::errno::Errno::ESRCH.into());
        }
        Ok(())
    }
}
