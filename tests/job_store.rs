//! The job-store suite, run against both stores: SQLite in a temp folder
//! and a real PostgreSQL (tests/pgsupport). Each case takes `&dyn JobStore`.
mod pgsupport;

use dockless::serve::jobs::{
    Claim, ImageResult, Job, JobStore, NewJob, PgStore, SqliteStore, Status, MAX_UNFINISHED,
};
use pgsupport::Postgres;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn new_job(delivery: &str) -> NewJob<'_> {
    NewJob {
        delivery,
        repository: "acme/app",
        clone_url: "file:///x",
        pr_number: 3,
        commit: "a21683865c088b5fe1906cf6552d15a285a4986d",
        head_sha: "b21683865c088b5fe1906cf6552d15a285a4986d",
    }
}

async fn claim_run(store: &dyn JobStore) -> Job {
    match store.claim("replica-a", LEASE).await.unwrap() {
        Some(Claim::Run { job, .. }) => job,
        other => panic!("expected a build to run, got {other:?}"),
    }
}

fn image(name: &str, status: Status) -> ImageResult {
    ImageResult {
        service_name: name.into(),
        version: "1".into(),
        kind: "OCI".into(),
        status,
        reference: None,
        error: None,
        attachments: Vec::new(),
    }
}

async fn lifecycle(store: &dyn JobStore) {
    let (a, new) = store.enqueue(&new_job("d-1")).await.unwrap();
    assert!(new);
    assert_eq!(store.enqueue(&new_job("d-1")).await.unwrap(), (a, false));
    let mut second = new_job("d-2");
    second.commit = "d21683865c088b5fe1906cf6552d15a285a4986d";
    let (b, _) = store.enqueue(&second).await.unwrap();
    assert_ne!(a, b);

    let first = claim_run(store).await;
    assert_eq!(
        (first.id, first.status, first.attempts),
        (a, Status::Running, 1)
    );
    assert_eq!(first.lease_owner.as_deref(), Some("replica-a"));
    let img = ImageResult {
        reference: Some("r/api:1@sha256:00".into()),
        attachments: vec![dockless::attest::attach::Attached {
            subject: "sha256:00".into(),
            referrers: [("application/spdx+json".into(), "sha256:01".into())].into(),
            tags: [("sha256-00.sig".into(), "sha256:02".into())].into(),
        }],
        ..image("api", Status::Succeeded)
    };
    assert!(store
        .set_images(first.lease(), std::slice::from_ref(&img))
        .await
        .unwrap());
    assert!(store
        .finish(first.lease(), Status::Succeeded, None, None)
        .await
        .unwrap());
    let second = claim_run(store).await;
    assert_eq!(second.id, b);
    assert!(store
        .finish(
            second.lease(),
            Status::Failed,
            Some("boom"),
            Some(&[image("w", Status::Failed)])
        )
        .await
        .unwrap());
    assert!(store.claim("replica-a", LEASE).await.unwrap().is_none());

    let stats = store.stats().await.unwrap();
    assert_eq!((stats.succeeded, stats.failed, stats.queued), (1, 1, 0));
    assert_eq!(stats.durations.len(), 2);
    let recent = store.recent(10).await.unwrap();
    assert_eq!(recent.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b, a]);
    assert_eq!(recent[1].images, vec![img]);
    let failed = store.get(b).await.unwrap().unwrap();
    assert_eq!(failed.error.as_deref(), Some("boom"));
    // The outcome carries the images' final state.
    assert_eq!(failed.images, vec![image("w", Status::Failed)]);
    assert!(store.get(999_999).await.unwrap().is_none());
}

async fn one_build_per_live_commit(store: &dyn JobStore) {
    let (a, new) = store.enqueue(&new_job("d-1")).await.unwrap();
    assert!(new);
    // Another delivery of the same commit joins the queued build, and keeps
    // it on redelivery.
    assert_eq!(store.enqueue(&new_job("d-2")).await.unwrap(), (a, false));
    assert_eq!(store.enqueue(&new_job("d-2")).await.unwrap(), (a, false));
    // Another repository or commit is another build.
    let mut other = new_job("d-3");
    other.repository = "acme/other";
    let (b, new) = store.enqueue(&other).await.unwrap();
    assert!(new && b != a);
    let mut commit = new_job("d-4");
    commit.commit = "c21683865c088b5fe1906cf6552d15a285a4986d";
    assert!(store.enqueue(&commit).await.unwrap().1);
    // Running and succeeded builds still absorb new deliveries.
    let job = claim_run(store).await;
    assert_eq!(job.id, a);
    assert_eq!(store.enqueue(&new_job("d-5")).await.unwrap(), (a, false));
    store
        .finish(job.lease(), Status::Succeeded, None, None)
        .await
        .unwrap();
    assert_eq!(store.enqueue(&new_job("d-6")).await.unwrap(), (a, false));
    assert_eq!(store.recent(10).await.unwrap().len(), 3);
}

