//! Base layers left in their registry: a build applies them from the cached
//! header index without their blobs, a push to another registry streams them
//! registry to registry (no file in the blob store), a layout output fetches
//! them once, `COPY --from` fetches only the layer it reads, and a source
//! that sends wrong bytes fails the push before any tag exists.

mod common;
mod regsupport;

use common::*;
use regsupport::{Registry, RegistryCfg};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BASE_DOCKERFILE: &str = "FROM scratch
COPY bin/busybox /bin/busybox
COPY etc/ /etc/
WORKDIR /srv
USER app
";

fn base_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("base");
    busybox_base_context(&ctx, BASE_DOCKERFILE);
    ctx
}

fn app_context(dir: &Path, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = dir.join(name);
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello.txt"), "hello from the app\n").unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn in_store(cache: &Path, digest: &str) -> bool {
    cache.join("blobs/sha256").join(hex(digest)).is_file()
}

/// A fresh cache folder that knows only the base layers' header indexes.
fn warm_index_cache(from: &Path, to: &Path) {
    let dest = to.join("layer-index");
    fs::create_dir_all(&dest).unwrap();
    for entry in fs::read_dir(from.join("layer-index")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
    }
}

fn push(cache: &Path, ctx: &Path, target: &str, source: &Registry) -> Output {
    dockless(cache)
        .arg("push")
        .arg(ctx)
        .args(["-t", target, "--insecure", "--json"])
        .args(["--insecure-registry", &source.addr()])
        .args(["--platform", "linux/amd64"])
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "dockless failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

#[test]
fn base_layers_stream_between_registries_and_are_fetched_on_demand() {
    let a = Registry::start(RegistryCfg::default());
    let b = Registry::start(RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();

    // The base, built and pushed to A with a cache of its own.
    run_ok(
        dockless(&work.join("base-cache"))
            .arg("push")
            .arg(base_context(work))
            .args([
                "-t",
                &format!("{}/base/busybox:1", a.addr()),
                "--insecure",
                "-q",
                "--platform",
                "linux/amd64",
            ]),
    );
    let base = format!("{}/base/busybox:1", a.addr());
    let layers = a.layer_digests("base/busybox:1");
    assert_eq!(layers.len(), 3, "busybox, etc and the WORKDIR layer");

    // 1. Cold cache: the layers are downloaded (for their headers and for
    //    --chown=app's /etc/passwd), indexed, and pushed to B.
    let cold = work.join("cache-cold");
    let ctx1 = app_context(
        work,
        "app1",
        &format!("FROM {base}\nCOPY --chown=app hello.txt ./\n"),
    );
    let out = push(&cold, &ctx1, &format!("{}/app/svc:1", b.addr()), &a);
    let line = ok(&out);
    b.verify("app/svc:1", &digest_of(&line), None);
    for l in &layers {
        assert!(
            cold.join("layer-index")
                .join(format!("{}.json", hex(l)))
                .is_file(),
            "header index of {l}"
        );
    }

    // 2. Warm header index, empty blob store: the build needs no base blob,
    //    and the push streams every base layer from A to B.
    let warm = work.join("cache-warm");
    warm_index_cache(&cold, &warm);
    let ctx2 = app_context(
        work,
        "app2",
        &format!("FROM {base}\nCOPY --chown=1000:1000 hello.txt ./\n"),
    );
    let out = push(&warm, &ctx2, &format!("{}/app/streamed:2", b.addr()), &a);
    let line = ok(&out);
    b.verify("app/streamed:2", &digest_of(&line), None);
    let events = json_events(&out);
    let uploaded = event_digests(&events, "blob_uploaded");
    let source = format!("{}/base/busybox", a.addr());
    for l in &layers {
        assert!(uploaded.contains(l), "{l} streamed to B: {uploaded:?}");
        assert!(!in_store(&warm, l), "{l} must not be written to the store");
        let event = events
            .iter()
            .find(|e| e["event"] == "blob_uploaded" && e["digest"] == l.as_str())
            .unwrap();
        assert_eq!(event["streamed_from"], source.as_str(), "{event}");
    }
    // The app's own layer and config went up from the store.
    assert!(events
        .iter()
        .filter(|e| e["event"] == "blob_uploaded")
        .any(|e| e.get("streamed_from").is_none()));

    // 3. An OCI layout from the same cache gets every blob, fetched once and verified.
    let layout = work.join("layout");
    run_ok(
        dockless(&warm)
            .arg("build")
            .arg(&ctx2)
            .args(["-t", "app:v2", "--insecure-registry", &a.addr()])
            .args(["--platform", "linux/amd64", "-o"])
            .arg(format!("oci:{}", layout.display())),
    );
    for l in &layers {
        assert!(layout.join("blobs/sha256").join(hex(l)).is_file(), "{l}");
        assert!(in_store(&warm, l), "{l} fetched into the store");
    }
    let copied = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci:{}:app:v2", layout.display()))
            .arg(format!("dir:{}", copied.path().display())),
    );

    // 4. COPY --from=<image> with a warm index fetches only the layer it reads.
    let lazy = work.join("cache-lazy");
    warm_index_cache(&cold, &lazy);
    let ctx3 = app_context(
        work,
        "app3",
        &format!("FROM scratch\nCOPY --from={base} /etc/motd /motd\n"),
    );
    run_ok(
        dockless(&lazy)
            .arg("build")
            .arg(&ctx3)
            .args(["-t", "app:v3", "--insecure-registry", &a.addr()])
            .args(["--platform", "linux/amd64", "-o"])
            .arg(format!("oci:{}", work.join("layout3").display())),
    );
    assert!(in_store(&lazy, &layers[1]), "the etc layer was fetched");
    assert!(!in_store(&lazy, &layers[0]), "the busybox layer was not");

    // 5. A source serving wrong bytes (same size) fails the push clearly, and no tag appears.
    let bad = work.join("cache-bad");
    warm_index_cache(&cold, &bad);
    let h = hex(&layers[0]);
    let data = a
        .dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&h[..2])
        .join(h)
        .join("data");
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, bytes).unwrap();
    let out = push(&bad, &ctx2, &format!("{}/app/bad:1", b.addr()), &a);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("streaming {}", layers[0])) && stderr.contains("refusing it"),
        "{stderr}"
    );
    assert!(b.tag_absent("app/bad:1", None));
    assert!(!in_store(&bad, &layers[0]));
}
