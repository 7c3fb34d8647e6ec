//! A registry image's layers in a build: applied from their cached header
//! index when there is one, their blobs fetched only when a file's bytes
//! are read.

use crate::layer::{self, FileSource};
use crate::name::reference::ImageRef;
use crate::remote::pull::{self, PullError, RegistryOptions};
use crate::rootfs::overlay::{self, OverlayError};
use crate::rootfs::RootFs;
use crate::store::{BlobStore, StoreError};
use std::collections::HashMap;
use std::path::PathBuf;

/// Why a base layer could not be fetched or read; the cause stays typed so
/// the service can tell a full disk from the rest.
#[derive(Debug, thiserror::Error)]
pub enum BaseLayerError {
    #[error(transparent)]
    Fetch(#[from] PullError),
    /// No thread or runtime could be started for the download.
    #[error("{0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] OverlayError),
    #[error("base layer {} is missing", .0.display())]
    Missing(PathBuf),
}

/// Runs a registry future to completion from synchronous build code, on a
/// thread of its own so it works whether or not the caller is inside a runtime.
pub(super) fn block_on<F>(future: F) -> std::io::Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(future))
            })
            .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Where to fetch a base layer that was applied from its header index.
#[derive(Clone)]
pub(super) struct RemoteLayer {
    pub(super) image: ImageRef,
    pub(super) digest: String,
    pub(super) size: u64,
    pub(super) store: BlobStore,
    pub(super) registry: RegistryOptions,
}

impl RemoteLayer {
    /// Downloads the blob into its store path, verified.
    pub(super) fn fetch(&self) -> Result<(), BaseLayerError> {
        let (image, store, registry) = (&self.image, &self.store, &self.registry);
        block_on(pull::fetch_blob(
            image,
            store,
            registry,
            &self.digest,
            self.size,
        ))
        .map_err(BaseLayerError::Runtime)??;
        Ok(())
    }
}

/// Base layer blobs that may still be in their registry, by store path.
#[derive(Default)]
pub(super) struct LazyBlobs(HashMap<PathBuf, RemoteLayer>);

impl LazyBlobs {
    /// Makes sure a blob is on disk before something reads it.
    pub(super) fn ensure(&self, blob: &std::path::Path) -> Result<(), BaseLayerError> {
        if blob.is_file() {
            return Ok(());
        }
        match self.0.get(blob) {
            Some(remote) => remote.fetch(),
            None => Err(BaseLayerError::Missing(blob.to_path_buf())),
        }
    }

    /// Fetches every base blob the entries take file bodies from.
    pub(super) fn ensure_entries(
        &self,
        entries: &[layer::LayerEntry],
    ) -> Result<(), BaseLayerError> {
        for entry in entries {
            if let layer::EntryData::File {
                source: FileSource::Layer { blob, .. },
                ..
            } = &entry.data
            {
                self.ensure(blob)?;
            }
        }
        Ok(())
    }
}

/// Applies one base layer from its cached header index, or from its blob
/// (downloaded, verified, then indexed). A layer applied from the index
/// stays in its registry, recorded in `lazy`, until its content is needed.
/// Returns the uncompressed size.
pub(super) fn apply_base_layer(
    fs: &mut RootFs,
    remote: RemoteLayer,
    diff_id: &str,
    cache_dir: &std::path::Path,
    lazy: &mut LazyBlobs,
) -> Result<u64, BaseLayerError> {
    let blob = remote.store.path(&remote.digest)?;
    let index = match overlay::load_index(cache_dir, &remote.digest, diff_id) {
        Some(index) => {
            tracing::debug!(digest = %remote.digest, "base layer applied from its header index");
            index
        }
        None => {
            remote.fetch()?;
            let index = overlay::read_index(&blob, diff_id)?;
            overlay::save_index(cache_dir, &remote.digest, &index);
            index
        }
    };
    overlay::apply_index(fs, &index, &blob);
    lazy.0.insert(blob, remote);
    Ok(index.uncompressed_size)
}
