//! The in-toto Statement v1 (github.com/in-toto/attestation, spec/v1) that
//! wraps every attestation: which artifacts it is about, by digest, and a
//! typed predicate.

use serde::Serialize;
use std::collections::BTreeMap;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The DSSE payload type of a statement (cosign requires exactly this).
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// An artifact a statement is about; verifiers match the digest only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// `name` is `REGISTRY/REPO` (or the image name), `digest` `sha256:<hex>`.
    pub fn new(name: &str, digest: &str) -> Subject {
        let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        Subject {
            name: name.to_string(),
            digest: BTreeMap::from([(alg.to_string(), hex.to_string())]),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub kind: &'static str,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

impl Statement {
    pub fn new(
        subject: Vec<Subject>,
        predicate_type: &str,
        predicate: serde_json::Value,
    ) -> Statement {
        Statement {
            kind: STATEMENT_TYPE,
            subject,
            predicate_type: predicate_type.to_string(),
            predicate,
        }
    }

    /// Compact JSON; struct fields in order, and serde_json's maps sorted.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}
