//! The registry as an image source: resolve a reference (through an index
//! or manifest list to one platform), fetch its config, and download its
//! layers into the blob store when they are needed, verifying every digest
//! on the way.

use super::auth::Scope;
use super::error::RegistryError;
use super::options::PushOptions;
use super::session::{ReqBody, Session};
use crate::digest::{self, HashingWriter};
use crate::image::{
    Artifact, BuiltImage, DocDescriptor as Descriptor, Document, ImageConfig, MAX_DOCUMENT,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use crate::layer::LayerInfo;
use crate::name::reference::ImageRef;
use crate::platform::Platform;
use crate::store::{BlobStore, StoreError};
use reqwest::{Method, StatusCode};
use std::io::Write;
use std::path::PathBuf;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{image}: {reason}")]
    Invalid { image: String, reason: String },
    #[error("{image}: not found in the registry ({reason})")]
    NotFound { image: String, reason: String },
    #[error("{image}: no image for platform {platform} (the index offers {offered})")]
    NoPlatform {
        image: String,
        platform: String,
        offered: String,
    },
    #[error("{image}: {what} {expected} arrived with digest {actual}; refusing it")]
    DigestMismatch {
        image: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("downloading {digest}: {source}")]
    Io {
        digest: String,
        source: std::io::Error,
    },
}

/// How to reach registries: hosts served over plain HTTP and extra CAs.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub insecure_registries: Vec<String>,
    pub ca_certs: Vec<PathBuf>,
}

impl RegistryOptions {
    pub fn push_options(&self, registry: &str) -> PushOptions {
        PushOptions {
            insecure: self.insecure_registries.iter().any(|r| r == registry),
            ca_certs: self.ca_certs.clone(),
            ..PushOptions::default()
        }
    }
}

/// A base image resolved to one platform; its layers stay in the registry
/// until [`fetch_blob`] downloads them.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub reference: ImageRef,
    /// What the reference resolved to (an index or a manifest).
    pub resolved_digest: String,
    pub manifest_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerInfo>,
}

fn is_index(media_type: &str, doc: &Document) -> bool {
    media_type == MEDIA_TYPE_INDEX || media_type == DOCKER_LIST || doc.manifests.is_some()
}

fn accept_header() -> String {
    [
        MEDIA_TYPE_MANIFEST,
        MEDIA_TYPE_INDEX,
        DOCKER_MANIFEST,
        DOCKER_LIST,
    ]
    .join(", ")
}

/// Picks the platform's entry: exact os/arch, and the variant when asked for.
fn select<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let matches = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && (want.variant.is_none() || p.variant == want.variant)
        })
    };
    entries.iter().find(matches)
}

fn offered(entries: &[Descriptor]) -> String {
    let list: Vec<String> = entries
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if list.is_empty() {
        "no platforms".into()
    } else {
        list.join(", ")
    }
}

struct Puller<'a> {
    session: Session,
    image: &'a ImageRef,
    store: &'a BlobStore,
}

