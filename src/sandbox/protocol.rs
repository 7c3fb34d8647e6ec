//! What dockless and its sandbox helper say to each other over the socket
//! that is the helper's stdin: the request as one JSON document (the parent
//! then shuts its side for writing), and reports back as JSON lines. Only one
//! process writes reports at a time: init while it lives, the helper after.

use super::idmap::IdMapping;
use super::spec::Spec;
use crate::rootfs::disk::{Done, Task};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

/// The hidden subcommand that runs the helper.
pub const HELPER_ARG: &str = "__sandbox";

/// What the helper is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Job {
    Step(Request),
    /// A filesystem task in the user namespace only (no mounts, no command).
    Disk {
        task: Task,
        mode: Mode,
    },
    /// Whether an overlay can be mounted, with its whiteouts, in `dir`.
    OverlayProbe {
        dir: PathBuf,
        mode: Mode,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    pub spec: Spec,
    pub mode: Mode,
    /// Set everything up, run nothing: tells whether the sandbox works here.
    pub probe: bool,
}

/// How a step is isolated, once `Isolation::Auto` is decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// A user namespace with this mapping, plus mount, PID, IPC and UTS.
    Userns(IdMapping),
    /// No user namespace: as this machine's root, with the other namespaces
    /// when the kernel allows them, else a plain chroot.
    Chroot,
}

/// Which part of the set-up failed, for the diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Stage {
    UserNamespace,
    IdMap,
    Namespaces,
    Root,
    Proc,
    Mount,
    Credentials,
    Exec,
    Helper,
    /// A [`Job::Disk`] task or the overlay probe.
    Disk,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub stage: Stage,
    /// What was being done, e.g. "mounting proc on /proc".
    pub what: String,
    pub errno: Option<i32>,
    pub detail: String,
}

impl Failure {
    pub fn os(stage: Stage, what: impl Into<String>, error: impl Into<std::io::Error>) -> Failure {
        let error = error.into();
        Failure {
            stage,
            what: what.into(),
            errno: error.raw_os_error(),
            detail: error.to_string(),
        }
    }

    pub fn other(stage: Stage, what: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            stage,
            what: what.into(),
            errno: None,
            detail: detail.into(),
        }
    }
}

/// `map_err` for a system call: the failure of `what` at `stage`.
pub(crate) fn failed<E: Into<std::io::Error>>(
    stage: Stage,
    what: impl Into<String>,
) -> impl FnOnce(E) -> Failure {
    let what = what.into();
    move |e| Failure::os(stage, what, e)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Report {
    Exited(i32),
    Signaled(i32),
    TimedOut { after_ms: u64 },
    Failed(Failure),
    Warning(String),
    Disk(Done),
}

/// Writes reports to the parent; a broken channel is ignored (the parent is
/// gone, and death signals will follow).
pub(crate) struct Reporter {
    channel: std::os::unix::net::UnixStream,
}

impl Reporter {
    pub fn new(channel: std::os::unix::net::UnixStream) -> Reporter {
        Reporter { channel }
    }

    pub fn send(&mut self, report: &Report) {
        if let Ok(mut line) = serde_json::to_vec(report) {
            line.push(b'\n');
            let _ = self.channel.write_all(&line);
        }
    }
}
