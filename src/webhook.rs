//! GitHub webhook deliveries: the HMAC-SHA256 signature, the two body
//! encodings GitHub sends (JSON and form-encoded `payload=`), and what an
//! event asks of us.

use hmac::{Hmac, Mac};
use serde_json::Value;
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

/// The JSON document of a body, in either encoding.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, WebhookError> {
    if is_form(content_type) {
        let payload = form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| WebhookError::BadJson("form body without a payload field".into()))?;
        serde_json::from_str(&payload).map_err(|e| WebhookError::BadJson(e.to_string()))
    } else {
        serde_json::from_slice(body).map_err(|e| WebhookError::BadJson(e.to_string()))
    }
}

/// Checks that a body too large to keep in memory is valid JSON (or a form
/// whose `payload` is), reading it as it streams past on a blocking thread.
/// The contract answers 400 before 413, so an oversized body still needs this.
pub struct StreamingJsonCheck {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl StreamingJsonCheck {
    pub fn start(form: bool) -> StreamingJsonCheck {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let task = tokio::task::spawn_blocking(move || {
            let chunks = ChannelReader {
                rx,
                cur: bytes::Bytes::new(),
            };
            let reader = std::io::BufReader::new(chunks);
            if form {
                check_json(std::io::BufReader::new(FormPayloadReader::new(reader)))
            } else {
                check_json(reader)
            }
        });
        StreamingJsonCheck { tx, task }
    }

    /// Feeds a chunk; false once the checker has already stopped (it failed early).
    pub async fn feed(&self, chunk: bytes::Bytes) -> bool {
        self.tx.send(chunk).await.is_ok()
    }

    /// Ends the body and returns the verdict.
    pub async fn finish(self) -> Result<(), WebhookError> {
        drop(self.tx);
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WebhookError::BadJson(e)),
            Err(e) => Err(WebhookError::BadJson(format!("checker failed: {e}"))),
        }
    }
}

fn check_json(reader: impl std::io::Read) -> Result<(), String> {
    use serde::Deserialize as _;
    let mut de = serde_json::Deserializer::from_reader(reader);
    serde::de::IgnoredAny::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Streams the percent-decoded value of the first `payload` field of a form body.
struct FormPayloadReader<R> {
    inner: std::io::Bytes<R>,
    /// None until the `payload=` field is found; Some(false) once it ended.
    in_value: Option<bool>,
}

impl<R: std::io::BufRead> FormPayloadReader<R> {
    fn new(inner: R) -> Self {
        FormPayloadReader {
            inner: inner.bytes(),
            in_value: None,
        }
    }

    fn next_byte(&mut self) -> std::io::Result<Option<u8>> {
        self.inner.next().transpose()
    }

    /// Skips fields until `payload=`; false when the body has none.
    fn seek_payload(&mut self) -> std::io::Result<bool> {
        loop {
            let mut key = Vec::new();
            loop {
                match self.next_byte()? {
                    None => return Ok(false),
                    Some(b'=') => break,
                    Some(b'&') => key.clear(),
                    Some(b) if key.len() < 16 => key.push(b),
                    Some(_) => key.push(0),
                }
            }
            if key == b"payload" {
                return Ok(true);
            }
            loop {
                match self.next_byte()? {
                    None => return Ok(false),
                    Some(b'&') => break,
                    Some(_) => {}
                }
            }
        }
    }

    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
}

impl<R: std::io::BufRead> std::io::Read for FormPayloadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.in_value.is_none() {
            if !self.seek_payload()? {
                return Err(std::io::Error::other("form body without a payload field"));
            }
            self.in_value = Some(true);
        }
        let mut n = 0;
        while n < buf.len().saturating_sub(2) && self.in_value == Some(true) {
            match self.next_byte()? {
                None | Some(b'&') => self.in_value = Some(false),
                Some(b'+') => {
                    buf[n] = b' ';
                    n += 1;
                }
                Some(b'%') => {
                    let hi = self.next_byte()?;
                    let lo = match hi {
                        Some(_) => self.next_byte()?,
                        None => None,
                    };
                    match (hi.and_then(Self::hex), lo.and_then(Self::hex)) {
                        (Some(h), Some(l)) => {
                            buf[n] = h << 4 | l;
                            n += 1;
                        }
                        _ => {
                            // Kept literally, as form_urlencoded does; only JSON validity matters here.
                            for b in [Some(b'%'), hi, lo].into_iter().flatten() {
                                if b == b'&' {
                                    self.in_value = Some(false);
                                    break;
                                }
                                buf[n] = b;
                                n += 1;
                            }
                        }
                    }
                }
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                }
            }
        }
        if n == 0 && buf.len() < 3 && self.in_value == Some(true) {
            return Err(std::io::Error::other("read buffer too small"));
        }
        Ok(n)
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
pub fn repository(payload: &Value) -> Option<&str> {
    payload.get("repository")?.get("full_name")?.as_str()
}

fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Sorts a delivery by its `X-GitHub-Event` and payload; `branch` is the one merges into which build.
pub fn classify(event: &str, payload: &Value, branch: &str) -> Event {
    match event {
        "ping" => return Event::Ping,
        "pull_request" => {}
        "" => return Event::Ignored("no X-GitHub-Event header".into()),
        other => return Event::Ignored(format!("{other} events do not trigger builds")),
    }
    let action = payload.get("action").and_then(Value::as_str).unwrap_or("");
    if action != "closed" {
        return Event::Ignored(format!("pull_request action {action:?} is not \"closed\""));
    }
    let Some(pr) = payload.get("pull_request") else {
        return Event::Ignored("pull_request event without a pull_request object".into());
    };
    if pr.get("merged").and_then(Value::as_bool) != Some(true) {
        return Event::Ignored("pull request closed without merging".into());
    }
    let base_ref = pr
        .get("base")
        .and_then(|b| b.get("ref"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if base_ref != branch {
        return Event::Ignored(format!(
            "merged into {base_ref:?}, only merges into {branch:?} build"
        ));
    }
    let sha = pr
        .get("merge_commit_sha")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !is_commit_sha(sha) {
        return Event::Invalid("pull_request.merge_commit_sha is not a commit id".into());
    }
    let head_sha = pr
        .get("head")
        .and_then(|h| h.get("sha"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let number = pr
        .get("number")
        .or_else(|| payload.get("number"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Event::Build(MergedPr {
        repository: repository(payload).unwrap_or("").to_string(),
        number,
        merge_commit_sha: sha.to_ascii_lowercase(),
        head_sha,
        base_ref: base_ref.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(v["zen"], "x");
        let form = b"payload=%7B%22zen%22%3A%22a+b%22%7D";
        let v = parse_body(Some("application/x-www-form-urlencoded"), form).unwrap();
        assert_eq!(v["zen"], "a b");
        assert!(parse_body(Some("application/json"), b"{nope").is_err());
        assert!(parse_body(Some("application/x-www-form-urlencoded"), b"other=1").is_err());
        assert!(parse_body(Some("application/x-www-form-urlencoded"), b"payload=%7B").is_err());
        assert!(parse_body(None, &[0xff, 0xfe]).is_err());
    }

    async fn stream_check(form: bool, body: &[u8]) -> bool {
        let check = StreamingJsonCheck::start(form);
        for chunk in body.chunks(3) {
            if !check.feed(bytes::Bytes::copy_from_slice(chunk)).await {
                break;
            }
        }
        check.finish().await.is_ok()
    }

    #[tokio::test]
    async fn streaming_check_agrees_with_parse_body() {
        let cases: [(bool, &[u8]); 9] = [
            (false, br#"{"a": [1, 2, {"b": "c"}]}"#),
            (false, br#"{"a": 1"#),
            (false, br#"{"a": 1} trailing"#),
            (true, b"payload=%7B%22a%22%3A+%22x%26y%22%7D"),
            (true, b"x=1&payload=%7B%7D&z=2"),
            (true, b"payload=%7B"),
            (true, b"other=%7B%7D"),
            (true, b"payload=%7B%22a%22%3A%22%zz%22%7D"),
            (false, b""),
        ];
        for (form, body) in cases {
            let ct = if form {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            assert_eq!(
                stream_check(form, body).await,
                parse_body(Some(ct), body).is_ok(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn pr(action: &str, merged: bool, base: &str, sha: &str) -> Value {
        json!({
            "action": action,
            "number": 7,
            "pull_request": {
                "number": 7, "merged": merged, "merge_commit_sha": sha,
                "head": {"sha": "1111111111111111111111111111111111111111", "ref": "feature"},
                "base": {"ref": base}
            },
            "repository": {"full_name": "acme/app"}
        })
    }

    #[test]
    fn classification() {
        let sha = "a21683865c088b5fe1906cf6552d15a285a4986d";
        assert_eq!(classify("ping", &json!({}), "develop"), Event::Ping);
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
            ("push", json!({"ref": "refs/heads/develop"})),
            ("", json!({})),
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
        let odd = json!({"action": 5, "pull_request": [1, 2], "repository": "x"});
        assert!(matches!(
            classify("pull_request", &odd, "develop"),
            Event::Ignored(_)
        ));
        assert_eq!(repository(&odd), None);
    }
}
