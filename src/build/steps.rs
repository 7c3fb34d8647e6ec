//! Build progress by step, as `docker buildx build --progress=plain`
//! numbers them: every FROM and instruction of the stages built.

use std::sync::Arc;
use std::time::Duration;

/// A step began or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEvent {
    Started {
        /// 1-based, out of `total`.
        step: usize,
        total: usize,
        /// The instruction's first line as written, e.g. `COPY app /app`.
        instruction: String,
    },
    Finished {
        step: usize,
        total: usize,
        instruction: String,
        /// Not computed: the COPY/ADD layer or RUN step came from the
        /// local or the registry cache.
        cached: bool,
        /// The compressed size of the layer written, when one was.
        layer_bytes: Option<u64>,
        duration: Duration,
    },
}

type Callback = dyn Fn(&StepEvent) + Send + Sync;

/// Receives [`StepEvent`]s; `StepSink::default()` discards them.
#[derive(Clone, Default)]
pub struct StepSink(Option<Arc<Callback>>);

impl StepSink {
    pub fn new(f: impl Fn(&StepEvent) + Send + Sync + 'static) -> Self {
        StepSink(Some(Arc::new(f)))
    }

    pub(super) fn emit(&self, e: StepEvent) {
        if let Some(f) = &self.0 {
            f(&e);
        }
    }
}

impl std::fmt::Debug for StepSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "StepSink(callback)"
        } else {
            "StepSink(none)"
        })
    }
}

/// How a step is shown: its first line, at most 100 characters.
pub(super) fn shown(original: &str) -> String {
    let line = without_url_secrets(original.lines().next().unwrap_or_default().trim());
    let line = line.as_str();
    match line.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// The line with every URL's user info, query and fragment left out (as
/// `ADD` errors show them): progress and logs never carry credentials.
fn without_url_secrets(line: &str) -> String {
    let mut out = line.to_string();
    for word in line.split_whitespace().filter(|w| w.contains("://")) {
        if let Ok(url) = url::Url::parse(word) {
            out = out.replace(word, &super::url::shown(&url));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn a_shown_step_carries_no_url_credentials() {
        assert_eq!(
            shown("ADD https://user:pw@h:8443/f.txt?token=s /u/\n"),
            "ADD https://h:8443/f.txt /u/"
        );
        assert_eq!(shown("COPY a b"), "COPY a b");
    }
}
