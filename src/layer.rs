//! Layers: a sorted list of filesystem entries streamed once through tar,
//! gzip and two hashers into the blob store.

use crate::digest::HashingWriter;
use crate::store::{BlobStore, StoreError};
use flate2::{Compression, GzBuilder};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use tar::{EntryType, Header};

pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// gzip level used unless the caller asks otherwise; part of the digest.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading {path} for the layer: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} changed size while it was being added to the layer ({expected} bytes expected)"
    )]
    Changed { path: PathBuf, expected: u64 },
    #[error("writing layer entry {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("{path} from base layer {blob} was not extracted before writing the layer")]
    NotMaterialized { path: String, blob: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A file on the local disk (build context, extracted archive, heredoc).
    Path(PathBuf),
    /// A member of a base image's layer blob, extracted on demand (see `overlay::materialize`).
    Layer { blob: PathBuf, path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryData {
    Dir,
    File {
        source: FileSource,
        size: u64,
    },
    Symlink(String),
    /// A hard link to another path of the same layer.
    HardLink(String),
}

/// One entry of a layer; `path` is relative to the image root with no leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub data: EntryData,
}

#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    /// mtime of every entry, seconds since the epoch.
    pub mtime: u64,
    pub gzip_level: u32,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            mtime: 0,
            gzip_level: DEFAULT_GZIP_LEVEL,
        }
    }
}

/// What a written layer is known by.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerInfo {
    /// sha256 of the compressed blob.
    pub digest: String,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    pub size: u64,
    pub uncompressed_size: u64,
    pub media_type: String,
}

/// Writes the entries (sorted here, by path) as one tar+gzip blob in a single pass.
pub fn write_layer(
    entries: &[LayerEntry],
    store: &BlobStore,
    opts: LayerOptions,
) -> Result<LayerInfo, LayerError> {
    let mut sorted: Vec<&LayerEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));

    let temp = store.temp_file()?;
    let file = temp
        .as_file()
        .try_clone()
        .map_err(|source| LayerError::Write {
            path: temp.path().display().to_string(),
            source,
        })?;
    let compressed = HashingWriter::new(io::BufWriter::new(file));
    // mtime 0 and an "unknown" OS byte keep the gzip header independent of the host.
    let gzip = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(compressed, Compression::new(opts.gzip_level.min(9)));
    let mut tar = tar::Builder::new(HashingWriter::new(gzip));

    for entry in sorted {
        append_entry(&mut tar, entry, opts.mtime)?;
    }
    let finish_err = |source| LayerError::Write {
        path: "<end of archive>".into(),
        source,
    };
    let uncompressed = tar.into_inner().map_err(finish_err)?;
    let (gzip, diff_id, uncompressed_size) = uncompressed.finish();
    let compressed = gzip.finish().map_err(finish_err)?;
    let (mut buffered, digest, size) = compressed.finish();
    buffered.flush().map_err(finish_err)?;
    drop(buffered);
    store.commit(temp, &digest)?;
    Ok(LayerInfo {
        digest,
        diff_id,
        size,
        uncompressed_size,
        media_type: MEDIA_TYPE_TAR_GZIP.into(),
    })
}

fn base_header(entry: &LayerEntry, mtime: u64) -> Header {
    // GNU headers carry long names as extensions and leave uname/gname empty.
    let mut header = Header::new_gnu();
    header.set_mode(entry.mode & 0o7777);
    header.set_uid(entry.uid.into());
    header.set_gid(entry.gid.into());
    header.set_mtime(mtime);
    header.set_size(0);
    header
}

fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    entry: &LayerEntry,
    mtime: u64,
) -> Result<(), LayerError> {
    let mut header = base_header(entry, mtime);
    let write_err = |source| LayerError::Write {
        path: entry.path.clone(),
        source,
    };
    match &entry.data {
        EntryData::Dir => {
            header.set_entry_type(EntryType::Directory);
            tar.append_data(&mut header, format!("{}/", entry.path), io::empty())
                .map_err(write_err)
        }
        EntryData::Symlink(target) => {
            header.set_entry_type(EntryType::Symlink);
            tar.append_link(&mut header, &entry.path, target)
                .map_err(write_err)
        }
        EntryData::HardLink(target) => {
            header.set_entry_type(EntryType::Link);
            tar.append_link(&mut header, &entry.path, target)
                .map_err(write_err)
        }
        EntryData::File { source, size } => {
            header.set_entry_type(EntryType::Regular);
            header.set_size(*size);
            let path = match source {
                FileSource::Path(path) => path,
                FileSource::Layer { blob, path } => {
                    return Err(LayerError::NotMaterialized {
                        path: path.clone(),
                        blob: blob.clone(),
                    })
                }
            };
            let file = std::fs::File::open(path).map_err(|source| LayerError::Read {
                path: path.clone(),
                source,
            })?;
            let mut reader = ExactReader::new(file, *size);
            let result = tar.append_data(&mut header, &entry.path, &mut reader);
            if reader.short() {
                return Err(LayerError::Changed {
                    path: path.clone(),
                    expected: *size,
                });
            }
            result.map_err(write_err)
        }
    }
}

