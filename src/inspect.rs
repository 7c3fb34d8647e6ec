//! `dockless inspect`: what an image is made of, from a registry, an OCI
//! layout or an archive, as `crane manifest`/`crane config`/`skopeo
//! inspect` show it.

use crate::{usage, Failure, LayoutSource};
use anyhow::Context as _;
use clap::Args;
use dockless::name::Reference;
use dockless::remote::{self, BaseBlob, Puller};
use dockless::store::BlobStore;
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    /// REGISTRY/REPO:TAG (or @sha256:...), oci:DIR[:NAME:TAG],
    /// oci-archive:FILE[:NAME:TAG] or docker-archive:FILE.
    reference: String,
    /// Print the manifest (or index) exactly as stored.
    #[arg(long)]
    raw: bool,
    /// Print the config exactly as stored.
    #[arg(long, conflicts_with = "raw")]
    config: bool,
    /// Reach the reference's registry over plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Extra CA certificate (PEM) to trust; repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_certs: Vec<PathBuf>,
}

/// The stored manifest (or index) and where its blobs are read from.
struct Found {
    raw: Vec<u8>,
    digest: Option<String>,
    blobs: Blobs,
}

// One per run: the size of the registry variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Blobs {
    /// A layout's blob store (kept beside its unpacked archive, if any).
    Layout {
        store: BlobStore,
        _unpacked: Option<tempfile::TempDir>,
    },
    /// docker-archive members by name.
    Archive(std::collections::HashMap<String, Vec<u8>>),
    Registry {
        puller: Puller,
        image: Reference,
        store: BlobStore,
        runtime: tokio::runtime::Runtime,
    },
}

impl Blobs {
    fn read(&self, digest: &str, size: u64) -> Result<Vec<u8>, Failure> {
        let path = match self {
            Blobs::Layout { store, .. } => store.existing(digest).map_err(usage)?,
            Blobs::Archive(members) => {
                let name = format!("{}.json", digest.trim_start_matches("sha256:"));
                return members
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| usage(anyhow::anyhow!("the archive has no {name}")));
            }
            Blobs::Registry {
                puller,
                image,
                store,
                runtime,
            } => {
                let blob = BaseBlob {
                    image: image.clone(),
                    digest: digest.to_string(),
                    size,
                };
                runtime
                    .block_on(puller.fetch_blob(&blob, store))
                    .map_err(registry_failure)?
            }
        };
        Ok(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
    }
}

fn registry_failure(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: crate::EXIT_REGISTRY,
        error: e.into(),
    }
}

pub fn run(args: InspectArgs) -> Result<(), Failure> {
    crate::build_cli::check_ca_certs(&args.ca_certs)?;
    let found = find(&args)?;
    let manifest: Value = serde_json::from_slice(&found.raw)
        .map_err(|e| usage(anyhow::anyhow!("the manifest is not JSON: {e}")))?;
    let out = &mut std::io::stdout().lock();
    if args.raw {
        out.write_all(&found.raw)?;
        return Ok(());
    }
    let config = match config_descriptor(&manifest) {
        Some((digest, size)) => Some(found.blobs.read(&digest, size)?),
        None => None,
    };
    if args.config {
        let config = config.ok_or_else(|| usage(anyhow::anyhow!("an index has no config")))?;
        out.write_all(&config)?;
        return Ok(());
    }
    let config: Option<Value> = config.and_then(|c| serde_json::from_slice(&c).ok());
    let summary = summarise(&args.reference, found.digest, &manifest, config);
    writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}

/// The config's digest and size: an OCI/Docker manifest's `config`, or a
/// docker-archive's `Config` member (its name is the digest).
fn config_descriptor(manifest: &Value) -> Option<(String, u64)> {
    if let Some(c) = manifest.get("config") {
        return Some((c["digest"].as_str()?.to_string(), c["size"].as_u64()?));
    }
    let name = manifest.get(0)?.get("Config")?.as_str()?;
    Some((format!("sha256:{}", name.trim_end_matches(".json")), 0))
}

