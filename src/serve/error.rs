//! What stops `dockless serve` from starting or running.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("no webhook secret: set DOCKLESS_WEBHOOK_SECRET or webhook_secret_file in the config")]
    NoSecret,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state_dir {0} is in use by another dockless serve")]
    Locked(PathBuf),
    #[error(transparent)]
    Jobs(#[from] super::jobs::JobError),
    #[error(transparent)]
    Status(#[from] super::ghstatus::StatusError),
    #[error("sign_key_file: {0}")]
    SignKey(#[from] crate::attest::sign::SignError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}
