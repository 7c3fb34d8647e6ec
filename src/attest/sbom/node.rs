//! Node packages: `node_modules/<name>/package.json` (or
//! `node_modules/@scope/<name>/package.json`), nested node_modules too, and
//! `package-lock.json` (lockfile v1, v2 and v3) for what it says is installed.

use super::package::{Ecosystem, Found};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Whether an image path is an installed package's package.json: the file
/// sits directly in a package folder under node_modules, never deeper (a
/// package's own test fixtures are not installed packages).
pub fn is_installed_manifest(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let n = parts.len();
    if n < 3 || parts[n - 1] != "package.json" {
        return false;
    }
    if parts[n - 3] == "node_modules" {
        return !parts[n - 2].starts_with(['.', '@']);
    }
    n >= 4 && parts[n - 4] == "node_modules" && parts[n - 3].starts_with('@')
}

/// A project's lockfile; npm's hidden `node_modules/.package-lock.json`
/// only repeats what the package folders say.
pub fn is_lockfile(path: &str) -> bool {
    path.rsplit('/').next() == Some("package-lock.json")
        && !path.split('/').any(|p| p == "node_modules")
}

#[derive(Deserialize)]
struct Manifest {
    name: Option<String>,
    version: Option<String>,
}

/// The package a package.json names, if it names one with a version.
pub fn parse_manifest(bytes: &[u8]) -> Option<Found> {
    let m: Manifest = serde_json::from_slice(bytes).ok()?;
    npm_package(&m.name?, &m.version?)
}

fn npm_package(full_name: &str, version: &str) -> Option<Found> {
    if full_name.is_empty() || version.is_empty() {
        return None;
    }
    let mut found = Found::new(Ecosystem::Npm, full_name, version);
    if let Some((scope, name)) = full_name.split_once('/') {
        found.namespace = Some(scope.to_string());
        found.name = name.to_string();
    }
    Some(found)
}

#[derive(Deserialize)]
struct Lockfile {
    #[serde(default)]
    packages: BTreeMap<String, LockPackage>,
    #[serde(default)]
    dependencies: BTreeMap<String, LockDependency>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: Option<String>,
    version: Option<String>,
    #[serde(default)]
    link: bool,
}

#[derive(Deserialize)]
struct LockDependency {
    version: Option<String>,
    #[serde(default)]
    dependencies: BTreeMap<String, LockDependency>,
}

/// The packages a lockfile at `path` installs, each with the folder it
/// would be installed in.
pub fn parse_lockfile(path: &str, bytes: &[u8]) -> Vec<Found> {
    let Ok(lock) = serde_json::from_slice::<Lockfile>(bytes) else {
        return Vec::new();
    };
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let join = |rel: &str| {
        if dir.is_empty() {
            rel.to_string()
        } else {
            format!("{dir}/{rel}")
        }
    };
    let mut out = Vec::new();
    if !lock.packages.is_empty() {
        for (key, p) in &lock.packages {
            // "" is the project itself; entries outside node_modules are workspaces.
            if p.link || !key.contains("node_modules/") {
                continue;
            }
            let tail = key.rsplit("node_modules/").next().unwrap_or(key);
            let name = p.name.as_deref().unwrap_or(tail);
            if let Some(mut found) = npm_package(name, p.version.as_deref().unwrap_or("")) {
                found.installed_at = Some(join(key));
                out.push(found);
            }
        }
        return out;
    }
    v1_dependencies(&lock.dependencies, "", &join, &mut out);
    out
}

/// Lockfile v1: a tree of `dependencies`, each installed under its parent's node_modules.
fn v1_dependencies(
    deps: &BTreeMap<String, LockDependency>,
    parent: &str,
    join: &dyn Fn(&str) -> String,
    out: &mut Vec<Found>,
) {
    for (name, dep) in deps {
        let folder = format!("{parent}node_modules/{name}");
        if let Some(mut found) = npm_package(name, dep.version.as_deref().unwrap_or("")) {
            found.installed_at = Some(join(&folder));
            out.push(found);
        }
        v1_dependencies(&dep.dependencies, &format!("{folder}/"), join, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_manifests_only() {
        assert!(is_installed_manifest(
            "app/node_modules/express/package.json"
        ));
        assert!(is_installed_manifest(
            "app/node_modules/@babel/core/package.json"
        ));
        assert!(is_installed_manifest(
            "app/node_modules/a/node_modules/b/package.json"
        ));
        assert!(!is_installed_manifest(
            "app/node_modules/express/test/fixtures/package.json"
        ));
        assert!(!is_installed_manifest("app/package.json"));
        assert!(!is_installed_manifest(
            "app/node_modules/@babel/package.json"
        ));
        assert!(is_lockfile("app/package-lock.json"));
        assert!(!is_lockfile("app/node_modules/.package-lock.json"));
    }

    #[test]
    fn manifests_and_lockfiles() {
        let found = parse_manifest(br#"{"name":"@babel/core","version":"7.0.0"}"#).unwrap();
        assert_eq!(found.namespace.as_deref(), Some("@babel"));
        assert!(parse_manifest(br#"{"name":"x"}"#).is_none());
        let v3 = br#"{"lockfileVersion":3,"packages":{"":{"name":"app","version":"1.0.0"},
            "node_modules/a":{"version":"1.2.3"},
            "node_modules/a/node_modules/@s/b":{"version":"2.0.0"},
            "node_modules/linked":{"resolved":"../x","link":true}}}"#;
        let found = parse_lockfile("srv/package-lock.json", v3);
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.full_name(), f.installed_at.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("a".to_string(), "srv/node_modules/a".to_string()),
                (
                    "@s/b".to_string(),
                    "srv/node_modules/a/node_modules/@s/b".to_string()
                )
            ]
        );
        let v1 = br#"{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"2.0.0"}}}}}"#;
        let found = parse_lockfile("package-lock.json", v1);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[1].installed_at.as_deref(),
            Some("node_modules/a/node_modules/b")
        );
    }
}
