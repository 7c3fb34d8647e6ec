//! `ADD` of an archive: any bytes are detected and extracted into a RootFs
//! without panicking, and every path that lands in it is clean and absolute.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write as _;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let archive = dir.path().join("in.tar");
    let Ok(mut f) = std::fs::File::create(&archive) else {
        return;
    };
    if f.write_all(data).is_err() {
        return;
    }
    drop(f);
    let staging = dir.path().join("staging");
    if std::fs::create_dir(&staging).is_err() {
        return;
    }
    let Ok(Some(kind)) = dockless::archive::detect(&archive) else {
        return;
    };
    let mut fs = dockless::rootfs::RootFs::default();
    let _ = dockless::archive::extract(&archive, kind, &mut fs, "/dest", None, &staging);
    for p in fs.paths() {
        assert!(p.starts_with('/'), "relative path {p:?}");
        assert!(
            !p.split('/').any(|c| c == ".." || c == "."),
            "unclean path {p:?}"
        );
    }
    // Nothing may be written next to the staging folder.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(names.len() <= 2, "wrote outside staging: {names:?}");
});
