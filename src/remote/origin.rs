//! Where a registry may send dockless, and which requests may carry secrets.
//!
//! Credentials (a password, or a token got with one) go only to the origin
//! (scheme, host and port) that challenged for them, the registry's own, as
//! Docker and go-containerregistry's transport do: an upload `Location` or a
//! redirect to anywhere else gets no `Authorization` header. They travel in
//! clear text only on loopback or to the origin the user named insecure. A
//! registry reached over HTTPS may not move a request to plain HTTP.

use url::Url;

use super::error::RegistryError;

/// Most redirects followed for one request (reqwest's own default).
const MAX_REDIRECTS: usize = 10;

/// True for hosts whose traffic never leaves the machine.
pub(crate) fn is_loopback_host(host_port: &str) -> bool {
    let host = strip_port(host_port);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn strip_port(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        // [v6]:port
        return host_port
            .split_once(']')
            .map(|(h, _)| &h[1..])
            .unwrap_or(host_port);
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    }
}

/// `host[:port]` of a URL, for messages.
pub(crate) fn host_port(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

/// A URL as messages may show it: no user info and no query, which may
/// carry upload state or a signature.
pub(crate) fn shown(url: &Url) -> String {
    format!("{}://{}{}", url.scheme(), host_port(url), url.path())
}

/// Where a secret is about to be sent, and the registry it belongs to.
pub(crate) struct SecretTarget<'a> {
    pub(crate) url: &'a Url,
    /// The registry's name, for messages.
    pub(crate) registry: &'a str,
    /// The registry's own origin (`scheme://host:port`).
    pub(crate) registry_origin: &'a Url,
}

/// Refuses to send a secret in clear text, except on loopback or to the
/// registry's own origin when the user named it insecure (its origin is
/// then plain HTTP).
pub(crate) fn ensure_safe_for_secrets(to: SecretTarget<'_>) -> Result<(), RegistryError> {
    let named_insecure =
        to.registry_origin.scheme() == "http" && to.url.origin() == to.registry_origin.origin();
    let host = host_port(to.url);
    if to.url.scheme() == "https" || named_insecure || is_loopback_host(&host) {
        Ok(())
    } else {
        Err(RegistryError::InsecureCredentials {
            registry: to.registry.to_string(),
            host,
        })
    }
}

/// Checks a `Location` that `registry` answered to a request for `from`:
/// only http(s), and never down from HTTPS to plain HTTP.
pub(crate) fn check_location(registry: &str, from: &Url, to: &Url) -> Result<(), RegistryError> {
    if !matches!(to.scheme(), "http" | "https") {
        return Err(RegistryError::Protocol {
            host: registry.to_string(),
            reason: format!("the Location's scheme {:?} is not http(s)", to.scheme()),
        });
    }
    if from.scheme() == "https" && to.scheme() == "http" {
        return Err(RegistryError::Downgrade {
            registry: registry.to_string(),
            what: "an upload Location",
            location: shown(to),
        });
    }
    Ok(())
}

/// A redirect from HTTPS to plain HTTP, refused by [`redirect_policy`].
#[derive(Debug, thiserror::Error)]
#[error("a redirect from HTTPS to plain HTTP ({to})")]
pub(crate) struct DowngradeRedirect {
    pub(crate) to: String,
}

/// reqwest's redirect handling, less redirects from HTTPS to plain HTTP: a
/// tag or manifest fetched in clear could be swapped on the way. reqwest
/// itself drops `Authorization` on a redirect to another scheme, host or
/// port (`remove_sensitive_headers`), so credentials never follow one.
pub(crate) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt
                .previous()
                .last()
                .is_some_and(|from| from.scheme() == "https");
        if downgrade {
            let to = shown(attempt.url());
            attempt.error(DowngradeRedirect { to })
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// The refused downgrade behind a failed request, if that is why it failed.
pub(crate) fn refused_redirect(e: &reqwest::Error) -> Option<&DowngradeRedirect> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(d) = err.downcast_ref::<DowngradeRedirect>() {
            return Some(d);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("example.com:5000"));
        assert!(!is_loopback_host("10.0.0.1"));
    }

    fn safe(to: &str, registry_origin: &str) -> Result<(), RegistryError> {
        ensure_safe_for_secrets(SecretTarget {
            url: &url(to),
            registry: "r",
            registry_origin: &url(registry_origin),
        })
    }

    #[test]
    fn secrets_go_in_clear_only_on_loopback_or_to_a_registry_named_insecure() {
        assert!(safe("http://127.0.0.1:5000/v2/", "https://r.example/").is_ok());
        assert!(safe("https://r.example/v2/", "https://r.example/").is_ok());
        // Named insecure: its own origin only.
        assert!(safe("http://r.example:5000/v2/", "http://r.example:5000/").is_ok());
        for (to, registry) in [
            ("http://r.example/v2/", "https://r.example/"),
            ("http://other.example:5000/t", "http://r.example:5000/"),
            ("http://r.example:5001/v2/", "http://r.example:5000/"),
        ] {
            let e = safe(to, registry).unwrap_err();
            assert!(
                matches!(e, RegistryError::InsecureCredentials { .. }),
                "{to}: {e}"
            );
        }
    }

    #[test]
    fn locations_may_not_downgrade_or_leave_http() {
        let https = url("https://r.example/v2/a/blobs/uploads/");
        let http = url("http://r.example:5000/v2/a/blobs/uploads/");
        assert!(check_location("r", &https, &url("https://cdn.example/u?sig=1")).is_ok());
        assert!(check_location("r", &http, &url("http://r.example:5000/u")).is_ok());
        assert!(check_location("r", &http, &url("https://cdn.example/u")).is_ok());
        let e =
            check_location("r", &https, &url("http://evil.example:81/u/1?_state=S")).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RegistryError::Downgrade { .. }), "{msg}");
        assert!(msg.contains("http://evil.example:81/u/1"), "{msg}");
        assert!(!msg.contains("_state"), "{msg}");
        let e = check_location("r", &https, &url("file:///etc/passwd")).unwrap_err();
        assert!(matches!(e, RegistryError::Protocol { .. }), "{e}");
    }

    #[test]
    fn shown_drops_user_info_and_query() {
        assert_eq!(
            shown(&url("https://u:p@h.example:8443/a/b?sig=secret")),
            "https://h.example:8443/a/b"
        );
    }
}
