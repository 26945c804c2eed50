//! Target discovery for the Prometheus scrape: static targets plus file, HTTP and Kubernetes
//! service discovery. Providers yield target groups; one discovery task per input turns them, with the
//! input's target relabeling, into the gatherer's current target set, which the gatherer reads
//! at every tick. The task lives as long as the gatherer ([`DiscoveryTask`] aborts it on drop).

pub mod file;
pub mod http;
pub mod kubernetes;
pub mod target_group;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use metricshard_crds::PrometheusSource;

use super::scrape::{ScrapeTarget, relabel_targets};
use crate::relabel::RelabelConfig;
use crate::sample::Labels;
use file::FileDiscovery;
use http::HttpDiscovery;
use kubernetes::watch::KubernetesDiscovery;

/// How long after a file event discovery waits for more events before re-reading, so a burst
/// of writes (write + rename) costs one re-read without adding noticeable delay.
const WATCH_COALESCE: Duration = Duration::from_millis(50);

/// How long after a Kubernetes watch event discovery waits for more before recomputing the
/// targets, so a burst (a rollout, a relist delivering every object) costs one pass over the
/// stores; short enough that a new pod is scraped from its next tick.
const KUBERNETES_COALESCE: Duration = Duration::from_millis(200);

/// The targets to scrape now and the current discovery problems.
#[derive(Debug, Default)]
pub struct TargetSet {
    /// Targets after relabeling, deduplicated.
    pub targets: Arc<Vec<ScrapeTarget>>,
    /// Discovery problems (an unreadable file, a failing endpoint), each naming its source.
    pub problems: Vec<String>,
}

/// The target set shared between the discovery task (writer) and the gatherer (reader).
pub type SharedTargets = Arc<RwLock<Arc<TargetSet>>>;

/// Everything a discovery task needs to turn groups into targets.
pub struct DiscoveryConfig {
    /// The job name (`namespace/name`).
    pub job: String,
    /// The source (static targets, scheme, path, the SD settings).
    pub source: PrometheusSource,
    /// Validated target relabeling.
    pub relabel: Vec<RelabelConfig>,
    /// `spec.labels`.
    pub extra: Labels,
    /// The input's Kubernetes scope (client, namespace, placement) for `kubernetesSD`.
    pub kubernetes: kubernetes::InputScope,
}

