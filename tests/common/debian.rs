//! A Debian base image for RUN tests: `mmdebstrap --variant=minbase` of
//! Debian's packages plus python3 and pip (shaped like the python image:
//! `python` is python3 and pip may install into the system), turned into an
//! OCI layout by dockless itself (`FROM scratch` + `ADD rootfs.tar /`).
//!
//! Made once and kept outside the clone, under
//! `$DOCKLESS_TEST_FIXTURES` (default `~/.cache/dockless-test-fixtures`),
//! in a folder named after the suite, the architecture and a hash of the
//! recipe; it appears there by a rename, so a build cut short is never
//! reused. A lock file serialises test processes that need it at once.

use super::{dockless, require_tool, run_ok};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's release the base is made from: the suite the CI machines run.
pub const SUITE: &str = "bookworm";
/// The image's name and tag inside the cached layout.
pub const LAYOUT_TAG: &str = "base/debian:bookworm";
/// A small package the base does not have: GNU hello.
pub const SMALL_PACKAGE: &str = "hello";

/// Packages beyond minbase: the python image's tools.
const PACKAGES: &str = "python3,python3-pip,python-is-python3";
/// Run in the new root before it is packed: pip may install into the
/// system (as in the python image; PEP 668's marker refuses it otherwise).
const CUSTOMIZE: &str = "rm -f \"$1\"/usr/lib/python3*/EXTERNALLY-MANAGED";
const DOCKERFILE: &str = "FROM scratch\nADD rootfs.tar /\n\
    ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8\n\
    CMD [\"bash\"]\n";

/// The Debian mirror, over http: this network intercepts TLS to package
/// indexes, and apt checks the Release signatures itself.
pub fn mirror() -> String {
    std::env::var("DOCKLESS_TEST_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// Where fixtures are kept between runs, outside the clone.
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKLESS_TEST_FIXTURES") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME or DOCKLESS_TEST_FIXTURES must be set");
    PathBuf::from(home).join(".cache/dockless-test-fixtures")
}

/// Debian's name for this machine's architecture.
pub fn debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no Debian architecture known for {other}"),
    }
}

/// Runs `make(dir)` once per `name` under the fixtures folder and returns
/// the folder; `make` writes into a fresh folder that is renamed into place
/// only when it returns, under a lock other test processes wait for.
pub fn cached_fixture(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    let root = fixtures_dir();
    fs::create_dir_all(&root).unwrap();
    let done = root.join(name);
    let lock = fs::File::create(root.join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    if !done.is_dir() {
        let partial = root.join(format!("{name}.partial"));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).unwrap();
        make(&partial);
        fs::rename(&partial, &done).unwrap();
    }
    done
}

/// A short hash of what a fixture is made from, for its folder name.
pub fn recipe_key(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..6])
}

/// The cached OCI layout of the Debian base (made on first use: about two
/// minutes, mostly downloading), holding [`LAYOUT_TAG`].
pub fn debian_base_layout() -> PathBuf {
    let mirror = mirror();
    let key = recipe_key(&["v1", SUITE, &mirror, PACKAGES, CUSTOMIZE, DOCKERFILE]);
    let name = format!("debian-{SUITE}-{}-{key}", debian_arch());
    cached_fixture(&name, |dir| make_debian_layout(dir, &mirror)).join("layout")
}

fn make_debian_layout(dir: &Path, mirror: &str) {
    let ctx = dir.join("context");
    fs::create_dir_all(&ctx).unwrap();
    let started = std::time::Instant::now();
    run_ok(
        Command::new(require_tool("mmdebstrap"))
            .args(["--variant=minbase", "--skip=output/dev", "--quiet"])
            .arg(format!("--include={PACKAGES}"))
            .arg(format!("--customize-hook={CUSTOMIZE}"))
            .arg(SUITE)
            .arg(ctx.join("rootfs.tar"))
            .arg(mirror),
    );
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    run_ok(
        dockless(&dir.join("cache"))
            .arg("build")
            .arg(&ctx)
            .args(["-t", LAYOUT_TAG, "-o"])
            .arg(format!("oci:{}", dir.join("layout").display())),
    );
    fs::remove_dir_all(&ctx).unwrap();
    fs::remove_dir_all(dir.join("cache")).unwrap();
    eprintln!(
        "made the Debian base fixture in {:.0?} under {}",
        started.elapsed(),
        dir.display()
    );
}

/// Pushes the Debian base to the plain-HTTP registry at `addr` as
/// `base/debian:bookworm`, byte for byte; returns that reference.
pub fn push_debian_base(addr: &str, work: &Path) -> String {
    let layout = debian_base_layout();
    let reference = format!("{addr}/{LAYOUT_TAG}");
    run_ok(
        dockless(&work.join("base-cache"))
            .arg("push")
            .arg(format!("oci:{}:{LAYOUT_TAG}", layout.display()))
            .args(["-t", &reference, "--insecure", "-q"]),
    );
    reference
}
