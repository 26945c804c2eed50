//! What a remote-write output needs to know about its receiver.

use std::fmt;
use std::time::Duration;

/// The default time one request may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One remote-write receiver (Prometheus with `--web.enable-remote-write-receiver`,
/// VictoriaMetrics, Mimir, Thanos receive, …).
#[derive(Clone)]
pub struct RemoteWriteConfig {
    /// The full endpoint URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// Upper bound for one request; a timeout is a network error and so retryable.
    pub timeout: Duration,
    /// HTTP basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Extra headers for every request, e.g. `X-Scope-OrgID` for a multi-tenant receiver.
    /// The protocol headers cannot be overridden through this.
    pub headers: Vec<(String, String)>,
}

impl RemoteWriteConfig {
    /// A receiver at `url` with the default timeout and no authentication.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), timeout: DEFAULT_TIMEOUT, basic_auth: None, bearer_token: None, headers: Vec::new() }
    }
}

// Hand-written so credentials never reach a log line through `{:?}`.
impl fmt::Debug for RemoteWriteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteWriteConfig")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("basic_auth", &self.basic_auth)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<redacted>"))
            .field("headers", &self.headers.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .finish()
    }
}

/// HTTP basic authentication credentials.
#[derive(Clone)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = RemoteWriteConfig::new("http://x/api/v1/write");
        config.basic_auth = Some(BasicAuth { username: "u".into(), password: "hunter2".into() });
        config.bearer_token = Some("tok3n".into());
        config.headers.push(("X-Scope-OrgID".into(), "tenant-secret".into()));
        let text = format!("{config:?}");
        assert!(text.contains("X-Scope-OrgID"), "{text}");
        for secret in ["hunter2", "tok3n", "tenant-secret"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
