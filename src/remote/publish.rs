//! Glue between a built image and the registry sink: which files hold its
//! blobs, and which repositories of a registry already hold them, so a push
//! to another repository mounts instead of uploading (docker keeps the same
//! record in its distribution metadata).

use super::error::RegistryError;
use super::options::Options;
use super::push::{LocalBlob, PushImage, PushOutcome, Pusher, RemoteBlob};
use crate::image::{
    Artifact, BuiltImage, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use crate::name::Reference;
use crate::store::{BlobStore, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashSet};
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
    push_image_from(store, image, mounts, target, false)
}

/// [`push_image`], but with `from_base_registry`, base layers missing from
/// the store are read from the base's registry: mounted when it is the
/// target's registry, streamed registry to registry otherwise.
fn push_image_from(
    store: &BlobStore,
    image: &BuiltImage,
    mounts: &MountRecord,
    target: &Reference,
    from_base_registry: bool,
) -> Result<PushImage, StoreError> {
    let repo = target.repository();
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
        .filter(|b| b.registry == target.registry() && b.repository != repo);
    let mut layers = Vec::new();
    for (i, l) in image.layers.iter().enumerate() {
        let remote = image
            .base
            .as_ref()
            .filter(|b| from_base_registry && i < b.layer_count && !store.contains(&l.digest));
        let mut blob = match remote {
            Some(base) => {
                let mut blob = local_blob_at(
                    store.path(&l.digest)?,
                    &l.digest,
                    l.size,
                    &l.media_type,
                    mounts,
                    repo,
                );
                blob.source = Some(RemoteBlob {
                    registry: base.registry.clone(),
                    repository: base.repository.clone(),
                });
                blob
            }
            None => match image
                .cache_source
                .as_ref()
                .filter(|_| !store.contains(&l.digest))
            {
                Some(cache) => from_cache(store, l, cache, mounts, target)?,
                None => local_blob(store, &l.digest, l.size, &l.media_type, mounts, repo)?,
            },
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

/// A layer the registry build cache served and the store lacks: mounted
/// from the cache repository when it is on the target's registry, else
/// streamed from it.
fn from_cache(
    store: &BlobStore,
    layer: &crate::layer::LayerInfo,
    cache: &Reference,
    mounts: &MountRecord,
    target: &Reference,
) -> Result<LocalBlob, StoreError> {
    let repo = target.repository();
    let path = store.path(&layer.digest)?;
    let mut blob = local_blob_at(
        path,
        &layer.digest,
        layer.size,
        &layer.media_type,
        mounts,
        repo,
    );
    blob.source = Some(RemoteBlob {
        registry: cache.registry().to_string(),
        repository: cache.repository().to_string(),
    });
    if cache.registry() == target.registry() && cache.repository() != repo {
        blob.mount_from.insert(0, cache.repository().to_string());
    }
    Ok(blob)
}

/// Pushes the image and remembers that the target repository now holds its
/// blobs. Base layers that are not in the store are read from the base's
/// registry, reached as `opts` says.
pub async fn publish(
    store: &BlobStore,
    image: &BuiltImage,
    target: &Reference,
    opts: &Options,
    cache_dir: &Path,
) -> Result<PushOutcome, PublishError> {
    let none = HashSet::new();
    let mut outcomes =
        publish_images(store, &[image], target, opts, cache_dir, (None, &none)).await?;
    Ok(outcomes.pop().unwrap_or_default())
}

/// Pushes an image, or every per-platform image of an index (by digest) and
/// then the index under the tag, so the tag appears only once all is there.
/// One [`Pusher`] serves it all. Returns the digest under the tag.
pub async fn publish_artifact(
    store: &BlobStore,
    artifact: &Artifact,
    target: &Reference,
    opts: &Options,
    cache_dir: &Path,
) -> Result<String, PublishError> {
    publish_streamed(store, artifact, target, opts, cache_dir, &HashSet::new()).await
}

/// [`publish_artifact`] after the blobs in `committed` were streamed to
/// `target`'s repository during the build (see `remote::stream`): those
/// are not sent or looked for again.
pub async fn publish_streamed(
    store: &BlobStore,
    artifact: &Artifact,
    target: &Reference,
    opts: &Options,
    cache_dir: &Path,
    committed: &HashSet<String>,
) -> Result<String, PublishError> {
    let (images, index) = match artifact {
        Artifact::Image(image) => (vec![&**image], None),
        Artifact::Index(index) => (
            index.images.iter().collect(),
            Some((MEDIA_TYPE_INDEX, index.manifest.as_slice())),
        ),
    };
    let outcomes =
        publish_images(store, &images, target, opts, cache_dir, (index, committed)).await?;
    Ok(match index {
        Some(_) => artifact.digest().to_string(),
        None => outcomes
            .into_iter()
            .next()
            .map(|o| o.manifest_digest)
            .unwrap_or_default(),
    })
}

/// Tags what [`publish_artifact`] pushed to `first` as each of `extra`
/// too: in `first`'s repository a manifest PUT of the same bytes (one
/// client for them all), elsewhere a publish of its own (blobs mounted).
pub async fn publish_tags(
    store: &BlobStore,
    artifact: &Artifact,
    first: &Reference,
    extra: &[Reference],
    opts: &Options,
    cache_dir: &Path,
) -> Result<(), PublishError> {
    let same_repo =
        |r: &&Reference| r.registry() == first.registry() && r.repository() == first.repository();
    let (retags, elsewhere): (Vec<&Reference>, Vec<&Reference>) = extra.iter().partition(same_repo);
    if !retags.is_empty() {
        let pusher = Pusher::open(first, &[], opts).await?;
        for tag in retags {
            pusher
                .put_manifest(tag.identifier(), artifact.media_type(), artifact.manifest())
                .await?;
        }
    }
    for target in elsewhere {
        publish_artifact(store, artifact, target, opts, cache_dir).await?;
    }
    Ok(())
}

/// Pushes `images`, each under the target's tag, or, when an index follows,
/// each by its digest and then the index (media type, bytes) under the tag.
async fn publish_images(
    store: &BlobStore,
    images: &[&BuiltImage],
    target: &Reference,
    opts: &Options,
    cache_dir: &Path,
    (index, committed): (Option<(&str, &[u8])>, &HashSet<String>),
) -> Result<Vec<PushOutcome>, PublishError> {
    let record_file = record_path(cache_dir, target.registry());
    let record = read_record(&record_file);
    let pushes = images
        .iter()
        .map(|image| push_image_from(store, image, &record, target, true))
        .collect::<Result<Vec<_>, _>>()?;
    let mut pusher = Pusher::open(target, &pushes.iter().collect::<Vec<_>>(), opts).await?;
    pusher.assume_committed(committed);
    let mut outcomes = Vec::new();
    for (image, push) in images.iter().zip(&pushes) {
        let reference = match index {
            Some(_) => image.manifest_digest.as_str(),
            None => target.identifier(),
        };
        outcomes.push(pusher.push(push, reference).await?);
        remember(&record_file, push, target.repository());
    }
    if let Some((media_type, bytes)) = index {
        pusher
            .put_manifest(target.identifier(), media_type, bytes)
            .await?;
    }
    Ok(outcomes)
}

/// Records that `repository` now holds the image's blobs (read again
/// first: another push may have written the record meanwhile).
fn remember(record_file: &Path, push: &PushImage, repository: &str) {
    let mut record = read_record(record_file);
    for digest in std::iter::once(&push.config.digest).chain(push.layers.iter().map(|l| &l.digest))
    {
        record
            .entry(digest.clone())
            .or_default()
            .insert(repository.to_string());
    }
    write_record(record_file, &record);
}
