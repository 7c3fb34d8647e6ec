//! Dockerfile semantics where buildah 1.28 differs from BuildKit (or has no
//! such feature): each test builds with dockless, unpacks the image with
//! umoci and checks BuildKit's result, citing the BuildKit source that
//! decides it. Where buildah agrees, tests/buildah_compare.rs compares.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

struct Image {
    rootfs: PathBuf,
    config: Value,
    _tmp: tempfile::TempDir,
}

impl Image {
    fn env(&self, name: &str) -> Option<String> {
        self.config["config"]["Env"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .find_map(|e| e.strip_prefix(&format!("{name}=")).map(String::from))
    }

    fn label(&self, name: &str) -> String {
        let value = &self.config["config"]["Labels"][name];
        value
            .as_str()
            .unwrap_or_else(|| panic!("no label {name}"))
            .into()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.rootfs.join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// (mode, uid, gid) of a path, not following a last symlink.
    fn meta(&self, rel: &str) -> (u32, u32, u32) {
        let md = std::fs::symlink_metadata(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        (md.mode() & 0o7777, md.uid(), md.gid())
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).symlink_metadata().is_ok()
    }
}

/// Builds a context of `files` (after `setup` ran in it) with `args`.
fn try_build(
    dockerfile: &str,
    files: &[(&str, &[u8])],
    setup: impl FnOnce(&Path),
    args: &[&str],
) -> Result<Image, String> {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write_context(&ctx, dockerfile, files);
    setup(&ctx);
    let layout = tmp.path().join("layout");
    let out = dockless_build(tmp.path(), &ctx, &layout, args);
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(3), "a build error exits 3");
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let rootfs = umoci_unpack(&layout, "test:v1", &tmp.path().join("bundle"));
    Ok(Image {
        rootfs,
        config: layout_config(&layout),
        _tmp: tmp,
    })
}

fn build(dockerfile: &str, files: &[(&str, &[u8])]) -> Image {
    try_build(dockerfile, files, |_| {}, &[]).unwrap_or_else(|e| panic!("{dockerfile}\n{e}"))
}

fn build_error(dockerfile: &str, files: &[(&str, &[u8])]) -> String {
    match try_build(dockerfile, files, |_| {}, &[]) {
        Ok(_) => panic!("expected a build error for {dockerfile:?}"),
        Err(e) => e,
    }
}

// 1. One instruction, several assignments.

/// ENV expands every pair against the variables before it (BuildKit
/// `dockerfile2llb/convert.go` `dispatch`, `instructions/commands.go`
/// `EnvCommand.Expand`); ARG applies left to right (`dispatchArg`, since
/// dockerfile/1.8.0, commit 47a52a17b), and a build arg is not expanded.
/// buildah 1.28 gives `Y=-y` for the ARG case.
#[test]
fn env_expands_before_setting_and_arg_left_to_right() {
    let dockerfile = "ARG GX=1 GY=${GX}-g\nFROM scratch\nARG GY\nARG X=1 Y=${X}-y\n\
        ENV A=1 B=${A:-unset}\nENV Y=$Y GY=$GY\n";
    let image = build(dockerfile, &[]);
    assert_eq!(image.env("Y").as_deref(), Some("1-y"));
    assert_eq!(image.env("GY").as_deref(), Some("1-g"));
    assert_eq!(image.env("B").as_deref(), Some("unset"));
    let given = try_build(dockerfile, &[], |_| {}, &["--build-arg", "Y=$X"]).unwrap();
    assert_eq!(given.env("Y").as_deref(), Some("$X"));
}

/// A bare `ARG X` with no value anywhere leaves X unset (`dispatchArg`
/// adds no env when `arg.Value` is nil), and keeps an earlier value.
#[test]
fn bare_arg_leaves_the_variable_unset() {
    let image = build(
        "FROM scratch\nARG X\nARG Z=1\nARG Z\nENV D=${X-def} S=${X+set} Z=$Z\n",
        &[],
    );
    assert_eq!(image.env("D").as_deref(), Some("def"));
    assert_eq!(image.env("S").as_deref(), Some(""));
    assert_eq!(image.env("Z").as_deref(), Some("1"));
}

// 2. Word splitting after expansion.

/// JSON words are expanded and never split; only EXPOSE splits after
/// expansion (`convert_expose.go` `dispatchExpose` uses `ProcessWords`).
#[test]
fn volume_words_stay_whole_and_expose_splits() {
    let image = build(
        "FROM scratch\nENV D=\"/x y\" P=\"80 443\"\nVOLUME [\"$D\"]\nEXPOSE $P\n",
        &[],
    );
    let volumes = image.config["config"]["Volumes"].as_object().unwrap();
    assert_eq!(volumes.keys().collect::<Vec<_>>(), ["/x y"]);
    let ports = image.config["config"]["ExposedPorts"].as_object().unwrap();
    assert_eq!(ports.keys().collect::<Vec<_>>(), ["443/tcp", "80/tcp"]);
    let e = build_error("FROM scratch\nVOLUME $UNSET\n", &[]);
    assert!(
        e.contains("Dockerfile:2: VOLUME specified can not be an empty string"),
        "{e}"
    );
    // Outside JSON, quotes do not group words (`parseStringsWhitespaceDelimited`).
    let e = build_error("FROM scratch\nVOLUME \"/a b\"\n", &[]);
    assert!(
        e.contains("unexpected end of statement while looking for matching double-quote"),
        "{e}"
    );
}

// 9. WORKDIR.

/// An empty WORKDIR keeps the current one (`NormalizePath`).
#[test]
fn empty_workdir_keeps_the_current_one() {
    let image = build("FROM scratch\nWORKDIR /a/b/\nWORKDIR $UNSET\n", &[]);
    assert_eq!(image.config["config"]["WorkingDir"], "/a/b/");
    assert_eq!(image.meta("a/b"), (0o755, 0, 0));
}

// 10. Heredocs under `# escape=`.

/// Heredoc bodies expand once with backslash escapes and plain quotes,
/// whatever the escape directive (`instructions/commands.go`
/// `SourcesAndDest.ExpandRaw`, dockerfile/1.4.0; BuildKit test
/// `testCopyHeredocSpecialSymbols`). buildah 1.28 has no heredocs.
#[test]
fn heredoc_bodies_expand_with_backslash_whatever_the_escape() {
    let body = "a\\$X `$X \\\\ \\q\necho \\\"hi\\\" '$X'\n";
    let expected = "a$X `val \\ q\necho \"hi\" 'val'\n";
    for directive in ["# escape=`\n", ""] {
        let dockerfile = format!(
            "{directive}FROM scratch\nENV X=val\nCOPY <<EOF /f\n{body}EOF\nCOPY <<\"EOF\" /raw\n\\$X\nEOF\n"
        );
        let image = build(&dockerfile, &[]);
        assert_eq!(image.read("f"), expected, "{directive:?}");
        assert_eq!(image.read("raw"), "\\$X\n", "{directive:?}");
    }
}

// 11. What BuildKit refuses.

/// `--from` is taken as written (`convert.go` `toCommand`, dockerfile/1.18.0,
/// test `testDockerfileCopyFromArgs`), in every stage, built or not.
#[test]
fn copy_from_refuses_variables() {
    let message = "variable expansion is not supported for --from, define a new stage with \
                   FROM using ARG from global scope as a workaround";
    let e = build_error(
        "ARG S=b\nFROM scratch AS b\nCOPY f /f\nFROM scratch\nCOPY --from=${S} /f /g\n",
        &[("f", b"x")],
    );
    assert!(e.contains(&format!("Dockerfile:5: {message}")), "{e}");
    let e = match try_build(
        "FROM scratch AS b\nCOPY f /f\nFROM scratch AS unbuilt\nCOPY --from=$FOO . .\n",
        &[("f", b"x")],
        |_| {},
        &["--target", "b"],
    ) {
        Ok(_) => panic!("an unbuilt stage's COPY --from=$FOO must be refused"),
        Err(e) => e,
    };
    assert!(e.contains(message), "{e}");
    let image = build(
        "FROM scratch AS b\nCOPY f /f\nFROM scratch\nCOPY --from=B /f /g\n",
        &[("f", b"x")],
    );
    assert_eq!(image.read("g"), "x");
}

// 12. Shell parameter expansion.

/// `#`, `##`, `%`, `%%`, `/` and `//` (`shell/lex.go` `processDollar`);
/// buildah 1.28 fails with "Missing ':' in substitution".
#[test]
fn pattern_expansions_in_labels() {
    let image = build(
        "FROM scratch\nENV V=/usr/local/bin/app.tar.gz\n\
         LABEL a=${V#*/} b=${V##*/} c=${V%.*} d=${V%%.*} e=${V/local/LOCAL} f=${V//l/L} g=${UNSET#x}\n",
        &[],
    );
    for (key, value) in [
        ("a", "usr/local/bin/app.tar.gz"),
        ("b", "app.tar.gz"),
        ("c", "/usr/local/bin/app.tar"),
        ("d", "/usr/local/bin/app"),
        ("e", "/usr/LOCAL/bin/app.tar.gz"),
        ("f", "/usr/LocaL/bin/app.tar.gz"),
        ("g", ""),
    ] {
        assert_eq!(image.label(key), value, "{key}");
    }
    let e = build_error("FROM scratch\nENV V=x\nLABEL a=${V:#x}\n", &[]);
    assert!(
        e.contains("unsupported modifier (:#) in substitution"),
        "{e}"
    );
}

// 4. ADD of compressed files.

/// Detected by content (`solver/llbsolver/file/unpack.go` `isArchivePath`):
/// a tar.xz under any name is extracted, an empty tar is copied.
#[test]
fn add_detects_archives_by_content() {
    let tar = tar_of(&[Member::file("f.txt", "inside\n")]);
    let data = compress("xz", &tar);
    let empty = [0u8; 1024];
    let files: &[(&str, &[u8])] = &[("data.bin", &data), ("e.tar", &empty)];
    let image = build("FROM scratch\nADD data.bin /x/\nADD e.tar /d/\n", files);
    assert_eq!(image.read("x/f.txt"), "inside\n");
    assert_eq!(std::fs::read(image.path("d/e.tar")).unwrap(), empty);
}

// 5. Special files.

/// A FIFO source stays a FIFO (fsutil `copy/copy.go` `copyDevice`); buildah
/// 1.28 makes a folder here. A socket reaches BuildKit's context as an
/// empty regular file with its permissions (fsutil `stat.go` `mkstat` clears
/// the socket bit; `send.go` sends no data). Issue 15 said "skipped", as
/// buildah and the classic builder do; BuildKit is followed.
#[test]
fn fifos_stay_fifos_and_sockets_become_empty_files() {
    use std::os::unix::fs::PermissionsExt;
    let mut listener = None;
    let image = try_build(
        "FROM scratch\nCOPY d/pipe /p\nCOPY d /d/\n",
        &[("d/file", b"x")],
        |ctx| {
            run_ok(std::process::Command::new("mkfifo").arg(ctx.join("d/pipe")));
            let sock = ctx.join("d/sock");
            listener = Some(std::os::unix::net::UnixListener::bind(&sock).unwrap());
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o751)).unwrap();
        },
        &[],
    )
    .unwrap();
    for fifo in ["p", "d/pipe"] {
        let md = std::fs::symlink_metadata(image.path(fifo)).unwrap();
        assert!(md.file_type().is_fifo(), "{fifo}");
    }
    let sock = std::fs::symlink_metadata(image.path("d/sock")).unwrap();
    assert!(sock.file_type().is_file());
    assert_eq!((sock.len(), sock.mode() & 0o7777), (0, 0o751));
}

