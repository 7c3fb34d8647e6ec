//! Registry quirks, each produced by the fault proxy rewriting a real
//! `docker-registry`'s answers, and a token server that fails. Covered
//! elsewhere and not repeated here: `access_token` (every token test: the
//! server of tests/tokensupport sends nothing else), mount refused with 202
//! (registry_push_plain.rs, mount from a missing source), PATCH chunks over
//! 4 MiB refused (registry_push_chunked_proxy.rs).
mod faults_support;
mod regsupport;
mod tokensupport;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dockless::name::Reference;
use dockless::remote::{push, Options};
use faults_support::{rewrite_location, Action, FaultProxy, Req, Resp, Rule};
use regsupport::*;
use tokensupport::{creds, start_token_server, token_auth, PASS, SERVICE, USER};

fn fast_opts(registry: &str) -> Options {
    Options {
        insecure_registries: vec![registry.to_string()],
        read_timeout: Duration::from_secs(5),
        retry_delay: Duration::from_millis(50),
        max_retry_delay: Duration::from_millis(300),
        ..Options::default()
    }
}

/// Push a fresh image through `proxy`; chunked when `chunked`, so PATCH
/// answers' Locations are followed too. Returns the manifest digest.
async fn push_through(proxy: &FaultProxy, reg: &Registry, repo: &str, chunked: bool) -> String {
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), repo, 300 * 1024);
    if chunked {
        proxy.refuse_monolithic_uploads();
    }
    let opts = Options {
        chunk_size: 128 * 1024,
        ..fast_opts(&proxy.addr)
    };
    let target = Reference::parse_tag(&format!("{}/quirks/{repo}:1", proxy.addr)).unwrap();
    let out = push(&img, &target, &opts)
        .await
        .expect("push through quirks");
    reg.verify(&format!("quirks/{repo}:1"), &out.manifest_digest, None);
    out.manifest_digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_location_is_resolved() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    proxy.add(rewrite_location(|pq| pq.to_string()));
    push_through(&proxy, &reg, "relative", true).await;
    assert!(proxy.faults()["rewrite"] > 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_location_on_another_port_is_followed() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let alt = proxy.alt_addr.clone();
    proxy.add(rewrite_location(move |pq| format!("http://{alt}{pq}")));
    push_through(&proxy, &reg, "otherport", true).await;
    let seen = proxy.seen();
    let on_alt: Vec<_> = seen.iter().filter(|s| s.req.listener == 1).collect();
    assert!(!on_alt.is_empty(), "uploads went to the Location's port");
    assert!(on_alt
        .iter()
        .all(|s| s.req.path().contains("/blobs/uploads/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_query_parameters_are_kept() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    proxy.add(rewrite_location(|pq| {
        let sep = if pq.contains('?') { '&' } else { '?' };
        format!("{pq}{sep}sig=k%2Fy&expires=99")
    }));
    push_through(&proxy, &reg, "query", true).await;
    let seen = proxy.seen();
    let follow_ups: Vec<_> = seen
        .iter()
        .filter(|s| {
            s.req.method == "PATCH"
                || (s.req.method == "PUT"
                    && s.req.path().contains("/blobs/uploads/")
                    && s.status != 405)
        })
        .collect();
    assert!(!follow_ups.is_empty());
    for s in follow_ups {
        assert!(
            s.req.query().contains("sig=k%2Fy") && s.req.query().contains("expires=99"),
            "query lost: {}",
            s.req.target
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_put_answered_202_or_200_without_location() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    for (status, repo) in [(202u16, "mf202"), (200, "mf200")] {
        let proxy = FaultProxy::start(&reg.addr()).await;
        proxy.add(Rule::new(
            |r| r.method == "PUT" && r.path().contains("/manifests/"),
            Action::Rewrite(Box::new(move |_req: &Req, resp: &mut Resp| {
                assert_eq!(resp.status, 201);
                resp.status = status;
                resp.reason = "Whatever".into();
                resp.remove_header("location");
            })),
        ));
        push_through(&proxy, &reg, repo, false).await;
        assert_eq!(proxy.faults()["rewrite"], 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_content_digest_missing_or_wrong_is_not_trusted() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let wrong = format!("sha256:{}", "0".repeat(64));
    for (repo, value) in [("nodigest", None), ("wrongdigest", Some(wrong))] {
        let proxy = FaultProxy::start(&reg.addr()).await;
        proxy.add(
            Rule::new(
                |_r| true,
                Action::Rewrite(Box::new(move |_req: &Req, resp: &mut Resp| match &value {
                    Some(v) => resp.set_header("Docker-Content-Digest", v),
                    None => resp.remove_header("Docker-Content-Digest"),
                })),
            )
            .always(),
        );
        // The returned digest is ours, and it is what the registry really stores.
        push_through(&proxy, &reg, repo, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_refused_with_401_falls_back_to_upload() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "mount401", 0);
    let src = Reference::parse_tag(&format!("{}/quirks/src:1", reg.addr())).unwrap();
    push(&img, &src, &fast_opts(src.registry())).await.unwrap();

    let proxy = FaultProxy::start(&reg.addr()).await;
    proxy.add(
        Rule::new(
            |r| r.method == "POST" && r.query().contains("mount="),
            Action::Rewrite(Box::new(|_req: &Req, resp: &mut Resp| {
                resp.status = 401;
                resp.reason = "Unauthorized".into();
                resp.remove_header("location");
            })),
        )
        .always(),
    );
    let target = Reference::parse_tag(&format!("{}/quirks/dst:1", proxy.addr)).unwrap();
    let out = push(
        &with_mount_from(&img, "quirks/src"),
        &target,
        &fast_opts(target.registry()),
    )
    .await
    .expect("upload after a refused mount");
    assert!(out.mounted.is_empty());
    assert_eq!(sorted(out.uploaded), all_digests(&img));
    assert_eq!(proxy.faults()["rewrite"], 2);
    reg.verify("quirks/dst:1", &out.manifest_digest, None);
}

/// A registry whose challenges lack `service`: the token is asked for
/// without it (no empty `service=`), and the push works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn www_authenticate_without_service_still_gets_a_token() {
    init_tracing();
    let _g = env_lock().await;
    let tokdir = tempfile::tempdir().unwrap();
    let ts = start_token_server(tokdir.path()).await;
    let reg = Registry::start(RegistryCfg {
        token: Some(token_auth(&ts, &ts.realm)),
        ..Default::default()
    });
    let proxy = FaultProxy::start(&reg.addr()).await;
    let stripped = Arc::new(AtomicUsize::new(0));
    let count = stripped.clone();
    proxy.add(
        Rule::new(
            |_r| true,
            Action::Rewrite(Box::new(move |_req: &Req, resp: &mut Resp| {
                let Some(h) = resp.header("www-authenticate").map(str::to_string) else {
                    return;
                };
                let without = h.replace(&format!(",service=\"{SERVICE}\""), "");
                assert_ne!(without, h, "the registry named its service");
                resp.set_header("WWW-Authenticate", &without);
                count.fetch_add(1, Ordering::Relaxed);
            })),
        )
        .always(),
    );
    let _cfg = docker_config(serde_json::json!({
        "auths": { proxy.addr.clone(): { "auth": basic_b64(USER, PASS) } }
    }));
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "noservice", 0);
    let target = Reference::parse_tag(&format!("{}/quirks/noservice:1", proxy.addr)).unwrap();
    let out = push(&img, &target, &fast_opts(target.registry()))
        .await
        .expect("push with service-less challenges");
    reg.verify("quirks/noservice:1", &out.manifest_digest, Some(&creds()));
    assert!(stripped.load(Ordering::Relaxed) >= 1);
    let asked = ts.seen.lock().unwrap().clone();
    assert!(!asked.is_empty());
    // skopeo's requests came straight from the registry's own challenge.
    let ours: Vec<_> = asked.iter().filter(|r| r.service.is_none()).collect();
    assert!(!ours.is_empty(), "{asked:?}");
    assert!(ours.iter().all(|r| !r.scopes.is_empty()), "{asked:?}");
}

/// A token server that fails like a registry does (503, a reset, 429 with
/// Retry-After) is retried; one that keeps failing fails the push clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_server_faults_are_retried() {
    init_tracing();
    let _g = env_lock().await;
    let tokdir = tempfile::tempdir().unwrap();
    let ts = start_token_server(tokdir.path()).await;
    let tok_proxy = FaultProxy::start(&ts.addr).await;
    let realm = format!("http://{}/token", tok_proxy.addr);
    let reg = Registry::start(RegistryCfg {
        token: Some(token_auth(&ts, &realm)),
        ..Default::default()
    });
    let _cfg = docker_config(serde_json::json!({
        "auths": { reg.addr(): { "auth": basic_b64(USER, PASS) } }
    }));
    let is_token = |r: &Req| r.path() == "/token";
    tok_proxy.add(Rule::new(is_token, Action::Status(503)));
    tok_proxy.add(Rule::new(is_token, Action::ResetAfter(0)));
    tok_proxy.add(Rule::new(is_token, Action::TooMany(1)));

    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "tokfaults", 0);
    let target = Reference::parse_tag(&format!("{}/quirks/tokfaults:1", reg.addr())).unwrap();
    let out = push(&img, &target, &fast_opts(target.registry()))
        .await
        .expect("push after token server faults");
    reg.verify("quirks/tokfaults:1", &out.manifest_digest, Some(&creds()));
    let f = tok_proxy.faults();
    assert_eq!(
        (f["http-503"], f["reset"], f["http-429"]),
        (1, 1, 1),
        "{f:?}"
    );
    let statuses: Vec<u16> = tok_proxy.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses[..4], [503, 0, 429, 200], "{statuses:?}");

    tok_proxy.add(Rule::new(is_token, Action::Status(503)).always());
    let target = Reference::parse_tag(&format!("{}/quirks/tokdown:1", reg.addr())).unwrap();
    let err = push(&img, &target, &fast_opts(target.registry()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("token server") && msg.contains(&tok_proxy.addr) && msg.contains("503"),
        "{msg}"
    );
    assert!(!msg.contains(PASS));
    assert!(reg.tag_absent("quirks/tokdown:1", Some(&creds())));
}
