//! Base image layers applied to a root filesystem model, as a container
//! runtime would unpack them (whiteouts included), but reading only tar
//! headers: file bodies stay in the layer blobs until something copies them.

use crate::digest::HashingReader;
use crate::layer::{EntryData, FileSource, LayerEntry, LayerInfo, OPAQUE_WHITEOUT as OPAQUE};
use crate::rootfs::{clean, Node, NodeKind, RootFs};
use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// The prefix of a whiteout's name: `.wh.NAME` hides `NAME`.
pub(crate) const WHITEOUT: &str = ".wh.";

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("base layer {blob}: {source}")]
    Io { blob: PathBuf, source: io::Error },
    #[error(
        "base layer {blob}: its content hashes to {actual}, but the image config says {expected}"
    )]
    DiffId {
        blob: PathBuf,
        expected: String,
        actual: String,
    },
}

/// The uncompressed tar stream of a layer blob, whatever its compression.
pub(crate) fn open_layer(blob: &Path) -> Result<Box<dyn Read>, OverlayError> {
    let io_err = |source| OverlayError::Io {
        blob: blob.to_path_buf(),
        source,
    };
    layer_stream(File::open(blob).map_err(io_err)?).map_err(io_err)
}

/// [`open_layer`] of a blob already open.
pub(crate) fn layer_stream(file: File) -> io::Result<Box<dyn Read>> {
    let mut file = BufReader::new(file);
    let head = io::BufRead::fill_buf(&mut file)?;
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Box::new(zstd::Decoder::with_buffer(file)?));
    }
    // Several gzip members (pigz, dockless's own parallel layers) read as one stream.
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// An entry name as an image path, or None for the root or an escaping name.
pub(crate) fn image_path(name: &str) -> Option<String> {
    if name.split('/').any(|p| p == "..") {
        return None;
    }
    let path = clean("", name);
    (!path.is_empty()).then_some(path)
}

/// Format version of a [`LayerIndex`] file; a different one is ignored.
const INDEX_VERSION: u32 = 1;

/// What one tar entry of a base layer means to the filesystem model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexKind {
    Dir,
    File,
    Symlink,
    /// `link` names the earlier entry (None: the target escapes the image).
    HardLink,
    /// Devices and fifos: a rootless build cannot copy them; they stay in the layer.
    Other,
    /// `.wh.<name>`: `path` is the hidden path.
    Whiteout,
    /// `.wh..wh..opq`: `path` is the folder whose lower content is hidden.
    Opaque,
}

/// One tar header of a base layer, as the overlay needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub path: String,
    pub kind: IndexKind,
    #[serde(default)]
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// A base layer's headers, read once from a verified blob, so a later build
/// can apply the layer without the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerIndex {
    pub version: u32,
    pub diff_id: String,
    pub uncompressed_size: u64,
    pub entries: Vec<IndexEntry>,
}

/// `<cache>/layer-index/<hex>.json` for the layer's compressed digest.
pub fn index_path(cache_dir: &Path, digest: &str) -> Option<PathBuf> {
    let hex = crate::digest::hex_part(digest)?;
    Some(cache_dir.join("layer-index").join(format!("{hex}.json")))
}

/// The cached index of a layer, if present, readable and for this diff_id.
pub fn load_index(cache_dir: &Path, digest: &str, diff_id: &str) -> Option<LayerIndex> {
    let path = index_path(cache_dir, digest)?;
    let bytes = std::fs::read(&path).ok()?;
    let index: LayerIndex = serde_json::from_slice(&bytes).ok()?;
    let current = index.version == INDEX_VERSION && index.diff_id == diff_id;
    if current {
        crate::cache::touch(&path);
    }
    current.then_some(index)
}