impl Puller<'_> {
    fn name(&self) -> String {
        self.image.to_string()
    }

    async fn get(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<reqwest::Response, PullError> {
        let url = self.session.url(path)?;
        let scopes = [Scope::pull(&self.image.repository)];
        Ok(self
            .session
            .send(Method::GET, &url, headers, ReqBody::Empty, &scopes)
            .await?)
    }

    /// Runs `step` again while it fails in transit (a body cut off, a
    /// reset), with the session's backoff; the GET itself already retries
    /// refused connections and 5xx.
    async fn retrying<T, F, Fut>(&self, what: &str, mut step: F) -> Result<T, PullError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PullError>>,
    {
        let mut attempt = 1;
        loop {
            match step().await {
                Err(PullError::Registry(e))
                    if e.is_transient() && self.session.wait_to_retry(attempt, what, &e).await =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A manifest or index by tag or digest: (bytes, digest, media type). Cached by digest.
    async fn document(&self, reference: &str) -> Result<(Vec<u8>, String, String), PullError> {
        if let Some(cached) = self.cached_document(reference)? {
            return Ok(cached);
        }
        let (bytes, content_type) = self
            .retrying("manifest download", || self.fetch_document(reference))
            .await?;
        let actual = digest::sha256(&bytes);
        if reference.starts_with("sha256:") && actual != reference {
            return Err(PullError::DigestMismatch {
                image: self.name(),
                what: "manifest",
                expected: reference.to_string(),
                actual,
            });
        }
        self.store.put_bytes(&bytes)?;
        let media_type = media_type_of(&bytes, content_type);
        Ok((bytes, actual, media_type))
    }

    /// One GET of a manifest or index: (bytes, content type).
    async fn fetch_document(&self, reference: &str) -> Result<(Vec<u8>, String), PullError> {
        let path = format!("/v2/{}/manifests/{reference}", self.image.repository);
        let headers = [("accept", accept_header())];
        let resp = self.get(&path, &headers).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            let reason = self.session.fail("manifest", resp).await.to_string();
            return Err(PullError::NotFound {
                image: self.name(),
                reason,
            });
        }
        if !resp.status().is_success() {
            return Err(self.session.fail("manifest", resp).await.into());
        }
        let content_type = header(&resp, "content-type");
        let bytes = self.read_small(resp, "manifest").await?;
        Ok((bytes, content_type))
    }

    fn cached_document(
        &self,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, String, String)>, PullError> {
        if !reference.starts_with("sha256:") || !self.store.contains(reference) {
            return Ok(None);
        }
        let path = self.store.existing(reference)?;
        let bytes = std::fs::read(&path).map_err(|source| PullError::Io {
            digest: reference.into(),
            source,
        })?;
        let media_type = media_type_of(&bytes, String::new());
        Ok(Some((bytes, reference.to_string(), media_type)))
    }

    async fn read_small(&self, resp: reqwest::Response, what: &str) -> Result<Vec<u8>, PullError> {
        let mut resp = resp;
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.session.body_error(e))? {
            out.extend_from_slice(&chunk);
            if out.len() > MAX_DOCUMENT {
                return Err(PullError::Invalid {
                    image: self.name(),
                    reason: format!("the {what} is larger than 4 MiB"),
                });
            }
        }
        Ok(out)
    }

    /// Downloads a blob into the store (unless it is there), verifying its
    /// digest and size. A download cut short resumes where it stopped (a
    /// Range GET), so a flaky network costs the lost bytes, not the layer.
    async fn blob(&self, digest: &str, size: u64) -> Result<PathBuf, PullError> {
        if let Ok(path) = self.store.existing(digest) {
            return Ok(path);
        }
        let temp = self.store.temp_file()?;
        let io_err = |source| PullError::Io {
            digest: digest.to_string(),
            source,
        };
        let file = temp.as_file().try_clone().map_err(io_err)?;
        let writer = std::sync::Mutex::new(HashingWriter::new(std::io::BufWriter::new(file)));
        self.retrying(&format!("download of {digest}"), || {
            self.download_rest(digest, size, &writer)
        })
        .await?;
        let writer = writer.into_inner().unwrap_or_else(|p| p.into_inner());
        let (mut buffered, actual, len) = writer.finish();
        buffered.flush().map_err(io_err)?;
        drop(buffered);
        if actual != digest || len != size {
            return Err(PullError::DigestMismatch {
                image: self.name(),
                what: "blob",
                expected: format!("{digest} ({size} bytes)"),
                actual: format!("{actual} ({len} bytes)"),
            });
        }
        Ok(self.store.commit(temp, digest)?)
    }

    /// One GET of what `writer` still lacks of the blob, appended to it.
    async fn download_rest(
        &self,
        digest: &str,
        size: u64,
        writer: &std::sync::Mutex<HashingWriter<std::io::BufWriter<std::fs::File>>>,
    ) -> Result<(), PullError> {
        let io_err = |source| PullError::Io {
            digest: digest.to_string(),
            source,
        };
        let have = lock(writer).written();
        let path = format!("/v2/{}/blobs/{digest}", self.image.repository);
        let range: Vec<(&str, String)> = if have > 0 {
            vec![("range", format!("bytes={have}-"))]
        } else {
            Vec::new()
        };
        let mut resp = self.get(&path, &range).await?;
        // A registry that ignores Range sends the whole blob again.
        let mut skip = match resp.status() {
            StatusCode::PARTIAL_CONTENT if have > 0 => {
                let answered = header(&resp, "content-range");
                if !answered.starts_with(&format!("bytes {have}-")) {
                    return Err(RegistryError::Protocol {
                        host: self.session.host().to_string(),
                        reason: format!(
                            "asked for {digest} from byte {have}, got range {answered:?}"
                        ),
                    }
                    .into());
                }
                0
            }
            s if s.is_success() => have,
            _ => return Err(self.session.fail("blob download", resp).await.into()),
        };
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.session.body_error(e))? {
            let skipped = skip.min(chunk.len() as u64);
            skip -= skipped;
            let mut w = lock(writer);
            w.write_all(&chunk[skipped as usize..]).map_err(io_err)?;
            if w.written() > size {
                return Ok(());
            }
        }
        let got = lock(writer).written();
        if got < size {
            // Ended early without an error: resume like any cut.
            return Err(RegistryError::Http {
                host: self.session.host().to_string(),
                reason: format!("the download of {digest} stopped after {got} of {size} bytes"),
            }
            .into());
        }
        Ok(())
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

/// The document's own mediaType wins over a registry's Content-Type.
fn media_type_of(bytes: &[u8], content_type: String) -> String {
    serde_json::from_slice::<Document>(bytes)
        .ok()
        .and_then(|d| d.media_type)
        .filter(|m| !m.is_empty())
        .unwrap_or(content_type)
}

/// Resolves `image` for `platform` and downloads what a build needs.
pub async fn pull(
    image: &ImageRef,
    platform: &Platform,
    store: &BlobStore,
    opts: &RegistryOptions,
) -> Result<BaseImage, PullError> {
    let session = Session::open(&image.registry, &opts.push_options(&image.registry)).await?;
    let puller = Puller {
        session,
        image,
        store,
    };
    let (bytes, resolved_digest, media_type) = puller.document(image.reference()).await?;
    let doc = parse_document(&puller, &bytes)?;
    let (doc, manifest_digest) = if is_index(&media_type, &doc) {
        let entries = doc.manifests.unwrap_or_default();
        let entry = select(&entries, platform).ok_or_else(|| PullError::NoPlatform {
            image: puller.name(),
            platform: platform.to_string(),
            offered: offered(&entries),
        })?;
        let (bytes, digest, _) = puller.document(&entry.digest).await?;
        (parse_document(&puller, &bytes)?, digest)
    } else {
        (doc, resolved_digest.clone())
    };
    let invalid = |reason: &str| PullError::Invalid {
        image: puller.name(),
        reason: reason.to_string(),
    };
    let config_desc = doc
        .config
        .ok_or_else(|| invalid("the manifest has no config"))?;
    let layer_descs = doc.layers.unwrap_or_default();
    let config_path = puller.blob(&config_desc.digest, config_desc.size).await?;
    let config_bytes = std::fs::read(&config_path).map_err(|source| PullError::Io {
        digest: config_desc.digest.clone(),
        source,
    })?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| invalid(&format!("its config is not valid JSON: {e}")))?;
    if config.rootfs.diff_ids.len() != layer_descs.len() {
        return Err(invalid(
            "the config's diff_ids do not match the manifest's layers",
        ));
    }
    // Layers are not downloaded here: a build needs only their headers,
    // which the layer index cache may already hold (see `fetch_blob`).
    let mut layers = Vec::new();
    for (desc, diff_id) in layer_descs.iter().zip(&config.rootfs.diff_ids) {
        if crate::digest::hex_part(&desc.digest).is_none() {
            return Err(invalid(&format!(
                "layer digest {:?} is not a sha256 digest",
                desc.digest
            )));
        }
        layers.push(LayerInfo {
            digest: desc.digest.clone(),
            diff_id: diff_id.clone(),
            size: desc.size,
            uncompressed_size: 0,
            media_type: desc.media_type.clone(),
        });
    }
    Ok(BaseImage {
        reference: image.clone(),
        resolved_digest,
        manifest_digest,
        config,
        layers,
    })
}

/// Downloads one blob of `image`'s repository into the store (unless it is
/// there), verifying its digest and size.
pub async fn fetch_blob(
    image: &ImageRef,
    store: &BlobStore,
    opts: &RegistryOptions,
    digest: &str,
    size: u64,
) -> Result<PathBuf, PullError> {
    if let Ok(path) = store.existing(digest) {
        return Ok(path);
    }
    let session = Session::open(&image.registry, &opts.push_options(&image.registry)).await?;
    let puller = Puller {
        session,
        image,
        store,
    };
    tracing::info!(image = %image, %digest, size, "downloading base layer");
    puller.blob(digest, size).await
}

/// Downloads, once and verified, every base layer of the artifact that the
/// store lacks, so a sink that writes every blob (an OCI layout, an archive)
/// finds them all. Builds leave base layers in their registry when the
/// layer index cache knows their headers.
pub async fn ensure_blobs(
    store: &BlobStore,
    artifact: &Artifact,
    opts: &RegistryOptions,
) -> Result<(), PullError> {
    let images: Vec<&BuiltImage> = match artifact {
        Artifact::Image(image) => vec![image],
        Artifact::Index(index) => index.images.iter().collect(),
    };
    for image in images {
        let Some(base) = &image.base else {
            continue;
        };
        let base_ref = ImageRef::parse(&base.name).map_err(|e| PullError::Invalid {
            image: base.name.clone(),
            reason: e.to_string(),
        })?;
        for layer in image.layers.iter().take(base.layer_count) {
            if !store.contains(&layer.digest) {
                fetch_blob(&base_ref, store, opts, &layer.digest, layer.size).await?;
            }
        }
    }
    Ok(())
}

fn parse_document(puller: &Puller<'_>, bytes: &[u8]) -> Result<Document, PullError> {
    serde_json::from_slice(bytes).map_err(|e| PullError::Invalid {
        image: puller.name(),
        reason: format!("the registry returned a manifest that is not valid JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::DocPlatform as DescPlatform;

    fn entry(arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: MEDIA_TYPE_MANIFEST.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 1,
            platform: Some(DescPlatform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(String::from),
            }),
        }
    }

    #[test]
    fn selects_platform_by_arch_and_variant() {
        let entries = vec![
            entry("amd64", None),
            entry("arm", Some("v6")),
            entry("arm", Some("v7")),
        ];
        let want = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(
            select(&entries, &want)
                .unwrap()
                .platform
                .as_ref()
                .unwrap()
                .variant
                .as_deref(),
            Some("v7")
        );
        assert!(select(&entries, &Platform::parse("linux/arm64").unwrap()).is_none());
        assert_eq!(offered(&entries), "linux/amd64, linux/arm/v6, linux/arm/v7");
    }

    #[test]
    fn documents_tell_index_from_manifest() {
        let index: Document = serde_json::from_str(r#"{"manifests":[]}"#).unwrap();
        assert!(is_index("", &index));
        let manifest: Document =
            serde_json::from_str(r#"{"config":{"digest":"sha256:x","size":1},"layers":[]}"#)
                .unwrap();
        assert!(!is_index(DOCKER_MANIFEST, &manifest));
        assert!(is_index(DOCKER_LIST, &manifest));
    }
}
