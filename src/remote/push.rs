//! Pushing an image: blobs first (HEAD, cross-repository mount, upload
//! monolithic or in chunks, or streamed from another registry), then the
//! manifest, so a failure never leaves a tag behind.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use tracing::{debug, info, warn};
use url::Url;

use super::auth::Access;
use super::body::{Fault, RemoteRange, SourceFault};
use super::client::{Client, ReqBody, Source};
use super::error::{retryable_status, RegistryError, Result};
use super::options::{Options, PushEvent};
use super::origin;
use super::pull::Puller;
use super::retry::retry_after;
use crate::name::Reference;

/// A blob another push of the same bytes is committing at the same moment
/// can look missing or corrupt to a manifest PUT on docker-registry's
/// filesystem driver; it settles within a moment, so the PUT is tried again.
const BLOB_SETTLE_TRIES: u32 = 4;
const BLOB_SETTLE_WAIT: Duration = Duration::from_millis(250);

/// A registry repository holding a blob that is not in the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBlob {
    pub registry: String,
    pub repository: String,
}

impl RemoteBlob {
    fn key(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// A blob stored in a local file, or streamed from another registry.
#[derive(Debug, Clone)]
pub struct LocalBlob {
    /// `sha256:<hex>`
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// File holding exactly the blob bytes (may be missing when `source` is set).
    pub path: PathBuf,
    /// Where to read the blob when `path` does not exist: it is then streamed
    /// from that registry to the target (GET piped into the upload's PUT),
    /// hashed on the way, with no temporary file.
    pub source: Option<RemoteBlob>,
    /// Repositories on the *target* registry that may already hold this blob;
    /// tried in order for a cross-repository mount before uploading.
    pub mount_from: Vec<String>,
}

/// Everything needed to push one image manifest.
#[derive(Debug, Clone)]
pub struct PushImage {
    /// Exact bytes to PUT (their sha256 is the manifest digest).
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub config: LocalBlob,
    pub layers: Vec<LocalBlob>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// sha256 of the manifest bytes, computed locally.
    pub manifest_digest: String,
    pub uploaded: Vec<String>,
    pub mounted: Vec<String>,
    pub skipped: Vec<String>,
}

impl Client {
    /// HEAD the blob in `repo`. Some(size) if present.
    pub(crate) async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = self.blob_url(repo, digest)?;
        let resp = self.send(Method::HEAD, &url, &[], ReqBody::Empty).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(&format!("HEAD blob {digest}"), resp).await),
        }
    }

    /// Location of a 202/201 response, resolved against the request URL
    /// (relative or absolute; query parameters kept). It may name another
    /// host (which then gets no credentials), but never plain HTTP after HTTPS.
    fn location(&self, req_url: &Url, resp: &reqwest::Response) -> Result<Url> {
        let raw = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                host: self.t.host.clone(),
                reason: format!("HTTP {} without a Location header", resp.status()),
            })?;
        let to = resolve_location(req_url, raw).ok_or_else(|| RegistryError::Protocol {
            host: self.t.host.clone(),
            reason: "unparseable Location header".into(),
        })?;
        origin::check_location(&self.t.host, req_url, &to)?;
        Ok(to)
    }

    /// Try mounting from `from`. Ok(Ok(())) mounted; Ok(Err(Some(url))) refused
    /// but an upload session was opened; Ok(Err(None)) refused.
    async fn try_mount(
        &self,
        repo: &str,
        digest: &str,
        from: &str,
    ) -> Result<std::result::Result<(), Option<Url>>> {
        let mut url = self.t.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", from);
        // Repeating a mount is harmless: it either mounts or opens a session.
        let resp = self
            .send_retrying(Method::POST, &url, &[], ReqBody::Empty)
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Ok(())),
            StatusCode::ACCEPTED => Ok(Err(Some(self.location(&url, &resp)?))),
            s => {
                // 401/403/404...: the source is not usable; upload instead.
                debug!(%digest, %from, status = %s, "mount refused");
                Ok(Err(None))
            }
        }
    }

    pub(super) async fn start_upload(&self, repo: &str) -> Result<Url> {
        let url = self.t.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        // A repeated POST at worst leaves an unused session behind.
        let resp = self
            .send_retrying(Method::POST, &url, &[], ReqBody::Empty)
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.fail("start blob upload", resp).await);
        }
        self.location(&url, &resp)
    }

    /// Whole blob in one PUT into `session`.
    async fn put_monolithic(&self, session: &Url, up: &Upload<'_>) -> Result<Try> {
        let blob = up.blob;
        let mut url = session.clone();
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let resp = self
            .send_once(
                Method::PUT,
                &url,
                &[("content-type", "application/octet-stream".into())],
                up.body(0, blob.size),
            )
            .await;
        let resp = up.blame(resp);
        let resp = match resp {
            Ok(r) => r,
            Err(e) if e.is_transient() => {
                warn!(digest = %blob.digest, "monolithic upload failed in transit: {e}");
                return Ok(Try::lost(e));
            }
            Err(e) => return Err(e),
        };
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(Try::Done),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(self.fail("blob upload", resp).await)
            }
            s if retryable_status(s) => self.again("monolithic blob upload", resp).await,
            s => {
                let err = self.fail("monolithic blob upload", resp).await;
                info!(digest = %blob.digest, status = %s, "monolithic upload refused ({err}); trying chunked");
                Ok(Try::UseChunks)
            }
        }
    }

    /// A 429/5xx answer as a [`Try::Again`], keeping the registry's message.
    async fn again(&self, operation: &str, resp: reqwest::Response) -> Result<Try> {
        let retry_after = retry_after(&resp);
        Ok(Try::Again {
            error: self.fail(operation, resp).await,
            retry_after,
        })
    }

    /// PATCH the blob in chunks into `session`, then close it with a PUT.
    /// `chunk` is shared across tries so a size the registry refused stays refused.
    async fn put_chunked(&self, mut session: Url, up: &Upload<'_>, chunk: &mut u64) -> Result<Try> {
        let blob = up.blob;
        let mut offset = 0u64;
        while offset < blob.size {
            let len = (*chunk).max(1).min(blob.size - offset);
            let sent = self
                .patch(&session, offset, len, up.body(offset, len))
                .await;
            match self
                .patched(&session, up.blame(sent), (offset, len), chunk)
                .await?
            {
                Patched::Next(next) => {
                    session = next;
                    offset += len;
                }
                Patched::Smaller => {}
                Patched::Stop(step) => return Ok(step),
            }
        }
        self.finish_upload(session, &blob.digest).await
    }

    /// One PATCH of `len` bytes at `offset` into `session`.
    pub(super) async fn patch(
        &self,
        session: &Url,
        offset: u64,
        len: u64,
        body: ReqBody<'_>,
    ) -> Result<reqwest::Response> {
        let headers = [
            ("content-type", "application/octet-stream".into()),
            ("content-range", format!("{}-{}", offset, offset + len - 1)),
        ];
        self.send_once(Method::PATCH, session, &headers, body).await
    }

    /// What the answer to a PATCH of `len` bytes at `offset` means: the
    /// session's next URL (from its `Location`), a smaller `chunk` to send
    /// the same range again in, or the end of this try. Whether a failed
    /// PATCH was applied is unknowable, so such a session is abandoned,
    /// never written to again. A refusal (4xx) is an error.
    pub(super) async fn patched(
        &self,
        session: &Url,
        sent: Result<reqwest::Response>,
        (offset, len): (u64, u64),
        chunk: &mut u64,
    ) -> Result<Patched> {
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_transient() => return Ok(Patched::Stop(Try::lost(e))),
            Err(e) => return Err(e),
        };
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                // The registry may ask for bigger chunks than we send.
                if let Some(min) = header_u64(&resp, "oci-chunk-min-length") {
                    *chunk = (*chunk).max(min);
                }
                self.check_range(&resp, offset + len)?;
                Ok(Patched::Next(self.location(session, &resp)?))
            }
            StatusCode::PAYLOAD_TOO_LARGE if len > 64 * 1024 => {
                // Retry the same range in smaller pieces; the session is still valid.
                *chunk = (len / 2).max(64 * 1024);
                debug!(chunk = *chunk, "chunk too large; shrinking");
                Ok(Patched::Smaller)
            }
            s if retryable_status(s) => Ok(Patched::Stop(
                self.again("chunked blob upload", resp).await?,
            )),
            _ => Err(self.fail("chunked blob upload", resp).await),
        }
    }

    /// A PATCH answer's `Range` (`0-<last>`, as the spec gives it) must say
    /// the registry holds exactly the `held` bytes sent; a registry that
    /// leaves it out is taken at its word.
    fn check_range(&self, resp: &reqwest::Response, held: u64) -> Result<()> {
        let Some(range) = resp.headers().get("range").and_then(|v| v.to_str().ok()) else {
            return Ok(());
        };
        let last = range
            .trim()
            .trim_start_matches("bytes=")
            .split_once('-')
            .and_then(|(_, last)| last.trim().parse::<u64>().ok());
        match last {
            Some(last) if last + 1 != held => Err(RegistryError::Protocol {
                host: self.t.host.clone(),
                reason: format!("the upload holds {} bytes after {held} were sent", last + 1),
            }),
            _ => Ok(()),
        }
    }

    /// Closes an upload session with the blob's digest.
    pub(super) async fn finish_upload(&self, session: Url, digest: &str) -> Result<Try> {
        let mut url = session;
        url.query_pairs_mut().append_pair("digest", digest);
        let resp = match self.send_once(Method::PUT, &url, &[], ReqBody::Empty).await {
            Ok(r) => r,
            Err(e) if e.is_transient() => return Ok(Try::lost(e)),
            Err(e) => return Err(e),
        };
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(Try::Done),
            s if retryable_status(s) => self.again("finish blob upload", resp).await,
            _ => Err(self.fail("finish blob upload", resp).await),
        }
    }

    /// Upload a blob the registry lacks. Every try gets a fresh upload
    /// session, and after a failed try the blob is HEADed first: the
    /// registry may have stored it even though its answer was lost.
    async fn upload(&self, repo: &str, first: Option<Url>, up: &Upload<'_>) -> Result<()> {
        let blob = up.blob;
        let mut session = first;
        let mut chunked = false;
        let mut chunk = self.chunk_size.max(1);
        let mut monolithic_transit_failures = 0;
        let mut attempt = 1;
        loop {
            let url = match session.take() {
                Some(s) => s,
                None => self.start_upload(repo).await?,
            };
            let step = if chunked {
                self.put_chunked(url, up, &mut chunk).await?
            } else {
                self.put_monolithic(&url, up).await?
            };
            match step {
                Try::Done => return Ok(()),
                // The refused session may be poisoned; the next loop starts afresh.
                Try::UseChunks => chunked = true,
                Try::Again { error, retry_after } => {
                    if attempt >= self.retry.attempts {
                        return Err(error);
                    }
                    if self.blob_exists(repo, &blob.digest).await? {
                        info!(digest = %blob.digest, "blob arrived although its upload failed ({error})");
                        return Ok(());
                    }
                    // Some proxies cut oversized bodies: after two cuts, go chunked.
                    if !chunked && error.is_transient() {
                        monolithic_transit_failures += 1;
                        chunked = monolithic_transit_failures >= 2;
                    }
                    let wait = self.retry.delay(attempt, retry_after);
                    warn!(digest = %blob.digest, attempt, ?wait, "blob upload failed ({error}); retrying in a new session");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn push_blob(
        &self,
        repo: &str,
        blob: &LocalBlob,
        sources: &HashMap<String, Source>,
    ) -> Result<BlobResult> {
        self.events.emit(PushEvent::BlobStarted {
            digest: blob.digest.clone(),
            size: blob.size,
        });
        if self.blob_exists(repo, &blob.digest).await? {
            debug!(digest = %blob.digest, "blob already present");
            self.events.emit(PushEvent::BlobSkipped {
                digest: blob.digest.clone(),
            });
            return Ok(BlobResult::Skipped);
        }
        // Verify the file before sending anything of it; a streamed blob is
        // verified on the way instead.
        let remote = match &blob.source {
            Some(src) if !blob.path.is_file() => sources.get(&src.key()),
            _ => None,
        };
        if remote.is_none() {
            verify_file(blob).await?;
        }
        let up = Upload {
            blob,
            remote,
            fault: SourceFault::default(),
        };
        let mut session = None;
        for from in blob.mount_from.iter().filter(|f| f.as_str() != repo) {
            match self.try_mount(repo, &blob.digest, from).await? {
                Ok(()) => {
                    self.events.emit(PushEvent::BlobMounted {
                        digest: blob.digest.clone(),
                        from: from.clone(),
                    });
                    return Ok(BlobResult::Mounted);
                }
                Err(Some(s)) => {
                    // Refused, but a session was opened for us: use it.
                    session = Some(s);
                    break;
                }
                Err(None) => {}
            }
        }
        if let Some(src) = remote {
            info!(digest = %blob.digest, from = %src.name, "streaming blob registry to registry");
        }
        self.upload(repo, session, &up).await?;
        self.events.emit(PushEvent::BlobUploaded {
            digest: blob.digest.clone(),
            from: remote.map(|src| src.name.clone()),
        });
        Ok(BlobResult::Uploaded)
    }

    /// Reports a blob a streamed upload committed as uploaded.
    fn report_streamed(&self, blob: &LocalBlob) -> BlobResult {
        self.events.emit(PushEvent::BlobStarted {
            digest: blob.digest.clone(),
            size: blob.size,
        });
        self.events.emit(PushEvent::BlobUploaded {
            digest: blob.digest.clone(),
            from: None,
        });
        BlobResult::Uploaded
    }

    /// PUTs a manifest (or index) under `reference` (a tag, or its own
    /// digest) and reports it; returns its
    /// digest, computed here from the exact bytes (the registry's
    /// `Docker-Content-Digest` is not trusted).
    pub(crate) async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let mut waited = 0;
        loop {
            match self
                .put_manifest_once(repo, reference, media_type, bytes)
                .await
            {
                Err(e) if e.is_blob_settling() && waited < BLOB_SETTLE_TRIES => {
                    waited += 1;
                    warn!(%repo, %reference, "{e}; trying again");
                    tokio::time::sleep(BLOB_SETTLE_WAIT * waited).await;
                }
                other => return other,
            }
        }
    }

    async fn put_manifest_once(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let url = self.t.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let resp = self
            .send(
                Method::PUT,
                &url,
                &[("content-type", media_type.to_string())],
                ReqBody::Bytes(bytes),
            )
            .await?;
        // 201 is the spec; some registries answer 200 or 202 for the same success.
        if !matches!(
            resp.status(),
            StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED
        ) {
            return Err(self.fail("manifest upload", resp).await);
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        self.events.emit(PushEvent::ManifestPushed {
            digest: digest.clone(),
            reference: reference.to_string(),
            repository: format!("{}/{repo}", self.registry()),
        });
        Ok(digest)
    }
}

/// One blob being uploaded, from its file or streamed from a source registry.
struct Upload<'a> {
    blob: &'a LocalBlob,
    remote: Option<&'a Source>,
    fault: SourceFault,
}

impl Upload<'_> {
    fn body(&self, offset: u64, len: u64) -> ReqBody<'_> {
        match self.remote {
            Some(source) => ReqBody::Remote {
                source,
                range: RemoteRange {
                    offset,
                    len,
                    digest: &self.blob.digest,
                    total: self.blob.size,
                },
                fault: &self.fault,
            },
            None => ReqBody::File {
                path: &self.blob.path,
                offset,
                len,
                digest: &self.blob.digest,
                total: self.blob.size,
            },
        }
    }

    /// The outcome of a request that carried this blob: when its source
    /// failed, that failure (the target only saw the body cut), at most once
    /// per try.
    fn blame(&self, sent: Result<reqwest::Response>) -> Result<reqwest::Response> {
        let (Some(fault), Some(src)) = (self.fault.take(), self.remote) else {
            return sent;
        };
        let (digest, from) = (self.blob.digest.clone(), src.name.clone());
        Err(match fault {
            Fault::WrongBytes(actual) => RegistryError::SourceMismatch {
                digest,
                from,
                expected: format!("{} ({} bytes)", self.blob.digest, self.blob.size),
                actual,
            },
            Fault::Transfer(reason) => RegistryError::SourceTransfer {
                digest,
                from,
                reason,
            },
        })
    }
}

