//! Token (Bearer) auth: docker-registry with `auth: token`, and a tiny token
//! server here that issues ES256 JWTs carrying an `x5c` header with the
//! signing certificate (distribution verifies that chain against its
//! `rootcertbundle`, then the signature, issuer, audience and access claims).
mod regsupport;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use dockless::registry::{push, PushOptions, Reference, RegistryError};
use regsupport::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const USER: &str = "tokuser";
const PASS: &str = "tok-Pa55word";
const SERVICE: &str = "dockless-test-registry";
const ISSUER: &str = "dockless-test-issuer";

struct TokenServer {
    realm: String,
    cert: std::path::PathBuf,
    /// Scope lists seen, one per token request.
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
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

async fn start_token_server(dir: &Path) -> TokenServer {
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
        cert: dir.join("tok.crt"),
        seen,
        task,
    }
}

fn answer(
    req: &str,
    key: &ring::signature::EcdsaKeyPair,
    x5c: &str,
    seen: &Mutex<Vec<Vec<String>>>,
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
    seen.lock().unwrap().push(scopes.clone());
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

/// A TLS registry with `auth: token`, trusting the test's token server.
async fn token_registry(dir: &Path) -> (TokenServer, Certs, Registry) {
    let ts = start_token_server(dir).await;
    let certs = Certs::generate();
    let reg = Registry::start(RegistryCfg {
        certs: Some(&certs),
        token: Some(TokenAuthCfg {
            realm: ts.realm.clone(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            rootcertbundle: ts.cert.clone(),
        }),
        ..Default::default()
    });
    (ts, certs, reg)
}

fn creds() -> String {
    format!("{USER}:{PASS}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth_push_skip_mount() {
    init_tracing();
    let _g = env_lock().await;
    let tokdir = tempfile::tempdir().unwrap();
    let (ts, certs, reg) = token_registry(tokdir.path()).await;
    let _cfg = docker_config(serde_json::json!({
        "auths": { reg.addr(): { "auth": basic_b64(USER, PASS) } }
    }));
    let opts = PushOptions {
        ca_certs: vec![certs.ca()],
        ..PushOptions::default()
    };
    push_scenario(&reg, &opts, Some(&creds()), "tok").await;

    // The mount push must have asked for pull on the source repository.
    let seen = ts.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(
            |s| s.contains(&"repository:other/tok:pull,push".to_string())
                && s.contains(&"repository:team/tok:pull".to_string())
        ),
        "scopes requested: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_wrong_password_and_anonymous_fail_cleanly() {
    init_tracing();
    let _g = env_lock().await;
    let tokdir = tempfile::tempdir().unwrap();
    let (_ts, certs, reg) = token_registry(tokdir.path()).await;
    let opts = PushOptions {
        ca_certs: vec![certs.ca()],
        ..PushOptions::default()
    };
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "tokbad", 0);
    let target = Reference::parse(&format!("{}/tb/app:1", reg.addr())).unwrap();

    let _cfg = docker_config(serde_json::json!({
        "auths": { reg.addr(): { "auth": basic_b64(USER, "WRONGpw") } }
    }));
    let err = push(&img, &target, &opts).await.unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(msg.contains("rejected the credentials"), "{msg}");
    assert!(!msg.contains("WRONGpw"), "{msg}");

    // Anonymous: the token has no access, the registry says 401 twice.
    let _cfg = docker_config(serde_json::json!({}));
    let err = push(&img, &target, &opts).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    assert!(reg.tag_absent("tb/app:1", Some(&creds())));
}