/// Stores the index atomically; a failure only costs a download next time.
pub fn save_index(cache_dir: &Path, digest: &str, index: &LayerIndex) {
    let Some(path) = index_path(cache_dir, digest) else {
        return;
    };
    let write =
        || -> io::Result<()> { crate::files::write_atomic(&path, &serde_json::to_vec(index)?) };
    if let Err(e) = write() {
        tracing::warn!("cannot write the layer index {}: {e}", path.display());
    }
}

/// The index record of an opaque-directory or whiteout marker at `path`
/// (an image path), or None when `path` is an ordinary entry.
fn whiteout_marker(path: &str) -> Option<IndexEntry> {
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    let (path, kind) = if base == OPAQUE {
        (dir.to_string(), IndexKind::Opaque)
    } else {
        (
            clean(dir, base.strip_prefix(WHITEOUT)?),
            IndexKind::Whiteout,
        )
    };
    Some(IndexEntry {
        path,
        kind,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        link: None,
    })
}

/// The index of a layer just written from `entries`, as [`read_index`]
/// would read it back from the blob, without reading the blob. None when
/// an entry is still in a base layer's blob.
pub fn index_of_written(info: &LayerInfo, entries: &[LayerEntry]) -> Option<LayerIndex> {
    let mut records = Vec::with_capacity(entries.len());
    for e in crate::layer::in_tar_order(entries) {
        let Some(path) = image_path(&e.path) else {
            continue;
        };
        if let Some(marker) = whiteout_marker(&path) {
            records.push(marker);
            continue;
        }
        let (kind, size, link) = match &e.data {
            EntryData::Dir => (IndexKind::Dir, 0, None),
            EntryData::File {
                source: FileSource::Path(_),
                size,
            } => (IndexKind::File, *size, None),
            EntryData::File { .. } => return None,
            EntryData::Symlink(target) => (IndexKind::Symlink, 0, Some(target.clone())),
            EntryData::HardLink(target) => (IndexKind::HardLink, 0, image_path(target)),
            EntryData::Fifo => (IndexKind::Other, 0, None),
        };
        records.push(IndexEntry {
            path,
            kind,
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            size,
            link,
        });
    }
    Some(LayerIndex {
        version: INDEX_VERSION,
        diff_id: info.diff_id.clone(),
        uncompressed_size: info.uncompressed_size,
        entries: records,
    })
}

/// Reads a layer blob's headers, checking its diff_id.
pub fn read_index(blob: &Path, diff_id: &str) -> Result<LayerIndex, OverlayError> {
    read_index_with(blob, diff_id, &mut |_, _| Ok(()))
}

/// A layer entry as it streams past: its index record and its body.
pub type EntryVisitor<'v> = dyn FnMut(&IndexEntry, &mut dyn Read) -> io::Result<()> + 'v;

/// [`read_index`] that also shows `visit` every entry but whiteouts, with
/// its body, in the same pass (the SBOM reads package files this way).
pub fn read_index_with(
    blob: &Path,
    diff_id: &str,
    visit: &mut EntryVisitor<'_>,
) -> Result<LayerIndex, OverlayError> {
    let io_err = |source| OverlayError::Io {
        blob: blob.to_path_buf(),
        source,
    };
    let mut hashed = HashingReader::new(open_layer(blob)?);
    let mut entries = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries().map_err(io_err)? {
            let mut entry = entry.map_err(io_err)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = image_path(&name) else {
                continue;
            };
            if let Some(marker) = whiteout_marker(&path) {
                entries.push(marker);
                continue;
            }
            let record = read_header(&entry, path).map_err(io_err)?;
            visit(&record, &mut entry).map_err(io_err)?;
            entries.push(record);
        }
    }
    let (actual, size) = hashed.finish().map_err(io_err)?;
    if actual != diff_id {
        return Err(OverlayError::DiffId {
            blob: blob.to_path_buf(),
            expected: diff_id.to_string(),
            actual,
        });
    }
    Ok(LayerIndex {
        version: INDEX_VERSION,
        diff_id: actual,
        uncompressed_size: size,
        entries,
    })
}

