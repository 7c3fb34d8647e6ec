//! Where an image's SBOM, provenance and signature go, in the shapes the
//! tools that look for them expect:
//!
//! - OCI 1.1 artifacts whose `subject` is the image manifest, listed in the
//!   referrers tag index `sha256-<hex>` (the fallback the distribution spec
//!   gives for registries without the referrers API, such as
//!   docker-registry 2.8);
//! - cosign's tags: `sha256-<hex>.sig` (simple-signing payloads and their
//!   signatures), `.att` (DSSE envelopes of in-toto statements, when a key
//!   signs them) and `.sbom` (the SBOM as it is).
//!
//! `plan` makes every blob and manifest (pure, so tests see the bytes);
//! `attach` writes them through a [`Target`]: a registry repository or an
//! OCI layout. Tags that may already hold something (the index, `.sig`,
//! `.att`) are read first and merged into, as cosign and the spec do.

mod layout;
mod registry;
mod shapes;
#[cfg(test)]
mod tests;

use super::sbom::SbomFormat;
use super::sign::{simple_signing_payload, Envelope, Signer256};
use super::statement::PAYLOAD_TYPE;
use crate::image::MEDIA_TYPE_INDEX;
use futures_util::future::try_join_all;
pub use layout::LayoutTarget;
pub use registry::RegistryTarget;
pub use shapes::{Blob, Layer, Manifest};
use std::collections::BTreeMap;

pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const ANNOTATION_PREDICATE: &str = "in-toto.io/predicate-type";
/// Which key signed an attestation layer (its public key's fingerprint), so
/// a new attestation replaces only the same signer's of the same type.
pub const ANNOTATION_SIGNER: &str = "dev.dockless.signer";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const MEDIA_TYPE_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const MEDIA_TYPE_DSSE: &str = "application/vnd.dsse.envelope.v1+json";
/// cosign's artifactType for a simple-signing signature stored as a referrer.
pub const ARTIFACT_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{what} {reference}: {message}")]
    Existing {
        what: &'static str,
        reference: String,
        message: String,
    },
    #[error("{0}")]
    Target(String),
}

