//! The durable job store: one SQLite row per accepted delivery, so builds
//! survive restarts. A delivery id maps to exactly one build; a build moves
//! queued → running → succeeded | failed, and a build found `running` at
//! startup (the process died under it) goes back to `queued`.
//!
//! Each claim counts an attempt before the build starts, and an attempt
//! that records no outcome (the process died under it) stays counted as
//! unfinished: a build that has killed the service [`MAX_UNFINISHED`] times
//! is failed when it is next claimed, instead of being run again.
//!
//! Deliveries for a commit that already has a live build (queued, running
//! or succeeded) of the same repository join that build instead of making a
//! new one: the `aliases` table remembers which build each such delivery
//! got, so its redeliveries keep getting the same answer.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("job store: corrupt row: {0}")]
    Corrupt(String),
}

impl JobError {
    /// SQLite could not write because the disk (or its quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            JobError::Sql(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull
        )
    }
}

pub type Result<T> = std::result::Result<T, JobError>;

/// Attempts a build may leave unfinished (the service killed, crashed or
/// out of memory under it) before it is failed instead of run again.
/// Attempts that end, even by going back to the queue, do not count.
pub const MAX_UNFINISHED: i64 = 5;

/// What [`JobStore::claim`] took from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Marked running: run it.
    Run(Job),
    /// Failed instead: its earlier attempts never finished.
    GaveUp(Job),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Result<Status> {
        Ok(match s {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            other => return Err(JobError::Corrupt(format!("status {other:?}"))),
        })
    }
}

/// What one image of a build came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ImageResult {
    pub service_name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: Status,
    /// `REGISTRY/NAME:VERSION@sha256:...` once pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// SBOM, provenance and signatures pushed beside the image (digests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::attest::attach::Attached>,
}

impl<'de> serde::Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Status::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A build as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub delivery: String,
    pub repository: String,
    pub clone_url: String,
    pub pr_number: u64,
    pub commit: String,
    pub head_sha: String,
    pub status: Status,
    /// Milliseconds since the epoch.
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub attempts: i64,
    pub error: Option<String>,
    pub images: Vec<ImageResult>,
}

/// A build to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub delivery: &'a str,
    pub repository: &'a str,
    pub clone_url: &'a str,
    pub pr_number: u64,
    pub commit: &'a str,
    pub head_sha: &'a str,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Counts for /metrics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Seconds each finished build took (started → finished), newest first, capped.
    pub durations: Vec<f64>,
}

