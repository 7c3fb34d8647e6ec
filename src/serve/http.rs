//! The HTTP API: webhook deliveries (checked in the order of the
//! contract), build status, health and metrics.

use super::admission::{self, BodyError, ConnectionProgress, Phase};
use super::app::{App, RESPONSE_CODES};
use super::jobs::{Job, NewJob};
use super::webhook::{self, Event, SignatureCheck};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

type HttpResponse = Response<UnsyncBoxBody<Bytes, Infallible>>;

fn full(bytes: impl Into<Bytes>) -> UnsyncBoxBody<Bytes, Infallible> {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(code: StatusCode, v: serde_json::Value) -> HttpResponse {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(code: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    json_response(code, json!({ "error": message.to_string() }))
}

fn with_header(
    mut r: HttpResponse,
    name: hyper::header::HeaderName,
    value: &'static str,
) -> HttpResponse {
    r.headers_mut()
        .insert(name, hyper::header::HeaderValue::from_static(value));
    r
}

/// The answer to a body that was not read to its end; the connection is
/// closed after it rather than drained.
fn body_refused(e: BodyError) -> HttpResponse {
    let r = match e {
        BodyError::TooLarge => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {} bytes", webhook::MAX_BODY),
        ),
        BodyError::NoMemory => with_header(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many request bodies are being received; try again shortly",
            ),
            hyper::header::RETRY_AFTER,
            "5",
        ),
        BodyError::TooSlow => error_response(
            StatusCode::REQUEST_TIMEOUT,
            "the body is arriving too slowly",
        ),
        BodyError::TimedOut => {
            error_response(StatusCode::REQUEST_TIMEOUT, "the body took too long")
        }
        BodyError::Broken => {
            error_response(StatusCode::BAD_REQUEST, "cannot read the request body")
        }
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
pub async fn handle_request(
    app: Arc<App>,
    conn: Arc<ConnectionProgress>,
    req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let path = req.uri().path().to_string();
    let reads_body = req.method() == Method::POST && path == "/hooks/github";
    conn.set_phase(if reads_body { Phase::Body } else { Phase::Busy });
    let resp = match (req.method(), path.as_str()) {
        (&Method::POST, "/hooks/github") => webhook_delivery(app.clone(), &conn, req).await,
        (_, "/hooks/github") => error_response(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, "/metrics") => metrics(&app).await,
        (&Method::GET, "/builds") | (&Method::GET, "/builds/") => list_builds(&app).await,
        (&Method::GET, p) if p.starts_with("/builds/") && p.ends_with("/log") => {
            build_log(&app, &p["/builds/".len()..p.len() - "/log".len()]).await
        }
        (&Method::GET, p) if p.starts_with("/builds/") => {
            get_build(&app, &p["/builds/".len()..]).await
        }
        _ => error_response(StatusCode::NOT_FOUND, "not found"),
    };
    app.count_response(resp.status());
    conn.request_done();
    Ok(resp)
}

async fn webhook_delivery(
    app: Arc<App>,
    conn: &ConnectionProgress,
    req: Request<Incoming>,
) -> HttpResponse {
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
            return error_response(StatusCode::UNAUTHORIZED, e);
        }
    };
    // 2. Size, then the body itself: counted and hashed only, never parsed
    // before the signature is verified.
    let mut body = req.into_body();
    let read = admission::read_body(
        &mut body,
        &mut check,
        &app.body_budget,
        conn,
        app.body_timeout,
    );
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
        return error_response(StatusCode::UNAUTHORIZED, e);
    }
    // 3. A signed body in a media type we cannot read (the signature stays
    // the first check, as the contract orders them; the read above is bounded).
    if !supported_content_type(content_type.as_deref()) {
        tracing::info!(%delivery, "webhook refused: unsupported content type");
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json or application/x-www-form-urlencoded",
        );
    }
    // 4. JSON (serde_json stops nesting at 128 levels: a clean 400).
    let parsed = webhook::parse_body(content_type.as_deref(), &body.bytes);
    drop(body);
    let payload = match parsed {
        Ok(v) => v,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    // 5. Repository.
    let Some(repo) = webhook::repository(&payload).and_then(|name| app.cfg.repo(name)) else {
        let name = webhook::repository(&payload).unwrap_or("(none)");
        tracing::info!(%delivery, repository = name, "webhook from a repository not listed");
        return error_response(
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
        Event::Invalid(reason) => error_response(StatusCode::BAD_REQUEST, reason),
        Event::Build(pr) => {
            if delivery.is_empty() || delivery.len() > 200 {
                return error_response(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery");
            }
            let url = repo.url();
            let commit = pr.merge_commit_sha.clone();
            let queued = app
                .job_store
                .enqueue(&NewJob {
                    delivery: &delivery,
                    repository: &repo.full_name,
                    clone_url: &url,
                    pr_number: pr.number,
                    commit: &pr.merge_commit_sha,
                    head_sha: &pr.head_sha,
                })
                .await;
            match queued {
                Ok((id, created)) => {
                    if created {
                        tracing::info!(%delivery, build_id = id, %commit, "build queued");
                        app.build_queued.notify_one();
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
                        error_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "cannot queue the build: the disk under state_dir is full; nothing was accepted, deliver again once space is freed",
                        ),
                        hyper::header::RETRY_AFTER,
                        "60",
                    )
                }
                Err(e) => {
                    tracing::error!(%delivery, "cannot queue the build: {e}");
                    with_header(
                        error_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "cannot queue the build: the job store failed; nothing was accepted, deliver again later",
                        ),
                        hyper::header::RETRY_AFTER,
                        "30",
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

/// The store could not answer (PostgreSQL away, say): worth asking again.
fn job_store_error() -> HttpResponse {
    with_header(
        error_response(StatusCode::SERVICE_UNAVAILABLE, "job store error"),
        hyper::header::RETRY_AFTER,
        "5",
    )
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
        "replica": job.lease_owner,
    })
}

async fn get_build(app: &App, id: &str) -> HttpResponse {
    let Ok(id) = id.parse::<i64>() else {
        return error_response(StatusCode::NOT_FOUND, "no such build");
    };
    match app.job_store.get(id).await {
        Ok(Some(job)) => json_response(StatusCode::OK, job_json(&job)),
        Ok(None) => error_response(StatusCode::NOT_FOUND, "no such build"),
        Err(e) => {
            tracing::error!("reading build {id}: {e}");
            job_store_error()
        }
    }
}

/// The build's log as plain text, followed while the build runs.
async fn build_log(app: &Arc<App>, id: &str) -> HttpResponse {
    let Ok(id) = id.parse::<i64>() else {
        return error_response(StatusCode::NOT_FOUND, "no such build");
    };
    match app.job_store.get(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error_response(StatusCode::NOT_FOUND, "no such build"),
        Err(e) => {
            tracing::error!("reading build {id}: {e}");
            return job_store_error();
        }
    }
    let body = StreamBody::new(super::buildlog::follow(app.clone(), id)).boxed_unsync();
    let mut r = Response::new(body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn list_builds(app: &App) -> HttpResponse {
    match app.job_store.recent(100).await {
        Ok(jobs) => json_response(
            StatusCode::OK,
            json!({ "builds": jobs.iter().map(job_json).collect::<Vec<_>>() }),
        ),
        Err(e) => {
            tracing::error!("listing builds: {e}");
            job_store_error()
        }
    }
}

const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

async fn metrics(app: &App) -> HttpResponse {
    use std::fmt::Write as _;
    let stats = match app.job_store.stats().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("metrics: {e}");
            return job_store_error();
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
        let n = app.response_counts[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "dockless_http_responses_total{{code=\"{code}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP dockless_http_connections_cut_total Connections closed without an answer: headers too slow, or the slowest dropped to make room."
    );
    let _ = writeln!(out, "# TYPE dockless_http_connections_cut_total counter");
    for (reason, n) in [
        ("too_slow", &app.connection_slots.cut_slow),
        ("evicted", &app.connection_slots.evicted),
    ] {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "dockless_http_connections_cut_total{{reason=\"{reason}\"}} {n}"
        );
    }
    replica_metrics(app, &mut out);
    let mut r = Response::new(full(out));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// What this replica alone knows: its name, and the leases it lost to or
/// took over from other replicas. (The build counts above are the shared
/// queue's, the same on every replica.)
fn replica_metrics(app: &App, out: &mut String) {
    use std::fmt::Write as _;
    let replica = app.replica.replace(['\\', '"', '\n'], "_");
    let _ = writeln!(
        out,
        "# HELP dockless_replica_info This replica's name (replica_name).\n# TYPE dockless_replica_info gauge\ndockless_replica_info{{replica=\"{replica}\"}} 1"
    );
    for (name, help, n) in [
        (
            "dockless_leases_lost_total",
            "Builds this replica stopped because another took them over after its lease expired.",
            &app.leases_lost,
        ),
        (
            "dockless_leases_taken_over_total",
            "Builds this replica claimed after another replica's lease on them expired.",
            &app.leases_taken_over,
        ),
    ] {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{replica=\"{replica}\"}} {n}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
