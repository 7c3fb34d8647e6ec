//! Layers: a sorted list of filesystem entries streamed once through tar,
//! compression and two hashers into the blob store.
//!
//! Compression uses every core and stays deterministic: the tar stream is cut
//! into segments (at entry boundaries chosen from the entries' paths once a
//! segment holds [`SEGMENT_MIN`] bytes, at the first one after
//! [`SEGMENT_TARGET`], or mid-entry at [`SEGMENT_MAX`]), each segment is compressed on its own as
//! one gzip member (or one zstd frame), and the members are concatenated in
//! order. A multi-member gzip is plain gzip to docker, containerd and Go's
//! readers, and the bytes depend only on the entries, the level and
//! [`FORMAT_VERSION`], never on the thread count. Memory stays bounded: at most
//! a few segments per thread are in flight, whatever the layer's size.
//!
//! With a [`SegmentCache`], each segment is keyed by the sha256 of its
//! uncompressed bytes, and a segment compressed before (in an earlier layer
//! blob) is copied instead of compressed again: a one-file change recompresses
//! about one segment.

use crate::store::{BlobStore, StoreError};
use pipeline::{Finished, LazyFile, Pipeline};
use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Mutex;
use tap::{LayerFeed, LayerTap};
use tar::{EntryType, Header};

pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// gzip level used unless the caller asks otherwise; part of the digest.
/// On a 266 MB Python tree libdeflate's level 5 gives 76.0 MB (zlib-rs's
/// level 5, used before, 77.9 MB) with about 20% less CPU.
pub const DEFAULT_GZIP_LEVEL: u32 = 5;
/// zstd level of `--compression zstd` layers; part of the digest.
pub const ZSTD_LEVEL: i32 = 3;
/// Version of the segmenting rules below: changing them changes digests, so
/// caches keyed on layer bytes include it.
pub const FORMAT_VERSION: u32 = 1;
/// A segment may end after an entry once it holds this many bytes, if the
/// entry's path hash says so (one entry in four): content-defined boundaries,
/// so that after a changed file the segments fall back in step.
pub const SEGMENT_MIN: usize = 512 << 10;
/// A segment always ends after the entry that takes it to this many bytes.
pub const SEGMENT_TARGET: usize = 2 << 20;
/// A segment never grows past this many bytes, even inside one large file.
pub const SEGMENT_MAX: usize = 4 << 20;

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
    /// A compressing or writing thread failed (its error names the file when one is to blame).
    #[error("writing the layer: {0}")]
    Pipeline(io::Error),
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
    /// A named pipe.
    Fifo,
}

/// One entry of a layer; `path` is relative to the image root with no leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub data: EntryData,
    /// Seconds since the epoch; `None` takes [`LayerOptions::mtime`] (COPY
    /// and ADD stamp every entry alike, a RUN step keeps each file's own,
    /// clamped).
    pub mtime: Option<u64>,
}

impl LayerEntry {
    /// A root-owned 0644 regular file at `path`, its bytes read from
    /// `source`, stamped with the layer's mtime.
    pub fn file(path: impl Into<String>, source: impl Into<PathBuf>, size: u64) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            data: EntryData::File {
                source: FileSource::Path(source.into()),
                size,
            },
            mtime: None,
        }
    }
}

/// The name of an opaque whiteout: the folder's lower content is hidden.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Tar order: by path, except that a folder's opaque whiteout comes before
/// everything in the folder (as Docker writes it), so a runtime that applies
/// it when it reads it cannot remove what this layer puts there.
fn tar_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(path: &str) -> std::borrow::Cow<'_, str> {
        match path.strip_suffix(OPAQUE_WHITEOUT) {
            Some(dir) if dir.is_empty() || dir.ends_with('/') => format!("{dir}\0").into(),
            _ => path.into(),
        }
    }
    key(a).cmp(&key(b))
}

/// The entries in the order the tar stream holds them.
pub fn in_tar_order(entries: &[LayerEntry]) -> Vec<&LayerEntry> {
    let mut sorted: Vec<&LayerEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| tar_order(&a.path, &b.path));
    sorted
}

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    /// gzip at `LayerOptions::gzip_level` (the OCI default every runtime reads).
    #[default]
    Gzip,
    /// zstd at [`ZSTD_LEVEL`] (`application/vnd.oci.image.layer.v1.tar+zstd`).
    Zstd,
}

