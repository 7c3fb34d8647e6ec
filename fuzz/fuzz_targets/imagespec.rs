//! `image.json` parsing, then each entry checked against a small checkout.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

const REGISTRY: &str = "127.0.0.1:5000";

/// A checkout with a root Dockerfile, `api/Dockerfile` and symlinks leading
/// out (a folder, and a Dockerfile as a default one would be named).
fn checkout() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::create_dir_all(dir.join("api")).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.join("api/Dockerfile"), "FROM scratch\n").unwrap();
        let _ = std::os::unix::fs::symlink("/etc", dir.join("out"));
        std::fs::create_dir_all(dir.join("leak")).unwrap();
        let _ = std::os::unix::fs::symlink("/etc/passwd", dir.join("leak/Dockerfile"));
        dir.canonicalize().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = dockless::serve::imagespec::parse(data) else {
        return;
    };
    let repo = checkout();
    for entry in &entries {
        let Ok(job) = dockless::serve::imagespec::resolve(entry, repo, REGISTRY) else {
            continue;
        };
        // Whatever the entry says, the build stays inside the checkout and
        // the push goes to the configured registry.
        assert!(job.context_dir.starts_with(repo), "{:?}", job.context_dir);
        let dockerfile = repo.join(&job.dockerfile).canonicalize().unwrap();
        assert!(dockerfile.starts_with(repo), "{:?}", job.dockerfile);
        let target = job.target.to_string();
        assert!(target.starts_with(&format!("{REGISTRY}/")), "{target}");
    }
});
