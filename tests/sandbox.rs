//! The RUN sandbox (src/sandbox) on a busybox rootfs made at test time from
//! Debian's busybox-static: commands, exit codes, env/cwd/user, isolation
//! from the host's files and processes, cleanup, timeout, network=none,
//! and rootless runs as users the test creates.

use dockless::sandbox::{
    Captured, IdMapping, Ids, Isolation, Mode, Mount, MountKind, Network, Outcome, Sandbox,
    SandboxError, Spec,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

mod sandbox_support;
use sandbox_support::{
    busybox_rootfs, inner_env, run_inner, sleepers, without_user_namespaces, TestUser,
};

fn sandbox(isolation: Isolation) -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_dockless"), isolation)
}

fn mapping(sandbox: &Sandbox) -> IdMapping {
    match sandbox.check().expect("the sandbox works on this machine") {
        Mode::Userns(m) => m.clone(),
        Mode::Chroot => panic!("expected a user namespace"),
    }
}

/// A temp folder the sandbox's root can enter (tempdir makes it 0700).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

struct Fixture {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    rootfs: PathBuf,
}

fn fixture() -> Fixture {
    let sandbox = sandbox(Isolation::Userns);
    let m = mapping(&sandbox);
    let dir = scratch();
    let rootfs = busybox_rootfs(dir.path(), &|id| m.host_uid(id).unwrap());
    Fixture {
        sandbox,
        dir,
        rootfs,
    }
}

impl Fixture {
    fn spec(&self, script: &str) -> Spec {
        Spec::new(&self.rootfs, &["/bin/sh", "-c", script])
    }

    fn run(&self, spec: &Spec) -> Captured {
        self.sandbox.run_captured(spec).expect("the step runs")
    }

    fn sh(&self, script: &str) -> Captured {
        self.run(&self.spec(script))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

#[test]
fn echo_streams_stdout_and_stderr_and_exit_codes_come_back() {
    let f = fixture();
    let out = f.sh("echo hello; echo oops >&2; exit 3");
    assert_eq!(text(&out.stdout), "hello");
    assert_eq!(text(&out.stderr), "oops");
    assert_eq!(out.outcome, Outcome::Exited(3));
    assert!(f.sh("true").outcome.success());
    let killed = f.sh("kill -TERM $$");
    assert_eq!(killed.outcome, Outcome::Signaled(15));
}

#[test]
fn env_cwd_hostname_and_user_are_the_specs() {
    let f = fixture();
    let app = dockless::sandbox::resolve_user(&f.rootfs, "app").unwrap();
    let mut spec = f.spec("echo $GREETING; pwd; id -u; id -g; id -G; hostname; echo $PATH");
    spec.env = vec!["GREETING=hi there".into()];
    spec.cwd = "/srv/app".into();
    spec.user = Ids::from(&app);
    spec.hostname = "builder".into();
    let out = f.run(&spec);
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "hi there",
            "/srv/app",
            "1000",
            "1000",
            "1000 50",
            "builder",
            dockless::sandbox::DEFAULT_PATH
        ]
    );
    // The working directory was created in the rootfs, as root.
    let m = mapping(&f.sandbox);
    let srv = std::fs::metadata(f.rootfs.join("srv/app")).unwrap();
    assert_eq!(srv.uid(), m.host_uid(0).unwrap());
}

#[test]
fn writes_land_in_the_rootfs_with_container_owners_mapped() {
    let f = fixture();
    let out = f.sh("echo data > /root/file && mkdir /made && chown 1000:50 /made && rm /etc/group");
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    let m = mapping(&f.sandbox);
    assert_eq!(
        std::fs::read_to_string(f.rootfs.join("root/file")).unwrap(),
        "data\n"
    );
    let made = std::fs::metadata(f.rootfs.join("made")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (m.host_uid(1000).unwrap(), m.host_gid(50).unwrap())
    );
    assert!(!f.rootfs.join("etc/group").exists());
}

#[test]
fn the_step_sees_only_its_own_processes() {
    let f = fixture();
    let out = f.sh("ps -o pid,comm; echo --; ls /proc");
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let (ps, proc_listing) = stdout.split_once("--").unwrap();
    let processes: Vec<(u32, &str)> = ps
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (pid, comm) = l.trim().split_once(' ')?;
            Some((pid.parse().ok()?, comm.trim()))
        })
        .collect();
    // init, sh, ps and nothing of the host's.
    assert_eq!(
        processes,
        [(1, "dockless"), (2, "sh"), (3, "ps")],
        "{stdout}"
    );
    let proc_pids: Vec<&str> = proc_listing
        .lines()
        .filter(|l| l.parse::<u32>().is_ok())
        .collect();
    assert!(proc_pids.len() <= 3, "{stdout}");
}

