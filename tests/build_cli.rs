//! `dockless build` end to end: stdout contract, outputs read back by skopeo,
//! reproducibility, clear errors with nothing written, and rootless builds.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

fn is_reference_line(line: &str, name: &str) -> bool {
    let Some(hex) = line.strip_prefix(&format!("{name}@sha256:")) else {
        return false;
    };
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn skopeo_digest(transport_ref: &str) -> String {
    require_tool("skopeo");
    let out =
        run_ok(Command::new("skopeo").args(["inspect", "--format", "{{.Digest}}", transport_ref]));
    stdout(&out)
}

#[test]
fn default_build_writes_oci_layout_in_cwd_and_prints_one_reference_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_ok(
        dockless(&tmp.path().join("cache"))
            .current_dir(tmp.path())
            .args([
                "build",
                testdata("hello").to_str().unwrap(),
                "-t",
                "hello:v1",
            ]),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "stdout must be exactly one line: {text:?}"
    );
    let line = text.trim_end();
    assert!(is_reference_line(line, "hello:v1"), "{line:?}");
    let layout = tmp.path().join("oci-layout");
    assert!(layout.join("oci-layout").is_file());
    let digest = skopeo_digest(&format!("oci:{}:hello:v1", layout.display()));
    assert_eq!(digest, digest_of(line));
    // Only what the image-layout spec names, the SBOM and provenance included.
    let mut names: Vec<String> = fs::read_dir(&layout)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["blobs", "index.json", "oci-layout"]);
}

#[test]
fn name_defaults_to_the_context_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_ok(
        dockless(&tmp.path().join("cache"))
            .current_dir(tmp.path())
            .args(["build", testdata("hello").to_str().unwrap()]),
    );
    assert!(
        is_reference_line(&stdout(&out), "hello:latest"),
        "{}",
        stdout(&out)
    );
}

fn build_digest(ctx: &Path, cache: &Path, extra: &[&str], envs: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = dockless(cache);
    cmd.current_dir(tmp.path())
        .arg("build")
        .arg(ctx)
        .args(["-t", "repro:v1"])
        .args(extra);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    digest_of(&stdout(&run_ok(&mut cmd)))
}

#[test]
fn same_inputs_give_the_same_digest_after_touch_and_in_a_new_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let first = build_digest(&ctx, &tmp.path().join("c1"), &[], &[]);
    // A new mtime on every file and a fresh cache must not matter.
    run_ok(Command::new("find").arg(&ctx).args([
        "-exec",
        "touch",
        "-d",
        "2030-01-02 03:04:05",
        "{}",
        "+",
    ]));
    let second = build_digest(&ctx, &tmp.path().join("c2"), &[], &[]);
    assert_eq!(first, second);
    // A copy elsewhere is the same context.
    let moved = tmp.path().join("elsewhere");
    fs::create_dir(&moved).unwrap();
    copy_tree(&ctx, &moved.join("hello"));
    assert_eq!(
        first,
        build_digest(&moved.join("hello"), &tmp.path().join("c3"), &[], &[])
    );
}

#[test]
fn source_date_epoch_sets_timestamps_and_changes_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let plain = build_digest(&testdata("hello"), &cache, &[], &[]);
    let dated = build_digest(
        &testdata("hello"),
        &cache,
        &[],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_ne!(plain, dated);
    let again = build_digest(
        &testdata("hello"),
        &cache,
        &[],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(dated, again);

    let layout = tmp.path().join("lay");
    run_ok(
        dockless(&cache)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "build",
                testdata("hello").to_str().unwrap(),
                "-t",
                "hello:v1",
                "-o",
            ])
            .arg(format!("oci:{}", layout.display())),
    );
    let out = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}:hello:v1", layout.display())),
    );
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
}

#[test]
fn build_args_labels_and_gzip_level_reach_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let layout = tmp.path().join("lay");
    run_ok(
        dockless(&cache)
            .args([
                "build",
                testdata("hello").to_str().unwrap(),
                "-t",
                "hello:args",
            ])
            .args(["--build-arg", "GREETING=2", "--label", "team=core"])
            .arg("-o")
            .arg(format!("oci:{}", layout.display())),
    );
    let out = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}:hello:args", layout.display())),
    );
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["config"]["Labels"]["team"], "core");
    let env = config["config"]["Env"].as_array().unwrap();
    assert!(env.iter().any(|e| e == "GREETING=2"), "{env:?}");
    assert_eq!(config["config"]["WorkingDir"], "/app");

    let level1 = build_digest(&testdata("hello"), &cache, &["--gzip-level", "1"], &[]);
    let level9 = build_digest(&testdata("hello"), &cache, &["--gzip-level", "9"], &[]);
    assert_ne!(level1, level9);
}

