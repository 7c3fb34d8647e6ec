//! The inventory as a CycloneDX 1.5 JSON document (the CycloneDX project's
//! own model): the image as the BOM's subject, its base and every package
//! as components, each package with its purl and `dockless:layer` and
//! `dockless:path` properties; the serial number comes from the image's
//! digest instead of a random UUID.

use super::{package_ref, uuid_from, ImageId, Inventory, SbomError};
use cyclonedx_bom::external_models::date_time::DateTime;
use cyclonedx_bom::external_models::normalized_string::NormalizedString;
use cyclonedx_bom::external_models::uri::Purl;
use cyclonedx_bom::models::bom::{Bom, UrnUuid};
use cyclonedx_bom::models::component::{Classification, Component, Components};
use cyclonedx_bom::models::metadata::Metadata;
use cyclonedx_bom::models::property::{Properties, Property};
use cyclonedx_bom::models::tool::{Tool, Tools};
use std::collections::BTreeSet;
use std::str::FromStr;

/// The document's bytes; `created` is an RFC 3339 time, `tool` e.g. `dockless-0.1.0`.
pub fn cyclonedx_json(inv: &Inventory, created: &str, tool: &str) -> Result<Vec<u8>, SbomError> {
    let bad = |e: &dyn std::fmt::Display| SbomError::Document(e.to_string());
    let mut components = Vec::new();
    if let Some(base) = &inv.base {
        components.push(image_component(base, "base-image")?);
    }
    let mut refs = BTreeSet::new();
    for p in &inv.packages {
        let f = &p.found;
        let mut c = Component::new(Classification::Library, &f.name, &f.version, None);
        c.bom_ref = Some(package_ref(p, &mut refs));
        if f.version.is_empty() {
            c.version = None;
        }
        c.group = f.namespace.as_deref().map(NormalizedString::new);
        c.purl = Purl::from_str(&p.purl).ok();
        c.properties = Some(Properties(vec![
            Property::new("dockless:layer", &p.layer),
            Property::new("dockless:path", &format!("/{}", p.path)),
        ]));
        components.push(c);
    }
    let (tool_name, tool_version) = tool.rsplit_once('-').unwrap_or((tool, ""));
    let metadata = Metadata {
        timestamp: Some(DateTime::try_from(created.to_string()).map_err(|e| bad(&e))?),
        tools: Some(Tools::List(vec![Tool::new("", tool_name, tool_version)])),
        component: Some(image_component(&inv.image, "image")?),
        ..Metadata::default()
    };
    let serial = format!(
        "urn:uuid:{}",
        uuid_from(&format!("cyclonedx {}", inv.image.digest))
    );
    let bom = Bom {
        serial_number: Some(UrnUuid::new(serial).map_err(|e| bad(&format!("{e:?}")))?),
        metadata: Some(metadata),
        components: Some(Components(components)),
        ..Bom::default()
    };
    let mut out = Vec::new();
    bom.output_as_json_v1_5(&mut out).map_err(|e| bad(&e))?;
    Ok(out)
}

fn image_component(image: &ImageId, bom_ref: &str) -> Result<Component, SbomError> {
    let purl = image
        .purl()
        .map_err(|e| SbomError::Document(e.to_string()))?;
    let mut c = Component::new(
        Classification::Container,
        &image.reference,
        &image.digest,
        Some(bom_ref.to_string()),
    );
    c.purl = Purl::from_str(&purl).ok();
    Ok(c)
}
