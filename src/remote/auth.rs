//! Registry authentication: `WWW-Authenticate` parsing, Basic and Bearer token
//! flows, docker `config.json` credentials and `login`.
//!
//! Secrets (passwords, identity tokens, bearer tokens) are only ever held in
//! [`Credential`] / token strings whose `Debug` output is redacted, and they are
//! never formatted into logs or errors.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::{debug, warn};
use url::Url;

use crate::remote::origin;
use crate::remote::registry::{PushOptions, RegistryError, RetryPolicy, Transport};

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// A scheme we do not speak (e.g. Negotiate); kept so callers can say so.
    Other {
        scheme: String,
    },
}

/// Parse every challenge of one `WWW-Authenticate` header value.
///
/// Follows RFC 7235: `scheme param=value, param="quoted, \"value\"", scheme2 ...`.
/// A Bearer challenge without a realm is useless and is dropped.
///
/// Hand-written because the maintained RFC 7235 parser (`http-auth`'s
/// `ChallengeParser`) fails a whole challenge over a trailing space or an
/// unquoted URL realm, which registries send; this one keeps every challenge
/// it can use and skips what it cannot read (fuzzed: `fuzz/www_authenticate`).
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut current: Option<(String, HashMap<String, String>)> = None;
    loop {
        p.skip_ws_and_commas();
        if p.at_end() {
            break;
        }
        let Some(tok) = p.token() else {
            // Unparseable byte: skip it rather than fail the whole header.
            p.i += 1;
            continue;
        };
        p.skip_ws();
        if p.peek() == Some(b'=') {
            p.i += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            if let Some((_, params)) = current.as_mut() {
                params.insert(tok.to_ascii_lowercase(), value);
            }
        } else {
            // A bare token starts a new challenge (or is token68, ignored).
            if let Some(done) = current.take() {
                out.extend(build_challenge(done));
            }
            current = Some((tok, HashMap::new()));
        }
    }
    if let Some(done) = current.take() {
        out.extend(build_challenge(done));
    }
    out
}

fn build_challenge((scheme, mut params): (String, HashMap<String, String>)) -> Option<Challenge> {
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic {
            realm: params.remove("realm"),
        }),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        }),
        _ => Some(Challenge::Other { scheme }),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        // tchar set of RFC 7230 plus '/' so token68-ish values survive.
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn quoted(&mut self) -> String {
        // Caller saw the opening quote.
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    UserPass {
        username: String,
        password: String,
    },
    /// OAuth2 refresh token (`identitytoken` in config.json, or a helper's
    /// `<token>` user).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::UserPass { username, .. } => f
                .debug_struct("UserPass")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The key docker uses in config.json / credential helpers for a registry.
pub fn config_key(registry: &str) -> String {
    if registry == "docker.io"
        || registry == "index.docker.io"
        || registry == "registry-1.docker.io"
    {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// Look up credentials for `registry` in `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json` (auths, credHelpers, credsStore).
/// A missing file or missing entry means anonymous (`Ok(None)`).
pub async fn load_credential(registry: &str) -> Result<Option<Credential>, RegistryError> {
    let key = config_key(registry);
    let host = registry.to_string();
    // docker_credential is blocking (it may spawn a helper process).
    // The crate reports a missing file as unreadable; docker treats it as anonymous.
    let Some(config) = docker_config_path().filter(|p| p.is_file()) else {
        debug!(registry, "no docker config.json; anonymous");
        return Ok(None);
    };
    let res = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&config)
            .map_err(|_| docker_credential::CredentialRetrievalError::ConfigReadError)?;
        docker_credential::get_credential_from_reader(std::io::BufReader::new(file), &key)
    })
    .await
    .map_err(|_| RegistryError::Credentials {
        registry: host.clone(),
        reason: "credential lookup task failed".into(),
    })?;
    use docker_credential::{CredentialRetrievalError as E, DockerCredential as D};
    match res {
        Ok(D::UsernamePassword(username, password)) => {
            debug!(
                registry,
                "using username/password credentials from docker config"
            );
            Ok(Some(Credential::UserPass { username, password }))
        }
        Ok(D::IdentityToken(t)) => {
            debug!(registry, "using identity token from docker config");
            Ok(Some(Credential::IdentityToken(t)))
        }
        Err(E::ConfigNotFound) | Err(E::NoCredentialConfigured) => {
            debug!(registry, "no credentials configured; anonymous");
            Ok(None)
        }
        // Deliberately not using the helper's stdout/stderr: it may echo secrets.
        Err(e) => {
            let reason = match e {
                E::HelperFailure { helper, .. } => format!("credential helper {helper} failed"),
                E::HelperCommunicationError => {
                    "could not run the docker credential helper (is it on PATH?)".into()
                }
                E::MalformedHelperResponse => "credential helper returned malformed output".into(),
                E::CredentialDecodingError => {
                    "the `auth` entry in docker config is not valid base64 user:password".into()
                }
                E::CredentialMismatchError => {
                    "`auth` and username/password in docker config disagree".into()
                }
                E::ConfigReadError => "docker config.json is unreadable or not valid JSON".into(),
                E::ConfigNotFound | E::NoCredentialConfigured => "no credentials".into(),
            };
            Err(RegistryError::Credentials {
                registry: host,
                reason,
            })
        }
    }
}

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

