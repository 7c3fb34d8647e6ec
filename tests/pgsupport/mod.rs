//! A real PostgreSQL per test, from Debian's `postgresql` package: `initdb`
//! and `pg_ctl` from /usr/lib/postgresql/<newest>/bin on a temporary
//! folder, a free port on loopback, and the unix socket in that folder.
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! server runs as `nobody`, in a folder `nobody` owns.
//!
//! A server never outlives its test process: a watchdog (a shell in its
//! own process group, so a Ctrl-C to the test leaves it running) waits
//! for the end of a pipe only the test process holds, and when the test
//! ends in any way (drop, exit with the server in a static, kill -9) it
//! stops the server and removes its folder. Each folder also names its
//! test process in `owner`, so a server whose watchdog went too is
//! stopped by the next test that starts one.
#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The superuser `initdb` makes; it logs in without a password (trust).
pub const USER: &str = "dockless";

/// The folder name's prefix, under the temporary folder.
const PREFIX: &str = "dockless-pg";
/// The file in each folder naming the test process that owns it.
const OWNER: &str = "owner";

pub struct Postgres {
    /// Holds data/, the socket and the log; removed on drop.
    dir: tempfile::TempDir,
    /// Stops the server when its stdin (the pipe's other end, here) closes.
    watchdog: Option<std::process::Child>,
    bin: PathBuf,
    pub port: u16,
    /// Server TLS (ssl=on) with this certificate and key, when set.
    tls: Option<(PathBuf, PathBuf)>,
    /// The uid/gid the server runs as when the tests run as root.
    run_as: Option<(u32, u32)>,
}

/// The newest PostgreSQL installed by Debian's packages.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e} (apt-get install postgresql)", root.display()))
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
}

/// `nobody`'s uid and gid, when this process is root.
fn unprivileged_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("nobody").unwrap();
    // SAFETY: a valid C string; the result is read at once, before any other getpw* call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no user nobody to run PostgreSQL as");
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some((uid, gid))
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.unwrap();
        std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid)).unwrap();
    }
}

impl Postgres {
    /// initdb + start, plain TCP.
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    /// initdb + start with `ssl = on`, serving `cert` and `key`.
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        Self::start_with(Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> Postgres {
        let run_as = unprivileged_user();
        let bin = bin_dir();
        stop_orphans(&bin, run_as);
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir().unwrap();
        std::fs::write(dir.path().join(OWNER), process_identity(std::process::id())).unwrap();
        let mut pg = Postgres {
            dir,
            watchdog: None,
            bin,
            port: free_port(),
            tls: None,
            run_as,
        };
        if let Some((cert, key)) = tls {
            // PostgreSQL wants the key readable by its own user alone.
            let (c, k) = (
                pg.dir.path().join("server.crt"),
                pg.dir.path().join("server.key"),
            );
            std::fs::copy(cert, &c).unwrap();
            std::fs::copy(key, &k).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
            pg.tls = Some((c, k));
        }
        if let Some(ids) = run_as {
            chown_tree(pg.dir.path(), ids);
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                USER,
                "-A",
                "trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.watchdog = Some(pg.spawn_watchdog());
        pg.start_server();
        pg
    }

    /// The shell that stops the server and removes its folder once this
    /// process lets go of its stdin (or is gone).
    fn spawn_watchdog(&self) -> std::process::Child {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"cat >/dev/null; "$0" -D "$1" -m immediate -w stop; rm -rf "$2""#)
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data())
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.spawn().unwrap()
    }

    /// The watchdog's pid (tests of the watchdog kill it).
    pub fn watchdog_pid(&self) -> u32 {
        self.watchdog.as_ref().expect("started").id()
    }

    /// The postmaster's pid, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> u32 {
        postmaster_pid(&self.data()).expect("the server is running")
    }

    /// The folder that holds the data, the socket and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs one of PostgreSQL's programs as the server's user; panics with
    /// its output when it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
    }

    /// Starts the server on the same data and port (after `stop`).
    pub fn start_server(&self) {
        let mut options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        if let Some((cert, key)) = &self.tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        let data = self.data().display().to_string();
        let log = self.log_path().display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        );
    }

    /// Stops the server at once, as a crash would (`-m immediate`).
    pub fn stop(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// Makes a database and returns its URL (plain TCP, no TLS).
    pub fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        let socket = self.dir.path().display().to_string();
        self.run("createdb", &["-h", &socket, "-p", &port, "-U", USER, name]);
        format!(
            "postgres://{USER}@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = stop_command(&self.bin, &self.data(), self.run_as).status();
        // Closing its stdin lets the watchdog go (it finds nothing to stop).
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// `pg_ctl stop -m immediate` of the server on `data`, quietly, as its user.
fn stop_command(bin: &Path, data: &Path, run_as: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bin.join("pg_ctl"));
    cmd.arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// `pid` and its start time (field 22 of /proc/PID/stat): a reused pid
/// is another process.
fn process_identity(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count after it.
    let started = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .unwrap_or("gone");
    format!("{pid} {started}")
}

fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Stops the servers (and removes the folders) of test processes that are
/// gone and whose watchdogs went with them. Folders without an `owner`
/// file are another kind of run's, and left alone.
fn stop_orphans(bin: &Path, run_as: Option<(u32, u32)>) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let named = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX));
        let Ok(owner) = std::fs::read_to_string(dir.join(OWNER)) else {
            continue;
        };
        let Some(pid) = owner.split_whitespace().next().and_then(|p| p.parse().ok()) else {
            continue;
        };
        if !named || process_identity(pid) == owner {
            continue;
        }
        let _ = stop_command(bin, &dir.join("data"), run_as).status();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
