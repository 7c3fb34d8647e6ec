//! How the registry client behaves (which registries are plain HTTP,
//! extra CAs, timeouts, retries, chunks, transfers at once) and the progress
//! events a push reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Progress and outcome notifications during a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// Work on a blob begins.
    BlobStarted { digest: String, size: u64 },
    /// Bytes of the blob sent so far in the current attempt (restarts at 0 on retry).
    BlobProgress {
        digest: String,
        sent: u64,
        total: u64,
    },
    /// Already present in the target repository: nothing sent.
    BlobSkipped { digest: String },
    /// Mounted from another repository of the same registry.
    BlobMounted { digest: String, from: String },
    /// Uploaded; `from` names the registry repository it was streamed from.
    BlobUploaded {
        digest: String,
        from: Option<String>,
    },
    /// A new layer's upload session is open while the layer is still being
    /// written; `stream` numbers the layers streamed in this run.
    LayerUploadStarted { stream: u64 },
    /// Bytes `offset..offset + size` of streamed layer `stream` were taken
    /// by the registry; `complete` says whether the layer was complete when
    /// they were sent.
    LayerChunkSent {
        stream: u64,
        offset: u64,
        size: u64,
        complete: bool,
    },
    /// Streamed layer `stream` is committed in the target repository.
    LayerStreamed {
        stream: u64,
        digest: String,
        size: u64,
    },
    /// Manifest (or index) accepted under `reference`: the tag, or the
    /// digest for the per-platform manifests of an index, which are put by
    /// digest before it.
    ManifestPushed {
        digest: String,
        reference: String,
        /// `HOST/REPO`: with `reference`, the full reference.
        repository: String,
    },
}

type Callback = dyn Fn(&PushEvent) + Send + Sync;

/// Receives [`PushEvent`]s; cheap to clone. `EventSink::default()` discards them.
#[derive(Clone, Default)]
pub struct EventSink(Option<Arc<Callback>>);

impl EventSink {
    pub fn new(f: impl Fn(&PushEvent) + Send + Sync + 'static) -> Self {
        EventSink(Some(Arc::new(f)))
    }
    pub(super) fn emit(&self, e: PushEvent) {
        if let Some(f) = &self.0 {
            f(&e);
        }
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "EventSink(callback)"
        } else {
            "EventSink(none)"
        })
    }
}

/// Default PATCH chunk: several registries cap a chunk at 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// How to reach registries and how transfers behave: one set for pulls,
/// pushes, streaming between registries and `login`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Registries (`host[:port]`) reached over plain HTTP instead of HTTPS.
    pub insecure_registries: Vec<String>,
    /// Extra PEM CA files trusted in addition to the OS store.
    pub ca_certs: Vec<PathBuf>,
    /// Blobs uploaded at once (0 is treated as 1).
    pub concurrency: usize,
    /// Blobs downloaded at once, e.g. a base image's layers (0 is treated as 1).
    pub download_concurrency: usize,
    /// Progress of pushes.
    pub events: EventSink,
    /// PATCH chunk size when monolithic upload is refused (0 = default).
    pub chunk_size: u64,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest silence while waiting for bytes of a response, and longest
    /// time an upload may go without the registry taking any of its body; a
    /// stalled registry fails the request after this. A slow upload that
    /// keeps moving is never cut.
    pub read_timeout: Duration,
    /// Tries per idempotent step, the first included (0 is treated as 1).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles per retry up to
    /// `max_retry_delay`, then jittered between half and all of it.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// Layer blobs downloaded into a store; shared by every clone, so one
    /// run's pulls, build, SBOM and push add up to one count.
    pub layer_downloads: DownloadCount,
}

/// A count of layer blobs downloaded, shared by the clones of one [`Options`].
#[derive(Debug, Clone, Default)]
pub struct DownloadCount(Arc<std::sync::atomic::AtomicU64>);

impl DownloadCount {
    pub fn add_one(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Options {
    /// Whether `registry` is reached over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure_registries.iter().any(|r| r == registry)
    }

    /// These options with `registry` reached over plain HTTP.
    pub fn insecure(mut self, registry: &str) -> Options {
        if !self.is_insecure(registry) {
            self.insecure_registries.push(registry.to_string());
        }
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure_registries: Vec::new(),
            ca_certs: Vec::new(),
            concurrency: 3,
            download_concurrency: 4,
            events: EventSink::default(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            max_attempts: 5,
            retry_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(10),
            layer_downloads: DownloadCount::default(),
        }
    }
}
