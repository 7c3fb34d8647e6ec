//! The durable job store: one row per accepted delivery, so builds survive
//! restarts. A delivery id maps to exactly one build; a build moves
//! queued → running → succeeded | failed.
//!
//! Two implementations of one [`JobStore`] trait: [`SqliteStore`] under
//! `state_dir` (one process, the default) and [`PgStore`] on a PostgreSQL
//! database that any number of `dockless serve` replicas share.
//!
//! Each claim counts an attempt before the build starts, and an attempt
//! that records no outcome (the process died under it) stays counted as
//! unfinished: a build that has killed the service [`MAX_UNFINISHED`] times
//! is failed when it is next claimed, instead of being run again.
//!
//! A claim is a lease: it holds until `lease_expires_ms`, its holder renews
//! it while the build runs, and once it expires any worker may claim the
//! build again. Each claim bumps the build's `lease_token`; every write of
//! a claimant names its token, so one whose lease was taken over (a replica
//! paused or cut off past its lease) changes nothing (fencing).
//!
//! Deliveries for a commit that already has a live build (queued, running
//! or succeeded) of the same repository join that build instead of making a
//! new one: the `aliases` table remembers which build each such delivery
//! got, so its redeliveries keep getting the same answer.

mod pg_schema;
mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("job store (PostgreSQL): {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("job store (PostgreSQL): no connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("job store: database_url: {0}")]
    Config(String),
    #[error("job store: {0}")]
    Schema(String),
    #[error("job store: corrupt row: {0}")]
    Corrupt(String),
    #[error("job store: closed")]
    Closed,
    #[error("job store: a delivery needs its id (X-GitHub-Delivery)")]
    NoDeliveryId,
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
    /// Marked running: run it. `took_over` when an earlier claimant's
    /// lease had expired under it.
    Run { job: Job, took_over: bool },
    /// Failed instead: its earlier attempts never finished.
    GaveUp(Job),
}

/// A claimant's hold on a running build: writes carry it, and change
/// nothing once another claim has bumped the build's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub build_id: i64,
    pub token: i64,
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

impl<'de> serde::Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Status::parse(&s).map_err(serde::de::Error::custom)
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
    /// Bumped by each claim; see [`Lease`].
    pub lease_token: i64,
    /// The replica that claimed it last.
    pub lease_owner: Option<String>,
}

impl Job {
    /// The lease of the claim that returned this job.
    pub fn lease(&self) -> Lease {
        Lease {
            build_id: self.id,
            token: self.lease_token,
        }
    }
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

/// A [`NewJob`] that owns its fields: what a delivery hands to a store's
/// committer, which outlives the request.
#[derive(Debug, Clone)]
struct OwnedJob {
    delivery: String,
    repository: String,
    clone_url: String,
    pr_number: u64,
    commit: String,
    head_sha: String,
}

impl OwnedJob {
    fn as_new(&self) -> NewJob<'_> {
        NewJob {
            delivery: &self.delivery,
            repository: &self.repository,
            clone_url: &self.clone_url,
            pr_number: self.pr_number,
            commit: &self.commit,
            head_sha: &self.head_sha,
        }
    }
}

impl From<&NewJob<'_>> for OwnedJob {
    fn from(job: &NewJob<'_>) -> OwnedJob {
        OwnedJob {
            delivery: job.delivery.to_string(),
            repository: job.repository.to_string(),
            clone_url: job.clone_url.to_string(),
            pr_number: job.pr_number,
            commit: job.commit.to_string(),
            head_sha: job.head_sha.to_string(),
        }
    }
}

/// A delivery waiting for a store's committer, and where its answer goes.
struct Pending {
    job: OwnedJob,
    reply: tokio::sync::oneshot::Sender<Result<(i64, bool)>>,
}

