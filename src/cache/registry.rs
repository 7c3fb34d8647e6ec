//! The build cache in a registry: which cache repository a build reads and
//! writes (`--cache-repo`, BuildKit's `--cache-from`/`--cache-to`,
//! `cache_repo` in `dockless.toml`), and the index it keeps there.
//!
//! The cache is one OCI artifact under one tag of the cache repository
//! (the ref's tag, [`DEFAULT_TAG`] when it names none): an image manifest
//! of artifactType [`ARTIFACT_TYPE`] whose config blob is a [`CacheIndex`]
//! (layer key → layer, RUN step key → what the step left) and whose layers
//! are every blob the index names, so the registry keeps them. A build
//! merges its entries into what the tag holds and puts the manifest back;
//! two writers at once: the last one wins, and the other's new entries
//! are left out until its next build. Only keys (sha256 of what a step
//! depends on, see `layers` and `build::run`), layer descriptors and, with
//! the SBOM on, each image layer's scan (package facts from its files) and
//! header index are stored: never a command, an argument, an environment
//! or a secret.

use crate::layer::LayerInfo;
use crate::name::Reference;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The artifactType and the config media type of the cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.dockless.cache.v1+json";
/// A RUN layer's header index (see `rootfs::overlay`), so a hit applies
/// the layer to the build's filesystem model without downloading it.
pub const HEADER_INDEX_MEDIA_TYPE: &str = "application/vnd.dockless.cache.layer-index.v1+json";
/// An image layer's stored SBOM scan (`sbom-layer/<hex>.json`: package
/// facts read from the layer's files, nothing else).
pub const SCAN_MEDIA_TYPE: &str = "application/vnd.dockless.cache.layer-scan.v1+json";
/// The tag the cache lives under when the ref names none.
pub const DEFAULT_TAG: &str = "dockless-cache";
/// Entries of each kind kept in the index; the least recently written go first.
/// (2048 of each keep the index and the manifest well under the 4 MiB a
/// registry document may have.)
pub const MAX_ENTRIES: usize = 2048;

/// Which layers `--cache-to` exports (BuildKit's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportMode {
    /// Only the layers of the image built.
    Min,
    /// Every stage's layers.
    Max,
}

/// Where a build reads its registry cache from and writes it to.
#[derive(Debug, Clone, Default)]
pub struct CacheSpec {
    pub from: Option<Reference>,
    pub to: Option<(Reference, ExportMode)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag} {text:?}: {problem}")]
pub struct CacheSpecError {
    pub flag: String,
    pub text: String,
    pub problem: String,
}

fn spec_error(flag: &str, text: &str, problem: impl Into<String>) -> CacheSpecError {
    CacheSpecError {
        flag: flag.to_string(),
        text: text.to_string(),
        problem: problem.into(),
    }
}

/// `REGISTRY/REPO[:TAG]` as a cache ref: a tag ([`DEFAULT_TAG`] when none), never a digest.
pub fn parse_repo(flag: &str, text: &str) -> Result<Reference, CacheSpecError> {
    let fix = "give REGISTRY/REPO or REGISTRY/REPO:TAG, e.g. registry.example.com/team/cache";
    let parsed =
        Reference::parse(text).map_err(|e| spec_error(flag, text, format!("{e}; {fix}")))?;
    if parsed.digest().is_some() {
        return Err(spec_error(
            flag,
            text,
            format!("a cache is written under a tag, not a digest; {fix}"),
        ));
    }
    if parsed.tag().is_some() {
        return Ok(parsed);
    }
    Reference::parse_tag(&format!("{text}:{DEFAULT_TAG}"))
        .map_err(|e| spec_error(flag, text, format!("{e}; {fix}")))
}

