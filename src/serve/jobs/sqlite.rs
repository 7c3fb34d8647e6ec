//! The job store in one SQLite file under `state_dir`: one process owns
//! it (the `state_dir` lock), so a build found `running` at startup (the
//! process died under it) goes back to `queued` at once.
//!
//! Enqueues are group-committed: a thread of their own takes every
//! delivery waiting to be queued and writes them in one transaction, so a
//! burst of deliveries waits for one disk sync per batch rather than one
//! each, and in the order they came (each is still on disk before its 202).

use super::{
    duration_ms, gave_up_error, images_json, now_ms, parse_images, Claim, ImageResult, Job,
    JobError, JobStore, Lease, NewJob, Pending, Result, Stats, Status, MAX_UNFINISHED,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The most deliveries one enqueue transaction takes.
const MAX_BATCH: usize = 64;

/// The store; one connection shared behind a mutex (every statement is short).
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// To the thread that group-commits enqueues (see `commit_enqueues`);
    /// `None` once the store is dropped, which ends the thread.
    enqueues: Option<mpsc::Sender<Pending>>,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.enqueues.take();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

const COLUMNS: &str = "id, delivery, repository, clone_url, pr_number, commit_sha, head_sha, status, created_ms, started_ms, finished_ms, attempts, error, images, lease_token, lease_owner";

/// The claimant's write guard: the build is running under this token.
const FENCE: &str = "id = ?1 AND lease_token = ?2 AND status = 'running'";

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
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
        for (name, ddl) in [
            (
                "unfinished",
                "ALTER TABLE jobs ADD COLUMN unfinished INTEGER NOT NULL DEFAULT 0",
            ),
            (
                "lease_token",
                "ALTER TABLE jobs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0",
            ),
            (
                "lease_owner",
                "ALTER TABLE jobs ADD COLUMN lease_owner TEXT",
            ),
            (
                "lease_expires_ms",
                "ALTER TABLE jobs ADD COLUMN lease_expires_ms INTEGER",
            ),
        ] {
            add_column(&conn, name, ddl)?;
        }
        let conn = Arc::new(Mutex::new(conn));
        let (enqueues, waiting) = mpsc::channel();
        let committer = {
            let conn = conn.clone();
            std::thread::Builder::new()
                .name("dockless-enqueue".into())
                .spawn(move || commit_enqueues(&conn, waiting))
                .map_err(|e| JobError::Config(format!("cannot start a thread: {e}")))?
        };
        Ok(SqliteStore {
            conn,
            enqueues: Some(enqueues),
            committer: Some(committer),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    /// Builds interrupted by a crash go back to the queue; returns how many.
    pub fn requeue_interrupted(&self) -> Result<usize> {
        Ok(self.conn().execute(
            "UPDATE jobs SET status = 'queued', started_ms = NULL, lease_expires_ms = NULL
             WHERE status = 'running'",
            [],
        )?)
    }

    /// See [`JobStore::enqueue`]: one delivery in a transaction of its own.
    pub fn enqueue(&self, job: &NewJob<'_>) -> Result<(i64, bool)> {
        enqueue_all(&mut self.conn(), std::slice::from_ref(job)).map(|q| q[0])
    }

    /// See [`JobStore::claim`].
    pub fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Claim>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        let picked: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, status FROM jobs
                 WHERE status = 'queued' OR (status = 'running' AND lease_expires_ms < ?1)
                 ORDER BY id LIMIT 1",
                [now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, was)) = picked else {
            return Ok(None);
        };
        let row = tx.query_row(
            &format!(
                "UPDATE jobs SET
                    status = CASE WHEN unfinished >= ?3 THEN 'failed' ELSE 'running' END,
                    error = CASE WHEN unfinished >= ?3 THEN ?4 ELSE error END,
                    finished_ms = CASE WHEN unfinished >= ?3 THEN ?2 ELSE finished_ms END,
                    started_ms = CASE WHEN unfinished >= ?3 THEN started_ms ELSE ?2 END,
                    attempts = CASE WHEN unfinished >= ?3 THEN attempts ELSE attempts + 1 END,
                    unfinished = CASE WHEN unfinished >= ?3 THEN unfinished ELSE unfinished + 1 END,
                    lease_token = lease_token + 1,
                    lease_owner = ?5,
                    lease_expires_ms = ?2 + ?6
                 WHERE id = ?1
                 RETURNING {COLUMNS}"
            ),
            params![
                id,
                now,
                MAX_UNFINISHED,
                gave_up_error(),
                owner,
                duration_ms(lease)
            ],
            |r| Ok(row_to_raw(r)),
        )?;
        let job = raw_to_job(row?)?;
        tx.commit()?;
        Ok(Some(match job.status {
            Status::Failed => Claim::GaveUp(job),
            _ => Claim::Run {
                job,
                took_over: was == "running",
            },
        }))
    }

    /// One write guarded by the claimant's lease: true when it held.
    fn fenced(&self, lease: Lease, set: &str, rest: &[&dyn rusqlite::ToSql]) -> Result<bool> {
        let sql = format!("UPDATE jobs SET {set} WHERE {FENCE}");
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&lease.build_id, &lease.token];
        args.extend_from_slice(rest);
        Ok(self.conn().execute(&sql, args.as_slice())? == 1)
    }

    pub fn renew(&self, lease: Lease, duration: Duration) -> Result<bool> {
        self.fenced(
            lease,
            "lease_expires_ms = ?3",
            &[&(now_ms() + duration_ms(duration))],
        )
    }

    pub fn requeue(&self, lease: Lease, reason: &str) -> Result<bool> {
        self.fenced(
            lease,
            "status = 'queued', started_ms = NULL, error = ?3, lease_expires_ms = NULL,
             unfinished = unfinished - 1",
            &[&reason],
        )
    }

    pub fn set_images(&self, lease: Lease, images: &[ImageResult]) -> Result<bool> {
        self.fenced(lease, "images = ?3", &[&images_json(images)?])
    }

    pub fn set_image(&self, lease: Lease, index: usize, image: &ImageResult) -> Result<bool> {
        self.fenced(
            lease,
            "images = json_replace(images, '$[' || ?3 || ']', json(?4))",
            &[&(index as i64), &images_json(image)?],
        )
    }

    pub fn finish(
        &self,
        lease: Lease,
        status: Status,
        error: Option<&str>,
        images: Option<&[ImageResult]>,
    ) -> Result<bool> {
        let images = images.map(images_json).transpose()?;
        self.fenced(
            lease,
            "status = ?3, error = ?4, finished_ms = ?5, lease_expires_ms = NULL,
             unfinished = unfinished - 1, images = COALESCE(?6, images)",
            &[&status.as_str(), &error, &now_ms(), &images],
        )
    }

    /// `PRAGMA integrity_check`: "ok" when the database is sound.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
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
            stats.count(&status, n)?;
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

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock cannot leave SQLite half-written.
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

