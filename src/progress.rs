//! Progress on stderr, as `docker buildx build --progress` shows it: build
//! steps and a bar per uploaded blob on a terminal (`tty`), one line per
//! event in a log (`plain`), JSON lines for CI (`--json`), or nothing.
//! stdout stays reserved for the reference lines.

use dockless::build::steps::{StepEvent, StepSink};
use dockless::remote::{EventSink, PushEvent};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Mode {
    /// tty on a terminal, plain otherwise.
    Auto,
    Plain,
    Tty,
    Quiet,
    #[value(skip)]
    Json,
}

impl Mode {
    fn resolved(self) -> Mode {
        match self {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Tty,
            Mode::Auto => Mode::Plain,
            m => m,
        }
    }
}

#[derive(Clone)]
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
    /// Upload bars by blob digest, and the running step's spinner.
    bars: Arc<Mutex<HashMap<String, ProgressBar>>>,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn seconds(d: &Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn push_json(event: &PushEvent) -> Value {
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
        PushEvent::LayerUploadStarted { stream } => {
            json!({"event": "layer_upload_started", "stream": stream})
        }
        PushEvent::LayerChunkSent {
            stream,
            offset,
            size,
            complete,
        } => json!({
            "event": "layer_chunk_sent", "stream": stream, "offset": offset, "size": size,
            "layer_complete": complete,
        }),
        PushEvent::LayerStreamed {
            stream,
            digest,
            size,
        } => json!({"event": "layer_streamed", "stream": stream, "digest": digest, "size": size}),
        PushEvent::ManifestPushed {
            digest,
            reference,
            repository,
        } => {
            let full = match reference.starts_with("sha256:") {
                true => format!("{repository}@{reference}"),
                false => format!("{repository}:{reference}"),
            };
            json!({"event": "manifest_pushed", "digest": digest, "tag": reference, "reference": full})
        }
    }
}

fn step_json(event: &StepEvent) -> Value {
    match event {
        StepEvent::Started {
            step,
            total,
            instruction,
        } => {
            json!({"event": "step_started", "step": step, "total": total, "instruction": instruction})
        }
        StepEvent::Finished {
            step,
            total,
            instruction,
            cached,
            layer_bytes,
            duration,
        } => json!({
            "event": "step_finished", "step": step, "total": total, "instruction": instruction,
            "cached": cached, "layer_bytes": layer_bytes,
            "duration_ms": duration.as_millis() as u64,
        }),
    }
}