/// BuildKit's `type=registry,ref=REF[,mode=min|max]` (`mode` only for `--cache-to`).
pub fn parse_buildkit(flag: &str, text: &str) -> Result<(Reference, ExportMode), CacheSpecError> {
    let fix = "write type=registry,ref=REGISTRY/REPO[:TAG]";
    let mut pairs = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(spec_error(
                flag,
                text,
                format!("{part:?} is not KEY=VALUE; {fix}"),
            ));
        };
        pairs.push((key.trim(), value.trim()));
    }
    // The type first: another type's keys are not worth naming.
    match pairs.iter().find(|(k, _)| *k == "type") {
        Some((_, "registry")) => {}
        Some((_, other)) => {
            return Err(spec_error(
                flag,
                text,
                format!(
                    "type={other} is not supported: dockless shares its cache only through a \
                     registry (the local cache is always on); {fix}"
                ),
            ))
        }
        None => return Err(spec_error(flag, text, format!("no type; {fix}"))),
    }
    let (mut reference, mut mode) = (None, ExportMode::Min);
    for (key, value) in pairs {
        match key {
            "type" => {}
            "ref" => reference = Some(parse_repo(flag, value)?),
            "mode" if flag == "--cache-to" => {
                mode = match value {
                    "min" => ExportMode::Min,
                    "max" => ExportMode::Max,
                    other => {
                        return Err(spec_error(
                            flag,
                            text,
                            format!("mode={other}: the modes are min and max"),
                        ))
                    }
                }
            }
            // A cache that cannot be read or written is always only a warning.
            "ignore-error" => {}
            other => {
                let known = match flag {
                    "--cache-to" => "type, ref, mode and ignore-error",
                    _ => "type, ref and ignore-error",
                };
                return Err(spec_error(
                    flag,
                    text,
                    format!("unknown key {other:?}: dockless knows {known}"),
                ));
            }
        }
    }
    let reference = reference.ok_or_else(|| spec_error(flag, text, format!("no ref; {fix}")))?;
    Ok((reference, mode))
}

impl CacheSpec {
    /// The spec the flags give: `--cache-repo` reads and writes one
    /// repository (all layers, as kaniko does); `--cache-from` and
    /// `--cache-to` name each side.
    pub fn from_flags(
        cache_repo: Option<&str>,
        cache_from: &[String],
        cache_to: &[String],
    ) -> Result<CacheSpec, CacheSpecError> {
        fn once<'a>(
            flag: &str,
            values: &'a [String],
        ) -> Result<Option<&'a String>, CacheSpecError> {
            match values {
                [_, second, ..] => Err(spec_error(
                    flag,
                    second,
                    "given twice; dockless reads and writes one registry cache",
                )),
                _ => Ok(values.first()),
            }
        }
        let (from, to) = (
            once("--cache-from", cache_from)?,
            once("--cache-to", cache_to)?,
        );
        if let Some(repo) = cache_repo {
            if from.is_some() || to.is_some() {
                return Err(spec_error(
                    "--cache-repo",
                    repo,
                    "give --cache-repo, or --cache-from and --cache-to, not both",
                ));
            }
            return CacheSpec::repo(repo, "--cache-repo");
        }
        Ok(CacheSpec {
            from: from
                .map(|t| parse_buildkit("--cache-from", t).map(|(r, _)| r))
                .transpose()?,
            to: to.map(|t| parse_buildkit("--cache-to", t)).transpose()?,
        })
    }

    /// One repository read and written, every layer exported.
    pub fn repo(text: &str, what: &str) -> Result<CacheSpec, CacheSpecError> {
        let reference = parse_repo(what, text)?;
        Ok(CacheSpec {
            from: Some(reference.clone()),
            to: Some((reference, ExportMode::Max)),
        })
    }

    /// The service's `cache_repo` for one image: without a tag of its own,
    /// each image repository gets its tag (`team/app` → `team-app`), so
    /// builds of different repositories never overwrite each other's index.
    pub fn for_image(text: &str, image: &Reference) -> Result<CacheSpec, CacheSpecError> {
        let given = Reference::parse(text).ok();
        if given.as_ref().is_some_and(|r| r.tag().is_some()) {
            return CacheSpec::repo(text, "cache_repo");
        }
        let tag: String = image
            .repository()
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '-' => c,
                _ => '-',
            })
            .take(128)
            .collect();
        CacheSpec::repo(&format!("{text}:{tag}"), "cache_repo")
    }

    pub fn is_off(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A blob the index names beside a layer: its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

/// A COPY or ADD layer under its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    pub layer: LayerInfo,
    /// Seconds since the epoch: which entries go first when the index is full.
    pub written: u64,
}

/// What a RUN step left under its key: a layer and its header index, or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedStep {
    pub layer: Option<LayerInfo>,
    pub header_index: Option<BlobRef>,
    pub written: u64,
}

/// What the SBOM needs of an image layer (its scan and its header index),
/// so a build on a fresh replica scans without reading the layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedScan {
    /// The layer's blob digest, which its header index is kept under.
    pub layer: String,
    pub scan: BlobRef,
    pub header_index: BlobRef,
    pub written: u64,
}

/// The config blob of the cache artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheIndex {
    pub version: u32,
    #[serde(default)]
    pub layers: BTreeMap<String, CachedLayer>,
    #[serde(default)]
    pub steps: BTreeMap<String, CachedStep>,
    /// Image layers' scans by diff_id (absent when the SBOM is off).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scans: BTreeMap<String, CachedScan>,
}

