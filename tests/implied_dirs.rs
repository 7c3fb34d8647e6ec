//! A base layer may hold `a/b/file` without entries for `a/` and `a/b/`
//! (valid: runtimes and umoci create the parents). Such an image is pushed
//! to a real registry, then used by `COPY --from=` and by `FROM`; the
//! results are unpacked with umoci.

mod common;
mod regsupport;

use common::*;
use regsupport::{build_image_of, Registry, RegistryCfg};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Pushes an image whose only layer has files and no directory entries.
fn push_dirless_base(reg: &Registry, work: &Path) -> String {
    let files = [
        ("a/b/file", "deep\n"),
        ("a/b/c/deeper", "deeper\n"),
        ("top.txt", "top\n"),
    ]
    .map(|(p, d)| (p.to_string(), d.as_bytes().to_vec()));
    let img = build_image_of(work, "dirless", &files);
    let reference = format!("{}/base/dirless:1", reg.addr());
    let target = dockless::name::Reference::parse_tag(&reference).unwrap();
    let opts = dockless::remote::Options::default().insecure(&reg.addr());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(dockless::remote::push(&img, &target, &opts))
        .expect("push the base without directory entries");
    reference
}

/// Builds `dockerfile` (with a `hello.txt` in its context) to an OCI
/// layout and unpacks it with umoci; returns the rootfs.
fn build_and_unpack(
    reg: &Registry,
    work: &Path,
    name: &str,
    dockerfile: &str,
) -> std::path::PathBuf {
    let ctx = work.join(format!("ctx-{name}"));
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let layout = work.join(format!("layout-{name}"));
    run_ok(
        dockless(&work.join("cache"))
            .arg("build")
            .arg(&ctx)
            .args(["-t", "app:v1", "--insecure-registry", &reg.addr(), "-o"])
            .arg(format!("oci:{}", layout.display())),
    );
    umoci_unpack(&layout, "app:v1", &work.join(format!("bundle-{name}")))
}

/// A directory made for an implied parent: root-owned, mode 0755.
fn assert_implied_dir(path: &Path) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(md.is_dir(), "{} is not a directory", path.display());
    assert_eq!(md.mode() & 0o7777, 0o755, "{}", path.display());
    assert_eq!((md.uid(), md.gid()), (0, 0), "{}", path.display());
}

#[test]
fn copy_from_an_image_without_directory_entries() {
    let reg = Registry::start(RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let base = push_dirless_base(&reg, tmp.path());
    let dockerfile = format!(
        "FROM scratch\n\
         COPY --from={base} / /x/\n\
         COPY --from={base} /a/b /y/\n\
         COPY --from={base} /a/b/c/deeper /z/deeper\n"
    );
    let rootfs = build_and_unpack(&reg, tmp.path(), "copy", &dockerfile);
    assert_eq!(
        fs::read_to_string(rootfs.join("x/a/b/file")).unwrap(),
        "deep\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("x/a/b/c/deeper")).unwrap(),
        "deeper\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("x/top.txt")).unwrap(),
        "top\n"
    );
    for dir in ["x/a", "x/a/b", "x/a/b/c", "y/c"] {
        assert_implied_dir(&rootfs.join(dir));
    }
    assert_eq!(fs::read_to_string(rootfs.join("y/file")).unwrap(), "deep\n");
    assert_eq!(
        fs::read_to_string(rootfs.join("z/deeper")).unwrap(),
        "deeper\n"
    );
}

/// FROM the image, COPY into its implied directories; a later stage built
/// on that one copies its /a, which shows the build's own model of it.
#[test]
fn from_an_image_without_directory_entries_then_copy_into_an_implied_dir() {
    let reg = Registry::start(RegistryCfg::default());
    let tmp = tempfile::tempdir().unwrap();
    let base = push_dirless_base(&reg, tmp.path());
    let dockerfile = format!(
        "FROM {base} AS app\n\
         COPY hello.txt /a/b/\n\
         COPY hello.txt /a/b/c/again.txt\n\
         FROM app\n\
         COPY --from=app /a /copy-of-a\n"
    );
    let rootfs = build_and_unpack(&reg, tmp.path(), "from", &dockerfile);
    for root in ["a", "copy-of-a"] {
        let at = |rel: &str| fs::read_to_string(rootfs.join(root).join(rel)).unwrap();
        assert_eq!(at("b/hello.txt"), "hello\n", "{root}");
        assert_eq!(at("b/c/again.txt"), "hello\n", "{root}");
        // The base's files are still there, under the same implied directories.
        assert_eq!(at("b/file"), "deep\n", "{root}");
        assert_eq!(at("b/c/deeper"), "deeper\n", "{root}");
        for dir in ["b", "b/c"] {
            assert_implied_dir(&rootfs.join(root).join(dir));
        }
    }
    assert_implied_dir(&rootfs.join("a"));
}