enum BlobResult {
    Skipped,
    Mounted,
    Uploaded,
}

/// How the registry took one PATCH, short of a hard error.
pub(super) enum Patched {
    /// Taken; the session goes on at this URL.
    Next(Url),
    /// Too large: send the same range in smaller chunks.
    Smaller,
    /// This try is over (failed in transit, or 429/5xx).
    Stop(Try),
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// How one upload try ended, short of a hard error.
pub(super) enum Try {
    Done,
    /// The registry refuses monolithic uploads.
    UseChunks,
    /// Failed in transit or with 429/5xx; the blob may or may not have landed.
    Again {
        error: RegistryError,
        retry_after: Option<Duration>,
    },
}

impl Try {
    /// A transport error that may be retried: the request may or may not
    /// have reached the registry, and no answer says which.
    fn lost(error: RegistryError) -> Try {
        Try::Again {
            error,
            retry_after: None,
        }
    }
}

pub(crate) fn resolve_location(req_url: &Url, raw: &str) -> Option<Url> {
    // Url::join keeps an absolute URL as-is and resolves a relative one
    // against the request; both keep their own query string.
    req_url.join(raw.trim()).ok()
}

/// sha256 and size of a file, streamed.
pub async fn file_digest(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n_total))
}

async fn verify_file(blob: &LocalBlob) -> Result<()> {
    let (digest, size) = file_digest(&blob.path)
        .await
        .map_err(|source| RegistryError::Io {
            path: blob.path.clone(),
            source,
        })?;
    if digest != blob.digest || size != blob.size {
        return Err(RegistryError::BlobMismatch {
            path: blob.path.clone(),
            expected: format!("{} ({} bytes)", blob.digest, blob.size),
            actual: format!("{digest} ({size} bytes)"),
        });
    }
    Ok(())
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
}

