//! Builds the Dockerfiles in testdata/compare with dockless and with buildah
//! and checks that the unpacked root filesystems and the container configs
//! agree. buildah, umoci and skopeo must be installed: a missing tool fails.

mod common;
mod regsupport;

use common::{
    buildah, compared_config, describe_tree, layout_config, require_tool, run_ok, tar_of, testdata,
    umoci_unpack, Member,
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
    for format in ["gz", "bz2", "xz", "zst"] {
        let packed = common::compress(format, &tar);
        std::fs::write(ctx.join(format!("archive.tar.{format}")), packed).unwrap();
        let notes = common::compress(format, b"notes, not a tar\n");
        std::fs::write(ctx.join(format!("notes.txt.{format}")), notes).unwrap();
    }
    std::fs::write(ctx.join("special.tar"), tar_of(&[Member::fifo("tpipe")])).unwrap();
    std::fs::write(ctx.join("evil.tar"), evil_tar()).unwrap();
    std::fs::write(
        ctx.join("dirfile.tar"),
        tar_of(&[Member::file("dir", "a file\n")]),
    )
    .unwrap();
    std::fs::create_dir(ctx.join("special")).unwrap();
    let pipe = ctx.join("special/pipe");
    run_ok(std::process::Command::new("mkfifo").arg(&pipe));
    set_mode(&pipe, 0o640);
    ctx
}

/// Names that climb out or are absolute, and a hard link to one of them:
/// BuildKit and buildah both extract them inside the destination.
fn evil_tar() -> Vec<u8> {
    tar_of(&[
        Member::file("../up.txt", "up\n"),
        Member::file("/abs.txt", "abs\n"),
        Member::file("a/../../up2.txt", "up2\n"),
        Member::hard_link("hl", "../../abs.txt"),
    ])
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

/// A build's result, or its error output.
type Outcome = Result<Built, String>;

fn build_dockless(
    tmp: &Path,
    ctx: &Path,
    dockerfile: &Path,
    args: &[(&str, &str)],
    flags: &[&str],
    env: &[(&str, &str)],
) -> Outcome {
    let layout = tmp.join("dlayout");
    let out = common::dockless(&tmp.join("cache"))
        .envs(env.iter().copied())
        .arg("build")
        .arg(ctx)
        .arg("-f")
        .arg(dockerfile)
        .args(build_args(args))
        .args(flags)
        .args(["-t", "compare:test", "-o"])
        .arg(format!("oci:{}", layout.display()))
        .output()
        .expect("run dockless");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let rootfs = umoci_unpack(&layout, "compare:test", &tmp.join("dbundle"));
    let config = layout_config(&layout);
    Ok(Built {
        tree: describe_tree(&rootfs),
        config: compared_config(&config),
        printed: common::stdout(&out),
    })
}

fn build_buildah(
    tmp: &Path,
    ctx: &Path,
    dockerfile: &Path,
    args: &[(&str, &str)],
    flags: &[&str],
) -> Outcome {
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
    let out = bud.output().expect("run buildah");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
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
    Ok(Built {
        tree: describe_tree(&rootfs),
        config: compared_config(&config),
        printed: String::new(),
    })
}

/// What BuildKit gives where buildah 1.28 differs.
#[derive(Default)]
struct BuildKit<'a> {
    /// Config fields.
    config: &'a [(&'a str, Value)],
    /// (path, field, value): `mode` or `owner` of a path in the tree.
    tree: &'a [(&'a str, &'a str, &'a str)],
    /// Paths buildah leaves that BuildKit does not.
    absent: &'a [&'a str],
}

