//! Uploading a new layer while it is compressed: an upload session is
//! opened when the layer starts, each part of the blob file the writer has
//! finished goes out as a PATCH (OCI distribution's chunked upload), and
//! the digest closes the session once the layer is complete. A registry
//! that refuses chunks is remembered for the run and no further layer is
//! streamed to it; a stream that fails for any reason is simply dropped,
//! and the push that follows the build uploads that blob from the store
//! as it always did. The manifest is only put after every blob is in.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use url::Url;

use super::auth::Access;
use super::client::{Client, ReqBody};
use super::error::RegistryError;
use super::options::{Options, PushEvent};
use super::push::{Patched, Try};
use crate::layer::tap::{LayerFeed, LayerTap};
use crate::name::Reference;

/// Follows the new layers of a build and streams each to `target`'s
/// repository (see the module's comment). Made on a tokio runtime, whose
/// tasks carry the uploads.
pub struct LayerStreamer {
    shared: Arc<Shared>,
}

struct Shared {
    target: Reference,
    opts: Options,
    runtime: tokio::runtime::Handle,
    /// Opened at the first layer; None when it could not be.
    client: OnceCell<Option<Arc<Client>>>,
    /// The registry refused a chunk: no more streams this run.
    refused: AtomicBool,
    /// The registry took a chunk: streams need not wait on `probe`.
    chunks_work: AtomicBool,
    /// Held by a stream sending its first chunk while `chunks_work` is
    /// unknown, so a registry that refuses chunks is asked once per run.
    probe: tokio::sync::Mutex<()>,
    next_stream: AtomicU64,
    /// `--concurrency`: streams upload one per permit, as other blobs do.
    uploads: tokio::sync::Semaphore,
    tasks: Mutex<Vec<JoinHandle<Option<String>>>>,
}

