//! `dockless push` and `dockless login` end to end against real
//! `docker-registry` processes on loopback, checked with skopeo.

mod common;
mod regsupport;

use common::*;
use regsupport::{Certs, Registry, RegistryCfg};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn count(events: &[serde_json::Value], kind: &str) -> usize {
    event_digests(events, kind).len()
}

fn push(cache: &Path, ctx: &Path, args: &[&str]) -> Command {
    let mut cmd = dockless(cache);
    cmd.arg("push").arg(ctx).args(args);
    cmd
}

/// A push expected to fail: its exit code and stderr, after checking that
/// nothing reached stdout.
fn failed_push(cache: &Path, source: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = push(cache, Path::new(source), args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.stdout.is_empty(), "{err}");
    (out.status.code(), err)
}

#[test]
fn insecure_push_prints_reference_skips_present_blobs_and_mounts_across_repos() {
    let reg = Registry::start(RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let cache = tmp.path().join("cache");
    let addr = reg.addr();

    let first = run_ok(&mut push(
        &cache,
        &ctx,
        &["--tag", "v1", "--registry", &addr, "--insecure", "--json"],
    ));
    let line = String::from_utf8(first.stdout.clone()).unwrap();
    assert_eq!(line.lines().count(), 1, "{line:?}");
    let (reference, digest) = line.trim().split_once('@').unwrap();
    assert_eq!(reference, format!("{addr}/hello:v1"));
    reg.verify("hello:v1", digest, None);
    let ev = json_events(&first);
    assert_eq!(count(&ev, "blob_uploaded"), 4, "config + 3 layers: {ev:?}");

    // Nothing changed: only the manifest goes out again.
    let second = run_ok(&mut push(
        &cache,
        &ctx,
        &["-t", "v1", "--registry", &addr, "--insecure", "--json"],
    ));
    let ev = json_events(&second);
    assert_eq!(
        count(&ev, "blob_uploaded") + count(&ev, "blob_mounted"),
        0,
        "{ev:?}"
    );
    assert_eq!(count(&ev, "blob_skipped"), 4);
    assert_eq!(stdout(&second), line.trim());

    // Another repository of the same registry mounts every blob.
    let other = format!("{addr}/team/other:v2");
    let third = run_ok(&mut push(
        &cache,
        &ctx,
        &["-t", &other, "--insecure", "--json"],
    ));
    let ev = json_events(&third);
    assert_eq!(count(&ev, "blob_mounted"), 4, "{ev:?}");
    assert_eq!(count(&ev, "blob_uploaded"), 0);
    reg.verify("team/other:v2", &digest_of(&stdout(&third)), None);
}

#[test]
fn registry_from_environment_and_missing_registry_is_a_usage_error() {
    let reg = Registry::start(RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = run_ok(
        push(
            &cache,
            &testdata("hello"),
            &["-t", "svc:1.0", "--insecure", "-q"],
        )
        .env("DOCKLESS_REGISTRY", reg.addr()),
    );
    assert!(stdout(&out).starts_with(&format!("{}/svc:1.0@sha256:", reg.addr())));
    assert!(
        out.stderr.is_empty(),
        "--quiet: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = push(&cache, &testdata("hello"), &["-t", "v1"])
        .env_remove("DOCKLESS_REGISTRY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no registry"));
}

#[test]
fn tls_is_verified_by_default_and_ca_cert_makes_it_work() {
    let certs = Certs::generate();
    let reg = Registry::start(RegistryCfg {
        certs: Some(&certs),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let target = format!("{}/hello:tls", reg.addr());

    let refused = push(&cache, &testdata("hello"), &["-t", &target])
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&reg.addr()) || err.contains("127.0.0.1"),
        "error names the host: {err}"
    );
    assert!(reg.tag_absent("hello:tls", None));

    let ok = run_ok(&mut push(
        &cache,
        &testdata("hello"),
        &["-t", &target, "--ca-cert", certs.ca().to_str().unwrap()],
    ));
    reg.verify("hello:tls", &digest_of(&stdout(&ok)), None);

    // A plain-HTTP registry is never used without --insecure.
    let plain = Registry::start(RegistryCfg::default());
    let out = push(
        &cache,
        &testdata("hello"),
        &["-t", &format!("{}/hello:x", plain.addr())],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(plain.tag_absent("hello:x", None));
}

#[test]
fn login_then_push_with_htpasswd_and_wrong_password_leaves_no_tag() {
    let certs = Certs::generate();
    let reg = Registry::start(RegistryCfg {
        certs: Some(&certs),
        htpasswd: Some(("alice", "s3cret-pass")),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let docker_config = tmp.path().join("docker");
    let ca = certs.ca();

    let login = |password: &str| {
        let mut child = dockless(&cache)
            .env("DOCKER_CONFIG", &docker_config)
            .args([
                "login",
                &reg.addr(),
                "-u",
                "alice",
                "--password-stdin",
                "--ca-cert",
            ])
            .arg(&ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let empty = login("");
    assert_eq!(empty.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("no password on stdin"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    let bad = login("wrong-pass");
    assert_eq!(bad.status.code(), Some(4));
    assert!(
        !docker_config.join("config.json").exists(),
        "a failed login writes nothing"
    );

    let good = login("s3cret-pass");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docker_config.join("config.json")).unwrap()).unwrap();
    assert!(config["auths"][reg.addr()]["auth"].is_string());

    let target = format!("{}/team/hello:auth", reg.addr());
    let out = run_ok(
        push(
            &cache,
            &testdata("hello"),
            &["-t", &target, "--ca-cert", ca.to_str().unwrap(), "--json"],
        )
        .env("DOCKER_CONFIG", &docker_config),
    );
    reg.verify(
        "team/hello:auth",
        &digest_of(&stdout(&out)),
        Some("alice:s3cret-pass"),
    );
    let all_output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(!all_output.contains("s3cret-pass"));

    // Credentials for a wrong password: clear error, no tag.
    let wrong = tmp.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    let auth = regsupport::basic_b64("alice", "not-it");
    std::fs::write(
        wrong.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr()),
    )
    .unwrap();
    let out = push(
        &cache,
        &testdata("hello"),
        &[
            "-t",
            &format!("{}/team/hello:bad", reg.addr()),
            "--ca-cert",
            ca.to_str().unwrap(),
        ],
    )
    .env("DOCKER_CONFIG", &wrong)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("not-it") && !err.contains(&auth),
        "credential leaked: {err}"
    );
    assert!(reg.tag_absent("team/hello:bad", Some("alice:s3cret-pass")));
}

/// `push oci:DIR[:NAME:TAG]` sends an image or index from an OCI layout
/// byte for byte: the digest is the one the build printed. A layer that no
/// longer matches its digest is refused before any tag is written.
#[test]
fn push_from_an_oci_layout_keeps_the_digest_and_refuses_a_corrupt_layer() {
    let reg = Registry::start(RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let cache = tmp.path().join("cache");
    let addr = reg.addr();
    let layout = tmp.path().join("layout");
    let build = |extra: &[&str], tag: &str| {
        digest_of(&stdout(&run_ok(
            dockless(&cache)
                .arg("build")
                .arg(&ctx)
                .args(["-t", tag, "-o"])
                .arg(format!("oci:{}", layout.display()))
                .args(extra),
        )))
    };
    let single = build(&[], "hello:v1");
    let multi = build(&["--platform", "linux/amd64,linux/arm64"], "hello:multi");

    let pushed = run_ok(&mut push(
        &cache,
        Path::new(&format!("oci:{}:hello:v1", layout.display())),
        &["--registry", &addr, "--insecure", "-q"],
    ));
    assert_eq!(stdout(&pushed), format!("{addr}/hello:v1@{single}"));
    reg.verify("hello:v1", &single, None);

    let pushed = run_ok(&mut push(
        &cache,
        Path::new(&format!("oci:{}:hello:multi", layout.display())),
        &["-t", &format!("{addr}/team/multi:2"), "--insecure", "-q"],
    ));
    assert_eq!(stdout(&pushed), format!("{addr}/team/multi:2@{multi}"));
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{addr}/team/multi:2")),
    );
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");

    // Corrupt the image's largest layer in the layout.
    let manifest = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:hello:v1", layout.display())),
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = layout
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let (code, err) = failed_push(
        &cache,
        &format!("oci:{}:hello:v1", layout.display()),
        &["-t", &format!("{addr}/broken:v1"), "--insecure", "-q"],
    );
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("does not match"), "{err}");
    assert!(reg.tag_absent("broken:v1", None));

    let (code, err) = failed_push(
        &cache,
        &format!("oci:{}:hello:v9", layout.display()),
        &["--registry", &addr, "--insecure"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no image named \"hello:v9\"") && err.contains("hello:multi"),
        "{err}"
    );
}

/// `push oci-archive:FILE` unpacks only the layout's own files and pushes
/// the image with the digest the build printed; an archive holding
/// anything else (here a `../` entry) is refused whole, writing nothing
/// outside the folder it unpacks into.
#[test]
fn push_from_an_oci_archive_and_refuse_a_hostile_one() {
    let reg = Registry::start(RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let cache = tmp.path().join("cache");
    let addr = reg.addr();
    let archive = tmp.path().join("hello.tar");
    let built = digest_of(&stdout(&run_ok(
        dockless(&cache)
            .arg("build")
            .arg(&ctx)
            .args(["-t", "hello:v3", "-o"])
            .arg(format!("oci-archive:{}", archive.display())),
    )));
    let pushed = run_ok(&mut push(
        &cache,
        Path::new(&format!("oci-archive:{}", archive.display())),
        &["--registry", &addr, "--insecure", "-q"],
    ));
    assert_eq!(stdout(&pushed), format!("{addr}/hello:v3@{built}"));
    reg.verify("hello:v3", &built, None);

    // The same archive with one more entry that climbs out.
    let hostile = tmp.path().join("work/hostile.tar");
    std::fs::create_dir_all(hostile.parent().unwrap()).unwrap();
    {
        let mut out = tar::Builder::new(std::fs::File::create(&hostile).unwrap());
        let mut src = tar::Archive::new(std::fs::File::open(&archive).unwrap());
        for entry in src.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut header = entry.header().clone();
            let path = entry.path().unwrap().into_owned();
            out.append_data(&mut header, path, &mut entry).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        // append_data refuses `..`; write the name into the header directly.
        header.as_old_mut().name[..12].copy_from_slice(b"../escaped\0\0");
        header.set_cksum();
        out.append(&header, &b"evil\n"[..]).unwrap();
        out.finish().unwrap();
    }
    let (code, err) = failed_push(
        &cache,
        &format!("oci-archive:{}", hostile.display()),
        &["-t", &format!("{addr}/hostile:v1"), "--insecure", "-q"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"../escaped\"") && err.contains("refusing"),
        "{err}"
    );
    assert!(reg.tag_absent("hostile:v1", None));
    let escaped: Vec<_> = walkdir::WalkDir::new(tmp.path())
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "escaped")
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
}
