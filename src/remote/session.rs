//! An authenticated session with one registry: requests with the right
//! token, retries, and streamed request bodies (from a file, or from
//! another registry, hashed on the way).

use std::path::Path;
use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _};
use reqwest::header::CONTENT_LENGTH;
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tracing::debug;
use url::Url;

use super::auth::{AuthState, Scope};
use super::credentials;
use super::error::{error_chain, RegistryError, Result};
use super::options::{EventSink, PushEvent, PushOptions, DEFAULT_CHUNK_SIZE};
use super::origin;
use super::retry::RetryPolicy;
use super::stall::Liveness;
use super::transport::{error_from_response, Transport};

/// A request body that can be rebuilt for a retry.
#[derive(Clone, Copy)]
pub(crate) enum ReqBody<'a> {
    Empty,
    Bytes(&'a [u8]),
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        /// Reported in progress events.
        digest: &'a str,
        /// Absolute blob size, for progress totals.
        total: u64,
    },
    /// `len` bytes at `offset` of a blob in another registry, GET anew for
    /// every request, so a retry re-opens the source.
    Remote {
        source: &'a Source,
        offset: u64,
        len: u64,
        digest: &'a str,
        total: u64,
        /// Set when the source failed or sent wrong bytes.
        fault: &'a SourceFault,
    },
}

/// Why a streamed body was cut by its source, so that the error blames the
/// source rather than the target the body was going to.
pub(crate) type SourceFault = Arc<std::sync::Mutex<Option<Fault>>>;

#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Wrong bytes: refused, never retried.
    WrongBytes(String),
    /// The download broke off or stalled: worth another try.
    Transfer(String),
}

fn note_fault(slot: &SourceFault, fault: Fault) {
    if let Ok(mut f) = slot.lock() {
        f.get_or_insert(fault);
    }
}

/// An open session with a registry that holds blobs the target lacks.
pub(crate) struct Source {
    pub(super) session: Session,
    pub(super) repository: String,
    pub(super) name: String,
}

pub(crate) struct Session {
    pub(super) t: Transport,
    pub(super) auth: AuthState,
    pub(super) events: EventSink,
    pub(super) chunk_size: u64,
    pub(super) retry: RetryPolicy,
}

impl Session {
    /// A session for one registry, with the user's credentials for it.
    pub(crate) async fn open(registry: &str, opts: &PushOptions) -> Result<Session> {
        let credential = credentials::load_credential(registry).await?;
        Ok(Session {
            t: Transport::with_timeouts(
                registry,
                opts.insecure,
                &opts.ca_certs,
                opts.connect_timeout,
                opts.read_timeout,
            )?,
            auth: AuthState::new(credential, RetryPolicy::new(opts)),
            events: opts.events.clone(),
            chunk_size: if opts.chunk_size == 0 {
                DEFAULT_CHUNK_SIZE
            } else {
                opts.chunk_size
            },
            retry: RetryPolicy::new(opts),
        })
    }

