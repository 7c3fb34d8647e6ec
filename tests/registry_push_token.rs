//! Token (Bearer) auth: docker-registry with `auth: token`, and the test
//! token server of tests/tokensupport.
mod regsupport;
mod tokensupport;

use dockless::name::Reference;
use dockless::remote::{push, RegistryError};
use regsupport::*;
use tokensupport::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth_push_skip_mount() {
    let t = TokenRegistry::start().await;
    let _cfg = t.log_in();
    let TokenRegistry { ts, reg, opts, .. } = &t;
    push_scenario(reg, opts, Some(&creds()), "tok").await;

    // The mount push must have asked for pull on the source repository.
    let seen: Vec<Vec<String>> = ts
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.scopes.clone())
        .collect();
    assert!(
        seen.iter().any(
            |s| s.contains(&"repository:other/tok:pull,push".to_string())
                && s.contains(&"repository:team/tok:pull".to_string())
        ),
        "scopes requested: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_wrong_password_and_anonymous_fail_cleanly() {
    let t = TokenRegistry::start().await;
    let TokenRegistry { reg, opts, .. } = &t;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "tokbad", 0);
    let target = Reference::parse_tag(&format!("{}/tb/app:1", reg.addr())).unwrap();

    let _cfg = docker_config(serde_json::json!({
        "auths": { reg.addr(): { "auth": basic_b64(USER, "WRONGpw") } }
    }));
    let err = push(&img, &target, opts).await.unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(msg.contains("rejected the credentials"), "{msg}");
    assert!(!msg.contains("WRONGpw"), "{msg}");

    // Anonymous: the token has no access, the registry says 401 twice.
    let _cfg = docker_config(serde_json::json!({}));
    let err = push(&img, &target, opts).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    assert!(reg.tag_absent("tb/app:1", Some(&creds())));
}

/// An `identitytoken` in config.json (what `docker login` stores for
/// registries that hand out refresh tokens) is exchanged for an access
/// token with an OAuth2 refresh-token POST; a wrong one fails clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_is_exchanged_with_a_refresh_grant() {
    let t = TokenRegistry::start().await;
    let TokenRegistry { ts, reg, opts, .. } = &t;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "refresh", 0);

    let _cfg = docker_config(serde_json::json!({
        "auths": { reg.addr(): { "identitytoken": REFRESH } }
    }));
    let target = Reference::parse_tag(&format!("{}/rt/app:1", reg.addr())).unwrap();
    let out = push(&img, &target, opts)
        .await
        .expect("push with an identity token");
    reg.verify("rt/app:1", &out.manifest_digest, Some(&creds()));
    let grants: Vec<_> = ts
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.grant.clone())
        .collect();
    assert!(grants.contains(&Some("refresh_token".into())), "{grants:?}");

    let _cfg = docker_config(serde_json::json!({
        "auths": { reg.addr(): { "identitytoken": "refresh-stale" } }
    }));
    let target = Reference::parse_tag(&format!("{}/rt/app:2", reg.addr())).unwrap();
    let err = push(&img, &target, opts).await.unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(msg.contains("rejected the credentials"), "{msg}");
    assert!(
        !msg.contains("refresh-stale") && !msg.contains(REFRESH),
        "{msg}"
    );
    assert!(reg.tag_absent("rt/app:2", Some(&creds())));
}
