//! A tiny token server for `auth: token` registries. It issues ES256 JWTs
//! carrying an `x5c` header with the signing certificate (distribution
//! verifies that chain against its `rootcertbundle`, then the signature,
//! issuer, audience and access claims), and answers with `access_token`
//! only, the OAuth2-style field.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::regsupport::{
    basic_b64, docker_config, env_lock, init_tracing, Certs, Registry, RegistryCfg, TokenAuthCfg,
};
use dockless::remote::Options;

pub const USER: &str = "tokuser";
pub const PASS: &str = "tok-Pa55word";
pub const SERVICE: &str = "dockless-test-registry";
/// The refresh token an `identitytoken` login would have stored.
pub const REFRESH: &str = "refresh-7f3a-never-logged";
pub const ISSUER: &str = "dockless-test-issuer";

pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`
    pub realm: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub cert: std::path::PathBuf,
    /// One per token request answered.
    pub seen: Arc<Mutex<Vec<TokenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a client asked the token server for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub scopes: Vec<String>,
    /// The `service` parameter, if sent.
    pub service: Option<String>,
    /// `grant_type` of a POST (OAuth2) request.
    pub grant: Option<String>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args:?}");
}

pub async fn start_token_server(dir: &Path) -> TokenServer {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "tok.key",
            "-out",
            "tok.crt",
            "-subj",
            "/CN=token-signer",
            "-days",
            "1",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "tok.key", "-outform", "DER", "-out", "tok.pk8",
        ],
    );
    openssl(
        dir,
        &[
            "x509", "-in", "tok.crt", "-outform", "DER", "-out", "tok.der",
        ],
    );
    let pk8 = std::fs::read(dir.join("tok.pk8")).unwrap();
    let der = std::fs::read(dir.join("tok.der")).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pk8,
        &rng,
    )
    .unwrap();
    let x5c = STANDARD.encode(&der);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let key = Arc::new(key);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let key = key.clone();
            let x5c = x5c.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                // A POST (refresh-token grant) carries a form body.
                let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                let want = head_len + content_length(&String::from_utf8_lossy(&buf[..head_len]));
                while buf.len() < want {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                let (status, body) = answer(&text, &key, &x5c, &seen);
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    TokenServer {
        realm: format!("http://{addr}/token"),
        addr: addr.to_string(),
        cert: dir.join("tok.crt"),
        seen,
        task,
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn answer(
    req: &str,
    key: &ring::signature::EcdsaKeyPair,
    x5c: &str,
    seen: &Mutex<Vec<TokenRequest>>,
) -> (&'static str, String) {
    let line = req.lines().next().unwrap_or_default();
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let url = url::Url::parse(&format!("http://x{target}")).unwrap();
    // GET: parameters in the query, Basic credentials. POST: an OAuth2
    // refresh-token grant in a form body.
    let post = line.starts_with("POST ");
    let form: Vec<(String, String)> = if post {
        let body = req.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    } else {
        url.query_pairs().into_owned().collect()
    };
    let param = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let scopes: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let auth = req.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_string())
    });
    let refused = || {
        (
            "401 Unauthorized",
            r#"{"details":"bad credentials"}"#.to_string(),
        )
    };
    let authed = if post {
        if param("grant_type").as_deref() != Some("refresh_token")
            || param("refresh_token").as_deref() != Some(REFRESH)
        {
            return refused();
        }
        true
    } else {
        match auth {
            None => false,
            Some(a) => {
                let ok = a
                    .strip_prefix("Basic ")
                    .and_then(|b| STANDARD.decode(b).ok())
                    .is_some_and(|d| d == format!("{USER}:{PASS}").as_bytes());
                if !ok {
                    return refused();
                }
                true
            }
        }
    };
    seen.lock().unwrap().push(TokenRequest {
        scopes: scopes.clone(),
        service: param("service"),
        grant: param("grant_type"),
    });
    // Anonymous users get a token with no access at all.
    let access: Vec<serde_json::Value> = if authed {
        scopes
            .iter()
            .filter_map(|s| {
                let mut p = s.splitn(3, ':');
                let (t, name, actions) = (p.next()?, p.next()?, p.next()?);
                Some(serde_json::json!({
                    "type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
                }))
            })
            .collect()
    } else {
        vec![]
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [x5c] });
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": if authed { USER } else { "" }, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 5, "iat": now, "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    // Only `access_token`: exercises the OAuth2-style field.
    (
        "200 OK",
        serde_json::json!({ "access_token": jwt, "expires_in": 300 }).to_string(),
    )
}

/// `auth: token` settings trusting `ts`, which clients reach at `realm`.
pub fn token_auth(ts: &TokenServer, realm: &str) -> TokenAuthCfg {
    TokenAuthCfg {
        realm: realm.to_string(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        rootcertbundle: ts.cert.clone(),
    }
}

/// A TLS registry with `auth: token`, trusting the test's token server,
/// and push options that trust the registry's CA. Holds the environment
/// lock, since tests point `DOCKER_CONFIG` at config files of their own.
pub struct TokenRegistry {
    pub ts: TokenServer,
    pub reg: Registry,
    pub opts: Options,
    /// The CA `opts` names.
    _certs: Certs,
    _dir: tempfile::TempDir,
    _env: tokio::sync::MutexGuard<'static, ()>,
}

impl TokenRegistry {
    pub async fn start() -> TokenRegistry {
        init_tracing();
        let env = env_lock().await;
        let dir = tempfile::tempdir().unwrap();
        let ts = start_token_server(dir.path()).await;
        let certs = Certs::generate();
        let reg = Registry::start(RegistryCfg {
            certs: Some(&certs),
            token: Some(token_auth(&ts, &ts.realm)),
            ..Default::default()
        });
        let opts = Options {
            ca_certs: vec![certs.ca()],
            ..Options::default()
        };
        TokenRegistry {
            ts,
            reg,
            opts,
            _certs: certs,
            _dir: dir,
            _env: env,
        }
    }

    /// config.json with the test user's password for the registry.
    pub fn log_in(&self) -> tempfile::TempDir {
        docker_config(serde_json::json!({
            "auths": { self.reg.addr(): { "auth": basic_b64(USER, PASS) } }
        }))
    }
}

pub fn creds() -> String {
    format!("{USER}:{PASS}")
}
