//! The environment each subcommand reads, for its `--help` (README, "Environment").

/// The environment `build` and `push` read (README, "Environment").
pub const BUILD_ENV: &str = "Environment:
  DOCKLESS_CACHE_DIR       cache folder (default $XDG_CACHE_HOME/dockless, ~/.cache/dockless)
  DOCKLESS_REGISTRY        registry for push names without one
  DOCKLESS_CACHE_MAX_SIZE  cache cap after a build (default 10G)
  DOCKLESS_ADD_URL_MAX_SIZE  most one ADD <url> downloads (default 1G)
  DOCKLESS_LOG             log filter, e.g. info or debug (default warn)
  DOCKER_CONFIG            folder of config.json with registry credentials (default ~/.docker)
  SSL_CERT_FILE, SSL_CERT_DIR  CA bundle instead of the system's
  XDG_CONFIG_HOME          user certs.d: $XDG_CONFIG_HOME/containers/certs.d/HOST:PORT/*.crt
  SOURCE_DATE_EPOCH        timestamps in the image (default 0: 1970-01-01)
  NO_COLOR                 no colours in logs";

pub const CREDENTIALS_ENV: &str = "Environment:
  DOCKER_CONFIG            folder of config.json with registry credentials (default ~/.docker)
  SSL_CERT_FILE, SSL_CERT_DIR  CA bundle instead of the system's";

pub const SERVE_ENV: &str = "Environment:
  DOCKLESS_WEBHOOK_SECRET  the webhook secret (else webhook_secret_file)
  DOCKLESS_LOG             log filter (default info: one line per build state change)
  DOCKLESS_CACHE_MAX_SIZE  cache cap after each image (default 10G)
  DOCKLESS_REQUEUE_SECS, DOCKLESS_SHUTDOWN_GRACE_SECS, DOCKLESS_HEADER_TIMEOUT_SECS,
  DOCKLESS_BODY_TIMEOUT_SECS, DOCKLESS_BODY_BUDGET_BYTES  see README, \"dockless serve\"
  DOCKER_CONFIG, SSL_CERT_FILE, SOURCE_DATE_EPOCH, NO_COLOR  as for build";