#[test]
fn archives_are_read_by_skopeo_with_the_same_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let cache = tmp.path().join("cache");
    let oci_archive = tmp.path().join("hello-oci.tar");
    let docker_archive = tmp.path().join("hello-docker.tar");
    let a = run_ok(
        dockless(&cache)
            .arg("build")
            .arg(&ctx)
            .args(["-t", "hello:v1", "-o"])
            .arg(format!("oci-archive:{}", oci_archive.display())),
    );
    let digest = digest_of(&stdout(&a));
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}", oci_archive.display())),
        digest
    );

    run_ok(
        dockless(&cache)
            .arg("build")
            .arg(&ctx)
            .args(["-t", "hello:v1", "-o"])
            .arg(format!("docker-archive:{}", docker_archive.display())),
    );
    // skopeo verifies every layer's diff_id while copying out of the archive.
    let copied = tmp.path().join("copied");
    run_ok(
        Command::new("skopeo")
            .arg("copy")
            .arg(format!("docker-archive:{}", docker_archive.display()))
            .arg(format!("oci:{}:hello", copied.display())),
    );
    let rootfs = umoci_unpack(&copied, "hello", &tmp.path().join("bundle"));
    assert_eq!(
        fs::read_to_string(rootfs.join("app/message.txt")).unwrap(),
        "hello from dockless\n"
    );
    let manifest = run_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(&docker_archive)
            .arg("manifest.json"),
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "hello:v1");
}

#[test]
fn rebuilding_a_tag_replaces_it_in_the_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let layout = format!("oci:{}", tmp.path().join("lay").display());
    for level in ["1", "9", "9"] {
        run_ok(dockless(&cache).args([
            "build",
            testdata("hello").to_str().unwrap(),
            "-t",
            "hello:v1",
            "-o",
            &layout,
            "--gzip-level",
            level,
        ]));
    }
    run_ok(dockless(&cache).args([
        "build",
        testdata("hello").to_str().unwrap(),
        "-t",
        "hello:v2",
        "-o",
        &layout,
    ]));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(tmp.path().join("lay/index.json")).unwrap()).unwrap();
    // The images; their SBOM and provenance are listed too, marked as such.
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["dev.dockless.attachment-of"].is_null())
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, vec!["hello:v1", "hello:v2"]);
}

struct Failed {
    code: i32,
    stderr: String,
    wrote_output: bool,
    wrote_blobs: bool,
}

/// Builds a context made of `files` that must fail, and reports what it left behind.
fn failed_build(files: &[(&str, &str)]) -> Failed {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    for (name, body) in files {
        let path = ctx.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
    let cache = tmp.path().join("cache");
    let out = dockless(&cache)
        .current_dir(tmp.path())
        .arg("build")
        .arg(&ctx)
        .args(["-t", "bad:v1"])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for a failed build"
    );
    let blobs = cache.join("blobs/sha256");
    Failed {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        wrote_output: tmp.path().join("oci-layout").exists(),
        wrote_blobs: blobs
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
    }
}

