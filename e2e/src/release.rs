//! The chart installed with a real helm, its pods played by local processes, and what tests
//! need around them: a scrape target that records every request, and a reader of the
//! processes' `/metrics`.
//!
//! * [`ChartRelease`] installs `charts/metricshard` into a fresh namespace (as a release named
//!   like the namespace) with given `--set` values, upgrades and uninstalls it, and waits for
//!   the pods its controllers create.
//! * [`ChartPodProcess`] runs the program of one of those pods (operator or collector) as a
//!   [`PodStandIn`]: the pod's own container arguments, its ServiceAccount token bound to the
//!   Pod, so the chart's RBAC applies; only the listen address moves to a loopback port.
//! * [`MetricsEndpoint`] reads samples off a process's `/metrics` ([`sample_value`],
//!   [`samples`] parse the exposition text).
//! * [`ScrapeTarget`] is an HTTP server on 127.0.0.1 that answers every path with a small
//!   exposition and records when each path was requested; [`ScrapeCadence`] turns those
//!   instants into duplicate and missed-tick counts.
//! * [`prometheus_input`] and [`file_output`] build the objects that connect the two.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::binaries::{workspace_binary, workspace_root};
use crate::cluster::TestCluster;
use crate::kubectl::Kubectl;
use crate::namespace::TestNamespace;
use crate::pods::PodStandIn;
use crate::ports::free_port;
use crate::process::ManagedProcess;
use crate::wait::{Outcome, wait_for};

/// Label the operator writes on a sharded MetricInput: the pod name of the collector running it.
pub const COLLECTOR_LABEL: &str = "metricshard.io/collector";
/// Label telling the chart's components apart (`operator`, `collector`, `node-collector`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// How long waits for the chart's objects take at most.
const CHART_TIMEOUT: Duration = Duration::from_secs(60);

/// Values every test release gets before its own: the CRDs are installed once per test binary
/// by [`ensure_crds`] (several releases at once must not fight over them), and images that can
/// never be pulled, so that on a cluster with kubelets no real container competes with the
/// stand-in process for the pod's identity; text logs read better in failure reports.
const BASE_VALUES: &[&str] = &[
    "crds.install=false",
    "collector.image.repository=metricshard-e2e.invalid/collector",
    "operator.image.repository=metricshard-e2e.invalid/operator",
    "logFormat=text",
];

/// helm with the cluster's admin `KUBECONFIG` (a [`Kubectl`] runs any program that way).
pub fn helm(cluster: &TestCluster) -> Result<Kubectl> {
    let program = cluster
        .helm_binary()
        .context("no helm binary: run scripts/testbed/build-k8s.sh or put helm on PATH")?;
    Ok(Kubectl::new(program, cluster.kubeconfig_env()))
}

/// Installs the generated CRDs of `crds/yaml` (server-side apply) once per test binary and
/// waits until they are Established.
pub async fn ensure_crds(cluster: &TestCluster) -> Result<()> {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    let crds = workspace_root().join("crds/yaml");
    INSTALLED
        .get_or_try_init(|| async {
            cluster
                .kubectl()
                .args([
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=metricshard-e2e",
                    "-f",
                ])
                .arg(&crds)
                .run_ok()
                .await?;
            cluster
                .kubectl()
                .args(["wait", "--for=condition=Established", "--timeout=60s", "-f"])
                .arg(&crds)
                .run_ok()
                .await?;
            anyhow::Ok(())
        })
        .await?;
    Ok(())
}

/// The chart installed into a fresh namespace, as a release named like the namespace, so the
/// pods of concurrent releases never share names (and collectors never share a shard).
///
/// The chart's operator assigns every MetricInput of the cluster (docs/helm.md: one
/// installation per cluster), so tests whose releases run an operator must not overlap.
pub struct ChartRelease {
    cluster: &'static TestCluster,
    namespace: TestNamespace,
    values: Vec<String>,
}

