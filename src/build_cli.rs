//! The flags `build` and `push` share, checked and turned into the
//! library's build and pipeline options.

use crate::{parse_size, progress, results, supply_cli, usage, Failure};
use clap::Args;
use dockless::build::BuildOptions;
use dockless::pipeline::PipelineOptions;
use dockless::platform::Platform;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn parse_isolation(text: &str) -> Result<dockless::sandbox::Isolation, String> {
    text.parse()
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 10m, 1h30m)"))
}

/// What `build` and `push` share.
#[derive(Args)]
pub(crate) struct BuildFlags {
    /// The build context folder; for `push`, also oci:DIR[:NAME:TAG] or
    /// oci-archive:FILE[:NAME:TAG] to push an image (or index) from an OCI
    /// layout byte for byte.
    pub(crate) context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub(crate) file: Option<PathBuf>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub(crate) build_args: Vec<String>,
    /// Add a label to the image (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Target platforms, os/arch[/variant], comma-separated (default: this machine's).
    /// Several give one image per platform under an OCI index.
    #[arg(long)]
    pub(crate) platform: Option<String>,
    /// Registry host[:port] to reach over plain HTTP (base images, push targets); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
    /// Extra CA certificate (PEM) to trust; repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub(crate) ca_certs: Vec<PathBuf>,
    /// Build this stage instead of the last one.
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// gzip level for new layers, 0-9 (part of the digest).
    #[arg(long, default_value_t = dockless::layer::DEFAULT_GZIP_LEVEL, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub(crate) gzip_level: u32,
    /// Layer compression: gzip, or zstd (tar+zstd media type, for runtimes that read it).
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
    pub(crate) compression: String,
    /// Put dependency folders (site-packages, node_modules, vendor, .venv) of a
    /// COPY in a layer of their own, before the rest.
    #[arg(long)]
    pub(crate) split_layers: bool,
    /// Do not reuse layers, compressed segments or RUN steps from the cache.
    #[arg(long, visible_alias = "no-cache")]
    pub(crate) no_layer_cache: bool,
    /// How RUN steps are isolated: auto (a user namespace whenever one can
    /// be made; as root without one, chroot with a warning), userns, or
    /// chroot (no user namespace: only as root in a throwaway container).
    #[arg(long, default_value = "auto", value_parser = parse_isolation)]
    pub(crate) isolation: dockless::sandbox::Isolation,
    /// A secret for `RUN --mount=type=secret`: id=ID,src=FILE or id=ID,env=VAR
    /// (as `docker buildx build --secret`); repeatable. Never stored in the image.
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    pub(crate) secrets: Vec<String>,
    /// Kill a RUN step that runs longer than this, e.g. 10m or 1h30m.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) run_timeout: Option<std::time::Duration>,
    /// Accepted as docker's: dockless always asks the registry what a
    /// base's tag names now, and never builds from a stale one.
    #[arg(long)]
    pub(crate) pull: bool,
    #[command(flatten)]
    pub(crate) results: results::ResultFiles,
    /// Progress on stderr: auto (tty on a terminal, else plain), plain
    /// (one line per step and blob, as buildx's), tty (live view) or quiet.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) progress: progress::Mode,
    /// No progress output (--progress=quiet).
    #[arg(long, short = 'q', conflicts_with = "json")]
    pub(crate) quiet: bool,
    /// Progress as JSON lines on stderr, for CI: build steps, blobs,
    /// manifests, each with its time.
    #[arg(long)]
    pub(crate) json: bool,
    /// After the build, remove least recently used cached blobs beyond this size.
    #[arg(long, env = "DOCKLESS_CACHE_MAX_SIZE", default_value = "10G", value_parser = parse_size)]
    pub(crate) cache_max_size: u64,
    /// The most one `ADD <url>` may download, e.g. 512M.
    #[arg(long, env = "DOCKLESS_ADD_URL_MAX_SIZE", default_value = "1G", value_parser = parse_size)]
    pub(crate) add_url_max_size: u64,
    #[command(flatten)]
    pub(crate) supply: supply_cli::SupplyFlags,
    /// Share the layer cache through a registry repository (kaniko's flag):
    /// each COPY, ADD and RUN step is looked up there before it runs, and
    /// the build's steps are written there after it. REGISTRY/REPO[:TAG]
    /// (tag default dockless-cache); a cache that cannot be reached is a warning.
    #[arg(long, value_name = "REGISTRY/REPO")]
    pub(crate) cache_repo: Option<String>,
    /// BuildKit's form for reading the registry cache: type=registry,ref=REGISTRY/REPO[:TAG].
    #[arg(long, value_name = "type=registry,ref=REF")]
    pub(crate) cache_from: Vec<String>,
    /// BuildKit's form for writing the registry cache:
    /// type=registry,ref=REGISTRY/REPO[:TAG][,mode=min|max] (min: the image's layers only).
    #[arg(long, value_name = "type=registry,ref=REF")]
    pub(crate) cache_to: Vec<String>,
}

