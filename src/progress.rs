//! Push progress on stderr: a bar per blob on a terminal, JSON lines for CI,
//! or nothing. stdout stays reserved for the one reference line.

use dockless::remote::{EventSink, PushEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Json,
    Quiet,
}

pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<String, ProgressBar>>>,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

fn json_line(event: &PushEvent) -> serde_json::Value {
    use serde_json::json;
    match event {
        PushEvent::BlobStarted { digest, size } => {
            json!({"event": "blob_started", "digest": digest, "size": size})
        }
        PushEvent::BlobProgress {
            digest,
            sent,
            total,
        } => {
            json!({"event": "blob_progress", "digest": digest, "sent": sent, "total": total})
        }
        PushEvent::BlobSkipped { digest } => json!({"event": "blob_skipped", "digest": digest}),
        PushEvent::BlobMounted { digest, from } => {
            json!({"event": "blob_mounted", "digest": digest, "from": from})
        }
        PushEvent::BlobUploaded { digest, from: None } => {
            json!({"event": "blob_uploaded", "digest": digest})
        }
        PushEvent::BlobUploaded {
            digest,
            from: Some(from),
        } => json!({"event": "blob_uploaded", "digest": digest, "streamed_from": from}),
        PushEvent::ManifestPushed { digest, reference } => {
            json!({"event": "manifest_pushed", "digest": digest, "tag": reference})
        }
    }
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        // indicatif hides its bars by itself when stderr is not a terminal.
        let target = match mode {
            Mode::Bars => ProgressDrawTarget::stderr(),
            _ => ProgressDrawTarget::hidden(),
        };
        Progress {
            mode,
            multi: MultiProgress::with_draw_target(target),
            bars: Arc::default(),
        }
    }

    pub fn sink(&self) -> EventSink {
        match self.mode {
            Mode::Quiet => EventSink::default(),
            Mode::Json => EventSink::new(|event| {
                // Progress ticks are many; CI logs want the outcomes.
                if matches!(event, PushEvent::BlobProgress { .. }) {
                    return;
                }
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{}", json_line(event));
            }),
            Mode::Bars => {
                let multi = self.multi.clone();
                let bars = self.bars.clone();
                EventSink::new(move |event| Self::draw(&multi, &bars, event))
            }
        }
    }

    fn draw(multi: &MultiProgress, bars: &Mutex<HashMap<String, ProgressBar>>, event: &PushEvent) {
        let Ok(mut bars) = bars.lock() else { return };
        let style = ProgressStyle::with_template("{prefix} {bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        match event {
            PushEvent::BlobStarted { digest, size } => {
                let bar = multi.add(
                    ProgressBar::new(*size)
                        .with_style(style)
                        .with_prefix(short(digest).to_string()),
                );
                bars.insert(digest.clone(), bar);
            }
            PushEvent::BlobProgress { digest, sent, .. } => {
                if let Some(bar) = bars.get(digest) {
                    bar.set_position(*sent);
                }
            }
            PushEvent::BlobSkipped { digest } => finish(&bars, digest, "already there"),
            PushEvent::BlobMounted { from, digest } => {
                finish(&bars, digest, &format!("mounted from {from}"))
            }
            PushEvent::BlobUploaded { digest, from } => match from {
                Some(from) => finish(&bars, digest, &format!("streamed from {from}")),
                None => finish(&bars, digest, "pushed"),
            },
            PushEvent::ManifestPushed { reference, .. } => {
                let _ = multi.println(format!("manifest pushed as {reference}"));
            }
        }
    }

    pub fn finish(&self) {
        let _ = self.multi.clear();
    }
}

fn finish(bars: &HashMap<String, ProgressBar>, digest: &str, message: &str) {
    if let Some(bar) = bars.get(digest) {
        bar.finish_with_message(message.to_string());
    }
}
