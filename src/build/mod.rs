//! Runs a parsed Dockerfile: each stage starts from scratch or an earlier
//! stage, metadata instructions edit the config, and COPY, ADD and WORKDIR
//! turn changes of the stage's root filesystem model into layers.
//!
//! This file holds the options, the errors and the driver (`Builder`:
//! arguments, plan, base images). `stage` runs a stage's instructions and
//! commits layers, `copy` runs COPY and ADD over `source`s (context paths,
//! earlier stages, heredocs, `archive`s), `owner` resolves `--chown` names
//! in the stage's own passwd files, and `base` applies a registry image's
//! layers, fetching their blobs only when read.

pub mod archive;
mod base;
mod copy;
mod mounts;
mod owner;
mod regcache;
mod run;
mod source;
mod stage;
pub mod steps;
mod url;
mod workspace;

pub use mounts::SecretSource;
pub use workspace::ROOT_ENV;

use crate::cache::layers::{CacheStats, LayerCache};
use crate::cache::registry::CacheSpec;
use crate::context::untrusted::{FileError, FileRef};
use crate::context::{BuildContext, ContextError};
use crate::dockerfile::{
    self, ArgDecl, CopyArgs, Dockerfile, Instruction, InstructionKind, ParseError,
};
use crate::image::{build_index, Artifact, BaseInfo, BuiltImage, Image, ImageError};
use crate::layer::{self, tap::SharedTap, LayerCompression, LayerError};
use crate::name::Reference;
use crate::platform::{Platform, PlatformError};
use crate::remote;
use crate::rootfs::{clean, RootFs};
use crate::sandbox::Isolation;
use crate::store::{BlobStore, StoreError};
use base::{BaseLayerError, Bases};
pub use regcache::CacheExport;
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
    /// How to reach registries for base images and `COPY --from=<image>`;
    /// its CA files are trusted for `ADD <url>` too. Registry futures run
    /// on the caller's tokio runtime when the build runs inside a
    /// multi-thread one (or `spawn_blocking`), else on one the build starts.
    pub remote: remote::Options,
    /// How RUN steps are isolated (see `sandbox`).
    pub isolation: Isolation,
    /// Kills a RUN step that runs longer.
    pub run_timeout: Option<std::time::Duration>,
    /// The dockless binary, re-executed as the sandbox helper.
    pub sandbox_helper: PathBuf,
    /// Where RUN steps' headers and output go (appended); dockless's stderr when None.
    pub step_log: Option<PathBuf>,
    /// The most bytes one `ADD <url>` may download (before and after a
    /// gzip transfer encoding is decoded).
    pub add_url_max_size: u64,
    /// Receives each step's start and end.
    pub steps: steps::StepSink,
    /// `RUN --mount=type=secret` sources, by id (`--secret`).
    pub secrets: BTreeMap<String, SecretSource>,
    /// The registry build cache read before each COPY, ADD and RUN step
    /// and written after the build (see `cache::registry`); only with
    /// `layer_cache`.
    pub registry_cache: CacheSpec,
    /// The caller writes the registry cache itself, once the SBOM has
    /// scanned the image (see [`Built::cache_export`]), so the layers'
    /// scans go with it.
    pub defer_registry_cache: bool,
    /// Follows the new layers (COPY and ADD) of the target stage and the
    /// stages it is built FROM while they are written: a push uploads them
    /// as they are produced (`remote::stream`).
    pub layer_tap: Option<SharedTap>,
}

/// Default of [`BuildOptions::add_url_max_size`]: 1 GiB.
pub const DEFAULT_ADD_URL_MAX_SIZE: u64 = 1 << 30;

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
            remote: remote::Options::default(),
            isolation: Isolation::Auto,
            run_timeout: None,
            sandbox_helper: PathBuf::from("/proc/self/exe"),
            step_log: None,
            add_url_max_size: DEFAULT_ADD_URL_MAX_SIZE,
            steps: steps::StepSink::default(),
            secrets: BTreeMap::new(),
            registry_cache: CacheSpec::default(),
            defer_registry_cache: false,
            layer_tap: None,
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
    /// A problem with one instruction, named by file and line; `cause` is
    /// the typed error the message quotes, when there is one.
    #[error("{file}:{line}: {message}")]
    Instruction {
        file: String,
        line: usize,
        message: String,
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("--target {0:?}: no stage of that name in the Dockerfile")]
    UnknownTarget(String),
    #[error("{file}: no FROM instruction, so there is nothing to build")]
    NoStages { file: String },
    #[error("build context: {0}")]
    Context(#[source] ContextError),
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
    /// Every registry image the build read (`FROM`, `COPY --from=<image>`).
    pub bases: Vec<BaseInfo>,
    /// `sha256:<hex>` of the Dockerfile's bytes.
    pub dockerfile_digest: String,
    /// The registry cache still to write (`defer_registry_cache`).
    pub cache_export: Option<CacheExport>,
}

