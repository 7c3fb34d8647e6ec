//! Helpers for the supply chain tests: a Python venv with independent
//! validators (jsonschema, cyclonedx-python-lib) and signing libraries
//! (cryptography, PyNaCl) from PyPI, kept outside the clone; reading an
//! image's attachments from an OCI layout.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Bump to rebuild the venv with other packages.
const VENV: &str = "pyvenv-supply-1";
const PACKAGES: &[&str] = &[
    "jsonschema",
    "cyclonedx-python-lib[json-validation]",
    "cryptography",
    "pynacl",
];

pub fn fixtures_dir() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    PathBuf::from(home).join(".cache/dockless-test-fixtures")
}

/// The venv's python, creating the venv the first time (in a scratch
/// folder renamed into place, so concurrent tests never see half of one).
pub fn python() -> PathBuf {
    let dir = fixtures_dir().join(VENV);
    let python = dir.join("bin/python");
    if dir.join("ready").exists() {
        return python;
    }
    std::fs::create_dir_all(fixtures_dir()).unwrap();
    let scratch = tempfile::tempdir_in(fixtures_dir()).unwrap();
    let venv = scratch.path().join("v");
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 (and python3-venv; .ci/run installs them)");
    assert!(ok.success(), "python3 -m venv failed");
    // The index sits behind a TLS-intercepting proxy here: trust the OS store.
    let mut pip = Command::new(venv.join("bin/python"));
    pip.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]);
    if Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        pip.args(["--cert", "/etc/ssl/certs/ca-certificates.crt"]);
    }
    let out = pip.args(PACKAGES).output().unwrap();
    assert!(
        out.status.success(),
        "pip install {PACKAGES:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(venv.join("ready"), "").unwrap();
    // Another test may have won the race; its venv is as good.
    let _ = std::fs::rename(&venv, &dir);
    python
}

/// Runs `script` with the venv's python; (exit ok, stdout + stderr).
pub fn run_python(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const VALIDATE: &str = r#"
import json, sys
kind, path = sys.argv[1], sys.argv[2]
text = open(path).read()
if kind == "spdx":
    import jsonschema
    schema = json.load(open(sys.argv[3]))
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(json.loads(text)))
    for e in errors:
        print(e.message)
    sys.exit(1 if errors else 0)
from cyclonedx.validation.json import JsonStrictValidator
from cyclonedx.schema import SchemaVersion
error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
if error:
    print(error)
    sys.exit(1)
"#;

/// The official SPDX 2.3 JSON schema, as the serde-spdx crate bundles it
/// (its structs are generated from it), found in cargo's registry sources.
pub fn spdx_schema() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let src = cargo_home.join("registry/src");
    for index in std::fs::read_dir(&src).unwrap().flatten() {
        for krate in std::fs::read_dir(index.path()).unwrap().flatten() {
            let name = krate.file_name().to_string_lossy().into_owned();
            let schema = krate.path().join("schemas/spdx_2_3.json");
            if name.starts_with("serde-spdx-0.10") && schema.is_file() {
                return schema;
            }
        }
    }
    panic!(
        "serde-spdx's schemas/spdx_2_3.json not found under {}",
        src.display()
    );
}

/// Validates a document with the Python tools: (valid, messages).
pub fn validate(kind: &str, doc: &Path) -> (bool, String) {
    let doc = doc.to_str().unwrap();
    match kind {
        "spdx" => {
            let schema = spdx_schema();
            run_python(VALIDATE, &["spdx", doc, schema.to_str().unwrap()])
        }
        _ => run_python(VALIDATE, &["cyclonedx", doc]),
    }
}

/// An image's attachments in an OCI layout.
pub struct LayoutAttachments {
    pub layout: PathBuf,
    pub stem: String,
}

impl LayoutAttachments {
    pub fn new(layout: &Path, digest: &str) -> LayoutAttachments {
        LayoutAttachments {
            layout: layout.to_path_buf(),
            stem: digest.replacen(':', "-", 1),
        }
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::read(self.layout.join("blobs/sha256").join(hex)).unwrap()
    }

    pub fn json(&self, digest: &str) -> serde_json::Value {
        serde_json::from_slice(&self.blob(digest)).unwrap()
    }

    /// The manifest under ref name `name`, if index.json has one.
    pub fn named(&self, name: &str) -> Option<serde_json::Value> {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.layout.join("index.json")).unwrap())
                .unwrap();
        let entry = index["manifests"]
            .as_array()?
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)?
            .clone();
        Some(self.json(entry["digest"].as_str().unwrap()))
    }

    /// The first layer of the referrer with `artifact_type`.
    pub fn referrer_layer(&self, artifact_type: &str) -> Option<Vec<u8>> {
        let index = self.named(&self.stem)?;
        let entry = index["manifests"]
            .as_array()?
            .iter()
            .find(|m| m["artifactType"] == artifact_type)?
            .clone();
        let manifest = self.json(entry["digest"].as_str().unwrap());
        Some(self.blob(manifest["layers"][0]["digest"].as_str().unwrap()))
    }

    /// The first layer of cosign's `.sbom` tag.
    pub fn cosign_sbom(&self) -> Option<Vec<u8>> {
        let m = self.named(&format!("{}.sbom", self.stem))?;
        Some(self.blob(m["layers"][0]["digest"].as_str().unwrap()))
    }
}

/// `skopeo copy` of `repo_ref` (a tag or `@digest`) into an OCI layout
/// named `x`: the manifest and blobs as the registry serves them.
pub fn skopeo_fetch(
    reg: &crate::regsupport::Registry,
    repo_ref: &str,
    dest: &Path,
) -> LayoutAttachments {
    let out = Command::new("skopeo")
        .arg("copy")
        .args(reg.skopeo_tls_args("src-"))
        .arg(format!("docker://{}/{repo_ref}", reg.addr()))
        .arg(format!("oci:{}:x", dest.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy {repo_ref}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    LayoutAttachments::new(dest, "sha256:x")
}
