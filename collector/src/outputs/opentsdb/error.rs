//! Errors of the OpenTSDB output, and parsing of its `?details` answer.

use reqwest::StatusCode;
use serde::Deserialize;

use crate::outputs::WriteError;
use crate::outputs::remote_write::{error_chain, is_retryable_status, status_category};

/// How many refused points a message lists one by one.
const LISTED_ERRORS: usize = 10;

/// Why an OpenTSDB write failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenTsdbError {
    /// The configuration cannot work (URL).
    #[error("invalid opentsdb configuration: {reason}")]
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
    /// The server answered with a status other than 2xx. For a 400 with `details`, OpenTSDB
    /// stored the points that did not fail; `message` lists the ones that did.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The per-point errors, or the body when it has none.
        message: String,
    },
    /// A 2xx answer whose details still report failed points. OpenTSDB answers 400 then, so
    /// this is a proxy or a look-alike server; treated like the 400 it should have been.
    #[error("{url} answered {status} but {message}")]
    PartialSuccess {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The per-point errors.
        message: String,
    },
}

impl OpenTsdbError {
    /// The short static category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::Network { .. } => "network",
            Self::Status { status, .. } => status_category(*status),
            Self::PartialSuccess { .. } => "partial_write",
        }
    }

    /// True when the same request may succeed later: no answer, 5xx or 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config { .. } | Self::PartialSuccess { .. } => false,
            Self::Network { .. } => true,
            Self::Status { status, .. } => is_retryable_status(*status),
        }
    }
}

impl From<OpenTsdbError> for WriteError {
    fn from(error: OpenTsdbError) -> Self {
        let category = error.category();
        let message = error_chain(&error);
        if error.is_retryable() {
            WriteError::Retryable { category, message }
        } else {
            WriteError::Permanent { category, message }
        }
    }
}

/// The answer of `/api/put?details`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PutDetails {
    /// Points stored.
    #[serde(default)]
    pub success: u64,
    /// Points refused.
    #[serde(default)]
    pub failed: u64,
    /// One entry per refused point.
    #[serde(default)]
    pub errors: Vec<PointError>,
}

/// One refused point of a [`PutDetails`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PointError {
    /// The point as the server read it.
    #[serde(default)]
    pub datapoint: serde_json::Value,
    /// Why it was refused.
    #[serde(default)]
    pub error: String,
}

impl PutDetails {
    /// Parses a details body; `None` when the body is not one (an empty 204, an HTML page).
    pub fn parse(body: &str) -> Option<Self> {
        serde_json::from_str(body).ok()
    }

    /// "2 of 5 points failed (3 stored): m{host=a} @1700000000000: reason; …".
    pub fn message(&self) -> String {
        let mut message =
            format!("{} of {} points failed ({} stored)", self.failed, self.failed + self.success, self.success);
        for (index, error) in self.errors.iter().take(LISTED_ERRORS).enumerate() {
            message.push_str(if index == 0 { ": " } else { "; " });
            message.push_str(&describe_point(&error.datapoint));
            message.push_str(": ");
            message.push_str(&error.error);
        }
        if self.errors.len() > LISTED_ERRORS {
            message.push_str(&format!("; and {} more", self.errors.len() - LISTED_ERRORS));
        }
        message
    }
}

/// `metric{k=v,...} @timestamp` from a data point as OpenTSDB echoes it.
fn describe_point(point: &serde_json::Value) -> String {
    let text = |key: &str| match point.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "?".to_owned(),
    };
    let tags = match point.get("tags") {
        Some(serde_json::Value::Object(tags)) => tags
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    format!("{}{{{tags}}} @{}", text("metric"), text("timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example answer of OpenTSDB's /api/put documentation, with a second point.
    const DETAILS: &str = r#"{"errors":[{"datapoint":{"metric":"sys.cpu.nice","timestamp":1365465600,"value":"NaN","tags":{"host":"web01"}},"error":"Unable to parse value to a number"},{"datapoint":{"metric":"m","timestamp":1,"value":1,"tags":{}},"error":"Missing tags"}],"failed":2,"success":7}"#;

    #[test]
    fn details_name_each_refused_point() {
        let details = PutDetails::parse(DETAILS).unwrap();
        assert_eq!((details.success, details.failed, details.errors.len()), (7, 2, 2));
        assert_eq!(
            details.message(),
            "2 of 9 points failed (7 stored): sys.cpu.nice{host=web01} @1365465600: Unable to parse value to a number; m{} @1: Missing tags"
        );
    }

    #[test]
    fn long_error_lists_are_cut() {
        let errors: Vec<String> = (0..15)
            .map(|i| format!(r#"{{"datapoint":{{"metric":"m{i}","timestamp":{i},"tags":{{"a":"b"}}}},"error":"e"}}"#))
            .collect();
        let body = format!(r#"{{"success":0,"failed":15,"errors":[{}]}}"#, errors.join(","));
        let message = PutDetails::parse(&body).unwrap().message();
        assert!(message.contains("m9{a=b} @9: e") && !message.contains("m10{"), "{message}");
        assert!(message.ends_with("; and 5 more"), "{message}");
    }

    #[test]
    fn non_details_bodies_are_not_parsed() {
        assert_eq!(PutDetails::parse(""), None);
        assert_eq!(PutDetails::parse("<html>"), None);
    }

    #[test]
    fn classification() {
        let status = |code| StatusCode::from_u16(code).unwrap();
        let error = OpenTsdbError::Status { url: "u".into(), status: status(400), message: "x".into() };
        assert!(!WriteError::from(error).is_retryable());
        let error = OpenTsdbError::Status { url: "u".into(), status: status(503), message: "x".into() };
        assert!(WriteError::from(error).is_retryable());
        let error = OpenTsdbError::PartialSuccess { url: "u".into(), status: status(200), message: "x".into() };
        assert_eq!(WriteError::from(error).category(), "partial_write");
    }
}
