//! Request bodies that are streamed: from a file, or from another
//! registry (GET piped into the upload, hashed on the way), and who to
//! blame when such a body breaks off.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::error::{error_chain, RegistryError, Result};
use super::options::{EventSink, PushEvent};

/// The bytes of a streamed request body.
pub(crate) type ByteStream =
    Pin<Box<dyn futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// Why a streamed body was cut by its source, so that the error blames the
/// source rather than the target the body was going to. The first fault of
/// a try is kept.
#[derive(Clone, Default)]
pub(crate) struct SourceFault(Arc<Mutex<Option<Fault>>>);

impl SourceFault {
    fn note(&self, fault: Fault) {
        if let Ok(mut f) = self.0.lock() {
            f.get_or_insert(fault);
        }
    }

    /// The source stalled or broke off.
    pub(crate) fn note_transfer(&self, why: String) {
        self.note(Fault::Transfer(why));
    }

    /// The fault of the try just ended, if any, leaving none for the next.
    pub(crate) fn take(&self) -> Option<Fault> {
        self.0.lock().ok().and_then(|mut f| f.take())
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Wrong bytes: refused, never retried.
    WrongBytes(String),
    /// The download broke off or stalled: worth another try.
    Transfer(String),
}

/// A streamed body of `len` bytes from `path` at `offset`.
pub(super) async fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    digest: &str,
    total: u64,
    events: EventSink,
) -> Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static> {
    let io_err = |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = tokio::fs::File::open(path).await.map_err(io_err)?;
    let progress = BlobProgress {
        digest: digest.to_string(),
        total,
        events,
    };
    range_body(f, offset, len, Some(progress))
        .await
        .map_err(io_err)
}

/// Where the bytes sent of a blob are reported.
pub(super) struct BlobProgress {
    pub(super) digest: String,
    pub(super) total: u64,
    pub(super) events: EventSink,
}

/// A streamed body of `len` bytes of `f` from `offset`.
pub(super) async fn range_body(
    mut f: tokio::fs::File,
    offset: u64,
    len: u64,
    progress: Option<BlobProgress>,
) -> std::io::Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static>
{
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut sent = offset;
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 * 1024).inspect_ok(
        move |chunk| {
            sent += chunk.len() as u64;
            if let Some(p) = &progress {
                p.events.emit(PushEvent::BlobProgress {
                    digest: p.digest.clone(),
                    sent,
                    total: p.total,
                });
            }
        },
    );
    Ok(stream)
}

/// Which bytes of a remote blob a request body carries.
#[derive(Clone, Copy)]
pub(crate) struct RemoteRange<'a> {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) digest: &'a str,
    /// The whole blob's size.
    pub(crate) total: u64,
}

impl RemoteRange<'_> {
    /// Whether the range is the whole blob (then its digest is checked).
    pub(crate) fn whole(&self) -> bool {
        self.offset == 0 && self.len == self.total
    }
}

/// The body of a source registry's answer, checked on the way. A whole
/// blob is hashed: if its bytes do not match the digest (or the size is
/// wrong), the last chunk is withheld and the stream fails, so the target
/// never receives a complete body, and `slot` says why.
pub(super) fn checked(
    resp: reqwest::Response,
    range: RemoteRange<'_>,
    events: EventSink,
    slot: &SourceFault,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let RemoteRange {
        offset,
        len,
        digest,
        total,
    } = range;
    let whole = range.whole();
    let slot = slot.clone();
    let record = move |fault: Fault| -> std::io::Error {
        let why = match &fault {
            Fault::WrongBytes(w) | Fault::Transfer(w) => w.clone(),
        };
        slot.note(fault);
        std::io::Error::new(std::io::ErrorKind::InvalidData, why)
    };
    let expected = digest.to_string();
    let progress_digest = digest.to_string();
    let state = (
        resp.bytes_stream(),
        Sha256::new(),
        0u64,
        false,
        record,
        events,
    );
    futures_util::stream::unfold(
        state,
        move |(mut inner, mut hasher, mut seen, done, record, events)| {
            let expected = expected.clone();
            let progress_digest = progress_digest.clone();
            async move {
                if done {
                    return None;
                }
                let item = match inner.next().await {
                    Some(Ok(chunk)) => {
                        seen += chunk.len() as u64;
                        if seen > len {
                            Err(record(Fault::WrongBytes(format!("more than {len} bytes"))))
                        } else {
                            hasher.update(&chunk);
                            let finished = seen == len;
                            let actual = if whole && finished {
                                let d =
                                    format!("sha256:{}", hex::encode(hasher.clone().finalize()));
                                (d != expected).then_some(d)
                            } else {
                                None
                            };
                            match actual {
                                Some(d) => {
                                    Err(record(Fault::WrongBytes(format!("{d} ({seen} bytes)"))))
                                }
                                None => {
                                    events.emit(PushEvent::BlobProgress {
                                        digest: progress_digest,
                                        sent: offset + seen,
                                        total,
                                    });
                                    Ok(chunk)
                                }
                            }
                        }
                    }
                    Some(Err(e)) => Err(record(Fault::Transfer(format!(
                        "the download broke off after {seen} bytes: {}",
                        error_chain(&e)
                    )))),
                    None if seen < len => Err(record(Fault::WrongBytes(format!(
                        "only {seen} of {len} bytes"
                    )))),
                    None => return None,
                };
                let done = item.is_err();
                Some((item, (inner, hasher, seen, done, record, events)))
            }
        },
    )
}
