//! One client per registry, against real `docker-registry`s: a base image's
//! manifest, config and every layer are read with one token; a push asks
//! for one token covering its target and its mount sources; and the
//! library's build reaches registries from inside a tokio runtime of
//! either flavour.
mod regsupport;
mod tokensupport;

use std::path::Path;

use dockless::build::{build, BuildOptions};
use dockless::image::{BuiltImage, Image, ImageConfig};
use dockless::layer::{write_layer, LayerEntry, LayerOptions};
use dockless::name::Reference;
use dockless::platform::Platform;
use dockless::remote::publish::push_image;
use dockless::remote::{push, BaseBlob, Options, Puller};
use dockless::store::BlobStore;
use regsupport::*;
use tokensupport::*;

/// An image of `count` layers, each one file of `size` distinct bytes.
fn layered_image(store: &BlobStore, dir: &Path, count: usize, size: usize) -> BuiltImage {
    let mut image = Image::new(ImageConfig::scratch(
        &Platform::host(),
        "1970-01-01T00:00:00Z",
    ));
    for i in 0..count {
        let path = dir.join(format!("payload-{i}.bin"));
        let bytes: Vec<u8> = (0..size).map(|n| (n * 31 + i * 7) as u8).collect();
        std::fs::write(&path, bytes).unwrap();
        let entry = LayerEntry::file(format!("data/{i}.bin"), path, size as u64);
        let layer = write_layer(&[entry], store, LayerOptions::default()).unwrap();
        image.add_layer(layer, Default::default());
    }
    image.finish(store).unwrap()
}

/// Pushes a `count`-layer image to `target` with the library.
async fn push_layered(work: &Path, target: &Reference, count: usize, opts: &Options) {
    let store = BlobStore::open(work.join("push-store")).unwrap();
    let built = layered_image(&store, work, count, 64 * 1024);
    let img = push_image(&store, &built, &Default::default(), target).unwrap();
    push(&img, target, opts).await.expect("push the base");
}

/// The scopes of each token request since the first `since`.
fn asked_since(ts: &TokenServer, since: usize) -> Vec<Vec<String>> {
    ts.seen.lock().unwrap()[since..]
        .iter()
        .map(|r| r.scopes.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_image_is_read_with_one_token() {
    let t = TokenRegistry::start().await;
    let _cfg = t.log_in();
    let TokenRegistry { ts, reg, opts, .. } = &t;
    let work = tempfile::tempdir().unwrap();
    let base = Reference::parse_tag(&format!("{}/base/layers:1", reg.addr())).unwrap();
    push_layered(work.path(), &base, 6, opts).await;

    let before = ts.seen.lock().unwrap().len();
    let store = BlobStore::open(work.path().join("pull-store")).unwrap();
    let puller = Puller::for_images(opts, [&base]);
    let pulled = puller.pull(&base, &Platform::host(), &store).await.unwrap();
    let blobs: Vec<BaseBlob> = pulled
        .layers
        .iter()
        .map(|l| BaseBlob {
            image: base.clone(),
            digest: l.digest.clone(),
            size: l.size,
        })
        .collect();
    assert_eq!(blobs.len(), 6);
    puller.fetch_blobs(&blobs, &store).await.unwrap();
    assert!(blobs.iter().all(|b| store.contains(&b.digest)));
    assert_eq!(
        asked_since(ts, before),
        [["repository:base/layers:pull"]],
        "one token for the manifest, the config and six layers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_asks_for_one_token_for_its_target_and_mount_sources() {
    let t = TokenRegistry::start().await;
    let _cfg = t.log_in();
    let TokenRegistry { ts, reg, opts, .. } = &t;
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), "once", 0);
    let first = Reference::parse_tag(&format!("{}/team/once:1", reg.addr())).unwrap();
    push(&img, &first, opts).await.unwrap();

    let before = ts.seen.lock().unwrap().len();
    let other = Reference::parse_tag(&format!("{}/other/once:1", reg.addr())).unwrap();
    let out = push(&with_mount_from(&img, "team/once"), &other, opts)
        .await
        .unwrap();
    assert_eq!(sorted(out.mounted), all_digests(&img));
    assert_eq!(
        asked_since(ts, before),
        [[
            "repository:other/once:pull,push",
            "repository:team/once:pull"
        ]],
        "one token, the push scope first"
    );
}

/// `build` is synchronous; called from async code it runs its registry
/// requests on the caller's multi-thread runtime, or on one of its own
/// beside a single-threaded one (which this thread may be driving).
#[test]
fn the_library_build_reaches_registries_from_inside_a_runtime() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let (_g, _cfg, reg) = setup.block_on(anonymous_registry());
    let work = tempfile::tempdir().unwrap();
    let opts = Options::default().insecure(&reg.addr());
    let base = Reference::parse_tag(&format!("{}/base/rt:1", reg.addr())).unwrap();
    setup.block_on(push_layered(work.path(), &base, 3, &opts));

    let context = work.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {}/base/rt:1\nCOPY hello.txt /\n", reg.addr()),
    )
    .unwrap();
    let flavours = [
        tokio::runtime::Builder::new_current_thread(),
        tokio::runtime::Builder::new_multi_thread(),
    ];
    for (i, mut flavour) in flavours.into_iter().enumerate() {
        let runtime = flavour.enable_all().build().unwrap();
        // A fresh cache each time, so the layers are downloaded.
        let mut build_opts = BuildOptions::new(&context, work.path().join(format!("cache-{i}")));
        build_opts.remote = opts.clone();
        let built = runtime
            .block_on(async { build(&build_opts) })
            .expect("build from inside a runtime");
        assert_eq!(
            built.image.layers.len(),
            4,
            "three base layers and the COPY"
        );
        for layer in &built.image.layers[..3] {
            assert!(built.store.contains(&layer.digest), "base layer downloaded");
        }
    }
}
