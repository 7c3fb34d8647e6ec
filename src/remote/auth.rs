//! Registry authentication: Basic and Bearer token flows, one token per
//! scope set, re-authentication on 401.
//!
//! Secrets (passwords, identity tokens, bearer tokens) are only ever held in
//! [`Credential`] / token strings whose `Debug` output is redacted, and they are
//! never formatted into logs or errors.

use std::collections::HashMap;
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

/// A repository scope for a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    pub repository: String,
    /// "pull" or "pull,push".
    pub actions: &'static str,
}

impl Scope {
    pub fn push(repo: &str) -> Scope {
        Scope {
            repository: repo.to_string(),
            actions: "pull,push",
        }
    }
    pub fn pull(repo: &str) -> Scope {
        Scope {
            repository: repo.to_string(),
            actions: "pull",
        }
    }
    fn render(&self) -> String {
        format!("repository:{}:{}", self.repository, self.actions)
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

/// Per-registry auth state shared by all requests of one push.
pub(crate) struct AuthState {
    credential: Option<Credential>,
    scheme: Mutex<Scheme>,
    /// Bearer tokens keyed by the rendered, sorted scope list.
    tokens: Mutex<HashMap<String, String>>,
    /// Token servers fail like registries do; their requests are idempotent.
    retry: RetryPolicy,
}

impl AuthState {
    pub(crate) fn new(credential: Option<Credential>, retry: RetryPolicy) -> Self {
        AuthState {
            credential,
            scheme: Mutex::new(Scheme::Anonymous),
            tokens: Mutex::new(HashMap::new()),
            retry,
        }
    }

    pub(crate) fn has_credential(&self) -> bool {
        self.credential.is_some()
    }

    fn scheme(&self) -> Scheme {
        match self.scheme.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_scheme(&self, s: Scheme) {
        match self.scheme.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
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

    /// The `Authorization` header to send to `url` for a request needing
    /// `scopes`: none for any origin but the registry's own (an upload
    /// `Location` elsewhere, a storage host), and an error rather than a
    /// secret in clear text (see [`origin::ensure_safe_for_secrets`]).
    pub(crate) async fn header_for(
        &self,
        t: &Transport,
        url: &Url,
        scopes: &[Scope],
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
                let key = scope_key(scopes);
                let cached = self.tokens.lock().ok().and_then(|m| m.get(&key).cloned());
                let token = match cached {
                    Some(tok) => tok,
                    None => {
                        let rendered: Vec<String> =
                            sorted(scopes).iter().map(Scope::render).collect();
                        let tok = fetch_token(
                            t,
                            &self.retry,
                            TokenRequest {
                                realm: &realm,
                                service: service.as_deref(),
                                scopes: &rendered,
                                cred: self.credential.as_ref(),
                            },
                        )
                        .await?;
                        if let Ok(mut m) = self.tokens.lock() {
                            m.insert(key, tok.clone());
                        }
                        tok
                    }
                };
                let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    RegistryError::Protocol {
                        host: t.host().to_string(),
                        reason: "token server returned a token that is not a valid header value"
                            .into(),
                    }
                })?;
                v.set_sensitive(true);
                Ok(Some(v))
            }
        }
    }

    /// Handle a 401 on a request needing `scopes`. Returns true when retrying
    /// with fresh authorization is worthwhile. A 401 from another origin
    /// (where a Location or redirect led) changes nothing: credentials are
    /// never sent there, and its challenge must not pick the token server.
    pub(crate) fn on_unauthorized(
        &self,
        t: &Transport,
        resp: &reqwest::Response,
        scopes: &[Scope],
    ) -> bool {
        if !t.is_registry_origin(resp.url()) {
            return false;
        }
        let before = self.scheme();
        for ch in challenges(resp) {
            match ch {
                Challenge::Bearer { realm, service, .. } => {
                    // Drop the cached token: it lacked the scope, or expired.
                    if let Ok(mut m) = self.tokens.lock() {
                        m.remove(&scope_key(scopes));
                    }
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

pub(super) fn challenges(resp: &reqwest::Response) -> Vec<Challenge> {
    resp.headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect()
}

fn sorted(scopes: &[Scope]) -> Vec<Scope> {
    let mut v = scopes.to_vec();
    v.sort();
    v.dedup();
    v
}

fn scope_key(scopes: &[Scope]) -> String {
    sorted(scopes)
        .iter()
        .map(Scope::render)
        .collect::<Vec<_>>()
        .join(" ")
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
