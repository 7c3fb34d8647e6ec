//! Registry quirks, each produced by the fault proxy rewriting a real
//! `docker-registry`'s answers. Covered elsewhere and not repeated here:
//! `access_token` (registry_push_token.rs), mount refused with 202
//! (registry_push_plain.rs, mount from a missing source), PATCH chunks over
//! 4 MiB refused (registry_push_chunked_proxy.rs).
mod faults_support;
mod regsupport;

use std::time::Duration;

use dockless::registry::{push, PushOptions, Reference};
use faults_support::{Action, FaultProxy, Req, Resp, Rule};
use regsupport::*;

fn fast_opts() -> PushOptions {
    PushOptions {
        insecure: true,
        read_timeout: Duration::from_secs(5),
        retry_delay: Duration::from_millis(50),
        max_retry_delay: Duration::from_millis(300),
        ..PushOptions::default()
    }
}

fn is_session_answer(r: &Req) -> bool {
    r.path().contains("/blobs/uploads/") && matches!(r.method.as_str(), "POST" | "PATCH")
}

/// Rewrite every upload-session Location with `f(location_path_and_query)`.
fn rewrite_location(f: impl Fn(&str) -> String + Send + Sync + 'static) -> Rule {
    Rule::new(
        is_session_answer,
        Action::Rewrite(Box::new(move |_req: &Req, resp: &mut Resp| {
            if let Some(loc) = resp.header("location").map(str::to_string) {
                let u = url::Url::parse(&loc).unwrap();
                let pq = match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_string(),
                };
                resp.set_header("Location", &f(&pq));
            }
        })),
    )
    .always()
}

/// Push a fresh image through `proxy`; chunked when `chunked`, so PATCH
/// answers' Locations are followed too. Returns the manifest digest.
async fn push_through(proxy: &FaultProxy, reg: &Registry, repo: &str, chunked: bool) -> String {
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), repo, 300 * 1024);
    if chunked {
        proxy.refuse_monolithic_uploads();
    }
    let opts = PushOptions {
        chunk_size: 128 * 1024,
        ..fast_opts()
    };
    let target = Reference::parse(&format!("{}/quirks/{repo}:1", proxy.addr)).unwrap();
    let out = push(&img, &target, &opts)
        .await
        .expect("push through quirks");
    reg.verify(&format!("quirks/{repo}:1"), &out.manifest_digest, None);
    out.manifest_digest
}

async fn setup() -> (
    tokio::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    Registry,
) {
    init_tracing();
    let g = env_lock().await;
    let cfg = docker_config(serde_json::json!({}));
    (g, cfg, Registry::start(RegistryCfg::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_location_is_resolved() {
    let (_g, _cfg, reg) = setup().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    proxy.add(rewrite_location(|pq| pq.to_string()));
    push_through(&proxy, &reg, "relative", true).await;
    assert!(proxy.faults()["rewrite"] > 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_location_on_another_port_is_followed() {
    let (_g, _cfg, reg) = setup().await;
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
    let (_g, _cfg, reg) = setup().await;
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
    let (_g, _cfg, reg) = setup().await;
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
    let (_g, _cfg, reg) = setup().await;
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
    let (_g, _cfg, reg) = setup().await;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "mount401", 0);
    let src = Reference::parse(&format!("{}/quirks/src:1", reg.addr())).unwrap();
    push(&img, &src, &fast_opts()).await.unwrap();

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
    let target = Reference::parse(&format!("{}/quirks/dst:1", proxy.addr)).unwrap();
    let out = push(&with_mount_from(&img, "quirks/src"), &target, &fast_opts())
        .await
        .expect("upload after a refused mount");
    assert!(out.mounted.is_empty());
    assert_eq!(sorted(out.uploaded), all_digests(&img));
    assert_eq!(proxy.faults()["rewrite"], 2);
    reg.verify("quirks/dst:1", &out.manifest_digest, None);
}