impl LayerStreamer {
    /// A streamer to `target`, run on the current tokio runtime.
    pub fn new(target: &Reference, opts: &Options) -> LayerStreamer {
        LayerStreamer {
            shared: Arc::new(Shared {
                target: target.clone(),
                opts: opts.clone(),
                runtime: tokio::runtime::Handle::current(),
                client: OnceCell::new(),
                refused: AtomicBool::new(false),
                chunks_work: AtomicBool::new(false),
                probe: tokio::sync::Mutex::new(()),
                next_stream: AtomicU64::new(1),
                uploads: tokio::sync::Semaphore::new(opts.concurrency.max(1)),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Opens the client (trust roots, credentials, a ping) in the
    /// background, so the first layer's upload starts as soon as it has
    /// bytes instead of after that setup.
    pub fn warm_up(&self) {
        let shared = self.shared.clone();
        self.shared
            .runtime
            .spawn(async move { shared.client().await });
    }

    /// Waits for every stream to end; the digests of the blobs they
    /// committed to the target repository.
    pub async fn finish(&self) -> HashSet<String> {
        let tasks = match self.shared.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => Vec::new(),
        };
        let mut committed = HashSet::new();
        for task in tasks {
            if let Ok(Some(digest)) = task.await {
                committed.insert(digest);
            }
        }
        committed
    }
}

impl LayerTap for LayerStreamer {
    fn start(&self, file: std::fs::File) -> Option<Box<dyn LayerFeed>> {
        if self.shared.refused.load(Ordering::Relaxed) {
            return None;
        }
        let (tx, rx) = watch::channel(Progress::default());
        let shared = self.shared.clone();
        let id = shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let task = self
            .shared
            .runtime
            .spawn(async move { shared.stream(id, file, rx).await });
        if let Ok(mut tasks) = self.shared.tasks.lock() {
            tasks.push(task);
        }
        Some(Box::new(Feed(tx)))
    }
}

/// How far the writer has got.
#[derive(Clone, Default)]
struct Progress {
    written: u64,
    /// Digest and size, once the blob is complete.
    done: Option<(String, u64)>,
}

struct Feed(watch::Sender<Progress>);

impl LayerFeed for Feed {
    fn written(&self, bytes: u64) {
        self.0.send_modify(|p| p.written = bytes);
    }

    fn finished(&self, digest: &str, size: u64) {
        self.0.send_modify(|p| {
            p.written = size;
            p.done = Some((digest.to_string(), size));
        });
    }
}

/// Why a stream ended without committing its blob.
enum Stop {
    /// The layer failed, or the registry could not be reached: nothing
    /// to upload now.
    Abandoned,
    /// The registry refused a chunk: it is not asked again this run.
    Refused(RegistryError),
    /// Anything else: the blob goes up from the store after the build.
    Failed(String),
}

impl Shared {
    async fn client(&self) -> Option<Arc<Client>> {
        self.client
            .get_or_init(|| async {
                let access = Access::push(self.target.repository());
                let open = async {
                    let client = Client::open(self.target.registry(), &access, &self.opts).await?;
                    client.ping().await?;
                    Ok::<_, RegistryError>(Arc::new(client))
                };
                open.await
                    .map_err(|e| debug!("not streaming layers: {e}"))
                    .ok()
            })
            .await
            .clone()
    }

    /// Streams one blob; its digest once committed.
    async fn stream(
        &self,
        id: u64,
        file: std::fs::File,
        progress: watch::Receiver<Progress>,
    ) -> Option<String> {
        let _permit = self.uploads.acquire().await.ok()?;
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        match self.send(id, &file, progress).await {
            Ok(digest) => Some(digest),
            Err(Stop::Abandoned) => None,
            Err(Stop::Refused(e)) => {
                info!("the registry refuses chunked uploads ({e}); layers are uploaded whole after the build");
                None
            }
            Err(Stop::Failed(why)) => {
                warn!("streaming a layer failed ({why}); it is uploaded from the store after the build");
                None
            }
        }
    }

    async fn send(
        &self,
        stream: u64,
        file: &std::fs::File,
        progress: watch::Receiver<Progress>,
    ) -> Result<String, Stop> {
        // The push after the build reports an unreachable registry.
        let client = self.client().await.ok_or(Stop::Abandoned)?;
        let failed = |e: RegistryError| Stop::Failed(e.to_string());
        let mut session = client
            .start_upload(self.target.repository())
            .await
            .map_err(failed)?;
        client.events.emit(PushEvent::LayerUploadStarted { stream });
        let sent = self
            .fill(&client, stream, file, &mut session, progress)
            .await;
        if sent.is_err() {
            // Best effort: the registry would purge it some day anyway.
            let _ = client
                .send_once(reqwest::Method::DELETE, &session, &[], ReqBody::Empty)
                .await;
        }
        sent
    }

    /// Sends the blob into `session` as it grows, then closes it.
    async fn fill(
        &self,
        client: &Client,
        stream: u64,
        file: &std::fs::File,
        session: &mut Url,
        mut progress: watch::Receiver<Progress>,
    ) -> Result<String, Stop> {
        let failed = |e: RegistryError| Stop::Failed(e.to_string());
        let mut chunk = client.chunk_size.max(1);
        let mut sent = 0u64;
        loop {
            let Progress { written, done } = progress.borrow_and_update().clone();
            // Whole chunks while the layer grows (registries may want a
            // minimum), then the rest.
            while written - sent >= chunk || (done.is_some() && sent < written) {
                let len = chunk.min(written - sent);
                let body = ReqBody::Open {
                    file,
                    offset: sent,
                    len,
                };
                let _probing = match self.chunks_work.load(Ordering::Relaxed) {
                    true => None,
                    false => Some(self.probe.lock().await),
                };
                if self.refused.load(Ordering::Relaxed) {
                    return Err(Stop::Abandoned);
                }
                let answer = client.patch(session, sent, len, body).await;
                match client
                    .patched(session, answer, (sent, len), &mut chunk)
                    .await
                {
                    Ok(Patched::Next(next)) => {
                        self.chunks_work.store(true, Ordering::Relaxed);
                        *session = next
                    }
                    Ok(Patched::Smaller) => continue,
                    Ok(Patched::Stop(step)) => return Err(Stop::Failed(stopped(step))),
                    Err(e) if e.is_transient() => return Err(failed(e)),
                    Err(e) => {
                        // Before `_probing` is released: the next stream must see it.
                        self.refused.store(true, Ordering::Relaxed);
                        return Err(Stop::Refused(e));
                    }
                }
                client.events.emit(PushEvent::LayerChunkSent {
                    stream,
                    offset: sent,
                    size: len,
                    complete: done.is_some(),
                });
                sent += len;
            }
            if let Some((digest, size)) = done {
                if size != sent {
                    return Err(Stop::Failed(format!("sent {sent} of {size} bytes")));
                }
                return match client.finish_upload(session.clone(), &digest).await {
                    Ok(Try::Done) => {
                        client.events.emit(PushEvent::LayerStreamed {
                            stream,
                            digest: digest.clone(),
                            size,
                        });
                        Ok(digest)
                    }
                    Ok(step) => Err(Stop::Failed(stopped(step))),
                    Err(e) => Err(failed(e)),
                };
            }
            // An error only once the writer dropped its end with nothing
            // unread: the layer failed.
            if progress.changed().await.is_err() {
                return Err(Stop::Abandoned);
            }
        }
    }
}

fn stopped(step: Try) -> String {
    match step {
        Try::Again { error, .. } => error.to_string(),
        Try::Done | Try::UseChunks => "the upload stopped".into(),
    }
}
