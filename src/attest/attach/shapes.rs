//! The bytes of attachment manifests: OCI 1.1 artifacts, cosign's
//! manifests (go-containerregistry's empty image plus layers), and the
//! merges into what a tag already holds.

use super::{CosignTag, SubjectImage, ANNOTATION_SIGNATURE, ANNOTATION_SIGNER};
use crate::image::{MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// A blob and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: crate::digest::sha256(&bytes),
            bytes,
        }
    }

    fn descriptor(&self, annotations: BTreeMap<String, String>) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            size: self.bytes.len() as u64,
            digest: self.digest.clone(),
            artifact_type: None,
            annotations,
        }
    }
}

/// A layer of an attachment: a blob and its descriptor's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub blob: Blob,
    pub annotations: BTreeMap<String, String>,
}

impl Layer {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Layer {
        Layer {
            blob: Blob::new(media_type, bytes),
            annotations: BTreeMap::new(),
        }
    }

    pub fn annotate(mut self, key: &str, value: &str) -> Layer {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    fn descriptor(&self) -> Descriptor {
        self.blob.descriptor(self.annotations.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    size: u64,
    digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc<'a> {
    schema_version: u32,
    media_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    config: Descriptor,
    layers: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<Descriptor>,
}

/// A manifest to put, with the blobs it needs that are new.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub artifact_type: Option<String>,
    /// The layers' annotations, which the referrers index repeats.
    pub annotations: BTreeMap<String, String>,
    pub blobs: Vec<Blob>,
}

impl Manifest {
    /// An OCI 1.1 artifact about `subject`: empty config, `layers`.
    pub fn artifact(artifact_type: &str, subject: &SubjectImage, layers: Vec<Layer>) -> Manifest {
        let config = Blob::new(MEDIA_TYPE_EMPTY, b"{}".to_vec());
        let doc = ManifestDoc {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST,
            artifact_type: Some(artifact_type),
            config: config.descriptor(BTreeMap::new()),
            layers: layers.iter().map(|l| to_value(&l.descriptor())).collect(),
            subject: Some(Descriptor {
                media_type: subject.media_type.clone(),
                size: subject.size,
                digest: subject.digest.clone(),
                artifact_type: None,
                annotations: BTreeMap::new(),
            }),
        };
        let annotations = layers.iter().flat_map(|l| l.annotations.clone()).collect();
        let mut blobs = vec![config];
        blobs.extend(layers.into_iter().map(|l| l.blob));
        Manifest::from_doc(&doc, Some(artifact_type), annotations, blobs)
    }

    fn from_doc(
        doc: &ManifestDoc<'_>,
        artifact_type: Option<&str>,
        annotations: BTreeMap<String, String>,
        blobs: Vec<Blob>,
    ) -> Manifest {
        let bytes = serde_json::to_vec(doc).unwrap_or_default();
        Manifest {
            digest: crate::digest::sha256(&bytes),
            bytes,
            artifact_type: artifact_type.map(str::to_string),
            annotations,
            blobs,
        }
    }

    /// The descriptor a referrers index lists for it.
    fn referrer_descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: MEDIA_TYPE_MANIFEST.to_string(),
            size: self.bytes.len() as u64,
            digest: self.digest.clone(),
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

fn to_value(d: &Descriptor) -> Value {
    serde_json::to_value(d).unwrap_or(Value::Null)
}

/// go-containerregistry's `empty.Image` with layers appended, as cosign
/// writes its config (its verifiers never read it), field order and all.
fn cosign_config(diff_ids: &[&str]) -> Vec<u8> {
    let created = "0001-01-01T00:00:00Z";
    let history: Vec<Value> = diff_ids
        .iter()
        .map(|_| serde_json::json!({ "created": created }))
        .collect();
    format!(
        r#"{{"architecture":"","created":"{created}","history":{},"os":"","rootfs":{{"type":"layers","diff_ids":{}}},"config":{{}}}}"#,
        Value::Array(history),
        serde_json::to_string(diff_ids).unwrap_or_default()
    )
    .into_bytes()
}

#[derive(Deserialize)]
struct Existing {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Value>>,
}

fn parse_existing(bytes: &[u8]) -> Result<Existing, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a manifest or index: {e}"))
}

/// The referrers index with `new` listed: what the tag holds (an empty
/// index when nothing), plus each artifact it does not list yet.
pub fn merge_referrers(existing: Option<&[u8]>, new: &[Manifest]) -> Result<Vec<u8>, String> {
    let mut manifests = match existing {
        None => Vec::new(),
        Some(bytes) => {
            let doc = parse_existing(bytes)?;
            match (doc.media_type.as_deref(), doc.manifests) {
                (Some(MEDIA_TYPE_INDEX) | None, Some(m)) => m,
                _ => return Err("the tag holds something other than an image index".into()),
            }
        }
    };
    for m in new {
        let listed = manifests
            .iter()
            .any(|d| d.get("digest").and_then(Value::as_str) == Some(m.digest.as_str()));
        if !listed {
            manifests.push(to_value(&m.referrer_descriptor()));
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": manifests,
    });
    Ok(serde_json::to_vec(&index).unwrap_or_default())
}

/// A cosign manifest for `tag` holding `ours` and what the tag already
/// holds that they do not replace: `.sig` keeps every other signature
/// (and never repeats one), `.att` replaces attestations of the same
/// predicate type by the same key (cosign's `--replace`, limited to that
/// signer so other keys' attestations stay), `.sbom` holds ours alone.
pub fn merge_cosign(
    existing: Option<&[u8]>,
    ours: &[Layer],
    tag: CosignTag,
) -> Result<Manifest, String> {
    let kept: Vec<Descriptor> = match existing {
        Some(bytes) => parse_existing(bytes)?.layers.unwrap_or_default(),
        None => Vec::new(),
    };
    let mine: Vec<Descriptor> = ours.iter().map(Layer::descriptor).collect();
    let replaced = |d: &Descriptor| match tag {
        CosignTag::Sig => mine
            .iter()
            .any(|m| m.digest == d.digest && same(m, d, ANNOTATION_SIGNATURE)),
        CosignTag::Att => mine
            .iter()
            .any(|m| same(m, d, "predicateType") && same(m, d, ANNOTATION_SIGNER)),
        CosignTag::Sbom => true,
    };
    let mut layers: Vec<Descriptor> = kept.into_iter().filter(|d| !replaced(d)).collect();
    layers.extend(mine);
    let diff_ids: Vec<&str> = layers.iter().map(|d| d.digest.as_str()).collect();
    let config = Blob::new(MEDIA_TYPE_CONFIG, cosign_config(&diff_ids));
    let doc = ManifestDoc {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        artifact_type: None,
        config: config.descriptor(BTreeMap::new()),
        layers: layers.iter().map(to_value).collect(),
        subject: None,
    };
    let mut blobs = vec![config];
    blobs.extend(ours.iter().map(|l| l.blob.clone()));
    Ok(Manifest::from_doc(&doc, None, BTreeMap::new(), blobs))
}

fn same(a: &Descriptor, b: &Descriptor, key: &str) -> bool {
    a.annotations.get(key) == b.annotations.get(key)
}
