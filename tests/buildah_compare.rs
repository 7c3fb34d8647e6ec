//! Builds the Dockerfiles in testdata/compare with dockless and with buildah
//! and checks that the unpacked root filesystems and the container configs
//! agree. buildah, umoci and skopeo must be installed: a missing tool fails.

mod common;
mod regsupport;

use common::{
    buildah, compared_config, describe_tree, require_tool, run_ok, testdata, umoci_unpack,
};
use regsupport::{Registry, RegistryCfg};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A copy of testdata/compare plus what git cannot hold: a hard-link pair,
/// an empty directory, a directory with a non-default mode and the archives ADD extracts.
fn prepare_context(tmp: &Path) -> PathBuf {
    let ctx = tmp.join("ctx");
    common::copy_tree(&testdata("compare"), &ctx);
    let links = ctx.join("links");
    std::fs::write(links.join("hard-a"), "linked twice\n").unwrap();
    std::fs::hard_link(links.join("hard-a"), links.join("hard-b")).unwrap();
    std::fs::create_dir(ctx.join("tree/empty")).unwrap();
    set_mode(&ctx.join("tree/sub"), 0o750);
    set_mode(&ctx.join("files/two.txt"), 0o600);
    let tar = archive_bytes();
    std::fs::write(ctx.join("archive.tar"), &tar).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    std::fs::write(ctx.join("archive.tar.gz"), gz.finish().unwrap()).unwrap();
    ctx
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A small tar with fixed content: a root entry, owned and odd-mode entries,
/// a symlink, a hard link and a file whose parents have no entries of their own.
fn archive_bytes() -> Vec<u8> {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let entries: &[(&str, tar::EntryType, u32, u64, u64, &str)] = &[
        ("./", Directory, 0o700, 3, 4, ""),
        ("./dir/", Directory, 0o750, 10, 20, ""),
        (
            "./dir/file.txt",
            Regular,
            0o640,
            10,
            20,
            "inside the archive\n",
        ),
        ("./dir/exec", Regular, 0o4755, 0, 0, "#!/bin/sh\n"),
        ("./dir/link", Symlink, 0o777, 10, 20, "file.txt"),
        ("./dir/hard", Link, 0o640, 10, 20, "./dir/file.txt"),
        (
            "./implicit/parent/file",
            Regular,
            0o600,
            30,
            40,
            "no parent entries\n",
        ),
    ];
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, mode, uid, gid, body) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_mtime(1_600_000_000);
        match kind {
            Symlink | Link => {
                h.set_size(0);
                builder.append_link(&mut h, name, body).unwrap();
            }
            _ => {
                h.set_size(body.len() as u64);
                builder.append_data(&mut h, name, body.as_bytes()).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

struct Built {
    tree: Vec<String>,
    config: Map<String, Value>,
    /// dockless's `NAME:TAG@DIGEST` line (empty for buildah).
    printed: String,
}

fn build_args(args: &[(&str, &str)]) -> Vec<String> {
    args.iter()
        .flat_map(|(k, v)| ["--build-arg".to_string(), format!("{k}={v}")])
        .collect()
}

fn build_dockless(
    tmp: &Path,
    ctx: &Path,
    dockerfile: &Path,
    args: &[(&str, &str)],
    flags: &[&str],
    env: &[(&str, &str)],
) -> Built {
    let layout = tmp.join("dlayout");
    let out = run_ok(
        common::dockless(&tmp.join("cache"))
            .envs(env.iter().copied())
            .arg("build")
            .arg(ctx)
            .arg("-f")
            .arg(dockerfile)
            .args(build_args(args))
            .args(flags)
            .args(["-t", "compare:test", "-o"])
            .arg(format!("oci:{}", layout.display())),
    );
    let rootfs = umoci_unpack(&layout, "compare:test", &tmp.join("dbundle"));
    let index = read_json(&layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = read_json(&blob_path(&layout, &manifest_digest));
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let config = read_json(&blob_path(&layout, &config_digest));
    Built {
        tree: describe_tree(&rootfs),
        config: compared_config(&config),
        printed: common::stdout(&out),
    }
}

fn build_buildah(
    tmp: &Path,
    ctx: &Path,
    dockerfile: &Path,
    args: &[(&str, &str)],
    flags: &[&str],
) -> Built {
    require_tool("buildah");
    let mut bud = buildah(tmp);
    bud.args([
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "-t",
        "compare",
        "-f",
    ])
    .arg(dockerfile)
    .args(build_args(args))
    .args(flags)
    .arg(ctx);
    run_ok(&mut bud);
    let layout = tmp.join("blayout");
    let mut push = buildah(tmp);
    push.args(["push", "compare"])
        .arg(format!("oci:{}:compare", layout.display()));
    run_ok(&mut push);
    let rootfs = umoci_unpack(&layout, "compare", &tmp.join("bbundle"));
    // Pushing to an OCI layout drops Healthcheck, OnBuild and Shell from the
    // config, so read buildah's own Docker-format config instead.
    let mut inspect = buildah(tmp);
    inspect.args(["inspect", "--type", "image", "compare"]);
    let out = run_ok(&mut inspect);
    let info: Value = serde_json::from_slice(&out.stdout).expect("buildah inspect JSON");
    let config: Value =
        serde_json::from_str(info["Config"].as_str().expect("inspect has Config")).unwrap();
    Built {
        tree: describe_tree(&rootfs),
        config: compared_config(&config),
        printed: String::new(),
    }
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

/// Builds `dockerfile` (in testdata/compare) both ways and fails with a
/// readable diff when the results differ.
fn compare(name: &str, dockerfile: &str, args: &[(&str, &str)]) {
    compare_except(name, dockerfile, args, &[]);
}

/// Like `compare`, but where Docker's documented behaviour differs from
/// buildah's, `docker_values` gives the value dockless must produce instead.
fn compare_except(
    name: &str,
    dockerfile: &str,
    args: &[(&str, &str)],
    docker_values: &[(&str, Value)],
) {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("compare-{name}-"))
        .tempdir()
        .unwrap();
    let ctx = prepare_context(tmp.path());
    let file = ctx.join(dockerfile);
    let dl = build_dockless(&tmp.path().join("d"), &ctx, &file, args, &[], &[]);
    let bh = build_buildah(&tmp.path().join("b"), &ctx, &file, args, &[]);
    check_same(dockerfile, &dl, &bh, docker_values);
}

/// Fails with a readable diff when the two builds differ (`docker_values`
/// as in [`compare_except`]).
fn check_same(dockerfile: &str, dl: &Built, bh: &Built, docker_values: &[(&str, Value)]) {
    require_tool("umoci");
    require_tool("buildah");

    let mut problems = Vec::new();
    let dl_lines: BTreeSet<&String> = dl.tree.iter().collect();
    let bh_lines: BTreeSet<&String> = bh.tree.iter().collect();
    let mut tree_diff = Vec::new();
    for line in bh_lines.difference(&dl_lines) {
        tree_diff.push(format!("  buildah only:  {line}"));
    }
    for line in dl_lines.difference(&bh_lines) {
        tree_diff.push(format!("  dockless only: {line}"));
    }
    if !tree_diff.is_empty() {
        tree_diff.sort_by(|a, b| a[16..].cmp(&b[16..]));
        problems.push(format!(
            "root filesystems differ:\n{}",
            tree_diff.join("\n")
        ));
    }
    for (key, buildah_value) in &bh.config {
        let expected = docker_values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or(buildah_value);
        let got = dl.config.get(key).unwrap_or(&Value::Null);
        if got != expected {
            problems.push(format!(
                "config {key} differs:\n  buildah:  {expected}\n  dockless: {got}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{dockerfile}: dockless and buildah disagree\n{}\n\nfull buildah tree:\n{}",
        problems.join("\n"),
        bh.tree.join("\n")
    );
}

#[test]
fn config_instructions_match_buildah() {
    // Docker expands EXPOSE ranges and lower-cases the protocol; buildah 1.28
    // keeps "8000-8002/tcp" and "443/TCP" as written.
    let ports = serde_json::json!({
        "80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}, "443/tcp": {}
    });
    compare_except(
        "config",
        "config.Dockerfile",
        &[("VERSION", "2.5"), ("FLAVOR", "fancy")],
        &[("ExposedPorts", ports)],
    );
}

#[test]
fn shell_forms_match_buildah() {
    compare("shell", "shell.Dockerfile", &[]);
}

#[test]
fn custom_shell_matches_buildah() {
    // SHELL applies to shell-form CMD in Docker; buildah 1.28 ignores it there.
    let cmd = serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c", "run --this | tee /log"]);
    compare_except(
        "custom-shell",
        "custom-shell.Dockerfile",
        &[],
        &[("Cmd", cmd)],
    );
}

#[test]
fn inherited_stage_config_matches_buildah() {
    compare("inherit", "inherit.Dockerfile", &[]);
}

#[test]
fn copy_matches_buildah() {
    compare("copy", "copy.Dockerfile", &[]);
}

#[test]
fn add_matches_buildah() {
    compare("add", "add.Dockerfile", &[]);
}

#[test]
fn copy_from_stage_matches_buildah() {
    compare("stages", "stages.Dockerfile", &[]);
}

/// A registry holding the busybox base, and what RUN comparisons pass to
/// each builder to reach it over plain HTTP.
struct RunBase {
    reg: Registry,
    _dir: tempfile::TempDir,
    reference: String,
}

impl RunBase {
    fn start() -> RunBase {
        let reg = Registry::start(RegistryCfg::default());
        let dir = tempfile::tempdir().unwrap();
        let reference = common::push_busybox_base(&reg.addr(), dir.path());
        RunBase {
            reg,
            _dir: dir,
            reference,
        }
    }
}

/// Builds testdata/compare/`ours` with dockless and `theirs` with buildah
/// (the same steps where buildah 1.28 lacks a form, as heredocs), FROM the
/// busybox base, and compares the results.
fn compare_run(name: &str, ours: &str, theirs: &str) {
    let base = RunBase::start();
    let addr = base.reg.addr();
    let tmp = tempfile::Builder::new()
        .prefix(&format!("compare-{name}-"))
        .tempdir()
        .unwrap();
    let ctx = prepare_context(tmp.path());
    let args = [("BASE", base.reference.as_str())];
    let flags = ["--insecure-registry", addr.as_str()];
    let dl = build_dockless(
        &tmp.path().join("d"),
        &ctx,
        &ctx.join(ours),
        &args,
        &flags,
        &[],
    );
    let bh = build_buildah(
        &tmp.path().join("b"),
        &ctx,
        &ctx.join(theirs),
        &args,
        &["--tls-verify=false"],
    );
    check_same(ours, &dl, &bh, &[]);
    // Without overlayfs (a copied root and a before/after walk) the image
    // is the same, byte for byte.
    let copied = build_dockless(
        &tmp.path().join("c"),
        &ctx,
        &ctx.join(ours),
        &args,
        &flags,
        &[(dockless::build::ROOT_ENV, "copy")],
    );
    assert_eq!(
        copied.printed, dl.printed,
        "{ours}: copied root vs overlayfs"
    );
}

#[test]
fn run_file_changes_match_buildah() {
    compare_run("run-files", "run-files.Dockerfile", "run-files.Dockerfile");
}

#[test]
fn run_user_workdir_env_shell_and_exec_form_match_buildah() {
    compare_run("run-user", "run-user.Dockerfile", "run-user.Dockerfile");
}

#[test]
fn run_heredocs_match_the_same_steps_in_buildah() {
    // buildah 1.28 reads no heredocs: its file runs the same commands inline.
    compare_run(
        "run-heredoc",
        "run-heredoc.Dockerfile",
        "run-heredoc.buildah.Dockerfile",
    );
}
