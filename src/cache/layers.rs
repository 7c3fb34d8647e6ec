//! The layer cache: how an unchanged COPY costs only `stat` calls.
//!
//! Three records live under the cache folder, beside the blob store:
//!
//! - `layers/stat-v1.json` maps a file's stat key (device, inode, mtime and
//!   ctime in nanoseconds, size) to the sha256 of its content. A file whose
//!   stat key is unknown is hashed again; files changed in the last
//!   [`RACY_SECONDS`] are never recorded, since a same-size rewrite within
//!   the filesystem's timestamp granularity would keep their stat key.
//! - `layers/index/<key>.json` maps a layer key to the [`LayerInfo`] written
//!   for it. The key is the sha256 of [`LayerOptions::format_key`] (segmenting
//!   version, compressor fingerprint and level, mtime) and, for every entry
//!   in order, its path, type, mode, owner, link target, size and content
//!   hash. Any change of content, mode, owner, link target, name or set of
//!   files (a `.dockerignore` edit included) gives another key. A hit is used
//!   only while its blob is still in the store.
//!   On a cold build (most of the layer's bytes unknown to the stat map, and
//!   no cached layer of the same shape: paths, metadata and sizes) the key
//!   cannot be known before the files are read, so the lookup is skipped and
//!   the files are hashed while the layer streams through them (one read per
//!   file); their stat keys and the layer's key are recorded afterwards, the
//!   layer only if no file's stat key moved meanwhile.
//! - `layers/shapes/<shape>.json` notes the [`LayerInfo`] last cached for a
//!   layer shape, so that a fresh checkout of a cached tree (new inodes, same
//!   content) is hashed first and served from the cache.
//! - `layers/steps/<key>.json` records what a RUN step with that key left
//!   (see `build::run` for the key): its [`LayerInfo`], or that it changed
//!   nothing.
//! - `segments/<compressor>/<aa>/<key>` records where a compressed segment
//!   (see `layer`) lies in a stored blob, keyed by the sha256 of its
//!   uncompressed bytes, so a changed layer recompresses only changed segments.
//!
//! Bounding: [`prune`](super::prune) keeps the blob store under a size cap by removing the
//! least recently used blobs first (a blob's mtime is refreshed whenever the
//! cache serves it), then drops index, shape and segment records whose blob is gone.
//! `dockless build` and `push` run it after every build with
//! `--cache-max-size` (default [`DEFAULT_MAX_SIZE`](super::DEFAULT_MAX_SIZE)), and `dockless cache
//! prune --max-size SIZE` runs it by hand. The stat map keeps at most
//! [`STAT_ENTRIES_MAX`] entries, the least recently used going first.

use super::segments::SegmentIndex;
use super::touch;
use crate::digest;
use crate::files::{stat_key, write_atomic};
use crate::layer::{
    self, tap::LayerTap, EntryData, FileHashes, FileSource, KnownFiles, LayerEntry, LayerError,
    LayerInfo, LayerOptions, SegmentCache,
};
use crate::store::BlobStore;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Files changed this recently are hashed but their stat key is not trusted later.
pub const RACY_SECONDS: i64 = 2;
/// Size of the stat map beyond which the least recently used entries go.
pub const STAT_ENTRIES_MAX: usize = 500_000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct StatMap {
    /// stat key → (content sha256 hex, last use in seconds since the epoch)
    files: HashMap<String, (String, u64)>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Counts of what the cache did during one build.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub layers_from_cache: usize,
    pub layers_written: usize,
    pub files_hashed: usize,
    pub segments_reused: usize,
    /// RUN steps run, and skipped because their key was known.
    pub steps_run: usize,
    pub steps_from_cache: usize,
    /// Layers and RUN steps the registry build cache served (also counted
    /// in `layers_from_cache` and `steps_from_cache`).
    pub layers_from_registry: usize,
    pub steps_from_registry: usize,
}