impl BuildKit<'_> {
    /// buildah's tree line for a path, with BuildKit's fields where they differ.
    fn line(&self, line: &str) -> String {
        let mut line = line.to_string();
        for (path, field, value) in self.tree {
            if line.starts_with(&format!("{path} ")) {
                let prefix = format!("{field}=");
                line = line
                    .split(' ')
                    .map(|t| match t.starts_with(&prefix) {
                        true => format!("{prefix}{value}"),
                        false => t.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
            }
        }
        line
    }
}

/// Builds `dockerfile` (in testdata/compare) both ways and fails with a
/// readable diff when the results differ.
fn compare(name: &str, dockerfile: &str, args: &[(&str, &str)]) {
    compare_except(name, dockerfile, args, &BuildKit::default());
}

/// Like `compare`, but where BuildKit's behaviour differs from buildah's,
/// `buildkit` gives what dockless must produce instead.
fn compare_except(name: &str, dockerfile: &str, args: &[(&str, &str)], buildkit: &BuildKit) {
    let tmp = temp(name);
    let ctx = prepare_context(tmp.path());
    compare_in(tmp.path(), &ctx, dockerfile, args, buildkit);
}

fn temp(name: &str) -> tempfile::TempDir {
    require_tool("umoci");
    require_tool("buildah");
    tempfile::Builder::new()
        .prefix(&format!("compare-{name}-"))
        .tempdir()
        .unwrap()
}

/// Builds a Dockerfile given as text, in a context of `files`, both ways.
fn compare_inline(name: &str, dockerfile: &str, files: &[(&str, &[u8])], buildkit: &BuildKit) {
    let tmp = temp(name);
    let ctx = tmp.path().join("ctx");
    common::write_context(&ctx, dockerfile, files);
    compare_in(tmp.path(), &ctx, "Dockerfile", &[], buildkit);
}

/// Both builds of an inline Dockerfile fail; dockless says `message`
/// (BuildKit's words, where buildah's differ).
fn compare_failure(name: &str, dockerfile: &str, message: &str) {
    let tmp = temp(name);
    let ctx = tmp.path().join("ctx");
    common::write_context(&ctx, dockerfile, &[]);
    let file = ctx.join("Dockerfile");
    let dl = build_dockless(&tmp.path().join("d"), &ctx, &file, &[], &[], &[]);
    let bh = build_buildah(&tmp.path().join("b"), &ctx, &file, &[], &[]);
    assert!(bh.is_err(), "buildah accepted {dockerfile:?}");
    match dl {
        Ok(_) => panic!(
            "dockless accepted {dockerfile:?}; buildah: {}",
            bh.err().unwrap_or_default()
        ),
        Err(e) => assert!(e.contains(message), "{dockerfile:?}: {e}"),
    }
}

fn compare_in(
    tmp: &Path,
    ctx: &Path,
    dockerfile: &str,
    args: &[(&str, &str)],
    buildkit: &BuildKit,
) {
    let file = ctx.join(dockerfile);
    let bh = build_buildah(&tmp.join("b"), ctx, &file, args, &[])
        .unwrap_or_else(|e| panic!("buildah failed on {dockerfile}: {e}"));
    let dl = build_dockless(&tmp.join("d"), ctx, &file, args, &[], &[])
        .unwrap_or_else(|e| panic!("dockless failed on {dockerfile}: {e}"));
    check_same(dockerfile, &dl, &bh, buildkit);
}

/// Fails with a readable diff when the two builds differ (`buildkit` as
/// in [`compare_except`]).
fn check_same(dockerfile: &str, dl: &Built, bh: &Built, buildkit: &BuildKit) {
    let mut problems = Vec::new();
    let expected: Vec<String> = bh
        .tree
        .iter()
        .filter(|l| {
            !buildkit
                .absent
                .iter()
                .any(|p| l.starts_with(&format!("{p} ")))
        })
        .map(|l| buildkit.line(l))
        .collect();
    let dl_lines: BTreeSet<&String> = dl.tree.iter().collect();
    let bh_lines: BTreeSet<&String> = expected.iter().collect();
    let mut tree_diff = Vec::new();
    for line in bh_lines.difference(&dl_lines) {
        tree_diff.push(format!("  expected only: {line}"));
    }
    for line in dl_lines.difference(&bh_lines) {
        tree_diff.push(format!("  dockless only: {line}"));
    }
    if !tree_diff.is_empty() {
        tree_diff.sort_by(|a, b| a[16..].cmp(&b[16..]));
        problems.push(format!(
            "root filesystems differ (expected: buildah's, with BuildKit's values where they differ):\n{}",
            tree_diff.join("\n")
        ));
    }
    for (key, buildah_value) in &bh.config {
        let expected = buildkit
            .config
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or(buildah_value);
        let got = dl.config.get(key).unwrap_or(&Value::Null);
        if got != expected {
            problems.push(format!(
                "config {key} differs:\n  expected: {expected}\n  dockless: {got}"
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
        &BuildKit {
            config: &[("ExposedPorts", ports)],
            ..Default::default()
        },
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
        &BuildKit {
            config: &[("Cmd", cmd)],
            ..Default::default()
        },
    );
}

#[test]
fn inherited_stage_config_matches_buildah() {
    compare("inherit", "inherit.Dockerfile", &[]);
}

/// Folders COPY makes for its destination take --chmod (fsutil 183e7fb,
/// BuildKit v0.21.0); buildah 1.28 makes them 0755.
#[test]
fn copy_matches_buildah() {
    compare_except(
        "copy",
        "copy.Dockerfile",
        &[],
        &BuildKit {
            tree: &[("modes", "mode", "600"), ("modes/tree", "mode", "750")],
            ..Default::default()
        },
    );
}

/// Where BuildKit extracts archives differently from buildah 1.28
/// (go-archive `Unpack` via BuildKit's `solver/llbsolver/file/unpack.go`):
/// the archive's `./` entry (0700 3:4 here) leaves the destination as
/// made (0755, the --chown owner); with `ADD --chown` every entry gets the
/// owner (BuildKit v0.23.0) and implied folders stay root's. Until issue 15
/// this test expected buildah's values.
#[test]
fn add_matches_buildah() {
    let mut tree: Vec<(&str, &str, &str)> = Vec::new();
    for dest in ["x", "y", "chmodded", "existing", "compressed"] {
        tree.extend([(dest, "mode", "755"), (dest, "owner", "0:0")]);
    }
    tree.extend([("owned", "mode", "755"), ("owned", "owner", "5:6")]);
    // A plain file's new folder takes --chmod (fsutil 183e7fb, BuildKit v0.21.0).
    tree.push(("owned-plain", "mode", "600"));
    let entries = ["dir", "dir/file.txt", "dir/exec", "dir/link", "dir/hard"];
    let owned: Vec<String> = entries
        .iter()
        .chain(&["implicit/parent/file"])
        .map(|e| format!("owned/{e}"))
        .collect();
    tree.extend(owned.iter().map(|p| (p.as_str(), "owner", "5:6")));
    for implied in ["owned/implicit", "owned/implicit/parent"] {
        tree.push((implied, "owner", "0:0"));
    }
    compare_except(
        "add",
        "add.Dockerfile",
        &[],
        &BuildKit {
            tree: &tree,
            ..Default::default()
        },
    );
}

/// `COPY --chmod=700 files/one.txt /out/bin/tool` makes /out/bin 0700 in
/// BuildKit (v0.21.0, fsutil 183e7fb); buildah 1.28 makes it 0755.
#[test]
fn copy_from_stage_matches_buildah() {
    compare_except(
        "stages",
        "stages.Dockerfile",
        &[],
        &BuildKit {
            tree: &[("app/bin", "mode", "700"), ("owned/bin", "mode", "700")],
            ..Default::default()
        },
    );
}

/// `ENV a=new b=$a` expands every pair before setting any (BuildKit's
/// `dispatch` in `dockerfile2llb/convert.go` expands the command, then
/// `dispatchEnv` applies it), names included.
#[test]
fn env_pairs_expand_before_any_is_set_as_buildah() {
    let dockerfile = "FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV K=name\nENV $K=v\n";
    compare_inline("env", dockerfile, &[], &BuildKit::default());
}

/// Each parsed word is one volume, whatever its expansion holds (BuildKit
/// `instructions/commands.go` `VolumeCommand.Expand`, `parser/line_parsers.go`).
#[test]
fn volume_words_are_not_split_after_expansion_as_buildah() {
    // buildah 1.28 makes a last VOLUME's folders in the image; BuildKit
    // never does, so the Dockerfile does not end with one.
    let dockerfile = "FROM scratch\nVOLUME [\"/data\", \"/var/log app\"]\nENV D=\"/x y\"\nVOLUME $D /z\nLABEL end=1\n";
    compare_inline("volume", dockerfile, &[], &BuildKit::default());
}

/// STOPSIGNAL as BuildKit's `dispatchStopSignal` checks it with moby/sys
/// `signal.ParseSignal` and stores it as written.
#[test]
fn stopsignal_matches_buildah() {
    for (i, signal) in ["sigquit", "SIGRTMAX-2", "sigrtmin+1", "65", "-1", "+9"]
        .iter()
        .enumerate()
    {
        let dockerfile = format!("FROM scratch\nSTOPSIGNAL {signal}\n");
        compare_inline(
            &format!("signal{i}"),
            &dockerfile,
            &[],
            &BuildKit::default(),
        );
    }
    let dockerfile = "FROM scratch\nARG S=sigint\nSTOPSIGNAL $S\n";
    compare_inline("signal-arg", dockerfile, &[], &BuildKit::default());
    for (i, signal) in ["RTMIN+16", "0", "SIGFOO", "SIGSIGKILL", "SIGTERM foo"]
        .iter()
        .enumerate()
    {
        let dockerfile = format!("FROM scratch\nSTOPSIGNAL {signal}\n");
        let message = format!("Dockerfile:2: invalid signal: {signal}");
        compare_failure(&format!("badsignal{i}"), &dockerfile, &message);
    }
}

/// An absolute WORKDIR is kept as written, a relative one joined and
/// cleaned (BuildKit `util/system/path.go` `NormalizePath`); the folders
/// made are the cleaned path.
#[test]
fn workdir_matches_buildah() {
    for (i, dirs) in [
        "WORKDIR /a/b/",
        "WORKDIR /x/../y/\nWORKDIR c/",
        "WORKDIR //srv//app/",
        "WORKDIR rel/./x/",
    ]
    .iter()
    .enumerate()
    {
        let dockerfile = format!("FROM scratch\n{dirs}\n");
        compare_inline(
            &format!("workdir{i}"),
            &dockerfile,
            &[],
            &BuildKit::default(),
        );
    }
}

/// Only lower-case `scratch` is the empty image (BuildKit's
/// `emptyImageName`); `SCRATCH` is refused as an image name.
#[test]
fn upper_case_scratch_is_an_image_name_as_in_buildah() {
    compare_failure("scratch", "FROM SCRATCH\n", "lowercase");
}

/// A destination that is a link to a folder gets the file inside it
/// (fsutil `copy.go` `Copy` resolves it with continuity's `RootPath`).
#[test]
fn copy_through_a_link_to_a_folder_as_buildah() {
    let links = tar_of(&[Member::dir("tdir"), Member::symlink("l_dir", "/tdir")]);
    let dockerfile = "FROM scratch\nADD links.tar /\nCOPY new.txt /l_dir\n";
    let files: &[(&str, &[u8])] = &[("links.tar", &links), ("new.txt", b"new\n")];
    compare_inline("link-dir", dockerfile, files, &BuildKit::default());
}

/// `ADD <url>`: the file is 0600 and root's, named after the decoded URL
/// path, or the destination itself (BuildKit `source/http/source.go`).
#[test]
fn add_url_matches_buildah() {
    let server = common::http::FileServer::start(None);
    server.put("/file.txt", common::http::Reply::ok(b"hello\n"));
    server.put("/a%20b.txt", common::http::Reply::ok(b"spaced\n"));
    let dockerfile = format!(
        "FROM scratch\nADD {0}/file.txt?q=1 /u/\nADD {0}/file.txt /u2\nADD {0}/a%20b.txt /u4/\n",
        server.url("")
    );
    compare_inline("add-url", &dockerfile, &[], &BuildKit::default());
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
    compare_run_with(name, ours, theirs, &[], &BuildKit::default());
}

/// [`compare_run`] with flags both builders take (as `--secret`), and
/// BuildKit's results where buildah's differ.
fn compare_run_with(name: &str, ours: &str, theirs: &str, both: &[&str], buildkit: &BuildKit) {
    let base = RunBase::start();
    let addr = base.reg.addr();
    let tmp = temp(name);
    let ctx = prepare_context(tmp.path());
    let args = [("BASE", base.reference.as_str())];
    let mut flags = vec!["--insecure-registry", addr.as_str()];
    flags.extend(both);
    let built = |dir: &str, env: &[(&str, &str)]| {
        build_dockless(
            &tmp.path().join(dir),
            &ctx,
            &ctx.join(ours),
            &args,
            &flags,
            env,
        )
        .unwrap_or_else(|e| panic!("dockless failed on {ours}: {e}"))
    };
    let dl = built("d", &[]);
    let bh = build_buildah(
        &tmp.path().join("b"),
        &ctx,
        &ctx.join(theirs),
        &args,
        &[&["--tls-verify=false"], both].concat(),
    )
    .unwrap_or_else(|e| panic!("buildah failed on {theirs}: {e}"));
    check_same(ours, &dl, &bh, buildkit);
    // Without overlayfs (a copied root and a before/after walk) the image
    // is the same, byte for byte.
    let copied = built("c", &[(dockless::build::ROOT_ENV, "copy")]);
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

#[test]
fn run_mounts_match_buildah() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("tok");
    std::fs::write(&secret, "twelve bytes").unwrap();
    let flag = format!("id=tok,src={}", secret.display());
    // buildah 1.28 leaves the folders it made for mount targets in the
    // image; BuildKit removes them (moby/buildkit#3307), as dockless does.
    let buildkit = BuildKit {
        absent: &["mnt", "run/secrets", "var/cache"],
        ..BuildKit::default()
    };
    compare_run_with(
        "run-mounts",
        "run-mounts.Dockerfile",
        "run-mounts.Dockerfile",
        &["--secret", &flag],
        &buildkit,
    );
}