#[test]
fn malformed_dockerfiles_name_file_line_and_problem() {
    let cases: &[(&str, &str)] = &[
        (
            "FROM scratch\nCOPPY a b\n",
            "Dockerfile:2: unknown instruction: COPPY",
        ),
        (
            "FROM scratch\nCOPY onlyone\n",
            "Dockerfile:2: COPY requires at least two arguments",
        ),
        (
            "FROM scratch\nCOPY --frm=x a b\n",
            "Dockerfile:2: unknown flag for COPY: --frm",
        ),
        ("CMD [\"x\"]\nFROM scratch\n", "Dockerfile:1:"),
        ("", "no FROM"),
        ("# only a comment\n", "no FROM"),
        ("FROM scratch\nENV\n", "Dockerfile:2:"),
        ("FROM scratch\nENV =x\n", "Dockerfile:2:"),
        ("FROM scratch\nLABEL novalue\n", "Dockerfile:2:"),
        ("FROM scratch\nSHELL /bin/sh -c\n", "Dockerfile:2:"),
        (
            "FROM scratch\nHEALTHCHECK --interval=xyz CMD true\n",
            "Dockerfile:2:",
        ),
        ("FROM scratch\nHEALTHCHECK NONE extra\n", "Dockerfile:2:"),
        ("FROM scratch AS 1bad\n", "Dockerfile:1:"),
        ("FROM scratch AS\n", "Dockerfile:1:"),
        ("FROM scratch\nONBUILD FROM x\n", "Dockerfile:2:"),
        ("FROM scratch\nCOPY <<EOF /x\nno end\n", "Dockerfile:2:"),
        (
            "FROM scratch\n\n\nRUN echo hi\n",
            "Dockerfile:4: RUN echo hi: running /bin/sh: no such file in the image",
        ),
        (
            "FROM scratch\nEXPOSE 99999\n",
            "Dockerfile:2: EXPOSE 99999: invalid port",
        ),
        ("FROM scratch\nEXPOSE 80/http\n", "Dockerfile:2:"),
        (
            "FROM scratch\nCOPY --chmod=999 a.txt /\n",
            "Dockerfile:2: COPY --chmod=999",
        ),
        (
            "FROM scratch\nCOPY --chown=nobody a.txt /\n",
            "Dockerfile:2: COPY --chown=nobody: unknown user",
        ),
        (
            "FROM scratch\nCOPY a.txt b.txt /dest\n",
            "Dockerfile:2: When using COPY with more than one source file",
        ),
        (
            "FROM scratch\nCOPY missing.txt /\n",
            "Dockerfile:2: COPY source \"missing.txt\": no such file",
        ),
        (
            "FROM scratch\nCOPY ../etc/passwd /\n",
            "Dockerfile:2: COPY source \"../etc/passwd\" is outside the build context",
        ),
        (
            "FROM scratch\nCOPY --from=nowhere /x /\n",
            "Dockerfile:2: COPY --from=nowhere",
        ),
        (
            "FROM scratch\nADD https://example.com/x.git /\n",
            "Dockerfile:2: ADD https://example.com/x.git: adding a git repository is not supported yet",
        ),
        // An unreachable registry base fails clearly, naming the host.
        (
            "FROM 127.0.0.1:1/base:1\n",
            "Dockerfile:1: FROM 127.0.0.1:1/base:1: cannot connect to registry 127.0.0.1:1",
        ),
        (
            "FROM Python:3.12\n",
            "Dockerfile:1: FROM Python:3.12: not an earlier build stage, and invalid image reference",
        ),
        ("FROM scratch\nSTOPSIGNAL sig-nope\n", "Dockerfile:2:"),
        ("FROM scratch\nENV A=${B\n", "Dockerfile:2:"),
        ("FROM scratch\nUSER \"\"\n", "Dockerfile:2:"),
        (
            "FROM scratch\nCOPY a.txt /a\nCOPY a.txt /a/b\n",
            "Dockerfile:3: COPY to /a/b: /a is not a directory",
        ),
    ];
    for (dockerfile, expected) in cases {
        let f = failed_build(&[("Dockerfile", dockerfile), ("a.txt", "a"), ("b.txt", "b")]);
        assert_ne!(f.code, 101, "panic on {dockerfile:?}: {}", f.stderr);
        assert_eq!(f.code, 3, "exit code for {dockerfile:?}: {}", f.stderr);
        assert!(
            f.stderr.contains(expected),
            "{dockerfile:?}: expected {expected:?} in {:?}",
            f.stderr
        );
        assert!(f.stderr.contains("Dockerfile"), "{}", f.stderr);
        assert_no_repeated_cause(&f.stderr);
        assert!(!f.wrote_output, "{dockerfile:?} wrote an output");
        // Only a failure after an earlier COPY succeeded may leave cache blobs.
        let copied_before = dockerfile.contains("COPY a.txt /a\n");
        assert!(
            copied_before || !f.wrote_blobs,
            "{dockerfile:?} wrote blobs"
        );
    }
}

/// The `error:` line says each cause once (a library error quoting its
/// source, printed again as the next link of the chain, said it twice).
fn assert_no_repeated_cause(stderr: &str) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"));
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "{part:?} said twice in {line:?}"
        );
    }
}

#[test]
fn a_missing_dockerfile_is_named_with_its_cause_once() {
    let f = failed_build(&[("a.txt", "a")]);
    assert_eq!(f.code, 3, "{}", f.stderr);
    assert!(
        f.stderr.contains("cannot read Dockerfile") && f.stderr.contains("ctx/Dockerfile"),
        "{}",
        f.stderr
    );
    assert_eq!(
        f.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        f.stderr
    );
    assert_no_repeated_cause(&f.stderr);
}

