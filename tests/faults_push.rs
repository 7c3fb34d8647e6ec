//! Network faults while pushing: a fault-injecting proxy (tests/faults_support)
//! in front of a real `docker-registry`. Idempotent steps are retried with
//! backoff, PATCHes are never replayed into the same session, a lost answer to
//! a blob PUT is checked with HEAD before re-sending, and a registry killed
//! mid-push fails the push quickly with no tag, then completes after a restart.
mod common;
mod faults_support;
mod regsupport;

use std::time::{Duration, Instant};

use dockless::name::Reference;
use dockless::remote::{push, Options, PushImage};
use faults_support::{session_id, Action, FaultProxy, Rule, Seen};
use regsupport::*;

/// Short timeouts and delays so faults resolve in test time.
fn fast_opts(registry: &str) -> Options {
    Options {
        insecure_registries: vec![registry.to_string()],
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        max_attempts: 5,
        retry_delay: Duration::from_millis(50),
        max_retry_delay: Duration::from_millis(300),
        ..Options::default()
    }
}

/// Appends a push result to $DOCKLESS_FAULTS_TALLY (README figures).
pub fn note_push(ok: bool) {
    if let Ok(path) = std::env::var("DOCKLESS_FAULTS_TALLY") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "push={}", if ok { "completed" } else { "failed" });
        }
    }
}

fn for_digest<'a>(seen: &'a [Seen], method: &str, digest: &str) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| s.req.method == method && s.req.target.contains(digest))
        .collect()
}

fn upload_bodies<'a>(seen: &'a [Seen], method: &str) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| s.req.method == method && s.req.is_upload_body())
        .collect()
}

/// A rule for the monolithic PUT (with its body) of the blob `digest`.
fn on_blob_put(digest: &str, action: Action) -> Rule {
    let enc = digest.replace(':', "%3A");
    Rule::new(
        move |r| r.method == "PUT" && r.is_upload_body() && r.target.contains(&enc),
        action,
    )
}

