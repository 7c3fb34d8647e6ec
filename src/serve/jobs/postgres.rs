//! The job store on PostgreSQL, shared by any number of replicas.
//!
//! Idempotency across replicas rests on unique constraints (a delivery is
//! one row of `jobs` or `aliases`; a commit has one live build), never on
//! in-process locks: an insert that loses a race inserts nothing, and the
//! look-up runs again and finds the winner. Workers claim with
//! `FOR UPDATE SKIP LOCKED` and are woken by `NOTIFY` (see `watch_queue`),
//! sent after the enqueue's commit, off the acknowledgement path (see
//! `wake_replicas`). Enqueues are group-committed (see `commit_enqueues`).
//! Lease times are the database's clock, so replicas' clocks need not agree.

use super::{
    duration_ms, gave_up_error, images_json, parse_images, pg_schema, Claim, ImageResult, Job,
    JobError, JobStore, Lease, NewJob, Pending, Result, Stats, Status, MAX_UNFINISHED,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Row;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The channel `wake_replicas` notifies and `watch_queue` listens on.
const CHANNEL: &str = "dockless_jobs";
/// The database's clock in milliseconds since the epoch.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
/// How long a request waits for a connection (or to make one) before the
/// delivery gets 503: well inside GitHub's 10 s.
const CONNECT_WAIT: Duration = Duration::from_secs(4);
const POOL_SIZE: usize = 16;
/// Enqueue transactions in flight at once, and the most deliveries one takes.
const COMMITTERS: usize = 4;
const MAX_BATCH: usize = 64;
/// Enqueue warm-up calls per connection at start: PostgreSQL plans a
/// prepared statement afresh for its first five runs, then settles on a
/// generic plan.
const WARM_UP_CALLS: usize = 6;

/// `dockless_enqueue()` for each delivery of a batch, given as arrays.
const ENQUEUE: &str = "SELECT d.n, e.build_id, e.created
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
        WITH ORDINALITY AS d(delivery, repository, clone_url, pr_number, commit_sha, head_sha, n)
    CROSS JOIN LATERAL dockless_enqueue(d.delivery, d.repository, d.clone_url, d.pr_number,
        d.commit_sha, d.head_sha) AS e";

const COLUMNS: &str = "id, delivery, repository, clone_url, pr_number, commit_sha, head_sha, status, created_ms, started_ms, finished_ms, attempts, error, images::text, lease_token, lease_owner";

pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// To the tasks that group-commit enqueues (see `commit_enqueues`).
    enqueues: tokio::sync::mpsc::UnboundedSender<Pending>,
    /// `wake_replicas` and the committers.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl PgStore {
    /// Connects to `url` (TLS as its `sslmode` says, trusting the system's
    /// roots and `ca_cert`) and applies the migrations.
    pub async fn connect(url: &str, ca_cert: Option<PathBuf>) -> Result<PgStore> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| JobError::Config(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_WAIT);
        }
        if config.get_application_name().is_none() {
            config.application_name("dockless serve");
        }
        let mut tls = crate::remote::tls::client_config(&Vec::from_iter(ca_cert))
            .map_err(|e| JobError::Config(e.to_string()))?;
        // The registry's ALPN (http/1.1) would make PostgreSQL 17 refuse the handshake.
        tls.alpn_protocols.clear();
        let tls = MakeRustlsConnect::new(tls);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_WAIT))
            .create_timeout(Some(CONNECT_WAIT))
            .recycle_timeout(Some(CONNECT_WAIT))
            .build()
            .map_err(|e| JobError::Config(e.to_string()))?;
        let mut client = pool.get().await?;
        let applied = pg_schema::migrate(&mut client).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "job store: PostgreSQL schema migrated");
        }
        warm_up(&pool).await;
        let queued = Arc::new(tokio::sync::Notify::new());
        let mut tasks = vec![tokio::spawn(wake_replicas(pool.clone(), queued.clone()))];
        let (enqueues, waiting) = tokio::sync::mpsc::unbounded_channel();
        let waiting = Arc::new(tokio::sync::Mutex::new(waiting));
        for _ in 0..COMMITTERS {
            let committer = commit_enqueues(pool.clone(), waiting.clone(), queued.clone());
            tasks.push(tokio::spawn(committer));
        }
        Ok(PgStore {
            pool,
            config,
            tls,
            enqueues,
            tasks,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// One write guarded by the claimant's lease: true when it held.
    async fn fenced(
        &self,
        lease: Lease,
        set: &str,
        rest: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE jobs SET {set} WHERE id = $1 AND lease_token = $2 AND status = 'running'"
        );
        let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&lease.build_id, &lease.token];
        args.extend_from_slice(rest);
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client.execute(&stmt, &args).await? == 1)
    }
}

