//! `dockless serve` under faults (issue 7, parts 3 and 4):
//!
//! - `kill -9` at seeded random points during a burst of signed merged-PR
//!   deliveries, then restarts: every acknowledged delivery (202) is built
//!   exactly once and pushed, and the job store passes `PRAGMA
//!   integrity_check` after every kill;
//! - a full disk under `state_dir` (a small tmpfs, as root): deliveries are
//!   refused with 503 or accepted, and every accepted one is built once
//!   space is freed;
//! - concurrent deliveries of one merge commit make one build;
//! - a registry or git server outage sends the build back to the queue
//!   until it is over;
//! - hostile clients (a 1 MB header, hundreds of headers, a slowloris body,
//!   unsupported content types) are refused while a ping is still answered;
//! - strangers cannot make the server hold more memory than its body
//!   budget (many large unsigned bodies; 2 GB of `[`, with the server's RSS
//!   read from /proc), nor keep a signed delivery waiting by holding every
//!   connection slot with slow bodies (issue 12, items 3, 4 and 6);
//! - a large signed body costs about its size, not a JSON tree of it.
//!
//! `DOCKLESS_FAULTS_SEED=N` picks another kill schedule;
//! `DOCKLESS_FAULTS_TALLY=FILE` appends the counts each test measured to FILE.
mod regsupport;
mod serve_support;

use dockless::serve::jobs::SqliteStore;
use regsupport::{Registry, RegistryCfg};
use serde_json::Value;
use serve_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// xorshift64*: a small seeded generator, so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A value in lo..hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

