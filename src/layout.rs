//! Sinks that write a built image to disk: an OCI image layout folder, the
//! same layout as a tar (oci-archive), or a `docker load` tarball.

use crate::image::{canonical_json, descriptor, Artifact, BuiltImage, ImageError};
use crate::store::{BlobStore, StoreError};
use flate2::read::MultiGzDecoder;
use oci_spec::image::{ImageIndex, ImageIndexBuilder, MediaType};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The annotation skopeo and umoci use to find an image in a layout by name.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid OCI image index: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("invalid --output {0:?}: expected oci:DIR, oci-archive:FILE or docker-archive:FILE")]
    BadOutput(String),
    #[error("docker-archive holds one image; build a single --platform for it, or use oci:DIR")]
    IndexInDockerArchive,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where `build` writes its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Oci(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
}

impl Output {
    /// The embedded default store: `./oci-layout`.
    pub fn default_layout() -> Output {
        Output::Oci(PathBuf::from("oci-layout"))
    }

    pub fn parse(text: &str) -> Result<Output, LayoutError> {
        let bad = || LayoutError::BadOutput(text.into());
        let (kind, path) = text.split_once(':').ok_or_else(bad)?;
        if path.is_empty() {
            return Err(bad());
        }
        let path = PathBuf::from(path);
        match kind {
            "oci" => Ok(Output::Oci(path)),
            "oci-archive" => Ok(Output::OciArchive(path)),
            "docker-archive" => Ok(Output::DockerArchive(path)),
            _ => Err(bad()),
        }
    }

    /// Writes the image (or index), named `name` (e.g. `hello:v1`), from the blob store.
    pub fn write(
        &self,
        store: &BlobStore,
        artifact: &Artifact,
        name: &str,
    ) -> Result<(), LayoutError> {
        match (self, artifact) {
            (Output::Oci(dir), _) => write_oci_layout(dir, store, artifact, name),
            (Output::OciArchive(file), _) => write_oci_archive(file, store, artifact, name),
            (Output::DockerArchive(file), Artifact::Image(image)) => {
                write_docker_archive(file, store, image, name)
            }
            (Output::DockerArchive(_), Artifact::Index(_)) => {
                Err(LayoutError::IndexInDockerArchive)
            }
        }
    }
}

/// Adds the image to an OCI layout folder (created if missing), replacing any
/// earlier image of the same name in index.json.
pub fn write_oci_layout(
    dir: &Path,
    store: &BlobStore,
    image: &Artifact,
    name: &str,
) -> Result<(), LayoutError> {
    let layout = BlobStore::open(dir)?;
    for digest in image.blob_digests() {
        layout.import(&digest, &store.existing(&digest)?)?;
    }
    layout.remove_empty_tmp();
    write_file_atomic(&dir.join("oci-layout"), OCI_LAYOUT_FILE)?;
    let index_path = dir.join("index.json");
    let mut index = read_index(&index_path)?;
    let mut manifests: Vec<_> = index
        .manifests()
        .iter()
        .filter(|d| ref_name(d).as_deref() != Some(name))
        .cloned()
        .collect();
    manifests.push(manifest_descriptor(image, name)?);
    index.set_manifests(manifests);
    write_file_atomic(
        &index_path,
        &canonical_json(&index).map_err(ImageError::from)?,
    )
}

const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn ref_name(d: &oci_spec::image::Descriptor) -> Option<String> {
    d.annotations().as_ref()?.get(REF_NAME).cloned()
}

fn manifest_descriptor(
    image: &Artifact,
    name: &str,
) -> Result<oci_spec::image::Descriptor, LayoutError> {
    let mut d = descriptor(
        image.media_type(),
        image.manifest().len() as u64,
        image.digest(),
    )?;
    d.set_annotations(Some(HashMap::from([(
        REF_NAME.to_string(),
        name.to_string(),
    )])));
    Ok(d)
}

fn empty_index() -> Result<ImageIndex, LayoutError> {
    Ok(ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .map_err(ImageError::from)?)
}