/// The store; one connection shared behind a mutex (every statement is short).
pub struct JobStore {
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "id, delivery, repository, clone_url, pr_number, commit_sha, head_sha, status, created_ms, started_ms, finished_ms, attempts, error, images";

impl JobStore {
    pub fn open(path: &Path) -> Result<JobStore> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                delivery TEXT NOT NULL UNIQUE,
                repository TEXT NOT NULL,
                clone_url TEXT NOT NULL,
                pr_number INTEGER NOT NULL,
                commit_sha TEXT NOT NULL,
                head_sha TEXT NOT NULL,
                status TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                started_ms INTEGER,
                finished_ms INTEGER,
                attempts INTEGER NOT NULL DEFAULT 0,
                error TEXT,
                images TEXT NOT NULL DEFAULT '[]',
                unfinished INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, id);
            CREATE INDEX IF NOT EXISTS jobs_commit ON jobs(repository, commit_sha);
            CREATE TABLE IF NOT EXISTS aliases (
                delivery TEXT PRIMARY KEY,
                job_id INTEGER NOT NULL REFERENCES jobs(id)
            );",
        )?;
        add_column(
            &conn,
            "unfinished",
            "ALTER TABLE jobs ADD COLUMN unfinished INTEGER NOT NULL DEFAULT 0",
        )?;
        Ok(JobStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds interrupted by a crash go back to the queue; returns how many.
    pub fn requeue_interrupted(&self) -> Result<usize> {
        Ok(self.conn().execute(
            "UPDATE jobs SET status = 'queued', started_ms = NULL WHERE status = 'running'",
            [],
        )?)
    }

    /// Enqueues a delivery, or returns the build it already has: (id, created now).
    /// A new delivery for a commit whose build is queued, running or
    /// succeeded gets that build; after a failed build it makes a new one.
    pub fn enqueue(&self, job: &NewJob<'_>) -> Result<(i64, bool)> {
        let mut conn = self.conn();
        // IMMEDIATE: the look-up and the insert are one write transaction, so
        // two deliveries of one commit cannot both miss each other.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let known: Option<i64> = tx
            .query_row(
                "SELECT id FROM jobs WHERE delivery = ?1
                 UNION ALL SELECT job_id FROM aliases WHERE delivery = ?1
                 LIMIT 1",
                [job.delivery],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = known {
            return Ok((id, false));
        }
        let live: Option<i64> = tx
            .query_row(
                "SELECT id FROM jobs WHERE repository = ?1 AND commit_sha = ?2
                 AND status IN ('queued', 'running', 'succeeded')
                 ORDER BY id DESC LIMIT 1",
                params![job.repository, job.commit],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = live {
            tx.execute(
                "INSERT INTO aliases (delivery, job_id) VALUES (?1, ?2)",
                params![job.delivery, id],
            )?;
            tx.commit()?;
            return Ok((id, false));
        }
        tx.execute(
            "INSERT INTO jobs (delivery, repository, clone_url, pr_number, commit_sha, head_sha, status, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7)",
            params![
                job.delivery,
                job.repository,
                job.clone_url,
                job.pr_number as i64,
                job.commit,
                job.head_sha,
                now_ms()
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok((id, true))
    }

    /// Puts a running build back in the queue, with the reason it could not
    /// run now (a full disk); it keeps its attempts count, and this attempt
    /// counts as finished.
    pub fn requeue(&self, id: i64, reason: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET status = 'queued', started_ms = NULL, error = ?2,
                unfinished = unfinished - 1
             WHERE id = ?1 AND status = 'running'",
            params![id, reason],
        )?;
        Ok(())
    }

    /// `PRAGMA integrity_check`: "ok" when the database is sound.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// Takes the oldest queued build and marks it running, counting the
    /// attempt (as unfinished until it records an outcome) before it starts.
    /// A build whose unfinished attempts reached [`MAX_UNFINISHED`] is failed
    /// instead, and returned as [`Claim::GaveUp`].
    pub fn claim(&self) -> Result<Option<Claim>> {
        let conn = self.conn();
        let now = now_ms();
        let row = conn
            .query_row(
                &format!(
                    "UPDATE jobs SET
                        status = CASE WHEN unfinished >= ?2 THEN 'failed' ELSE 'running' END,
                        error = CASE WHEN unfinished >= ?2 THEN ?3 ELSE error END,
                        finished_ms = CASE WHEN unfinished >= ?2 THEN ?1 ELSE finished_ms END,
                        started_ms = CASE WHEN unfinished >= ?2 THEN started_ms ELSE ?1 END,
                        attempts = CASE WHEN unfinished >= ?2 THEN attempts ELSE attempts + 1 END,
                        unfinished = CASE WHEN unfinished >= ?2 THEN unfinished ELSE unfinished + 1 END
                     WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1)
                     RETURNING {COLUMNS}"
                ),
                params![now, MAX_UNFINISHED, gave_up_error()],
                |r| Ok(row_to_raw(r)),
            )
            .optional()?;
        let Some(job) = row.transpose()?.map(raw_to_job).transpose()? else {
            return Ok(None);
        };
        Ok(Some(match job.status {
            Status::Failed => Claim::GaveUp(job),
            _ => Claim::Run(job),
        }))
    }

    /// Records every image's progress at once (when the list is first known).
    pub fn set_images(&self, id: i64, images: &[ImageResult]) -> Result<()> {
        let text = serde_json::to_string(images).map_err(|e| JobError::Corrupt(e.to_string()))?;
        self.conn().execute(
            "UPDATE jobs SET images = ?2 WHERE id = ?1",
            params![id, text],
        )?;
        Ok(())
    }

    /// Records the progress of image `index` alone, leaving the others as
    /// they are; an index past the list changes nothing.
    pub fn set_image(&self, id: i64, index: usize, image: &ImageResult) -> Result<()> {
        let text = serde_json::to_string(image).map_err(|e| JobError::Corrupt(e.to_string()))?;
        self.conn().execute(
            "UPDATE jobs SET images = json_replace(images, '$[' || ?2 || ']', json(?3))
             WHERE id = ?1",
            params![id, index as i64, text],
        )?;
        Ok(())
    }

    /// Ends a build; a running one's attempt counts as finished.
    pub fn finish(&self, id: i64, status: Status, error: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET status = ?2, error = ?3, finished_ms = ?4,
                unfinished = CASE WHEN status = 'running' THEN unfinished - 1 ELSE unfinished END
             WHERE id = ?1",
            params![id, status.as_str(), error, now_ms()],
        )?;
        Ok(())
    }

    pub fn get(&self, id: i64) -> Result<Option<Job>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                |r| Ok(row_to_raw(r)),
            )
            .optional()?;
        row.transpose()?.map(raw_to_job).transpose()
    }

    /// The newest builds first.
    pub fn recent(&self, limit: usize) -> Result<Vec<Job>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |r| Ok(row_to_raw(r)))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(raw_to_job(row??)?);
        }
        Ok(out)
    }

    pub fn stats(&self) -> Result<Stats> {
        let conn = self.conn();
        let mut stats = Stats::default();
        let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (status, n) = row?;
            match Status::parse(&status)? {
                Status::Queued => stats.queued = n,
                Status::Running => stats.running = n,
                Status::Succeeded => stats.succeeded = n,
                Status::Failed => stats.failed = n,
            }
        }
        let mut stmt = conn.prepare(
            "SELECT finished_ms - started_ms FROM jobs
             WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL
             ORDER BY id DESC LIMIT 10000",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
        for row in rows {
            stats.durations.push(row?.max(0) as f64 / 1000.0);
        }
        Ok(stats)
    }
}