/// The monolithic PUTs (with a body) of the blob `digest`.
fn layer_puts<'a>(seen: &'a [Seen], digest: &str) -> Vec<&'a Seen> {
    let enc = digest.replace(':', "%3A");
    upload_bodies(seen, "PUT")
        .into_iter()
        .filter(|s| s.req.target.contains(&enc))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_get_manifest_put_retried_after_5xx_and_resets() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    proxy.add(Rule::new(
        |r| r.method == "GET" && r.path() == "/v2/",
        Action::Status(503),
    ));
    proxy.add(
        Rule::new(
            |r| r.method == "HEAD" && r.path().contains("/blobs/"),
            Action::Status(500),
        )
        .times(2),
    );
    proxy.add(Rule::new(
        |r| r.method == "HEAD" && r.path().contains("/blobs/"),
        Action::Status(502),
    ));
    proxy.add(Rule::new(
        |r| r.method == "HEAD" && r.path().contains("/blobs/"),
        Action::ResetAfter(0),
    ));
    // The manifest PUT: cut mid-body once, then lose the answer once.
    proxy.add(Rule::new(
        |r| r.method == "PUT" && r.path().contains("/manifests/"),
        Action::ResetAfter(10),
    ));
    proxy.add(Rule::new(
        |r| r.method == "PUT" && r.path().contains("/manifests/"),
        Action::DropAnswer,
    ));

    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "retry5xx", 0);
    let target = Reference::parse_tag(&format!("{}/faults/retry:1", proxy.addr)).unwrap();
    let out = push(&img, &target, &fast_opts(target.registry())).await;
    note_push(out.is_ok());
    let out = out.expect("push survives 5xx and resets");
    reg.verify("faults/retry:1", &out.manifest_digest, None);
    assert_eq!(sorted(out.uploaded), all_digests(&img));
    let f = proxy.faults();
    assert_eq!(f["http-500"], 2, "{f:?}");
    assert_eq!(f["http-502"], 1);
    assert_eq!(f["http-503"], 1);
    assert_eq!(f["reset"], 2);
    assert_eq!(f["reset-before-answer"], 1);
    let seen = proxy.seen();
    let manifest_puts = seen
        .iter()
        .filter(|s| s.req.method == "PUT" && s.req.path().contains("/manifests/"))
        .count();
    assert_eq!(manifest_puts, 3, "two faults then success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_for_retry_after() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    // Backoff alone would wait at most 300 ms; Retry-After asks for 2 s.
    proxy.add(Rule::new(
        |r| r.method == "POST" && r.path().ends_with("/blobs/uploads/"),
        Action::TooMany(2),
    ));
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "toomany", 0);
    let target = Reference::parse_tag(&format!("{}/faults/slow:1", proxy.addr)).unwrap();
    let t0 = Instant::now();
    let out = push(
        &img,
        &target,
        &Options {
            concurrency: 1,
            ..fast_opts(&proxy.addr)
        },
    )
    .await;
    note_push(out.is_ok());
    let out = out.expect("push after 429");
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    reg.verify("faults/slow:1", &out.manifest_digest, None);
    assert_eq!(proxy.faults()["http-429"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolithic_put_cut_mid_body_is_retried_in_a_new_session() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "cutput", 1024 * 1024);
    let layer = img.layers[0].digest.clone();
    proxy.add(on_blob_put(&layer, Action::ResetAfter(256 * 1024)));
    let target = Reference::parse_tag(&format!("{}/faults/cut:1", proxy.addr)).unwrap();
    let out = push(&img, &target, &fast_opts(target.registry())).await;
    note_push(out.is_ok());
    let out = out.expect("push after a cut upload");
    reg.verify("faults/cut:1", &out.manifest_digest, None);

    let seen = proxy.seen();
    let puts = layer_puts(&seen, &layer);
    assert_eq!(puts.len(), 2, "cut once, then sent whole: {puts:#?}");
    assert_ne!(
        session_id(puts[0].req.path()),
        session_id(puts[1].req.path()),
        "new session"
    );
    // The blob was HEADed between the two tries (the first could have landed).
    let heads = for_digest(&seen, "HEAD", &layer);
    assert!(
        heads.len() >= 2,
        "initial HEAD plus one after the cut: {heads:#?}"
    );
    assert_eq!(proxy.faults()["reset"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_patch_is_never_replayed_into_the_same_session() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    // Refuse monolithic uploads so the client goes chunked.
    proxy.refuse_monolithic_uploads();
    // Cut the second PATCH mid-body, and answer the fourth with 503.
    proxy.add(Rule::new(|r| r.method == "PATCH", Action::ResetAfter(100 * 1024)).skip(1));
    proxy.add(Rule::new(|r| r.method == "PATCH", Action::Status(503)).skip(2));
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "patchy", 2 * 1024 * 1024);
    let target = Reference::parse_tag(&format!("{}/faults/patch:1", proxy.addr)).unwrap();
    let opts = Options {
        chunk_size: 512 * 1024,
        concurrency: 1,
        ..fast_opts(&proxy.addr)
    };
    let out = push(&img, &target, &opts).await;
    note_push(out.is_ok());
    let out = out.expect("chunked push with faults");
    reg.verify("faults/patch:1", &out.manifest_digest, None);

    let seen = proxy.seen();
    let patches = upload_bodies(&seen, "PATCH");
    let mut by_session: std::collections::BTreeMap<&str, Vec<&Seen>> = Default::default();
    for p in &patches {
        by_session
            .entry(session_id(p.req.path()).unwrap())
            .or_default()
            .push(p);
    }
    for (id, ps) in &by_session {
        let starts: Vec<u64> = ps
            .iter()
            .map(|p| {
                let range = p.req.header("content-range").unwrap();
                range.split('-').next().unwrap().parse().unwrap()
            })
            .collect();
        assert!(
            starts.windows(2).all(|w| w[0] < w[1]),
            "range replayed in {id}: {starts:?}"
        );
        // Nothing follows a failed PATCH in its session.
        if let Some(i) = ps.iter().position(|p| p.fault.is_some()) {
            assert_eq!(i, ps.len() - 1, "session {id} used after a failure");
        }
        let failed_here = ps.iter().any(|p| p.fault.is_some());
        if failed_here {
            let later_put = seen
                .iter()
                .any(|s| s.req.method == "PUT" && session_id(s.req.path()) == Some(*id));
            assert!(!later_put, "session {id} closed after a failed PATCH");
        }
    }
    let faulted = patches.iter().filter(|p| p.fault.is_some()).count();
    assert_eq!(faulted, 2, "{patches:#?}");
    assert!(
        by_session.len() >= 3,
        "a new session per failure: {}",
        by_session.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_put_timeout_heads_the_blob_before_resending() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "stalled", 512 * 1024);
    let layer = img.layers[0].digest.clone();
    // The registry stores the blob, but its answer stalls past the read timeout.
    proxy.add(on_blob_put(
        &layer,
        Action::StallAnswer(Duration::from_secs(6)),
    ));
    let target = Reference::parse_tag(&format!("{}/faults/stall:1", proxy.addr)).unwrap();
    let t0 = Instant::now();
    let out = push(&img, &target, &fast_opts(target.registry())).await;
    note_push(out.is_ok());
    let out = out.expect("push after a stalled answer");
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "did not wait for the stall to end"
    );
    reg.verify("faults/stall:1", &out.manifest_digest, None);
    let seen = proxy.seen();
    let puts = layer_puts(&seen, &layer);
    assert_eq!(
        puts.len(),
        1,
        "HEAD found the blob, nothing re-sent: {puts:#?}"
    );
    assert!(for_digest(&seen, "HEAD", &layer).len() >= 2);
    assert_eq!(proxy.faults()["stall"], 1);
}

