//! No secret in any log line or error: `dockless push` with
//! `DOCKLESS_LOG=trace`, against an htpasswd registry (TLS) and a token-auth
//! front (the fault proxy emulating a token server and a Bearer-protected
//! registry), with right and wrong credentials.
mod common;
mod faults_support;
mod regsupport;
mod serve_support;

use common::*;
use faults_support::{Action, FaultProxy, Rule};
use regsupport::*;
use std::process::Output;

const USER: &str = "secret-user";
const PASS: &str = "Pa55-never-logged";
const WRONG: &str = "Wr0ng-never-logged";
const TOKEN: &str = "tok3n-never-logged-0123456789";

fn push_cli(
    cache: &std::path::Path,
    docker_config: &std::path::Path,
    target: &str,
    extra: &[&str],
) -> Output {
    dockless(cache)
        .arg("push")
        .arg(testdata("hello"))
        .args(["-t", target, "--json"])
        .args(extra)
        .env("DOCKER_CONFIG", docker_config)
        .env("DOCKLESS_LOG", "trace")
        .output()
        .unwrap()
}

fn write_auth(dir: &std::path::Path, registry: &str, user: &str, pass: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({"auths": {registry: {"auth": basic_b64(user, pass)}}}).to_string(),
    )
    .unwrap();
}

fn assert_clean(what: &str, out: &Output, secrets: &[String]) {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_text_clean(what, &text, secrets);
}

fn assert_text_clean(what: &str, text: &str, secrets: &[String]) {
    assert!(
        text.lines().count() > 10,
        "{what}: trace logging produced output"
    );
    for (n, line) in text.lines().enumerate() {
        for s in secrets {
            assert!(
                !line.contains(s.as_str()),
                "{what}: line {n} leaks a secret: {line}"
            );
        }
    }
}

fn secrets() -> Vec<String> {
    vec![
        PASS.into(),
        WRONG.into(),
        TOKEN.into(),
        basic_b64(USER, PASS),
        basic_b64(USER, WRONG),
    ]
}

#[test]
fn htpasswd_push_logs_no_password() {
    let certs = Certs::generate();
    let reg = Registry::start(RegistryCfg {
        certs: Some(&certs),
        htpasswd: Some((USER, PASS)),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let ca = certs.ca();
    let ca = ["--ca-cert", ca.to_str().unwrap()];

    let good = tmp.path().join("good");
    write_auth(&good, &reg.addr(), USER, PASS);
    let out = push_cli(&cache, &good, &format!("{}/sec/app:1", reg.addr()), &ca);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("htpasswd push", &out, &secrets());

    let bad = tmp.path().join("bad");
    write_auth(&bad, &reg.addr(), USER, WRONG);
    let out = push_cli(&cache, &bad, &format!("{}/sec/app:2", reg.addr()), &ca);
    assert_eq!(out.status.code(), Some(4));
    assert_clean("htpasswd wrong password", &out, &secrets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_push_logs_no_password_or_token() {
    let reg = Registry::start(RegistryCfg::default());
    let proxy = FaultProxy::start(&reg.addr()).await;
    let realm = format!("http://{}/token", proxy.addr);
    let good_basic = format!("Basic {}", basic_b64(USER, PASS));
    let bearer = format!("Bearer {TOKEN}");
    // Token endpoint: the right Basic credentials get the token.
    proxy.add(
        Rule::new(
            move |r| r.path() == "/token" && r.header("authorization") == Some(good_basic.as_str()),
            Action::Reply(
                200,
                String::new(),
                format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#),
            ),
        )
        .always(),
    );
    proxy.add(
        Rule::new(
            |r| r.path() == "/token",
            Action::Reply(
                401,
                String::new(),
                r#"{"details":"bad credentials"}"#.into(),
            ),
        )
        .always(),
    );
    // The registry: anything without the token is challenged.
    let challenge =
        format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"sec-registry\"\r\n");
    proxy.add(
        Rule::new(
            move |r| {
                r.path().starts_with("/v2") && r.header("authorization") != Some(bearer.as_str())
            },
            Action::Reply(
                401,
                challenge,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                    .into(),
            ),
        )
        .always(),
    );

    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let good = tmp.path().join("good");
    write_auth(&good, &proxy.addr, USER, PASS);
    let target = format!("{}/sec/tok:1", proxy.addr);
    let out = {
        let (cache, good, target) = (cache.clone(), good.clone(), target.clone());
        tokio::task::spawn_blocking(move || push_cli(&cache, &good, &target, &["--insecure"]))
            .await
            .unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("token push", &out, &secrets());
    assert!(proxy
        .seen()
        .iter()
        .any(|s| s.req.path() == "/token" && s.status == 200));

    let bad = tmp.path().join("bad");
    write_auth(&bad, &proxy.addr, USER, WRONG);
    let target = format!("{}/sec/tok:2", proxy.addr);
    let out = tokio::task::spawn_blocking(move || push_cli(&cache, &bad, &target, &["--insecure"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_clean("token wrong password", &out, &secrets());
}

/// `dockless serve` at trace level: a signed delivery builds and pushes to
/// an htpasswd registry, a wrongly signed one is refused, and GitHub statuses
/// fail against an API that is not there. No webhook secret, registry
/// password or GitHub token in any line of its log.
#[test]
fn serve_logs_no_webhook_secret_password_or_github_token() {
    use serve_support::{deliver, merged_pr, try_deliver_raw, GitRepo, Server, ServerCfg, SECRET};
    const GH_TOKEN: &str = "ghp_never-logged-0123456789abcdef";
    let reg = Registry::start(RegistryCfg {
        htpasswd: Some((USER, PASS)),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("docker");
    write_auth(&auth, &reg.addr(), USER, PASS);
    let repo = GitRepo::create(tmp.path());
    let extra = format!("github_token = \"{GH_TOKEN}\"\ngithub_api_url = \"http://127.0.0.1:9\"");
    let mut cfg = ServerCfg::new(reg.addr(), repo.url());
    cfg.extra = &extra;
    cfg.env = vec![
        ("DOCKLESS_LOG".into(), "trace".into()),
        ("DOCKER_CONFIG".into(), auth.display().to_string()),
    ];
    let srv = Server::start(tmp.path(), &cfg);

    let payload = merged_pr(&repo.merge_sha, &repo.head_sha);
    let accepted = deliver(&srv.addr, "pull_request", "sec-1", &payload);
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let body = serde_json::to_vec(&payload).unwrap();
    let forged = try_deliver_raw(
        &srv.addr,
        "pull_request",
        "sec-2",
        "application/json",
        &body,
        Some("wrong-secret"),
        std::time::Duration::from_secs(120),
    );
    assert_eq!(forged.map(|r| r.status).ok(), Some(401));
    let id = accepted.json()["build_id"].as_i64().unwrap();
    let build = srv.wait_finished(id, std::time::Duration::from_secs(120));
    // The fixture's AMI entry fails by design; both images were pushed.
    let pushed = build["images"].as_array().unwrap();
    assert!(
        pushed[..2].iter().all(|i| i["status"] == "succeeded"),
        "{build}"
    );
    assert!(!reg.tag_absent("api:1.4.0", Some(&format!("{USER}:{PASS}"))));

    let mut secrets = secrets();
    secrets.extend([SECRET.to_string(), GH_TOKEN.to_string()]);
    let log = srv.log_text();
    assert!(
        log.contains("127.0.0.1:9"),
        "statuses were attempted:\n{log}"
    );
    assert_text_clean("dockless serve", &log, &secrets);
}