/// Builds the target stage (the last one unless `opts.target` names another).
pub fn build(opts: &BuildOptions) -> Result<Built, BuildError> {
    let dockerfile = opts.dockerfile_ref();
    // Inside a checkout (the service) errors name the file as the
    // repository does, not where the server keeps its work tree.
    let path = match opts.dockerfile_root {
        Some(_) => PathBuf::from(dockerfile.name()),
        None => dockerfile.nominal_path(),
    };
    let text = dockerfile
        .read_text(dockerfile::MAX_BYTES)
        .map_err(|source| BuildError::ReadDockerfile {
            path: path.clone(),
            source,
        })?;
    let file = path.display().to_string();
    let df = dockerfile::parse(&text, &file)?;
    let mut builder = Builder::new(opts, df, file)?;
    let mut built = builder.run()?;
    built.dockerfile_digest = crate::digest::sha256(text.as_bytes());
    Ok(built)
}

/// A build for every platform given: one image, or an index when there are several.
pub struct BuiltSet {
    pub artifact: Artifact,
    pub store: BlobStore,
    pub unused_build_args: Vec<String>,
    /// Summed over platforms.
    pub cache: CacheStats,
    /// Every registry image any platform's build read, each once.
    pub bases: Vec<BaseInfo>,
    pub dockerfile_digest: String,
    /// Each platform's registry cache still to write.
    pub cache_exports: Vec<CacheExport>,
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
            bases: built.bases,
            dockerfile_digest: built.dockerfile_digest,
            cache_exports: built.cache_export.into_iter().collect(),
        });
    }
    let mut images = Vec::new();
    let mut unused = BTreeSet::new();
    let mut store = None;
    let mut cache = CacheStats::default();
    let mut bases = Vec::new();
    let mut dockerfile_digest = String::new();
    let mut cache_exports = Vec::new();
    for platform in platforms {
        let mut one = opts.clone();
        one.platform = Some(platform.clone());
        let built = build(&one)?;
        images.push(built.image);
        unused.extend(built.unused_build_args);
        for b in built.bases {
            if !bases.contains(&b) {
                bases.push(b);
            }
        }
        dockerfile_digest = built.dockerfile_digest;
        cache_exports.extend(built.cache_export);
        cache.add(&built.cache);
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
        bases,
        dockerfile_digest,
        cache_exports,
    })
}

/// An instruction's error at `file:line` that keeps the error it quotes.
fn fail_because(
    file: &str,
    line: usize,
    message: impl Into<String>,
    cause: impl std::error::Error + Send + Sync + 'static,
) -> BuildError {
    BuildError::Instruction {
        file: file.to_string(),
        line,
        message: message.into(),
        cause: Some(Box::new(cause)),
    }
}

/// What a FROM or a COPY --from names.
#[derive(Debug, Clone)]
enum BaseRef {
    Scratch,
    Stage(usize),
    Image(Reference),
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
    /// The stage's name and where its current instruction is among the
    /// steps BuildKit counts (FROM, RUN, COPY, ADD, WORKDIR): (step, of).
    name: Option<String>,
    step: (usize, usize),
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

