//! The step's command: the last fork, which takes the step's user, working
//! directory and capabilities, then execs.

use super::protocol::{failed, Failure, Stage};
use super::spec::Spec;
use super::sys;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Docker's PATH for a step whose environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything the command needs, prepared before the fork.
pub(crate) struct Command {
    /// Where `argv[0]` may be: itself if it has a `/`, else each PATH entry.
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: PathBuf,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    /// Set for a plain chroot, where init stays on the host's root.
    chroot: Option<PathBuf>,
    /// False when the user namespace denies setgroups (one mapped ID).
    may_setgroups: bool,
}

fn c_string(text: &str, what: &str) -> Result<CString, Failure> {
    CString::new(text).map_err(|_| {
        Failure::other(
            Stage::Exec,
            format!("preparing the {what}"),
            "it contains a NUL byte",
        )
    })
}

impl Command {
    pub fn new(
        spec: &Spec,
        chroot: Option<PathBuf>,
        may_setgroups: bool,
    ) -> Result<Command, Failure> {
        let mut env = spec.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let program = spec.argv.first().map(String::as_str).unwrap_or_default();
        let candidates = if program.contains('/') {
            vec![c_string(program, "command")?]
        } else {
            path.split(':')
                .map(|dir| if dir.is_empty() { "." } else { dir })
                .map(|dir| {
                    c_string(
                        &format!("{}/{program}", dir.trim_end_matches('/')),
                        "command",
                    )
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Command {
            candidates,
            argv: spec
                .argv
                .iter()
                .map(|a| c_string(a, "arguments"))
                .collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|e| c_string(e, "environment"))
                .collect::<Result<_, _>>()?,
            cwd: PathBuf::from(&spec.cwd),
            uid: spec.user.uid,
            gid: spec.user.gid,
            groups: spec.user.groups.clone(),
            chroot,
            may_setgroups,
        })
    }

    /// Runs in the forked child: never returns. A failure before the exec
    /// is written to `report` as JSON for init to pass on.
    pub fn exec(&self, report: OwnedFd) -> ! {
        let failure = match self.prepare() {
            Ok(()) => self.exec_first(),
            Err(f) => f,
        };
        let mut report = std::fs::File::from(report);
        let _ = report.write_all(&serde_json::to_vec(&failure).unwrap_or_default());
        sys::exit_now(127)
    }

    fn prepare(&self) -> Result<(), Failure> {
        let fail = |what: &'static str| failed(Stage::Credentials, what);
        sys::reset_signals();
        // Its own session and no terminal, as in `docker build`; a fixed
        // umask so files come out the same whoever runs dockless.
        rustix::process::setsid().map_err(fail("starting a session"))?;
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        if let Some(root) = &self.chroot {
            rustix::process::chroot(root).map_err(fail("chroot into the rootfs"))?;
            rustix::process::chdir("/").map_err(fail("entering the rootfs"))?;
        }
        let cwd_fail = || {
            failed(
                Stage::Exec,
                format!("entering the working directory {}", self.cwd.display()),
            )
        };
        std::fs::create_dir_all(&self.cwd).map_err(cwd_fail())?;
        std::env::set_current_dir(&self.cwd).map_err(cwd_fail())?;
        sys::drop_capabilities().map_err(fail("dropping capabilities"))?;
        self.set_ids()
    }

    fn set_ids(&self) -> Result<(), Failure> {
        use rustix::process::{Gid, Uid};
        use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
        let what = format!("switching to user {}:{}", self.uid, self.gid);
        let fail = || failed(Stage::Credentials, what.clone());
        if self.may_setgroups {
            let groups: Vec<Gid> = self.groups.iter().map(|g| Gid::from_raw(*g)).collect();
            set_thread_groups(&groups).map_err(fail())?;
        }
        // The helper is single-threaded, so the calling thread is the process.
        let gid = Gid::from_raw(self.gid);
        set_thread_res_gid(gid, gid, gid).map_err(fail())?;
        let uid = Uid::from_raw(self.uid);
        set_thread_res_uid(uid, uid, uid).map_err(fail())
    }

    /// Tries each candidate as execvp does; returns why none ran.
    fn exec_first(&self) -> Failure {
        let program = self
            .argv
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut denied = None;
        for candidate in &self.candidates {
            let error = sys::execve(candidate, &self.argv, &self.envp);
            match error.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => continue,
                Some(libc::EACCES) => denied = Some(error),
                _ => return Failure::os(Stage::Exec, format!("running {program}"), error),
            }
        }
        match denied {
            Some(e) => Failure::os(Stage::Exec, format!("running {program}"), e),
            None if self.candidates.len() == 1 && program.contains('/') => Failure::other(
                Stage::Exec,
                format!("running {program}"),
                "no such file in the image",
            ),
            None => Failure::other(
                Stage::Exec,
                format!("running {program}"),
                "not found in the image's PATH",
            ),
        }
    }
}

/// What the command's fork reported before exec, if it did not get there
/// (the pipe closes on a successful exec, so an empty read means it ran).
pub(crate) fn read_failure(pipe: OwnedFd) -> Option<Failure> {
    let mut text = Vec::new();
    std::fs::File::from(pipe).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}
