//! `dockless serve` as a user starts it (issue 16): a config with relative
//! paths run from its own folder, `image.json` typos refused by name, and
//! errors that name files as the repository does.
mod regsupport;
mod serve_support;

use regsupport::{Registry, RegistryCfg};
use serve_support::*;
use std::time::Duration;

#[test]
fn relative_state_dir_builds_and_errors_name_repository_paths() {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let sha = repo.commit("typo and broken Dockerfile", |d| {
        std::fs::create_dir_all(d.join("pysvc")).unwrap();
        std::fs::write(d.join("pysvc/Dockerfile"), "FROM scratch\nCOPPY . /app\n").unwrap();
        std::fs::write(
            d.join("image.json"),
            r#"[{"service_name": "api", "version": "1.0.0", "type": "Docker"},
  {"service_name": "web", "version": "1.0.0", "type": "Docker", "dockerfle": "Dockerfile.prod"},
  {"service_name": "pysvc", "version": "1.0.0", "type": "Docker"},
  {"version": "1.0.0", "type": "Docker"}]"#,
        )
        .unwrap();
    });
    let srv = Server::start_relative(dir.path(), &ServerCfg::new(reg.addr(), repo.url()));
    let r = deliver(&srv.addr, "pull_request", "d-1", &merged_pr(&sha, &sha));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["build_id"].as_i64().unwrap();
    let b = srv.wait_finished(id, Duration::from_secs(180));
    let images = b["images"].as_array().unwrap();
    assert_eq!(images[0]["status"], "succeeded", "{b}\n{}", srv.log_text());
    let error = |i: usize| images[i]["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error(1)
            .starts_with("image.json: unknown key \"dockerfle\" (did you mean \"dockerfile\"?)"),
        "{b}"
    );
    assert!(error(2).contains("pysvc/Dockerfile:2"), "{b}");
    assert!(!error(2).contains("work"), "{b}");
    assert!(
        error(3).starts_with("image.json: missing \"service_name\""),
        "{b}"
    );
    assert!(dir.path().join("state").is_dir());
}

#[test]
fn registry_hints_name_the_config_keys() {
    let certs = regsupport::Certs::generate();
    let reg = Registry::start(RegistryCfg {
        certs: Some(&certs),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    // The config says insecure_registry = true; the registry speaks TLS.
    let srv = Server::start(dir.path(), &ServerCfg::new(reg.addr(), repo.url()));
    let r = deliver(
        &srv.addr,
        "pull_request",
        "d-2",
        &merged_pr(&repo.merge_sha, &repo.head_sha),
    );
    let id = r.json()["build_id"].as_i64().unwrap();
    let b = srv.wait_build(id, Duration::from_secs(180), |v| {
        v["images"][0]["error"].is_string() || v["error"].is_string()
    });
    let text = b.to_string();
    assert!(
        text.contains("insecure_registry = false in dockless.toml"),
        "{text}"
    );
    assert!(!text.contains("--insecure"), "{text}");
}
