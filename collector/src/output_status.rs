//! What each output's delivery loops know about their backend addresses, and writing it to the
//! output objects' status (cluster mode).
//!
//! Every delivery loop (one per address of every node of an output) owns a [`NodeHandle`]: it
//! reports writes, retries, drops and its buffer depth through it, which updates both the
//! per-node metric families and the figures kept on the [`OutputNodeBoard`]. In cluster mode
//! [`run_writer`] copies the board into `status.collectors[<this pod>]` of each
//! `MetricOutput`/`ClusterMetricOutput`, with server-side apply under a field manager of this
//! collector's own (`metricshard-collector/<pod>`), so collectors never overwrite each other's
//! entries. Writes are rate-limited: an output's entry is written when a node's reachability
//! changed (at most once per [`STATUS_CHECK`]), otherwise at most every [`STATUS_INTERVAL`] and
//! only when a figure changed. On shutdown the collector removes its entries by applying an empty
//! status with the same field manager. Local mode has no objects to write to: the same figures
//! are on `/metrics`, and reachability changes are logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use metricshard_crds::{ClusterMetricOutput, CollectorOutputStatus, MetricOutput, NodeStatus, OutputKind};
use tokio_util::sync::CancellationToken;

use crate::routing::OutputId;
use crate::telemetry::{OutputLabels, OutputNodeLabels, Telemetry};

/// How often the writer looks at the board.
pub const STATUS_CHECK: Duration = Duration::from_secs(1);
/// Longest an entry waits before changed figures are written (reachability changes go at once).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Field manager prefix; the pod name follows, so every collector owns its own entry.
pub const FIELD_MANAGER_PREFIX: &str = "metricshard-collector";

/// Figures of one address as one delivery loop sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFigures {
    /// False after a retryable write failure, until a write succeeds.
    pub reachable: bool,
    /// The last write error, cleared by a successful write.
    pub last_error: Option<String>,
    /// Samples in the buffer.
    pub buffer_depth: u64,
    /// Samples written.
    pub written: u64,
    /// Failed writes that will be retried.
    pub retried: u64,
    /// Samples dropped, every reason.
    pub dropped: u64,
    /// The last successful write.
    pub last_write: Option<SystemTime>,
}

impl Default for NodeFigures {
    fn default() -> Self {
        Self { reachable: true, last_error: None, buffer_depth: 0, written: 0, retried: 0, dropped: 0, last_write: None }
    }
}

/// The reporting handle of one delivery loop: one address of one node of one output.
#[derive(Clone)]
pub struct NodeHandle {
    output: String,
    labels: OutputNodeLabels,
    figures: Arc<Mutex<NodeFigures>>,
    telemetry: Telemetry,
}

impl NodeHandle {
    /// A handle for `address` of `node` of `output`, not on any board (tests, local helpers).
    pub fn new(output: &str, node: &str, address: &str, telemetry: Telemetry) -> Self {
        let labels = OutputNodeLabels { output: output.to_owned(), node: node.to_owned(), address: address.to_owned() };
        telemetry.output_node_reachable.get_or_create(&labels).set(1);
        Self { output: output.to_owned(), labels, figures: Arc::default(), telemetry }
    }

    /// The output's display name (`Kind/namespace/name`), for logs.
    pub fn output(&self) -> &str {
        &self.output
    }

