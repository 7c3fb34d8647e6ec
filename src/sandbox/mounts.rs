//! The step's root: the rootfs bind-mounted on itself and made `/` with
//! `pivot_root`, then `/proc`, `/sys`, a minimal `/dev`, the host's
//! `resolv.conf` and `hosts`, and the spec's mounts.
//!
//! Host paths are opened before `pivot_root`, while this process still has
//! the host user's file access (so a cache under a 0700 home is reachable);
//! every path inside the rootfs is created and mounted on after it, so a
//! hostile symlink in the image resolves inside the rootfs, never on the host.
//! Mount points that had to be created are removed again afterwards, so they
//! never reach the layer.

use super::protocol::{failed, Failure, Stage};
use super::spec::{Mount, MountKind, Network, Overlay, Spec, TreeRoot};
use super::user::resolve_in_root;
use rustix::mount::{
    mount, mount_bind, mount_bind_recursive, mount_change, mount_remount, unmount, MountFlags,
    MountPropagationFlags, UnmountFlags,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Kernel knobs a step may read but not change (Docker's list, trimmed).
const READ_ONLY_PROC: [&str; 4] = ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"];
/// Files that leak host state; hidden under /dev/null.
const MASKED_PROC: [&str; 3] = ["/proc/kcore", "/proc/keys", "/proc/timer_list"];

/// Host files and folders, opened before leaving the host's root.
struct HostSources {
    sys: OwnedFd,
    devices: Vec<(&'static str, OwnedFd)>,
    resolv_conf: Option<OwnedFd>,
    hosts: Option<OwnedFd>,
    /// One per spec mount.
    binds: Vec<Source>,
}

/// A spec mount's host side, opened before leaving the host's root.
enum Source {
    /// A file or folder (and whether it is a folder).
    Path(OwnedFd, bool),
    Overlay(OverlayFds),
    /// A tmpfs.
    None,
}

/// Where a tree is mounted while its `source` is bound onto the target:
/// in the step's own `/dev` (a tmpfs), so it never touches the rootfs.
const TREE_STAGING: &str = "/dev/.dockless-tree";

fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::{open, Mode, OFlags};
    Ok(open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?)
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn open_sources(spec: &Spec) -> Result<HostSources, Failure> {
    let fail = |what: String| failed(Stage::Mount, what);
    let sys = open_path(Path::new("/sys")).map_err(fail("opening /sys".into()))?;
    let mut devices = Vec::new();
    for name in DEVICES {
        let path = Path::new("/dev").join(name);
        let fd = open_path(&path).map_err(fail(format!("opening {}", path.display())))?;
        devices.push((name, fd));
    }
    let mut binds = Vec::new();
    for m in &spec.mounts {
        let open = |source: &Path| {
            let what = format!("opening {} for the mount on {}", source.display(), m.target);
            let fd = open_path(source).map_err(fail(what))?;
            Ok::<_, Failure>(Source::Path(fd, source.is_dir()))
        };
        binds.push(match &m.kind {
            MountKind::Bind { source, .. } => open(source)?,
            MountKind::Tree {
                root: TreeRoot::Dir(dir),
                ..
            } => open(dir)?,
            MountKind::Tree {
                root: TreeRoot::Overlay(layers),
                ..
            } => Source::Overlay(OverlayFds::open(layers)?),
            MountKind::Tmpfs { .. } => Source::None,
        });
    }
    Ok(HostSources {
        sys,
        devices,
        resolv_conf: open_path(Path::new("/etc/resolv.conf")).ok(),
        hosts: open_path(Path::new("/etc/hosts")).ok(),
        binds,
    })
}

/// What the set-up added to the rootfs and must take away again.
#[derive(Default)]
pub(crate) struct Root {
    /// Mounts on mount points the set-up created, in the order made: they
    /// must go before the mount points can be removed. (The others go with
    /// the mount namespace; each unmount costs an RCU grace period.)
    mounted: Vec<PathBuf>,
    /// Paths created as mount points, with their parent's times before.
    created: Vec<(PathBuf, Option<[rustix::fs::Timespec; 2]>)>,
}

/// Enters the rootfs as `/` of this mount namespace, recording in `root`
/// what to undo (also when it fails half-way). `become_root` runs once the
/// host paths are open (it drops the host user's file access).
pub(crate) fn enter(
    spec: &Spec,
    probe: bool,
    userns: bool,
    become_root: impl FnOnce() -> Result<(), Failure>,
    root: &mut Root,
) -> Result<(), Failure> {
    let rootfs = &spec.rootfs;
    let root_fail = |what: &str| failed(Stage::Root, format!("{what} {}", rootfs.display()));
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(root_fail("making the mounts private before entering"))?;
    if probe {
        mount("tmpfs", rootfs, "tmpfs", MountFlags::empty(), None)
            .map_err(root_fail("mounting a tmpfs on"))?;
    }
    // An overlay is mounted as the namespace's root (its copy-ups are made
    // with the mounter's credentials), from folders opened before; a plain
    // root is bound onto itself.
    let overlay = match &spec.overlay {
        Some(layers) => {
            let fds = OverlayFds::open(layers)?;
            let parent = rootfs.parent().unwrap_or(Path::new("/"));
            rustix::process::chdir(parent).map_err(root_fail("entering the folder of"))?;
            Some(fds)
        }
        None => {
            mount_bind_recursive(rootfs, rootfs).map_err(root_fail("bind-mounting"))?;
            rustix::process::chdir(rootfs).map_err(root_fail("entering"))?;
            None
        }
    };
    let sources = open_sources(spec)?;
    become_root()?;
    if let Some(fds) = overlay {
        let name = rootfs.file_name().unwrap_or_default();
        fds.mount(Path::new(name), userns)?;
        rustix::process::chdir(name).map_err(root_fail("entering the overlay on"))?;
    }
    rustix::process::pivot_root(".", ".").map_err(root_fail("pivot_root into"))?;
    // The host's root now sits on top of ours until it is detached below;
    // paths from "/" already resolve in the rootfs, and /proc can only be
    // mounted while the host's /proc is still visible.
    root.mount_proc()?;
    root.mount_sys(&sources.sys, spec.network)?;
    root.mount_dev(&sources.devices)?;
    for (file, fd) in [
        ("/etc/resolv.conf", &sources.resolv_conf),
        ("/etc/hosts", &sources.hosts),
    ] {
        if let Some(fd) = fd {
            root.bind(fd, Path::new(file), false, true)?;
        }
    }
    for (m, source) in spec.mounts.iter().zip(&sources.binds) {
        root.spec_mount(m, source, userns)?;
    }
    protect_proc(&sources.devices)?;
    rustix::process::chdir("/").map_err(root_fail("re-entering"))?;
    unmount(".", UnmountFlags::DETACH).map_err(root_fail("detaching the host's root from"))?;
    Ok(())
}

impl Root {
    /// Makes sure `path` exists in the rootfs, creating it and missing
    /// parents (recorded, to be removed after the step).
    fn mount_point(&mut self, path: &Path, dir: bool) -> Result<PathBuf, Failure> {
        let fail = |e: std::io::Error| {
            Failure::os(
                Stage::Mount,
                format!("creating the mount point {}", path.display()),
                e,
            )
        };
        // Follows the image's symlinks as the kernel would; we are in the
        // rootfs already, so "/" is its root.
        let real = resolve_in_root(Path::new("/"), &path.to_string_lossy()).map_err(fail)?;
        let mut missing = Vec::new();
        let mut at = real.as_path();
        while std::fs::symlink_metadata(at).is_err() {
            missing.push(at.to_path_buf());
            match at.parent() {
                Some(parent) => at = parent,
                None => break,
            }
        }
        for (i, p) in missing.iter().rev().enumerate() {
            let times = p.parent().and_then(times_of);
            let is_leaf = i + 1 == missing.len();
            if is_leaf && !dir {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(p)
                    .map_err(fail)?;
            } else {
                std::fs::create_dir(p).map_err(fail)?;
            }
            self.created.push((p.clone(), times));
        }
        Ok(real)
    }

    /// Records a mount on `target`, to be taken down after the step if the
    /// set-up created its mount point.
    fn record_mount(&mut self, target: PathBuf) {
        if self.created.iter().any(|(p, _)| target.starts_with(p)) {
            self.mounted.push(target);
        }
    }

    fn mount_proc(&mut self) -> Result<(), Failure> {
        let target = self.mount_point(Path::new("/proc"), true)?;
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        mount("proc", &target, "proc", flags, None)
            .map_err(|e| Failure::os(Stage::Proc, "mounting proc on /proc", e))?;
        self.record_mount(target);
        Ok(())
    }

    fn mount_sys(&mut self, host_sys: &OwnedFd, network: Network) -> Result<(), Failure> {
        let target = self.mount_point(Path::new("/sys"), true)?;
        let what = "mounting /sys read-only".to_string();
        if network == Network::None {
            // The step owns its network namespace, so it may have a sysfs of
            // its own (showing only its `lo`).
            let flags =
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
            mount("sysfs", &target, "sysfs", flags, None).map_err(failed(Stage::Mount, what))?;
        } else {
            mount_bind_recursive(fd_path(host_sys), &target)
                .map_err(failed(Stage::Mount, what.clone()))?;
            read_only_tree(&target).map_err(failed(Stage::Mount, what))?;
        }
        self.record_mount(target);
        Ok(())
    }

    fn mount_dev(&mut self, devices: &[(&'static str, OwnedFd)]) -> Result<(), Failure> {
        let target = self.mount_point(Path::new("/dev"), true)?;
        let tmpfs = |path: &Path, flags: MountFlags, data: &std::ffi::CStr| {
            mount("tmpfs", path, "tmpfs", flags, Some(data)).map_err(failed(
                Stage::Mount,
                format!("mounting a tmpfs on {}", path.display()),
            ))
        };
        tmpfs(
            &target,
            MountFlags::NOSUID | MountFlags::NOEXEC,
            c"mode=755,size=65536k",
        )?;
        self.record_mount(target);
        let create = |what: &str, r: std::io::Result<()>| {
            r.map_err(|e| Failure::os(Stage::Mount, format!("creating {what}"), e))
        };
        for (name, fd) in devices {
            let node = Path::new("/dev").join(name);
            create(&node.to_string_lossy(), std::fs::write(&node, b""))?;
            mount_bind(fd_path(fd), &node)
                .map_err(failed(Stage::Mount, format!("binding {}", node.display())))?;
        }
        create("/dev/shm", std::fs::create_dir("/dev/shm"))?;
        let shm_flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        tmpfs(Path::new("/dev/shm"), shm_flags, c"mode=1777,size=65536k")?;
        create("/dev/pts", std::fs::create_dir("/dev/pts"))?;
        // A private devpts; without it only /dev/ptmx-less programs work,
        // so a kernel that refuses it inside a user namespace is tolerated.
        let pts_flags = MountFlags::NOSUID | MountFlags::NOEXEC;
        let _ = mount(
            "devpts",
            "/dev/pts",
            "devpts",
            pts_flags,
            Some(c"newinstance,ptmxmode=0666,mode=620"),
        );
        for (link, target) in [
            ("/dev/ptmx", "pts/ptmx"),
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
        ] {
            create(link, std::os::unix::fs::symlink(target, link))?;
        }
        Ok(())
    }

    fn bind(
        &mut self,
        fd: &OwnedFd,
        target: &Path,
        dir: bool,
        readonly: bool,
    ) -> Result<(), Failure> {
        let real = self.mount_point(target, dir)?;
        let what = format!("bind-mounting onto {}", target.display());
        mount_bind_recursive(fd_path(fd), &real).map_err(failed(Stage::Mount, what.clone()))?;
        self.record_mount(real.clone());
        if readonly {
            remount_read_only(&real).map_err(failed(Stage::Mount, what))?;
        }
        Ok(())
    }

    fn spec_mount(&mut self, m: &Mount, source: &Source, userns: bool) -> Result<(), Failure> {
        let target = Path::new(&m.target);
        match (&m.kind, source) {
            (MountKind::Bind { readonly, .. }, Source::Path(fd, is_dir)) => {
                self.bind(fd, target, *is_dir, *readonly)
            }
            (MountKind::Tmpfs { size, mode }, _) => {
                let real = self.mount_point(target, true)?;
                let size = size.map(|s| format!(",size={s}")).unwrap_or_default();
                let data =
                    std::ffi::CString::new(format!("mode={mode:o}{size}")).unwrap_or_default();
                let flags = MountFlags::NOSUID | MountFlags::NODEV;
                mount("tmpfs", &real, "tmpfs", flags, Some(data.as_c_str())).map_err(failed(
                    Stage::Mount,
                    format!("mounting a tmpfs on {}", m.target),
                ))?;
                self.record_mount(real);
                Ok(())
            }
            (
                MountKind::Tree {
                    source: sub,
                    readonly,
                    ..
                },
                Source::Path(..) | Source::Overlay(_),
            ) => self.tree(m, source, sub, *readonly, userns),
            (MountKind::Bind { .. } | MountKind::Tree { .. }, _) => Err(Failure::other(
                Stage::Mount,
                format!("mounting onto {}", m.target),
                "its source was not opened",
            )),
        }
    }

    /// Mounts a tree in the staging folder, binds its `sub` path (resolved
    /// inside the tree) onto the target, and takes the tree away again.
    fn tree(
        &mut self,
        m: &Mount,
        source: &Source,
        sub: &str,
        readonly: bool,
        userns: bool,
    ) -> Result<(), Failure> {
        let staging = Path::new(TREE_STAGING);
        let what = |w: &str| format!("{w} for the mount on {}", m.target);
        std::fs::create_dir(staging)
            .map_err(|e| Failure::os(Stage::Mount, what("making a staging folder"), e))?;
        match source {
            Source::Path(fd, _) => mount_bind_recursive(fd_path(fd), staging)
                .map_err(failed(Stage::Mount, what("binding the source")))?,
            Source::Overlay(fds) => fds.mount(staging, userns)?,
            Source::None => {}
        }
        let real = resolve_in_root(staging, sub)
            .map_err(|e| Failure::os(Stage::Mount, what("resolving the source"), e))?;
        let found = std::fs::symlink_metadata(&real);
        let bound = match found {
            Ok(md) => {
                let fd =
                    open_path(&real).map_err(failed(Stage::Mount, what("opening the source")))?;
                self.bind(&fd, Path::new(&m.target), md.is_dir(), readonly)
            }
            Err(e) => Err(Failure::os(
                Stage::Mount,
                format!("the mount on {}: source {sub:?}", m.target),
                e,
            )),
        };
        let _ = unmount(staging, UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(staging);
        bound
    }

    /// Takes the mounts down and removes the mount points the set-up made,
    /// putting their parents' times back; a mount point the step filled stays.
    pub(crate) fn leave(self) {
        for target in self.mounted.iter().rev() {
            let _ = unmount(target, UnmountFlags::DETACH);
        }
        for (path, times) in self.created.iter().rev() {
            let removed = match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir(path).is_ok(),
                Ok(m) if m.is_file() && m.len() == 0 => std::fs::remove_file(path).is_ok(),
                _ => false,
            };
            if let (true, Some(times), Some(parent)) = (removed, times, path.parent()) {
                let _ = rustix::fs::utimensat(
                    rustix::fs::CWD,
                    parent,
                    &rustix::fs::Timestamps {
                        last_access: times[0],
                        last_modification: times[1],
                    },
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                );
            }
        }
    }
}

fn times_of(path: &Path) -> Option<[rustix::fs::Timespec; 2]> {
    let st = rustix::fs::lstat(path).ok()?;
    let ts = |sec: i64, nsec: u64| rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    Some([
        ts(st.st_atime as i64, st.st_atime_nsec as u64),
        ts(st.st_mtime as i64, st.st_mtime_nsec as u64),
    ])
}

/// The mount flags a read-only remount must repeat: inside a user namespace
/// the kernel refuses to drop nosuid, nodev, noexec or the atime flags of a
/// mount that came from outside.
fn kept_flags(path: &Path) -> rustix::io::Result<MountFlags> {
    let kept = 0x1 | 0x2 | 0x4 | 0x8 | 0x400 | 0x800 | 0x1000;
    let st = rustix::fs::statvfs(path)?;
    Ok(MountFlags::from_bits_retain((st.f_flag.bits() & kept) as _))
}

fn remount_read_only(path: &Path) -> rustix::io::Result<()> {
    let flags = kept_flags(path)? | MountFlags::BIND | MountFlags::RDONLY;
    mount_remount(path, flags, "")
}

/// Remounts `top` and every mount below it read-only (a recursive bind
/// brings the host's cgroup and other mounts under /sys along).
fn read_only_tree(top: &Path) -> rustix::io::Result<()> {
    remount_read_only(top)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", top.display());
    // The host's root, not yet detached, lists the same paths again.
    let points: std::collections::BTreeSet<String> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| point.replace("\\040", " "))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    for point in points {
        // Best effort: a mount that vanished or refuses stays as it was,
        // still owned by the host and so not writable by the step.
        let _ = remount_read_only(Path::new(&point));
    }
    Ok(())
}

/// Docker's read-only and masked /proc paths; they matter most with
/// `--isolation=chroot`, where the step's root is the host's root.
fn protect_proc(devices: &[(&'static str, OwnedFd)]) -> Result<(), Failure> {
    for path in READ_ONLY_PROC {
        if Path::new(path).exists() {
            mount_bind(path, path).map_err(failed(Stage::Mount, format!("protecting {path}")))?;
            remount_read_only(Path::new(path))
                .map_err(failed(Stage::Mount, format!("protecting {path}")))?;
        }
    }
    let null = devices
        .iter()
        .find(|(name, _)| *name == "null")
        .map(|(_, fd)| fd);
    for (path, null) in MASKED_PROC.iter().zip(std::iter::repeat(null)) {
        if let (true, Some(null)) = (Path::new(path).exists(), null) {
            mount_bind(fd_path(null), *path)
                .map_err(failed(Stage::Mount, format!("masking {path}")))?;
        }
    }
    Ok(())
}

/// An overlay's folders, opened with the host user's access; the mount
/// names them as `/proc/self/fd/N`, which also keeps its options short.
pub(crate) struct OverlayFds {
    lowers: Vec<OwnedFd>,
    upper: OwnedFd,
    work: OwnedFd,
}

fn open_dir(path: &Path, what: &str) -> Result<OwnedFd, Failure> {
    use rustix::fs::{open, Mode, OFlags};
    open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(failed(
        Stage::Root,
        format!("opening the {what} {}", path.display()),
    ))
}

impl OverlayFds {
    pub(crate) fn open(layers: &Overlay) -> Result<OverlayFds, Failure> {
        Ok(OverlayFds {
            lowers: layers
                .lowers
                .iter()
                .map(|l| open_dir(l, "layer"))
                .collect::<Result<_, _>>()?,
            upper: open_dir(&layers.upper, "upper folder")?,
            work: open_dir(&layers.work, "overlay work folder")?,
        })
    }

    /// Mounts the overlay on `target`: a plain diff in the upper folder (no
    /// index, metacopy or redirects), with `user.` xattrs in a user namespace.
    pub(crate) fn mount(&self, target: &Path, userns: bool) -> Result<(), Failure> {
        let lowers: Vec<String> = self.lowers.iter().map(fd_path).collect();
        // userxattr turns redirects off itself and refuses redirect_dir=off.
        let extra = if userns {
            ",userxattr"
        } else {
            ",redirect_dir=off"
        };
        let data = format!(
            "lowerdir={},upperdir={},workdir={},index=off,metacopy=off{extra}",
            lowers.join(":"),
            fd_path(&self.upper),
            fd_path(&self.work),
        );
        let data = std::ffi::CString::new(data).unwrap_or_default();
        mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(failed(
            Stage::Root,
            format!("mounting the layers as an overlay on {}", target.display()),
        ))
    }
}

/// Mounts a two-layer overlay in the folder `dir` (open) and checks that a
/// whiteout device and an opaque folder hide the lower files.
pub(crate) fn probe_overlay(dir: &OwnedFd, userns: bool) -> Result<(), Failure> {
    use crate::rootfs::disk::OpaqueXattr;
    let base = Path::new(&fd_path(dir)).to_path_buf();
    let fail = |what: &'static str| move |e: std::io::Error| Failure::os(Stage::Disk, what, e);
    for sub in ["lower/dir", "upper/dir", "work", "merged"] {
        std::fs::create_dir_all(base.join(sub)).map_err(fail("making the probe's folders"))?;
    }
    for file in ["lower/kept", "lower/gone", "lower/dir/hidden"] {
        std::fs::write(base.join(file), b"").map_err(fail("writing the probe's files"))?;
    }
    use rustix::fs::{makedev, mknodat, FileType, Mode, XattrFlags, CWD};
    mknodat(
        CWD,
        base.join("upper/gone"),
        FileType::CharacterDevice,
        Mode::empty(),
        makedev(0, 0),
    )
    .map_err(|e| Failure::os(Stage::Disk, "making a whiteout device", e))?;
    let xattr = if userns {
        OpaqueXattr::User
    } else {
        OpaqueXattr::Trusted
    };
    rustix::fs::setxattr(
        base.join("upper/dir"),
        xattr.name(),
        b"y",
        XattrFlags::empty(),
    )
    .map_err(|e| Failure::os(Stage::Disk, "marking a folder opaque", e))?;
    let layers = Overlay {
        lowers: vec![base.join("lower")],
        upper: base.join("upper"),
        work: base.join("work"),
    };
    OverlayFds::open(&layers)?.mount(&base.join("merged"), userns)?;
    let seen = |p: &str| base.join("merged").join(p).symlink_metadata().is_ok();
    if seen("kept") && !seen("gone") && !seen("dir/hidden") {
        Ok(())
    } else {
        Err(Failure::other(
            Stage::Disk,
            "checking an overlay's whiteouts",
            "the overlay shows files its whiteouts should hide",
        ))
    }
}
