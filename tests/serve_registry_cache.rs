//! Two `dockless serve` replicas, each with its own state (and so its own
//! empty cache folder), sharing `cache_repo` in dockless.toml: what
//! replica A built, replica B rebuilds from the registry cache without
//! running its RUN step or writing a layer, and pushes the same digest.
mod regsupport;
mod serve_support;

use regsupport::{Registry, RegistryCfg};
use serve_support::*;
use std::path::Path;
use std::time::Duration;

fn replica(dir: &Path, name: &str, reg: &Registry, repo: &GitRepo, cache: &str) -> Server {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let extra = format!("cache_repo = \"{cache}\"\nreplica_name = \"{name}\"");
    Server::start(
        &home,
        &ServerCfg {
            extra: &extra,
            ..ServerCfg::new(reg.addr(), repo.url())
        },
    )
}

/// Delivers a merged PR of `sha` and waits for its build to end.
fn build(srv: &Server, sha: &str) -> (serde_json::Value, String) {
    let r = deliver(
        &srv.addr,
        "pull_request",
        &format!("delivery-{sha}"),
        &merged_pr(sha, sha),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["build_id"].as_i64().unwrap();
    let b = srv.wait_finished(id, Duration::from_secs(180));
    assert_eq!(b["status"], "succeeded", "{b}\n{}", srv.log_text());
    let log = std::fs::read_to_string(srv.state.join(format!("logs/{id}.log"))).unwrap();
    (b, log)
}

#[test]
fn a_second_replica_rebuilds_from_the_cache_repo_without_running_anything() {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let sha = repo.commit("a RUN step", |dir| {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = dir.join("api/busybox");
        std::fs::write(&bin, &busybox).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.join("api/Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo said-by-the-step; /bin/busybox mkdir -p /srv; echo made > /srv/made\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("image.json"),
            r#"{"service_name": "api", "version": "3.0.0", "type": "Docker"}"#,
        )
        .unwrap();
    });
    let cache = format!("{}/build-cache", reg.addr());
    let a = replica(dir.path(), "a", &reg, &repo, &cache);
    let (built_a, log_a) = build(&a, &sha);
    assert!(log_a.contains("\nsaid-by-the-step\n"), "{log_a}");
    assert!(
        a.log_text().contains("registry cache written"),
        "{}",
        a.log_text()
    );

    let b = replica(dir.path(), "b", &reg, &repo, &cache);
    let (built_b, log_b) = build(&b, &sha);
    assert!(
        !log_b.contains("\nsaid-by-the-step\n"),
        "B ran the step: {log_b}"
    );
    assert!(log_b.contains("(cached)"), "{log_b}");
    let served = b.log_text();
    assert!(
        !served.contains("layer written"),
        "B wrote a layer: {served}"
    );
    assert!(served.contains("layer served from cache"), "{served}");
    let reference =
        |b: &serde_json::Value| b["images"][0]["reference"].as_str().unwrap().to_string();
    assert_eq!(reference(&built_a), reference(&built_b));
    // The cache lives under the image repository's own tag.
    assert!(!reg.tag_absent("build-cache:api", None));
}