/// Why a cache artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CacheIndexError {
    #[error("not a dockless cache (artifactType {0:?}, expected {ARTIFACT_TYPE})")]
    NotCache(String),
    #[error("unreadable cache index: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cache index version {0} is not 1; a newer dockless wrote it")]
    Version(u32),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestHead {
    #[serde(default)]
    artifact_type: String,
    config: BlobRef,
}

/// The config blob a cache manifest names, once it is known to be a cache.
pub fn config_of(manifest: &[u8]) -> Result<BlobRef, CacheIndexError> {
    let head: ManifestHead = serde_json::from_slice(manifest)?;
    if head.artifact_type != ARTIFACT_TYPE {
        return Err(CacheIndexError::NotCache(head.artifact_type));
    }
    Ok(head.config)
}

impl CacheIndex {
    pub fn new() -> CacheIndex {
        CacheIndex {
            version: 1,
            ..CacheIndex::default()
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<CacheIndex, CacheIndexError> {
        let index: CacheIndex = serde_json::from_slice(bytes)?;
        if index.version != 1 {
            return Err(CacheIndexError::Version(index.version));
        }
        Ok(index)
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty() && self.steps.is_empty()
    }

    pub fn add_layer(&mut self, key: &str, layer: &LayerInfo) {
        let entry = CachedLayer {
            layer: layer.clone(),
            written: now_secs(),
        };
        self.layers.insert(key.to_string(), entry);
    }

    pub fn add_step(&mut self, key: &str, layer: Option<&LayerInfo>, header: Option<BlobRef>) {
        let entry = CachedStep {
            layer: layer.cloned(),
            header_index: header,
            written: now_secs(),
        };
        self.steps.insert(key.to_string(), entry);
    }

    pub fn add_scan(&mut self, diff_id: &str, layer: &str, scan: BlobRef, header_index: BlobRef) {
        let entry = CachedScan {
            layer: layer.to_string(),
            scan,
            header_index,
            written: now_secs(),
        };
        self.scans.insert(diff_id.to_string(), entry);
    }

    /// Whether `other` holds every entry of this one, with the same layers.
    pub fn is_within(&self, other: &CacheIndex) -> bool {
        let layers = self
            .layers
            .iter()
            .all(|(k, v)| other.layers.get(k).is_some_and(|o| o.layer == v.layer));
        let steps = self
            .steps
            .iter()
            .all(|(k, v)| other.steps.get(k).is_some_and(|o| o.layer == v.layer));
        let scans = self.scans.iter().all(|(k, v)| {
            let same = |o: &CachedScan| (&o.scan, &o.header_index) == (&v.scan, &v.header_index);
            other.scans.get(k).is_some_and(same)
        });
        layers && steps && scans
    }

    /// This build's entries over what the cache held, bounded to [`MAX_ENTRIES`] of each kind.
    pub fn merged_over(&self, older: CacheIndex) -> CacheIndex {
        let mut merged = older;
        merged.version = 1;
        merged.layers.extend(self.layers.clone());
        merged.steps.extend(self.steps.clone());
        merged.scans.extend(self.scans.clone());
        keep_newest(&mut merged.layers, |e| e.written);
        keep_newest(&mut merged.steps, |e| e.written);
        keep_newest(&mut merged.scans, |e| e.written);
        merged
    }

    /// Only entries whose layer is one of `digests` (or that left no layer).
    pub fn only_layers(&self, digests: &BTreeSet<&str>) -> CacheIndex {
        let keep = |l: &LayerInfo| digests.contains(l.digest.as_str());
        CacheIndex {
            version: self.version,
            layers: self
                .layers
                .iter()
                .filter(|(_, e)| keep(&e.layer))
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
            steps: self
                .steps
                .iter()
                .filter(|(_, e)| e.layer.as_ref().is_none_or(keep))
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
            scans: self
                .scans
                .iter()
                .filter(|(_, e)| digests.contains(e.layer.as_str()))
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
        }
    }

    /// Every blob the index names, each once: (digest, size, media type).
    pub fn blobs(&self) -> Vec<(String, u64, String)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let layers = self.layers.values().map(|e| &e.layer);
        for l in layers.chain(self.steps.values().filter_map(|e| e.layer.as_ref())) {
            if seen.insert(l.digest.clone()) {
                out.push((l.digest.clone(), l.size, l.media_type.clone()));
            }
        }
        let headers = self.steps.values().filter_map(|e| e.header_index.as_ref());
        let headers = headers.chain(self.scans.values().map(|e| &e.header_index));
        let scans = self.scans.values().map(|e| (&e.scan, SCAN_MEDIA_TYPE));
        for (b, media_type) in headers.map(|h| (h, HEADER_INDEX_MEDIA_TYPE)).chain(scans) {
            if seen.insert(b.digest.clone()) {
                out.push((b.digest.clone(), b.size, media_type.to_string()));
            }
        }
        out
    }

    /// The cache artifact's manifest, its config being this index stored as `config`.
    pub fn manifest(&self, config: &BlobRef) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = self
            .blobs()
            .into_iter()
            .map(|(digest, size, media_type)| {
                serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::image::MEDIA_TYPE_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": ARTIFACT_TYPE, "digest": config.digest, "size": config.size},
            "layers": layers,
        });
        serde_json::to_vec(&manifest).unwrap_or_default()
    }
}

