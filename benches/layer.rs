//! Layer creation throughput: a generated source tree to tar+gzip with both
//! digests, plus the digest and gzip stages alone.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dockless::layer::{write_layer, EntryData, FileSource, LayerEntry, LayerOptions};
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
            LayerEntry {
                path: format!("app/pkg{}/f{i}.py", i % 16),
                mode: 0o644,
                uid: 0,
                gid: 0,
                data: EntryData::File {
                    source: FileSource::Path(path),
                    size: size as u64,
                },
            }
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
                            mtime: 0,
                            gzip_level: level,
                        },
                    )
                    .unwrap()
                })
            },
        );
    }
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

criterion_group!(benches, layer_throughput, stages);
criterion_main!(benches);
