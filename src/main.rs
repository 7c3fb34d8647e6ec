//! The `dockless` command: a thin shell over the library.

use anyhow::{Context as _, Result};
use build_cli::{build_options, check_ca_certs, pipeline_options, progress_of, BuildFlags};
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use dockless::layout::Output;
use dockless::name::{self, Reference};
use dockless::pipeline::{self, Destination, PipelineError, PipelineEvent, PipelineOptions};
use dockless::remote;
use results::Delivered;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

mod build_cli;
mod envhelp;
mod inspect;
mod login_cli;
mod progress;
mod results;
mod supply_cli;

/// The version and the commit it was built from (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DOCKLESS_COMMIT"),
    ")"
);

/// Exit codes scripts can tell apart (clap exits with 2 on a usage error).
const EXIT_USAGE: u8 = 2;
const EXIT_BUILD: u8 = 3;
const EXIT_REGISTRY: u8 = 4;
/// `verify`: no signature by the key, or an attestation that does not verify.
const EXIT_VERIFY: u8 = 5;

#[derive(Parser)]
#[command(
    name = "dockless",
    version = VERSION,
    about = "Build OCI images from a Dockerfile without a daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Build an image into an OCI layout (./oci-layout by default) or an archive.
    #[command(after_help = envhelp::BUILD_ENV)]
    Build(BuildArgs),
    /// Build an image and push it to a registry; prints REGISTRY/REPO:TAG@DIGEST.
    #[command(after_help = envhelp::BUILD_ENV)]
    Push(PushArgs),
    /// Check credentials against a registry and store them as `docker login` does.
    #[command(after_help = envhelp::CREDENTIALS_ENV)]
    Login(login_cli::LoginArgs),
    /// Remove a registry's stored credentials, as `docker logout` does.
    #[command(after_help = envhelp::CREDENTIALS_ENV)]
    Logout {
        /// Registry host[:port].
        registry: String,
    },
    /// Run the GitHub webhook build service (see README, "dockless serve").
    #[command(after_help = envhelp::SERVE_ENV)]
    Serve(ServeArgs),
    /// Check an image's cosign signatures and signed attestations with a public key.
    Verify(supply_cli::VerifyArgs),
    /// Manage the cache folder (blobs, layer and segment records).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Show an image's manifest, config, layers and platforms (a registry
    /// reference, oci:DIR[:NAME:TAG], oci-archive:FILE or docker-archive:FILE).
    Inspect(inspect::InspectArgs),
    /// Print the version and the commit dockless was built from.
    Version,
    /// Print a shell completion script: `dockless completions bash > /etc/bash_completion.d/dockless`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `dockless man | man -l -`.
    Man,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Remove least recently used blobs until the cache holds at most --max-size.
    Prune {
        /// Size cap, e.g. 10G, 512M (0 empties the blob store).
        #[arg(long, value_parser = parse_size)]
        max_size: u64,
    },
}

fn parse_size(text: &str) -> Result<u64, String> {
    dockless::cache::parse_size(text)
}

#[derive(Args)]
struct BuildArgs {
    /// Image name and tag (NAME[:TAG]); repeatable, one line on stdout each;
    /// defaults to the context folder's name.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// oci:DIR, oci-archive:FILE.tar or docker-archive:FILE.tar (default oci:./oci-layout).
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    #[command(flatten)]
    flags: BuildFlags,
}

#[derive(Args)]
struct PushArgs {
    /// TAG, REPO:TAG or REGISTRY/REPO:TAG; the repository defaults to the
    /// context folder's name. Repeatable: the manifest is uploaded once and
    /// each further tag is a manifest PUT; stdout has one line per tag.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Registry host[:port] for names without one.
    #[arg(long, env = "DOCKLESS_REGISTRY")]
    registry: Option<String>,
    /// Use plain HTTP instead of TLS for the target registry (and bases on it).
    #[arg(long)]
    insecure: bool,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 3)]
    concurrency: usize,
    #[command(flatten)]
    flags: BuildFlags,
}

