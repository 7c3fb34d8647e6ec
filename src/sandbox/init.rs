//! The step's init: PID 1 of the step's PID namespace. It sets up the root,
//! forks the command, reaps whatever gets orphaned, enforces the timeout,
//! and when the command ends kills everything left before it reports.

use super::exec;
use super::mounts;
use super::protocol::{failed, Failure, Report, Reporter, Request, Stage};
use super::spec::Network;
use super::sys;
use rustix::process::{Pid, Signal};
use std::time::Instant;

/// What the helper managed to set up for init.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Mount, PID, IPC and UTS namespaces (and the network one if asked).
    pub namespaced: bool,
    /// A user namespace whose root init must become.
    pub userns: bool,
    /// The user namespace allows setgroups (not so with one mapped ID).
    pub may_setgroups: bool,
}

pub(crate) fn run(request: &Request, plan: Plan, out: &mut Reporter) -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let report = match init(request, plan) {
        Ok(report) => report,
        Err(failure) => Report::Failed(failure),
    };
    out.send(&report);
    sys::exit_now(0)
}

pub(crate) fn become_root(plan: Plan) -> Result<(), Failure> {
    if !plan.userns {
        return Ok(());
    }
    use rustix::process::{Gid, Uid};
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    let fail = || failed(Stage::Credentials, "becoming root of the user namespace");
    set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT).map_err(fail())?;
    if plan.may_setgroups {
        set_thread_groups(&[]).map_err(fail())?;
    }
    set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).map_err(fail())
}

fn init(request: &Request, plan: Plan) -> Result<Report, Failure> {
    let mut root = mounts::Root::default();
    let result = if plan.namespaced {
        enter(request, plan, &mut root)
    } else {
        Ok(())
    };
    let result = result.and_then(|()| {
        if request.probe {
            Ok(Report::Exited(0))
        } else {
            run_command(request, plan)
        }
    });
    root.leave();
    result
}

/// The step's root, hostname and network.
fn enter(request: &Request, plan: Plan, root: &mut mounts::Root) -> Result<(), Failure> {
    let spec = &request.spec;
    mounts::enter(spec, request.probe, plan.userns, || become_root(plan), root)?;
    rustix::system::sethostname(spec.hostname.as_bytes())
        .map_err(failed(Stage::Namespaces, "setting the hostname"))?;
    if spec.network == Network::None {
        sys::loopback_up().map_err(failed(Stage::Namespaces, "bringing up lo"))?;
    }
    Ok(())
}

fn run_command(request: &Request, plan: Plan) -> Result<Report, Failure> {
    let spec = &request.spec;
    let chroot = (!plan.namespaced).then(|| spec.rootfs.clone());
    let command = exec::Command::new(spec, chroot, plan.may_setgroups)?;
    let fail = |what: &'static str| failed(Stage::Exec, what);
    if !plan.namespaced {
        // No PID namespace: orphans of the step come to init instead of the
        // host's init, so they can be found and killed.
        set_child_subreaper().map_err(fail("becoming a subreaper"))?;
    }
    let (failure_read, failure_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(fail("making a pipe"))?;
    let started = Instant::now();
    let Some(child) = sys::fork().map_err(fail("forking the command"))? else {
        drop(failure_read);
        command.exec(failure_write)
    };
    drop(failure_write);
    if let Some(failure) = exec::read_failure(failure_read) {
        kill_everything(plan.namespaced);
        return Err(failure);
    }
    let deadline = spec.timeout.map(|t| started + t);
    let status = loop {
        match sys::wait_child(deadline).map_err(fail("waiting for the command"))? {
            Some((pid, status)) if pid == child => break Some(status),
            Some(_) => continue, // an orphan, reaped
            None => break None,
        }
    };
    kill_everything(plan.namespaced);
    Ok(match status {
        Some(status) => status_report(status),
        None => Report::TimedOut {
            after_ms: started.elapsed().as_millis() as u64,
        },
    })
}

pub(crate) fn status_report(status: i32) -> Report {
    if libc::WIFSIGNALED(status) {
        Report::Signaled(libc::WTERMSIG(status))
    } else {
        Report::Exited(libc::WEXITSTATUS(status))
    }
}

fn set_child_subreaper() -> rustix::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
}

/// Kills every process the step left. As PID 1, `kill(-1)` reaches the
/// whole namespace; without one, the descendants are found through /proc.
fn kill_everything(pid_namespace: bool) {
    if pid_namespace {
        // SAFETY: kill with integer arguments; -1 is every process init may signal.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        while sys::wait_child(None).is_ok_and(|c| c.is_some()) {}
        return;
    }
    loop {
        let children = children_of(rustix::process::getpid());
        if children.is_empty() && sys::reap_all() {
            return;
        }
        for child in children {
            let _ = rustix::process::kill_process(child, Signal::KILL);
        }
        let _ = sys::wait_child(Some(Instant::now() + std::time::Duration::from_millis(50)));
    }
}

/// The processes whose parent is `parent`, from /proc/*/stat.
fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The field after the command name's closing parenthesis and the state.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            ppid == Some(parent.as_raw_nonzero().get())
        })
        .filter_map(Pid::from_raw)
        .collect()
}