#[async_trait::async_trait]
impl JobStore for PgStore {
    async fn enqueue(&self, job: &NewJob<'_>) -> Result<(i64, bool)> {
        Pending::submit(job, |p| self.enqueues.send(p).is_ok()).await
    }

    async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Claim>> {
        let client = self.client().await?;
        let sql = format!(
            "WITH pick AS (
                SELECT id, status AS was FROM jobs
                WHERE status = 'queued' OR (status = 'running' AND lease_expires_ms < {NOW_MS})
                ORDER BY id LIMIT 1
                FOR UPDATE SKIP LOCKED)
             UPDATE jobs SET
                status = CASE WHEN unfinished >= $1 THEN 'failed' ELSE 'running' END,
                error = CASE WHEN unfinished >= $1 THEN $2 ELSE error END,
                finished_ms = CASE WHEN unfinished >= $1 THEN {NOW_MS} ELSE finished_ms END,
                started_ms = CASE WHEN unfinished >= $1 THEN started_ms ELSE {NOW_MS} END,
                attempts = CASE WHEN unfinished >= $1 THEN attempts ELSE attempts + 1 END,
                unfinished = CASE WHEN unfinished >= $1 THEN unfinished ELSE unfinished + 1 END,
                lease_token = lease_token + 1,
                lease_owner = $3,
                lease_expires_ms = {NOW_MS} + $4
             FROM pick WHERE jobs.id = pick.id
             RETURNING {}, pick.was",
            COLUMNS
                .split(", ")
                .map(|c| format!("jobs.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let stmt = client.prepare_cached(&sql).await?;
        let row = client
            .query_opt(
                &stmt,
                &[
                    &MAX_UNFINISHED,
                    &gave_up_error(),
                    &owner,
                    &duration_ms(lease),
                ],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let was: String = row.get(16);
        let job = row_to_job(&row)?;
        Ok(Some(match job.status {
            Status::Failed => Claim::GaveUp(job),
            _ => Claim::Run {
                job,
                took_over: was == "running",
            },
        }))
    }

    async fn renew(&self, lease: Lease, duration: Duration) -> Result<bool> {
        let set = format!("lease_expires_ms = {NOW_MS} + $3");
        self.fenced(lease, &set, &[&duration_ms(duration)]).await
    }

    async fn requeue(&self, lease: Lease, reason: &str) -> Result<bool> {
        self.fenced(
            lease,
            "status = 'queued', started_ms = NULL, error = $3, lease_expires_ms = NULL,
             unfinished = unfinished - 1",
            &[&reason],
        )
        .await
    }

    async fn set_images(&self, lease: Lease, images: &[ImageResult]) -> Result<bool> {
        self.fenced(lease, "images = $3::text::jsonb", &[&images_json(images)?])
            .await
    }

    async fn set_image(&self, lease: Lease, index: usize, image: &ImageResult) -> Result<bool> {
        let path = vec![index.to_string()];
        self.fenced(
            lease,
            "images = jsonb_set(images, $3::text[], $4::text::jsonb, false)",
            &[&path, &images_json(image)?],
        )
        .await
    }

    async fn finish(
        &self,
        lease: Lease,
        status: Status,
        error: Option<&str>,
        images: Option<&[ImageResult]>,
    ) -> Result<bool> {
        let images = images.map(images_json).transpose()?;
        let set = format!(
            "status = $3, error = $4, finished_ms = {NOW_MS}, lease_expires_ms = NULL,
             unfinished = unfinished - 1, images = COALESCE($5::text::jsonb, images)"
        );
        self.fenced(lease, &set, &[&status.as_str(), &error, &images])
            .await
    }

    async fn get(&self, id: i64) -> Result<Option<Job>> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        let stmt = client.prepare_cached(&sql).await?;
        client
            .query_opt(&stmt, &[&id])
            .await?
            .map(|r| row_to_job(&r))
            .transpose()
    }

    async fn recent(&self, limit: usize) -> Result<Vec<Job>> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM jobs ORDER BY id DESC LIMIT $1");
        let rows = client.query(&sql, &[&(limit as i64)]).await?;
        rows.iter().map(row_to_job).collect()
    }

    async fn stats(&self) -> Result<Stats> {
        let client = self.client().await?;
        let mut stats = Stats::default();
        for row in client
            .query("SELECT status, COUNT(*) FROM jobs GROUP BY status", &[])
            .await?
        {
            stats.count(row.get(0), row.get(1))?;
        }
        let rows = client
            .query(
                "SELECT finished_ms - started_ms FROM jobs
                 WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL
                 ORDER BY id DESC LIMIT 10000",
                &[],
            )
            .await?;
        stats.durations = rows
            .iter()
            .map(|r| r.get::<_, i64>(0).max(0) as f64 / 1000.0)
            .collect();
        Ok(stats)
    }

    fn watch_queue(&self, queued: Arc<tokio::sync::Notify>) {
        tokio::spawn(listen_forever(
            self.config.clone(),
            self.tls.clone(),
            queued,
        ));
    }
}

/// One committer: takes the deliveries waiting (up to [`MAX_BATCH`]) and
/// enqueues them with one statement ([`ENQUEUE`]): one round trip, one
/// transaction, one WAL flush for the batch. While [`COMMITTERS`] batches
/// are in flight, new deliveries gather for the next. A batch that failed
/// was rolled back whole; its deliveries are then tried one by one, so each
/// error is its own (two replicas' batches that deadlock on one commit's
/// deliveries end that way too).
async fn commit_enqueues(
    pool: Pool,
    waiting: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Pending>>>,
    queued: Arc<tokio::sync::Notify>,
) {
    loop {
        let mut batch = Vec::new();
        if waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let jobs: Vec<NewJob<'_>> = batch.iter().map(|p| p.job.as_new()).collect();
        let answers: Vec<Result<(i64, bool)>> = match enqueue_all(&pool, &jobs).await {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(_) if jobs.len() > 1 => {
                let alone = jobs
                    .iter()
                    .map(|j| enqueue_all(&pool, std::slice::from_ref(j)));
                let alone = futures_util::future::join_all(alone).await;
                alone.into_iter().map(|r| r.map(|q| q[0])).collect()
            }
            Err(e) => vec![Err(e)],
        };
        if answers.iter().any(|a| matches!(a, Ok((_, true)))) {
            queued.notify_one();
        }
        Pending::answer_all(batch, answers);
    }
}

/// `jobs` enqueued by one statement, in order (a later one sees an earlier
/// one's build): (build id, created now) of each.
async fn enqueue_all<'a>(pool: &Pool, jobs: &[NewJob<'a>]) -> Result<Vec<(i64, bool)>> {
    let column = |f: fn(&NewJob<'a>) -> &'a str| jobs.iter().map(f).collect::<Vec<_>>();
    let pr_numbers: Vec<i64> = jobs.iter().map(|j| j.pr_number as i64).collect();
    let client = pool.get().await?;
    let stmt = client.prepare_cached(ENQUEUE).await?;
    let rows = client
        .query(
            &stmt,
            &[
                &column(|j| j.delivery),
                &column(|j| j.repository),
                &column(|j| j.clone_url),
                &pr_numbers,
                &column(|j| j.commit),
                &column(|j| j.head_sha),
            ],
        )
        .await?;
    let mut queued = vec![None; jobs.len()];
    for row in rows {
        let n: i64 = row.try_get(0)?;
        let slot = usize::try_from(n - 1).ok().and_then(|i| queued.get_mut(i));
        if let Some(slot) = slot {
            *slot = Some((row.try_get(1)?, row.try_get(2)?));
        }
    }
    queued
        .into_iter()
        .map(|q| q.ok_or_else(|| JobError::Corrupt("dockless_enqueue returned no row".into())))
        .collect()
}

/// Opens the pool's connections now, each with the enqueue prepared and
/// run until planned, so that a replica's first burst of deliveries does
/// not wait for PostgreSQL to start a backend per connection, compile
/// `dockless_enqueue` and plan its statements (on 3 replicas this was most
/// of the burst's p99). Best effort: a database that allows fewer
/// connections is still used.
async fn warm_up(pool: &Pool) {
    let open = (0..POOL_SIZE).map(|_| async {
        let client = pool.get().await?;
        let stmt = client.prepare_cached(ENQUEUE).await?;
        // An empty delivery plans every statement and writes nothing (see
        // pg_schema's ENQUEUE_WARMABLE).
        let (none, zero) = (&[""][..], &[0i64][..]);
        for _ in 0..WARM_UP_CALLS {
            client
                .query(&stmt, &[&none, &none, &none, &zero, &none, &none])
                .await?;
        }
        Ok::<_, JobError>(client)
    });
    // All held at once, so each is its own connection.
    let opened = futures_util::future::join_all(open).await;
    if let Some(Err(e)) = opened.iter().find(|c| c.is_err()) {
        tracing::debug!("job store: opening the pool's connections: {e}");
    }
}

/// Sends a NOTIFY on [`CHANNEL`] after each ring of `queued`, waking the
/// idle workers of every replica. Rings that come while one is being sent
/// make one more, not one each. Its commit does not wait for the disk
/// (`synchronous_commit` off for this transaction alone): a lost wake-up
/// costs a poll interval, never a build, and a notifying commit holds a
/// cluster-wide lock. When it cannot be sent, the build is queued anyway
/// and the workers' polls find it.
async fn wake_replicas(pool: Pool, queued: Arc<tokio::sync::Notify>) {
    loop {
        queued.notified().await;
        let sent = async {
            let client = pool.get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')",
                )
                .await?;
            client.execute(&stmt, &[&CHANNEL]).await?;
            Ok::<_, JobError>(())
        };
        if let Err(e) = sent.await {
            tracing::warn!("job store: NOTIFY: {e}");
        }
    }
}