// 6. Tar extraction like Docker's `Unpack`.

/// The archive's `./` entry never changes the destination, and with
/// `ADD --chown` the entries get the owner while implied folders stay
/// root's (go-archive `Unpack`, `createImpliedDirectories`; BuildKit
/// v0.23.0 for --chown). buildah 1.28 applies `./` and owns implied folders.
#[test]
fn add_tar_keeps_the_destination_and_owns_entries_with_chown() {
    let tar = tar_of(&[
        Member::dir("./").mode(0o700).owner(5, 5),
        Member::file("implied/sub/f", "x").mode(0o640).owner(7, 8),
        Member::dir("listed/").mode(0o711).owner(7, 8),
        Member::symlink("sl", "/nowhere").owner(7, 8),
    ]);
    let image = build(
        "FROM scratch\nADD t.tar /dest/\nADD --chown=11:12 t.tar /own/\n",
        &[("t.tar", &tar)],
    );
    assert_eq!(image.meta("dest"), (0o755, 0, 0));
    assert_eq!(image.meta("dest/implied/sub/f"), (0o640, 7, 8));
    assert_eq!(image.meta("own"), (0o755, 11, 12));
    assert_eq!(image.meta("own/implied"), (0o755, 0, 0));
    assert_eq!(image.meta("own/implied/sub"), (0o755, 0, 0));
    assert_eq!(image.meta("own/implied/sub/f"), (0o640, 11, 12));
    assert_eq!(image.meta("own/listed"), (0o711, 11, 12));
    assert_eq!(image.meta("own/sl").1, 11);
}

