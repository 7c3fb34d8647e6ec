//! The inventory as an SPDX 2.3 JSON document (serde-spdx's model, built
//! from the official schema): the image as the described package, its base
//! as a package it descends from, and one package per finding with its purl
//! and, in `sourceInfo`, the layer and file it was read from.

use super::{package_ref, uuid_from, ImageId, Inventory, SbomError};
use serde_spdx::spdx::v_2_3::{
    Spdx, SpdxCreationInfoBuilder, SpdxItemPackages, SpdxItemPackagesBuilder,
    SpdxItemPackagesItemExternalRefsBuilder, SpdxItemRelationships, SpdxItemRelationshipsBuilder,
};
use std::collections::BTreeSet;

const IMAGE_ID: &str = "SPDXRef-image";
const BASE_ID: &str = "SPDXRef-base-image";
const NOASSERTION: &str = "NOASSERTION";

/// The document's bytes; `created` is an RFC 3339 time, `tool` e.g. `dockless-0.1.0`.
pub fn spdx_json(inv: &Inventory, created: &str, tool: &str) -> Result<Vec<u8>, SbomError> {
    let bad = |e: &dyn std::fmt::Display| SbomError::Document(e.to_string());
    let mut packages = vec![image_package(IMAGE_ID, &inv.image, "CONTAINER")?];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_ID)?];
    if let Some(base) = &inv.base {
        packages.push(image_package(BASE_ID, base, "CONTAINER")?);
        relationships.push(relationship(IMAGE_ID, "DESCENDANT_OF", BASE_ID)?);
    }
    let mut ids = BTreeSet::new();
    for p in &inv.packages {
        let id = format!("SPDXRef-{}", package_ref(p, &mut ids));
        let purl = SpdxItemPackagesItemExternalRefsBuilder::default()
            .reference_category("PACKAGE-MANAGER")
            .reference_type("purl")
            .reference_locator(p.purl.clone())
            .build()
            .map_err(|e| bad(&e))?;
        let mut package = SpdxItemPackagesBuilder::default();
        package
            .spdxid(id.clone())
            .name(p.found.full_name())
            .download_location(NOASSERTION)
            .files_analyzed(false)
            .external_refs(vec![purl])
            .source_info(format!("layer {}, file /{}", p.layer, p.path));
        if !p.found.version.is_empty() {
            package.version_info(p.found.version.clone());
        }
        packages.push(package.build().map_err(|e| bad(&e))?);
        relationships.push(relationship(IMAGE_ID, "CONTAINS", &id)?);
    }
    let creation = SpdxCreationInfoBuilder::default()
        .created(created)
        .creators(vec![format!("Tool: {tool}")])
        .build()
        .map_err(|e| bad(&e))?;
    let doc = Spdx {
        spdxid: "SPDXRef-DOCUMENT".into(),
        annotations: None,
        comment: None,
        creation_info: creation,
        data_license: "CC0-1.0".into(),
        document_describes: None,
        document_namespace: namespace(&inv.image),
        external_document_refs: None,
        files: None,
        has_extracted_licensing_infos: None,
        name: format!("{}@{}", inv.image.repository, inv.image.digest),
        packages: Some(packages),
        relationships: Some(relationships),
        revieweds: None,
        snippets: None,
        spdx_version: "SPDX-2.3".into(),
    };
    serde_json::to_vec_pretty(&doc).map_err(|e| bad(&e))
}

/// A unique URI for the document, the same for the same image, as the SPDX
/// spec suggests for documents with no site of their own.
fn namespace(image: &ImageId) -> String {
    let name: String = image.repository.chars().map(id_char).collect();
    let uuid = uuid_from(&format!("spdx {} {}", image.repository, image.digest));
    format!("https://spdx.org/spdxdocs/dockless-{name}-{uuid}")
}

fn image_package(id: &str, image: &ImageId, purpose: &str) -> Result<SpdxItemPackages, SbomError> {
    let bad = |e: &dyn std::fmt::Display| SbomError::Document(e.to_string());
    let purl = image.purl().map_err(|e| bad(&e))?;
    let reference = SpdxItemPackagesItemExternalRefsBuilder::default()
        .reference_category("PACKAGE-MANAGER")
        .reference_type("purl")
        .reference_locator(purl)
        .build()
        .map_err(|e| bad(&e))?;
    SpdxItemPackagesBuilder::default()
        .spdxid(id)
        .name(image.reference.clone())
        .version_info(image.digest.clone())
        .download_location(NOASSERTION)
        .files_analyzed(false)
        .primary_package_purpose(purpose)
        .external_refs(vec![reference])
        .build()
        .map_err(|e| bad(&e))
}

fn relationship(from: &str, kind: &str, to: &str) -> Result<SpdxItemRelationships, SbomError> {
    SpdxItemRelationshipsBuilder::default()
        .spdx_element_id(from)
        .relationship_type(kind)
        .related_spdx_element(to)
        .build()
        .map_err(|e| SbomError::Document(e.to_string()))
}

pub(super) fn id_char(c: char) -> char {
    if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
        c
    } else {
        '-'
    }
}
