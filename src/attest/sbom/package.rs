//! What a scanner finds in one file of a layer: packages of some ecosystem,
//! or the distribution's os-release, and the purl each package gets.

use packageurl::PackageUrl;
use serde::{Deserialize, Serialize};

/// The package ecosystems the scanners know; the name is the purl type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Deb,
    Apk,
    Pypi,
    Npm,
    Golang,
    Cargo,
    Maven,
}

impl Ecosystem {
    pub fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Pypi => "pypi",
            Ecosystem::Npm => "npm",
            Ecosystem::Golang => "golang",
            Ecosystem::Cargo => "cargo",
            Ecosystem::Maven => "maven",
        }
    }

    /// Package databases are rewritten whole by every layer that installs a
    /// package, so their packages are credited to the lowest layer that
    /// listed them, not the one whose copy of the file is visible.
    pub fn is_database(self) -> bool {
        matches!(self, Ecosystem::Deb | Ecosystem::Apk)
    }
}

/// One package as a scanner read it from a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Found {
    pub ecosystem: Ecosystem,
    /// Maven group, npm scope (with its `@`), Go module path before its last `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// Empty when the file gives none (a Go main module built as `(devel)`).
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Where a lockfile says the package is installed (an image path); the
    /// package is left out when that folder's own package.json was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<String>,
}

impl Found {
    pub fn new(ecosystem: Ecosystem, name: &str, version: &str) -> Found {
        Found {
            ecosystem,
            namespace: None,
            name: name.to_string(),
            version: version.to_string(),
            arch: None,
            installed_at: None,
        }
    }

    /// The name as people write it: `group:artifact`, `@scope/name`, `path/module`.
    pub fn full_name(&self) -> String {
        match (&self.namespace, self.ecosystem) {
            (None, _) => self.name.clone(),
            (Some(ns), Ecosystem::Maven) => format!("{ns}:{}", self.name),
            (Some(ns), _) => format!("{ns}/{}", self.name),
        }
    }

    /// The package URL (purl-spec); `distro` is the image's os-release, which
    /// names the namespace and the `distro` qualifier of deb and apk packages.
    pub fn purl(&self, distro: Option<&OsRelease>) -> Result<String, packageurl::Error> {
        let mut purl = PackageUrl::new(self.ecosystem.purl_type(), self.name.as_str())?;
        let namespace = match self.ecosystem {
            Ecosystem::Deb | Ecosystem::Apk => Some(
                distro
                    .map(|d| d.id.clone())
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| default_distro(self.ecosystem).to_string()),
            ),
            _ => self.namespace.clone(),
        };
        if let Some(ns) = namespace {
            purl.with_namespace(ns)?;
        }
        if !self.version.is_empty() {
            purl.with_version(self.version.as_str())?;
        }
        // Qualifiers in sorted order, as the purl spec's canonical form wants.
        if let Some(arch) = &self.arch {
            purl.add_qualifier("arch", arch.as_str())?;
        }
        if self.ecosystem.is_database() {
            if let Some(d) = distro.and_then(OsRelease::qualifier) {
                purl.add_qualifier("distro", d)?;
            }
        }
        Ok(purl.to_string())
    }
}

fn default_distro(ecosystem: Ecosystem) -> &'static str {
    match ecosystem {
        Ecosystem::Apk => "alpine",
        _ => "debian",
    }
}

/// The fields of `/etc/os-release` the SBOM uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
    pub pretty_name: String,
}

impl OsRelease {
    /// `debian-12`, syft's `distro` qualifier.
    pub fn qualifier(&self) -> Option<String> {
        (!self.id.is_empty() && !self.version_id.is_empty())
            .then(|| format!("{}-{}", self.id, self.version_id))
    }

    /// os-release(5): `KEY=value` lines, values optionally quoted.
    pub fn parse(text: &str) -> OsRelease {
        let mut release = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            let value = unquote(value.trim());
            match key {
                "ID" => release.id = value.to_ascii_lowercase(),
                "VERSION_ID" => release.version_id = value,
                "PRETTY_NAME" => release.pretty_name = value,
                _ => {}
            }
        }
        release
    }
}

fn unquote(value: &str) -> String {
    let quoted = |q: char| value.len() >= 2 && value.starts_with(q) && value.ends_with(q);
    if quoted('"') || quoted('\'') {
        value[1..value.len() - 1].replace("\\\"", "\"")
    } else {
        value.to_string()
    }
}

/// What one file of a layer holds for the SBOM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    Packages(Vec<Found>),
    OsRelease(OsRelease),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_follow_the_spec() {
        let debian = OsRelease::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        assert_eq!(debian.qualifier().as_deref(), Some("debian-12"));
        let mut bash = Found::new(Ecosystem::Deb, "bash", "5.2.15-2+b2");
        bash.arch = Some("amd64".into());
        assert_eq!(
            bash.purl(Some(&debian)).unwrap(),
            "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12"
        );
        let mut scoped = Found::new(Ecosystem::Npm, "core", "7.0.0");
        scoped.namespace = Some("@babel".into());
        assert_eq!(scoped.purl(None).unwrap(), "pkg:npm/%40babel/core@7.0.0");
        assert_eq!(scoped.full_name(), "@babel/core");
        let py = Found::new(Ecosystem::Pypi, "Django_REST", "1.0");
        assert_eq!(py.purl(None).unwrap(), "pkg:pypi/django-rest@1.0");
        let main = Found::new(Ecosystem::Golang, "app", "");
        assert_eq!(main.purl(None).unwrap(), "pkg:golang/app");
    }
}
