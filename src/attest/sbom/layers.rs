//! Each layer of an image scanned once for package files. A layer's header
//! index (the base-layer index the build already keeps, or one made from
//! the blob) says whether it holds any such file; only then is its blob
//! read, in one pass that reads those files' bodies and nothing else. What
//! each file holds is cached by the layer's diff_id, so a later image on
//! the same layers reads no blob at all.

use super::package::{Finding, OsRelease};
use super::{binary, dpkg, java, node, python, SbomError};
use crate::layer::{EntryData, FileSource, LayerEntry, LayerInfo};
use crate::rootfs::overlay::{self, IndexEntry, IndexKind, LayerIndex};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Version of the scanners' output; a cached scan of another version is
/// read again.
const SCAN_VERSION: u32 = 2;

/// How the scanner reaches a layer's blob when it has to read it.
pub trait LayerBlobs: Sync {
    /// The blob on disk (downloaded first when it is still in its registry).
    fn blob(&self, layer: &LayerInfo) -> Result<PathBuf, String>;
}

/// A layer's headers and what its package files hold, by image path.
#[derive(Debug, Clone)]
pub struct ScannedLayer {
    pub layer: LayerInfo,
    pub index: LayerIndex,
    pub findings: BTreeMap<String, Finding>,
}

/// The files the scanners read, found by path, type, mode and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Dpkg,
    Apk,
    OsRelease,
    Python,
    NodeManifest,
    NodeLock,
    Java,
    Binary,
}

impl Candidate {
    fn of(e: &IndexEntry) -> Option<Candidate> {
        if e.kind != IndexKind::File {
            return None;
        }
        let p = e.path.as_str();
        let in_status_d = p
            .strip_prefix("var/lib/dpkg/status.d/")
            .is_some_and(|n| !n.contains('/') && !n.ends_with(".md5sums"));
        let found = match p {
            "var/lib/dpkg/status" => Candidate::Dpkg,
            _ if in_status_d => Candidate::Dpkg,
            "lib/apk/db/installed" => Candidate::Apk,
            "etc/os-release" | "usr/lib/os-release" => Candidate::OsRelease,
            _ if python::is_metadata_path(p) => Candidate::Python,
            _ if node::is_installed_manifest(p) => Candidate::NodeManifest,
            _ if node::is_lockfile(p) => Candidate::NodeLock,
            _ if java::is_archive_path(p) => Candidate::Java,
            // Go and Rust programs are executables; libraries and data are not read.
            _ if e.mode & 0o111 != 0 && e.size >= MIN_BINARY => Candidate::Binary,
            _ => return None,
        };
        Some(found)
    }

    /// The most bytes read from one such file; bigger ones are skipped.
    fn max_size(self) -> u64 {
        match self {
            Candidate::OsRelease => 64 << 10,
            Candidate::NodeManifest => 1 << 20,
            Candidate::Python => 4 << 20,
            Candidate::Dpkg | Candidate::Apk | Candidate::NodeLock => 64 << 20,
            Candidate::Java | Candidate::Binary => 256 << 20,
        }
    }

    fn parse(self, path: &str, bytes: &[u8]) -> Option<Finding> {
        let text = || String::from_utf8_lossy(bytes);
        let packages = match self {
            Candidate::OsRelease => return Some(Finding::OsRelease(OsRelease::parse(&text()))),
            Candidate::Dpkg => dpkg::parse_status(&text()),
            Candidate::Apk => dpkg::parse_apk_installed(&text()),
            Candidate::Python => python::parse_metadata(&text()).into_iter().collect(),
            Candidate::NodeManifest => node::parse_manifest(bytes).into_iter().collect(),
            Candidate::NodeLock => node::parse_lockfile(path, bytes),
            Candidate::Java => java::scan_archive(bytes),
            Candidate::Binary => binary::scan_binary(bytes),
        };
        (!packages.is_empty()).then_some(Finding::Packages(packages))
    }
}

/// Smaller executables are scripts or stubs, never Go or Rust programs.
const MIN_BINARY: u64 = 4 << 10;

/// Scans every layer (several at once), each from the cache when it can.
pub fn scan_layers(
    layers: &[LayerInfo],
    cache_dir: &Path,
    blobs: &dyn LayerBlobs,
) -> Result<Vec<ScannedLayer>, SbomError> {
    layers
        .par_iter()
        .map(|layer| scan_layer(layer, cache_dir, blobs))
        .collect()
}

fn scan_layer(
    layer: &LayerInfo,
    cache_dir: &Path,
    blobs: &dyn LayerBlobs,
) -> Result<ScannedLayer, SbomError> {
    let index = overlay::load_index(cache_dir, &layer.digest, &layer.diff_id);
    let cached = load_findings(cache_dir, &layer.diff_id);
    let (index, findings) = match (index, cached) {
        (Some(index), Some(findings)) => (index, findings),
        (Some(index), None) if !index.entries.iter().any(|e| Candidate::of(e).is_some()) => {
            save_findings(cache_dir, &layer.diff_id, &BTreeMap::new());
            (index, BTreeMap::new())
        }
        _ => {
            let blob = blobs.blob(layer).map_err(|message| SbomError::Layer {
                digest: layer.digest.clone(),
                message,
            })?;
            let (index, findings) = read_layer(&blob, &layer.diff_id)?;
            overlay::save_index(cache_dir, &layer.digest, &index);
            save_findings(cache_dir, &layer.diff_id, &findings);
            (index, findings)
        }
    };
    Ok(ScannedLayer {
        layer: layer.clone(),
        index,
        findings,
    })
}