fn challenges(resp: &reqwest::Response) -> Vec<Challenge> {
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

fn basic_header(username: &str, password: &str) -> HeaderValue {
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
struct TokenRequest<'a> {
    realm: &'a str,
    service: Option<&'a str>,
    scopes: &'a [String],
    cred: Option<&'a Credential>,
}

/// Obtain a bearer token from the realm, retried like any idempotent step.
async fn fetch_token(
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
    let body = crate::remote::registry::read_limited(resp, 1 << 20)
        .await
        .map_err(|e| t.map_send_error(e, &realm_host))?;
    token_from_body(&body).ok_or_else(|| RegistryError::Protocol {
        host: registry,
        reason: format!("token server {realm_host} returned no `token` or `access_token`"),
    })
}

/// Options for [`login`].
#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    /// Plain HTTP.
    pub insecure: bool,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_certs: Vec<PathBuf>,
}

/// Verify `username`/`password` against `registry` and store them in the
/// docker config file the way `docker login` does.
pub async fn login(
    registry: &str,
    username: &str,
    password: &str,
    opts: &LoginOptions,
) -> Result<(), RegistryError> {
    let t = Transport::new(registry, opts.insecure, &opts.ca_certs)?;
    let cred = Credential::UserPass {
        username: username.to_string(),
        password: password.to_string(),
    };
    let url = t.url("/v2/")?;
    let resp = t
        .http()
        .get(url.clone())
        .send()
        .await
        .map_err(|e| t.map_send_error(e, t.host()))?;
    if resp.status() == StatusCode::UNAUTHORIZED {
        let chs = challenges(&resp);
        let bearer = chs.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } => Some((realm.clone(), service.clone())),
            _ => None,
        });
        if let Some((realm, service)) = bearer {
            let retry = RetryPolicy::new(&PushOptions::default());
            let request = TokenRequest {
                realm: &realm,
                service: service.as_deref(),
                scopes: &[],
                cred: Some(&cred),
            };
            fetch_token(&t, &retry, request).await?;
        } else if chs.iter().any(|c| matches!(c, Challenge::Basic { .. })) {
            origin::ensure_safe_for_secrets(t.secret_target(&url))?;
            let resp = t
                .http()
                .get(url)
                .header(AUTHORIZATION, basic_header(username, password))
                .send()
                .await
                .map_err(|e| t.map_send_error(e, t.host()))?;
            if !resp.status().is_success() {
                return Err(RegistryError::Unauthorized {
                    registry: t.host().to_string(),
                    message: format!("login rejected (HTTP {})", resp.status()),
                });
            }
        } else {
            return Err(RegistryError::Protocol {
                host: t.host().to_string(),
                reason: "registry asks for an authentication scheme dockless does not support"
                    .into(),
            });
        }
    } else if !resp.status().is_success() {
        return Err(
            crate::remote::registry::error_from_response(t.host(), "ping /v2/", resp).await,
        );
    }
    store_credential(registry, username, password).await
}

/// Path of the docker config file.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker").join("config.json"))
}

