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
//! `credentials` and `auth` (one token per client, for the [`Access`] it
//! was opened with); `client` (one registry: authenticated, retried
//! requests) and `body` (streamed request bodies); then `pull` ([`Puller`]:
//! clients for the registries images are read from), `push` ([`Pusher`]:
//! the target's client and the clients blobs stream from), `publish` and
//! `login`. Every part takes its settings from one [`Options`].

mod auth;
mod body;
mod challenge;
mod client;
mod credentials;
mod error;
mod login;
mod options;
mod origin;
pub mod publish;
pub mod pull;
mod push;
mod retry;
mod stall;
mod stream;
pub(crate) mod tls;
mod transport;

pub use auth::Access;
pub use challenge::{parse_www_authenticate, Challenge};
pub use client::Client;
pub use credentials::{
    config_key, docker_config_path, load_credential, remove_credential, Credential,
};
pub(crate) use error::error_chain;
pub use error::RegistryError;
pub use login::login;
pub use options::{DownloadCount, EventSink, Options, PushEvent, DEFAULT_CHUNK_SIZE};
pub use pull::{BaseBlob, Puller};
pub use push::{file_digest, push, LocalBlob, PushImage, PushOutcome, Pusher, RemoteBlob};
pub use stream::LayerStreamer;
