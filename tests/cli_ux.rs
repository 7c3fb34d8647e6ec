//! What docker, buildx, ko and crane users expect of the `dockless` CLI
//! (issue 16), driven through the real binary.

mod common;
mod regsupport;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// A context of one file and a `FROM scratch` Dockerfile.
fn scratch_context(dir: &Path) -> std::path::PathBuf {
    let ctx = dir.join("app");
    write_context(
        &ctx,
        "FROM scratch\nCOPY message.txt /message.txt\n",
        &[("message.txt", b"hello\n")],
    );
    ctx
}

#[test]
fn platform_names_are_normalised_and_other_systems_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = scratch_context(tmp.path());
    for (given, arch, variant) in [
        ("linux/aarch64", "arm64", None),
        ("linux/x86_64", "amd64", None),
        ("linux/armhf", "arm", Some("v7")),
    ] {
        let layout = tmp.path().join(given.replace('/', "-"));
        let out = dockless_build(tmp.path(), &ctx, &layout, &["--platform", given]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = layout_config(&layout);
        assert_eq!(config["architecture"], arch, "{given}");
        assert_eq!(config["variant"].as_str(), variant, "{given}");
    }
    let out = dockless(&tmp.path().join("cache"))
        .arg("build")
        .arg(&ctx)
        .args(["--platform", "windows/amd64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Linux images only"), "{err}");
}

/// A file in the cache's `tmp/` as an interrupted push leaves it, changed `age` ago.
fn leftover(cache: &Path, name: &str, age: Duration) -> std::path::PathBuf {
    let path = cache.join("tmp").join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, vec![7u8; 3 << 20]).unwrap();
    let file = fs::File::options().append(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    path
}

