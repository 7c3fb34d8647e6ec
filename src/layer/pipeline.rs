//! The tar stream's way into a compressed blob. The stream is cut into
//! segments; compression threads turn each into a member (or take it from
//! the segment cache); a writer puts the members in order into the blob
//! while hashing them, and hands the segments' bytes in order to a thread
//! that hashes the diff_id.
//!
//! A segment holds literal bytes (tar headers, padding, files read on the
//! way) and ranges of files whose content hash is known, read only when a
//! thread needs the bytes. With a segment cache, the diff_id hasher's state
//! after each segment is recorded under the chain of the segment keys so
//! far: while a new layer's segments are all known from an earlier one,
//! their files are not read and the diff_id resumes after them.

use super::keys::{Keyer, SegmentKey};
use super::tap::LayerFeed;
use super::{Compressor, SEGMENT_MAX, SEGMENT_MIN, SEGMENT_TARGET};
use crate::digest::{HashingWriter, ResumableSha256};
use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

/// A local file whose bytes are read only when a segment needs them.
pub(super) struct LazyFile {
    pub path: PathBuf,
    /// Its stat key when its content hash was taken; the bytes read must
    /// still be that content, so the key is checked again after reading.
    pub stat: String,
}

enum Piece {
    /// The next `n` bytes of the segment's literal buffer.
    Literal(usize),
    File {
        file: Arc<LazyFile>,
        start: u64,
        len: u64,
    },
}

/// A run of the tar stream that is compressed as one member.
#[derive(Default)]
struct Segment {
    literal: Vec<u8>,
    pieces: Vec<Piece>,
    len: usize,
}

impl Segment {
    fn push_literal(&mut self, bytes: &[u8]) {
        if self.literal.capacity() == 0 {
            self.literal.reserve(SEGMENT_MIN);
        }
        self.literal.extend_from_slice(bytes);
        self.len += bytes.len();
        match self.pieces.last_mut() {
            Some(Piece::Literal(n)) => *n += bytes.len(),
            _ => self.pieces.push(Piece::Literal(bytes.len())),
        }
    }

    fn push_file(&mut self, file: Arc<LazyFile>, start: u64, len: u64) {
        self.len += len as usize;
        self.pieces.push(Piece::File { file, start, len });
    }

    /// The segment's bytes, its files read and checked.
    fn materialize(self) -> io::Result<Vec<u8>> {
        if let [Piece::Literal(_)] | [] = self.pieces[..] {
            return Ok(self.literal);
        }
        let mut out = vec![0u8; self.len];
        let (mut at, mut lit) = (0usize, 0usize);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(n) => {
                    out[at..at + n].copy_from_slice(&self.literal[lit..lit + n]);
                    lit += n;
                    at += n;
                }
                Piece::File { file, start, len } => {
                    let end = at + *len as usize;
                    read_unchanged(file, *start, &mut out[at..end])?;
                    at = end;
                }
            }
        }
        Ok(out)
    }
}

/// Reads `buf.len()` bytes at `start` of a lazy file, then checks that it
/// still has the stat key its content hash was taken with.
fn read_unchanged(file: &LazyFile, start: u64, buf: &mut [u8]) -> io::Result<()> {
    let changed = || {
        io::Error::other(format!(
            "{} changed while it was being added to the layer",
            file.path.display()
        ))
    };
    let f = std::fs::File::open(&file.path)?;
    f.read_exact_at(buf, start).map_err(|_| changed())?;
    match crate::files::stat_key(&f.metadata()?) == file.stat {
        true => Ok(()),
        false => Err(changed()),
    }
}

/// Whether a segment's bytes go to the diff_id hasher.
enum DiffPart {
    /// No: the hasher's state after it is known.
    Skip,
    Hash,
    /// Yes, into a hasher restored to the state before it (the first segment after a skipped run).
    Resume(Box<ResumableSha256>),
}

/// A segment to compress: its index, content, cache key and part in the diff_id.
struct Job {
    index: u64,
    segment: Segment,
    key: Option<SegmentKey>,
    diff: DiffPart,
}