/// One JSON object per line, each with the time it happened, written
/// whole: stderr is unbuffered, and `Value`'s Display writes piece by piece.
fn emit_json(mut line: Value) {
    line["time"] = now().into();
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

/// A step as `buildx --progress=plain` writes it: `#N [i/total] TEXT`, then
/// `#N CACHED` or `#N DONE 0.12s` with the layer's size.
fn step_line(event: &StepEvent) -> String {
    match event {
        StepEvent::Started {
            step,
            total,
            instruction,
        } => format!("#{step} [{step}/{total}] {instruction}"),
        StepEvent::Finished {
            step, cached: true, ..
        } => format!("#{step} CACHED"),
        StepEvent::Finished {
            step,
            layer_bytes,
            duration,
            ..
        } => match layer_bytes {
            Some(b) => format!(
                "#{step} DONE {} (layer {})",
                seconds(duration),
                HumanBytes(*b)
            ),
            None => format!("#{step} DONE {}", seconds(duration)),
        },
    }
}

/// What a finished blob shows.
fn blob_outcome(event: &PushEvent) -> Option<(&str, String)> {
    match event {
        PushEvent::BlobSkipped { digest } => Some((digest, "already there".into())),
        PushEvent::BlobMounted { digest, from } => Some((digest, format!("mounted from {from}"))),
        PushEvent::BlobUploaded { digest, from } => Some((
            digest,
            match from {
                Some(from) => format!("streamed from {from}"),
                None => "pushed".into(),
            },
        )),
        _ => None,
    }
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let mode = mode.resolved();
        let target = match mode {
            Mode::Tty => ProgressDrawTarget::stderr(),
            _ => ProgressDrawTarget::hidden(),
        };
        Progress {
            mode,
            multi: MultiProgress::with_draw_target(target),
            bars: Arc::default(),
        }
    }

    /// Where the build reports its steps.
    pub fn steps(&self) -> StepSink {
        let this = self.clone();
        match self.mode {
            Mode::Quiet => StepSink::default(),
            Mode::Json => StepSink::new(|e| emit_json(step_json(e))),
            Mode::Plain | Mode::Auto => StepSink::new(|e| eprintln!("{}", step_line(e))),
            Mode::Tty => StepSink::new(move |e| this.draw_step(e)),
        }
    }

    /// Where a push reports its blobs and manifests.
    pub fn sink(&self) -> EventSink {
        let this = self.clone();
        match self.mode {
            Mode::Quiet => EventSink::default(),
            // Progress ticks are many; CI logs want the outcomes.
            Mode::Json => EventSink::new(|event| {
                if !matches!(event, PushEvent::BlobProgress { .. }) {
                    emit_json(push_json(event));
                }
            }),
            Mode::Plain | Mode::Auto => EventSink::new(|event| {
                if let Some(line) = plain_push_line(event) {
                    eprintln!("{line}");
                }
            }),
            Mode::Tty => EventSink::new(move |event| this.draw_push(event)),
        }
    }

    fn draw_step(&self, event: &StepEvent) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match event {
            StepEvent::Started { .. } => {
                let spinner = self.multi.add(ProgressBar::new_spinner());
                spinner.set_message(step_line(event));
                spinner.enable_steady_tick(Duration::from_millis(120));
                bars.insert("step".into(), spinner);
            }
            StepEvent::Finished { .. } => {
                if let Some(spinner) = bars.remove("step") {
                    spinner.finish_and_clear();
                    self.multi.remove(&spinner);
                }
                let _ = self.multi.println(step_line(event));
            }
        }
    }

    fn draw_push(&self, event: &PushEvent) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let style = ProgressStyle::with_template(
            "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        match event {
            PushEvent::BlobStarted { digest, size } => {
                let bar = ProgressBar::new(*size)
                    .with_style(style)
                    .with_prefix(short(digest).to_string());
                bars.insert(digest.clone(), self.multi.add(bar));
            }
            PushEvent::BlobProgress { digest, sent, .. } => {
                if let Some(bar) = bars.get(digest) {
                    bar.set_position(*sent);
                }
            }
            PushEvent::ManifestPushed { .. } => {
                let _ = self
                    .multi
                    .println(plain_push_line(event).unwrap_or_default());
            }
            _ => {
                if let Some((digest, message)) = blob_outcome(event) {
                    if let Some(bar) = bars.get(digest) {
                        bar.finish_with_message(message);
                    }
                }
            }
        }
    }

    /// What the build's caches did, as one `--json` event: CI can tell a
    /// rebuild that ran and compressed nothing.
    /// `layer_downloads`: layer blobs the run downloaded (build, SBOM and push).
    pub fn built(&self, c: &dockless::cache::layers::CacheStats, layer_downloads: u64) {
        if self.mode == Mode::Json {
            emit_json(json!({
                "event": "build_cache",
                "layers_written": c.layers_written, "layers_from_cache": c.layers_from_cache,
                "layers_from_registry": c.layers_from_registry, "steps_run": c.steps_run,
                "steps_from_cache": c.steps_from_cache, "steps_from_registry": c.steps_from_registry,
                "files_hashed": c.files_hashed, "layer_downloads": layer_downloads,
            }));
        }
    }

    pub fn finish(&self) {
        let _ = self.multi.clear();
    }
}

/// A push event as one log line (progress ticks and starts say nothing new).
fn plain_push_line(event: &PushEvent) -> Option<String> {
    if let Some((digest, message)) = blob_outcome(event) {
        return Some(format!("blob {}: {message}", short(digest)));
    }
    match event {
        PushEvent::ManifestPushed { .. } => {
            let v = push_json(event);
            Some(format!(
                "manifest pushed as {}",
                v["reference"].as_str().unwrap_or_default()
            ))
        }
        _ => None,
    }
}
