//! Sinks that write a built image to disk: an OCI image layout folder, the
//! same layout as a tar (oci-archive), or a `docker load` tarball; and the
//! layout folder as a source, read back to be pushed as it is.

use crate::image::{
    canonical_json, descriptor, Artifact, BuiltImage, BuiltIndex, DocDescriptor as Desc,
    Document as Doc, ImageConfig, ImageError, MAX_DOCUMENT, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use crate::layer::LayerInfo;
use crate::platform::Platform;
use crate::store::{BlobStore, StoreError};
use flate2::read::MultiGzDecoder;
use oci_spec::image::{ImageIndex, ImageIndexBuilder, MediaType};
use std::collections::{BTreeMap, HashMap};
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
    #[error("{0} is not an OCI image layout (it has no oci-layout file)")]
    NotALayout(PathBuf),
    #[error("{archive}: entry {entry:?} has no place in an OCI layout; refusing the archive")]
    StrayEntry { archive: PathBuf, entry: String },
    #[error("{dir} holds no image named {name:?} (it has: {offered})")]
    NoSuchImage {
        dir: PathBuf,
        name: String,
        offered: String,
    },
    #[error("{dir}: {what} {digest}: {reason}")]
    BadBlob {
        dir: PathBuf,
        what: &'static str,
        digest: String,
        reason: String,
    },
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

/// The archive path that means standard output (`docker-archive:-`).
pub const STDOUT: &str = "-";

/// Where `build` writes its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Oci(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
}

/// As `--output` takes it: `Output::parse` of the text gives the same output.
impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, path) = match self {
            Output::Oci(path) => ("oci", path),
            Output::OciArchive(path) => ("oci-archive", path),
            Output::DockerArchive(path) => ("docker-archive", path),
        };
        write!(f, "{kind}:{}", path.display())
    }
}

impl Output {
    /// An archive written to standard output (`oci-archive:-`, `docker-archive:-`).
    pub fn is_stdout(&self) -> bool {
        match self {
            Output::Oci(_) => false,
            Output::OciArchive(p) | Output::DockerArchive(p) => p == Path::new(STDOUT),
        }
    }

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

    /// Writes the image (or index), named `names` (e.g. `hello:v1`), from the blob store.
    pub fn write(
        &self,
        store: &BlobStore,
        artifact: &Artifact,
        names: &[String],
    ) -> Result<(), LayoutError> {
        match (self, artifact) {
            (Output::Oci(dir), _) => write_oci_layout(dir, store, artifact, names),
            (Output::OciArchive(file), _) => write_oci_archive(file, store, artifact, names),
            (Output::DockerArchive(file), Artifact::Image(image)) => {
                write_docker_archive(file, store, image, names)
            }
            (Output::DockerArchive(_), Artifact::Index(_)) => {
                Err(LayoutError::IndexInDockerArchive)
            }
        }
    }
}

/// Adds the image to an OCI layout folder (created if missing) under each
/// of `names`, replacing any earlier image of those names in index.json.
pub fn write_oci_layout(
    dir: &Path,
    store: &BlobStore,
    image: &Artifact,
    names: &[String],
) -> Result<(), LayoutError> {
    let layout = BlobStore::open(dir)?;
    for digest in image.blob_digests() {
        layout.import(&digest, &store.existing(&digest)?)?;
    }
    layout.remove_empty_tmp();
    mark_layout(dir)?;
    let index_path = dir.join("index.json");
    let mut index = read_index(&index_path)?;
    let mut manifests: Vec<_> = index
        .manifests()
        .iter()
        .filter(|d| ref_name(d).is_none_or(|n| !names.contains(&n)))
        .cloned()
        .collect();
    for name in names {
        manifests.push(manifest_descriptor(image, name)?);
    }
    index.set_manifests(manifests);
    write_file_atomic(
        &index_path,
        &canonical_json(&index).map_err(ImageError::from)?,
    )
}

const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes the `oci-layout` file unless it is there already: it never
/// changes, and replacing it costs a rename (on ext4, a flush as well).
fn mark_layout(dir: &Path) -> Result<(), LayoutError> {
    let path = dir.join("oci-layout");
    if fs::read(&path).is_ok_and(|bytes| bytes == OCI_LAYOUT_FILE) {
        return Ok(());
    }
    write_file_atomic(&path, OCI_LAYOUT_FILE)
}

