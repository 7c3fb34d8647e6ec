//! `dockless serve`: the GitHub webhook build service. An HTTP/1 server
//! (hyper) that checks and acknowledges deliveries at once, a durable job
//! store, and a bounded pool of workers that build and push in the
//! background (see `worker`).

pub mod admission;
pub mod ghstatus;
pub mod gitfetch;
pub mod imagespec;
pub mod jobs;
pub mod webhook;
pub mod worker;

use crate::serve::admission::{BodyBudget, BodyError, Phase, Progress, Slots};
use crate::serve::jobs::{Job, JobStore, NewJob};
use crate::serve::webhook::{Event, SignatureCheck};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("no webhook secret: set DOCKLESS_WEBHOOK_SECRET or webhook_secret_file in the config")]
    NoSecret,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state_dir {0} is in use by another dockless serve")]
    Locked(PathBuf),
    #[error(transparent)]
    Jobs(#[from] crate::serve::jobs::JobError),
    #[error(transparent)]
    Status(#[from] crate::serve::ghstatus::StatusError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// One `[[repos]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub full_name: String,
    pub clone_url: Option<String>,
}

impl RepoConfig {
    pub fn url(&self) -> String {
        self.clone_url
            .clone()
            .unwrap_or_else(|| format!("https://github.com/{}.git", self.full_name))
    }
}

fn default_branch() -> String {
    "develop".into()
}
fn default_builds() -> usize {
    2
}

/// The TOML config, exactly the keys of the contract (unknown keys are errors).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub registry: String,
    #[serde(default)]
    pub insecure_registry: bool,
    pub ca_cert: Option<PathBuf>,
    pub state_dir: PathBuf,
    #[serde(default = "default_branch")]
    pub branch: String,
    #[serde(default = "default_builds")]
    pub max_concurrent_builds: usize,
    pub webhook_secret_file: Option<PathBuf>,
    /// Enables commit statuses.
    pub github_token: Option<String>,
    /// Defaults to https://api.github.com (GitHub Enterprise: https://HOST/api/v3).
    pub github_api_url: Option<String>,
    #[serde(default)]
    pub repos: Vec<RepoConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("registry", &self.registry)
            .field("insecure_registry", &self.insecure_registry)
            .field("state_dir", &self.state_dir)
            .field("branch", &self.branch)
            .field("max_concurrent_builds", &self.max_concurrent_builds)
            .field(
                "github_token",
                &self.github_token.as_ref().map(|_| "<redacted>"),
            )
            .field("repos", &self.repos)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the TOML; relative paths are taken from the config file's folder.
    pub fn load(path: &Path) -> Result<Config, ServeError> {
        let err = |message: String| ServeError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.state_dir);
        if let Some(p) = cfg.ca_cert.as_mut() {
            fix(p);
        }
        if let Some(p) = cfg.webhook_secret_file.as_mut() {
            fix(p);
        }
        if cfg.max_concurrent_builds == 0 {
            return Err(err("max_concurrent_builds must be at least 1".into()));
        }
        if cfg.registry.is_empty() || cfg.registry.contains(['/', ' ']) {
            return Err(err(format!(
                "registry {:?} must be host[:port]",
                cfg.registry
            )));
        }
        if cfg.branch.is_empty() {
            return Err(err("branch is empty".into()));
        }
        for r in &cfg.repos {
            if !r.full_name.contains('/') {
                return Err(err(format!(
                    "repos: full_name {:?} must be owner/repo",
                    r.full_name
                )));
            }
        }
        Ok(cfg)
    }

    /// `DOCKLESS_WEBHOOK_SECRET`, else the contents of `webhook_secret_file`.
    pub fn secret(&self) -> Result<Secret, ServeError> {
        let from_env = std::env::var("DOCKLESS_WEBHOOK_SECRET").ok();
        let value = match (from_env, &self.webhook_secret_file) {
            (Some(v), _) if !v.is_empty() => v,
            (_, Some(file)) => std::fs::read_to_string(file)
                .map_err(|source| ServeError::Io {
                    path: file.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            _ => String::new(),
        };
        if value.is_empty() {
            return Err(ServeError::NoSecret);
        }
        Ok(Secret(value.into_bytes()))
    }

    pub fn repo(&self, full_name: &str) -> Option<&RepoConfig> {
        self.repos
            .iter()
            .find(|r| r.full_name.eq_ignore_ascii_case(full_name))
    }
}

/// The webhook secret, kept out of Debug output.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What the server and the workers share.
pub struct App {
    pub cfg: Config,
    secret: Secret,
    pub store: JobStore,
    /// Rung when a build is queued.
    pub wake: tokio::sync::Notify,
    /// Set on SIGTERM: workers take no new builds.
    pub stopping: AtomicBool,
    pub statuses: Option<crate::serve::ghstatus::StatusClient>,
    /// One fetch at a time per repository cache.
    pub fetch_locks:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    responses: [AtomicU64; RESPONSE_CODES.len()],
    header_timeout: Duration,
    body_timeout: Duration,
    /// Who holds the connection slots (see `admission`).
    slots: Arc<Slots>,
    /// The memory unverified bodies may take together.
    bodies: BodyBudget,
}

const RESPONSE_CODES: [u16; 12] = [200, 202, 400, 401, 403, 404, 405, 408, 413, 415, 500, 503];

impl App {
    fn count(&self, code: StatusCode) {
        let c = code.as_u16();
        if let Some(i) = RESPONSE_CODES.iter().position(|&k| k == c) {
            self.responses[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn json_response(code: StatusCode, v: serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(code: StatusCode, message: impl std::fmt::Display) -> Resp {
    json_response(code, json!({ "error": message.to_string() }))
}

fn with_header(mut r: Resp, name: hyper::header::HeaderName, value: &'static str) -> Resp {
    r.headers_mut()
        .insert(name, hyper::header::HeaderValue::from_static(value));
    r
}

/// The answer to a body that was not read to its end; the connection is
/// closed after it rather than drained.
fn body_refused(e: BodyError) -> Resp {
    let r = match e {
        BodyError::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {} bytes", webhook::MAX_BODY),
        ),
        BodyError::NoMemory => with_header(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many request bodies are being received; try again shortly",
            ),
            hyper::header::RETRY_AFTER,
            "5",
        ),
        BodyError::TooSlow => error(
            StatusCode::REQUEST_TIMEOUT,
            "the body is arriving too slowly",
        ),
        BodyError::TimedOut => error(StatusCode::REQUEST_TIMEOUT, "the body took too long"),
        BodyError::Broken => error(StatusCode::BAD_REQUEST, "cannot read the request body"),
    };
    with_header(r, hyper::header::CONNECTION, "close")
}

/// The media types a delivery may have: GitHub's two encodings (a missing
/// Content-Type is read as JSON).
fn supported_content_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
        || webhook::is_form(Some(ct))
}

fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Routes a request; never fails (errors are responses). `conn` is the
/// connection's progress: only a webhook body is read from the client.
pub async fn handle(
    app: Arc<App>,
    conn: Arc<Progress>,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    let reads_body = req.method() == Method::POST && path == "/hooks/github";
    conn.set_phase(if reads_body { Phase::Body } else { Phase::Busy });
    let resp = match (req.method(), path.as_str()) {
        (&Method::POST, "/hooks/github") => webhook_delivery(app.clone(), &conn, req).await,
        (_, "/hooks/github") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, "/metrics") => metrics(&app),
        (&Method::GET, "/builds") | (&Method::GET, "/builds/") => list_builds(&app),
        (&Method::GET, p) if p.starts_with("/builds/") => get_build(&app, &p["/builds/".len()..]),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    };
    app.count(resp.status());
    conn.request_done();
    Ok(resp)
}

async fn webhook_delivery(app: Arc<App>, conn: &Progress, req: Request<Incoming>) -> Resp {
    let event = header_str(&req, "x-github-event").unwrap_or("").to_string();
    let delivery = header_str(&req, "x-github-delivery")
        .unwrap_or("")
        .to_string();
    let content_type = header_str(&req, "content-type").map(str::to_string);
    let signature = req
        .headers()
        .get("x-hub-signature-256")
        .map(|v| v.as_bytes().to_vec());
    // 1. Signature: a missing one is refused before reading anything.
    let mut check = match SignatureCheck::new(&app.secret.0, signature.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%delivery, "webhook refused: {e}");
            return error(StatusCode::UNAUTHORIZED, e);
        }
    };
    // 2. Size, then the body itself: counted and hashed only, never parsed
    // before the signature is verified.
    let mut body = req.into_body();
    let read = admission::read_body(&mut body, &mut check, &app.bodies, conn, app.body_timeout);
    let body = match read.await {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(%delivery, "webhook body refused: {e:?}");
            return body_refused(e);
        }
    };
    conn.set_phase(Phase::Busy);
    if let Err(e) = check.finish() {
        tracing::info!(%delivery, "webhook refused: {e}");
        return error(StatusCode::UNAUTHORIZED, e);
    }
    // 3. A signed body in a media type we cannot read (the signature stays
    // the first check, as the contract orders them; the read above is bounded).
    if !supported_content_type(content_type.as_deref()) {
        tracing::info!(%delivery, "webhook refused: unsupported content type");
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json or application/x-www-form-urlencoded",
        );
    }
    // 4. JSON (serde_json stops nesting at 128 levels: a clean 400).
    let parsed = webhook::parse_body(content_type.as_deref(), &body.bytes);
    drop(body);
    let payload = match parsed {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    // 5. Repository.
    let Some(repo) = webhook::repository(&payload).and_then(|name| app.cfg.repo(name)) else {
        let name = webhook::repository(&payload).unwrap_or("(none)");
        tracing::info!(%delivery, repository = name, "webhook from a repository not listed");
        return error(
            StatusCode::FORBIDDEN,
            format!("repository {name} is not listed in [[repos]]"),
        );
    };
    // 6. What the event asks for.
    match webhook::classify(&event, &payload, &app.cfg.branch) {
        Event::Ping => json_response(StatusCode::OK, json!({"message": "pong"})),
        Event::Ignored(reason) => {
            tracing::info!(%delivery, %event, "ignored: {reason}");
            json_response(StatusCode::OK, json!({ "message": reason }))
        }
        Event::Invalid(reason) => error(StatusCode::BAD_REQUEST, reason),
        Event::Build(pr) => {
            if delivery.is_empty() || delivery.len() > 200 {
                return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery");
            }
            let url = repo.url();
            let repository = repo.full_name.clone();
            let (store_app, delivery_id) = (app.clone(), delivery.clone());
            let commit = pr.merge_commit_sha.clone();
            // SQLite commits wait for the disk: keep them off the async threads.
            let queued = tokio::task::spawn_blocking(move || {
                store_app.store.enqueue(&NewJob {
                    delivery: &delivery_id,
                    repository: &repository,
                    clone_url: &url,
                    pr_number: pr.number,
                    commit: &pr.merge_commit_sha,
                    head_sha: &pr.head_sha,
                })
            })
            .await
            .unwrap_or_else(|e| Err(crate::serve::jobs::JobError::Corrupt(e.to_string())));
            match queued {
                Ok((id, created)) => {
                    if created {
                        tracing::info!(%delivery, build_id = id, %commit, "build queued");
                        app.wake.notify_one();
                    } else {
                        tracing::info!(%delivery, build_id = id, "redelivery of a known build");
                    }
                    json_response(
                        StatusCode::ACCEPTED,
                        json!({"build_id": id, "status_url": format!("/builds/{id}")}),
                    )
                }
                Err(e) if e.is_disk_full() => {
                    tracing::error!(%delivery, "cannot queue the build: {e}");
                    with_header(
                        error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "cannot queue the build: the disk under state_dir is full; nothing was accepted, deliver again once space is freed",
                        ),
                        hyper::header::RETRY_AFTER,
                        "60",
                    )
                }
                Err(e) => {
                    tracing::error!(%delivery, "cannot queue the build: {e}");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "cannot queue the build: the job store failed; nothing was accepted, deliver again later",
                    )
                }
            }
        }
    }
}

