//! Temporary files an interrupted run left in the cache folder (`tmp/`, and
//! `.tmp*` folders an archive was unpacked into): removed once they are
//! older than [`STALE_AFTER`] and no live process holds them, and counted
//! in the cache's size until then.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Older than this, a temporary file no process has locked belongs to no
/// run: a run writes its temporary files continuously.
pub const STALE_AFTER: Duration = Duration::from_secs(5 * 60);

/// What the temporary entries hold after stale ones are gone.
#[derive(Debug, Default, Clone, Copy)]
pub struct TempReport {
    pub removed: usize,
    pub bytes_removed: u64,
    pub bytes_kept: u64,
}

/// Removes stale temporary files and folders under `cache_dir`.
pub fn clean_stale(cache_dir: &Path) -> TempReport {
    let mut report = TempReport::default();
    let now = SystemTime::now();
    for path in temp_entries(cache_dir) {
        let (bytes, newest) = size_and_newest(&path);
        let stale = now
            .duration_since(newest)
            .is_ok_and(|age| age > STALE_AFTER);
        if stale && !in_use(&path) && remove(&path) {
            report.removed += 1;
            report.bytes_removed += bytes;
        } else {
            report.bytes_kept += bytes;
        }
    }
    report
}

/// Entries of `tmp/`, and the cache root's `.tmp*` folders.
fn temp_entries(cache_dir: &Path) -> Vec<PathBuf> {
    let listed = |dir: &Path| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let mut out = listed(&cache_dir.join("tmp"));
    out.extend(listed(cache_dir).into_iter().filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp"))
    }));
    out
}

/// Bytes under `path` and the latest change to anything in it.
fn size_and_newest(path: &Path) -> (u64, SystemTime) {
    let mut bytes = 0;
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        if let Ok(md) = entry.metadata() {
            if md.is_file() {
                bytes += md.len();
            }
            newest = newest.max(md.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        }
    }
    (bytes, newest)
}

/// A file a live run holds: the store locks its temporary files (see
/// `BlobStore::temp_file`) while it writes them.
fn in_use(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    match fs::File::open(path).map(|f| f.try_lock()) {
        Ok(Ok(())) => false,
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

fn remove(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path).is_ok(),
        Ok(_) => fs::remove_file(path).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path) {
        let old = SystemTime::now() - STALE_AFTER * 2;
        fs::File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn old_unlocked_files_go_locked_and_new_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        for name in ["old", "locked", "new"] {
            fs::write(tmp.join(name), vec![0u8; 1000]).unwrap();
        }
        age(&tmp.join("old"));
        age(&tmp.join("locked"));
        let held = fs::File::open(tmp.join("locked")).unwrap();
        held.lock().unwrap();
        let r = clean_stale(d.path());
        assert_eq!((r.removed, r.bytes_removed, r.bytes_kept), (1, 1000, 2000));
        assert!(!tmp.join("old").exists() && tmp.join("locked").exists());
    }
}