fn seed() -> u64 {
    std::env::var("DOCKLESS_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0007)
}

fn tally(line: &str) {
    eprintln!("tally: {line}");
    if let Ok(path) = std::env::var("DOCKLESS_FAULTS_TALLY") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The log without ANSI colour codes.
fn plain_log(srv: &Server) -> String {
    let text = srv.log_text();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How many log lines carry `message` for build `id`.
fn log_count(log: &str, message: &str, id: i64) -> usize {
    let field = format!("build_id={id}");
    log.lines()
        .filter(|l| l.contains(message) && l.split_whitespace().any(|w| w == field))
        .count()
}

fn integrity_ok(state: &Path) {
    let store = SqliteStore::open(&state.join("jobs.sqlite")).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

fn running_in_store(state: &Path) -> usize {
    let store = SqliteStore::open(&state.join("jobs.sqlite")).unwrap();
    store.stats().unwrap().running as usize
}

/// Waits until every build the server lists is succeeded or failed.
fn wait_all_finished(srv: &Server, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = get(&srv.addr, "/builds").json()["builds"]
            .as_array()
            .unwrap()
            .clone();
        if list
            .iter()
            .all(|b| matches!(b["status"].as_str(), Some("succeeded") | Some("failed")))
        {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "builds not finished: {list:?}\n{}",
            srv.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Checks a succeeded build of commit `k` against the registry.
fn check_pushed(reg: &Registry, build: &Value, k: usize) {
    assert_eq!(build["status"], "succeeded", "{build}");
    let images = build["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{build}");
    for (img, tag) in images
        .iter()
        .zip([format!("api:2.0.{k}"), format!("worker:0.2.{k}")])
    {
        let reference = img["reference"].as_str().unwrap();
        let digest = reference.rsplit_once('@').unwrap().1;
        reg.verify(&tag, digest, None);
    }
}

fn start(dir: &Path, reg: &Registry, repo: &GitRepo, max_builds: usize, delay: u64) -> Server {
    Server::start(
        dir,
        &ServerCfg {
            max_builds,
            delay_ms: Some(delay),
            ..ServerCfg::new(reg.addr(), repo.url())
        },
    )
}

#[test]
fn kill_9_during_a_burst_builds_every_accepted_delivery_once() {
    const COMMITS: usize = 5;
    const DELIVERIES: usize = 20;
    const KILLS: usize = 4;
    const DELAY_MS: u64 = 250;
    let seed = seed();
    eprintln!("DOCKLESS_FAULTS_SEED={seed}");
    let started = Instant::now();
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let commits = repo.add_commits(1, COMMITS);
    let mut srv = start(dir.path(), &reg, &repo, 2, DELAY_MS);
    let addr = srv.addr.clone();

    // The burst: DELIVERIES distinct delivery ids over COMMITS commits, sent
    // one after another with random gaps. A request the server did not
    // answer (it was dead) is sent again with the same id, as GitHub's
    // "Redeliver" does, until it gets an answer.
    let mut rng = Rng::new(seed);
    let plan: Vec<(String, usize, u64)> = (0..DELIVERIES)
        .map(|i| {
            let k = rng.range(0, COMMITS as u64) as usize;
            (format!("burst-{seed}-{i}"), k, rng.range(10, 200))
        })
        .collect();
    let payloads: Vec<Value> = commits.iter().map(|c| merged_pr(c, c)).collect();
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (plan, sending) = (plan.clone(), sending.clone());
        std::thread::spawn(move || {
            let mut accepted: Vec<(String, usize, i64)> = Vec::new();
            let mut unanswered = 0usize;
            let mut other: Vec<(u16, String)> = Vec::new();
            for (id, k, gap) in plan {
                std::thread::sleep(Duration::from_millis(gap));
                for _ in 0..300 {
                    match try_deliver(&addr, "pull_request", &id, &payloads[k]) {
                        Ok(r) if r.status == 202 => {
                            accepted.push((id.clone(), k, r.json()["build_id"].as_i64().unwrap()));
                            break;
                        }
                        Ok(r) => {
                            other.push((r.status, r.body));
                            break;
                        }
                        Err(_) => {
                            unanswered += 1;
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            }
            sending.store(false, Ordering::SeqCst);
            (accepted, unanswered, other)
        })
    };

    // The kills, at random points of the burst and of the builds it started.
    let mut interrupted = 0;
    for n in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
        srv.kill9();
        interrupted += running_in_store(&srv.state);
        integrity_ok(&srv.state);
        std::thread::sleep(Duration::from_millis(rng.range(0, 400)));
        srv.spawn(Some(DELAY_MS));
        eprintln!(
            "kill {} done; sender still sending: {}",
            n + 1,
            sending.load(Ordering::SeqCst)
        );
    }
    let (accepted, unanswered, other) = sender.join().unwrap();
    assert!(other.is_empty(), "deliveries not accepted: {other:?}");
    assert_eq!(accepted.len(), DELIVERIES);

    let builds = wait_all_finished(&srv, Duration::from_secs(240));
    // Once more: nothing is picked up again after everything finished.
    std::thread::sleep(Duration::from_millis(2500));
    let log = plain_log(&srv);

    // One build per commit: every delivery of a commit got the same build.
    let mut by_commit: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    for (_, k, id) in &accepted {
        by_commit.entry(*k).or_default().insert(*id);
    }
    for (k, ids) in &by_commit {
        assert_eq!(ids.len(), 1, "commit {k} got builds {ids:?}");
    }
    assert_eq!(builds.len(), by_commit.len(), "{builds:?}");
    let mut attempts_total = 0;
    for (k, ids) in &by_commit {
        let id = *ids.iter().next().unwrap();
        let b = get(&srv.addr, &format!("/builds/{id}")).json();
        assert_eq!(b["commit"], commits[*k].as_str());
        check_pushed(&reg, &b, k + 1);
        let attempts = b["attempts"].as_i64().unwrap();
        assert!((1..=1 + KILLS as i64).contains(&attempts), "{b}");
        attempts_total += attempts;
        // Finished exactly once: one "build finished" line across every
        // run of the server, and no start after it.
        assert!(
            log_count(&log, "build finished", id) <= 1,
            "build {id} finished twice\n{log}"
        );
        let starts = log_count(&log, "build started", id);
        assert!(
            starts as i64 <= attempts,
            "build {id}: {starts} starts for {attempts} attempts"
        );
        assert!(b["finished_at"].is_string(), "{b}");
    }
    let after = get(&srv.addr, "/builds").json()["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["attempts"].as_i64().unwrap())
        .sum::<i64>();
    assert_eq!(after, attempts_total, "a finished build ran again");
    srv.kill9();
    integrity_ok(&srv.state);
    tally(&format!(
        "kill9: seed {seed}, {DELIVERIES} deliveries over {} commits, {DELIVERIES} accepted (202), \
         {unanswered} requests unanswered while the server was down (sent again), {KILLS} kill -9, \
         {interrupted} running builds interrupted, {} builds, {} succeeded exactly once, \
         {attempts_total} attempts, integrity_check ok after every kill, {:.0} s",
        by_commit.len(),
        builds.len(),
        builds.iter().filter(|b| b["status"] == "succeeded").count(),
        started.elapsed().as_secs_f64()
    ));
}

#[test]
fn concurrent_deliveries_of_one_commit_build_once() {
    const SENDERS: usize = 8;
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let commits = repo.add_commits(1, 1);
    let srv = start(dir.path(), &reg, &repo, 2, 500);
    let payload = merged_pr(&commits[0], &commits[0]);
    let barrier = Arc::new(Barrier::new(SENDERS));
    let handles: Vec<_> = (0..SENDERS)
        .map(|i| {
            let (addr, payload, barrier) = (srv.addr.clone(), payload.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = deliver(&addr, "pull_request", &format!("same-{i}"), &payload);
                assert_eq!(r.status, 202, "{}", r.body);
                r.json()["build_id"].as_i64().unwrap()
            })
        })
        .collect();
    let ids: BTreeSet<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = *ids.iter().next().unwrap();
    let b = srv.wait_finished(id, Duration::from_secs(120));
    check_pushed(&reg, &b, 1);
    assert_eq!(b["attempts"], 1);
    // Redeliveries of any of them, and a new delivery after the success,
    // still name that build; nothing else was built.
    assert_eq!(
        deliver(&srv.addr, "pull_request", "same-3", &payload).json()["build_id"].as_i64(),
        Some(id)
    );
    assert_eq!(
        deliver(&srv.addr, "pull_request", "same-late", &payload).json()["build_id"].as_i64(),
        Some(id)
    );
    std::thread::sleep(Duration::from_millis(2500));
    let list = get(&srv.addr, "/builds").json();
    assert_eq!(list["builds"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        get(&srv.addr, &format!("/builds/{id}")).json()["attempts"],
        1
    );
    assert_eq!(log_count(&plain_log(&srv), "build finished", id), 1);
    tally(&format!(
        "same commit: {SENDERS} concurrent deliveries + 2 later, 1 build, 1 attempt"
    ));
}

/// Starts a server (1 s first requeue pause) building from `clone_url`,
/// delivers a merged PR of `commit`, and waits until its build is back in the
/// queue "waiting for `what`". Returns the server and the build id.
fn deliver_until_waiting(
    dir: &Path,
    reg: &Registry,
    clone_url: String,
    commit: &str,
    what: &str,
) -> (Server, i64) {
    let srv = Server::start(
        dir,
        &ServerCfg {
            env: vec![("DOCKLESS_REQUEUE_SECS".into(), "1".into())],
            ..ServerCfg::new(reg.addr(), clone_url)
        },
    );
    let r = deliver(&srv.addr, "pull_request", what, &merged_pr(commit, commit));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["build_id"].as_i64().unwrap();
    let waiting = format!("waiting for {what}");
    srv.wait_build(id, Duration::from_secs(60), |b| {
        b["status"] == "queued" && b["error"].as_str().is_some_and(|e| e.contains(&waiting))
    });
    (srv, id)
}

/// The registry goes away before a build pushes: the build goes back to the
/// queue ("waiting for the registry") instead of failing, and completes once
/// the registry is back; nothing accepted is lost.
#[test]
fn registry_outage_requeues_the_build_until_the_registry_is_back() {
    let mut reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let commits = repo.add_commits(1, 1);
    let killed = std::process::Command::new("kill")
        .args(["-9", &reg.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (srv, id) =
        deliver_until_waiting(dir.path(), &reg, repo.url(), &commits[0], "the registry");
    reg.restart();
    let b = srv.wait_finished(id, Duration::from_secs(120));
    check_pushed(&reg, &b, 1);
    let attempts = b["attempts"].as_i64().unwrap();
    assert!(attempts >= 2, "{b}");
    tally(&format!(
        "registry outage: 1 build, {attempts} attempts, succeeded after the registry came back"
    ));
}

/// A `git daemon` serving the folder above `repo` at `git://127.0.0.1:PORT/`;
/// killed on drop.
struct GitDaemon(std::process::Child);

impl GitDaemon {
    fn start(repo: &GitRepo, port: u16) -> GitDaemon {
        use std::os::unix::process::CommandExt as _;
        let base = repo.dir.parent().unwrap();
        // Its own process group: `git daemon` runs `git-daemon` as a child,
        // and both must go on drop.
        let child = std::process::Command::new("git")
            .process_group(0)
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon(child)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// The git server is down when a build starts: the build goes back to the
/// queue ("waiting for the git server") and completes once it is up.
#[test]
fn git_server_outage_requeues_the_fetch_until_it_is_back() {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let commits = repo.add_commits(1, 1);
    let port = free_port();
    let name = repo.dir.file_name().unwrap().to_string_lossy().into_owned();
    let url = format!("git://127.0.0.1:{port}/{name}");
    let (srv, id) = deliver_until_waiting(dir.path(), &reg, url, &commits[0], "the git server");
    let _daemon = GitDaemon::start(&repo, port);
    let b = srv.wait_finished(id, Duration::from_secs(120));
    check_pushed(&reg, &b, 1);
    let attempts = b["attempts"].as_i64().unwrap();
    assert!(attempts >= 2, "{b}");
    tally(&format!(
        "git server outage: 1 build, {attempts} attempts, succeeded after the server came back"
    ));
}

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes files under `dir` until the filesystem has no room left.
fn fill(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (n, chunk) in [1usize << 20, 4096, 64].into_iter().enumerate() {
        let p = dir.join(format!("filler-{n}"));
        let mut f = std::fs::File::create(&p).unwrap();
        let buf = vec![0x5a; chunk];
        // Bounded: the tmpfs is small.
        for _ in 0..100_000 {
            if f.write_all(&buf).and_then(|_| f.sync_all()).is_err() {
                break;
            }
        }
        files.push(p);
    }
    files
}

#[test]
fn full_disk_under_state_dir_refuses_or_keeps_every_delivery() {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    // The suite runs as root (see .ci/run); a missing mount is a failure, not a skip.
    let _mnt = Tmpfs::mount(&dir.path().join("state"), "24m")
        .expect("cannot mount a tmpfs for state_dir (the test needs root)");
    let repo = GitRepo::create(dir.path());
    let commits = repo.add_commits(10, 4);
    // Builds sleep 1.5 s before each image: the disk fills under a running build.
    let srv = start(dir.path(), &reg, &repo, 1, 1500);
    let state = srv.state.clone();
    let mut accepted: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    let early = deliver(
        &srv.addr,
        "pull_request",
        "early",
        &merged_pr(&commits[0], &commits[0]),
    );
    assert_eq!(early.status, 202, "{}", early.body);
    let early_id = early.json()["build_id"].as_i64().unwrap();
    accepted.insert("early".into(), (0, early_id));
    srv.wait_build(early_id, Duration::from_secs(60), |b| {
        b["images"][0]["status"] == "running"
    });
    let fillers = fill(&state);

    // Full: two deliveries for each other commit.
    let mut refused: Vec<(String, usize)> = Vec::new();
    for (k, c) in commits.iter().enumerate().skip(1) {
        for j in 0..2 {
            let id = format!("full-{k}-{j}");
            let r = deliver(&srv.addr, "pull_request", &id, &merged_pr(c, c));
            match r.status {
                202 => {
                    accepted.insert(id, (k, r.json()["build_id"].as_i64().unwrap()));
                }
                503 => {
                    let msg = r.json()["error"].as_str().unwrap().to_string();
                    assert!(msg.contains("disk") && msg.contains("full"), "{msg}");
                    refused.push((id, k));
                }
                other => panic!("delivery {id}: {other} {}", r.body),
            }
        }
    }
    // While the disk is full nothing accepted fails or vanishes: each is
    // queued (with the reason) or running. Reads still work.
    std::thread::sleep(Duration::from_secs(4));
    let mut waiting_for_space = 0;
    for (id, (_, build)) in &accepted {
        let r = get(&srv.addr, &format!("/builds/{build}"));
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        let b = r.json();
        assert!(
            matches!(b["status"].as_str(), Some("queued") | Some("running")),
            "{id}: {b}\n{}",
            srv.log_text()
        );
        if b["error"]
            .as_str()
            .is_some_and(|e| e.contains("waiting for disk space"))
        {
            waiting_for_space += 1;
        }
    }
    assert!(
        !refused.is_empty() || waiting_for_space > 0,
        "the full disk was never noticed:\n{}",
        srv.log_text()
    );
    eprintln!("{waiting_for_space} builds show they wait for disk space");
    assert_eq!(get(&srv.addr, "/healthz").status, 200);

    // Space is freed: refused deliveries are sent again (GitHub's
    // "Redeliver"), and every accepted build completes.
    for f in &fillers {
        std::fs::remove_file(f).unwrap();
    }
    for (id, k) in &refused {
        let r = deliver(
            &srv.addr,
            "pull_request",
            id,
            &merged_pr(&commits[*k], &commits[*k]),
        );
        assert_eq!(r.status, 202, "{id}: {}", r.body);
        accepted.insert(id.clone(), (*k, r.json()["build_id"].as_i64().unwrap()));
    }
    let builds = wait_all_finished(&srv, Duration::from_secs(180));
    let mut by_commit: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    for (k, id) in accepted.values() {
        by_commit.entry(*k).or_default().insert(*id);
    }
    for (k, ids) in &by_commit {
        assert_eq!(ids.len(), 1, "commit {k}: {ids:?}");
        let b = get(
            &srv.addr,
            &format!("/builds/{}", ids.iter().next().unwrap()),
        )
        .json();
        assert!(b["error"].is_null(), "{b}");
        check_pushed(&reg, &b, 10 + k);
    }
    assert_eq!(builds.len(), commits.len());
    integrity_ok(&state);
    let log = plain_log(&srv);
    // The build the disk filled under went back to the queue, not to failed.
    let requeued = log.matches("build queued again").count();
    assert!(requeued >= 1, "{log}");
    assert!(get(&srv.addr, &format!("/builds/{early_id}")).json()["attempts"].as_i64() >= Some(2));
    tally(&format!(
        "full disk: 1 build running when a 24 MB tmpfs state_dir filled up, then 6 deliveries: \
         {} refused with 503, {} accepted (202); {requeued} builds queued again for ENOSPC; \
         {} builds, all succeeded once space was freed",
        refused.len(),
        6 - refused.len(),
        builds.len()
    ));
}

/// A server whose builds fail fast; the body timeout is 3 s.
fn hostile_server(dir: &Path) -> Server {
    Server::start(
        dir,
        &ServerCfg {
            env: vec![("DOCKLESS_BODY_TIMEOUT_SECS".into(), "3".into())],
            ..ServerCfg::unbuildable(dir)
        },
    )
}

/// Writes `head` then `body` from one thread while another reads the
/// answer, so an answer sent before the server closes is never lost to a
/// reset. Returns the status (0 when the connection closed without one)
/// and how long it took.
fn hostile(
    addr: &str,
    head: Vec<u8>,
    body: Vec<u8>,
    byte_gap: Option<Duration>,
) -> (u16, Duration) {
    let t = Instant::now();
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = done.clone();
        std::thread::spawn(move || {
            if w.write_all(&head).is_err() {
                return;
            }
            match byte_gap {
                None => {
                    let _ = w.write_all(&body);
                }
                Some(gap) => {
                    for b in body {
                        if done.load(Ordering::SeqCst) || w.write_all(&[b]).is_err() {
                            return;
                        }
                        std::thread::sleep(gap);
                    }
                }
            }
        })
    };
    let (status, _) = answer_head(&s);
    let took = t.elapsed();
    done.store(true, Ordering::SeqCst);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    (status, took)
}

/// Reads an answer's status line and headers: (status, 0 when the
/// connection closed without one; the head as text).
fn answer_head(s: &TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let mut r = s;
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if raw.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A hostile client's thread: (status, time to the answer).
type HostileClient = std::thread::JoinHandle<(u16, Duration)>;

/// A delivery's head with a wrong signature; a body of `length` bytes, or
/// chunked when None.
fn post_head(addr: &str, extra: &str, length: Option<usize>) -> Vec<u8> {
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".into(),
    };
    format!(
        "POST /hooks/github HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: ping\r\nX-GitHub-Delivery: hostile\r\n\
         X-Hub-Signature-256: sha256={}\r\n{extra}{framing}\r\n\r\n",
        "0".repeat(64)
    )
    .into_bytes()
}

#[test]
fn hostile_clients_are_refused_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let srv = hostile_server(dir.path());
    let addr = srv.addr.clone();
    let clients: Vec<(&str, u16, HostileClient)> = vec![
        ("1 MB header", 431, {
            let a = addr.clone();
            std::thread::spawn(move || {
                let pad = format!("X-Pad: {}\r\n", "a".repeat(1 << 20));
                hostile(&a, post_head(&a, &pad, Some(2)), b"{}".to_vec(), None)
            })
        }),
        ("500 headers", 431, {
            let a = addr.clone();
            std::thread::spawn(move || {
                let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
                hostile(&a, post_head(&a, &many, Some(2)), b"{}".to_vec(), None)
            })
        }),
        ("slowloris body", 408, {
            let a = addr.clone();
            std::thread::spawn(move || {
                // 1000 bytes promised, one sent every 250 ms: 4 bytes a second.
                hostile(
                    &a,
                    post_head(&a, "", Some(1000)),
                    vec![b' '; 1000],
                    Some(Duration::from_millis(250)),
                )
            })
        }),
    ];
    // While they are connected, a signed ping is answered at once.
    std::thread::sleep(Duration::from_millis(300));
    let mut slowest = Duration::ZERO;
    for i in 0..3 {
        let t = Instant::now();
        let r = deliver(&addr, "ping", &format!("ping-{i}"), &fixture("ping.json"));
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(took < Duration::from_secs(2), "ping took {took:?}");
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(500));
    }
    for (what, want, h) in clients {
        let (status, took) = h.join().unwrap();
        assert_eq!(status, want, "{what} (after {took:?})");
        if want == 408 {
            assert!(
                took >= Duration::from_secs(2) && took < Duration::from_secs(10),
                "{what}: {took:?}"
            );
        }
    }
    // Unsupported media types, signed correctly: 415 once the signature is checked.
    let body = serde_json::to_vec(&fixture("ping.json")).unwrap();
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=xyz",
        "application/xml",
    ] {
        let r = deliver_raw(&addr, "ping", "ct", ct, &body, Some(SECRET));
        assert_eq!(r.status, 415, "{ct}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains("Content-Type"));
    }
    // Unsigned or wrongly signed stays 401 whatever the type: the signature comes first.
    let r = deliver_raw(&addr, "ping", "ct", "text/plain", &body, None);
    assert_eq!(r.status, 401);
    let r = deliver_raw(
        &addr,
        "ping",
        "ct",
        "text/plain",
        &body,
        Some("not-the-secret"),
    );
    assert_eq!(r.status, 401);
    assert_eq!(get(&addr, "/healthz").status, 200);
    let m = get(&addr, "/metrics").body;
    assert!(
        m.contains("dockless_http_responses_total{code=\"415\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("dockless_http_responses_total{code=\"408\"} 1"),
        "{m}"
    );
    tally(&format!(
        "hostile: 1 MB header → 431, 500 headers → 431, slowloris → 408 once under the minimum rate, \
         3 content types → 415; 3 pings answered meanwhile, slowest {} ms",
        slowest.as_millis()
    ));
}

/// The peak resident memory (VmHWM) `dockless serve` may reach in the
/// tests below, in MiB: its body budget (16 MiB when the test sets it, one
/// 25 MB body otherwise) and room for the process itself (about 10 MiB).
const RSS_BOUND_MIB: u64 = 64;

/// Many strangers send large bodies with a wrong signature at once: the
/// server buffers them out of one shared budget, answers those it has no
/// room for with 503 and `Retry-After`, and its memory stays under a fixed
/// bound instead of growing with the number of clients.
#[test]
fn unverified_bodies_share_one_memory_budget() {
    const CLIENTS: usize = 12;
    const BODY: usize = 10_000_000;
    let dir = tempfile::tempdir().unwrap();
    let budget = 16 << 20;
    let srv = Server::start(
        dir.path(),
        &ServerCfg {
            env: vec![("DOCKLESS_BODY_BUDGET_BYTES".into(), budget.to_string())],
            ..ServerCfg::unbuildable(dir.path())
        },
    );
    // Every client sends all of its body but the last byte before any
    // sends that one: a server that keeps what it is sent holds them all.
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, barrier) = (srv.addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                let s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut w = &s;
                let body = vec![b'x'; BODY];
                let _ = w
                    .write_all(&post_head(&addr, "", Some(BODY)))
                    .and_then(|_| w.write_all(&body[..BODY - 1]));
                barrier.wait();
                let _ = w.write_all(&body[BODY - 1..]);
                answer_head(&s)
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let peak_mib = srv.memory_kib("VmHWM") / 1024;
    let refused = answers.iter().filter(|(status, _)| *status == 503).count();
    for (status, head) in &answers {
        assert!(matches!(status, 401 | 503), "{head}");
        if *status == 503 {
            assert!(
                head.to_ascii_lowercase().contains("retry-after: "),
                "{head}"
            );
        }
    }
    assert!(
        peak_mib < RSS_BOUND_MIB,
        "{CLIENTS} unsigned bodies of {BODY} bytes took the server to {peak_mib} MiB"
    );
    assert!(refused > 0, "{answers:?}");
    // The budget is given back: a signed delivery as large still gets through.
    let mut ping = fixture("ping.json");
    ping["padding"] = "x".repeat(BODY).into();
    let r = deliver(&srv.addr, "ping", "after", &ping);
    assert_eq!(r.status, 200, "{}", r.body);
    tally(&format!(
        "budget: {CLIENTS} unsigned {BODY}-byte bodies at once against a 16 MiB budget: \
         {refused} refused with 503, the rest 401; peak RSS {peak_mib} MiB"
    ));
}

/// A signed body is parsed for the few fields the service reads; the rest
/// is checked and dropped, not kept as a JSON tree (which took ten times
/// the body: 24 MB of `[],` made a 270 MB tree).
#[test]
fn a_signed_body_costs_its_size_not_a_json_tree() {
    const BODY: usize = 24 << 20;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &ServerCfg::unbuildable(dir.path()));
    let start_mib = srv.memory_kib("VmHWM") / 1024;
    let mut body =
        format!(r#"{{"repository": {{"full_name": "{REPO}"}}, "padding": ["#).into_bytes();
    while body.len() < BODY - 16 {
        body.extend_from_slice(b"[],");
    }
    body.extend_from_slice(b"[]], \"zen\": \"x\"}");
    let r = deliver_raw(
        &srv.addr,
        "ping",
        "big",
        "application/json",
        &body,
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let peak_mib = srv.memory_kib("VmHWM") / 1024;
    assert!(
        peak_mib < RSS_BOUND_MIB,
        "a signed {} MiB body took the server from {start_mib} to {peak_mib} MiB",
        body.len() >> 20
    );
    tally(&format!(
        "signed {} MiB body of `[],`: 200, peak RSS {start_mib} → {peak_mib} MiB",
        body.len() >> 20
    ));
}

/// 2 GB of `[` with a wrong signature, chunked (refused by counting once
/// past 25 MB) and declared (refused on its Content-Length):
/// nothing parses an unverified body, so the server's memory stays flat.
/// The body is streamed, and the test stops early if the server's RSS
/// passes the bound.
#[test]
fn two_gigabytes_of_brackets_are_refused_by_their_size() {
    const TOTAL: u64 = 2 << 30;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &ServerCfg::unbuildable(dir.path()));
    let addr = srv.addr.clone();

    let s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let (sent, peak_mib, (status, head)) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut w = &s;
            let chunk = [b'['; 1 << 20];
            let (mut sent, mut peak_mib) = (0u64, 0u64);
            if w.write_all(&post_head(&addr, "", None)).is_err() {
                return (sent, peak_mib);
            }
            while sent < TOTAL {
                let framed = w
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .and_then(|_| w.write_all(&chunk))
                    .and_then(|_| w.write_all(b"\r\n"));
                if framed.is_err() {
                    break;
                }
                sent += chunk.len() as u64;
                if sent % (32 << 20) == 0 {
                    peak_mib = peak_mib.max(srv.memory_kib("VmRSS") / 1024);
                    if peak_mib >= RSS_BOUND_MIB {
                        break;
                    }
                }
            }
            let _ = w.write_all(b"0\r\n\r\n");
            let _ = s.shutdown(std::net::Shutdown::Write);
            (sent, peak_mib)
        });
        let answer = answer_head(&s);
        let _ = s.shutdown(std::net::Shutdown::Both);
        let (sent, peak) = writer.join().unwrap();
        (sent, peak, answer)
    });
    let peak_mib = peak_mib.max(srv.memory_kib("VmHWM") / 1024);
    assert!(
        peak_mib < RSS_BOUND_MIB,
        "{} MiB of `[` took the server to {peak_mib} MiB",
        sent >> 20
    );
    assert_eq!(status, 413, "{head}");
    assert!(sent < TOTAL, "the server read all 2 GB");
    let declared = post_head(&addr, "", Some(TOTAL as usize));
    let (status, _) = hostile(&addr, declared, vec![b'['; 1 << 20], None);
    assert_eq!(status, 413);
    assert_eq!(get(&addr, "/healthz").status, 200);
    tally(&format!(
        "2 GB of `[`: declared → 413 before reading; chunked → 413 after {} MiB sent; \
         peak RSS {peak_mib} MiB",
        sent >> 20
    ));
}

/// Connections that send a body a byte every 3 s, more of them than the
/// server has connection slots, each reconnecting as soon as the server
/// drops it (as an attacker would): a signed ping is still answered within
/// GitHub's 10 s, every time.
#[test]
fn slow_bodies_cannot_keep_a_signed_delivery_waiting() {
    const SLOW: usize = 540; // the server has 512 slots
    const PINGS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &ServerCfg::unbuildable(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicUsize::new(0));
    let attack = slow_senders(srv.addr.clone(), SLOW, stop.clone(), connected.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while connected.load(Ordering::SeqCst) < SLOW {
        assert!(Instant::now() < deadline, "slow clients could not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let them take every slot.
    std::thread::sleep(Duration::from_millis(1500));
    let body = serde_json::to_vec(&fixture("ping.json")).unwrap();
    let mut slowest = Duration::ZERO;
    let mut answers = Vec::new();
    for i in 0..PINGS {
        let t = Instant::now();
        let delivery = format!("ping-under-load-{i}");
        let limit = Duration::from_secs(10);
        let r = try_deliver_raw(
            &srv.addr,
            "ping",
            &delivery,
            "application/json",
            &body,
            Some(SECRET),
            limit,
        );
        slowest = slowest.max(t.elapsed());
        answers.push(r.map(|r| r.status));
        std::thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, Ordering::SeqCst);
    let reconnects = attack.join().unwrap();
    assert!(
        answers.iter().all(|a| a == &Ok(200)),
        "signed pings under {SLOW} slow clients (GitHub waits 10 s): {answers:?}"
    );
    let metrics = get(&srv.addr, "/metrics").body;
    let evicted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dockless_http_connections_cut_total{reason=\"evicted\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        evicted > 0,
        "no slow client was dropped to make room:\n{metrics}"
    );
    tally(&format!(
        "slots: {SLOW} slow-body clients (512 slots), {reconnects} connections made; \
         {PINGS} signed pings answered, slowest {} ms; {evicted} slow clients dropped to make room",
        slowest.as_millis()
    ));
}

/// `n` clients on their own thread, each sending a delivery head with a
/// 1000-byte body one byte every 3 s and connecting again whenever the
/// server answers or closes, until `stop`. `connected` counts the first
/// connection of each; the thread returns how many were made in all.
fn slow_senders(
    addr: String,
    n: usize,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let made = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            for _ in 0..n {
                let (addr, connected, made) = (addr.clone(), connected.clone(), made.clone());
                tokio::spawn(async move {
                    let mut first = Some(connected);
                    loop {
                        slow_sender(&addr, &made, &mut first).await;
                    }
                });
            }
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        // Dropping the runtime drops every client's connection.
        made.load(Ordering::SeqCst)
    })
}

/// One slow connection, until the server answers or closes it; counts it
/// in `made`, and in `first` if it is the client's first.
async fn slow_sender(addr: &str, made: &AtomicUsize, first: &mut Option<Arc<AtomicUsize>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return;
    };
    made.fetch_add(1, Ordering::SeqCst);
    if let Some(connected) = first.take() {
        connected.fetch_add(1, Ordering::SeqCst);
    }
    if s.write_all(&post_head(addr, "", Some(1000))).await.is_err() {
        return;
    }
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3)) => {
                if s.write_all(b" ").await.is_err() {
                    return;
                }
            }
            _ = s.read(&mut buf) => return,
        }
    }
}