impl CacheStats {
    /// Adds another build's counts (one per platform).
    pub fn add(&mut self, other: &CacheStats) {
        self.layers_from_cache += other.layers_from_cache;
        self.layers_written += other.layers_written;
        self.files_hashed += other.files_hashed;
        self.segments_reused += other.segments_reused;
        self.steps_run += other.steps_run;
        self.steps_from_cache += other.steps_from_cache;
        self.layers_from_registry += other.layers_from_registry;
        self.steps_from_registry += other.steps_from_registry;
    }
}

/// What a RUN step left, under `layers/steps/<key>.json`: its layer, or
/// nothing when it changed no file.
#[derive(Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub layer: Option<LayerInfo>,
}

pub struct LayerCache {
    dir: PathBuf,
    stats: Mutex<StatMap>,
    dirty: AtomicBool,
    files_hashed: AtomicUsize,
}

/// What a layer key was computed from, to check nothing moved while the layer was written.
pub struct KeyedLayer {
    pub key: String,
    stat_keys: Vec<(PathBuf, String)>,
}

/// A layer's entries after [`LayerCache::scan`]: their stat keys and the
/// content hashes known so far.
pub struct ScannedLayer {
    format_key: String,
    /// Sorted by path, as scanned (base-layer files not yet extracted).
    entries: Vec<LayerEntry>,
    /// Content sha256 (hex) of local files, from the stat map or hashed by `scan`.
    content: HashMap<PathBuf, String>,
    /// (path, stat key, changed within the racy window) of every local file.
    stat_keys: Vec<(PathBuf, String, bool)>,
    /// Local files whose content is not known yet.
    unknown: usize,
}

impl ScannedLayer {
    /// The layer key, when every file's content is known: the cache can be asked.
    pub fn key(&self) -> Option<KeyedLayer> {
        if self.unknown > 0 {
            return None;
        }
        self.key_with(Some(&FileHashes::new()))
    }

    /// Local files whose content the layer write has to hash.
    pub fn unknown_files(&self) -> usize {
        self.unknown
    }

    /// The content hashes the layer writer may trust without reading the
    /// files again: those of files not changed within the racy window.
    fn known_files(&self) -> KnownFiles {
        self.stat_keys
            .iter()
            .filter(|(_, _, racy)| !racy)
            .filter_map(|(path, key, _)| {
                let hash = self.content.get(path)?;
                Some((path.clone(), (hash.clone(), key.clone())))
            })
            .collect()
    }

    /// The key with content hashes taken while the layer was written
    /// (which win over the stat map's: they are the bytes in the layer).
    /// Without hashes, the layer's shape: the key without local files'
    /// content, only a hint that decides whether `scan` hashes up front.
    fn key_with(&self, streamed: Option<&FileHashes>) -> Option<KeyedLayer> {
        let mut h = Sha256::new();
        h.update(match streamed {
            Some(_) => b"dockless-layer-key\0".as_slice(),
            None => b"dockless-layer-shape\0".as_slice(),
        });
        h.update(self.format_key.as_bytes());
        h.update(b"\0");
        for e in &self.entries {
            let (kind, detail) = match &e.data {
                EntryData::Dir => ("d", String::new()),
                EntryData::Symlink(t) => ("s", t.clone()),
                EntryData::HardLink(t) => ("h", t.clone()),
                EntryData::Fifo => ("p", String::new()),
                EntryData::File { source, size } => {
                    let id = match source {
                        FileSource::Path(p) => match streamed {
                            Some(streamed) => {
                                streamed.get(p).or_else(|| self.content.get(p))?.clone()
                            }
                            None => String::new(),
                        },
                        // Base layer blobs are content-addressed: the blob and member name it.
                        FileSource::Layer { blob, path } => {
                            format!("layer:{}:{}", blob.file_name()?.to_string_lossy(), path)
                        }
                    };
                    ("f", format!("{size}:{id}"))
                }
            };
            // An entry's own mtime counts only when it has one, so keys of
            // layers stamped with the build's mtime stay as they were.
            let meta = match e.mtime {
                None => format!("{:o}:{}:{}", e.mode, e.uid, e.gid),
                Some(mtime) => format!("{:o}:{}:{}:m{mtime}", e.mode, e.uid, e.gid),
            };
            for part in [e.path.as_str(), kind, &meta, &detail] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
        }
        Some(KeyedLayer {
            key: hex::encode(h.finalize()),
            stat_keys: self
                .stat_keys
                .iter()
                .map(|(p, k, _)| (p.clone(), k.clone()))
                .collect(),
        })
    }
}