#[test]
fn ssh_mount_fails_before_anything_is_written_even_late_in_the_file() {
    let f = failed_build(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY a.txt /\nCOPY b.txt /\nRUN --mount=type=ssh make\n",
        ),
        ("a.txt", "a"),
        ("b.txt", "b"),
    ]);
    assert_eq!(f.code, 3);
    assert!(
        f.stderr
            .contains("Dockerfile:4: RUN --mount=type=ssh: type=ssh is not supported yet"),
        "{}",
        f.stderr
    );
    assert!(
        !f.wrote_blobs && !f.wrote_output,
        "RUN --mount=type=ssh must fail before any layer is written"
    );
}

#[test]
fn usage_errors_exit_with_2() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        vec!["build", "testdata/hello", "-t", "Bad:Name"],
        vec!["build", "testdata/hello", "-o", "tarball:x"],
        vec!["build", "testdata/hello", "--platform", "linux"],
        vec!["build", "testdata/hello", "--build-arg", "=x"],
        vec!["build"],
    ] {
        let out = dockless(&tmp.path().join("c"))
            .current_dir(repo_root())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn symlinks_never_bring_outside_content_in() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("etc")).unwrap();
    fs::write(ctx.join("etc/hostname"), "inside\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", ctx.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/hostname", ctx.join("rel")).unwrap();
    fs::create_dir(ctx.join("dir")).unwrap();
    std::os::unix::fs::symlink("/etc", ctx.join("dir/etc-link")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY abs /abs\nCOPY rel /rel\nCOPY dir /dir\n",
    )
    .unwrap();
    let layout = tmp.path().join("lay");
    run_ok(
        dockless(&tmp.path().join("cache"))
            .arg("build")
            .arg(&ctx)
            .args(["-t", "links:v1", "-o"])
            .arg(format!("oci:{}", layout.display())),
    );
    let rootfs = umoci_unpack(&layout, "links:v1", &tmp.path().join("bundle"));
    // Both links resolve inside the context, as if it were `/`.
    assert_eq!(fs::read_to_string(rootfs.join("abs")).unwrap(), "inside\n");
    assert_eq!(fs::read_to_string(rootfs.join("rel")).unwrap(), "inside\n");
    // A link inside a copied folder stays a link.
    assert_eq!(
        fs::read_link(rootfs.join("dir/etc-link")).unwrap(),
        Path::new("/etc")
    );
}

#[test]
fn the_default_dockerfile_stays_inside_the_context_but_f_may_name_any_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    let outside = tmp.path().join("outside.Dockerfile");
    fs::write(&outside, "FROM scratch\nLABEL from=outside\n").unwrap();
    std::os::unix::fs::symlink(&outside, ctx.join("Dockerfile")).unwrap();
    let cache = tmp.path().join("cache");
    let build = |extra: &[&std::ffi::OsStr]| {
        dockless(&cache)
            .current_dir(tmp.path())
            .arg("build")
            .arg(&ctx)
            .args(["-t", "out:v1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = build(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("ctx/Dockerfile: leads out of the build context"),
        "{stderr}"
    );
    // Named by the user, as docker allows.
    let out = build(&["-f".as_ref(), outside.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rootless_build_matches_root_build_with_chown() {
    require_tool("setpriv");
    let tmp = tempfile::tempdir().unwrap();
    // The unprivileged user must be able to read the context and write its cache.
    run_ok(Command::new("chmod").arg("755").arg(tmp.path()));
    let ctx = tmp.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("app.txt"), "app\n").unwrap();
    fs::create_dir(ctx.join("conf")).unwrap();
    fs::write(ctx.join("conf/settings"), "x=1\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY --chown=1000:2000 app.txt /srv/\nCOPY --chown=33 --chmod=640 conf /etc/conf\nUSER 1000\n",
    )
    .unwrap();
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&ctx));
    let as_root = build_digest(&ctx, &tmp.path().join("root-cache"), &[], &[]);

    let user_home = tmp.path().join("nobody");
    fs::create_dir(&user_home).unwrap();
    run_ok(Command::new("chown").arg("65534:65534").arg(&user_home));
    let out = run_ok(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_dockless"))
            .env_clear()
            .env("HOME", &user_home)
            .env("PATH", "/usr/bin:/bin")
            .current_dir(&user_home)
            .arg("build")
            .arg(&ctx)
            .args(["-t", "repro:v1"]),
    );
    assert_eq!(digest_of(&stdout(&out)), as_root);
    // The default cache lives under the user's home when nothing else is set.
    assert!(user_home.join(".cache/dockless/blobs/sha256").is_dir());
}
