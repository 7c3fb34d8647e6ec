//! `dockless serve` over HTTP: every status code of POST /hooks/github in
//! the contract's order, redelivery, the read-only routes, refusing to start
//! without a secret, and commit statuses posted to a local recorder.
mod serve_support;

use serde_json::{json, Value};
use serve_support::*;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SHA: &str = "3f786850e387550fdab836ed7e6dc881de23001b";
const SHA2: &str = "4f786850e387550fdab836ed7e6dc881de23001b";

/// A server whose builds fail fast (the clone URL leads nowhere).
fn server(dir: &std::path::Path, extra: &str) -> Server {
    Server::start(
        dir,
        &ServerCfg {
            extra,
            ..ServerCfg::unbuildable(dir)
        },
    )
}

#[test]
fn status_codes_in_contract_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), "");
    let a = srv.addr.as_str();
    let merged = merged_pr(SHA, "89e6c98d92887913cadf06b2adb97f26cde4849b");
    let body = serde_json::to_vec(&merged).unwrap();

    // 401: missing, then wrong signature (wrong secret, tampered body, junk header).
    let r = deliver_raw(a, "pull_request", "d-401a", "application/json", &body, None);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = deliver_raw(
        a,
        "pull_request",
        "d-401b",
        "application/json",
        &body,
        Some("not-the-secret"),
    );
    assert_eq!(r.status, 401);
    let sig = dockless::serve::webhook::sign(SECRET.as_bytes(), &body);
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let r = http(
        a,
        "POST",
        "/hooks/github",
        &[
            ("X-GitHub-Event", "pull_request"),
            ("X-Hub-Signature-256", &sig),
        ],
        &tampered,
    );
    assert_eq!(r.status, 401);
    let r = http(
        a,
        "POST",
        "/hooks/github",
        &[
            ("X-GitHub-Event", "ping"),
            ("X-Hub-Signature-256", "sha256=nothex"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 401);
    // Signature before JSON: a bad body with a bad signature is 401.
    let r = deliver_raw(
        a,
        "ping",
        "d-401c",
        "application/json",
        b"{oops",
        Some("wrong"),
    );
    assert_eq!(r.status, 401);

    // 400: signed, but not JSON (both encodings).
    let r = deliver_raw(
        a,
        "ping",
        "d-400a",
        "application/json",
        b"{oops",
        Some(SECRET),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = deliver_raw(
        a,
        "ping",
        "d-400b",
        "application/x-www-form-urlencoded",
        b"payload=%7Boops",
        Some(SECRET),
    );
    assert_eq!(r.status, 400);
    // Nesting deeper than serde_json's 128 levels: a clean 400, and the
    // server lives on.
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let r = deliver_raw(
        a,
        "ping",
        "d-400c",
        "application/json",
        deep.as_bytes(),
        Some(SECRET),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("recursion limit"), "{}", r.body);
    assert_eq!(get(a, "/healthz").status, 200);

    // 413: a body over 25 MB, whatever it contains, refused on its
    // Content-Length before it is read. A missing signature is still 401
    // (both are seen in the headers; the signature comes first).
    let mut big = fixture("ping.json");
    big["padding"] = "x".repeat(26 * 1024 * 1024).into();
    let big = serde_json::to_vec(&big).unwrap();
    let r = deliver_raw(a, "ping", "d-413", "application/json", &big, Some(SECRET));
    assert_eq!(r.status, 413, "{}", r.body);
    let r = deliver_raw(a, "ping", "d-413b", "application/json", &big, None);
    assert_eq!(r.status, 401);
    let mut broken = big.clone();
    broken.truncate(broken.len() - 1);
    for secret in [SECRET, "not-the-secret"] {
        let r = deliver_raw(
            a,
            "ping",
            "d-413c",
            "application/json",
            &broken,
            Some(secret),
        );
        assert_eq!(r.status, 413, "{}", r.body);
    }

    // 403: a repository that is not listed (even for ping), or none at all.
    let mut other = fixture("ping.json");
    other["repository"]["full_name"] = "mallory/shop".into();
    assert_eq!(deliver(a, "ping", "d-403", &other).status, 403);
    let mut other_pr = merged.clone();
    other_pr["repository"]["full_name"] = "mallory/shop".into();
    assert_eq!(deliver(a, "pull_request", "d-403b", &other_pr).status, 403);
    assert_eq!(
        deliver(a, "ping", "d-403c", &json!({"zen": "x"})).status,
        403
    );

    // 200: ping, and everything that is not a merge into `develop`.
    let r = deliver(a, "ping", "d-ping", &fixture("ping.json"));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut to_main = merged.clone();
    to_main["pull_request"]["base"]["ref"] = "main".into();
    for (event, payload) in [
        ("pull_request", fixture("pull_request.closed.unmerged.json")),
        ("pull_request", fixture("pull_request.opened.json")),
        ("pull_request", fixture("pull_request.synchronize.json")),
        ("pull_request", to_main),
        ("push", fixture("push.json")),
        (
            "issues",
            json!({"action": "opened", "repository": {"full_name": REPO}}),
        ),
    ] {
        let r = deliver(a, event, "d-200", &payload);
        assert_eq!(r.status, 200, "{event}: {}", r.body);
        let v = r.json();
        assert!(v.get("build_id").is_none(), "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }

    // 202: a merged PR into develop, acknowledged at once; the same delivery
    // again gets the same build; a form-encoded delivery works too.
    let r = deliver(a, "pull_request", "d-merge-1", &merged);
    assert_eq!(r.status, 202, "{}", r.body);
    let v = r.json();
    let id = v["build_id"].as_i64().unwrap();
    assert_eq!(v["status_url"], format!("/builds/{id}"));
    let again = deliver(a, "pull_request", "d-merge-1", &merged).json();
    assert_eq!(again["build_id"].as_i64(), Some(id));
    // (Another commit: a delivery for the same commit would join build `id`.)
    let mut merged2 = merged.clone();
    merged2["pull_request"]["merge_commit_sha"] = SHA2.into();
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &merged2.to_string())
        .finish();
    let r = deliver_raw(
        a,
        "pull_request",
        "d-merge-form",
        "application/x-www-form-urlencoded",
        form.as_bytes(),
        Some(SECRET),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id2 = r.json()["build_id"].as_i64().unwrap();
    assert_ne!(id, id2);

    // The builds fail (no repository at the clone URL), with the reason recorded.
    let b = srv.wait_finished(id, Duration::from_secs(60));
    assert_eq!(b["status"], "failed");
    assert_eq!(b["commit"], SHA);
    assert!(b["error"].as_str().unwrap().contains("fetching"), "{b}");
    assert!(b["created_at"].as_str().unwrap().ends_with('Z'));
    srv.wait_finished(id2, Duration::from_secs(60));

    // Read-only routes.
    let list = get(a, "/builds").json();
    let ids: Vec<i64> = list["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["build_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id2, id]);
    assert_eq!(get(a, "/builds/999999").status, 404);
    assert_eq!(get(a, "/builds/abc").status, 404);
    assert_eq!(get(a, "/healthz").status, 200);
    assert_eq!(get(a, "/nope").status, 404);
    assert_eq!(get(a, "/hooks/github").status, 405);
    let m = get(a, "/metrics");
    assert_eq!(m.status, 200);
    for line in [
        "dockless_builds_total{outcome=\"failed\"} 2",
        "dockless_builds_total{outcome=\"succeeded\"} 0",
        "dockless_build_queue_depth 0",
        "dockless_build_duration_seconds_count 2",
        "# TYPE dockless_build_duration_seconds histogram",
    ] {
        assert!(
            m.body.lines().any(|l| l == line),
            "{line} missing from\n{}",
            m.body
        );
    }
    // The secret never reaches the log.
    assert!(!srv.log_text().contains(SECRET));
}

#[test]
fn slow_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), "");
    // Half a request line, then nothing: the header timeout (10 s) closes it.
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    s.write_all(b"POST /hooks/github HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "connection held for {waited:?}"
    );
    // Meanwhile, and after, the server answers others.
    assert_eq!(get(&srv.addr, "/healthz").status, 200);
}