impl LayerCompression {
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => MEDIA_TYPE_TAR_GZIP,
            LayerCompression::Zstd => MEDIA_TYPE_TAR_ZSTD,
        }
    }

    /// Names the compressor and level, e.g. `gzip6`, for cache keys.
    pub fn key(self, gzip_level: u32) -> String {
        match self {
            LayerCompression::Gzip => format!("gzip{}", gzip_level.min(9)),
            LayerCompression::Zstd => format!("zstd{ZSTD_LEVEL}"),
        }
    }
}

impl std::str::FromStr for LayerCompression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(LayerCompression::Gzip),
            "zstd" => Ok(LayerCompression::Zstd),
            other => Err(format!("unknown compression {other:?} (gzip or zstd)")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    /// mtime of every entry, seconds since the epoch.
    pub mtime: u64,
    pub gzip_level: u32,
    pub compression: LayerCompression,
    /// Compression threads; 0 means one per available core. Never changes the bytes.
    pub threads: usize,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            mtime: 0,
            gzip_level: DEFAULT_GZIP_LEVEL,
            compression: LayerCompression::Gzip,
            threads: 0,
        }
    }
}

impl LayerOptions {
    /// Everything besides the entries that decides a layer's bytes: the
    /// segmenting rules, the compressor's own output, the level and the mtime.
    pub fn format_key(&self) -> String {
        format!(
            "v{FORMAT_VERSION}-{}-mtime{}",
            compressor_key(self.compression, self.gzip_level),
            self.mtime
        )
    }
}

/// Names a compressor and level together with a fingerprint of its output
/// (a fixed sample, compressed and hashed), so that cached bytes made by
/// another version of zlib-rs or zstd are never mixed into a new layer.
pub fn compressor_key(compression: LayerCompression, gzip_level: u32) -> String {
    static KEYS: std::sync::OnceLock<Mutex<std::collections::HashMap<String, String>>> =
        std::sync::OnceLock::new();
    let name = compression.key(gzip_level);
    let keys = KEYS.get_or_init(Default::default);
    if let Some(found) = keys.lock().ok().and_then(|k| k.get(&name).cloned()) {
        return found;
    }
    let mut sample = Vec::with_capacity(64 << 10);
    let mut state: u32 = 0x2545_f491;
    while sample.len() < 64 << 10 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        sample.extend_from_slice(format!("item {} = {};\n", state % 97, state % 1013).as_bytes());
    }
    let compressor = Compressor {
        compression,
        gzip_level: gzip_level.min(9),
        key_prefix: String::new(),
        cache: None,
    };
    let print = match compressor.compress(&sample) {
        Ok(bytes) => hex::encode(&Sha256::digest(&bytes)[..6]),
        Err(_) => "unknown".into(),
    };
    let key = format!("{name}.{print}");
    if let Ok(mut k) = keys.lock() {
        k.insert(name, key.clone());
    }
    key
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

/// Compressed segments from earlier layers, keyed by the compressor and the
/// sha256 of the segment's uncompressed bytes (see `cache::SegmentIndex`).
pub trait SegmentCache: Sync {
    /// The compressed bytes of a segment with this key, if still available.
    fn lookup(&self, key: &str) -> Option<Vec<u8>>;
    /// Records where each segment of a committed blob lies: (key, offset, length).
    fn record(&self, blob_digest: &str, segments: &[(String, u64, u64)]);
    /// The diff_id hasher's saved state after the stream prefix with this key.
    fn prefix_state(&self, key: &str) -> Option<Vec<u8>>;
    /// Records the diff_id hasher's states after prefixes of a committed blob: (key, state).
    fn record_prefixes(&self, blob_digest: &str, states: &[(String, Vec<u8>)]);
}

/// Writes the entries (sorted here, by path) as one compressed tar blob in a single pass.
pub fn write_layer(
    entries: &[LayerEntry],
    store: &BlobStore,
    opts: LayerOptions,
) -> Result<LayerInfo, LayerError> {
    write_layer_cached(entries, store, opts, None)
}