// 7. Wildcards.

/// A wildcard that matches nothing is skipped, even alone (daemon
/// `solver/llbsolver/file/backend.go` `docopy` with `AllowEmptyWildcard`;
/// BuildKit test `testEmptyWildcard`), but the folder it searches must exist
/// (fsutil `ResolveWildcards` walks it). buildah 1.28 refuses the lone one
/// and accepts the missing folder.
#[test]
fn empty_wildcards_are_skipped_when_their_folder_exists() {
    let image = build(
        "FROM scratch AS st\nCOPY foo /etc/foo\nFROM scratch\nCOPY nomatch* /x/\n\
         COPY --from=st /etc/*.nomatch /y/\nCOPY foo /foo\n",
        &[("foo", b"foo")],
    );
    assert!(!image.exists("x") && !image.exists("y"));
    assert_eq!(image.read("foo"), "foo");
    let e = build_error(
        "FROM scratch\nCOPY foo missing/*.txt /x/\n",
        &[("foo", b"")],
    );
    assert!(e.contains("missing/*.txt"), "{e}");
    let e = build_error(
        "FROM scratch AS st\nCOPY foo /foo\nFROM scratch\nCOPY --from=st /nodir/*.txt /x/\n",
        &[("foo", b"")],
    );
    assert!(e.contains("/nodir: no such file or directory"), "{e}");
}

