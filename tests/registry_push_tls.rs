//! TLS pushes: trusted dev CA, untrusted CA.
mod regsupport;

use dockless::name::Reference;
use dockless::remote::{push, Options, RegistryError};
use regsupport::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_generated_ca() {
    init_tracing();
    let _g = env_lock().await;
    let _cfg = docker_config(serde_json::json!({}));
    let certs = Certs::generate();
    let reg = Registry::start(RegistryCfg {
        certs: Some(&certs),
        ..Default::default()
    });
    let opts = Options {
        ca_certs: vec![certs.ca()],
        ..Options::default()
    };
    push_scenario(&reg, &opts, None, "tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_ca_names_host_and_leaves_no_tag() {
    init_tracing();
    let _g = env_lock().await;
    let _cfg = docker_config(serde_json::json!({}));
    let certs = Certs::generate();
    let other = Certs::generate();
    let reg = Registry::start(RegistryCfg {
        certs: Some(&certs),
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "untrusted", 0);
    let target = Reference::parse_tag(&format!("{}/sec/app:1", reg.addr())).unwrap();
    for ca in [vec![other.ca()], vec![]] {
        let opts = Options {
            ca_certs: ca,
            ..Options::default()
        };
        let err = push(&img, &target, &opts).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RegistryError::Tls { .. }), "{msg}");
        assert!(msg.contains(&reg.addr()), "{msg}");
        assert!(msg.contains("unknown authority"), "{msg}");
    }
    assert!(reg.tag_absent("sec/app:1", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_against_plain_registry_and_bad_ca_file() {
    init_tracing();
    let reg = Registry::start(RegistryCfg::default());
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "mismatch", 0);
    let target = Reference::parse_tag(&format!("{}/m/app:1", reg.addr())).unwrap();
    let err = push(&img, &target, &Options::default()).await.unwrap_err();
    assert!(err.to_string().contains(&reg.addr()), "{err}");

    let bogus = work.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let opts = Options {
        ca_certs: vec![bogus.clone()],
        ..Options::default()
    };
    let err = push(&img, &target, &opts).await.unwrap_err();
    assert!(matches!(err, RegistryError::TlsConfig(_)), "{err}");
    assert!(err.to_string().contains("bogus.pem"), "{err}");
}
