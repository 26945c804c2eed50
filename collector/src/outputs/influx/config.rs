//! What an Influx output needs to know about its server.

use std::fmt;
use std::time::Duration;

use super::line::Precision;

/// The default time one request may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One InfluxDB (or line-protocol compatible) server.
#[derive(Clone, Debug)]
pub struct InfluxConfig {
    /// The server's base URL, e.g. `http://influxdb:8086`; the API path is appended to it, so a
    /// reverse-proxy prefix (`http://gw/influx`) works.
    pub url: String,
    /// Which write API, and where in the server the points go.
    pub api: InfluxApi,
    /// Timestamp unit of the body.
    pub precision: Precision,
    /// Upper bound for one request; a timeout is a network error and so retryable.
    pub timeout: Duration,
}

impl InfluxConfig {
    /// A server at `url` using `api`, millisecond precision and the default timeout.
    pub fn new(url: impl Into<String>, api: InfluxApi) -> Self {
        Self { url: url.into(), api, precision: Precision::default(), timeout: DEFAULT_TIMEOUT }
    }
}

/// The write API of the server.
#[derive(Clone, Debug)]
pub enum InfluxApi {
    /// InfluxDB 1.x `/write?db=..&rp=..&precision=..` (also VictoriaMetrics' and Telegraf's
    /// Influx listeners).
    V1 {
        /// Database (`db`).
        database: String,
        /// Retention policy (`rp`); the database's default when absent.
        retention_policy: Option<String>,
        /// Sent as HTTP basic authentication, which 1.x accepts like its `u`/`p` parameters
        /// but which keeps the password out of URLs and access logs.
        credentials: Option<InfluxCredentials>,
    },
    /// InfluxDB 2.x `/api/v2/write?org=..&bucket=..&precision=..`.
    V2 {
        /// Organisation name or id (`org`).
        org: String,
        /// Bucket name (`bucket`).
        bucket: String,
        /// API token, sent as `Authorization: Token <token>`.
        token: InfluxToken,
    },
}

/// An InfluxDB 1.x user name and password.
#[derive(Clone)]
pub struct InfluxCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

// Hand-written so secrets never reach a log line through `{:?}`.
impl fmt::Debug for InfluxCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfluxCredentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// An InfluxDB 2.x API token.
#[derive(Clone)]
pub struct InfluxToken(pub String);

impl fmt::Debug for InfluxToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InfluxToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let v1 = InfluxApi::V1 {
            database: "db".into(),
            retention_policy: None,
            credentials: Some(InfluxCredentials { username: "u".into(), password: "hunter2".into() }),
        };
        let v2 = InfluxApi::V2 { org: "o".into(), bucket: "b".into(), token: InfluxToken("tok3n".into()) };
        let text = format!("{:?} {:?}", InfluxConfig::new("http://x", v1), InfluxConfig::new("http://x", v2));
        assert!(!text.contains("hunter2") && !text.contains("tok3n"), "{text}");
    }
}
