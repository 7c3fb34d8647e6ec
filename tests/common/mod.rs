//! Helpers shared by the integration tests: running dockless, preparing
//! contexts, and reading images back with independent tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn testdata(name: &str) -> PathBuf {
    repo_root().join("testdata").join(name)
}

/// The dockless binary, run with a private cache folder.
pub fn dockless(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockless"));
    cmd.env("DOCKLESS_CACHE_DIR", cache)
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// Runs a command and panics with its stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Requires a tool the test suite installs (see .ci/run); a missing tool is a failure, not a skip.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed; .ci/run installs it (apt-get install)"))
}

/// buildah with a store of its own under `dir`, so tests can run in parallel.
pub fn buildah(dir: &Path) -> Command {
    require_tool("buildah");
    let mut cmd = Command::new("buildah");
    cmd.arg("--root")
        .arg(dir.join("st"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs"]);
    cmd
}

/// Copies a folder recursively, keeping symlinks and modes.
pub fn copy_tree(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// A copy of testdata/hello with the static busybox from Debian's busybox-static.
pub fn hello_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("hello");
    copy_tree(&testdata("hello"), &ctx);
    let busybox = require_tool("busybox");
    std::fs::copy(&busybox, ctx.join("bin/busybox")).expect("copy busybox");
    ctx
}

/// The `--json` push events a command wrote on stderr.
pub fn json_events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The digests of the events of one kind, e.g. `blob_uploaded`.
pub fn event_digests(events: &[serde_json::Value], kind: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .filter_map(|e| e["digest"].as_str().map(str::to_string))
        .collect()
}

/// A base image context at `ctx`: the static busybox, an /etc with a user
/// `app` (1000:1000) and a motd, and the given Dockerfile.
pub fn busybox_base_context(ctx: &Path, dockerfile: &str) {
    std::fs::create_dir_all(ctx.join("bin")).unwrap();
    std::fs::create_dir_all(ctx.join("etc")).unwrap();
    std::fs::copy(require_tool("busybox"), ctx.join("bin/busybox")).unwrap();
    std::fs::write(
        ctx.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/srv:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(ctx.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    std::fs::write(ctx.join("etc/motd"), "welcome\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
}

/// `name:tag@sha256:...` → the digest.
pub fn digest_of(reference: &str) -> String {
    reference
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| panic!("no digest in {reference:?}"))
}

/// Unpacks `layout:tag` with umoci into `bundle` and returns the rootfs path.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    require_tool("umoci");
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(bundle),
    );
    bundle.join("rootfs")
}

/// One line per path below `root`: path, type, mode, owner, link target and a content hash.
pub fn describe_tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut lines = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.expect("walk");
        let md = entry.path().symlink_metadata().expect("lstat");
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        let ft = md.file_type();
        let detail = if ft.is_symlink() {
            format!(
                "l -> {}",
                std::fs::read_link(entry.path()).unwrap().display()
            )
        } else if ft.is_dir() {
            "d".to_string()
        } else {
            let bytes = std::fs::read(entry.path()).expect("read");
            format!("f {}", dockless::digest::sha256(&bytes))
        };
        lines.push(format!(
            "{rel} {detail} mode={:o} owner={}:{} nlink={}",
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            if ft.is_file() { md.nlink() } else { 0 }
        ));
    }
    lines
}

/// Container config fields compared between dockless and buildah.
pub const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// The compared fields of an image config. An empty list or map counts as
/// absent: buildah's Docker-format config writes `"Cmd": []` and
/// `"Volumes": {}` where the OCI form (and dockless) leave the field out.
pub fn compared_config(image: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    let inner = image["config"].as_object().cloned().unwrap_or_default();
    for field in CONFIG_FIELDS {
        let mut value = inner
            .get(*field)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if *field == "Labels" {
            if let Some(labels) = value.as_object_mut() {
                labels.remove("io.buildah.version");
            }
        }
        // dockless writes BuildKit's WorkingDir "/" for scratch, buildah leaves
        // it unset; a runtime starts in "/" either way.
        if *field == "WorkingDir" && value == "/" {
            value = serde_json::Value::Null;
        }
        let empty = match &value {
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            serde_json::Value::String(s) => s.is_empty(),
            _ => false,
        };
        out.insert(
            field.to_string(),
            if empty {
                serde_json::Value::Null
            } else {
                value
            },
        );
    }
    for field in ["architecture", "os"] {
        out.insert(field.to_string(), image[field].clone());
    }
    out
}

