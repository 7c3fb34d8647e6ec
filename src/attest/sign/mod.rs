//! Signing in cosign's formats with an ECDSA P-256 key: the key read from
//! PEM (PKCS#8, SEC1, or cosign's scrypt + secretbox encrypted key with
//! its password in `COSIGN_PASSWORD`), signatures as ASN.1 DER over the
//! SHA-256 of the message (what `cosign verify --key` checks). p256 signs
//! deterministically (RFC 6979), so the same key and payload give the same
//! signature and the signature manifests stay reproducible.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The variable cosign reads a key's password from.
pub const PASSWORD_ENV: &str = "COSIGN_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read key {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key {}: {message}", path.display())]
    Key { path: PathBuf, message: String },
}

/// A private key that signs.
#[derive(Clone)]
pub struct Signer256 {
    key: SigningKey,
}

impl std::fmt::Debug for Signer256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer256(..)")
    }
}

/// cosign's encrypted key (go-securesystemslib `encrypted`), the PEM body.
#[derive(Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct KdfParams {
    N: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

impl Signer256 {
    /// Reads a PEM private key; an encrypted cosign key is opened with
    /// `password` (cosign's `COSIGN_PASSWORD`; unset means none was given).
    pub fn load(path: &Path, password: Option<&str>) -> Result<Signer256, SignError> {
        let bad = |message: String| SignError::Key {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read(path).map_err(|source| SignError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (label, der) =
            pem_rfc7468::decode_vec(&text).map_err(|e| bad(format!("not a PEM file ({e})")))?;
        let key = match label {
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(&der)
                .map_err(|e| bad(format!("not an ECDSA P-256 PKCS#8 key ({e})")))?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map(SigningKey::from)
                .map_err(|e| bad(format!("not an ECDSA P-256 SEC1 key ({e})")))?,
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
                let password = password.ok_or_else(|| {
                    bad(format!(
                        "the key is encrypted: set {PASSWORD_ENV} to its password"
                    ))
                })?;
                let pkcs8 = decrypt(&der, password).map_err(bad)?;
                SigningKey::from_pkcs8_der(&pkcs8)
                    .map_err(|e| bad(format!("not an ECDSA P-256 key inside ({e})")))?
            }
            "PUBLIC KEY" => return Err(bad("this is a public key; sign with the private one".into())),
            other => {
                return Err(bad(format!(
                    "a PEM {other:?}; expected an ECDSA P-256 \"PRIVATE KEY\", \"EC PRIVATE KEY\" or cosign's \"ENCRYPTED SIGSTORE PRIVATE KEY\""
                )))
            }
        };
        Ok(Signer256 { key })
    }

    /// The key from `path`, with the password from `COSIGN_PASSWORD`.
    pub fn load_with_env(path: &Path) -> Result<Signer256, SignError> {
        let password = std::env::var(PASSWORD_ENV).ok();
        Signer256::load(path, password.as_deref())
    }

    /// ASN.1 DER ECDSA signature over SHA-256(`message`).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.key.sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    /// `sign`, base64 (standard, padded) as cosign stores it.
    pub fn sign_b64(&self, message: &[u8]) -> String {
        B64.encode(self.sign(message))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key: *self.key.verifying_key(),
        }
    }
}

/// The scrypt parameter sets cosign's library accepts (they bound memory:
/// N=2^17, r=8 takes 128 MiB).
const SCRYPT_SETS: &[(u64, u32, u32)] = &[(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)];

