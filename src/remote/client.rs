//! The client for one registry (cf. go-containerregistry's `transport`):
//! opened once for an [`Access`], it keeps the credential, the auth scheme,
//! the one token for that access and the connections, and sends every
//! request with them, retried on transient faults.

use std::path::Path;
use std::sync::Arc;

use reqwest::header::{HeaderValue, CONTENT_LENGTH};
use reqwest::{Method, StatusCode};
use tracing::debug;
use url::Url;

use super::auth::{Access, AuthState};
use super::body::{self, file_body, range_body, ByteStream, RemoteRange, SourceFault};
use super::credentials;
use super::error::{RegistryError, Result};
use super::options::{EventSink, Options, DEFAULT_CHUNK_SIZE};
use super::origin;
use super::retry::RetryPolicy;
use super::stall::Liveness;
use super::transport::{error_from_response, Transport};
use crate::image::{MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest and index type dockless reads, for a manifest GET.
pub(crate) fn accept_header() -> String {
    [
        MEDIA_TYPE_MANIFEST,
        MEDIA_TYPE_INDEX,
        DOCKER_MANIFEST,
        DOCKER_LIST,
    ]
    .join(", ")
}

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
    /// Bytes of a blob still being written, from a handle of its own.
    Open {
        file: &'a std::fs::File,
        offset: u64,
        len: u64,
    },
    /// Bytes of a blob in another registry, GET anew for every request, so
    /// a retry re-opens the source.
    Remote {
        source: &'a Source,
        range: RemoteRange<'a>,
        /// Set when the source failed or sent wrong bytes.
        fault: &'a SourceFault,
    },
}

/// A registry repository that holds blobs the target lacks, and the
/// client that reads it.
pub(crate) struct Source {
    pub(super) client: Arc<Client>,
    pub(super) repository: String,
    /// `registry/repository`, for messages and events.
    pub(super) name: String,
}

/// A registry client bound to the repositories it was opened for.
pub struct Client {
    pub(super) t: Transport,
    /// What its token covers.
    pub(super) access: Access,
    pub(super) auth: AuthState,
    pub(super) events: EventSink,
    pub(super) chunk_size: u64,
    pub(super) retry: RetryPolicy,
}

impl Client {
    /// A client for `registry` with the user's credentials for it (from the
    /// docker config); its token, when the registry asks for one, covers
    /// `access` and nothing else.
    pub async fn open(registry: &str, access: &Access, opts: &Options) -> Result<Client> {
        let credential = credentials::load_credential(registry).await?;
        debug!(registry, ?access, "opening a registry client");
        Ok(Client {
            t: Transport::new(registry, opts)?,
            access: access.clone(),
            auth: AuthState::new(credential, access, RetryPolicy::new(opts)),
            events: opts.events.clone(),
            chunk_size: if opts.chunk_size == 0 {
                DEFAULT_CHUNK_SIZE
            } else {
                opts.chunk_size
            },
            retry: RetryPolicy::new(opts),
        })
    }