#[derive(Args)]
struct ServeArgs {
    /// The service's TOML config.
    #[arg(long, value_name = "FILE", default_value = "dockless.toml")]
    config: PathBuf,
}

/// An error with the exit code it deserves.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_USAGE,
        error: error.into(),
    }
}

fn main() -> ExitCode {
    // The RUN sandbox's helper, re-executed per step: hidden, and before
    // anything else so it stays single-threaded and quick to start.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == dockless::sandbox::HELPER_ARG)
    {
        dockless::sandbox::helper_main();
    }
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Commands::Serve(_)));
    let result = match cli.command {
        Commands::Build(args) => run_build(args),
        Commands::Push(args) => run_push(args),
        Commands::Login(args) => login_cli::run_login(args),
        Commands::Verify(args) => supply_cli::run_verify(args).map(drop).map_err(|e| Failure {
            code: EXIT_VERIFY,
            error: e,
        }),
        Commands::Serve(args) => dockless::serve::run(&args.config).map_err(Failure::from),
        Commands::Cache(CacheCommand::Prune { max_size }) => run_prune(max_size),
        Commands::Logout { registry } => login_cli::run_logout(&registry),
        Commands::Inspect(args) => inspect::run(args),
        Commands::Version => {
            println!("dockless {VERSION}");
            Ok(())
        }
        Commands::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "dockless",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Commands::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(Failure::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", describe(&f.error));
            ExitCode::from(f.code)
        }
    }
}

/// The error and its causes, leaving out a cause whose text the message
/// already quotes (library errors embed their source, and anyhow's `{:#}`
/// would print it twice).
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Logs on stderr: `$DOCKLESS_LOG` (tracing's filter syntax), else
/// warnings, or for `serve` each build's state changes (info). Colours only
/// on a terminal, and never with `NO_COLOR` set (no-color.org).
fn init_logging(serve: bool) {
    let default = if serve { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCKLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    // The service's log is read later, so it carries the time; the CLI's is not.
    match serve {
        true => log.init(),
        false => log.without_time().init(),
    }
}

fn run_prune(max_size: u64) -> Result<(), Failure> {
    let dir = dockless::cache::default_dir();
    let report = dockless::cache::prune(&dir, max_size, &Default::default())
        .with_context(|| format!("pruning {}", dir.display()))?;
    eprintln!(
        "removed {} blobs and {} stale temporary files ({} bytes); {} bytes kept in {}",
        report.blobs_removed,
        report.temp_removed,
        report.bytes_removed,
        report.bytes_kept,
        dir.display()
    );
    Ok(())
}

/// no ARG declares, and what the layer cache did (at info level).
fn report_built(built: &dockless::build::BuiltSet) {
    for arg in &built.unused_build_args {
        tracing::warn!("build arg {arg} was given but no ARG declares it");
    }
    let c = built.cache;
    tracing::info!(
        layers_from_cache = c.layers_from_cache,
        layers_written = c.layers_written,
        files_hashed = c.files_hashed,
        segments_reused = c.segments_reused,
        steps_run = c.steps_run,
        steps_from_cache = c.steps_from_cache,
        layers_from_registry = c.layers_from_registry,
        steps_from_registry = c.steps_from_registry,
        "layer cache"
    );
}

/// Builds, delivers and prunes (see `dockless::pipeline`); returns what
/// was delivered, or the failed step's error with its exit code.
fn run_pipeline(
    opts: PipelineOptions,
    destination: &Destination,
    progress: &progress::Progress,
) -> Result<Delivered, Failure> {
    let runtime = tokio::runtime::Runtime::new()?;
    let delivered = std::sync::Mutex::new(None);
    let stats = std::sync::Mutex::new(None);
    let on_event = |event: PipelineEvent<'_>| {
        let PipelineEvent::Built(built) = event;
        report_built(built);
        *stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(built.cache);
        *delivered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Delivered::of(&built.artifact));
    };
    let downloads = opts.build.remote.layer_downloads.clone();
    let result = runtime.block_on(pipeline::run(opts, destination, &on_event));
    // After the SBOM and the push, so the downloads they made are counted.
    if let Some(stats) = *stats.lock().unwrap_or_else(|p| p.into_inner()) {
        progress.built(&stats, downloads.get());
    }
    result
        .map(|delivered| {
            for a in &delivered.attached {
                for (tag, digest) in &a.tags {
                    tracing::info!(subject = %a.subject, %tag, %digest, "attached");
                }
            }
        })
        .map_err(|e| match e {
            // A panic in the build stays a panic, as when it ran on this thread.
            PipelineError::BuildAborted(j) | PipelineError::WriteAborted(j) if j.is_panic() => {
                std::panic::resume_unwind(j.into_panic())
            }
            PipelineError::Write(e) => Failure {
                code: 1,
                error: anyhow::Error::from(e)
                    .context(format!("writing the image to {}", output_text(destination))),
            },
            e @ PipelineError::Build(_) => Failure {
                code: EXIT_BUILD,
                error: e.into(),
            },
            e @ (PipelineError::Push(_)
            | PipelineError::FetchBaseLayers(_)
            | PipelineError::AttachTarget { .. }) => Failure {
                code: EXIT_REGISTRY,
                error: e.into(),
            },
            e => e.into(),
        })?;
    let delivered = delivered.into_inner().unwrap_or_else(|p| p.into_inner());
    // The Built event comes before any delivery, so a success had it.
    delivered.ok_or_else(|| anyhow::anyhow!("the build reported no image").into())
}