/// The manifest the documents are about.
#[derive(Debug, Clone)]
pub struct SubjectImage {
    /// `REGISTRY/REPO` (cosign's docker-reference), or the name built.
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

impl SubjectImage {
    /// `sha256-<hex>`: the referrers tag, and the stem of cosign's tags.
    pub fn tag_stem(&self) -> String {
        self.digest.replacen(':', "-", 1)
    }
}

/// The documents to attach to one manifest.
#[derive(Debug, Clone, Default)]
pub struct Documents {
    pub sbom: Option<(SbomFormat, Vec<u8>)>,
    /// The provenance statement (in-toto JSON).
    pub provenance: Option<Vec<u8>>,
}

/// Everything to write for one subject.
#[derive(Debug, Clone)]
pub struct Plan {
    pub subject: SubjectImage,
    /// Artifacts with `subject`, pushed by digest, then listed in the index.
    pub referrers: Vec<Manifest>,
    /// `.sig`, `.att` and `.sbom` layers, merged into what the tags hold.
    pub cosign: Vec<(CosignTag, Vec<Layer>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CosignTag {
    Sig,
    Att,
    Sbom,
}

impl CosignTag {
    pub fn suffix(self) -> &'static str {
        match self {
            CosignTag::Sig => "sig",
            CosignTag::Att => "att",
            CosignTag::Sbom => "sbom",
        }
    }
}

/// cosign's media type for an SBOM attached as it is (`cosign attach sbom`).
fn cosign_sbom_type(format: SbomFormat) -> &'static str {
    match format {
        SbomFormat::Spdx => "text/spdx+json",
        SbomFormat::CycloneDx => "application/vnd.cyclonedx+json",
    }
}

/// The in-toto statement that carries an SBOM (in-toto's spdx and
/// cyclonedx predicates: the document is the predicate).
fn sbom_statement(
    subject: &SubjectImage,
    format: SbomFormat,
    sbom: &[u8],
) -> Result<Vec<u8>, serde_json::Error> {
    let predicate: serde_json::Value = serde_json::from_slice(sbom)?;
    super::statement::Statement::new(
        vec![super::statement::Subject::new(
            &subject.repository,
            &subject.digest,
        )],
        format.predicate_type(),
        predicate,
    )
    .to_json()
}

/// What to write for `docs` about `subject`; `key` signs the image digest
/// (`.sig`) and the statements (DSSE, `.att`). Without a key the statements
/// go out unsigned, as referrers only.
pub fn plan(
    subject: &SubjectImage,
    docs: &Documents,
    key: Option<&Signer256>,
) -> Result<Plan, serde_json::Error> {
    let mut referrers = Vec::new();
    let mut sig = Vec::new();
    let mut att = Vec::new();
    let mut sbom_tag = Vec::new();
    if let Some((format, sbom)) = &docs.sbom {
        let title = match format {
            SbomFormat::Spdx => "sbom.spdx.json",
            SbomFormat::CycloneDx => "sbom.cdx.json",
        };
        let layer = Layer::new(format.media_type(), sbom.clone()).annotate(ANNOTATION_TITLE, title);
        referrers.push(Manifest::artifact(
            format.media_type(),
            subject,
            vec![layer],
        ));
        sbom_tag.push(Layer::new(cosign_sbom_type(*format), sbom.clone()));
        if let Some(key) = key {
            let statement = sbom_statement(subject, *format, sbom)?;
            att.push(attestation_layer(&statement, format.predicate_type(), key));
        }
    }
    if let Some(statement) = &docs.provenance {
        let predicate = super::provenance::PREDICATE_TYPE;
        let layer = match key {
            Some(key) => attestation_layer(statement, predicate, key),
            None => Layer::new(PAYLOAD_TYPE, statement.clone()),
        };
        let layer = layer.annotate(ANNOTATION_PREDICATE, predicate);
        let artifact_type = layer.blob.media_type.clone();
        referrers.push(Manifest::artifact(
            &artifact_type,
            subject,
            vec![layer.clone()],
        ));
        if key.is_some() {
            att.push(layer);
        }
    }
    if let Some(key) = key {
        let payload = simple_signing_payload(&subject.repository, &subject.digest);
        let signature = key.sign_b64(&payload);
        let layer = Layer::new(MEDIA_TYPE_SIMPLE_SIGNING, payload)
            .annotate(ANNOTATION_SIGNATURE, &signature);
        referrers.push(Manifest::artifact(
            ARTIFACT_SIGNATURE,
            subject,
            vec![layer.clone()],
        ));
        sig.push(layer);
    }
    let cosign = [
        (CosignTag::Sig, sig),
        (CosignTag::Att, att),
        (CosignTag::Sbom, sbom_tag),
    ]
    .into_iter()
    .filter(|(_, layers)| !layers.is_empty())
    .collect();
    Ok(Plan {
        subject: subject.clone(),
        referrers,
        cosign,
    })
}

/// A DSSE envelope of `statement`, signed, as cosign's `.att` layers are.
fn attestation_layer(statement: &[u8], predicate: &str, key: &Signer256) -> Layer {
    let envelope = Envelope::new(PAYLOAD_TYPE, statement, Some(key));
    Layer::new(MEDIA_TYPE_DSSE, envelope.to_json())
        .annotate("predicateType", predicate)
        // cosign always writes the key, empty for attestations.
        .annotate(ANNOTATION_SIGNATURE, "")
        .annotate(ANNOTATION_SIGNER, &key.public_key().fingerprint())
}

/// Where attachments are written: a registry repository or an OCI layout.
#[allow(async_fn_in_trait)]
pub trait Target {
    /// The manifest or index under `reference` (a tag), if there is one.
    async fn get_manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, AttachError>;
    async fn put_blob(&self, blob: &Blob) -> Result<(), AttachError>;
    /// Puts `bytes` under `reference`, a tag or the manifest's own digest.
    async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), AttachError>;
    /// After the last manifest: makes what was put visible, where the
    /// target holds it back (an OCI layout's index.json).
    async fn finish(&self) -> Result<(), AttachError> {
        Ok(())
    }
}

