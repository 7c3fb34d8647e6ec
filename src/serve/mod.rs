//! `dockless serve`: the GitHub webhook build service. An HTTP/1 server
//! (hyper) that checks and acknowledges deliveries at once, a durable job
//! store, and a bounded pool of workers that build and push in the
//! background (see `worker`).
//!
//! `config` reads the TOML, `app` is what the server and the workers share,
//! `http` answers requests (after `admission` let the connection in and
//! `webhook` checked the delivery), `jobs` keeps builds durable, and
//! `worker` runs them: `gitfetch` checks out the commit, `imagespec` says
//! what to build, `ghstatus` reports back to GitHub.

mod admission;
mod app;
mod buildlog;
mod config;
mod error;
mod ghstatus;
mod gitfetch;
mod http;
pub mod imagespec;
pub mod jobs;
pub mod webhook;
mod worker;

pub use config::{Config, RepoConfig};
pub use error::ServeError;

use admission::{BodyBudget, Slots};
use app::App;
use http::handle_request;
use jobs::{JobStore, PgStore, SqliteStore};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take to send its request headers
/// (`DOCKLESS_HEADER_TIMEOUT_SECS` overrides it).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its whole body
/// (`DOCKLESS_BODY_TIMEOUT_SECS` overrides it).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// The request line and headers together may not exceed this; past it the
/// client gets 431 and the connection is closed.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default grace period for running builds on SIGTERM
/// (`DOCKLESS_SHUTDOWN_GRACE_SECS` overrides it).
const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// The nice value of the threads that fetch and build (and so of their
/// `git` and RUN children): below the acknowledgements, which answer
/// GitHub within its timeout and are what a burst of deliveries waits on.
const BUILD_NICE: i32 = 10;

/// The runtime builds run on: its threads at [`BUILD_NICE`], so the
/// compression, `git` and RUN steps of accepted deliveries take the CPU
/// only when acknowledgements leave it.
fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dockless-build")
        .on_thread_start(|| crate::process::lower_thread_priority(BUILD_NICE))
        .enable_all()
        .build()
}

/// A positive number from the environment, when one is set.
fn env_positive(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
}

fn env_secs(name: &str, default: Duration) -> Duration {
    env_positive(name)
        .map(Duration::from_secs)
        .unwrap_or(default)
}

fn grace_period() -> Duration {
    std::env::var("DOCKLESS_SHUTDOWN_GRACE_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_GRACE)
}

/// Runs the service until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<(), ServeError> {
    let cfg = Config::load(config_path)?;
    let secret = cfg.secret()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ServeError::Io { path, source }
    };
    std::fs::create_dir_all(&cfg.state_dir).map_err(io(&cfg.state_dir))?;
    // One server per state_dir: its caches and work folders are its own
    // (and with SQLite, two would each run the same queued builds).
    let lock_path = cfg.state_dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    if lock.try_lock().is_err() {
        return Err(ServeError::Locked(cfg.state_dir.clone()));
    }
    gitfetch::clear_stale_locks(&cfg.state_dir.join("git"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io(Path::new("tokio runtime")))?;
    let builds = build_runtime().map_err(io(Path::new("tokio build runtime")))?;
    let (job_store, idle_poll) = runtime.block_on(open_job_store(&cfg))?;
    let statuses = match &cfg.github_token {
        Some(token) if !token.is_empty() => Some(ghstatus::StatusClient::new(
            cfg.github_api_url
                .as_deref()
                .unwrap_or(ghstatus::DEFAULT_API_URL),
            token.clone(),
        )?),
        _ => None,
    };
    // A key that cannot be read stops the service now, not every build later.
    let sign_key = match &cfg.sign_key_file {
        Some(path) => Some(crate::attest::sign::Signer256::load_with_env(path)?),
        None => None,
    };
    let workers = cfg.max_concurrent_builds;
    let app = Arc::new(App {
        replica: cfg.replica(),
        cfg,
        secret,
        sign_key,
        job_store,
        idle_poll,
        leases_lost: Default::default(),
        leases_taken_over: Default::default(),
        build_queued: Default::default(),
        stopping: AtomicBool::new(false),
        commit_statuses: statuses,
        fetch_locks: Default::default(),
        response_counts: Default::default(),
        header_timeout: env_secs("DOCKLESS_HEADER_TIMEOUT_SECS", HEADER_TIMEOUT),
        body_timeout: env_secs("DOCKLESS_BODY_TIMEOUT_SECS", BODY_TIMEOUT),
        connection_slots: Slots::new(admission::MAX_CONNECTIONS),
        body_budget: BodyBudget::new(
            env_positive("DOCKLESS_BODY_BUDGET_BYTES")
                .map_or(admission::DEFAULT_BODY_BUDGET, |n| n as usize),
        ),
        test_build_delay: worker::test_build_delay_from_env(),
        builds: builds.handle().clone(),
    });

    let result = runtime.block_on(accept_until_stopped(app, workers));
    // Builds still running after the grace period are abandoned here; they
    // are `running` in the store and go back to the queue at the next start
    // (SQLite) or once their lease expires (PostgreSQL).
    runtime.shutdown_timeout(Duration::from_secs(1));
    builds.shutdown_timeout(Duration::from_secs(1));
    drop(lock);
    result
}

