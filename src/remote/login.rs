//! `dockless login`: check credentials against a registry, then store
//! them as `docker login` does.

use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;

use super::auth::{basic_header, challenges, fetch_token, TokenRequest};
use super::challenge::Challenge;
use super::credentials::{store_credential, Credential};
use super::error::RegistryError;
use super::options::Options;
use super::origin;
use super::retry::RetryPolicy;
use super::transport::{error_from_response, Transport};

/// Verify `username`/`password` against `registry` and store them in the
/// docker config file the way `docker login` does.
pub async fn login(
    registry: &str,
    username: &str,
    password: &str,
    opts: &Options,
) -> Result<(), RegistryError> {
    let t = Transport::new(registry, opts)?;
    let cred = Credential::UserPass {
        username: username.to_string(),
        password: password.to_string(),
    };
    let url = t.url("/v2/")?;
    let resp = t
        .http()
        .get(url.clone())
        .send()
        .await
        .map_err(|e| t.map_send_error(e, t.host()))?;
    if resp.status() == StatusCode::UNAUTHORIZED {
        let chs = challenges(&resp);
        let bearer = chs.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } => Some((realm.clone(), service.clone())),
            _ => None,
        });
        if let Some((realm, service)) = bearer {
            let retry = RetryPolicy::new(opts);
            let request = TokenRequest {
                realm: &realm,
                service: service.as_deref(),
                scopes: &[],
                cred: Some(&cred),
            };
            fetch_token(&t, &retry, request).await?;
        } else if chs.iter().any(|c| matches!(c, Challenge::Basic { .. })) {
            origin::ensure_safe_for_secrets(t.secret_target(&url))?;
            let resp = t
                .http()
                .get(url)
                .header(AUTHORIZATION, basic_header(username, password))
                .send()
                .await
                .map_err(|e| t.map_send_error(e, t.host()))?;
            if !resp.status().is_success() {
                return Err(RegistryError::Unauthorized {
                    registry: t.host().to_string(),
                    message: format!("login rejected (HTTP {})", resp.status()),
                });
            }
        } else {
            return Err(RegistryError::Protocol {
                host: t.host().to_string(),
                reason: "registry asks for an authentication scheme dockless does not support"
                    .into(),
            });
        }
    } else if !resp.status().is_success() {
        return Err(error_from_response(t.host(), "ping /v2/", resp).await);
    }
    store_credential(registry, username, password).await
}