/// Deliveries enqueued at once (committed together, in batches): each
/// commit gets one build, whichever of its deliveries came first, and a
/// redelivery in the same burst gets its delivery's build.
async fn a_burst_of_deliveries_agrees_on_builds(store: &dyn JobStore) {
    let enqueues = (0..60).map(|n| {
        let commit = format!("{:040x}", n % 20);
        // Deliveries 0-39 are new; 40-59 are redeliveries of 20-39.
        let delivery = format!("burst-{}", if n < 40 { n } else { n - 20 });
        async move {
            let job = NewJob {
                commit: &commit,
                ..new_job(&delivery)
            };
            (commit.clone(), store.enqueue(&job).await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(enqueues).await;
    let mut build_of = std::collections::BTreeMap::new();
    for (commit, (id, _)) in &answers {
        assert_eq!(
            *build_of.entry(commit.clone()).or_insert(*id),
            *id,
            "{commit}"
        );
    }
    let created = answers.iter().filter(|(_, (_, new))| *new).count();
    assert_eq!((created, build_of.len()), (20, 20));
    assert_eq!(store.recent(100).await.unwrap().len(), 20);
}

async fn failed_commit_builds_again_and_requeue_keeps_attempts(store: &dyn JobStore) {
    let (a, _) = store.enqueue(&new_job("d-1")).await.unwrap();
    let job = claim_run(store).await;
    assert!(store.requeue(job.lease(), "no space left").await.unwrap());
    let queued = store.get(a).await.unwrap().unwrap();
    assert_eq!(
        (queued.status, queued.attempts, queued.error.as_deref()),
        (Status::Queued, 1, Some("no space left"))
    );
    let job = claim_run(store).await;
    assert_eq!(job.attempts, 2);
    store
        .finish(job.lease(), Status::Failed, Some("boom"), None)
        .await
        .unwrap();
    // A finished build's lease is spent.
    assert!(!store.requeue(job.lease(), "late").await.unwrap());
    assert_eq!(store.get(a).await.unwrap().unwrap().status, Status::Failed);
    // A new delivery after a failure is a new build; the old delivery
    // still names the failed one.
    let (b, new) = store.enqueue(&new_job("d-2")).await.unwrap();
    assert!(new && b != a);
    assert_eq!(store.enqueue(&new_job("d-1")).await.unwrap(), (a, false));
}

async fn requeues_do_not_count_toward_giving_up(store: &dyn JobStore) {
    let (a, _) = store.enqueue(&new_job("d-1")).await.unwrap();
    for _ in 0..10 {
        let job = claim_run(store).await;
        store.requeue(job.lease(), "waiting").await.unwrap();
    }
    let job = claim_run(store).await;
    assert_eq!((job.id, job.attempts), (a, 11));
}

async fn set_image_changes_one_entry(store: &dyn JobStore) {
    store.enqueue(&new_job("d-1")).await.unwrap();
    let job = claim_run(store).await;
    let queued = vec![image("a", Status::Queued), image("b", Status::Queued)];
    store.set_images(job.lease(), &queued).await.unwrap();
    let mut done = image("b", Status::Failed);
    done.error = Some("boom \"quoted\"".into());
    store.set_image(job.lease(), 1, &done).await.unwrap();
    store.set_image(job.lease(), 7, &done).await.unwrap();
    let images = store.get(job.id).await.unwrap().unwrap().images;
    assert_eq!(images, vec![queued[0].clone(), done]);
}

/// A claimant paused past its lease: another takes the build over, and the
/// first one's writes (renewal, images, outcome) change nothing.
async fn an_expired_lease_is_taken_over_and_fenced(store: &dyn JobStore) {
    let short = Duration::from_millis(300);
    let (a, _) = store.enqueue(&new_job("d-1")).await.unwrap();
    let stale = match store.claim("replica-a", short).await.unwrap() {
        Some(Claim::Run { job, took_over }) => {
            assert!(!took_over);
            job
        }
        other => panic!("{other:?}"),
    };
    // Held: nobody else may claim it.
    assert!(store.claim("replica-b", LEASE).await.unwrap().is_none());
    assert!(store.renew(stale.lease(), short).await.unwrap());
    tokio::time::sleep(short * 2).await;
    let fresh = match store.claim("replica-b", LEASE).await.unwrap() {
        Some(Claim::Run { job, took_over }) => {
            assert!(took_over);
            job
        }
        other => panic!("{other:?}"),
    };
    assert_eq!((fresh.id, fresh.attempts), (a, 2));
    assert!(fresh.lease_token > stale.lease_token);
    assert!(store
        .finish(fresh.lease(), Status::Succeeded, None, None)
        .await
        .unwrap());
    // The stale claimant wakes up: nothing it writes lands.
    assert!(!store.renew(stale.lease(), LEASE).await.unwrap());
    assert!(!store
        .set_images(stale.lease(), &[image("x", Status::Failed)])
        .await
        .unwrap());
    assert!(!store
        .finish(stale.lease(), Status::Failed, Some("stale"), None)
        .await
        .unwrap());
    assert!(!store.requeue(stale.lease(), "stale").await.unwrap());
    let job = store.get(a).await.unwrap().unwrap();
    assert_eq!((job.status, job.error), (Status::Succeeded, None));
    assert_eq!(job.lease_owner.as_deref(), Some("replica-b"));
    assert!(job.images.is_empty());
}

/// Leases that keep expiring (a build that kills each claimant) end in a
/// build given up, as restarts do with SQLite.
async fn expired_leases_count_as_unfinished(store: &dyn JobStore) {
    let short = Duration::from_millis(50);
    let (a, _) = store.enqueue(&new_job("d-1")).await.unwrap();
    for n in 1..=MAX_UNFINISHED {
        match store.claim("replica-a", short).await.unwrap() {
            Some(Claim::Run { job, .. }) => assert_eq!(job.attempts, n),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(short * 3).await;
    }
    match store.claim("replica-a", short).await.unwrap() {
        Some(Claim::GaveUp(job)) => {
            assert_eq!((job.id, job.status), (a, Status::Failed));
            let error = job.error.unwrap();
            assert!(error.starts_with("given up: 5 attempts"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(store.claim("replica-a", short).await.unwrap().is_none());
}

/// A store fresh from its start (PostgreSQL's warms up its connections
/// with enqueue calls) has taken no build id, and a delivery without an id
/// is refused, not queued.
async fn a_fresh_store_has_taken_no_build_id(store: &dyn JobStore) {
    assert!(store.enqueue(&new_job("")).await.is_err());
    assert_eq!(store.enqueue(&new_job("d-1")).await.unwrap(), (1, true));
    let jobs = store.recent(10).await.unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [1]);
}

macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::SqliteStore::open(&dir.path().join("jobs.db")).unwrap();
                    super::$case(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let pg = super::shared_postgres();
                    let url = pg.database(stringify!($case));
                    let store = super::PgStore::connect(&url, None).await.unwrap();
                    super::$case(&store).await;
                }
            )*
        }
    };
}

store_suite!(
    lifecycle,
    a_fresh_store_has_taken_no_build_id,
    one_build_per_live_commit,
    a_burst_of_deliveries_agrees_on_builds,
    failed_commit_builds_again_and_requeue_keeps_attempts,
    requeues_do_not_count_toward_giving_up,
    set_image_changes_one_entry,
    an_expired_lease_is_taken_over_and_fenced,
    expired_leases_count_as_unfinished,
);

/// One server for the suite's cases, each in its own database.
fn shared_postgres() -> &'static Postgres {
    static PG: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    PG.get_or_init(Postgres::start)
}

/// Replicas racing on one database: many stores (each its own pool, as
/// replicas are) deliver the same deliveries and commits at once; every
/// delivery of a commit gets the one build, and every queued build is
/// claimed by exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_agree_on_builds_and_claims() {
    let pg = shared_postgres();
    let url = pg.database("replicas_race");
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(PgStore::connect(&url, None).await.unwrap()));
    }
    let commits: Vec<String> = (0..10).map(|c| format!("{c:040x}")).collect();
    let mut tasks = Vec::new();
    for (r, store) in stores.iter().enumerate() {
        for (c, commit) in commits.iter().enumerate() {
            // Each commit is delivered under two ids, each id twice (a
            // redelivery), from every replica.
            for d in 0..2 {
                for _ in 0..2 {
                    let (store, commit) = (store.clone(), commit.clone());
                    let delivery = format!("c{c}-d{d}");
                    tasks.push(tokio::spawn(async move {
                        let job = NewJob {
                            commit: &commit,
                            ..new_job(&delivery)
                        };
                        (c, store.enqueue(&job).await.unwrap())
                    }));
                }
            }
        }
        let _ = r;
    }
    let mut build_of = std::collections::BTreeMap::new();
    let mut created = 0;
    for t in tasks {
        let (c, (id, new)) = t.await.unwrap();
        created += usize::from(new);
        assert_eq!(*build_of.entry(c).or_insert(id), id, "commit {c}");
    }
    assert_eq!((created, build_of.len()), (10, 10));

    let claimed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (r, store) in stores.iter().enumerate() {
        for _ in 0..3 {
            let (store, claimed) = (store.clone(), claimed.clone());
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(claim) = store.claim(&format!("r{r}"), LEASE).await.unwrap() {
                    let Claim::Run { job, .. } = claim else {
                        panic!("{claim:?}")
                    };
                    claimed.fetch_add(1, Ordering::SeqCst);
                    assert!(store
                        .finish(job.lease(), Status::Succeeded, None, None)
                        .await
                        .unwrap());
                    mine.push(job.id);
                }
                mine
            }));
        }
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all.sort();
    let mut expected: Vec<i64> = build_of.values().copied().collect();
    expected.sort();
    assert_eq!(all, expected, "each build claimed once");
    assert_eq!(stores[0].stats().await.unwrap().succeeded, 10);
}

