//! `dockless __sandbox`: the helper dockless re-executes from
//! /proc/self/exe for each step, because namespaces must be made by a
//! single-threaded process and dockless runs tokio (buildah re-executes
//! itself the same way). Its stdin is the socket to the parent; its stdout
//! and stderr are the step's.
//!
//! Process tree: helper → [mapper, gone once the IDs are mapped] → init
//! (PID 1 of the step) → command. Each dies with its parent.

use super::init::{self, Plan};
use super::mounts;
use super::protocol::{failed, Failure, Job, Mode, Report, Reporter, Request, Stage};
use super::spec::Network;
use super::sys;
use crate::rootfs::disk::{self, Done, Task};
use rustix::process::{Pid, Signal};
use rustix::thread::UnshareFlags;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long after its timeout init gets to report before the helper kills it.
const GRACE: Duration = Duration::from_secs(5);

/// Runs the helper; the exit code says only whether it could report.
pub fn helper_main() -> ! {
    // Started as /proc/self/exe it would be "exe" in a step's `ps`.
    let _ = rustix::thread::set_name(c"dockless");
    let code = match helper() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dockless sandbox helper: {e}");
            70
        }
    };
    std::process::exit(code)
}

fn helper() -> std::io::Result<i32> {
    let channel = take_channel()?;
    let job: Job = serde_json::from_reader(&channel)?;
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    let mut out = Reporter::new(channel);
    let result = match job {
        Job::Step(request) => supervise(&request, &mut out),
        Job::Disk { task, mode } => disk_job(task, &mode).map(|done| out.send(&Report::Disk(done))),
        Job::OverlayProbe { dir, mode } => overlay_probe(&dir, &mode)
            .map(|()| out.send(&Report::Disk(crate::rootfs::disk::Done::Nothing))),
    };
    match result {
        Ok(()) => Ok(0),
        Err(failure) => {
            out.send(&Report::Failed(failure));
            Ok(1)
        }
    }
}

/// Whether the namespace allows setgroups (not so with one mapped ID).
fn may_setgroups(mapping: &super::idmap::IdMapping) -> bool {
    !matches!(
        mapping.writer,
        super::idmap::MapWriter::Direct {
            deny_setgroups: true
        }
    )
}

/// Enters the user namespace (if any) as its root: what is written then
/// belongs to container root, and files of any mapped owner can be read.
fn become_namespace_root(mode: &Mode) -> Result<(), Failure> {
    if let Mode::Userns(mapping) = mode {
        enter_user_namespace(mapping)?;
        init::become_root(Plan {
            namespaced: false,
            userns: true,
            may_setgroups: may_setgroups(mapping),
        })?;
    }
    Ok(())
}

/// A filesystem task: its paths are opened first, with the host user's
/// file access, then it runs as the namespace's root; a layer goes to stdout.
fn disk_job(mut task: Task, mode: &Mode) -> Result<Done, Failure> {
    let held = disk::hold(&mut task).map_err(failed(Stage::Disk, "opening the task's files"))?;
    become_namespace_root(mode)?;
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(failed(Stage::Disk, "taking stdout"))?;
    disk::run(&task, held, std::fs::File::from(stdout))
        .map_err(|e| Failure::other(Stage::Disk, "preparing the step's files", e.to_string()))
}

