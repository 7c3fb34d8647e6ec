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

/// GET `path` and the body as it arrives: each read's text, and whether
/// `still_running` said yes right after it came.
fn follow_log(addr: &str, path: &str, still_running: impl Fn() -> bool) -> (String, bool) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (mut raw, mut seen_while_running) = (Vec::new(), false);
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if text.contains("fetched ") && !seen_while_running {
            seen_while_running = still_running();
        }
    }
    (
        String::from_utf8_lossy(&raw).into_owned(),
        seen_while_running,
    )
}

#[test]
fn build_log_is_streamed_and_state_changes_are_logged_plainly() {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let srv = Server::start(
        dir.path(),
        &ServerCfg {
            delay_ms: Some(1500),
            // The default level, as a user runs it.
            env: vec![("DOCKLESS_LOG".into(), String::new())],
            ..ServerCfg::new(reg.addr(), repo.url())
        },
    );
    let r = deliver(
        &srv.addr,
        "pull_request",
        "d-3",
        &merged_pr(&repo.merge_sha, &repo.head_sha),
    );
    let id = r.json()["build_id"].as_i64().unwrap();
    let running = || get(&srv.addr, &format!("/builds/{id}")).json()["status"] == "running";
    let (log, streamed) = follow_log(&srv.addr, &format!("/builds/{id}/log"), running);
    assert!(log.contains("text/plain"), "{log}");
    assert!(log.contains(&format!("attempt 1 of build {id}")), "{log}");
    assert!(log.contains("build failed: 1 of 3 images failed"), "{log}");
    assert!(streamed, "the log came only after the build: {log}");
    assert_eq!(get(&srv.addr, "/builds/999/log").status, 404);

    let server_log = srv.log_text();
    assert!(
        !server_log.contains('\u{1b}'),
        "colours in a file:\n{server_log}"
    );
    for state in ["build queued", "build started", "build finished"] {
        let lines = server_log.lines().filter(|l| l.contains(state)).count();
        assert_eq!(lines, 1, "{state}:\n{server_log}");
    }
}
