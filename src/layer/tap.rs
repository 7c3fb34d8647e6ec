//! Following a new layer's blob while it is written, so that it can be
//! uploaded as it is produced (`remote::stream`) rather than after it is
//! complete. The blob is still written to the store as always; a tap only
//! learns how far the file has got, and reads it from there.

use std::sync::Arc;

/// Decides which new blobs are followed, and follows them.
pub trait LayerTap: Send + Sync {
    /// A blob starts in `file` (opened for reading, apart from the writer's
    /// handle); None when it is not to be followed.
    fn start(&self, file: std::fs::File) -> Option<Box<dyn LayerFeed>>;
}

/// One blob being written. Dropped without [`LayerFeed::finished`], the
/// blob was abandoned (the layer failed).
pub trait LayerFeed: Send + Sync {
    /// The first `bytes` of the blob are in its file.
    fn written(&self, bytes: u64);
    /// The blob is complete and committed to the store.
    fn finished(&self, digest: &str, size: u64);
}

/// A [`LayerTap`] that build options can carry (cloned, printed).
#[derive(Clone)]
pub struct SharedTap(pub Arc<dyn LayerTap>);

impl std::fmt::Debug for SharedTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedTap")
    }
}