// 8. Destinations through symlinks.

/// A destination that is a symlink, dangling or not, is written through,
/// resolved inside the image (fsutil `copy/copy.go` `Copy` with continuity
/// `fs.RootPath`); a name joined to a folder is not resolved again, so a
/// link there is replaced. buildah 1.28 makes a folder at a dangling link.
#[test]
fn copy_writes_through_destination_symlinks() {
    let links = tar_of(&[
        Member::symlink("l_dangling_file", "/target/file.txt"),
        Member::symlink("l_up", "../../../etc/outside"),
        Member::dir("tdir"),
        Member::symlink("tdir/new.txt", "/elsewhere"),
        Member::symlink("l_doc", "/docs/here.txt"),
    ]);
    let image = build(
        "FROM scratch\nADD links.tar /\nCOPY new.txt /l_dangling_file\nCOPY new.txt /l_up\n\
         COPY new.txt /tdir/\nCOPY <<EOF /l_doc\nheredoc\nEOF\n",
        &[("links.tar", &links), ("new.txt", b"new\n")],
    );
    let link = std::fs::symlink_metadata(image.path("l_dangling_file")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(image.read("target/file.txt"), "new\n");
    assert_eq!(image.read("etc/outside"), "new\n");
    assert!(!image.path("tdir/new.txt").is_symlink());
    assert_eq!(image.read("tdir/new.txt"), "new\n");
    assert!(!image.exists("elsewhere"));
    assert_eq!(image.read("docs/here.txt"), "heredoc\n");
}

// 14. --chmod on created folders.

/// Folders made for the destination take --chmod (fsutil 183e7fb "copy: fix
/// custom chmod for parent directories", first in BuildKit v0.21.0); existing
/// folders and an archive's are untouched. buildah 1.28 makes them 0755.
#[test]
fn chmod_applies_to_created_folders() {
    let tar = tar_of(&[Member::file("in.txt", "x").mode(0o600)]);
    let image = build(
        "FROM scratch\nCOPY --chmod=700 f /new/sub/f\nCOPY --chmod=700 dir /ctxdir/deeper/\n\
         WORKDIR /existing\nCOPY --chmod=700 f /existing/\nADD --chmod=700 a.tar /t/\n\
         COPY --chown=5:6 --chmod=750 f /a/b/\n",
        &[("f", b"f"), ("dir/inner/g", b"g"), ("a.tar", &tar)],
    );
    for (path, meta) in [
        ("new", (0o700, 0, 0)),
        ("new/sub", (0o700, 0, 0)),
        ("new/sub/f", (0o700, 0, 0)),
        ("ctxdir", (0o700, 0, 0)),
        ("ctxdir/deeper", (0o700, 0, 0)),
        ("ctxdir/deeper/inner", (0o700, 0, 0)),
        ("ctxdir/deeper/inner/g", (0o700, 0, 0)),
        ("existing", (0o755, 0, 0)),
        ("existing/f", (0o700, 0, 0)),
        ("t", (0o755, 0, 0)),
        ("t/in.txt", (0o600, 0, 0)),
        ("a", (0o750, 5, 6)),
        ("a/b", (0o750, 5, 6)),
        ("a/b/f", (0o750, 5, 6)),
    ] {
        assert_eq!(image.meta(path), meta, "{path}");
    }
    let e = build_error("FROM scratch\nCOPY --chmod=17777 f /f\n", &[("f", b"")]);
    assert!(
        e.contains(
            "invalid chmod parameter: '17777'. it should be octal string and between 0 and 07777"
        ),
        "{e}"
    );
}