/// Marks an index.json entry as an attachment (a signature, an SBOM, ...)
/// of the image whose digest it holds, not an image of its own.
pub const ANNOTATION_ATTACHMENT: &str = "dev.dockless.attachment-of";

fn is_attachment(d: &oci_spec::image::Descriptor) -> bool {
    d.annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_ATTACHMENT))
}

/// A layout's index.json read once, edited, and written once with the
/// blobs it gained: attaching an SBOM, a provenance and their tags
/// rewrites it one time, not once per manifest, and commits their blobs
/// together (see [`BlobStore::put_many`]).
pub struct LayoutIndex {
    dir: PathBuf,
    index: ImageIndex,
    /// Blobs to commit before index.json is written, by digest.
    pending: BTreeMap<String, Vec<u8>>,
}

impl LayoutIndex {
    pub fn open(dir: &Path) -> Result<LayoutIndex, LayoutError> {
        Ok(LayoutIndex {
            dir: dir.to_path_buf(),
            index: read_index(&dir.join("index.json"))?,
            pending: BTreeMap::new(),
        })
    }

    /// Adds a blob, committed by [`LayoutIndex::write`]; returns its digest.
    pub fn put_blob(&mut self, bytes: &[u8]) -> String {
        let digest = crate::digest::sha256(bytes);
        self.pending
            .entry(digest.clone())
            .or_insert_with(|| bytes.to_vec());
        digest
    }

    /// The manifest listed as `name`, if there is one.
    pub fn manifest_named(&self, name: &str) -> Result<Option<Vec<u8>>, LayoutError> {
        let Some(d) = self
            .index
            .manifests()
            .iter()
            .find(|d| ref_name(d).as_deref() == Some(name))
        else {
            return Ok(None);
        };
        if let Some(bytes) = self.pending.get(d.digest().as_ref()) {
            return Ok(Some(bytes.clone()));
        }
        let store = BlobStore::open(&self.dir)?;
        let path = store.existing(d.digest().as_ref())?;
        fs::read(&path).map(Some).map_err(io_err(&path))
    }

    /// Puts an attachment manifest of `subject` in the layout's blobs and
    /// lists it: under `name` (replacing what had that name), or unnamed,
    /// once, when `name` is None (a referrer).
    pub fn add_attachment(
        &mut self,
        subject: &str,
        media_type: &str,
        bytes: &[u8],
        name: Option<&str>,
    ) -> Result<(), LayoutError> {
        let digest = self.put_blob(bytes);
        let listed = |d: &&oci_spec::image::Descriptor| match name {
            Some(n) => ref_name(d).as_deref() == Some(n),
            None => d.digest().to_string() == digest,
        };
        let mut manifests: Vec<_> = self
            .index
            .manifests()
            .iter()
            .filter(|d| !listed(d))
            .cloned()
            .collect();
        let mut d = descriptor(media_type, bytes.len() as u64, &digest)?;
        let mut annotations =
            HashMap::from([(ANNOTATION_ATTACHMENT.to_string(), subject.to_string())]);
        if let Some(n) = name {
            annotations.insert(REF_NAME.to_string(), n.to_string());
        }
        d.set_annotations(Some(annotations));
        manifests.push(d);
        self.index.set_manifests(manifests);
        Ok(())
    }

    /// Commits the blobs added, then writes index.json, which names them.
    pub fn write(&mut self) -> Result<(), LayoutError> {
        let blobs: Vec<&[u8]> = self.pending.values().map(Vec::as_slice).collect();
        let store = BlobStore::open(&self.dir)?;
        store.put_many(&blobs)?;
        // The blobs went through the store's tmp/, which the spec does not name.
        store.remove_empty_tmp();
        self.pending.clear();
        write_file_atomic(
            &self.dir.join("index.json"),
            &canonical_json(&self.index).map_err(ImageError::from)?,
        )
    }
}

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
    crate::files::write_atomic(path, bytes).map_err(io_err(path))
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

