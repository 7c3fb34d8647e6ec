//! What a step is: the command, its root, user, mounts and network
//! ([`Spec`]), how it is isolated ([`Isolation`]) and how it ended
//! ([`Outcome`]).

use super::user::ResolvedUser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// One step: what runs, where, as whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The step's root filesystem on the host, owned as the mapping says
    /// (container root is [`IdMapping::host_uid`]`(0)`).
    pub rootfs: PathBuf,
    /// The command, already through `SHELL` for the shell form.
    pub argv: Vec<String>,
    /// `KEY=VALUE`; `PATH` defaults to [`DEFAULT_PATH`].
    pub env: Vec<String>,
    /// Absolute, inside the rootfs; created (as root, 0755) when missing.
    pub cwd: String,
    pub user: Ids,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub network: Network,
    /// Kills the step, and all it started, after this long.
    pub timeout: Option<Duration>,
    /// When set, `rootfs` is an empty folder on which these layers are
    /// mounted as an overlay (writes go to the upper folder) instead of a
    /// root on disk.
    pub overlay: Option<Overlay>,
}

/// An overlayfs root: layer folders in overlay form (see `rootfs::disk`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    /// Top first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl Spec {
    /// A root step running `argv` in `/` of `rootfs`, host network.
    pub fn new(rootfs: impl Into<PathBuf>, argv: &[&str]) -> Spec {
        Spec {
            rootfs: rootfs.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            cwd: "/".into(),
            user: Ids::default(),
            hostname: "dockless".into(),
            mounts: Vec::new(),
            network: Network::Host,
            timeout: None,
            overlay: None,
        }
    }
}

/// The step's IDs inside its user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl From<&ResolvedUser> for Ids {
    fn from(u: &ResolvedUser) -> Ids {
        Ids {
            uid: u.uid,
            gid: u.gid,
            groups: u.groups.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the rootfs; created for the step when missing
    /// and removed after it if still empty.
    pub target: String,
    pub kind: MountKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host file or folder (a cache mount, a secret, a bind from a stage).
    Bind {
        source: PathBuf,
        readonly: bool,
    },
    Tmpfs {
        size: Option<u64>,
        mode: u32,
    },
    /// `source` (resolved inside the tree, symlinks too) of a tree of
    /// layers (a stage or an image) or of a folder; writes to a writable
    /// one go to its throwaway upper folder or copy.
    Tree {
        root: TreeRoot,
        source: String,
        readonly: bool,
    },
}

/// What a [`MountKind::Tree`] shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeRoot {
    Overlay(Overlay),
    Dir(PathBuf),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// The host's network namespace (Docker's default for RUN).
    #[default]
    Host,
    /// A namespace of its own with only `lo`, up.
    None,
}

/// `--isolation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// A user namespace whenever one can be made (also as root, also in a
    /// container); when there is none and dockless is root, chroot with a
    /// warning; otherwise an error naming the fix.
    #[default]
    Auto,
    /// A user namespace or an error.
    Userns,
    /// No user namespace, as the host's root.
    Chroot,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Isolation::Auto),
            "userns" | "rootless" => Ok(Isolation::Userns),
            "chroot" => Ok(Isolation::Chroot),
            _ => Err(format!(
                "--isolation {s:?}: expected auto, userns or chroot"
            )),
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
    TimedOut(Duration),
}

impl Outcome {
    pub fn success(&self) -> bool {
        *self == Outcome::Exited(0)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(code) => write!(f, "exit status {code}"),
            Outcome::Signaled(signal) => write!(f, "killed by signal {signal}"),
            Outcome::TimedOut(after) => write!(f, "killed after the run timeout ({after:?})"),
        }
    }
}
