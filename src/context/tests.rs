//! Resolving COPY sources and walking the context: wildcards, symlinks,
//! `.dockerignore` and the context's edge.

use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};
use tempfile::TempDir;

/// Creates files (or dirs when the path ends in '/') under `root`.
fn tree(root: &Path, paths: &[&str]) {
    for p in paths {
        let full = root.join(p);
        if p.ends_with('/') {
            fs::create_dir_all(&full).unwrap();
        } else {
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, p.as_bytes()).unwrap();
        }
    }
}

fn ctx_with(paths: &[&str], ignore: Option<&str>) -> (TempDir, BuildContext) {
    let td = TempDir::new().unwrap();
    let root = td.path().join("ctx");
    fs::create_dir(&root).unwrap();
    tree(&root, paths);
    if let Some(text) = ignore {
        fs::write(root.join(".dockerignore"), text).unwrap();
    }
    let bc = BuildContext::open(&root, None).unwrap();
    (td, bc)
}

fn rels(v: &[ContextEntry]) -> Vec<&str> {
    v.iter().map(|e| e.rel.as_str()).collect()
}

fn walk_rels(bc: &BuildContext, src: &str) -> Vec<String> {
    let dir = bc.resolve_source(src).unwrap();
    bc.walk(&dir[0])
        .unwrap()
        .into_iter()
        .map(|e| e.rel)
        .collect()
}

#[test]
fn resolve_literal_and_whole_context() {
    let (_td, bc) = ctx_with(&["app/main.py", "README"], None);
    let v = bc.resolve_source("app/main.py").unwrap();
    assert_eq!(rels(&v), ["app/main.py"]);
    assert_eq!(v[0].kind, EntryKind::File);
    assert_eq!(v[0].size, "app/main.py".len() as u64);
    assert_eq!(v[0].path, bc.root().join("app/main.py"));

    for whole in [".", "/", "./", "app/.."] {
        let v = bc.resolve_source(whole).unwrap();
        assert_eq!(rels(&v), [""], "{whole}");
        assert_eq!(v[0].kind, EntryKind::Dir);
        assert_eq!(v[0].path, bc.root());
    }
    // Leading slash means the context root, and paths are cleaned.
    assert_eq!(
        rels(&bc.resolve_source("/app//./main.py").unwrap()),
        ["app/main.py"]
    );
    assert_eq!(rels(&bc.resolve_source("app/").unwrap()), ["app"]);
}

#[test]
fn resolve_missing_and_parent_escape() {
    let (_td, bc) = ctx_with(&["app/main.py"], None);
    let e = bc.resolve_source("app/missing.txt").unwrap_err();
    assert_eq!(
        e.to_string(),
        "COPY source \"app/missing.txt\": no such file in the build context"
    );
    assert!(matches!(
        bc.resolve_source("app/main.py/x"),
        Err(ContextError::NotFound { .. })
    ));
    assert!(matches!(
        bc.resolve_source(""),
        Err(ContextError::NotFound { .. })
    ));
    for bad in ["../etc/passwd", "app/../../etc/passwd", "/../etc", ".."] {
        let e = bc.resolve_source(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("COPY source {bad:?} is outside the build context")
        );
    }
    // `..` that stays inside is fine.
    assert_eq!(
        rels(&bc.resolve_source("app/../app/main.py").unwrap()),
        ["app/main.py"]
    );
}

#[test]
fn resolve_wildcards() {
    let (_td, bc) = ctx_with(
        &[
            "b.txt",
            "a.txt",
            "c.md",
            "src/x/f.txt",
            "src/y/f.txt",
            "src/z/g.txt",
            "lit*.txt",
            "q1",
            "q22",
        ],
        None,
    );
    assert_eq!(
        rels(&bc.resolve_source("*.txt").unwrap()),
        ["a.txt", "b.txt", "lit*.txt"]
    );
    assert_eq!(
        rels(&bc.resolve_source("src/*/f.txt").unwrap()),
        ["src/x/f.txt", "src/y/f.txt"]
    );
    assert_eq!(
        rels(&bc.resolve_source("src/[xz]").unwrap()),
        ["src/x", "src/z"]
    );
    assert_eq!(rels(&bc.resolve_source("q?").unwrap()), ["q1"]);
    // '*' never crosses '/'.
    assert!(bc.resolve_source("*/f.txt").unwrap().is_empty());
    // Escaped wildcard matches literally.
    assert_eq!(
        rels(&bc.resolve_source("lit\\*.t?t").unwrap()),
        ["lit*.txt"]
    );
    // A wildcard that matches nothing is skipped (BuildKit's
    // AllowEmptyWildcard), but the folder it searches must exist.
    assert!(bc.resolve_source("*.none").unwrap().is_empty());
    assert!(bc.resolve_source("src/*.none").unwrap().is_empty());
    assert!(matches!(
        bc.resolve_source("missing/*.txt"),
        Err(ContextError::NotFound { .. })
    ));
    let e = bc.resolve_source("src/[x").unwrap_err();
    assert!(matches!(e, ContextError::InvalidSource { .. }), "{e}");
    assert!(e.to_string().contains("src/[x"));
}

