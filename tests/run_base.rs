//! What a base image brings to RUN: its ONBUILD triggers run right after
//! FROM (COPY and RUN too; chained ONBUILD and FROM refused as docker
//! refuses them), and a RUN for a platform this host cannot execute fails
//! before anything runs, naming the fix.

mod common;
mod regsupport;
mod run_support;

use common::*;
use run_support::*;
use sha2::{Digest as _, Sha256};
use std::fs;
use std::path::Path;

/// Writes `bytes` as a blob of `layout`; its descriptor fields.
fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    fs::write(blob_path(layout, &digest), bytes).unwrap();
    (digest, bytes.len())
}

/// Gives the layout's image the config `edit` makes (a new config blob,
/// manifest and index entry), as another tool could have built it.
fn edit_config(layout: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut index = read_json(&layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest = read_json(&blob_path(layout, &manifest_digest));
    let mut config = layout_config(layout);
    edit(&mut config);
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&manifest).unwrap());
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// Pushes an OCI layout to the fixture's registry as `repo:1`.
fn push_layout(f: &Fixture, layout: &str, repo: &str) -> String {
    let reference = format!("{}/{repo}:1", f.reg.addr());
    run_ok(
        dockless(&f.path("push-cache"))
            .arg("push")
            .arg(format!("oci:{}", f.path(layout).display()))
            .args(["-t", &reference, "--insecure", "-q"]),
    );
    reference
}

#[test]
fn a_bases_onbuild_copy_and_run_happen_right_after_from() {
    let f = Fixture::new();
    let base = f.context(
        "onbuild-base",
        "FROM {BASE}\n\
         ONBUILD COPY app.txt /app/\n\
         ONBUILD RUN cat /app/app.txt > /app/seen && echo trigger-ran\n\
         LABEL kind=onbuild-base\n",
        &[],
    );
    f.build_ok(&base, "base-layout", &[]);
    let reference = push_layout(&f, "base-layout", "onbuild/base");
    let child = f.path("child");
    write_context(
        &child,
        &format!("FROM {reference}\nRUN cat /app/seen > /child\n"),
        &[("app.txt", b"child-app\n")],
    );
    let (_, err) = f.build_ok(&child, "layout", &[]);
    assert!(err.contains("trigger-ran"), "{err}");
    let rootfs = f.unpack("layout");
    assert_eq!(
        fs::read_to_string(rootfs.join("child")).unwrap(),
        "child-app\n"
    );
    let config = layout_config(&f.path("layout"));
    let on_build = &config["config"]["OnBuild"];
    assert!(
        on_build.is_null() || on_build.as_array().is_some_and(|a| a.is_empty()),
        "triggers are not passed on: {on_build}"
    );
}

#[test]
fn chained_onbuild_and_from_triggers_are_refused_naming_the_from_line() {
    let f = Fixture::new();
    let base = f.context("plain-base", "FROM {BASE}\nONBUILD RUN true\n", &[]);
    f.build_ok(&base, "base-layout", &[]);
    for (trigger, message) in [
        (
            "ONBUILD RUN echo nested",
            "chaining ONBUILD via ONBUILD ONBUILD is not allowed",
        ),
        ("FROM busybox", "FROM is not allowed as an ONBUILD trigger"),
    ] {
        let layout = f.path("base-layout");
        let copy = f.path("edited-layout");
        let _ = fs::remove_dir_all(&copy);
        copy_tree(&layout, &copy);
        edit_config(&copy, |c| {
            c["config"]["OnBuild"] = serde_json::json!([trigger])
        });
        let reference = push_layout(&f, "edited-layout", "onbuild/edited");
        let child = f.path("refused");
        write_context(
            &child,
            &format!("\nFROM {reference}\nRUN echo must-not-run\n"),
            &[],
        );
        let out = f.build(&child, "layout", &["--no-cache"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains(&format!(
                ":2: the base image's ONBUILD trigger {trigger:?}: {message}"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("must-not-run"), "{stderr}");
    }
}

#[test]
fn a_run_for_a_platform_the_host_cannot_execute_fails_before_running() {
    let host = dockless::platform::Platform::host();
    let foreign = if host.architecture == "s390x" {
        "arm64"
    } else {
        "s390x"
    };
    let binfmt = fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|d| d.count())
        .unwrap_or(0);
    if binfmt > 2 {
        eprintln!("binfmt_misc handlers are registered here; the refusal may not apply");
    }
    let f = Fixture::new();
    // An image for the foreign platform: only its config says so, since
    // nothing in it runs.
    let base = f.context("foreign-base", "FROM {BASE}\nLABEL x=1\n", &[]);
    let platform = format!("linux/{foreign}");
    f.build_ok(&base, "base-layout", &[]);
    edit_config(&f.path("base-layout"), |c| {
        c["architecture"] = foreign.into()
    });
    let reference = push_layout(&f, "base-layout", "foreign/base");
    let child = f.path("foreign");
    write_context(
        &child,
        &format!("FROM {reference}\nRUN echo must-not-run > /x\n"),
        &[],
    );
    let out = f.build(&child, "layout", &["--platform", &platform]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if binfmt > 2 && out.status.success() {
        return;
    }
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let host = format!("{}/{}", host.os, host.architecture);
    assert!(
        stderr.contains(&format!(
            ":2: RUN echo must-not-run > /x: cannot run {platform} binaries on this {host} host"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("qemu-user-static"), "{stderr}");
    // `#2 [2/2] RUN` is the progress line; the step's own header (a line of
    // its own) would mean it started.
    assert!(
        !stderr.lines().any(|l| l.starts_with("[2/2] RUN")),
        "the step did not start: {stderr}"
    );
}