#[test]
fn host_files_outside_the_rootfs_cannot_be_reached() {
    let f = fixture();
    let secret = f.dir.path().join("secret");
    std::fs::write(&secret, "host secret").unwrap();
    let victim = f.dir.path().join("victim");
    // Absolute symlinks in the image point into the rootfs, never the host:
    // a way out for reading, and a mount point set to trick the set-up into
    // creating a file on the host.
    std::os::unix::fs::symlink(f.dir.path(), f.rootfs.join("escape")).unwrap();
    std::os::unix::fs::symlink(&victim, f.rootfs.join("etc/resolv.conf")).unwrap();
    let script = format!(
        "cat {s}; cat /escape/secret; cat /proc/1/root{s}; cat ../../../../..{s}; \
         mkdir -p {d} && echo planted > {d}/planted; ls /",
        s = secret.display(),
        d = f.dir.path().display(),
    );
    let out = f.sh(&script);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("host secret"), "{stdout}");
    assert!(
        text(&out.stderr).contains("No such file"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
    assert!(!victim.exists(), "the set-up made a file on the host");
    assert!(
        !f.dir.path().join("planted").exists(),
        "the step wrote on the host"
    );
    // `ls /` lists the rootfs, and the write landed inside it.
    assert!(
        stdout.contains("escape") && stdout.contains("home"),
        "{stdout}"
    );
    let inside = f.rootfs.join(f.dir.path().strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(inside.join("planted")).unwrap(),
        "planted\n"
    );
    assert!(
        !inside.join("victim").exists(),
        "a mount point was left behind"
    );
}

#[test]
fn processes_left_behind_are_killed_when_the_step_ends() {
    let f = fixture();
    let marker = "1000.4242"; // a unique sleep argument to find it by
    let out = f.sh(&format!(
        "sleep {marker} & setsid sleep {marker} & echo started"
    ));
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "started");
    assert_eq!(
        sleepers(marker),
        0,
        "a background process outlived the step"
    );
}

#[test]
fn a_step_over_its_timeout_is_killed_with_everything_it_started() {
    let f = fixture();
    let marker = "1000.4343";
    let mut spec = f.spec(&format!("sleep {marker} & sleep {marker}"));
    spec.timeout = Some(Duration::from_millis(500));
    let out = f.run(&spec);
    assert!(
        matches!(out.outcome, Outcome::TimedOut(_)),
        "{:?}",
        out.outcome
    );
    assert_eq!(sleepers(marker), 0);
}

#[test]
fn network_none_has_only_loopback_and_host_network_is_the_hosts() {
    let f = fixture();
    let interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '";
    let mut spec = f.spec(&format!(
        "{interfaces}; ping -c1 -W1 127.0.0.1 >/dev/null && echo lo-up"
    ));
    spec.network = Network::None;
    let out = f.run(&spec);
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "lo\nlo-up");
    let host = f.sh(interfaces);
    let host_ifaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    assert_eq!(text(&host.stdout).lines().count(), host_ifaces);
}

#[test]
fn dev_proc_sys_and_host_files_are_set_up_then_removed_from_the_rootfs() {
    let f = fixture();
    let etc_mtime = std::fs::metadata(f.rootfs.join("etc")).unwrap().mtime();
    let script = "ls /dev; echo x > /dev/null; head -c 4 /dev/urandom | wc -c; \
                  cat /etc/resolv.conf > /tmp/resolv; \
                  touch /sys/x 2>/dev/null || echo sys-ro; \
                  echo x >> /etc/hosts 2>/dev/null || echo hosts-ro";
    let out = f.sh(script);
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd",
    ] {
        assert!(
            stdout.lines().any(|l| l == dev),
            "no /dev/{dev} in {stdout}"
        );
    }
    assert!(
        stdout.contains("\n4\n") && stdout.contains("sys-ro") && stdout.contains("hosts-ro"),
        "{stdout}"
    );
    let host_resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(
        std::fs::read(f.rootfs.join("tmp/resolv")).unwrap(),
        host_resolv
    );
    for placeholder in ["proc", "sys", "dev", "etc/resolv.conf", "etc/hosts"] {
        assert!(
            !f.rootfs.join(placeholder).exists(),
            "/{placeholder} left in the rootfs"
        );
    }
    assert_eq!(
        std::fs::metadata(f.rootfs.join("etc")).unwrap().mtime(),
        etc_mtime
    );
}