/// The job store the config names, and how often idle workers look for
/// expired leases. SQLite: this process owns it, so builds left `running`
/// go back to the queue now. PostgreSQL: other replicas may be running
/// them; an expired lease is found by polling (NOTIFY wakes for the rest).
async fn open_job_store(cfg: &Config) -> Result<(Box<dyn JobStore>, Duration), ServeError> {
    if let Some(url) = &cfg.database_url {
        let store = PgStore::connect(url, cfg.database_ca_cert.clone()).await?;
        tracing::info!("job store: PostgreSQL");
        let poll = (cfg.lease() / 2).max(Duration::from_secs(1));
        return Ok((Box::new(store), poll));
    }
    let store = SqliteStore::open(&cfg.state_dir.join("jobs.sqlite"))?;
    let requeued = store.requeue_interrupted()?;
    if requeued > 0 {
        tracing::warn!("{requeued} interrupted build(s) queued again");
    }
    Ok((Box::new(store), Duration::from_secs(2)))
}

/// Serves one connection until it closes, or until `admission` cuts it.
async fn serve_connection(
    app: Arc<App>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: admission::Slot,
) {
    let progress = slot.progress.clone();
    let counted = {
        let progress = progress.clone();
        tokio_util::io::InspectReader::new(stream, move |b: &[u8]| progress.on_read(b.len()))
    };
    let header_timeout = app.header_timeout;
    let service = {
        let progress = progress.clone();
        hyper::service::service_fn(move |req| handle_request(app.clone(), progress.clone(), req))
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(hyper_util::rt::TokioIo::new(counted), service);
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(%peer, "connection: {e}");
        },
        _ = progress.cut() => tracing::debug!(%peer, "connection cut: too slow, or the slowest when all slots were taken"),
    }
    drop(slot);
}

/// SIGTERM/SIGINT as a future, through signal-hook on a helper thread.
fn termination_signal() -> Result<tokio::sync::oneshot::Receiver<i32>, ServeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(io_err("signal handlers"))?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = tx.send(sig);
        }
    });
    Ok(rx)
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io {
        path: PathBuf::from(what),
        source,
    }
}

/// Starts the workers, then accepts connections until SIGTERM or SIGINT;
/// running builds then get the grace period to finish.
async fn accept_until_stopped(app: Arc<App>, workers: usize) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(&app.cfg.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: app.cfg.listen.clone(),
            source,
        })?;
    let mut stop = termination_signal()?;
    let local = listener.local_addr().map_err(io_err("listener"))?;
    tracing::info!("dockless serve listening on http://{local}");
    eprintln!("dockless serve: listening on http://{local}");

    app.job_store.watch_queue(app.build_queued.clone());
    let mut pool = tokio::task::JoinSet::new();
    for n in 0..workers {
        pool.spawn(worker::run_worker(app.clone(), n));
    }

    let sweeper = tokio::spawn(app.connection_slots.clone().sweep_forever());
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Accepted first, then given a slot: when all are taken, the
        // slowest client makes room (see `admission`).
        let slot = tokio::select! {
            _ = &mut stop => break,
            s = app.connection_slots.admit() => s,
        };
        tokio::spawn(serve_connection(app.clone(), stream, peer, slot));
    }
    sweeper.abort();
    drop(listener);
    eprintln!("dockless serve: stopping; waiting for running builds");
    tracing::info!("stopping: no new connections, waiting for running builds");
    app.stopping.store(true, Ordering::SeqCst);
    app.build_queued.notify_waiters();
    let grace = grace_period();
    let finished =
        tokio::time::timeout(grace, async { while pool.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            "builds still running after {}s; they will run again at the next start",
            grace.as_secs()
        );
    }
    eprintln!("dockless serve: stopped");
    Ok(())
}
