//! The image model: a config plus an ordered list of layers, and its
//! canonical JSON (config and manifest) whose bytes decide the digests.

use crate::layer::LayerInfo;
use crate::platform::Platform;
use crate::store::{BlobStore, StoreError};
use oci_spec::image::{Descriptor, Digest, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The PATH BuildKit gives images that start from scratch.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("image manifest: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Serializes as `{}`, the value Docker uses in port and volume sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
}

/// Docker writes `null` for empty fields; read it as the empty value.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The container defaults of an image config. Own type rather than oci-spec's
/// because Docker's Healthcheck, OnBuild and Shell fields must survive, and
/// BTreeMaps keep the JSON in one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shell: Vec<String>,
}

impl ContainerConfig {
    /// Sets or replaces one `KEY=value` in Env, keeping the order of first definition.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self.env.iter_mut().find(|e| env_key(e) == key) {
            Some(existing) => *existing = entry,
            None => self.env.push(entry),
        }
    }

    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|e| env_key(e) == key)
            .map(|e| e.get(key.len() + 1..).unwrap_or(""))
    }
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map(|(k, _)| k).unwrap_or(entry)
}

/// The config's `rootfs`: the diff IDs of the image's layers, bottom first
/// (the filesystem itself is modelled by [`crate::rootfs::RootFs`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub config: ContainerConfig,
    pub rootfs: ConfigRootFs,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

impl ImageConfig {
    /// The config BuildKit starts from for `FROM scratch`.
    pub fn scratch(platform: &Platform, created: &str) -> ImageConfig {
        ImageConfig {
            created: Some(created.into()),
            author: None,
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config: ContainerConfig {
                env: vec![DEFAULT_PATH_ENV.into()],
                working_dir: "/".into(),
                ..ContainerConfig::default()
            },
            rootfs: ConfigRootFs {
                kind: "layers".into(),
                diff_ids: Vec::new(),
            },
            history: Vec::new(),
        }
    }
}

/// The registry image a build started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseInfo {
    pub registry: String,
    pub repository: String,
    /// Normalised reference, e.g. `docker.io/library/python:3.12`.
    pub name: String,
    /// What the reference resolved to (an index or a manifest).
    pub digest: String,
    /// How many of the image's first layers came from the base.
    pub layer_count: usize,
}

pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const ANNOTATION_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// Manifests, indexes and configs are small; anything bigger is not one.
pub(crate) const MAX_DOCUMENT: usize = 4 << 20;

/// A descriptor inside a [`Document`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DocDescriptor {
    #[serde(default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) platform: Option<DocPlatform>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DocPlatform {
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
}

/// A manifest or an index read from elsewhere (a registry, a layout),
/// leniently and only for the fields dockless uses: which fields are present
/// tells the two apart.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Document {
    #[serde(default)]
    pub(crate) media_type: Option<String>,
    #[serde(default)]
    pub(crate) config: Option<DocDescriptor>,
    #[serde(default)]
    pub(crate) layers: Option<Vec<DocDescriptor>>,
    #[serde(default)]
    pub(crate) manifests: Option<Vec<DocDescriptor>>,
}

/// An image being assembled: its config and its layers, in order.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: ImageConfig,
    pub layers: Vec<LayerInfo>,
    pub base: Option<BaseInfo>,
}

/// An image whose config and manifest are in the blob store.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config_digest: String,
    pub config_size: u64,
    pub layers: Vec<LayerInfo>,
    pub platform: Platform,
    pub base: Option<BaseInfo>,
    /// The registry build cache that holds layers above the base which
    /// the store lacks (a cache hit only checked the blob is there).
    pub cache_source: Option<crate::name::Reference>,
}

impl BuiltImage {
    /// Every blob the image needs, manifest last.
    pub fn blob_digests(&self) -> Vec<String> {
        let mut digests = vec![self.config_digest.clone()];
        digests.extend(self.layers.iter().map(|l| l.digest.clone()));
        digests.push(self.manifest_digest.clone());
        digests
    }
}

impl Image {
    pub fn new(config: ImageConfig) -> Image {
        Image {
            config,
            layers: Vec::new(),
            base: None,
        }
    }

    pub fn add_layer(&mut self, layer: LayerInfo, history: History) {
        self.config.rootfs.diff_ids.push(layer.diff_id.clone());
        self.config.history.push(history);
        self.layers.push(layer);
    }

    pub fn add_history(&mut self, history: History) {
        self.config.history.push(History {
            empty_layer: true,
            ..history
        });
    }

    pub fn platform(&self) -> Platform {
        Platform {
            os: self.config.os.clone(),
            architecture: self.config.architecture.clone(),
            variant: self.config.variant.clone(),
        }
    }

    /// Writes the config and manifest blobs and returns the finished image.
    pub fn finish(&self, store: &BlobStore) -> Result<BuiltImage, ImageError> {
        let config = canonical_json(&self.config)?;
        let config_digest = store.put_bytes(&config)?;
        let layers = self
            .layers
            .iter()
            .map(|l| descriptor(&l.media_type, l.size, &l.digest))
            .collect::<Result<Vec<_>, _>>()?;
        let mut manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MEDIA_TYPE_CONFIG,
                config.len() as u64,
                &config_digest,
            )?)
            .layers(layers)
            .build()?;
        if let Some(base) = &self.base {
            manifest.set_annotations(Some(std::collections::HashMap::from([
                (ANNOTATION_BASE_NAME.to_string(), base.name.clone()),
                (ANNOTATION_BASE_DIGEST.to_string(), base.digest.clone()),
            ])));
        }
        let manifest = canonical_json(&manifest)?;
        let manifest_digest = store.put_bytes(&manifest)?;
        Ok(BuiltImage {
            manifest,
            manifest_digest,
            config_digest,
            config_size: config.len() as u64,
            layers: self.layers.clone(),
            platform: self.platform(),
            base: self.base.clone(),
            cache_source: None,
        })
    }
}