fn hash_file(path: &Path) -> io::Result<String> {
    let (d, _) = digest::sha256_file(path)?;
    Ok(d.trim_start_matches("sha256:").to_string())
}

impl LayerCache {
    pub fn open(cache_dir: &Path) -> LayerCache {
        let dir = cache_dir.join("layers");
        let stats = fs::read(dir.join("stat-v1.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        LayerCache {
            dir,
            stats: Mutex::new(stats),
            dirty: AtomicBool::new(false),
            files_hashed: AtomicUsize::new(0),
        }
    }

    pub fn files_hashed(&self) -> usize {
        self.files_hashed.load(Ordering::Relaxed)
    }

    /// The key of a layer made of these entries with these options, or None
    /// when a file cannot be read (the layer write then reports it).
    /// Hashes every file the stat map does not know.
    pub fn key(&self, entries: &[LayerEntry], opts: &LayerOptions) -> Option<KeyedLayer> {
        self.scan_with(entries, opts, true)?.key()
    }

    /// Stats every local file of the layer and looks its content up in the
    /// stat map. Files the map does not know are hashed here when they are
    /// at most a quarter of the layer's file bytes (a touched or edited
    /// file: the layer may still be in the cache); otherwise (a cold
    /// build) they are left for [`LayerCache::write_layer`], which hashes
    /// them while they stream into the layer, so that each is read once.
    /// None when a file cannot be stat'ed or read (the layer write then reports it).
    pub fn scan(&self, entries: &[LayerEntry], opts: &LayerOptions) -> Option<ScannedLayer> {
        self.scan_with(entries, opts, false)
    }

    /// [`LayerCache::scan`] that hashes every file the stat map does not
    /// know up front, so the key is known before the layer is written: the
    /// registry build cache may hold it even when this cache never saw it.
    pub fn scan_hashed(&self, entries: &[LayerEntry], opts: &LayerOptions) -> Option<ScannedLayer> {
        self.scan_with(entries, opts, true)
    }

    fn scan_with(
        &self,
        entries: &[LayerEntry],
        opts: &LayerOptions,
        hash_all: bool,
    ) -> Option<ScannedLayer> {
        let mut sorted: Vec<LayerEntry> = entries.to_vec();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut stat_keys = Vec::new();
        let mut content: HashMap<PathBuf, String> = HashMap::new();
        let mut misses = Vec::new();
        let (mut known_bytes, mut unknown_bytes) = (0u64, 0u64);
        {
            let mut map = self.stats.lock().ok()?;
            let used = now_secs();
            for e in &sorted {
                if let EntryData::File {
                    source: FileSource::Path(path),
                    ..
                } = &e.data
                {
                    let md = fs::metadata(path).ok()?;
                    let key = stat_key(&md);
                    let racy = md.mtime() >= now - RACY_SECONDS || md.ctime() >= now - RACY_SECONDS;
                    match map.files.get_mut(&key) {
                        Some((hash, last_use)) => {
                            *last_use = used;
                            content.insert(path.clone(), hash.clone());
                            known_bytes += md.size();
                        }
                        None => {
                            misses.push((path.clone(), key.clone(), racy));
                            unknown_bytes += md.size();
                        }
                    }
                    stat_keys.push((path.clone(), key, racy));
                }
            }
        }
        let mut scanned = ScannedLayer {
            format_key: opts.format_key(),
            entries: sorted,
            content,
            stat_keys,
            unknown: misses.len(),
        };
        let few = unknown_bytes.saturating_mul(4) <= known_bytes + unknown_bytes;
        if hash_all || few || self.shape_seen(&scanned) {
            let hashed: Vec<(PathBuf, String, String, bool)> = misses
                .into_par_iter()
                .map(|(path, key, racy)| hash_file(&path).map(|h| (path, key, h, racy)))
                .collect::<io::Result<_>>()
                .ok()?;
            self.files_hashed.fetch_add(hashed.len(), Ordering::Relaxed);
            if let Ok(mut map) = self.stats.lock() {
                let used = now_secs();
                for (path, key, hash, racy) in hashed {
                    if !racy {
                        map.files.insert(key, (hash.clone(), used));
                        self.dirty.store(true, Ordering::Relaxed);
                    }
                    scanned.content.insert(path, hash);
                }
            }
            scanned.unknown = 0;
        }
        Some(scanned)
    }

    fn shape_path(&self, scan: &ScannedLayer) -> Option<PathBuf> {
        let shape = scan.key_with(None)?;
        Some(self.dir.join("shapes").join(format!("{}.json", shape.key)))
    }

    /// Whether a layer of this shape (same entries, sizes and metadata) was
    /// cached before: its content may well be the same (a fresh checkout of
    /// the same tree), so hashing first may save the whole write. A cold
    /// build has never seen its shape. Only a hint: [`prune`] drops shapes
    /// whose blob is gone, and a stale one costs a hashing pass.
    fn shape_seen(&self, scan: &ScannedLayer) -> bool {
        self.shape_path(scan).is_some_and(|path| path.is_file())
    }

    /// [`LayerCache::insert`], and notes the layer's shape.
    fn insert_scanned(&self, scan: &ScannedLayer, key: &KeyedLayer, info: &LayerInfo) {
        if !self.insert(key, info) {
            return;
        }
        if let Some(path) = self.shape_path(scan) {
            let _ = write_atomic(&path, &serde_json::to_vec(info).unwrap_or_default());
        }
    }

    /// Writes the layer (reusing compressed segments from the cache) and
    /// records it under its key. Files `scan` left unhashed are hashed on
    /// their way into the layer; their stat map entries are recorded if
    /// their stat key did not move meanwhile, and the layer only if no
    /// file's did. Returns the layer and the number of segments reused.
    /// `entries` are the scanned ones, with base-layer files extracted.
    pub fn write_layer(
        &self,
        scan: Option<&ScannedLayer>,
        entries: &[LayerEntry],
        store: &BlobStore,
        opts: LayerOptions,
    ) -> Result<(LayerInfo, usize), LayerError> {
        self.write_layer_tapped(scan, entries, store, opts, None)
    }

    /// [`LayerCache::write_layer`], letting `tap` follow the blob as it is
    /// written (see `layer::tap`).
    pub fn write_layer_tapped(
        &self,
        scan: Option<&ScannedLayer>,
        entries: &[LayerEntry],
        store: &BlobStore,
        opts: LayerOptions,
        tap: Option<&dyn LayerTap>,
    ) -> Result<(LayerInfo, usize), LayerError> {
        let segments = self.segments(store);
        let with = (Some(&segments as &dyn SegmentCache), tap);
        let Some(scan) = scan else {
            let (info, _) = layer::write_layer_tapped(entries, store, opts, with, None)?;
            return Ok((info, segments.reused()));
        };
        let known = scan.known_files();
        let (info, hashes) = layer::write_layer_tapped(entries, store, opts, with, Some(&known))?;
        if scan.unknown == 0 {
            if let Some(key) = scan.key() {
                self.insert_scanned(scan, &key, &info);
            }
            return Ok((info, segments.reused()));
        }
        self.record_streamed(scan, &hashes);
        if let Some(key) = scan.key_with(Some(&hashes)) {
            self.insert_scanned(scan, &key, &info);
        }
        Ok((info, segments.reused()))
    }

    /// Adds the content hashes taken while a layer was written to the stat
    /// map, for files whose stat key is the one `scan` saw and not racy.
    fn record_streamed(&self, scan: &ScannedLayer, hashes: &FileHashes) {
        let mut recorded = Vec::new();
        let mut streamed = 0;
        for (path, key, racy) in &scan.stat_keys {
            let Some(hash) = hashes.get(path) else {
                continue;
            };
            if !scan.content.contains_key(path) {
                streamed += 1;
            }
            if *racy || scan.content.get(path) == Some(hash) {
                continue;
            }
            let same = fs::metadata(path).is_ok_and(|md| &stat_key(&md) == key);
            if same {
                recorded.push((key.clone(), hash.clone()));
            }
        }
        self.files_hashed.fetch_add(streamed, Ordering::Relaxed);
        if recorded.is_empty() {
            return;
        }
        if let Ok(mut map) = self.stats.lock() {
            let used = now_secs();
            for (key, hash) in recorded {
                map.files.insert(key, (hash, used));
            }
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    fn index_path(&self, key: &str) -> PathBuf {
        self.dir.join("index").join(format!("{key}.json"))
    }

    /// The layer stored for this key, if its blob is still in the store.
    pub fn lookup(&self, key: &KeyedLayer, store: &BlobStore) -> Option<LayerInfo> {
        let path = self.index_path(&key.key);
        let info: LayerInfo = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
        match store.existing(&info.digest) {
            Ok(blob) => {
                touch(&blob);
                Some(info)
            }
            Err(_) => {
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Records a written layer, unless one of its files changed while it was
    /// written; returns whether it did.
    pub fn insert(&self, key: &KeyedLayer, info: &LayerInfo) -> bool {
        let unchanged = key.stat_keys.iter().all(|(path, k)| {
            fs::metadata(path)
                .map(|md| &stat_key(&md) == k)
                .unwrap_or(false)
        });
        if !unchanged {
            tracing::debug!("a file changed while its layer was written; not cached");
            return false;
        }
        let path = self.index_path(&key.key);
        if let Err(e) = write_atomic(&path, &serde_json::to_vec(info).unwrap_or_default()) {
            tracing::warn!("cannot record layer in {}: {e}", path.display());
            return false;
        }
        true
    }

    fn step_path(&self, key: &str) -> PathBuf {
        self.dir.join("steps").join(format!("{key}.json"))
    }

    /// What a RUN step with this key left before: `Some(None)` when it
    /// changed nothing, `Some(Some(layer))` while the layer's blob is still
    /// in the store.
    pub fn step(&self, key: &str, store: &BlobStore) -> Option<Option<LayerInfo>> {
        let path = self.step_path(key);
        let record: StepRecord = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
        let Some(info) = record.layer else {
            touch(&path);
            return Some(None);
        };
        match store.existing(&info.digest) {
            Ok(blob) => {
                touch(&blob);
                Some(Some(info))
            }
            Err(_) => {
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Records what a RUN step with this key left.
    pub fn record_step(&self, key: &str, layer: Option<&LayerInfo>) {
        let path = self.step_path(key);
        let record = StepRecord {
            layer: layer.cloned(),
        };
        if let Err(e) = write_atomic(&path, &serde_json::to_vec(&record).unwrap_or_default()) {
            tracing::warn!("cannot record a RUN step in {}: {e}", path.display());
        }
    }

    /// Writes the stat map back (bounded to [`STAT_ENTRIES_MAX`] entries).
    pub fn save(&self) {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            // Last-use times changed too, but only matter for eviction; skip the write.
            return;
        }
        let Ok(mut map) = self.stats.lock() else {
            return;
        };
        if map.files.len() > STAT_ENTRIES_MAX {
            let mut uses: Vec<u64> = map.files.values().map(|v| v.1).collect();
            uses.sort_unstable();
            let cut = uses[map.files.len() - STAT_ENTRIES_MAX];
            map.files.retain(|_, v| v.1 >= cut);
        }
        let path = self.dir.join("stat-v1.json");
        if let Err(e) = write_atomic(&path, &serde_json::to_vec(&*map).unwrap_or_default()) {
            tracing::warn!("cannot save {}: {e}", path.display());
        }
    }

    /// The segment index over this store.
    pub fn segments<'a>(&'a self, store: &'a BlobStore) -> SegmentIndex<'a> {
        SegmentIndex::new(
            self.dir.parent().unwrap_or(&self.dir).join("segments"),
            store,
        )
    }
}