    /// The collector's metric families.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.labels.node
    }

    /// The address.
    pub fn address(&self) -> &str {
        &self.labels.address
    }

    /// A copy of the current figures.
    pub fn figures(&self) -> NodeFigures {
        self.figures.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update<T>(&self, change: impl FnOnce(&mut NodeFigures) -> T) -> T {
        change(&mut self.figures.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A batch of `count` samples was accepted.
    pub fn wrote(&self, count: u64) {
        let was_reachable = self.update(|figures| {
            let was = figures.reachable;
            figures.reachable = true;
            figures.last_error = None;
            figures.written += count;
            figures.last_write = Some(SystemTime::now());
            was
        });
        if !was_reachable {
            tracing::info!(output = %self.output, node = %self.labels.node, address = %self.labels.address, "backend reachable again");
        }
        self.telemetry.output_node_reachable.get_or_create(&self.labels).set(1);
        self.telemetry.output_node_written.get_or_create(&self.labels).inc_by(count);
        self.telemetry.output_written.get_or_create(&self.output_labels()).inc_by(count);
    }

    /// A write failed and will be retried: the address counts as unreachable.
    pub fn will_retry(&self, error: &str) {
        let was_reachable = self.update(|figures| {
            let was = figures.reachable;
            figures.reachable = false;
            figures.last_error = Some(error.to_owned());
            figures.retried += 1;
            was
        });
        if was_reachable {
            tracing::warn!(output = %self.output, node = %self.labels.node, address = %self.labels.address, "backend unreachable: {error}");
        }
        self.telemetry.output_node_reachable.get_or_create(&self.labels).set(0);
        self.telemetry.output_node_retries.get_or_create(&self.labels).inc();
    }

    /// A write was refused for good (the backend answered, so it is reachable).
    pub fn rejected(&self, error: &str) {
        self.update(|figures| {
            figures.reachable = true;
            figures.last_error = Some(error.to_owned());
        });
        self.telemetry.output_node_reachable.get_or_create(&self.labels).set(1);
    }

    /// `count` samples were dropped (rejected, beyond the limit, unrepresentable).
    pub fn dropped(&self, count: u64) {
        self.update(|figures| figures.dropped += count);
        self.telemetry.output_node_dropped.get_or_create(&self.labels).inc_by(count);
    }

    /// The buffer now holds `depth` samples. The output-wide gauge is the sum over its
    /// addresses, kept by adding the difference.
    pub fn set_depth(&self, depth: u64) {
        let previous = self.update(|figures| std::mem::replace(&mut figures.buffer_depth, depth));
        self.telemetry.output_node_buffered.get_or_create(&self.labels).set(i64::try_from(depth).unwrap_or(i64::MAX));
        let delta = i64::try_from(depth).unwrap_or(i64::MAX).saturating_sub(i64::try_from(previous).unwrap_or(i64::MAX));
        self.telemetry.output_buffered.get_or_create(&self.output_labels()).inc_by(delta);
    }

    /// The delivery loop ended: take its share out of the output-wide gauge and forget its
    /// per-node series, so cardinality follows the configured addresses.
    pub fn retire(&self) {
        self.set_depth(0);
        self.telemetry.forget_output_node(&self.labels);
    }

    fn output_labels(&self) -> OutputLabels {
        OutputLabels { output: self.output.clone() }
    }
}

/// The addresses of one running output, or why its generation does not run.
#[derive(Clone)]
struct BoardEntry {
    generation: i64,
    nodes: Vec<NodeHandle>,
    refusal: Option<String>,
}

/// What this collector reports of one output: the generation it runs (or refuses), its
/// addresses, and the reason for a refusal.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputReport {
    /// The output's generation.
    pub generation: i64,
    /// One status per address; empty when refused.
    pub nodes: Vec<NodeStatus>,
    /// Why the generation does not run.
    pub refusal: Option<String>,
}

/// The node handles of every running output, shared by the runtime (which registers them) and
/// the status writer (which reads them).
#[derive(Clone, Default)]
pub struct OutputNodeBoard {
    outputs: Arc<Mutex<BTreeMap<OutputId, BoardEntry>>>,
}

impl OutputNodeBoard {
    /// Publishes the handles of `output` at `generation`, replacing an older generation's.
    pub fn register(&self, output: OutputId, generation: i64, nodes: Vec<NodeHandle>) {
        self.lock().insert(output, BoardEntry { generation, nodes, refusal: None });
    }

    /// Withdraws `output` at `generation` (its pipeline stopped or was replaced).
    pub fn unregister(&self, output: &OutputId, generation: i64) {
        let mut outputs = self.lock();
        if outputs.get(output).is_some_and(|entry| entry.generation == generation && entry.refusal.is_none()) {
            outputs.remove(output);
        }
    }

    /// Publishes that `output` at `generation` does not run here, and why.
    pub fn refuse(&self, output: OutputId, generation: i64, reason: String) {
        self.lock().insert(output, BoardEntry { generation, nodes: Vec::new(), refusal: Some(reason) });
    }

    /// Forgets `output` entirely (it left the desired state).
    pub fn forget(&self, output: &OutputId) {
        self.lock().remove(output);
    }

    /// What this collector reports of each output it runs or refuses, now.
    pub fn snapshot(&self) -> BTreeMap<OutputId, OutputReport> {
        self.lock()
            .iter()
            .map(|(id, entry)| {
                let report = OutputReport {
                    generation: entry.generation,
                    nodes: entry.nodes.iter().map(node_status).collect(),
                    refusal: entry.refusal.clone(),
                };
                (id.clone(), report)
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<OutputId, BoardEntry>> {
        self.outputs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn node_status(handle: &NodeHandle) -> NodeStatus {
    let figures = handle.figures();
    NodeStatus {
        name: handle.node().to_owned(),
        address: handle.address().to_owned(),
        reachable: figures.reachable,
        last_error: figures.last_error,
        buffer_depth: figures.buffer_depth,
        written: figures.written,
        retried: figures.retried,
        dropped: figures.dropped,
        last_write_time: figures.last_write.and_then(to_time),
    }
}

fn to_time(time: SystemTime) -> Option<Time> {
    let nanos = i128::try_from(time.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos()).ok()?;
    k8s_openapi::jiff::Timestamp::from_nanosecond(nanos).ok().map(Time)
}

/// What was last written for one output.
struct WrittenEntry {
    report: OutputReport,
    at: Instant,
}

/// True when `next` must be written now, given what was written last: at once for a new
/// generation, a refusal or a change of reachability, otherwise at most every [`STATUS_INTERVAL`].
fn due(last: Option<&WrittenEntry>, next: &OutputReport, now: Instant) -> bool {
    let Some(last) = last else { return true };
    let reachability = |nodes: &[NodeStatus]| nodes.iter().map(|n| (n.address.clone(), n.reachable)).collect::<Vec<_>>();
    if last.report.generation != next.generation
        || last.report.refusal != next.refusal
        || reachability(&last.report.nodes) != reachability(&next.nodes)
    {
        return true;
    }
    last.report.nodes != next.nodes && now.duration_since(last.at) >= STATUS_INTERVAL
}

/// Writes this collector's entry of every running output's status until `stop` fires, then
/// removes the entries it wrote.
pub async fn run_writer(client: Client, collector: String, board: OutputNodeBoard, stop: CancellationToken) {
    let manager = format!("{FIELD_MANAGER_PREFIX}/{collector}");
    let mut written: BTreeMap<OutputId, WrittenEntry> = BTreeMap::new();
    let mut check = tokio::time::interval(STATUS_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = check.tick() => {}
        }
        let snapshot = board.snapshot();
        // Outputs that stopped running here: take our entry out of their status.
        let gone: Vec<OutputId> = written.keys().filter(|id| !snapshot.contains_key(*id)).cloned().collect();
        for id in gone {
            written.remove(&id);
            apply(&client, &manager, &id, None).await;
        }
        let now = Instant::now();
        for (id, report) in snapshot {
            if !due(written.get(&id), &report, now) {
                continue;
            }
            let entry = CollectorOutputStatus {
                collector: collector.clone(),
                update_time: to_time(SystemTime::now()),
                observed_generation: Some(report.generation),
                refusal: report.refusal.clone(),
                nodes: report.nodes.clone(),
            };
            if apply(&client, &manager, &id, Some(entry)).await {
                written.insert(id, WrittenEntry { report, at: now });
            }
        }
    }
    for id in written.keys() {
        apply(&client, &manager, id, None).await;
    }
}

/// Applies this collector's entry (or, with `None`, its absence) to `output`'s status. True when
/// the apiserver took it.
async fn apply(client: &Client, manager: &str, output: &OutputId, entry: Option<CollectorOutputStatus>) -> bool {
    let kind = match output.kind {
        OutputKind::MetricOutput => "MetricOutput",
        OutputKind::ClusterMetricOutput => "ClusterMetricOutput",
    };
    // Leaving `collectors` out drops the entry this field manager owned.
    let status = match entry {
        Some(entry) => serde_json::json!({ "collectors": [entry] }),
        None => serde_json::json!({}),
    };
    let patch = serde_json::json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": kind,
        "metadata": { "name": output.name },
        "status": status,
    });
    let params = PatchParams::apply(manager).force();
    let result = match (output.kind, &output.namespace) {
        (OutputKind::MetricOutput, Some(namespace)) => {
            let api: Api<MetricOutput> = Api::namespaced(client.clone(), namespace);
            api.patch_status(&output.name, &params, &Patch::Apply(&patch)).await.map(|_| ())
        }
        _ => {
            let api: Api<ClusterMetricOutput> = Api::all(client.clone());
            api.patch_status(&output.name, &params, &Patch::Apply(&patch)).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => true,
        // The output was deleted meanwhile: nothing to report on.
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(error) => {
            tracing::warn!(output = %output, "writing the output status failed, will retry: {error}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(address: &str, reachable: bool, written: u64) -> NodeStatus {
        NodeStatus { name: "a".into(), address: address.into(), reachable, written, ..Default::default() }
    }

    fn report(generation: i64, nodes: Vec<NodeStatus>, refusal: Option<&str>) -> OutputReport {
        OutputReport { generation, nodes, refusal: refusal.map(str::to_owned) }
    }

    #[test]
    fn writes_are_rate_limited_except_for_reachability_changes() {
        let start = Instant::now();
        let last = WrittenEntry { report: report(1, vec![node("x", true, 10)], None), at: start };
        let soon = start + Duration::from_secs(1);
        assert!(due(None, &report(1, vec![node("x", true, 10)], None), start), "first write");
        assert!(!due(Some(&last), &report(1, vec![node("x", true, 10)], None), start + STATUS_INTERVAL), "nothing changed");
        assert!(!due(Some(&last), &report(1, vec![node("x", true, 20)], None), soon), "figures wait");
        assert!(due(Some(&last), &report(1, vec![node("x", true, 20)], None), start + STATUS_INTERVAL), "figures after the interval");
        assert!(due(Some(&last), &report(1, vec![node("x", false, 10)], None), soon), "reachability at once");
        assert!(due(Some(&last), &report(2, vec![node("x", true, 10)], None), start), "new generation at once");
        assert!(due(Some(&last), &report(1, vec![], Some("secret ns/s not found")), start), "a refusal at once");
    }

    #[test]
    fn a_refused_generation_is_reported_until_one_runs_or_the_output_goes() {
        let board = OutputNodeBoard::default();
        let id = OutputId { kind: OutputKind::MetricOutput, namespace: Some("ns".into()), name: "out".into() };
        board.refuse(id.clone(), 4, "secret ns/token not found".into());
        assert_eq!(board.snapshot()[&id], report(4, vec![], Some("secret ns/token not found")));
        // The pipeline of generation 3 ending late does not withdraw the refusal of 4.
        board.unregister(&id, 3);
        board.unregister(&id, 4);
        assert_eq!(board.snapshot()[&id].refusal.as_deref(), Some("secret ns/token not found"));
        let handle = NodeHandle::new("MetricOutput/ns/out", "a", "http://a", Telemetry::new());
        board.register(id.clone(), 5, vec![handle]);
        assert_eq!(board.snapshot()[&id].refusal, None, "running generation 5 replaces the refusal");
        board.refuse(id.clone(), 6, "no such key".into());
        board.forget(&id);
        assert!(board.snapshot().is_empty());
    }

    #[test]
    fn handles_keep_figures_and_metrics_in_step() {
        let telemetry = Telemetry::new();
        let handle = NodeHandle::new("MetricOutput/ns/out", "a", "http://a", telemetry.clone());
        let board = OutputNodeBoard::default();
        let id = OutputId { kind: OutputKind::MetricOutput, namespace: Some("ns".into()), name: "out".into() };
        board.register(id.clone(), 3, vec![handle.clone()]);
        handle.set_depth(7);
        handle.will_retry("connection refused");
        let OutputReport { generation, nodes, refusal } = board.snapshot().remove(&id).unwrap();
        assert_eq!((generation, refusal), (3, None));
        assert!(!nodes[0].reachable);
        assert_eq!(nodes[0].last_error.as_deref(), Some("connection refused"));
        assert_eq!((nodes[0].buffer_depth, nodes[0].retried), (7, 1));
        handle.wrote(5);
        handle.dropped(2);
        let figures = handle.figures();
        assert!(figures.reachable && figures.last_error.is_none() && figures.last_write.is_some());
        assert_eq!((figures.written, figures.dropped), (5, 2));
        let text = telemetry.encode().unwrap();
        assert!(text.contains(r#"metricshard_output_node_written_samples_total{output="MetricOutput/ns/out",node="a",address="http://a"} 5"#), "{text}");
        assert!(text.contains(r#"metricshard_output_buffered_samples{output="MetricOutput/ns/out"} 7"#), "{text}");
        handle.retire();
        let text = telemetry.encode().unwrap();
        assert!(text.contains(r#"metricshard_output_buffered_samples{output="MetricOutput/ns/out"} 0"#), "{text}");
        assert!(!text.contains("metricshard_output_node_written_samples_total{"), "{text}");
        board.unregister(&id, 2);
        assert!(board.snapshot().contains_key(&id), "an older generation's unregister is ignored");
        board.unregister(&id, 3);
        assert!(board.snapshot().is_empty());
    }
}
