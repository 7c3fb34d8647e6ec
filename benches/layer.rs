//! Layer creation throughput: a generated source tree to tar+gzip with both
//! digests (by thread count and compressor), the tar, digest and gzip stages
//! alone, the layer cache's lookup of an unchanged tree, and a cold layer
//! written through the cache (files hashed first, or while they stream).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dockless::cache::layers::LayerCache;
use dockless::layer::{
    write_layer, EntryData, FileSource, LayerCompression, LayerEntry, LayerOptions,
};
use dockless::store::BlobStore;
use std::io::Write;

/// Text-like content that compresses about as well as source code does.
fn sample_bytes(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "fn ", "let ", "return ", "self", "value", "(x)", "{\n", "}\n", "; ", "0x1f", "import ",
        "def ",
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        out.extend_from_slice(words[(state >> 33) as usize % words.len()].as_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `files` files of `size` bytes and returns their layer entries.
fn source_tree(dir: &std::path::Path, files: usize, size: usize) -> Vec<LayerEntry> {
    (0..files)
        .map(|i| {
            let path = dir.join(format!("f{i}"));
            std::fs::write(&path, sample_bytes(size, i as u64)).unwrap();
            LayerEntry::file(format!("app/pkg{}/f{i}.py", i % 16), path, size as u64)
        })
        .collect()
}

fn layer_throughput(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let (files, size) = (256, 64 * 1024);
    let entries = source_tree(src.path(), files, size);
    let mut group = c.benchmark_group("layer");
    group.throughput(Throughput::Bytes((files * size) as u64));
    group.sample_size(10);
    for level in [1u32, 6] {
        group.bench_with_input(
            BenchmarkId::new("tar_gzip_digests", level),
            &level,
            |b, &level| {
                b.iter(|| {
                    write_layer(
                        &entries,
                        &store,
                        LayerOptions {
                            gzip_level: level,
                            ..Default::default()
                        },
                    )
                    .unwrap()
                })
            },
        );
    }
    for threads in [1usize, 2] {
        group.bench_with_input(
            BenchmarkId::new("gzip6_threads", threads),
            &threads,
            |b, &threads| {
                b.iter(|| {
                    let opts = LayerOptions {
                        threads,
                        ..Default::default()
                    };
                    write_layer(&entries, &store, opts).unwrap()
                })
            },
        );
    }
    group.bench_function("zstd3", |b| {
        b.iter(|| {
            let opts = LayerOptions {
                compression: LayerCompression::Zstd,
                ..Default::default()
            };
            write_layer(&entries, &store, opts).unwrap()
        })
    });
    group.bench_function("tar_only", |b| {
        b.iter(|| {
            let mut tar = tar::Builder::new(std::io::sink());
            for e in &entries {
                if let EntryData::File {
                    source: FileSource::Path(p),
                    ..
                } = &e.data
                {
                    tar.append_path_with_name(p, &e.path).unwrap();
                }
            }
            tar.finish().unwrap();
        })
    });
    group.finish();
}

/// The no-change path: stat every file, look the key up, find the blob.
fn cache_lookup(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(cache_dir.path()).unwrap();
    let files = 2048;
    let entries = source_tree(src.path(), files, 4096);
    let opts = LayerOptions::default();
    let cache = LayerCache::open(cache_dir.path());
    let key = cache.key(&entries, &opts).unwrap();
    let info = write_layer(&entries, &store, opts).unwrap();
    cache.insert(&key, &info);
    let mut group = c.benchmark_group("cache");
    group.sample_size(20);
    group.bench_function("key_and_lookup_2048_files", |b| {
        b.iter(|| {
            let key = cache.key(&entries, &opts).unwrap();
            assert!(cache.lookup(&key, &store).is_some());
        })
    });
    group.finish();
}

/// A cold layer with the cache on: hash every file, then write the layer
/// (two reads per file), against hashing files as the layer streams them.
fn cold_cache_write(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let (files, size) = (256, 64 * 1024);
    let entries = source_tree(src.path(), files, size);
    let opts = LayerOptions::default();
    let mut group = c.benchmark_group("cold_cache");
    group.throughput(Throughput::Bytes((files * size) as u64));
    group.sample_size(10);
    group.bench_function("hash_then_write", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let cache = LayerCache::open(dir.path());
                let key = cache.key(&entries, &opts).unwrap();
                let segments = cache.segments(&store);
                let info =
                    dockless::layer::write_layer_cached(&entries, &store, opts, Some(&segments))
                        .unwrap();
                cache.insert(&key, &info);
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("hash_while_writing", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let cache = LayerCache::open(dir.path());
                let scan = cache.scan(&entries, &opts).unwrap();
                cache
                    .write_layer(Some(&scan), &entries, &store, opts)
                    .unwrap();
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn stages(c: &mut Criterion) {
    let data = sample_bytes(16 * 1024 * 1024, 7);
    let mut group = c.benchmark_group("stages");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("sha256", |b| b.iter(|| dockless::digest::sha256(&data)));
    group.bench_function("gzip6", |b| {
        b.iter(|| {
            let mut gz =
                flate2::write::GzEncoder::new(std::io::sink(), flate2::Compression::new(6));
            gz.write_all(&data).unwrap();
            gz.finish().unwrap();
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    layer_throughput,
    stages,
    cache_lookup,
    cold_cache_write
);
criterion_main!(benches);
