//! The build → deliver → prune pipeline that `dockless build`, `dockless
//! push` and the service's workers share: build the image (one per platform,
//! under an index when there are several), deliver it (push it to a
//! registry, or write an OCI layout or archive holding every blob), then
//! keep the cache folder under its cap, never removing what was just built.

use crate::attest::attach::{Attached, LayoutTarget, Plan, RegistryTarget};
use crate::attest::supply::{self, StoreOrRegistry, SupplyError, SupplyOptions};
use crate::build::{self, BuildError, BuildOptions, BuiltSet};
use crate::layer::tap::{LayerTap, SharedTap};
use crate::layout::{LayoutError, Output};
use crate::name::Reference;
use crate::platform::Platform;
use crate::remote::publish::{self, PublishError};
use crate::remote::pull::{self, PullError};
use crate::remote::{LayerStreamer, Options};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

/// What to build, and how much cache to keep afterwards.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub build: BuildOptions,
    /// One image per platform; none builds for this machine's platform.
    pub platforms: Vec<Platform>,
    /// After delivery the cache folder (`build.cache_dir`) is pruned to this
    /// many bytes, least recently used blobs first.
    pub cache_max_size: u64,
    /// The SBOM, provenance and signature attached to what is delivered.
    pub supply: SupplyOptions,
}

/// What was delivered: the manifest (or index) digest, and what was
/// attached to it (and, for an index, to each platform's image).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub digest: String,
    pub attached: Vec<Attached>,
}

/// Where the built image goes.
// Made once per pipeline and passed by reference: its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Destination {
    /// Pushed to `target` (base layers mounted or streamed registry to
    /// registry, see `remote::publish`), then tagged as each of
    /// `extra_tags`; `push` says how to reach the target and the base
    /// images' registries, and `push.events` gets its progress.
    Registry {
        target: Reference,
        extra_tags: Vec<Reference>,
        push: Options,
    },
    /// Written to an OCI layout or archive under `names` (`NAME:TAG`), with
    /// base layers still in their registry downloaded first.
    Output { output: Output, names: Vec<String> },
}

/// What the pipeline reports between its steps.
pub enum PipelineEvent<'a> {
    /// The build finished; delivery comes next.
    Built(&'a BuiltSet),
}

