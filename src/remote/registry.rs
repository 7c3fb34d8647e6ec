//! OCI distribution (registry v2) push client.
//!
//! Why not `oci-client` (0.18): its blob pushes take an in-memory buffer or a
//! one-shot stream, so there is no monolithic-then-chunked fallback from a
//! file; `mount_blob` asks for a token scoped to the target only (never `pull`
//! on the source repository) and treats the spec's 202 "mount refused, here is
//! an upload session" as an error; it cannot refuse Basic credentials over
//! plain HTTP; and TLS failures cannot be reported with the host and reason.
//! So this module speaks the protocol directly over reqwest + rustls.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use reqwest::header::{CONTENT_LENGTH, LOCATION};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tracing::{debug, info, warn};
use url::Url;

use crate::remote::auth::{self, AuthState, Scope};
use crate::remote::origin;
use crate::remote::stall::Liveness;

/// Errors from pushing or logging in. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("cannot resolve registry host {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("cannot connect to registry {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("timed out talking to registry {host}")]
    Timeout { host: String },
    #[error("registry {host} stopped taking the upload after {sent} bytes (nothing moved for {idle_secs} s)")]
    UploadStalled {
        host: String,
        sent: u64,
        idle_secs: u64,
    },
    #[error("TLS error with {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("HTTP error talking to {host}: {reason}")]
    Http { host: String, reason: String },
    #[error("registry {host} refused {operation} (HTTP {status}): {message}")]
    Registry {
        host: String,
        operation: String,
        status: u16,
        message: String,
    },
    #[error("authentication to {registry} failed: {message}")]
    Unauthorized { registry: String, message: String },
    #[error("access denied by {registry} for {operation}: {message}")]
    Denied {
        registry: String,
        operation: String,
        message: String,
    },
    #[error("credentials for {registry}: {reason}")]
    Credentials { registry: String, reason: String },
    #[error(
        "refusing to send credentials for {registry} over plain HTTP to {host}: only loopback and a registry named insecure get them in clear text"
    )]
    InsecureCredentials { registry: String, host: String },
    #[error("registry {registry} sent {what} on plain HTTP ({location}) to a request over HTTPS; refusing to leave HTTPS")]
    Downgrade {
        registry: String,
        what: &'static str,
        location: String,
    },
    #[error("registry {host} protocol error: {reason}")]
    Protocol { host: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob file {path} does not match its descriptor: expected {expected}, found {actual}")]
    BlobMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("streaming {digest} from {from}: the source sent {actual}, expected {expected}; refusing it")]
    SourceMismatch {
        digest: String,
        from: String,
        expected: String,
        actual: String,
    },
    #[error("streaming {digest} from {from}: {reason}")]
    SourceTransfer {
        digest: String,
        from: String,
        reason: String,
    },
}

impl RegistryError {
    /// The registry could not be reached or was not serving, even after the
    /// retries of one push (a down host, a timeout, 429 or 5xx): worth
    /// trying the whole push again later.
    pub fn is_unavailable(&self) -> bool {
        self.is_transient()
            || matches!(self, RegistryError::Dns { .. })
            || matches!(self, RegistryError::Registry { status, .. } if retryable_status(StatusCode::from_u16(*status).unwrap_or(StatusCode::OK)))
    }

    /// Faults of the path rather than of the request: worth another try.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Connect { .. }
                | RegistryError::Timeout { .. }
                | RegistryError::UploadStalled { .. }
                | RegistryError::SourceTransfer { .. }
                | RegistryError::Http { .. }
        )
    }
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A registry repository holding a blob that is not in the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBlob {
    pub registry: String,
    pub repository: String,
    /// Plain HTTP for the source registry.
    pub insecure: bool,
    /// Extra PEM CA files for the source registry.
    pub ca_certs: Vec<PathBuf>,
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

/// `registry/repository:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// e.g. `127.0.0.1:5000`, `docker.io`
    pub registry: String,
    /// e.g. `team/hello`, `library/alpine`
    pub repository: String,
    pub tag: String,
}