/// Enqueues `jobs` in one write transaction (IMMEDIATE: each look-up and
/// its insert are one write, so two deliveries of one commit cannot both
/// miss each other); in order, so a later one sees an earlier one's build.
fn enqueue_all(conn: &mut Connection, jobs: &[NewJob<'_>]) -> Result<Vec<(i64, bool)>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let queued = jobs
        .iter()
        .map(|job| enqueue_in(&tx, job))
        .collect::<Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(queued)
}

/// One delivery's look-ups and insert, inside `tx`. Cached statements:
/// parsed once, not on every delivery while the store's lock is held.
fn enqueue_in(tx: &rusqlite::Transaction<'_>, job: &NewJob<'_>) -> Result<(i64, bool)> {
    let known: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM jobs WHERE delivery = ?1
             UNION ALL SELECT job_id FROM aliases WHERE delivery = ?1
             LIMIT 1",
        )?
        .query_row([job.delivery], |r| r.get(0))
        .optional()?;
    if let Some(id) = known {
        return Ok((id, false));
    }
    let live: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM jobs WHERE repository = ?1 AND commit_sha = ?2
             AND status IN ('queued', 'running', 'succeeded')
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![job.repository, job.commit], |r| r.get(0))
        .optional()?;
    if let Some(id) = live {
        tx.prepare_cached("INSERT INTO aliases (delivery, job_id) VALUES (?1, ?2)")?
            .execute(params![job.delivery, id])?;
        return Ok((id, false));
    }
    tx.prepare_cached(
        "INSERT INTO jobs (delivery, repository, clone_url, pr_number, commit_sha, head_sha, status, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7)",
    )?
    .execute(params![
        job.delivery,
        job.repository,
        job.clone_url,
        job.pr_number as i64,
        job.commit,
        job.head_sha,
        now_ms()
    ])?;
    Ok((tx.last_insert_rowid(), true))
}

