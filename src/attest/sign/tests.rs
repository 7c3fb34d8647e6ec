use super::*;
use p256::pkcs8::EncodePrivateKey;

fn secret() -> p256::SecretKey {
    p256::SecretKey::from_slice(&[7u8; 32]).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// cosign's encrypted key format, written the way go-securesystemslib does.
fn encrypted_pem(pkcs8: &[u8], password: &str, n: u64) -> String {
    let (salt, nonce) = ([3u8; 32], [5u8; 24]);
    let params = scrypt::Params::new(n.trailing_zeros() as u8, 8, 1, 32).unwrap();
    let mut key = [0u8; 32];
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut key).unwrap();
    let sealed = XSalsa20Poly1305::new(&key.into())
        .encrypt(nonce.as_slice().into(), pkcs8)
        .unwrap();
    let body = serde_json::json!({
        "kdf": {"name": "scrypt", "params": {"N": n, "r": 8, "p": 1}, "salt": B64.encode(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": B64.encode(nonce)},
        "ciphertext": B64.encode(sealed),
    });
    pem_rfc7468::encode_string(
        "ENCRYPTED SIGSTORE PRIVATE KEY",
        pem_rfc7468::LineEnding::LF,
        body.to_string().as_bytes(),
    )
    .unwrap()
}

#[test]
fn every_key_format_signs_alike_and_deterministically() {
    let d = tempfile::tempdir().unwrap();
    let pkcs8 = secret().to_pkcs8_der().unwrap();
    let pkcs8_pem = secret().to_pkcs8_pem(LineEnding::LF).unwrap();
    let sec1_pem = secret().to_sec1_pem(LineEnding::LF).unwrap();
    let paths = [
        write(d.path(), "k.pem", &pkcs8_pem),
        write(d.path(), "k.sec1", &sec1_pem),
        write(
            d.path(),
            "cosign.key",
            &encrypted_pem(pkcs8.as_bytes(), "pw", 32768),
        ),
    ];
    let payload = simple_signing_payload("r/app", "sha256:00");
    let sigs: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| Signer256::load(p, Some("pw")).unwrap().sign(&payload))
        .collect();
    assert!(
        sigs.windows(2).all(|w| w[0] == w[1]),
        "RFC 6979: one signature"
    );
    let public = Signer256::load(&paths[0], None).unwrap().public_key();
    assert!(public.verifies(&payload, &sigs[0]));
    let mut tampered = payload.clone();
    tampered[5] ^= 1;
    assert!(!public.verifies(&tampered, &sigs[0]));
    let pub_path = write(d.path(), "k.pub", &public.to_pem());
    assert!(PublicKey::load(&pub_path)
        .unwrap()
        .verifies(&payload, &sigs[0]));
}

#[test]
fn key_errors_say_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let pkcs8 = secret().to_pkcs8_der().unwrap();
    let enc = write(
        d.path(),
        "c.key",
        &encrypted_pem(pkcs8.as_bytes(), "pw", 32768),
    );
    let text = |r: Result<Signer256, SignError>| r.unwrap_err().to_string();
    assert!(text(Signer256::load(&enc, None)).contains("set COSIGN_PASSWORD"));
    assert!(text(Signer256::load(&enc, Some("nope"))).contains("wrong COSIGN_PASSWORD"));
    let odd = write(
        d.path(),
        "odd.key",
        &encrypted_pem(pkcs8.as_bytes(), "pw", 1024),
    );
    assert!(text(Signer256::load(&odd, Some("pw"))).contains("unsupported scrypt parameters"));
    let public = write(
        d.path(),
        "k.pub",
        &Signer256::load(
            &write(
                d.path(),
                "k",
                &secret().to_pkcs8_pem(LineEnding::LF).unwrap(),
            ),
            None,
        )
        .unwrap()
        .public_key()
        .to_pem(),
    );
    assert!(text(Signer256::load(&public, None)).contains("public key"));
    let junk = write(d.path(), "junk", "hello");
    assert!(text(Signer256::load(&junk, None)).contains("not a PEM file"));
}

#[test]
fn payload_and_envelope_formats() {
    let payload = simple_signing_payload("127.0.0.1:5000/app", "sha256:abc");
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        r#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/app"},"image":{"docker-manifest-digest":"sha256:abc"},"type":"cosign container image signature"},"optional":null}"#
    );
    assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab");
    let key = Signer256 {
        key: SigningKey::from(secret()),
    };
    let env = Envelope::new("application/vnd.in-toto+json", b"{}", Some(&key));
    assert_eq!(env.verified_payload(&key.public_key()).unwrap(), b"{}");
    let mut forged = env.clone();
    forged.payload = B64.encode(b"{ }");
    assert!(forged.verified_payload(&key.public_key()).is_none());
    let json = String::from_utf8(env.to_json()).unwrap();
    assert!(json.starts_with(r#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":""#), "{json}");
}