fn read_index(path: &Path) -> Result<ImageIndex, LayoutError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LayoutError::BadIndex {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => empty_index(),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes beside the target and renames, so readers never see half a file.
fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    temp.write_all(bytes).map_err(io_err(path))?;
    temp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

/// A deterministic tar writer: fixed mtime, root owner, sorted by the caller.
struct ArchiveWriter {
    tar: tar::Builder<io::BufWriter<File>>,
    path: PathBuf,
}

impl ArchiveWriter {
    fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(kind);
        h
    }

    fn dir(&mut self, name: &str) -> Result<(), LayoutError> {
        let mut h = Self::header(0, 0o755, tar::EntryType::Directory);
        self.tar
            .append_data(&mut h, name, io::empty())
            .map_err(io_err(&self.path))
    }

    fn bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), LayoutError> {
        self.reader(name, bytes.len() as u64, bytes)
    }

    fn reader(&mut self, name: &str, size: u64, reader: impl Read) -> Result<(), LayoutError> {
        let mut h = Self::header(size, 0o644, tar::EntryType::Regular);
        self.tar
            .append_data(&mut h, name, reader.take(size))
            .map_err(io_err(&self.path))
    }

    fn file(&mut self, name: &str, source: &Path) -> Result<(), LayoutError> {
        let file = File::open(source).map_err(io_err(source))?;
        let size = file.metadata().map_err(io_err(source))?.len();
        self.reader(name, size, file)
    }
}

/// Builds an archive in a temporary file beside `dest` and renames it into place.
fn write_archive(
    dest: &Path,
    fill: impl FnOnce(&mut ArchiveWriter) -> Result<(), LayoutError>,
) -> Result<(), LayoutError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let temp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    let file = temp.as_file().try_clone().map_err(io_err(dest))?;
    let mut writer = ArchiveWriter {
        tar: tar::Builder::new(io::BufWriter::new(file)),
        path: dest.to_path_buf(),
    };
    fill(&mut writer)?;
    let mut buffered = writer.tar.into_inner().map_err(io_err(dest))?;
    buffered.flush().map_err(io_err(dest))?;
    drop(buffered);
    temp.persist(dest).map_err(|e| io_err(dest)(e.error))?;
    Ok(())
}

/// An OCI layout holding just this image, as one tar file.
pub fn write_oci_archive(
    dest: &Path,
    store: &BlobStore,
    image: &Artifact,
    name: &str,
) -> Result<(), LayoutError> {
    let mut index = empty_index()?;
    index.set_manifests(vec![manifest_descriptor(image, name)?]);
    let index = canonical_json(&index).map_err(ImageError::from)?;
    let mut digests = image.blob_digests();
    digests.sort();
    digests.dedup();
    write_archive(dest, |w| {
        w.dir("blobs/")?;
        w.dir("blobs/sha256/")?;
        for digest in &digests {
            let path = store.existing(digest)?;
            let hex = digest.trim_start_matches("sha256:");
            w.file(&format!("blobs/sha256/{hex}"), &path)?;
        }
        w.bytes("index.json", &index)?;
        w.bytes("oci-layout", OCI_LAYOUT_FILE)
    })
}

/// The tarball `docker load` and `podman load` read: manifest.json, the config,
/// and each layer uncompressed as `<diff_id>/layer.tar`.
pub fn write_docker_archive(
    dest: &Path,
    store: &BlobStore,
    image: &BuiltImage,
    name: &str,
) -> Result<(), LayoutError> {
    let config_hex = image.config_digest.trim_start_matches("sha256:");
    let config_name = format!("{config_hex}.json");
    let layer_names: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("{}/layer.tar", l.diff_id.trim_start_matches("sha256:")))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [name],
        "Layers": layer_names,
    }]);
    let manifest = canonical_json(&manifest).map_err(ImageError::from)?;
    write_archive(dest, |w| {
        w.file(&config_name, &store.existing(&image.config_digest)?)?;
        let mut written = std::collections::HashSet::new();
        for (layer, name) in image.layers.iter().zip(&layer_names) {
            if !written.insert(name) {
                continue;
            }
            let dir = name.trim_end_matches("layer.tar");
            w.dir(dir)?;
            let blob = store.existing(&layer.digest)?;
            let file = io::BufReader::new(File::open(&blob).map_err(io_err(&blob))?);
            // docker-archive holds plain tars; dockless's gzip layers have several members.
            let tar: Box<dyn io::Read> = if layer.media_type.ends_with("+zstd") {
                Box::new(zstd::Decoder::with_buffer(file).map_err(io_err(&blob))?)
            } else {
                Box::new(MultiGzDecoder::new(file))
            };
            w.reader(name, layer.uncompressed_size, tar)?;
        }
        w.bytes("manifest.json", &manifest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_parsing() {
        assert_eq!(Output::parse("oci:dir").unwrap(), Output::Oci("dir".into()));
        assert_eq!(
            Output::parse("docker-archive:/tmp/x.tar").unwrap(),
            Output::DockerArchive("/tmp/x.tar".into())
        );
        assert!(Output::parse("tarball:x").is_err());
        assert!(Output::parse("oci:").is_err());
        assert!(Output::parse("nocolon").is_err());
    }
}
