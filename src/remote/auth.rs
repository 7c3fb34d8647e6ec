//! Registry authentication: Basic and Bearer token flows, one token per
//! client for the access it was opened with, re-authentication on 401.
//!
//! Secrets (passwords, identity tokens, bearer tokens) are only ever held in
//! [`Credential`] / token strings whose `Debug` output is redacted, and they are
//! never formatted into logs or errors.

use std::collections::BTreeSet;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::debug;
use url::Url;

use super::challenge::{parse_www_authenticate, Challenge};
use super::credentials::Credential;
use super::error::RegistryError;
use super::origin;
use super::retry::RetryPolicy;
use super::transport::{read_limited, Transport};

/// What a client may do on its registry: push to some repositories, pull
/// from others. Its bearer token is asked for with exactly these scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    push: BTreeSet<String>,
    pull: BTreeSet<String>,
}

impl Access {
    /// Pull from `repositories`.
    pub fn pull<S: AsRef<str>>(repositories: impl IntoIterator<Item = S>) -> Access {
        Access::default().and_pull(repositories)
    }

    /// Push to (and pull from) `repository`.
    pub fn push(repository: &str) -> Access {
        Access {
            push: BTreeSet::from([repository.to_string()]),
            pull: BTreeSet::new(),
        }
    }

    /// This access, and pull from `repositories` too (mount sources).
    pub fn and_pull<S: AsRef<str>>(mut self, repositories: impl IntoIterator<Item = S>) -> Access {
        for r in repositories {
            if !self.push.contains(r.as_ref()) {
                self.pull.insert(r.as_ref().to_string());
            }
        }
        self
    }

    /// Whether this access reads `repository`.
    pub fn pulls(&self, repository: &str) -> bool {
        self.pull.contains(repository) || self.push.contains(repository)
    }

    /// Token scopes, pushes first: some registries look only at the first.
    fn scopes(&self) -> Vec<String> {
        let push = self
            .push
            .iter()
            .map(|r| format!("repository:{r}:pull,push"));
        let pull = self.pull.iter().map(|r| format!("repository:{r}:pull"));
        push.chain(pull).collect()
    }
}

#[derive(Debug, Clone)]
enum Scheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One client's authentication: its credential, the scheme the registry
/// asked for, and the one bearer token for its [`Access`], asked for once
/// and again only when the registry refuses it.
pub(crate) struct AuthState {
    credential: Option<Credential>,
    scheme: Mutex<Scheme>,
    scopes: Vec<String>,
    token: Mutex<Option<HeaderValue>>,
    /// Held while a token is fetched, so parallel requests wait for it
    /// rather than each asking for one.
    fetching: tokio::sync::Mutex<()>,
    /// Token servers fail like registries do; their requests are idempotent.
    retry: RetryPolicy,
}

impl AuthState {
    pub(crate) fn new(credential: Option<Credential>, access: &Access, retry: RetryPolicy) -> Self {
        AuthState {
            credential,
            scheme: Mutex::new(Scheme::Anonymous),
            scopes: access.scopes(),
            token: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            retry,
        }
    }

    pub(crate) fn has_credential(&self) -> bool {
        self.credential.is_some()
    }

    fn scheme(&self) -> Scheme {
        lock(&self.scheme).clone()
    }

    fn set_scheme(&self, s: Scheme) {
        *lock(&self.scheme) = s;
    }

    fn cached_token(&self) -> Option<HeaderValue> {
        lock(&self.token).clone()
    }

    /// Learn the scheme from the `GET /v2/` ping response. Only the
    /// registry's own origin may challenge: one it redirected to may not.
    pub(crate) fn learn(&self, t: &Transport, resp: &reqwest::Response) {
        if resp.status() != StatusCode::UNAUTHORIZED || !t.is_registry_origin(resp.url()) {
            self.set_scheme(Scheme::Anonymous);
            return;
        }
        for ch in challenges(resp) {
            match ch {
                Challenge::Bearer { realm, service, .. } => {
                    self.set_scheme(Scheme::Bearer { realm, service });
                    return;
                }
                Challenge::Basic { .. } => {
                    self.set_scheme(Scheme::Basic);
                    return;
                }
                Challenge::Other { scheme } => {
                    debug!(%scheme, "ignoring unsupported auth scheme");
                }
            }
        }
    }

