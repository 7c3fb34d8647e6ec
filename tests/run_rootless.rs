//! RUN without root: the same build as an unprivileged user made by the
//! test (with a subordinate ID range, and without one) gives the image,
//! digest for digest, that root gets with SOURCE_DATE_EPOCH set; where no
//! user namespace can be made, `dockless build` says why and how to fix it.

mod common;
mod regsupport;
mod run_support;
mod sandbox_support;

use common::*;
use run_support::*;
use sandbox_support::{without_user_namespaces, TestUser};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

const EPOCH: &str = "1700000000";

/// Steps any mapping can run: files, a symlink, a deletion, a cache mount.
const COMMON_STEPS: &str = "FROM {BASE}\n\
    COPY app.txt /app/\n\
    RUN mkdir -p /data && cat /app/app.txt > /data/file && ln -s file /data/link && rm /bin/true\n\
    RUN --mount=type=cache,target=/c echo cached > /c/x && cp /c/x /data/from-cache\n";

/// Steps that need IDs besides container root.
const CHOWN_STEPS: &str =
    "RUN mkdir /srv && chown 1234:4321 /srv && touch /srv/f && chown 999:50 /srv/f\n";

/// A context in `dir` that `uid` owns and can read.
fn owned_context(dir: &Path, dockerfile: &str, uid: u32, gid: u32) {
    write_context(dir, dockerfile, &[("app.txt", b"rootless\n")]);
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.unwrap();
        std::os::unix::fs::chown(entry.path(), Some(uid), Some(gid)).unwrap();
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `dockless build` of `ctx` through `wrapper` (a command line the
/// dockless command is appended to), with `cache` and SOURCE_DATE_EPOCH.
fn build_as(
    wrapper: &mut Command,
    f: &Fixture,
    ctx: &Path,
    cache: &Path,
    out: &Path,
    extra: &[&str],
) -> Output {
    wrapper
        .arg(env!("CARGO_BIN_EXE_dockless"))
        .arg("build")
        .arg(ctx)
        .args(["-t", "run:test", "--insecure-registry", &f.reg.addr(), "-o"])
        .arg(format!("oci:{}", out.display()))
        .args(extra)
        .env("DOCKLESS_CACHE_DIR", cache)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap()
}

/// The digest root gets for `dockerfile`.
fn as_root(f: &Fixture, name: &str, dockerfile: &str) -> String {
    let ctx = f.path(name);
    owned_context(&ctx, &dockerfile.replace("{BASE}", &f.base), 0, 0);
    let out = build_as(
        &mut Command::new("env"),
        f,
        &ctx,
        &f.path("cache"),
        &f.path(&format!("{name}-out")),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// The digest `user` gets for `dockerfile`, and its stderr.
fn as_user(f: &Fixture, user: &TestUser, dockerfile: &str) -> (String, String) {
    let ctx = user.home.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    owned_context(
        &ctx,
        &dockerfile.replace("{BASE}", &f.base),
        user.uid,
        user.gid,
    );
    let cache = user.home.join("cache");
    let out = build_as(
        &mut user.command(),
        f,
        &ctx,
        &cache,
        &user.home.join("out"),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (stdout(&out), stderr)
}

#[test]
fn a_user_with_a_subordinate_range_builds_the_image_root_builds() {
    let f = Fixture::new();
    let dockerfile = format!("{COMMON_STEPS}{CHOWN_STEPS}");
    let root = as_root(&f, "root", &dockerfile);
    let user = TestUser::create("dlrun-range", Some(500_000));
    let (digest, stderr) = as_user(&f, &user, &dockerfile);
    assert_eq!(digest, root, "{stderr}");
    assert!(!stderr.contains("usermod --add-subuids"), "{stderr}");
}

#[test]
fn a_user_without_a_range_builds_the_image_root_builds_and_is_told_what_breaks() {
    let f = Fixture::new();
    let root = as_root(&f, "root", COMMON_STEPS);
    let user = TestUser::create("dlrun-single", None);
    let (digest, stderr) = as_user(&f, &user, COMMON_STEPS);
    assert_eq!(digest, root, "{stderr}");
    assert!(stderr.contains("usermod --add-subuids"), "{stderr}");
}

#[test]
fn no_user_namespaces_fails_the_build_before_a_step_runs_naming_cause_and_fix() {
    let f = Fixture::new();
    let ctx = f.path("ctx");
    owned_context(&ctx, &COMMON_STEPS.replace("{BASE}", &f.base), 0, 0);
    let cache = f.path("ns-cache");
    let out = build_as(
        &mut without_user_namespaces(),
        &f,
        &ctx,
        &cache,
        &f.path("out"),
        &["--isolation", "userns"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("user.max_user_namespaces is 0"), "{stderr}");
    assert!(
        stderr.contains("sysctl -w user.max_user_namespaces="),
        "{stderr}"
    );
    // The progress line `#3 [3/4] RUN ...` says the step is next, as buildx
    // does before an error; the step's own header (a line of its own) is
    // printed only once its sandbox is up.
    assert!(
        !stderr.lines().any(|l| l.starts_with("[3/4] RUN")),
        "a step started: {stderr}"
    );
    assert!(!f.path("out/index.json").exists(), "an image was written");
    // Root there (as in a throwaway container) gets a chroot instead, with
    // a warning, and the same image.
    let root = as_root(&f, "root", COMMON_STEPS);
    let out = build_as(
        &mut without_user_namespaces(),
        &f,
        &ctx,
        &cache,
        &f.path("out"),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("chroot"), "{stderr}");
    assert_eq!(stdout(&out), root, "{stderr}");
}
