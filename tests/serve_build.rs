//! `dockless serve` end to end: a real docker-registry, a real git
//! repository served over file://, and a signed merged-PR delivery that
//! builds and pushes two images (checked with skopeo) while the AMI entry
//! fails alone; a redelivery returns the same build and builds nothing.
mod regsupport;
mod serve_support;

use regsupport::{Registry, RegistryCfg};
use serve_support::*;
use std::time::Duration;

#[test]
fn merged_pr_builds_and_pushes_every_image() {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let srv = Server::start(
        dir.path(),
        &ServerCfg {
            max_builds: 2,
            ..ServerCfg::new(reg.addr(), repo.url())
        },
    );
    let payload = merged_pr(&repo.merge_sha, &repo.head_sha);
    let t0 = std::time::Instant::now();
    let r = deliver(
        &srv.addr,
        "pull_request",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        &payload,
    );
    let ack = t0.elapsed();
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(ack < Duration::from_secs(2), "acknowledged after {ack:?}");
    let id = r.json()["build_id"].as_i64().unwrap();
    // The acknowledgement came before the build finished.
    let first = get(&srv.addr, &format!("/builds/{id}")).json();
    assert_ne!(first["status"], "succeeded");

    let b = srv.wait_finished(id, Duration::from_secs(180));
    // The AMI entry fails the build as a whole, but alone.
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["commit"], repo.merge_sha.as_str());
    assert_eq!(b["head_sha"], repo.head_sha.as_str());
    assert_eq!(b["error"], "1 of 3 images failed");
    assert!(b["started_at"].is_string() && b["finished_at"].is_string());
    let images = b["images"].as_array().unwrap();
    assert_eq!(images.len(), 3, "{b}");
    let vm = &images[2];
    assert_eq!(
        (vm["service_name"].as_str(), vm["status"].as_str()),
        (Some("vm-base"), Some("failed"))
    );
    assert!(
        vm["error"]
            .as_str()
            .unwrap()
            .contains("type \"AMI\" is not built by dockless"),
        "{vm}"
    );
    assert!(vm.get("reference").is_none());
    for (img, name, version) in [
        (&images[0], "api", "1.4.0"),
        (&images[1], "worker", "0.1.0"),
    ] {
        assert_eq!(img["service_name"], name);
        assert_eq!(img["version"], version);
        assert_eq!(img["status"], "succeeded", "{img}");
        let reference = img["reference"].as_str().unwrap();
        let prefix = format!("{}/{name}:{version}@sha256:", reg.addr());
        assert!(reference.starts_with(&prefix), "{reference}");
        let digest = reference.rsplit_once('@').unwrap().1;
        reg.verify(&format!("{name}:{version}"), digest, None);
    }
    // The merge commit was built, not the PR head: api has develop's later change.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config"])
        .arg(format!("docker://{}/worker:0.1.0", reg.addr()))
        .output()
        .unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["config"]["Entrypoint"][0], "/opt/worker/run");
    let api_layer = layer_file(&reg, "api:1.4.0", "srv/message.txt");
    assert_eq!(api_layer, "api v2\n");

    // Redelivery: the same build id, nothing built again.
    let again = deliver(
        &srv.addr,
        "pull_request",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        &payload,
    );
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["build_id"].as_i64(), Some(id));
    std::thread::sleep(Duration::from_millis(500));
    let after = get(&srv.addr, &format!("/builds/{id}")).json();
    assert_eq!(after["attempts"], 1);
    assert_eq!(after["finished_at"], b["finished_at"]);
    assert_eq!(
        get(&srv.addr, "/builds").json()["builds"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let m = get(&srv.addr, "/metrics").body;
    assert!(
        m.contains("dockless_builds_total{outcome=\"failed\"} 1"),
        "{m}"
    );
    // The per-build log under state_dir names what happened.
    let log = std::fs::read_to_string(srv.state.join(format!("logs/{id}.log"))).unwrap();
    assert!(log.contains("pushed ") && log.contains("AMI"), "{log}");
}

/// The content of one file from the image's single layer, via skopeo.
fn layer_file(reg: &Registry, repo_tag: &str, path: &str) -> String {
    let dest = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{repo_tag}", reg.addr()))
        .arg(format!("dir:{}", dest.path().display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.path().join("manifest.json")).unwrap()).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let f = std::fs::File::open(dest.path().join(hex)).unwrap();
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
        for entry in ar.entries().unwrap() {
            let mut e = entry.unwrap();
            if e.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                return s;
            }
        }
    }
    panic!("{path} not in {repo_tag}");
}