/// A delivery PostgreSQL refuses (text with a NUL byte) fails the batch
/// it was committed in; the others in it are queued all the same, and only
/// it gets the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_bad_delivery_fails_alone() {
    let pg = shared_postgres();
    let store = PgStore::connect(&pg.database("bad_in_batch"), None)
        .await
        .unwrap();
    let enqueues = (0..30).map(|n| {
        let (store, commit) = (&store, format!("{n:040x}"));
        let delivery = if n == 15 {
            "bad\0delivery".to_string()
        } else {
            format!("ok-{n}")
        };
        async move {
            let job = NewJob {
                commit: &commit,
                ..new_job(&delivery)
            };
            store.enqueue(&job).await
        }
    });
    let answers = futures_util::future::join_all(enqueues).await;
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer.is_err(), n == 15, "{n}: {answer:?}");
    }
    assert_eq!(store.recent(100).await.unwrap().len(), 29);
}

/// NOTIFY: a build queued through one store wakes a worker of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notifies_other_replicas() {
    let pg = shared_postgres();
    let url = pg.database("notify");
    let listener = PgStore::connect(&url, None).await.unwrap();
    let woken = Arc::new(tokio::sync::Notify::new());
    listener.watch_queue(woken.clone());
    // The listener rings once when it starts listening.
    tokio::time::timeout(Duration::from_secs(10), woken.notified())
        .await
        .expect("LISTEN started");
    let sender = PgStore::connect(&url, None).await.unwrap();
    let wait = woken.notified();
    sender.enqueue(&new_job("d-1")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("notified of the queued build");
}

/// TLS to the database with rustls, trusting the test CA; a server whose
/// certificate the client does not trust is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/certs/generate.sh"))
        .arg(certs.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let pg = Postgres::start_tls(
        &certs.path().join("server.crt"),
        &certs.path().join("server.key"),
    );
    let url = pg
        .database("tls")
        .replace("127.0.0.1", "localhost")
        .replace("sslmode=disable", "sslmode=require");
    let store = PgStore::connect(&url, Some(certs.path().join("ca.crt")))
        .await
        .unwrap();
    store.enqueue(&new_job("d-1")).await.unwrap();
    let untrusted = PgStore::connect(&url, None).await;
    assert!(
        untrusted.is_err(),
        "a certificate nobody vouches for is refused"
    );
}
