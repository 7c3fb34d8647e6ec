//! ELF executables: the modules a Go binary was built from (see `golang`)
//! and the crates `cargo auditable` embeds in a Rust binary.

use super::golang;
use super::package::{Ecosystem, Found};
use serde::Deserialize;

/// The most bytes of embedded crate list decompressed from one binary.
const AUDIT_JSON_MAX: usize = 8 << 20;

pub const ELF_MAGIC: &[u8] = b"\x7fELF";

/// Every package an ELF binary says it was built from.
pub fn scan_binary(elf: &[u8]) -> Vec<Found> {
    let mut found = golang::scan_binary(elf);
    found.extend(auditable_crates(elf));
    found
}

#[derive(Deserialize)]
struct AuditInfo {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    /// "build" for build-time only crates, which are not in the binary.
    #[serde(default)]
    kind: Option<String>,
}

/// The runtime crates listed in a `.dep-v0` section (cargo auditable).
fn auditable_crates(elf: &[u8]) -> Vec<Found> {
    let Ok(json) = auditable_info::json_from_slice(elf, AUDIT_JSON_MAX) else {
        return Vec::new();
    };
    let Ok(info) = serde_json::from_str::<AuditInfo>(&json) else {
        return Vec::new();
    };
    info.packages
        .iter()
        .filter(|p| p.kind.as_deref() != Some("build"))
        .map(|p| Found::new(Ecosystem::Cargo, &p.name, &p.version))
        .collect()
}
