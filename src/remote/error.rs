//! What can go wrong talking to a registry, and which failures are worth
//! another try.

use reqwest::StatusCode;
use std::path::PathBuf;

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

    /// A manifest refused because a blob it names is missing or does not
    /// match its digest (the distribution spec's error codes): what a
    /// concurrent upload of the same blob looks like while it commits.
    pub fn is_blob_settling(&self) -> bool {
        matches!(self, RegistryError::Registry { status: 400, message, .. }
            if message.contains("MANIFEST_BLOB_UNKNOWN") || message.contains("DIGEST_INVALID"))
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

pub(super) type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Statuses that say "not now" rather than "no".
pub(super) fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Source chain as text, skipping reqwest's own URL-bearing top line.
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
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