#[test]
fn excluded_files_invisible_to_resolve_and_walk() {
    let (_td, bc) = ctx_with(
        &[
            "app/a.py",
            "app/secret.key",
            "app/sub/b.py",
            "app/sub/c.key",
            "top.key",
            "logs/x.log",
        ],
        Some("**/*.key\nlogs\n"),
    );
    let e = bc.resolve_source("app/secret.key").unwrap_err();
    assert!(matches!(e, ContextError::Excluded { .. }));
    assert!(e.to_string().contains("excluded by .dockerignore"), "{e}");
    assert!(e.to_string().contains("app/secret.key"));
    assert!(matches!(
        bc.resolve_source("logs/x.log"),
        Err(ContextError::Excluded { .. })
    ));
    assert!(matches!(
        bc.resolve_source("logs"),
        Err(ContextError::Excluded { .. })
    ));
    // Excluded files never reach the build, so the wildcard matches nothing.
    assert!(bc.resolve_source("*.key").unwrap().is_empty());
    assert_eq!(
        rels(&bc.resolve_source("app/*").unwrap()),
        ["app/a.py", "app/sub"]
    );
    assert_eq!(
        walk_rels(&bc, "app"),
        ["app/a.py", "app/sub", "app/sub/b.py"]
    );
    assert_eq!(
        walk_rels(&bc, "."),
        [
            ".dockerignore",
            "app",
            "app/a.py",
            "app/sub",
            "app/sub/b.py"
        ]
    );
}

#[test]
fn walk_reincludes_under_excluded_dir() {
    let (_td, bc) = ctx_with(
        &[
            "docs/README.md",
            "docs/other.md",
            "docs/deep/keep.txt",
            "docs/deep/no.txt",
            "docs/empty/x",
            "src/m.rs",
        ],
        Some("docs\n!docs/README.md\n!docs/deep/keep.txt\n"),
    );
    assert_eq!(
        walk_rels(&bc, "."),
        [
            ".dockerignore",
            "docs",
            "docs/README.md",
            "docs/deep",
            "docs/deep/keep.txt",
            "src",
            "src/m.rs"
        ]
    );
    assert_eq!(
        rels(&bc.resolve_source("docs/README.md").unwrap()),
        ["docs/README.md"]
    );
    assert!(matches!(
        bc.resolve_source("docs/other.md"),
        Err(ContextError::Excluded { .. })
    ));
    // The excluded dir is still visible because it holds re-included files.
    assert_eq!(
        walk_rels(&bc, "docs"),
        ["docs/README.md", "docs/deep", "docs/deep/keep.txt"]
    );
    assert!(matches!(
        bc.resolve_source("docs/empty"),
        Err(ContextError::Excluded { .. })
    ));
}

#[test]
fn walk_reincludes_with_double_star_exception() {
    let (_td, bc) = ctx_with(
        &["vendor/a/keep", "vendor/a/drop", "vendor/b/drop", "keep"],
        Some("vendor\n! **/keep\n"),
    );
    assert_eq!(
        walk_rels(&bc, "."),
        [
            ".dockerignore",
            "keep",
            "vendor",
            "vendor/a",
            "vendor/a/keep"
        ]
    );
    assert_eq!(
        rels(&bc.resolve_source("vendor/*/keep").unwrap()),
        ["vendor/a/keep"]
    );
    assert!(matches!(
        bc.resolve_source("vendor/b"),
        Err(ContextError::Excluded { .. })
    ));
}

#[test]
fn walk_through_symlinked_dir_applies_ignore_to_real_paths() {
    let (_td, bc) = ctx_with(&["real/a.txt", "real/b.log"], Some("real/*.log\n"));
    symlink("real", bc.root().join("alias")).unwrap();
    assert_eq!(walk_rels(&bc, "alias"), ["alias/a.txt"]);
    assert!(matches!(
        bc.resolve_source("alias/b.log"),
        Err(ContextError::Excluded { .. })
    ));
}

