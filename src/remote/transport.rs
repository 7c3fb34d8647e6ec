//! HTTP plumbing for one registry host: the reqwest clients, URLs, and
//! turning transport failures and error bodies into [`RegistryError`]s.

use std::time::Duration;

use reqwest::StatusCode;
use url::Url;

use super::error::{error_chain, RegistryError, Result};
use super::options::Options;
use super::origin;
use super::stall::Liveness;
use super::tls::{self, tls_reason};

/// HTTP plumbing for one registry host.
pub(crate) struct Transport {
    pub(super) http: reqwest::Client,
    /// For streamed bodies: no `read_timeout`, which would count the whole
    /// upload; [`Liveness`] watches those requests instead.
    pub(super) upload_http: reqwest::Client,
    pub(super) read_timeout: Duration,
    /// Host as the user wrote it (used in messages and credential lookup).
    pub(super) host: String,
    /// `scheme://api-host/`
    pub(super) base: Url,
}

impl Transport {
    /// The clients for `registry`, over plain HTTP when `opts` names it insecure.
    pub(crate) fn new(registry: &str, opts: &Options) -> Result<Self> {
        // docker.io is an alias; the API lives elsewhere.
        let api_host = if registry == "docker.io" || registry == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if opts.is_insecure(registry) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{api_host}/")).map_err(|_| {
            RegistryError::InvalidReference {
                reference: registry.to_string(),
                reason: "not a valid registry host".into(),
            }
        })?;
        let tls = tls::registry_config(&opts.ca_certs, registry)?;
        Ok(Transport {
            http: http_client(opts.connect_timeout, Some(opts.read_timeout), tls.clone())?,
            upload_http: http_client(opts.connect_timeout, None, tls)?,
            read_timeout: opts.read_timeout,
            host: registry.to_string(),
            base,
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A streamed request body stopped moving, or its answer never came.
    pub(super) fn stall_error(&self, live: &Liveness) -> RegistryError {
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
    // Go's server answers a plain request on its TLS port so.
    let message = match message.contains("HTTP request to an HTTPS server") {
        true => format!(
            "{message}: the registry speaks TLS; drop --insecure (or --insecure-registry) for it"
        ),
        false => message,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

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
