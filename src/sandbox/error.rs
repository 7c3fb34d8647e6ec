//! What can go wrong in setting up or running a step.

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SandboxError {
    #[error("RUN needs user namespaces, which this machine does not allow: {cause}. Fix: {fix}")]
    NoUserNamespaces { cause: String, fix: String },
    #[error("the RUN sandbox could not be set up ({what}): {detail}")]
    Setup { what: String, detail: String },
    #[error("{what}: {detail}")]
    Exec { what: String, detail: String },
    #[error("the step's user {uid}:{gid} is not mapped into the sandbox: {fix}")]
    Unmapped { uid: u32, gid: u32, fix: String },
    #[error("the step is malformed: {0}")]
    Spec(String),
    #[error("the sandbox helper {helper} failed: {detail}")]
    Helper { helper: String, detail: String },
    /// A filesystem task (unpacking a layer, reading a step's changes).
    #[error("{what}: {detail}")]
    Disk { what: String, detail: String },
}
