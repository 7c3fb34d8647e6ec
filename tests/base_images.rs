//! Base images from a real registry: `FROM` a single image, a Docker
//! manifest list and an OCI index; platform selection; config inheritance
//! compared with buildah; base blobs mounted, never uploaded again; the
//! result runs under runc; `COPY --from=<image>` honours whiteouts.

mod common;
mod regsupport;

use common::*;
use regsupport::{Registry, RegistryCfg};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BASE_DOCKERFILE: &str = r#"FROM scratch
COPY bin/busybox /bin/busybox
COPY etc/ /etc/
ENV PATH=/bin BASE_ENV=base
WORKDIR /srv
USER app
EXPOSE 9000
VOLUME /data
LABEL base.label=yes
ENTRYPOINT ["/bin/busybox"]
CMD ["echo", "from base"]
STOPSIGNAL SIGINT
"#;

/// A busybox base context labelled with its architecture.
fn base_context(dir: &Path, arch_label: &str) -> PathBuf {
    let ctx = dir.join(format!("base-{arch_label}"));
    busybox_base_context(&ctx, &format!("{BASE_DOCKERFILE}LABEL arch={arch_label}\n"));
    ctx
}

fn app_context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("app");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello.txt"), "hello from the app\n").unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// Pushes a base built by dockless; returns its reference line.
fn push_base(cache: &Path, ctx: &Path, target: &str, platform: &str) -> String {
    stdout(&run_ok(dockless(cache).arg("push").arg(ctx).args([
        "-t",
        target,
        "--insecure",
        "-q",
        "--platform",
        platform,
    ])))
}

fn raw_manifest(reg: &Registry, repo_tag: &str) -> Value {
    let out = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{repo_tag}", reg.addr())),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn config_of_layout(layout: &Path, tag: &str) -> Value {
    let out = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}:{tag}", layout.display())),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// PUTs a hand-made manifest list (a Docker list holding OCI manifests, as found in the wild).
fn put_docker_list(reg: &Registry, repo: &str, tag: &str, entries: &[(&str, &str)]) {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(arch, reference)| {
            let digest = digest_of(reference);
            let repo_tag = reference
                .split_once('/')
                .unwrap()
                .1
                .split('@')
                .next()
                .unwrap()
                .to_string();
            let raw = run_ok(
                Command::new("skopeo")
                    .args(["inspect", "--raw", "--tls-verify=false"])
                    .arg(format!("docker://{}/{repo_tag}", reg.addr())),
            );
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": raw.stdout.len(),
                "platform": {"os": "linux", "architecture": arch},
            })
        })
        .collect();
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": manifests,
    });
    let body = serde_json::to_vec(&list).unwrap();
    let out = run_ok(
        Command::new("curl")
            .args(["-sS", "-f", "-X", "PUT", "-H"])
            .arg("Content-Type: application/vnd.docker.distribution.manifest.list.v2+json")
            .arg("--data-binary")
            .arg(format!("@{}", write_temp(&body).display()))
            .arg(format!("http://{}/v2/{repo}/manifests/{tag}", reg.addr())),
    );
    assert!(out.status.success());
}

fn write_temp(bytes: &[u8]) -> PathBuf {
    let file = tempfile::NamedTempFile::new().unwrap();
    let (_, path) = file.keep().unwrap();
    fs::write(&path, bytes).unwrap();
    path
}

struct Bases {
    reg: Registry,
    _tmp: tempfile::TempDir,
    cache: PathBuf,
    work: PathBuf,
}