/// [`write_layer`], reusing and recording compressed segments in `segments`.
pub fn write_layer_cached(
    entries: &[LayerEntry],
    store: &BlobStore,
    opts: LayerOptions,
    segments: Option<&dyn SegmentCache>,
) -> Result<LayerInfo, LayerError> {
    write_layer_inner(entries, store, opts, (segments, None), Content::default())
}

/// sha256 (hex, no prefix) of each local file's bytes as they went into a
/// layer, by source path.
pub type FileHashes = std::collections::HashMap<PathBuf, String>;

/// Content hashes of local files known before the layer is written, by
/// source path: (sha256 hex, the file's stat key when it was hashed, see
/// [`crate::files::stat_key`]). A file whose stat key is the same once read
/// is taken to have that content.
pub type KnownFiles = std::collections::HashMap<PathBuf, (String, String)>;

/// [`write_layer_cached`] that also hashes the content of every local file
/// not in `known` on its way into the tar stream (the same read feeds
/// both), so that a cold build reads each file once. Returns those hashes.
pub fn write_layer_hashed(
    entries: &[LayerEntry],
    store: &BlobStore,
    opts: LayerOptions,
    segments: Option<&dyn SegmentCache>,
    known: &KnownFiles,
) -> Result<(LayerInfo, FileHashes), LayerError> {
    let mut hashes = FileHashes::new();
    let content = Content {
        known: Some(known),
        out: Some(&mut hashes),
    };
    let info = write_layer_inner(entries, store, opts, (segments, None), content)?;
    Ok((info, hashes))
}

/// [`write_layer_cached`] (with `known`, [`write_layer_hashed`]) that lets
/// `tap` follow the blob while it is written.
pub fn write_layer_tapped(
    entries: &[LayerEntry],
    store: &BlobStore,
    opts: LayerOptions,
    with: (Option<&dyn SegmentCache>, Option<&dyn LayerTap>),
    known: Option<&KnownFiles>,
) -> Result<(LayerInfo, FileHashes), LayerError> {
    let mut hashes = FileHashes::new();
    let content = Content {
        known,
        out: known.map(|_| &mut hashes),
    };
    let info = write_layer_inner(entries, store, opts, with, content)?;
    Ok((info, hashes))
}

/// What the writer knows and learns about local files' content.
#[derive(Default)]
struct Content<'a> {
    known: Option<&'a KnownFiles>,
    /// Where the hashes of files read and hashed go, when asked for.
    out: Option<&'a mut FileHashes>,
}

fn write_layer_inner(
    entries: &[LayerEntry],
    store: &BlobStore,
    opts: LayerOptions,
    (segments, tap): (Option<&dyn SegmentCache>, Option<&dyn LayerTap>),
    content: Content<'_>,
) -> Result<LayerInfo, LayerError> {
    let temp = store.temp_file()?;
    let file = temp
        .as_file()
        .try_clone()
        .map_err(|source| LayerError::Write {
            path: temp.path().display().to_string(),
            source,
        })?;
    // A handle of its own (its own offset) that outlives the rename into the store.
    let feed = tap.and_then(|t| {
        std::fs::File::open(temp.path())
            .ok()
            .and_then(|f| t.start(f))
    });
    let (info, records) = stream_layer(entries, file, opts, segments, content, feed.as_deref())?;
    store.commit(temp, &info.digest)?;
    if let Some(feed) = &feed {
        feed.finished(&info.digest, info.size);
    }
    if let Some(cache) = segments {
        cache.record(&info.digest, &records.written.segments);
        cache.record_prefixes(&info.digest, &records.prefixes);
    }
    Ok(info)
}

/// Writes the layer's compressed bytes to `out` (a pipe to the process that
/// stores it: a RUN step's diff is read inside the sandbox's namespace)
/// and returns what the bytes are known by.
pub fn write_layer_to(
    entries: &[LayerEntry],
    out: std::fs::File,
    opts: LayerOptions,
) -> Result<LayerInfo, LayerError> {
    stream_layer(entries, out, opts, None, Content::default(), None).map(|(info, _)| info)
}

