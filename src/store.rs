//! A content-addressed blob store laid out like an OCI layout's `blobs/` folder.

use crate::digest;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("blob {0} is not a valid sha256 digest")]
    BadDigest(String),
    #[error("blob {digest} is missing from the store at {path}")]
    Missing { digest: String, path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Blobs live at `<root>/blobs/sha256/<hex>`; unfinished writes live in `<root>/tmp`
/// so a crash never leaves a blob whose name lies about its content.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobStore, StoreError> {
        let store = BlobStore { root: root.into() };
        let dir = store.blob_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where a blob with this digest lives (whether or not it exists yet).
    pub fn path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let hex = digest::hex_part(digest).ok_or_else(|| StoreError::BadDigest(digest.into()))?;
        Ok(self.blob_dir().join(hex))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// The path of a blob that must exist.
    pub fn existing(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let path = self.path(digest)?;
        if path.is_file() {
            Ok(path)
        } else {
            Err(StoreError::Missing {
                digest: digest.into(),
                path,
            })
        }
    }

    /// A temporary file in the store, to be committed once its digest is known.
    pub fn temp_file(&self) -> Result<NamedTempFile, StoreError> {
        let dir = self.tmp_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let temp = NamedTempFile::new_in(&dir).map_err(io_err(&dir))?;
        // Held until the file is committed or dropped: tells
        // `cache::temp::clean_stale` in another process it is in use.
        let _ = temp.as_file().try_lock();
        Ok(temp)
    }

    /// Removes the temporary folder when nothing is in flight, so an OCI
    /// layout written through the store holds only what the spec names.
    pub fn remove_empty_tmp(&self) {
        let _ = fs::remove_dir(self.tmp_dir());
    }

    /// Moves a finished temporary file to its content address.
    pub fn commit(&self, temp: NamedTempFile, digest: &str) -> Result<PathBuf, StoreError> {
        let path = self.path(digest)?;
        temp.as_file().sync_all().map_err(io_err(&path))?;
        temp.persist(&path).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        Ok(path)
    }

    /// Stores a small blob (config, manifest) and returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let digest = digest::sha256(bytes);
        if !self.contains(&digest) {
            let mut temp = self.temp_file()?;
            let tmp_path = temp.path().to_path_buf();
            temp.write_all(bytes).map_err(io_err(&tmp_path))?;
            self.commit(temp, &digest)?;
        }
        Ok(digest)
    }

    /// Stores small blobs side by side, each in a thread of its own: each
    /// is still synced before its rename, but syncs that run together
    /// share the filesystem's journal commit, so a handful of blobs costs
    /// about one commit, not one each in a row.
    pub fn put_many(&self, blobs: &[&[u8]]) -> Result<(), StoreError> {
        if let [one] = blobs {
            return self.put_bytes(one).map(drop);
        }
        std::thread::scope(|scope| {
            let running: Vec<_> = blobs
                .iter()
                .map(|bytes| {
                    let spawned = std::thread::Builder::new()
                        .spawn_scoped(scope, move || self.put_bytes(bytes).map(drop));
                    // No thread to be had: this one stores it.
                    spawned.map_err(|_| self.put_bytes(bytes).map(drop))
                })
                .collect();
            for run in running {
                match run {
                    Ok(thread) => thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
                    Err(done) => done?,
                }
            }
            Ok(())
        })
    }

    /// Puts a blob from another store here: a hard link when both share a
    /// filesystem, a copy otherwise.
    pub fn import(&self, digest: &str, from: &Path) -> Result<PathBuf, StoreError> {
        let dest = self.path(digest)?;
        if dest.is_file() {
            return Ok(dest);
        }
        if fs::hard_link(from, &dest).is_ok() {
            return Ok(dest);
        }
        let temp = self.temp_file()?;
        let tmp_path = temp.path().to_path_buf();
        let mut src = File::open(from).map_err(io_err(from))?;
        io::copy(&mut src, &mut temp.as_file()).map_err(io_err(&tmp_path))?;
        self.commit(temp, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_many_stores_each_blob_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + i as usize]).collect();
        let slices: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        store.put_many(&slices).unwrap();
        store.put_many(&slices[..2]).unwrap();
        for blob in &blobs {
            let path = store.existing(&digest::sha256(blob)).unwrap();
            assert_eq!(&fs::read(path).unwrap(), blob);
        }
        let names = fs::read_dir(store.blob_dir()).unwrap().count();
        assert_eq!(names, blobs.len());
    }

    #[test]
    fn put_bytes_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d1 = store.put_bytes(b"abc").unwrap();
        let d2 = store.put_bytes(b"abc").unwrap();
        assert_eq!(d1, d2);
        assert_eq!(fs::read(store.existing(&d1).unwrap()).unwrap(), b"abc");
    }

    #[test]
    fn import_copies_between_stores() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = BlobStore::open(a.path()).unwrap();
        let sb = BlobStore::open(b.path()).unwrap();
        let d = sa.put_bytes(b"layer").unwrap();
        sb.import(&d, &sa.existing(&d).unwrap()).unwrap();
        assert!(sb.contains(&d));
    }

    #[test]
    fn malformed_digest_is_an_error_not_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.path("sha256:../../etc"),
            Err(StoreError::BadDigest(_))
        ));
    }
}