/// A registry that stops reading an upload mid-body: the client's writes
/// block, nothing answers, and only the idle clock can notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_that_stops_moving_is_abandoned_and_retried() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let work = tempfile::tempdir().unwrap();
    // Far bigger than the socket buffers, so the writes really block.
    let img = build_image(work.path(), "stallbody", 48 * 1024 * 1024);
    let layer = img.layers[0].digest.clone();
    proxy.add(on_blob_put(
        &layer,
        Action::StallBody(1024 * 1024, Duration::from_secs(30)),
    ));
    let target = Reference::parse_tag(&format!("{}/faults/stallbody:1", proxy.addr)).unwrap();
    let t0 = Instant::now();
    let out = push(&img, &target, &fast_opts(target.registry())).await;
    note_push(out.is_ok());
    let out = out.expect("push after a stalled upload");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "waited out the stall: {took:?}"
    );
    reg.verify("faults/stallbody:1", &out.manifest_digest, None);
    let seen = proxy.seen();
    assert_eq!(layer_puts(&seen, &layer).len(), 2, "stalled, then whole");
    assert!(
        for_digest(&seen, "HEAD", &layer).len() >= 2,
        "HEAD before resending"
    );
    assert_eq!(proxy.faults()["stall-body"], 1);
}

/// An upload that keeps moving is never cut, however long it takes: here
/// three times the read timeout. (The timeout is 3 s, not less, because it
/// also bounds the registry's answer once the body is in, which takes more
/// than a second on a loaded 2-core machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upload_that_keeps_moving_outlasts_the_read_timeout() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "slowbody", 12 * 1024 * 1024);
    let layer = img.layers[0].digest.clone();
    // 9 MiB at 1 MiB/s: nine seconds against a three-second read timeout.
    proxy.add(on_blob_put(
        &layer,
        Action::Throttle(1024 * 1024, 9 * 1024 * 1024),
    ));
    let opts = Options {
        read_timeout: Duration::from_secs(3),
        ..fast_opts(&proxy.addr)
    };
    let target = Reference::parse_tag(&format!("{}/faults/slowbody:1", proxy.addr)).unwrap();
    let t0 = Instant::now();
    let out = push(&img, &target, &opts).await;
    note_push(out.is_ok());
    let out = out.expect("slow push");
    assert!(t0.elapsed() >= Duration::from_secs(9), "was throttled");
    reg.verify("faults/slowbody:1", &out.manifest_digest, None);
    let seen = proxy.seen();
    assert_eq!(layer_puts(&seen, &layer).len(), 1, "sent once, never cut");
    assert_eq!(proxy.faults()["throttle"], 1);
}

