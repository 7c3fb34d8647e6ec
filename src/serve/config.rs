//! The service's TOML config and its webhook secret.

use super::error::ServeError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One `[[repos]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub full_name: String,
    pub clone_url: Option<String>,
}

impl RepoConfig {
    pub fn url(&self) -> String {
        self.clone_url
            .clone()
            .unwrap_or_else(|| format!("https://github.com/{}.git", self.full_name))
    }
}

fn default_branch() -> String {
    "develop".into()
}
fn default_builds() -> usize {
    2
}
fn default_lease_secs() -> u64 {
    DEFAULT_LEASE_SECS
}

/// How long a claimed build's lease lasts without renewal.
pub const DEFAULT_LEASE_SECS: u64 = 30;
/// The environment variable that overrides `database_url`.
pub const DATABASE_URL_VAR: &str = "DOCKLESS_DATABASE_URL";

/// The TOML config, exactly the keys of the contract (unknown keys are errors).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub registry: String,
    #[serde(default)]
    pub insecure_registry: bool,
    pub ca_cert: Option<PathBuf>,
    pub state_dir: PathBuf,
    #[serde(default = "default_branch")]
    pub branch: String,
    #[serde(default = "default_builds")]
    pub max_concurrent_builds: usize,
    pub webhook_secret_file: Option<PathBuf>,
    /// Enables commit statuses.
    pub github_token: Option<String>,
    /// Defaults to <https://api.github.com> (GitHub Enterprise: `https://HOST/api/v3`).
    pub github_api_url: Option<String>,
    #[serde(default)]
    pub repos: Vec<RepoConfig>,
    /// The most one `ADD <url>` of a repository's Dockerfile may download,
    /// e.g. "256M" (default 1G).
    pub add_url_max_size: Option<String>,
    /// `postgres://user@host/db`: the queue in PostgreSQL, shared by
    /// replicas (`DOCKLESS_DATABASE_URL` overrides it); without it, SQLite
    /// under `state_dir`.
    pub database_url: Option<String>,
    /// A CA certificate (PEM) to trust for TLS to the database, beside the system's.
    pub database_ca_cert: Option<PathBuf>,
    /// Seconds a claimed build's lease lasts; renewed every third of it.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// This replica's name in /metrics, logs and `lease_owner` (default:
    /// the host name and the listen port).
    pub replica_name: Option<String>,
    /// Signs every pushed image and its attestations (cosign's formats); an
    /// encrypted cosign key takes its password from `COSIGN_PASSWORD`.
    pub sign_key_file: Option<PathBuf>,
    /// Kills a RUN step that runs longer, e.g. `"30m"`.
    #[serde(default, deserialize_with = "duration")]
    pub run_timeout: Option<std::time::Duration>,
    /// `RUN --mount=type=secret` sources, as `--secret` takes them
    /// (`"id=npmrc,src=/etc/dockless/npmrc"`, `"id=token,env=VAR"`);
    /// every listed repository's builds can read them.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// [`Config::secrets`] parsed by `load`, relative files from the
    /// config file's folder.
    #[serde(skip)]
    pub secret_sources: std::collections::BTreeMap<String, crate::build::SecretSource>,
    /// `REGISTRY/REPO[:TAG]`: the build cache every replica shares (see
    /// `cache::registry`); without a tag, one tag per image repository.
    pub cache_repo: Option<String>,
}

