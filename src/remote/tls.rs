//! The one TLS client configuration (the OS trust store plus extra CA
//! files), and TLS failures explained in words.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
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

/// The TLS configuration for `ca_certs` and the OS trust store. The CA
/// files are read now, so a bad one is an error before any request; the
/// OS store only at the first TLS handshake (see [`LazyRoots`]).
pub(crate) fn client_config(ca_certs: &[PathBuf]) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = LazyRoots::new(ca_file_roots(ca_certs)?, provider.clone());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::TlsConfig(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(roots))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The certificates of the CA files, each file checked.
fn ca_file_roots(ca_certs: &[PathBuf]) -> Result<RootCertStore> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = RootCertStore::empty();
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
    Ok(roots)
}

/// Verifies server certificates with webpki against the CA files and the
/// OS trust store, the latter read at the first certificate to verify.
/// Reading it (a bundle and a folder of a few hundred PEM files, each
/// parsed) took most of a cached build's time against a plain-HTTP
/// registry, which never needs it, yet every client carries a TLS
/// configuration since a redirect may lead to https. Hand-written because
/// rustls and rustls-platform-verifier both load the roots up front.
#[derive(Debug)]
struct LazyRoots {
    extra: RootCertStore,
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<std::result::Result<Arc<WebPkiServerVerifier>, rustls::Error>>,
}

impl LazyRoots {
    fn new(extra: RootCertStore, provider: Arc<CryptoProvider>) -> LazyRoots {
        LazyRoots {
            extra,
            provider,
            verifier: OnceLock::new(),
        }
    }

    fn verifier(&self) -> std::result::Result<&WebPkiServerVerifier, rustls::Error> {
        let built = self.verifier.get_or_init(|| {
            let mut roots = self.extra.clone();
            let native = rustls_native_certs::load_native_certs();
            if !native.errors.is_empty() {
                debug!(
                    errors = native.errors.len(),
                    "some OS certificates could not be loaded"
                );
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            debug!(added, ignored, "OS trust store loaded");
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| match e {
                    // As a verifier with no roots answers every certificate.
                    VerifierBuilderError::NoRootAnchors => {
                        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                    }
                    other => rustls::Error::General(other.to_string()),
                })
        });
        built.as_deref().map_err(Clone::clone)
    }

    #[cfg(test)]
    fn is_loaded(&self) -> bool {
        self.verifier.get().is_some()
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    // The signatures need the provider's algorithms, not the roots.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handshake with no certificate to verify (a plain-HTTP registry's
    /// client never has one) does not read the OS trust store.
    #[test]
    fn the_os_trust_store_is_read_at_the_first_certificate() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = LazyRoots::new(RootCertStore::empty(), provider);
        assert!(!roots.supported_verify_schemes().is_empty());
        assert!(!roots.is_loaded());
        let junk = CertificateDer::from(b"not a certificate".to_vec());
        let name = ServerName::try_from("registry.example").unwrap();
        let verified = roots.verify_server_cert(&junk, &[], &name, &[], UnixTime::now());
        assert!(verified.is_err());
        assert!(roots.is_loaded());
    }
}
