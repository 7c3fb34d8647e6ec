//! Runs a parsed Dockerfile: each stage starts from scratch or an earlier
//! stage, metadata instructions edit the config, and COPY, ADD and WORKDIR
//! turn changes of the stage's root filesystem model into layers.

pub mod archive;

use crate::build::archive::ArchiveError;
use crate::cache::layers::{CacheStats, LayerCache};
use crate::context::untrusted::{FileError, FileRef};
use crate::context::{BuildContext, ContextEntry, ContextError, EntryKind};
use crate::dockerfile::{
    self, ArgDecl, Command, CopyArgs, Dockerfile, Healthcheck, Instruction, InstructionKind,
    ParseError,
};
use crate::image::{
    build_index, Artifact, BaseInfo, BuiltImage, HealthConfig, History, Image, ImageConfig,
    ImageError,
};
use crate::layer::{self, FileSource, LayerCompression, LayerError, LayerOptions};
use crate::name::reference::ImageRef;
use crate::platform::{Platform, PlatformError};
use crate::remote::pull::{self, RegistryOptions};
use crate::rootfs::overlay;
use crate::rootfs::{basename, clean, FsError, Node, NodeKind, RootFs};
use crate::store::{BlobStore, StoreError};
use std::collections::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

const HISTORY_COMMENT: &str = "dockless.dockerfile.v0";

/// Folders that `--split-layers` puts in a layer of their own: a path with
/// one of these as a component is a dependency.
pub const DEPENDENCY_DIRS: &[&str] = &["site-packages", "node_modules", "vendor", ".venv"];

fn is_dependency_path(path: &str) -> bool {
    path.split('/').any(|c| DEPENDENCY_DIRS.contains(&c))
}

/// Everything a build needs besides the Dockerfile's own content.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context_dir: PathBuf,
    /// Defaults to `<context>/Dockerfile`, read only from inside the context;
    /// a path given here is read wherever it is, and a relative one is taken
    /// from the current directory, as `docker build -f` does.
    pub dockerfile: Option<PathBuf>,
    /// When set, `dockerfile` is relative to this folder (the service's
    /// checkout) and is read, with its `.dockerignore`, only from inside it.
    pub dockerfile_root: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<Platform>,
    /// Seconds since the epoch for every timestamp in the image.
    pub source_date_epoch: u64,
    pub gzip_level: u32,
    /// gzip (default) or zstd layers.
    pub compression: LayerCompression,
    /// Put dependency folders (see [`DEPENDENCY_DIRS`]) copied by a COPY or ADD
    /// in a layer of their own, before the rest of what it copies.
    pub split_layers: bool,
    /// Reuse layers and compressed segments from the cache folder (see `cache::layers`).
    pub layer_cache: bool,
    pub cache_dir: PathBuf,
    /// How to reach registries for base images and `COPY --from=<image>`.
    pub registry: RegistryOptions,
}

