//! The registry client (OCI distribution, registry v2): transport,
//! authentication, credentials, pull, push and publish.
//!
//! Why not `oci-client` (0.18): its blob pushes take an in-memory buffer or a
//! one-shot stream, so there is no monolithic-then-chunked fallback from a
//! file; `mount_blob` asks for a token scoped to the target only (never `pull`
//! on the source repository) and treats the spec's 202 "mount refused, here is
//! an upload session" as an error; it cannot refuse Basic credentials over
//! plain HTTP; and TLS failures cannot be reported with the host and reason.
//! So this module speaks the protocol directly over reqwest + rustls.
//!
//! Layers, bottom up: `error`, `tls`, `origin` (where secrets may go),
//! `stall`, `retry` and `transport` (one host's HTTP clients); `challenge`,
//! `credentials` and `auth` (tokens per scope); `session` (authenticated
//! requests and streamed bodies); `push`, `pull`, `publish` and `login` on
//! top.

mod auth;
mod challenge;
mod credentials;
mod error;
mod login;
mod options;
mod origin;
pub mod publish;
pub mod pull;
mod push;
mod retry;
mod session;
mod stall;
mod target;
pub(crate) mod tls;
mod transport;

pub use auth::Scope;
pub use challenge::{parse_www_authenticate, Challenge};
pub use credentials::{config_key, docker_config_path, load_credential, Credential};
pub(crate) use error::error_chain;
pub use error::RegistryError;
pub use login::{login, LoginOptions};
pub use options::{EventSink, PushEvent, PushOptions, DEFAULT_CHUNK_SIZE};
pub use push::{file_digest, push, LocalBlob, PushImage, PushOutcome, RemoteBlob};
pub use target::Reference;