    /// The registry as the user named it.
    pub fn registry(&self) -> &str {
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

    /// Send with this client's authorization; on 401 re-authenticate once
    /// and retry. GET, HEAD, PUT and DELETE are also retried on connection
    /// errors, timeouts and 408/429/5xx (see [`Client::send_retrying`]);
    /// other methods go out once. Blob-upload PUTs must use
    /// [`Client::send_once`].
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: ReqBody<'_>,
    ) -> Result<reqwest::Response> {
        if matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        ) {
            self.send_retrying(method, url, headers, body).await
        } else {
            self.send_once(method, url, headers, body).await
        }
    }

    /// [`Client::send_once`] again on transient faults, with backoff. Only
    /// for requests whose repetition cannot change the outcome.
    pub(crate) async fn send_retrying(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: ReqBody<'_>,
    ) -> Result<reqwest::Response> {
        let what = format!("{method} {}", url.path());
        self.retrying(&what, || self.send_once(method.clone(), url, headers, body))
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
    ) -> Result<reqwest::Response> {
        let mut retried = false;
        loop {
            let streamed = matches!(
                body,
                ReqBody::File { .. } | ReqBody::Open { .. } | ReqBody::Remote { .. }
            );
            let http = if streamed {
                &self.t.upload_http
            } else {
                &self.t.http
            };
            let mut rb = http.request(method.clone(), url.clone());
            for (k, v) in headers {
                rb = rb.header(*k, v.as_str());
            }
            let auth = self.auth.header_for(&self.t, url).await?;
            if let Some(h) = &auth {
                rb = rb.header(reqwest::header::AUTHORIZATION, h.clone());
            }
            let live = Liveness::new();
            rb = match self.streamed(&body).await? {
                Some((len, stream)) => rb
                    .header(CONTENT_LENGTH, len.to_string())
                    .body(reqwest::Body::wrap_stream(live.watch(stream))),
                None => match body {
                    ReqBody::Bytes(b) => rb.body(b.to_vec()),
                    _ => rb.header(CONTENT_LENGTH, "0"),
                },
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
            if self.reauthenticate(&resp, auth.as_ref(), &mut retried) {
                debug!(%method, "401, re-authenticating");
                continue;
            }
            return Ok(resp);
        }
    }

    /// A streamed body's length and bytes; None for a body held in memory.
    async fn streamed(&self, body: &ReqBody<'_>) -> Result<Option<(u64, ByteStream)>> {
        Ok(match *body {
            ReqBody::File {
                path,
                offset,
                len,
                digest,
                total,
            } => {
                let events = self.events.clone();
                let stream = file_body(path, offset, len, digest, total, events).await?;
                Some((len, Box::pin(stream)))
            }
            ReqBody::Open { file, offset, len } => {
                let io_err = |source| RegistryError::Io {
                    path: "<the layer being written>".into(),
                    source,
                };
                let f = tokio::fs::File::from_std(file.try_clone().map_err(io_err)?);
                let stream = range_body(f, offset, len, None).await.map_err(io_err)?;
                Some((len, Box::pin(stream)))
            }
            ReqBody::Remote {
                source,
                range,
                fault,
            } => {
                let stream = remote_body(source, range, self.events.clone(), fault).await?;
                Some((range.len, Box::pin(stream)))
            }
            ReqBody::Empty | ReqBody::Bytes(_) => None,
        })
    }

    /// Whether a 401 to a request that carried `sent` is worth one more try
    /// with fresh authorization (only once per request).
    fn reauthenticate(
        &self,
        resp: &reqwest::Response,
        sent: Option<&HeaderValue>,
        retried: &mut bool,
    ) -> bool {
        let again = resp.status() == StatusCode::UNAUTHORIZED
            && !*retried
            && self.auth.on_unauthorized(&self.t, resp, sent);
        *retried |= again;
        again
    }

    /// A streamed body stopped moving: the source's fault when the
    /// connection was waiting on it, the target's otherwise.
    fn stall_error(&self, live: &Liveness, body: &ReqBody<'_>) -> RegistryError {
        if let ReqBody::Remote { fault, .. } = body {
            if live.waiting_on_body() {
                let idle = self.t.read_timeout.as_secs();
                fault.note_transfer(format!(
                    "nothing came for {idle} s after {} bytes",
                    live.sent()
                ));
            }
        }
        self.t.stall_error(live)
    }

    /// A GET with no body, retried like [`Client::send_retrying`]; kept apart
    /// from `send_once` because a streamed upload body is itself such a GET.
    pub(super) async fn get_retrying(
        &self,
        url: &Url,
        headers: &[(&str, String)],
    ) -> Result<reqwest::Response> {
        let what = format!("GET {}", url.path());
        self.retrying(&what, || async {
            let mut retried = false;
            loop {
                let mut rb = self.t.http.get(url.clone());
                for (k, v) in headers {
                    rb = rb.header(*k, v.as_str());
                }
                let auth = self.auth.header_for(&self.t, url).await?;
                if let Some(h) = &auth {
                    rb = rb.header(reqwest::header::AUTHORIZATION, h.clone());
                }
                let resp = rb
                    .send()
                    .await
                    .map_err(|e| self.t.map_send_error(e, &self.t.host))?;
                if self.reauthenticate(&resp, auth.as_ref(), &mut retried) {
                    continue;
                }
                return Ok(resp);
            }
        })
        .await
    }

    /// The manifest or index under `reference` (a tag or digest) in
    /// `repo`, or None when the registry has none (404). Small documents
    /// only (signatures, attestations, indexes), read whole.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Option<Vec<u8>>> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        // An OCI manifest asked for without an OCI Accept is a 404 on docker-registry.
        let headers = [("accept", accept_header())];
        self.get_small(&url, &headers, "manifest").await
    }

    /// A small blob of `repo` (a signature payload, an attestation), read
    /// whole and checked against its digest; None when it is not there.
    pub async fn get_small_blob(&self, repo: &str, digest: &str) -> Result<Option<Vec<u8>>> {
        let url = self.blob_url(repo, digest)?;
        let Some(bytes) = self.get_small(&url, &[], "blob").await? else {
            return Ok(None);
        };
        let actual = crate::digest::sha256(&bytes);
        if actual != digest {
            return Err(RegistryError::Protocol {
                host: self.t.host.clone(),
                reason: format!("blob {digest} arrived as {actual}"),
            });
        }
        Ok(Some(bytes))
    }

    async fn get_small(
        &self,
        url: &Url,
        headers: &[(&str, String)],
        what: &str,
    ) -> Result<Option<Vec<u8>>> {
        let resp = self.get_retrying(url, headers).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail(what, resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| self.body_error(e))?;
        if bytes.len() > crate::image::MAX_DOCUMENT {
            return Err(RegistryError::Protocol {
                host: self.t.host.clone(),
                reason: format!(
                    "{what} {} is over {} bytes",
                    url.path(),
                    crate::image::MAX_DOCUMENT
                ),
            });
        }
        Ok(Some(bytes.to_vec()))
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

    /// `GET /v2/`: is this a registry, and which auth scheme does it ask for.
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

/// A streamed body of bytes GET from the source registry, checked on the
/// way (see [`body::checked`]).
async fn remote_body(
    source: &Source,
    range: RemoteRange<'_>,
    events: EventSink,
    slot: &SourceFault,
) -> Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static> {
    let client = &source.client;
    let url = client.blob_url(&source.repository, range.digest)?;
    let mut headers = Vec::new();
    if !range.whole() {
        let last = (range.offset + range.len).saturating_sub(1);
        headers.push(("range", format!("bytes={}-{last}", range.offset)));
    }
    let resp = client.get_retrying(&url, &headers).await?;
    let ok = if range.whole() {
        resp.status() == StatusCode::OK
    } else {
        resp.status() == StatusCode::PARTIAL_CONTENT
    };
    if !ok {
        return Err(client
            .fail(
                &format!("blob download {} for streaming", range.digest),
                resp,
            )
            .await);
    }
    Ok(body::checked(resp, range, events, slot))
}