impl Reference {
    /// Parse `[host[:port]/]repo[:tag]`. Names without a registry host go to
    /// docker.io, single-component names there get `library/`. A missing tag
    /// means `latest`. Digest references are refused (a push needs a tag).
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |reason: &str| RegistryError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.contains('@') {
            return Err(bad("digest references cannot be pushed; use a tag"));
        }
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("empty or contains whitespace"));
        }
        let (first, rest) = match s.split_once('/') {
            Some((f, r)) => (f, Some(r)),
            None => (s, None),
        };
        // Same rule as docker: a first component with '.', ':' or "localhost" is a host.
        let (registry, remainder) = match rest {
            Some(r) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), r)
            }
            _ => ("docker.io".to_string(), s),
        };
        if registry.is_empty() {
            return Err(bad("empty registry host"));
        }
        let last_slash = remainder.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repo, tag) = match remainder[last_slash..].rfind(':') {
            Some(i) => (
                &remainder[..last_slash + i],
                &remainder[last_slash + i + 1..],
            ),
            None => (remainder, "latest"),
        };
        if !valid_tag(tag) {
            return Err(bad("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
        if !valid_repository(repo) {
            return Err(bad(
                "repository must be lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == "docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        Ok(Reference {
            registry,
            repository,
            tag: tag.to_string(),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_repository(r: &str) -> bool {
    !r.is_empty() && r.len() <= 255 && r.split('/').all(valid_path_component)
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    // Separators: one '.', one or two '_', or any number of '-'.
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Progress and outcome notifications during a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// Work on a blob begins.
    BlobStarted { digest: String, size: u64 },
    /// Bytes of the blob sent so far in the current attempt (restarts at 0 on retry).
    BlobProgress {
        digest: String,
        sent: u64,
        total: u64,
    },
    /// Already present in the target repository: nothing sent.
    BlobSkipped { digest: String },
    /// Mounted from another repository of the same registry.
    BlobMounted { digest: String, from: String },
    /// Uploaded; `from` names the registry repository it was streamed from.
    BlobUploaded {
        digest: String,
        from: Option<String>,
    },
    /// Manifest (or index) accepted; `tag` is a digest for the per-platform
    /// manifests of an index, which are put by digest before it.
    ManifestPushed { digest: String, tag: String },
}

type Callback = dyn Fn(&PushEvent) + Send + Sync;

/// Receives [`PushEvent`]s; cheap to clone. `EventSink::default()` discards them.
#[derive(Clone, Default)]
pub struct EventSink(Option<Arc<Callback>>);

impl EventSink {
    pub fn new(f: impl Fn(&PushEvent) + Send + Sync + 'static) -> Self {
        EventSink(Some(Arc::new(f)))
    }
    fn emit(&self, e: PushEvent) {
        if let Some(f) = &self.0 {
            f(&e);
        }
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "EventSink(callback)"
        } else {
            "EventSink(none)"
        })
    }
}

/// Default PATCH chunk: several registries cap a chunk at 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// Extra PEM CA files trusted in addition to the OS store.
    pub ca_certs: Vec<PathBuf>,
    /// Blobs uploaded at once (0 is treated as 1).
    pub concurrency: usize,
    pub events: EventSink,
    /// PATCH chunk size when monolithic upload is refused (0 = default).
    pub chunk_size: u64,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest silence while waiting for bytes of a response, and longest
    /// time an upload may go without the registry taking any of its body; a
    /// stalled registry fails the request after this. A slow upload that
    /// keeps moving is never cut.
    pub read_timeout: Duration,
    /// Tries per idempotent step, the first included (0 is treated as 1).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles per retry up to
    /// `max_retry_delay`, then jittered between half and all of it.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            insecure: false,
            ca_certs: Vec::new(),
            concurrency: 3,
            events: EventSink::default(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            max_attempts: 5,
            retry_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(10),
        }
    }
}

/// Longest `Retry-After` honoured; a registry asking for more gets it capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How idempotent steps are retried.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    attempts: u32,
    base: Duration,
    cap: Duration,
}

impl RetryPolicy {
    pub(crate) fn new(opts: &PushOptions) -> Self {
        RetryPolicy {
            attempts: opts.max_attempts.max(1),
            base: opts.retry_delay,
            cap: opts.max_retry_delay.max(opts.retry_delay),
        }
    }

    /// Run `op` until it succeeds, fails for good, or the attempts run out;
    /// the last result is returned as it is. `host` and `what` name the step
    /// in logs (never a URL's query, which may carry upload state).
    pub(crate) async fn run<F, Fut>(
        &self,
        host: &str,
        what: &str,
        mut op: F,
    ) -> Result<reqwest::Response>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<reqwest::Response>>,
    {
        let mut attempt = 1;
        loop {
            let res = op().await;
            let hint = match &res {
                Ok(r) if retryable_status(r.status()) => retry_after(r),
                Err(e) if e.is_transient() => None,
                _ => return res,
            };
            let reason = match &res {
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => e.to_string(),
            };
            if !self.wait(attempt, hint, host, what, &reason).await {
                return res;
            }
            attempt += 1;
        }
    }

    /// After try `attempt` failed for `reason`: waits out the backoff and
    /// returns true, or returns false when the tries are spent.
    pub(crate) async fn wait(
        &self,
        attempt: u32,
        hint: Option<Duration>,
        host: &str,
        what: &str,
        reason: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        if attempt >= self.attempts {
            return false;
        }
        let wait = self.delay(attempt, hint);
        warn!(%host, %what, %reason, attempt, ?wait, "retrying");
        tokio::time::sleep(wait).await;
        true
    }

    /// Wait before try `attempt + 1`. A server's `Retry-After` wins (capped);
    /// otherwise capped exponential backoff with jitter, so parallel blob
    /// uploads that failed together do not come back together.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(MAX_RETRY_AFTER);
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let d = exp.min(self.cap);
        d / 2 + (d / 2).mul_f64(jitter())
    }
}

/// A number in [0, 1) that differs per call (RandomState is seeded per
/// instance, so no RNG dependency is needed).
fn jitter() -> f64 {
    use std::hash::BuildHasher as _;
    let x = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Statuses that say "not now" rather than "no".
fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` in seconds (the HTTP-date form falls back to backoff).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// sha256 of the manifest bytes, computed locally.
    pub manifest_digest: String,
    pub uploaded: Vec<String>,
    pub mounted: Vec<String>,
    pub skipped: Vec<String>,
}

/// HTTP plumbing for one registry host.
pub(crate) struct Transport {
    http: reqwest::Client,
    /// For streamed bodies: no `read_timeout`, which would count the whole
    /// upload; [`Liveness`] watches those requests instead.
    upload_http: reqwest::Client,
    read_timeout: Duration,
    /// Host as the user wrote it (used in messages and credential lookup).
    host: String,
    /// `scheme://api-host/`
    base: Url,
}

impl Transport {
    pub(crate) fn new(registry: &str, insecure: bool, ca_certs: &[PathBuf]) -> Result<Self> {
        let d = PushOptions::default();
        Self::with_timeouts(
            registry,
            insecure,
            ca_certs,
            d.connect_timeout,
            d.read_timeout,
        )
    }

    pub(crate) fn with_timeouts(
        registry: &str,
        insecure: bool,
        ca_certs: &[PathBuf],
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self> {
        // docker.io is an alias; the API lives elsewhere.
        let api_host = if registry == "docker.io" || registry == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{api_host}/")).map_err(|_| {
            RegistryError::InvalidReference {
                reference: registry.to_string(),
                reason: "not a valid registry host".into(),
            }
        })?;
        let tls = tls_config(ca_certs)?;
        Ok(Transport {
            http: http_client(connect_timeout, Some(read_timeout), tls.clone())?,
            upload_http: http_client(connect_timeout, None, tls)?,
            read_timeout,
            host: registry.to_string(),
            base,
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A streamed request body stopped moving, or its answer never came.
    fn stall_error(&self, live: &Liveness) -> RegistryError {
        if live.finished() {
            return RegistryError::Timeout {
                host: self.host.clone(),
            };
        }
        RegistryError::UploadStalled {
            host: self.host.clone(),
            sent: live.sent(),
            idle_secs: self.read_timeout.as_secs(),
        }
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Whether `url` is on the registry's own origin (scheme, host and
    /// port), the only one its credentials go to.
    pub(crate) fn is_registry_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// `url` as the destination of one of this registry's secrets.
    pub(crate) fn secret_target<'a>(&'a self, url: &'a Url) -> origin::SecretTarget<'a> {
        origin::SecretTarget {
            url,
            registry: &self.host,
            registry_origin: &self.base,
        }
    }

    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|_| RegistryError::Protocol {
            host: self.host.clone(),
            reason: format!("cannot build URL for {path}"),
        })
    }

    /// Classify a transport error, naming `host` (not the URL: it may carry
    /// upload state in its query).
    pub(crate) fn map_send_error(&self, e: reqwest::Error, host: &str) -> RegistryError {
        let host = host.to_string();
        if let Some(refused) = origin::refused_redirect(&e) {
            return RegistryError::Downgrade {
                registry: host,
                what: "a redirect",
                location: refused.to.clone(),
            };
        }
        if let Some(reason) = tls_reason(&e) {
            return RegistryError::Tls { host, reason };
        }
        if e.is_timeout() {
            return RegistryError::Timeout { host };
        }
        let chain = error_chain(&e);
        if e.is_connect() {
            let lower = chain.to_ascii_lowercase();
            if lower.contains("dns")
                || lower.contains("lookup")
                || lower.contains("resolve")
                || lower.contains("name or service not known")
            {
                return RegistryError::Dns {
                    host,
                    reason: chain,
                };
            }
            return RegistryError::Connect {
                host,
                reason: chain,
            };
        }
        RegistryError::Http {
            host,
            reason: chain,
        }
    }
}

/// A client for one registry; `read_timeout` None for streamed uploads.
fn http_client(
    connect_timeout: Duration,
    read_timeout: Option<Duration>,
    tls: rustls::ClientConfig,
) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("dockless/", env!("CARGO_PKG_VERSION")))
        .redirect(origin::redirect_policy())
        // A Referer would hand the last URL (its query too) to the next host.
        .referer(false);
    if let Some(t) = read_timeout {
        b = b.read_timeout(t);
    }
    // Always hand reqwest our own rustls config: with `rustls-no-provider`
    // it would otherwise panic looking for a process-wide crypto provider
    // (even for plain HTTP, since an absolute Location may be https).
    b.tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| RegistryError::TlsConfig(format!("building HTTP client: {e}")))
}

