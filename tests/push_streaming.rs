//! A push uploads a new layer while it is compressed (`remote::stream`):
//! through the fault proxy (TLS) in front of a TLS `docker-registry`, a
//! layer's chunks go out before the layer is complete, a connection reset
//! mid-stream ends with the blob uploaded again from the store, and a
//! registry that refuses chunked PATCHes gets whole blobs instead, once
//! for the run. Every result is checked with skopeo (digest, and a copy
//! that verifies every blob), and no tag exists before its blobs.
mod faults_support;
mod regsupport;

use std::path::Path;
use std::sync::{Arc, Mutex};

use dockless::build::steps::{StepEvent, StepSink};
use dockless::build::BuildOptions;
use dockless::name::Reference;
use dockless::pipeline::{self, Destination, PipelineOptions};
use dockless::remote::{EventSink, Options, PushEvent};
use faults_support::{Action, FaultProxy, Rule, Seen};
use regsupport::*;

/// A TLS registry behind a TLS fault proxy, with the environment held.
struct Setup {
    reg: Registry,
    proxy: FaultProxy,
    certs: Certs,
    _cfg: tempfile::TempDir,
    _env: tokio::sync::MutexGuard<'static, ()>,
}

async fn setup() -> Setup {
    init_tracing();
    let env = env_lock().await;
    let certs = Certs::generate();
    let reg = Registry::start(RegistryCfg {
        certs: Some(&certs),
        ..Default::default()
    });
    let proxy = FaultProxy::start_tls(&reg.addr(), &certs).await;
    Setup {
        reg,
        proxy,
        certs,
        _cfg: docker_config(serde_json::json!({})),
        _env: env,
    }
}

/// What the build and the push reported, in order.
#[derive(Debug, Clone)]
enum Event {
    StepFinished(String),
    Push(PushEvent),
}

type Events = Arc<Mutex<Vec<Event>>>;

/// A context of `files` files of 3 MiB of noise each (incompressible, so
/// the layer is about their size) under `app/`, then the same under `more/`
/// when `two_layers`.
fn context(dir: &Path, files: usize, two_layers: bool) {
    let mut dockerfile = String::from("FROM scratch\nCOPY app /app\n");
    for i in 0..files {
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(dir.join(format!("app/f{i}")), noise(i as u64 + 1, 3 << 20)).unwrap();
    }
    if two_layers {
        std::fs::create_dir_all(dir.join("more")).unwrap();
        std::fs::write(dir.join("more/f"), noise(99, 1 << 20)).unwrap();
        dockerfile.push_str("COPY more /more\n");
    }
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
}

/// Builds `ctx` and pushes it to `repo:1` through the proxy, recording events.
async fn build_and_push(s: &Setup, ctx: &Path, repo: &str) -> (String, Vec<Event>) {
    let events: Events = Arc::default();
    let cache = tempfile::tempdir().unwrap();
    let mut build = BuildOptions::new(ctx, cache.path());
    let steps = events.clone();
    build.steps = StepSink::new(move |e| {
        if let StepEvent::Finished { instruction, .. } = e {
            steps
                .lock()
                .unwrap()
                .push(Event::StepFinished(instruction.clone()));
        }
    });
    let pushed = events.clone();
    let push = Options {
        ca_certs: vec![s.certs.ca()],
        max_attempts: 3,
        retry_delay: std::time::Duration::from_millis(50),
        events: EventSink::new(move |e| {
            if !matches!(e, PushEvent::BlobProgress { .. }) {
                pushed.lock().unwrap().push(Event::Push(e.clone()));
            }
        }),
        ..Options::default()
    };
    let opts = PipelineOptions {
        build,
        platforms: Vec::new(),
        cache_max_size: u64::MAX,
        supply: dockless::attest::supply::SupplyOptions {
            sbom: None,
            provenance: false,
            ..Default::default()
        },
    };
    let destination = Destination::Registry {
        target: Reference::parse_tag(&format!("{}/{repo}:1", s.proxy.addr)).unwrap(),
        extra_tags: Vec::new(),
        push,
    };
    let delivered = pipeline::run(opts, &destination, &|_| {})
        .await
        .expect("build and push");
    let events = events.lock().unwrap().clone();
    (delivered.digest, events)
}

fn streamed(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Push(PushEvent::LayerStreamed { digest, .. }) => Some(digest.clone()),
            _ => None,
        })
        .collect()
}

