//! The registry client: transport, authentication, credentials, pull,
//! push and publish.

pub(crate) mod auth;
mod origin;
pub mod publish;
pub mod pull;
pub(crate) mod registry;
mod stall;

pub use auth::{
    config_key, docker_config_path, load_credential, login, parse_www_authenticate, Challenge,
    Credential, LoginOptions, Scope,
};
pub use registry::{
    file_digest, push, EventSink, LocalBlob, PushEvent, PushImage, PushOptions, PushOutcome,
    Reference, RegistryError, RemoteBlob, DEFAULT_CHUNK_SIZE,
};