    /// `build 2/5` (`2/5` in an unnamed stage), as `docker buildx` labels steps.
    fn step_label(&self) -> String {
        let (at, of) = self.step;
        match &self.name {
            Some(name) => format!("{name} {at}/{of}"),
            None => format!("{at}/{of}"),
        }
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
    /// Registry images: their puller, and base layers applied from their
    /// header index, fetched when read.
    bases: Bases,
    staged_files: usize,
    /// mtimes of `ADD <url>` downloads (from Last-Modified, clamped), by staged file.
    url_mtimes: HashMap<PathBuf, u64>,
    layer_cache: Option<LayerCache>,
    cache_stats: CacheStats,
    /// The step running (1-based) and how many the build has.
    step: usize,
    steps_total: usize,
    /// Whether the stage running ends up in the image (see `layer_tap`).
    in_image: bool,
    /// RUN's roots on disk and its sandbox, made at the first step that runs.
    workspace: Option<workspace::Workspace>,
    /// The registry build cache, when one is given and the layer cache is on.
    registry_cache: Option<regcache::RegistryCache>,
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
            bases: Bases::new(&opts.remote, &store),
            store,
            context: None,
            staging: None,
            created: crate::image::rfc3339(opts.source_date_epoch),
            platform,
            global_args: BTreeMap::new(),
            used_args: BTreeSet::new(),
            results,
            images: HashMap::new(),
            staged_files: 0,
            url_mtimes: HashMap::new(),
            layer_cache: opts.layer_cache.then(|| LayerCache::open(&opts.cache_dir)),
            cache_stats: CacheStats::default(),
            step: 0,
            steps_total: 0,
            in_image: false,
            workspace: None,
            registry_cache: None,
        };
        builder.resolve_global_args()?;
        Ok(builder)
    }

    fn fail(&self, line: usize, message: impl Into<String>) -> BuildError {
        BuildError::Instruction {
            file: self.file.clone(),
            line,
            message: message.into(),
            cause: None,
        }
    }

    /// [`fail`](Self::fail), keeping the error the message quotes.
    fn fail_because(
        &self,
        line: usize,
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> BuildError {
        fail_because(&self.file, line, message, cause)
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
            .map_err(|e| self.fail(line, format!("failed to process {raw:?}: {e}")))
    }

    fn expand_words(
        &self,
        line: usize,
        raw: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, BuildError> {
        dockerfile::expand_words(raw, self.df.escape, lookup)
            .map_err(|e| self.fail(line, format!("failed to process {raw:?}: {e}")))
    }

    /// ENV and LABEL pairs, names and values all expanded against the
    /// variables as they were before the instruction.
    fn expand_pairs(
        &self,
        line: usize,
        pairs: &[(String, String)],
        state: &StageState,
    ) -> Result<Vec<(String, String)>, BuildError> {
        let lookup = |n: &str| state.lookup(n);
        pairs
            .iter()
            .map(|(k, v)| {
                Ok((
                    self.expand(line, k, &lookup)?,
                    self.expand(line, v, &lookup)?,
                ))
            })
            .collect()
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
        Reference::parse(name).map(BaseRef::Image).map_err(|e| {
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
        // Only the lower-case name is the empty image (BuildKit's
        // `emptyImageName`); `SCRATCH` is an image name, refused as upper-case.
        if image == "scratch" {
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
        self.check_literal_from(ins, from)?;
        self.base_ref(ins.line, from, index, "COPY --from")
    }

    /// BuildKit takes `--from` as written (`dockerfile2llb/convert.go`
    /// `toCommand`, since dockerfile/1.18.0): anything that expansion would
    /// change is refused, for every stage, built or not.
    fn check_literal_from(&self, ins: &Instruction, from: &str) -> Result<(), BuildError> {
        match dockerfile::expand_word(from, self.df.escape, &|_| None) {
            Ok(same) if same == from => Ok(()),
            _ => Err(self.fail(
                ins.line,
                "variable expansion is not supported for --from, define a new stage with FROM \
                 using ARG from global scope as a workaround",
            )),
        }
    }

    /// A registry image as a stage result: pulled, verified and laid out as a
    /// filesystem model; loaded once per build and platform, and kept in
    /// `self.images` under the returned key.
    /// `what` names the instruction as written, e.g. `FROM python:3.12`.
    fn load_image(
        &mut self,
        line: usize,
        what: &str,
        image: &Reference,
        platform: &Platform,
    ) -> Result<String, BuildError> {
        let key = format!("{image}|{platform}");
        if self.images.contains_key(&key) {
            return Ok(key);
        }
        let file = self.file.clone();
        let fail = |e: BaseLayerError| fail_because(&file, line, format!("{what}: {e}"), e);
        let base = self.bases.pull(image, platform).map_err(fail)?;
        // Their header indexes from the registry cache: not downloaded to be indexed.
        self.registry_import_scans(&base.layers);
        let mut fs = RootFs::default();
        let layers = self
            .bases
            .apply(&mut fs, &base, &self.opts.cache_dir)
            .map_err(fail)?;
        let mut config = base.config.clone();
        config.created = Some(self.created.clone());
        let result = StageResult {
            image: Image {
                config,
                layers,
                base: Some(BaseInfo {
                    registry: image.registry().to_string(),
                    repository: image.repository().to_string(),
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

    /// Every stage the target needs, and the registry images they read,
    /// found and checked before anything is written, so an unsupported step
    /// fails the build at once.
    fn plan(&self, target: usize) -> Result<(BTreeSet<usize>, Vec<Reference>), BuildError> {
        for stage in &self.df.stages {
            for ins in &stage.instructions {
                if let InstructionKind::Copy(CopyArgs {
                    from: Some(from), ..
                }) = &ins.kind
                {
                    self.check_literal_from(ins, from)?;
                }
            }
        }
        let mut needed = BTreeSet::new();
        let mut images = Vec::new();
        let mut pending = vec![target];
        let mut follow = |base: BaseRef, pending: &mut Vec<usize>| match base {
            BaseRef::Stage(i) => pending.push(i),
            BaseRef::Image(image) => images.push(image),
            BaseRef::Scratch => {}
        };
        while let Some(index) = pending.pop() {
            if !needed.insert(index) {
                continue;
            }
            follow(self.stage_base(index)?, &mut pending);
            for ins in &self.df.stages[index].instructions {
                self.check_supported(ins)?;
                if let InstructionKind::Copy(args) = &ins.kind {
                    if let Some(from) = &args.from {
                        follow(self.copy_from_ref(index, ins, from)?, &mut pending);
                    }
                }
                if let InstructionKind::Run(args) = &ins.kind {
                    for base in self.mount_bases(index, ins, &args.mounts)? {
                        follow(base, &mut pending);
                    }
                }
            }
        }
        Ok((needed, images))
    }

    /// The target and the stages it is built FROM, whose layers the image holds.
    fn stages_in_image(&self, target: usize) -> Result<BTreeSet<usize>, BuildError> {
        let mut stages = BTreeSet::from([target]);
        let mut index = target;
        while let BaseRef::Stage(base) = self.stage_base(index)? {
            if !stages.insert(base) {
                break;
            }
            index = base;
        }
        Ok(stages)
    }

    fn check_supported(&self, ins: &Instruction) -> Result<(), BuildError> {
        match &ins.kind {
            InstructionKind::Run(args) => self.check_mounts(ins, &args.mounts),
            InstructionKind::Add(args) => {
                let git = |s: &&String| url::remote_kind(s) == Some(url::Remote::Git);
                if let Some(repo) = args.sources.iter().find(git) {
                    return Err(self.fail(
                        ins.line,
                        format!("ADD {repo}: adding a git repository is not supported yet"),
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
        let (needed, images) = self.plan(target)?;
        self.bases.expect(&images);
        self.open_registry_cache();
        self.steps_total = needed
            .iter()
            .map(|&i| 1 + self.df.stages[i].instructions.len())
            .sum();
        let in_image = self.stages_in_image(target)?;
        for index in needed {
            self.in_image = in_image.contains(&index);
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
        let mut image = result.image.finish(&self.store)?;
        image.cache_source = self.registry_cache_source();
        self.registry_import_scans(&image.layers);
        let cache_export = self.export_registry_cache(&image);
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
        let mut bases: Vec<BaseInfo> = self
            .images
            .values()
            .filter_map(|r| r.image.base.clone())
            .collect();
        bases.sort_by(|a, b| (&a.name, &a.digest).cmp(&(&b.name, &b.digest)));
        bases.dedup();
        Ok(Built {
            image,
            store: self.store.clone(),
            unused_build_args,
            cache: self.cache_stats,
            bases,
            // Set by `build`, which holds the Dockerfile's text.
            dockerfile_digest: String::new(),
            cache_export,
        })
    }
}
