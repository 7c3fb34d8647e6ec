//! SLSA provenance v1 (slsa.dev/spec/v1.0/provenance) for a built image,
//! as the predicate of an in-toto Statement v1: who built it (dockless and
//! its version), from what (the Dockerfile and its digest, the build args,
//! the source repository and commit when known, every registry image the
//! build read, by digest), and when. With `SOURCE_DATE_EPOCH` set, both
//! times are that epoch, so the same inputs give the same bytes.

use super::statement::{Statement, Subject};
use serde::Serialize;
use std::collections::BTreeMap;

pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What `externalParameters` holds is described in the README ("Supply chain").
pub const BUILD_TYPE: &str = "https://github.com/dockless/dockless/build/v1";
pub const BUILDER_ID: &str = "https://github.com/dockless/dockless";

/// A registry image the build read (a `FROM` or a `COPY --from=<image>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Material {
    /// As resolved: `docker.io/library/debian:bookworm`.
    pub reference: String,
    /// What the reference resolved to (an index or a manifest).
    pub digest: String,
}

/// The repository and commit a build's context came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// e.g. `https://github.com/o/r`
    pub repository: String,
    /// The full commit hash (the merge commit, for the service).
    pub commit: String,
}

/// What the provenance records about one build.
#[derive(Debug, Clone, Default)]
pub struct BuildRecord {
    /// As given (`Dockerfile`, `deploy/Dockerfile`), relative to the context
    /// or the repository.
    pub dockerfile: String,
    pub dockerfile_digest: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platforms: Vec<String>,
    pub source: Option<Source>,
    pub materials: Vec<Material>,
    /// Seconds since the epoch; both are `SOURCE_DATE_EPOCH` when it is set.
    pub started: u64,
    pub finished: u64,
    /// The service's build id; none for a local build, so it stays reproducible.
    pub invocation_id: Option<String>,
}

/// Build args whose names say they hold a credential never reach the
/// document (BuildKit's SecretsUsedInArgOrEnv check uses the same words).
pub fn is_secret_name(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "passwd",
        "password",
        "pword",
        "secret",
        "token",
    ];
    name.to_ascii_lowercase()
        .split(['_', '-', '.'])
        .any(|w| WORDS.contains(&w))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Predicate<'a> {
    build_definition: BuildDefinition<'a>,
    run_details: RunDetails<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildDefinition<'a> {
    build_type: &'static str,
    external_parameters: ExternalParameters<'a>,
    resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalParameters<'a> {
    dockerfile: &'a str,
    build_args: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    platforms: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

/// in-toto's ResourceDescriptor, the fields used here.
#[derive(Serialize)]
struct ResourceDescriptor {
    uri: String,
    digest: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunDetails<'a> {
    builder: Builder,
    metadata: Metadata<'a>,
}

#[derive(Serialize)]
struct Builder {
    id: &'static str,
    version: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    invocation_id: Option<&'a str>,
    started_on: String,
    finished_on: String,
}

/// `git+https://host/o/r@<commit>`, the source as SLSA's examples write it.
fn source_uri(s: &Source) -> String {
    let repo = s.repository.trim_end_matches('/');
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    format!("git+{repo}")
}

/// `pkg:docker/<reference>`, as BuildKit names its base images.
fn image_uri(reference: &str) -> String {
    format!("pkg:docker/{reference}")
}

fn sha256_map(digest: &str) -> BTreeMap<&'static str, String> {
    let hex = crate::digest::hex_part(digest).unwrap_or(digest);
    BTreeMap::from([("sha256", hex.to_string())])
}

