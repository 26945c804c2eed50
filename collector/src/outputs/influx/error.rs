//! Errors of the Influx output and how the pipeline should treat them.

use reqwest::StatusCode;
use serde::Deserialize;

use crate::outputs::WriteError;
use crate::outputs::remote_write::{error_chain, is_retryable_status, status_category};

/// Why an Influx write failed.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// The configuration cannot work (URL, token or header not valid HTTP).
    #[error("invalid influx configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// No HTTP answer: connection refused or reset, DNS, TLS, timeout.
    #[error("sending to {url}")]
    Network {
        /// The endpoint.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status other than 2xx. For a 400 with a partial write,
    /// InfluxDB stored the other points of the body; `message` names the refused ones.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The endpoint (without credentials).
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// What the server said, with the point counts when known.
        message: String,
    },
}

impl InfluxError {
    /// The short static category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::Network { .. } => "network",
            Self::Status { status, .. } => status_category(*status),
        }
    }

    /// True when the same request may succeed later: no answer, 5xx or 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config { .. } => false,
            Self::Network { .. } => true,
            Self::Status { status, .. } => is_retryable_status(*status),
        }
    }
}

impl From<InfluxError> for WriteError {
    fn from(error: InfluxError) -> Self {
        let category = error.category();
        let message = error_chain(&error);
        if error.is_retryable() {
            WriteError::Retryable { category, message }
        } else {
            WriteError::Permanent { category, message }
        }
    }
}

/// The JSON error body of InfluxDB: 1.x sends `{"error": "..."}`, 2.x `{"code": "...",
/// "message": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The server's reason from an error body: the JSON `error` or `message`, else the text.
pub fn parse_error_body(body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error: Some(reason), .. } | ErrorBody { message: Some(reason), .. }) => reason,
        _ => body.trim().to_owned(),
    }
}

/// The `dropped=N` count InfluxDB 1.x appends to a partial-write error.
pub fn dropped_points(reason: &str) -> Option<u64> {
    let start = reason.rfind("dropped=")? + "dropped=".len();
    let digits: String = reason[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The message for a non-2xx answer: the server's reason, prefixed with how many of the sent
/// points it refused when it says so. A 1.x "unable to parse '`<line>`'" names the line itself.
pub fn status_message(body: &str, sent_points: usize) -> String {
    let reason = parse_error_body(body);
    match dropped_points(&reason) {
        Some(dropped) => format!("{dropped} of {sent_points} points refused: {reason}"),
        None => format!("{sent_points} points sent: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2_error_bodies() {
        assert_eq!(parse_error_body(r#"{"error":"database not found: \"x\""}"#), "database not found: \"x\"");
        assert_eq!(parse_error_body(r#"{"code":"invalid","message":"unable to parse"}"#), "unable to parse");
        assert_eq!(parse_error_body("  <html>bad gateway</html>\n"), "<html>bad gateway</html>");
    }

    #[test]
    fn partial_writes_say_how_many_points_were_refused() {
        let body = r#"{"error":"partial write: points beyond retention policy dropped=2"}"#;
        assert_eq!(
            status_message(body, 10),
            "2 of 10 points refused: partial write: points beyond retention policy dropped=2"
        );
        let body = r#"{"error":"unable to parse 'm,k=v\\ x=1': invalid field format"}"#;
        assert_eq!(status_message(body, 3), "3 points sent: unable to parse 'm,k=v\\ x=1': invalid field format");
        assert_eq!(dropped_points("dropped=17"), Some(17));
        assert_eq!(dropped_points("no count"), None);
    }

    #[test]
    fn statuses_are_classified() {
        for (code, retryable) in [(400, false), (404, false), (401, false), (429, true), (500, true), (503, true)] {
            let status = StatusCode::from_u16(code).unwrap();
            let error = WriteError::from(InfluxError::Status { url: "u".into(), status, message: String::new() });
            assert_eq!(error.is_retryable(), retryable, "{code}");
        }
    }
}
