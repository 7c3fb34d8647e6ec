//! The build workers of `dockless serve`: each takes the oldest queued build
//! from the job store, fetches the merge commit, reads `image.json`, builds
//! every image with the library and pushes it, and records the outcome.
//!
//! A claimed build is held under a lease that the worker renews while it
//! runs; when another replica has taken the build over (this one paused or
//! cut off past the lease), the build stops here and its writes are fenced.
//!
//! A build that fails because the disk under `state_dir` is full is not
//! failed: it goes back to the queue with the reason in its `error`, and the
//! workers wait before taking builds again, so it runs once space is freed.
//! A build that finds the registry or the git server unavailable goes back
//! the same way, for a few tries with growing pauses (see `failure` for how
//! those causes are told apart).

mod failure;

use super::app::App;
use super::ghstatus::CommitState;
use super::imagespec;
use super::jobs::{Claim, ImageResult, Job, Lease, Status};
use crate::attest::attach::Attached;
use crate::attest::provenance::Source;
use crate::attest::supply::SupplyOptions;
use crate::build::BuildOptions;
use crate::cache::registry::CacheSpec;
use crate::pipeline::{self, Destination, PipelineOptions};
use failure::{BuildFailure, Hindrance, ImageFailure};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Test seam: the environment variable that makes each image wait before
/// its build, so tests can stop the server or fill its disk while a build
/// runs. The tests drive the real binary (`cargo test` builds it with the
/// package's default features, so a cargo feature could not reach it); this
/// variable is read once at start-up into [`App::test_build_delay`], which
/// is `None` in production.
pub(super) const TEST_BUILD_DELAY_VAR: &str = "DOCKLESS_TEST_BUILD_DELAY_MS";

/// The test seam's pause, when [`TEST_BUILD_DELAY_VAR`] sets one.
pub(super) fn test_build_delay_from_env() -> Option<Duration> {
    let delay = std::env::var(TEST_BUILD_DELAY_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)?;
    tracing::warn!(
        "{TEST_BUILD_DELAY_VAR} is set (a test seam): each image waits {delay:?} before its build"
    );
    Some(delay)
}

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
    /// Back to the queue when `hindrance` is worth waiting out: a full disk
    /// always, an unavailable server until the tries are spent.
    fn requeue(hindrance: Hindrance, error: &str, job: &Job) -> Option<Outcome> {
        match hindrance {
            Hindrance::DiskFull => Some(Outcome::Requeue {
                reason: format!("waiting for disk space under state_dir: {error}"),
                pause: DISK_FULL_PAUSE,
            }),
            Hindrance::Unavailable(what) => {
                (job.attempts < UNAVAILABLE_ATTEMPTS).then(|| Outcome::Requeue {
                    reason: format!("waiting for {what}: {error}"),
                    pause: unavailable_pause(job.attempts),
                })
            }
        }
    }

    /// A build whose images all ran: succeeded, failed, or back to the
    /// queue when an image found the disk full (first) or the registry away.
    fn of_images(images: &[ImageRun], job: &Job) -> Outcome {
        let failed: Vec<&ImageRun> = images
            .iter()
            .filter(|i| i.result.status != Status::Succeeded)
            .collect();
        let hindered = |wanted: fn(Hindrance) -> bool| {
            failed.iter().find_map(|i| {
                let h = i.hindrance.filter(|h| wanted(*h))?;
                Some((h, i.result.error.as_deref().unwrap_or_default()))
            })
        };
        let requeue = hindered(|h| h == Hindrance::DiskFull)
            .or_else(|| hindered(|h| matches!(h, Hindrance::Unavailable(_))))
            .and_then(|(h, error)| Outcome::requeue(h, error, job));
        match requeue {
            Some(outcome) => outcome,
            None if failed.is_empty() => Outcome::Done(Status::Succeeded, None),
            None => Outcome::Done(
                Status::Failed,
                Some(format!(
                    "{} of {} images failed",
                    failed.len(),
                    images.len()
                )),
            ),
        }
    }

    /// A build that failed as a whole.
    fn of_failure(failure: &BuildFailure, job: &Job) -> Outcome {
        let error = failure.to_string();
        failure
            .hindrance()
            .and_then(|h| Outcome::requeue(h, &error, job))
            .unwrap_or(Outcome::Done(Status::Failed, Some(error)))
    }
}

/// One image of a build: what the store keeps of it, and what stopped it
/// when that is worth waiting out (this run only, never stored).
struct ImageRun {
    result: ImageResult,
    hindrance: Option<Hindrance>,
}

