//! Keeping the cache under a size cap: least recently used blobs first,
//! then the records that pointed at them.

use super::layers::StepRecord;

/// Under the cache folder: a folder per `RUN --mount=type=cache` id.
pub const RUN_CACHE_DIR: &str = "run-cache";

/// Where the SBOM keeps what each layer's package files hold, by diff_id.
pub const SBOM_LAYER_DIR: &str = "sbom-layer";
use crate::digest;
use crate::layer::LayerInfo;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default cap of the blob store, in bytes (10 GiB).
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;

#[derive(Debug, Default, Clone, Copy)]
pub struct PruneReport {
    pub blobs_removed: usize,
    /// Stale temporary files and folders an interrupted run left.
    pub temp_removed: usize,
    pub bytes_removed: u64,
    pub bytes_kept: u64,
}

/// Removes least recently used blobs, base-layer header indexes
/// (`layer-index/`, kept apart from their blobs on purpose: they let a
/// build skip the download), the SBOM's layer scans (`sbom-layer/`) and
/// `RUN --mount=type=cache` folders not in use until together they hold at most
/// `max_bytes`, never those named in `keep`; then drops layer and segment
/// records that point at removed blobs.
///
/// Stale temporary files (see [`super::temp`]) go first; those still in
/// use count towards the cap.
pub fn prune(cache_dir: &Path, max_bytes: u64, keep: &HashSet<String>) -> io::Result<PruneReport> {
    let temp = super::temp::clean_stale(cache_dir);
    let blob_dir = cache_dir.join("blobs").join("sha256");
    let mut entries = cached_files(&blob_dir, "")?;
    entries.extend(cached_files(&cache_dir.join("layer-index"), ".json")?);
    entries.extend(cached_files(&cache_dir.join(SBOM_LAYER_DIR), ".json")?);
    entries.extend(run_caches(&cache_dir.join(RUN_CACHE_DIR))?);
    let mut total: u64 = entries.iter().map(|e| e.len).sum::<u64>() + temp.bytes_kept;
    let mut report = PruneReport {
        temp_removed: temp.removed,
        bytes_removed: temp.bytes_removed,
        ..PruneReport::default()
    };
    if total > max_bytes {
        entries.sort_by_key(|e| e.used);
        for e in &entries {
            if total <= max_bytes {
                break;
            }
            if keep.contains(&format!("sha256:{}", e.hex)) {
                continue;
            }
            if e.remove() {
                total -= e.len;
                report.bytes_removed += e.len;
                if e.path.starts_with(&blob_dir) && e.lock.is_none() {
                    report.blobs_removed += 1;
                }
            }
        }
    }
    report.bytes_kept = total;
    if report.blobs_removed > 0 {
        drop_dangling(cache_dir, &blob_dir);
    }
    Ok(report)
}

/// A file in the cache that pruning may remove, named by a digest's hex.
struct CachedFile {
    used: SystemTime,
    hex: String,
    path: PathBuf,
    len: u64,
    /// A `RUN --mount=type=cache` folder, with its lock file.
    lock: Option<PathBuf>,
}

impl CachedFile {
    fn remove(&self) -> bool {
        let Some(lock) = &self.lock else {
            return fs::remove_file(&self.path).is_ok();
        };
        // Never one a running step holds.
        let Ok(file) = fs::OpenOptions::new().write(true).open(lock) else {
            return fs::remove_dir_all(&self.path).is_ok();
        };
        use rustix::fs::{flock, FlockOperation};
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            return false;
        }
        let removed = fs::remove_dir_all(&self.path).is_ok();
        if removed {
            let _ = fs::remove_file(lock);
        }
        removed
    }
}

/// `RUN --mount=type=cache` folders: their size, and when their lock file
/// says they were last used. (A folder whose files belong to IDs of a
/// user namespace that dockless cannot remove is left, and counted.)
fn run_caches(dir: &Path) -> io::Result<Vec<CachedFile>> {
    let listing = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in listing.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let lock = path.with_extension("lock");
        let used = fs::metadata(&lock)
            .or_else(|_| entry.metadata())
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH);
        let len = walkdir::WalkDir::new(&path)
            .into_iter()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        out.push(CachedFile {
            used,
            hex: entry.file_name().to_string_lossy().into_owned(),
            path,
            len,
            lock: Some(lock),
        });
    }
    Ok(out)
}

/// The files in `dir` named `<hex><suffix>`; none if `dir` is missing.
fn cached_files(dir: &Path, suffix: &str) -> io::Result<Vec<CachedFile>> {
    let listing = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in listing {
        let entry = entry?;
        let md = entry.metadata()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_suffix(suffix) else {
            continue;
        };
        if !md.is_file() {
            continue;
        }
        out.push(CachedFile {
            used: md.modified().unwrap_or(UNIX_EPOCH),
            hex: hex.to_string(),
            path: entry.path(),
            len: md.len(),
            lock: None,
        });
    }
    Ok(out)
}

fn drop_dangling(cache_dir: &Path, blob_dir: &Path) {
    let gone =
        |digest: &str| digest::hex_part(digest).is_none_or(|hex| !blob_dir.join(hex).is_file());
    let layers = cache_dir.join("layers");
    let records = fs::read_dir(layers.join("index"))
        .into_iter()
        .chain(fs::read_dir(layers.join("shapes")))
        .flatten()
        .flatten();
    for entry in records {
        let info: Option<LayerInfo> = fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if info.is_none_or(|i| gone(&i.digest)) {
            let _ = fs::remove_file(entry.path());
        }
    }
    for entry in fs::read_dir(layers.join("steps"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let record: Option<StepRecord> = fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let dangling = match record {
            Some(StepRecord { layer: Some(info) }) => gone(&info.digest),
            Some(StepRecord { layer: None }) => false,
            None => true,
        };
        if dangling {
            let _ = fs::remove_file(entry.path());
        }
    }
    let segments = cache_dir.join("segments");
    for entry in walkdir::WalkDir::new(&segments).into_iter().flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        if gone(text.split_whitespace().next().unwrap_or("")) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `10G`, `512M`, `100K` or a byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("invalid size {text:?}: use K, M, G or T")),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {text:?}: expected e.g. 10G, 512M or 1000000"))
}
