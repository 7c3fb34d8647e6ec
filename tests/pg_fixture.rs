//! The test PostgreSQL (tests/pgsupport) never outlives its test process:
//! a test killed with `kill -9` (a timeout, say) takes its server with it,
//! and a server left behind anyway is stopped by the next test's start.
//!
//! Each case runs this binary again as a helper process that starts a
//! server, says which, and waits to be killed.
mod pgsupport;

use pgsupport::Postgres;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "DOCKLESS_TEST_PG_HELPER";

/// What the helper started.
struct Started {
    postmaster: u32,
    watchdog: u32,
    dir: PathBuf,
}

/// The helper: starts a server, prints its pids and folder, then waits.
#[test]
#[ignore = "run by the other tests of this file"]
fn helper_starts_a_server_and_waits() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let pg = Postgres::start();
    println!(
        "STARTED {} {} {}",
        pg.postmaster_pid(),
        pg.watchdog_pid(),
        pg.dir().display()
    );
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn spawn_helper() -> (Child, Started) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_starts_a_server_and_waits",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("STARTED ") {
            let mut f = rest.splitn(3, ' ');
            let started = Started {
                postmaster: f.next().unwrap().parse().unwrap(),
                watchdog: f.next().unwrap().parse().unwrap(),
                dir: PathBuf::from(f.next().unwrap()),
            };
            return (child, started);
        }
    }
    panic!(
        "the helper exited before starting a server: {:?}",
        child.wait()
    );
}

/// `pid` is a live process (not gone, not a zombie nobody reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.split_whitespace().next()?.to_string();
            Some(state != "Z")
        })
        .unwrap_or(false)
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn a_test_killed_with_kill_9_takes_its_server_with_it() {
    let (mut helper, started) = spawn_helper();
    assert!(alive(started.postmaster));
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert!(
        wait_gone(started.postmaster, Duration::from_secs(30)),
        "postmaster {} outlived its test",
        started.postmaster
    );
    assert!(wait_gone(started.watchdog, Duration::from_secs(30)));
    assert!(!started.dir.exists(), "{} is left", started.dir.display());
}

#[test]
fn a_server_left_behind_is_stopped_by_the_next_start() {
    let (mut helper, started) = spawn_helper();
    // The watchdog is lost too (its process group: the shell and its cat).
    // SAFETY: kill has no memory-safety preconditions.
    let killed = unsafe { libc::kill(-(started.watchdog as i32), libc::SIGKILL) };
    assert_eq!(killed, 0, "{}", std::io::Error::last_os_error());
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert!(wait_gone(started.watchdog, Duration::from_secs(30)));
    assert!(alive(started.postmaster), "left behind, as before the fix");

    let _next = Postgres::start();
    assert!(
        wait_gone(started.postmaster, Duration::from_secs(30)),
        "postmaster {} left behind by a killed test still runs",
        started.postmaster
    );
    assert!(!started.dir.exists(), "{} is left", started.dir.display());
}
