//! `dockless verify`: checks an image's cosign signatures (`.sig`) and
//! signed attestations (`.att`) against a public key, as `cosign verify
//! --key` and `cosign verify-attestation --key` do, and lists what its
//! referrers index holds.

use super::attach::{ANNOTATION_SIGNATURE, MEDIA_TYPE_DSSE};
use super::sign::{Envelope, PublicKey};
use crate::name::Reference;
use crate::remote::{Client, Options, Puller, RegistryError};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: no such image")]
    NoImage { reference: String },
    #[error("{reference}: {what} is not valid JSON: {message}")]
    Invalid {
        reference: String,
        what: String,
        message: String,
    },
    #[error("{reference}: no signature by this key ({found} signature(s) in {tag})")]
    Unsigned {
        reference: String,
        tag: String,
        found: usize,
    },
}

/// What verified, and what the image has attached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub digest: String,
    /// Signatures in `.sig` that this key made over this digest.
    pub signatures: usize,
    /// Predicate types of the `.att` attestations this key signed over
    /// statements about this digest.
    pub attestations: Vec<String>,
    /// Predicate types of the others (another key's, or not about it),
    /// which count for nothing, as in `cosign verify-attestation`.
    pub unverified: Vec<String>,
    /// The referrers index: artifactType → manifest digests.
    pub referrers: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default)]
    manifests: Vec<Desc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

struct Reader<'a> {
    client: &'a Client,
    repo: &'a str,
    reference: String,
}

impl Reader<'_> {
    fn parse(&self, what: &str, bytes: &[u8]) -> Result<Doc, VerifyError> {
        serde_json::from_slice(bytes).map_err(|e| VerifyError::Invalid {
            reference: self.reference.clone(),
            what: what.to_string(),
            message: e.to_string(),
        })
    }

    async fn doc(&self, tag: &str) -> Result<Option<Doc>, VerifyError> {
        match self.client.get_manifest(self.repo, tag).await? {
            Some(bytes) => Ok(Some(self.parse(tag, &bytes)?)),
            None => Ok(None),
        }
    }

    async fn blob(&self, digest: &str) -> Result<Vec<u8>, VerifyError> {
        self.client
            .get_small_blob(self.repo, digest)
            .await?
            .ok_or_else(|| VerifyError::Invalid {
                reference: self.reference.clone(),
                what: format!("blob {digest}"),
                message: "missing".into(),
            })
    }
}

/// Verifies `image` (a tag or a digest) with `key`: at least one `.sig`
/// signature must be the key's over the image's digest; `.att`
/// attestations are sorted into those the key signed about that digest
/// and the rest.
pub async fn verify(
    image: &Reference,
    key: &PublicKey,
    opts: &Options,
) -> Result<Verified, VerifyError> {
    let puller = Puller::for_images(opts, [image]);
    let client = puller.client(image.registry(), image.repository()).await?;
    let reader = Reader {
        client: &client,
        repo: image.repository(),
        reference: image.to_string(),
    };
    let digest = match image.digest() {
        Some(d) => d.to_string(),
        None => {
            let bytes = client
                .get_manifest(image.repository(), image.identifier())
                .await?
                .ok_or_else(|| VerifyError::NoImage {
                    reference: image.to_string(),
                })?;
            crate::digest::sha256(&bytes)
        }
    };
    let stem = digest.replacen(':', "-", 1);
    let mut verified = Verified {
        digest: digest.clone(),
        ..Verified::default()
    };
    let sig_tag = format!("{stem}.sig");
    let sig = reader
        .doc(&sig_tag)
        .await?
        .map(|d| d.layers)
        .unwrap_or_default();
    for layer in &sig {
        let Some(signature) = layer.annotations.get(ANNOTATION_SIGNATURE) else {
            continue;
        };
        let payload = reader.blob(&layer.digest).await?;
        let about_digest = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .is_some_and(|v| v["critical"]["image"]["docker-manifest-digest"] == digest.as_str());
        if about_digest && key.verifies_b64(&payload, signature) {
            verified.signatures += 1;
        }
    }
    if verified.signatures == 0 {
        return Err(VerifyError::Unsigned {
            reference: image.to_string(),
            tag: sig_tag,
            found: sig.len(),
        });
    }
    let att_tag = format!("{stem}.att");
    let att = reader
        .doc(&att_tag)
        .await?
        .map(|d| d.layers)
        .unwrap_or_default();
    for layer in att.iter().filter(|l| l.media_type == MEDIA_TYPE_DSSE) {
        let bytes = reader.blob(&layer.digest).await?;
        let statement = serde_json::from_slice::<Envelope>(&bytes)
            .ok()
            .and_then(|env| env.verified_payload(key))
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
            .filter(|s| about(s, &digest));
        match statement {
            Some(s) => {
                let kind = s["predicateType"].as_str().unwrap_or_default();
                verified.attestations.push(kind.to_string());
            }
            None => {
                let kind = layer.annotations.get("predicateType").cloned();
                verified.unverified.push(kind.unwrap_or_default());
            }
        }
    }
    if let Some(index) = reader.doc(&stem).await? {
        for m in index.manifests {
            let kind = m.artifact_type.unwrap_or(m.media_type);
            verified.referrers.entry(kind).or_default().push(m.digest);
        }
    }
    Ok(verified)
}

/// Whether an in-toto statement names `digest` among its subjects.
fn about(statement: &serde_json::Value, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    statement["subject"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x["digest"]["sha256"] == hex))
}