/// Builds an archive in a temporary file beside `dest` and renames it into
/// place; `-` is standard output, written only once the archive is whole.
fn write_archive(
    dest: &Path,
    fill: impl FnOnce(&mut ArchiveWriter) -> Result<(), LayoutError>,
) -> Result<(), LayoutError> {
    let to_stdout = dest == Path::new(STDOUT);
    let temp_dir = std::env::temp_dir();
    let dir = match to_stdout {
        true => temp_dir.as_path(),
        false => dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    };
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
    if to_stdout {
        let mut stdout = io::stdout().lock();
        let mut file = temp.reopen().map_err(io_err(temp.path()))?;
        io::copy(&mut file, &mut stdout).map_err(io_err(dest))?;
        return stdout.flush().map_err(io_err(dest));
    }
    temp.persist(dest).map_err(|e| io_err(dest)(e.error))?;
    Ok(())
}

/// An OCI layout holding just this image, as one tar file.
pub fn write_oci_archive(
    dest: &Path,
    store: &BlobStore,
    image: &Artifact,
    names: &[String],
) -> Result<(), LayoutError> {
    let mut index = empty_index()?;
    let descriptors = names.iter().map(|n| manifest_descriptor(image, n));
    index.set_manifests(descriptors.collect::<Result<_, _>>()?);
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
    names: &[String],
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
        "RepoTags": names,
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

/// An image (or index) found in an OCI layout.
pub struct LayoutImage {
    /// The layout folder as a blob store.
    pub store: BlobStore,
    pub artifact: Artifact,
    /// Its `org.opencontainers.image.ref.name`, if it has one.
    pub name: Option<String>,
}

/// The image (or index) named `name` in the layout at `dir` (the only one
/// when `name` is None), with the layout as its blob store, so it can be
/// pushed byte for byte as it was written. Manifests and configs are checked
/// against their digests here; layers when they are sent.
pub fn read_artifact(dir: &Path, name: Option<&str>) -> Result<LayoutImage, LayoutError> {
    if !dir.join("oci-layout").is_file() {
        return Err(LayoutError::NotALayout(dir.to_path_buf()));
    }
    let index = read_index(&dir.join("index.json"))?;
    let entries = index.manifests();
    // Signatures and attestations written beside an image are not images.
    let images: Vec<_> = entries.iter().filter(|d| !is_attachment(d)).collect();
    let chosen = match name {
        Some(n) => entries.iter().find(|d| ref_name(d).as_deref() == Some(n)),
        None if images.len() == 1 => images.first().copied(),
        None => None,
    };
    let Some(chosen) = chosen else {
        let offered: Vec<String> = entries.iter().filter_map(ref_name).collect();
        return Err(LayoutError::NoSuchImage {
            dir: dir.to_path_buf(),
            name: name.unwrap_or_default().to_string(),
            offered: if offered.is_empty() {
                "no named images".into()
            } else {
                offered.join(", ")
            },
        });
    };
    let store = BlobStore::open(dir)?;
    let top = Desc {
        media_type: chosen.media_type().to_string(),
        digest: chosen.digest().to_string(),
        size: chosen.size(),
        platform: None,
    };
    let artifact = match top.media_type.as_str() {
        MEDIA_TYPE_INDEX => Artifact::Index(read_index_artifact(dir, &store, &top)?),
        _ => Artifact::Image(Box::new(read_image(dir, &store, &top)?)),
    };
    Ok(LayoutImage {
        store,
        artifact,
        name: ref_name(chosen),
    })
}

fn read_index_artifact(
    dir: &Path,
    store: &BlobStore,
    top: &Desc,
) -> Result<BuiltIndex, LayoutError> {
    let bytes = read_document(dir, store, "index", top)?;
    let doc = parse_doc(dir, "index", top, &bytes)?;
    let images = doc
        .manifests
        .unwrap_or_default()
        .iter()
        .map(|d| read_image(dir, store, d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BuiltIndex {
        manifest: bytes,
        digest: top.digest.clone(),
        images,
    })
}

fn read_image(dir: &Path, store: &BlobStore, desc: &Desc) -> Result<BuiltImage, LayoutError> {
    let bad = |reason: String| LayoutError::BadBlob {
        dir: dir.to_path_buf(),
        what: "manifest",
        digest: desc.digest.clone(),
        reason,
    };
    if desc.media_type != MEDIA_TYPE_MANIFEST {
        return Err(bad(format!(
            "media type {} is not an OCI image manifest or index",
            desc.media_type
        )));
    }
    let bytes = read_document(dir, store, "manifest", desc)?;
    let doc = parse_doc(dir, "manifest", desc, &bytes)?;
    if doc
        .media_type
        .as_deref()
        .is_some_and(|m| m != MEDIA_TYPE_MANIFEST)
    {
        return Err(bad("its mediaType is not an OCI image manifest".into()));
    }
    let config_desc = doc.config.ok_or_else(|| bad("it has no config".into()))?;
    let config_bytes = read_document(dir, store, "config", &config_desc)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| LayoutError::BadBlob {
            dir: dir.to_path_buf(),
            what: "config",
            digest: config_desc.digest.clone(),
            reason: e.to_string(),
        })?;
    let diff_ids = &config.rootfs.diff_ids;
    let layer_descs = doc.layers.unwrap_or_default();
    if diff_ids.len() != layer_descs.len() {
        return Err(bad(format!(
            "{} layers, but its config lists {} diff_ids",
            layer_descs.len(),
            diff_ids.len()
        )));
    }
    let layers = layer_descs
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| LayerInfo {
            digest: l.digest.clone(),
            diff_id: diff_id.clone(),
            size: l.size,
            uncompressed_size: 0,
            media_type: l.media_type.clone(),
        })
        .collect();
    Ok(BuiltImage {
        manifest: bytes,
        manifest_digest: desc.digest.clone(),
        config_digest: config_desc.digest,
        config_size: config_desc.size,
        layers,
        platform: Platform {
            os: config.os,
            architecture: config.architecture,
            variant: config.variant,
        },
        base: None,
        cache_source: None,
    })
}