impl DiscoveryConfig {
    /// The target set from the static targets and the providers' current groups.
    fn targets(&self, files: Option<&FileDiscovery>, http: Option<&HttpDiscovery>, kube: Option<&KubernetesDiscovery>) -> Vec<ScrapeTarget> {
        // Every Kubernetes target has labels of its own: a group of one.
        let kube_targets: Vec<(String, Labels)> = kube
            .map(|kube| kube.targets().into_iter().map(|t| (t.address, Labels::from_pairs(t.labels))).collect())
            .unwrap_or_default();
        let mut groups: Vec<(&[String], Labels)> = vec![(self.source.static_targets.as_slice(), Labels::default())];
        if let Some(files) = files {
            for (path, group) in files.groups() {
                let mut labels = Labels::from_pairs(group.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                labels.set(file::META_FILEPATH, path.display().to_string());
                groups.push((group.targets.as_slice(), labels));
            }
        }
        if let Some(http) = http {
            for group in http.groups() {
                let mut labels = Labels::from_pairs(group.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                labels.set(http::META_URL, http.url());
                groups.push((group.targets.as_slice(), labels));
            }
        }
        for (address, labels) in &kube_targets {
            groups.push((std::slice::from_ref(address), labels.clone()));
        }
        relabel_targets(&self.job, &self.source, &self.relabel, &self.extra, groups)
    }
}

/// The running discovery task of one input; aborted when dropped with its gatherer.
#[derive(Debug)]
pub struct DiscoveryTask {
    abort: tokio::task::AbortHandle,
}

impl Drop for DiscoveryTask {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// Publishes the static targets into `shared` and, when the source has file or HTTP discovery,
/// starts the task that keeps `shared` current. Must run inside a Tokio runtime when it starts
/// a task; returns `Err` with a reason otherwise.
pub fn start(config: DiscoveryConfig, client: reqwest::Client, shared: SharedTargets) -> Result<Option<DiscoveryTask>, String> {
    // A configuration the tenancy or placement rules forbid discovers nothing and says why in
    // the input's status at every gather, like any other discovery problem; the rest of the
    // input (static targets, other providers) keeps working.
    let (kube_plans, kube_refusal) = match kubernetes::plan(&config.source.kubernetes_sd, &config.kubernetes) {
        Ok(plans) => (plans, None),
        Err(refusal) => (Vec::new(), Some(refusal.to_string())),
    };
    publish(&shared, config.targets(None, None, None), kube_refusal.iter().cloned().collect());
    if config.source.file_sd.is_none() && config.source.http_sd.is_none() && kube_plans.is_empty() {
        return Ok(None);
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| format!("discovery needs a Tokio runtime: {e}"))?;
    let handle = runtime.spawn(run(config, kube_plans, kube_refusal, client, shared));
    Ok(Some(DiscoveryTask { abort: handle.abort_handle() }))
}

fn publish(shared: &SharedTargets, targets: Vec<ScrapeTarget>, problems: Vec<String>) {
    let set = Arc::new(TargetSet { targets: Arc::new(targets), problems });
    // A poisoned lock only means a reader panicked; the data is a whole Arc either way.
    let mut guard = shared.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    *guard = set;
}

async fn run(
    config: DiscoveryConfig,
    kube_plans: Vec<kubernetes::WatchPlan>,
    kube_refusal: Option<String>,
    client: reqwest::Client,
    shared: SharedTargets,
) {
    let mut files = config.source.file_sd.as_ref().map(|sd| FileDiscovery::new(&sd.files));
    let mut http = config.source.http_sd.as_ref().map(|sd| {
        let refresh = sd.refresh_interval.get();
        HttpDiscovery::new(sd.url.clone(), client.clone(), refresh.clamp(Duration::from_secs(1), Duration::from_secs(30)))
    });
    let file_refresh = config.source.file_sd.as_ref().map_or(Duration::from_secs(300), |sd| sd.refresh_interval.get());
    let http_refresh = config.source.http_sd.as_ref().map_or(Duration::from_secs(60), |sd| sd.refresh_interval.get());
    let mut file_tick = tokio::time::interval(file_refresh.max(Duration::from_millis(100)));
    let mut http_tick = tokio::time::interval(http_refresh.max(Duration::from_millis(100)));
    file_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    http_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Kept alive for as long as the task runs; dropping it stops the watch. When it cannot be
    // set up (a directory that does not exist yet), periodic re-reads still work, the problem is
    // reported, and every refresh tries again.
    let mut watcher = None;
    let mut watch_error = None;
    let try_watch = |files: &FileDiscovery, watcher: &mut Option<notify::RecommendedWatcher>, watch_error: &mut Option<String>| {
        match watch(&files.watched_dirs(), events_tx.clone()) {
            Ok(started) => {
                *watcher = Some(started);
                *watch_error = None;
            }
            Err(error) => {
                *watch_error = Some(format!("file SD: cannot watch files ({error}); re-reading every {file_refresh:?}"));
            }
        }
    };
    if let Some(files) = &files {
        try_watch(files, &mut watcher, &mut watch_error);
    }
    // Kubernetes watches live as long as this task (dropping `kube` stops them). Without a
    // client (local mode without a kubeconfig) the reason is reported; the input must be
    // re-applied once a kubeconfig exists.
    let (kube_tx, mut kube_events) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut kube = None;
    let mut kube_error = kube_refusal;
    if !kube_plans.is_empty() {
        match KubernetesDiscovery::start(&kube_plans, &config.kubernetes, kube_tx).await {
            Ok(started) => kube = Some(started),
            Err(error) => kube_error = Some(format!("kubernetesSD: {error}")),
        }
    }
    let mut last_problems: Option<Vec<String>> = None;
    let mut last_targets: Option<Vec<ScrapeTarget>> = None;
    loop {
        // Publish first, then wait: a Kubernetes start-up error is reported at once.
        let mut problems: Vec<String> = watch_error.iter().cloned().collect();
        problems.extend(files.iter().flat_map(FileDiscovery::errors));
        problems.extend(http.as_ref().and_then(HttpDiscovery::error));
        problems.extend(kube_error.iter().cloned());
        problems.extend(kube.iter().flat_map(KubernetesDiscovery::problems));
        let targets = config.targets(files.as_ref(), http.as_ref(), kube.as_ref());
        if last_targets.as_ref() != Some(&targets) || last_problems.as_ref() != Some(&problems) {
            for problem in &problems {
                tracing::warn!(job = %config.job, "discovery: {problem}");
            }
            publish(&shared, targets.clone(), problems.clone());
            last_targets = Some(targets);
            last_problems = Some(problems);
        }
        tokio::select! {
            _ = file_tick.tick(), if files.is_some() => {
                if let Some(files) = files.as_mut() {
                    if watcher.is_none() {
                        try_watch(files, &mut watcher, &mut watch_error);
                    }
                    files.refresh();
                }
            }
            _ = http_tick.tick(), if http.is_some() => {
                if let Some(http) = http.as_mut() { http.refresh().await; }
            }
            Some(()) = events.recv() => {
                tokio::time::sleep(WATCH_COALESCE).await;
                while events.try_recv().is_ok() {}
                if let Some(files) = files.as_mut() { files.refresh(); }
            }
            Some(()) = kube_events.recv(), if kube.is_some() => {
                tokio::time::sleep(KUBERNETES_COALESCE).await;
                while kube_events.try_recv().is_ok() {}
            }
        }
    }
}

fn watch(dirs: &[std::path::PathBuf], events: tokio::sync::mpsc::UnboundedSender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Any event (or watch error) triggers a full re-read; the re-read decides what changed.
        let _ = event;
        let _ = events.send(());
    })?;
    for dir in dirs {
        watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metricshard_crds::{FileSd, RelabelAction, RelabelRule, Scheme};

    fn scope() -> kubernetes::InputScope {
        kubernetes::KubernetesContext::default().scope("ns", metricshard_crds::PlacementMode::Sharded)
    }

    fn rule(action: RelabelAction) -> RelabelRule {
        RelabelRule { source_labels: vec![], separator: None, target_label: None, regex: None, modulus: None, replacement: None, action }
    }

    fn relabel(rules: &[RelabelRule]) -> Vec<RelabelConfig> {
        rules.iter().map(|r| serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap()).collect()
    }

    fn source(static_targets: &[&str], files: Vec<String>) -> PrometheusSource {
        PrometheusSource {
            static_targets: static_targets.iter().map(|t| (*t).to_owned()).collect(),
            file_sd: (!files.is_empty()).then(|| FileSd { files, refresh_interval: metricshard_crds::Duration::from_std(Duration::from_secs(300)) }),
            http_sd: None,
            kubernetes_sd: vec![],
            scheme: Scheme::Http,
            metrics_path: "/metrics".to_owned(),
            relabel_configs: vec![],
            metric_relabel_configs: vec![],
            ..serde_json::from_value(serde_json::json!({"staticTargets": ["unused:1"]})).unwrap()
        }
    }

    #[test]
    fn discovered_targets_get_group_labels_and_meta_filepath_for_relabeling() {
        let dir = tempfile::tempdir().unwrap();
        let prod = dir.path().join("prod.json");
        let dev = dir.path().join("dev.yaml");
        std::fs::write(&prod, r#"[{"targets": ["a:1", "b:2"], "labels": {"env": "prod", "__scheme__": "https"}}]"#).unwrap();
        std::fs::write(&dev, "- targets: ['c:3', 'a:1']\n  labels: {env: dev}\n").unwrap();
        let mut files = FileDiscovery::new(&[prod.display().to_string(), dev.display().to_string()]);
        files.refresh();

        let keep_prod = RelabelRule {
            source_labels: vec!["__meta_filepath".into()],
            regex: Some(".*/prod\\.json".into()),
            ..rule(RelabelAction::Keep)
        };
        let file_label = RelabelRule {
            source_labels: vec!["__meta_filepath".into()],
            regex: Some(".*/(.*)".into()),
            target_label: Some("sd_file".into()),
            ..rule(RelabelAction::Replace)
        };
        let config = DiscoveryConfig {
            job: "ns/web".into(),
            source: source(&["s:9"], vec![]),
            relabel: relabel(&[file_label.clone(), keep_prod]),
            extra: Labels::from_pairs([("team", "x")]),
            kubernetes: scope(),
        };
        let targets = config.targets(Some(&files), None, None);
        assert_eq!(targets.iter().map(|t| t.url.as_str()).collect::<Vec<_>>(), ["https://a:1/metrics", "https://b:2/metrics"]);
        assert_eq!(
            targets[0].labels,
            Labels::from_pairs([("env", "prod"), ("instance", "a:1"), ("job", "ns/web"), ("sd_file", "prod.json"), ("team", "x")])
        );

        // Without the filter: static targets first, every file's targets, no __meta_ label left.
        let config = DiscoveryConfig { relabel: relabel(&[file_label]), ..config };
        let targets = config.targets(Some(&files), None, None);
        let urls: Vec<&str> = targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["http://s:9/metrics", "http://c:3/metrics", "http://a:1/metrics", "https://a:1/metrics", "https://b:2/metrics"]);
        assert!(targets.iter().all(|t| t.labels.iter().all(|l| !l.name.starts_with("__"))));
    }

    #[test]
    fn duplicate_targets_are_scraped_once() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one.json");
        std::fs::write(&one, r#"[{"targets": ["a:1", "a:1"]}, {"targets": ["a:1"]}]"#).unwrap();
        let mut files = FileDiscovery::new(&[one.display().to_string()]);
        files.refresh();
        let config = DiscoveryConfig { job: "j".into(), source: source(&[], vec![]), relabel: vec![], extra: Labels::default(), kubernetes: scope() };
        assert_eq!(config.targets(Some(&files), None, None).len(), 1);
    }

    #[test]
    fn static_sources_need_no_task_and_discovery_needs_a_runtime() {
        let shared = SharedTargets::default();
        let config = DiscoveryConfig { job: "j".into(), source: source(&["a:1"], vec![]), relabel: vec![], extra: Labels::default(), kubernetes: scope() };
        let client = crate::build_http_client().unwrap();
        assert!(start(config, client.clone(), shared.clone()).unwrap().is_none());
        assert_eq!(shared.read().unwrap().targets.len(), 1);

        let config =
            DiscoveryConfig { job: "j".into(), source: source(&[], vec!["/x/*.json".into()]), relabel: vec![], extra: Labels::default(), kubernetes: scope() };
        assert!(start(config, client, shared).unwrap_err().contains("Tokio runtime"));
    }

    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "not within 5s: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_missing_directory_is_reported_then_read_once_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let later = dir.path().join("later");
        let mut source = source(&[], vec![format!("{}/*.json", later.display())]);
        if let Some(sd) = source.file_sd.as_mut() {
            sd.refresh_interval = metricshard_crds::Duration::from_std(Duration::from_millis(100));
        }
        let shared = SharedTargets::default();
        let config = DiscoveryConfig { job: "j".into(), source, relabel: vec![], extra: Labels::default(), kubernetes: scope() };
        let _task = start(config, crate::build_http_client().unwrap(), shared.clone()).unwrap().unwrap();
        let current = || shared.read().unwrap().clone();
        eventually("the watch error is reported", || current().problems.iter().any(|p| p.contains("cannot watch"))).await;
        std::fs::create_dir(&later).unwrap();
        std::fs::write(later.join("t.json"), r#"[{"targets": ["a:1"]}]"#).unwrap();
        eventually("the file is read and the watch set up", || current().targets.len() == 1 && current().problems.is_empty()).await;
        // Watched now: a change is seen although re-reads happen anyway; both paths converge.
        std::fs::write(later.join("t.json"), r#"[{"targets": ["a:1", "b:2"]}]"#).unwrap();
        eventually("the change is seen", || current().targets.len() == 2).await;
    }

    #[tokio::test]
    async fn the_task_stops_when_its_handle_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.json");
        std::fs::write(&file, r#"[{"targets": ["a:1"]}]"#).unwrap();
        let shared = SharedTargets::default();
        let config =
            DiscoveryConfig { job: "j".into(), source: source(&[], vec![file.display().to_string()]), relabel: vec![], extra: Labels::default(), kubernetes: scope() };
        let task = start(config, crate::build_http_client().unwrap(), shared.clone()).unwrap().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while shared.read().unwrap().targets.is_empty() {
            assert!(std::time::Instant::now() < deadline, "file not discovered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(task);
        // Only the task held the other reference (through `shared`): once aborted, it is freed.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&shared) > 1 {
            assert!(std::time::Instant::now() < deadline, "the discovery task is still running");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