/// What was written for one subject, digests by what they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    /// The image manifest the attachments are about.
    pub subject: String,
    /// artifactType → the referrer manifest's digest.
    pub referrers: BTreeMap<String, String>,
    /// `sha256-<hex>` (the referrers index), `.sig`, `.att`, `.sbom` → digest.
    pub tags: BTreeMap<String, String>,
}

/// Writes `plan` to `target`: blobs, then each artifact by digest, then the
/// referrers index and the cosign tags (a manifest only after its blobs,
/// an index only after its manifests, as registries check). Requests that
/// do not depend on each other go at once, each round trip being most of
/// their cost, but never two uploads of one blob (the artifacts share their
/// empty config, a cosign tag its SBOM or statement): a registry may fail a
/// manifest that names a blob another upload is committing.
pub async fn attach<T: Target>(target: &T, plan: &Plan) -> Result<Attached, AttachError> {
    let stem = plan.subject.tag_stem();
    let mut blobs: Vec<&Blob> = plan.referrers.iter().flat_map(|m| &m.blobs).collect();
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    try_join_all(blobs.into_iter().map(|blob| target.put_blob(blob))).await?;
    try_join_all(
        plan.referrers
            .iter()
            .map(|m| target.put_manifest(&m.digest, crate::image::MEDIA_TYPE_MANIFEST, &m.bytes)),
    )
    .await?;
    let cosign = async {
        let mut tags = Vec::new();
        for (tag, layers) in &plan.cosign {
            let name = format!("{stem}.{}", tag.suffix());
            tags.push(cosign_tag(target, name, layers, *tag).await?);
        }
        Ok(tags)
    };
    let (index, cosign) =
        futures_util::future::try_join(referrers_index(target, plan, &stem), cosign).await?;
    let mut done = Attached {
        subject: plan.subject.digest.clone(),
        ..Attached::default()
    };
    for m in &plan.referrers {
        let kind = m.artifact_type.clone().unwrap_or_default();
        done.referrers.insert(kind, m.digest.clone());
    }
    done.tags.extend(index.map(|digest| (stem.clone(), digest)));
    done.tags.extend(cosign);
    target.finish().await?;
    Ok(done)
}

/// The referrers index under the subject's tag stem, merged into what the
/// tag holds; its digest, or None without referrers.
async fn referrers_index<T: Target>(
    target: &T,
    plan: &Plan,
    stem: &str,
) -> Result<Option<String>, AttachError> {
    if plan.referrers.is_empty() {
        return Ok(None);
    }
    let existing = target.get_manifest(stem).await?;
    let index =
        shapes::merge_referrers(existing.as_deref(), &plan.referrers).map_err(|message| {
            AttachError::Existing {
                what: "referrers index",
                reference: stem.to_string(),
                message,
            }
        })?;
    target.put_manifest(stem, MEDIA_TYPE_INDEX, &index).await?;
    Ok(Some(crate::digest::sha256(&index)))
}

/// One cosign tag, merged into what it holds: (tag, manifest digest).
async fn cosign_tag<T: Target>(
    target: &T,
    name: String,
    layers: &[Layer],
    tag: CosignTag,
) -> Result<(String, String), AttachError> {
    let existing = match tag {
        CosignTag::Sbom => None,
        _ => target.get_manifest(&name).await?,
    };
    let m = shapes::merge_cosign(existing.as_deref(), layers, tag).map_err(|message| {
        AttachError::Existing {
            what: "cosign manifest",
            reference: name.clone(),
            message,
        }
    })?;
    put_manifest(target, &m, &name).await?;
    Ok((name, m.digest))
}

async fn put_manifest<T: Target>(
    target: &T,
    m: &Manifest,
    reference: &str,
) -> Result<(), AttachError> {
    for blob in &m.blobs {
        target.put_blob(blob).await?;
    }
    target
        .put_manifest(reference, crate::image::MEDIA_TYPE_MANIFEST, &m.bytes)
        .await
}