#[test]
fn walk_skips_excluded_dir_without_exceptions() {
    let (_td, bc) = ctx_with(&["node_modules/a/b.js", "index.js"], Some("node_modules\n"));
    // Make the excluded dir unreadable: it must not even be opened.
    let nm = bc.root().join("node_modules");
    let is_root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(true);
    fs::set_permissions(&nm, fs::Permissions::from_mode(0o000)).unwrap();
    let got = walk_rels(&bc, ".");
    fs::set_permissions(&nm, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(got, [".dockerignore", "index.js"], "root={is_root}");
}

#[test]
fn symlink_to_absolute_outside_is_rerooted() {
    let (_td, bc) = ctx_with(&["etc/passwd", "x"], None);
    symlink("/etc/passwd", bc.root().join("pw")).unwrap();
    let v = bc.resolve_source("pw").unwrap();
    assert_eq!(rels(&v), ["pw"]);
    assert_eq!(v[0].path, bc.root().join("etc/passwd"));
    assert_eq!(v[0].kind, EntryKind::File);
    assert_eq!(fs::read_to_string(&v[0].path).unwrap(), "etc/passwd");

    // Without a context copy of the target it is simply missing.
    fs::remove_file(bc.root().join("etc/passwd")).unwrap();
    assert!(matches!(
        bc.resolve_source("pw"),
        Err(ContextError::NotFound { .. })
    ));
}

#[test]
fn symlink_climbing_out_is_clamped_at_root() {
    let td = TempDir::new().unwrap();
    fs::write(td.path().join("outside"), "SECRET").unwrap();
    let root = td.path().join("ctx");
    tree(&root, &["a/b/"]);
    symlink("../../outside", root.join("a/esc")).unwrap();
    symlink("../../../../../../outside", root.join("a/b/esc2")).unwrap();
    let bc = BuildContext::open(&root, None).unwrap();
    assert!(matches!(
        bc.resolve_source("a/esc"),
        Err(ContextError::NotFound { .. })
    ));
    assert!(matches!(
        bc.resolve_source("a/b/esc2"),
        Err(ContextError::NotFound { .. })
    ));
    // A context-local file of that name is what gets reached instead.
    fs::write(root.join("outside"), "inside").unwrap();
    for s in ["a/esc", "a/b/esc2", "a/*", "a/b/esc*"] {
        for e in bc.resolve_source(s).unwrap() {
            assert!(e.path.starts_with(bc.root()), "{s}: {:?}", e.path);
            if e.kind == EntryKind::File {
                assert_eq!(fs::read_to_string(&e.path).unwrap(), "inside");
            }
        }
    }
}

#[test]
fn intermediate_symlinked_directories() {
    let td = TempDir::new().unwrap();
    tree(td.path(), &["outside/secret.txt"]);
    let root = td.path().join("ctx");
    tree(&root, &["real/dir/f.txt", "real/dir/g.txt"]);
    symlink("real/dir", root.join("rel_link")).unwrap();
    symlink("/real", root.join("abs_link")).unwrap();
    symlink(td.path().join("outside"), root.join("out_link")).unwrap();
    symlink("../outside", root.join("up_link")).unwrap();
    let bc = BuildContext::open(&root, None).unwrap();

    let v = bc.resolve_source("rel_link/f.txt").unwrap();
    assert_eq!(rels(&v), ["rel_link/f.txt"]);
    assert_eq!(v[0].path, bc.root().join("real/dir/f.txt"));
    let v = bc.resolve_source("abs_link/dir/*.txt").unwrap();
    assert_eq!(rels(&v), ["abs_link/dir/f.txt", "abs_link/dir/g.txt"]);
    assert!(v
        .iter()
        .all(|e| e.path.starts_with(bc.root().join("real/dir"))));
    // Final-component symlink to a dir resolves to the dir.
    let v = bc.resolve_source("rel_link").unwrap();
    assert_eq!(v[0].kind, EntryKind::Dir);
    assert_eq!(
        walk_rels(&bc, "rel_link"),
        ["rel_link/f.txt", "rel_link/g.txt"]
    );
    for s in ["out_link/secret.txt", "up_link/secret.txt"] {
        assert!(
            matches!(bc.resolve_source(s), Err(ContextError::NotFound { .. })),
            "{s}"
        );
    }
}

#[test]
fn symlink_loops_error() {
    let (_td, bc) = ctx_with(&[], None);
    symlink("b", bc.root().join("a")).unwrap();
    symlink("a", bc.root().join("b")).unwrap();
    symlink("self/x", bc.root().join("self")).unwrap();
    assert!(matches!(
        bc.resolve_source("a"),
        Err(ContextError::SymlinkLoop { .. })
    ));
    assert!(matches!(
        bc.resolve_source("self"),
        Err(ContextError::SymlinkLoop { .. })
    ));
}

#[test]
fn excluded_symlink_or_target_is_invisible() {
    let (_td, bc) = ctx_with(
        &["secret.txt", "pub.txt"],
        Some("secret.txt\nhidden_link\n"),
    );
    symlink("secret.txt", bc.root().join("to_secret")).unwrap();
    symlink("pub.txt", bc.root().join("hidden_link")).unwrap();
    assert!(matches!(
        bc.resolve_source("to_secret"),
        Err(ContextError::Excluded { .. })
    ));
    assert!(matches!(
        bc.resolve_source("hidden_link"),
        Err(ContextError::Excluded { .. })
    ));
}

#[test]
fn walk_keeps_inner_symlinks_as_symlinks() {
    let (_td, bc) = ctx_with(&["d/f.txt", "d/sub/g.txt"], None);
    symlink("/etc/passwd", bc.root().join("d/abs")).unwrap();
    symlink("sub", bc.root().join("d/dirlink")).unwrap();
    let dir = &bc.resolve_source("d").unwrap()[0];
    let v = bc.walk(dir).unwrap();
    assert_eq!(
        rels(&v),
        ["d/abs", "d/dirlink", "d/f.txt", "d/sub", "d/sub/g.txt"]
    );
    assert_eq!(v[0].kind, EntryKind::Symlink(PathBuf::from("/etc/passwd")));
    assert_eq!(v[1].kind, EntryKind::Symlink(PathBuf::from("sub")));
    assert_eq!(v[0].path, bc.root().join("d/abs"));
}

/// FIFOs and sockets are part of the context (BuildKit's fsutil sends a
/// FIFO as a FIFO and a socket as an empty regular file); devices are not.
#[test]
fn walk_order_is_depth_first_and_keeps_fifos_and_sockets() {
    let (_td, bc) = ctx_with(&["a/b", "a-c", "a.d", "z/"], None);
    let fifo = bc.root().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let _socket = std::os::unix::net::UnixListener::bind(bc.root().join("sock")).unwrap();
    assert_eq!(
        walk_rels(&bc, "."),
        ["a", "a/b", "a-c", "a.d", "pipe", "sock", "z"]
    );
    assert_eq!(bc.resolve_source("pipe").unwrap()[0].kind, EntryKind::Fifo);
    assert_eq!(bc.resolve_source("so*").unwrap()[0].kind, EntryKind::Socket);
    // Tests run as root (see .ci/run), so a device can be made.
    let dev = bc.root().join("null");
    let made = std::process::Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status();
    assert!(made.is_ok_and(|s| s.success()), "mknod");
    assert!(matches!(
        bc.resolve_source("null"),
        Err(ContextError::Unsupported { .. })
    ));
    assert!(!walk_rels(&bc, ".").contains(&"null".to_string()));
    // Walking a file yields nothing.
    let f = &bc.resolve_source("a/b").unwrap()[0];
    assert!(bc.walk(f).unwrap().is_empty());
}

#[test]
fn metadata_fields() {
    let (_td, bc) = ctx_with(&["f", "d/"], None);
    let f = bc.root().join("f");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4751)).unwrap();
    fs::hard_link(&f, bc.root().join("d/h")).unwrap();
    let e = &bc.resolve_source("f").unwrap()[0];
    let h = &bc.resolve_source("d/h").unwrap()[0];
    assert_eq!(e.mode, 0o4751);
    assert_eq!(e.nlink, 2);
    assert_eq!((e.dev, e.ino), (h.dev, h.ino));
    assert!(e.mtime > 0);
}

