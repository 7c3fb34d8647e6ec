use super::*;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::Value;

fn key(seed: u8, dir: &std::path::Path) -> Signer256 {
    let pem = p256::SecretKey::from_slice(&[seed; 32])
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    let path = dir.join(format!("k{seed}.pem"));
    std::fs::write(&path, pem.as_bytes()).unwrap();
    Signer256::load(&path, None).unwrap()
}

fn subject() -> SubjectImage {
    SubjectImage {
        repository: "127.0.0.1:5000/app".into(),
        digest: format!("sha256:{}", "a".repeat(64)),
        media_type: crate::image::MEDIA_TYPE_MANIFEST.into(),
        size: 500,
    }
}

fn docs() -> Documents {
    Documents {
        sbom: Some((SbomFormat::Spdx, br#"{"spdxVersion":"SPDX-2.3"}"#.to_vec())),
        provenance: Some(
            crate::attest::provenance::provenance_json(
                vec![crate::attest::statement::Subject::new(
                    &subject().repository,
                    &subject().digest,
                )],
                &Default::default(),
            )
            .unwrap(),
        ),
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn read(dir: &std::path::Path, tag: &str) -> Value {
    let index = crate::layout::LayoutIndex::open(dir).unwrap();
    let bytes = index.manifest_named(tag).unwrap().unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn blob(dir: &std::path::Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()
}

#[test]
fn signed_attachments_land_in_every_place_tools_look() {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    let k = key(1, d.path());
    let target = LayoutTarget::new(layout.clone(), subject().digest);
    let plan = plan(&subject(), &docs(), Some(&k)).unwrap();
    let done = run(attach(&target, &plan)).unwrap();
    let stem = format!("sha256-{}", "a".repeat(64));
    assert_eq!(done.referrers.len(), 3, "{done:?}");
    let keys: Vec<&String> = done.tags.keys().collect();
    assert_eq!(
        keys,
        [
            &stem,
            &format!("{stem}.att"),
            &format!("{stem}.sbom"),
            &format!("{stem}.sig")
        ]
    );
    // The referrers index lists each artifact, with its artifactType.
    let index = read(&layout, &stem);
    let types: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["application/spdx+json", MEDIA_TYPE_DSSE, ARTIFACT_SIGNATURE]
    );
    let sbom_artifact: Value =
        serde_json::from_slice(&blob(&layout, &done.referrers["application/spdx+json"])).unwrap();
    assert_eq!(sbom_artifact["subject"]["digest"], subject().digest);
    assert_eq!(
        sbom_artifact["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    // .sig: the payload names the digest, the annotation signs it.
    let sig = read(&layout, &format!("{stem}.sig"));
    let layer = &sig["layers"][0];
    let payload = blob(&layout, layer["digest"].as_str().unwrap());
    let claim: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        claim["critical"]["image"]["docker-manifest-digest"],
        subject().digest
    );
    let signature = layer["annotations"][ANNOTATION_SIGNATURE].as_str().unwrap();
    assert!(k.public_key().verifies_b64(&payload, signature));
    assert!(!key(2, d.path())
        .public_key()
        .verifies_b64(&payload, signature));
    // .att: DSSE envelopes that verify, one per predicate type.
    let att = read(&layout, &format!("{stem}.att"));
    let predicates: Vec<&str> = att["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["annotations"]["predicateType"].as_str().unwrap())
        .collect();
    assert_eq!(
        predicates,
        [
            "https://spdx.dev/Document",
            "https://slsa.dev/provenance/v1"
        ]
    );
    for l in att["layers"].as_array().unwrap() {
        let env: Envelope =
            serde_json::from_slice(&blob(&layout, l["digest"].as_str().unwrap())).unwrap();
        let statement = env.verified_payload(&k.public_key()).unwrap();
        let statement: Value = serde_json::from_slice(&statement).unwrap();
        assert_eq!(statement["subject"][0]["digest"]["sha256"], "a".repeat(64));
    }
    // cosign's config lists every layer as a diff_id.
    let config: Value =
        serde_json::from_slice(&blob(&layout, sig["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], layer["digest"]);
}

#[test]
fn attaching_again_merges_as_cosign_does() {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    let target = LayoutTarget::new(layout.clone(), subject().digest);
    let (k1, k2) = (key(1, d.path()), key(2, d.path()));
    let first = run(attach(
        &target,
        &plan(&subject(), &docs(), Some(&k1)).unwrap(),
    ))
    .unwrap();
    let again = run(attach(
        &target,
        &plan(&subject(), &docs(), Some(&k1)).unwrap(),
    ))
    .unwrap();
    assert_eq!(first, again, "the same documents and key change nothing");
    run(attach(
        &target,
        &plan(&subject(), &docs(), Some(&k2)).unwrap(),
    ))
    .unwrap();
    let stem = format!("sha256-{}", "a".repeat(64));
    let sig = read(&layout, &format!("{stem}.sig"));
    assert_eq!(
        sig["layers"].as_array().unwrap().len(),
        2,
        "both signatures kept"
    );
    let att = read(&layout, &format!("{stem}.att"));
    assert_eq!(
        att["layers"].as_array().unwrap().len(),
        4,
        "each key's kept"
    );
    // A newer provenance by the same key replaces its older one.
    let mut newer = docs();
    newer.provenance =
        Some(br#"{"_type":"https://in-toto.io/Statement/v1","subject":[]}"#.to_vec());
    run(attach(
        &target,
        &plan(&subject(), &newer, Some(&k2)).unwrap(),
    ))
    .unwrap();
    let att = read(&layout, &format!("{stem}.att"));
    assert_eq!(
        att["layers"].as_array().unwrap().len(),
        4,
        "same key and type replaced"
    );
    let index = read(&layout, &stem);
    assert_eq!(
        index["manifests"].as_array().unwrap().len(),
        6,
        "new referrers listed"
    );
}

#[test]
fn unsigned_documents_are_referrers_and_the_sbom_tag_only() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(&subject(), &docs(), None).unwrap();
    let tags: Vec<CosignTag> = p.cosign.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, [CosignTag::Sbom]);
    let types: Vec<&str> = p
        .referrers
        .iter()
        .map(|m| m.artifact_type.as_deref().unwrap())
        .collect();
    assert_eq!(types, ["application/spdx+json", PAYLOAD_TYPE]);
    // A tag holding something other than an index is not overwritten.
    let layout = d.path().join("layout");
    let stem = format!("sha256-{}", "a".repeat(64));
    let mut index = crate::layout::LayoutIndex::open(&layout).unwrap();
    index
        .add_attachment(
            "x",
            crate::image::MEDIA_TYPE_MANIFEST,
            b"{\"layers\":[]}",
            Some(&stem),
        )
        .unwrap();
    index.write().unwrap();
    let target = LayoutTarget::new(layout, subject().digest);
    let err = run(attach(&target, &p)).unwrap_err().to_string();
    assert!(err.contains("other than an image index"), "{err}");
}