/// A client for pushing to one repository: push access to it and pull
/// access to the repositories of its registry that blobs may be mounted
/// from, bound when it is opened, plus the clients of the registries that
/// blobs are streamed from. Opened once for a whole image or index.
pub struct Pusher {
    client: Client,
    target: Reference,
    /// `registry/repository` → the source repository and its client.
    sources: HashMap<String, Source>,
    concurrency: usize,
    /// Blobs already committed to the target repository in this run and
    /// not yet reported: each is reported uploaded once, by the first image
    /// that has it; the next ones HEAD it as any blob.
    committed: std::sync::Mutex<HashSet<String>>,
}

impl Pusher {
    /// Opens the clients `images` need to be pushed to `target`, and checks
    /// that the target is a registry (learning its auth scheme).
    pub async fn open(target: &Reference, images: &[&PushImage], opts: &Options) -> Result<Pusher> {
        let blobs = || images.iter().flat_map(|i| i.blobs());
        let mounts = blobs().flat_map(|b| &b.mount_from);
        let access = Access::push(target.repository()).and_pull(mounts);
        let client = Client::open(target.registry(), &access, opts).await?;
        debug!(target = %target, authenticated = client.auth.has_credential(), "pushing");
        client.ping().await?;
        let streamed: Vec<&RemoteBlob> = blobs()
            .filter(|b| !b.path.is_file())
            .filter_map(|b| b.source.as_ref())
            .collect();
        let puller = Puller::new(
            opts,
            streamed
                .iter()
                .map(|s| (s.registry.as_str(), s.repository.as_str())),
        );
        let mut sources = HashMap::new();
        for src in streamed {
            if sources.contains_key(&src.key()) {
                continue;
            }
            let client = puller.client(&src.registry, &src.repository).await?;
            let source = Source {
                client,
                repository: src.repository.clone(),
                name: src.key(),
            };
            sources.insert(src.key(), source);
        }
        Ok(Pusher {
            client,
            target: target.clone(),
            sources,
            concurrency: opts.concurrency.max(1),
            committed: std::sync::Mutex::new(HashSet::new()),
        })
    }