async fn store_credential(
    registry: &str,
    username: &str,
    password: &str,
) -> Result<(), RegistryError> {
    let path = docker_config_path().ok_or_else(|| RegistryError::Credentials {
        registry: registry.to_string(),
        reason: "neither DOCKER_CONFIG nor HOME is set".into(),
    })?;
    let key = config_key(registry);
    let registry_s = registry.to_string();
    let (username, password) = (username.to_string(), password.to_string());
    tokio::task::spawn_blocking(move || {
        write_config(&path, &key, &username, &password).map_err(|reason| {
            RegistryError::Credentials {
                registry: registry_s,
                reason,
            }
        })
    })
    .await
    .map_err(|_| RegistryError::Credentials {
        registry: registry.to_string(),
        reason: "config writer task failed".into(),
    })?
}

fn write_config(path: &Path, key: &str, username: &str, password: &str) -> Result<(), String> {
    let shown = path.display();
    let mut doc: serde_json::Value = match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => serde_json::json!({}),
        Ok(b) => {
            serde_json::from_slice(&b).map_err(|e| format!("{shown} is not valid JSON: {e}"))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| format!("{shown} is not a JSON object"))?;
    // A per-registry helper wins over the global store, as in docker.
    let helper = obj
        .get("credHelpers")
        .and_then(|h| h.get(key))
        .and_then(|v| v.as_str())
        .or_else(|| obj.get("credsStore").and_then(|v| v.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let entry = match &helper {
        Some(h) => {
            helper_store(h, key, username, password)?;
            // docker keeps an empty entry so `auths` lists the registry.
            serde_json::json!({})
        }
        None => serde_json::json!({ "auth": B64.encode(format!("{username}:{password}")) }),
    };
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    if let Some(a) = auths.as_object_mut() {
        a.insert(key.to_string(), entry);
    }
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| format!("serialising config: {e}"))?;
    write_private(path, &bytes).map_err(|e| format!("cannot write {shown}: {e}"))
}

/// Write atomically with mode 0600 (the file holds secrets).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir)?;
    let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    let res = (|| {
        let mut f = o.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            // mode() is masked by umask and ignored for an existing file.
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// `docker-credential-<name> store`, secret passed on stdin only.
fn helper_store(name: &str, key: &str, username: &str, password: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let prog = format!("docker-credential-{name}");
    let payload = serde_json::json!({ "ServerURL": key, "Username": username, "Secret": password });
    let mut child = Command::new(&prog)
        .arg("store")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(payload.to_string().as_bytes())
            .map_err(|e| format!("writing to {prog}: {e}"))?;
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {prog}: {e}"))?;
    if !status.success() {
        // The helper's output is not shown: it could echo the secret.
        warn!(helper = %prog, %status, "credential helper store failed");
        return Err(format!("{prog} store failed ({status})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_with_quoted_commas() {
        let h = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push repository:c:pull""#;
        assert_eq!(
            parse_www_authenticate(h),
            vec![Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push repository:c:pull".into()),
            }]
        );
    }

    #[test]
    fn parses_basic_and_escapes_and_multiple() {
        let h = r#"Basic realm="a \"quoted\" realm", Bearer realm=https://x/t, Negotiate"#;
        assert_eq!(
            parse_www_authenticate(h),
            vec![
                Challenge::Basic {
                    realm: Some("a \"quoted\" realm".into())
                },
                Challenge::Bearer {
                    realm: "https://x/t".into(),
                    service: None,
                    scope: None
                },
                Challenge::Other {
                    scheme: "Negotiate".into()
                },
            ]
        );
    }

    #[test]
    fn bearer_without_realm_dropped_and_garbage_ok() {
        assert_eq!(parse_www_authenticate(r#"Bearer service="x""#), vec![]);
        assert_eq!(parse_www_authenticate(""), vec![]);
        let _ = parse_www_authenticate("\"\"\"==,,,\\");
        let _ = parse_www_authenticate("Bearer realm=\"unterminated");
    }

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

    #[test]
    fn credential_debug_redacts() {
        let c = Credential::UserPass {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credential::IdentityToken("tok".into())).contains("tok"));
    }

    #[test]
    fn config_write_keeps_other_fields_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, r#"{"auths":{"other":{"auth":"eDp5"}},"psFormat":"x"}"#).unwrap();
        write_config(&p, "127.0.0.1:5000", "me", "pw").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["auths"]["other"]["auth"], "eDp5");
        assert_eq!(v["auths"]["127.0.0.1:5000"]["auth"], B64.encode("me:pw"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
