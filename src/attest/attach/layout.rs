//! Attachments written into an OCI layout (`--output oci:DIR`): blobs in
//! `blobs/sha256`, each manifest listed in index.json, marked as an
//! attachment of the image (`layout::ANNOTATION_ATTACHMENT`); referrers
//! unnamed, the tags (`sha256-<hex>`, `.sig`, ...) as ref names, so
//! `skopeo copy oci:DIR:sha256-<hex>.sig ...` finds them.

use super::{AttachError, Blob, Target};
use crate::layout::{LayoutError, LayoutIndex};
use std::path::PathBuf;
use std::sync::Mutex;

pub struct LayoutTarget {
    dir: PathBuf,
    /// The image the attachments are about.
    subject: String,
    /// index.json as the attachments so far leave it, written by `finish`.
    index: Mutex<Option<LayoutIndex>>,
}

fn failed(e: impl Into<LayoutError>) -> AttachError {
    AttachError::Target(e.into().to_string())
}

impl LayoutTarget {
    pub fn new(dir: PathBuf, subject: String) -> LayoutTarget {
        LayoutTarget {
            dir,
            subject,
            index: Mutex::new(None),
        }
    }

    /// Runs `f` on the layout's index.json, read at the first use.
    fn with_index<T>(
        &self,
        f: impl FnOnce(&mut LayoutIndex) -> Result<T, LayoutError>,
    ) -> Result<T, AttachError> {
        let mut slot = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let index = match slot.take() {
            Some(index) => index,
            None => LayoutIndex::open(&self.dir).map_err(failed)?,
        };
        f(slot.insert(index)).map_err(failed)
    }
}

impl Target for LayoutTarget {
    async fn get_manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, AttachError> {
        self.with_index(|index| index.manifest_named(reference))
    }

    async fn put_blob(&self, blob: &Blob) -> Result<(), AttachError> {
        self.with_index(|index| {
            index.put_blob(&blob.bytes);
            Ok(())
        })
    }

    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), AttachError> {
        let name = (!reference.starts_with("sha256:")).then_some(reference);
        self.with_index(|index| index.add_attachment(&self.subject, media_type, bytes, name))
    }

    /// The attachments' blobs, committed together, then one write of index.json.
    async fn finish(&self) -> Result<(), AttachError> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        match index.as_mut() {
            Some(index) => index.write().map_err(failed),
            None => Ok(()),
        }
    }
}