/// Source chain as text, skipping reqwest's own URL-bearing top line.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        cur = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// Find a rustls error anywhere in the chain. `io::Error` hides its inner
/// error from `source()`, so look through `get_ref` explicitly.
fn tls_reason(e: &reqwest::Error) -> Option<String> {
    fn find<'a>(
        e: &'a (dyn std::error::Error + 'static),
        depth: usize,
    ) -> Option<&'a rustls::Error> {
        if depth > 16 {
            return None;
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| find(i, depth + 1)) {
                return Some(r);
            }
        }
        e.source().and_then(|s| find(s, depth + 1))
    }
    if let Some(r) = find(e, 0) {
        return Some(describe_rustls(r));
    }
    // Last resort if the error types are hidden: recognise rustls's wording.
    let chain = error_chain(e);
    chain.contains("invalid peer certificate").then_some(chain)
}

fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "server certificate is signed by an unknown authority \
                 (not in the OS trust store nor any --ca-cert)"
                .into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "server certificate is not valid for this host name".into()
            }
            C::Expired | C::ExpiredContext { .. } => "server certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "server certificate is not valid yet".into()
            }
            C::Revoked => "server certificate is revoked".into(),
            C::BadSignature => "server certificate signature does not verify against the \
                 trusted CA of the same name (wrong --ca-cert?)"
                .into(),
            other => format!("invalid server certificate: {other:?}"),
        },
        other => other.to_string(),
    }
}