impl ChartRelease {
    /// Creates the namespace `<prefix>-<random>` and installs the chart there with `values`
    /// (`key=value` as for `--set`; they come after, and so override, the test defaults).
    pub async fn install(
        cluster: &'static TestCluster,
        admin: &Client,
        prefix: &str,
        values: &[&str],
    ) -> Result<Self> {
        ensure_crds(cluster).await?;
        let namespace = TestNamespace::new(admin, prefix).await?;
        let release = Self {
            cluster,
            values: BASE_VALUES
                .iter()
                .chain(values)
                .map(|value| (*value).to_owned())
                .collect(),
            namespace,
        };
        release.helm_command("install").await?;
        Ok(release)
    }

    /// `helm upgrade` with the values given so far plus `values` (later ones win), which are
    /// kept for the next upgrade.
    pub async fn upgrade(&mut self, values: &[&str]) -> Result<()> {
        self.values
            .extend(values.iter().map(|value| (*value).to_owned()));
        self.helm_command("upgrade").await
    }

    async fn helm_command(&self, command: &str) -> Result<()> {
        let mut helm = helm(self.cluster)?
            .args([command, self.name()])
            .arg(workspace_root().join("charts/metricshard"))
            .args(["--namespace", self.namespace.name()]);
        for value in &self.values {
            helm = helm.args(["--set", value]);
        }
        helm.run_ok()
            .await
            .with_context(|| format!("helm {command} {}", self.name()))?;
        Ok(())
    }

    /// Uninstalls the release (the namespace goes with the test; the ClusterRoles would not).
    pub async fn uninstall(self) -> Result<()> {
        helm(self.cluster)?
            .args([
                "uninstall",
                self.name(),
                "--namespace",
                self.namespace.name(),
            ])
            .run_ok()
            .await?;
        Ok(())
    }

    /// The cluster the release is installed in.
    pub fn cluster(&self) -> &'static TestCluster {
        self.cluster
    }

    /// The release name, which is also its namespace's name.
    pub fn name(&self) -> &str {
        self.namespace.name()
    }

    /// The release namespace.
    pub fn namespace(&self) -> &TestNamespace {
        &self.namespace
    }

    /// Base name of the chart's objects (the chart's `metricshard.fullname`).
    pub fn fullname(&self) -> String {
        let base = if self.name().contains("metricshard") {
            self.name().to_owned()
        } else {
            format!("{}-metricshard", self.name())
        };
        base.chars()
            .take(40)
            .collect::<String>()
            .trim_end_matches('-')
            .to_owned()
    }

    /// Name of the collector StatefulSet.
    pub fn collector_statefulset(&self) -> String {
        format!("{}-collector", self.fullname())
    }

    /// Name of collector pod `ordinal` of the StatefulSet.
    pub fn collector_pod_name(&self, ordinal: usize) -> String {
        format!("{}-{ordinal}", self.collector_statefulset())
    }

    /// Collector pod `ordinal`, once the StatefulSet controller has created it.
    pub async fn collector_pod(&self, ordinal: usize) -> Result<Pod> {
        let pods = self.namespace.api::<Pod>();
        let name = self.collector_pod_name(ordinal);
        wait_for(&format!("pod {name}"), CHART_TIMEOUT, || async {
            pods.get_opt(&name).await
        })
        .await
    }

    /// The operator Deployment's pods once there are exactly `count`, sorted by name.
    pub async fn operator_pods(&self, count: usize) -> Result<Vec<Pod>> {
        let pods = self.namespace.api::<Pod>();
        let selector = format!("{COMPONENT_LABEL}=operator");
        wait_for(
            &format!("{count} operator pod(s) in {}", self.name()),
            CHART_TIMEOUT,
            || async {
                let mut list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await?
                    .items;
                list.retain(|pod| pod.metadata.deletion_timestamp.is_none());
                list.sort_by_key(ResourceExt::name_any);
                anyhow::Ok(if list.len() == count {
                    Outcome::Ready(list)
                } else {
                    let names: Vec<String> = list.iter().map(ResourceExt::name_any).collect();
                    Outcome::NotYet(format!("{names:?}"))
                })
            },
        )
        .await
    }
}

impl std::fmt::Debug for ChartRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartRelease")
            .field("name", &self.name())
            .field("values", &self.values)
            .finish_non_exhaustive()
    }
}

// ----- the chart's pods as processes ---------------------------------------------------------