#[test]
fn refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dockless.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\nregistry = \"127.0.0.1:9\"\nstate_dir = \"state\"\n",
            free_port()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockless"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("DOCKLESS_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no webhook secret"), "{err}");
    // The file works as well as the variable.
    std::fs::write(dir.path().join("secret"), "from-file\n").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("webhook_secret_file = \"secret\"\n");
    std::fs::write(&config, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dockless"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("DOCKLESS_WEBHOOK_SECRET")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// "METHOD PATH", lower-cased headers, JSON body.
type Recorded = Arc<Mutex<Vec<(String, Vec<(String, String)>, Value)>>>;

/// A local stand-in for the GitHub API that records every request.
fn recorder() -> (String, Recorded) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut start = String::new();
            reader.read_line(&mut start).unwrap();
            let mut headers = Vec::new();
            let mut len = 0;
            loop {
                let mut l = String::new();
                reader.read_line(&mut l).unwrap();
                let l = l.trim_end().to_string();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                    if k == "content-length" {
                        len = v.parse().unwrap();
                    }
                    headers.push((k, v));
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let path = start
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            rec.lock().unwrap().push((
                path,
                headers,
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ));
            let _ = s.write_all(
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
        }
    });
    (addr, seen)
}

#[test]
fn commit_statuses_go_to_the_api() {
    let (api, seen) = recorder();
    let dir = tempfile::tempdir().unwrap();
    let extra =
        format!("github_token = \"ghp_testtoken\"\ngithub_api_url = \"http://{api}/api/v3\"");
    let srv = server(dir.path(), &extra);
    let r = deliver(
        &srv.addr,
        "pull_request",
        "d-status",
        &merged_pr(SHA, "89e6c98d92887913cadf06b2adb97f26cde4849b"),
    );
    assert_eq!(r.status, 202);
    let id = r.json()["build_id"].as_i64().unwrap();
    srv.wait_finished(id, Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let states: Vec<&str> = seen
        .iter()
        .map(|(_, _, b)| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "failure"]);
    for (path, headers, body) in seen.iter() {
        assert_eq!(path, &format!("POST /api/v3/repos/{REPO}/statuses/{SHA}"));
        assert!(headers.contains(&("authorization".into(), "Bearer ghp_testtoken".into())));
        assert_eq!(body["context"], "dockless");
    }
    assert!(!srv.log_text().contains("ghp_testtoken"));
}