/// When every try stalls, the push fails within its attempts, says where
/// the upload stopped, and tags nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_always_stall_fail_clearly_with_no_tag() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "stallever", 32 * 1024 * 1024);
    proxy.add(
        Rule::new(
            |r| r.is_upload_body() && r.content_length > 1024 * 1024,
            Action::StallBody(1024 * 1024, Duration::from_secs(30)),
        )
        .always(),
    );
    let opts = Options {
        max_attempts: 2,
        // Chunks bigger than the socket buffers, so a stalled PATCH blocks too.
        chunk_size: 24 * 1024 * 1024,
        ..fast_opts(&proxy.addr)
    };
    let target = Reference::parse_tag(&format!("{}/faults/stallever:1", proxy.addr)).unwrap();
    let t0 = Instant::now();
    let err = push(&img, &target, &opts).await.unwrap_err();
    note_push(false);
    let took = t0.elapsed();
    let msg = err.to_string();
    assert!(
        msg.contains(&proxy.addr) && msg.contains("stopped taking the upload after"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(reg.tag_absent("faults/stallever:1", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_final_put_answer_lost_heads_the_blob_before_resending() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    proxy.refuse_monolithic_uploads();
    // The closing PUT (no body, ?digest=) reaches the registry; its answer is reset.
    proxy.add(Rule::new(
        |r| r.method == "PUT" && r.path().contains("/blobs/uploads/") && r.content_length == 0,
        Action::DropAnswer,
    ));
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "lostput", 1024 * 1024);
    let target = Reference::parse_tag(&format!("{}/faults/lost:1", proxy.addr)).unwrap();
    let opts = Options {
        chunk_size: 512 * 1024,
        concurrency: 1,
        ..fast_opts(&proxy.addr)
    };
    let out = push(&img, &target, &opts).await;
    note_push(out.is_ok());
    let out = out.expect("push after a lost final answer");
    reg.verify("faults/lost:1", &out.manifest_digest, None);
    let seen = proxy.seen();
    // The first blob's data went out once: HEAD said it landed.
    let first_closing = seen
        .iter()
        .position(|s| s.fault == Some("reset-before-answer"))
        .expect("fault applied");
    let lost_digest = seen[first_closing]
        .req
        .query()
        .split('&')
        .find_map(|kv| kv.strip_prefix("digest="))
        .unwrap()
        .replace("%3A", ":");
    let patches_for_lost: usize = seen[first_closing + 1..]
        .iter()
        .filter(|s| s.req.method == "PATCH")
        .filter(|s| {
            // Later PATCHes belong to other blobs only.
            let before: Vec<_> = seen[..first_closing]
                .iter()
                .filter_map(|x| session_id(x.req.path()))
                .collect();
            before.contains(&session_id(s.req.path()).unwrap_or(""))
        })
        .count();
    assert_eq!(patches_for_lost, 0);
    let heads_after = seen[first_closing + 1..]
        .iter()
        .filter(|s| s.req.method == "HEAD" && s.req.target.contains(&lost_digest))
        .count();
    assert!(heads_after >= 1, "HEAD after the lost answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_fail_with_the_registry_message_and_no_tag() {
    let (_g, _cfg, reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    proxy.add(
        Rule::new(
            |r| r.method == "PUT" && r.path().contains("/manifests/"),
            Action::Status(503),
        )
        .always(),
    );
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "giveup", 0);
    let target = Reference::parse_tag(&format!("{}/faults/giveup:1", proxy.addr)).unwrap();
    let t0 = Instant::now();
    let err = push(&img, &target, &fast_opts(target.registry()))
        .await
        .unwrap_err();
    note_push(false);
    let msg = err.to_string();
    assert!(msg.contains("503") && msg.contains(&proxy.addr), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(proxy.faults()["http-503"], 5, "max_attempts tries");
    assert!(reg.tag_absent("faults/giveup:1", None));
}

/// The CLI against a registry that is killed mid-push: bounded failure with
/// a clear message and no tag; after a restart on the same storage the same
/// command completes and sends only what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_killed_mid_push_then_restarted_resends_only_missing() {
    let (_g, _cfg, mut reg) = anonymous_registry().await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let pid = reg.pid();
    // Kill the registry when the third blob upload is being closed (two
    // are stored): a whole-blob PUT, or the digest PUT of a layer streamed
    // while it was built.
    proxy.add(
        Rule::new(
            |r| r.method == "PUT" && r.path().contains("/blobs/uploads/"),
            Action::Before(Box::new(move || {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
                std::thread::sleep(Duration::from_millis(200));
            })),
        )
        .skip(2),
    );

    let tmp = tempfile::tempdir().unwrap();
    let ctx = common::hello_context(tmp.path());
    let cache = tmp.path().join("cache");
    let target = format!("{}/faults/hello:v1", proxy.addr);
    let run = {
        let (ctx, cache, target) = (ctx.clone(), cache.clone(), target.clone());
        move || {
            common::dockless(&cache)
                .args(["push"])
                .arg(&ctx)
                .args(["-t", &target, "--insecure", "--json", "--concurrency", "1"])
                .env("DOCKLESS_LOG", "warn")
                .output()
                .unwrap()
        }
    };
    let t0 = Instant::now();
    let first = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    let took = t0.elapsed();
    note_push(first.status.success());
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(4), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(err.contains(&proxy.addr), "names the registry: {err}");
    assert!(first.stdout.is_empty());
    let events = common::json_events(&first);
    let mut uploaded_first = common::event_digests(&events, "blob_uploaded");
    uploaded_first.extend(common::event_digests(&events, "layer_streamed"));
    uploaded_first.sort();
    uploaded_first.dedup();
    assert_eq!(uploaded_first.len(), 2, "{err}");

    reg.restart();
    assert!(
        reg.tag_absent("faults/hello:v1", None),
        "no tag after the failed push"
    );
    proxy.clear_rules();
    proxy.clear_seen();
    let second = tokio::task::spawn_blocking(run).await.unwrap();
    note_push(second.status.success());
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let skipped = common::event_digests(&common::json_events(&second), "blob_skipped");
    let uploaded = common::event_digests(&common::json_events(&second), "blob_uploaded");
    assert_eq!(
        sorted(skipped),
        sorted(uploaded_first.clone()),
        "what was stored is skipped"
    );
    assert_eq!(uploaded.len(), 2, "config + 3 layers, 2 already there");
    assert!(uploaded.iter().all(|d| !uploaded_first.contains(d)));
    let line = String::from_utf8_lossy(&second.stdout).trim().to_string();
    reg.verify("faults/hello:v1", &common::digest_of(&line), None);
    eprintln!("killed-registry push failed after {took:?}");
}

/// A target registry, and a source registry behind a fault proxy holding an
/// image whose layer the push must stream from it (it is not on disk).
struct Streaming {
    _env: tokio::sync::MutexGuard<'static, ()>,
    _config: tempfile::TempDir,
    dst: Registry,
    _src: Registry,
    src_proxy: FaultProxy,
    work: tempfile::TempDir,
    /// The image, its layer to be streamed from `src/app` through the proxy.
    streamed: PushImage,
    /// The streamed layer's digest.
    layer: String,
}

async fn streaming(label: &str, size: usize) -> Streaming {
    let (env, config, dst) = anonymous_registry().await;
    let src = Registry::start(RegistryCfg::default());
    let src_proxy = FaultProxy::start(&src.addr()).await;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), label, size);
    let src_ref = Reference::parse_tag(&format!("{}/src/app:1", src.addr())).unwrap();
    push(&img, &src_ref, &fast_opts(src_ref.registry()))
        .await
        .expect("seed the source");
    let mut streamed = img.clone();
    streamed.layers[0].path = work.path().join("absent");
    streamed.layers[0].source = Some(dockless::remote::RemoteBlob {
        registry: src_proxy.addr.clone(),
        repository: "src/app".into(),
    });
    Streaming {
        _env: env,
        _config: config,
        dst,
        _src: src,
        src_proxy,
        work,
        layer: img.layers[0].digest.clone(),
        streamed,
    }
}

impl Streaming {
    /// Fast options reaching the target and the source over plain HTTP.
    fn opts(&self, target: &Reference) -> Options {
        fast_opts(target.registry()).insecure(&self.src_proxy.addr)
    }
}

/// A rule for GETs of the blob `digest`.
fn on_blob_get(digest: &str, action: Action) -> Rule {
    let digest = digest.to_string();
    Rule::new(
        move |r| r.method == "GET" && r.target.contains(&digest),
        action,
    )
}

/// A blob streamed from another registry: a 503 on the source GET is
/// retried, and a PUT cut mid-body is retried in a new session by GETting
/// the source again (nothing is buffered on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_put_cut_mid_body_reopens_the_source() {
    let fx = streaming("streamcut", 1024 * 1024).await;
    let dst_proxy = FaultProxy::start(&fx.dst.addr()).await;
    fx.src_proxy
        .add(on_blob_get(&fx.layer, Action::Status(503)));
    dst_proxy.add(on_blob_put(&fx.layer, Action::ResetAfter(256 * 1024)));
    let target = Reference::parse_tag(&format!("{}/faults/streamed:1", dst_proxy.addr)).unwrap();
    let out = push(&fx.streamed, &target, &fx.opts(&target))
        .await
        .expect("streamed push after faults");
    fx.dst
        .verify("faults/streamed:1", &out.manifest_digest, None);
    assert!(!fx.work.path().join("absent").exists());

    let dst_seen = dst_proxy.seen();
    let puts = layer_puts(&dst_seen, &fx.layer);
    assert_eq!(puts.len(), 2, "cut once, then sent whole: {puts:#?}");
    let src_seen = fx.src_proxy.seen();
    let gets = for_digest(&src_seen, "GET", &fx.layer);
    assert_eq!(
        gets.len(),
        3,
        "503, the cut stream, the whole one: {gets:#?}"
    );
}

