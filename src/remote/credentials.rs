//! Docker's credentials: `config.json` (auths, credHelpers, credsStore),
//! read for every session and written by `login`.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use tracing::{debug, warn};

use super::error::RegistryError;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    UserPass {
        username: String,
        password: String,
    },
    /// OAuth2 refresh token (`identitytoken` in config.json, or a helper's
    /// `<token>` user).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::UserPass { username, .. } => f
                .debug_struct("UserPass")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The key docker uses in config.json / credential helpers for a registry.
pub fn config_key(registry: &str) -> String {
    if registry == "docker.io"
        || registry == "index.docker.io"
        || registry == "registry-1.docker.io"
    {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// Look up credentials for `registry` in `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json` (auths, credHelpers, credsStore).
/// A missing file or missing entry means anonymous (`Ok(None)`).
pub async fn load_credential(registry: &str) -> Result<Option<Credential>, RegistryError> {
    let key = config_key(registry);
    let host = registry.to_string();
    // docker_credential is blocking (it may spawn a helper process).
    // The crate reports a missing file as unreadable; docker treats it as anonymous.
    let Some(config) = docker_config_path().filter(|p| p.is_file()) else {
        debug!(registry, "no docker config.json; anonymous");
        return Ok(None);
    };
    let res = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&config)
            .map_err(|_| docker_credential::CredentialRetrievalError::ConfigReadError)?;
        docker_credential::get_credential_from_reader(std::io::BufReader::new(file), &key)
    })
    .await
    .map_err(|_| RegistryError::Credentials {
        registry: host.clone(),
        reason: "credential lookup task failed".into(),
    })?;
    use docker_credential::{CredentialRetrievalError as E, DockerCredential as D};
    match res {
        Ok(D::UsernamePassword(username, password)) => {
            debug!(
                registry,
                "using username/password credentials from docker config"
            );
            Ok(Some(Credential::UserPass { username, password }))
        }
        Ok(D::IdentityToken(t)) => {
            debug!(registry, "using identity token from docker config");
            Ok(Some(Credential::IdentityToken(t)))
        }
        Err(E::ConfigNotFound) | Err(E::NoCredentialConfigured) => {
            debug!(registry, "no credentials configured; anonymous");
            Ok(None)
        }
        // Deliberately not using the helper's stdout/stderr: it may echo secrets.
        Err(e) => {
            let reason = match e {
                E::HelperFailure { helper, .. } => format!("credential helper {helper} failed"),
                E::HelperCommunicationError => {
                    "could not run the docker credential helper (is it on PATH?)".into()
                }
                E::MalformedHelperResponse => "credential helper returned malformed output".into(),
                E::CredentialDecodingError => {
                    "the `auth` entry in docker config is not valid base64 user:password".into()
                }
                E::CredentialMismatchError => {
                    "`auth` and username/password in docker config disagree".into()
                }
                E::ConfigReadError => "docker config.json is unreadable or not valid JSON".into(),
                E::ConfigNotFound | E::NoCredentialConfigured => "no credentials".into(),
            };
            Err(RegistryError::Credentials {
                registry: host,
                reason,
            })
        }
    }
}

/// Path of the docker config file.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker").join("config.json"))
}

pub(super) async fn store_credential(
    registry: &str,
    username: &str,
    password: &str,
) -> Result<(), RegistryError> {
    let path = docker_config_path().ok_or_else(|| RegistryError::Credentials {
        registry: registry.to_string(),
        reason: "neither DOCKER_CONFIG nor HOME is set".into(),
    })?;
    let key = config_key(registry);
    let registry_s = registry.to_string();
    let (username, password) = (username.to_string(), password.to_string());
    tokio::task::spawn_blocking(move || {
        write_config(&path, &key, &username, &password).map_err(|reason| {
            RegistryError::Credentials {
                registry: registry_s,
                reason,
            }
        })
    })
    .await
    .map_err(|_| RegistryError::Credentials {
        registry: registry.to_string(),
        reason: "config writer task failed".into(),
    })?
}

fn write_config(path: &Path, key: &str, username: &str, password: &str) -> Result<(), String> {
    let shown = path.display();
    let mut doc: serde_json::Value = match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => serde_json::json!({}),
        Ok(b) => {
            serde_json::from_slice(&b).map_err(|e| format!("{shown} is not valid JSON: {e}"))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| format!("{shown} is not a JSON object"))?;
    // A per-registry helper wins over the global store, as in docker.
    let helper = obj
        .get("credHelpers")
        .and_then(|h| h.get(key))
        .and_then(|v| v.as_str())
        .or_else(|| obj.get("credsStore").and_then(|v| v.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let entry = match &helper {
        Some(h) => {
            helper_store(h, key, username, password)?;
            // docker keeps an empty entry so `auths` lists the registry.
            serde_json::json!({})
        }
        None => serde_json::json!({ "auth": B64.encode(format!("{username}:{password}")) }),
    };
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    if let Some(a) = auths.as_object_mut() {
        a.insert(key.to_string(), entry);
    }
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| format!("serialising config: {e}"))?;
    crate::files::write_private(path, &bytes).map_err(|e| format!("cannot write {shown}: {e}"))
}

/// `docker logout`: removes `registry`'s entry from the docker config (and
/// asks its credential helper to erase the secret). Returns whether there
/// was one.
pub fn remove_credential(registry: &str) -> Result<bool, RegistryError> {
    let fail = |reason: String| RegistryError::Credentials {
        registry: registry.to_string(),
        reason,
    };
    let Some(path) = docker_config_path().filter(|p| p.is_file()) else {
        return Ok(false);
    };
    let shown = path.display();
    let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read {shown}: {e}")))?;
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| fail(format!("{shown} is not valid JSON: {e}")))?;
    let key = config_key(registry);
    let helper = doc
        .get("credHelpers")
        .and_then(|h| h.get(&key))
        .or_else(|| doc.get("credsStore"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let removed = doc
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .and_then(|a| a.remove(&key))
        .is_some();
    if let Some(h) = helper {
        helper_run(&h, "erase", key.as_bytes()).map_err(fail)?;
    }
    if removed {
        let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| fail(e.to_string()))?;
        crate::files::write_private(&path, &bytes)
            .map_err(|e| fail(format!("cannot write {shown}: {e}")))?;
    }
    Ok(removed)
}

/// `docker-credential-<name> store`, secret passed on stdin only.
fn helper_store(name: &str, key: &str, username: &str, password: &str) -> Result<(), String> {
    let payload = serde_json::json!({ "ServerURL": key, "Username": username, "Secret": password });
    helper_run(name, "store", payload.to_string().as_bytes())
}

/// `docker-credential-<name> <action>` with `input` on stdin.
fn helper_run(name: &str, action: &str, input: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| format!("writing to {prog}: {e}"))?;
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {prog}: {e}"))?;
    if !status.success() {
        // The helper's output is not shown: it could echo the secret.
        warn!(helper = %prog, %status, "credential helper {action} failed");
        return Err(format!("{prog} {action} failed ({status})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_debug_redacts() {
        let c = Credential::UserPass {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credential::IdentityToken("tok".into())).contains("tok"));
    }

    #[test]
    fn config_write_keeps_other_fields_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, r#"{"auths":{"other":{"auth":"eDp5"}},"psFormat":"x"}"#).unwrap();
        write_config(&p, "127.0.0.1:5000", "me", "pw").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["auths"]["other"]["auth"], "eDp5");
        assert_eq!(v["auths"]["127.0.0.1:5000"]["auth"], B64.encode("me:pw"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