/// A compressed segment, the key it is recorded under, and its bytes when
/// the diff_id hasher needs them.
struct Member {
    bytes: Vec<u8>,
    key: Option<String>,
    diff: Option<(Option<Box<ResumableSha256>>, Vec<u8>)>,
}

/// A segment's content, read at most once and only when needed.
struct Content {
    segment: Option<Segment>,
    data: Vec<u8>,
}

impl Content {
    fn get(&mut self) -> io::Result<&[u8]> {
        if let Some(segment) = self.segment.take() {
            self.data = segment.materialize()?;
        }
        Ok(&self.data)
    }

    fn into_bytes(mut self) -> io::Result<Vec<u8>> {
        self.get()?;
        Ok(self.data)
    }
}

fn compress_job(compressor: &Compressor<'_>, job: Job) -> io::Result<Member> {
    let mut content = Content {
        segment: Some(job.segment),
        data: Vec::new(),
    };
    let key = match (compressor.cache, job.key) {
        (None, _) | (_, None) => None,
        (Some(_), Some(SegmentKey::Parts(hex))) => Some(compressor.parts_key(&hex)),
        (Some(_), Some(SegmentKey::Bytes)) => Some(compressor.bytes_key(content.get()?)),
    };
    let cached = compressor
        .cache
        .zip(key.as_deref())
        .and_then(|(cache, key)| cache.lookup(key));
    let bytes = match cached {
        Some(bytes) => bytes,
        None => compressor.compress(content.get()?)?,
    };
    let diff = match job.diff {
        DiffPart::Skip => None,
        DiffPart::Hash => Some((None, content.into_bytes()?)),
        DiffPart::Resume(state) => Some((Some(state), content.into_bytes()?)),
    };
    Ok(Member { bytes, key, diff })
}

pub(super) type Out = io::BufWriter<std::fs::File>;

/// The compressed blob as the pipeline wrote it.
pub(super) struct Written {
    pub out: Out,
    pub digest: String,
    pub size: u64,
    /// (key, offset, length) of every keyed segment.
    pub segments: Vec<(String, u64, u64)>,
    /// (offset, length) of every member, by segment index.
    members: Vec<(u64, u64)>,
}

/// What the pipeline made: the blob, the diff_id and tar size, and the
/// diff_id hasher's states worth recording: (chain key, state).
pub(super) struct Finished {
    pub written: Written,
    pub diff_id: String,
    pub uncompressed: u64,
    pub prefixes: Vec<(String, Vec<u8>)>,
}

type Done = (u64, io::Result<Member>);

/// The blob's bytes are handed to the disk in steps of this size while it is
/// written, so the fsync that commits it waits for the last step only.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Segment bytes for the diff_id hasher, in order, and the state to start from.
struct DiffMsg {
    index: u64,
    resume: Option<Box<ResumableSha256>>,
    bytes: Vec<u8>,
}

/// The diff_id hasher as its thread left it, and its state after each segment.
type Hashed = (Option<ResumableSha256>, Vec<(u64, Vec<u8>)>);

/// While every segment so far has a chain state on record, the state after the last.
struct Prefix {
    chain: String,
    state: Option<ResumableSha256>,
}

/// The tar stream's sink: cuts segments and hands them to compression
/// threads (see the module comment).
pub(super) struct Pipeline<'scope, 'env> {
    compressor: &'scope Compressor<'env>,
    segment: Segment,
    next: u64,
    uncompressed: u64,
    /// Names segments for the cache (none without one).
    keyer: Option<Keyer>,
    /// Parts key of every segment so far, by index, when it has one.
    parts: Vec<Option<String>>,
    /// Still skipping segments whose diff_id state is known (with a cache).
    prefix: Option<Prefix>,
    jobs: Option<SyncSender<Job>>,
    /// One token per segment in flight; the writer returns it, which bounds memory.
    tokens: Receiver<()>,
    writer: ScopedJoinHandle<'scope, io::Result<Written>>,
    differ: ScopedJoinHandle<'scope, Hashed>,
    workers: Vec<ScopedJoinHandle<'scope, ()>>,
}