/// A humantime duration such as `"10m"` or `"1h 30m"`.
fn duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e} (e.g. \"30m\")")))
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("registry", &self.registry)
            .field("insecure_registry", &self.insecure_registry)
            .field("state_dir", &self.state_dir)
            .field("branch", &self.branch)
            .field("max_concurrent_builds", &self.max_concurrent_builds)
            .field(
                "github_token",
                &self.github_token.as_ref().map(|_| "<redacted>"),
            )
            .field("repos", &self.repos)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("lease_secs", &self.lease_secs)
            .field("run_timeout", &self.run_timeout)
            .field("cache_repo", &self.cache_repo)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the TOML; relative paths are taken from the config file's folder.
    pub fn load(path: &Path) -> Result<Config, ServeError> {
        let err = |message: String| ServeError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        // Absolute from the start: git and the workers run in other
        // folders, where a relative path would name something else.
        let absolute = std::path::absolute(path).map_err(|e| err(e.to_string()))?;
        let base = absolute.parent().unwrap_or(Path::new("/"));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.state_dir);
        if let Some(p) = cfg.ca_cert.as_mut() {
            fix(p);
        }
        if let Some(p) = cfg.webhook_secret_file.as_mut() {
            fix(p);
        }
        if let Some(p) = cfg.database_ca_cert.as_mut() {
            fix(p);
        }
        if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
            cfg.database_url = Some(url).filter(|u| !u.is_empty());
        }
        if let Some(url) = &cfg.database_url {
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return Err(err(format!(
                    "database_url (or {DATABASE_URL_VAR}) must start with postgres:// or postgresql://"
                )));
            }
        }
        if cfg.lease_secs < 3 {
            return Err(err(format!(
                "lease_secs = {} is too short: at least 3 (renewed every third of it)",
                cfg.lease_secs
            )));
        }
        if let Some(p) = cfg.sign_key_file.as_mut() {
            fix(p);
        }
        if cfg.max_concurrent_builds == 0 {
            return Err(err("max_concurrent_builds must be at least 1".into()));
        }
        if cfg.registry.is_empty() || cfg.registry.contains(['/', ' ']) {
            return Err(err(format!(
                "registry {:?} must be host[:port]",
                cfg.registry
            )));
        }
        if let Some(size) = &cfg.add_url_max_size {
            crate::cache::parse_size(size).map_err(|e| err(format!("add_url_max_size: {e}")))?;
        }
        if let Some(repo) = &cfg.cache_repo {
            crate::cache::registry::parse_repo("cache_repo", repo)
                .map_err(|e| err(e.to_string()))?;
        }
        if cfg.branch.is_empty() {
            return Err(err("branch is empty".into()));
        }
        for text in &cfg.secrets {
            let (id, mut source) = crate::build::SecretSource::parse(text)
                .map_err(|e| err(format!("secrets: {e}")))?;
            if let crate::build::SecretSource::File(p) = &mut source {
                fix(p);
            }
            cfg.secret_sources.insert(id, source);
        }
        for r in &cfg.repos {
            if !r.full_name.contains('/') {
                return Err(err(format!(
                    "repos: full_name {:?} must be owner/repo",
                    r.full_name
                )));
            }
        }
        Ok(cfg)
    }

    /// The `ADD <url>` size cap in bytes (checked by `load`).
    pub fn add_url_max_size(&self) -> u64 {
        self.add_url_max_size
            .as_deref()
            .and_then(|s| crate::cache::parse_size(s).ok())
            .unwrap_or(crate::build::DEFAULT_ADD_URL_MAX_SIZE)
    }

    /// `DOCKLESS_WEBHOOK_SECRET`, else the contents of `webhook_secret_file`.
    pub fn secret(&self) -> Result<Secret, ServeError> {
        let from_env = std::env::var("DOCKLESS_WEBHOOK_SECRET").ok();
        let value = match (from_env, &self.webhook_secret_file) {
            (Some(v), _) if !v.is_empty() => v,
            (_, Some(file)) => std::fs::read_to_string(file)
                .map_err(|source| ServeError::Io {
                    path: file.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            _ => String::new(),
        };
        if value.is_empty() {
            return Err(ServeError::NoSecret);
        }
        Ok(Secret(value.into_bytes()))
    }

    /// How long a claim holds without renewal.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_secs)
    }

    /// This replica's name: `replica_name`, else HOST:PORT of `listen`.
    pub fn replica(&self) -> String {
        if let Some(name) = self.replica_name.as_ref().filter(|n| !n.is_empty()) {
            return name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let port = self.listen.rsplit(':').next().unwrap_or_default();
        format!("{host}:{port}")
    }

    pub fn repo(&self, full_name: &str) -> Option<&RepoConfig> {
        self.repos
            .iter()
            .find(|r| r.full_name.eq_ignore_ascii_case(full_name))
    }
}

/// The webhook secret, kept out of Debug output.
#[derive(Clone)]
pub struct Secret(pub(super) Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("dockless.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn config_keys_and_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            r#"
listen = "127.0.0.1:8088"
registry = "127.0.0.1:5000"
insecure_registry = true
ca_cert = "certs/domain.crt"
state_dir = "state"
branch = "main"
max_concurrent_builds = 3
webhook_secret_file = "secret"
add_url_max_size = "256M"
secrets = ["id=npmrc,src=npmrc", "id=token,env=TOKEN"]
[[repos]]
full_name = "Owner/Repo"
clone_url = "file:///tmp/x"
[[repos]]
full_name = "owner/other"
"#,
        );
        let cfg = Config::load(&p).unwrap();
        assert_eq!(cfg.state_dir, d.path().join("state"));
        assert_eq!(
            cfg.ca_cert.as_deref(),
            Some(d.path().join("certs/domain.crt").as_path())
        );
        assert_eq!(cfg.max_concurrent_builds, 3);
        assert_eq!(cfg.add_url_max_size(), 256 << 20);
        use crate::build::SecretSource;
        assert_eq!(
            cfg.secret_sources["npmrc"],
            SecretSource::File(d.path().join("npmrc"))
        );
        assert_eq!(
            cfg.secret_sources["token"],
            SecretSource::Env("TOKEN".into())
        );
        assert_eq!(cfg.repo("owner/repo").unwrap().url(), "file:///tmp/x");
        assert_eq!(
            cfg.repo("owner/other").unwrap().url(),
            "https://github.com/owner/other.git"
        );
        assert!(cfg.repo("owner/none").is_none());
        std::fs::write(d.path().join("secret"), "s3cret\n").unwrap();
        // The env var wins when set; this test only checks the file path when it is not.
        if std::env::var_os("DOCKLESS_WEBHOOK_SECRET").is_none() {
            assert_eq!(cfg.secret().unwrap().0, b"s3cret");
        }
        assert!(!format!("{cfg:?}").contains("s3cret"));

        let minimal = write(
            d.path(),
            "listen = \"127.0.0.1:0\"\nregistry = \"r:5000\"\nstate_dir = \"/tmp/s\"\n",
        );
        let cfg = Config::load(&minimal).unwrap();
        assert_eq!(
            (cfg.branch.as_str(), cfg.max_concurrent_builds),
            ("develop", 2)
        );
        assert_eq!(cfg.add_url_max_size(), 1 << 30);
        if std::env::var_os("DOCKLESS_WEBHOOK_SECRET").is_none() {
            assert!(matches!(cfg.secret(), Err(ServeError::NoSecret)));
        }
        let typo = write(
            d.path(),
            "listen = \"x\"\nregistry = \"r\"\nstate_dir = \"s\"\nmax_builds = 2\n",
        );
        assert!(Config::load(&typo).is_err());
        let bad_size = write(
            d.path(),
            "listen = \"x\"\nregistry = \"r\"\nstate_dir = \"s\"\nadd_url_max_size = \"lots\"\n",
        );
        let e = Config::load(&bad_size).expect_err("refused").to_string();
        assert!(e.contains("add_url_max_size"), "{e}");
        let bad_secret = write(
            d.path(),
            "listen = \"x\"\nregistry = \"r\"\nstate_dir = \"s\"\nsecrets = [\"src=f\"]\n",
        );
        let e = Config::load(&bad_secret).expect_err("refused").to_string();
        assert!(
            e.contains("secrets: --secret \"src=f\": needs id=ID"),
            "{e}"
        );
    }

    #[test]
    fn database_url_and_leases() {
        let d = tempfile::tempdir().unwrap();
        let base = "listen = \"127.0.0.1:8088\"\nregistry = \"r\"\nstate_dir = \"s\"\n";
        // DOCKLESS_DATABASE_URL, when the environment sets it, wins over the file.
        let from_env = std::env::var_os(DATABASE_URL_VAR).is_some();
        let cfg = Config::load(&write(d.path(), base)).unwrap();
        assert_eq!(cfg.lease_secs, 30);
        if !from_env {
            assert!(cfg.database_url.is_none());
        }
        let pg = format!(
            "{base}database_url = \"postgres://dockless:pw@db/ci\"\nlease_secs = 5\nreplica_name = \"east-1\"\ndatabase_ca_cert = \"ca.pem\"\n"
        );
        let cfg = Config::load(&write(d.path(), &pg)).unwrap();
        assert_eq!(
            (cfg.lease(), cfg.replica().as_str()),
            (std::time::Duration::from_secs(5), "east-1")
        );
        assert_eq!(cfg.database_ca_cert, Some(d.path().join("ca.pem")));
        assert!(
            !format!("{cfg:?}").contains("pw@"),
            "the password stays out of logs"
        );
        if !from_env {
            let mysql = format!("{base}database_url = \"mysql://db/ci\"\n");
            let e = Config::load(&write(d.path(), &mysql))
                .expect_err("refused")
                .to_string();
            assert!(
                e.contains("database_url") && e.contains("postgres://"),
                "{e}"
            );
        }
        let short = format!("{base}lease_secs = 1\n");
        let e = Config::load(&write(d.path(), &short))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("lease_secs"), "{e}");
    }
}
