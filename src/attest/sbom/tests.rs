use super::*;
use crate::layer::{write_layer, EntryData, FileSource, LayerEntry, LayerInfo, LayerOptions};
use crate::platform::Platform;
use crate::store::BlobStore;
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Layers<'a> {
    dir: &'a Path,
    store: BlobStore,
    next: Cell<usize>,
}

impl Layers<'_> {
    fn write(&self, files: &[(&str, &[u8])]) -> LayerInfo {
        let entries = self.entries(files);
        write_layer(&entries, &self.store, LayerOptions::default()).unwrap()
    }

    fn entries(&self, files: &[(&str, &[u8])]) -> Vec<LayerEntry> {
        files
            .iter()
            .map(|(path, body)| {
                let n = self.next.get();
                self.next.set(n + 1);
                let source = self.dir.join(format!("f{n}"));
                std::fs::write(&source, body).unwrap();
                LayerEntry {
                    path: path.to_string(),
                    mode: if path.ends_with(".bin") { 0o755 } else { 0o644 },
                    uid: 0,
                    gid: 0,
                    mtime: None,
                    data: EntryData::File {
                        source: FileSource::Path(source),
                        size: body.len() as u64,
                    },
                }
            })
            .collect()
    }
}

#[test]
fn a_layer_recorded_as_written_gives_the_same_packages_without_its_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = Layers {
        dir: tmp.path(),
        store: BlobStore::open(tmp.path().join("store")).unwrap(),
        next: Cell::new(0),
    };
    let mut entries = layers.entries(&[
        ("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
        ("var/lib/dpkg/status", STATUS_2),
        (
            "srv/flask-3.0.0.dist-info/METADATA",
            b"Name: Flask\nVersion: 3.0.0\n",
        ),
        (
            "app/node_modules/express/package.json",
            br#"{"name":"express","version":"4.18.2"}"#,
        ),
    ]);
    entries.push(LayerEntry {
        path: "opt/flask/METADATA".into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: None,
        data: EntryData::HardLink("srv/flask-3.0.0.dist-info/METADATA".into()),
    });
    let info = write_layer(&entries, &layers.store, LayerOptions::default()).unwrap();
    let img = image(vec![info.clone()]);
    let blobs = CountingBlobs {
        store: layers.store.clone(),
        reads: AtomicUsize::new(0),
    };
    let from_blob = inventory("example.com/app", &img, &tmp.path().join("a"), &blobs).unwrap();
    assert_eq!(blobs.reads.load(Ordering::SeqCst), 1);
    let cache = tmp.path().join("b");
    layers::record_written(&cache, &info, &entries);
    let recorded = inventory("example.com/app", &img, &cache, &blobs).unwrap();
    assert_eq!(blobs.reads.load(Ordering::SeqCst), 1, "the blob was read");
    assert_eq!(recorded.packages, from_blob.packages);
    assert!(from_blob.packages.len() >= 4, "{:?}", from_blob.packages);
}

/// Counts blob reads, so a test can tell the cache answered.
struct CountingBlobs {
    store: BlobStore,
    reads: AtomicUsize,
}

impl LayerBlobs for CountingBlobs {
    fn blob(&self, layer: &LayerInfo) -> Result<PathBuf, String> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.store
            .existing(&layer.digest)
            .map_err(|e| e.to_string())
    }
}

fn image(layers: Vec<LayerInfo>) -> BuiltImage {
    BuiltImage {
        manifest: b"{}".to_vec(),
        manifest_digest: format!("sha256:{}", "ab".repeat(32)),
        config_digest: format!("sha256:{}", "cd".repeat(32)),
        config_size: 2,
        layers,
        platform: Platform::parse("linux/amd64").unwrap(),
        base: None,
        cache_source: None,
    }
}

const STATUS_1: &[u8] =
    b"Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n\n\
Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\nArchitecture: amd64\n";
const STATUS_2: &[u8] =
    b"Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n\n\
Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\nArchitecture: amd64\n\n\
Package: curl\nStatus: install ok installed\nVersion: 7.88.1-10\nArchitecture: amd64\n";

