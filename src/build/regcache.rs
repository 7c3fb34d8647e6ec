//! The registry build cache in a build (see `cache::registry` for what it
//! stores). Its index is read once, before the first step; a COPY, ADD or
//! RUN step whose key it holds is neither run nor compressed: its layer's
//! blob is HEADed in the cache repository and left there (fetched only
//! when a later step, the SBOM or an OCI layout reads it; a push mounts or
//! streams it). After the build, its entries are merged into the cache.
//! Any failure to reach the cache is a warning, and the build goes on
//! without it. With the SBOM on, the cache also keeps each image layer's
//! scan and header index, read back before the base is applied and before
//! the SBOM, so neither downloads a layer; then the pipeline writes the
//! cache once the SBOM is done ([`CacheExport`]).

use super::Builder;
use crate::cache::registry::{self, BlobRef, CacheIndex, CacheSpec, ExportMode};
use crate::image::BuiltImage;
use crate::layer::LayerInfo;
use crate::name::Reference;
use crate::remote::{BaseBlob, EventSink, LocalBlob, Options, Puller, PushImage, RemoteBlob};
use crate::rootfs::overlay;
use crate::store::BlobStore;
use std::collections::BTreeSet;

/// Tries per request to the cache: one retry, since a cache that does not
/// answer only costs a warning.
const CACHE_ATTEMPTS: u32 = 2;

pub(super) struct RegistryCache {
    spec: CacheSpec,
    opts: Options,
    puller: Puller,
    /// What `spec.from` held when the build began.
    held: CacheIndex,
    /// This build's entries, for `spec.to`.
    made: CacheIndex,
    /// A hit left a layer in the cache repository.
    served: bool,
    /// Reading failed (and was reported): no more reads.
    broken: bool,
}

/// The cache's options: the build's registries and CAs, quiet, quick to give up.
fn cache_options(remote: &Options) -> Options {
    Options {
        events: EventSink::default(),
        max_attempts: CACHE_ATTEMPTS,
        ..remote.clone()
    }
}

