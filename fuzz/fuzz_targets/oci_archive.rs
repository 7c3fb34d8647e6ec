//! `push oci-archive:FILE` reads an archive from elsewhere (a CI artifact):
//! any bytes are unpacked and read as a layout without a panic, and nothing
//! is written outside the folder they are unpacked into.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let archive = dir.path().join("in.tar");
    if std::fs::write(&archive, data).is_err() {
        return;
    }
    let dest = dir.path().join("unpacked");
    if std::fs::create_dir(&dest).is_err() {
        return;
    }
    if dockless::layout::unpack_oci_archive(&archive, &dest).is_ok() {
        let _ = dockless::layout::read_artifact(&dest, None);
        let _ = dockless::layout::read_artifact(&dest, Some("hello:v1"));
    }
    // Only the archive and the unpack folder, and inside it only the layout's files.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    assert_eq!(names, ["in.tar", "unpacked"], "wrote outside the unpack folder");
    for entry in walkdir::WalkDir::new(&dest).min_depth(1).into_iter().flatten() {
        let rel = entry.path().strip_prefix(&dest).unwrap().to_string_lossy().into_owned();
        let ok = matches!(rel.as_str(), "oci-layout" | "index.json" | "blobs" | "blobs/sha256")
            || rel.strip_prefix("blobs/sha256/").is_some_and(|h| h.len() == 64 && !h.contains('/'));
        assert!(ok, "unexpected {rel:?} in the unpacked layout");
    }
});
