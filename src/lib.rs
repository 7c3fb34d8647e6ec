//! dockless: build OCI images from a Dockerfile without a daemon.

pub mod archive;
pub mod auth;
pub mod build;
pub mod cache;
pub mod context;
pub mod digest;
pub mod dockerfile;
pub mod ghstatus;
pub mod gitfetch;
pub mod image;
pub mod imagespec;
pub mod jobs;
pub mod layer;
pub mod layout;
pub mod naming;
pub mod overlay;
pub mod platform;
pub mod publish;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod serve;
mod stall;
pub mod store;
pub mod webhook;
pub mod worker;
