//! Child-process helpers shared by the RUN sandbox and the service.

use std::process::Command;

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