/// A registry holding base/busybox:1 (host platform), and for two platforms
/// base/multi:oci (OCI index, pushed by dockless) and base/multi:docker (Docker list).
fn bases() -> Bases {
    let reg = Registry::start(RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let work = tmp.path().to_path_buf();
    let addr = reg.addr();
    push_base(
        &cache,
        &base_context(&work, "amd64"),
        &format!("{addr}/base/busybox:1"),
        "linux/amd64",
    );
    let amd = push_base(
        &cache,
        &base_context(&work, "amd64"),
        &format!("{addr}/base/amd:1"),
        "linux/amd64",
    );
    let arm = push_base(
        &cache,
        &base_context(&work, "arm64"),
        &format!("{addr}/base/arm:1"),
        "linux/arm64",
    );
    // Both platforms in one repository, as a registry holds a real multi-arch image.
    for (ctx, target) in [
        (base_context(&work, "amd64"), "base/multi:amd64"),
        (base_context(&work, "arm64"), "base/multi:arm64"),
    ] {
        let platform = if target.ends_with("amd64") {
            "linux/amd64"
        } else {
            "linux/arm64"
        };
        push_base(&cache, &ctx, &format!("{addr}/{target}"), platform);
    }
    let multi_amd = format!("{addr}/base/multi:amd64@{}", digest_of(&amd));
    let multi_arm = format!("{addr}/base/multi:arm64@{}", digest_of(&arm));
    put_docker_list(
        &reg,
        "base/multi",
        "docker",
        &[("amd64", &multi_amd), ("arm64", &multi_arm)],
    );
    // The OCI index: dockless's own multi-platform push of the base.
    let index_ctx = base_context(&work, "multi");
    push_base(
        &cache,
        &index_ctx,
        &format!("{addr}/base/multi:oci"),
        "linux/amd64,linux/arm64",
    );
    Bases {
        reg,
        _tmp: tmp,
        cache,
        work,
    }
}

fn build_to_layout(b: &Bases, dockerfile: &str, extra: &[&str]) -> (PathBuf, String, Output) {
    let ctx = app_context(&b.work.join(format!("ctx-{}", rand_suffix())), dockerfile);
    let layout = b.work.join(format!("layout-{}", rand_suffix()));
    let out = dockless(&b.cache)
        .arg("build")
        .arg(&ctx)
        .args(["-t", "app:v1", "--insecure-registry", &b.reg.addr(), "-o"])
        .arg(format!("oci:{}", layout.display()))
        .args(extra)
        .output()
        .unwrap();
    (
        layout,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        out,
    )
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst).to_string()
}