/// The in-toto statement's bytes (compact JSON) for `subjects`.
pub fn provenance_json(
    subjects: Vec<Subject>,
    record: &BuildRecord,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut deps = Vec::new();
    if let Some(s) = &record.source {
        deps.push(ResourceDescriptor {
            uri: source_uri(s),
            digest: BTreeMap::from([("gitCommit", s.commit.clone())]),
        });
    }
    deps.push(ResourceDescriptor {
        uri: record.dockerfile.clone(),
        digest: sha256_map(&record.dockerfile_digest),
    });
    let mut materials = record.materials.clone();
    materials.sort();
    materials.dedup();
    deps.extend(materials.iter().map(|m| ResourceDescriptor {
        uri: image_uri(&m.reference),
        digest: sha256_map(&m.digest),
    }));
    let build_args = record
        .build_args
        .iter()
        .filter(|(k, _)| !is_secret_name(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let predicate = Predicate {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE,
            external_parameters: ExternalParameters {
                dockerfile: &record.dockerfile,
                build_args,
                target: record.target.as_deref(),
                platforms: &record.platforms,
                source: record.source.as_ref().map(source_uri),
            },
            resolved_dependencies: deps,
        },
        run_details: RunDetails {
            builder: Builder {
                id: BUILDER_ID,
                version: BTreeMap::from([("dockless", env!("CARGO_PKG_VERSION"))]),
            },
            metadata: Metadata {
                invocation_id: record.invocation_id.as_deref(),
                started_on: crate::image::rfc3339(record.started),
                finished_on: crate::image::rfc3339(record.finished),
            },
        },
    };
    Statement::new(subjects, PREDICATE_TYPE, serde_json::to_value(predicate)?).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BuildRecord {
        BuildRecord {
            dockerfile: "deploy/Dockerfile".into(),
            dockerfile_digest: format!("sha256:{}", "d".repeat(64)),
            build_args: BTreeMap::from([
                ("VERSION".into(), "2".into()),
                ("NPM_TOKEN".into(), "hunter2".into()),
                ("api-key".into(), "k3y".into()),
                ("MONKEY".into(), "banana".into()),
            ]),
            target: None,
            platforms: vec!["linux/amd64".into()],
            source: Some(Source {
                repository: "https://github.com/o/r.git".into(),
                commit: "c".repeat(40),
            }),
            materials: vec![
                Material {
                    reference: "docker.io/library/debian:bookworm".into(),
                    digest: format!("sha256:{}", "b".repeat(64)),
                },
                Material {
                    reference: "docker.io/library/debian:bookworm".into(),
                    digest: format!("sha256:{}", "b".repeat(64)),
                },
            ],
            started: 1_700_000_000,
            finished: 1_700_000_000,
            invocation_id: None,
        }
    }

    #[test]
    fn statement_names_inputs_and_never_secrets() {
        let subject = Subject::new("127.0.0.1:5000/app", &format!("sha256:{}", "a".repeat(64)));
        let bytes = provenance_json(vec![subject.clone()], &record()).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("k3y"), "{text}");
        assert!(!text.contains("NPM_TOKEN"), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(v["predicateType"], PREDICATE_TYPE);
        assert_eq!(v["subject"][0]["digest"]["sha256"], "a".repeat(64));
        let def = &v["predicate"]["buildDefinition"];
        assert_eq!(def["externalParameters"]["buildArgs"]["VERSION"], "2");
        assert_eq!(def["externalParameters"]["buildArgs"]["MONKEY"], "banana");
        let deps = def["resolvedDependencies"].as_array().unwrap();
        assert_eq!(deps.len(), 3, "source, Dockerfile, one base: {deps:?}");
        assert_eq!(deps[0]["uri"], "git+https://github.com/o/r");
        assert_eq!(deps[0]["digest"]["gitCommit"], "c".repeat(40));
        assert_eq!(
            deps[2]["uri"],
            "pkg:docker/docker.io/library/debian:bookworm"
        );
        let meta = &v["predicate"]["runDetails"]["metadata"];
        assert_eq!(meta["startedOn"], "2023-11-14T22:13:20Z");
        assert!(meta.get("invocationId").is_none());
        // The same record gives the same bytes.
        assert_eq!(bytes, provenance_json(vec![subject], &record()).unwrap());
    }
}
