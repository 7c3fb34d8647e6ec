//! The build workers of `dockless serve`: each takes the oldest queued build
//! from the job store, fetches the merge commit, reads `image.json`, builds
//! every image with the library and pushes it, and records the outcome.
//!
//! Store calls wait for the disk, so they run under `block_in_place`.
//!
//! `DOCKLESS_TEST_BUILD_DELAY_MS` (tests only) sleeps that long before each
//! image, so tests can stop the server in the middle of a build.
//!
//! A build that fails because the disk under `state_dir` is full is not
//! failed: it goes back to the queue with the reason in its `error`, and the
//! workers wait before taking builds again, so it runs once space is freed.
//! A build that finds the registry or the git server unavailable goes back
//! the same way, for a few tries with growing pauses.

use super::app::App;
use super::ghstatus::State;
use super::imagespec;
use super::jobs::{Claim, ImageResult, Job, Status};
use crate::build::{self, BuildOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long the workers pause after a build found the disk full.
const DISK_FULL_PAUSE: Duration = Duration::from_secs(3);

/// Tries of a build that finds the registry or the git server unavailable;
/// between them the worker waits `$DOCKLESS_REQUEUE_SECS` (default 5 s),
/// doubling per try up to a minute, so an outage of a few minutes loses
/// nothing.
const UNAVAILABLE_ATTEMPTS: i64 = 6;
const UNAVAILABLE_PAUSE_CAP: Duration = Duration::from_secs(60);

fn unavailable_pause(attempt: i64) -> Duration {
    let base = std::env::var("DOCKLESS_REQUEUE_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(5));
    base.saturating_mul(1 << attempt.saturating_sub(1).clamp(0, 6))
        .min(UNAVAILABLE_PAUSE_CAP)
}

/// Whether an error message comes from a full disk (ENOSPC, EDQUOT, SQLITE_FULL).
pub fn is_disk_full(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no space left on device",
        "os error 28",
        "disk quota exceeded",
        "os error 122",
        "database or disk is full",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// What a finished run asks of the store.
enum Outcome {
    Done(Status, Option<String>),
    /// Back to the queue, with the reason; the worker pauses before its next build.
    Requeue {
        reason: String,
        pause: Duration,
    },
}

impl Outcome {
    fn disk_full(e: &str) -> Outcome {
        Outcome::Requeue {
            reason: format!("waiting for disk space under state_dir: {e}"),
            pause: DISK_FULL_PAUSE,
        }
    }

    /// Back to the queue to wait for `what`, unless the tries are spent.
    fn waiting(what: &str, e: &str, job: &Job) -> Option<Outcome> {
        (job.attempts < UNAVAILABLE_ATTEMPTS).then(|| Outcome::Requeue {
            reason: format!("waiting for {what}: {e}"),
            pause: unavailable_pause(job.attempts),
        })
    }
}

/// Takes builds until the server stops.
pub async fn run_worker(app: Arc<App>, n: usize) {
    loop {
        if app.stopping.load(Ordering::SeqCst) {
            break;
        }
        // Register for a wake-up before looking, so a build queued in between is not missed.
        let woken = app.wake.notified();
        match tokio::task::block_in_place(|| app.store.claim()) {
            Ok(Some(Claim::GaveUp(job))) => gave_up(&app, &job).await,
            Ok(Some(Claim::Run(job))) => {
                tracing::info!(
                    worker = n,
                    build_id = job.id,
                    attempt = job.attempts,
                    "build started"
                );
                if let Some(pause) = run_job(&app, job).await {
                    // A full disk or a registry away: give it time.
                    tokio::time::sleep(pause).await;
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            Err(e) => {
                tracing::error!("job store: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Appends to `state_dir/logs/<id>.log`; the build's own record, beside the store.
struct BuildLog(Option<std::fs::File>);

impl BuildLog {
    fn open(state_dir: &Path, id: i64) -> BuildLog {
        let dir = state_dir.join("logs");
        let file = std::fs::create_dir_all(&dir).and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{id}.log")))
        });
        BuildLog(file.ok())
    }
    fn line(&mut self, text: &str) {
        if let Some(f) = &mut self.0 {
            let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let _ = writeln!(f, "{t} {text}");
        }
    }
}

async fn post_status(app: &App, job: &Job, state: State, description: &str) {
    if let Some(client) = &app.statuses {
        if let Err(e) = client
            .post(&job.repository, &job.commit, state, description, None)
            .await
        {
            tracing::warn!(build_id = job.id, "commit status not posted: {e}");
        }
    }
}

/// Writes an outcome, trying again while the store cannot write (a full
/// disk): a build must not stay `running` while nothing runs it. Gives up
/// only when the server stops; the build is then `running` in the store and
/// goes back to the queue at the next start.
async fn record(app: &App, id: i64, outcome: &Outcome) {
    let mut pause = Duration::from_millis(200);
    loop {
        let res = tokio::task::block_in_place(|| match outcome {
            Outcome::Done(status, error) => app.store.finish(id, *status, error.as_deref()),
            Outcome::Requeue { reason, .. } => app.store.requeue(id, reason),
        });
        match res {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(build_id = id, "cannot record the outcome: {e}");
                if app.stopping.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A build failed at claim time because its attempts kept killing the service.
async fn gave_up(app: &App, job: &Job) {
    let error = job.error.as_deref().unwrap_or_default();
    BuildLog::open(&app.cfg.state_dir, job.id).line(&format!("build failed: {error}"));
    tracing::error!(
        build_id = job.id,
        attempts = job.attempts,
        "build failed: {error}"
    );
    post_status(app, job, State::Failure, error).await;
}

/// Runs one build; when it went back to the queue, the pause to take first.
async fn run_job(app: &App, job: Job) -> Option<Duration> {
    let mut log = BuildLog::open(&app.cfg.state_dir, job.id);
    log.line(&format!(
        "attempt {} of build {} for {}@{} (PR #{})",
        job.attempts, job.id, job.repository, job.commit, job.pr_number
    ));
    post_status(app, &job, State::Pending, "dockless is building the images").await;
    let work = app
        .cfg
        .state_dir
        .join("work")
        .join(format!("{}-{}", job.id, job.attempts));
    let outcome = match execute(app, &job, &work, &mut log).await {
        Ok(images) => {
            let failed: Vec<&ImageResult> = images
                .iter()
                .filter(|i| i.status != Status::Succeeded)
                .collect();
            let disk_full = failed
                .iter()
                .filter_map(|i| i.error.as_deref())
                .find(|e| is_disk_full(e));
            let unavailable = failed
                .iter()
                .find(|i| i.registry_unavailable)
                .and_then(|i| i.error.as_deref());
            let waiting = unavailable.and_then(|e| Outcome::waiting("the registry", e, &job));
            if let Some(e) = disk_full {
                Outcome::disk_full(e)
            } else if let Some(outcome) = waiting {
                outcome
            } else if failed.is_empty() {
                Outcome::Done(Status::Succeeded, None)
            } else {
                Outcome::Done(
                    Status::Failed,
                    Some(format!(
                        "{} of {} images failed",
                        failed.len(),
                        images.len()
                    )),
                )
            }
        }
        Err(f) if is_disk_full(&f.message) => Outcome::disk_full(&f.message),
        Err(f) => f
            .waiting_for
            .and_then(|what| Outcome::waiting(what, &f.message, &job))
            .unwrap_or(Outcome::Done(Status::Failed, Some(f.message))),
    };
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_file(work.with_extension("index"));
    record(app, job.id, &outcome).await;
    let (status, error) = match outcome {
        Outcome::Requeue { reason, pause } => {
            log.line(&format!("build queued again: {reason}"));
            tracing::warn!(build_id = job.id, ?pause, "build queued again: {reason}");
            return Some(pause);
        }
        Outcome::Done(status, error) => (status, error),
    };
    log.line(&format!(
        "build {}: {}",
        status.as_str(),
        error.as_deref().unwrap_or("every image pushed")
    ));
    tracing::info!(
        build_id = job.id,
        status = status.as_str(),
        "build finished"
    );
    let (state, text) = match status {
        Status::Succeeded => (State::Success, "all images built and pushed".to_string()),
        _ => (State::Failure, error.unwrap_or_default()),
    };
    post_status(app, &job, state, &text).await;
    None
}

fn fetch_lock(app: &App, repository: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = app.fetch_locks.lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(repository.to_string()).or_default().clone()
}

fn test_delay() -> Option<Duration> {
    std::env::var("DOCKLESS_TEST_BUILD_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// Fetch, read image.json, and build each image; a whole-build error is Err.
async fn execute(
    app: &App,
    job: &Job,
    work: &Path,
    log: &mut BuildLog,
) -> Result<Vec<ImageResult>, JobFailure> {
    let _ = std::fs::remove_dir_all(work);
    let checkout = work.join("src");
    {
        let lock = fetch_lock(app, &job.repository);
        let _held = lock.lock().await;
        let cache = super::gitfetch::cache_path(&app.cfg.state_dir.join("git"), &job.repository);
        let (url, commit, dest) = (job.clone_url.clone(), job.commit.clone(), checkout.clone());
        tokio::task::spawn_blocking(move || {
            super::gitfetch::checkout(&url, &commit, &cache, &dest)
        })
        .await
        .map_err(|e| JobFailure::from(format!("fetching {}: {e}", job.commit)))?
        .map_err(|e| JobFailure {
            message: format!("fetching {}: {e}", job.commit),
            waiting_for: e.is_unavailable().then_some("the git server"),
        })?;
    }
    log.line(&format!("fetched {}", job.commit));
    let entries = imagespec::read(&checkout).map_err(|e| JobFailure::from(e.to_string()))?;
    if entries.is_empty() {
        return Err(JobFailure::from("image.json lists no images".to_string()));
    }
    let mut results: Vec<ImageResult> = entries
        .iter()
        .map(|e| ImageResult {
            service_name: e.service_name.clone(),
            version: e.version.clone(),
            kind: e.kind.clone(),
            status: Status::Queued,
            reference: None,
            error: None,
            registry_unavailable: false,
        })
        .collect();
    let _ = tokio::task::block_in_place(|| app.store.set_images(job.id, &results));
    // One image per write: the list is written once, not once per image.
    let record_image = |i: usize, image: &ImageResult| {
        let _ = tokio::task::block_in_place(|| app.store.set_image(job.id, i, image));
    };
    for (i, entry) in entries.iter().enumerate() {
        results[i].status = Status::Running;
        record_image(i, &results[i]);
        let outcome = build_one(app, entry, &checkout).await;
        match outcome {
            Ok(reference) => {
                log.line(&format!("pushed {reference}"));
                results[i].status = Status::Succeeded;
                results[i].reference = Some(reference);
            }
            Err(failure) => {
                log.line(&format!(
                    "image {} ({}): {}",
                    i + 1,
                    if entry.service_name.is_empty() {
                        "unnamed"
                    } else {
                        &entry.service_name
                    },
                    failure.message
                ));
                results[i].status = Status::Failed;
                results[i].error = Some(failure.message);
                results[i].registry_unavailable = failure.registry_unavailable;
            }
        }
        record_image(i, &results[i]);
    }
    Ok(results)
}

/// Why a whole build failed.
struct JobFailure {
    message: String,
    /// What was unavailable (worth waiting for), if that was the cause.
    waiting_for: Option<&'static str>,
}

impl From<String> for JobFailure {
    fn from(message: String) -> Self {
        JobFailure {
            message,
            waiting_for: None,
        }
    }
}

/// Why one image failed.
struct ImageFailure {
    message: String,
    /// The push failed because the registry was unavailable.
    registry_unavailable: bool,
}

impl From<String> for ImageFailure {
    fn from(message: String) -> Self {
        ImageFailure {
            message,
            registry_unavailable: false,
        }
    }
}

/// Builds and pushes one entry; returns `REGISTRY/NAME:VERSION@DIGEST`.
async fn build_one(
    app: &App,
    entry: &imagespec::RawEntry,
    checkout: &Path,
) -> Result<String, ImageFailure> {
    let image = imagespec::resolve(entry, checkout, &app.cfg.registry)?;
    if let Some(d) = test_delay() {
        tokio::time::sleep(d).await;
    }
    let cache_dir: PathBuf = app.cfg.state_dir.join("cache");
    let mut opts = BuildOptions::new(&image.context_dir, &cache_dir);
    opts.dockerfile = Some(image.dockerfile.clone());
    opts.dockerfile_root = Some(checkout.to_path_buf());
    opts.source_date_epoch =
        crate::cache::source_date_epoch().map_err(|e| ImageFailure::from(e.to_string()))?;
    // Bases on the service's own registry are reached as its pushes are.
    if app.cfg.insecure_registry {
        opts.remote = opts.remote.insecure(&app.cfg.registry);
    }
    opts.remote.ca_certs = app.cfg.ca_cert.iter().cloned().collect();
    opts.add_url_max_size = app.cfg.add_url_max_size();
    let remote = opts.remote.clone();
    let built = tokio::task::spawn_blocking(move || build::build(&opts))
        .await
        .map_err(|e| ImageFailure::from(format!("build: {e}")))?
        .map_err(|e| ImageFailure::from(format!("build: {e}")))?;
    let outcome = crate::remote::publish::publish(
        &built.store,
        &built.image,
        &image.target,
        &remote,
        &cache_dir,
    )
    .await
    .map_err(|e| ImageFailure {
        message: format!("push to {}: {e}", image.target),
        registry_unavailable: e.is_unavailable(),
    })?;
    prune_cache(&cache_dir, &built.image);
    Ok(format!("{}@{}", image.target, outcome.manifest_digest))
}

/// Keeps the service's cache under `$DOCKLESS_CACHE_MAX_SIZE` (default 10G),
/// as the CLI does after each build, never removing the image just pushed.
fn prune_cache(cache_dir: &Path, image: &crate::image::BuiltImage) {
    use crate::cache;
    let max = std::env::var("DOCKLESS_CACHE_MAX_SIZE")
        .ok()
        .and_then(|v| cache::parse_size(&v).ok())
        .unwrap_or(cache::DEFAULT_MAX_SIZE);
    let keep = image.blob_digests().into_iter().collect();
    if let Err(e) = cache::prune(cache_dir, max, &keep) {
        tracing::warn!("cannot prune the cache {}: {e}", cache_dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::is_disk_full;

    #[test]
    fn disk_full_messages() {
        for m in [
            "build: writing layer: No space left on device (os error 28)",
            "fetching abc: git fetch failed: fatal: write error: No space left on device",
            "job store: database or disk is full",
            "Disk quota exceeded (os error 122)",
        ] {
            assert!(is_disk_full(m), "{m}");
        }
        for m in ["push to r/api:1: HTTP 500", "fetching abc: not found", ""] {
            assert!(!is_disk_full(m), "{m}");
        }
    }
}
