//! A proxy in front of a real registry that refuses monolithic blob PUTs and
//! PATCH chunks over 4 MiB, forcing the chunked upload path.
mod faults_support;
mod regsupport;

use dockless::name::Reference;
use dockless::remote::{push, Options};
use faults_support::{Action, FaultProxy, Rule, Seen};
use regsupport::*;

const CAP: u64 = 4 * 1024 * 1024;

/// A proxy refusing monolithic uploads (405) and PATCH chunks over CAP (413).
async fn capping_proxy(upstream: &str) -> FaultProxy {
    let proxy = FaultProxy::start(upstream).await;
    proxy.refuse_monolithic_uploads();
    proxy.add(
        Rule::new(
            |r| r.method == "PATCH" && r.is_upload_body() && r.content_length > CAP,
            Action::Status(413),
        )
        .always(),
    );
    proxy
}

fn count(seen: &[Seen], method: &str, status: u16) -> usize {
    seen.iter()
        .filter(|s| s.req.method == method && s.req.is_upload_body() && s.status == status)
        .count()
}

/// Sizes of the PATCH chunks the registry accepted.
fn patch_sizes(seen: &[Seen]) -> Vec<u64> {
    seen.iter()
        .filter(|s| s.req.method == "PATCH" && s.status == 202)
        .map(|s| s.req.content_length)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_fallback_when_put_refused_and_chunks_capped() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = capping_proxy(&reg.addr()).await;

    let work = tempfile::tempdir().unwrap();
    // ~9 MiB of noise: three chunks at the 4 MiB default.
    let img = build_image(work.path(), "capped", 9 * 1024 * 1024);
    // Ask for 8 MiB chunks: the proxy's 413 must make the client shrink them.
    let opts = Options {
        insecure_registries: vec![proxy.addr.clone()],
        chunk_size: 8 * 1024 * 1024,
        ..Options::default()
    };
    let target = Reference::parse_tag(&format!("{}/cap/app:1", proxy.addr)).unwrap();
    let out = push(&img, &target, &opts)
        .await
        .expect("push through proxy");
    assert_eq!(sorted(out.uploaded.clone()), all_digests(&img));
    reg.verify("cap/app:1", &out.manifest_digest, None);

    let seen = proxy.seen();
    let sizes = patch_sizes(&seen);
    assert_eq!(count(&seen, "PUT", 405), 2, "{sizes:?}");
    assert!(count(&seen, "PATCH", 413) >= 1, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= CAP), "{sizes:?}");
    let patched: u64 = sizes.iter().sum();
    assert_eq!(patched, img.layers[0].size + img.config.size, "{sizes:?}");
}

/// A blob that is not on disk, streamed from another registry: the target
/// refuses the monolithic PUT, so the client sends capped PATCH chunks, each
/// read from the source with a Range GET, and the target checks the digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_blob_falls_back_to_ranged_chunks() {
    init_tracing();
    let _g = env_lock().await;
    let _cfg = docker_config(serde_json::json!({}));
    let source = Registry::start(RegistryCfg::default());
    let target_reg = Registry::start(RegistryCfg::default());
    let proxy = capping_proxy(&target_reg.addr()).await;

    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "streamed", 9 * 1024 * 1024);
    let opts = Options {
        insecure_registries: vec![source.addr(), proxy.addr.clone()],
        ..Options::default()
    };
    let src_ref = Reference::parse_tag(&format!("{}/src/app:1", source.addr())).unwrap();
    push(&img, &src_ref, &opts)
        .await
        .expect("push to the source");

    let mut streamed = img.clone();
    streamed.layers[0].path = work.path().join("not-in-the-store");
    streamed.layers[0].source = Some(dockless::remote::RemoteBlob {
        registry: source.addr(),
        repository: "src/app".into(),
    });
    let target = Reference::parse_tag(&format!("{}/dst/app:1", proxy.addr)).unwrap();
    let out = push(&streamed, &target, &opts)
        .await
        .expect("streamed push through proxy");
    assert_eq!(sorted(out.uploaded.clone()), all_digests(&img));
    target_reg.verify("dst/app:1", &out.manifest_digest, None);
    assert!(!work.path().join("not-in-the-store").exists());

    let seen = proxy.seen();
    let sizes = patch_sizes(&seen);
    assert!(count(&seen, "PUT", 405) >= 1, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= CAP), "{sizes:?}");
    let patched: u64 = sizes.iter().sum();
    assert_eq!(patched, img.layers[0].size + img.config.size, "{sizes:?}");
}