fn rfc3339(ms: Option<i64>) -> serde_json::Value {
    match ms {
        Some(ms) if ms >= 0 => {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
            humantime::format_rfc3339_millis(t).to_string().into()
        }
        _ => serde_json::Value::Null,
    }
}

/// A build as the API shows it.
pub fn job_json(job: &Job) -> serde_json::Value {
    json!({
        "build_id": job.id,
        "status": job.status,
        "repository": job.repository,
        "pull_request": job.pr_number,
        "commit": job.commit,
        "head_sha": job.head_sha,
        "delivery": job.delivery,
        "attempts": job.attempts,
        "created_at": rfc3339(Some(job.created_ms)),
        "started_at": rfc3339(job.started_ms),
        "finished_at": rfc3339(job.finished_ms),
        "error": job.error,
        "images": job.images,
    })
}

fn get_build(app: &App, id: &str) -> Resp {
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::NOT_FOUND, "no such build");
    };
    match app.store.get(id) {
        Ok(Some(job)) => json_response(StatusCode::OK, job_json(&job)),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such build"),
        Err(e) => {
            tracing::error!("reading build {id}: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "job store error")
        }
    }
}

fn list_builds(app: &App) -> Resp {
    match app.store.recent(100) {
        Ok(jobs) => json_response(
            StatusCode::OK,
            json!({ "builds": jobs.iter().map(job_json).collect::<Vec<_>>() }),
        ),
        Err(e) => {
            tracing::error!("listing builds: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "job store error")
        }
    }
}

const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

fn metrics(app: &App) -> Resp {
    use std::fmt::Write as _;
    let stats = match app.store.stats() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("metrics: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "job store error");
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP dockless_builds_total Builds finished, by outcome."
    );
    let _ = writeln!(out, "# TYPE dockless_builds_total counter");
    let _ = writeln!(
        out,
        "dockless_builds_total{{outcome=\"succeeded\"}} {}",
        stats.succeeded
    );
    let _ = writeln!(
        out,
        "dockless_builds_total{{outcome=\"failed\"}} {}",
        stats.failed
    );
    let _ = writeln!(
        out,
        "# HELP dockless_build_queue_depth Builds waiting for a worker."
    );
    let _ = writeln!(out, "# TYPE dockless_build_queue_depth gauge");
    let _ = writeln!(out, "dockless_build_queue_depth {}", stats.queued);
    let _ = writeln!(out, "# HELP dockless_builds_running Builds running now.");
    let _ = writeln!(out, "# TYPE dockless_builds_running gauge");
    let _ = writeln!(out, "dockless_builds_running {}", stats.running);
    let _ = writeln!(
        out,
        "# HELP dockless_build_duration_seconds Time from start to finish of recent builds."
    );
    let _ = writeln!(out, "# TYPE dockless_build_duration_seconds histogram");
    for le in DURATION_BUCKETS {
        let n = stats.durations.iter().filter(|d| **d <= le).count();
        let _ = writeln!(
            out,
            "dockless_build_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let total = stats.durations.len();
    let sum: f64 = stats.durations.iter().sum();
    let _ = writeln!(
        out,
        "dockless_build_duration_seconds_bucket{{le=\"+Inf\"}} {total}"
    );
    let _ = writeln!(out, "dockless_build_duration_seconds_sum {sum}");
    let _ = writeln!(out, "dockless_build_duration_seconds_count {total}");
    let _ = writeln!(
        out,
        "# HELP dockless_http_responses_total HTTP responses since start, by status code."
    );
    let _ = writeln!(out, "# TYPE dockless_http_responses_total counter");
    for (i, code) in RESPONSE_CODES.iter().enumerate() {
        let n = app.responses[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "dockless_http_responses_total{{code=\"{code}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP dockless_http_connections_cut_total Connections closed without an answer: headers too slow, or the slowest dropped to make room."
    );
    let _ = writeln!(out, "# TYPE dockless_http_connections_cut_total counter");
    for (reason, n) in [
        ("too_slow", &app.slots.cut_slow),
        ("evicted", &app.slots.evicted),
    ] {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "dockless_http_connections_cut_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
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
    // One server per state_dir: two would each run the same queued builds.
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
    crate::serve::gitfetch::clear_stale_locks(&cfg.state_dir.join("git"));
    let store = JobStore::open(&cfg.state_dir.join("jobs.sqlite"))?;
    let requeued = store.requeue_interrupted()?;
    if requeued > 0 {
        tracing::warn!("{requeued} interrupted build(s) queued again");
    }
    let statuses = match &cfg.github_token {
        Some(token) if !token.is_empty() => Some(crate::serve::ghstatus::StatusClient::new(
            cfg.github_api_url
                .as_deref()
                .unwrap_or(crate::serve::ghstatus::DEFAULT_API_URL),
            token.clone(),
        )?),
        _ => None,
    };
    let workers = cfg.max_concurrent_builds;
    let app = Arc::new(App {
        cfg,
        secret,
        store,
        wake: tokio::sync::Notify::new(),
        stopping: AtomicBool::new(false),
        statuses,
        fetch_locks: Default::default(),
        responses: Default::default(),
        header_timeout: env_secs("DOCKLESS_HEADER_TIMEOUT_SECS", HEADER_TIMEOUT),
        body_timeout: env_secs("DOCKLESS_BODY_TIMEOUT_SECS", BODY_TIMEOUT),
        slots: Slots::new(admission::MAX_CONNECTIONS),
        bodies: BodyBudget::new(
            env_positive("DOCKLESS_BODY_BUDGET_BYTES")
                .map_or(admission::DEFAULT_BODY_BUDGET, |n| n as usize),
        ),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io(Path::new("tokio runtime")))?;
    let result = runtime.block_on(serve(app, workers));
    // Builds still running after the grace period are abandoned here; they
    // are `running` in the store and go back to the queue at the next start.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(lock);
    result
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
        hyper::service::service_fn(move |req| handle(app.clone(), progress.clone(), req))
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
fn termination() -> Result<tokio::sync::oneshot::Receiver<i32>, ServeError> {
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

async fn serve(app: Arc<App>, workers: usize) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(&app.cfg.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: app.cfg.listen.clone(),
            source,
        })?;
    let mut stop = termination()?;
    let local = listener.local_addr().map_err(io_err("listener"))?;
    tracing::info!("dockless serve listening on http://{local}");
    eprintln!("dockless serve: listening on http://{local}");

    let mut pool = tokio::task::JoinSet::new();
    for n in 0..workers {
        pool.spawn(crate::serve::worker::run_worker(app.clone(), n));
    }

    let sweeper = tokio::spawn(app.slots.clone().sweep_forever());
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
            s = app.slots.admit() => s,
        };
        tokio::spawn(serve_connection(app.clone(), stream, peer, slot));
    }
    sweeper.abort();
    drop(listener);
    eprintln!("dockless serve: stopping; waiting for running builds");
    tracing::info!("stopping: no new connections, waiting for running builds");
    app.stopping.store(true, Ordering::SeqCst);
    app.wake.notify_waiters();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("dockless.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn config_keys_and_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            r#"
listen = "127.0.0.1:8088"
registry = "127.0.0.1:5000"
insecure_registry = true
ca_cert = "certs/domain.crt"
state_dir = "state"
branch = "main"
max_concurrent_builds = 3
webhook_secret_file = "secret"
[[repos]]
full_name = "Owner/Repo"
clone_url = "file:///tmp/x"
[[repos]]
full_name = "owner/other"
"#,
        );
        let cfg = Config::load(&p).unwrap();
        assert_eq!(cfg.state_dir, d.path().join("state"));
        assert_eq!(
            cfg.ca_cert.as_deref(),
            Some(d.path().join("certs/domain.crt").as_path())
        );
        assert_eq!(cfg.max_concurrent_builds, 3);
        assert_eq!(cfg.repo("owner/repo").unwrap().url(), "file:///tmp/x");
        assert_eq!(
            cfg.repo("owner/other").unwrap().url(),
            "https://github.com/owner/other.git"
        );
        assert!(cfg.repo("owner/none").is_none());
        std::fs::write(d.path().join("secret"), "s3cret\n").unwrap();
        // The env var wins when set; this test only checks the file path when it is not.
        if std::env::var_os("DOCKLESS_WEBHOOK_SECRET").is_none() {
            assert_eq!(cfg.secret().unwrap().0, b"s3cret");
        }
        assert!(!format!("{cfg:?}").contains("s3cret"));

        let minimal = write(
            d.path(),
            "listen = \"127.0.0.1:0\"\nregistry = \"r:5000\"\nstate_dir = \"/tmp/s\"\n",
        );
        let cfg = Config::load(&minimal).unwrap();
        assert_eq!(
            (cfg.branch.as_str(), cfg.max_concurrent_builds),
            ("develop", 2)
        );
        if std::env::var_os("DOCKLESS_WEBHOOK_SECRET").is_none() {
            assert!(matches!(cfg.secret(), Err(ServeError::NoSecret)));
        }
        let typo = write(
            d.path(),
            "listen = \"x\"\nregistry = \"r\"\nstate_dir = \"s\"\nmax_builds = 2\n",
        );
        assert!(Config::load(&typo).is_err());
    }

    #[test]
    fn content_types() {
        for ok in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("application/vnd.github+json"),
            Some("application/x-www-form-urlencoded"),
        ] {
            assert!(supported_content_type(ok), "{ok:?}");
        }
        for bad in [
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
            Some(""),
            Some("application/jsonx"),
            Some("text/json+xml"),
        ] {
            assert!(!supported_content_type(bad), "{bad:?}");
        }
    }
}