/// One image per platform under an OCI image index.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub images: Vec<BuiltImage>,
}

/// What a build produced: one image, or an index of per-platform images.
#[derive(Debug, Clone)]
pub enum Artifact {
    Image(Box<BuiltImage>),
    Index(BuiltIndex),
}

impl Artifact {
    pub fn digest(&self) -> &str {
        match self {
            Artifact::Image(i) => &i.manifest_digest,
            Artifact::Index(i) => &i.digest,
        }
    }

    pub fn media_type(&self) -> &'static str {
        match self {
            Artifact::Image(_) => MEDIA_TYPE_MANIFEST,
            Artifact::Index(_) => MEDIA_TYPE_INDEX,
        }
    }

    /// The manifest or index bytes.
    pub fn manifest(&self) -> &[u8] {
        match self {
            Artifact::Image(i) => &i.manifest,
            Artifact::Index(i) => &i.manifest,
        }
    }

    /// Every blob, each once, the top manifest or index last.
    pub fn blob_digests(&self) -> Vec<String> {
        match self {
            Artifact::Image(i) => i.blob_digests(),
            Artifact::Index(index) => {
                let mut all: Vec<String> = Vec::new();
                for image in &index.images {
                    for d in image.blob_digests() {
                        if !all.contains(&d) {
                            all.push(d);
                        }
                    }
                }
                all.push(index.digest.clone());
                all
            }
        }
    }
}

/// Writes an OCI index over per-platform images into the store.
pub fn build_index(images: Vec<BuiltImage>, store: &BlobStore) -> Result<BuiltIndex, ImageError> {
    let mut manifests = Vec::new();
    for image in &images {
        let mut d = descriptor(
            MEDIA_TYPE_MANIFEST,
            image.manifest.len() as u64,
            &image.manifest_digest,
        )?;
        let mut platform = oci_spec::image::PlatformBuilder::default()
            .os(oci_spec::image::Os::from(image.platform.os.as_str()))
            .architecture(oci_spec::image::Arch::from(
                image.platform.architecture.as_str(),
            ));
        if let Some(v) = &image.platform.variant {
            platform = platform.variant(v.clone());
        }
        d.set_platform(Some(platform.build()?));
        manifests.push(d);
    }
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?;
    let manifest = canonical_json(&index)?;
    let digest = store.put_bytes(&manifest)?;
    Ok(BuiltIndex {
        manifest,
        digest,
        images,
    })
}

pub fn descriptor(media_type: &str, size: u64, digest: &str) -> Result<Descriptor, ImageError> {
    let digest = Digest::from_str(digest)?;
    Ok(Descriptor::new(MediaType::from(media_type), size, digest))
}

/// Compact JSON with object keys sorted at every level, so that maps whose
/// iteration order is random (oci-spec's HashMaps) still give stable bytes.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let value = sort_keys(serde_json::to_value(value)?);
    serde_json::to_vec(&value)
}

fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// RFC 3339 UTC for a Unix timestamp, without pulling in a date crate for one format.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let mut m = std::collections::HashMap::new();
        for k in ["zeta", "alpha", "mid"] {
            m.insert(k.to_string(), serde_json::json!({"b": 1, "a": 2}));
        }
        let bytes = canonical_json(&m).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"alpha":{"a":2,"b":1},"mid":{"a":2,"b":1},"zeta":{"a":2,"b":1}}"#
        );
    }

    #[test]
    fn scratch_config_matches_buildkit_defaults() {
        let cfg = ImageConfig::scratch(
            &Platform::parse("linux/amd64").unwrap(),
            "1970-01-01T00:00:00Z",
        );
        let json: serde_json::Value =
            serde_json::from_slice(&canonical_json(&cfg).unwrap()).unwrap();
        assert_eq!(json["config"]["WorkingDir"], "/");
        assert_eq!(json["config"]["Env"][0], DEFAULT_PATH_ENV);
        assert_eq!(json["rootfs"]["type"], "layers");
        assert_eq!(json["architecture"], "amd64");
    }

    #[test]
    fn docker_nulls_read_as_empty() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Cmd":null,"Env":null,"Labels":null,"ExposedPorts":null,"Volumes":null,"OnBuild":null},"rootfs":{"type":"layers","diff_ids":[]},"history":null}"#;
        let cfg: ImageConfig = serde_json::from_str(json).unwrap();
        assert!(cfg.config.cmd.is_none() && cfg.config.env.is_empty() && cfg.history.is_empty());
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut c = ContainerConfig::default();
        c.set_env("A", "1");
        c.set_env("B", "2");
        c.set_env("A", "3");
        assert_eq!(c.env, vec!["A=3", "B=2"]);
        assert_eq!(c.env_value("B"), Some("2"));
    }

    #[test]
    fn manifest_digest_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut cfg = ImageConfig::scratch(&Platform::host(), "1970-01-01T00:00:00Z");
        cfg.config.labels.insert("b".into(), "2".into());
        cfg.config.labels.insert("a".into(), "1".into());
        let a = Image::new(cfg.clone()).finish(&store).unwrap();
        let b = Image::new(cfg).finish(&store).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["mediaType"], MEDIA_TYPE_MANIFEST);
        assert_eq!(m["config"]["mediaType"], MEDIA_TYPE_CONFIG);
    }
}