    /// The `Authorization` header to send to `url`: none for any origin but
    /// the registry's own (an upload `Location` elsewhere, a storage host),
    /// and an error rather than a secret in clear text (see
    /// [`origin::ensure_safe_for_secrets`]).
    pub(crate) async fn header_for(
        &self,
        t: &Transport,
        url: &Url,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let scheme = self.scheme();
        if matches!(scheme, Scheme::Anonymous) {
            return Ok(None);
        }
        if !t.is_registry_origin(url) {
            debug!(to = %origin::host_port(url), "another origin than the registry's: no credentials");
            return Ok(None);
        }
        if self.credential.is_some() {
            origin::ensure_safe_for_secrets(t.secret_target(url))?;
        }
        match scheme {
            Scheme::Anonymous => Ok(None),
            Scheme::Basic => match &self.credential {
                Some(Credential::UserPass { username, password }) => {
                    Ok(Some(basic_header(username, password)))
                }
                _ => Ok(None),
            },
            Scheme::Bearer { realm, service } => {
                self.bearer(t, &realm, service.as_deref()).await.map(Some)
            }
        }
    }

    /// The bearer token for this client's scopes, fetched once.
    async fn bearer(
        &self,
        t: &Transport,
        realm: &str,
        service: Option<&str>,
    ) -> Result<HeaderValue, RegistryError> {
        if let Some(v) = self.cached_token() {
            return Ok(v);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(v) = self.cached_token() {
            return Ok(v);
        }
        let token = fetch_token(
            t,
            &self.retry,
            TokenRequest {
                realm,
                service,
                scopes: &self.scopes,
                cred: self.credential.as_ref(),
            },
        )
        .await?;
        let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            RegistryError::Protocol {
                host: t.host().to_string(),
                reason: "token server returned a token that is not a valid header value".into(),
            }
        })?;
        v.set_sensitive(true);
        *lock(&self.token) = Some(v.clone());
        Ok(v)
    }

    /// Handle a 401 to a request that carried `sent`. Returns true when
    /// retrying with fresh authorization is worthwhile. A 401 from another
    /// origin (where a Location or redirect led) changes nothing: credentials
    /// are never sent there, and its challenge must not pick the token server.
    pub(crate) fn on_unauthorized(
        &self,
        t: &Transport,
        resp: &reqwest::Response,
        sent: Option<&HeaderValue>,
    ) -> bool {
        if !t.is_registry_origin(resp.url()) {
            return false;
        }
        let before = self.scheme();
        for ch in challenges(resp) {
            match ch {
                Challenge::Bearer { realm, service, .. } => {
                    // The token expired (or never had the access): drop it,
                    // unless a parallel request already replaced it.
                    let mut token = lock(&self.token);
                    if token.as_ref() == sent {
                        *token = None;
                    }
                    drop(token);
                    self.set_scheme(Scheme::Bearer { realm, service });
                    return true;
                }
                Challenge::Basic { .. } => {
                    let already_sent = matches!(before, Scheme::Basic);
                    self.set_scheme(Scheme::Basic);
                    // Resending the same rejected password is pointless.
                    return !already_sent && self.credential.is_some();
                }
                Challenge::Other { .. } => {}
            }
        }
        false
    }
}

/// A poisoned lock's data is still sound here: every write is one assignment.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn challenges(resp: &reqwest::Response) -> Vec<Challenge> {
    resp.headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect()
}

