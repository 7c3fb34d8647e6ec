//! The registry as an image source: resolve a reference (through an index
//! or manifest list to one platform), fetch its config, and download its
//! layers into the blob store when they are needed, verifying every digest
//! on the way.

use super::auth::Access;
use super::client::{accept_header, Client, ReqBody, DOCKER_LIST};
use super::error::RegistryError;
use super::options::{EventSink, Options};
use crate::digest::{self, HashingWriter};
use crate::image::{
    Artifact, BuiltImage, DocDescriptor as Descriptor, Document, ImageConfig, MAX_DOCUMENT,
    MEDIA_TYPE_INDEX,
};
use crate::layer::LayerInfo;
use crate::name::Reference;
use crate::platform::Platform;
use crate::store::{BlobStore, StoreError};
use futures_util::{StreamExt as _, TryStreamExt as _};
use reqwest::{Method, StatusCode};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

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

/// A base image resolved to one platform; its layers stay in the registry
/// until [`Puller::fetch_blobs`] downloads them.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub reference: Reference,
    /// What the reference resolved to (an index or a manifest).
    pub resolved_digest: String,
    pub manifest_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerInfo>,
}

fn is_index(media_type: &str, doc: &Document) -> bool {
    media_type == MEDIA_TYPE_INDEX || media_type == DOCKER_LIST || doc.manifests.is_some()
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

/// Reads one image's repository into the store.
struct Reader<'a> {
    client: &'a Client,
    image: &'a Reference,
    store: &'a BlobStore,
}

impl Reader<'_> {
    fn name(&self) -> String {
        self.image.to_string()
    }

    async fn get(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<reqwest::Response, PullError> {
        let url = self.client.url(path)?;
        Ok(self
            .client
            .send(Method::GET, &url, headers, ReqBody::Empty)
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
                    if e.is_transient() && self.client.wait_to_retry(attempt, what, &e).await =>
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
        let path = format!("/v2/{}/manifests/{reference}", self.image.repository());
        let headers = [("accept", accept_header())];
        let resp = self.get(&path, &headers).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            let reason = self.client.fail("manifest", resp).await.to_string();
            return Err(PullError::NotFound {
                image: self.name(),
                reason,
            });
        }
        if !resp.status().is_success() {
            return Err(self.client.fail("manifest", resp).await.into());
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
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.client.body_error(e))? {
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
        let path = format!("/v2/{}/blobs/{digest}", self.image.repository());
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
                        host: self.client.registry().to_string(),
                        reason: format!(
                            "asked for {digest} from byte {have}, got range {answered:?}"
                        ),
                    }
                    .into());
                }
                0
            }
            s if s.is_success() => have,
            _ => return Err(self.client.fail("blob download", resp).await.into()),
        };
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.client.body_error(e))? {
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
                host: self.client.registry().to_string(),
                reason: format!("the download of {digest} stopped after {got} of {size} bytes"),
            }
            .into());
        }
        Ok(())
    }

    /// Resolves the image (through an index to `platform`'s manifest) and
    /// downloads its manifest and config.
    async fn base_image(&self, platform: &Platform) -> Result<BaseImage, PullError> {
        let (bytes, resolved_digest, media_type) = self.document(self.image.identifier()).await?;
        let doc = parse_document(self, &bytes)?;
        let (doc, manifest_digest) = if is_index(&media_type, &doc) {
            let entries = doc.manifests.unwrap_or_default();
            let entry = select(&entries, platform).ok_or_else(|| PullError::NoPlatform {
                image: self.name(),
                platform: platform.to_string(),
                offered: offered(&entries),
            })?;
            let (bytes, digest, _) = self.document(&entry.digest).await?;
            (parse_document(self, &bytes)?, digest)
        } else {
            (doc, resolved_digest.clone())
        };
        let invalid = |reason: &str| PullError::Invalid {
            image: self.name(),
            reason: reason.to_string(),
        };
        let config_desc = doc
            .config
            .ok_or_else(|| invalid("the manifest has no config"))?;
        let layer_descs = doc.layers.unwrap_or_default();
        let config_path = self.blob(&config_desc.digest, config_desc.size).await?;
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
            reference: self.image.clone(),
            resolved_digest,
            manifest_digest,
            config,
            layers,
        })
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

/// Clients for the registries images are read from: one per registry,
/// opened when first needed with pull access to every repository named when
/// the puller was made, and kept, so its token and connections serve every
/// later read (cf. go-containerregistry's `remote.Puller`).
pub struct Puller {
    opts: Options,
    /// Registry → the repositories read from it.
    repositories: BTreeMap<String, BTreeSet<String>>,
    clients: tokio::sync::Mutex<HashMap<String, Arc<Client>>>,
}

impl Puller {
    /// A puller for `(registry, repository)` pairs.
    pub fn new<'a>(
        opts: &Options,
        repositories: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Puller {
        let mut by_registry: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (registry, repository) in repositories {
            by_registry
                .entry(registry.to_string())
                .or_default()
                .insert(repository.to_string());
        }
        Puller {
            // Reads report no push progress.
            opts: Options {
                events: EventSink::default(),
                ..opts.clone()
            },
            repositories: by_registry,
            clients: Default::default(),
        }
    }

