//! `ADD` of an archive: any bytes are detected and extracted into a RootFs
//! without panicking, and every path that lands in it is a clean image path
//! (relative to the image root, as RootFs keeps them: no `.`, `..` or empty
//! component), whatever `..`, absolute names or symlinks the archive holds.
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
    let Ok(Some(kind)) = dockless::build::archive::detect(&archive) else {
        return;
    };
    let mut fs = dockless::rootfs::RootFs::default();
    // The builder passes the destination as RootFs::mkdir_all returns it.
    let _ = dockless::build::archive::extract(&archive, kind, &mut fs, "srv/dest", None, &staging);
    for p in fs.paths() {
        assert!(
            !p.split('/').any(|c| c.is_empty() || c == ".." || c == "."),
            "not a clean image path: {p:?}"
        );
    }
    // Nothing may be written next to the staging folder.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(names.len() <= 2, "wrote outside staging: {names:?}");
});
