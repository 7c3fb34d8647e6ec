//! A registry image's layers in a build: applied from their cached header
//! index when there is one, their blobs fetched only when a file's bytes
//! are read. One [`Puller`] serves the whole build, so every base registry
//! is opened once, and blobs are fetched several at a time.

use crate::layer::{self, FileSource, LayerInfo};
use crate::name::Reference;
use crate::platform::Platform;
use crate::remote::pull::{BaseImage, PullError};
use crate::remote::{BaseBlob, Options, Puller};
use crate::rootfs::overlay::{self, OverlayError};
use crate::rootfs::RootFs;
use crate::store::{BlobStore, StoreError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokio::runtime::RuntimeFlavor;

/// Why a base image or layer could not be fetched or read; the cause stays
/// typed so the service can tell a full disk from the rest.
#[derive(Debug, thiserror::Error)]
pub enum BaseLayerError {
    #[error(transparent)]
    Fetch(#[from] PullError),
    /// No runtime could be started for the registry client.
    #[error("cannot start the registry client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] OverlayError),
    #[error("base layer {} is missing", .0.display())]
    Missing(PathBuf),
}

/// Where the build's registry futures run: the caller's tokio runtime when
/// the build runs on a multi-thread one (on a worker, or a `spawn_blocking`
/// thread), else a runtime of the build's own, started when the build first
/// needs a registry.
enum Runner {
    Caller(tokio::runtime::Handle),
    Own(OnceLock<tokio::runtime::Runtime>),
}

impl Runner {
    fn new() -> Runner {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                Runner::Caller(handle)
            }
            _ => Runner::Own(OnceLock::new()),
        }
    }

    /// Runs `future` to completion from the build's synchronous code.
    fn run<F>(&self, future: F) -> std::io::Result<F::Output>
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let own = match self {
            Runner::Caller(handle) => {
                return Ok(tokio::task::block_in_place(|| handle.block_on(future)))
            }
            Runner::Own(own) => own,
        };
        let runtime = match own.get() {
            Some(runtime) => runtime,
            None => {
                let runtime = tokio::runtime::Runtime::new()?;
                own.get_or_init(|| runtime)
            }
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(runtime.block_on(future));
        }
        // Inside a single-threaded runtime, which this thread may be
        // driving: block another thread instead.
        std::thread::scope(|scope| scope.spawn(|| runtime.block_on(future)).join())
            .map_err(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Runner {
    /// The build may end inside an async context, where a runtime may not
    /// wait for its threads; nothing of the build's is left running on it.
    fn drop(&mut self) {
        if let Runner::Own(own) = self {
            if let Some(runtime) = own.take() {
                runtime.shutdown_background();
            }
        }
    }
}

/// The build's registry images: one puller for their registries, and the
/// base layer blobs that were applied from their header index and may
/// still be in their registry.
pub(super) struct Bases {
    opts: Options,
    store: BlobStore,
    puller: Puller,
    runner: Runner,
    /// By the store path the blob will have.
    lazy: HashMap<PathBuf, BaseBlob>,
}

impl Bases {
    pub(super) fn new(opts: &Options, store: &BlobStore) -> Bases {
        Bases {
            opts: opts.clone(),
            store: store.clone(),
            puller: Puller::new(opts, []),
            runner: Runner::new(),
            lazy: HashMap::new(),
        }
    }

    /// The images the build will read, so each registry's client is opened
    /// once with pull access to all of its repositories.
    pub(super) fn expect(&mut self, images: &[Reference]) {
        self.puller = Puller::for_images(&self.opts, images);
    }

    /// Resolves `image` for `platform`: its manifest and config.
    pub(super) fn pull(
        &self,
        image: &Reference,
        platform: &Platform,
    ) -> Result<BaseImage, BaseLayerError> {
        self.run(self.puller.pull(image, platform, &self.store))
    }

    /// Runs a future of the build (an `ADD <url>` download) where its
    /// registry requests run.
    pub(super) fn block_on<F>(&self, future: F) -> std::io::Result<F::Output>
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        self.runner.run(future)
    }

    fn run<T: Send>(
        &self,
        future: impl std::future::Future<Output = Result<T, PullError>> + Send,
    ) -> Result<T, BaseLayerError> {
        Ok(self.runner.run(future).map_err(BaseLayerError::Runtime)??)
    }

    /// Applies `base`'s layers to `fs`, each from its cached header index,
    /// or from its blob (downloaded, verified, then indexed; the blobs
    /// without an index are downloaded together). A layer applied from the
    /// index stays in its registry until its content is needed. Returns the
    /// layers with their uncompressed sizes.
    pub(super) fn apply(
        &mut self,
        fs: &mut RootFs,
        base: &BaseImage,
        cache_dir: &Path,
    ) -> Result<Vec<LayerInfo>, BaseLayerError> {
        let cached: Vec<Option<overlay::LayerIndex>> = base
            .layers
            .iter()
            .map(|l| overlay::load_index(cache_dir, &l.digest, &l.diff_id))
            .collect();
        let blob = |l: &LayerInfo| BaseBlob {
            image: base.reference.clone(),
            digest: l.digest.clone(),
            size: l.size,
        };
        let missing: Vec<BaseBlob> = base
            .layers
            .iter()
            .zip(&cached)
            .filter(|(_, index)| index.is_none())
            .map(|(l, _)| blob(l))
            .collect();
        self.run(self.puller.fetch_blobs(&missing, &self.store))?;
        let mut layers = base.layers.clone();
        for (layer, index) in layers.iter_mut().zip(cached) {
            let path = self.store.path(&layer.digest)?;
            let index = match index {
                Some(index) => {
                    tracing::debug!(digest = %layer.digest, "base layer applied from its header index");
                    index
                }
                None => {
                    let index = overlay::read_index(&path, &layer.diff_id)?;
                    overlay::save_index(cache_dir, &layer.digest, &index);
                    index
                }
            };
            overlay::apply_index(fs, &index, &path);
            layer.uncompressed_size = index.uncompressed_size;
            self.lazy.insert(path, blob(layer));
        }
        Ok(layers)
    }

    /// Notes that the blob of `store_path` is still in a registry, to be
    /// fetched when something reads it (a layer the registry build cache served).
    pub(super) fn add_lazy(&mut self, store_path: PathBuf, blob: BaseBlob) {
        self.lazy.insert(store_path, blob);
    }

    /// Makes sure a blob is on disk before something reads it.
    pub(super) fn ensure(&self, blob: &Path) -> Result<(), BaseLayerError> {
        self.ensure_all([blob])
    }

    /// Fetches every base blob the entries take file bodies from.
    pub(super) fn ensure_entries(
        &self,
        entries: &[layer::LayerEntry],
    ) -> Result<(), BaseLayerError> {
        self.ensure_all(entries.iter().filter_map(|entry| match &entry.data {
            layer::EntryData::File {
                source: FileSource::Layer { blob, .. },
                ..
            } => Some(blob.as_path()),
            _ => None,
        }))
    }

    fn ensure_all<'a>(
        &self,
        blobs: impl IntoIterator<Item = &'a Path>,
    ) -> Result<(), BaseLayerError> {
        let mut wanted = Vec::new();
        for blob in blobs {
            if blob.is_file() {
                continue;
            }
            match self.lazy.get(blob) {
                Some(remote) => wanted.push(remote.clone()),
                None => return Err(BaseLayerError::Missing(blob.to_path_buf())),
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        self.run(self.puller.fetch_blobs(&wanted, &self.store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// The service tells a full disk by the `io::Error` in an error's
    /// sources: a base layer's failed download must keep it.
    #[test]
    fn a_failed_base_layer_download_keeps_its_io_error() {
        let download = PullError::Io {
            digest: format!("sha256:{}", "0".repeat(64)),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let failed = super::super::fail_because(
            "Dockerfile",
            1,
            "FROM alpine",
            BaseLayerError::from(download),
        );
        let mut next: Option<&(dyn Error + 'static)> = Some(&failed);
        let mut kinds = Vec::new();
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                kinds.push(io.kind());
            }
            next = e.source();
        }
        assert_eq!(kinds, [std::io::ErrorKind::StorageFull]);
    }
}