#[test]
fn the_final_filesystem_decides_and_databases_credit_the_installing_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = Layers {
        dir: tmp.path(),
        store: BlobStore::open(tmp.path().join("store")).unwrap(),
        next: Cell::new(0),
    };
    let six = "usr/lib/python3/dist-packages/six-1.16.0.dist-info";
    let bottom = layers.write(&[
        ("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
        ("var/lib/dpkg/status", STATUS_1),
        (&format!("{six}/METADATA"), b"Name: six\nVersion: 1.16.0\n"),
        (
            "srv/flask-3.0.0.dist-info/METADATA",
            b"Name: Flask\nVersion: 3.0.0\n",
        ),
    ]);
    let middle = layers.write(&[
        ("var/lib/dpkg/status", STATUS_2),
        (
            "usr/lib/python3/dist-packages/.wh.six-1.16.0.dist-info",
            b"",
        ),
        (
            "app/node_modules/express/package.json",
            br#"{"name":"express","version":"4.18.2"}"#,
        ),
        (
            "srv/flask-3.0.0.dist-info/METADATA",
            b"not metadata any more\n",
        ),
    ]);
    let top = layers.write(&[
        ("app/node_modules/.wh..wh..opq", b""),
        ("app/node_modules/lodash/package.json", br#"{"name":"lodash","version":"4.17.21"}"#),
        ("app/package-lock.json", br#"{"lockfileVersion":3,"packages":{"":{},"node_modules/lodash":{"version":"4.17.21"},"node_modules/left-pad":{"version":"1.3.0"}}}"#),
    ]);
    let img = image(vec![bottom.clone(), middle.clone(), top.clone()]);
    let blobs = CountingBlobs {
        store: layers.store.clone(),
        reads: AtomicUsize::new(0),
    };
    let cache = tmp.path().join("cache");
    let inv = inventory("example.com/app", &img, &cache, &blobs).unwrap();
    let got: Vec<(&str, &str)> = inv
        .packages
        .iter()
        .map(|p| (p.purl.as_str(), p.layer.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "pkg:deb/debian/base-files@12.4?arch=amd64&distro=debian-12",
                bottom.digest.as_str()
            ),
            (
                "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12",
                bottom.digest.as_str()
            ),
            (
                "pkg:deb/debian/curl@7.88.1-10?arch=amd64&distro=debian-12",
                middle.digest.as_str()
            ),
            ("pkg:npm/left-pad@1.3.0", top.digest.as_str()),
            ("pkg:npm/lodash@4.17.21", top.digest.as_str()),
        ]
    );
    assert_eq!(blobs.reads.load(Ordering::SeqCst), 3);

    // Every layer is cached now: the same inventory without reading a blob.
    let again = inventory("example.com/app", &img, &cache, &blobs).unwrap();
    assert_eq!(again.packages, inv.packages);
    assert_eq!(blobs.reads.load(Ordering::SeqCst), 3);

    // A layer with no package file at all is never read, once indexed.
    let plain = layers.write(&[("srv/readme.txt", b"hello")]);
    let index = crate::rootfs::overlay::read_index(
        &layers.store.existing(&plain.digest).unwrap(),
        &plain.diff_id,
    )
    .unwrap();
    crate::rootfs::overlay::save_index(&cache, &plain.digest, &index);
    let img = image(vec![bottom, plain]);
    inventory("example.com/app", &img, &cache, &blobs).unwrap();
    assert_eq!(blobs.reads.load(Ordering::SeqCst), 3);
}

#[test]
fn documents_are_stable_and_well_formed() {
    let found = |eco, name: &str, version: &str| Found::new(eco, name, version);
    let pkg = |f: Found, path: &str| ImagePackage {
        purl: f.purl(None).unwrap(),
        layer: format!("sha256:{}", "11".repeat(32)),
        path: path.to_string(),
        found: f,
    };
    let inv = Inventory {
        image: ImageId {
            repository: "127.0.0.1:5000/team/app".into(),
            reference: "127.0.0.1:5000/team/app".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
        },
        base: Some(ImageId {
            repository: "docker.io/library/debian".into(),
            reference: "docker.io/library/debian:bookworm".into(),
            digest: format!("sha256:{}", "cd".repeat(32)),
        }),
        os: None,
        packages: vec![
            pkg(
                found(package::Ecosystem::Pypi, "six", "1.16.0"),
                "a/six.dist-info/METADATA",
            ),
            pkg(
                found(package::Ecosystem::Pypi, "six", "1.16.0"),
                "b/six.dist-info/METADATA",
            ),
        ],
    };
    let spdx = spdx_json(&inv, "2024-01-01T00:00:00Z", "dockless-0.1.0").unwrap();
    assert_eq!(
        spdx,
        spdx_json(&inv, "2024-01-01T00:00:00Z", "dockless-0.1.0").unwrap()
    );
    let doc: serde_json::Value = serde_json::from_slice(&spdx).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let ids: BTreeSet<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["SPDXID"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "unique ids: {ids:?}");
    assert!(ids.iter().all(|id| id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')));
    assert_eq!(
        doc["packages"][0]["externalRefs"][0]["referenceLocator"],
        format!(
            "pkg:oci/app@sha256:{}?repository_url=127.0.0.1:5000%2Fteam%2Fapp",
            "ab".repeat(32)
        )
    );
    let cdx = cyclonedx_json(&inv, "2024-01-01T00:00:00Z", "dockless-0.1.0").unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&cdx).unwrap();
    assert_eq!(doc["specVersion"], "1.5");
    assert_eq!(
        doc["serialNumber"].as_str().unwrap().len(),
        "urn:uuid:".len() + 36
    );
    assert_eq!(doc["components"].as_array().unwrap().len(), 3);
}

#[test]
fn uuids_carry_version_and_variant() {
    let u = uuid_from("x");
    assert_eq!(u.len(), 36);
    assert_eq!(&u[14..15], "4");
    assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    assert_eq!(u, uuid_from("x"));
}