/// Holds a connection that LISTENs on [`CHANNEL`] and rings `queued` on
/// each notification; reconnects when the database goes away, ringing
/// once after each reconnection for what it may have missed.
async fn listen_forever(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    queued: Arc<tokio::sync::Notify>,
) {
    use futures_util::StreamExt as _;
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let statement = format!("LISTEN {CHANNEL}");
                let listen = client.batch_execute(&statement);
                // The connection must be polled for the LISTEN to complete.
                let listening = async {
                    tokio::pin!(listen);
                    loop {
                        tokio::select! {
                            r = &mut listen => return r.is_ok(),
                            m = messages.next() => if !matches!(m, Some(Ok(_))) { return false },
                        }
                    }
                };
                if listening.await {
                    tracing::debug!("job store: listening for queued builds");
                    queued.notify_waiters();
                    while let Some(Ok(message)) = messages.next().await {
                        if let tokio_postgres::AsyncMessage::Notification(_) = message {
                            queued.notify_one();
                        }
                    }
                }
                tracing::warn!("job store: lost the LISTEN connection; reconnecting");
            }
            Err(e) => tracing::warn!("job store: LISTEN connection: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn row_to_job(r: &Row) -> Result<Job> {
    let images: String = r.try_get(13)?;
    Ok(Job {
        id: r.try_get(0)?,
        delivery: r.try_get(1)?,
        repository: r.try_get(2)?,
        clone_url: r.try_get(3)?,
        pr_number: r.try_get::<_, i64>(4)?.max(0) as u64,
        commit: r.try_get(5)?,
        head_sha: r.try_get(6)?,
        status: Status::parse(r.try_get(7)?)?,
        created_ms: r.try_get(8)?,
        started_ms: r.try_get(9)?,
        finished_ms: r.try_get(10)?,
        attempts: r.try_get(11)?,
        error: r.try_get(12)?,
        images: parse_images(&images)?,
        lease_token: r.try_get(14)?,
        lease_owner: r.try_get(15)?,
    })
}