/// The committer thread: takes the deliveries waiting (up to
/// [`MAX_BATCH`]) and commits them together; one sync of the disk for the
/// batch. When the batch fails, each is tried alone, so one delivery's
/// error is its own. Ends when the store is dropped.
fn commit_enqueues(conn: &Mutex<Connection>, waiting: mpsc::Receiver<Pending>) {
    while let Ok(first) = waiting.recv() {
        let batch: Vec<Pending> = std::iter::once(first)
            .chain(waiting.try_iter().take(MAX_BATCH - 1))
            .collect();
        let jobs: Vec<NewJob<'_>> = batch.iter().map(|p| p.job.as_new()).collect();
        let mut conn = lock(conn);
        let answers = match enqueue_all(&mut conn, &jobs) {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(_) if jobs.len() > 1 => jobs
                .iter()
                .map(|j| enqueue_all(&mut conn, std::slice::from_ref(j)).map(|q| q[0]))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        drop(conn);
        Pending::answer_all(batch, answers);
    }
}

/// Runs a statement that waits for the disk off the async threads when
/// the runtime has others to run them (a current-thread runtime has not).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[async_trait::async_trait]
impl JobStore for SqliteStore {
    /// Handed to the committer thread: no async thread waits for the disk.
    async fn enqueue(&self, job: &NewJob<'_>) -> Result<(i64, bool)> {
        let send = |p| self.enqueues.as_ref().is_some_and(|q| q.send(p).is_ok());
        Pending::submit(job, send).await
    }
    async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Claim>> {
        blocking(|| SqliteStore::claim(self, owner, lease))
    }
    async fn renew(&self, lease: Lease, duration: Duration) -> Result<bool> {
        blocking(|| SqliteStore::renew(self, lease, duration))
    }
    async fn requeue(&self, lease: Lease, reason: &str) -> Result<bool> {
        blocking(|| SqliteStore::requeue(self, lease, reason))
    }
    async fn set_images(&self, lease: Lease, images: &[ImageResult]) -> Result<bool> {
        blocking(|| SqliteStore::set_images(self, lease, images))
    }
    async fn set_image(&self, lease: Lease, index: usize, image: &ImageResult) -> Result<bool> {
        blocking(|| SqliteStore::set_image(self, lease, index, image))
    }
    async fn finish(
        &self,
        lease: Lease,
        status: Status,
        error: Option<&str>,
        images: Option<&[ImageResult]>,
    ) -> Result<bool> {
        blocking(|| SqliteStore::finish(self, lease, status, error, images))
    }
    async fn get(&self, id: i64) -> Result<Option<Job>> {
        blocking(|| SqliteStore::get(self, id))
    }
    async fn recent(&self, limit: usize) -> Result<Vec<Job>> {
        blocking(|| SqliteStore::recent(self, limit))
    }
    async fn stats(&self) -> Result<Stats> {
        blocking(|| SqliteStore::stats(self))
    }
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
    (i64, String, String, String, i64, String, String, String),
    (i64, Option<i64>, Option<i64>, i64, Option<String>, String),
    (i64, Option<String>),
);

fn row_to_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        (
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ),
        (
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
            r.get(12)?,
            r.get(13)?,
        ),
        (r.get(14)?, r.get(15)?),
    ))
}

fn raw_to_job(r: RawRow) -> Result<Job> {
    let ((id, delivery, repository, clone_url, pr, commit, head_sha, status), times, lease) = r;
    let (created_ms, started_ms, finished_ms, attempts, error, images) = times;
    Ok(Job {
        id,
        delivery,
        repository,
        clone_url,
        pr_number: pr.max(0) as u64,
        commit,
        head_sha,
        status: Status::parse(&status)?,
        created_ms,
        started_ms,
        finished_ms,
        attempts,
        error,
        images: parse_images(&images)?,
        lease_token: lease.0,
        lease_owner: lease.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    fn claim_run(store: &SqliteStore) -> Job {
        match store.claim("test", LEASE).unwrap() {
            Some(Claim::Run { job, .. }) => job,
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
    fn a_restart_requeues_what_was_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let store = SqliteStore::open(&path).unwrap();
        let (a, _) = store.enqueue(&new_job("d-1")).unwrap();
        let first = claim_run(&store);
        drop(store);
        // "kill -9": a reopened store puts the running build back in the queue.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.requeue_interrupted().unwrap(), 1);
        let again = claim_run(&store);
        assert_eq!((again.id, again.attempts), (a, 2));
        // The earlier claim's lease is gone with it.
        assert!(!store
            .finish(first.lease(), Status::Failed, None, None)
            .unwrap());
        assert!(store
            .finish(again.lease(), Status::Succeeded, None, None)
            .unwrap());
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn a_build_that_never_finishes_is_given_up_at_claim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let (a, _) = store.enqueue(&new_job("d-1")).unwrap();
        // Each restart finds it running: the process died under it.
        for n in 1..=MAX_UNFINISHED {
            assert_eq!(claim_run(&store).attempts, n);
            drop(store);
            store = SqliteStore::open(&path).unwrap();
            assert_eq!(store.requeue_interrupted().unwrap(), 1);
        }
        match store.claim("test", LEASE).unwrap() {
            Some(Claim::GaveUp(job)) => assert_eq!((job.id, job.status), (a, Status::Failed)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn old_stores_gain_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        // A store from before the columns, with a build that was running.
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
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.requeue_interrupted().unwrap(), 1);
        // Its earlier attempts are not known to have killed anything.
        let job = claim_run(&store);
        assert_eq!((job.attempts, job.lease_token), (10, 1));
        assert!(store
            .finish(job.lease(), Status::Succeeded, None, None)
            .unwrap());
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }
}
