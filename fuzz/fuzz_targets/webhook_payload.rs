//! Webhook bodies: the first byte picks the Content-Type, the rest is the
//! body; a parsed body is classified as every event kind we look at.
#![no_main]
use dockless::serve::webhook::{classify, parse_body, repository, Event};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 5] = [
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
    Some("text/plain"),
    None,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ct = CONTENT_TYPES[pick as usize % CONTENT_TYPES.len()];
    let _ = dockless::serve::webhook::is_form(ct);
    let Ok(payload) = parse_body(ct, body) else {
        return;
    };
    let _ = repository(&payload);
    for event in ["pull_request", "ping", "push", ""] {
        for branch in ["develop", ""] {
            if let Event::Build(pr) = classify(event, &payload, branch) {
                // Only a merged PR into the branch builds, and only a real commit id.
                assert_eq!(event, "pull_request");
                assert_eq!(pr.base_ref, branch);
                let sha = &pr.merge_commit_sha;
                assert!(sha.len() == 40 || sha.len() == 64, "{sha}");
                assert!(sha
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
    }
});