fn key_values(
    items: &[String],
    what: &str,
    from_env: bool,
) -> Result<BTreeMap<String, String>, Failure> {
    let mut map = BTreeMap::new();
    for item in items {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None if from_env => match std::env::var(item) {
                Ok(v) => (item.clone(), v),
                Err(_) => continue,
            },
            None => {
                return Err(usage(anyhow::anyhow!(
                    "{what} {item:?}: expected KEY=VALUE"
                )))
            }
        };
        if k.is_empty() {
            return Err(usage(anyhow::anyhow!("{what} {item:?}: the key is empty")));
        }
        map.insert(k, v);
    }
    Ok(map)
}

/// A missing file or folder named on the command line is a usage error
/// that names the flag, found before any work starts.
fn check_inputs(args: &BuildFlags) -> Result<(), Failure> {
    if !args.context.is_dir() {
        let problem = match args.context.exists() {
            true => "is not a folder",
            false => "does not exist",
        };
        return Err(usage(anyhow::anyhow!(
            "the build context {} {problem}; pass the folder holding the files to COPY",
            args.context.display()
        )));
    }
    check_ca_certs(&args.ca_certs)
}

pub(crate) fn check_ca_certs(files: &[PathBuf]) -> Result<(), Failure> {
    match files.iter().find(|f| !f.is_file()) {
        Some(f) => Err(usage(anyhow::anyhow!(
            "--ca-cert {}: no such file; give the PEM file of the registry's CA",
            f.display()
        ))),
        None => Ok(()),
    }
}

pub(crate) fn build_options(args: &BuildFlags) -> Result<BuildOptions, Failure> {
    check_inputs(args)?;
    let mut opts = BuildOptions::new(&args.context, dockless::cache::default_dir());
    opts.dockerfile = args.file.clone();
    opts.build_args = key_values(&args.build_args, "--build-arg", true)?;
    opts.labels = key_values(&args.labels, "--label", false)?;
    opts.target = args.target.clone();
    opts.remote.insecure_registries = args.insecure_registries.clone();
    opts.remote.ca_certs = args.ca_certs.clone();
    opts.source_date_epoch = dockless::cache::source_date_epoch().map_err(usage)?;
    opts.gzip_level = args.gzip_level;
    opts.compression = args
        .compression
        .parse()
        .map_err(|e: String| usage(anyhow::anyhow!(e)))?;
    opts.split_layers = args.split_layers;
    opts.layer_cache = !args.no_layer_cache;
    opts.registry_cache = dockless::cache::registry::CacheSpec::from_flags(
        args.cache_repo.as_deref(),
        &args.cache_from,
        &args.cache_to,
    )
    .map_err(usage)?;
    opts.isolation = args.isolation;
    opts.run_timeout = args.run_timeout;
    opts.add_url_max_size = args.add_url_max_size;
    for text in &args.secrets {
        let (id, source) =
            dockless::build::SecretSource::parse(text).map_err(|e| usage(anyhow::anyhow!(e)))?;
        opts.secrets.insert(id, source);
    }
    Ok(opts)
}

fn platforms(flags: &BuildFlags) -> Result<Vec<Platform>, Failure> {
    let Some(text) = &flags.platform else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|p| Platform::parse(p).map_err(usage))
        .collect()
}

pub(crate) fn pipeline_options(
    flags: &BuildFlags,
    build: BuildOptions,
) -> Result<PipelineOptions, Failure> {
    let supply = flags.supply.options(flags.file.as_deref()).map_err(usage)?;
    Ok(PipelineOptions {
        build,
        platforms: platforms(flags)?,
        cache_max_size: flags.cache_max_size,
        supply,
    })
}

/// What the CLI shows of a finished build: docker's warning for build args
/// How progress is shown: `-q` and `--json` win over `--progress`.
pub(crate) fn progress_of(flags: &BuildFlags) -> progress::Progress {
    progress::Progress::new(match (flags.quiet, flags.json) {
        (true, _) => progress::Mode::Quiet,
        (_, true) => progress::Mode::Json,
        _ => flags.progress,
    })
}