#[test]
fn spec_mounts_bind_host_folders_and_tmpfs() {
    let f = fixture();
    let m = mapping(&f.sandbox);
    let cache = f.dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, m.host_uid(0), m.host_gid(0)).unwrap();
    let config = f.dir.path().join("config");
    std::fs::write(&config, "ro-content\n").unwrap();
    let mut spec = f.spec(
        "echo kept > /var/cache/pkg/file; cat /run/config; echo no > /run/config || echo ro; \
         echo gone > /scratch/file && ls /scratch",
    );
    spec.mounts = vec![
        Mount {
            target: "/var/cache/pkg".into(),
            kind: MountKind::Bind {
                source: cache.clone(),
                readonly: false,
            },
        },
        Mount {
            target: "/run/config".into(),
            kind: MountKind::Bind {
                source: config,
                readonly: true,
            },
        },
        Mount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs {
                size: Some(1 << 20),
                mode: 0o1777,
            },
        },
    ];
    let out = f.run(&spec);
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ro-content\nro\nfile");
    assert_eq!(
        std::fs::read_to_string(cache.join("file")).unwrap(),
        "kept\n"
    );
    for placeholder in ["var", "run", "scratch"] {
        assert!(
            !f.rootfs.join(placeholder).exists(),
            "/{placeholder} left in the rootfs"
        );
    }
}

#[test]
fn a_set_up_that_fails_half_way_leaves_the_rootfs_as_it_was() {
    let f = fixture();
    std::fs::create_dir(f.rootfs.join("data")).unwrap();
    let file = f.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut spec = f.spec("echo ran > /ran");
    // A file cannot be mounted on a folder: this fails after /proc, /sys,
    // /dev and the host files are mounted.
    spec.mounts = vec![Mount {
        target: "/data".into(),
        kind: MountKind::Bind {
            source: file,
            readonly: true,
        },
    }];
    let err = f.sandbox.run_captured(&spec).unwrap_err();
    assert!(matches!(err, SandboxError::Setup { .. }), "{err:?}");
    assert!(err.to_string().contains("/data"), "{err}");
    for path in ["ran", "proc", "sys", "dev", "etc/resolv.conf", "etc/hosts"] {
        assert!(!f.rootfs.join(path).exists(), "/{path} left in the rootfs");
    }
}

#[test]
fn a_missing_command_is_an_error_naming_it() {
    let f = fixture();
    let err = f
        .sandbox
        .run_captured(&Spec::new(&f.rootfs, &["no-such-tool", "x"]))
        .unwrap_err();
    assert!(matches!(err, SandboxError::Exec { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no-such-tool") && err.to_string().contains("PATH"),
        "{err}"
    );
}

#[test]
fn chroot_isolation_runs_as_the_hosts_root_with_namespaces_when_allowed() {
    let sandbox = sandbox(Isolation::Chroot);
    let dir = scratch();
    let rootfs = busybox_rootfs(dir.path(), &|id| id);
    let marker = "1000.4444";
    let spec = Spec::new(
        &rootfs,
        &[
            "/bin/sh",
            "-c",
            &format!("cat /proc/self/uid_map; ps -o pid | wc -l; sleep {marker} &"),
        ],
    );
    let out = sandbox.run_captured(&spec).unwrap();
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("0          0 4294967295"), "{stdout}");
    assert_eq!(sleepers(marker), 0);
}

/// Without CAP_SYS_ADMIN (as in a default Docker container) `--isolation=chroot`
/// is a plain chroot; what the step leaves running is still killed.
#[test]
fn chroot_isolation_falls_back_to_a_plain_chroot() {
    let dir = scratch();
    let out = run_inner(
        Command::new("setpriv").args(["--bounding-set", "-sys_admin", "--"]),
        "inner_plain_chroot",
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("inner: plain chroot ok"), "{stdout}");
    assert_eq!(sleepers("1000.4545"), 0);
}

#[test]
#[ignore = "run by chroot_isolation_falls_back_to_a_plain_chroot"]
fn inner_plain_chroot() {
    let dir = inner_env();
    let rootfs = busybox_rootfs(&dir, &|id| id);
    let spec = Spec::new(
        &rootfs,
        &["/bin/sh", "-c", "echo in-chroot; ls /; sleep 1000.4545 &"],
    );
    let out = sandbox(Isolation::Chroot).run_captured(&spec).unwrap();
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("in-chroot\nbin"),
        "{}",
        text(&out.stdout)
    );
    println!("inner: plain chroot ok");
}

