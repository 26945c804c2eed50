//! Scraping static targets: one HTTP GET per target per tick, content-negotiated, size-limited,
//! parsed, labelled the way Prometheus labels scraped series, plus the per-target synthetic
//! series `up`, `scrape_duration_seconds` and `scrape_samples_scraped`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use metricshard_crds::PrometheusSource;

use super::parser::{self, ACCEPT_HEADER, ParsedSample};
use crate::engine::{GatherError, Gathered, Gatherer, TaskKey};
use crate::sample::{Labels, Sample};
use crate::schedule::Tick;

/// Largest response body accepted from a target before the scrape fails (as Prometheus'
/// `body_size_limit`); not configurable yet.
pub const BODY_SIZE_LIMIT: usize = 64 << 20;

/// One scrape target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// The full URL scraped.
    pub url: String,
    /// The `instance` label of its series (`host:port`).
    pub instance: String,
}

/// Scrapes a fixed list of targets.
pub struct PrometheusGatherer {
    client: reqwest::Client,
    targets: Vec<ScrapeTarget>,
    job: String,
    extra_labels: Labels,
    request_timeout: Duration,
}

impl PrometheusGatherer {
    /// A gatherer for `source` of the input `key`, with `timeout` per gather.
    pub fn new(
        key: &TaskKey,
        source: &PrometheusSource,
        extra_labels: Labels,
        timeout: Duration,
        client: reqwest::Client,
    ) -> Self {
        let targets = source
            .static_targets
            .iter()
            .map(|target| ScrapeTarget {
                url: format!("{}://{target}{}", source.scheme.as_str(), source.metrics_path),
                instance: target.clone(),
            })
            .collect();
        // Leave the engine's own timeout room to record a per-target failure first.
        let request_timeout = timeout.saturating_sub(timeout / 20).max(Duration::from_millis(1));
        Self { client, targets, job: key.to_string(), extra_labels, request_timeout }
    }

    /// The targets scraped.
    pub fn targets(&self) -> &[ScrapeTarget] {
        &self.targets
    }

    async fn scrape(&self, target: &ScrapeTarget, tick: Tick) -> (Vec<Sample>, Option<(&'static str, String)>) {
        let started = Instant::now();
        let result = self.fetch_and_parse(target).await;
        let duration = started.elapsed().as_secs_f64();
        let timestamp_ms = tick.at_unix_millis();
        let (mut samples, problem, up) = match result {
            Ok(parsed) => (parsed.into_iter().map(|p| self.to_sample(target, p, timestamp_ms)).collect::<Vec<_>>(), None, 1.0),
            Err((category, message)) => (Vec::new(), Some((category, format!("{}: {message}", target.url))), 0.0),
        };
        let scraped = samples.len() as f64;
        for (name, value) in [("up", up), ("scrape_duration_seconds", duration), ("scrape_samples_scraped", scraped)] {
            samples.push(Sample::new(name, self.target_labels(target, Labels::default()), value, timestamp_ms));
        }
        (samples, problem)
    }

    async fn fetch_and_parse(&self, target: &ScrapeTarget) -> Result<Vec<ParsedSample>, (&'static str, String)> {
        let mut response = self
            .client
            .get(&target.url)
            .header(reqwest::header::ACCEPT, ACCEPT_HEADER)
            .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{:.3}", self.request_timeout.as_secs_f64()))
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| ("http", describe_reqwest_error(&e)))?;
        if !response.status().is_success() {
            return Err(("http", format!("server returned HTTP status {}", response.status())));
        }
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| ("http", describe_reqwest_error(&e)))? {
            if body.len() + chunk.len() > BODY_SIZE_LIMIT {
                return Err(("http", format!("body exceeds the limit of {BODY_SIZE_LIMIT} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let text = std::str::from_utf8(&body).map_err(|e| ("parse", format!("body is not UTF-8: {e}")))?;
        parser::parse(text, parser::format_from_content_type(content_type.as_deref())).map_err(|e| ("parse", e.to_string()))
    }

    /// Labels as Prometheus applies them with `honor_labels: false`: the target's `job` and
    /// `instance` win, and scraped labels of the same name are kept as `exported_<name>`. The
    /// input's extra labels are applied last and overwrite.
    fn target_labels(&self, target: &ScrapeTarget, mut labels: Labels) -> Labels {
        for (name, value) in [("job", self.job.as_str()), ("instance", target.instance.as_str())] {
            if let Some(scraped) = labels.remove(name) {
                labels.set(format!("exported_{name}"), scraped);
            }
            labels.set(name.to_owned(), value.to_owned());
        }
        for label in &self.extra_labels {
            labels.set(label.name.clone(), label.value.clone());
        }
        labels
    }

    fn to_sample(&self, target: &ScrapeTarget, parsed: ParsedSample, tick_ms: i64) -> Sample {
        // honor_timestamps: an exposed timestamp is kept, otherwise the tick time is used, which
        // is the same on every collector that runs this input.
        let timestamp_ms = parsed.timestamp_ms.unwrap_or(tick_ms);
        Sample::new(parsed.name, self.target_labels(target, parsed.labels), parsed.value, timestamp_ms)
    }
}

fn describe_reqwest_error(error: &reqwest::Error) -> String {
    use std::error::Error;
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl Gatherer for PrometheusGatherer {
    fn gather(&self, tick: Tick) -> BoxFuture<'_, Result<Gathered, GatherError>> {
        async move {
            let results = futures::future::join_all(self.targets.iter().map(|target| self.scrape(target, tick))).await;
            let mut gathered = Gathered::default();
            for (samples, problem) in results {
                gathered.samples.extend(samples);
                gathered.problems.extend(problem.map(|(category, message)| (target_category(category), message)));
            }
            Ok(gathered)
        }
        .boxed()
    }
}

fn target_category(category: &'static str) -> &'static str {
    match category {
        "parse" => "parse",
        _ => "target",
    }
}

/// Builds the gatherer of a Prometheus source.
pub fn build(key: &TaskKey, source: &PrometheusSource, extra_labels: Labels, timeout: Duration, client: reqwest::Client) -> Arc<dyn Gatherer> {
    Arc::new(PrometheusGatherer::new(key, source, extra_labels, timeout, client))
}
