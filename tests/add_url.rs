//! `ADD <url>` against a local HTTP(S) server, as BuildKit does it
//! (frontend `dockerfile2llb/convert_copy.go` `dispatchCopy`, daemon
//! `source/http/source.go`): the file's name, mode, owner and mtime,
//! `--checksum`, errors that name the URL, the size cap, and the layer cache.

mod common;
mod regsupport;

use common::http::{FileServer, Reply};
use common::*;
use regsupport::Certs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const LAST_MODIFIED: &str = "Thu, 02 Jan 2020 00:00:00 GMT";
const LAST_MODIFIED_SECS: i64 = 1_577_923_200;

struct Setup {
    certs: Certs,
    server: FileServer,
    work: tempfile::TempDir,
}

fn setup() -> Setup {
    let certs = Certs::generate();
    let server = FileServer::start(Some((&certs.cert(), &certs.key())));
    server.put(
        "/file.txt",
        Reply::ok(b"hello\n").header("Last-Modified", LAST_MODIFIED),
    );
    Setup {
        certs,
        server,
        work: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// Builds `dockerfile` (with `{U}` standing for the server's base URL)
    /// with `--ca-cert` and `extra` arguments, into `layout-<name>`.
    fn build(&self, name: &str, dockerfile: &str, extra: &[&str], envs: &[(&str, &str)]) -> Output {
        let ctx = self.work.path().join(format!("ctx-{name}"));
        let text = dockerfile.replace("{U}", &self.server.url(""));
        write_context(&ctx, &text, &[("local.txt", b"local\n")]);
        let layout = self.layout(name);
        let mut cmd = dockless(&self.work.path().join("cache"));
        cmd.arg("build")
            .arg(&ctx)
            .args(["-t", "test:v1", "-o"])
            .arg(format!("oci:{}", layout.display()))
            .arg("--ca-cert")
            .arg(self.certs.ca())
            .args(extra);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().expect("run dockless")
    }

    /// [`Setup::build`] that must succeed.
    fn build_ok(&self, name: &str, dockerfile: &str, extra: &[&str], envs: &[(&str, &str)]) {
        let out = self.build(name, dockerfile, extra, envs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{dockerfile}\n{stderr}");
    }

    fn layout(&self, name: &str) -> PathBuf {
        self.work.path().join(format!("layout-{name}"))
    }

    fn rootfs(&self, name: &str, dockerfile: &str, envs: &[(&str, &str)]) -> PathBuf {
        self.build_ok(name, dockerfile, &[], envs);
        umoci_unpack(
            &self.layout(name),
            "test:v1",
            &self.work.path().join(format!("bundle-{name}")),
        )
    }

    fn error(&self, dockerfile: &str, extra: &[&str]) -> String {
        let out = self.build("failing", dockerfile, extra, &[]);
        assert_eq!(out.status.code(), Some(3), "{dockerfile}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The digest of the image's last layer.
    fn last_layer(&self, name: &str, dockerfile: &str, extra: &[&str]) -> String {
        self.build_ok(name, dockerfile, extra, &[]);
        let layout = self.layout(name);
        let index = read_json(&layout.join("index.json"));
        let manifest = read_json(&blob_path(
            &layout,
            index["manifests"][0]["digest"].as_str().unwrap(),
        ));
        let layers = manifest["layers"].as_array().unwrap();
        layers.last().unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn meta(root: &Path, rel: &str) -> (u32, u32, u32) {
    let md = std::fs::symlink_metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    (md.mode() & 0o7777, md.uid(), md.gid())
}

/// The name comes from the URL's decoded path (`__unnamed__` when it has
/// none); the file is 0600 and root's (source/http/source.go `save`);
/// --chown and --chmod apply to it and to the folders made for it (--chmod
/// on folders since BuildKit v0.21.0); a served archive is not extracted.
#[test]
fn add_url_downloads_a_file_as_buildkit_names_and_modes_it() {
    let s = setup();
    s.server.put("/a%20b.txt", Reply::ok(b"spaced\n"));
    s.server.put("/", Reply::ok(b"index\n"));
    let tar = compress("gz", &tar_of(&[Member::file("inside", "x")]));
    s.server.put("/dl/app.tar.gz", Reply::ok(&tar));
    let root = s.rootfs(
        "names",
        "FROM scratch\nADD {U}/file.txt?v=1 /u/\nADD {U}/file.txt /u2\nADD {U}/a%20b.txt /u4/\n\
         ADD {U}/ /r/\nADD --chown=5:6 --chmod=640 {U}/file.txt /u3/x/\nADD {U}/dl/app.tar.gz /t/\n",
        &[],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("u/file.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(meta(&root, "u/file.txt"), (0o600, 0, 0));
    assert_eq!(std::fs::read_to_string(root.join("u2")).unwrap(), "hello\n");
    assert_eq!(
        std::fs::read_to_string(root.join("u4/a b.txt")).unwrap(),
        "spaced\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("r/__unnamed__")).unwrap(),
        "index\n"
    );
    for path in ["u3", "u3/x", "u3/x/file.txt"] {
        assert_eq!(meta(&root, path), (0o640, 5, 6), "{path}");
    }
    assert_eq!(std::fs::read(root.join("t/app.tar.gz")).unwrap(), tar);
}

/// The file's mtime is `Last-Modified` (http.ParseTime in `save`), clamped
/// to SOURCE_DATE_EPOCH as every other timestamp of the image is.
#[test]
fn add_url_takes_last_modified_clamped_to_the_epoch() {
    let s = setup();
    let dockerfile = "FROM scratch\nADD {U}/file.txt /u/\n";
    let later = (LAST_MODIFIED_SECS + 1000).to_string();
    let root = s.rootfs("late", dockerfile, &[("SOURCE_DATE_EPOCH", &later)]);
    let mtime = |rel: &str| std::fs::metadata(root.join(rel)).unwrap().mtime();
    assert_eq!(mtime("u/file.txt"), LAST_MODIFIED_SECS);
    assert_eq!(mtime("u"), LAST_MODIFIED_SECS + 1000);
    let earlier = (LAST_MODIFIED_SECS - 1000).to_string();
    let root = s.rootfs("early", dockerfile, &[("SOURCE_DATE_EPOCH", &earlier)]);
    let mtime = std::fs::metadata(root.join("u/file.txt")).unwrap().mtime();
    assert_eq!(mtime, LAST_MODIFIED_SECS - 1000);
}

/// `--checksum` as dispatchCopy and go-digest check it, and the download
/// verified against it (`digest mismatch for <url>: ...`).
#[test]
fn add_url_checksum_is_verified() {
    let s = setup();
    let right = dockless::digest::sha256(b"hello\n");
    s.build_ok(
        "sum",
        &format!("FROM scratch\nADD --checksum={right} {{U}}/file.txt /u/\n"),
        &[],
        &[],
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    let e = s.error(
        &format!("FROM scratch\nADD --checksum={wrong} {{U}}/file.txt /u/\n"),
        &[],
    );
    let url = s.server.url("/file.txt");
    assert!(
        e.contains(&format!(
            "Dockerfile:2: digest mismatch for {url}: {right} (expected: {wrong})"
        )),
        "{e}"
    );
    for (dockerfile, message) in [
        (
            "ADD --checksum=md5:x {U}/file.txt /u/",
            "unsupported digest algorithm",
        ),
        (
            "ADD --checksum=sha256:abc {U}/file.txt /u/",
            "invalid checksum digest length",
        ),
        (
            "ADD --checksum=sha256:abc local.txt /u/",
            "checksum requires HTTP(S) or Git sources",
        ),
        (
            "ADD --checksum=sha256:abc {U}/file.txt local.txt /u/",
            "checksum can't be specified for multiple sources",
        ),
    ] {
        let e = s.error(&format!("FROM scratch\n{dockerfile}\n"), &[]);
        assert!(e.contains(message), "{dockerfile}: {e}");
    }
}

/// A failed download names the URL, without user info or query, and the
/// status (BuildKit: "invalid response status 404"); TLS problems are told
/// as the registry client tells them; git sources and URLs in COPY are
/// refused with BuildKit's words.
#[test]
fn add_url_errors_name_the_url_and_the_cause() {
    let s = setup();
    let e = s.error(
        "FROM scratch\nADD https://user:pw@127.0.0.1:{P}/missing?token=secret /u/\n"
            .replace("{P}", &s.server.port.to_string())
            .as_str(),
        &[],
    );
    let url = s.server.url("/missing");
    assert!(
        e.contains(&format!("ADD {url}: invalid response status 404")),
        "{e}"
    );
    // The temporary folder in the message has a random name: look for the
    // credentials as they were written, not for two letters.
    assert!(!e.contains("token=secret") && !e.contains("user:pw"), "{e}");
    let out = dockless(&s.work.path().join("cache2"))
        .arg("build")
        .arg(write_plain_context(
            s.work.path(),
            &s.server.url("/file.txt"),
        ))
        .args([
            "-o",
            &format!("oci:{}", s.work.path().join("no-ca").display()),
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("signed by an unknown authority"), "{e}");
    for (dockerfile, message) in [
        (
            "ADD https://example.invalid/repo.git /x",
            "adding a git repository is not supported yet",
        ),
        (
            "ADD git@example.invalid:r.git /x",
            "adding a git repository is not supported yet",
        ),
        ("COPY {U}/file.txt /x", "source can't be a URL for COPY"),
        (
            "COPY git://example.invalid/r /x",
            "source can't be a git ref for COPY",
        ),
    ] {
        let e = s.error(&format!("FROM scratch\n{dockerfile}\n"), &[]);
        assert!(e.contains(message), "{dockerfile}: {e}");
    }
}

fn write_plain_context(work: &Path, url: &str) -> PathBuf {
    let ctx = work.join("ctx-plain");
    write_context(&ctx, &format!("FROM scratch\nADD {url} /u/\n"), &[]);
    ctx
}

/// Credentials in the URL go out as basic auth over TLS, never over plain
/// HTTP; a download above the cap stops the build.
#[test]
fn add_url_credentials_and_size_cap() {
    let s = setup();
    let creds = s
        .server
        .url("/file.txt")
        .replace("https://", "https://al:s3cret@");
    s.build_ok(
        "creds",
        &format!("FROM scratch\nADD {creds} /u/\n"),
        &[],
        &[],
    );
    let auth = s.server.seen().into_iter().find_map(|r| r.authorization);
    assert_eq!(auth.as_deref(), Some("Basic YWw6czNjcmV0"));
    let plain = FileServer::start(None);
    plain.put("/file.txt", Reply::ok(b"hello\n"));
    let in_clear = plain
        .url("/file.txt")
        .replace("http://", "http://al:s3cret@");
    let e = s.error(&format!("FROM scratch\nADD {in_clear} /u/\n"), &[]);
    assert!(e.contains("credentials in clear"), "{e}");
    assert!(plain.seen().is_empty());
    s.build_ok(
        "plain",
        &format!("FROM scratch\nADD {} /u/\n", plain.url("/file.txt")),
        &[],
        &[],
    );
    s.server.put("/big", Reply::ok(&[7u8; 4096]));
    let e = s.error(
        "FROM scratch\nADD {U}/big /u/\n",
        &["--add-url-max-size", "1K"],
    );
    assert!(e.contains("larger than the limit of 1024 bytes"), "{e}");
}

/// A gzip `Content-Encoding` is undone, as Go's client does for BuildKit.
#[test]
fn add_url_decodes_a_gzip_transfer() {
    let s = setup();
    let body = compress("gz", b"decoded\n");
    s.server.put(
        "/enc.txt",
        Reply::ok(&body).header("Content-Encoding", "gzip"),
    );
    let root = s.rootfs("gzip", "FROM scratch\nADD {U}/enc.txt /u/\n", &[]);
    assert_eq!(
        std::fs::read_to_string(root.join("u/enc.txt")).unwrap(),
        "decoded\n"
    );
}

/// Changed content misses the layer cache; the same content hits it, with
/// or without --checksum (the layer is keyed by what was downloaded).
#[test]
fn add_url_content_decides_the_layer() {
    let s = setup();
    let dockerfile = "FROM scratch\nADD {U}/file.txt /u/\n";
    let first = s.last_layer("c1", dockerfile, &[]);
    assert_eq!(s.last_layer("c2", dockerfile, &[]), first);
    s.server.put(
        "/file.txt",
        Reply::ok(b"changed\n").header("Last-Modified", LAST_MODIFIED),
    );
    let changed = s.last_layer("c3", dockerfile, &[]);
    assert_ne!(changed, first);
    let sum = dockless::digest::sha256(b"changed\n");
    let pinned = format!("FROM scratch\nADD --checksum={sum} {{U}}/file.txt /u/\n");
    assert_eq!(s.last_layer("c4", &pinned, &[]), changed);
}