fn patches(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.req.method == "PATCH").collect()
}

/// Whole-blob PUTs (with a body) of `digest`.
fn monolithic_puts(seen: &[Seen], digest: &str) -> usize {
    let enc = digest.replace(':', "%3A");
    seen.iter()
        .filter(|s| s.req.method == "PUT" && s.req.is_upload_body() && s.req.target.contains(&enc))
        .count()
}

/// The manifest PUT comes after every blob's upload ended.
fn manifest_put_last(seen: &[Seen]) {
    let manifest = seen
        .iter()
        .position(|s| s.req.method == "PUT" && s.req.path().contains("/manifests/"))
        .expect("a manifest PUT");
    let last_blob = seen
        .iter()
        .rposition(|s| s.req.path().contains("/blobs/uploads/"))
        .expect("blob uploads");
    assert!(last_blob < manifest, "a blob went up after the manifest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_chunks_go_up_before_the_layer_is_complete() {
    let s = setup().await;
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path(), 8, false);
    let (digest, events) = build_and_push(&s, ctx.path(), "stream/order").await;
    s.reg.verify("stream/order:1", &digest, None);
    let layers = s.reg.layer_digests("stream/order:1");
    assert_eq!(streamed(&events), layers, "{events:#?}");

    // A chunk the registry took while the layer was still being written,
    // and before its step finished.
    let first_chunk = events
        .iter()
        .position(|e| {
            matches!(
                e,
                Event::Push(PushEvent::LayerChunkSent {
                    complete: false,
                    ..
                })
            )
        })
        .expect("a chunk sent before the layer was complete");
    let step_done = events
        .iter()
        .position(|e| matches!(e, Event::StepFinished(i) if i == "COPY app /app"))
        .unwrap();
    assert!(first_chunk < step_done, "{events:#?}");
    // The streamed layer is not sent again, nor HEADed.
    let seen = s.proxy.seen();
    assert_eq!(monolithic_puts(&seen, &layers[0]), 0);
    assert!(!seen
        .iter()
        .any(|r| r.req.method == "HEAD" && r.req.target.contains(&layers[0])));
    assert!(patches(&seen)
        .iter()
        .all(|p| p.req.header("content-range").is_some()));
    manifest_put_last(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_stream_uploads_the_layer_again_from_the_store() {
    let s = setup().await;
    // The second chunk's connection is reset halfway through its body.
    s.proxy
        .add(Rule::new(|r| r.method == "PATCH", Action::ResetAfter(1 << 20)).skip(1));
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path(), 4, false);
    let (digest, events) = build_and_push(&s, ctx.path(), "stream/reset").await;
    s.reg.verify("stream/reset:1", &digest, None);
    let layers = s.reg.layer_digests("stream/reset:1");
    assert!(streamed(&events).is_empty(), "{events:#?}");
    let seen = s.proxy.seen();
    assert_eq!(s.proxy.faults().get("reset"), Some(&1));
    assert_eq!(monolithic_puts(&seen, &layers[0]), 1);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Push(PushEvent::BlobUploaded { digest, .. }) if *digest == layers[0]
    )));
    manifest_put_last(&seen);
}

/// A registry answering every PATCH with `status`: the first layer's
/// stream stops at its first chunk, the second layer is not streamed at
/// all, and both go up whole after the build.
async fn refused_chunks(status: u16, repo: &str) {
    let s = setup().await;
    s.proxy
        .add(Rule::new(|r| r.method == "PATCH", Action::Status(status)).always());
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path(), 4, true);
    let (digest, events) = build_and_push(&s, ctx.path(), repo).await;
    let tag = format!("{repo}:1");
    s.reg.verify(&tag, &digest, None);
    let layers = s.reg.layer_digests(&tag);
    assert_eq!(layers.len(), 2);
    assert!(streamed(&events).is_empty(), "{events:#?}");
    let seen = s.proxy.seen();
    assert_eq!(patches(&seen).len(), 1, "asked once per run");
    for layer in &layers {
        assert_eq!(monolithic_puts(&seen, layer), 1, "{layer}");
    }
    manifest_put_last(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_refusing_chunks_gets_whole_blobs_405() {
    refused_chunks(405, "stream/refuse405").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_refusing_chunks_gets_whole_blobs_416() {
    refused_chunks(416, "stream/refuse416").await;
}
