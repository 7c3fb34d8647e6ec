//! Builds survive the server: kill -9 in the middle of a build, then a
//! restart, completes it exactly once; SIGTERM lets the running build
//! finish, exits 0 and leaves queued builds for the next start.
//!
//! Builds are slowed with DOCKLESS_TEST_BUILD_DELAY_MS (a sleep before each
//! image, read by the worker only when set) so the server can be stopped mid-way.
mod regsupport;
mod serve_support;

use dockless::serve::jobs::{SqliteStore, Status};
use regsupport::{Registry, RegistryCfg};
use serve_support::*;
use std::time::Duration;

fn setup(max_builds: usize, delay_ms: u64) -> (Registry, tempfile::TempDir, GitRepo, Server) {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let srv = Server::start(
        dir.path(),
        &ServerCfg {
            max_builds,
            delay_ms: Some(delay_ms),
            ..ServerCfg::new(reg.addr(), repo.url())
        },
    );
    (reg, dir, repo, srv)
}

fn succeeded_images(b: &serde_json::Value) -> usize {
    b["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "succeeded")
        .count()
}

#[test]
fn kill_9_mid_build_then_restart_completes_exactly_once() {
    let (reg, _dir, repo, mut srv) = setup(2, 3000);
    let payload = merged_pr(&repo.merge_sha, &repo.head_sha);
    let r = deliver(&srv.addr, "pull_request", "kill-9-delivery", &payload);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["build_id"].as_i64().unwrap();
    // Wait until the first image is being built, then kill -9.
    srv.wait_build(id, Duration::from_secs(60), |b| {
        b["status"] == "running" && b["images"][0]["status"] == "running"
    });
    srv.kill9();
    {
        let store = SqliteStore::open(&srv.state.join("jobs.sqlite")).unwrap();
        let job = store.get(id).unwrap().unwrap();
        assert_eq!(
            job.status,
            Status::Running,
            "the kill left the build running"
        );
        assert_eq!(job.attempts, 1);
    }

    // Restart: the interrupted build is queued again and finishes.
    srv.spawn(Some(300));
    let b = srv.wait_finished(id, Duration::from_secs(180));
    assert_eq!(b["attempts"], 2, "{b}");
    assert_eq!(succeeded_images(&b), 2, "{b}");
    for img in &b["images"].as_array().unwrap()[..2] {
        let reference = img["reference"].as_str().unwrap();
        let digest = reference.rsplit_once('@').unwrap().1;
        reg.verify(
            &format!(
                "{}:{}",
                img["service_name"].as_str().unwrap(),
                img["version"].as_str().unwrap()
            ),
            digest,
            None,
        );
    }
    // Exactly once: one build for the delivery, not picked up again, and a
    // redelivery after the restart still maps to it.
    let again = deliver(&srv.addr, "pull_request", "kill-9-delivery", &payload);
    assert_eq!(again.json()["build_id"].as_i64(), Some(id));
    std::thread::sleep(Duration::from_secs(2));
    let list = get(&srv.addr, "/builds").json();
    assert_eq!(list["builds"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(&srv.addr, &format!("/builds/{id}")).json()["attempts"],
        2
    );
    assert_eq!(
        srv.log_text().matches("build finished").count(),
        1,
        "{}",
        srv.log_text()
    );
}

#[test]
fn sigterm_finishes_running_build_and_keeps_the_queue() {
    let (_reg, _dir, repo, mut srv) = setup(1, 1500);
    let payload = merged_pr(&repo.merge_sha, &repo.head_sha);
    let first = deliver(&srv.addr, "pull_request", "term-1", &payload).json()["build_id"]
        .as_i64()
        .unwrap();
    // Another commit (the PR head, which builds the same images): a second
    // delivery of the merge commit would join the first build.
    let other = merged_pr(&repo.head_sha, &repo.head_sha);
    let second = deliver(&srv.addr, "pull_request", "term-2", &other).json()["build_id"]
        .as_i64()
        .unwrap();
    srv.wait_build(first, Duration::from_secs(60), |b| b["status"] == "running");
    let st = srv.sigterm(Duration::from_secs(120));
    assert_eq!(st.code(), Some(0), "{}", srv.log_text());
    // No new connections after the stop.
    assert!(std::net::TcpStream::connect(&srv.addr).is_err());
    {
        let store = SqliteStore::open(&srv.state.join("jobs.sqlite")).unwrap();
        let a = store.get(first).unwrap().unwrap();
        let b = store.get(second).unwrap().unwrap();
        assert_eq!(
            a.status,
            Status::Failed,
            "the running build finished (AMI fails alone)"
        );
        assert_eq!(
            a.images
                .iter()
                .filter(|i| i.status == Status::Succeeded)
                .count(),
            2
        );
        assert_eq!(
            (b.status, b.attempts),
            (Status::Queued, 0),
            "the queued build stayed queued"
        );
    }
    srv.spawn(Some(0));
    let b = srv.wait_finished(second, Duration::from_secs(120));
    assert_eq!(succeeded_images(&b), 2, "{b}");
    assert_eq!(b["attempts"], 1);
    assert_eq!(
        get(&srv.addr, &format!("/builds/{first}")).json()["attempts"],
        1
    );
}

#[test]
fn a_build_that_kills_the_service_every_time_ends_failed() {
    // Each attempt is killed mid-build, as an out-of-memory kill would.
    let (_reg, _dir, repo, mut srv) = setup(1, 60_000);
    let payload = merged_pr(&repo.merge_sha, &repo.head_sha);
    let r = deliver(&srv.addr, "pull_request", "crash-loop", &payload);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["build_id"].as_i64().unwrap();
    for attempt in 1..=dockless::serve::jobs::MAX_UNFINISHED {
        srv.wait_build(id, Duration::from_secs(60), |b| {
            b["status"] == "running" && b["attempts"] == attempt
        });
        srv.kill9();
        srv.spawn(Some(60_000));
    }
    // The next start gives it up instead of running it a sixth time.
    let b = srv.wait_finished(id, Duration::from_secs(30));
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["attempts"], 5, "{b}");
    let error = b["error"].as_str().unwrap();
    assert!(
        error.starts_with("given up: 5 attempts never finished"),
        "{error}"
    );
    let log = std::fs::read_to_string(srv.state.join(format!("logs/{id}.log"))).unwrap();
    assert!(log.contains("build failed: given up"), "{log}");
    // No sixth run (a kill may come before an attempt's first log line).
    assert!(log.matches("attempt ").count() <= 5, "{log}");
    assert!(get(&srv.addr, "/metrics")
        .body
        .contains("dockless_builds_total{outcome=\"failed\"} 1"));
}