    /// A puller for these images.
    pub fn for_images<'a>(
        opts: &Options,
        images: impl IntoIterator<Item = &'a Reference>,
    ) -> Puller {
        Puller::new(
            opts,
            images.into_iter().map(|i| (i.registry(), i.repository())),
        )
    }

    /// The client for `registry`, opened on first use. A repository not
    /// named up front opens a new client whose access adds it.
    pub async fn client(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Arc<Client>, RegistryError> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(registry).filter(|c| c.access.pulls(repository)) {
            return Ok(c.clone());
        }
        let named = self.repositories.get(registry).into_iter().flatten();
        let access = Access::pull(named.chain([&repository.to_string()]));
        let client = Arc::new(Client::open(registry, &access, &self.opts).await?);
        clients.insert(registry.to_string(), client.clone());
        Ok(client)
    }

    /// Resolves `image` for `platform` and downloads what a build needs:
    /// the manifest and the config, not the layers.
    pub async fn pull(
        &self,
        image: &Reference,
        platform: &Platform,
        store: &BlobStore,
    ) -> Result<BaseImage, PullError> {
        let client = self.client(image.registry(), image.repository()).await?;
        let reader = Reader {
            client: &client,
            image,
            store,
        };
        reader.base_image(platform).await
    }

    /// The manifest or index `image` names, as the registry stores it
    /// (checked against its digest when pinned): bytes, digest, media type.
    pub async fn manifest(
        &self,
        image: &Reference,
        store: &BlobStore,
    ) -> Result<(Vec<u8>, String, String), PullError> {
        let client = self.client(image.registry(), image.repository()).await?;
        let reader = Reader {
            client: &client,
            image,
            store,
        };
        reader.document(image.identifier()).await
    }

    /// Downloads one blob of `image`'s repository into the store (unless it
    /// is there), verifying its digest and size.
    pub async fn fetch_blob(
        &self,
        blob: &BaseBlob,
        store: &BlobStore,
    ) -> Result<PathBuf, PullError> {
        if let Ok(path) = store.existing(&blob.digest) {
            return Ok(path);
        }
        let image = &blob.image;
        let client = self.client(image.registry(), image.repository()).await?;
        let reader = Reader {
            client: &client,
            image,
            store,
        };
        tracing::info!(image = %image, digest = %blob.digest, size = blob.size, "downloading base layer");
        self.opts.layer_downloads.add_one();
        reader.blob(&blob.digest, blob.size).await
    }

    /// Downloads every blob the store lacks, `download_concurrency` at once
    /// (each blob's own download resumes and verifies as [`Puller::fetch_blob`]'s).
    pub async fn fetch_blobs(
        &self,
        blobs: &[BaseBlob],
        store: &BlobStore,
    ) -> Result<(), PullError> {
        let mut seen = BTreeSet::new();
        let missing: Vec<&BaseBlob> = blobs
            .iter()
            .filter(|b| !store.contains(&b.digest) && seen.insert(b.digest.as_str()))
            .collect();
        // Built eagerly: a lazily mapping closure over `&BaseBlob` would make
        // the future !Send (higher-ranked lifetimes).
        let downloads: Vec<_> = missing
            .into_iter()
            .map(|b| self.fetch_blob(b, store))
            .collect();
        futures_util::stream::iter(downloads)
            .buffer_unordered(self.opts.download_concurrency.max(1))
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }
}

/// A blob of a registry image: a base layer, where it lives and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBlob {
    pub image: Reference,
    pub digest: String,
    pub size: u64,
}

/// The layers above the base that the registry build cache served and the
/// store lacks, as blobs of the cache repository.
pub fn cached_layers(image: &BuiltImage, store: &BlobStore) -> Vec<BaseBlob> {
    let Some(cache) = &image.cache_source else {
        return Vec::new();
    };
    let above = image.base.as_ref().map_or(0, |b| b.layer_count);
    image
        .layers
        .iter()
        .skip(above)
        .filter(|l| !store.contains(&l.digest))
        .map(|l| BaseBlob {
            image: cache.clone(),
            digest: l.digest.clone(),
            size: l.size,
        })
        .collect()
}

/// Downloads, once and verified, every base layer of the artifact that the
/// store lacks, so a sink that writes every blob (an OCI layout, an archive)
/// finds them all (and every layer the registry build cache served). Builds
/// leave base layers in their registry when the layer index cache knows
/// their headers.
pub async fn ensure_blobs(
    store: &BlobStore,
    artifact: &Artifact,
    opts: &Options,
) -> Result<(), PullError> {
    let images: Vec<&BuiltImage> = match artifact {
        Artifact::Image(image) => vec![image],
        Artifact::Index(index) => index.images.iter().collect(),
    };
    let mut wanted = Vec::new();
    for image in images {
        wanted.extend(cached_layers(image, store));
        let Some(base) = &image.base else {
            continue;
        };
        let base_ref = Reference::parse(&base.name).map_err(|e| PullError::Invalid {
            image: base.name.clone(),
            reason: e.to_string(),
        })?;
        for layer in image.layers.iter().take(base.layer_count) {
            wanted.push(BaseBlob {
                image: base_ref.clone(),
                digest: layer.digest.clone(),
                size: layer.size,
            });
        }
    }
    let puller = Puller::for_images(opts, wanted.iter().map(|b| &b.image));
    puller.fetch_blobs(&wanted, store).await
}

fn parse_document(reader: &Reader<'_>, bytes: &[u8]) -> Result<Document, PullError> {
    serde_json::from_slice(bytes).map_err(|e| PullError::Invalid {
        image: reader.name(),
        reason: format!("the registry returned a manifest that is not valid JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::DocPlatform as DescPlatform;
    use crate::image::MEDIA_TYPE_MANIFEST;
    use crate::remote::client::DOCKER_MANIFEST;

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
