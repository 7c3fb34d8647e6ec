//! sha256 digests in the `sha256:<hex>` form used throughout OCI.

use sha2::{Digest as _, Sha256};
use sha2_resumable::digest::common::hazmat::{SerializableState, SerializedState};
use std::io::{self, Read, Write};
use std::path::Path;

/// Formats a finished hasher as `sha256:<hex>`.
fn format(hasher: Sha256) -> String {
    prefixed(&hasher.finalize())
}

/// A sha256 output as `sha256:<hex>`.
fn prefixed(out: &[u8]) -> String {
    format!("sha256:{}", hex::encode(out))
}

/// The digest of a byte slice.
pub fn sha256(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    format(hasher)
}

/// The digest and length of everything a reader yields, streamed.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut writer = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut writer)?;
    let (_, digest, len) = writer.finish();
    Ok((digest, len))
}

/// The digest and length of a file, streamed.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    sha256_reader(std::fs::File::open(path)?)
}

/// A sha256 whose state can be saved after any prefix and resumed from
/// there later: a layer whose first segments did not change resumes its
/// diff_id after them instead of hashing them again.
#[derive(Clone, Default)]
pub struct ResumableSha256(sha2_resumable::Sha256);

impl ResumableSha256 {
    pub fn update(&mut self, bytes: &[u8]) {
        sha2_resumable::Digest::update(&mut self.0, bytes);
    }

    /// The state so far, to [`ResumableSha256::resume`] from.
    pub fn save(&self) -> Vec<u8> {
        self.0.serialize().to_vec()
    }

    /// A hasher in a state [`ResumableSha256::save`] gave; None for bytes it did not.
    pub fn resume(state: &[u8]) -> Option<Self> {
        let state = SerializedState::<sha2_resumable::Sha256>::try_from(state).ok()?;
        sha2_resumable::Sha256::deserialize(&state).ok().map(Self)
    }

    /// `sha256:<hex>` of everything hashed.
    pub fn finish(self) -> String {
        prefixed(&sha2_resumable::Digest::finalize(self.0))
    }
}

/// The hex part of a `sha256:<hex>` digest, if it is well formed.
pub fn hex_part(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(hex)
}

/// A reader that hashes and counts the bytes read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// Reads what is left, then returns the digest and the byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format(self.hasher), self.read))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts the bytes passing through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Returns the inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, format(self.hasher), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_resumes_to_the_same_digest() {
        let mut h = ResumableSha256::default();
        h.update(&[7u8; 1000]);
        let state = h.save();
        h.update(b"tail");
        let mut resumed = ResumableSha256::resume(&state).unwrap();
        resumed.update(b"tail");
        let mut whole = vec![7u8; 1000];
        whole.extend_from_slice(b"tail");
        assert_eq!(resumed.finish(), sha256(&whole));
        assert_eq!(h.finish(), sha256(&whole));
        assert!(ResumableSha256::resume(b"not a state").is_none());
    }

    #[test]
    fn empty_digest_is_the_well_known_one() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_writer_matches_one_shot_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, digest, len) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(len, 11);
        assert_eq!(digest, sha256(b"hello world"));
    }

    #[test]
    fn hex_part_rejects_malformed_digests() {
        assert!(hex_part("sha256:abc").is_none());
        assert!(hex_part("md5:00").is_none());
        let good = sha256(b"x");
        assert_eq!(hex_part(&good).map(str::len), Some(64));
    }
}