fn stream_layer(
    entries: &[LayerEntry],
    file: std::fs::File,
    opts: LayerOptions,
    segments: Option<&dyn SegmentCache>,
    mut content: Content<'_>,
    feed: Option<&dyn LayerFeed>,
) -> Result<(LayerInfo, Finished), LayerError> {
    let sorted = in_tar_order(entries);
    let finish_err = |source| LayerError::Write {
        path: "<end of archive>".into(),
        source,
    };
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let compressor = Compressor {
        compression: opts.compression,
        gzip_level: opts.gzip_level.min(9),
        key_prefix: compressor_key(opts.compression, opts.gzip_level),
        cache: segments,
    };
    let out = io::BufWriter::with_capacity(1 << 20, file);
    let mut finished = std::thread::scope(|scope| {
        let pipeline = Pipeline::start(scope, &compressor, threads, (out, feed));
        let mut tar = tar::Builder::new(pipeline);
        let mut result = Ok(());
        for entry in sorted {
            result = append_entry(&mut tar, entry, opts.mtime, &mut content);
            if result.is_err() {
                break;
            }
            if let Err(source) = tar.get_mut().entry_boundary(&entry.path) {
                result = Err(LayerError::Write {
                    path: entry.path.clone(),
                    source,
                });
                break;
            }
        }
        let finished = match result {
            Ok(()) => tar.into_inner().map_err(finish_err),
            Err(e) => {
                // Stop the pipeline's threads; when one of them failed, that
                // is what stopped the entry.
                let cause = tar.into_inner().ok().and_then(Pipeline::abort);
                return Err(cause.map_or(e, LayerError::Pipeline));
            }
        };
        finished?.finish().map_err(finish_err)
    })?;
    finished.written.out.flush().map_err(finish_err)?;
    let info = LayerInfo {
        digest: finished.written.digest.clone(),
        diff_id: std::mem::take(&mut finished.diff_id),
        size: finished.written.size,
        uncompressed_size: finished.uncompressed,
        media_type: opts.compression.media_type().into(),
    };
    Ok((info, finished))
}

/// How one segment becomes compressed bytes.
struct Compressor<'a> {
    compression: LayerCompression,
    gzip_level: u32,
    key_prefix: String,
    cache: Option<&'a dyn SegmentCache>,
}

impl Compressor<'_> {
    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self.compression {
            LayerCompression::Gzip => gzip_member(data, self.gzip_level),
            LayerCompression::Zstd => Ok(zstd::bulk::compress(data, ZSTD_LEVEL)?),
        }
    }

    /// The cache key of a segment keyed by its parts (see `keys`).
    fn parts_key(&self, hex: &str) -> String {
        format!("{}.parts-{hex}", self.key_prefix)
    }

    /// The cache key of a segment keyed by its bytes.
    fn bytes_key(&self, data: &[u8]) -> String {
        format!("{}-{}", self.key_prefix, hex::encode(Sha256::digest(data)))
    }

    /// The cache key of the diff_id state after the stream prefix `chain`.
    fn prefix_key(&self, chain: &str) -> String {
        format!("{}.prefix-{chain}", self.key_prefix)
    }
}

/// One gzip member of `data` by libdeflate, whose header has mtime 0 and
/// an "unknown" OS byte, so it never depends on the host. libdeflate
/// compresses a whole buffer at once, as segments are; it beat zlib-rs at
/// level 5 on speed and size (see the README's performance notes).
fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    thread_local! {
        // A compressor holds its match finder's tables: one per thread and level.
        static COMPRESSOR: std::cell::RefCell<Option<(u32, libdeflater::Compressor)>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some((l, c)) if *l == level => c,
            _ => {
                let lvl = libdeflater::CompressionLvl::new(level as i32)
                    .map_err(|e| io::Error::other(format!("gzip level {level}: {e:?}")))?;
                &mut slot.insert((level, libdeflater::Compressor::new(lvl))).1
            }
        };
        let mut out = vec![0u8; compressor.gzip_compress_bound(data.len())];
        let n = compressor
            .gzip_compress(data, &mut out)
            .map_err(|e| io::Error::other(format!("gzip: {e}")))?;
        out.truncate(n);
        Ok(out)
    })
}