/// Yields exactly `expected` bytes or records that the file got shorter;
/// the tar header's size is already written, so a mismatch must fail the layer.
struct ExactReader<R> {
    inner: io::Take<R>,
    remaining: u64,
    short: bool,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, expected: u64) -> Self {
        ExactReader {
            inner: inner.take(expected),
            remaining: expected,
            short: false,
        }
    }

    fn short(&self) -> bool {
        self.short
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.remaining -= n as u64;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            self.short = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being read",
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;

    fn file_entry(dir: &std::path::Path, name: &str, body: &[u8]) -> LayerEntry {
        let path = dir.join(name.replace('/', "_"));
        std::fs::write(&path, body).unwrap();
        LayerEntry {
            path: name.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            data: EntryData::File {
                source: FileSource::Path(path),
                size: body.len() as u64,
            },
        }
    }

    fn read_back(store: &BlobStore, info: &LayerInfo) -> Vec<(String, EntryType, u64, u64)> {
        let file = std::fs::File::open(store.existing(&info.digest).unwrap()).unwrap();
        let mut archive = tar::Archive::new(GzDecoder::new(file));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn layer_is_sorted_deterministic_and_digests_match() {
        let src = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let long = format!("app/{}/x.txt", "d".repeat(150));
        let entries = vec![
            file_entry(src.path(), "app/b.txt", b"bbb"),
            LayerEntry {
                path: "app".into(),
                mode: 0o755,
                uid: 1000,
                gid: 1000,
                data: EntryData::Dir,
            },
            file_entry(src.path(), &long, b"deep"),
            LayerEntry {
                path: "app/link".into(),
                mode: 0o777,
                uid: 0,
                gid: 0,
                data: EntryData::Symlink("b.txt".into()),
            },
        ];
        let opts = LayerOptions {
            mtime: 1234,
            gzip_level: 6,
        };
        let a = write_layer(&entries, &store, opts).unwrap();
        let mut reversed = entries.clone();
        reversed.reverse();
        let b = write_layer(&reversed, &store, opts).unwrap();
        assert_eq!(a, b);

        let blob = std::fs::read(store.existing(&a.digest).unwrap()).unwrap();
        assert_eq!(crate::digest::sha256(&blob), a.digest);
        let mut tar_bytes = Vec::new();
        GzDecoder::new(&blob[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(crate::digest::sha256(&tar_bytes), a.diff_id);
        assert_eq!(tar_bytes.len() as u64, a.uncompressed_size);

        let listed = read_back(&store, &a);
        let paths: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(paths, vec!["app/", "app/b.txt", long.as_str(), "app/link"]);
        assert!(listed.iter().all(|e| e.2 == 1234));
        assert_eq!(listed[0].3, 1000);
    }

    #[test]
    fn gzip_level_changes_the_digest_but_not_the_diff_id() {
        let src = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let body = "hello world ".repeat(1000);
        let entries = vec![file_entry(src.path(), "f", body.as_bytes())];
        let fast = write_layer(
            &entries,
            &store,
            LayerOptions {
                mtime: 0,
                gzip_level: 1,
            },
        )
        .unwrap();
        let best = write_layer(
            &entries,
            &store,
            LayerOptions {
                mtime: 0,
                gzip_level: 9,
            },
        )
        .unwrap();
        assert_eq!(fast.diff_id, best.diff_id);
        assert_ne!(fast.digest, best.digest);
    }

    #[test]
    fn a_file_that_shrank_fails_the_layer() {
        let src = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let mut entry = file_entry(src.path(), "f", b"abc");
        if let EntryData::File { size, .. } = &mut entry.data {
            *size = 10;
        }
        let err = write_layer(&[entry], &store, LayerOptions::default()).unwrap_err();
        assert!(matches!(err, LayerError::Changed { .. }), "{err}");
    }
}
