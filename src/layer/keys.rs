//! Segment keys made from what a segment holds rather than from its bytes.
//!
//! A segment's bytes are tar headers and padding ("meta") and runs of file
//! data. When the content hash of every file whose data lies in the segment
//! is known and trusted, the segment is keyed by its meta bytes and, for each
//! data run, the file's content hash and the run's place in the file: the
//! same bytes, named without hashing them. A file whose hash is known
//! before it is read (its stat key is in the cache) is keyed without being
//! read at all. A segment with data of a file that is not finished when the
//! segment ends (cut inside a big file being read) is keyed by the sha256 of
//! its bytes, and by its parts too once that file is done; one with data of
//! a file whose hash is not trusted only by its bytes.

use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use std::rc::Rc;

/// What a segment's data run knows about its file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    /// The file is still being read.
    Pending,
    /// sha256 (hex) of the whole file, known before or hashed while it was read.
    Trusted(String),
    /// The file changed while it was read: the segment is keyed by its bytes.
    Untrusted,
}

#[derive(Debug)]
enum Part {
    Meta(Vec<u8>),
    Data {
        content: Content,
        start: u64,
        len: u64,
    },
}

/// How a segment is keyed in the segment cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SegmentKey {
    /// By what it holds (hex sha256 of its parts).
    Parts(String),
    /// By the sha256 of its bytes, computed by the compressing thread.
    Bytes,
}

/// Follows which bytes of the tar stream are file data, per segment.
pub(super) struct Keyer {
    parts: Vec<Part>,
    /// Segments that ended inside a file still being read, by index: their
    /// parts key is known once that file's content hash is.
    waiting: Vec<(u64, Vec<Part>)>,
    /// Parts keys of waiting segments that became known, by index.
    late: Vec<(u64, String)>,
    /// Data bytes the file reader handed out that the pipeline has not seen
    /// yet: tar copies each read straight into the pipeline, so the next
    /// bytes written are data while this is above zero.
    data_pending: Rc<Cell<u64>>,
    /// Offset of the next data byte in the file being read.
    file_offset: u64,
}

impl Keyer {
    pub(super) fn new() -> Keyer {
        Keyer {
            parts: Vec::new(),
            waiting: Vec::new(),
            late: Vec::new(),
            data_pending: Rc::new(Cell::new(0)),
            file_offset: 0,
        }
    }

    /// The counter a file's reader adds its reads to.
    pub(super) fn data_signal(&self) -> Rc<Cell<u64>> {
        self.data_pending.clone()
    }

    /// Notes bytes written to the current segment.
    pub(super) fn wrote(&mut self, bytes: &[u8]) {
        let pending = self.data_pending.get();
        let data = (bytes.len() as u64).min(pending);
        if data > 0 {
            self.data_pending.set(pending - data);
            match self.parts.last_mut() {
                Some(Part::Data {
                    content: Content::Pending,
                    len,
                    ..
                }) => *len += data,
                _ => self.parts.push(Part::Data {
                    content: Content::Pending,
                    start: self.file_offset,
                    len: data,
                }),
            }
            self.file_offset += data;
        }
        let meta = &bytes[data as usize..];
        if meta.is_empty() {
            return;
        }
        match self.parts.last_mut() {
            Some(Part::Meta(m)) => m.extend_from_slice(meta),
            _ => self.parts.push(Part::Meta(meta.to_vec())),
        }
    }

    /// Notes `len` bytes at `start` of a file whose content hash is known
    /// before it is read (the pipeline reads them only when it must).
    pub(super) fn known_data(&mut self, hash: &str, start: u64, len: u64) {
        self.parts.push(Part::Data {
            content: Content::Trusted(hash.to_string()),
            start,
            len,
        });
    }

    /// A file's data is complete: its runs in this segment and in waiting
    /// ones get its content hash, or `None` when it is not to be trusted.
    pub(super) fn file_done(&mut self, hash: Option<String>) {
        let done = hash.map_or(Content::Untrusted, Content::Trusted);
        settle(&mut self.parts, &done);
        for (_, parts) in &mut self.waiting {
            settle(parts, &done);
        }
        for (index, parts) in std::mem::take(&mut self.waiting) {
            match parts_key(&parts) {
                Some(Ok(key)) => self.late.push((index, key)),
                Some(Err(())) => {}
                None => self.waiting.push((index, parts)),
            }
        }
        self.file_offset = 0;
    }

