//! Helpers for tests/sandbox.rs: running one of its ignored tests in another
//! setting (as another user, in a user namespace, without a capability),
//! users created for a test, finding leftover processes, and a busybox
//! rootfs (also used by benches/sandbox_start.rs).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

const DIR_VAR: &str = "DOCKLESS_SANDBOX_TEST_DIR";
const BUSYBOX: &str = "/bin/busybox";

/// A busybox rootfs in `dir/rootfs`: every applet as a symlink, a passwd
/// with root and `app` (1000), owned as container root (and `app` its home)
/// through `map` (container ID → host ID).
pub fn busybox_rootfs(dir: &Path, map: &dyn Fn(u32) -> u32) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "root", "tmp", "home/app"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    chown_tree(&root, map(0), map(0));
    std::os::unix::fs::lchown(root.join("home/app"), Some(map(1000)), Some(map(1000))).unwrap();
    root
}

fn chown_tree(root: &Path, uid: u32, gid: u32) {
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.unwrap();
        std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid)).unwrap();
    }
}

/// Runs the ignored test `name` of this test binary through `wrapper`
/// (a command line the binary is appended to), with `dir` as its folder.
pub fn run_inner(wrapper: &mut Command, name: &str, dir: &Path) -> Output {
    let me = std::env::current_exe().unwrap();
    wrapper
        .arg(me)
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {wrapper:?}: {e}"))
}

/// The folder an inner test works in.
pub fn inner_env() -> PathBuf {
    PathBuf::from(std::env::var_os(DIR_VAR).expect("run by an outer test, which sets the folder"))
}

/// How many `sleep <marker>` processes this machine runs.
pub fn sleepers(marker: &str) -> usize {
    let wanted = format!("sleep\0{marker}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
        .count()
}

/// /etc/passwd, /etc/subuid and /etc/subgid are edited by one test at a time.
static USERS: Mutex<()> = Mutex::new(());

/// A user made for one test, with a home the sandbox's root can enter,
/// removed (with its subordinate ranges) when dropped.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    _home_dir: tempfile::TempDir,
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn id(flag: &str, name: &str) -> u32 {
    let out = Command::new("id").args([flag, name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Drops the user's lines from /etc/subuid and /etc/subgid, then adds
/// `start:65536` when given.
fn set_subordinate_range(name: &str, start: Option<u32>) {
    for file in ["/etc/subuid", "/etc/subgid"] {
        let old = std::fs::read_to_string(file).unwrap_or_default();
        let mut kept: String = old
            .lines()
            .filter(|l| l.split(':').next() != Some(name))
            .map(|l| format!("{l}\n"))
            .collect();
        if let Some(start) = start {
            kept.push_str(&format!("{name}:{start}:65536\n"));
        }
        // Renamed into place: a build of another test may be running
        // newuidmap, which must never read a half-written file.
        let next = format!("{file}.dockless-test");
        std::fs::write(&next, kept).unwrap();
        std::fs::rename(&next, file).unwrap();
    }
}

impl TestUser {
    pub fn create(name: &str, subordinate_start: Option<u32>) -> TestUser {
        let _guard = USERS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(name).output();
        sh(Command::new("useradd").args([
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
            "-K",
            "SUB_UID_COUNT=0",
            "-K",
            "SUB_GID_COUNT=0",
            name,
        ]));
        set_subordinate_range(name, subordinate_start);
        let (uid, gid) = (id("-u", name), id("-g", name));
        let home_dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(home_dir.path(), Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(home_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        TestUser {
            name: name.into(),
            uid,
            gid,
            home: home_dir.path().to_path_buf(),
            _home_dir: home_dir,
        }
    }

    /// A command line that runs what is appended to it as this user.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--"])
            .env("HOME", &self.home);
        cmd
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _guard = USERS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
        set_subordinate_range(&self.name, None);
        // The rootfs holds files owned by the user's subordinate IDs.
        let _ = Command::new("rm").arg("-rf").arg(&self.home).output();
    }
}

/// A command that runs its arguments in a user namespace whose
/// `max_user_namespaces` is 0, where no further namespace can be made.
pub fn without_user_namespaces() -> Command {
    let mut unshare = Command::new("unshare");
    unshare.args([
        "--user",
        "--map-root-user",
        "--",
        "sh",
        "-c",
        "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"",
        "sh",
    ]);
    unshare
}
