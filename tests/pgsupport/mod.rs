//! A real PostgreSQL per test, from Debian's `postgresql` package: `initdb`
//! and `pg_ctl` from /usr/lib/postgresql/<newest>/bin on a temporary
//! folder, a free port on loopback, and the unix socket in that folder.
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! server runs as `nobody`, in a folder `nobody` owns.
#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The superuser `initdb` makes; it logs in without a password (trust).
pub const USER: &str = "dockless";

pub struct Postgres {
    /// Holds data/, the socket and the log; removed on drop.
    dir: tempfile::TempDir,
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
        let dir = tempfile::Builder::new()
            .prefix("dockless-pg")
            .tempdir()
            .unwrap();
        let run_as = unprivileged_user();
        let mut pg = Postgres {
            dir,
            bin: bin_dir(),
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
        pg.start_server();
        pg
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
        let data = self.data();
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