impl Pending {
    /// Hands `job` to a committer through `send` (false: the committer is
    /// gone) and waits for its answer.
    async fn submit(job: &NewJob<'_>, send: impl FnOnce(Pending) -> bool) -> Result<(i64, bool)> {
        // An empty id is PostgreSQL's warm-up call (see pg_schema).
        if job.delivery.is_empty() {
            return Err(JobError::NoDeliveryId);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = job.into();
        if !send(Pending { job, reply }) {
            return Err(JobError::Closed);
        }
        answer.await.map_err(|_| JobError::Closed)?
    }

    /// Gives each of `batch` its answer, in order.
    fn answer_all(batch: Vec<Pending>, answers: Vec<Result<(i64, bool)>>) {
        for (p, a) in batch.into_iter().zip(answers) {
            let _ = p.reply.send(a);
        }
    }
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

impl Stats {
    fn count(&mut self, status: &str, n: i64) -> Result<()> {
        match Status::parse(status)? {
            Status::Queued => self.queued = n,
            Status::Running => self.running = n,
            Status::Succeeded => self.succeeded = n,
            Status::Failed => self.failed = n,
        }
        Ok(())
    }
}

/// The queue as the server and the workers use it. Writes of a claimant
/// take its [`Lease`] and return `false` when the lease is no longer its own.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// Enqueues a delivery, or returns the build it already has: (id, created now).
    /// A new delivery for a commit whose build is queued, running or
    /// succeeded gets that build; after a failed build it makes a new one.
    async fn enqueue(&self, job: &NewJob<'_>) -> Result<(i64, bool)>;

    /// Takes the oldest queued build, or a running one whose lease expired,
    /// and marks it running under a new lease held by `owner` for `lease`.
    /// A build whose unfinished attempts reached [`MAX_UNFINISHED`] is
    /// failed instead, and returned as [`Claim::GaveUp`].
    async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Claim>>;

    /// Extends the lease by `lease` from now.
    async fn renew(&self, lease: Lease, duration: Duration) -> Result<bool>;

    /// Puts a running build back in the queue, with the reason it could not
    /// run now; it keeps its attempts count, and this attempt counts as finished.
    async fn requeue(&self, lease: Lease, reason: &str) -> Result<bool>;

    /// Records every image's progress at once (when the list is first known).
    async fn set_images(&self, lease: Lease, images: &[ImageResult]) -> Result<bool>;

    /// Records the progress of image `index` alone; an index past the list
    /// changes nothing.
    async fn set_image(&self, lease: Lease, index: usize, image: &ImageResult) -> Result<bool>;

    /// Ends a running build; its attempt counts as finished. `images`, when
    /// given, replaces the progress recorded so far (whose writes may have
    /// failed while the store was away).
    async fn finish(
        &self,
        lease: Lease,
        status: Status,
        error: Option<&str>,
        images: Option<&[ImageResult]>,
    ) -> Result<bool>;

    async fn get(&self, id: i64) -> Result<Option<Job>>;

    /// The newest builds first.
    async fn recent(&self, limit: usize) -> Result<Vec<Job>>;

    async fn stats(&self) -> Result<Stats>;

    /// Rings `queued` whenever another process queues a build (PostgreSQL's
    /// LISTEN); a store only this process writes has nothing to watch.
    fn watch_queue(&self, queued: Arc<tokio::sync::Notify>) {
        let _ = queued;
    }
}

/// Why a build was given up at claim time.
fn gave_up_error() -> String {
    format!(
        "given up: {MAX_UNFINISHED} attempts never finished (the service was killed, crashed or \
         ran out of memory during each), so it is not run again"
    )
}

fn images_json<T: Serialize + ?Sized>(images: &T) -> Result<String> {
    serde_json::to_string(images).map_err(|e| JobError::Corrupt(e.to_string()))
}

fn parse_images(text: &str) -> Result<Vec<ImageResult>> {
    serde_json::from_str(text).map_err(|e| JobError::Corrupt(e.to_string()))
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
