//! Glue between a built image and the registry sink: which files hold its
//! blobs, and which repositories of a registry already hold them, so a push
//! to another repository mounts instead of uploading (docker keeps the same
//! record in its distribution metadata).

use super::error::RegistryError;
use super::options::PushOptions;
use super::pull::RegistryOptions;
use super::push::{self, LocalBlob, PushImage, PushOutcome, RemoteBlob};
use super::session::Session;
use super::target::Reference;
use crate::image::{
    Artifact, BuiltImage, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use crate::store::{BlobStore, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PublishError {
    /// See [`RegistryError::is_unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PublishError::Registry(e) if e.is_unavailable())
    }
}

/// digest → repositories known to hold it, for one registry.
type MountRecord = BTreeMap<String, BTreeSet<String>>;

fn record_path(cache_dir: &Path, registry: &str) -> PathBuf {
    let safe = crate::files::safe_file_name(registry);
    cache_dir.join("mounts").join(format!("{safe}.json"))
}

/// A damaged or missing record only costs uploads, so it reads as empty.
fn read_record(path: &Path) -> MountRecord {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_record(path: &Path, record: &MountRecord) {
    let write = || -> std::io::Result<()> {
        crate::files::write_atomic(path, &serde_json::to_vec(record)?)
    };
    if let Err(e) = write() {
        tracing::warn!("cannot update {}: {e}", path.display());
    }
}

fn local_blob(
    store: &BlobStore,
    digest: &str,
    size: u64,
    media_type: &str,
    mounts: &MountRecord,
    repo: &str,
) -> Result<LocalBlob, StoreError> {
    Ok(local_blob_at(
        store.existing(digest)?,
        digest,
        size,
        media_type,
        mounts,
        repo,
    ))
}

fn local_blob_at(
    path: PathBuf,
    digest: &str,
    size: u64,
    media_type: &str,
    mounts: &MountRecord,
    repo: &str,
) -> LocalBlob {
    let mount_from = mounts
        .get(digest)
        .map(|repos| {
            repos
                .iter()
                .filter(|r| r.as_str() != repo)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    LocalBlob {
        digest: digest.to_string(),
        size,
        media_type: media_type.to_string(),
        path,
        source: None,
        mount_from,
    }
}

/// The registry's view of a built image: manifest bytes and blob files.
/// Base layers on the target registry are mounted from the base's repository.
/// Every blob must be in the store (see [`push_image_from`] for base layers
/// left in their registry).
pub fn push_image(
    store: &BlobStore,
    image: &BuiltImage,
    mounts: &MountRecord,
    target: &Reference,
) -> Result<PushImage, StoreError> {
    push_image_from(store, image, mounts, target, None)
}

/// [`push_image`], but base layers missing from the store are read from the
/// base's registry (reached with `sources`): mounted when it is the target's
/// registry, streamed registry to registry otherwise.
pub fn push_image_from(
    store: &BlobStore,
    image: &BuiltImage,
    mounts: &MountRecord,
    target: &Reference,
    sources: Option<&RegistryOptions>,
) -> Result<PushImage, StoreError> {
    let repo = target.repository.as_str();
    let config = local_blob(
        store,
        &image.config_digest,
        image.config_size,
        MEDIA_TYPE_CONFIG,
        mounts,
        repo,
    )?;
    let base_repo = image
        .base
        .as_ref()
        .filter(|b| b.registry == target.registry && b.repository != repo);
    let mut layers = Vec::new();
    for (i, l) in image.layers.iter().enumerate() {
        let remote = image
            .base
            .as_ref()
            .filter(|b| i < b.layer_count && !store.contains(&l.digest))
            .zip(sources);
        let mut blob = match remote {
            Some((base, opts)) => {
                let mut blob = local_blob_at(
                    store.path(&l.digest)?,
                    &l.digest,
                    l.size,
                    &l.media_type,
                    mounts,
                    repo,
                );
                let src = opts.push_options(&base.registry);
                blob.source = Some(RemoteBlob {
                    registry: base.registry.clone(),
                    repository: base.repository.clone(),
                    insecure: src.insecure,
                    ca_certs: src.ca_certs,
                });
                blob
            }
            None => local_blob(store, &l.digest, l.size, &l.media_type, mounts, repo)?,
        };
        if let Some(base) = base_repo.filter(|b| i < b.layer_count) {
            blob.mount_from.insert(0, base.repository.clone());
        }
        layers.push(blob);
    }
    Ok(PushImage {
        manifest: image.manifest.clone(),
        manifest_media_type: MEDIA_TYPE_MANIFEST.to_string(),
        config,
        layers,
    })
}

/// Pushes the image and remembers that the target repository now holds its
/// blobs. Base layers that are not in the store are read from the base's
/// registry, reached with `sources` (the build's registry options).
pub async fn publish(
    store: &BlobStore,
    image: &BuiltImage,
    target: &Reference,
    opts: &PushOptions,
    cache_dir: &Path,
    sources: &RegistryOptions,
) -> Result<PushOutcome, PublishError> {
    publish_under(store, image, target, &target.tag, opts, cache_dir, sources).await
}

/// [`publish`], with the manifest put under `reference`: the target's tag,
/// or the manifest's own digest for each image of an index.
async fn publish_under(
    store: &BlobStore,
    image: &BuiltImage,
    target: &Reference,
    reference: &str,
    opts: &PushOptions,
    cache_dir: &Path,
    sources: &RegistryOptions,
) -> Result<PushOutcome, PublishError> {
    let record_file = record_path(cache_dir, &target.registry);
    let record = read_record(&record_file);
    let push = push_image_from(store, image, &record, target, Some(sources))?;
    let outcome = push::push_under(&push, target, reference, opts).await?;
    let mut record = read_record(&record_file);
    for digest in std::iter::once(&push.config.digest).chain(push.layers.iter().map(|l| &l.digest))
    {
        record
            .entry(digest.clone())
            .or_default()
            .insert(target.repository.clone());
    }
    write_record(&record_file, &record);
    Ok(outcome)
}

/// Pushes an image, or every per-platform image of an index (by digest) and
/// then the index under the tag, so the tag appears only once all is there.
/// Base registries are reached with `sources`, as in [`publish`].
pub async fn publish_artifact(
    store: &BlobStore,
    artifact: &Artifact,
    target: &Reference,
    opts: &PushOptions,
    cache_dir: &Path,
    sources: &RegistryOptions,
) -> Result<String, PublishError> {
    let index = match artifact {
        Artifact::Image(image) => {
            return Ok(publish(store, image, target, opts, cache_dir, sources)
                .await?
                .manifest_digest)
        }
        Artifact::Index(index) => index,
    };
    for image in &index.images {
        let digest = &image.manifest_digest;
        publish_under(store, image, target, digest, opts, cache_dir, sources).await?;
    }
    let session = Session::open(&target.registry, opts).await?;
    session
        .put_manifest(
            &target.repository,
            &target.tag,
            MEDIA_TYPE_INDEX,
            &index.manifest,
        )
        .await?;
    Ok(index.digest.clone())
}
