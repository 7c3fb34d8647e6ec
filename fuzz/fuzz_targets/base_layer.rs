//! A base image's layer from a registry is untrusted: any bytes are indexed
//! (tar headers, whiteouts, opaque dirs) and applied to a RootFs without a
//! panic, and every path that lands in it is a clean image path (relative
//! to the image root: no `.`, `..` or empty component).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let blob = dir.path().join("layer");
    if std::fs::write(&blob, data).is_err() {
        return;
    }
    // Right for an uncompressed layer, so those get past the diff_id check.
    let diff_id = dockless::digest::sha256(data);
    let Ok(index) = dockless::rootfs::overlay::read_index(&blob, &diff_id) else {
        return;
    };
    let mut fs = dockless::rootfs::RootFs::default();
    dockless::rootfs::overlay::apply_index(&mut fs, &index, &blob);
    for p in fs.paths() {
        assert!(
            !p.split('/').any(|c| c.is_empty() || c == ".." || c == "."),
            "not a clean image path: {p:?}"
        );
    }
});
