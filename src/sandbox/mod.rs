//! RUN's sandbox: runs one command in an isolated root filesystem, without
//! root on the host (issue 14).
//!
//! A step gets a user namespace (IDs from `/etc/subuid`, see [`idmap`]),
//! mount, PID, IPC and UTS namespaces, `pivot_root` into its rootfs, `/proc`,
//! a minimal `/dev`, a read-only `/sys`, the host's `resolv.conf` and
//! `hosts` read-only, and the host network unless [`Network::None`]. The
//! command runs under Docker's default capabilities; whatever it leaves
//! running dies with the step's PID namespace. [`Sandbox::run`] re-executes
//! dockless as a single-threaded helper (`dockless __sandbox`, see
//! [`helper`]) that does the work.
//!
//! `--isolation=chroot` is for dockless running as root in a throwaway
//! container (kaniko's case): no user namespace, the other namespaces if
//! allowed, else a plain chroot.

mod binfmt;
mod diagnose;
mod error;
mod exec;
mod helper;
pub mod idmap;
mod init;
mod mounts;
mod protocol;
mod spec;
mod sys;
pub mod user;

pub use binfmt::check_runnable;
pub use diagnose::in_container;
pub use error::SandboxError;
pub use exec::DEFAULT_PATH;
pub use helper::helper_main;
pub use idmap::{IdMapping, IdRange};
pub use protocol::{Mode, HELPER_ARG};
pub use spec::{Ids, Isolation, Mount, MountKind, Network, Outcome, Overlay, Spec, TreeRoot};
pub use user::{resolve_user, resolve_user_with, ResolvedUser, UserError};

use crate::rootfs::disk::{Done, Task};
use protocol::{Job, Report, Request};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Where the command's output goes (a step header's stderr, a log file).
pub struct StepIo {
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// What [`Sandbox::run_captured`] returns.
#[derive(Debug)]
pub struct Captured {
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs steps; decides the isolation and ID mapping once.
pub struct Sandbox {
    helper: PathBuf,
    isolation: Isolation,
    mode: OnceLock<Result<Mode, SandboxError>>,
}

static WARNED: std::sync::Once = std::sync::Once::new();

fn warn_once(message: &str) {
    WARNED.call_once(|| tracing::warn!("{message}"));
}

impl Sandbox {
    /// `helper` is the dockless binary (`/proc/self/exe` from dockless).
    pub fn new(helper: impl Into<PathBuf>, isolation: Isolation) -> Sandbox {
        Sandbox {
            helper: helper.into(),
            isolation,
            mode: OnceLock::new(),
        }
    }

    /// Decides the isolation and checks that a sandbox can be set up here,
    /// running nothing; done once, before a build's first step.
    pub fn check(&self) -> Result<&Mode, SandboxError> {
        self.mode
            .get_or_init(|| self.decide())
            .as_ref()
            .map_err(Clone::clone)
    }

    fn decide(&self) -> Result<Mode, SandboxError> {
        if self.isolation == Isolation::Chroot {
            tracing::warn!("--isolation=chroot: RUN steps run as this machine's root with no user namespace; use it only inside a throwaway container");
            return Ok(Mode::Chroot);
        }
        let (mapping, warning) = idmap::for_current_user();
        if let Some(w) = warning {
            warn_once(&w);
        }
        let mode = Mode::Userns(mapping);
        match self.probe(&mode) {
            // Only the lack of user namespaces falls back, and only as
            // root: a user namespace is used whenever one can be made.
            Err(SandboxError::NoUserNamespaces { cause, .. })
                if self.isolation == Isolation::Auto && rustix::process::geteuid().is_root() =>
            {
                tracing::warn!("no user namespaces here ({cause}); as root, RUN steps fall back to --isolation=chroot: they run as this machine's root with no user namespace");
                Ok(Mode::Chroot)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(mode),
        }
    }

    fn probe(&self, mode: &Mode) -> Result<(), SandboxError> {
        let scratch = tempfile::tempdir().map_err(|e| self.helper_error(e))?;
        let request = Request {
            spec: Spec::new(scratch.path(), &[]),
            mode: mode.clone(),
            probe: true,
        };
        let io = StepIo {
            stdout: Stdio::null(),
            stderr: Stdio::inherit(),
        };
        self.exchange(&Job::Step(request), io).map(|_| ())
    }

    /// Runs a filesystem task in the step's user namespace (see
    /// `rootfs::disk`); a layer it writes goes to `out`.
    pub fn disk(&self, task: Task, out: Stdio) -> Result<Done, SandboxError> {
        let mode = self.check()?.clone();
        let io = StepIo {
            stdout: out,
            stderr: Stdio::inherit(),
        };
        match self.exchange(&Job::Disk { task, mode }, io)? {
            Report::Disk(done) => Ok(done),
            other => Err(self.helper_error(format!("unexpected answer {other:?}"))),
        }
    }

    /// Whether a step's root can be an overlay of layer folders here, tried
    /// in `dir` (a fresh folder the namespace's root owns, on the
    /// filesystem the layers are on). The error says why not.
    pub fn overlay_works(&self, dir: &Path) -> Result<(), SandboxError> {
        let mode = self.check()?.clone();
        let dir = std::path::absolute(dir).map_err(|e| self.helper_error(e))?;
        let io = StepIo {
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        };
        self.exchange(&Job::OverlayProbe { dir, mode }, io)
            .map(|_| ())
    }

    /// Runs one step; its output goes to `io` as it comes.
    pub fn run(&self, spec: &Spec, io: StepIo) -> Result<Outcome, SandboxError> {
        validate(spec)?;
        let mode = self.check()?.clone();
        if let Mode::Userns(mapping) = &mode {
            check_mapped(mapping, &spec.user)?;
        }
        let mut spec = spec.clone();
        // The helper's paths must not depend on where it is started.
        spec.rootfs = std::path::absolute(&spec.rootfs).map_err(|e| self.helper_error(e))?;
        if let Some(overlay) = &mut spec.overlay {
            for dir in overlay
                .lowers
                .iter_mut()
                .chain([&mut overlay.upper, &mut overlay.work])
            {
                *dir = std::path::absolute(&*dir).map_err(|e| self.helper_error(e))?;
            }
        }
        for m in &mut spec.mounts {
            if let MountKind::Bind { source, .. } = &mut m.kind {
                *source = std::path::absolute(&*source).map_err(|e| self.helper_error(e))?;
            }
        }
        let request = Request {
            spec,
            mode,
            probe: false,
        };
        match self.exchange(&Job::Step(request), io)? {
            Report::Exited(code) => Ok(Outcome::Exited(code)),
            Report::Signaled(signal) => Ok(Outcome::Signaled(signal)),
            Report::TimedOut { after_ms } => Ok(Outcome::TimedOut(Duration::from_millis(after_ms))),
            other => Err(self.helper_error(format!("unexpected answer {other:?}"))),
        }
    }

    /// [`Sandbox::run`] with the output collected (for tests and probes).
    pub fn run_captured(&self, spec: &Spec) -> Result<Captured, SandboxError> {
        let (out_read, out_write) = self.pipe()?;
        let (err_read, err_write) = self.pipe()?;
        let drain = |fd: OwnedFd| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = std::fs::File::from(fd).read_to_end(&mut bytes);
                bytes
            })
        };
        let (stdout, stderr) = (drain(out_read), drain(err_read));
        let io = StepIo {
            stdout: Stdio::from(out_write),
            stderr: Stdio::from(err_write),
        };
        let outcome = self.run(spec, io);
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        Ok(Captured {
            outcome: outcome?,
            stdout,
            stderr,
        })
    }

