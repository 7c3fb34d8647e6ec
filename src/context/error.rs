//! What can go wrong reading a build context.

use std::io;
use std::path::{Path, PathBuf};

use super::untrusted::FileError;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{file}:{line}: invalid pattern {pattern:?}: {reason}")]
    InvalidPattern {
        file: String,
        line: usize,
        pattern: String,
        reason: String,
    },
    #[error("{file}: more than {max} patterns, the most that is used; fold them with wildcards")]
    TooManyPatterns { file: String, max: usize },
    #[error("COPY source {src:?} is outside the build context")]
    OutsideContext { src: String },
    #[error("COPY source {src:?}: no such file in the build context")]
    NotFound { src: String },
    #[error("COPY source {src:?}: no such file in the build context (excluded by .dockerignore)")]
    Excluded { src: String },
    #[error("COPY source {src:?}: invalid wildcard pattern {component:?}: {reason}")]
    InvalidSource {
        src: String,
        component: String,
        reason: String,
    },
    #[error("COPY source {src:?}: too many levels of symbolic links")]
    SymlinkLoop { src: String },
    #[error("COPY source {src:?}: {path} is a device, which a rootless build cannot copy")]
    Unsupported { src: String, path: PathBuf },
    #[error("build context {path:?} is not a directory")]
    ContextNotDir { path: PathBuf },
    #[error("{path:?} is not inside the build context {root:?}")]
    NotInContext { path: PathBuf, root: PathBuf },
    #[error("{0}")]
    IgnoreFile(FileError),
    #[error("{path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(super) fn io_err(path: &Path, source: io::Error) -> ContextError {
    ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}
