//! Turns a failed set-up into its likely cause and the fix, from the
//! kernel's knobs (BuildKit's rootless guide lists the same culprits).

use super::error::SandboxError;
use super::protocol::{Failure, Stage};

fn sysctl(name: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|v| v.trim().to_string())
}

const CHROOT_HINT: &str =
    "or, when dockless runs as root inside a throwaway container, pass --isolation=chroot";

/// Whether this process runs inside a container (Docker, Podman, Kubernetes).
pub fn in_container() -> bool {
    std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// A cause and fix when a kernel setting forbids user namespaces.
fn knob_blocks_userns(euid: u32) -> Option<(String, String)> {
    if sysctl("user.max_user_namespaces").as_deref() == Some("0") {
        return Some((
            "user.max_user_namespaces is 0".into(),
            format!("`sysctl -w user.max_user_namespaces=15000` (and the same line in /etc/sysctl.d/), {CHROOT_HINT}"),
        ));
    }
    if euid != 0 && sysctl("kernel.unprivileged_userns_clone").as_deref() == Some("0") {
        return Some((
            "kernel.unprivileged_userns_clone is 0 (Debian 10 and older)".into(),
            "`sysctl -w kernel.unprivileged_userns_clone=1` (and the same line in /etc/sysctl.d/)"
                .into(),
        ));
    }
    if euid != 0 && sysctl("kernel.apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some((
            "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns is 1, as on Ubuntu 23.10 and later)".into(),
            "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (and the same line in /etc/sysctl.d/), \
             or an AppArmor profile for dockless that allows `userns,`".into(),
        ));
    }
    None
}

fn no_userns(cause: String, fix: String) -> SandboxError {
    SandboxError::NoUserNamespaces { cause, fix }
}

/// The error for a set-up that failed in the helper.
pub(crate) fn explain(failure: &Failure) -> SandboxError {
    let euid = rustix::process::geteuid().as_raw();
    let errno = failure.errno.unwrap_or(0);
    let denied = matches!(errno, libc::EPERM | libc::EACCES);
    match failure.stage {
        Stage::UserNamespace => {
            if let Some((cause, fix)) = knob_blocks_userns(euid) {
                return no_userns(cause, fix);
            }
            let (cause, fix) = match errno {
                libc::ENOSPC => (
                    "the limit of user namespaces (user.max_user_namespaces) is reached".to_string(),
                    format!("raise it with `sysctl -w user.max_user_namespaces=15000`, {CHROOT_HINT}"),
                ),
                libc::EINVAL | libc::ENOSYS => (
                    "this kernel was built without user namespaces (CONFIG_USER_NS)".into(),
                    format!("use a kernel with CONFIG_USER_NS=y, {CHROOT_HINT}"),
                ),
                _ if in_container() => (
                    format!("this container forbids unshare(CLONE_NEWUSER) ({})", failure.detail),
                    format!("run the container with `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`, {CHROOT_HINT}"),
                ),
                _ => (
                    format!("unshare(CLONE_NEWUSER) failed: {}", failure.detail),
                    format!("check the seccomp or LSM policy that confines dockless, {CHROOT_HINT}"),
                ),
            };
            no_userns(cause, fix)
        }
        Stage::IdMap | Stage::Namespaces | Stage::Root | Stage::Mount if denied => {
            match knob_blocks_userns(euid) {
                Some((cause, fix)) => no_userns(cause, fix),
                None => setup(failure, ""),
            }
        }
        Stage::Proc if denied => match knob_blocks_userns(euid) {
            Some((cause, fix)) => no_userns(cause, fix),
            None => setup(
                failure,
                "; this machine's /proc is partly hidden (as in a Docker or Kubernetes container), so a step cannot get a /proc of its own. \
                 Run the container with `--security-opt systempaths=unconfined` (Kubernetes: `procMount: Unmasked`), \
                 or, as root inside a throwaway container, pass --isolation=chroot",
            ),
        },
        Stage::IdMap => setup(
            failure,
            "; /etc/subuid and /etc/subgid must give this user the range, and newuidmap and \
             newgidmap must be setuid root (package uidmap)",
        ),
        Stage::Exec => SandboxError::Exec {
            what: failure.what.clone(),
            detail: failure.detail.clone(),
        },
        Stage::Disk => SandboxError::Disk {
            what: failure.what.clone(),
            detail: failure.detail.clone(),
        },
        _ => setup(failure, ""),
    }
}

fn setup(failure: &Failure, hint: &str) -> SandboxError {
    SandboxError::Setup {
        what: failure.what.clone(),
        detail: format!("{}{hint}", failure.detail),
    }
}
