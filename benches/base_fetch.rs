//! Fetching a base image of 10 layers (4 MiB of incompressible bytes each)
//! from a real `docker-registry` on loopback into an empty blob store:
//! through one client, 4 blobs at once and one at a time, against the path
//! builds took before (a thread, a tokio runtime and a registry client per
//! blob, one blob after another). Medians of 5 runs, the ways interleaved.
//!
//! Run: `cargo bench --bench base_fetch` (needs docker-registry). With
//! `DOCKLESS_BIN=path` it also times a cold `dockless build` FROM that base
//! (the layers downloaded and indexed, an OCI layout written) with that
//! binary, and with `DOCKLESS_BASELINE=path` with a second one, for a
//! before/after of the whole command.

use dockless::image::{Image, ImageConfig};
use dockless::layer::{write_layer, LayerEntry, LayerOptions};
use dockless::name::Reference;
use dockless::platform::Platform;
use dockless::remote::publish::push_image;
use dockless::remote::{push, BaseBlob, Options, Puller};
use dockless::store::BlobStore;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[path = "support/mod.rs"]
mod support;
use support::{median, noise_file, start_registry};

const LAYERS: usize = 10;
const LAYER_MB: usize = 4;
const RUNS: usize = 5;

/// Builds the base with the library and pushes it to `base`.
fn push_base(work: &Path, base: &Reference, opts: &Options, runtime: &tokio::runtime::Runtime) {
    let store = BlobStore::open(work.join("base-store")).unwrap();
    let mut image = Image::new(ImageConfig::scratch(
        &Platform::host(),
        "1970-01-01T00:00:00Z",
    ));
    for i in 0..LAYERS {
        let payload = work.join(format!("payload-{i}.bin"));
        noise_file(&payload, LAYER_MB << 20, 0x9e37_79b9_7f4a_7c15 + i as u64);
        let entry = LayerEntry::file(format!("data/{i}.bin"), payload, (LAYER_MB << 20) as u64);
        let options = LayerOptions {
            gzip_level: 1,
            ..LayerOptions::default()
        };
        image.add_layer(
            write_layer(&[entry], &store, options).unwrap(),
            Default::default(),
        );
    }
    let built = image.finish(&store).unwrap();
    let pushed = push_image(&store, &built, &Default::default(), base).unwrap();
    runtime.block_on(push(&pushed, base, opts)).unwrap();
}

/// The base's layers, as a build asks for them.
fn layers(pulled: &dockless::remote::pull::BaseImage) -> Vec<BaseBlob> {
    pulled
        .layers
        .iter()
        .map(|l| BaseBlob {
            image: pulled.reference.clone(),
            digest: l.digest.clone(),
            size: l.size,
        })
        .collect()
}

/// Manifest, config and layers through one puller (one client), on the
/// caller's runtime, `opts.download_concurrency` blobs at once.
fn one_client(
    runtime: &tokio::runtime::Runtime,
    opts: &Options,
    base: &Reference,
    store: &BlobStore,
) {
    runtime.block_on(async {
        let puller = Puller::for_images(opts, [base]);
        let pulled = puller.pull(base, &Platform::host(), store).await.unwrap();
        puller.fetch_blobs(&layers(&pulled), store).await.unwrap();
    });
}

/// Runs `future` as builds did before: on a new thread with a new runtime.
fn on_a_runtime_of_its_own<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(future)
            })
            .join()
            .unwrap()
    })
}

/// The path builds took before: the pull, then every layer, each on a
/// thread and runtime of its own through a client of its own.
fn a_client_per_blob(opts: &Options, base: &Reference, store: &BlobStore) {
    let pulled = on_a_runtime_of_its_own(async {
        let puller = Puller::for_images(opts, [base]);
        puller.pull(base, &Platform::host(), store).await.unwrap()
    });
    for blob in layers(&pulled) {
        on_a_runtime_of_its_own(async {
            let puller = Puller::for_images(opts, [base]);
            puller.fetch_blob(&blob, store).await.unwrap()
        });
    }
}

/// A cold `dockless build` FROM the base with `bin`: seconds.
fn cold_build(bin: &str, work: &Path, addr: &str) -> f64 {
    let context = work.join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {addr}/bench/base:10\nCOPY hello.txt /\n"),
    )
    .unwrap();
    let (cache, layout) = (work.join("cli-cache"), work.join("cli-layout"));
    let start = Instant::now();
    let status = Command::new(bin)
        .env("DOCKLESS_CACHE_DIR", &cache)
        .arg("build")
        .arg(&context)
        .args(["-t", "app:v1", "--insecure-registry", addr, "-o"])
        .arg(format!("oci:{}", layout.display()))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run the dockless binary");
    let took = start.elapsed().as_secs_f64();
    assert!(status.success());
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::remove_dir_all(&layout).unwrap();
    took
}

fn main() {
    let work = tempfile::tempdir().unwrap();
    let registry_dir = work.path().join("registry");
    std::fs::create_dir(&registry_dir).unwrap();
    let (_registry, addr) = start_registry(&registry_dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let opts = Options::default().insecure(&addr);
    let base = Reference::parse_tag(&format!("{addr}/bench/base:10")).unwrap();
    push_base(work.path(), &base, &opts, &runtime);
    let one_at_a_time = Options {
        download_concurrency: 1,
        ..opts.clone()
    };

    let ways = [
        "one client, 4 at once",
        "one client, 1 at a time",
        "a client per blob, 1 at a time (before)",
    ];
    let mut times = vec![Vec::new(); ways.len()];
    for run in 0..RUNS {
        for (way, took) in times.iter_mut().enumerate() {
            let store_dir = work.path().join(format!("store-{run}-{way}"));
            let store = BlobStore::open(&store_dir).unwrap();
            let start = Instant::now();
            match way {
                0 => one_client(&runtime, &opts, &base, &store),
                1 => one_client(&runtime, &one_at_a_time, &base, &store),
                _ => a_client_per_blob(&opts, &base, &store),
            }
            took.push(start.elapsed().as_secs_f64());
            std::fs::remove_dir_all(&store_dir).unwrap();
        }
    }
    let mb = (LAYERS * LAYER_MB) as f64 * 1.048_576;
    println!("a base of {LAYERS} layers ({mb:.1} MB) into an empty store, median of {RUNS}:");
    let before = median(times[2].clone());
    for (way, took) in ways.iter().zip(times) {
        let t = median(took);
        println!(
            "  {way:<42} {t:.3} s ({:.0} MB/s, {:.2}x)",
            mb / t,
            before / t
        );
    }

    let bins: Vec<(&str, String)> = ["DOCKLESS_BIN", "DOCKLESS_BASELINE"]
        .into_iter()
        .filter_map(|var| std::env::var(var).ok().map(|bin| (var, bin)))
        .collect();
    if bins.is_empty() {
        return;
    }
    let mut cli = vec![Vec::new(); bins.len()];
    for _ in 0..RUNS {
        for ((_, bin), took) in bins.iter().zip(cli.iter_mut()) {
            took.push(cold_build(bin, work.path(), &addr));
        }
    }
    println!("cold `dockless build` FROM the base, median of {RUNS}:");
    for ((var, bin), took) in bins.iter().zip(cli) {
        println!("  {var} ({bin}) {:.3} s", median(took));
    }
}
