//! The software bill of materials of an image: the packages in its final
//! root filesystem, read from its layers (see `layers`) as a runtime would
//! stack them (whiteouts and opaque folders hide what lies below), each
//! with the layer it came from; then written as SPDX 2.3 or CycloneDX 1.5.
//!
//! One scanner per ecosystem: `dpkg` (Debian, and Alpine's apk database),
//! `python`, `node`, `java`, `binary` (ELF: `golang` build info and
//! `cargo auditable` crates).

mod binary;
mod cyclonedx;
mod dpkg;
mod golang;
mod java;
pub mod layers;
mod node;
pub mod package;
mod python;
mod spdx;

use crate::image::BuiltImage;
use crate::rootfs::overlay::{IndexKind, OverlayError};
use layers::ScannedLayer;
pub use layers::{scan_layers, LayerBlobs};
use package::{Finding, Found, OsRelease};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use cyclonedx::cyclonedx_json;
pub use spdx::spdx_json;

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("SBOM: layer {digest}: {message}")]
    Layer { digest: String, message: String },
    #[error("SBOM: {0}")]
    Overlay(#[from] OverlayError),
    #[error("SBOM: package {name} {version}: {message}")]
    Purl {
        name: String,
        version: String,
        message: String,
    },
    #[error("SBOM document: {0}")]
    Document(String),
}

/// Which document `--sbom-format` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SbomFormat {
    #[default]
    Spdx,
    CycloneDx,
}

impl SbomFormat {
    pub fn parse(text: &str) -> Result<SbomFormat, String> {
        match text {
            "spdx" | "spdx-json" => Ok(SbomFormat::Spdx),
            "cyclonedx" | "cyclonedx-json" => Ok(SbomFormat::CycloneDx),
            _ => Err(format!(
                "unknown SBOM format {text:?}: expected spdx or cyclonedx"
            )),
        }
    }

    /// The media type of the document (cosign's and the referrers' artifactType).
    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "application/spdx+json",
            SbomFormat::CycloneDx => "application/vnd.cyclonedx+json",
        }
    }

    /// The in-toto predicate type of an attestation holding the document.
    pub fn predicate_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "https://spdx.dev/Document",
            SbomFormat::CycloneDx => "https://cyclonedx.org/bom",
        }
    }
}

/// A package in the image, where it was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImagePackage {
    pub purl: String,
    /// The digest of the layer that brought it.
    pub layer: String,
    /// The file it was read from (an image path without the leading `/`).
    pub path: String,
    pub found: Found,
}

/// An image as documents name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageId {
    /// `REGISTRY/REPO` (or the name given to `build`), without tag.
    pub repository: String,
    /// The reference as written (`debian:bookworm`); the repository otherwise.
    pub reference: String,
    /// Of the manifest (or, for a base, of what its reference resolved to).
    pub digest: String,
}

impl ImageId {
    /// `pkg:oci/<name>@sha256%3A<hex>?repository_url=<repository>`.
    pub fn purl(&self) -> Result<String, packageurl::Error> {
        let name = self.repository.rsplit('/').next().unwrap_or_default();
        let mut purl = packageurl::PackageUrl::new("oci", name.to_ascii_lowercase())?;
        purl.with_version(self.digest.as_str())?;
        purl.add_qualifier("repository_url", self.repository.as_str())?;
        Ok(purl.to_string())
    }
}

/// What the SBOM describes: the image, its base, and its packages sorted
/// by purl, layer and path, so the documents come out the same every time.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub image: ImageId,
    pub base: Option<ImageId>,
    pub os: Option<OsRelease>,
    pub packages: Vec<ImagePackage>,
}