#[test]
fn walk_refuses_entry_outside_context() {
    let (td, bc) = ctx_with(&[], None);
    let mut fake = bc.resolve_source(".").unwrap().remove(0);
    fake.path = td.path().to_path_buf();
    assert!(matches!(
        bc.walk(&fake),
        Err(ContextError::NotInContext { .. })
    ));
}

#[test]
fn dockerfile_specific_ignore_takes_precedence() {
    let td = TempDir::new().unwrap();
    let root = td.path().join("ctx");
    tree(&root, &["a.txt", "b.txt", "docker/app.Dockerfile"]);
    fs::write(root.join(".dockerignore"), "a.txt\n").unwrap();
    let df = FileRef::inside(&root, "the build context", "docker/app.Dockerfile");

    // Without a specific file the root one applies.
    let bc = BuildContext::open(&root, Some(&df)).unwrap();
    assert!(bc.ignore().is_excluded("a.txt"));
    assert!(!bc.ignore().is_excluded("b.txt"));

    fs::write(root.join("docker/app.Dockerfile.dockerignore"), "b.txt\n").unwrap();
    let bc = BuildContext::open(&root, Some(&df)).unwrap();
    assert!(!bc.ignore().is_excluded("a.txt"));
    assert!(bc.ignore().is_excluded("b.txt"));
    assert!(bc.resolve_source("a.txt").is_ok());

    // A Dockerfile outside the context can carry its own ignore file too.
    let ext = FileRef::Given(td.path().join("Other.Dockerfile"));
    fs::write(td.path().join("Other.Dockerfile.dockerignore"), "[bad\n").unwrap();
    let e = BuildContext::open(&root, Some(&ext)).err().unwrap();
    assert!(
        e.to_string()
            .contains("Other.Dockerfile.dockerignore:1: invalid pattern \"[bad\""),
        "{e}"
    );

    // No ignore file at all.
    fs::remove_file(root.join(".dockerignore")).unwrap();
    let bc = BuildContext::open(&root, None).unwrap();
    assert!(bc.ignore().is_empty());
}