/// The source registry stalls mid-blob while its bytes stream to the
/// target: the try is abandoned, and the blob streamed again in a new
/// upload session from a new GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_stalling_mid_stream_is_retried() {
    let fx = streaming("srcstall", 4 * 1024 * 1024).await;
    fx.src_proxy.add(on_blob_get(
        &fx.layer,
        Action::StallAnswerBody(512 * 1024, Duration::from_secs(30)),
    ));
    let target = Reference::parse_tag(&format!("{}/faults/srcstall:1", fx.dst.addr())).unwrap();
    let t0 = Instant::now();
    let out = push(&fx.streamed, &target, &fx.opts(&target)).await;
    note_push(out.is_ok());
    let out = out.expect("streamed push after a source stall");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "waited out the stall"
    );
    fx.dst
        .verify("faults/srcstall:1", &out.manifest_digest, None);
    let gets = for_digest(&fx.src_proxy.seen(), "GET", &fx.layer).len();
    assert_eq!(gets, 2, "stalled, then whole");
    assert_eq!(fx.src_proxy.faults()["stall-answer-body"], 1);
}

/// A source that stalls on every try fails the push with an error naming
/// the source, not the target that was waiting for its bytes, and no tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_that_always_stalls_is_named_and_nothing_is_tagged() {
    let fx = streaming("srcstallever", 4 * 1024 * 1024).await;
    fx.src_proxy.add(
        on_blob_get(
            &fx.layer,
            Action::StallAnswerBody(512 * 1024, Duration::from_secs(30)),
        )
        .always(),
    );
    let target = Reference::parse_tag(&format!("{}/faults/srcstallever:1", fx.dst.addr())).unwrap();
    let opts = Options {
        max_attempts: 2,
        ..fx.opts(&target)
    };
    let err = push(&fx.streamed, &target, &opts).await.unwrap_err();
    note_push(false);
    let msg = err.to_string();
    let source = format!("from {}/src/app", fx.src_proxy.addr);
    assert!(
        msg.contains(&format!("streaming {}", fx.layer)) && msg.contains(&source),
        "{msg}"
    );
    assert!(!msg.contains("stopped taking the upload"), "{msg}");
    assert!(fx.dst.tag_absent("faults/srcstallever:1", None));
}