    pub(crate) fn host(&self) -> &str {
        &self.t.host
    }

    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        self.t.url(path)
    }

    /// After a step failed in transit on try `attempt`: waits out the
    /// backoff and returns true, or returns false when the tries are spent.
    pub(crate) async fn wait_to_retry(
        &self,
        attempt: u32,
        what: &str,
        error: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        self.retry
            .wait(attempt, None, &self.t.host, what, error)
            .await
    }

    /// A failure reading a response body, classified like a failed send
    /// (a cut connection is transient).
    pub(crate) fn body_error(&self, e: reqwest::Error) -> RegistryError {
        self.t.map_send_error(e, &self.t.host)
    }

    /// Send with authorization for `scopes`; on 401 re-authenticate once and retry.
    /// GET, HEAD, PUT and DELETE are also retried on connection errors,
    /// timeouts and 408/429/5xx (see [`Session::send_retrying`]); other methods
    /// go out once. Blob-upload PUTs must use [`Session::send_once`].
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: ReqBody<'_>,
        scopes: &[Scope],
    ) -> Result<reqwest::Response> {
        if matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        ) {
            self.send_retrying(method, url, headers, body, scopes).await
        } else {
            self.send_once(method, url, headers, body, scopes).await
        }
    }

    /// [`Session::send_once`] again on transient faults, with backoff. Only
    /// for requests whose repetition cannot change the outcome.
    pub(crate) async fn send_retrying(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: ReqBody<'_>,
        scopes: &[Scope],
    ) -> Result<reqwest::Response> {
        let what = format!("{method} {}", url.path());
        self.retrying(&what, || {
            self.send_once(method.clone(), url, headers, body, scopes)
        })
        .await
    }

    async fn retrying<F, Fut>(&self, what: &str, op: F) -> Result<reqwest::Response>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<reqwest::Response>>,
    {
        self.retry.run(&self.t.host, what, op).await
    }

    /// One request (plus one re-authentication on 401), never repeated on faults.
    pub(crate) async fn send_once(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: ReqBody<'_>,
        scopes: &[Scope],
    ) -> Result<reqwest::Response> {
        let mut retried = false;
        loop {
            let streamed = matches!(body, ReqBody::File { .. } | ReqBody::Remote { .. });
            let http = if streamed {
                &self.t.upload_http
            } else {
                &self.t.http
            };
            let mut rb = http.request(method.clone(), url.clone());
            for (k, v) in headers {
                rb = rb.header(*k, v.as_str());
            }
            if let Some(h) = self.auth.header_for(&self.t, url, scopes).await? {
                rb = rb.header(reqwest::header::AUTHORIZATION, h);
            }
            let live = Liveness::new();
            rb = match &body {
                ReqBody::Empty => rb.header(CONTENT_LENGTH, "0"),
                ReqBody::Bytes(b) => rb.body(b.to_vec()),
                ReqBody::File {
                    path,
                    offset,
                    len,
                    digest,
                    total,
                } => {
                    let body =
                        file_body(path, *offset, *len, digest, *total, self.events.clone()).await?;
                    rb.header(CONTENT_LENGTH, len.to_string())
                        .body(reqwest::Body::wrap_stream(live.watch(body)))
                }
                ReqBody::Remote {
                    source,
                    offset,
                    len,
                    digest,
                    total,
                    fault,
                } => {
                    let body = remote_body(
                        source,
                        RemoteRange {
                            offset: *offset,
                            len: *len,
                            digest,
                            total: *total,
                        },
                        self.events.clone(),
                        (*fault).clone(),
                    )
                    .await?;
                    rb.header(CONTENT_LENGTH, len.to_string())
                        .body(reqwest::Body::wrap_stream(live.watch(body)))
                }
            };
            // The clock starts when the request goes out, not while a
            // streamed source was being opened.
            live.touch();
            let sent = rb.send();
            let resp = if streamed {
                tokio::select! {
                    r = sent => r,
                    _ = live.stalled(self.t.read_timeout) => return Err(self.stall_error(&live, &body)),
                }
            } else {
                sent.await
            }
            .map_err(|e| self.t.map_send_error(e, &self.t.host))?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && !retried
                && self.auth.on_unauthorized(&self.t, &resp, scopes)
            {
                debug!(%method, "401, re-authenticating with scopes {scopes:?}");
                retried = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// A streamed body stopped moving: the source's fault when the
    /// connection was waiting on it, the target's otherwise.
    fn stall_error(&self, live: &Liveness, body: &ReqBody<'_>) -> RegistryError {
        if let ReqBody::Remote { fault, .. } = body {
            if live.waiting_on_body() {
                let idle = self.t.read_timeout.as_secs();
                let got = live.sent();
                note_fault(
                    fault,
                    Fault::Transfer(format!("nothing came for {idle} s after {got} bytes")),
                );
            }
        }
        self.t.stall_error(live)
    }

    /// A GET with no body, retried like [`Session::send_retrying`]; kept apart
    /// from `send_once` because a streamed upload body is itself such a GET.
    async fn get_retrying(
        &self,
        url: &Url,
        headers: &[(&str, String)],
        scopes: &[Scope],
    ) -> Result<reqwest::Response> {
        let what = format!("GET {}", url.path());
        self.retrying(&what, || async {
            let mut retried = false;
            loop {
                let mut rb = self.t.http.get(url.clone());
                for (k, v) in headers {
                    rb = rb.header(*k, v.as_str());
                }
                if let Some(h) = self.auth.header_for(&self.t, url, scopes).await? {
                    rb = rb.header(reqwest::header::AUTHORIZATION, h);
                }
                let resp = rb
                    .send()
                    .await
                    .map_err(|e| self.t.map_send_error(e, &self.t.host))?;
                if resp.status() == StatusCode::UNAUTHORIZED
                    && !retried
                    && self.auth.on_unauthorized(&self.t, &resp, scopes)
                {
                    retried = true;
                    continue;
                }
                return Ok(resp);
            }
        })
        .await
    }

    /// Error for a failed response, with an auth hint on 401.
    pub(crate) async fn fail(&self, operation: &str, resp: reqwest::Response) -> RegistryError {
        // Where a Location or a redirect led: no credentials were sent there.
        let elsewhere =
            (!self.t.is_registry_origin(resp.url())).then(|| origin::host_port(resp.url()));
        match error_from_response(&self.t.host, operation, resp).await {
            RegistryError::Unauthorized { registry, message } => {
                let hint = match elsewhere {
                    Some(host) => format!(
                        "{host}, where the registry sent this request, asks for credentials; \
                         they are only sent to {registry} itself"
                    ),
                    None if self.auth.has_credential() => format!(
                        "the stored credentials were rejected or lack push access; \
                         run `dockless login {registry}`"
                    ),
                    None => format!(
                        "no credentials for this registry in the docker config; \
                         run `dockless login {registry}`"
                    ),
                };
                RegistryError::Unauthorized {
                    message: format!("{message} ({hint})"),
                    registry,
                }
            }
            other => other,
        }
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let url = self.t.url("/v2/")?;
        let resp = self
            .retrying("GET /v2/", || async {
                self.t
                    .http
                    .get(url.clone())
                    .send()
                    .await
                    .map_err(|e| self.t.map_send_error(e, &self.t.host))
            })
            .await?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::UNAUTHORIZED {
            self.auth.learn(&self.t, &resp);
            return Ok(());
        }
        Err(self.fail("API version check (GET /v2/)", resp).await)
    }

    pub(super) fn blob_url(&self, repo: &str, digest: &str) -> Result<Url> {
        self.t.url(&format!("/v2/{repo}/blobs/{digest}"))
    }
}

/// A streamed body of `len` bytes from `path` at `offset`.
async fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    digest: &str,
    total: u64,
    events: EventSink,
) -> Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static> {
    let io_err = |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = tokio::fs::File::open(path).await.map_err(io_err)?;
    f.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io_err)?;
    let digest = digest.to_string();
    let mut sent = offset;
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 * 1024).inspect_ok(
        move |chunk| {
            sent += chunk.len() as u64;
            events.emit(PushEvent::BlobProgress {
                digest: digest.clone(),
                sent,
                total,
            });
        },
    );
    Ok(stream)
}