/// Opens cosign's encrypted key: scrypt derives a 32-byte key from the
/// password, NaCl secretbox holds the PKCS#8 DER.
fn decrypt(body: &[u8], password: &str) -> Result<Vec<u8>, String> {
    let k: EncryptedKey =
        serde_json::from_slice(body).map_err(|e| format!("not a cosign encrypted key ({e})"))?;
    if k.kdf.name != "scrypt" || k.cipher.name != "nacl/secretbox" {
        return Err(format!(
            "unsupported encryption {}/{}: cosign keys use scrypt and nacl/secretbox",
            k.kdf.name, k.cipher.name
        ));
    }
    let p = &k.kdf.params;
    if !SCRYPT_SETS.contains(&(p.N, p.r, p.p)) {
        return Err(format!(
            "unsupported scrypt parameters N={} r={} p={}",
            p.N, p.r, p.p
        ));
    }
    let field = |name: &str, v: &str| {
        B64.decode(v)
            .map_err(|e| format!("field {name} is not base64 ({e})"))
    };
    let salt = field("kdf.salt", &k.kdf.salt)?;
    let nonce = field("cipher.nonce", &k.cipher.nonce)?;
    let sealed = field("ciphertext", &k.ciphertext)?;
    if nonce.len() != 24 {
        return Err("cipher.nonce is not 24 bytes".into());
    }
    let params = scrypt::Params::new(p.N.trailing_zeros() as u8, p.r, p.p, 32)
        .map_err(|e| format!("scrypt parameters: {e}"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut key)
        .map_err(|e| format!("scrypt: {e}"))?;
    XSalsa20Poly1305::new(&key.into())
        .decrypt(nonce.as_slice().into(), sealed.as_slice())
        .map_err(|_| format!("cannot decrypt: wrong {PASSWORD_ENV}, or a damaged key file"))
}

/// A public key that verifies (cosign.pub: PEM "PUBLIC KEY").
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    pub fn load(path: &Path) -> Result<PublicKey, SignError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let key = VerifyingKey::from_public_key_pem(&text).map_err(|e| SignError::Key {
            path: path.to_path_buf(),
            message: format!("not an ECDSA P-256 PEM \"PUBLIC KEY\" ({e})"),
        })?;
        Ok(PublicKey { key })
    }

    /// Whether `der` (ASN.1 DER) signs `message`.
    pub fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        Signature::from_der(der).is_ok_and(|sig| self.key.verify(message, &sig).is_ok())
    }

    /// `verifies` for a base64 signature (cosign's annotation).
    pub fn verifies_b64(&self, message: &[u8], sig: &str) -> bool {
        B64.decode(sig)
            .is_ok_and(|der| self.verifies(message, &der))
    }

    /// `sha256:<hex>` of the key's SubjectPublicKeyInfo DER: names the
    /// signer of an attestation without a key id in the envelope.
    pub fn fingerprint(&self) -> String {
        let der = self
            .key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        crate::digest::sha256(&der)
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }
}

/// cosign's "simple signing" payload for an image digest, byte for byte
/// as Go's `json.Marshal` writes sigstore's struct (no annotations:
/// `optional` is null).
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// DSSE's pre-authentication encoding, what an envelope's signature covers:
/// `DSSEv1 <len(type)> <type> <len(body)> <body>`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A DSSE envelope (secure-systems-lab/dsse).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    /// base64 (standard) of the payload.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Empty (and left out) as cosign writes it for a key without an id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    pub sig: String,
}

impl Envelope {
    /// `body` as the envelope's payload, signed when a key is given.
    pub fn new(payload_type: &str, body: &[u8], key: Option<&Signer256>) -> Envelope {
        let signatures = key
            .map(|k| EnvelopeSignature {
                keyid: String::new(),
                sig: k.sign_b64(&pae(payload_type, body)),
            })
            .into_iter()
            .collect();
        Envelope {
            payload_type: payload_type.to_string(),
            payload: B64.encode(body),
            signatures,
        }
    }

    /// The payload's bytes, when one of the signatures is `key`'s.
    pub fn verified_payload(&self, key: &PublicKey) -> Option<Vec<u8>> {
        let body = B64.decode(&self.payload).ok()?;
        let message = pae(&self.payload_type, &body);
        self.signatures
            .iter()
            .any(|s| key.verifies_b64(&message, &s.sig))
            .then_some(body)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