/// Applies a layer from its index; file bodies stay in `blob`, which need
/// not exist until something reads them (the builder fetches it first).
pub fn apply_index(fs: &mut RootFs, index: &LayerIndex, blob: &Path) {
    // Whiteouts hide what lower layers had; this layer's own entries come after.
    for e in index.entries.iter().filter(|e| e.kind == IndexKind::Opaque) {
        fs.clear_dir(&e.path);
    }
    for e in index
        .entries
        .iter()
        .filter(|e| e.kind == IndexKind::Whiteout)
    {
        fs.remove_tree(&e.path);
    }
    for e in &index.entries {
        let kind = match e.kind {
            IndexKind::Dir => NodeKind::Dir,
            IndexKind::Symlink => NodeKind::Symlink(e.link.clone().unwrap_or_default()),
            IndexKind::File => NodeKind::File {
                source: FileSource::Layer {
                    blob: blob.to_path_buf(),
                    path: e.path.clone(),
                },
                size: e.size,
                link_key: None,
            },
            IndexKind::HardLink => {
                if let Some(node) = e.link.as_deref().and_then(|t| fs.get(t)).cloned() {
                    fs.put_base(&e.path, node);
                }
                continue;
            }
            IndexKind::Other | IndexKind::Whiteout | IndexKind::Opaque => continue,
        };
        let node = Node {
            kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
        };
        fs.put_base(&e.path, node);
    }
    fs.forget_changes();
}

/// Applies one layer and returns its uncompressed size, checking its diff_id.
pub fn apply_layer(fs: &mut RootFs, blob: &Path, diff_id: &str) -> Result<u64, OverlayError> {
    let index = read_index(blob, diff_id)?;
    apply_index(fs, &index, blob);
    Ok(index.uncompressed_size)
}

fn read_header<R: Read>(entry: &tar::Entry<'_, R>, path: String) -> io::Result<IndexEntry> {
    let header = entry.header();
    let mode = header.mode()? & 0o7777;
    let uid = header.uid()? as u32;
    let gid = header.gid()? as u32;
    let link = || {
        entry
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let (kind, size, link) = match header.entry_type() {
        tar::EntryType::Directory => (IndexKind::Dir, 0, None),
        tar::EntryType::Symlink => (IndexKind::Symlink, 0, Some(link())),
        tar::EntryType::Link => (IndexKind::HardLink, 0, image_path(&link())),
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            (IndexKind::File, header.size()?, None)
        }
        _ => (IndexKind::Other, 0, None),
    };
    Ok(IndexEntry {
        path,
        kind,
        mode,
        uid,
        gid,
        size,
        link,
    })
}

/// Extracts the named members of one layer blob to files in `staging`.
fn extract_members(blob: &Path, wanted: &BTreeMap<String, PathBuf>) -> Result<(), OverlayError> {
    let io_err = |source| OverlayError::Io {
        blob: blob.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(open_layer(blob)?);
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(dest) = image_path(&name).and_then(|p| wanted.get(&p)) else {
            continue;
        };
        if entry.header().entry_type().is_file() {
            let mut out = File::create(dest).map_err(io_err)?;
            io::copy(&mut entry, &mut out).map_err(io_err)?;
        }
    }
    Ok(())
}