/// Where the image goes, as the user named it (`--output` or the push target).
fn output_text(destination: &Destination) -> String {
    match destination {
        Destination::Output { output, .. } => output.to_string(),
        Destination::Registry { target, .. } => target.to_string(),
    }
}

/// The name to tag with: `-t`, else the context folder's.
fn tag_name(tag: Option<&str>, context: &std::path::Path) -> Result<Reference, Failure> {
    match tag {
        Some(t) => parse_tag(t),
        None => parse_tag(&name::default_name(context)),
    }
}

/// A name to tag with; when invalid, the error suggests the nearest valid one.
fn parse_tag(text: &str) -> Result<Reference, Failure> {
    Reference::parse_tag(text).map_err(|e| match Reference::suggest_tag(text) {
        Some(fixed) => usage(anyhow::anyhow!("{e}; did you mean {fixed:?}?")),
        None => usage(e),
    })
}

/// Every `-t` as written (`NAME:TAG`), or the context folder's name.
fn tag_names(tags: &[String], context: &std::path::Path) -> Result<Vec<String>, Failure> {
    if tags.is_empty() {
        return Ok(vec![tag_name(None, context)?.as_written()]);
    }
    tags.iter()
        .map(|t| Ok(tag_name(Some(t), context)?.as_written()))
        .collect()
}

fn run_build(args: BuildArgs) -> Result<(), Failure> {
    let names = tag_names(&args.tags, &args.flags.context)?;
    let output = match &args.output {
        Some(o) => Output::parse(o).map_err(usage)?,
        None => Output::default_layout(),
    };
    let to_stdout = output.is_stdout();
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(usage(anyhow::anyhow!(
            "refusing to write an archive to a terminal; redirect stdout: `> image.tar` or `| docker load`"
        )));
    }
    if matches!(output, Output::Oci(ref p) if p == std::path::Path::new("-")) {
        return Err(usage(anyhow::anyhow!(
            "oci:- cannot go to stdout (a layout is a folder); use oci-archive:- or docker-archive:-"
        )));
    }
    let progress = progress_of(&args.flags);
    let mut build = build_options(&args.flags)?;
    build.steps = progress.steps();
    let opts = pipeline_options(&args.flags, build)?;
    let destination = Destination::Output {
        output,
        names: names.clone(),
    };
    let delivered = run_pipeline(opts, &destination, &progress)?;
    // stdout carries the archive then; the references go to stderr.
    print_references(&names, &delivered, to_stdout);
    args.flags.results.write(&delivered, &names)?;
    Ok(())
}

