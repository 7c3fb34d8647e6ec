//! The `dockless` command: a thin shell over the library.

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use dockless::build::{self, BuildError, BuildOptions};
use dockless::layout::Output;
use dockless::naming::{self, NameTag};
use dockless::platform::Platform;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes scripts can tell apart (clap exits with 2 on a usage error).
const EXIT_USAGE: u8 = 2;
const EXIT_BUILD: u8 = 3;

#[derive(Parser)]
#[command(
    name = "dockless",
    version,
    about = "Build OCI images from a Dockerfile without a daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Build an image into an OCI layout (./oci-layout by default) or an archive.
    Build(BuildArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// The build context folder.
    context: PathBuf,
    /// Image name and tag (NAME[:TAG]); defaults to the context folder's name.
    #[arg(short = 't', long = "tag")]
    tag: Option<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Add a label to the image (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// oci:DIR, oci-archive:FILE.tar or docker-archive:FILE.tar (default oci:./oci-layout).
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    /// Target platform os/arch[/variant] (default: this machine's).
    #[arg(long)]
    platform: Option<String>,
    /// Build this stage instead of the last one.
    #[arg(long)]
    target: Option<String>,
    /// gzip level for new layers, 0-9 (part of the digest).
    #[arg(long, default_value_t = dockless::layer::DEFAULT_GZIP_LEVEL, value_parser = clap::value_parser!(u32).range(0..=9))]
    gzip_level: u32,
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
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Build(args) => run_build(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCKLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
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

fn build_options(args: &BuildArgs) -> Result<BuildOptions, Failure> {
    let mut opts = BuildOptions::new(&args.context, dockless::cache::default_dir());
    opts.dockerfile = args.file.clone();
    opts.build_args = key_values(&args.build_args, "--build-arg", true)?;
    opts.labels = key_values(&args.labels, "--label", false)?;
    opts.target = args.target.clone();
    opts.platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .map_err(usage)?;
    opts.source_date_epoch = dockless::cache::source_date_epoch().map_err(usage)?;
    opts.gzip_level = args.gzip_level;
    Ok(opts)
}

fn run_build(args: BuildArgs) -> Result<(), Failure> {
    let name = match &args.tag {
        Some(t) => NameTag::parse(t).map_err(usage)?,
        None => NameTag::parse(&naming::default_name(&args.context)).map_err(usage)?,
    };
    let output = match &args.output {
        Some(o) => Output::parse(o).map_err(usage)?,
        None => Output::default_layout(),
    };
    let opts = build_options(&args)?;
    let built = build::build(&opts).map_err(|e: BuildError| Failure {
        code: EXIT_BUILD,
        error: e.into(),
    })?;
    for arg in &built.unused_build_args {
        tracing::warn!("build arg {arg} was given but no ARG declares it");
    }
    output
        .write(&built.store, &built.image, &name.to_string())
        .with_context(|| {
            format!(
                "writing the image to {}",
                args.output.as_deref().unwrap_or("oci:oci-layout")
            )
        })?;
    println!("{name}@{}", built.image.manifest_digest);
    Ok(())
}