fn parse_doc(
    dir: &Path,
    what: &'static str,
    desc: &Desc,
    bytes: &[u8],
) -> Result<Doc, LayoutError> {
    serde_json::from_slice(bytes).map_err(|e| LayoutError::BadBlob {
        dir: dir.to_path_buf(),
        what,
        digest: desc.digest.clone(),
        reason: e.to_string(),
    })
}

/// A small blob of the layout, checked against its descriptor.
fn read_document(
    dir: &Path,
    store: &BlobStore,
    what: &'static str,
    desc: &Desc,
) -> Result<Vec<u8>, LayoutError> {
    let bad = |reason: String| LayoutError::BadBlob {
        dir: dir.to_path_buf(),
        what,
        digest: desc.digest.clone(),
        reason,
    };
    if desc.size > MAX_DOCUMENT as u64 {
        return Err(bad(format!("{} bytes is too big for a {what}", desc.size)));
    }
    let path = store.existing(&desc.digest)?;
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(MAX_DOCUMENT as u64 + 1).read_to_end(&mut bytes))
        .map_err(io_err(&path))?;
    let actual = crate::digest::sha256(&bytes);
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        return Err(bad(format!(
            "the file holds {actual} ({} bytes), not the {} bytes named",
            bytes.len(),
            desc.size
        )));
    }
    Ok(bytes)
}

/// Unpacks an oci-archive (an OCI layout as one tar) into `dest`, for
/// [`read_artifact`]. Only the layout's own files are taken: `oci-layout`,
/// `index.json` and `blobs/sha256/<hex>`; any other entry (a `..`, a link,
/// a stray file) refuses the whole archive, so nothing lands elsewhere.
pub fn unpack_oci_archive(archive: &Path, dest: &Path) -> Result<(), LayoutError> {
    let file = File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(io::BufReader::new(file));
    let blobs = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    for entry in tar.entries().map_err(io_err(archive))? {
        let mut entry = entry.map_err(io_err(archive))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let stray = || LayoutError::StrayEntry {
            archive: archive.to_path_buf(),
            entry: name.clone(),
        };
        let clean = name.trim_start_matches("./");
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            match clean.trim_end_matches('/') {
                "" | "blobs" | "blobs/sha256" => continue,
                _ => return Err(stray()),
            }
        }
        if !kind.is_file() {
            return Err(stray());
        }
        let target = match clean {
            "oci-layout" | "index.json" => dest.join(clean),
            _ => {
                let hex = clean.strip_prefix("blobs/sha256/").ok_or_else(stray)?;
                if crate::digest::hex_part(&format!("sha256:{hex}")).is_none() {
                    return Err(stray());
                }
                blobs.join(hex)
            }
        };
        let mut out = File::create(&target).map_err(io_err(&target))?;
        io::copy(&mut entry, &mut out).map_err(io_err(&target))?;
    }
    Ok(())
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
