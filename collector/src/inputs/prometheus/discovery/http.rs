//! HTTP service discovery, as Prometheus' `http_sd_configs`: a GET that must answer 200 with
//! `Content-Type: application/json` and a JSON list of target groups. Any other answer is an
//! error that keeps the groups of the last good answer.

use std::time::Duration;

use super::target_group::{self, DocumentFormat, TargetGroup};

/// The label naming the endpoint a target was discovered from, as Prometheus names it.
pub const META_URL: &str = "__meta_url";

/// The state of HTTP discovery: the last good answer and the current error.
#[derive(Debug)]
pub struct HttpDiscovery {
    url: String,
    client: reqwest::Client,
    timeout: Duration,
    groups: Vec<TargetGroup>,
    error: Option<String>,
}

impl HttpDiscovery {
    /// Discovery from `url`; each request gives up after `timeout`.
    pub fn new(url: String, client: reqwest::Client, timeout: Duration) -> Self {
        Self { url, client, timeout, groups: Vec::new(), error: None }
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Queries the endpoint once. Returns whether the discovered groups changed.
    pub async fn refresh(&mut self) -> bool {
        match self.fetch().await {
            Ok(groups) => {
                self.error = None;
                let changed = groups != self.groups;
                self.groups = groups;
                changed
            }
            Err(message) => {
                self.error = Some(message);
                false
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<TargetGroup>, String> {
        let mut response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("server returned HTTP status {}", response.status()));
        }
        let content_type = response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !is_json(content_type) {
            return Err(format!("unsupported content type {content_type:?} (want application/json)"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > target_group::DOCUMENT_SIZE_LIMIT {
                return Err(format!("body exceeds the limit of {} bytes", target_group::DOCUMENT_SIZE_LIMIT));
            }
            body.extend_from_slice(&chunk);
        }
        let text = std::str::from_utf8(&body).map_err(|e| format!("body is not UTF-8: {e}"))?;
        target_group::parse(text, DocumentFormat::Json).map_err(|e| e.to_string())
    }

    /// The groups of the last good answer.
    pub fn groups(&self) -> &[TargetGroup] {
        &self.groups
    }

    /// The current problem, naming the endpoint and the reason.
    pub fn error(&self) -> Option<String> {
        self.error.as_ref().map(|message| format!("HTTP SD {}: {message}", self.url))
    }
}

fn is_json(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_application_json_is_accepted() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