/// Takes builds until the server stops; `worker` numbers it in the logs.
pub async fn run_worker(app: Arc<App>, worker: usize) {
    loop {
        if app.stopping.load(Ordering::SeqCst) {
            break;
        }
        // Register for a wake-up before looking, so a build queued in between is not missed.
        let woken = app.build_queued.notified();
        match app.job_store.claim(&app.replica, app.cfg.lease()).await {
            Ok(Some(Claim::GaveUp(job))) => report_given_up(&app, &job).await,
            Ok(Some(Claim::Run { job, took_over })) => {
                if took_over {
                    app.leases_taken_over.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        build_id = job.id,
                        "took over the build: its earlier claimant's lease expired"
                    );
                }
                tracing::info!(
                    worker,
                    build_id = job.id,
                    attempt = job.attempts,
                    "build started"
                );
                if let Some(pause) = run_build_under_lease(&app, job).await {
                    // A full disk or a registry away: give it time.
                    tokio::time::sleep(pause).await;
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(app.idle_poll) => {}
                }
            }
            Err(e) => {
                tracing::error!("job store: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Runs a build while renewing its lease every third of `lease_secs`; a
/// build whose lease another claim took is stopped, its result unrecorded.
async fn run_build_under_lease(app: &App, job: Job) -> Option<Duration> {
    let lease = job.lease();
    let (id, work) = (job.id, work_dir(app, &job));
    tokio::select! {
        pause = run_build(app, job) => pause,
        () = keep_lease(app, lease) => {
            let _ = std::fs::remove_dir_all(&work);
            app.leases_lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                build_id = id,
                "lease lost: another replica took the build over; stopped it here"
            );
            None
        }
    }
}

/// Renews the lease until it is lost (returns then): found taken by
/// another claim, or not renewed for a whole lease (the store away), after
/// which another replica may hold it. The lease is counted from before each
/// renewal was sent, so this side gives up no later than the store does.
async fn keep_lease(app: &App, lease: Lease) {
    let duration = app.cfg.lease();
    let mut held_until = tokio::time::Instant::now() + duration;
    loop {
        tokio::time::sleep(duration / 3).await;
        let sent = tokio::time::Instant::now();
        match app.job_store.renew(lease, duration).await {
            Ok(true) => held_until = sent + duration,
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(build_id = lease.build_id, "lease not renewed: {e}");
                if tokio::time::Instant::now() >= held_until {
                    return;
                }
            }
        }
    }
}

/// Appends to `state_dir/logs/<id>.log`; the build's own record, beside the store.
struct BuildLog(Option<std::fs::File>);

impl BuildLog {
    fn path(state_dir: &Path, id: i64) -> PathBuf {
        state_dir.join("logs").join(format!("{id}.log"))
    }

    fn open(state_dir: &Path, id: i64) -> BuildLog {
        let path = BuildLog::path(state_dir, id);
        let file = std::fs::create_dir_all(state_dir.join("logs")).and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
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

async fn post_commit_status(app: &App, job: &Job, state: CommitState, description: &str) {
    if let Some(client) = &app.commit_statuses {
        if let Err(e) = client
            .post(&job.repository, &job.commit, state, description, None)
            .await
        {
            tracing::warn!(build_id = job.id, "commit status not posted: {e}");
        }
    }
}

/// Writes an outcome, trying again while the store cannot write (a full
/// disk, the database away): a build must not stay `running` while nothing
/// runs it. Gives up only when the server stops; the build is then
/// `running` in the store and goes back to the queue at the next start or
/// when its lease expires. The images' final state goes with the outcome.
/// False when the lease was lost: the outcome belongs to whoever took the
/// build over.
async fn record_outcome(
    app: &App,
    lease: Lease,
    outcome: &Outcome,
    images: Option<&[ImageResult]>,
) -> bool {
    let mut pause = Duration::from_millis(200);
    loop {
        let res = match outcome {
            Outcome::Done(status, error) => {
                let error = error.as_deref();
                app.job_store.finish(lease, *status, error, images).await
            }
            Outcome::Requeue { reason, .. } => app.job_store.requeue(lease, reason).await,
        };
        match res {
            Ok(held) => return held,
            Err(e) => {
                let id = lease.build_id;
                tracing::error!(build_id = id, "cannot record the outcome: {e}");
                if app.stopping.load(Ordering::SeqCst) {
                    return false;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A build failed at claim time because its attempts kept killing the service.
async fn report_given_up(app: &App, job: &Job) {
    let error = job.error.as_deref().unwrap_or_default();
    BuildLog::open(&app.cfg.state_dir, job.id).line(&format!("build failed: {error}"));
    tracing::error!(
        build_id = job.id,
        attempts = job.attempts,
        "build failed: {error}"
    );
    post_commit_status(app, job, CommitState::Failure, error).await;
}

/// Runs one build; when it went back to the queue, the pause to take first.
async fn run_build(app: &App, job: Job) -> Option<Duration> {
    let mut log = BuildLog::open(&app.cfg.state_dir, job.id);
    log.line(&format!(
        "attempt {} of build {} for {}@{} (PR #{})",
        job.attempts, job.id, job.repository, job.commit, job.pr_number
    ));
    post_commit_status(
        app,
        &job,
        CommitState::Pending,
        "dockless is building the images",
    )
    .await;
    let work = work_dir(app, &job);
    let (outcome, images) = match fetch_and_build_images(app, &job, &work, &mut log).await {
        Ok(images) => {
            let outcome = Outcome::of_images(&images, &job);
            let results: Vec<ImageResult> = images.into_iter().map(|i| i.result).collect();
            (outcome, Some(results))
        }
        Err(failure) => (Outcome::of_failure(&failure, &job), None),
    };
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_file(work.with_extension("index"));
    // The log's last line comes first: a reader following it
    // (GET /builds/<id>/log) stops once the store says the build ended.
    match &outcome {
        Outcome::Requeue { reason, .. } => log.line(&format!("build queued again: {reason}")),
        Outcome::Done(status, error) => log.line(&format!(
            "build {}: {}",
            status.as_str(),
            error.as_deref().unwrap_or("every image pushed")
        )),
    }
    if !record_outcome(app, job.lease(), &outcome, images.as_deref()).await {
        app.leases_lost.fetch_add(1, Ordering::Relaxed);
        log.line(
            "lease lost: another replica took the build over; this attempt's result is dropped",
        );
        tracing::warn!(
            build_id = job.id,
            "lease lost: another replica took the build over; result not recorded"
        );
        return None;
    }
    let (status, error) = match outcome {
        Outcome::Requeue { reason, pause } => {
            tracing::warn!(build_id = job.id, ?pause, "build queued again: {reason}");
            return Some(pause);
        }
        Outcome::Done(status, error) => (status, error),
    };
    tracing::info!(
        build_id = job.id,
        status = status.as_str(),
        error = error.as_deref().unwrap_or_default(),
        "build finished"
    );
    let (state, text) = match status {
        Status::Succeeded => (
            CommitState::Success,
            "all images built and pushed".to_string(),
        ),
        _ => (CommitState::Failure, error.unwrap_or_default()),
    };
    post_commit_status(app, &job, state, &text).await;
    None
}

/// Where an attempt of a build checks out and builds.
fn work_dir(app: &App, job: &Job) -> std::path::PathBuf {
    let name = format!("{}-{}", job.id, job.attempts);
    app.cfg.state_dir.join("work").join(name)
}

/// One fetch at a time into a repository's git cache.
fn repository_fetch_lock(app: &App, repository: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = app.fetch_locks.lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(repository.to_string()).or_default().clone()
}

/// Checks out the merge commit into `work/src`.
async fn fetch_commit(app: &App, job: &Job, checkout: &Path) -> Result<(), BuildFailure> {
    let lock = repository_fetch_lock(app, &job.repository);
    let _held = lock.lock().await;
    let cache = super::gitfetch::cache_path(&app.cfg.state_dir.join("git"), &job.repository);
    let (url, commit, dest) = (
        job.clone_url.clone(),
        job.commit.clone(),
        checkout.to_path_buf(),
    );
    app.builds
        .spawn_blocking(move || super::gitfetch::checkout(&url, &commit, &cache, &dest))
        .await
        .map_err(|source| BuildFailure::FetchAborted {
            commit: job.commit.clone(),
            source,
        })?
        .map_err(|source| BuildFailure::Fetch {
            commit: job.commit.clone(),
            source,
        })
}

/// Fetch, read image.json, and build each image; a whole-build error is Err.
async fn fetch_and_build_images(
    app: &App,
    job: &Job,
    work: &Path,
    log: &mut BuildLog,
) -> Result<Vec<ImageRun>, BuildFailure> {
    let _ = std::fs::remove_dir_all(work);
    let checkout = work.join("src");
    fetch_commit(app, job, &checkout).await?;
    log.line(&format!("fetched {}", job.commit));
    let entries = imagespec::read(&checkout)?;
    if entries.is_empty() {
        return Err(BuildFailure::NoImages);
    }
    let mut images: Vec<ImageRun> = entries
        .iter()
        .map(|e| ImageRun {
            result: ImageResult {
                service_name: e.service_name.clone(),
                version: e.version.clone(),
                kind: e.kind.clone(),
                status: Status::Queued,
                reference: None,
                error: None,
                attachments: Vec::new(),
            },
            hindrance: None,
        })
        .collect();
    let results: Vec<ImageResult> = images.iter().map(|i| i.result.clone()).collect();
    let lease = job.lease();
    let _ = app.job_store.set_images(lease, &results).await;
    // One image per write: the list is written once, not once per image.
    let record_image = |i: usize, image: ImageResult| async move {
        let _ = app.job_store.set_image(lease, i, &image).await;
    };
    for (i, entry) in entries.iter().enumerate() {
        let image = &mut images[i];
        image.result.status = Status::Running;
        record_image(i, image.result.clone()).await;
        let step_log = BuildLog::path(&app.cfg.state_dir, job.id);
        match build_and_push_image(app, job, entry, &checkout, &step_log).await {
            Ok((reference, attachments)) => {
                log.line(&format!("pushed {reference}"));
                image.result.status = Status::Succeeded;
                image.result.reference = Some(reference);
                image.result.attachments = attachments;
            }
            Err(failure) => {
                let message = failure::in_config_terms(&failure.to_string());
                log.line(&format!(
                    "image {} ({}): {message}",
                    i + 1,
                    if entry.service_name.is_empty() {
                        "unnamed"
                    } else {
                        &entry.service_name
                    },
                ));
                image.result.status = Status::Failed;
                image.result.error = Some(message);
                image.hindrance = failure.hindrance();
            }
        }
        record_image(i, image.result.clone()).await;
    }
    Ok(images)
}

/// The size the service's cache is pruned to after each image, as the
/// CLI's is: `$DOCKLESS_CACHE_MAX_SIZE`, default 10G.
fn cache_max_size() -> u64 {
    std::env::var("DOCKLESS_CACHE_MAX_SIZE")
        .ok()
        .and_then(|v| crate::cache::parse_size(&v).ok())
        .unwrap_or(crate::cache::DEFAULT_MAX_SIZE)
}

/// Builds and pushes one entry, with its SBOM, provenance (naming the
/// merge commit) and signature; returns `REGISTRY/NAME:VERSION@DIGEST` and
/// what was attached. RUN steps write their output to `step_log` (the
/// build's log).
async fn build_and_push_image(
    app: &App,
    job: &Job,
    entry: &imagespec::RawEntry,
    checkout: &Path,
    step_log: &Path,
) -> Result<(String, Vec<Attached>), ImageFailure> {
    let image =
        imagespec::resolve(entry, checkout, &app.cfg.registry).map_err(ImageFailure::Entry)?;
    if let Some(delay) = app.test_build_delay {
        tokio::time::sleep(delay).await;
    }
    let mut build = BuildOptions::new(&image.context_dir, app.cfg.state_dir.join("cache"));
    build.dockerfile = Some(image.dockerfile.clone());
    build.dockerfile_root = Some(checkout.to_path_buf());
    build.source_date_epoch = crate::cache::source_date_epoch()?;
    // Bases on the service's own registry are reached as its pushes are.
    if app.cfg.insecure_registry {
        build.remote = build.remote.insecure(&app.cfg.registry);
    }
    build.remote.ca_certs = app.cfg.ca_cert.iter().cloned().collect();
    build.add_url_max_size = app.cfg.add_url_max_size();
    build.run_timeout = app.cfg.run_timeout;
    build.secrets = app.cfg.secret_sources.clone();
    build.step_log = Some(step_log.to_path_buf());
    if let Some(repo) = &app.cfg.cache_repo {
        // Checked when the config was loaded; a cache is never worth a failed build.
        match CacheSpec::for_image(repo, &image.target) {
            Ok(spec) => build.registry_cache = spec,
            Err(e) => tracing::warn!("{e}; building without the registry cache"),
        }
    }
    let destination = Destination::Registry {
        target: image.target.clone(),
        extra_tags: Vec::new(),
        push: build.remote.clone(),
    };
    let supply = SupplyOptions {
        sign_key: app.sign_key.clone(),
        source: Some(Source {
            repository: job.clone_url.clone(),
            commit: job.commit.clone(),
        }),
        dockerfile: image.dockerfile.display().to_string(),
        source_date_epoch: crate::cache::source_date_epoch_if_set()?,
        invocation_id: Some(format!("dockless-serve-build-{}", job.id)),
        ..SupplyOptions::default()
    };
    let opts = PipelineOptions {
        build,
        platforms: Vec::new(),
        cache_max_size: cache_max_size(),
        supply,
    };
    // The service logs nothing of a finished build beyond its outcome.
    // On the build runtime; stopped with the build (a lost lease) because
    // the handle aborts it when dropped.
    let build = app
        .builds
        .spawn(async move { pipeline::run(opts, &destination, &|_| {}).await });
    let delivered = tokio_util::task::AbortOnDropHandle::new(build)
        .await
        .map_err(pipeline::PipelineError::BuildAborted)
        .and_then(|built| built)
        .map_err(|e| ImageFailure::from_pipeline(e, &image.target))?;
    Ok((
        format!("{}@{}", image.target, delivered.digest),
        delivered.attached,
    ))
}
