//! The registry build cache (`--cache-repo`, `--cache-from`/`--cache-to`)
//! end to end on real docker-registry processes: the base on a plain-HTTP
//! registry, the target and the cache each on a TLS registry of their own.
//! A build on "replica A" writes the cache; "replica B", with an empty
//! cache folder, runs no RUN step and compresses no layer, and pushes the
//! same digest. The cache holds no secret. A cache on a port nothing
//! listens on is a warning, never a failed build.

mod common;
mod regsupport;
mod run_support;

use common::*;
use regsupport::{free_port, Certs, Registry, RegistryCfg};
use run_support::Fixture;
use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::Output;

const SECRET: &str = "s3cret-never-in-the-cache-7f3a";
const APP: &str = "app-content-in-a-layer-91c2";

const DOCKERFILE: &str = "FROM {BASE}\n\
     COPY app.txt /app/app.txt\n\
     RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-size\n\
     RUN cat /app/app.txt > /copied && mkdir -p /data && echo two > /data/two\n\
     COPY more.txt /app/more.txt\n\
     RUN true\n";

struct Setup {
    fixture: Fixture,
    certs: Certs,
    target: Registry,
    cache: Registry,
    ctx: std::path::PathBuf,
    secret: std::path::PathBuf,
}

fn setup() -> Setup {
    let fixture = Fixture::new();
    let certs = Certs::generate();
    let tls = || {
        Registry::start(RegistryCfg {
            certs: Some(&certs),
            ..Default::default()
        })
    };
    let (target, cache) = (tls(), tls());
    let ctx = fixture.context(
        "app",
        DOCKERFILE,
        &[("app.txt", APP), ("more.txt", "more\n")],
    );
    let secret = fixture.path("secret.txt");
    fs::write(&secret, SECRET).unwrap();
    Setup {
        fixture,
        certs,
        target,
        cache,
        ctx,
        secret,
    }
}

impl Setup {
    /// `dockless push` to `repo` with its own cache folder (one "replica") and `cache` flags.
    fn push(&self, replica: &str, repo: &str, cache: &[&str]) -> Output {
        let target = format!("{}/{repo}:v1", self.target.addr());
        let secret = format!("id=tok,src={}", self.secret.display());
        dockless(&self.fixture.path(replica))
            .arg("push")
            .arg(&self.ctx)
            .args(["-t", &target, "--json", "--secret", &secret])
            .args(["--insecure-registry", &self.fixture.reg.addr()])
            .arg("--ca-cert")
            .arg(self.certs.ca())
            .args(cache)
            .output()
            .unwrap()
    }

    fn cache_repo(&self) -> String {
        format!("{}/team/cache", self.cache.addr())
    }
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// The `build_cache` event of a `--json` run.
fn cache_event(out: &Output) -> serde_json::Value {
    json_events(out)
        .into_iter()
        .find(|e| e["event"] == "build_cache")
        .expect("a build_cache event")
}

/// The digest on the `NAME@DIGEST` line.
fn pushed_digest(out: &Output) -> String {
    let line = stdout(out);
    line.rsplit_once('@').expect("NAME@DIGEST").1.to_string()
}

/// Every blob a registry stores, decompressed when gzip.
fn stored_blobs(registry: &Registry) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let root = registry.dir.path().join("data/docker/registry/v2/blobs");
    let mut pending = vec![root];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n == "data") {
                found.push(readable(&path));
            }
        }
    }
    found
}