impl BuildOptions {
    pub fn new(context_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> BuildOptions {
        BuildOptions {
            context_dir: context_dir.into(),
            dockerfile: None,
            dockerfile_root: None,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            target: None,
            platform: None,
            source_date_epoch: 0,
            gzip_level: layer::DEFAULT_GZIP_LEVEL,
            compression: LayerCompression::Gzip,
            split_layers: false,
            layer_cache: true,
            cache_dir: cache_dir.into(),
            registry: RegistryOptions::default(),
        }
    }

    /// Where the Dockerfile is read from (see `dockerfile`).
    pub fn dockerfile_ref(&self) -> FileRef {
        match (&self.dockerfile, &self.dockerfile_root) {
            (Some(rel), Some(root)) => FileRef::inside(root, "the repository", rel),
            (Some(path), None) => FileRef::Given(path.clone()),
            (None, _) => FileRef::inside(&self.context_dir, "the build context", "Dockerfile"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read Dockerfile {}: {}", path.display(), source.problem)]
    ReadDockerfile { path: PathBuf, source: FileError },
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A problem with one instruction, named by file and line.
    #[error("{file}:{line}: {message}")]
    Instruction {
        file: String,
        line: usize,
        message: String,
    },
    #[error("--target {0:?}: no stage of that name in the Dockerfile")]
    UnknownTarget(String),
    #[error("{file}: no FROM instruction, so there is nothing to build")]
    NoStages { file: String },
    #[error("build context: {0}")]
    Context(ContextError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("staging folder in {path}: {source}")]
    Staging {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The finished image and the store that holds its blobs.
#[derive(Debug)]
pub struct Built {
    pub image: BuiltImage,
    pub store: BlobStore,
    /// Build args given but never declared by an ARG, as docker warns about.
    pub unused_build_args: Vec<String>,
    /// What the layer cache served and what was written.
    pub cache: CacheStats,
}

/// Builds the target stage (the last one unless `opts.target` names another).
pub fn build(opts: &BuildOptions) -> Result<Built, BuildError> {
    let dockerfile = opts.dockerfile_ref();
    let path = dockerfile.nominal_path();
    let text = dockerfile
        .read_text(dockerfile::MAX_BYTES)
        .map_err(|source| BuildError::ReadDockerfile {
            path: path.clone(),
            source,
        })?;
    let file = path.display().to_string();
    let df = dockerfile::parse(&text, &file)?;
    let mut builder = Builder::new(opts, df, file)?;
    builder.run()
}

/// A build for every platform given: one image, or an index when there are several.
pub struct BuiltSet {
    pub artifact: Artifact,
    pub store: BlobStore,
    pub unused_build_args: Vec<String>,
    /// Summed over platforms.
    pub cache: CacheStats,
}

/// Builds once per platform (the host's when none is given). The service's own
/// layers come out identical for every platform, so they are stored once.
pub fn build_platforms(
    opts: &BuildOptions,
    platforms: &[Platform],
) -> Result<BuiltSet, BuildError> {
    if platforms.len() <= 1 {
        let mut one = opts.clone();
        if let Some(p) = platforms.first() {
            one.platform = Some(p.clone());
        }
        let built = build(&one)?;
        return Ok(BuiltSet {
            artifact: Artifact::Image(Box::new(built.image)),
            store: built.store,
            unused_build_args: built.unused_build_args,
            cache: built.cache,
        });
    }
    let mut images = Vec::new();
    let mut unused = BTreeSet::new();
    let mut store = None;
    let mut cache = CacheStats::default();
    for platform in platforms {
        let mut one = opts.clone();
        one.platform = Some(platform.clone());
        let built = build(&one)?;
        images.push(built.image);
        unused.extend(built.unused_build_args);
        cache.layers_from_cache += built.cache.layers_from_cache;
        cache.layers_written += built.cache.layers_written;
        cache.files_hashed += built.cache.files_hashed;
        cache.segments_reused += built.cache.segments_reused;
        store = Some(built.store);
    }
    let store = match store {
        Some(s) => s,
        None => BlobStore::open(&opts.cache_dir)?,
    };
    let index = build_index(images, &store)?;
    Ok(BuiltSet {
        artifact: Artifact::Index(index),
        store,
        unused_build_args: unused.into_iter().collect(),
        cache,
    })
}

/// What a FROM or a COPY --from names.
#[derive(Debug, Clone)]
enum BaseRef {
    Scratch,
    Stage(usize),
    Image(ImageRef),
}

/// What an earlier stage leaves for later ones.
#[derive(Clone)]
struct StageResult {
    image: Image,
    fs: RootFs,
}

struct StageState {
    image: Image,
    fs: RootFs,
    /// Values of the ARGs declared in this stage so far.
    args: BTreeMap<String, String>,
    /// Whether CMD was set in this stage (an ENTRYPOINT only resets an inherited one).
    cmd_set_here: bool,
}

impl StageState {
    /// ENV wins over ARG, as in Docker.
    fn lookup(&self, name: &str) -> Option<String> {
        self.image
            .config
            .config
            .env_value(name)
            .map(String::from)
            .or_else(|| self.args.get(name).cloned())
    }

    fn workdir(&self) -> String {
        clean("", &self.image.config.config.working_dir)
    }
}

struct Builder<'a> {
    opts: &'a BuildOptions,
    df: Dockerfile,
    file: String,
    store: BlobStore,
    context: Option<BuildContext>,
    staging: Option<tempfile::TempDir>,
    created: String,
    platform: Platform,
    /// Global ARGs (before the first FROM) and the automatic platform ARGs.
    global_args: BTreeMap<String, String>,
    used_args: BTreeSet<String>,
    results: Vec<Option<StageResult>>,
    /// Registry images already loaded, by reference and platform.
    images: HashMap<String, StageResult>,
    /// Base layers applied from their header index, fetched when read.
    lazy_blobs: LazyBlobs,
    staged_files: usize,
    layer_cache: Option<LayerCache>,
    cache_stats: CacheStats,
}

impl<'a> Builder<'a> {
    fn new(opts: &'a BuildOptions, df: Dockerfile, file: String) -> Result<Self, BuildError> {
        let store = BlobStore::open(&opts.cache_dir)?;
        let platform = opts.platform.clone().unwrap_or_else(Platform::host);
        let results = vec![None; df.stages.len()];
        let mut builder = Builder {
            opts,
            df,
            file,
            store,
            context: None,
            staging: None,
            created: crate::image::rfc3339(opts.source_date_epoch),
            platform,
            global_args: BTreeMap::new(),
            used_args: BTreeSet::new(),
            results,
            images: HashMap::new(),
            lazy_blobs: LazyBlobs::default(),
            staged_files: 0,
            layer_cache: opts.layer_cache.then(|| LayerCache::open(&opts.cache_dir)),
            cache_stats: CacheStats::default(),
        };
        builder.resolve_global_args()?;
        Ok(builder)
    }

    fn fail(&self, line: usize, message: impl Into<String>) -> BuildError {
        BuildError::Instruction {
            file: self.file.clone(),
            line,
            message: message.into(),
        }
    }

    fn automatic_args(&self) -> BTreeMap<String, String> {
        let p = &self.platform;
        let host = Platform::host();
        BTreeMap::from([
            ("TARGETPLATFORM".into(), p.to_string()),
            ("TARGETOS".into(), p.os.clone()),
            ("TARGETARCH".into(), p.architecture.clone()),
            (
                "TARGETVARIANT".into(),
                p.variant.clone().unwrap_or_default(),
            ),
            ("BUILDPLATFORM".into(), host.to_string()),
            ("BUILDOS".into(), host.os.clone()),
            ("BUILDARCH".into(), host.architecture.clone()),
            (
                "BUILDVARIANT".into(),
                host.variant.clone().unwrap_or_default(),
            ),
        ])
    }

    fn resolve_global_args(&mut self) -> Result<(), BuildError> {
        let mut values = self.automatic_args();
        for decl in self.df.global_args.clone() {
            if let Some(v) = self.arg_value(&decl, &|n| values.get(n).cloned())? {
                values.insert(decl.name.clone(), v);
            }
        }
        self.global_args = values;
        Ok(())
    }

    /// A declared ARG's value: the build arg, else its expanded default.
    fn arg_value(
        &mut self,
        decl: &ArgDecl,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, BuildError> {
        if let Some(v) = self.opts.build_args.get(&decl.name) {
            self.used_args.insert(decl.name.clone());
            return Ok(Some(v.clone()));
        }
        match &decl.default {
            Some(raw) => self.expand(decl.line, raw, lookup).map(Some),
            None => Ok(None),
        }
    }

    fn expand(
        &self,
        line: usize,
        raw: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, BuildError> {
        dockerfile::expand_word(raw, self.df.escape, lookup)
            .map_err(|e| self.fail(line, format!("cannot expand {raw:?}: {e}")))
    }

    fn expand_words(
        &self,
        line: usize,
        raw: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, BuildError> {
        dockerfile::expand_words(raw, self.df.escape, lookup)
            .map_err(|e| self.fail(line, format!("cannot expand {raw:?}: {e}")))
    }

    fn global_lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| self.global_args.get(name).cloned()
    }

    /// An earlier stage named by alias or index, as FROM and COPY --from accept.
    fn stage_ref(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.df.stages[..before]
            .iter()
            .position(|s| s.from.alias.as_deref() == Some(lower.as_str()))
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
    }

    fn target_index(&self) -> Result<usize, BuildError> {
        match &self.opts.target {
            None => self
                .df
                .stages
                .len()
                .checked_sub(1)
                .ok_or(BuildError::NoStages {
                    file: self.file.clone(),
                }),
            Some(t) => self
                .stage_ref(t, self.df.stages.len())
                .ok_or_else(|| BuildError::UnknownTarget(t.clone())),
        }
    }

    /// Names an earlier stage, `scratch` (FROM only) or a registry image.
    fn base_ref(
        &self,
        line: usize,
        name: &str,
        before: usize,
        what: &str,
    ) -> Result<BaseRef, BuildError> {
        if let Some(i) = self.stage_ref(name, before) {
            return Ok(BaseRef::Stage(i));
        }
        ImageRef::parse(name).map(BaseRef::Image).map_err(|e| {
            self.fail(
                line,
                format!("{what} {name}: not an earlier build stage, and {e}"),
            )
        })
    }

    /// The base a stage's FROM names.
    fn stage_base(&self, index: usize) -> Result<BaseRef, BuildError> {
        let from = &self.df.stages[index].from;
        let image = self.expand(from.line, &from.image, &self.global_lookup())?;
        if image.eq_ignore_ascii_case("scratch") {
            return Ok(BaseRef::Scratch);
        }
        self.base_ref(from.line, &image, index, "FROM")
    }

    fn copy_from_ref(
        &self,
        index: usize,
        ins: &Instruction,
        from: &str,
    ) -> Result<BaseRef, BuildError> {
        let name = self.expand(ins.line, from, &self.global_lookup())?;
        self.base_ref(ins.line, &name, index, "COPY --from")
    }

    /// A registry image as a stage result: pulled, verified and laid out as a
    /// filesystem model; loaded once per build and platform, and kept in
    /// `self.images` under the returned key.
    /// `what` names the instruction as written, e.g. `FROM python:3.12`.
    fn load_image(
        &mut self,
        line: usize,
        what: &str,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<String, BuildError> {
        let key = format!("{image}|{platform}");
        if self.images.contains_key(&key) {
            return Ok(key);
        }
        let file = self.file.clone();
        let fail = |e: &dyn std::fmt::Display| BuildError::Instruction {
            file: file.clone(),
            line,
            message: format!("{what}: {e}"),
        };
        let base = block_on(pull::pull(
            image,
            platform,
            &self.store,
            &self.opts.registry,
        ))
        .map_err(|e| fail(&e))?
        .map_err(|e| fail(&e))?;
        let mut fs = RootFs::default();
        let mut layers = base.layers.clone();
        for layer in &mut layers {
            let remote = RemoteLayer {
                image: image.clone(),
                digest: layer.digest.clone(),
                size: layer.size,
                store: self.store.clone(),
                registry: self.opts.registry.clone(),
            };
            layer.uncompressed_size = apply_base_layer(
                &mut fs,
                remote,
                &layer.diff_id,
                &self.opts.cache_dir,
                &mut self.lazy_blobs,
            )
            .map_err(|e| fail(&e))?;
        }
        let mut config = base.config.clone();
        config.created = Some(self.created.clone());
        let result = StageResult {
            image: Image {
                config,
                layers,
                base: Some(BaseInfo {
                    registry: image.registry.clone(),
                    repository: image.repository.clone(),
                    name: image.to_string(),
                    digest: base.resolved_digest.clone(),
                    layer_count: base.layers.len(),
                }),
            },
            fs,
        };
        tracing::info!(image = %image, digest = %base.manifest_digest, "base image loaded");
        self.images.insert(key.clone(), result);
        Ok(key)
    }

    /// Every stage the target needs, found and checked before anything is
    /// written, so an unsupported step fails the build at once.
    fn plan(&self, target: usize) -> Result<BTreeSet<usize>, BuildError> {
        let mut needed = BTreeSet::new();
        let mut pending = vec![target];
        while let Some(index) = pending.pop() {
            if !needed.insert(index) {
                continue;
            }
            if let BaseRef::Stage(base) = self.stage_base(index)? {
                pending.push(base);
            }
            for ins in &self.df.stages[index].instructions {
                self.check_supported(ins)?;
                if let InstructionKind::Copy(args) = &ins.kind {
                    if let Some(from) = &args.from {
                        if let BaseRef::Stage(i) = self.copy_from_ref(index, ins, from)? {
                            pending.push(i);
                        }
                    }
                }
            }
        }
        Ok(needed)
    }

    fn check_supported(&self, ins: &Instruction) -> Result<(), BuildError> {
        match &ins.kind {
            InstructionKind::Run(_) => Err(self.fail(
                ins.line,
                "RUN is not supported: dockless builds images without a container runtime, \
                 so it cannot execute commands (do that work before the build, or in a stage \
                 built by another tool)",
            )),
            InstructionKind::Add(args) => {
                if let Some(url) = args.sources.iter().find(|s| is_remote(s)) {
                    return Err(self.fail(
                        ins.line,
                        format!(
                            "ADD {url}: adding from a URL or git repository is not supported yet"
                        ),
                    ));
                }
                if args.from.is_some() {
                    return Err(self.fail(ins.line, "ADD does not accept --from; use COPY --from"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn run(&mut self) -> Result<Built, BuildError> {
        let target = self.target_index()?;
        let needed = self.plan(target)?;
        for index in needed {
            let result = self.run_stage(index)?;
            self.results[index] = Some(result);
        }
        let mut result = self.results[target]
            .take()
            .ok_or_else(|| BuildError::NoStages {
                file: self.file.clone(),
            })?;
        for (k, v) in &self.opts.labels {
            result
                .image
                .config
                .config
                .labels
                .insert(k.clone(), v.clone());
        }
        let image = result.image.finish(&self.store)?;
        let unused_build_args = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !self.global_args.contains_key(*k))
            .cloned()
            .collect();
        if let Some(cache) = &self.layer_cache {
            cache.save();
            self.cache_stats.files_hashed = cache.files_hashed();
        }
        Ok(Built {
            image,
            store: self.store.clone(),
            unused_build_args,
            cache: self.cache_stats,
        })
    }

    fn run_stage(&mut self, index: usize) -> Result<StageResult, BuildError> {
        let stage = self.df.stages[index].clone();
        let mut platform = self.platform.clone();
        if let Some(raw) = &stage.from.platform {
            let text = self.expand(stage.from.line, raw, &self.global_lookup())?;
            platform =
                Platform::parse(&text).map_err(|e| self.fail(stage.from.line, e.to_string()))?;
        }
        let base = match self.stage_base(index)? {
            BaseRef::Stage(i) => self.results[i].clone().ok_or_else(|| {
                self.fail(stage.from.line, "internal: base stage was not built first")
            })?,
            BaseRef::Scratch => StageResult {
                image: Image::new(ImageConfig::scratch(&platform, &self.created)),
                fs: RootFs::default(),
            },
            BaseRef::Image(image) => {
                let what = format!("FROM {}", stage.from.image);
                let key = self.load_image(stage.from.line, &what, &image, &platform)?;
                self.images[&key].clone()
            }
        };
        if let Some(trigger) = base.image.config.config.on_build.first() {
            return Err(self.fail(
                stage.from.line,
                format!(
                    "the base image has ONBUILD triggers (first: {trigger:?}); running them is not supported yet"
                ),
            ));
        }
        let mut state = StageState {
            image: base.image,
            fs: base.fs,
            args: BTreeMap::new(),
            cmd_set_here: false,
        };
        for ins in &stage.instructions {
            self.run_instruction(index, &mut state, ins)?;
        }
        Ok(StageResult {
            image: state.image,
            fs: state.fs,
        })
    }

    fn history(&self, ins: &Instruction) -> History {
        History {
            created: Some(self.created.clone()),
            created_by: Some(ins.original.clone()),
            author: None,
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer: false,
        }
    }

    /// Records the instruction, with a layer when it changed the filesystem.
    fn commit(&mut self, state: &mut StageState, ins: &Instruction) -> Result<(), BuildError> {
        let history = self.history(ins);
        self.commit_with(state, ins.line, history)
    }

    fn commit_with(
        &mut self,
        state: &mut StageState,
        line: usize,
        history: History,
    ) -> Result<(), BuildError> {
        if state.fs.has_changes() {
            let mut entries = state.fs.take_changes();
            let opts = LayerOptions {
                mtime: self.opts.source_date_epoch,
                gzip_level: self.opts.gzip_level,
                compression: self.opts.compression,
                threads: 0,
            };
            // A cold layer's files are hashed while they are written, not before.
            let scanned = self
                .layer_cache
                .as_ref()
                .and_then(|c| c.scan(&entries, &opts));
            let keyed = scanned.as_ref().and_then(|s| s.key());
            if let (Some(cache), Some(key)) = (&self.layer_cache, &keyed) {
                if let Some(info) = cache.lookup(key, &self.store) {
                    tracing::info!(line, digest = %info.digest, "layer served from cache");
                    self.cache_stats.layers_from_cache += 1;
                    state.image.add_layer(info, history);
                    return Ok(());
                }
            }
            if entries.iter().any(|e| {
                matches!(
                    &e.data,
                    layer::EntryData::File {
                        source: FileSource::Layer { .. },
                        ..
                    }
                )
            }) {
                self.lazy_blobs
                    .ensure_entries(&entries)
                    .map_err(|e| self.fail(line, e))?;
                let staging = self.staging_dir()?;
                overlay::materialize(&mut entries, &staging)
                    .map_err(|e| self.fail(line, e.to_string()))?;
            }
            let info = match &self.layer_cache {
                Some(cache) => {
                    let (info, reused) =
                        cache.write_layer(scanned.as_ref(), &entries, &self.store, opts)?;
                    self.cache_stats.segments_reused += reused;
                    info
                }
                None => layer::write_layer(&entries, &self.store, opts)?,
            };
            self.cache_stats.layers_written += 1;
            tracing::info!(line, digest = %info.digest, size = info.size, "layer written");
            state.image.add_layer(info, history);
        } else {
            state.image.add_history(history);
        }
        Ok(())
    }

    fn run_instruction(
        &mut self,
        stage: usize,
        state: &mut StageState,
        ins: &Instruction,
    ) -> Result<(), BuildError> {
        let line = ins.line;
        match &ins.kind {
            InstructionKind::Arg(decls) => {
                for decl in decls {
                    let value = match self.opts.build_args.get(&decl.name) {
                        Some(_) => self.arg_value(decl, &|n| state.lookup(n))?,
                        // A bare ARG re-imports a global (or automatic) ARG's value.
                        None if decl.default.is_none() => self.global_args.get(&decl.name).cloned(),
                        None => self.arg_value(decl, &|n| state.lookup(n))?,
                    };
                    state
                        .args
                        .insert(decl.name.clone(), value.unwrap_or_default());
                }
                // Docker keeps ARG out of the image history.
                return Ok(());
            }
            InstructionKind::Env(pairs) => {
                for (key, raw) in pairs {
                    let value = self.expand(line, raw, &|n| state.lookup(n))?;
                    state.image.config.config.set_env(key, &value);
                }
            }
            InstructionKind::Label(pairs) => {
                for (raw_key, raw) in pairs {
                    let key = self.expand(line, raw_key, &|n| state.lookup(n))?;
                    let value = self.expand(line, raw, &|n| state.lookup(n))?;
                    state.image.config.config.labels.insert(key, value);
                }
            }
            InstructionKind::Workdir(raw) => {
                let dir = self.expand(line, raw, &|n| state.lookup(n))?;
                let path = clean(&state.workdir(), &dir);
                state.image.config.config.working_dir = format!("/{path}");
                // New directories belong to the USER, as buildah and BuildKit make them;
                // a user or group the stage cannot resolve falls back to root, as in buildah.
                let user = &state.image.config.config.user;
                let (uid, gid) = if user.is_empty() {
                    (0, 0)
                } else {
                    resolve_owner(user, &state.fs, &self.lazy_blobs).unwrap_or((0, 0))
                };
                state
                    .fs
                    .mkdir_all(&path, 0o755, uid, gid)
                    .map_err(|e| self.fail(line, format!("WORKDIR {dir}: {e}")))?;
            }
            InstructionKind::Expose(words) => {
                for raw in words {
                    for word in self.expand_words(line, raw, &|n| state.lookup(n))? {
                        // Docker's form: ranges expanded, protocol lower-cased
                        // (buildah 1.28 keeps the word as written).
                        for port in parse_ports(&word).map_err(|e| self.fail(line, e))? {
                            let ports = &mut state.image.config.config.exposed_ports;
                            ports.insert(port, Default::default());
                        }
                    }
                }
            }
            InstructionKind::User(raw) => {
                let user = self.expand(line, raw, &|n| state.lookup(n))?;
                if user.is_empty() {
                    return Err(self.fail(line, "USER requires a user name or id"));
                }
                state.image.config.config.user = user;
            }
            InstructionKind::Volume(raws) => {
                for raw in raws {
                    for v in self.expand_words(line, raw, &|n| state.lookup(n))? {
                        if v.trim().is_empty() {
                            return Err(
                                self.fail(line, "VOLUME specified can not be an empty string")
                            );
                        }
                        state
                            .image
                            .config
                            .config
                            .volumes
                            .insert(v, Default::default());
                    }
                }
            }
            InstructionKind::Entrypoint(cmd) => {
                let argv = command_argv(&state.image.config.config.shell, cmd);
                state.image.config.config.entrypoint = Some(argv);
                if !state.cmd_set_here {
                    state.image.config.config.cmd = None;
                }
            }
            InstructionKind::Cmd(cmd) => {
                state.image.config.config.cmd =
                    Some(command_argv(&state.image.config.config.shell, cmd));
                state.cmd_set_here = true;
            }
            InstructionKind::Shell(shell) => state.image.config.config.shell = shell.clone(),
            InstructionKind::StopSignal(raw) => {
                let signal = self.expand(line, raw, &|n| state.lookup(n))?;
                if !valid_signal(&signal) {
                    return Err(
                        self.fail(line, format!("STOPSIGNAL {signal:?} is not a valid signal"))
                    );
                }
                state.image.config.config.stop_signal = Some(signal);
            }
            InstructionKind::Healthcheck(h) => {
                state.image.config.config.healthcheck = Some(health_config(h));
            }
            InstructionKind::Onbuild(trigger) => {
                state.image.config.config.on_build.push(trigger.clone());
            }
            InstructionKind::Maintainer(name) => state.image.config.author = Some(name.clone()),
            InstructionKind::Copy(args) => self.copy(stage, state, ins, args, false)?,
            InstructionKind::Add(args) => self.copy(stage, state, ins, args, true)?,
            InstructionKind::Run(_) => {
                return Err(self.fail(line, "RUN is not supported without a container runtime"))
            }
        }
        self.commit(state, ins)
    }

    fn context(&mut self) -> Result<&BuildContext, BuildError> {
        if self.context.is_none() {
            let dockerfile = self.opts.dockerfile_ref();
            let ctx = BuildContext::open(&self.opts.context_dir, Some(&dockerfile))
                .map_err(BuildError::Context)?;
            self.context = Some(ctx);
        }
        self.context
            .as_ref()
            .ok_or_else(|| BuildError::Context(ContextError::NotFound { src: ".".into() }))
    }

    /// A fresh file in the build's staging folder (heredocs, archive members).
    fn staging_dir(&mut self) -> Result<PathBuf, BuildError> {
        if self.staging.is_none() {
            let tmp = self.opts.cache_dir.join("tmp");
            let io_err = |source| BuildError::Staging {
                path: tmp.clone(),
                source,
            };
            std::fs::create_dir_all(&tmp).map_err(io_err)?;
            self.staging = Some(
                tempfile::Builder::new()
                    .prefix("build-")
                    .tempdir_in(&tmp)
                    .map_err(io_err)?,
            );
        }
        let dir = self
            .staging
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        self.staged_files += 1;
        let sub = dir.join(format!("s{}", self.staged_files));
        std::fs::create_dir_all(&sub).map_err(|source| BuildError::Staging {
            path: sub.clone(),
            source,
        })?;
        Ok(sub)
    }

    fn copy(
        &mut self,
        stage: usize,
        state: &mut StageState,
        ins: &Instruction,
        args: &CopyArgs,
        is_add: bool,
    ) -> Result<(), BuildError> {
        let line = ins.line;
        let verb = if is_add { "ADD" } else { "COPY" };
        let dest_raw = self.expand(line, &args.dest, &|n| state.lookup(n))?;
        let dest_is_dir = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest = clean(&state.workdir(), &dest_raw);
        let owner = match &args.chown {
            Some(raw) => {
                let spec = self.expand(line, raw, &|n| state.lookup(n))?;
                Some(
                    resolve_owner(&spec, &state.fs, &self.lazy_blobs)
                        .map_err(|e| self.fail(line, format!("{verb} --chown={spec}: {e}")))?,
                )
            }
            None => None,
        };
        let chmod = match &args.chmod {
            Some(raw) => {
                let text = self.expand(line, raw, &|n| state.lookup(n))?;
                Some(parse_chmod(&text).ok_or_else(|| {
                    self.fail(
                        line,
                        format!("{verb} --chmod={text}: expected an octal mode such as 755"),
                    )
                })?)
            }
            None => None,
        };
        let apply = |node: Node| apply_owner(node, owner, chmod);

        let mut sources: Vec<Source> = Vec::new();
        for raw in &args.sources {
            if let Some(doc) = args.heredocs.iter().find(|h| &h.name == raw) {
                let content = if doc.expand {
                    self.expand_heredoc(line, &doc.content, &|n| state.lookup(n))?
                } else {
                    doc.content.clone()
                };
                sources.push(self.heredoc_source(&doc.name, &content)?);
                continue;
            }
            let src = self.expand(line, raw, &|n| state.lookup(n))?;
            match &args.from {
                Some(from) => {
                    // Borrowed, not cloned: a base image's model can be large.
                    let fs = match self.copy_from_ref(stage, ins, from)? {
                        BaseRef::Stage(i) => self.results[i].as_ref().map(|r| &r.fs),
                        BaseRef::Image(image) => {
                            let platform = state.image.platform();
                            let what = format!("{verb} --from={from}");
                            let key = self.load_image(line, &what, &image, &platform)?;
                            self.images.get(&key).map(|r| &r.fs)
                        }
                        BaseRef::Scratch => None,
                    };
                    let fs = fs.ok_or_else(|| {
                        self.fail(
                            line,
                            format!("{verb} --from={from}: that stage was not built"),
                        )
                    })?;
                    let found = stage_sources(fs, &src)
                        .map_err(|e| self.fail(line, format!("{verb} --from={from} {src}: {e}")))?;
                    sources.extend(found);
                }
                None => {
                    let entries = self
                        .context()?
                        .resolve_source(&src)
                        .map_err(|e| self.fail(line, e.to_string()))?;
                    for entry in entries {
                        sources.push(
                            self.context_source(is_add, entry)
                                .map_err(|e| self.fail(line, e))?,
                        );
                    }
                }
            }
        }

        if (args.sources.len() > 1 || sources.len() > 1) && !dest_is_dir {
            return Err(self.fail(
                line,
                format!("When using {verb} with more than one source file, the destination must be a directory and end with a /"),
            ));
        }
        let (puid, pgid) = owner.unwrap_or((0, 0));
        let file = self.file.clone();
        let fs_err = |e: FsError| BuildError::Instruction {
            file: file.clone(),
            line,
            message: format!("{verb} to {dest_raw}: {e}"),
        };
        let several = sources.len() > 1;
        // --split-layers: dependency paths first, as a layer of their own. Only
        // for plain trees (archives keep their place in the order), and each
        // destination path is classified on its own, so the union of the two
        // layers is exactly what one layer would hold.
        let split = self.opts.split_layers
            && sources.iter().all(|s| matches!(s, Source::Tree { .. }))
            && sources.iter().any(|s| match s {
                Source::Tree { root, children, .. } if root.is_dir() => {
                    children.iter().any(|(rel, node)| {
                        !hard_linked(node) && is_dependency_path(&clean(&dest, rel))
                    })
                }
                _ => false,
            });
        if split {
            for source in &sources {
                let Source::Tree { root, children, .. } = source else {
                    continue;
                };
                if !root.is_dir() {
                    continue;
                }
                let deps: Vec<&(String, Node)> = children
                    .iter()
                    .filter(|(rel, node)| {
                        !hard_linked(node) && is_dependency_path(&clean(&dest, rel))
                    })
                    .collect();
                if deps.is_empty() {
                    continue;
                }
                let dir = state
                    .fs
                    .mkdir_all(&dest, 0o755, puid, pgid)
                    .map_err(fs_err)?;
                for (rel, node) in deps {
                    state
                        .fs
                        .insert(&clean(&dir, rel), apply(node.clone()))
                        .map_err(fs_err)?;
                }
            }
            let mut history = self.history(ins);
            history.created_by = Some(format!("{} # dependencies", ins.original));
            self.commit_with(state, line, history)?;
        }
        for source in sources {
            match source {
                Source::Archive { path, kind } => {
                    // As in buildah, --chown only owns the folders this creates (the
                    // tar's entries keep their owners) and --chmod is ignored.
                    let dir = state
                        .fs
                        .mkdir_all(&dest, 0o755, puid, pgid)
                        .map_err(fs_err)?;
                    let staging = self.staging_dir()?;
                    archive::extract(&path, kind, &mut state.fs, &dir, owner, &staging)
                        .map_err(|e: ArchiveError| self.fail(line, e.to_string()))?;
                }
                Source::Tree { root, children, .. } if root.is_dir() => {
                    // Only the contents are copied: a missing destination is made like
                    // any other new folder (0755, --chown owner or root) and an existing
                    // one keeps its metadata; the source folder's own mode and owner are
                    // not carried over, as in buildah.
                    let dir = state
                        .fs
                        .mkdir_all(&dest, 0o755, puid, pgid)
                        .map_err(fs_err)?;
                    for (rel, node) in children {
                        if split && !hard_linked(&node) && is_dependency_path(&clean(&dest, &rel)) {
                            continue;
                        }
                        state
                            .fs
                            .insert(&clean(&dir, &rel), apply(node))
                            .map_err(fs_err)?;
                    }
                }
                Source::Tree { name, root, .. } => {
                    let into_dir = dest_is_dir
                        || several
                        || state
                            .fs
                            .is_dir(&state.fs.resolve(&dest, true).map_err(fs_err)?);
                    let target = if into_dir {
                        clean(&dest, &name)
                    } else {
                        dest.clone()
                    };
                    let parent = state
                        .fs
                        .mkdir_all(parent_of(&target), 0o755, puid, pgid)
                        .map_err(fs_err)?;
                    let path = clean(&parent, basename(&target));
                    if path.is_empty() {
                        return Err(self.fail(
                            line,
                            format!("{verb}: cannot copy a file onto the image root"),
                        ));
                    }
                    state.fs.insert(&path, apply(root)).map_err(fs_err)?;
                }
            }
        }
        Ok(())
    }

    fn expand_heredoc(
        &self,
        line: usize,
        content: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, BuildError> {
        // Expand line by line so quotes in the text stay as written.
        let mut out = String::new();
        for piece in content.split_inclusive('\n') {
            let (body, nl) = piece
                .strip_suffix('\n')
                .map(|b| (b, "\n"))
                .unwrap_or((piece, ""));
            let quoted = body.replace('"', "\\\"").replace('\'', "\\'");
            out.push_str(&self.expand(line, &quoted, lookup)?);
            out.push_str(nl);
        }
        Ok(out)
    }

    fn heredoc_source(&mut self, name: &str, content: &str) -> Result<Source, BuildError> {
        let dir = self.staging_dir()?;
        let path = dir.join("heredoc");
        std::fs::write(&path, content).map_err(|source| BuildError::Staging {
            path: path.clone(),
            source,
        })?;
        Ok(Source::Tree {
            name: name.to_string(),
            root: Node {
                kind: NodeKind::File {
                    source: FileSource::Path(path),
                    size: content.len() as u64,
                    link_key: None,
                },
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            children: Vec::new(),
        })
    }

    /// A context path as a source: an archive for ADD, else a file or a tree.
    fn context_source(&mut self, is_add: bool, entry: ContextEntry) -> Result<Source, String> {
        if is_add && entry.kind == EntryKind::File {
            if let Some(kind) = archive::detect(&entry.path).map_err(|e| e.to_string())? {
                return Ok(Source::Archive {
                    path: entry.path,
                    kind,
                });
            }
        }
        let name = basename(&entry.rel).to_string();
        let root = context_node(&entry);
        let children = if entry.kind == EntryKind::Dir {
            let ctx = self.context().map_err(|e| e.to_string())?;
            let prefix_len = if entry.rel.is_empty() {
                0
            } else {
                entry.rel.len() + 1
            };
            ctx.walk(&entry)
                .map_err(|e| e.to_string())?
                .iter()
                .map(|child| {
                    (
                        child.rel.get(prefix_len..).unwrap_or_default().to_string(),
                        context_node(child),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Source::Tree {
            name,
            root,
            children,
        })
    }
}

/// Paths of an earlier stage or image, with wildcards, following symlinks inside it.
fn stage_sources(fs: &RootFs, src: &str) -> Result<Vec<Source>, String> {
    let wanted = clean("", src);
    let paths: Vec<String> = if has_wildcard(&wanted) {
        let glob = globset::GlobBuilder::new(&wanted)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("invalid wildcard: {e}"))?
            .compile_matcher();
        fs.paths()
            .filter(|p| glob.is_match(p.as_str()))
            .cloned()
            .collect()
    } else {
        vec![wanted]
    };
    let mut sources = Vec::new();
    for path in paths {
        let resolved = fs.resolve(&path, true).map_err(|e| e.to_string())?;
        let root = if resolved.is_empty() {
            Node::dir(0o755, 0, 0)
        } else {
            fs.get(&resolved)
                .cloned()
                .ok_or_else(|| format!("/{path}: no such file or directory"))?
        };
        let children = if root.is_dir() {
            fs.children(&resolved)
        } else {
            Vec::new()
        };
        sources.push(Source::Tree {
            name: basename(&path).to_string(),
            root,
            children,
        });
    }
    if sources.is_empty() {
        return Err("no matching files".into());
    }
    Ok(sources)
}

/// Runs a registry future to completion from synchronous build code, on a
/// thread of its own so it works whether or not the caller is inside a runtime.
fn block_on<F>(future: F) -> std::io::Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(future))
            })
            .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// One matched COPY/ADD source.
enum Source {
    /// A file or directory with everything below it (paths relative to it).
    Tree {
        name: String,
        root: Node,
        children: Vec<(String, Node)>,
    },
    /// A local archive that ADD extracts.
    Archive {
        path: PathBuf,
        kind: archive::ArchiveKind,
    },
}

/// Shell forms run under the stage's SHELL, as Docker documents (buildah 1.28
/// ignores SHELL here; the comparison test records that difference).
fn command_argv(shell: &[String], cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Exec(argv) => argv.clone(),
        Command::Shell(text) => {
            let mut argv = if shell.is_empty() {
                vec!["/bin/sh".to_string(), "-c".to_string()]
            } else {
                shell.to_vec()
            };
            argv.push(text.clone());
            argv
        }
    }
}

fn context_node(entry: &ContextEntry) -> Node {
    let kind = match &entry.kind {
        EntryKind::Dir => NodeKind::Dir,
        EntryKind::Symlink(target) => NodeKind::Symlink(target.to_string_lossy().into_owned()),
        EntryKind::File => NodeKind::File {
            source: FileSource::Path(entry.path.clone()),
            size: entry.size,
            link_key: (entry.nlink > 1).then_some((entry.dev, entry.ino)),
        },
    };
    // The context never carries owners: files land as root unless --chown says otherwise.
    Node {
        kind,
        mode: entry.mode,
        uid: 0,
        gid: 0,
    }
}

/// Hard-linked files stay with the rest of a split COPY, so links are kept.
fn hard_linked(node: &Node) -> bool {
    matches!(
        node.kind,
        NodeKind::File {
            link_key: Some(_),
            ..
        }
    )
}

fn apply_owner(mut node: Node, owner: Option<(u32, u32)>, chmod: Option<u32>) -> Node {
    if let Some((uid, gid)) = owner {
        node.uid = uid;
        node.gid = gid;
    }
    if let Some(mode) = chmod {
        if !matches!(node.kind, NodeKind::Symlink(_)) {
            node.mode = mode;
        }
    }
    node
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

fn is_remote(src: &str) -> bool {
    let lower = src.to_ascii_lowercase();
    ["http://", "https://", "git@", "git://", "ssh://"]
        .iter()
        .any(|p| lower.starts_with(p))
}

fn parse_chmod(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 4 {
        return None;
    }
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

/// `user[:group]` by number, or by name from the stage's /etc/passwd and /etc/group.
fn resolve_owner(spec: &str, fs: &RootFs, lazy: &LazyBlobs) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err("empty user".into());
    }
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => lookup_id(fs, lazy, "etc/passwd", user, 2)
            .map(|(uid, gid)| (uid, gid.unwrap_or(uid)))
            .ok_or_else(|| {
                format!("unknown user {user:?} (no such entry in /etc/passwd of this stage)")
            })?,
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_id(fs, lazy, "etc/group", g, 2)
                .map(|(gid, _)| gid)
                .ok_or_else(|| {
                    format!("unknown group {g:?} (no such entry in /etc/group of this stage)")
                })?,
        },
    };
    Ok((uid, gid))
}

/// Where to fetch a base layer that was applied from its header index.
#[derive(Clone)]
struct RemoteLayer {
    image: ImageRef,
    digest: String,
    size: u64,
    store: BlobStore,
    registry: RegistryOptions,
}

impl RemoteLayer {
    /// Downloads the blob into its store path, verified.
    fn fetch(&self) -> Result<(), String> {
        let (image, store, registry) = (&self.image, &self.store, &self.registry);
        block_on(pull::fetch_blob(
            image,
            store,
            registry,
            &self.digest,
            self.size,
        ))
        .map_err(|e| e.to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

/// Base layer blobs that may still be in their registry, by store path.
#[derive(Default)]
struct LazyBlobs(HashMap<PathBuf, RemoteLayer>);

impl LazyBlobs {
    /// Makes sure a blob is on disk before something reads it.
    fn ensure(&self, blob: &std::path::Path) -> Result<(), String> {
        if blob.is_file() {
            return Ok(());
        }
        match self.0.get(blob) {
            Some(remote) => remote.fetch(),
            None => Err(format!("base layer {} is missing", blob.display())),
        }
    }

    /// Fetches every base blob the entries take file bodies from.
    fn ensure_entries(&self, entries: &[layer::LayerEntry]) -> Result<(), String> {
        for entry in entries {
            if let layer::EntryData::File {
                source: FileSource::Layer { blob, .. },
                ..
            } = &entry.data
            {
                self.ensure(blob)?;
            }
        }
        Ok(())
    }
}

/// Applies one base layer from its cached header index, or from its blob
/// (downloaded, verified, then indexed). A layer applied from the index
/// stays in its registry, recorded in `lazy`, until its content is needed.
/// Returns the uncompressed size.
fn apply_base_layer(
    fs: &mut RootFs,
    remote: RemoteLayer,
    diff_id: &str,
    cache_dir: &std::path::Path,
    lazy: &mut LazyBlobs,
) -> Result<u64, String> {
    let blob = remote
        .store
        .path(&remote.digest)
        .map_err(|e| e.to_string())?;
    let index = match overlay::load_index(cache_dir, &remote.digest, diff_id) {
        Some(index) => {
            tracing::debug!(digest = %remote.digest, "base layer applied from its header index");
            index
        }
        None => {
            remote.fetch()?;
            let index = overlay::read_index(&blob, diff_id).map_err(|e| e.to_string())?;
            overlay::save_index(cache_dir, &remote.digest, &index);
            index
        }
    };
    overlay::apply_index(fs, &index, &blob);
    lazy.0.insert(blob, remote);
    Ok(index.uncompressed_size)
}

/// The most of a stage's `/etc/passwd` or `/etc/group` that is read.
const ID_FILE_MAX_BYTES: u64 = 1 << 20;

/// Finds `name` in a passwd- or group-style file of the stage: (field `id_field`, next field).
fn lookup_id(
    fs: &RootFs,
    lazy: &LazyBlobs,
    file: &str,
    name: &str,
    id_field: usize,
) -> Option<(u32, Option<u32>)> {
    let resolved = fs.resolve(file, true).ok()?;
    let NodeKind::File { source, .. } = &fs.get(&resolved)?.kind else {
        return None;
    };
    let bytes = match source {
        FileSource::Path(path) => FileRef::Given(path.clone()).read(ID_FILE_MAX_BYTES).ok()?,
        // The layer may still be in its registry.
        FileSource::Layer { blob, path } => match lazy.ensure(blob).and_then(|()| {
            overlay::read_member(blob, path, ID_FILE_MAX_BYTES).map_err(|e| e.to_string())
        }) {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!("cannot read /{file} of the stage: {e}");
                return None;
            }
        },
    };
    String::from_utf8_lossy(&bytes).lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) {
            return None;
        }
        let id = fields.get(id_field)?.parse().ok()?;
        let next = fields.get(id_field + 1).and_then(|f| f.parse().ok());
        Some((id, next))
    })
}

/// `80`, `80/tcp`, `53/udp`, `8000-8002` → `80/tcp`, ...
fn parse_ports(word: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "EXPOSE {word}: invalid protocol {proto:?} (tcp, udp or sctp)"
        ));
    }
    let port = |s: &str| -> Result<u32, String> {
        s.parse::<u32>()
            .ok()
            .filter(|p| *p <= 65535)
            .ok_or_else(|| format!("EXPOSE {word}: invalid port {s:?}"))
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if end < start {
        return Err(format!("EXPOSE {word}: invalid port range"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn valid_signal(signal: &str) -> bool {
    if let Ok(n) = signal.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let name = signal.strip_prefix("SIG").unwrap_or(signal);
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '+' || c == '-')
}

fn health_config(h: &Healthcheck) -> HealthConfig {
    let nanos = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64).unwrap_or(0);
    HealthConfig {
        test: h.test.clone(),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        start_period: nanos(h.start_period),
        start_interval: nanos(h.start_interval),
        retries: h.retries.map(u64::from).unwrap_or(0),
    }
}