    /// Takes `digests` as committed to the target repository already (a
    /// streamed upload got the registry's 201 for each): they are reported
    /// as uploaded, with no HEAD and nothing sent.
    pub fn assume_committed(&mut self, digests: &HashSet<String>) {
        if let Ok(mut committed) = self.committed.lock() {
            committed.extend(digests.iter().cloned());
        }
    }

    /// Pushes `image`'s blobs (HEAD, mount, upload; in parallel), then its
    /// manifest under `reference` (the target's tag, or the manifest's own
    /// digest for each image of an index), so a failure never leaves a tag
    /// behind.
    pub async fn push(&self, image: &PushImage, reference: &str) -> Result<PushOutcome> {
        // Config and layers may share digests (and layers may repeat): push each once.
        let mut seen = HashSet::new();
        let mut blobs = Vec::new();
        for b in image.blobs() {
            if !valid_digest(&b.digest) {
                return Err(RegistryError::BlobMismatch {
                    path: b.path.clone(),
                    expected: "a digest of the form sha256:<64 hex>".into(),
                    actual: b.digest.clone(),
                });
            }
            if seen.insert(b.digest.clone()) {
                blobs.push(b);
            }
        }
        let repo = self.target.repository();
        let (client, sources) = (&self.client, &self.sources);
        // Futures are built eagerly into a Vec: a lazily mapping closure over
        // `&LocalBlob` makes the whole push future !Send (higher-ranked lifetimes).
        let tasks: Vec<_> = blobs
            .into_iter()
            .map(|b| {
                let d = b.digest.clone();
                let committed = self.committed.lock().is_ok_and(|mut c| c.remove(&d));
                let fut = client.push_blob(repo, b, sources);
                async move {
                    if committed {
                        return Ok((d, client.report_streamed(b)));
                    }
                    fut.await.map(|r| (d, r))
                }
            })
            .collect();
        let results: Vec<(String, BlobResult)> = futures_util::stream::iter(tasks)
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;

        let mut outcome = PushOutcome::default();
        for (d, r) in results {
            match r {
                BlobResult::Skipped => outcome.skipped.push(d),
                BlobResult::Mounted => outcome.mounted.push(d),
                BlobResult::Uploaded => outcome.uploaded.push(d),
            }
        }
        let manifest_digest = self
            .put_manifest(reference, &image.manifest_media_type, &image.manifest)
            .await?;
        outcome.manifest_digest = manifest_digest;
        Ok(outcome)
    }

