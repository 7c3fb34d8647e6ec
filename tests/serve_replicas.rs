//! Replicas of `dockless serve` on one PostgreSQL (tests/pgsupport): every
//! accepted delivery is built exactly once to completion while replicas are
//! killed, a replica paused past its lease cannot overwrite the build its
//! successor finished, and a database restart during a burst loses nothing
//! it accepted.
//!
//! Leases are 3 s here (`lease_secs`), and builds are slowed with
//! DOCKLESS_TEST_BUILD_DELAY_MS so that kills and pauses land mid-build.
mod pgsupport;
mod regsupport;
mod serve_support;

use pgsupport::Postgres;
use regsupport::{Registry, RegistryCfg};
use serde_json::Value;
use serve_support::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LEASE_SECS: u64 = 3;

/// A replica named `name` in `dir/name`, on the database at `url`.
fn replica(
    dir: &Path,
    name: &str,
    url: &str,
    reg: &Registry,
    repo: &GitRepo,
    delay_ms: u64,
) -> Server {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let extra =
        format!("database_url = \"{url}\"\nlease_secs = {LEASE_SECS}\nreplica_name = \"{name}\"");
    Server::start(
        &home,
        &ServerCfg {
            max_builds: 2,
            delay_ms: Some(delay_ms),
            extra: &extra,
            ..ServerCfg::new(reg.addr(), repo.url())
        },
    )
}

/// A small xorshift generator: the test prints its seed, so a failing
/// order of kills can be replayed with DOCKLESS_TEST_SEED.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("DOCKLESS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("DOCKLESS_TEST_SEED={seed}");
        Rng(seed)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// "build succeeded" lines about build `id` in every replica's build logs:
/// how many times it was recorded done.
fn completions(replicas: &[Server], id: i64) -> usize {
    replicas
        .iter()
        .map(|r| {
            std::fs::read_to_string(r.state.join(format!("logs/{id}.log")))
                .unwrap_or_default()
                .matches("build succeeded")
                .count()
        })
        .sum()
}

