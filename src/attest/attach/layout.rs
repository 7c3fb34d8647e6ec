//! Attachments written into an OCI layout (`--output oci:DIR`): blobs in
//! `blobs/sha256`, each manifest listed in index.json, marked as an
//! attachment of the image (`layout::ANNOTATION_ATTACHMENT`); referrers
//! unnamed, the tags (`sha256-<hex>`, `.sig`, ...) as ref names, so
//! `skopeo copy oci:DIR:sha256-<hex>.sig ...` finds them.

use super::{AttachError, Blob, Target};
use crate::layout::{self, LayoutError};
use crate::store::BlobStore;
use std::path::PathBuf;

pub struct LayoutTarget {
    pub dir: PathBuf,
    /// The image the attachments are about.
    pub subject: String,
}

fn failed(e: impl Into<LayoutError>) -> AttachError {
    AttachError::Target(e.into().to_string())
}

impl Target for LayoutTarget {
    async fn get_manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, AttachError> {
        layout::manifest_named(&self.dir, reference).map_err(failed)
    }

    async fn put_blob(&self, blob: &Blob) -> Result<(), AttachError> {
        BlobStore::open(&self.dir)
            .and_then(|s| s.put_bytes(&blob.bytes))
            .map(drop)
            .map_err(failed)
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), AttachError> {
        let name = (!reference.starts_with("sha256:")).then_some(reference);
        layout::add_attachment(&self.dir, &self.subject, media_type, bytes, name).map_err(failed)
    }
}
