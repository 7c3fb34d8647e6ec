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

use crate::regsupport::{Certs, Registry, RegistryCfg, TokenAuthCfg};

pub const USER: &str = "tokuser";
pub const PASS: &str = "tok-Pa55word";
pub const SERVICE: &str = "dockless-test-registry";
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
    /// The `service` query parameter, if sent.
    pub service: Option<String>,
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

fn answer(
    req: &str,
    key: &ring::signature::EcdsaKeyPair,
    x5c: &str,
    seen: &Mutex<Vec<TokenRequest>>,
) -> (&'static str, String) {
    let line = req.lines().next().unwrap_or_default();
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let url = url::Url::parse(&format!("http://x{target}")).unwrap();
    let scopes: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let auth = req.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_string())
    });
    let authed = match auth {
        None => false,
        Some(a) => {
            let ok = a
                .strip_prefix("Basic ")
                .and_then(|b| STANDARD.decode(b).ok())
                .is_some_and(|d| d == format!("{USER}:{PASS}").as_bytes());
            if !ok {
                return (
                    "401 Unauthorized",
                    r#"{"details":"bad credentials"}"#.into(),
                );
            }
            true
        }
    };
    let service = url
        .query_pairs()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.into_owned());
    seen.lock().unwrap().push(TokenRequest {
        scopes: scopes.clone(),
        service,
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

/// A TLS registry with `auth: token`, trusting the test's token server.
pub async fn token_registry(dir: &Path) -> (TokenServer, Certs, Registry) {
    let ts = start_token_server(dir).await;
    let certs = Certs::generate();
    let reg = Registry::start(RegistryCfg {
        certs: Some(&certs),
        token: Some(token_auth(&ts, &ts.realm)),
        ..Default::default()
    });
    (ts, certs, reg)
}

pub fn creds() -> String {
    format!("{USER}:{PASS}")
}