pub(super) fn pipeline_stopped() -> io::Error {
    io::Error::other("the layer's writer stopped")
}

impl<'scope, 'env> Pipeline<'scope, 'env> {
    pub(super) fn start(
        scope: &'scope Scope<'scope, 'env>,
        compressor: &'scope Compressor<'env>,
        threads: usize,
        (out, feed): (Out, Option<&'scope dyn LayerFeed>),
    ) -> Self {
        let threads = threads.max(1);
        let in_flight = 2 * threads + 2;
        let (job_tx, job_rx) = sync_channel::<Job>(threads);
        let (done_tx, done_rx) = channel::<Done>();
        let (token_tx, token_rx) = sync_channel::<()>(in_flight);
        let (diff_tx, diff_rx) = sync_channel::<DiffMsg>(2);
        for _ in 0..in_flight {
            let _ = token_tx.send(());
        }
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let job_rx = job_rx.clone();
                let done_tx = done_tx.clone();
                scope.spawn(move || loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let index = job.index;
                    if done_tx
                        .send((index, compress_job(compressor, job)))
                        .is_err()
                    {
                        return;
                    }
                })
            })
            .collect();
        drop(done_tx);
        let writer = scope.spawn(move || write_in_order((out, feed), done_rx, token_tx, diff_tx));
        let save = compressor.cache.is_some();
        let differ = scope.spawn(move || hash_in_order(diff_rx, save));
        Pipeline {
            compressor,
            segment: Segment::default(),
            next: 0,
            uncompressed: 0,
            keyer: compressor.cache.map(|_| Keyer::new()),
            parts: Vec::new(),
            prefix: compressor.cache.map(|_| Prefix {
                chain: String::new(),
                state: None,
            }),
            jobs: Some(job_tx),
            tokens: token_rx,
            writer,
            differ,
            workers,
        }
    }

    fn dispatch(&mut self) -> io::Result<()> {
        if self.segment.len == 0 {
            return Ok(());
        }
        let segment = std::mem::take(&mut self.segment);
        let index = self.next;
        let key = self.keyer.as_mut().map(|k| k.end_segment(index));
        let parts = match &key {
            Some(SegmentKey::Parts(hex)) => Some(hex.clone()),
            _ => None,
        };
        let diff = self.diff_part(parts.as_deref());
        self.parts.push(parts);
        self.tokens.recv().map_err(|_| pipeline_stopped())?;
        let jobs = self.jobs.as_ref().ok_or_else(pipeline_stopped)?;
        let job = Job {
            index,
            segment,
            key,
            diff,
        };
        jobs.send(job).map_err(|_| pipeline_stopped())?;
        self.next += 1;
        Ok(())
    }

    /// Skips the segment in the diff_id while the state after it is on
    /// record; at the first one that is not, hashing starts from the last state.
    fn diff_part(&mut self, parts: Option<&str>) -> DiffPart {
        let Some(prefix) = &mut self.prefix else {
            return DiffPart::Hash;
        };
        if let (Some(hex), Some(cache)) = (parts, self.compressor.cache) {
            let chain = chain_next(&prefix.chain, hex);
            let state = cache
                .prefix_state(&self.compressor.prefix_key(&chain))
                .and_then(|s| ResumableSha256::resume(&s));
            if let Some(state) = state {
                prefix.chain = chain;
                prefix.state = Some(state);
                return DiffPart::Skip;
            }
        }
        match self.prefix.take().and_then(|p| p.state) {
            Some(state) => DiffPart::Resume(Box::new(state)),
            None => DiffPart::Hash,
        }
    }

    /// Called after each whole entry: ends the segment once it is big enough.
    pub(super) fn entry_boundary(&mut self, path: &str) -> io::Result<()> {
        let len = self.segment.len;
        if len >= SEGMENT_TARGET || (len >= SEGMENT_MIN && path_hash(path).is_multiple_of(4)) {
            self.dispatch()?;
        }
        Ok(())
    }

    /// The counter a file's reader adds its reads to, when segments are keyed.
    pub(super) fn data_signal(&self) -> Option<Rc<Cell<u64>>> {
        self.keyer.as_ref().map(Keyer::data_signal)
    }

    /// A file's data is all written: its content hash, if trusted.
    pub(super) fn file_done(&mut self, hash: Option<String>) {
        if let Some(keyer) = &mut self.keyer {
            keyer.file_done(hash);
        }
    }

    /// Adds a file's `size` bytes and its padding after its header, to be
    /// read only if a segment needs them; `hash` is its content's sha256.
    pub(super) fn lazy_file(&mut self, file: LazyFile, size: u64, hash: &str) -> io::Result<()> {
        let file = Arc::new(file);
        let mut start = 0;
        while start < size {
            let len = ((SEGMENT_MAX - self.segment.len) as u64).min(size - start);
            self.segment.push_file(file.clone(), start, len);
            if let Some(keyer) = &mut self.keyer {
                keyer.known_data(hash, start, len);
            }
            self.uncompressed += len;
            start += len;
            if self.segment.len >= SEGMENT_MAX {
                self.dispatch()?;
            }
        }
        let pad = (512 - size % 512) % 512;
        self.write_all(&[0u8; 512][..pad as usize])
    }

    fn stop(mut self) -> io::Result<(Written, Hashed, Stopped)> {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let written = match self.writer.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let hashed = match self.differ.join() {
            Ok(hashed) => hashed,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let stopped = Stopped {
            parts: self.parts,
            prefix: self.prefix,
            keyer: self.keyer,
            uncompressed: self.uncompressed,
        };
        Ok((written?, hashed, stopped))
    }

    /// Stops the threads, dropping the segment being cut; the error that
    /// stopped one of them, if any.
    pub(super) fn abort(mut self) -> Option<io::Error> {
        self.segment = Segment::default();
        self.stop().err()
    }

    /// Sends the last segment and waits for the blob.
    pub(super) fn finish(mut self) -> io::Result<Finished> {
        let dispatched = self.dispatch();
        let compressor = self.compressor;
        let (mut written, (hasher, states), mut stopped) = self.stop()?;
        dispatched?;
        // Segments keyed by their bytes when they ended inside a file are
        // recorded by their parts too, now that the file's hash is known.
        for (index, hex) in stopped
            .keyer
            .as_mut()
            .map(Keyer::take_late)
            .unwrap_or_default()
        {
            if let (Some(slot), Some(&(offset, len))) = (
                stopped.parts.get_mut(index as usize),
                written.members.get(index as usize),
            ) {
                // Late keys come from the keyer, which only a cache has.
                written
                    .segments
                    .push((compressor.parts_key(&hex), offset, len));
                *slot = Some(hex);
            }
        }
        let diff_id = match (hasher, stopped.prefix.and_then(|p| p.state)) {
            (Some(hasher), _) | (None, Some(hasher)) => hasher.finish(),
            (None, None) => ResumableSha256::default().finish(),
        };
        let chains = chains(&stopped.parts);
        let prefixes = states
            .into_iter()
            .filter_map(|(index, state)| {
                let chain = chains.get(index as usize)?;
                Some((compressor.prefix_key(chain), state))
            })
            .collect();
        Ok(Finished {
            written,
            diff_id,
            uncompressed: stopped.uncompressed,
            prefixes,
        })
    }
}

