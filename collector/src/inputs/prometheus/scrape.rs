//! Scraping targets: one HTTP GET per target per tick, content-negotiated, size-limited,
//! parsed, labelled the way Prometheus labels scraped series, plus the per-target synthetic
//! series `up`, `scrape_duration_seconds` and `scrape_samples_scraped`. The targets are static
//! or discovered (see [`super::discovery`]); every tick scrapes the current target set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use metricshard_crds::PrometheusSource;

use super::client::{ClientError, ScrapeClient};
use super::discovery::{self, DiscoveryConfig, DiscoveryTask, SharedTargets};
use super::honor;
use super::limits::{LimitError, ScrapeLimits};
use super::parser::{self, ACCEPT_HEADER, ParsedSample};
use crate::engine::{GatherError, Gathered, Gatherer, TaskKey};
use crate::secrets::SecretResolver;
use crate::relabel::{self, RelabelConfig};
use crate::sample::{Labels, Sample};
use crate::schedule::Tick;


/// One scrape target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScrapeTarget {
    /// The full URL scraped.
    pub url: String,
    /// The labels every sample of the target carries (`job`, `instance`, relabeling results,
    /// `spec.labels`), none starting with `__`.
    pub labels: Labels,
}

/// Why a Prometheus source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeConfigError {
    /// A relabeling step is invalid.
    #[error("spec.source.prometheus.{field}[{index}]: {message}")]
    Relabel {
        /// `relabelConfigs` or `metricRelabelConfigs`.
        field: &'static str,
        /// Position of the step.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// Discovery could not be started.
    #[error("spec.source.prometheus: {0}")]
    Discovery(String),
    /// A limit is invalid.
    #[error(transparent)]
    Limits(#[from] LimitError),
}

/// Scrapes the current target set at every tick.
pub struct PrometheusGatherer {
    /// The client and credentials, or why they could not be built (a missing Secret): then
    /// every gather fails with that reason and nothing is scraped or sent.
    client: Result<ScrapeClient, ClientError>,
    limits: ScrapeLimits,
    honor_labels: bool,
    honor_timestamps: bool,
    targets: SharedTargets,
    metric_relabel: Vec<RelabelConfig>,
    request_timeout: Duration,
    // Aborts the discovery task when the gatherer (the input's task) goes away.
    _discovery: Option<DiscoveryTask>,
    // Only the task's own loop gathers, one tick at a time: the lock is never contended.
    staleness: std::sync::Mutex<super::staleness::StalenessTracker>,
}

/// Converts the API's relabeling steps into validated ones.
fn relabel_configs(field: &'static str, rules: &[metricshard_crds::RelabelRule]) -> Result<Vec<RelabelConfig>, ScrapeConfigError> {
    relabel::configs_from_rules(rules).map_err(|(index, message)| ScrapeConfigError::Relabel { field, index, message })
}

/// The targets of target groups (addresses with the group's labels) after target relabeling,
/// as Prometheus derives them: a target starts with its group's labels and `__address__`, then
/// `job`, `__scheme__` and `__metrics_path__` unless the group set them; dropped targets
/// disappear; `instance` defaults to `__address__`; `__`-labels are removed; duplicates (same
/// URL and labels) are scraped once.
pub fn relabel_targets<'a>(
    job: &str,
    source: &PrometheusSource,
    configs: &[RelabelConfig],
    extra: &Labels,
    groups: impl IntoIterator<Item = (&'a [String], Labels)>,
) -> Vec<ScrapeTarget> {
    let mut seen = std::collections::HashSet::new();
    groups
        .into_iter()
        .flat_map(|(addresses, group_labels)| addresses.iter().map(move |address| (address, group_labels.clone())))
        .filter_map(|(address, mut start)| {
            start.set("__address__", address.clone());
            start.set_if_absent("job", job);
            start.set_if_absent("__scheme__", source.scheme.as_str());
            start.set_if_absent("__metrics_path__", source.metrics_path.as_str());
            let mut labels = relabel::relabel(&start, configs)?;
            let address = labels.get("__address__")?.to_owned();
            let url = format!(
                "{}://{address}{}",
                labels.get("__scheme__").unwrap_or("http"),
                labels.get("__metrics_path__").unwrap_or("/metrics")
            );
            labels.set_if_absent("instance", &address);
            labels.retain(|label| !label.name.starts_with("__"));
            for label in extra {
                labels.set(label.name.clone(), label.value.clone());
            }
            Some(ScrapeTarget { url, labels })
        })
        .filter(|target| seen.insert(target.clone()))
        .collect()
}

impl PrometheusGatherer {
    /// A gatherer for `source` of the input `key`, with `timeout` per gather; its Secrets are
    /// resolved through `secrets` (in the input's namespace).
    pub fn new(
        key: &TaskKey,
        source: &PrometheusSource,
        extra_labels: Labels,
        timeout: Duration,
        client: reqwest::Client,
        kubernetes: discovery::kubernetes::InputScope,
        secrets: &mut SecretResolver<'_>,
    ) -> Result<Self, ScrapeConfigError> {
        let limits = ScrapeLimits::from_source(source)?;
        let scrape_client = ScrapeClient::build(source, secrets, client.clone());
        let target_relabel = relabel_configs("relabelConfigs", &source.relabel_configs)?;
        let metric_relabel = relabel_configs("metricRelabelConfigs", &source.metric_relabel_configs)?;
        let targets = SharedTargets::default();
        let config = DiscoveryConfig {
            job: key.as_str().to_owned(),
            source: source.clone(),
            relabel: target_relabel,
            extra: extra_labels,
            kubernetes,
        };
        let discovery = discovery::start(config, client.clone(), targets.clone()).map_err(ScrapeConfigError::Discovery)?;
        // Leave the engine's own timeout room to record a per-target failure first.
        let request_timeout = timeout.saturating_sub(timeout / 20).max(Duration::from_millis(1));
        Ok(Self {
            client: scrape_client,
            limits,
            honor_labels: source.honor_labels,
            honor_timestamps: source.honor_timestamps.unwrap_or(true),
            targets,
            metric_relabel,
            request_timeout,
            _discovery: discovery,
            staleness: Default::default(),
        })
    }

    /// The targets scraped at the next tick.
    pub fn targets(&self) -> Arc<Vec<ScrapeTarget>> {
        self.current().targets.clone()
    }

    fn current(&self) -> Arc<discovery::TargetSet> {
        self.targets.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn scrape(&self, client: &ScrapeClient, target: &ScrapeTarget, tick: Tick) -> (Vec<Sample>, Option<(&'static str, String)>) {
        let started = Instant::now();
        let result = self.fetch_and_parse(client, target).await;
        let duration = started.elapsed().as_secs_f64();
        let timestamp_ms = tick.at_unix_millis();
        let (mut samples, problem, up, scraped) = match result {
            Ok(parsed) => {
                let scraped = parsed.len() as f64;
                let samples = parsed
                    .into_iter()
                    .filter_map(|p| relabel::relabel_sample(self.to_sample(target, p, timestamp_ms), &self.metric_relabel))
                    .collect::<Vec<_>>();
                // As Prometheus: a limit exceeded fails the whole scrape of the target, but
                // scrape_samples_scraped still says how many samples the body held.
                match self.limits.check(&samples) {
                    Ok(()) => (samples, None, 1.0, scraped),
                    Err(error) => (Vec::new(), Some(("limit", format!("{}: {error}", target.url))), 0.0, scraped),
                }
            }
            Err((category, message)) => (Vec::new(), Some((category, format!("{}: {message}", target.url))), 0.0, 0.0),
        };
        // As Prometheus: the synthetic series are not subject to metric relabeling, and
        // scrape_samples_scraped counts samples before it.
        for (name, value) in [("up", up), ("scrape_duration_seconds", duration), ("scrape_samples_scraped", scraped)] {
            samples.push(Sample::new(name, target.labels.clone(), value, timestamp_ms));
        }
        (samples, problem)
    }

    async fn fetch_and_parse(&self, client: &ScrapeClient, target: &ScrapeTarget) -> Result<Vec<ParsedSample>, (&'static str, String)> {
        let mut response = client
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
        // Chunks arrive decompressed (reqwest's gzip decoder), so the limit applies to the
        // uncompressed size, as Prometheus applies body_size_limit.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| ("http", describe_reqwest_error(&e)))? {
            if let Some(limit) = self.limits.body_size
                && (body.len() + chunk.len()) as u64 > limit
            {
                return Err(("limit", LimitError::BodySize { limit }.to_string()));
            }
            body.extend_from_slice(&chunk);
        }
        let text = std::str::from_utf8(&body).map_err(|e| ("parse", format!("body is not UTF-8: {e}")))?;
        parser::parse(text, parser::format_from_content_type(content_type.as_deref())).map_err(|e| ("parse", e.to_string()))
    }

    fn to_sample(&self, target: &ScrapeTarget, parsed: ParsedSample, tick_ms: i64) -> Sample {
        let timestamp_ms = honor::sample_timestamp(parsed.timestamp_ms, tick_ms, self.honor_timestamps);
        let labels = honor::attach_target_labels(&target.labels, parsed.labels, self.honor_labels);
        Sample::new(parsed.name, labels, parsed.value, timestamp_ms)
    }
}

fn describe_reqwest_error(error: &reqwest::Error) -> String {
    use std::error::Error;
    let mut message = error.to_string();
    let mut tls = false;
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        tls |= is_tls_error(cause);
        source = cause.source();
    }
    if tls { format!("TLS handshake failed: {message}") } else { message }
}

/// True for rustls' errors, which reach us directly or wrapped in (possibly nested) io::Errors
/// of the TLS stream.
fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    if error.is::<rustls::Error>() {
        return true;
    }
    let inner = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
    inner.is_some_and(|inner| is_tls_error(inner))
}