/// Scans an image's layers and lists the packages its root filesystem
/// holds; `repository` names it (`REGISTRY/REPO`, no tag).
pub fn inventory(
    repository: &str,
    image: &BuiltImage,
    cache_dir: &Path,
    blobs: &dyn LayerBlobs,
) -> Result<Inventory, SbomError> {
    let layers = scan_layers(&image.layers, cache_dir, blobs)?;
    let visible = visible_files(&layers);
    let os = os_release(&layers, &visible);
    let mut packages = BTreeSet::new();
    let installed_node: BTreeSet<&str> = visible
        .keys()
        .filter_map(|p| p.strip_suffix("/package.json"))
        .collect();
    for (path, &top) in &visible {
        let Some(Finding::Packages(found)) = layers[top].findings.get(path) else {
            continue;
        };
        for f in found {
            let read_itself = f
                .installed_at
                .as_deref()
                .is_some_and(|dir| installed_node.contains(dir));
            if read_itself {
                continue;
            }
            let layer = if f.ecosystem.is_database() {
                first_listed(&layers, path, top, f)
            } else {
                top
            };
            let purl = f.purl(os.as_ref()).map_err(|e| SbomError::Purl {
                name: f.full_name(),
                version: f.version.clone(),
                message: e.to_string(),
            })?;
            packages.insert(ImagePackage {
                purl,
                layer: layers[layer].layer.digest.clone(),
                path: path.clone(),
                found: f.clone(),
            });
        }
    }
    Ok(Inventory {
        image: ImageId {
            repository: repository.to_string(),
            reference: repository.to_string(),
            digest: image.manifest_digest.clone(),
        },
        base: image.base.as_ref().map(|b| ImageId {
            repository: format!("{}/{}", b.registry, b.repository),
            reference: b.name.clone(),
            digest: b.digest.clone(),
        }),
        os,
        packages: packages.into_iter().collect(),
    })
}

/// Every scanned file the final filesystem still has, with the layer whose
/// copy is visible: layers applied bottom up, as `overlay::apply_index`
/// does (opaque folders and whiteouts first, then the layer's entries).
fn visible_files(layers: &[ScannedLayer]) -> BTreeMap<String, usize> {
    let mut visible: BTreeMap<String, usize> = BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        for e in &l.index.entries {
            match e.kind {
                IndexKind::Opaque => remove_under(&mut visible, &e.path),
                IndexKind::Whiteout => {
                    visible.remove(&e.path);
                    remove_under(&mut visible, &e.path);
                }
                _ => {}
            }
        }
        for e in &l.index.entries {
            match e.kind {
                IndexKind::Opaque | IndexKind::Whiteout => {}
                IndexKind::Dir => {
                    visible.remove(&e.path);
                }
                _ => {
                    // Anything but a folder replaces what was there, a folder too.
                    remove_under(&mut visible, &e.path);
                    if l.findings.contains_key(&e.path) {
                        visible.insert(e.path.clone(), i);
                    } else {
                        visible.remove(&e.path);
                    }
                }
            }
        }
    }
    visible
}

fn remove_under(visible: &mut BTreeMap<String, usize>, dir: &str) {
    if dir.is_empty() {
        visible.clear();
        return;
    }
    let prefix = format!("{dir}/");
    let inside: Vec<String> = visible
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in inside {
        visible.remove(&k);
    }
}

/// The lowest layer, going down from `top`, whose copy of the database at
/// `path` lists the package: the layer that installed it.
fn first_listed(layers: &[ScannedLayer], path: &str, top: usize, found: &Found) -> usize {
    let same =
        |f: &Found| f.name == found.name && f.version == found.version && f.arch == found.arch;
    let mut first = top;
    for i in (0..top).rev() {
        match layers[i].findings.get(path) {
            Some(Finding::Packages(list)) if list.iter().any(same) => first = i,
            Some(_) => break,
            None => {}
        }
    }
    first
}

fn os_release(layers: &[ScannedLayer], visible: &BTreeMap<String, usize>) -> Option<OsRelease> {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(
            |path| match layers[*visible.get(*path)?].findings.get(*path)? {
                Finding::OsRelease(os) => Some(os.clone()),
                Finding::Packages(_) => None,
            },
        )
}

/// `<name>-<hash>`, an identifier for a package in a document: readable,
/// only the characters SPDX ids allow, and unique (the hash covers purl,
/// layer and file) among those `taken`.
fn package_ref(p: &ImagePackage, taken: &mut BTreeSet<String>) -> String {
    let name: String = p.found.full_name().chars().map(spdx::id_char).collect();
    let hash = crate::digest::sha256(format!("{}\n{}\n{}", p.purl, p.layer, p.path).as_bytes());
    let hex = crate::digest::hex_part(&hash).unwrap_or_default();
    let mut len = 12;
    loop {
        let id = format!("{name}-{}", &hex[..len]);
        if taken.insert(id.clone()) || len == hex.len() {
            return id;
        }
        len += 4;
    }
}

/// A stable UUID from a digest, as an RFC 4122 version 4 UUID would look
/// (the variant and version bits set), so documents need no randomness.
pub fn uuid_from(seed: &str) -> String {
    let hash = crate::digest::sha256(seed.as_bytes());
    let hex = crate::digest::hex_part(&hash).unwrap_or_default();
    let mut b = hex::decode(&hex[..32]).unwrap_or_else(|_| vec![0; 16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests;