/// What the main thread knew when the pipeline stopped.
struct Stopped {
    parts: Vec<Option<String>>,
    prefix: Option<Prefix>,
    keyer: Option<Keyer>,
    uncompressed: u64,
}

impl Write for Pipeline<'_, '_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = SEGMENT_MAX - self.segment.len;
        let n = data.len().min(room);
        self.segment.push_literal(&data[..n]);
        if let Some(keyer) = &mut self.keyer {
            keyer.wrote(&data[..n]);
        }
        self.uncompressed += n as u64;
        if self.segment.len >= SEGMENT_MAX {
            self.dispatch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The chain key after one more segment: names the whole stream so far.
fn chain_next(chain: &str, parts_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"dockless-prefix\0");
    h.update(chain.as_bytes());
    h.update(parts_key.as_bytes());
    hex::encode(h.finalize())
}

/// The chain key after each segment, while every segment so far has a parts key.
fn chains(parts: &[Option<String>]) -> Vec<String> {
    let mut chain = String::new();
    parts
        .iter()
        .map_while(|p| {
            chain = chain_next(&chain, p.as_deref()?);
            Some(chain.clone())
        })
        .collect()
}

/// FNV-1a of a path: a fixed, platform-independent choice of boundaries.
fn path_hash(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes members in segment order, hashing them, and passes their
/// segments' bytes on to the diff_id hasher; returns a token per member.
/// A `feed` hears of each member once it is in the file.
fn write_in_order(
    (out, feed): (Out, Option<&dyn LayerFeed>),
    done: Receiver<Done>,
    tokens: SyncSender<()>,
    diff: SyncSender<DiffMsg>,
) -> io::Result<Written> {
    let mut out = HashingWriter::new(out);
    let mut pending = std::collections::BTreeMap::new();
    let mut next = 0u64;
    let mut table = Vec::new();
    let mut members = Vec::new();
    let mut on_disk = 0u64;
    for (index, result) in done {
        pending.insert(index, result?);
        while let Some(member) = pending.remove(&next) {
            let offset = out.written();
            out.write_all(&member.bytes)?;
            let len = member.bytes.len() as u64;
            members.push((offset, len));
            if let Some(key) = member.key {
                table.push((key, offset, len));
            }
            if let Some(feed) = feed {
                out.flush()?;
                feed.written(out.written());
            }
            if out.written() - on_disk >= WRITEBACK_STEP {
                out.flush()?;
                let file = out.get_ref().get_ref();
                crate::files::start_writeback(file, on_disk, out.written() - on_disk);
                on_disk = out.written();
            }
            if let Some((resume, bytes)) = member.diff {
                let msg = DiffMsg {
                    index: next,
                    resume,
                    bytes,
                };
                diff.send(msg).map_err(|_| pipeline_stopped())?;
            }
            next += 1;
            let _ = tokens.send(());
        }
    }
    if !pending.is_empty() {
        return Err(io::Error::other("a layer segment was lost"));
    }
    let (out, digest, size) = out.finish();
    Ok(Written {
        out,
        digest,
        size,
        segments: table,
        members,
    })
}

/// Hashes segments' bytes in order; with `save`, notes the state after each.
fn hash_in_order(segments: Receiver<DiffMsg>, save: bool) -> Hashed {
    let mut hasher: Option<ResumableSha256> = None;
    let mut states = Vec::new();
    for msg in segments {
        let h = match msg.resume {
            Some(state) => hasher.insert(*state),
            None => hasher.get_or_insert_with(ResumableSha256::default),
        };
        h.update(&msg.bytes);
        if save {
            states.push((msg.index, h.save()));
        }
    }
    (hasher, states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lazy_file_changed_since_it_was_hashed_fails_its_segment_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.py");
        std::fs::write(&path, b"print(1)\n").unwrap();
        let stat = crate::files::stat_key(&std::fs::metadata(&path).unwrap());
        let lazy = |stat: &str| {
            let mut segment = Segment::default();
            segment.push_literal(b"header");
            let file = LazyFile {
                path: path.clone(),
                stat: stat.to_string(),
            };
            segment.push_file(Arc::new(file), 0, 9);
            segment.materialize()
        };
        assert_eq!(lazy(&stat).unwrap(), b"headerprint(1)\n");
        let err = lazy("0:0:0.0:0.0:9").unwrap_err().to_string();
        assert!(
            err.contains("app.py changed while it was being added"),
            "{err}"
        );
        std::fs::write(&path, b"x").unwrap();
        assert!(lazy(&stat).is_err());
    }
}