fn tls_config(ca_certs: &[PathBuf]) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        debug!(
            errors = native.errors.len(),
            "some OS certificates could not be loaded"
        );
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "OS trust store loaded");
    for path in ca_certs {
        let shown = path.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| RegistryError::TlsConfig(format!("cannot read CA file {shown}: {e}")))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| {
                RegistryError::TlsConfig(format!("CA file {shown} is not valid PEM: {e}"))
            })?;
        if certs.is_empty() {
            return Err(RegistryError::TlsConfig(format!(
                "CA file {shown} contains no certificate"
            )));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                RegistryError::TlsConfig(format!(
                    "CA file {shown} holds an unusable certificate: {e}"
                ))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Read at most `limit` bytes of a body (error bodies and tokens are small;
/// a hostile server must not make us buffer gigabytes).
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(serde::Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

/// Decode the distribution error JSON into one line.
pub(crate) fn decode_error_body(body: &[u8]) -> Option<String> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    if parsed.errors.is_empty() {
        return None;
    }
    let parts: Vec<String> = parsed
        .errors
        .iter()
        .map(|e| {
            let mut s = match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            };
            if let Some(d) = &e.detail {
                let d = match d {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                if !d.is_empty() {
                    s.push_str(&format!(" ({})", truncate(&d, 300)));
                }
            }
            s
        })
        .collect();
    Some(parts.join("; "))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

const ERROR_BODY_WAIT: Duration = Duration::from_secs(30);

/// Turn a failed response into an error with the registry's own message.
pub(crate) async fn error_from_response(
    host: &str,
    operation: &str,
    resp: reqwest::Response,
) -> RegistryError {
    let status = resp.status();
    // Answers to uploads come without a read timeout (see `upload_http`);
    // the message is a courtesy, not worth waiting long for.
    let body = tokio::time::timeout(ERROR_BODY_WAIT, read_limited(resp, 64 * 1024))
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let message = decode_error_body(&body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        if text.is_empty() || text.starts_with('<') {
            status
                .canonical_reason()
                .unwrap_or("no details")
                .to_string()
        } else {
            truncate(text, 300)
        }
    });
    match status {
        StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
            registry: host.to_string(),
            message: format!("{operation}: {message}"),
        },
        StatusCode::FORBIDDEN => RegistryError::Denied {
            registry: host.to_string(),
            operation: operation.to_string(),
            message,
        },
        _ => RegistryError::Registry {
            host: host.to_string(),
            operation: operation.to_string(),
            status: status.as_u16(),
            message,
        },
    }
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
    session: Session,
    repository: String,
    name: String,
}

pub(crate) struct Session {
    t: Transport,
    auth: AuthState,
    events: EventSink,
    chunk_size: u64,
    retry: RetryPolicy,
}

impl Session {
    /// A session for one registry, with the user's credentials for it.
    pub(crate) async fn open(registry: &str, opts: &PushOptions) -> Result<Session> {
        let credential = auth::load_credential(registry).await?;
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

    fn blob_url(&self, repo: &str, digest: &str) -> Result<Url> {
        self.t.url(&format!("/v2/{repo}/blobs/{digest}"))
    }

    /// HEAD the blob in `repo`. Some(size) if present.
    async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = self.blob_url(repo, digest)?;
        let resp = self
            .send(
                Method::HEAD,
                &url,
                &[],
                ReqBody::Empty,
                &[Scope::push(repo)],
            )
            .await?;
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
        let scopes = [Scope::push(repo), Scope::pull(from)];
        // Repeating a mount is harmless: it either mounts or opens a session.
        let resp = self
            .send_retrying(Method::POST, &url, &[], ReqBody::Empty, &scopes)
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

    async fn start_upload(&self, repo: &str) -> Result<Url> {
        let url = self.t.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        // A repeated POST at worst leaves an unused session behind.
        let resp = self
            .send_retrying(
                Method::POST,
                &url,
                &[],
                ReqBody::Empty,
                &[Scope::push(repo)],
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.fail("start blob upload", resp).await);
        }
        self.location(&url, &resp)
    }

    /// Whole blob in one PUT into `session`.
    async fn put_monolithic(&self, repo: &str, session: &Url, up: &Upload<'_>) -> Result<Try> {
        let blob = up.blob;
        let mut url = session.clone();
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let resp = self
            .send_once(
                Method::PUT,
                &url,
                &[("content-type", "application/octet-stream".into())],
                up.body(0, blob.size),
                &[Scope::push(repo)],
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
    async fn put_chunked(
        &self,
        repo: &str,
        mut session: Url,
        up: &Upload<'_>,
        chunk: &mut u64,
    ) -> Result<Try> {
        let blob = up.blob;
        let scopes = [Scope::push(repo)];
        let mut offset = 0u64;
        while offset < blob.size {
            let len = (*chunk).max(1).min(blob.size - offset);
            let resp = self
                .send_once(
                    Method::PATCH,
                    &session,
                    &[
                        ("content-type", "application/octet-stream".into()),
                        ("content-range", format!("{}-{}", offset, offset + len - 1)),
                    ],
                    up.body(offset, len),
                    &scopes,
                )
                .await;
            let resp = up.blame(resp);
            // Whether a failed PATCH was applied is unknowable: the session is
            // abandoned, never written to again.
            let resp = match resp {
                Ok(r) => r,
                Err(e) if e.is_transient() => return Ok(Try::lost(e)),
                Err(e) => return Err(e),
            };
            match resp.status() {
                StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                    // The registry may ask for bigger chunks than we send.
                    if let Some(min) = resp
                        .headers()
                        .get("oci-chunk-min-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        *chunk = (*chunk).max(min);
                    }
                    session = self.location(&session, &resp)?;
                    offset += len;
                }
                StatusCode::PAYLOAD_TOO_LARGE if len > 64 * 1024 => {
                    // Retry the same range in smaller pieces; the session is still valid.
                    *chunk = (len / 2).max(64 * 1024);
                    debug!(chunk = *chunk, "chunk too large; shrinking");
                }
                s if retryable_status(s) => return self.again("chunked blob upload", resp).await,
                _ => return Err(self.fail("chunked blob upload", resp).await),
            }
        }
        let mut url = session;
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let resp = match self
            .send_once(Method::PUT, &url, &[], ReqBody::Empty, &scopes)
            .await
        {
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
                self.put_chunked(repo, url, up, &mut chunk).await?
            } else {
                self.put_monolithic(repo, &url, up).await?
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

    /// PUTs a manifest (or index) under `tag` and reports it; returns its
    /// digest, computed here from the exact bytes (the registry's
    /// `Docker-Content-Digest` is not trusted).
    pub(crate) async fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let url = self.t.url(&format!("/v2/{repo}/manifests/{tag}"))?;
        let resp = self
            .send(
                Method::PUT,
                &url,
                &[("content-type", media_type.to_string())],
                ReqBody::Bytes(bytes),
                &[Scope::push(repo)],
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
            tag: tag.to_string(),
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
                offset,
                len,
                digest: &self.blob.digest,
                total: self.blob.size,
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
        let fault = self.fault.lock().ok().and_then(|mut f| f.take());
        let (Some(fault), Some(src)) = (fault, self.remote) else {
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

/// How one upload try ended, short of a hard error.
enum Try {
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

/// Opens a session with each registry that holds blobs to stream.
async fn open_sources(image: &PushImage, opts: &PushOptions) -> Result<HashMap<String, Source>> {
    let mut sources = HashMap::new();
    for blob in std::iter::once(&image.config).chain(image.layers.iter()) {
        let Some(src) = &blob.source else { continue };
        if blob.path.is_file() || sources.contains_key(&src.key()) {
            continue;
        }
        let src_opts = PushOptions {
            insecure: src.insecure,
            ca_certs: src.ca_certs.clone(),
            events: EventSink::default(),
            ..opts.clone()
        };
        let session = Session::open(&src.registry, &src_opts).await?;
        sources.insert(
            src.key(),
            Source {
                session,
                repository: src.repository.clone(),
                name: src.key(),
            },
        );
    }
    Ok(sources)
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

/// Push `image` to `target`: blobs first (HEAD, mount, upload; in parallel),
/// then the manifest, so a failure never leaves a tag behind.
pub async fn push(
    image: &PushImage,
    target: &Reference,
    opts: &PushOptions,
) -> Result<PushOutcome> {
    let session = Session::open(&target.registry, opts).await?;
    debug!(target = %target, authenticated = session.auth.has_credential(), "pushing");
    session.ping().await?;

    // Config and layers may share digests (and layers may repeat): push each once.
    let mut seen = HashSet::new();
    let mut blobs = Vec::new();
    for b in std::iter::once(&image.config).chain(image.layers.iter()) {
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

    let sources = open_sources(image, opts).await?;
    let sources_ref = &sources;
    let repo = target.repository.as_str();
    let session_ref = &session;
    // Futures are built eagerly into a Vec: a lazily mapping closure over
    // `&LocalBlob` makes the whole push future !Send (higher-ranked lifetimes).
    let tasks: Vec<_> = blobs
        .into_iter()
        .map(|b| {
            let d = b.digest.clone();
            let fut = session_ref.push_blob(repo, b, sources_ref);
            async move { fut.await.map(|r| (d, r)) }
        })
        .collect();
    let results: Vec<(String, BlobResult)> = futures_util::stream::iter(tasks)
        .buffer_unordered(opts.concurrency.max(1))
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

    let manifest_digest = session
        .put_manifest(
            repo,
            &target.tag,
            &image.manifest_media_type,
            &image.manifest,
        )
        .await?;
    info!(target = %target, digest = %manifest_digest, "pushed");
    outcome.manifest_digest = manifest_digest;
    Ok(outcome)
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
        let r = Reference {
            registry: String::new(),
            repository: String::new(),
            tag: String::new(),
        };
        let o = PushOptions::default();
        is_send(async move { push(&img, &r, &o).await });
    }

    #[test]
    fn reference_parsing() {
        let r = Reference::parse("127.0.0.1:5000/team/hello:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "team/hello", "v1")
        );
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_str()),
            ("localhost", "latest")
        );
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/alpine")
        );
        let r = Reference::parse("me/app:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("docker.io", "me/app", "1.0")
        );
        let r = Reference::parse("reg.io:443/a/b").unwrap();
        assert_eq!((r.repository.as_str(), r.tag.as_str()), ("a/b", "latest"));
        for bad in [
            "",
            "UPPER/x",
            "reg.io/a//b",
            "a:",
            "x@sha256:00",
            "reg.io/-a",
            "a b",
            "reg.io/a:t/b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should fail");
        }
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

    #[test]
    fn error_body_decoding() {
        let b = br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{"x":1}}]}"#;
        assert_eq!(
            decode_error_body(b).unwrap(),
            r#"MANIFEST_INVALID: manifest invalid ({"x":1})"#
        );
        assert_eq!(decode_error_body(b"<html>"), None);
        assert_eq!(decode_error_body(br#"{"errors":[]}"#), None);
    }
}