#[test]
fn open_errors_carry_path() {
    let td = TempDir::new().unwrap();
    let missing = td.path().join("nope");
    let e = BuildContext::open(&missing, None).err().unwrap();
    assert!(e.to_string().contains("nope"), "{e}");
    let f = td.path().join("file");
    fs::write(&f, "").unwrap();
    assert!(matches!(
        BuildContext::open(&f, None),
        Err(ContextError::ContextNotDir { .. })
    ));
}

#[test]
fn ignore_files_are_read_inside_their_root_and_capped() {
    let td = TempDir::new().unwrap();
    let root = td.path().join("ctx");
    tree(&root, &["a.txt", "Dockerfile"]);
    fs::write(td.path().join("secret"), "TOPSECRET[\n").unwrap();
    let df = FileRef::inside(&root, "the build context", "Dockerfile");
    for target in [td.path().join("secret"), PathBuf::from("/dev/zero")] {
        for name in [".dockerignore", "Dockerfile.dockerignore"] {
            let _ = fs::remove_file(root.join(name));
            symlink(&target, root.join(name)).unwrap();
            let e = BuildContext::open(&root, Some(&df)).err().unwrap();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{name}: leads out of the build context")),
                "{msg}"
            );
            assert!(!msg.contains("TOPSECRET"), "{msg}");
            fs::remove_file(root.join(name)).unwrap();
        }
    }
    // Inside the context a symlink is followed; a huge file is refused.
    fs::write(root.join("ignore.txt"), "a.txt\n").unwrap();
    symlink("ignore.txt", root.join(".dockerignore")).unwrap();
    assert!(BuildContext::open(&root, Some(&df))
        .unwrap()
        .ignore()
        .is_excluded("a.txt"));
    fs::write(
        root.join("ignore.txt"),
        vec![b'#'; IGNORE_MAX_BYTES as usize + 1],
    )
    .unwrap();
    let e = BuildContext::open(&root, Some(&df)).err().unwrap();
    assert_eq!(
        e.to_string(),
        ".dockerignore: larger than 1 MiB, the most that is read"
    );
    fs::remove_file(root.join(".dockerignore")).unwrap();
    fs::create_dir(root.join(".dockerignore")).unwrap();
    let e = BuildContext::open(&root, Some(&df)).err().unwrap();
    assert_eq!(e.to_string(), ".dockerignore: not a regular file");
    // What an invalid pattern quotes is cut short.
    fs::remove_dir(root.join(".dockerignore")).unwrap();
    fs::write(
        root.join(".dockerignore"),
        format!("[{}\n", "x".repeat(500)),
    )
    .unwrap();
    let e = BuildContext::open(&root, Some(&df)).err().unwrap();
    assert!(e.to_string().len() < 200, "{e}");
}
