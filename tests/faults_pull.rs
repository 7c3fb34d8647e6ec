//! Base images pulled under faults: the fault proxy in front of a real
//! `docker-registry` cuts manifest and layer downloads short. A cut layer
//! download resumes with a Range GET from where it stopped; a cut manifest
//! is fetched again; the build succeeds with every digest verified.
mod common;
mod faults_support;
mod regsupport;

use common::*;
use faults_support::{Action, FaultProxy, Rule};
use regsupport::anonymous_registry;
use std::process::Command;

const MIB: u64 = 1024 * 1024;

/// A base holding 3 MiB of incompressible bytes, pushed to `registry`;
/// returns the digest of its one layer.
fn push_big_base(dir: &std::path::Path, registry: &str) -> String {
    let ctx = dir.join("base");
    std::fs::create_dir_all(&ctx).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..3 * MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(ctx.join("blob.bin"), noise).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY blob.bin /opt/\n",
    )
    .unwrap();
    let target = format!("{registry}/base/big:1");
    run_ok(
        dockless(&dir.join("base-cache"))
            .arg("push")
            .arg(&ctx)
            .args(["-t", &target, "--insecure", "-q"]),
    );
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{target}")),
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `dockless build` of an app FROM `registry`'s base into `dir/layout`,
/// with a fresh cache, so the base is downloaded.
async fn build_from(dir: &std::path::Path, registry: &str) -> std::process::Output {
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        app.join("Dockerfile"),
        format!("FROM {registry}/base/big:1\nCOPY hello.txt /srv/\n"),
    )
    .unwrap();
    let layout = dir.join("layout");
    let registry = registry.to_string();
    tokio::task::spawn_blocking(move || {
        dockless(&app.join("cache"))
            .arg("build")
            .arg(&app)
            .args(["-t", "app:v1", "--insecure-registry", &registry, "-o"])
            .arg(format!("oci:{}", layout.display()))
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_downloads_resume_and_the_build_succeeds() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let tmp = tempfile::tempdir().unwrap();
    let layer = push_big_base(tmp.path(), &reg.addr());
    let proxy = FaultProxy::start(&reg.addr()).await;
    proxy.add(Rule::new(
        |r| r.method == "GET" && r.path().contains("/manifests/"),
        Action::CutAnswer(20),
    ));
    let l2 = layer.clone();
    proxy.add(
        Rule::new(
            move |r| r.method == "GET" && r.path().ends_with(&l2),
            Action::CutAnswer(MIB),
        )
        .times(2),
    );

    let out = build_from(tmp.path(), &proxy.addr).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    let gets: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.req.method == "GET" && s.req.path().ends_with(&layer))
        .collect();
    // Where each try started: what the last one had received (a reset also
    // drops what was still in the socket, so less than the proxy sent).
    let starts: Vec<u64> = gets
        .iter()
        .map(|s| match s.req.header("range") {
            None => 0,
            Some(r) => r
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("range {r:?}")),
        })
        .collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert_eq!(starts[0], 0);
    assert!(
        0 < starts[1] && starts[1] <= MIB && starts[1] < starts[2] && starts[2] <= starts[1] + MIB,
        "each try resumes where the last stopped: {starts:?}"
    );
    assert_eq!(gets[2].status, 206);
    let f = proxy.faults();
    assert_eq!(f["cut-answer"], 3, "{f:?}");
    let manifest_gets = proxy
        .seen()
        .iter()
        .filter(|s| s.req.method == "GET" && s.req.path().contains("/manifests/"))
        .count();
    assert!(manifest_gets >= 2, "the cut manifest was fetched again");
    // skopeo reads the result, base layer included.
    let layout = tmp.path().join("layout");
    run_ok(
        Command::new("skopeo")
            .args(["inspect"])
            .arg(format!("oci:{}:app:v1", layout.display())),
    );
}

/// A registry that ignores Range answers a resumed download with the whole
/// blob; the bytes already on disk are skipped, and the digest still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_ignoring_range_sends_it_all_again() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let tmp = tempfile::tempdir().unwrap();
    let layer = push_big_base(tmp.path(), &reg.addr());
    let proxy = FaultProxy::start(&reg.addr()).await;
    let l2 = layer.clone();
    proxy.add(Rule::new(
        move |r| r.method == "GET" && r.path().ends_with(&l2),
        Action::CutAnswer(MIB),
    ));
    proxy.add(Rule::new(|r| r.header("range").is_some(), Action::DropHeader("range")).always());
    let out = build_from(tmp.path(), &proxy.addr).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses: Vec<(bool, u16)> = proxy
        .seen()
        .iter()
        .filter(|s| s.req.method == "GET" && s.req.path().ends_with(&layer))
        .map(|s| (s.req.header("range").is_some(), s.status))
        .collect();
    assert_eq!(statuses, [(false, 200), (true, 200)], "whole blob twice");
    assert_eq!(proxy.faults()["header-ignored"], 1);
}