/// Why a build was given up at claim time.
fn gave_up_error() -> String {
    format!(
        "given up: {MAX_UNFINISHED} attempts never finished (the service was killed, crashed or \
         ran out of memory during each), so it is not run again"
    )
}

/// Adds a column to a store made before it existed.
fn add_column(conn: &Connection, name: &str, ddl: &str) -> Result<()> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('jobs') WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch(ddl)?;
    }
    Ok(())
}

type RawRow = (
    i64,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
    String,
);

fn row_to_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
    ))
}

fn raw_to_job(r: RawRow) -> Result<Job> {
    let images = serde_json::from_str(&r.13).map_err(|e| JobError::Corrupt(e.to_string()))?;
    Ok(Job {
        id: r.0,
        delivery: r.1,
        repository: r.2,
        clone_url: r.3,
        pr_number: r.4.max(0) as u64,
        commit: r.5,
        head_sha: r.6,
        status: Status::parse(&r.7)?,
        created_ms: r.8,
        started_ms: r.9,
        finished_ms: r.10,
        attempts: r.11,
        error: r.12,
        images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_run(store: &JobStore) -> Job {
        match store.claim().unwrap() {
            Some(Claim::Run(job)) => job,
            other => panic!("expected a build to run, got {other:?}"),
        }
    }

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

    #[test]
    fn lifecycle_redelivery_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let store = JobStore::open(&path).unwrap();
        let (a, new) = store.enqueue(&new_job("d-1")).unwrap();
        assert!(new);
        assert_eq!(store.enqueue(&new_job("d-1")).unwrap(), (a, false));
        // (Another commit: a delivery of the same one would join build `a`.)
        let mut second = new_job("d-2");
        second.commit = "d21683865c088b5fe1906cf6552d15a285a4986d";
        let (b, _) = store.enqueue(&second).unwrap();
        assert_ne!(a, b);

        let first = claim_run(&store);
        assert_eq!(
            (first.id, first.status, first.attempts),
            (a, Status::Running, 1)
        );
        let img = ImageResult {
            service_name: "api".into(),
            version: "1".into(),
            kind: "Docker".into(),
            status: Status::Succeeded,
            reference: Some("r/api:1@sha256:00".into()),
            error: None,
            attachments: vec![crate::attest::attach::Attached {
                subject: "sha256:00".into(),
                referrers: [("application/spdx+json".into(), "sha256:01".into())].into(),
                tags: [("sha256-00.sig".into(), "sha256:02".into())].into(),
            }],
        };
        store.set_images(a, std::slice::from_ref(&img)).unwrap();
        drop(store);

        // "kill -9": a reopened store puts the running build back in the queue.
        let store = JobStore::open(&path).unwrap();
        assert_eq!(store.requeue_interrupted().unwrap(), 1);
        let again = claim_run(&store);
        assert_eq!((again.id, again.attempts), (a, 2));
        assert_eq!(again.images, vec![img]);
        store.finish(a, Status::Succeeded, None).unwrap();
        let second = claim_run(&store);
        assert_eq!(second.id, b);
        store.finish(b, Status::Failed, Some("boom")).unwrap();
        assert!(store.claim().unwrap().is_none());

        let stats = store.stats().unwrap();
        assert_eq!((stats.succeeded, stats.failed, stats.queued), (1, 1, 0));
        assert_eq!(stats.durations.len(), 2);
        let recent = store.recent(10).unwrap();
        assert_eq!(recent.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b, a]);
        assert_eq!(
            store.get(b).unwrap().unwrap().error.as_deref(),
            Some("boom")
        );
        assert!(store.get(999).unwrap().is_none());
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn one_build_per_live_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("jobs.db")).unwrap();
        let (a, new) = store.enqueue(&new_job("d-1")).unwrap();
        assert!(new);
        // Another delivery of the same commit joins the queued build, and
        // keeps it on redelivery.
        assert_eq!(store.enqueue(&new_job("d-2")).unwrap(), (a, false));
        assert_eq!(store.enqueue(&new_job("d-2")).unwrap(), (a, false));
        // Another repository or commit is another build.
        let mut other = new_job("d-3");
        other.repository = "acme/other";
        let (b, new) = store.enqueue(&other).unwrap();
        assert!(new && b != a);
        let mut commit = new_job("d-4");
        commit.commit = "c21683865c088b5fe1906cf6552d15a285a4986d";
        assert!(store.enqueue(&commit).unwrap().1);
        // Running and succeeded builds still absorb new deliveries.
        assert_eq!(claim_run(&store).id, a);
        assert_eq!(store.enqueue(&new_job("d-5")).unwrap(), (a, false));
        store.finish(a, Status::Succeeded, None).unwrap();
        assert_eq!(store.enqueue(&new_job("d-6")).unwrap(), (a, false));
        assert_eq!(store.recent(10).unwrap().len(), 3);
    }

    #[test]
    fn failed_commit_builds_again_and_requeue_keeps_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("jobs.db")).unwrap();
        let (a, _) = store.enqueue(&new_job("d-1")).unwrap();
        claim_run(&store);
        store.requeue(a, "no space left").unwrap();
        let job = store.get(a).unwrap().unwrap();
        assert_eq!(
            (job.status, job.attempts, job.error.as_deref()),
            (Status::Queued, 1, Some("no space left"))
        );
        assert_eq!(claim_run(&store).attempts, 2);
        store.finish(a, Status::Failed, Some("boom")).unwrap();
        // requeue only touches running builds.
        store.requeue(a, "late").unwrap();
        assert_eq!(store.get(a).unwrap().unwrap().status, Status::Failed);
        // A new delivery after a failure is a new build; the old delivery
        // still names the failed one.
        let (b, new) = store.enqueue(&new_job("d-2")).unwrap();
        assert!(new && b != a);
        assert_eq!(store.enqueue(&new_job("d-1")).unwrap(), (a, false));
    }

    #[test]
    fn a_build_that_never_finishes_is_given_up_at_claim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let store = JobStore::open(&path).unwrap();
        let (a, _) = store.enqueue(&new_job("d-1")).unwrap();
        // Attempts that end (back to the queue to wait) do not count.
        for _ in 0..10 {
            claim_run(&store);
            store.requeue(a, "waiting for the registry").unwrap();
        }
        // Each restart finds it running: the process died under it.
        let mut store = store;
        for n in 1..=MAX_UNFINISHED {
            let job = claim_run(&store);
            assert_eq!(job.attempts, 10 + n);
            drop(store);
            store = JobStore::open(&path).unwrap();
            assert_eq!(store.requeue_interrupted().unwrap(), 1);
        }
        let gave_up = match store.claim().unwrap() {
            Some(Claim::GaveUp(job)) => job,
            other => panic!("{other:?}"),
        };
        assert_eq!(gave_up.id, a);
        assert_eq!(gave_up.status, Status::Failed);
        assert_eq!(gave_up.attempts, 10 + MAX_UNFINISHED);
        assert!(gave_up.finished_ms.is_some());
        let error = gave_up.error.unwrap();
        assert!(
            error.starts_with("given up: 5 attempts never finished"),
            "{error}"
        );
        assert!(store.claim().unwrap().is_none());
        assert_eq!(store.get(a).unwrap().unwrap().status, Status::Failed);
        // A new delivery of the commit builds it afresh.
        let (b, new) = store.enqueue(&new_job("d-2")).unwrap();
        assert!(new && b != a);
        assert_eq!(claim_run(&store).id, b);
    }

    #[test]
    fn set_image_changes_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("jobs.db")).unwrap();
        let (a, _) = store.enqueue(&new_job("d-1")).unwrap();
        claim_run(&store);
        let image = |name: &str, status| ImageResult {
            service_name: name.into(),
            version: "1".into(),
            kind: "OCI".into(),
            status,
            reference: None,
            error: None,
            attachments: Vec::new(),
        };
        let queued = vec![image("a", Status::Queued), image("b", Status::Queued)];
        store.set_images(a, &queued).unwrap();
        let mut done = image("b", Status::Failed);
        done.error = Some("boom \"quoted\"".into());
        store.set_image(a, 1, &done).unwrap();
        store.set_image(a, 7, &done).unwrap();
        let images = store.get(a).unwrap().unwrap().images;
        assert_eq!(images, vec![queued[0].clone(), done]);
    }

    #[test]
    fn old_stores_gain_the_unfinished_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        // A store from before the column, with a build that was running.
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, delivery TEXT NOT NULL UNIQUE,
                repository TEXT NOT NULL, clone_url TEXT NOT NULL, pr_number INTEGER NOT NULL,
                commit_sha TEXT NOT NULL, head_sha TEXT NOT NULL, status TEXT NOT NULL,
                created_ms INTEGER NOT NULL, started_ms INTEGER, finished_ms INTEGER,
                attempts INTEGER NOT NULL DEFAULT 0, error TEXT, images TEXT NOT NULL DEFAULT '[]');
             INSERT INTO jobs (delivery, repository, clone_url, pr_number, commit_sha, head_sha,
                status, created_ms, attempts) VALUES ('d-1', 'acme/app', 'file:///x', 3, 'c', 'h',
                'running', 0, 9);",
        )
        .unwrap();
        drop(old);
        let store = JobStore::open(&path).unwrap();
        assert_eq!(store.requeue_interrupted().unwrap(), 1);
        // Its earlier attempts are not known to have killed anything.
        let job = claim_run(&store);
        assert_eq!(job.attempts, 10);
        store.finish(job.id, Status::Succeeded, None).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }
}