fn base_header(entry: &LayerEntry, mtime: u64) -> Header {
    // GNU headers carry long names as extensions and leave uname/gname empty.
    let mut header = Header::new_gnu();
    header.set_mode(entry.mode & 0o7777);
    header.set_uid(entry.uid.into());
    header.set_gid(entry.gid.into());
    header.set_mtime(entry.mtime.unwrap_or(mtime));
    header.set_size(0);
    header
}

fn append_entry(
    tar: &mut tar::Builder<Pipeline<'_, '_>>,
    entry: &LayerEntry,
    mtime: u64,
    content: &mut Content<'_>,
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
        EntryData::Fifo => {
            header.set_entry_type(EntryType::Fifo);
            tar.append_data(&mut header, &entry.path, io::empty())
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
            let known = content.known.and_then(|k| k.get(path));
            if let Some((hash, stat)) = known {
                let md = std::fs::metadata(path).map_err(|source| LayerError::Read {
                    path: path.clone(),
                    source,
                })?;
                if crate::files::stat_key(&md) == *stat {
                    // Unchanged since it was hashed: read only if a segment needs it.
                    tar.append_data(&mut header, &entry.path, io::empty())
                        .map_err(write_err)?;
                    let lazy = LazyFile {
                        path: path.clone(),
                        stat: stat.clone(),
                    };
                    return tar
                        .get_mut()
                        .lazy_file(lazy, *size, hash)
                        .map_err(write_err);
                }
            }
            let file = std::fs::File::open(path).map_err(|source| LayerError::Read {
                path: path.clone(),
                source,
            })?;
            let signal = tar.get_mut().data_signal();
            // Segment keys need every file's content hash: known, or taken now.
            let hash = known.is_none() && (signal.is_some() || content.out.is_some());
            let mut reader = ExactReader::new(file, *size, hash, signal);
            let result = tar.append_data(&mut header, &entry.path, &mut reader);
            if reader.short() {
                return Err(LayerError::Changed {
                    path: path.clone(),
                    expected: *size,
                });
            }
            result.map_err(write_err)?;
            let trusted = match known {
                Some((hash, stat)) => reader.unchanged(stat).then(|| hash.clone()),
                None => reader.content_hash(),
            };
            if let (Some(out), None, Some(hash)) = (content.out.as_deref_mut(), known, &trusted) {
                out.insert(path.clone(), hash.clone());
            }
            tar.get_mut().file_done(trusted);
            Ok(())
        }
    }
}

/// Yields exactly `expected` bytes or records that the file got shorter;
/// the tar header's size is already written, so a mismatch must fail the layer.
/// Optionally hashes the bytes it yields, and counts them on `signal` (see
/// `keys::Keyer`).
struct ExactReader {
    inner: io::Take<std::fs::File>,
    remaining: u64,
    short: bool,
    hasher: Option<Sha256>,
    signal: Option<Rc<Cell<u64>>>,
}

impl ExactReader {
    fn new(inner: std::fs::File, expected: u64, hash: bool, signal: Option<Rc<Cell<u64>>>) -> Self {
        ExactReader {
            inner: inner.take(expected),
            remaining: expected,
            short: false,
            hasher: hash.then(Sha256::new),
            signal,
        }
    }

    /// Whether the file, read whole, still has the stat key `stat`: then
    /// its content is the one hashed when that key was recorded.
    fn unchanged(&self, stat: &str) -> bool {
        self.remaining == 0
            && !self.short
            && self
                .inner
                .get_ref()
                .metadata()
                .is_ok_and(|md| crate::files::stat_key(&md) == stat)
    }

    fn short(&self) -> bool {
        self.short
    }

    /// The sha256 (hex) of everything read, once all `expected` bytes were.
    fn content_hash(&mut self) -> Option<String> {
        if self.remaining != 0 || self.short {
            return None;
        }
        self.hasher.take().map(|h| hex::encode(h.finalize()))
    }
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.remaining -= n as u64;
        if let Some(signal) = &self.signal {
            signal.set(signal.get() + n as u64);
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
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

mod keys;
mod pipeline;
pub mod tap;
#[cfg(test)]
mod tests;