/// The error comes before anything runs, with the cause and the fix.
#[test]
fn no_user_namespaces_fails_before_running_anything_with_the_fix() {
    let dir = scratch();
    let out = run_inner(
        &mut without_user_namespaces(),
        "inner_no_userns",
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("user.max_user_namespaces is 0"), "{stdout}");
    assert!(
        stdout.contains("sysctl -w user.max_user_namespaces="),
        "{stdout}"
    );
    assert!(!dir.path().join("rootfs/ran").exists(), "the step ran");
    // As root (of that namespace), and without user namespaces, auto
    // isolation runs the step in a chroot instead, with a warning.
    assert!(
        stdout.contains("inner: auto fell back to chroot"),
        "{stdout}"
    );
    assert!(dir.path().join("rootfs/chrooted").exists());
}

#[test]
#[ignore = "run by no_user_namespaces_fails_before_running_anything_with_the_fix"]
fn inner_no_userns() {
    let dir = inner_env();
    let rootfs = busybox_rootfs(&dir, &|_| 0);
    // Not Auto: as root (here, of the test's namespace) Auto falls back to
    // chroot, as shown below.
    let err = sandbox(Isolation::Userns)
        .run_captured(&Spec::new(&rootfs, &["/bin/touch", "/ran"]))
        .unwrap_err();
    assert!(
        matches!(err, SandboxError::NoUserNamespaces { .. }),
        "{err:?}"
    );
    println!("inner: {err}");
    let fallback = sandbox(Isolation::Auto)
        .run_captured(&Spec::new(&rootfs, &["/bin/touch", "/chrooted"]))
        .unwrap();
    assert!(fallback.outcome.success(), "{}", text(&fallback.stderr));
    println!("inner: auto fell back to chroot");
}

/// An unprivileged user with a subordinate range gets 65536 IDs: chown works
/// and lands on the range's host IDs.
#[test]
fn rootless_with_a_subordinate_range() {
    let user = TestUser::create("dlsbx-range", Some(400_000));
    let out = run_inner(&mut user.command(), "inner_rootless", &user.home);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("inner: uid_map 0 UID 1 | 1 400000 65536"),
        "{stdout}"
    );
    assert!(stdout.contains("inner: chown ok"), "{stdout}");
    let made = std::fs::metadata(user.home.join("rootfs/owned")).unwrap();
    assert_eq!((made.uid(), made.gid()), (400_000 + 999, 400_000 + 49));
}

/// Without a range the user is root alone, is told how to add a range, and
/// a step as another user fails before it runs.
#[test]
fn rootless_without_a_range_maps_one_user_and_warns() {
    let user = TestUser::create("dlsbx-single", None);
    let out = run_inner(&mut user.command(), "inner_rootless", &user.home);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("inner: uid_map 0 UID 1\n"), "{stdout}");
    assert!(stdout.contains("inner: chown refused"), "{stdout}");
    assert!(stdout.contains("inner: unmapped user refused"), "{stdout}");
    assert!(stderr.contains("usermod --add-subuids"), "{stderr}");
}

#[test]
#[ignore = "run by the rootless tests, as the user they create"]
fn inner_rootless() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let dir = inner_env();
    let me = rustix::process::getuid().as_raw();
    let sandbox = sandbox(Isolation::Auto);
    let m = mapping(&sandbox);
    let rootfs = busybox_rootfs(&dir, &|_| me);
    let out = sandbox
        .run_captured(&Spec::new(&rootfs, &["/bin/sh", "-c", "cat /proc/self/uid_map; touch /owned; chown 1000:50 /owned && echo chown ok || echo chown refused"]))
        .unwrap();
    assert!(out.outcome.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let map: Vec<String> = stdout
        .lines()
        .take_while(|l| !l.starts_with("chown"))
        .filter(|l| l.trim().starts_with(char::is_numeric))
        .map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace(&format!(" {me} "), " UID ")
        })
        .collect();
    println!("inner: uid_map {}", map.join(" | "));
    println!("inner: {}", stdout.lines().last().unwrap_or_default());
    if m.is_single() {
        let mut spec = Spec::new(&rootfs, &["/bin/true"]);
        spec.user = Ids {
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let err = sandbox.run_captured(&spec).unwrap_err();
        assert!(matches!(err, SandboxError::Unmapped { .. }), "{err:?}");
        println!("inner: unmapped user refused");
    }
}