impl Gatherer for PrometheusGatherer {
    fn gather(&self, tick: Tick) -> BoxFuture<'_, Result<Gathered, GatherError>> {
        async move {
            let client = self.client.as_ref().map_err(|error| GatherError::Source { category: error.category(), message: error.to_string() })?;
            let current = self.current();
            let results = futures::future::join_all(current.targets.iter().map(|target| self.scrape(client, target, tick))).await;
            let mut gathered = Gathered::default();
            gathered.problems.extend(current.problems.iter().map(|problem| ("discovery", problem.clone())));
            let produced = current.targets.iter().zip(&results).map(|(target, (samples, _))| (target.url.as_str(), samples.as_slice()));
            let stale = match self.staleness.lock() {
                Ok(mut tracker) => tracker.observe(produced, tick.at_unix_millis()),
                Err(_) => Vec::new(),
            };
            for (samples, problem) in results {
                gathered.samples.extend(samples);
                gathered.problems.extend(problem.map(|(category, message)| (target_category(category), message)));
            }
            gathered.samples.extend(stale);
            Ok(gathered)
        }
        .boxed()
    }
}

fn target_category(category: &'static str) -> &'static str {
    match category {
        "parse" => "parse",
        "limit" => "limit",
        _ => "target",
    }
}

/// Builds the gatherer of a Prometheus source.
pub fn build(
    key: &TaskKey,
    source: &PrometheusSource,
    extra_labels: Labels,
    timeout: Duration,
    client: reqwest::Client,
    kubernetes: discovery::kubernetes::InputScope,
    secrets: &mut SecretResolver<'_>,
) -> Result<Arc<dyn Gatherer>, ScrapeConfigError> {
    Ok(Arc::new(PrometheusGatherer::new(key, source, extra_labels, timeout, client, kubernetes, secrets)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metricshard_crds::{RelabelAction, RelabelRule, Scheme};

    fn rule(action: RelabelAction) -> RelabelRule {
        RelabelRule {
            source_labels: vec![],
            separator: None,
            target_label: None,
            regex: None,
            modulus: None,
            replacement: None,
            action,
        }
    }

    fn source(targets: &[&str], relabel: Vec<RelabelRule>, metric_relabel: Vec<RelabelRule>) -> PrometheusSource {
        PrometheusSource {
            static_targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            file_sd: None,
            http_sd: None,
            kubernetes_sd: vec![],
            scheme: Scheme::Http,
            metrics_path: "/metrics".to_owned(),
            relabel_configs: relabel,
            metric_relabel_configs: metric_relabel,
            ..serde_json::from_value(serde_json::json!({"staticTargets": ["unused:1"]})).unwrap()
        }
    }

    fn build(source: &PrometheusSource) -> Result<PrometheusGatherer, ScrapeConfigError> {
        let client = crate::build_http_client().unwrap();
        let secrets = crate::secrets::SecretStore::default();
        PrometheusGatherer::new(&TaskKey::new("ns", "web"), source, Labels::from_pairs([("team", "a")]), Duration::from_secs(1), client, super::discovery::kubernetes::KubernetesContext::default().scope("ns", metricshard_crds::PlacementMode::Sharded), &mut secrets.resolver("ns"))
    }

    #[test]
    fn target_relabeling_filters_rewrites_and_cleans_up_like_prometheus() {
        let keep_9100 = RelabelRule {
            source_labels: vec!["__address__".into()],
            regex: Some(".*:9100".into()),
            ..rule(RelabelAction::Keep)
        };
        let path = RelabelRule {
            target_label: Some("__metrics_path__".into()),
            replacement: Some("/probe".into()),
            ..rule(RelabelAction::Replace)
        };
        let host = RelabelRule {
            source_labels: vec!["__address__".into()],
            regex: Some("(.*):\\d+".into()),
            target_label: Some("host".into()),
            ..rule(RelabelAction::Replace)
        };
        let gatherer = build(&source(&["a:9100", "b:8080", "c:9100"], vec![keep_9100, path, host], vec![])).unwrap();
        let targets = gatherer.targets();
        assert_eq!(targets.iter().map(|t| t.url.as_str()).collect::<Vec<_>>(), ["http://a:9100/probe", "http://c:9100/probe"]);
        assert_eq!(
            targets[0].labels,
            Labels::from_pairs([("host", "a"), ("instance", "a:9100"), ("job", "ns/web"), ("team", "a")])
        );
    }

    #[test]
    fn metric_relabeling_drops_matching_samples() {
        let drop_debug = RelabelRule {
            source_labels: vec!["__name__".into()],
            regex: Some("debug_.*".into()),
            ..rule(RelabelAction::Drop)
        };
        let gatherer = build(&source(&["a:1"], vec![], vec![drop_debug])).unwrap();
        let target = gatherer.targets()[0].clone();
        let parsed = parser::parse("debug_x 1\nkept 2\n", parser::ExpositionFormat::PrometheusText).unwrap();
        let kept: Vec<Sample> = parsed
            .into_iter()
            .filter_map(|p| relabel::relabel_sample(gatherer.to_sample(&target, p, 0), &gatherer.metric_relabel))
            .collect();
        assert_eq!(kept.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["kept"]);
    }

    #[test]
    fn invalid_relabeling_names_the_step() {
        let bad = RelabelRule { regex: Some("(unclosed".into()), target_label: Some("x".into()), ..rule(RelabelAction::Replace) };
        let error = build(&source(&["a:1"], vec![], vec![rule(RelabelAction::Keep), bad])).err().unwrap().to_string();
        assert!(error.starts_with("spec.source.prometheus.metricRelabelConfigs[1]: "), "{error}");
    }
}