    fn pipe(&self) -> Result<(OwnedFd, OwnedFd), SandboxError> {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| self.helper_error(std::io::Error::from(e)))
    }

    fn helper_error(&self, e: impl std::fmt::Display) -> SandboxError {
        SandboxError::Helper {
            helper: self.helper.display().to_string(),
            detail: e.to_string(),
        }
    }

    /// Starts the helper, sends the request, and reads its reports.
    fn exchange(&self, job: &Job, io: StepIo) -> Result<Report, SandboxError> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| self.helper_error(e))?;
        let mut cmd = Command::new(&self.helper);
        cmd.arg(HELPER_ARG)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(io.stdout)
            .stderr(io.stderr);
        if let Some(log) = std::env::var_os("DOCKLESS_LOG") {
            cmd.env("DOCKLESS_LOG", log);
        }
        crate::process::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| self.helper_error(e))?;
        // Our copies of the child's ends must close, or no EOF ever comes.
        drop(cmd);
        let sent = serde_json::to_writer(&ours, job)
            .map_err(std::io::Error::from)
            .and_then(|()| ours.shutdown(std::net::Shutdown::Write));
        let reports = read_reports(&ours);
        let status = child.wait().map_err(|e| self.helper_error(e))?;
        if let Err(e) = sent {
            return Err(self.helper_error(format!("sending the step: {e}")));
        }
        for report in &reports {
            if let Report::Warning(w) = report {
                tracing::warn!("{w}");
            }
        }
        let last = reports
            .into_iter()
            .rfind(|r| !matches!(r, Report::Warning(_)));
        match last {
            Some(Report::Failed(failure)) => Err(diagnose::explain(&failure)),
            Some(Report::Warning(_)) | None => {
                Err(self.helper_error(format!("it ended without a report ({status})")))
            }
            Some(report) => Ok(report),
        }
    }
}

fn read_reports(channel: &std::os::unix::net::UnixStream) -> Vec<Report> {
    BufReader::new(channel)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}

fn validate(spec: &Spec) -> Result<(), SandboxError> {
    let bad = |m: String| Err(SandboxError::Spec(m));
    if spec.argv.is_empty() {
        return bad("no command".into());
    }
    if !spec.cwd.starts_with('/') {
        return bad(format!(
            "the working directory {:?} is not absolute",
            spec.cwd
        ));
    }
    if !spec.rootfs.is_dir() {
        return bad(format!(
            "the rootfs {} is not a folder",
            spec.rootfs.display()
        ));
    }
    if let Some(m) = spec
        .mounts
        .iter()
        .find(|m| !Path::new(&m.target).is_absolute())
    {
        return bad(format!("the mount target {:?} is not absolute", m.target));
    }
    Ok(())
}

fn check_mapped(mapping: &IdMapping, ids: &Ids) -> Result<(), SandboxError> {
    let gids_ok = std::iter::once(ids.gid)
        .chain(ids.groups.iter().copied())
        .all(|g| mapping.host_gid(g).is_some());
    if mapping.host_uid(ids.uid).is_some() && gids_ok {
        return Ok(());
    }
    let fix = if mapping.is_single() {
        "without a subordinate ID range only root (0:0) exists in a step; add a range to /etc/subuid and /etc/subgid (see the warning above)"
    } else {
        "the subordinate ID range in /etc/subuid and /etc/subgid is too small; give it 65536 IDs"
    };
    Err(SandboxError::Unmapped {
        uid: ids.uid,
        gid: ids.gid,
        fix: fix.into(),
    })
}