/// The program of one of the chart's pods (operator or collector), running as a [`PodStandIn`]
/// with the pod's container arguments, except that it listens on a free loopback port.
///
/// The process is held in a mutex so that checks can see, through `&self`, that it still runs:
/// [`sample`](Self::sample) fails at once with the process's log when it has exited, so a
/// crashed process never looks like a slow one.
pub struct ChartPodProcess {
    stand_in: Mutex<PodStandIn>,
    pod_name: String,
    endpoint: MetricsEndpoint,
}

impl ChartPodProcess {
    /// Starts the program of `pod` (by its `app.kubernetes.io/component` label: the operator for
    /// `operator`, the collector otherwise) and waits until its `/readyz` answers 2xx.
    pub async fn start(cluster: &TestCluster, admin: &Client, pod: &Pod) -> Result<Self> {
        let component = pod
            .labels()
            .get(COMPONENT_LABEL)
            .cloned()
            .with_context(|| format!("pod {} has no {COMPONENT_LABEL} label", pod.name_any()))?;
        let program = match component.as_str() {
            "operator" => workspace_binary("metricshard-operator")?,
            _ => workspace_binary("metricshard-collector")?,
        };
        let port = free_port()?;
        let args = stand_in_args(pod, &format!("127.0.0.1:{port}"))?;
        let stand_in = PodStandIn::start(cluster, admin, pod, "node-a", &program, &args).await?;
        let process = Self {
            stand_in: Mutex::new(stand_in),
            pod_name: pod.name_any(),
            endpoint: MetricsEndpoint::new(SocketAddr::from(([127, 0, 0, 1], port))),
        };
        process.wait_ready(CHART_TIMEOUT).await?;
        Ok(process)
    }

    /// The name of the pod this process stands in for.
    pub fn pod_name(&self) -> &str {
        &self.pod_name
    }

    /// The process's HTTP endpoint.
    pub fn endpoint(&self) -> &MetricsEndpoint {
        &self.endpoint
    }

    fn stand_in(&self) -> MutexGuard<'_, PodStandIn> {
        self.stand_in.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails, with the tail of the process's log, when the process has exited.
    pub fn ensure_running(&self) -> Result<()> {
        self.stand_in().process().ensure_running()
    }

    /// Waits until `/readyz` answers 2xx, failing at once if the process exits.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_for(&format!("{}'s /readyz", self.pod_name), timeout, || async {
            self.ensure_running()?;
            anyhow::Ok(self.endpoint.is_ready().await)
        })
        .await
    }

    /// The `/metrics` text (fails if the process has exited or does not answer).
    pub async fn metrics(&self) -> Result<String> {
        self.ensure_running()?;
        self.endpoint.metrics().await
    }

    /// The value of the sample `name{labels...}` on `/metrics` (other labels ignored), or
    /// `None` when there is no such series.
    pub async fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        Ok(sample_value(&self.metrics().await?, name, labels))
    }

    /// SIGKILLs the process: a crash, or a node gone with the pod on it.
    pub fn kill(&self) -> Result<()> {
        self.stand_in().process().kill()
    }

    /// SIGTERMs the process, SIGKILLing it after `grace`.
    pub fn terminate(&self, grace: Duration) -> Result<ExitStatus> {
        self.stand_in().process().terminate(grace)
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.stand_in().process().log_tail(lines)
    }

    /// Runs `f` on the underlying process (restart, signals, the log path).
    pub fn with_process<T>(&self, f: impl FnOnce(&mut ManagedProcess) -> T) -> T {
        f(self.stand_in().process())
    }
}

impl std::fmt::Debug for ChartPodProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartPodProcess")
            .field("pod", &self.pod_name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The arguments of `pod`'s first container with `--listen` moved to `listen`.
fn stand_in_args(pod: &Pod, listen: &str) -> Result<Vec<String>> {
    let container = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .with_context(|| format!("pod {} has no container", pod.name_any()))?;
    let mut args = Vec::new();
    let mut given = container.args.iter().flatten();
    while let Some(arg) = given.next() {
        if arg == "--listen" {
            // `--listen ADDR`: drop the value too.
            given.next();
        } else if !arg.starts_with("--listen=") {
            args.push(arg.clone());
        }
    }
    args.push(format!("--listen={listen}"));
    Ok(args)
}

// ----- /metrics ------------------------------------------------------------------------------

/// The HTTP endpoint of a metricshard process: `/metrics`, `/readyz`.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    base_url: String,
    http: reqwest::Client,
}

