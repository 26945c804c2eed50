//! What an OpenTSDB output needs to know about its server.

use std::time::Duration;

use super::encoder::DEFAULT_FALLBACK_TAG;

/// The default time one request may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One OpenTSDB server (or anything speaking its HTTP `/api/put`, such as VictoriaMetrics'
/// `-opentsdbHTTPListenAddr`).
#[derive(Clone, Debug)]
pub struct OpenTsdbConfig {
    /// The server's base URL, e.g. `http://opentsdb:4242`; `/api/put` is appended to it.
    pub url: String,
    /// Upper bound for one request; a timeout is a network error and so retryable.
    pub timeout: Duration,
    /// The tag given to samples without labels, since OpenTSDB requires at least one.
    pub fallback_tag: (String, String),
}

impl OpenTsdbConfig {
    /// A server at `url` with the default timeout and fallback tag.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            fallback_tag: (DEFAULT_FALLBACK_TAG.0.to_owned(), DEFAULT_FALLBACK_TAG.1.to_owned()),
        }
    }
}
