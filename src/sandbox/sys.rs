//! The few calls rustix leaves out (fork, signal masks, exec, an interface
//! flag), each wrapped once. Everything here runs in the helper, which is
//! single-threaded, so work after `fork` is safe.

use rustix::io::Errno;
use std::ffi::CString;
use std::io;
use std::time::Instant;

fn last_errno() -> Errno {
    Errno::from_raw_os_error(
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// The PID of the child in the parent, `None` in the child.
pub(crate) fn fork() -> rustix::io::Result<Option<i32>> {
    // SAFETY: the helper has one thread, so the child's memory is consistent.
    match unsafe { libc::fork() } {
        -1 => Err(last_errno()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Ends a forked child without running the parent's exit handlers.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process; it touches no memory of ours.
    unsafe { libc::_exit(code) }
}

fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Blocks SIGCHLD so that it queues for [`wait_child`] (a blocked signal is
/// never discarded, even with its default "ignore" action).
pub(crate) fn block_sigchld() {
    let set = sigchld_set();
    // SAFETY: a valid set; the old mask is not wanted.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Gives the command the signal state a fresh process has: nothing blocked,
/// SIGPIPE at its default (Rust's runtime ignores it, and an ignored signal
/// would be inherited across exec).
pub(crate) fn reset_signals() {
    // SAFETY: resetting dispositions and the mask of this process only.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The next child that ended, `None` once `deadline` passes. SIGCHLD must be
/// blocked (see [`block_sigchld`]).
pub(crate) fn wait_child(deadline: Option<Instant>) -> rustix::io::Result<Option<(i32, i32)>> {
    let set = sigchld_set();
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid with a status out-parameter.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            return Ok(Some((pid, status)));
        }
        if pid < 0 {
            return Err(last_errno());
        }
        let timeout = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => Some(left),
                None => return Ok(None),
            },
            None => None,
        };
        let spec = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let spec_ptr = spec
            .as_ref()
            .map_or(std::ptr::null(), |s| s as *const libc::timespec);
        // SAFETY: a valid set and timeout; the siginfo is not wanted.
        let got = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), spec_ptr) };
        if got < 0 {
            let e = last_errno();
            if e != Errno::AGAIN && e != Errno::INTR {
                return Err(e);
            }
        }
    }
}

/// Reaps every ended child without waiting; true once there are none left.
pub(crate) fn reap_all() -> bool {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid with a status out-parameter.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            0 => return false,
            pid if pid > 0 => continue,
            _ => return true,
        }
    }
}

/// `execve`, returning only on failure.
pub(crate) fn execve(program: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let env_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: null-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// Brings `lo` up in this (new) network namespace; it starts down.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: a socket used only for the ioctl below, closed on return.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours; from here on it is closed by the OwnedFd.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: ifreq is plain data; the name fits with its terminating zero.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Docker's default capabilities for a container, and so for a RUN step.
const DEFAULT_CAPS: [u32; 14] = [
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// Narrows this process's bounding, permitted, effective and inheritable
/// capability sets to [`DEFAULT_CAPS`], so a step cannot mount, load
/// modules or trace, as in `docker build`.
pub(crate) fn drop_capabilities() -> rustix::io::Result<()> {
    let keep: u64 = DEFAULT_CAPS.iter().fold(0, |m, c| m | 1 << c);
    for cap in 0..64u32 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            match last_errno() {
                Errno::INVAL => break, // past the kernel's last capability
                e => return Err(e),
            }
        }
    }
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    let mut sets = capabilities(None)?;
    let mask = CapabilitySet::from_bits_retain(keep);
    sets.effective &= mask;
    sets.permitted &= mask;
    sets.inheritable &= mask;
    set_capabilities(None, sets)?;
    Ok(())
}
