//! `GET /builds/<id>/log`: the build's log file (`state_dir/logs/<id>.log`)
//! as plain text, followed while the build is queued or running, so
//! `curl -N` shows it as it grows, as `docker logs -f` would.

use super::app::App;
use super::jobs::Status;
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use hyper::body::Frame;
use std::convert::Infallible;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often a followed log is looked at again.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// The most one read sends at once.
const CHUNK: u64 = 64 << 10;

pub(super) fn path(app: &App, id: i64) -> PathBuf {
    app.cfg.state_dir.join("logs").join(format!("{id}.log"))
}

/// Where a followed log stands.
struct Follow {
    app: Arc<App>,
    id: i64,
    offset: u64,
    done: bool,
}

/// The log's bytes from the start, then what is appended, until the build
/// has finished (or the server stops) and everything written was sent.
pub(super) fn follow(
    app: Arc<App>,
    id: i64,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> {
    let start = Follow {
        app,
        id,
        offset: 0,
        done: false,
    };
    stream::unfold(start, |mut f| async move {
        loop {
            if let Some(bytes) = read_from(&path(&f.app, f.id), f.offset) {
                f.offset += bytes.len() as u64;
                return Some((Ok(Frame::data(Bytes::from(bytes))), f));
            }
            if f.done {
                return None;
            }
            // Finished before this look: one more read takes the last lines.
            f.done = f.app.stopping.load(Ordering::SeqCst) || finished(&f.app, f.id).await;
            if !f.done {
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
        }
    })
}

async fn finished(app: &App, id: i64) -> bool {
    let job = app.job_store.get(id).await;
    !matches!(job, Ok(Some(j)) if matches!(j.status, Status::Queued | Status::Running))
}

/// Up to [`CHUNK`] bytes of `path` from `offset`; None when there are none.
fn read_from(path: &std::path::Path, offset: u64) -> Option<Vec<u8>> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut bytes = Vec::new();
    file.take(CHUNK).read_to_end(&mut bytes).ok()?;
    (!bytes.is_empty()).then_some(bytes)
}