impl MetricsEndpoint {
    /// The endpoint served at `address` (plain HTTP).
    pub fn new(address: SocketAddr) -> Self {
        Self {
            base_url: format!("http://{address}"),
            http: crate::http_client(Duration::from_secs(5)).unwrap_or_default(),
        }
    }

    /// Whether `/readyz` answers 2xx now.
    pub async fn is_ready(&self) -> bool {
        match self
            .http
            .get(format!("{}/readyz", self.base_url))
            .send()
            .await
        {
            Ok(response) => response.status().is_success(),
            Err(_) => false,
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("{}/metrics", self.base_url);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        Ok(response.text().await?)
    }

    /// The value of the sample `name{labels...}` (other labels ignored), if present.
    pub async fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        Ok(sample_value(&self.metrics().await?, name, labels))
    }
}

/// Every sample of the metric `name` in exposition text, as (labels, value).
pub fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            Some((parse_labels(label_text), value.parse().ok()?))
        })
        .collect()
}

/// The value of the first sample of `name` whose labels include `labels`, if any.
pub fn sample_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name)
        .into_iter()
        .find_map(|(present, value)| {
            labels
                .iter()
                .all(|(key, wanted)| present.get(*key).map(String::as_str) == Some(*wanted))
                .then_some(value)
        })
}

/// Labels of an exposition-format series: `a="x",b="y"` (with the format's escapes).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => {}
                },
                other => value.push(other),
            }
        }
        labels.insert(name.trim_start_matches(',').trim().to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

// ----- the scrape target ---------------------------------------------------------------------

type RequestLog = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// An HTTP/1.1 server on 127.0.0.1 that answers every path with a one-sample exposition
/// (`e2e_target_requests_total{path="<path>"} <n>`) and records the instant each request for
/// each path arrived. One request per connection (`Connection: close`): enough for a scraper,
/// and no HTTP server dependency. Stops when dropped.
pub struct ScrapeTarget {
    address: SocketAddr,
    requests: RequestLog,
    server: JoinHandle<()>,
}

impl ScrapeTarget {
    /// Starts the server on a free port of 127.0.0.1 (on the calling test's runtime).
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the scrape target")?;
        let address = listener.local_addr()?;
        let requests = RequestLog::default();
        let seen = requests.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    // A scraper that hangs up early is its own problem, not the target's.
                    let _ = answer(stream, seen).await;
                });
            }
        });
        Ok(Self {
            address,
            requests,
            server,
        })
    }

    /// `host:port` of the server, as a static target.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn log(&self) -> MutexGuard<'_, HashMap<String, Vec<Instant>>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When each request for `path` arrived, in order.
    pub fn requests(&self, path: &str) -> Vec<Instant> {
        self.log().get(path).cloned().unwrap_or_default()
    }

    /// How many requests for `path` arrived so far.
    pub fn count(&self, path: &str) -> usize {
        self.log().get(path).map_or(0, Vec::len)
    }

    /// How many requests for `path` arrived in `[from, to)`.
    pub fn count_between(&self, path: &str, from: Instant, to: Instant) -> usize {
        self.log().get(path).map_or(0, |times| {
            times.iter().filter(|t| **t >= from && **t < to).count()
        })
    }

    /// The last request for `path`, if any.
    pub fn last(&self, path: &str) -> Option<Instant> {
        self.log().get(path).and_then(|times| times.last().copied())
    }

    /// The first request for `path` at or after `from`, if any.
    pub fn first_at_or_after(&self, path: &str, from: Instant) -> Option<Instant> {
        self.log()
            .get(path)
            .and_then(|times| times.iter().copied().find(|t| *t >= from))
    }

    /// The last request for `path` before `before`, if any.
    pub fn last_before(&self, path: &str, before: Instant) -> Option<Instant> {
        self.log()
            .get(path)
            .and_then(|times| times.iter().copied().rev().find(|t| *t < before))
    }

    /// The cadence of `path`'s requests in `[from, to)` against the expected `interval`.
    pub fn cadence(
        &self,
        path: &str,
        interval: Duration,
        from: Instant,
        to: Instant,
    ) -> ScrapeCadence {
        let times: Vec<Instant> = self
            .requests(path)
            .into_iter()
            .filter(|t| *t >= from && *t < to)
            .collect();
        ScrapeCadence::of(&times, interval)
    }
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for ScrapeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeTarget")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

