//! Where compressed segments of stored blobs lie, so a changed layer
//! recompresses only its changed segments, and the diff_id hasher's state
//! after each run of segments, so it hashes only from the first change on.

use crate::files::write_atomic;
use crate::layer::SegmentCache;
use crate::store::BlobStore;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where compressed segments of stored blobs lie (see [`LayerCache`](super::layers::LayerCache)).
pub struct SegmentIndex<'a> {
    dir: PathBuf,
    store: &'a BlobStore,
    reused: AtomicUsize,
}

impl<'a> SegmentIndex<'a> {
    /// The index kept in `dir`, over the blobs of `store`.
    pub(super) fn new(dir: PathBuf, store: &'a BlobStore) -> Self {
        SegmentIndex {
            dir,
            store,
            reused: AtomicUsize::new(0),
        }
    }

    pub fn reused(&self) -> usize {
        self.reused.load(Ordering::Relaxed)
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        // key = "<compressor>-<sha256 hex>", made by layer.rs; refuse anything else.
        let (compressor, hex) = key.rsplit_once('-')?;
        let safe = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        };
        if !safe(compressor) || hex.len() != 64 || !safe(hex) {
            return None;
        }
        Some(self.dir.join(compressor).join(&hex[..2]).join(hex))
    }
}

impl SegmentCache for SegmentIndex<'_> {
    fn lookup(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path(key)?;
        let text = fs::read_to_string(&path).ok()?;
        let mut parts = text.split_whitespace();
        let (digest, offset, len) = (
            parts.next()?,
            parts.next()?.parse::<u64>().ok()?,
            parts.next()?.parse::<u64>().ok()?,
        );
        let blob = match self.store.existing(digest) {
            Ok(b) => b,
            Err(_) => {
                let _ = fs::remove_file(&path);
                return None;
            }
        };
        let file = fs::File::open(blob).ok()?;
        if len > (64 << 20) || file.metadata().ok()?.len() < offset.checked_add(len)? {
            return None;
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, offset).ok()?;
        self.reused.fetch_add(1, Ordering::Relaxed);
        Some(bytes)
    }

    fn record(&self, blob_digest: &str, segments: &[(String, u64, u64)]) {
        let lines = segments
            .iter()
            .map(|(key, offset, len)| (key, format!("{blob_digest} {offset} {len}\n")));
        self.write_records(lines);
    }

    fn prefix_state(&self, key: &str) -> Option<Vec<u8>> {
        // "<blob digest> <state hex>": the blob only ties the record's life to it (see prune).
        let text = fs::read_to_string(self.path(key)?).ok()?;
        hex::decode(text.split_whitespace().nth(1)?).ok()
    }

    fn record_prefixes(&self, blob_digest: &str, states: &[(String, Vec<u8>)]) {
        let lines = states
            .iter()
            .map(|(key, state)| (key, format!("{blob_digest} {}\n", hex::encode(state))));
        self.write_records(lines);
    }
}

impl SegmentIndex<'_> {
    /// Writes one record file per key, stopping at the first failure.
    fn write_records<'k>(&self, records: impl Iterator<Item = (&'k String, String)>) {
        for (key, line) in records {
            if let Some(path) = self.path(key) {
                if let Err(e) = write_atomic(&path, line.as_bytes()) {
                    tracing::debug!("segment record {}: {e}", path.display());
                    return;
                }
            }
        }
    }
}
