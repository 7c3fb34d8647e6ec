//! Commit statuses on GitHub (`pending`, `success`, `failure`) for the
//! commit a build runs. Best effort: a failed post is logged, never fatal,
//! and the token never reaches a log line.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("GitHub API client: {0}")]
    Client(String),
    #[error("GitHub API: {0}")]
    Http(String),
}

/// The token, kept out of Debug output.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitState {
    Pending,
    Success,
    Failure,
}

impl CommitState {
    fn as_str(self) -> &'static str {
        match self {
            CommitState::Pending => "pending",
            CommitState::Success => "success",
            CommitState::Failure => "failure",
        }
    }
}

pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The `context` GitHub shows next to the status.
pub const STATUS_CONTEXT: &str = "dockless";

#[derive(Debug, Clone)]
pub struct StatusClient {
    http: reqwest::Client,
    base: String,
    token: Token,
}

impl StatusClient {
    pub fn new(base: &str, token: String) -> Result<StatusClient, StatusError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("dockless/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(
                crate::remote::tls::client_config(&[])
                    .map_err(|e| StatusError::Client(e.to_string()))?,
            )
            .build()
            .map_err(|e| StatusError::Client(e.to_string()))?;
        Ok(StatusClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: Token(token),
        })
    }

    /// `POST {base}/repos/{owner/repo}/statuses/{sha}`.
    pub async fn post(
        &self,
        repository: &str,
        sha: &str,
        state: CommitState,
        description: &str,
        target_url: Option<&str>,
    ) -> Result<(), StatusError> {
        let url = format!("{}/repos/{repository}/statuses/{sha}", self.base);
        // GitHub caps descriptions at 140 characters.
        let description: String = description.chars().take(140).collect();
        let mut body = serde_json::json!({
            "state": state.as_str(),
            "context": STATUS_CONTEXT,
            "description": description,
        });
        if let Some(t) = target_url {
            body["target_url"] = t.into();
        }
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token.0)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| StatusError::Http(e.without_url().to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(StatusError::Http(format!(
                "{} for {repository}@{sha}",
                resp.status()
            )))
        }
    }
}
