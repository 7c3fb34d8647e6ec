//! Where dockless keeps its working blobs between runs: the folder, the
//! build timestamp, the layer cache (`layers`) with its compressed
//! segments (`segments`), `RUN --mount=type=cache` folders, and pruning to
//! a size cap (`prune`).

pub mod layers;
mod prune;
pub mod registry;
mod segments;
pub mod temp;

pub use prune::{parse_size, prune, PruneReport, DEFAULT_MAX_SIZE, RUN_CACHE_DIR, SBOM_LAYER_DIR};
pub use segments::SegmentIndex;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Marks a cached file as used, for [`prune()`]'s LRU order.
pub(crate) fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// `$DOCKLESS_CACHE_DIR`, else `$XDG_CACHE_HOME/dockless`, else `~/.cache/dockless`.
pub fn default_dir() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("DOCKLESS_CACHE_DIR") {
        return dir;
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return xdg.join("dockless");
    }
    match var("HOME") {
        Some(home) => home.join(".cache").join("dockless"),
        None => std::env::temp_dir().join("dockless-cache"),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid SOURCE_DATE_EPOCH {0:?}: expected whole seconds since 1970-01-01")]
pub struct EpochError(pub String);

/// `SOURCE_DATE_EPOCH` when it is set (to something not blank).
pub fn source_date_epoch_if_set() -> Result<Option<u64>, EpochError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| EpochError(v)),
        _ => Ok(None),
    }
}

/// Build timestamps: `$SOURCE_DATE_EPOCH`, or 0 so builds are reproducible by default.
pub fn source_date_epoch() -> Result<u64, EpochError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.trim().is_empty() => Ok(0),
        Ok(v) => v.trim().parse().map_err(|_| EpochError(v)),
        Err(_) => Ok(0),
    }
}
