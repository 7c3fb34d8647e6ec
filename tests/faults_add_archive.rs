//! `ADD` of a hostile tar through `dockless build`: `../` entries, absolute
//! names and symlinks leading out must not write outside the image root,
//! neither at build time nor when umoci unpacks the result.
mod common;

use common::*;
use std::path::Path;

/// A tar entry with a raw name (the tar crate refuses `..` through its
/// safe API, which is the point here).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn evil_tar(depth_to_tmp: usize, with_dotdot: bool) -> Vec<u8> {
    let up = "../".repeat(depth_to_tmp);
    let mut t = Vec::new();
    if with_dotdot {
        raw_entry(
            &mut t,
            &format!("{up}escaped-dotdot.txt"),
            tar::EntryType::Regular,
            "",
            b"x",
        );
    }
    raw_entry(
        &mut t,
        "/escaped-absolute.txt",
        tar::EntryType::Regular,
        "",
        b"x",
    );
    raw_entry(
        &mut t,
        "ok/inside.txt",
        tar::EntryType::Regular,
        "",
        b"fine",
    );
    raw_entry(&mut t, "out", tar::EntryType::Symlink, &up, b"");
    raw_entry(
        &mut t,
        "out/escaped-via-symlink.txt",
        tar::EntryType::Regular,
        "",
        b"x",
    );
    raw_entry(&mut t, "abs", tar::EntryType::Symlink, "/", b"");
    raw_entry(
        &mut t,
        "abs/escaped-via-abs-symlink.txt",
        tar::EntryType::Regular,
        "",
        b"x",
    );
    t.extend_from_slice(&[0u8; 1024]);
    t
}

fn escaped(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("escaped-"))
        .map(|e| e.path().display().to_string())
        .collect()
}

#[test]
fn tar_with_dotdot_entries_never_writes_outside_the_image_root() {
    check(true);
}

/// Without `..` entries the archive is accepted: absolute names and symlinks
/// leading out stay inside the image, also when umoci unpacks it.
#[test]
fn tar_with_outward_symlinks_never_writes_outside_the_image_root() {
    assert!(check(false), "accepted and unpacked");
}

/// True when the build succeeded and the image was unpacked and checked.
fn check(with_dotdot: bool) -> bool {
    require_tool("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD evil.tar /dest/\n",
    )
    .unwrap();
    std::fs::write(ctx.join("evil.tar"), evil_tar(8, with_dotdot)).unwrap();
    let layout = tmp.path().join("layout");
    let out = dockless(&tmp.path().join("cache"))
        .arg("build")
        .arg(&ctx)
        .args(["-t", "evil:v1", "--output"])
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(escaped(tmp.path()).is_empty(), "{:?}", escaped(tmp.path()));
    if !out.status.success() {
        // Refusing the archive is fine, as long as it says why and writes nothing.
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("evil.tar"), "{err}");
        eprintln!("refused: {err}");
        return false;
    }
    let bundle = tmp.path().join("bundle");
    let rootfs = umoci_unpack(&layout, "evil:v1", &bundle);
    let leaked = escaped(tmp.path());
    let outside: Vec<_> = leaked
        .iter()
        .filter(|p| !Path::new(p).starts_with(&rootfs))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the image root: {outside:?}"
    );
    assert_eq!(
        std::fs::read(rootfs.join("dest/ok/inside.txt")).unwrap(),
        b"fine"
    );
    true
}
