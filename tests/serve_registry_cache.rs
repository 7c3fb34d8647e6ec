//! Two `dockless serve` replicas, each with its own state (and so its own
//! empty cache folder), sharing `cache_repo` in dockless.toml: what
//! replica A built, replica B rebuilds from the registry cache without
//! running its RUN step or writing a layer, and pushes the same digest.
mod regsupport;
mod serve_support;

use regsupport::{Registry, RegistryCfg};
use serve_support::*;
use std::path::Path;

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

/// Builds a merged PR of `sha`, which must succeed: its state and build log.
fn build(srv: &Server, sha: &str) -> (serde_json::Value, String) {
    let (id, b) = srv.build_merged(sha);
    assert_eq!(b["status"], "succeeded", "{b}\n{}", srv.log_text());
    let log = std::fs::read_to_string(srv.state.join(format!("logs/{id}.log"))).unwrap();
    (b, log)
}

#[test]
fn a_second_replica_rebuilds_from_the_cache_repo_without_running_anything() {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let sha = repo.commit_run_step();
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
