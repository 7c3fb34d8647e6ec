//! The one TLS client configuration (the OS trust store plus extra CA
//! files), and TLS failures explained in words.

use std::path::PathBuf;
use std::sync::Arc;
use tracing::debug;

use super::error::{error_chain, RegistryError, Result};

/// Find a rustls error anywhere in the chain. `io::Error` hides its inner
/// error from `source()`, so look through `get_ref` explicitly.
pub(crate) fn tls_reason(e: &reqwest::Error) -> Option<String> {
    fn find<'a>(
        e: &'a (dyn std::error::Error + 'static),
        depth: usize,
    ) -> Option<&'a rustls::Error> {
        if depth > 16 {
            return None;
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| find(i, depth + 1)) {
                return Some(r);
            }
        }
        e.source().and_then(|s| find(s, depth + 1))
    }
    if let Some(r) = find(e, 0) {
        return Some(describe_rustls(r));
    }
    // Last resort if the error types are hidden: recognise rustls's wording.
    let chain = error_chain(e);
    chain.contains("invalid peer certificate").then_some(chain)
}

fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "server certificate is signed by an unknown authority \
                 (not in the OS trust store, any --ca-cert, nor certs.d/HOST:PORT/*.crt)"
                .into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "server certificate is not valid for this host name".into()
            }
            C::Expired | C::ExpiredContext { .. } => "server certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "server certificate is not valid yet".into()
            }
            C::Revoked => "server certificate is revoked".into(),
            C::BadSignature => "server certificate signature does not verify against the \
                 trusted CA of the same name (wrong --ca-cert?)"
                .into(),
            other => format!("invalid server certificate: {other:?}"),
        },
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "the server answered in plain HTTP, not TLS: for a plain-HTTP registry \
             pass --insecure (or --insecure-registry HOST)"
                .into()
        }
        other => other.to_string(),
    }
}

/// The folders podman and docker read a registry's CA files from, as
/// `DIR/HOST[:PORT]/*.crt`: `/etc/containers/certs.d`,
/// `/etc/docker/certs.d`, and the user's `$XDG_CONFIG_HOME/containers/certs.d`
/// (default `~/.config/containers/certs.d`).
fn certs_d_roots() -> Vec<PathBuf> {
    let mut roots = vec![
        PathBuf::from("/etc/containers/certs.d"),
        PathBuf::from("/etc/docker/certs.d"),
    ];
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(home) = config_home {
        roots.push(home.join("containers/certs.d"));
    }
    roots
}

/// `registry`'s CA files in the certs.d folders, sorted within each folder.
pub(crate) fn certs_d_files(registry: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for root in certs_d_roots() {
        let Ok(listing) = std::fs::read_dir(root.join(registry)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = listing
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

/// [`client_config`] for one registry: `ca_certs` and the registry's own
/// CA files from the certs.d folders.
pub(crate) fn registry_config(
    ca_certs: &[PathBuf],
    registry: &str,
) -> Result<rustls::ClientConfig> {
    let mut files = ca_certs.to_vec();
    files.extend(certs_d_files(registry));
    client_config(&files)
}

pub(crate) fn client_config(ca_certs: &[PathBuf]) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        debug!(
            errors = native.errors.len(),
            "some OS certificates could not be loaded"
        );
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "OS trust store loaded");
    for path in ca_certs {
        let shown = path.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| RegistryError::TlsConfig(format!("cannot read CA file {shown}: {e}")))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| {
                RegistryError::TlsConfig(format!("CA file {shown} is not valid PEM: {e}"))
            })?;
        if certs.is_empty() {
            return Err(RegistryError::TlsConfig(format!(
                "CA file {shown} contains no certificate"
            )));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                RegistryError::TlsConfig(format!(
                    "CA file {shown} holds an unusable certificate: {e}"
                ))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
