//! Helpers shared by the integration tests: running dockless, preparing
//! contexts, and reading images back with independent tools.
#![allow(dead_code)]

pub mod http;

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
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
        } else if ft.is_fifo() {
            // Reading a FIFO would wait for a writer.
            "p".to_string()
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

pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

/// The config of the (first) image in an OCI layout.
pub fn layout_config(layout: &Path) -> serde_json::Value {
    let index = read_json(&layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read_json(&blob_path(layout, manifest_digest));
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    read_json(&blob_path(layout, config_digest))
}

/// Writes a build context: a Dockerfile and files (parents made).
pub fn write_context(ctx: &Path, dockerfile: &str, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, body) in files {
        let path = ctx.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
}

/// `dockless build CTX -o oci:LAYOUT` with `args`; the command's output.
pub fn dockless_build(work: &Path, ctx: &Path, layout: &Path, args: &[&str]) -> Output {
    dockless(&work.join("cache"))
        .arg("build")
        .arg(ctx)
        .args(["-t", "test:v1", "-o"])
        .arg(format!("oci:{}", layout.display()))
        .args(args)
        .output()
        .expect("run dockless")
}

/// One tar member, written byte for byte (the tar crate's safe API refuses
/// the `..` and absolute names hostile archives have).
#[derive(Clone)]
pub struct Member {
    pub name: String,
    pub kind: tar::EntryType,
    pub body: Vec<u8>,
    pub link: String,
    pub mode: u32,
    pub owner: (u64, u64),
}

impl Member {
    fn new(name: &str, kind: tar::EntryType, mode: u32) -> Member {
        Member {
            name: name.into(),
            kind,
            body: Vec::new(),
            link: String::new(),
            mode,
            owner: (0, 0),
        }
    }
    pub fn file(name: &str, body: &str) -> Member {
        Member {
            body: body.as_bytes().to_vec(),
            ..Member::new(name, tar::EntryType::Regular, 0o644)
        }
    }
    pub fn dir(name: &str) -> Member {
        Member::new(name, tar::EntryType::Directory, 0o755)
    }
    pub fn symlink(name: &str, target: &str) -> Member {
        Member {
            link: target.into(),
            ..Member::new(name, tar::EntryType::Symlink, 0o777)
        }
    }
    pub fn hard_link(name: &str, target: &str) -> Member {
        Member {
            link: target.into(),
            ..Member::new(name, tar::EntryType::Link, 0o644)
        }
    }
    pub fn fifo(name: &str) -> Member {
        Member::new(name, tar::EntryType::Fifo, 0o640)
    }
    pub fn mode(mut self, mode: u32) -> Member {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Member {
        self.owner = (uid, gid);
        self
    }
}

/// A tar of `members` (ustar headers, names of at most 100 bytes), ended by two zero blocks.
pub fn tar_of(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.as_ustar_mut().unwrap().name[..m.name.len()].copy_from_slice(m.name.as_bytes());
        h.as_ustar_mut().unwrap().linkname[..m.link.len()].copy_from_slice(m.link.as_bytes());
        h.set_entry_type(m.kind);
        h.set_size(m.body.len() as u64);
        h.set_mode(m.mode);
        h.set_uid(m.owner.0);
        h.set_gid(m.owner.1);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&m.body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `data` compressed as `gz`, `bz2`, `xz` or `zst`.
pub fn compress(format: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    match format {
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(data, 3).unwrap(),
        other => panic!("unknown compression {other}"),
    }
}