async fn answer(mut stream: TcpStream, requests: RequestLog) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let arrived = Instant::now();
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let count = {
        let mut all = requests.lock().unwrap_or_else(PoisonError::into_inner);
        let times = all.entry(path.clone()).or_default();
        times.push(arrived);
        times.len()
    };
    let body = format!(
        "# TYPE e2e_target_requests counter\ne2e_target_requests_total{{path=\"{path}\"}} {count}\n"
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// How regularly a path was scraped, judged against the input's interval: with phase-aligned
/// schedules and no jitter, consecutive scrapes are one interval apart. Two scrapes less than
/// half an interval apart are a duplicate tick; a spacing of `k` intervals (rounded, `k ≥ 2`)
/// means `k - 1` missed ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeCadence {
    /// Scrapes seen.
    pub scrapes: usize,
    /// Scrapes that followed the previous one within half an interval.
    pub duplicates: usize,
    /// Ticks missing between consecutive scrapes.
    pub missed: usize,
    /// The longest spacing between consecutive scrapes.
    pub longest_spacing: Duration,
}

impl ScrapeCadence {
    /// The cadence of scrapes at `times` (in order) for an input scraped every `interval`.
    pub fn of(times: &[Instant], interval: Duration) -> Self {
        let mut cadence = Self {
            scrapes: times.len(),
            ..Self::default()
        };
        for pair in times.windows(2) {
            let spacing = pair[1].saturating_duration_since(pair[0]);
            cadence.longest_spacing = cadence.longest_spacing.max(spacing);
            let intervals = spacing.as_secs_f64() / interval.as_secs_f64();
            if intervals < 0.5 {
                cadence.duplicates += 1;
            } else if intervals >= 1.5 {
                // Rounded to the nearest whole number of intervals, at least 2 here.
                cadence.missed += (intervals + 0.5) as usize - 1;
            }
        }
        cadence
    }

    /// Adds another path's figures (for totals over many inputs).
    pub fn add(&mut self, other: &Self) {
        self.scrapes += other.scrapes;
        self.duplicates += other.duplicates;
        self.missed += other.missed;
        self.longest_spacing = self.longest_spacing.max(other.longest_spacing);
    }
}

// ----- objects -------------------------------------------------------------------------------

/// The `metricshard.io/v1alpha1` resource of `kind` (with its `plural`), for dynamic APIs.
pub fn metricshard_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metricshard.io", "v1alpha1", kind),
        plural,
    )
}

/// The MetricInputs of `namespace`.
pub fn metric_inputs(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &metricshard_resource("MetricInput", "metricinputs"),
    )
}

/// Waits until no MetricInput is left in the cluster: an operator assigns every input of the
/// cluster, so a test that counts its operator's moves waits out earlier tests' inputs.
pub async fn wait_no_metric_inputs(client: &Client, timeout: Duration) -> Result<()> {
    let everywhere: Api<DynamicObject> = Api::all_with(client.clone(), &metricshard_resource("MetricInput", "metricinputs"));
    wait_for("no MetricInputs left by earlier tests", timeout, || async {
        let left = everywhere.list(&ListParams::default()).await?.items.len();
        anyhow::Ok(Outcome::ready_if(left == 0, left))
    })
    .await
    .map(|_| ())
}

/// Waits until `operator` leads and counts `collectors` live collectors. Inputs created before
/// that would be placed twice: once over the collectors it saw, then again.
pub async fn wait_operator_leads(operator: &ChartPodProcess, collectors: usize, timeout: Duration) -> Result<()> {
    let expected = collectors as f64;
    wait_for(&format!("the operator to lead and see {collectors} collectors"), timeout, || async {
        let leader = operator.sample("metricshard_operator_is_leader", &[]).await?;
        let live = operator.sample("metricshard_operator_live_collectors", &[]).await?;
        anyhow::Ok(Outcome::ready_if(leader == Some(1.0) && live == Some(expected), (leader, live)))
    })
    .await
    .map(|_| ())
}

