//! Base image layers applied to a root filesystem model, as a container
//! runtime would unpack them (whiteouts included), but reading only tar
//! headers: file bodies stay in the layer blobs until something copies them.

use crate::digest::HashingReader;
use crate::layer::{EntryData, FileSource, LayerEntry};
use crate::rootfs::{clean, Node, NodeKind, RootFs};
use flate2::read::MultiGzDecoder;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

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
fn open_layer(blob: &Path) -> Result<Box<dyn Read>, OverlayError> {
    let io_err = |source| OverlayError::Io {
        blob: blob.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(File::open(blob).map_err(io_err)?);
    let head = io::BufRead::fill_buf(&mut file).map_err(io_err)?;
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Box::new(zstd::Decoder::with_buffer(file).map_err(io_err)?));
    }
    // Several gzip members (pigz, dockless's own parallel layers) read as one stream.
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// An entry name as an image path, or None for the root or an escaping name.
fn image_path(name: &str) -> Option<String> {
    if name.split('/').any(|p| p == "..") {
        return None;
    }
    let path = clean("", name);
    (!path.is_empty()).then_some(path)
}

struct Header {
    path: String,
    node: Option<Node>,
    hard_link: Option<String>,
}

/// Applies one layer and returns its uncompressed size, checking its diff_id.
pub fn apply_layer(fs: &mut RootFs, blob: &Path, diff_id: &str) -> Result<u64, OverlayError> {
    let io_err = |source| OverlayError::Io {
        blob: blob.to_path_buf(),
        source,
    };
    let mut hashed = HashingReader::new(open_layer(blob)?);
    let mut headers = Vec::new();
    let mut opaque = Vec::new();
    let mut whiteouts = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries().map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = image_path(&name) else {
                continue;
            };
            let (dir, base) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if base == OPAQUE {
                opaque.push(dir.to_string());
                continue;
            }
            if let Some(hidden) = base.strip_prefix(WHITEOUT) {
                whiteouts.push(clean(dir, hidden));
                continue;
            }
            headers.push(read_header(&entry, path, blob).map_err(io_err)?);
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
    // Whiteouts hide what lower layers had; this layer's own entries come after.
    for dir in opaque {
        fs.clear_dir(&dir);
    }
    for path in whiteouts {
        fs.remove_tree(&path);
    }
    for h in headers {
        match (h.node, h.hard_link) {
            (Some(node), _) => fs.put_base(&h.path, node),
            (None, Some(target)) => {
                if let Some(node) = fs.get(&target).cloned() {
                    fs.put_base(&h.path, node);
                }
            }
            (None, None) => {}
        }
    }
    fs.forget_changes();
    Ok(size)
}

fn read_header<R: Read>(
    entry: &tar::Entry<'_, R>,
    path: String,
    blob: &Path,
) -> io::Result<Header> {
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
    let kind = match header.entry_type() {
        tar::EntryType::Directory => NodeKind::Dir,
        tar::EntryType::Symlink => NodeKind::Symlink(link()),
        tar::EntryType::Link => {
            return Ok(Header {
                path,
                node: None,
                hard_link: image_path(&link()),
            });
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => NodeKind::File {
            source: FileSource::Layer {
                blob: blob.to_path_buf(),
                path: path.clone(),
            },
            size: header.size()?,
            link_key: None,
        },
        // Devices and fifos cannot be copied by a rootless build; they stay in the base layer.
        _ => {
            return Ok(Header {
                path,
                node: None,
                hard_link: None,
            })
        }
    };
    Ok(Header {
        path,
        node: Some(Node {
            kind,
            mode,
            uid,
            gid,
        }),
        hard_link: None,
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
