//! Signature checks: never a panic, and a header is accepted only when it
//! carries the body's HMAC-SHA256 under the secret.
#![no_main]
use dockless::serve::webhook::{sign, verify_signature, SignatureCheck};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // [secret_len] secret [header_len] header body
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (secret, rest) = rest.split_at((n as usize).min(rest.len()));
    let Some((&h, rest)) = rest.split_first() else {
        return;
    };
    let (header, body) = rest.split_at((h as usize).min(rest.len()));

    let right = sign(secret, body);
    assert_eq!(
        verify_signature(secret, Some(right.as_bytes()), body),
        Ok(())
    );
    assert!(verify_signature(secret, None, body).is_err());

    let verdict = verify_signature(secret, Some(header), body);
    if verdict.is_ok() {
        // Accepted: the header must decode to exactly the right MAC.
        let hex_part = header
            .strip_prefix(b"sha256=")
            .expect("accepted without the sha256= prefix")
            .trim_ascii();
        let got = hex::decode(hex_part).expect("accepted a header that is not hex");
        let want = hex::decode(&right["sha256=".len()..]).unwrap();
        assert_eq!(got, want, "accepted the wrong MAC");
    }
    // Fed in two pieces, the answer is the same.
    let cut = (h as usize).min(body.len());
    if let Ok(mut check) = SignatureCheck::new(secret, Some(header)) {
        check.update(&body[..cut]);
        check.update(&body[cut..]);
        assert_eq!(check.finish(), verdict);
    }
    // Flipping one body byte makes the right header wrong.
    if let Some(first) = body.first() {
        let mut other = body.to_vec();
        other[0] = first ^ 1;
        assert!(verify_signature(secret, Some(right.as_bytes()), &other).is_err());
    }
});