pub(super) fn basic_header(username: &str, password: &str) -> HeaderValue {
    let enc = B64.encode(format!("{username}:{password}"));
    // Base64 output is always a valid header value.
    let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Pick the token out of a token-server JSON body (`token` wins, as docker does).
pub(crate) fn token_from_body(body: &[u8]) -> Option<String> {
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    r.token
        .filter(|t| !t.is_empty())
        .or(r.access_token.filter(|t| !t.is_empty()))
}

/// What to ask a token server for.
pub(super) struct TokenRequest<'a> {
    pub(super) realm: &'a str,
    pub(super) service: Option<&'a str>,
    pub(super) scopes: &'a [String],
    pub(super) cred: Option<&'a Credential>,
}

/// Obtain a bearer token from the realm, retried like any idempotent step.
pub(super) async fn fetch_token(
    t: &Transport,
    retry: &RetryPolicy,
    request: TokenRequest<'_>,
) -> Result<String, RegistryError> {
    let TokenRequest {
        realm,
        service,
        scopes,
        cred,
    } = request;
    let registry = t.host().to_string();
    let mut url = Url::parse(realm).map_err(|_| RegistryError::Protocol {
        host: registry.clone(),
        reason: format!("token realm {realm:?} is not a valid URL"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RegistryError::Protocol {
            host: registry.clone(),
            reason: format!("token realm scheme {:?} unsupported", url.scheme()),
        });
    }
    let realm_host = origin::host_port(&url);
    debug!(registry = %registry, realm_host = %realm_host, scopes = ?scopes, "requesting bearer token");

    // (form body for POST, Basic header for GET)
    let (form, basic) = match cred {
        Some(Credential::IdentityToken(refresh)) => {
            origin::ensure_safe_for_secrets(t.secret_target(&url))?;
            // OAuth2 refresh-token grant, as docker does for identity tokens.
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("client_id", "dockless");
            form.append_pair("refresh_token", refresh);
            if let Some(s) = service {
                form.append_pair("service", s);
            }
            if !scopes.is_empty() {
                form.append_pair("scope", &scopes.join(" "));
            }
            (Some(form.finish()), None)
        }
        other => {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
            let mut basic = None;
            if let Some(Credential::UserPass { username, password }) = other {
                q.append_pair("account", username);
                basic = Some(basic_header(username, password));
            }
            drop(q);
            if basic.is_some() {
                origin::ensure_safe_for_secrets(t.secret_target(&url))?;
            }
            (None, basic)
        }
    };
    let what = format!("token request {}", url.path());
    let resp = retry
        .run(&realm_host, &what, || async {
            let rb = match &form {
                Some(body) => t
                    .http()
                    .post(url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body.clone()),
                None => match &basic {
                    Some(h) => t.http().get(url.clone()).header(AUTHORIZATION, h.clone()),
                    None => t.http().get(url.clone()),
                },
            };
            rb.send()
                .await
                .map_err(|e| t.map_send_error(e, &realm_host))
        })
        .await?;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(RegistryError::Unauthorized {
            registry,
            message: if cred.is_some() {
                format!("token server {realm_host} rejected the credentials (HTTP {status})")
            } else {
                format!("token server {realm_host} refused anonymous access (HTTP {status}); log in first")
            },
        });
    }
    if !status.is_success() {
        return Err(RegistryError::Protocol {
            host: registry,
            reason: format!("token server {realm_host} answered HTTP {status}"),
        });
    }
    let body = read_limited(resp, 1 << 20)
        .await
        .map_err(|e| t.map_send_error(e, &realm_host))?;
    token_from_body(&body).ok_or_else(|| RegistryError::Protocol {
        host: registry,
        reason: format!("token server {realm_host} returned no `token` or `access_token`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_or_access_token() {
        assert_eq!(token_from_body(br#"{"token":"a"}"#).as_deref(), Some("a"));
        assert_eq!(
            token_from_body(br#"{"access_token":"b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(
            token_from_body(br#"{"token":"","access_token":"b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(token_from_body(br#"{}"#), None);
        assert_eq!(token_from_body(b"nope"), None);
    }
}
