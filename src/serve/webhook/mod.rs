//! GitHub webhook deliveries: the HMAC-SHA256 signature, the two body
//! encodings GitHub sends (JSON and form-encoded `payload=`), and what an
//! event asks of us (the payload's fields are read in `payload`).

mod payload;

pub use payload::{Branch, Payload, PullRequest, Repository};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// GitHub refuses to send payloads over 25 MB; we refuse to read them.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing X-Hub-Signature-256")]
    MissingSignature,
    #[error("X-Hub-Signature-256 does not match the body")]
    BadSignature,
    #[error("the body is not valid JSON: {0}")]
    BadJson(String),
}

/// An incremental HMAC-SHA256 over the raw body, fed chunk by chunk.
pub struct SignatureCheck {
    mac: Hmac<Sha256>,
    expected: Option<Vec<u8>>,
}

impl SignatureCheck {
    /// `header` is the `X-Hub-Signature-256` value (`sha256=<64 hex>`).
    pub fn new(secret: &[u8], header: Option<&[u8]>) -> Result<SignatureCheck, WebhookError> {
        let header = header.ok_or(WebhookError::MissingSignature)?;
        let expected = header
            .strip_prefix(b"sha256=")
            .and_then(|h| hex::decode(h.trim_ascii()).ok())
            .filter(|d| d.len() == 32);
        // A malformed header still costs a full check, so its timing says nothing.
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        Ok(SignatureCheck { mac, expected })
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.mac.update(chunk);
    }

    /// Constant-time comparison (hmac's `verify_slice` uses `subtle`).
    pub fn finish(self) -> Result<(), WebhookError> {
        let expected = self.expected.unwrap_or_else(|| vec![0u8; 32]);
        let wellformed = expected.len() == 32;
        match self.mac.verify_slice(&expected) {
            Ok(()) if wellformed => Ok(()),
            _ => Err(WebhookError::BadSignature),
        }
    }
}

/// Checks a whole body at once.
pub fn verify_signature(
    secret: &[u8],
    header: Option<&[u8]>,
    body: &[u8],
) -> Result<(), WebhookError> {
    let mut check = SignatureCheck::new(secret, header)?;
    check.update(body);
    check.finish()
}

/// `sha256=<hex>` for a body, as GitHub computes it (tests and tools use it).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether a `Content-Type` is GitHub's form encoding (`payload=<json>`).
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The payload of a body, in either encoding: the fields we read, typed
/// (see [`Payload`]); the rest is checked as JSON and dropped.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Payload, WebhookError> {
    let bad_json = |e: serde_json::Error| WebhookError::BadJson(e.to_string());
    if is_form(content_type) {
        let payload = form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| WebhookError::BadJson("form body without a payload field".into()))?;
        serde_json::from_str(&payload).map_err(bad_json)
    } else {
        serde_json::from_slice(body).map_err(bad_json)
    }
}

/// What a merged pull request asks us to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedPr {
    pub repository: String,
    pub number: u64,
    pub merge_commit_sha: String,
    pub head_sha: String,
    pub base_ref: String,
}

/// What a delivery means for us, once it is signed, parsed and from a listed repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ping,
    Build(MergedPr),
    /// Nothing to do, and why.
    Ignored(String),
    /// Claims to be a merged PR but cannot be acted on.
    Invalid(String),
}

/// `repository.full_name` of a payload.
pub fn repository(payload: &Payload) -> Option<&str> {
    payload.repository.as_ref()?.full_name.as_deref()
}

fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Sorts a delivery by its `X-GitHub-Event` and payload; `branch` is the one merges into which build.
pub fn classify(event: &str, payload: &Payload, branch: &str) -> Event {
    match event {
        "ping" => return Event::Ping,
        "pull_request" => {}
        "" => return Event::Ignored("no X-GitHub-Event header".into()),
        other => return Event::Ignored(format!("{other} events do not trigger builds")),
    }
    let action = payload.action.as_deref().unwrap_or("");
    if action != "closed" {
        return Event::Ignored(format!("pull_request action {action:?} is not \"closed\""));
    }
    let Some(pr) = &payload.pull_request else {
        return Event::Ignored("pull_request event without a pull_request object".into());
    };
    if pr.merged != Some(true) {
        return Event::Ignored("pull request closed without merging".into());
    }
    let base_ref = pr
        .base
        .as_ref()
        .and_then(|b| b.name.as_deref())
        .unwrap_or("");
    if base_ref != branch {
        return Event::Ignored(format!(
            "merged into {base_ref:?}, only merges into {branch:?} build"
        ));
    }
    let sha = pr.merge_commit_sha.as_deref().unwrap_or("");
    if !is_commit_sha(sha) {
        return Event::Invalid("pull_request.merge_commit_sha is not a commit id".into());
    }
    let head_sha = pr
        .head
        .as_ref()
        .and_then(|h| h.sha.clone())
        .unwrap_or_default();
    Event::Build(MergedPr {
        repository: repository(payload).unwrap_or("").to_string(),
        number: pr.number.or(payload.number).unwrap_or(0),
        merge_commit_sha: sha.to_ascii_lowercase(),
        head_sha,
        base_ref: base_ref.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    #[test]
    fn signature_matches_githubs_documented_example() {
        // The example from GitHub's "validating webhook deliveries" page.
        let sig = sign(SECRET, b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert_eq!(
            verify_signature(SECRET, Some(sig.as_bytes()), b"Hello, World!"),
            Ok(())
        );
    }

    #[test]
    fn signature_rejections() {
        let body = b"{}";
        let good = sign(SECRET, body);
        assert_eq!(
            verify_signature(SECRET, None, body),
            Err(WebhookError::MissingSignature)
        );
        for bad in [
            String::new(),
            "sha256=".into(),
            "sha256=zz".into(),
            good.replace("sha256=", "sha1="),
            good[..good.len() - 2].to_string(),
            format!("{good}00"),
            sign(b"other secret", body),
            good.to_uppercase(),
        ] {
            assert_eq!(
                verify_signature(SECRET, Some(bad.as_bytes()), body),
                Err(WebhookError::BadSignature),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify_signature(SECRET, Some(good.as_bytes()), b"{} "),
            Err(WebhookError::BadSignature)
        );
        // Chunked feeding gives the same answer as one slice.
        let mut check = SignatureCheck::new(SECRET, Some(good.as_bytes())).unwrap();
        check.update(b"{");
        check.update(b"}");
        assert_eq!(check.finish(), Ok(()));
    }

    #[test]
    fn json_and_form_bodies() {
        let v = parse_body(Some("application/json"), br#"{"zen":"x"}"#).unwrap();
        assert_eq!(v.zen.as_deref(), Some("x"));
        let form = b"payload=%7B%22zen%22%3A%22a+b%22%7D";
        let v = parse_body(Some("application/x-www-form-urlencoded"), form).unwrap();
        assert_eq!(v.zen.as_deref(), Some("a b"));
        assert!(parse_body(Some("application/json"), b"{nope").is_err());
        assert!(parse_body(Some("application/x-www-form-urlencoded"), b"other=1").is_err());
        assert!(parse_body(Some("application/x-www-form-urlencoded"), b"payload=%7B").is_err());
        assert!(parse_body(None, &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        // serde_json stops at 128 levels, in both encodings.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse_body(Some("application/json"), deep.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
        let form = format!("payload={}", deep.replace('[', "%5B").replace(']', "%5D"));
        let form_type = Some("application/x-www-form-urlencoded");
        assert!(parse_body(form_type, form.as_bytes()).is_err());
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_body(Some("application/json"), ok.as_bytes()).is_ok());
        // Also inside a field that is skipped, and inside one that is read.
        for key in ["padding", "repository"] {
            let inside = format!(r#"{{"{key}": {deep}}}"#);
            let e = parse_body(Some("application/json"), inside.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("recursion limit"), "{key}: {e}");
        }
    }

    fn payload(v: Value) -> Payload {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn fields_read_as_a_json_value_gave_them() {
        let read = |text: &str| parse_body(Some("application/json"), text.as_bytes()).unwrap();
        // Another type reads as absent, a non-object as an empty object.
        let odd = read(r#"{"action": 5, "number": -7, "pull_request": null, "repository": []}"#);
        assert_eq!(odd.action, None);
        assert_eq!(odd.number, None);
        assert_eq!(odd.pull_request, Some(PullRequest::default()));
        assert_eq!(odd.repository, Some(Repository::default()));
        for doc in [
            "[1, {\"action\": \"closed\"}]",
            "\"closed\"",
            "7",
            "null",
            "{}",
        ] {
            assert_eq!(read(doc), Payload::default(), "{doc}");
        }
        let numbers = read(r#"{"number": 7.0, "pull_request": {"number": 12, "merged": 1}}"#);
        assert_eq!(numbers.number, None);
        let pr = numbers.pull_request.unwrap();
        assert_eq!((pr.number, pr.merged), (Some(12), None));
        // A key given twice keeps its last value; unknown keys are skipped.
        let twice = read(
            r#"{"action": "opened", "x": {"action": "no"}, "action": "closed",
                "repository": {"full_name": "a/b", "full_name": "acme/shop"}}"#,
        );
        assert_eq!(twice.action.as_deref(), Some("closed"));
        assert_eq!(repository(&twice), Some("acme/shop"));
        // Escapes in keys and values are decoded.
        let escaped = read(r#"{"act\u0069on": "clos\u0065d"}"#);
        assert_eq!(escaped.action.as_deref(), Some("closed"));
    }

    /// The deliveries in testdata/webhooks, as GitHub sends them.
    #[test]
    fn github_deliveries() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/webhooks");
        let read = |name: &str| {
            let body = std::fs::read(dir.join(name)).unwrap();
            parse_body(Some("application/json"), &body).unwrap()
        };
        let ping = read("ping.json");
        assert_eq!(classify("ping", &ping, "develop"), Event::Ping);
        assert_eq!(repository(&ping), Some("acme/shop"));
        match classify(
            "pull_request",
            &read("pull_request.closed.merged.json"),
            "develop",
        ) {
            Event::Build(pr) => assert_eq!(
                pr,
                MergedPr {
                    repository: "acme/shop".into(),
                    number: 12,
                    merge_commit_sha: "3f786850e387550fdab836ed7e6dc881de23001b".into(),
                    head_sha: "89e6c98d92887913cadf06b2adb97f26cde4849b".into(),
                    base_ref: "develop".into(),
                }
            ),
            other => panic!("{other:?}"),
        }
        for (event, file) in [
            ("pull_request", "pull_request.closed.unmerged.json"),
            ("pull_request", "pull_request.opened.json"),
            ("pull_request", "pull_request.synchronize.json"),
            ("push", "push.json"),
        ] {
            let payload = read(file);
            assert_eq!(repository(&payload), Some("acme/shop"), "{file}");
            assert!(
                matches!(classify(event, &payload, "develop"), Event::Ignored(_)),
                "{file}"
            );
        }
    }

    fn pr(action: &str, merged: bool, base: &str, sha: &str) -> Payload {
        payload(json!({
            "action": action,
            "number": 7,
            "pull_request": {
                "number": 7, "merged": merged, "merge_commit_sha": sha,
                "head": {"sha": "1111111111111111111111111111111111111111", "ref": "feature"},
                "base": {"ref": base}
            },
            "repository": {"full_name": "acme/app"}
        }))
    }

    #[test]
    fn classification() {
        let sha = "a21683865c088b5fe1906cf6552d15a285a4986d";
        assert_eq!(
            classify("ping", &payload(json!({})), "develop"),
            Event::Ping
        );
        match classify(
            "pull_request",
            &pr("closed", true, "develop", sha),
            "develop",
        ) {
            Event::Build(m) => {
                assert_eq!(m.merge_commit_sha, sha);
                assert_eq!(m.number, 7);
                assert_eq!(m.repository, "acme/app");
            }
            other => panic!("{other:?}"),
        }
        for (event, payload) in [
            ("pull_request", pr("closed", false, "develop", sha)),
            ("pull_request", pr("opened", false, "develop", sha)),
            ("pull_request", pr("closed", true, "main", sha)),
            ("push", payload(json!({"ref": "refs/heads/develop"}))),
            ("", payload(json!({}))),
        ] {
            assert!(matches!(
                classify(event, &payload, "develop"),
                Event::Ignored(_)
            ));
        }
        for bad in ["", "--upload-pack=evil", "xyz"] {
            assert!(matches!(
                classify(
                    "pull_request",
                    &pr("closed", true, "develop", bad),
                    "develop"
                ),
                Event::Invalid(_)
            ));
        }
        // Wrong types never panic.
        let odd = payload(json!({"action": 5, "pull_request": [1, 2], "repository": "x"}));
        assert!(matches!(
            classify("pull_request", &odd, "develop"),
            Event::Ignored(_)
        ));
        assert_eq!(repository(&odd), None);
    }
}