fn summarise(reference: &str, digest: Option<String>, m: &Value, config: Option<Value>) -> Value {
    let mut out = json!({ "reference": reference, "digest": digest });
    if let Some(entries) = m.get("manifests").and_then(Value::as_array) {
        out["mediaType"] = m["mediaType"].clone();
        let platform = |p: &Value| {
            let mut text = format!("{}/{}", p["os"].as_str()?, p["architecture"].as_str()?);
            if let Some(v) = p["variant"].as_str() {
                text = format!("{text}/{v}");
            }
            Some(text)
        };
        out["manifests"] = entries
            .iter()
            .map(|e| json!({"platform": platform(&e["platform"]), "digest": e["digest"], "size": e["size"]}))
            .collect();
        return out;
    }
    let layers: Vec<Value> = match m.get("layers").and_then(Value::as_array) {
        Some(layers) => layers
            .iter()
            .map(|l| json!({"digest": l["digest"], "size": l["size"], "mediaType": l["mediaType"]}))
            .collect(),
        None => m[0]["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| json!({ "file": l }))
            .collect(),
    };
    out["mediaType"] = m.get("mediaType").cloned().unwrap_or(Value::Null);
    out["size"] = layers
        .iter()
        .filter_map(|l| l["size"].as_u64())
        .sum::<u64>()
        .into();
    out["layers"] = layers.into();
    if let Some(c) = config {
        out["platform"] = json!(format!(
            "{}/{}",
            c["os"].as_str().unwrap_or("?"),
            c["architecture"].as_str().unwrap_or("?")
        ));
        out["created"] = c["created"].clone();
        out["config"] = c["config"].clone();
    }
    out
}

fn find(args: &InspectArgs) -> Result<Found, Failure> {
    let text = args.reference.as_str();
    if let Some(path) = text.strip_prefix("docker-archive:") {
        return read_docker_archive(PathBuf::from(path));
    }
    if let Some(layout) = crate::layout_source(std::path::Path::new(text))? {
        return read_layout(layout);
    }
    let image = Reference::parse(text).map_err(usage)?;
    let opts = remote::Options {
        ca_certs: args.ca_certs.clone(),
        ..remote::Options::default()
    };
    let opts = match args.insecure {
        true => opts.insecure(image.registry()),
        false => opts,
    };
    let cache = dockless::cache::default_dir();
    let store = BlobStore::open(&cache).map_err(anyhow::Error::from)?;
    let puller = Puller::for_images(&opts, [&image]);
    let runtime = tokio::runtime::Runtime::new()?;
    let (raw, digest, _) = runtime
        .block_on(puller.manifest(&image, &store))
        .map_err(registry_failure)?;
    Ok(Found {
        raw,
        digest: Some(digest),
        blobs: Blobs::Registry {
            puller,
            image,
            store,
            runtime,
        },
    })
}

fn read_layout(layout: LayoutSource) -> Result<Found, Failure> {
    let (image, unpacked) = crate::read_layout(layout)?;
    Ok(Found {
        raw: image.artifact.manifest().to_vec(),
        digest: Some(image.artifact.digest().to_string()),
        blobs: Blobs::Layout {
            store: image.store,
            _unpacked: unpacked,
        },
    })
}

/// A docker-archive's `manifest.json` and its JSON members (the configs);
/// layers are listed by file, as the archive names them.
fn read_docker_archive(path: PathBuf) -> Result<Found, Failure> {
    let file = std::fs::File::open(&path)
        .map_err(|e| usage(anyhow::anyhow!("{}: {e}", path.display())))?;
    let mut members = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name.ends_with(".json") && entry.size() <= 4 << 20 {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            members.insert(name, bytes);
        }
    }
    let raw = members.remove("manifest.json").ok_or_else(|| {
        usage(anyhow::anyhow!(
            "{} has no manifest.json: not a docker-archive",
            path.display()
        ))
    })?;
    Ok(Found {
        raw,
        digest: None,
        blobs: Blobs::Archive(members),
    })
}
