//! What the server and the workers share.

use super::admission::{BodyBudget, Slots};
use super::config::{Config, Secret};
use super::ghstatus::StatusClient;
use super::jobs::JobStore;
use hyper::StatusCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the server and the workers share.
pub(super) struct App {
    pub(super) cfg: Config,
    pub(super) secret: Secret,
    /// From `sign_key_file`: signs what the service pushes.
    pub(super) sign_key: Option<crate::attest::sign::Signer256>,
    pub(super) job_store: Box<dyn JobStore>,
    /// This replica's name (see `Config::replica`).
    pub(super) replica: String,
    /// How long idle workers wait before looking for expired leases
    /// when no wake-up came.
    pub(super) idle_poll: Duration,
    /// Builds this replica lost to another after its lease expired, and
    /// builds it took over from another.
    pub(super) leases_lost: AtomicU64,
    pub(super) leases_taken_over: AtomicU64,
    /// Rung when a build is queued (here, or by another replica).
    pub(super) build_queued: Arc<tokio::sync::Notify>,
    /// Set on SIGTERM: workers take no new builds.
    pub(super) stopping: AtomicBool,
    pub(super) commit_statuses: Option<StatusClient>,
    /// One fetch at a time per repository cache.
    pub(super) fetch_locks:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(super) response_counts: [AtomicU64; RESPONSE_CODES.len()],
    pub(super) header_timeout: Duration,
    pub(super) body_timeout: Duration,
    /// Who holds the connection slots (see `admission`).
    pub(super) connection_slots: Arc<Slots>,
    /// The memory unverified bodies may take together.
    pub(super) body_budget: BodyBudget,
    /// A test seam: a pause before each image's build (see
    /// `worker::TEST_BUILD_DELAY_VAR`); `None` outside tests.
    pub(super) test_build_delay: Option<Duration>,
    /// Where fetches and builds run, at a lower CPU priority than the
    /// server (see `serve::build_runtime`).
    pub(super) builds: tokio::runtime::Handle,
}

pub(super) const RESPONSE_CODES: [u16; 12] =
    [200, 202, 400, 401, 403, 404, 405, 408, 413, 415, 500, 503];

impl App {
    pub(super) fn count_response(&self, code: StatusCode) {
        let c = code.as_u16();
        if let Some(i) = RESPONSE_CODES.iter().position(|&k| k == c) {
            self.response_counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}
