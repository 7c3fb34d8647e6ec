//! Child-process helpers shared by the RUN sandbox and the service.

use std::process::Command;

/// Lowers the calling thread's CPU priority to `nice` (`dockless serve`'s
/// build threads, so its acknowledgements keep the CPU under load). Linux
/// keeps a nice value per thread, and threads and children it starts
/// inherit it. Best effort: a priority that cannot be set is a warning.
pub(crate) fn lower_thread_priority(nice: i32) {
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!("could not lower a build thread's priority: {e}");
    }
}

/// The child gets SIGKILL when the thread that spawned it dies, so a child
/// (a `git fetch` of `dockless serve`, a RUN step's sandbox helper) never
/// outlives a dockless killed with -9.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
