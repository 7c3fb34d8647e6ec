//! TLS + htpasswd (Basic) registry; credentials from config.json, a
//! credential helper, and `login`.
mod regsupport;

use dockless::name::Reference;
use dockless::remote::login;
use dockless::remote::{push, Options, RegistryError};
use regsupport::*;

const USER: &str = "tester";
const PASS: &str = "s3cret-Pa55";

fn start(certs: &Certs) -> Registry {
    Registry::start(RegistryCfg {
        certs: Some(certs),
        htpasswd: Some((USER, PASS)),
        ..Default::default()
    })
}

fn tls_opts(certs: &Certs) -> Options {
    Options {
        ca_certs: vec![certs.ca()],
        ..Options::default()
    }
}

fn creds() -> String {
    format!("{USER}:{PASS}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_config_json() {
    init_tracing();
    let _g = env_lock().await;
    let certs = Certs::generate();
    let reg = start(&certs);
    let _cfg = docker_config(serde_json::json!({
        "auths": { reg.addr(): { "auth": basic_b64(USER, PASS) } }
    }));
    push_scenario(&reg, &tls_opts(&certs), Some(&creds()), "basic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_username_password_fields() {
    init_tracing();
    let _g = env_lock().await;
    let certs = Certs::generate();
    let reg = start(&certs);
    let _cfg = docker_config(serde_json::json!({
        "auths": { reg.addr(): { "username": USER, "password": PASS } }
    }));
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "fields", 0);
    let target = Reference::parse_tag(&format!("{}/f/app:1", reg.addr())).unwrap();
    let out = push(&img, &target, &tls_opts(&certs)).await.unwrap();
    reg.verify("f/app:1", &out.manifest_digest, Some(&creds()));
}

/// A `docker-credential-test` helper on PATH: `get` answers from env-free
/// constants, `store` writes what it received to $HELPER_LOG.
fn install_helper(dir: &std::path::Path, log: &std::path::Path) -> String {
    let script = format!(
        "#!/bin/sh\nset -e\nread -r input || true\ncase \"$1\" in\n  get) printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASS}\"}}' \"$input\" ;;\n  store) printf '%s' \"$input\" > '{}' ;;\n  *) exit 1 ;;\nesac\n",
        log.display()
    );
    let p = dir.join("docker-credential-test");
    std::fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{old}", dir.display()));
    old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_via_creds_store_helper_and_login() {
    init_tracing();
    let _g = env_lock().await;
    let certs = Certs::generate();
    let reg = start(&certs);
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("store.json");
    let old_path = install_helper(bin.path(), &log);
    let cfg = docker_config(serde_json::json!({ "credsStore": "test" }));

    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "helper", 0);
    let target = Reference::parse_tag(&format!("{}/h/app:1", reg.addr())).unwrap();
    let out = push(&img, &target, &tls_opts(&certs)).await;

    // login through the helper: secret goes to the helper, not the file.
    let lopts = Options {
        ca_certs: vec![certs.ca()],
        ..Default::default()
    };
    let login_res = login(&reg.addr(), USER, PASS, &lopts).await;
    std::env::set_var("PATH", old_path);

    let out = out.expect("push with helper credentials");
    reg.verify("h/app:1", &out.manifest_digest, Some(&creds()));
    login_res.expect("login via helper");
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    assert_eq!(stored["ServerURL"], reg.addr());
    assert_eq!(stored["Username"], USER);
    assert_eq!(stored["Secret"], PASS);
    let file = std::fs::read_to_string(cfg.path().join("config.json")).unwrap();
    assert!(!file.contains(PASS) && !file.contains(&basic_b64(USER, PASS)));
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(v["auths"][reg.addr()], serde_json::json!({}));
    assert_eq!(v["credsStore"], "test");
}

/// `credHelpers` names a helper per registry, and it wins over `credsStore`
/// (here a helper that is not installed, so using it would fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_registry_cred_helper_wins_over_creds_store() {
    init_tracing();
    let _g = env_lock().await;
    let certs = Certs::generate();
    let reg = start(&certs);
    let bin = tempfile::tempdir().unwrap();
    let old_path = install_helper(bin.path(), &bin.path().join("store.json"));
    let _cfg = docker_config(serde_json::json!({
        "credsStore": "not-installed",
        "credHelpers": { reg.addr(): "test" }
    }));
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "credhelpers", 0);
    let target = Reference::parse_tag(&format!("{}/ch/app:1", reg.addr())).unwrap();
    let out = push(&img, &target, &tls_opts(&certs)).await;
    // Another registry falls through to the missing credsStore helper.
    let other = dockless::remote::load_credential("other.example:5000").await;
    std::env::set_var("PATH", old_path);

    let out = out.expect("push with the per-registry helper");
    reg.verify("ch/app:1", &out.manifest_digest, Some(&creds()));
    let err = other.expect_err("the credsStore helper is not installed");
    assert!(err.to_string().contains("credential helper"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_or_none_is_clear_and_leaves_no_tag() {
    init_tracing();
    let _g = env_lock().await;
    let certs = Certs::generate();
    let reg = start(&certs);
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "wrong", 0);
    let target = Reference::parse_tag(&format!("{}/w/app:1", reg.addr())).unwrap();

    let _cfg = docker_config(serde_json::json!({
        "auths": { reg.addr(): { "auth": basic_b64(USER, "nope-WRONG") } }
    }));
    let err = push(&img, &target, &tls_opts(&certs)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(msg.contains(&reg.addr()), "{msg}");
    assert!(!msg.contains("nope-WRONG") && !format!("{err:?}").contains("nope-WRONG"));

    let _cfg = docker_config(serde_json::json!({}));
    let err = push(&img, &target, &tls_opts(&certs)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    assert!(reg.tag_absent("w/app:1", Some(&creds())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_writes_config_then_push_uses_it() {
    init_tracing();
    let _g = env_lock().await;
    let certs = Certs::generate();
    let reg = start(&certs);
    let cfg = tempfile::tempdir().unwrap();
    std::env::set_var("DOCKER_CONFIG", cfg.path());
    let lopts = Options {
        ca_certs: vec![certs.ca()],
        ..Default::default()
    };

    let err = login(&reg.addr(), USER, "bad-password", &lopts)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("bad-password"));
    assert!(!cfg.path().join("config.json").exists());

    login(&reg.addr(), USER, PASS, &lopts).await.unwrap();
    let path = cfg.path().join("config.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["auths"][reg.addr()]["auth"], basic_b64(USER, PASS));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "login", 0);
    let target = Reference::parse_tag(&format!("{}/l/app:1", reg.addr())).unwrap();
    let out = push(&img, &target, &tls_opts(&certs)).await.unwrap();
    reg.verify("l/app:1", &out.manifest_digest, Some(&creds()));
}
