//! dockless: build OCI images from a Dockerfile without a daemon.

pub mod archive;
pub mod auth;
pub mod build;
pub mod cache;
pub mod context;
pub mod digest;
pub mod dockerfile;
pub mod image;
pub mod layer;
pub mod layout;
pub mod naming;
pub mod platform;
pub mod publish;
pub mod registry;
pub mod rootfs;
pub mod store;