#[test]
fn stale_temporary_files_are_removed_at_start_and_by_cache_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let ctx = scratch_context(tmp.path());
    let hour = Duration::from_secs(3600);
    let stale = leftover(&cache, ".tmpA1b2C3", hour);
    let fresh = leftover(&cache, ".tmpD4e5F6", Duration::ZERO);
    let held = leftover(&cache, ".tmpG7h8I9", hour);
    let lock = fs::File::open(&held).unwrap();
    lock.lock().unwrap();
    run_ok(
        dockless(&cache)
            .current_dir(tmp.path())
            .arg("build")
            .arg(&ctx),
    );
    assert!(!stale.exists(), "a stale temporary file survived a build");
    assert!(fresh.exists() && held.exists(), "a file in use was removed");
    drop(lock);
    let old = leftover(&cache, ".tmpJ1k2L3", hour);
    let out = run_ok(dockless(&cache).args(["cache", "prune", "--max-size", "10G"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!old.exists() && !held.exists() && fresh.exists(), "{err}");
    assert!(err.contains("2 stale temporary files"), "{err}");
    // What is still in use counts towards the cap.
    let out = run_ok(dockless(&cache).args(["cache", "prune", "--max-size", "0"]));
    assert!(fresh.exists());
    let err = String::from_utf8_lossy(&out.stderr);
    let kept: u64 = err
        .split("; ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(kept >= 3 << 20, "{err}");
}

#[test]
fn several_tags_push_once_and_print_a_line_each() {
    let reg = regsupport::Registry::start(regsupport::RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let ctx = scratch_context(tmp.path());
    let addr = reg.addr();
    let out = run_ok(
        dockless(&tmp.path().join("cache"))
            .arg("push")
            .arg(&ctx)
            .args(["--registry", &addr, "--insecure", "--json"])
            .args(["-t", "app:v1", "-t", "latest", "-t"])
            .arg(format!("{addr}/mirror/app:v1")),
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let wanted = [
        format!("{addr}/app:v1"),
        format!("{addr}/app:latest"),
        format!("{addr}/mirror/app:v1"),
    ];
    assert_eq!(lines.len(), 3, "{lines:?}");
    let digest = digest_of(&lines[0]);
    for (line, name) in lines.iter().zip(&wanted) {
        assert_eq!(line, &format!("{name}@{digest}"));
        let repo_tag = name.strip_prefix(&format!("{addr}/")).unwrap();
        reg.verify(repo_tag, &digest, None);
    }
    let events = json_events(&out);
    // The config and the layer go up once; the other repository mounts them.
    assert_eq!(
        event_digests(&events, "blob_uploaded").len(),
        2,
        "{events:?}"
    );
    assert_eq!(
        event_digests(&events, "blob_mounted").len(),
        2,
        "{events:?}"
    );
    assert_eq!(event_digests(&events, "manifest_pushed").len(), 3);

    let layout = tmp.path().join("layout");
    let out = dockless_build(tmp.path(), &ctx, &layout, &["-t", "app:v2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("test:v1@") && lines[1].starts_with("app:v2@"));
    for tag in ["test:v1", "app:v2"] {
        let out = run_ok(
            Command::new("skopeo")
                .args(["inspect", "--format", "{{.Digest}}"])
                .arg(format!("oci:{}:{tag}", layout.display())),
        );
        assert_eq!(stdout(&out), digest_of(&lines[0]));
    }
}

#[test]
fn result_files_for_scripts() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = scratch_context(tmp.path());
    let layout = tmp.path().join("layout");
    let file = |name: &str| tmp.path().join(name);
    let out = dockless_build(
        tmp.path(),
        &ctx,
        &layout,
        &[
            "-t",
            "app:v2",
            "--iidfile",
            file("iid").to_str().unwrap(),
            "--digest-file",
            file("digest").to_str().unwrap(),
            "--metadata-file",
            file("metadata.json").to_str().unwrap(),
            "--image-refs",
            file("refs").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = digest_of(stdout(&out).lines().next().unwrap());
    let read = |name: &str| fs::read_to_string(file(name)).unwrap();
    let index = read_json(&layout.join("index.json"));
    let manifest = read_json(&blob_path(&layout, &digest));
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(read("iid"), config_digest);
    assert_eq!(read("digest"), digest);
    assert_eq!(read("refs"), format!("test:v1@{digest}\napp:v2@{digest}\n"));
    let metadata: serde_json::Value = serde_json::from_str(&read("metadata.json")).unwrap();
    assert_eq!(metadata["containerimage.digest"], digest.as_str());
    assert_eq!(metadata["containerimage.config.digest"], config_digest);
    assert_eq!(metadata["image.name"], "test:v1,app:v2");
    assert_eq!(
        metadata["containerimage.descriptor"]["size"],
        index["manifests"][0]["size"]
    );
}

/// The exit code and stderr of `dockless ARGS` (with a private cache).
fn fails(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = dockless(&dir.join("cache"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn errors_say_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = scratch_context(tmp.path());
    let ctx = ctx.to_str().unwrap();
    for (tag, fixed) in [
        ("app:1.0 beta", "app:1.0-beta"),
        ("app:1.0+git5", "app:1.0-git5"),
        ("MyApp:v1", "myapp:v1"),
    ] {
        let (code, err) = fails(tmp.path(), &["build", ctx, "-t", tag]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("did you mean {fixed:?}?")), "{err}");
    }
    let (code, err) = fails(tmp.path(), &["build", "no-such-folder", "-t", "a:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-folder does not exist"), "{err}");
    let (code, err) = fails(tmp.path(), &["build", ctx, "--ca-cert", "missing.crt"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ca-cert missing.crt: no such file"), "{err}");
    let typo = tmp.path().join("typo");
    write_context(&typo, "FROM scratch\nCOPPY a /a\n", &[("a", b"a")]);
    let (code, err) = fails(tmp.path(), &["build", typo.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("unknown instruction: COPPY (did you mean COPY?)"),
        "{err}"
    );
}

#[test]
fn docker_spellings_of_build_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = scratch_context(tmp.path());
    let layout = tmp.path().join("layout");
    let cached = dockless_build(tmp.path(), &ctx, &layout, &[]);
    let out = dockless_build(tmp.path(), &ctx, &layout, &["--no-cache", "--pull"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), stdout(&cached));
}

#[test]
fn version_completions_man_and_logout() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let version = stdout(&run_ok(dockless(&cache).arg("version")));
    let commit = version
        .split("(commit ")
        .nth(1)
        .and_then(|c| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version}"));
    let head = Command::new("git")
        .current_dir(repo_root())
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert!(
            head.starts_with(commit.trim_end_matches("-dirty")),
            "{version}"
        ),
        None => assert_eq!(commit, "unknown"),
    }

    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&run_ok(dockless(&cache).args(["completions", shell])));
        for word in ["build", "push", "logout", "--iidfile"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let bash = run_ok(dockless(&cache).args(["completions", "bash"])).stdout;
    let script = tmp.path().join("dockless.bash");
    fs::write(&script, bash).unwrap();
    run_ok(Command::new("bash").arg("-n").arg(&script));
    let man = stdout(&run_ok(dockless(&cache).arg("man")));
    assert!(
        man.starts_with(".ie") || man.contains(".TH dockless"),
        "{man}"
    );
    assert!(man.contains("logout"));

    let config = tmp.path().join("docker");
    fs::create_dir_all(&config).unwrap();
    fs::write(
        config.join("config.json"),
        r#"{"auths": {"reg.example:5000": {"auth": "dTpw"}, "other.example": {"auth": "eDp5"}}}"#,
    )
    .unwrap();
    let out = run_ok(
        dockless(&cache)
            .env("DOCKER_CONFIG", &config)
            .args(["logout", "reg.example:5000"]),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Removing login credentials"));
    let left = read_json(&config.join("config.json"));
    assert!(left["auths"].get("reg.example:5000").is_none(), "{left}");
    assert_eq!(left["auths"]["other.example"]["auth"], "eDp5");
    let out = run_ok(
        dockless(&cache)
            .env("DOCKER_CONFIG", &config)
            .args(["logout", "reg.example:5000"]),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Not logged in"));
}

#[test]
fn archives_to_stdout_pipe_into_skopeo() {
    require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let ctx = scratch_context(tmp.path());
    for kind in ["docker-archive", "oci-archive"] {
        let out = run_ok(
            dockless(&tmp.path().join("cache"))
                .arg("build")
                .arg(&ctx)
                .args(["-t", "piped:v1", "-o", &format!("{kind}:-")]),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("piped:v1@sha256:"))
            .unwrap_or_else(|| panic!("no reference on stderr: {err}"));
        // What came down the pipe, fed to skopeo on its stdin (skopeo 1.x
        // seeks in a docker-archive, so a file stands in for the pipe there).
        let archive = tmp.path().join(format!("{kind}.tar"));
        fs::write(&archive, &out.stdout).unwrap();
        let dest = tmp.path().join(format!("{kind}-copy"));
        run_ok(
            Command::new("skopeo")
                .arg("copy")
                .arg(format!("{kind}:/dev/stdin"))
                .arg(format!("oci:{}:piped", dest.display()))
                .stdin(fs::File::open(&archive).unwrap()),
        );
        if kind == "oci-archive" {
            // Copied byte for byte: the manifest keeps its digest.
            let index = read_json(&dest.join("index.json"));
            assert_eq!(index["manifests"][0]["digest"], digest_of(line).as_str());
        }
        assert_eq!(layout_config(&dest)["rootfs"]["type"], "layers");
    }
}

/// `dockless inspect ARGS` as JSON.
fn inspect(cache: &Path, args: &[&str]) -> serde_json::Value {
    let out = run_ok(dockless(cache).arg("inspect").args(args));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

#[test]
fn inspect_reads_registries_layouts_and_archives() {
    let reg = regsupport::Registry::start(regsupport::RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let ctx = scratch_context(tmp.path());
    let layout = tmp.path().join("layout");
    let addr = reg.addr();
    let pushed = stdout(&run_ok(dockless(&cache).arg("push").arg(&ctx).args([
        "-t",
        &format!("{addr}/app:v1"),
        "--insecure",
        "-q",
    ])));
    let out = dockless_build(tmp.path(), &ctx, &layout, &[]);
    assert!(out.status.success());
    let digest = digest_of(&pushed);
    assert_eq!(digest_of(&stdout(&out)), digest);
    let archive = tmp.path().join("app.tar");
    run_ok(
        dockless(&cache)
            .arg("build")
            .arg(&ctx)
            .arg("-o")
            .arg(format!("docker-archive:{}", archive.display())),
    );
    let remote = inspect(&cache, &[&format!("{addr}/app:v1"), "--insecure"]);
    let local = inspect(&cache, &[&format!("oci:{}:test:v1", layout.display())]);
    let docker = inspect(&cache, &[&format!("docker-archive:{}", archive.display())]);
    for shown in [&remote, &local] {
        assert_eq!(shown["digest"], digest.as_str(), "{shown}");
        let layers = shown["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{shown}");
        assert!(layers[0]["size"].as_u64().unwrap() > 0);
        assert_eq!(shown["platform"], remote["platform"]);
    }
    assert_eq!(docker["platform"], remote["platform"], "{docker}");
    assert_eq!(docker["layers"].as_array().unwrap().len(), 1, "{docker}");

    // --raw is the stored manifest: its sha256 is the digest.
    let raw = run_ok(
        dockless(&cache)
            .args(["inspect", "--raw", "--insecure"])
            .arg(format!("{addr}/app:v1")),
    );
    use sha2::Digest as _;
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw.stdout))),
        digest
    );

    // An index lists its platforms.
    let multi = tmp.path().join("multi");
    let out = dockless_build(
        tmp.path(),
        &ctx,
        &multi,
        &["--platform", "linux/amd64,linux/arm64"],
    );
    assert!(out.status.success());
    let index = inspect(&cache, &[&format!("oci:{}", multi.display())]);
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index}");
}

#[test]
fn registry_trust_from_certs_d_and_scheme_mismatch_hints() {
    let certs = regsupport::Certs::generate();
    let tls = regsupport::Registry::start(regsupport::RegistryCfg {
        certs: Some(&certs),
        ..Default::default()
    });
    let plain = regsupport::Registry::start(regsupport::RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let ctx = scratch_context(tmp.path());
    let xdg = tmp.path().join("xdg");
    let push = |target: String, extra: &[&str]| {
        dockless(&tmp.path().join("cache"))
            .env("XDG_CONFIG_HOME", &xdg)
            .arg("push")
            .arg(&ctx)
            .args(["-q", "-t", &target])
            .args(extra)
            .output()
            .unwrap()
    };
    let target = format!("{}/trusted:v1", tls.addr());
    let out = push(target.clone(), &[]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certs.d/HOST:PORT/*.crt"), "{err}");
    // The CA in the user's certs.d folder for this host:port: no --ca-cert.
    let dir = xdg.join("containers/certs.d").join(tls.addr());
    fs::create_dir_all(&dir).unwrap();
    fs::copy(certs.ca(), dir.join("ca.crt")).unwrap();
    let out = push(target.clone(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tls.verify("trusted:v1", &digest_of(&stdout(&out)), None);

    let out = push(format!("{}/plain:v1", plain.addr()), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("answered in plain HTTP, not TLS") && err.contains("--insecure"),
        "{err}"
    );
    let out = push(format!("{}/tls:v1", tls.addr()), &["--insecure"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the registry speaks TLS; drop --insecure"),
        "{err}"
    );
}

/// A context whose second COPY is new each time `marker` changes.
fn two_step_context(dir: &Path, marker: &str) -> std::path::PathBuf {
    let ctx = dir.join("steps");
    write_context(
        &ctx,
        "FROM scratch\nCOPY base.txt /base.txt\nENV MODE=prod\nCOPY marker.txt /marker.txt\n",
        &[("base.txt", b"base\n"), ("marker.txt", marker.as_bytes())],
    );
    ctx
}

#[test]
fn plain_progress_numbers_steps_as_buildx_does() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = two_step_context(tmp.path(), "one");
    let layout = tmp.path().join("layout");
    let first = dockless_build(tmp.path(), &ctx, &layout, &["--progress=plain"]);
    assert!(first.status.success());
    let ctx = two_step_context(tmp.path(), "two");
    let out = dockless_build(tmp.path(), &ctx, &layout, &["--progress=plain"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], "#1 [1/4] FROM scratch", "{err}");
    assert!(lines.contains(&"#2 [2/4] COPY base.txt /base.txt"), "{err}");
    assert!(lines.contains(&"#2 CACHED"), "{err}");
    assert!(lines.contains(&"#3 [3/4] ENV MODE=prod"), "{err}");
    let last = lines
        .iter()
        .find(|l| l.starts_with("#4 DONE "))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(last.contains("(layer "), "{err}");
    // Quiet and JSON modes.
    let quiet = dockless_build(tmp.path(), &ctx, &layout, &["-q"]);
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let json = dockless_build(tmp.path(), &ctx, &layout, &["--json"]);
    let events = json_events(&json);
    let finished: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "step_finished")
        .collect();
    assert_eq!(finished.len(), 4, "{events:?}");
    assert_eq!(finished[1]["cached"], true);
    assert!(events.iter().all(|e| e["time"].is_string()), "{events:?}");
}

#[test]
fn a_terminal_gets_the_live_view() {
    use portable_pty::{native_pty_system, CommandBuilder, PtySize};
    let tmp = tempfile::tempdir().unwrap();
    let ctx = two_step_context(tmp.path(), "tty");
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 100,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_dockless"));
    cmd.args(["build", ctx.to_str().unwrap(), "-t", "tty:v1", "-o"]);
    cmd.arg(format!("oci:{}", tmp.path().join("layout").display()));
    cmd.env("DOCKLESS_CACHE_DIR", tmp.path().join("cache"));
    cmd.env("TERM", "xterm");
    let mut child = pty.slave.spawn_command(cmd).unwrap();
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().unwrap();
    let mut seen = Vec::new();
    let reading = std::thread::spawn(move || {
        let _ = std::io::Read::read_to_end(&mut reader, &mut seen);
        seen
    });
    assert!(child.wait().unwrap().success());
    drop(pty.master);
    let seen = String::from_utf8_lossy(&reading.join().unwrap()).into_owned();
    assert!(
        seen.contains("#4 [4/4] COPY marker.txt /marker.txt") || seen.contains("#4 DONE"),
        "{seen}"
    );
    assert!(seen.contains("tty:v1@sha256:"), "{seen}");
    // Drawn for a terminal: cursor movement or line clearing, not plain lines only.
    assert!(seen.contains('\u{1b}'), "{seen:?}");
}
