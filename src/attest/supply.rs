//! The supply chain step of the pipeline: after a build, the SBOM of each
//! image and the provenance of what was built, planned for attaching (and
//! signed when a key is given); after delivery, written beside the image.
//!
//! A single image gets all of them. An index gets its provenance and
//! signature on the index, and each platform's image its own SBOM (and
//! signature), as `cosign sign --recursive` would.

use super::attach::{self, Attached, Documents, Plan, SubjectImage, Target};
use super::provenance::{self, BuildRecord, Material, Source};
use super::sbom::{self, LayerBlobs, SbomError, SbomFormat};
use super::sign::Signer256;
use super::statement::Subject;
use crate::image::{Artifact, BaseInfo, BuiltImage, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::layer::LayerInfo;
use crate::remote::pull::BaseBlob;
use crate::remote::{Options, Puller};
use crate::store::BlobStore;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What to make and attach.
#[derive(Debug, Clone)]
pub struct SupplyOptions {
    /// None: no SBOM (`--sbom=false`).
    pub sbom: Option<SbomFormat>,
    pub provenance: bool,
    pub sign_key: Option<Signer256>,
    /// The repository and commit the context came from, when known.
    pub source: Option<Source>,
    /// The Dockerfile as named (relative to the context or repository).
    pub dockerfile: String,
    /// `SOURCE_DATE_EPOCH` when it is set: both provenance times and the
    /// documents' creation time, so they are reproducible.
    pub source_date_epoch: Option<u64>,
    /// The service's build id.
    pub invocation_id: Option<String>,
}

impl Default for SupplyOptions {
    fn default() -> Self {
        SupplyOptions {
            sbom: Some(SbomFormat::Spdx),
            provenance: true,
            sign_key: None,
            source: None,
            dockerfile: "Dockerfile".into(),
            source_date_epoch: None,
            invocation_id: None,
        }
    }
}

impl SupplyOptions {
    /// Nothing to make: no SBOM, no provenance, no key.
    pub fn is_off(&self) -> bool {
        self.sbom.is_none() && !self.provenance && self.sign_key.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupplyError {
    #[error(transparent)]
    Sbom(#[from] SbomError),
    #[error("provenance: {0}")]
    Json(#[from] serde_json::Error),
    #[error("attaching to {target}: {source}")]
    Attach {
        target: String,
        source: attach::AttachError,
    },
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the documents are made from besides the options.
pub struct Inputs<'a> {
    pub artifact: &'a Artifact,
    /// Every registry image the build read.
    pub bases: &'a [BaseInfo],
    pub dockerfile_digest: &'a str,
    pub build_args: &'a std::collections::BTreeMap<String, String>,
    pub target: Option<&'a str>,
    /// `REGISTRY/REPO` (no tag), or the name built.
    pub repository: &'a str,
    pub cache_dir: &'a Path,
    pub started: u64,
    pub finished: u64,
}

/// The documents and plans for `inputs`; blocking (layers are read).
pub fn prepare(
    opts: &SupplyOptions,
    inputs: &Inputs<'_>,
    blobs: &dyn LayerBlobs,
) -> Result<Vec<Plan>, SupplyError> {
    let key = opts.sign_key.as_ref();
    let epoch = opts.source_date_epoch;
    let created = crate::image::rfc3339(epoch.unwrap_or(inputs.finished));
    let images = images_of(inputs.artifact);
    let mut plans = Vec::new();
    let mut subjects = Vec::new();
    let single = matches!(inputs.artifact, Artifact::Image(_));
    for image in &images {
        let subject = SubjectImage {
            repository: inputs.repository.to_string(),
            digest: image.manifest_digest.clone(),
            media_type: MEDIA_TYPE_MANIFEST.to_string(),
            size: image.manifest.len() as u64,
        };
        subjects.push(Subject::new(inputs.repository, &image.manifest_digest));
        let mut docs = Documents::default();
        if let Some(format) = opts.sbom {
            let inv = sbom::inventory(inputs.repository, image, inputs.cache_dir, blobs)?;
            let tool = format!("dockless-{}", env!("CARGO_PKG_VERSION"));
            let doc = match format {
                SbomFormat::Spdx => sbom::spdx_json(&inv, &created, &tool)?,
                SbomFormat::CycloneDx => sbom::cyclonedx_json(&inv, &created, &tool)?,
            };
            docs.sbom = Some((format, doc));
        }
        if single && opts.provenance {
            docs.provenance = Some(provenance_of(opts, inputs, subjects.clone())?);
        }
        plans.push(attach::plan(&subject, &docs, key)?);
    }
    if let Artifact::Index(index) = inputs.artifact {
        let subject = SubjectImage {
            repository: inputs.repository.to_string(),
            digest: index.digest.clone(),
            media_type: MEDIA_TYPE_INDEX.to_string(),
            size: index.manifest.len() as u64,
        };
        subjects.insert(0, Subject::new(inputs.repository, &index.digest));
        let mut docs = Documents::default();
        if opts.provenance {
            docs.provenance = Some(provenance_of(opts, inputs, subjects)?);
        }
        plans.push(attach::plan(&subject, &docs, key)?);
    }
    plans.retain(|p| !p.referrers.is_empty() || !p.cosign.is_empty());
    Ok(plans)
}

fn provenance_of(
    opts: &SupplyOptions,
    inputs: &Inputs<'_>,
    subjects: Vec<Subject>,
) -> Result<Vec<u8>, serde_json::Error> {
    let platforms = images_of(inputs.artifact)
        .iter()
        .map(|i| i.platform.to_string())
        .collect();
    let (started, finished) = match opts.source_date_epoch {
        Some(e) => (e, e),
        None => (inputs.started, inputs.finished),
    };
    let record = BuildRecord {
        dockerfile: opts.dockerfile.clone(),
        dockerfile_digest: inputs.dockerfile_digest.to_string(),
        build_args: inputs.build_args.clone(),
        target: inputs.target.map(str::to_string),
        platforms,
        source: opts.source.clone(),
        materials: inputs
            .bases
            .iter()
            .map(|b| Material {
                reference: b.name.clone(),
                digest: b.digest.clone(),
            })
            .collect(),
        started,
        finished,
        invocation_id: opts.invocation_id.clone(),
    };
    provenance::provenance_json(subjects, &record)
}

fn images_of(artifact: &Artifact) -> Vec<&BuiltImage> {
    match artifact {
        Artifact::Image(i) => vec![i],
        Artifact::Index(index) => index.images.iter().collect(),
    }
}

/// Writes every plan to `target`.
pub async fn attach_all<T: Target>(
    target: &T,
    shown: &str,
    plans: &[Plan],
) -> Result<Vec<Attached>, SupplyError> {
    let mut done = Vec::new();
    for plan in plans {
        let attached =
            attach::attach(target, plan)
                .await
                .map_err(|source| SupplyError::Attach {
                    target: shown.to_string(),
                    source,
                })?;
        done.push(attached);
    }
    Ok(done)
}

/// Layer blobs for the SBOM: from the store, else downloaded from the
/// base image's registry into a scratch store removed afterwards (builds
/// leave base layers in their registry when their header index is cached,
/// and a push streams them registry to registry; the SBOM reads a layer's
/// blob only when its index shows a package file, and caches by diff_id
/// what it found, so a base is downloaded for it once).
pub struct StoreOrRegistry {
    store: BlobStore,
    /// Base layers by digest: where they live.
    remote: HashMap<String, BaseBlob>,
    puller: Puller,
    runtime: tokio::runtime::Handle,
    scratch: std::sync::OnceLock<Result<(tempfile::TempDir, BlobStore), String>>,
    cache_dir: PathBuf,
}

impl StoreOrRegistry {
    pub fn new(
        store: &BlobStore,
        artifact: &Artifact,
        opts: &Options,
        cache_dir: &Path,
    ) -> StoreOrRegistry {
        let mut remote = HashMap::new();
        for image in images_of(artifact) {
            for blob in crate::remote::pull::cached_layers(image, store) {
                remote.insert(blob.digest.clone(), blob);
            }
            let Some(base) = &image.base else { continue };
            let Ok(reference) = crate::name::Reference::parse(&base.name) else {
                continue;
            };
            for l in image.layers.iter().take(base.layer_count) {
                remote.insert(
                    l.digest.clone(),
                    BaseBlob {
                        image: reference.clone(),
                        digest: l.digest.clone(),
                        size: l.size,
                    },
                );
            }
        }
        let puller = Puller::for_images(opts, remote.values().map(|b| &b.image));
        StoreOrRegistry {
            store: store.clone(),
            remote,
            puller,
            runtime: tokio::runtime::Handle::current(),
            scratch: std::sync::OnceLock::new(),
            cache_dir: cache_dir.to_path_buf(),
        }
    }

    /// A store beside the cache for downloads, gone when this is dropped.
    fn scratch(&self) -> Result<&BlobStore, String> {
        let made = self.scratch.get_or_init(|| {
            std::fs::create_dir_all(&self.cache_dir).map_err(|e| e.to_string())?;
            let dir = tempfile::tempdir_in(&self.cache_dir).map_err(|e| e.to_string())?;
            let store = BlobStore::open(dir.path()).map_err(|e| e.to_string())?;
            Ok((dir, store))
        });
        made.as_ref().map(|(_, s)| s).map_err(Clone::clone)
    }
}

impl LayerBlobs for StoreOrRegistry {
    fn blob(&self, layer: &LayerInfo) -> Result<PathBuf, String> {
        if let Ok(path) = self.store.existing(&layer.digest) {
            return Ok(path);
        }
        let Some(remote) = self.remote.get(&layer.digest) else {
            return Err("the blob is not in the cache".into());
        };
        let scratch = self.scratch()?;
        self.runtime
            .block_on(self.puller.fetch_blob(remote, scratch))
            .map_err(|e| e.to_string())
    }
}