/// The cache index under `at`, None when there is none yet.
async fn read_index(puller: &Puller, at: &Reference) -> Result<Option<CacheIndex>, String> {
    let repo = at.repository();
    let client = puller
        .client(at.registry(), repo)
        .await
        .map_err(|e| e.to_string())?;
    let Some(manifest) = client
        .get_manifest(repo, at.identifier())
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let config = registry::config_of(&manifest).map_err(|e| e.to_string())?;
    let bytes = client
        .get_small_blob(repo, &config.digest)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("its index blob is missing")?;
    CacheIndex::parse(&bytes)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Whether the cache repository still holds the blob.
async fn blob_there(puller: &Puller, at: &Reference, digest: &str) -> Result<bool, String> {
    let client = puller
        .client(at.registry(), at.repository())
        .await
        .map_err(|e| e.to_string())?;
    client
        .blob_exists(at.repository(), digest)
        .await
        .map_err(|e| e.to_string())
}

/// A small blob (header index, scan) from the cache repository, if it is there.
async fn small_blob(
    puller: &Puller,
    at: &Reference,
    blob: &BlobRef,
) -> Result<Option<Vec<u8>>, String> {
    let client = puller
        .client(at.registry(), at.repository())
        .await
        .map_err(|e| e.to_string())?;
    client
        .get_small_blob(at.repository(), &blob.digest)
        .await
        .map_err(|e| e.to_string())
}

/// A layer's header index from the cache repository, if it is there and parses.
async fn header_index(
    puller: &Puller,
    at: &Reference,
    header: &BlobRef,
) -> Result<Option<overlay::LayerIndex>, String> {
    let bytes = small_blob(puller, at, header).await?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// A cache request's outcome, the runtime's failure included.
fn flat<T>(result: std::io::Result<Result<T, String>>) -> Result<T, String> {
    result.map_err(|e| e.to_string())?
}

/// What the cache writer needs besides the entries.
struct Writer<'a> {
    opts: &'a Options,
    store: &'a BlobStore,
    to: &'a Reference,
    /// Where blobs of entries this build took from the cache are.
    from: Option<&'a Reference>,
}

impl Writer<'_> {
    /// Merges `made` into the index under `to` and pushes it; false when
    /// the cache already held every entry.
    async fn write(&self, made: &CacheIndex) -> Result<bool, String> {
        let puller = Puller::new(self.opts, [(self.to.registry(), self.to.repository())]);
        let current = read_index(&puller, self.to)
            .await?
            .unwrap_or_else(CacheIndex::new);
        if made.is_within(&current) {
            return Ok(false);
        }
        // Blobs the tag names already are in the repository: not HEADed again.
        let known: BTreeSet<String> = current.blobs().into_iter().map(|b| b.0).collect();
        let merged = made.merged_over(current);
        let config_bytes = serde_json::to_vec(&merged).map_err(|e| e.to_string())?;
        let config = BlobRef {
            digest: self
                .store
                .put_bytes(&config_bytes)
                .map_err(|e| e.to_string())?,
            size: config_bytes.len() as u64,
        };
        let mut layers = Vec::new();
        for (digest, size, media_type) in merged.blobs() {
            if !known.contains(&digest) {
                layers.push(self.blob(digest, size, media_type)?);
            }
        }
        // The manifest names every blob; only the new ones are pushed.
        let push = PushImage {
            manifest: merged.manifest(&config),
            manifest_media_type: crate::image::MEDIA_TYPE_MANIFEST.into(),
            config: self.blob(config.digest, config.size, registry::ARTIFACT_TYPE.into())?,
            layers,
        };
        let pusher = crate::remote::Pusher::open(self.to, &[&push], self.opts)
            .await
            .map_err(|e| e.to_string())?;
        pusher
            .push(&push, self.to.identifier())
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// A blob of the cache: from the store, else from where the build
    /// found it (the repository read, or the one written, which then
    /// holds it already).
    fn blob(&self, digest: String, size: u64, media_type: String) -> Result<LocalBlob, String> {
        let path = self.store.path(&digest).map_err(|e| e.to_string())?;
        let at = self.from.unwrap_or(self.to);
        let same_registry = at.registry() == self.to.registry();
        let mount_from = match same_registry && at.repository() != self.to.repository() {
            true => vec![at.repository().to_string()],
            false => Vec::new(),
        };
        Ok(LocalBlob {
            source: (!path.is_file()).then(|| RemoteBlob {
                registry: at.registry().to_string(),
                repository: at.repository().to_string(),
            }),
            digest,
            size,
            media_type,
            path,
            mount_from,
        })
    }
}

/// A build's entries for `--cache-to`, written by the pipeline after the
/// SBOM (`BuildOptions::defer_registry_cache`) with the image layers' scans.
#[derive(Debug)]
pub struct CacheExport {
    made: CacheIndex,
    opts: Options,
    to: Reference,
    from: Option<Reference>,
    layers: Vec<LayerInfo>,
}

impl CacheExport {
    /// Adds the scans the SBOM left in `cache_dir` and merges it all into
    /// the cache repository; a failure is a warning.
    pub async fn write(mut self, store: &BlobStore, cache_dir: &std::path::Path) {
        for layer in &self.layers {
            add_scan(&mut self.made, store, cache_dir, layer);
        }
        let writer = Writer {
            opts: &self.opts,
            store,
            to: &self.to,
            from: self.from.as_ref(),
        };
        report_write(&self.to, writer.write(&self.made).await);
    }
}

/// The layer's scan and header index, as the SBOM left them, stored as blobs in `made`.
fn add_scan(made: &mut CacheIndex, store: &BlobStore, cache_dir: &std::path::Path, l: &LayerInfo) {
    let Some(scan) = crate::attest::sbom::layers::stored_scan(cache_dir, &l.diff_id) else {
        return;
    };
    let Some(index) = overlay::load_index(cache_dir, &l.digest, &l.diff_id) else {
        return;
    };
    let Ok(index) = serde_json::to_vec(&index) else {
        return;
    };
    let put = |bytes: &[u8]| {
        let digest = store.put_bytes(bytes).ok()?;
        Some(BlobRef {
            digest,
            size: bytes.len() as u64,
        })
    };
    if let (Some(scan), Some(index)) = (put(&scan), put(&index)) {
        made.add_scan(&l.diff_id, &l.digest, scan, index);
    }
}

fn report_write(to: &Reference, written: Result<bool, String>) {
    match written {
        Ok(true) => tracing::info!(cache = %to, "registry cache written"),
        Ok(false) => tracing::debug!(cache = %to, "registry cache already up to date"),
        Err(e) => tracing::warn!("registry cache {to}: cannot write it: {e}"),
    }
}

impl Builder<'_> {
    /// Reads the registry cache's index, when the build has one.
    pub(super) fn open_registry_cache(&mut self) {
        let spec = self.opts.registry_cache.clone();
        if spec.is_off() || self.layer_cache.is_none() {
            return;
        }
        let opts = cache_options(&self.opts.remote);
        let from = spec.from.iter().map(|r| (r.registry(), r.repository()));
        let mut cache = RegistryCache {
            puller: Puller::new(&opts, from),
            opts,
            spec,
            held: CacheIndex::new(),
            made: CacheIndex::new(),
            served: false,
            broken: false,
        };
        if let Some(from) = cache.spec.from.clone() {
            match flat(self.bases.block_on(read_index(&cache.puller, &from))) {
                Ok(Some(index)) => {
                    tracing::info!(cache = %from, layers = index.layers.len(), steps = index.steps.len(), "registry cache read");
                    cache.held = index;
                }
                Ok(None) => {
                    tracing::warn!(
                        "registry cache {from}: nothing cached there yet; building without it"
                    );
                }
                Err(e) => {
                    tracing::warn!("registry cache {from}: {e}; building without it");
                    cache.broken = true;
                }
            }
        }
        self.registry_cache = Some(cache);
    }

    /// Where layers the cache served stay, for the push and the SBOM.
    pub(super) fn registry_cache_source(&self) -> Option<Reference> {
        let cache = self.registry_cache.as_ref().filter(|c| c.served)?;
        cache.spec.from.clone()
    }

    /// A COPY or ADD layer the cache holds under `key`, its blob still there.
    pub(super) fn registry_layer(&mut self, key: &str) -> Option<LayerInfo> {
        let cache = self.registry_cache.as_ref().filter(|c| !c.broken)?;
        let layer = cache.held.layers.get(key)?.layer.clone();
        self.registry_blob(&layer)?;
        self.cache_stats.layers_from_registry += 1;
        Some(layer)
    }

    /// What a RUN step with this key left, as the cache holds it: its
    /// layer (blob still there, header index fetched when it has one), or
    /// nothing.
    pub(super) fn registry_step(&mut self, key: &str) -> Option<Option<LayerInfo>> {
        let cache = self.registry_cache.as_ref().filter(|c| !c.broken)?;
        let entry = cache.held.steps.get(key)?.clone();
        let Some(layer) = entry.layer else {
            self.cache_stats.steps_from_registry += 1;
            return Some(None);
        };
        self.registry_blob(&layer)?;
        let cache = self.registry_cache.as_ref()?;
        let dir = &self.opts.cache_dir;
        if let (None, Some(header)) = (
            overlay::load_index(dir, &layer.digest, &layer.diff_id),
            &entry.header_index,
        ) {
            let (puller, from) = (&cache.puller, cache.spec.from.as_ref()?);
            // Without it, the step's blob is downloaded and indexed instead.
            if let Ok(Ok(Some(index))) = self.bases.block_on(header_index(puller, from, header)) {
                overlay::save_index(dir, &layer.digest, &index);
            }
        }
        self.cache_stats.steps_from_registry += 1;
        Some(Some(layer))
    }

    /// HEADs the layer's blob in the cache repository and notes it is
    /// there to fetch; None (after a warning when the cache failed) if not.
    fn registry_blob(&mut self, layer: &LayerInfo) -> Option<()> {
        let cache = self.registry_cache.as_mut()?;
        let from = cache.spec.from.clone()?;
        let there = self
            .bases
            .block_on(blob_there(&cache.puller, &from, &layer.digest));
        match flat(there) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::warn!("registry cache {from}: {e}; building without it");
                cache.broken = true;
                return None;
            }
        }
        cache.served = true;
        let path = self.store.path(&layer.digest).ok()?;
        let blob = BaseBlob {
            image: from,
            digest: layer.digest.clone(),
            size: layer.size,
        };
        self.bases.add_lazy(path, blob);
        Some(())
    }

    /// Notes a COPY or ADD layer for the cache written after the build.
    pub(super) fn registry_record_layer(&mut self, key: &str, layer: &LayerInfo) {
        if let Some(cache) = self.registry_cache.as_mut().filter(|c| c.spec.to.is_some()) {
            cache.made.add_layer(key, layer);
        }
    }

    /// Notes what a RUN step left for the cache written after the build.
    pub(super) fn registry_record_step(&mut self, key: &str, layer: Option<&LayerInfo>) {
        if let Some(cache) = self.registry_cache.as_mut().filter(|c| c.spec.to.is_some()) {
            let header = cache
                .held
                .steps
                .get(key)
                .and_then(|e| e.header_index.clone());
            cache.made.add_step(key, layer, header);
        }
    }

    /// Puts the scans and header indexes the cache holds for these
    /// layers into the local cache, so neither the build nor the SBOM
    /// reads the layers for them.
    pub(super) fn registry_import_scans(&mut self, layers: &[LayerInfo]) {
        let Some(cache) = self.registry_cache.as_ref().filter(|c| !c.broken) else {
            return;
        };
        let Some(from) = cache.spec.from.as_ref() else {
            return;
        };
        let dir = &self.opts.cache_dir;
        for layer in layers {
            let Some(entry) = cache.held.scans.get(&layer.diff_id) else {
                continue;
            };
            if entry.layer != layer.digest {
                continue;
            }
            if overlay::load_index(dir, &layer.digest, &layer.diff_id).is_none() {
                let got =
                    self.bases
                        .block_on(header_index(&cache.puller, from, &entry.header_index));
                if let Ok(Ok(Some(index))) = got {
                    overlay::save_index(dir, &layer.digest, &index);
                }
            }
            let has_scan = crate::attest::sbom::layers::stored_scan(dir, &layer.diff_id).is_some();
            if !has_scan {
                let got = self
                    .bases
                    .block_on(small_blob(&cache.puller, from, &entry.scan));
                if let Ok(Ok(Some(bytes))) = got {
                    crate::attest::sbom::layers::import_scan(dir, &layer.diff_id, &bytes);
                }
            }
        }
    }

    /// Merges the build's entries into the cache repository (`--cache-to`),
    /// or hands them back for the pipeline to write after the SBOM; a
    /// failure is a warning.
    pub(super) fn export_registry_cache(&mut self, image: &BuiltImage) -> Option<CacheExport> {
        let cache = self.registry_cache.as_mut()?;
        let (to, mode) = cache.spec.to.clone()?;
        let mut made = std::mem::take(&mut cache.made);
        if mode == ExportMode::Min {
            let digests: BTreeSet<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
            made = made.only_layers(&digests);
        }
        self.attach_header_indexes(&mut made);
        let cache = self.registry_cache.as_ref()?;
        let from = cache.spec.from.clone().filter(|_| cache.served);
        if self.opts.defer_registry_cache {
            return Some(CacheExport {
                made,
                opts: cache.opts.clone(),
                to,
                from,
                layers: image.layers.clone(),
            });
        }
        let writer = Writer {
            opts: &cache.opts,
            store: &self.store,
            to: &to,
            from: from.as_ref(),
        };
        report_write(&to, flat(self.bases.block_on(writer.write(&made))));
        None
    }

    /// Gives each RUN layer without one its header index, stored as a blob.
    fn attach_header_indexes(&self, made: &mut CacheIndex) {
        for step in made.steps.values_mut() {
            let Some(layer) = step.layer.as_ref().filter(|_| step.header_index.is_none()) else {
                continue;
            };
            let dir = &self.opts.cache_dir;
            let Some(index) = overlay::load_index(dir, &layer.digest, &layer.diff_id) else {
                continue;
            };
            let Ok(bytes) = serde_json::to_vec(&index) else {
                continue;
            };
            if let Ok(digest) = self.store.put_bytes(&bytes) {
                let size = bytes.len() as u64;
                step.header_index = Some(BlobRef { digest, size });
            }
        }
    }
}