/// Replaces base-layer file sources with extracted copies, one pass per blob.
pub fn materialize(entries: &mut [LayerEntry], staging: &Path) -> Result<(), OverlayError> {
    let mut by_blob: HashMap<PathBuf, BTreeMap<String, PathBuf>> = HashMap::new();
    for entry in entries.iter() {
        if let EntryData::File {
            source: FileSource::Layer { blob, path },
            ..
        } = &entry.data
        {
            let wanted = by_blob.entry(blob.clone()).or_default();
            let next = wanted.len();
            let name = format!("{}-m{next}", blob_tag(blob));
            wanted
                .entry(path.clone())
                .or_insert_with(|| staging.join(name));
        }
    }
    for (blob, wanted) in &by_blob {
        std::fs::create_dir_all(staging).map_err(|source| OverlayError::Io {
            blob: blob.clone(),
            source,
        })?;
        extract_members(blob, wanted)?;
        for entry in entries.iter_mut() {
            if let EntryData::File { source, .. } = &mut entry.data {
                if let FileSource::Layer { blob: b, path } = source {
                    if b == blob {
                        if let Some(file) = wanted.get(path) {
                            *source = FileSource::Path(file.clone());
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// A short, file-name-safe mark of the blob (its digest's first hex digits).
fn blob_tag(blob: &Path) -> String {
    let name = blob
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect()
}

/// The content of one member of a layer blob, read by streaming the layer.
pub fn read_member(blob: &Path, path: &str, limit: u64) -> Result<Option<Vec<u8>>, OverlayError> {
    let io_err = |source| OverlayError::Io {
        blob: blob.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(open_layer(blob)?);
    for entry in archive.entries().map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if image_path(&name).as_deref() == Some(path) {
            let mut out = Vec::new();
            entry.take(limit).read_to_end(&mut out).map_err(io_err)?;
            return Ok(Some(out));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{write_layer, LayerOptions};
    use crate::store::BlobStore;

    fn entry(path: &str, data: EntryData, dir: &Path) -> LayerEntry {
        let data = match data {
            EntryData::File { size, .. } => {
                let file = dir.join(path.replace('/', "_"));
                std::fs::write(&file, vec![b'x'; size as usize]).unwrap();
                EntryData::File {
                    source: FileSource::Path(file),
                    size,
                }
            }
            other => other,
        };
        LayerEntry {
            path: path.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: None,
            data,
        }
    }

    fn file(size: u64) -> EntryData {
        EntryData::File {
            source: FileSource::Path(PathBuf::new()),
            size,
        }
    }

    #[test]
    fn the_index_of_a_written_layer_is_the_one_its_blob_gives() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path().join("s")).unwrap();
        let src = tmp.path();
        let long = format!("app/{}/deep.py", "n".repeat(120));
        let mut entries = vec![
            entry("app", EntryData::Dir, src),
            entry("app/main.py", file(700), src),
            entry(&long, file(3), src),
            entry("app/link", EntryData::Symlink("../etc/x".into()), src),
            entry("app/hard", EntryData::HardLink("app/main.py".into()), src),
            entry("app/pipe", EntryData::Fifo, src),
            entry("usr/bin/tool", file(5000), src),
        ];
        entries[6].mode = 0o4755;
        entries[6].uid = 7;
        let info = write_layer(&entries, &store, Default::default()).unwrap();
        let blob = store.existing(&info.digest).unwrap();
        let read = read_index(&blob, &info.diff_id).unwrap();
        assert_eq!(index_of_written(&info, &entries), Some(read));
        entries.push(entry("app/.wh.gone", file(0), src));
        entries.push(entry("etc/.wh..wh..opq", file(0), src));
        let info = write_layer(&entries, &store, Default::default()).unwrap();
        let blob = store.existing(&info.digest).unwrap();
        let read = read_index(&blob, &info.diff_id).unwrap();
        assert_eq!(index_of_written(&info, &entries), Some(read));
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path().join("s")).unwrap();
        let src = tmp.path();
        let lower = write_layer(
            &[
                entry("etc", EntryData::Dir, src),
                entry("etc/passwd", file(3), src),
                entry("etc/gone", file(1), src),
                entry("opt", EntryData::Dir, src),
                entry("opt/old", file(1), src),
                entry("bin", EntryData::Symlink("usr/bin".into()), src),
            ],
            &store,
            LayerOptions::default(),
        )
        .unwrap();
        let upper = write_layer(
            &[
                entry("etc/.wh.gone", file(0), src),
                entry("opt/.wh..wh..opq", file(0), src),
                entry("opt/new", file(2), src),
                entry(
                    "etc/passwd-link",
                    EntryData::HardLink("etc/passwd".into()),
                    src,
                ),
            ],
            &store,
            LayerOptions::default(),
        )
        .unwrap();
        let mut fs = RootFs::default();
        for l in [&lower, &upper] {
            let size =
                apply_layer(&mut fs, &store.existing(&l.digest).unwrap(), &l.diff_id).unwrap();
            assert_eq!(size, l.uncompressed_size);
        }
        let paths: Vec<&String> = fs.paths().collect();
        assert_eq!(
            paths,
            [
                "bin",
                "etc",
                "etc/passwd",
                "etc/passwd-link",
                "opt",
                "opt/new"
            ]
        );
        assert!(!fs.has_changes());
        let mut changes = vec![LayerEntry {
            path: "copied".into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: None,
            data: match &fs.get("etc/passwd").unwrap().kind {
                NodeKind::File { source, size, .. } => EntryData::File {
                    source: source.clone(),
                    size: *size,
                },
                _ => unreachable!(),
            },
        }];
        materialize(&mut changes, &tmp.path().join("staging")).unwrap();
        let EntryData::File {
            source: FileSource::Path(p),
            ..
        } = &changes[0].data
        else {
            panic!("not materialized")
        };
        assert_eq!(std::fs::read(p).unwrap(), b"xxx");
        let blob = store.existing(&lower.digest).unwrap();
        assert_eq!(
            read_member(&blob, "etc/passwd", 100).unwrap().unwrap(),
            b"xxx"
        );
    }

    #[test]
    fn an_index_applies_like_its_blob_and_fetches_it_on_demand() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path().join("s")).unwrap();
        let src = tmp.path();
        let l = write_layer(
            &[
                entry("etc", EntryData::Dir, src),
                entry("etc/motd", file(4), src),
                entry("etc/.wh.old", file(0), src),
                entry("lib", EntryData::Symlink("usr/lib".into()), src),
            ],
            &store,
            LayerOptions::default(),
        )
        .unwrap();
        let blob = store.existing(&l.digest).unwrap();
        let mut from_blob = RootFs::default();
        apply_layer(&mut from_blob, &blob, &l.diff_id).unwrap();

        let cache = tmp.path().join("cache");
        let index = read_index(&blob, &l.diff_id).unwrap();
        save_index(&cache, &l.digest, &index);
        assert!(
            load_index(&cache, &l.digest, &l.digest).is_none(),
            "other diff_id"
        );
        let loaded = load_index(&cache, &l.digest, &l.diff_id).unwrap();
        assert_eq!(loaded, index);
        assert_eq!(loaded.uncompressed_size, l.uncompressed_size);

        // The blob leaves the store; the index still builds the same model.
        let kept = tmp.path().join("kept");
        std::fs::rename(&blob, &kept).unwrap();
        let mut from_index = RootFs::default();
        apply_index(&mut from_index, &loaded, &blob);
        let paths = |fs: &RootFs| fs.paths().cloned().collect::<Vec<_>>();
        assert_eq!(paths(&from_index), paths(&from_blob));
        assert!(matches!(
            read_member(&blob, "etc/motd", 10),
            Err(OverlayError::Io { .. })
        ));
        std::fs::rename(&kept, &blob).unwrap();
        assert_eq!(
            read_member(&blob, "etc/motd", 10).unwrap().unwrap(),
            b"xxxx"
        );
    }

    #[test]
    fn a_wrong_diff_id_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path()).unwrap();
        let l = write_layer(
            &[entry("a", file(1), tmp.path())],
            &store,
            LayerOptions::default(),
        )
        .unwrap();
        let mut fs = RootFs::default();
        let err = apply_layer(&mut fs, &store.existing(&l.digest).unwrap(), &l.digest).unwrap_err();
        assert!(matches!(err, OverlayError::DiffId { .. }));
    }
}