/// Mounts a small overlay in `dir` (a fresh folder) the way a step's root
/// is mounted, and checks that both kinds of whiteout hide what they should.
fn overlay_probe(dir: &std::path::Path, mode: &Mode) -> Result<(), Failure> {
    let fail = |what: &'static str| failed(Stage::Disk, what);
    // The folder is entered with the host user's access; the new mount
    // namespace moves the working directory to its own copy of the mount,
    // which an overlay's folders must be on.
    rustix::process::chdir(dir).map_err(fail("entering the probe's folder"))?;
    become_namespace_root(mode)?;
    unshare(UnshareFlags::NEWNS).map_err(fail("creating a mount namespace"))?;
    let here = rustix::fs::open(
        ".",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(fail("opening the probe's folder"))?;
    let userns = matches!(mode, Mode::Userns(_));
    mounts::probe_overlay(&here, userns)
}

/// Moves the socket off fd 0 (to a close-on-exec fd the command never
/// sees) and gives fd 0 /dev/null: a RUN step reads no input.
fn take_channel() -> std::io::Result<UnixStream> {
    let stdin = std::io::stdin();
    let channel: OwnedFd = stdin.as_fd().try_clone_to_owned()?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(UnixStream::from(channel))
}

fn supervise(request: &Request, out: &mut Reporter) -> Result<(), Failure> {
    let plan = enter_namespaces(request, out)?;
    sys::block_sigchld();
    let fail = |what: &'static str| failed(Stage::Helper, what);
    let Some(init_pid) = sys::fork().map_err(fail("forking init"))? else {
        init::run(request, plan, out)
    };
    let backstop = request.spec.timeout.map(|t| Instant::now() + t + GRACE);
    loop {
        match sys::wait_child(backstop).map_err(fail("waiting for init"))? {
            Some((pid, 0)) if pid == init_pid => return Ok(()),
            Some((pid, status)) if pid == init_pid => {
                return Err(Failure::other(
                    Stage::Helper,
                    "running the step's init",
                    format!(
                        "it ended without a report ({:?})",
                        init::status_report(status)
                    ),
                ))
            }
            Some(_) => continue,
            None => {
                // Init is stuck: killing it takes the whole PID namespace.
                if let Some(pid) = Pid::from_raw(init_pid) {
                    let _ = rustix::process::kill_process(pid, Signal::KILL);
                }
                let _ = sys::wait_child(None);
                let after = request.spec.timeout.unwrap_or_default() + GRACE;
                out.send(&Report::TimedOut {
                    after_ms: after.as_millis() as u64,
                });
                return Ok(());
            }
        }
    }
}

fn enter_namespaces(request: &Request, out: &mut Reporter) -> Result<Plan, Failure> {
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    if request.spec.network == Network::None {
        flags |= UnshareFlags::NEWNET;
    }
    let fail = failed(
        Stage::Namespaces,
        "creating the mount, PID, IPC and UTS namespaces",
    );
    match &request.mode {
        Mode::Userns(mapping) => {
            enter_user_namespace(mapping)?;
            unshare(flags).map_err(fail)?;
            Ok(Plan {
                namespaced: true,
                userns: true,
                may_setgroups: may_setgroups(mapping),
            })
        }
        Mode::Chroot => match unshare(flags) {
            Ok(()) => Ok(Plan {
                namespaced: true,
                userns: false,
                may_setgroups: setgroups_allowed(),
            }),
            Err(e) if request.spec.network == Network::None => Err(Failure::os(
                Stage::Namespaces,
                "creating a network namespace for --network=none",
                e,
            )),
            Err(_) => {
                out.send(&Report::Warning(
                    "this process may not create namespaces, so the step runs in a plain chroot: \
                     it sees this machine's processes, has no /proc or /dev of its own, \
                     and only processes it leaves behind as descendants can be killed"
                        .into(),
                ));
                Ok(Plan {
                    namespaced: false,
                    userns: false,
                    may_setgroups: setgroups_allowed(),
                })
            }
        },
    }
}

/// False inside a user namespace made without setgroups (one mapped ID),
/// where dockless itself may run with `--isolation=chroot`.
fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}

fn unshare(flags: UnshareFlags) -> rustix::io::Result<()> {
    // SAFETY: the helper is single-threaded and FILES is never unshared, so
    // no other thread can observe a changed descriptor table.
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

/// Unshares the user namespace and has its maps written from outside it,
/// by a child forked before (an unprivileged process may not write a
/// multi-ID map for itself; `newuidmap` must be run by someone outside).
fn enter_user_namespace(mapping: &super::idmap::IdMapping) -> Result<(), Failure> {
    use rustix::pipe::{pipe_with, PipeFlags};
    let fail = |what: &'static str| failed(Stage::Helper, what);
    let (go_read, go_write) = pipe_with(PipeFlags::CLOEXEC).map_err(fail("making a pipe"))?;
    let (result_read, result_write) =
        pipe_with(PipeFlags::CLOEXEC).map_err(fail("making a pipe"))?;
    let helper_pid = rustix::process::getpid().as_raw_nonzero().get();
    let Some(mapper) = sys::fork().map_err(fail("forking the ID mapper"))? else {
        drop((go_write, result_read));
        let mut go = [0u8; 1];
        let message = match std::fs::File::from(go_read).read(&mut go) {
            Ok(1) => mapping.apply(helper_pid).err().unwrap_or_default(),
            _ => String::new(), // the helper could not unshare; nothing to map
        };
        let _ = std::fs::File::from(result_write).write_all(message.as_bytes());
        sys::exit_now(0)
    };
    drop((go_read, result_write));
    let unshared = unshare(UnshareFlags::NEWUSER);
    let mut message = String::new();
    if unshared.is_ok() {
        let _ = std::fs::File::from(go_write).write_all(b"1");
        let _ = std::fs::File::from(result_read).read_to_string(&mut message);
    } else {
        drop(go_write);
    }
    let mut status = 0;
    // SAFETY: waits for our own child with a status out-parameter.
    unsafe { libc::waitpid(mapper, &mut status, 0) };
    unshared.map_err(failed(Stage::UserNamespace, "creating a user namespace"))?;
    if message.is_empty() {
        Ok(())
    } else {
        Err(Failure::other(
            Stage::IdMap,
            "mapping the step's user and group IDs",
            message,
        ))
    }
}