/// A busybox root filesystem as a tar (made here from Debian's
/// busybox-static, never committed): every applet linked in /bin, root and
/// `app` (1000:1000) in /etc/passwd and /etc/group, /tmp 1777, and the
/// mount points a runtime expects (/proc, /sys, /dev, /run, /etc/hosts,
/// /etc/hostname and /etc/resolv.conf; buildah leaves the last four in its
/// image when they are missing), all root's, mtimes fixed.
pub fn busybox_rootfs_tar(dest: &Path) {
    use tar::EntryType::{Directory, Regular, Symlink};
    let busybox = std::fs::read(require_tool("busybox")).expect("read busybox");
    let list = run_ok(Command::new(require_tool("busybox")).arg("--list"));
    let mut b = tar::Builder::new(std::fs::File::create(dest).unwrap());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, body: &[u8], link: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(if kind == Regular {
            body.len() as u64
        } else {
            0
        });
        if kind == Symlink {
            b.append_link(&mut h, name, link).unwrap();
        } else {
            b.append_data(&mut h, name, body).unwrap();
        }
    };
    for dir in [
        "bin", "etc", "home", "proc", "sys", "dev", "run", "usr", "var",
    ] {
        add(dir, Directory, 0o755, b"", "");
    }
    add("tmp", Directory, 0o1777, b"", "");
    add("root", Directory, 0o700, b"", "");
    add("bin/busybox", Regular, 0o755, &busybox, "");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            add(&format!("bin/{applet}"), Symlink, 0o777, b"", "busybox");
        }
    }
    add(
        "etc/passwd",
        Regular,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        "",
    );
    add(
        "etc/group",
        Regular,
        0o644,
        b"root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
        "",
    );
    add("etc/hosts", Regular, 0o644, b"127.0.0.1 localhost\n", "");
    add("etc/hostname", Regular, 0o644, b"busybox\n", "");
    add("etc/resolv.conf", Regular, 0o644, b"", "");
    b.finish().unwrap();
}

/// Builds a busybox base image with dockless (`FROM scratch` + `ADD` of
/// [`busybox_rootfs_tar`]) and pushes it to the plain-HTTP registry at
/// `addr` as `base/busybox:1`; returns that reference.
pub fn push_busybox_base(addr: &str, work: &Path) -> String {
    let ctx = work.join("busybox-base");
    std::fs::create_dir_all(&ctx).unwrap();
    busybox_rootfs_tar(&ctx.join("rootfs.tar"));
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD rootfs.tar /\nENV PATH=/usr/local/bin:/usr/bin:/bin\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let reference = format!("{addr}/base/busybox:1");
    run_ok(
        dockless(&work.join("base-cache"))
            .arg("push")
            .arg(&ctx)
            .args(["-t", &reference, "--insecure", "-q"]),
    );
    reference
}

/// Runs a bundle umoci unpacked with runc (its own state folder in the
/// bundle; no terminal, rlimits or cgroup resources, which a test runner
/// may lack) and returns the container's stdout.
pub fn runc_run(bundle: &Path, id: &str) -> String {
    require_tool("runc");
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("config.json");
    let process = config["process"].as_object_mut().expect("process");
    process.remove("rlimits");
    process.insert("terminal".into(), serde_json::Value::Bool(false));
    if let Some(linux) = config["linux"].as_object_mut() {
        linux.remove("resources");
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let out = run_ok(
        Command::new("runc")
            .arg("--root")
            .arg(bundle.join("runc-state"))
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(format!("{id}-{}", std::process::id()))
            .stdin(std::process::Stdio::null()),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