    /// The key of segment `index`, which ends here; starts the next one.
    /// A segment that ends inside a file being read is keyed by its bytes,
    /// and by its parts once the file is done (see [`Keyer::take_late`]).
    pub(super) fn end_segment(&mut self, index: u64) -> SegmentKey {
        let parts = std::mem::take(&mut self.parts);
        match parts_key(&parts) {
            Some(Ok(key)) => SegmentKey::Parts(key),
            Some(Err(())) => SegmentKey::Bytes,
            None => {
                self.waiting.push((index, parts));
                SegmentKey::Bytes
            }
        }
    }

    /// Parts keys of segments that were keyed by their bytes when they
    /// ended and became known since, by segment index.
    pub(super) fn take_late(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.late)
    }
}

/// Gives the pending data runs (all of the file just done) their content.
fn settle(parts: &mut [Part], done: &Content) {
    for part in parts.iter_mut().rev() {
        match part {
            Part::Data { content, .. } if *content == Content::Pending => *content = done.clone(),
            Part::Data { .. } => break,
            Part::Meta(_) => {}
        }
    }
}

/// The hex sha256 of a segment's parts; `None` while a file is pending,
/// `Err` when one is not trusted.
fn parts_key(parts: &[Part]) -> Option<Result<String, ()>> {
    let mut h = Sha256::new();
    h.update(b"dockless-segment-parts\0");
    let mut untrusted = false;
    for part in parts {
        match part {
            Part::Meta(bytes) => {
                h.update(b"M");
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            }
            Part::Data {
                content: Content::Trusted(hash),
                start,
                len,
            } => {
                h.update(b"D");
                h.update(hash.as_bytes());
                h.update(start.to_le_bytes());
                h.update(len.to_le_bytes());
            }
            Part::Data {
                content: Content::Pending,
                ..
            } => return None,
            Part::Data { .. } => untrusted = true,
        }
    }
    Some(match untrusted {
        true => Err(()),
        false => Ok(hex::encode(h.finalize())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(keyer: &mut Keyer, bytes: &[u8]) {
        let signal = keyer.data_signal();
        signal.set(signal.get() + bytes.len() as u64);
        keyer.wrote(bytes);
    }

    #[test]
    fn a_segment_of_whole_trusted_files_is_keyed_by_its_parts() {
        let key = |hash: &str| {
            let mut k = Keyer::new();
            k.wrote(b"header");
            data(&mut k, b"abc");
            k.file_done(Some(hash.into()));
            k.wrote(b"pad");
            k.end_segment(0)
        };
        assert!(matches!(key("aa"), SegmentKey::Parts(_)));
        assert_eq!(key("aa"), key("aa"));
        assert_ne!(key("aa"), key("bb"));
    }

    #[test]
    fn an_unfinished_file_keys_the_segment_by_its_bytes_then_by_its_parts() {
        let mut k = Keyer::new();
        k.wrote(b"header");
        data(&mut k, b"abc");
        assert_eq!(k.end_segment(0), SegmentKey::Bytes);
        assert!(k.take_late().is_empty());
        // The rest of that file, in the next segment, starts at offset 3.
        data(&mut k, b"def");
        k.file_done(Some("aa".into()));
        let rest = k.end_segment(1);
        assert!(matches!(rest, SegmentKey::Parts(_)));
        // Segment 0 gets the key it would have had with the hash known up front.
        let late = k.take_late();
        let mut known = Keyer::new();
        known.wrote(b"header");
        known.known_data("aa", 0, 3);
        assert_eq!(late, [(0, known_key(known.end_segment(0)))]);
    }

    fn known_key(key: SegmentKey) -> String {
        match key {
            SegmentKey::Parts(hex) => hex,
            SegmentKey::Bytes => panic!("keyed by bytes"),
        }
    }

    #[test]
    fn an_untrusted_file_keys_its_segments_by_their_bytes_only() {
        let mut k = Keyer::new();
        data(&mut k, b"abc");
        assert_eq!(k.end_segment(0), SegmentKey::Bytes);
        data(&mut k, b"xyz");
        k.file_done(None);
        assert_eq!(k.end_segment(1), SegmentKey::Bytes);
        assert!(k.take_late().is_empty());
    }

    #[test]
    fn where_the_data_lies_in_the_file_is_part_of_the_key() {
        let key = |skip: &[u8]| {
            let mut k = Keyer::new();
            data(&mut k, skip);
            k.end_segment(0);
            data(&mut k, b"def");
            k.file_done(Some("aa".into()));
            k.end_segment(1)
        };
        assert_ne!(key(b"abc"), key(b"abcd"));
    }
}
