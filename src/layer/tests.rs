//! Layers: deterministic bytes, digests, compression and segment reuse.

use super::*;
use flate2::read::MultiGzDecoder as GzDecoder;

fn file_entry(dir: &std::path::Path, name: &str, body: &[u8]) -> LayerEntry {
    let path = dir.join(name.replace('/', "_"));
    std::fs::write(&path, body).unwrap();
    LayerEntry::file(name, path, body.len() as u64)
}

fn read_back(store: &BlobStore, info: &LayerInfo) -> Vec<(String, EntryType, u64, u64)> {
    let file = std::fs::File::open(store.existing(&info.digest).unwrap()).unwrap();
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().display().to_string(),
                h.entry_type(),
                h.mtime().unwrap(),
                h.uid().unwrap(),
            )
        })
        .collect()
}

#[test]
fn layer_is_sorted_deterministic_and_digests_match() {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let long = format!("app/{}/x.txt", "d".repeat(150));
    let entries = vec![
        file_entry(src.path(), "app/b.txt", b"bbb"),
        LayerEntry {
            path: "app".into(),
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            mtime: None,
            data: EntryData::Dir,
        },
        file_entry(src.path(), &long, b"deep"),
        LayerEntry {
            path: "app/link".into(),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: None,
            data: EntryData::Symlink("b.txt".into()),
        },
    ];
    let opts = LayerOptions {
        mtime: 1234,
        gzip_level: 6,
        ..Default::default()
    };
    let a = write_layer(&entries, &store, opts).unwrap();
    let mut reversed = entries.clone();
    reversed.reverse();
    let b = write_layer(&reversed, &store, opts).unwrap();
    assert_eq!(a, b);

    let blob = std::fs::read(store.existing(&a.digest).unwrap()).unwrap();
    assert_eq!(crate::digest::sha256(&blob), a.digest);
    let mut tar_bytes = Vec::new();
    GzDecoder::new(&blob[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(crate::digest::sha256(&tar_bytes), a.diff_id);
    assert_eq!(tar_bytes.len() as u64, a.uncompressed_size);

    let listed = read_back(&store, &a);
    let paths: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(paths, vec!["app/", "app/b.txt", long.as_str(), "app/link"]);
    assert!(listed.iter().all(|e| e.2 == 1234));
    assert_eq!(listed[0].3, 1000);
}

#[test]
fn hashing_files_on_the_way_changes_no_byte() {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let mut entries = big_tree(src.path());
    entries.push(file_entry(src.path(), "app/empty", b""));
    let plain = write_layer(&entries, &store, LayerOptions::default()).unwrap();
    let (hashed, hashes) = write_layer_hashed(
        &entries,
        &store,
        LayerOptions::default(),
        None,
        &KnownFiles::new(),
    )
    .unwrap();
    assert_eq!(plain, hashed);
    assert_eq!(hashes.len(), entries.len());
    for e in &entries {
        let EntryData::File {
            source: FileSource::Path(path),
            ..
        } = &e.data
        else {
            unreachable!()
        };
        let (expected, _) = crate::digest::sha256_file(path).unwrap();
        assert_eq!(format!("sha256:{}", hashes[path]), expected);
    }
}

#[test]
fn gzip_level_changes_the_digest_but_not_the_diff_id() {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let body = "hello world ".repeat(1000);
    let entries = vec![file_entry(src.path(), "f", body.as_bytes())];
    let fast = write_layer(
        &entries,
        &store,
        LayerOptions {
            gzip_level: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let best = write_layer(
        &entries,
        &store,
        LayerOptions {
            gzip_level: 9,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fast.diff_id, best.diff_id);
    assert_ne!(fast.digest, best.digest);
}

#[test]
fn a_file_that_shrank_fails_the_layer() {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let mut entry = file_entry(src.path(), "f", b"abc");
    if let EntryData::File { size, .. } = &mut entry.data {
        *size = 10;
    }
    let err = write_layer(&[entry], &store, LayerOptions::default()).unwrap_err();
    assert!(matches!(err, LayerError::Changed { .. }), "{err}");
}

/// A few MB of text-like files, so the layer has several segments.
fn big_tree(dir: &std::path::Path) -> Vec<LayerEntry> {
    (0..40)
        .map(|i| {
            let body: String = (0..2000 + i * 150)
                .map(|n| format!("line {n} of file {i}: value = {}\n", n * 7 % 13))
                .collect();
            file_entry(dir, &format!("app/m{i:02}.py"), body.as_bytes())
        })
        .collect()
}

#[test]
fn bytes_do_not_depend_on_the_thread_count() {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let entries = big_tree(src.path());
    for compression in [LayerCompression::Gzip, LayerCompression::Zstd] {
        let with = |threads| {
            let opts = LayerOptions {
                threads,
                compression,
                ..Default::default()
            };
            write_layer(&entries, &store, opts).unwrap()
        };
        let one = with(1);
        assert!(one.uncompressed_size > 2 * SEGMENT_MIN as u64);
        assert_eq!(one, with(2));
        assert_eq!(one, with(7));
        assert_eq!(one.media_type, compression.media_type());
    }
}

#[test]
fn a_multi_member_gzip_layer_reads_back_whole() {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let entries = big_tree(src.path());
    let info = write_layer(&entries, &store, LayerOptions::default()).unwrap();
    let blob = std::fs::read(store.existing(&info.digest).unwrap()).unwrap();
    // More than one gzip member, each with the host-independent header.
    let members = blob
        .windows(10)
        .filter(|w| w[..4] == [0x1f, 0x8b, 8, 0] && w[4..8] == [0; 4] && w[9] == 255)
        .count();
    assert!(members > 1, "{members} members");
    let mut tar_bytes = Vec::new();
    GzDecoder::new(&blob[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(crate::digest::sha256(&tar_bytes), info.diff_id);
    assert_eq!(read_back(&store, &info).len(), entries.len());
}

#[test]
fn zstd_layers_decode_to_the_same_tar() {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let entries = big_tree(src.path());
    let gz = write_layer(&entries, &store, LayerOptions::default()).unwrap();
    let zst = write_layer(
        &entries,
        &store,
        LayerOptions {
            compression: LayerCompression::Zstd,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(gz.diff_id, zst.diff_id);
    assert_ne!(gz.digest, zst.digest);
    let blob = std::fs::read(store.existing(&zst.digest).unwrap()).unwrap();
    let tar_bytes = zstd::decode_all(&blob[..]).unwrap();
    assert_eq!(crate::digest::sha256(&tar_bytes), zst.diff_id);
}

type SegmentTable = Vec<(String, u64, u64)>;

/// A segment cache in memory, standing in for `cache::SegmentIndex`.
#[derive(Default)]
struct MemSegments {
    store: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    blobs: std::sync::Mutex<Vec<(String, SegmentTable)>>,
    hits: std::sync::atomic::AtomicUsize,
    prefixes: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    prefix_hits: std::sync::atomic::AtomicUsize,
}

impl SegmentCache for MemSegments {
    fn lookup(&self, key: &str) -> Option<Vec<u8>> {
        let found = self.store.lock().unwrap().get(key).cloned();
        if found.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        found
    }
    fn record(&self, blob: &str, segments: &[(String, u64, u64)]) {
        self.blobs
            .lock()
            .unwrap()
            .push((blob.to_string(), segments.to_vec()));
    }
    fn prefix_state(&self, key: &str) -> Option<Vec<u8>> {
        let found = self.prefixes.lock().unwrap().get(key).cloned();
        if found.is_some() {
            self.prefix_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        found
    }
    fn record_prefixes(&self, _blob: &str, states: &[(String, Vec<u8>)]) {
        self.prefixes.lock().unwrap().extend(states.iter().cloned());
    }
}

#[test]
fn reused_segments_give_the_same_bytes_as_a_cold_write() {
    let src = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let mut entries = big_tree(src.path());
    let cache = MemSegments::default();
    let first =
        write_layer_cached(&entries, &store, LayerOptions::default(), Some(&cache)).unwrap();
    // Fill the cache from the recorded table, as the on-disk index does.
    let blob = std::fs::read(store.existing(&first.digest).unwrap()).unwrap();
    for (_, table) in cache.blobs.lock().unwrap().iter() {
        for (key, off, len) in table {
            let bytes = blob[*off as usize..(*off + *len) as usize].to_vec();
            cache.store.lock().unwrap().insert(key.clone(), bytes);
        }
    }
    let segments = cache.store.lock().unwrap().len();
    assert!(segments > 2);
    // Change one file near the end: only its segment is compressed again.
    entries[38] = file_entry(src.path(), "app/m38.py", b"changed\n");
    let warm = write_layer_cached(&entries, &store, LayerOptions::default(), Some(&cache)).unwrap();
    let cold = write_layer(&entries, &store, LayerOptions::default()).unwrap();
    assert_eq!(warm, cold);
    let hits = cache.hits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(hits >= segments - 2, "{hits} of {segments} reused");
}

/// Puts every segment of the blobs `cache` recorded into it, as the on-disk index does.
fn fill_from_recorded(cache: &MemSegments, store: &BlobStore) -> usize {
    for (digest, table) in cache.blobs.lock().unwrap().iter() {
        let blob = std::fs::read(store.existing(digest).unwrap()).unwrap();
        for (key, off, len) in table {
            let bytes = blob[*off as usize..(*off + *len) as usize].to_vec();
            cache.store.lock().unwrap().insert(key.clone(), bytes);
        }
    }
    cache.store.lock().unwrap().len()
}

/// The content hashes and current stat keys of the entries' files.
fn known_files(entries: &[LayerEntry]) -> KnownFiles {
    entries
        .iter()
        .filter_map(|e| match &e.data {
            EntryData::File {
                source: FileSource::Path(p),
                ..
            } => {
                let (digest, _) = crate::digest::sha256_file(p).unwrap();
                let stat = crate::files::stat_key(&std::fs::metadata(p).unwrap());
                let hash = digest.trim_start_matches("sha256:").to_string();
                Some((p.clone(), (hash, stat)))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn known_files_are_not_hashed_again_and_their_segments_are_reused() {
    let src = tempfile::tempdir().unwrap();
    let store = BlobStore::open(src.path().join("store")).unwrap();
    let entries = big_tree(src.path());
    let cache = MemSegments::default();
    let opts = LayerOptions::default();
    let (first, streamed) =
        write_layer_hashed(&entries, &store, opts, Some(&cache), &KnownFiles::new()).unwrap();
    assert_eq!(streamed.len(), entries.len());
    let segments = fill_from_recorded(&cache, &store);
    let known = known_files(&entries);
    let (again, streamed) =
        write_layer_hashed(&entries, &store, opts, Some(&cache), &known).unwrap();
    assert_eq!(first, again);
    assert!(streamed.is_empty(), "{} files hashed again", streamed.len());
    let hits = cache.hits.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(hits, segments);
}

#[test]
fn a_known_file_rewritten_since_it_was_hashed_gets_no_stale_segment() {
    let src = tempfile::tempdir().unwrap();
    let store = BlobStore::open(src.path().join("store")).unwrap();
    let entries = big_tree(src.path());
    let cache = MemSegments::default();
    let opts = LayerOptions::default();
    write_layer_cached(&entries, &store, opts, Some(&cache)).unwrap();
    fill_from_recorded(&cache, &store);
    let known = known_files(&entries);
    // Same size, other bytes: the recorded hash is stale, the stat key moved.
    let EntryData::File {
        source: FileSource::Path(path),
        size,
    } = &entries[5].data
    else {
        unreachable!()
    };
    std::fs::write(path, vec![b'x'; *size as usize]).unwrap();
    let (warm, _) = write_layer_hashed(&entries, &store, opts, Some(&cache), &known).unwrap();
    let cold = write_layer(&entries, &store, opts).unwrap();
    assert_eq!(warm, cold);
}

#[test]
fn an_entry_keeps_its_own_mtime_and_an_opaque_whiteout_leads_its_folder() {
    let src = tempfile::tempdir().unwrap();
    let store = BlobStore::open(src.path().join("store")).unwrap();
    let mut own = file_entry(src.path(), "d/.a", b"x");
    own.mtime = Some(99);
    let mut opaque = file_entry(src.path(), "d/.wh..wh..opq", b"");
    opaque.mode = 0;
    let dir = LayerEntry {
        path: "d".into(),
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: None,
        data: EntryData::Dir,
    };
    let top = file_entry(src.path(), ".wh..wh..opq", b"");
    let entries = vec![own, file_entry(src.path(), "d-e", b"y"), opaque, dir, top];
    let opts = LayerOptions {
        mtime: 1234,
        ..Default::default()
    };
    let info = write_layer(&entries, &store, opts).unwrap();
    let names: Vec<(String, u64)> = read_back(&store, &info)
        .into_iter()
        .map(|(p, _, mtime, _)| (p, mtime))
        .collect();
    assert_eq!(
        names,
        [
            (".wh..wh..opq".to_string(), 1234),
            ("d/".to_string(), 1234),
            ("d-e".to_string(), 1234),
            ("d/.wh..wh..opq".to_string(), 1234),
            ("d/.a".to_string(), 99),
        ]
    );
}

#[test]
fn a_layer_written_to_a_pipe_is_the_stored_layer() {
    let src = tempfile::tempdir().unwrap();
    let store = BlobStore::open(src.path().join("store")).unwrap();
    let entries = big_tree(src.path());
    let stored = write_layer(&entries, &store, LayerOptions::default()).unwrap();
    let (read, write) = std::io::pipe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut { read }, &mut bytes).unwrap();
        bytes
    });
    let file = std::fs::File::from(std::os::fd::OwnedFd::from(write));
    let piped = write_layer_to(&entries, file, LayerOptions::default()).unwrap();
    let bytes = reader.join().unwrap();
    assert_eq!(piped, stored);
    assert_eq!(crate::digest::sha256(&bytes), stored.digest);
}

/// A tree with files bigger than a segment, so segments end inside files.
fn tree_with_big_files(dir: &std::path::Path) -> Vec<LayerEntry> {
    let mut entries = big_tree(dir);
    for i in 0..2 {
        let body: String = (0..500_000)
            .map(|n| format!("{i}:{n}:{}\n", n * 31 % 977))
            .collect();
        assert!(body.len() > SEGMENT_MAX);
        entries.push(file_entry(dir, &format!("big/lib{i}.a"), body.as_bytes()));
    }
    entries
}

#[test]
fn segments_cut_inside_a_read_file_are_found_again_by_their_parts() {
    let src = tempfile::tempdir().unwrap();
    let store = BlobStore::open(src.path().join("store")).unwrap();
    let entries = tree_with_big_files(src.path());
    let cache = MemSegments::default();
    let opts = LayerOptions::default();
    // Cold: every file is read, segments inside the big files are keyed by their bytes.
    let (cold, _) =
        write_layer_hashed(&entries, &store, opts, Some(&cache), &KnownFiles::new()).unwrap();
    fill_from_recorded(&cache, &store);
    cache.hits.store(0, std::sync::atomic::Ordering::Relaxed);
    // Warm: every hash is known, so every segment is keyed by its parts.
    let (warm, _) =
        write_layer_hashed(&entries, &store, opts, Some(&cache), &known_files(&entries)).unwrap();
    assert_eq!(warm, cold);
    let tables = cache.blobs.lock().unwrap();
    let (cold_keys, warm_segments) = (tables[0].1.len(), tables[1].1.len());
    // The cut segments were recorded under both keys.
    assert!(
        cold_keys >= warm_segments + 2,
        "{cold_keys} keys, {warm_segments} segments"
    );
    let hits = cache.hits.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(hits, warm_segments);
}

#[test]
fn an_unchanged_prefix_is_not_hashed_again_and_the_digests_hold() {
    let src = tempfile::tempdir().unwrap();
    let store = BlobStore::open(src.path().join("store")).unwrap();
    let mut entries = tree_with_big_files(src.path());
    let cache = MemSegments::default();
    let opts = LayerOptions::default();
    write_layer_hashed(&entries, &store, opts, Some(&cache), &KnownFiles::new()).unwrap();
    fill_from_recorded(&cache, &store);
    let recorded = cache.prefixes.lock().unwrap().len();
    assert!(recorded > 3, "{recorded} prefix states recorded");
    // Change the last file: everything before it is a known prefix.
    let mut known = known_files(&entries);
    let last = entries.len() - 1;
    entries[last] = file_entry(src.path(), "big/lib1.a", b"changed\n");
    if let EntryData::File {
        source: FileSource::Path(p),
        ..
    } = &entries[last].data
    {
        known.remove(p);
    }
    let (warm, _) = write_layer_hashed(&entries, &store, opts, Some(&cache), &known).unwrap();
    let skipped = cache.prefix_hits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(skipped >= 3, "{skipped} segments skipped");
    let cold = write_layer(&entries, &store, opts).unwrap();
    assert_eq!(warm, cold);
    // The new layer's states are recorded too: an unchanged rewrite skips every segment.
    let (again, _) =
        write_layer_hashed(&entries, &store, opts, Some(&cache), &known_files(&entries)).unwrap();
    assert_eq!(again, cold);
}

#[test]
fn a_prefix_state_that_does_not_parse_is_ignored() {
    let src = tempfile::tempdir().unwrap();
    let store = BlobStore::open(src.path().join("store")).unwrap();
    let entries = big_tree(src.path());
    let cache = MemSegments::default();
    let opts = LayerOptions::default();
    let first = write_layer_cached(&entries, &store, opts, Some(&cache)).unwrap();
    fill_from_recorded(&cache, &store);
    for state in cache.prefixes.lock().unwrap().values_mut() {
        state.truncate(3);
    }
    let (again, _) =
        write_layer_hashed(&entries, &store, opts, Some(&cache), &known_files(&entries)).unwrap();
    assert_eq!(again, first);
}
