//! Python distributions: `*.dist-info/METADATA` and `*.egg-info` (a folder
//! with `PKG-INFO`, or a file that is one), in the core-metadata format:
//! email headers, then the description after the first blank line.

use super::package::{Ecosystem, Found};

/// Whether an image path is a distribution's metadata file.
pub fn is_metadata_path(path: &str) -> bool {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let folder = dir.rsplit('/').next().unwrap_or(dir);
    (name == "METADATA" && folder.ends_with(".dist-info"))
        || (name == "PKG-INFO" && folder.ends_with(".egg-info"))
        || name.ends_with(".egg-info")
}

/// The distribution a metadata file describes.
pub fn parse_metadata(text: &str) -> Option<Found> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(value.trim()),
            "version" => version = Some(value.trim()),
            _ => {}
        }
    }
    let (name, version) = (name?, version?);
    (!name.is_empty()).then(|| Found::new(Ecosystem::Pypi, name, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_headers() {
        let text =
            "Metadata-Version: 2.1\nName: Flask\nVersion: 3.0.0\nSummary: web\n\nName: not-this\n";
        let found = parse_metadata(text).unwrap();
        assert_eq!(
            (found.name.as_str(), found.version.as_str()),
            ("Flask", "3.0.0")
        );
        assert!(parse_metadata("Name: x\n").is_none());
        assert!(is_metadata_path(
            "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA"
        ));
        assert!(is_metadata_path("app/venv/lib/x.egg-info/PKG-INFO"));
        assert!(is_metadata_path(
            "usr/lib/python3/dist-packages/foo-1.0.egg-info"
        ));
        assert!(!is_metadata_path("app/METADATA"));
    }
}
