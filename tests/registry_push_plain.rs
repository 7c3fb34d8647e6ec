//! Plain HTTP (insecure) pushes against a real docker-registry.
mod regsupport;

use dockless::name::Reference;
use dockless::remote::{push, Options, PushEvent, RegistryError};
use regsupport::*;
use std::sync::{Arc, Mutex};

fn plain_opts(registry: &str) -> Options {
    Options {
        insecure_registries: vec![registry.to_string()],
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_push_skip_and_mount() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    push_scenario(&reg, &plain_opts(&reg.addr()), None, "plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_from_missing_source_falls_back_to_upload() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let work = tempfile::tempdir().unwrap();
    let img = with_mount_from(&build_image(work.path(), "fallback", 0), "nowhere/repo");
    let target = Reference::parse_tag(&format!("{}/fb/app:1", reg.addr())).unwrap();
    let out = push(&img, &target, &plain_opts(target.registry()))
        .await
        .unwrap();
    assert_eq!(sorted(out.uploaded), all_digests(&img));
    reg.verify("fb/app:1", &out.manifest_digest, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_and_progress_events() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let work = tempfile::tempdir().unwrap();
    // ~6 MiB layer: more than one 4 MiB chunk.
    let img = build_image(work.path(), "big", 6 * 1024 * 1024);
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let opts = Options {
        insecure_registries: vec![reg.addr()],
        events: dockless::remote::EventSink::new(move |e| ev.lock().unwrap().push(e.clone())),
        ..Options::default()
    };
    let target = Reference::parse_tag(&format!("{}/big/app:1", reg.addr())).unwrap();
    let out = push(&img, &target, &opts).await.unwrap();
    reg.verify("big/app:1", &out.manifest_digest, None);
    let ev = events.lock().unwrap();
    let layer = &img.layers[0];
    assert!(ev.contains(&PushEvent::BlobUploaded {
        digest: layer.digest.clone(),
        from: None,
    }));
    assert!(ev.contains(&PushEvent::BlobProgress {
        digest: layer.digest.clone(),
        sent: layer.size,
        total: layer.size
    }));
    assert!(matches!(ev.last(), Some(PushEvent::ManifestPushed { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifest_error_is_decoded_and_no_tag() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let work = tempfile::tempdir().unwrap();
    let mut img = build_image(work.path(), "badmf", 0);
    // Manifest naming a layer that was never pushed.
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    m["layers"][0]["digest"] = serde_json::json!(format!("sha256:{}", "a".repeat(64)));
    img.manifest = serde_json::to_vec(&m).unwrap();
    let target = Reference::parse_tag(&format!("{}/bad/app:1", reg.addr())).unwrap();
    let err = push(&img, &target, &plain_opts(target.registry()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Registry { .. }), "{msg}");
    assert!(msg.contains("MANIFEST_BLOB_UNKNOWN"), "{msg}");
    assert!(msg.contains(&reg.addr()), "{msg}");
    assert!(reg.tag_absent("bad/app:1", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blob_file_is_refused_before_upload() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "tamper", 0);
    std::fs::write(&img.layers[0].path, b"not the layer").unwrap();
    let target = Reference::parse_tag(&format!("{}/t/app:1", reg.addr())).unwrap();
    let err = push(&img, &target, &plain_opts(target.registry()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::BlobMismatch { .. }), "{err}");
    assert!(reg.tag_absent("t/app:1", None));
}

#[tokio::test]
async fn connection_refused_names_host() {
    let port = free_port();
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "refused", 0);
    let target = Reference::parse_tag(&format!("127.0.0.1:{port}/x/y:1")).unwrap();
    let err = push(&img, &target, &plain_opts(target.registry()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Connect { .. }), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

#[tokio::test]
async fn dns_failure_names_host() {
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "dns", 0);
    let target = Reference::parse_tag("no-such-host.invalid:5000/x/y:1").unwrap();
    let err = push(&img, &target, &plain_opts(target.registry()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no-such-host.invalid"), "{msg}");
    assert!(matches!(err, RegistryError::Dns { .. }), "{msg}");
}