/// Records the index and the SBOM findings of a layer just written from
/// local files, so that the SBOM needs neither to decompress its blob nor
/// to hash the tar stream again: the writer knew every header, and the
/// package files are read from disk. Layers with base-layer members are
/// left to be read from their blob.
pub fn record_written(cache_dir: &Path, info: &LayerInfo, entries: &[LayerEntry]) {
    let Some(index) = overlay::index_of_written(info, entries) else {
        return;
    };
    let sources: BTreeMap<String, &Path> = entries
        .iter()
        .filter_map(|e| match &e.data {
            EntryData::File {
                source: FileSource::Path(p),
                ..
            } => Some((overlay::image_path(&e.path)?, p.as_path())),
            _ => None,
        })
        .collect();
    let mut findings = BTreeMap::new();
    for e in &index.entries {
        let body = match e.kind {
            IndexKind::File if Candidate::of(e).is_some() => sources.get(e.path.as_str()),
            IndexKind::HardLink => None,
            _ => continue,
        };
        let read = match body {
            Some(path) => {
                std::fs::File::open(path).and_then(|mut f| read_entry(&mut findings, e, &mut f))
            }
            None => read_entry(&mut findings, e, &mut io::empty()),
        };
        if let Err(err) = read {
            tracing::debug!("SBOM of a written layer, {}: {err}", e.path);
            return;
        }
    }
    overlay::save_index(cache_dir, &info.digest, &index);
    save_findings(cache_dir, &info.diff_id, &findings);
}

/// One pass over a blob: its header index, and the package files' findings.
fn read_layer(
    blob: &Path,
    diff_id: &str,
) -> Result<(LayerIndex, BTreeMap<String, Finding>), SbomError> {
    let mut findings = BTreeMap::new();
    let index = overlay::read_index_with(blob, diff_id, &mut |e, body| {
        read_entry(&mut findings, e, body)
    })?;
    Ok((index, findings))
}

fn read_entry(
    findings: &mut BTreeMap<String, Finding>,
    e: &IndexEntry,
    body: &mut dyn Read,
) -> io::Result<()> {
    if e.kind == IndexKind::HardLink {
        // A hard link holds what its target (earlier in the same layer) holds.
        if let Some(found) = e.link.as_ref().and_then(|t| findings.get(t)).cloned() {
            findings.insert(e.path.clone(), found);
        }
        return Ok(());
    }
    let Some(candidate) = Candidate::of(e) else {
        return Ok(());
    };
    if e.size > candidate.max_size() {
        tracing::warn!(
            path = %e.path,
            size = e.size,
            "SBOM: not reading a file this big; its packages are not listed"
        );
        return Ok(());
    }
    let mut bytes = Vec::new();
    if candidate == Candidate::Binary {
        body.take(binary::ELF_MAGIC.len() as u64)
            .read_to_end(&mut bytes)?;
        if bytes != binary::ELF_MAGIC {
            return Ok(());
        }
    }
    body.take(candidate.max_size()).read_to_end(&mut bytes)?;
    if let Some(found) = candidate.parse(&e.path, &bytes) {
        findings.insert(e.path.clone(), found);
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct CachedScan {
    version: u32,
    diff_id: String,
    findings: BTreeMap<String, Finding>,
}

/// `<cache>/sbom-layer/<hex>.json` for a layer's diff_id.
pub fn findings_path(cache_dir: &Path, diff_id: &str) -> Option<PathBuf> {
    let hex = crate::digest::hex_part(diff_id)?;
    Some(
        cache_dir
            .join(crate::cache::SBOM_LAYER_DIR)
            .join(format!("{hex}.json")),
    )
}

fn load_findings(cache_dir: &Path, diff_id: &str) -> Option<BTreeMap<String, Finding>> {
    let path = findings_path(cache_dir, diff_id)?;
    let scan: CachedScan = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let current = scan.version == SCAN_VERSION && scan.diff_id == diff_id;
    if current {
        crate::cache::touch(&path);
    }
    current.then_some(scan.findings)
}

/// The layer's stored scan as it is kept on disk, to share through the
/// registry cache; None when there is no current one.
pub fn stored_scan(cache_dir: &Path, diff_id: &str) -> Option<Vec<u8>> {
    load_findings(cache_dir, diff_id)?;
    std::fs::read(findings_path(cache_dir, diff_id)?).ok()
}

/// Keeps a shared scan of the layer `diff_id` as if it had been read here;
/// false (and nothing kept) when it is of another version or layer.
pub fn import_scan(cache_dir: &Path, diff_id: &str, bytes: &[u8]) -> bool {
    let Ok(scan) = serde_json::from_slice::<CachedScan>(bytes) else {
        return false;
    };
    if scan.version != SCAN_VERSION || scan.diff_id != diff_id {
        return false;
    }
    save_findings(cache_dir, diff_id, &scan.findings);
    true
}

/// A failure only costs reading the layer again next time.
fn save_findings(cache_dir: &Path, diff_id: &str, findings: &BTreeMap<String, Finding>) {
    let Some(path) = findings_path(cache_dir, diff_id) else {
        return;
    };
    let scan = CachedScan {
        version: SCAN_VERSION,
        diff_id: diff_id.to_string(),
        findings: findings.clone(),
    };
    let write =
        || -> io::Result<()> { crate::files::write_atomic(&path, &serde_json::to_vec(&scan)?) };
    if let Err(e) = write() {
        tracing::warn!("cannot write the SBOM scan {}: {e}", path.display());
    }
}