#[test]
fn from_single_image_inherits_config_like_buildah_and_runs() {
    let b = bases();
    let addr = b.reg.addr();
    let dockerfile = format!(
        "FROM {addr}/base/busybox:1\nCOPY --chown=app hello.txt ./\nENV APP=1\nCMD [\"cat\", \"/srv/hello.txt\"]\n"
    );
    let (layout, line, out) = build_to_layout(&b, &dockerfile, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(line.starts_with("app:v1@sha256:"), "{line}");

    // Annotations name the base.
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: Value = serde_json::from_slice(
        &fs::read(layout.join("blobs/sha256").join(manifest_digest)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.name"],
        format!("{addr}/base/busybox:1")
    );
    assert!(
        manifest["annotations"]["org.opencontainers.image.base.digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // Field by field against buildah building the same Dockerfile from the same base.
    let ours = compared_config(&config_of_layout(&layout, "app:v1"));
    let theirs = buildah_config(&b, &dockerfile);
    assert_eq!(ours, theirs, "dockless vs buildah config");
    let config = config_of_layout(&layout, "app:v1");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        4,
        "3 base layers + 1 of ours"
    );
    assert!(config["history"].as_array().unwrap().len() >= 4);

    // The result runs: busybox from the base reads the app's own file.
    let rootfs = umoci_unpack(&layout, "app:v1", &b.work.join("bundle"));
    let meta = fs::metadata(rootfs.join("srv/hello.txt")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        1000,
        "--chown=app resolved from the base's /etc/passwd"
    );
    let printed = runc_run(&b.work.join("bundle"), "dockless-base");
    assert_eq!(printed, "hello from the app\n");
}

fn buildah_config(b: &Bases, dockerfile: &str) -> serde_json::Map<String, Value> {
    require_tool("buildah");
    let dir = b.work.join(format!("buildah-{}", rand_suffix()));
    let ctx = app_context(&dir, dockerfile);
    let mut bud = buildah(&dir);
    bud.args([
        "bud",
        "--isolation",
        "chroot",
        "--tls-verify=false",
        "--format",
        "docker",
        "-t",
        "app",
    ])
    .arg(&ctx);
    run_ok(&mut bud);
    let mut inspect = buildah(&dir);
    inspect.args(["inspect", "--type", "image", "app"]);
    let info: Value = serde_json::from_slice(&run_ok(&mut inspect).stdout).unwrap();
    let config: Value = serde_json::from_str(info["Config"].as_str().unwrap()).unwrap();
    compared_config(&config)
}

#[test]
fn platform_is_picked_from_a_docker_list_and_an_oci_index() {
    let b = bases();
    let addr = b.reg.addr();
    for tag in ["docker", "oci"] {
        let from = format!("FROM {addr}/base/multi:{tag}\nCOPY hello.txt /\n");
        // The host platform by default (the test machines are amd64).
        let (layout, _, out) = build_to_layout(&b, &from, &["--platform", "linux/amd64"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = config_of_layout(&layout, "app:v1");
        assert_eq!(config["architecture"], "amd64", "{tag}");
        let (layout, _, out) = build_to_layout(&b, &from, &["--platform", "linux/arm64"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = config_of_layout(&layout, "app:v1");
        assert_eq!(config["architecture"], "arm64", "{tag}");
        if tag == "docker" {
            assert_eq!(config["config"]["Labels"]["arch"], "arm64");
        }
    }
    let host = dockless::platform::Platform::host();
    let (layout, _, out) = build_to_layout(&b, &format!("FROM {addr}/base/multi:oci\n"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        config_of_layout(&layout, "app:v1")["architecture"],
        host.architecture.as_str()
    );
}

#[test]
fn missing_platform_tag_or_registry_fail_clearly_and_push_nothing() {
    let b = bases();
    let addr = b.reg.addr();
    let cases = [
        (
            format!("FROM {addr}/base/multi:oci\n"),
            vec!["--platform", "linux/s390x"],
            "no image for platform linux/s390x (the index offers linux/amd64, linux/arm64)",
        ),
        (
            format!("FROM {addr}/base/busybox:missing\n"),
            vec![],
            "not found",
        ),
        (
            "FROM 127.0.0.1:1/base/busybox:1\n".to_string(),
            vec![],
            "cannot connect to registry 127.0.0.1:1",
        ),
    ];
    for (dockerfile, extra, expected) in cases {
        let ctx = app_context(&b.work.join(format!("bad-{}", rand_suffix())), &dockerfile);
        let out = dockless(&b.cache)
            .arg("push")
            .arg(&ctx)
            .args(["-t", &format!("{addr}/team/bad:v1"), "--insecure"])
            .args(&extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(
            err.contains("Dockerfile:1: FROM") && err.contains(expected),
            "expected {expected:?} in {err}"
        );
        assert!(b.reg.tag_absent("team/bad:v1", None));
    }
}

#[test]
fn push_mounts_base_blobs_and_uploads_only_the_services_own() {
    let b = bases();
    let addr = b.reg.addr();
    let ctx = app_context(
        &b.work.join("mount"),
        &format!("FROM {addr}/base/busybox:1\nCOPY hello.txt /srv/\n"),
    );
    let out = run_ok(dockless(&b.cache).arg("push").arg(&ctx).args([
        "-t",
        &format!("{addr}/team/app:v1"),
        "--insecure",
        "--json",
    ]));
    let ev = json_events(&out);
    let base = raw_manifest(&b.reg, "base/busybox:1");
    let base_layers: Vec<String> = base["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let uploaded = event_digests(&ev, "blob_uploaded");
    for layer in &base_layers {
        assert!(
            !uploaded.contains(layer),
            "base layer {layer} uploaded again: {ev:?}"
        );
    }
    assert_eq!(uploaded.len(), 2, "the new layer and the config: {ev:?}");
    b.reg.verify("team/app:v1", &digest_of(&stdout(&out)), None);
}

#[test]
fn multi_platform_push_makes_an_index_and_uploads_shared_layers_once() {
    let b = bases();
    let addr = b.reg.addr();
    let ctx = app_context(
        &b.work.join("multi"),
        &format!("FROM {addr}/base/multi:oci\nCOPY hello.txt /srv/\n"),
    );
    let out = run_ok(dockless(&b.cache).arg("push").arg(&ctx).args([
        "-t",
        &format!("{addr}/team/multi:v1"),
        "--insecure",
        "--json",
        "--platform",
        "linux/amd64,linux/arm64",
    ]));
    let index = raw_manifest(&b.reg, "team/multi:v1");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let arches: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    let events = json_events(&out);
    // One event per platform manifest (put by digest), the index's last.
    let pushed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "manifest_pushed")
        .collect();
    assert_eq!(pushed.len(), 3, "{pushed:?}");
    let last = pushed[2];
    assert_eq!(last["tag"], "v1");
    assert_eq!(
        format!("{addr}/team/multi:v1@{}", last["digest"].as_str().unwrap()),
        stdout(&out)
    );
    for (e, m) in pushed[..2]
        .iter()
        .zip(index["manifests"].as_array().unwrap())
    {
        assert_eq!(e["tag"], m["digest"]);
    }
    let uploaded = event_digests(&events, "blob_uploaded");
    let mut unique = uploaded.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        uploaded.len(),
        "a blob was uploaded twice: {uploaded:?}"
    );
    // The service's layer is the same bytes on both platforms.
    let layers_of = |digest: &str| -> Vec<String> {
        raw_manifest(&b.reg, &format!("team/multi@{digest}"))["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let amd = layers_of(index["manifests"][0]["digest"].as_str().unwrap());
    let arm = layers_of(index["manifests"][1]["digest"].as_str().unwrap());
    assert_eq!(amd.last(), arm.last());
    // skopeo reads the index back and copies a platform, verifying digests.
    let dest = b.work.join("copied");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--override-arch", "arm64"])
            .arg(format!("docker://{addr}/team/multi:v1"))
            .arg(format!("oci:{}:x", dest.display())),
    );
}

#[test]
fn copy_from_an_image_applies_its_whiteouts() {
    require_tool("buildah");
    let b = bases();
    let addr = b.reg.addr();
    // A base whose upper layer deletes /etc/motd, made with buildah.
    let dir = b.work.join("wh");
    let run = |args: &[&str]| stdout(&run_ok(buildah(&dir).args(args)));
    let ctr = run(&[
        "from",
        "--tls-verify=false",
        &format!("docker://{addr}/base/busybox:1"),
    ]);
    run(&[
        "run",
        "--user",
        "root",
        "--isolation",
        "chroot",
        &ctr,
        "--",
        "/bin/busybox",
        "rm",
        "/etc/motd",
    ]);
    run(&["commit", "--format", "oci", &ctr, "whiteout"]);
    run(&[
        "push",
        "--tls-verify=false",
        "whiteout",
        &format!("docker://{addr}/base/whiteout:1"),
    ]);

    let dockerfile = format!("FROM scratch\nCOPY --from={addr}/base/whiteout:1 /etc /etc-copy\nCOPY --from={addr}/base/whiteout:1 /bin/busybox /tools/bb\n");
    let (layout, _, out) = build_to_layout(&b, &dockerfile, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = umoci_unpack(&layout, "app:v1", &b.work.join("wh-bundle"));
    assert!(rootfs.join("etc-copy/passwd").is_file());
    assert!(
        !rootfs.join("etc-copy/motd").exists(),
        "the whiteout must hide /etc/motd"
    );
    assert_eq!(
        fs::read(rootfs.join("tools/bb")).unwrap(),
        fs::read(require_tool("busybox")).unwrap()
    );
}
