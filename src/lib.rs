//! dockless: build OCI images from a Dockerfile without a daemon.

pub mod attest;
pub mod build;
pub mod cache;
pub mod context;
pub mod digest;
pub mod dockerfile;
mod files;
pub mod image;
pub mod layer;
pub mod layout;
pub mod name;
pub mod pipeline;
pub mod platform;
mod process;
pub mod remote;
pub mod rootfs;
pub mod sandbox;
pub mod serve;
pub mod store;
pub mod suggest;