    /// Pushes one blob (HEAD, then upload) to the target repository.
    pub async fn push_blob(&self, blob: &LocalBlob) -> Result<()> {
        let repo = self.target.repository();
        self.client
            .push_blob(repo, blob, &self.sources)
            .await
            .map(drop)
    }

    /// The manifest or index under `reference` in the target repository,
    /// or None when the registry has none (404).
    pub async fn get_manifest(&self, reference: &str) -> Result<Option<Vec<u8>>> {
        self.client
            .get_manifest(self.target.repository(), reference)
            .await
    }

    /// PUTs a manifest or index under `reference`; returns its digest.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let repo = self.target.repository();
        let digest = self
            .client
            .put_manifest(repo, reference, media_type, bytes)
            .await?;
        let shown = format!("{}/{repo}:{reference}", self.target.registry());
        info!(target = %shown, %digest, "pushed");
        Ok(digest)
    }
}

impl PushImage {
    /// The config, then the layers.
    fn blobs(&self) -> impl Iterator<Item = &LocalBlob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// Push `image` to `target` (its tag) through a [`Pusher`] opened for it.
pub async fn push(image: &PushImage, target: &Reference, opts: &Options) -> Result<PushOutcome> {
    let pusher = Pusher::open(target, &[image], opts).await?;
    pusher.push(image, target.identifier()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_future_is_send() {
        fn is_send<T: Send>(_: T) {}
        let img = PushImage {
            manifest: vec![],
            manifest_media_type: String::new(),
            config: LocalBlob {
                digest: String::new(),
                size: 0,
                media_type: String::new(),
                path: PathBuf::new(),
                source: None,
                mount_from: vec![],
            },
            layers: vec![],
        };
        let r = Reference::parse_tag("127.0.0.1:1/unused").unwrap();
        let o = Options::default();
        is_send(async move { push(&img, &r, &o).await });
    }

    #[test]
    fn location_resolution_keeps_query() {
        let base = Url::parse("https://r:5000/v2/a/blobs/uploads/").unwrap();
        let rel = resolve_location(&base, "/v2/a/blobs/uploads/u1?_state=xyz").unwrap();
        assert_eq!(
            rel.as_str(),
            "https://r:5000/v2/a/blobs/uploads/u1?_state=xyz"
        );
        let abs = resolve_location(&base, "https://cdn.example/up/u1?sig=1&x=2").unwrap();
        assert_eq!(abs.as_str(), "https://cdn.example/up/u1?sig=1&x=2");
        let mut with_digest = abs.clone();
        with_digest
            .query_pairs_mut()
            .append_pair("digest", "sha256:ab");
        assert_eq!(
            with_digest.as_str(),
            "https://cdn.example/up/u1?sig=1&x=2&digest=sha256%3Aab"
        );
    }
}
