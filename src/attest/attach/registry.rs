//! Attachments pushed to the image's registry repository through a
//! [`Pusher`]; blobs go through the build's blob store, since the pusher
//! uploads from files.

use super::{AttachError, Blob, Target};
use crate::remote::{LocalBlob, Pusher};
use crate::store::BlobStore;

pub struct RegistryTarget<'a> {
    pub pusher: &'a Pusher,
    pub store: &'a BlobStore,
}

fn failed(e: impl std::fmt::Display) -> AttachError {
    AttachError::Target(e.to_string())
}

impl Target for RegistryTarget<'_> {
    async fn get_manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, AttachError> {
        self.pusher.get_manifest(reference).await.map_err(failed)
    }

    async fn put_blob(&self, blob: &Blob) -> Result<(), AttachError> {
        self.store.put_bytes(&blob.bytes).map_err(failed)?;
        let local = LocalBlob {
            digest: blob.digest.clone(),
            size: blob.bytes.len() as u64,
            media_type: blob.media_type.clone(),
            path: self.store.existing(&blob.digest).map_err(failed)?,
            source: None,
            mount_from: Vec::new(),
        };
        self.pusher.push_blob(&local).await.map_err(failed)
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), AttachError> {
        self.pusher
            .put_manifest(reference, media_type, bytes)
            .await
            .map(drop)
            .map_err(failed)
    }
}