/// Which bytes of a remote blob a request body carries.
struct RemoteRange<'a> {
    offset: u64,
    len: u64,
    digest: &'a str,
    total: u64,
}

/// A streamed body of bytes GET from the source registry. A whole blob is
/// hashed on the way: if its bytes do not match the digest (or the size is
/// wrong), the last chunk is withheld and the stream fails, so the target
/// never receives a complete body, and `slot` says why.
async fn remote_body(
    source: &Source,
    range: RemoteRange<'_>,
    events: EventSink,
    slot: SourceFault,
) -> Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static> {
    let RemoteRange {
        offset,
        len,
        digest,
        total,
    } = range;
    let session = &source.session;
    let url = session.blob_url(&source.repository, digest)?;
    let whole = offset == 0 && len == total;
    let mut headers = Vec::new();
    if !whole {
        let last = (offset + len).saturating_sub(1);
        headers.push(("range", format!("bytes={offset}-{last}")));
    }
    let resp = session
        .get_retrying(&url, &headers, &[Scope::pull(&source.repository)])
        .await?;
    let ok = if whole {
        resp.status() == StatusCode::OK
    } else {
        resp.status() == StatusCode::PARTIAL_CONTENT
    };
    if !ok {
        return Err(session
            .fail(&format!("blob download {digest} for streaming"), resp)
            .await);
    }
    let record = move |fault: Fault| -> std::io::Error {
        let why = match &fault {
            Fault::WrongBytes(w) | Fault::Transfer(w) => w.clone(),
        };
        note_fault(&slot, fault);
        std::io::Error::new(std::io::ErrorKind::InvalidData, why)
    };
    let expected = digest.to_string();
    let progress_digest = digest.to_string();
    let state = (
        resp.bytes_stream(),
        Sha256::new(),
        0u64,
        false,
        record,
        events,
    );
    let stream = futures_util::stream::unfold(
        state,
        move |(mut inner, mut hasher, mut seen, done, record, events)| {
            let expected = expected.clone();
            let progress_digest = progress_digest.clone();
            async move {
                if done {
                    return None;
                }
                let item = match inner.next().await {
                    Some(Ok(chunk)) => {
                        seen += chunk.len() as u64;
                        if seen > len {
                            Err(record(Fault::WrongBytes(format!("more than {len} bytes"))))
                        } else {
                            hasher.update(&chunk);
                            let finished = seen == len;
                            let actual = if whole && finished {
                                let d =
                                    format!("sha256:{}", hex::encode(hasher.clone().finalize()));
                                (d != expected).then_some(d)
                            } else {
                                None
                            };
                            match actual {
                                Some(d) => {
                                    Err(record(Fault::WrongBytes(format!("{d} ({seen} bytes)"))))
                                }
                                None => {
                                    events.emit(PushEvent::BlobProgress {
                                        digest: progress_digest,
                                        sent: offset + seen,
                                        total,
                                    });
                                    Ok(chunk)
                                }
                            }
                        }
                    }
                    Some(Err(e)) => Err(record(Fault::Transfer(format!(
                        "the download broke off after {seen} bytes: {}",
                        error_chain(&e)
                    )))),
                    None if seen < len => Err(record(Fault::WrongBytes(format!(
                        "only {seen} of {len} bytes"
                    )))),
                    None => return None,
                };
                let done = item.is_err();
                Some((item, (inner, hasher, seen, done, record, events)))
            }
        },
    );
    Ok(stream)
}