/// Receives [`PipelineEvent`]s.
pub type PipelineSink<'s> = &'s (dyn Fn(PipelineEvent<'_>) + Send + Sync);

/// Which step failed, with its typed cause.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The build's thread panicked (or its runtime shut down under it).
    #[error(transparent)]
    BuildAborted(tokio::task::JoinError),
    #[error(transparent)]
    Push(#[from] PublishError),
    #[error("downloading the base image's layers: {0}")]
    FetchBaseLayers(#[source] PullError),
    #[error(transparent)]
    Write(LayoutError),
    /// The writing thread panicked (or its runtime shut down under it).
    #[error(transparent)]
    WriteAborted(tokio::task::JoinError),
    #[error(transparent)]
    Supply(#[from] SupplyError),
    /// The SBOM's thread panicked (or its runtime shut down under it).
    #[error(transparent)]
    SupplyAborted(tokio::task::JoinError),
    #[error("attaching to {target}: {source}")]
    AttachTarget {
        target: String,
        source: crate::remote::RegistryError,
    },
}

/// Builds, delivers and prunes; returns the digest of the delivered
/// manifest (or index). The cache is pruned whether delivery worked or not
/// (not after a failed build, which may have left nothing worth keeping).
pub async fn run(
    opts: PipelineOptions,
    destination: &Destination,
    events: PipelineSink<'_>,
) -> Result<Delivered, PipelineError> {
    let PipelineOptions {
        build,
        platforms,
        cache_max_size,
        supply,
    } = opts;
    let cache_dir = build.cache_dir.clone();
    let sources = build.remote.clone();
    let started = supply::now();
    // A push uploads new layers while they are written.
    let streamer = match destination {
        Destination::Registry { target, push, .. } => {
            Some(Arc::new(LayerStreamer::new(target, push)))
        }
        Destination::Output { .. } => None,
    };
    if let Some(streamer) = &streamer {
        streamer.warm_up();
    }
    // Builds read and write files for a long time: off the async threads.
    let built = {
        let mut build = build.clone();
        // With an SBOM, the registry cache is written after it, with its scans.
        build.defer_registry_cache = supply.sbom.is_some();
        build.layer_tap = streamer.clone().map(|s| SharedTap(s as Arc<dyn LayerTap>));
        tokio::task::spawn_blocking(move || {
            // What an interrupted run left behind, before this run adds its own.
            crate::cache::temp::clean_stale(&build.cache_dir);
            build::build_platforms(&build, &platforms)
        })
        .await
    };
    let committed = match &streamer {
        Some(s) => s.finish().await,
        None => HashSet::new(),
    };
    let mut built = built.map_err(PipelineError::BuildAborted)??;
    events(PipelineEvent::Built(&built));
    let cache_exports = std::mem::take(&mut built.cache_exports);
    let export_store = built.store.clone();
    let keep: HashSet<String> = built.artifact.blob_digests().into_iter().collect();
    let result = async {
        let finished = supply::now();
        let built_record = BuiltRecord {
            artifact: built.artifact.clone(),
            store: built.store.clone(),
            bases: built.bases.clone(),
            dockerfile_digest: built.dockerfile_digest.clone(),
        };
        let digest = deliver(built, destination, (&cache_dir, &committed), &sources).await?;
        // After delivery: a push fails on its own terms (a source serving
        // wrong bytes, say) before the SBOM reads anything.
        let store = built_record.store.clone();
        let plans = plan_attachments(
            built_record,
            build,
            supply,
            destination,
            (started, finished),
        )
        .await?;
        let attached = attach(&plans, destination, &store).await?;
        Ok(Delivered { digest, attached })
    }
    .await;
    // Whether delivery worked or not, as when the build writes it.
    for export in cache_exports {
        export.write(&export_store, &cache_dir).await;
    }
    prune_keeping(cache_dir, cache_max_size, keep).await;
    result
}

/// `REGISTRY/REPO` (or the name built, without its tag): what documents
/// call the image.
fn repository_of(destination: &Destination) -> String {
    match destination {
        Destination::Registry { target, .. } => {
            format!("{}/{}", target.registry(), target.repository())
        }
        Destination::Output { names, .. } => {
            let name = names.first().map(String::as_str).unwrap_or_default();
            match name.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
                _ => name.to_string(),
            }
        }
    }
}

/// What the documents need of a build once it is delivered.
struct BuiltRecord {
    artifact: crate::image::Artifact,
    store: crate::store::BlobStore,
    bases: Vec<crate::image::BaseInfo>,
    dockerfile_digest: String,
}

/// The SBOM and provenance of what was built, planned for attaching (off
/// the async threads: layers are read).
async fn plan_attachments(
    built: BuiltRecord,
    build: BuildOptions,
    supply: SupplyOptions,
    destination: &Destination,
    (started, finished): (u64, u64),
) -> Result<Vec<Plan>, PipelineError> {
    if supply.is_off() {
        return Ok(Vec::new());
    }
    let repository = repository_of(destination);
    let blobs = StoreOrRegistry::new(
        &built.store,
        &built.artifact,
        &build.remote,
        &build.cache_dir,
    );
    tokio::task::spawn_blocking(move || {
        let inputs = supply::Inputs {
            artifact: &built.artifact,
            bases: &built.bases,
            dockerfile_digest: &built.dockerfile_digest,
            build_args: &build.build_args,
            target: build.target.as_deref(),
            repository: &repository,
            cache_dir: &build.cache_dir,
            started,
            finished,
        };
        Ok(supply::prepare(&supply, &inputs, &blobs)?)
    })
    .await
    .map_err(PipelineError::SupplyAborted)?
}

/// Writes the planned attachments where the image went: its registry
/// repository, or an OCI layout (archives hold the image alone).
async fn attach(
    plans: &[Plan],
    destination: &Destination,
    store: &crate::store::BlobStore,
) -> Result<Vec<Attached>, PipelineError> {
    if plans.is_empty() {
        return Ok(Vec::new());
    }
    match destination {
        Destination::Registry { target, push, .. } => {
            let shown = target.to_string();
            // Progress and --json events describe the image, not these.
            let quiet = Options {
                events: crate::remote::EventSink::default(),
                ..push.clone()
            };
            let pusher = crate::remote::Pusher::open(target, &[], &quiet)
                .await
                .map_err(|source| PipelineError::AttachTarget {
                    target: shown.clone(),
                    source,
                })?;
            let t = RegistryTarget {
                pusher: &pusher,
                store,
            };
            Ok(supply::attach_all(&t, &shown, plans).await?)
        }
        Destination::Output {
            output: Output::Oci(dir),
            ..
        } => {
            let mut done = Vec::new();
            for plan in plans {
                let t = LayoutTarget::new(dir.clone(), plan.subject.digest.clone());
                let shown = dir.display().to_string();
                done.extend(supply::attach_all(&t, &shown, std::slice::from_ref(plan)).await?);
            }
            Ok(done)
        }
        Destination::Output { .. } => {
            tracing::info!("an archive holds the image alone; SBOM and provenance go to registries and oci:DIR layouts");
            Ok(Vec::new())
        }
    }
}

/// `committed`: blobs streamed to the target while they were built.
async fn deliver(
    built: BuiltSet,
    destination: &Destination,
    (cache_dir, committed): (&std::path::Path, &HashSet<String>),
    sources: &Options,
) -> Result<String, PipelineError> {
    match destination {
        Destination::Registry {
            target,
            extra_tags,
            push,
        } => {
            let (store, artifact) = (&built.store, &built.artifact);
            let digest =
                publish::publish_streamed(store, artifact, target, push, cache_dir, committed)
                    .await?;
            publish::publish_tags(store, artifact, target, extra_tags, push, cache_dir).await?;
            Ok(digest)
        }
        Destination::Output { output, names } => {
            // Base layers may still be in their registry; a layout holds every blob.
            pull::ensure_blobs(&built.store, &built.artifact, sources)
                .await
                .map_err(PipelineError::FetchBaseLayers)?;
            let (output, names) = (output.clone(), names.clone());
            tokio::task::spawn_blocking(move || {
                output
                    .write(&built.store, &built.artifact, &names)
                    .map(|()| built.artifact.digest().to_string())
            })
            .await
            .map_err(PipelineError::WriteAborted)?
            .map_err(PipelineError::Write)
        }
    }
}

/// Keeps the cache under `max_size` without removing `keep`; a cache that
/// cannot be pruned costs disk, not the build, so it is only reported.
async fn prune_keeping(cache_dir: PathBuf, max_size: u64, keep: HashSet<String>) {
    let prune = tokio::task::spawn_blocking(move || {
        crate::cache::prune(&cache_dir, max_size, &keep)
            .map_err(|e| tracing::warn!("cannot prune the cache {}: {e}", cache_dir.display()))
    });
    if let Err(e) = prune.await {
        tracing::warn!("cannot prune the cache: {e}");
    }
}