/// Checks that both images of a finished build are in the registry with
/// the digests the build recorded.
fn assert_pushed(reg: &Registry, build: &Value) {
    let images = build["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{build}");
    for img in images {
        assert_eq!(img["status"], "succeeded", "{build}");
        let reference = img["reference"].as_str().unwrap();
        let digest = reference.rsplit_once('@').unwrap().1;
        let name = img["service_name"].as_str().unwrap();
        let version = img["version"].as_str().unwrap();
        let tag = format!("{name}:{version}");
        if reg.skopeo_manifest_digest(&tag, None).is_err() {
            eprintln!(
                "REGLOG {}",
                reg.log()
                    .lines()
                    .filter(|l| l.contains("error"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        reg.verify(&tag, digest, None);
    }
}

fn signal(server: &Server, sig: &str) {
    let pid = server.child.as_ref().expect("running").id().to_string();
    let st = Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(st.success());
}

/// Waits until some replica in `alive` answers that build `id` is done.
fn wait_done(alive: &Server, id: i64, timeout: Duration) -> Value {
    alive.wait_finished(id, timeout)
}

/// A build `name` is running now, as /builds on `any` tells.
fn running_on(any: &Server, name: &str) -> bool {
    get(&any.addr, "/builds").json()["builds"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["status"] == "running" && b["replica"] == name)
}

#[test]
fn three_replicas_build_each_accepted_delivery_once_while_two_are_killed() {
    let reg = Registry::start(RegistryCfg::default());
    let pg = Postgres::start();
    let url = pg.database("replicas");
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let commits = repo.add_commits(1, 20);
    let names = ["r1", "r2", "r3"];
    let mut replicas: Vec<Server> = names
        .iter()
        .map(|n| replica(dir.path(), n, &url, &reg, &repo, 300))
        .collect();

    // 60 deliveries: each commit under two delivery ids (a duplicate merge
    // commit), and one of them delivered again, in a random order.
    let mut rng = Rng::seeded();
    let mut plan: Vec<(String, usize)> = Vec::new();
    for (k, _) in commits.iter().enumerate() {
        plan.push((format!("c{k}-a"), k));
        plan.push((format!("c{k}-b"), k));
        plan.push((format!("c{k}-a"), k));
    }
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.below(i + 1));
    }
    // Two kills, of two different replicas, at random points of the burst.
    let first_kill = 10 + rng.below(20);
    let second_kill = first_kill + 5 + rng.below(20);
    let victims = {
        let a = rng.below(3);
        [a, (a + 1 + rng.below(2)) % 3]
    };
    let mut dead = [false; 3];
    let mut build_of: BTreeMap<String, i64> = BTreeMap::new();
    let mut build_of_commit: BTreeMap<usize, i64> = BTreeMap::new();
    for (i, (delivery, k)) in plan.iter().enumerate() {
        for (at, victim) in [(first_kill, victims[0]), (second_kill, victims[1])] {
            if i == at {
                // Kill it while it runs a build, when it gets one soon.
                let observer = (0..3).find(|r| !dead[*r] && *r != victim).unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                while !running_on(&replicas[observer], names[victim]) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                replicas[victim].kill9();
                dead[victim] = true;
            }
        }
        let payload = merged_pr(&commits[*k], &commits[*k]);
        // A load balancer's choice: round robin over the live replicas.
        let mut target = i % 3;
        let reply = loop {
            while dead[target] {
                target = (target + 1) % 3;
            }
            match try_deliver(&replicas[target].addr, "pull_request", delivery, &payload) {
                Ok(r) => break r,
                Err(_) => target = (target + 1) % 3,
            }
        };
        assert_eq!(reply.status, 202, "{delivery}: {}", reply.body);
        let id = reply.json()["build_id"].as_i64().unwrap();
        assert_eq!(*build_of.entry(delivery.clone()).or_insert(id), id);
        assert_eq!(*build_of_commit.entry(*k).or_insert(id), id, "{delivery}");
    }
    let ids: std::collections::BTreeSet<i64> = build_of.values().copied().collect();
    assert_eq!(ids.len(), 20, "one build per commit");

    let survivor = (0..3).find(|r| !dead[*r]).unwrap();
    // Every build first: docker-registry may answer 500 for a manifest that
    // another build is writing the same bytes of at that moment.
    let mut builds = Vec::new();
    for (k, id) in &build_of_commit {
        let b = wait_done(&replicas[survivor], *id, Duration::from_secs(600));
        assert_eq!(b["status"], "succeeded", "{b}");
        assert_eq!(b["commit"], commits[*k].as_str());
        builds.push(b);
    }
    for b in &builds {
        assert_pushed(&reg, b);
    }
    for id in &ids {
        assert_eq!(
            completions(&replicas, *id),
            1,
            "build {id} recorded done once, by one replica"
        );
    }
    let metrics = get(&replicas[survivor].addr, "/metrics").body;
    assert!(
        metrics.contains("dockless_builds_total{outcome=\"succeeded\"} 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "dockless_replica_info{{replica=\"{}\"}} 1",
            names[survivor]
        )),
        "{metrics}"
    );
}

#[test]
fn a_replica_paused_past_its_lease_cannot_overwrite_its_successor() {
    let reg = Registry::start(RegistryCfg::default());
    let pg = Postgres::start();
    let url = pg.database("paused");
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let commit = repo.add_commits(1, 1).remove(0);
    let a = replica(dir.path(), "a", &url, &reg, &repo, 2500);
    let r = deliver(
        &a.addr,
        "pull_request",
        "paused-1",
        &merged_pr(&commit, &commit),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["build_id"].as_i64().unwrap();
    a.wait_build(id, Duration::from_secs(60), |b| {
        b["status"] == "running" && b["images"][0]["status"] == "running"
    });
    signal(&a, "-STOP");

    // B starts with A frozen; it takes the build once A's lease expires.
    let b = replica(dir.path(), "b", &url, &reg, &repo, 0);
    let done = b.wait_finished(id, Duration::from_secs(120));
    assert_eq!(
        (&done["status"], &done["replica"]),
        (&"succeeded".into(), &"b".into())
    );
    assert_eq!(done["attempts"], 2, "{done}");

    signal(&a, "-CONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a.log_text().contains("lease lost") {
        assert!(Instant::now() < deadline, "{}", a.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A's late writes changed nothing; both replicas answer the same.
    let from_a = get(&a.addr, &format!("/builds/{id}")).json();
    let from_b = get(&b.addr, &format!("/builds/{id}")).json();
    assert_eq!(from_a, done);
    assert_eq!(from_b, done);
    assert_pushed(&reg, &done);
    assert_eq!(completions(&[a, b], id), 1);
}

#[test]
fn a_database_restart_during_a_burst_loses_nothing_accepted() {
    let reg = Registry::start(RegistryCfg::default());
    let pg = Postgres::start();
    let url = pg.database("outage");
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let commits = repo.add_commits(1, 12);
    // Slowed builds: the outage lands while the first ones run, so their
    // renewals and results meet the stopped database too.
    let replicas = [
        replica(dir.path(), "r1", &url, &reg, &repo, 1500),
        replica(dir.path(), "r2", &url, &reg, &repo, 1500),
    ];
    let send = |k: usize| {
        let payload = merged_pr(&commits[k], &commits[k]);
        let limit = Duration::from_secs(10); // GitHub's wait for an answer
        let body = serde_json::to_vec(&payload).unwrap();
        try_deliver_raw(
            &replicas[k % 2].addr,
            "pull_request",
            &format!("burst-{k}"),
            "application/json",
            &body,
            Some(SECRET),
            limit,
        )
        .unwrap_or_else(|e| panic!("delivery {k} got no answer in time: {e}"))
    };
    let mut accepted = BTreeMap::new();
    for k in 0..4 {
        let r = send(k);
        assert_eq!(r.status, 202, "{}", r.body);
        accepted.insert(k, r.json()["build_id"].as_i64().unwrap());
    }
    let first = accepted[&0];
    replicas[0].wait_build(first, Duration::from_secs(60), |b| {
        b["images"][0]["status"] == "running"
    });
    pg.stop();
    let mut refused = Vec::new();
    for k in 4..8 {
        let r = send(k);
        assert_eq!(r.status, 503, "the database is down: {}", r.body);
        refused.push(k);
    }
    for r in &replicas {
        assert_eq!(get(&r.addr, "/builds").status, 503);
    }
    pg.start_server();
    // GitHub's redelivery of the refused ones, then the rest of the burst.
    for k in refused.into_iter().chain(8..12) {
        let r = send(k);
        assert_eq!(r.status, 202, "{}", r.body);
        accepted.insert(k, r.json()["build_id"].as_i64().unwrap());
    }
    let mut builds = Vec::new();
    for (k, id) in &accepted {
        let b = replicas[0].wait_finished(*id, Duration::from_secs(300));
        assert_eq!(b["status"], "succeeded", "{b}");
        assert_eq!(b["commit"], commits[*k].as_str());
        assert_eq!(completions(&replicas, *id), 1);
        builds.push(b);
    }
    for b in &builds {
        assert_pushed(&reg, b);
    }
    let list = get(&replicas[1].addr, "/builds").json();
    assert_eq!(list["builds"].as_array().unwrap().len(), 12);
}
