//! Errors of the remote-write output and how the pipeline should treat them.

use reqwest::StatusCode;

use crate::outputs::WriteError;

/// The most of a receiver's error body kept in a message: enough for Prometheus' "out of
/// bounds" or VictoriaMetrics' parse errors, bounded so a proxy's HTML page cannot bloat logs.
pub(crate) const MAX_ERROR_BODY: usize = 4096;

/// Why a remote-write request failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// The configuration cannot work: a URL that does not parse or is not http(s), a header
    /// that is not valid HTTP.
    #[error("invalid remote-write configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// Snappy refused the encoded request (only for bodies beyond its 4 GiB block limit).
    #[error("compressing the remote-write request")]
    Compress(#[source] snap::Error),
    /// No HTTP answer: connection refused or reset, DNS, TLS, timeout.
    #[error("sending to {url}")]
    Network {
        /// The endpoint.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The receiver answered with a status other than 2xx.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The start of the response body (the receiver's reason).
        body: String,
    },
}

impl RemoteWriteError {
    /// The short static category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::Compress(_) => "encode",
            Self::Network { .. } => "network",
            Self::Status { status, .. } => status_category(*status),
        }
    }

    /// True when the same request may succeed later: no answer at all, 5xx or 429. Any other
    /// answer means the receiver looked at the data and refused it, so resending cannot help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config { .. } | Self::Compress(_) => false,
            Self::Network { .. } => true,
            Self::Status { status, .. } => is_retryable_status(*status),
        }
    }
}

impl From<RemoteWriteError> for WriteError {
    fn from(error: RemoteWriteError) -> Self {
        let category = error.category();
        // The chain matters: reqwest's own message is only "error sending request".
        let message = error_chain(&error);
        if error.is_retryable() {
            WriteError::Retryable { category, message }
        } else {
            WriteError::Permanent { category, message }
        }
    }
}

/// 5xx and 429 are worth retrying; everything else that is not 2xx is not.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// The metric-label category of a non-2xx status.
pub(crate) fn status_category(status: StatusCode) -> &'static str {
    if status == StatusCode::TOO_MANY_REQUESTS {
        "http_429"
    } else if status.is_server_error() {
        "http_5xx"
    } else if status.is_client_error() {
        "http_4xx"
    } else {
        // 1xx and 3xx that reqwest did not follow: a misconfigured endpoint.
        "http_status"
    }
}

/// An error and all its sources, joined with ": ".
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Reads at most [`MAX_ERROR_BODY`] bytes of an error response, lossily as UTF-8. A body that
/// cannot be read leaves the status alone to explain the failure.
pub(crate) async fn read_error_body(response: reqwest::Response) -> String {
    let bytes = response.bytes().await.unwrap_or_default();
    truncate_utf8(&String::from_utf8_lossy(&bytes), MAX_ERROR_BODY)
}

/// `text` cut to at most `max` bytes on a character boundary, trimmed, marked when cut.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_like_the_remote_write_spec_says() {
        for (code, retryable, category) in [
            (500, true, "http_5xx"),
            (503, true, "http_5xx"),
            (429, true, "http_429"),
            (400, false, "http_4xx"),
            (404, false, "http_4xx"),
            (413, false, "http_4xx"),
            (302, false, "http_status"),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            let error = RemoteWriteError::Status { url: "u".into(), status, body: String::new() };
            assert_eq!(error.is_retryable(), retryable, "{code}");
            assert_eq!(error.category(), category, "{code}");
            let write_error = WriteError::from(error);
            assert_eq!(write_error.is_retryable(), retryable, "{code}");
            assert_eq!(write_error.category(), category, "{code}");
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_utf8("  short \n", 10), "short");
        assert_eq!(truncate_utf8("ééé", 3), "é…");
    }
}