fn readable(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return bytes;
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn a_fresh_replica_rebuilds_from_the_registry_cache_without_running_or_compressing() {
    let s = setup();
    let repo = s.cache_repo();
    let a = s.push("replica-a", "a", &["--cache-repo", &repo]);
    let a_err = ok(&a);
    let a_cache = cache_event(&a);
    assert_eq!(a_cache["steps_run"], 3, "{a_cache}");
    assert_eq!(a_cache["layers_written"], 2, "{a_cache}");
    assert!(a_err.contains("nothing cached there yet"), "{a_err}");
    // A's empty cache folder: the base's layers were downloaded to be read.
    assert!(a_cache["layer_downloads"].as_u64() > Some(0), "{a_cache}");

    // Another repository of the target: B's layers are not there yet.
    let b = s.push("replica-b", "b", &["--cache-repo", &repo]);
    let b_err = ok(&b);
    let b_cache = cache_event(&b);
    assert_eq!(b_cache["steps_run"], 0, "B ran a RUN step: {b_cache}");
    assert_eq!(
        b_cache["layers_written"], 0,
        "B compressed a layer: {b_cache}"
    );
    assert_eq!(b_cache["steps_from_registry"], 3, "{b_cache}");
    assert_eq!(b_cache["layers_from_registry"], 2, "{b_cache}");
    // The base's header indexes and every layer's SBOM scan came from the
    // cache: neither the build nor the SBOM read a layer.
    assert_eq!(b_cache["layer_downloads"], 0, "{b_cache}\n{b_err}");
    for header in b_err.lines().filter(|l| l.contains("] RUN ")) {
        assert!(header.ends_with("(cached)"), "B ran {header:?}:\n{b_err}");
    }
    // --json says so too: no COPY or RUN step of B was computed.
    let steps: Vec<_> = json_events(&b)
        .into_iter()
        .filter(|e| e["event"] == "step_finished")
        .filter(|e| {
            let text = e["instruction"].as_str().unwrap_or_default();
            text.starts_with("RUN ") || text.starts_with("COPY ")
        })
        .collect();
    assert_eq!(steps.len(), 5, "{steps:?}");
    assert!(steps.iter().all(|e| e["cached"] == true), "{steps:?}");
    assert_eq!(pushed_digest(&a), pushed_digest(&b));
    // B's layers went to the target straight from the cache registry.
    let streamed = json_events(&b)
        .into_iter()
        .filter(|e| e["event"] == "blob_uploaded" && e["streamed_from"].is_string())
        .count();
    assert!(streamed >= 1, "{b_err}");

    // What the cache registry stores: layers (app.txt's content is in one)
    // and the index, but never the secret.
    let blobs = stored_blobs(&s.cache);
    assert!(
        blobs.iter().any(|b| contains(b, APP)),
        "the scan sees layers"
    );
    assert!(
        blobs.iter().all(|b| !contains(b, SECRET)),
        "a secret leaked"
    );
    let target_blobs = stored_blobs(&s.target);
    assert!(target_blobs.iter().all(|b| !contains(b, SECRET)));
}

#[test]
fn buildkit_cache_flags_read_and_write_the_same_cache() {
    let s = setup();
    let cache_ref = format!("type=registry,ref={}:main", s.cache_repo());
    let to = format!("{cache_ref},mode=max");
    let a = s.push("replica-a", "a", &["--cache-to", &to]);
    ok(&a);
    let b = s.push("replica-b", "b", &["--cache-from", &cache_ref]);
    ok(&b);
    let b_cache = cache_event(&b);
    assert_eq!(b_cache["steps_run"], 0, "{b_cache}");
    assert_eq!(b_cache["layers_written"], 0, "{b_cache}");
    assert_eq!(pushed_digest(&a), pushed_digest(&b));

    // A third replica adds a RUN step (which needs the cached layers on
    // disk), writes an OCI layout (which holds every blob) and adds its
    // step to the cache.
    let more = s.fixture.path("Dockerfile.more");
    let text = fs::read_to_string(s.ctx.join("Dockerfile")).unwrap();
    fs::write(&more, format!("{text}RUN cat /copied /data/two > /again\n")).unwrap();
    let secret = format!("id=tok,src={}", s.secret.display());
    let build_more = |replica: &str| {
        let layout = s.fixture.path(&format!("layout-{replica}"));
        let out = dockless(&s.fixture.path(replica))
            .arg("build")
            .arg(&s.ctx)
            .arg("-f")
            .arg(&more)
            .args(["-t", "run:test", "--json", "--secret", &secret])
            .args(["--insecure-registry", &s.fixture.reg.addr()])
            .arg("--ca-cert")
            .arg(s.certs.ca())
            .args(["--cache-from", &cache_ref, "--cache-to", &to, "-o"])
            .arg(format!("oci:{}", layout.display()))
            .output()
            .unwrap();
        let stderr = ok(&out);
        assert!(!stderr.contains("cannot write it"), "{stderr}");
        (cache_event(&out), layout)
    };
    let (c_cache, layout) = build_more("replica-c");
    assert_eq!(c_cache["steps_run"], 1, "{c_cache}");
    assert_eq!(c_cache["layers_written"], 0, "{c_cache}");
    // C merged its new step into the cache: D runs nothing.
    let (d_cache, _) = build_more("replica-d");
    assert_eq!(d_cache["steps_run"], 0, "{d_cache}");
    assert_eq!(d_cache["steps_from_registry"], 4, "{d_cache}");
    let bundle = umoci_unpack(&layout, "run:test", &s.fixture.path("bundle"));
    let again = fs::read_to_string(bundle.join("again")).unwrap();
    assert_eq!(again, format!("{APP}two\n"));
}

#[test]
fn an_unreachable_cache_is_a_warning_and_the_build_succeeds() {
    let s = setup();
    let nowhere = format!("127.0.0.1:{}/cache", free_port());
    let out = s.push("replica-a", "a", &["--cache-repo", &nowhere]);
    let stderr = ok(&out);
    assert!(
        stderr.contains(&format!("registry cache {nowhere}:dockless-cache"))
            && stderr.contains("building without it"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot write it"), "{stderr}");
    assert_eq!(cache_event(&out)["steps_run"], 3);
}

#[test]
fn bad_cache_flags_name_the_flag_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let run = |args: &[&str]| {
        let out = dockless(&tmp.path().join("cache"))
            .arg("build")
            .arg(&ctx)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--cache-from", "type=local,src=/tmp/c"]);
    assert!(
        e.contains("--cache-from \"type=local,src=/tmp/c\": type=local is not supported")
            && e.contains("type=registry,ref=REGISTRY/REPO"),
        "{e}"
    );
    let e = run(&[
        "--cache-to",
        "type=registry,ref=h:5000/c,oci-mediatypes=true",
    ]);
    assert!(e.contains("unknown key \"oci-mediatypes\""), "{e}");
    let e = run(&[
        "--cache-repo",
        "h:5000/c",
        "--cache-from",
        "type=registry,ref=h/c",
    ]);
    assert!(e.contains("not both"), "{e}");
}
