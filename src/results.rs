//! Files `build` and `push` write for scripts, as the tools they know
//! write them: docker's `--iidfile`, buildx's `--metadata-file`,
//! `--digest-file` (kaniko, crane) and ko's `--image-refs`.

use anyhow::{Context as _, Result};
use clap::Args;
use dockless::image::Artifact;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone, Default)]
pub struct ResultFiles {
    /// Write the image ID (the config's digest, as `docker build --iidfile`;
    /// the index's digest for several platforms) to FILE.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the manifest's (or index's) digest to FILE.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Write buildx's result keys as JSON to FILE (containerimage.digest,
    /// containerimage.config.digest, containerimage.descriptor, image.name).
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Write each REF@DIGEST line printed on stdout to FILE, as `ko --image-refs`.
    #[arg(long, value_name = "FILE")]
    pub image_refs: Option<PathBuf>,
}

/// What was delivered, as the result files describe it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The manifest's (or index's) digest, media type and size.
    pub digest: String,
    pub media_type: String,
    pub size: usize,
    /// docker's image ID.
    pub image_id: String,
}

impl Delivered {
    pub fn of(artifact: &Artifact) -> Delivered {
        Delivered {
            digest: artifact.digest().to_string(),
            media_type: artifact.media_type().to_string(),
            size: artifact.manifest().len(),
            image_id: match artifact {
                Artifact::Image(i) => i.config_digest.clone(),
                Artifact::Index(i) => i.digest.clone(),
            },
        }
    }
}

impl ResultFiles {
    /// Writes the files asked for; `names` are the references as printed.
    pub fn write(&self, delivered: &Delivered, names: &[String]) -> Result<()> {
        let d = delivered;
        if let Some(path) = &self.iidfile {
            write(path, &d.image_id)?;
        }
        if let Some(path) = &self.digest_file {
            write(path, &d.digest)?;
        }
        if let Some(path) = &self.metadata_file {
            let metadata = serde_json::json!({
                "containerimage.digest": d.digest,
                "containerimage.config.digest": d.image_id,
                "containerimage.descriptor": {
                    "mediaType": d.media_type,
                    "digest": d.digest,
                    "size": d.size,
                },
                "image.name": names.join(","),
            });
            write(path, &serde_json::to_string_pretty(&metadata)?)?;
        }
        if let Some(path) = &self.image_refs {
            let lines: String = names
                .iter()
                .map(|n| format!("{n}@{}\n", d.digest))
                .collect();
            write(path, &lines)?;
        }
        Ok(())
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