/// `oci:DIR[:NAME]` or `oci-archive:FILE[:NAME]`, an OCI layout (or one
/// as a tar) to push as it is (skopeo's syntax).
struct LayoutSource {
    path: PathBuf,
    archive: bool,
    name: Option<Reference>,
}

fn layout_source(context: &std::path::Path) -> Result<Option<LayoutSource>, Failure> {
    let text = context.to_str().unwrap_or_default();
    let (rest, archive) = match (text.strip_prefix("oci:"), text.strip_prefix("oci-archive:")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Ok(None),
    };
    let (path, name) = match rest.split_once(':') {
        Some((path, name)) => (path, Some(parse_tag(name)?)),
        None => (rest, None),
    };
    Ok(Some(LayoutSource {
        path: PathBuf::from(path),
        archive,
        name,
    }))
}

/// The layout's image and its blob store, and the temporary folder an
/// archive was unpacked into (beside the cache), kept while the push runs.
fn read_layout(
    layout: LayoutSource,
) -> Result<(dockless::layout::LayoutImage, Option<tempfile::TempDir>), Failure> {
    let (dir, scratch) = if layout.archive {
        let cache = dockless::cache::default_dir();
        std::fs::create_dir_all(&cache)?;
        let scratch = tempfile::tempdir_in(&cache)?;
        dockless::layout::unpack_oci_archive(&layout.path, scratch.path()).map_err(usage)?;
        (scratch.path().to_path_buf(), Some(scratch))
    } else {
        (layout.path.clone(), None)
    };
    let wanted = layout.name.map(|n| n.as_written());
    let mut image = dockless::layout::read_artifact(&dir, wanted.as_deref()).map_err(usage)?;
    // Unnamed in the layout: named after the layout's file or folder.
    image
        .name
        .get_or_insert_with(|| name::default_name(&layout.path));
    Ok((image, scratch))
}

/// Flags that shape a build mean nothing for a layout pushed as it is.
fn refuse_build_flags(flags: &BuildFlags) -> Result<(), Failure> {
    let given = [
        ("-f/--file", flags.file.is_some()),
        ("--build-arg", !flags.build_args.is_empty()),
        ("--label", !flags.labels.is_empty()),
        ("--platform", flags.platform.is_some()),
        ("--target", flags.target.is_some()),
        ("--secret", !flags.secrets.is_empty()),
        ("--sign-key", flags.supply.signs()),
        ("--cache-repo", flags.cache_repo.is_some()),
        ("--cache-from", !flags.cache_from.is_empty()),
        ("--cache-to", !flags.cache_to.is_empty()),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((flag, _)) => Err(usage(anyhow::anyhow!(
            "{flag} shapes a build (or what is attached to it); an oci: layout is pushed as it is"
        ))),
        None => Ok(()),
    }
}

/// Where `push` sends the image: `--tag v1` is a tag for the default name
/// (a layout's own name, else the context folder's); `repo:tag` and
/// `team/repo:tag` go to `--registry`; a name with a host is taken whole.
fn push_target(
    args: &PushArgs,
    tag: Option<&str>,
    default_name: Option<&str>,
) -> Result<Reference, Failure> {
    let default = match default_name {
        Some(n) => parse_tag(n)?,
        None => tag_name(None, &args.flags.context)?,
    };
    let named = match tag {
        None => default,
        Some(t) if !t.contains([':', '/']) => parse_tag(&format!("{}:{t}", default.name()))?,
        Some(t) => parse_tag(t)?,
    };
    if named.names_registry() {
        return Ok(named);
    }
    let name = named.as_written();
    match &args.registry {
        Some(registry) => {
            parse_tag(&format!("{}/{name}", registry.trim_end_matches('/')))
        }
        None => Err(usage(anyhow::anyhow!(
            "no registry for {name}: pass --registry, set DOCKLESS_REGISTRY, or tag as REGISTRY/REPO:TAG"
        ))),
    }
}