fn keep_newest<T>(entries: &mut BTreeMap<String, T>, written: impl Fn(&T) -> u64) {
    if entries.len() <= MAX_ENTRIES {
        return;
    }
    let mut times: Vec<u64> = entries.values().map(&written).collect();
    times.sort_unstable_by(|a, b| b.cmp(a));
    let cut = times[MAX_ENTRIES - 1];
    entries.retain(|_, e| written(e) >= cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> LayerInfo {
        LayerInfo {
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            diff_id: format!("sha256:{}", "e".repeat(64)),
            size: n as u64,
            uncompressed_size: 10,
            media_type: crate::layer::MEDIA_TYPE_TAR_GZIP.into(),
        }
    }

    #[test]
    fn cache_repo_gets_the_default_tag_and_refuses_a_digest() {
        let r = parse_repo("--cache-repo", "localhost:5000/team/cache").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.identifier()),
            ("localhost:5000", "team/cache", DEFAULT_TAG)
        );
        let tagged = parse_repo("--cache-repo", "localhost:5000/cache:main").unwrap();
        assert_eq!(tagged.identifier(), "main");
        let pinned = format!("localhost:5000/cache@sha256:{}", "a".repeat(64));
        let e = parse_repo("--cache-repo", &pinned).unwrap_err();
        assert!(e.to_string().contains("not a digest"), "{e}");
    }

    #[test]
    fn buildkit_specs_parse_and_bad_ones_name_the_flag_and_the_fix() {
        let (r, mode) =
            parse_buildkit("--cache-to", "type=registry,ref=h:5000/c:t,mode=max").unwrap();
        assert_eq!((r.identifier(), mode), ("t", ExportMode::Max));
        let (_, mode) = parse_buildkit("--cache-to", "type=registry,ref=h:5000/c").unwrap();
        assert_eq!(mode, ExportMode::Min);
        let e = parse_buildkit("--cache-from", "type=local,src=/tmp/x").unwrap_err();
        assert!(
            e.to_string().starts_with("--cache-from \"type=local"),
            "{e}"
        );
        assert!(e.to_string().contains("type=registry,ref="), "{e}");
        let e = parse_buildkit("--cache-to", "type=registry,ref=h/c,compression=zstd").unwrap_err();
        assert!(e.to_string().contains("unknown key \"compression\""), "{e}");
        let e = parse_buildkit("--cache-from", "type=registry,ref=h/c,mode=max").unwrap_err();
        assert!(e.to_string().contains("unknown key \"mode\""), "{e}");
        let e = parse_buildkit("--cache-to", "type=registry,ref=h/c,mode=all").unwrap_err();
        assert!(e.to_string().contains("min and max"), "{e}");
        let e = parse_buildkit("--cache-from", "ref=h/c").unwrap_err();
        assert!(e.to_string().contains("no type"), "{e}");
        let e = parse_buildkit("--cache-from", "type=registry").unwrap_err();
        assert!(e.to_string().contains("no ref"), "{e}");
    }

    #[test]
    fn flags_combine_into_one_spec() {
        let spec = CacheSpec::from_flags(Some("h:5000/c"), &[], &[]).unwrap();
        assert_eq!(spec.from.unwrap().repository(), "c");
        assert_eq!(spec.to.unwrap().1, ExportMode::Max);
        let from = vec!["type=registry,ref=h:5000/a".to_string()];
        let spec = CacheSpec::from_flags(None, &from, &[]).unwrap();
        assert!(spec.to.is_none() && spec.from.is_some());
        assert!(CacheSpec::from_flags(Some("h/c"), &from, &[]).is_err());
        let twice = vec![from[0].clone(), from[0].clone()];
        assert!(CacheSpec::from_flags(None, &twice, &[]).is_err());
        assert!(CacheSpec::from_flags(None, &[], &[]).unwrap().is_off());
    }

    #[test]
    fn the_service_gives_each_image_repository_its_own_tag() {
        let image = Reference::parse_tag("reg:5000/team/app:v1").unwrap();
        let spec = CacheSpec::for_image("reg:5000/cache", &image).unwrap();
        assert_eq!(spec.from.unwrap().identifier(), "team-app");
        let spec = CacheSpec::for_image("reg:5000/cache:all", &image).unwrap();
        assert_eq!(spec.to.unwrap().0.identifier(), "all");
        let e = CacheSpec::for_image("reg:5000/Bad Name", &image).unwrap_err();
        assert!(e.to_string().starts_with("cache_repo"), "{e}");
    }

    #[test]
    fn merging_keeps_this_builds_entries_and_the_manifest_names_every_blob_once() {
        let mut old = CacheIndex::new();
        old.add_layer("k1", &layer(1));
        old.add_step("s1", Some(&layer(2)), None);
        let mut new = CacheIndex::new();
        new.add_layer("k1", &layer(3));
        let header = BlobRef {
            digest: format!("sha256:{}", "9".repeat(64)),
            size: 5,
        };
        new.add_step("s2", Some(&layer(3)), Some(header.clone()));
        new.add_step("s3", None, None);
        assert!(!new.is_within(&old));
        let merged = new.merged_over(old);
        assert!(new.is_within(&merged));
        assert_eq!(merged.layers["k1"].layer, layer(3));
        assert_eq!(merged.steps.len(), 3);
        let digests: Vec<String> = merged.blobs().into_iter().map(|b| b.0).collect();
        assert_eq!(digests, [layer(3).digest, layer(2).digest, header.digest]);
        let config = BlobRef {
            digest: format!("sha256:{}", "c".repeat(64)),
            size: 1,
        };
        let manifest = merged.manifest(&config);
        assert_eq!(config_of(&manifest).unwrap(), config);
        let round = CacheIndex::parse(&serde_json::to_vec(&merged).unwrap()).unwrap();
        assert_eq!(round, merged);
    }

    #[test]
    fn the_index_keeps_the_newest_entries() {
        let mut index = CacheIndex::new();
        for i in 0..MAX_ENTRIES + 10 {
            index.layers.insert(
                format!("k{i}"),
                CachedLayer {
                    layer: layer(1),
                    written: i as u64,
                },
            );
        }
        let bounded = CacheIndex::new().merged_over(index);
        assert_eq!(bounded.layers.len(), MAX_ENTRIES);
        assert!(!bounded.layers.contains_key("k0"));
    }

    #[test]
    fn min_mode_keeps_entries_of_the_image_only() {
        let mut index = CacheIndex::new();
        index.add_layer("a", &layer(1));
        index.add_layer("b", &layer(2));
        index.add_step("c", None, None);
        let first = layer(1);
        let keep = BTreeSet::from([first.digest.as_str()]);
        let min = index.only_layers(&keep);
        assert_eq!(min.layers.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(min.steps.len(), 1);
    }

    #[test]
    fn scans_are_merged_listed_and_kept_for_the_image_layers_only() {
        let blob = |n: u8| BlobRef {
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size: n as u64,
        };
        let mut index = CacheIndex::new();
        let (kept, dropped) = (layer(1), layer(2));
        index.add_scan("sha256:d1", &kept.digest, blob(10), blob(11));
        index.add_scan("sha256:d2", &dropped.digest, blob(12), blob(13));
        let blobs = index.blobs();
        let scan = blobs.iter().find(|b| b.0 == blob(10).digest).unwrap();
        assert_eq!(scan.2, SCAN_MEDIA_TYPE);
        let header = blobs.iter().find(|b| b.0 == blob(11).digest).unwrap();
        assert_eq!(header.2, HEADER_INDEX_MEDIA_TYPE);
        let min = index.only_layers(&BTreeSet::from([kept.digest.as_str()]));
        assert_eq!(min.scans.keys().collect::<Vec<_>>(), ["sha256:d1"]);
        let merged = min.merged_over(CacheIndex::new());
        assert!(min.is_within(&merged) && !index.is_within(&merged));
        // An index without scans is written as before.
        let plain = serde_json::to_string(&CacheIndex::new()).unwrap();
        assert!(!plain.contains("scans"), "{plain}");
    }

    #[test]
    fn an_image_manifest_is_not_a_cache() {
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:x","size":1},"layers":[]}"#;
        assert!(matches!(config_of(m), Err(CacheIndexError::NotCache(_))));
    }
}