/// The MetricOutputs of `namespace`.
pub fn metric_outputs(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &metricshard_resource("MetricOutput", "metricoutputs"),
    )
}

/// A MetricInput `name` (no namespace: the API it is created through sets it) scraping
/// `metrics_path` of `target` every `interval` (Go duration syntax) and sending to `outputs`
/// (its `spec.outputs` list), without an assignment label: the operator places it.
pub fn prometheus_input(
    name: &str,
    target: SocketAddr,
    metrics_path: &str,
    interval: &str,
    outputs: Value,
) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": { "name": name },
        "spec": {
            "interval": interval,
            "source": { "prometheus": {
                "staticTargets": [target.to_string()],
                "metricsPath": metrics_path,
            }},
            "outputs": outputs,
        },
    }))?)
}

/// A MetricOutput `name` appending every sample to the file `path` (exposition text).
pub fn file_output(name: &str, path: &Path) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricOutput",
        "metadata": { "name": name },
        "spec": {
            "protocol": { "file": { "path": path } },
            "batch": { "maxSamples": 1000, "flushInterval": "100ms" },
        },
    }))?)
}

/// The collector an input is labelled for ([`COLLECTOR_LABEL`]), if any.
pub fn assigned_collector(input: &DynamicObject) -> Option<String> {
    input.labels().get(COLLECTOR_LABEL).cloned()
}

/// The status (`True`, `False`, `Unknown`) of condition `type_` in `status.conditions`.
pub fn condition_status(object: &DynamicObject, type_: &str) -> Option<String> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == type_)?["status"]
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_label_subset() {
        let text = "# HELP x y\n\
                    metricshard_tasks 3\n\
                    metricshard_input_task_starts_total{input=\"ns/a\"} 1\n\
                    metricshard_input_task_starts_total{input=\"ns/b\",other=\"q\\\"uote\"} 2\n";
        assert_eq!(sample_value(text, "metricshard_tasks", &[]), Some(3.0));
        assert_eq!(
            sample_value(
                text,
                "metricshard_input_task_starts_total",
                &[("input", "ns/b")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sample_value(
                text,
                "metricshard_input_task_starts_total",
                &[("input", "ns/c")]
            ),
            None
        );
        let all = samples(text, "metricshard_input_task_starts_total");
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].0["other"], "q\"uote");
    }

    #[test]
    fn cadence_counts_duplicates_and_missed_ticks() {
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let second = Duration::from_secs(1);
        // Regular, then a duplicate 30 ms after a tick, then two missed ticks (3 s spacing).
        let times = [at(0), at(1000), at(2000), at(2030), at(3000), at(6000)];
        let cadence = ScrapeCadence::of(&times, second);
        assert_eq!(cadence.scrapes, 6);
        assert_eq!(cadence.duplicates, 1);
        assert_eq!(cadence.missed, 2);
        assert_eq!(cadence.longest_spacing, Duration::from_secs(3));
        assert_eq!(
            ScrapeCadence::of(&[at(0), at(1040), at(1990)], second),
            ScrapeCadence {
                scrapes: 3,
                duplicates: 0,
                missed: 0,
                longest_spacing: Duration::from_millis(1040)
            }
        );
    }

    #[test]
    fn stand_in_arguments_keep_the_chart_flags_and_listen_on_loopback() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "x-operator-abc" },
            "spec": { "containers": [{
                "name": "operator",
                "args": ["--namespace=ns", "--listen=0.0.0.0:9750", "--log-format=json", "--collector-statefulset=x"],
            }]},
        }))
        .unwrap();
        assert_eq!(
            stand_in_args(&pod, "127.0.0.1:2000").unwrap(),
            [
                "--namespace=ns",
                "--log-format=json",
                "--collector-statefulset=x",
                "--listen=127.0.0.1:2000",
            ]
        );
    }
}