/// Where `push` sends the image: every `-t` in order (the first is
/// pushed, the rest tagged), or the default name.
fn push_targets(args: &PushArgs, default_name: Option<&str>) -> Result<Vec<Reference>, Failure> {
    if args.tags.is_empty() {
        return Ok(vec![push_target(args, None, default_name)?]);
    }
    args.tags
        .iter()
        .map(|t| push_target(args, Some(t), default_name))
        .collect()
}

fn run_push(args: PushArgs) -> Result<(), Failure> {
    check_ca_certs(&args.flags.ca_certs)?;
    let progress = progress_of(&args.flags);
    let (targets, delivered) = match layout_source(&args.flags.context)? {
        Some(layout) => push_layout(&args, layout, &progress)?,
        None => {
            let targets = push_targets(&args, None)?;
            let mut build_opts = build_options(&args.flags)?;
            build_opts.remote = remote_options(&args, &targets[0]);
            build_opts.steps = progress.steps();
            let opts = pipeline_options(&args.flags, build_opts)?;
            let destination = Destination::Registry {
                push: push_options(&args, &targets[0], &progress),
                target: targets[0].clone(),
                extra_tags: targets[1..].to_vec(),
            };
            (targets, run_pipeline(opts, &destination, &progress)?)
        }
    };
    progress.finish();
    let names: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    print_references(&names, &delivered, false);
    args.flags.results.write(&delivered, &names)?;
    Ok(())
}

/// One `NAME@DIGEST` line per name on stdout (or stderr), in order.
fn print_references(names: &[String], delivered: &Delivered, on_stderr: bool) {
    for name in names {
        match on_stderr {
            true => eprintln!("{name}@{}", delivered.digest),
            false => println!("{name}@{}", delivered.digest),
        }
    }
}

/// Pushes an image (or index) from an OCI layout as it is: no build, no prune.
fn push_layout(
    args: &PushArgs,
    layout: LayoutSource,
    progress: &progress::Progress,
) -> Result<(Vec<Reference>, Delivered), Failure> {
    refuse_build_flags(&args.flags)?;
    // `_unpacked` keeps an unpacked oci-archive until the push is done.
    let (image, _unpacked) = read_layout(layout)?;
    let targets = push_targets(args, image.name.as_deref())?;
    let (target, extra) = (&targets[0], &targets[1..]);
    let cache_dir = dockless::cache::default_dir();
    let runtime = tokio::runtime::Runtime::new()?;
    let opts = push_options(args, target, progress);
    let (store, artifact) = (&image.store, &image.artifact);
    runtime
        .block_on(async {
            remote::publish::publish_artifact(store, artifact, target, &opts, &cache_dir).await?;
            remote::publish::publish_tags(store, artifact, target, extra, &opts, &cache_dir).await
        })
        .map_err(|e| Failure {
            code: EXIT_REGISTRY,
            error: e.into(),
        })?;
    Ok((targets, Delivered::of(artifact)))
}

/// How `push` reaches registries: `--insecure-registry` hosts and the
/// target with `--insecure` over plain HTTP, `--ca-cert` trusted.
fn remote_options(args: &PushArgs, target: &Reference) -> remote::Options {
    let opts = remote::Options {
        insecure_registries: args.flags.insecure_registries.clone(),
        ca_certs: args.flags.ca_certs.clone(),
        ..remote::Options::default()
    };
    if args.insecure {
        opts.insecure(target.registry())
    } else {
        opts
    }
}

/// [`remote_options`] for the upload itself: `--concurrency`, and its
/// progress shown as `progress` says.
fn push_options(
    args: &PushArgs,
    target: &Reference,
    progress: &progress::Progress,
) -> remote::Options {
    remote::Options {
        concurrency: args.concurrency.max(1),
        events: progress.sink(),
        ..remote_options(args, target)
    }
}
