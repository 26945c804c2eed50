//! Cluster mode: the desired state comes from the apiserver.
//!
//! The collector watches only its own shard, selected server-side by the label the operator
//! writes (`metricshard.io/collector=<pod name>`, or `metricshard.io/placement=EveryNode` for a
//! node-local collector), plus the outputs and namespaces that routing needs. Every change is
//! turned into the same [`DesiredState`] local mode produces and applied by the same runtime, so
//! a task restarts only when its input's `metadata.generation` changes: a relist, an apiserver
//! restart or an operator failover restarts nothing.
//!
//! Membership: once its caches are synced, the collector holds a `coordination.k8s.io`
//! Lease named after its pod, renewed every [`LEASE_RENEW`]; the operator counts a collector as
//! live while its Lease is fresh. It is renewed by a task of its own, so a slow apply never lets it
//! lapse. After a crash it expires after [`LEASE_DURATION`].
//!
//! Handovers (see [`crate::handover`]): an input handed to this collector by a live one starts
//! at its fence; one handed away is read back once and gathered until its fence. On SIGTERM a
//! sharded collector first marks its Lease draining ([`LEASE_DRAINING_ANNOTATION`]): the
//! operator hands its inputs to the others with fences, as between live collectors, and the
//! collector keeps gathering until its shard is empty and every fence passed (at most
//! [`LEAVE_TIMEOUT`]). Then the tasks stop and the Lease is deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use metricshard_crds::watch::reflect;
use kube::{Api, Client, Resource, ResourceExt};
use metricshard_crds::{ClusterMetricOutput, MetricInput, MetricOutput, OutputKind};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::{Readiness, StatusBoard, TaskKey};
use crate::handover::HandoverTracker;
use crate::routing::OutputId;
use crate::runtime::{DesiredInput, DesiredOutput, DesiredState, Runtime};
use crate::secret_watch::SecretWatches;
use crate::sample::Labels;

/// Label the operator writes on a sharded input: the pod name of the collector that runs it.
pub const COLLECTOR_LABEL: &str = "metricshard.io/collector";
/// Label the operator writes on an every-node input.
pub const PLACEMENT_LABEL: &str = "metricshard.io/placement";
/// Label on collector Leases, which the operator selects membership by.
pub const LEASE_ROLE_LABEL: &str = "metricshard.io/role";
/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the Lease is renewed.
pub const LEASE_RENEW: Duration = Duration::from_secs(5);
/// Annotation on a collector's Lease while it is leaving: still live, but to be handed no inputs
/// and to have its inputs handed over.
pub const LEASE_DRAINING_ANNOTATION: &str = "metricshard.io/draining";
/// Longest a leaving collector waits for its inputs to be handed over (within the chart's
/// termination grace period of 30 s).
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Field manager of everything the collector writes.
pub const FIELD_MANAGER: &str = "metricshard-collector";
/// How often the collector looks for input statuses to write.
pub const STATUS_CHECK: Duration = Duration::from_secs(5);
/// An unchanged status is rewritten this often, to refresh `lastGatherTime`.
pub const STATUS_REFRESH: Duration = Duration::from_secs(60);
/// Most status writes per check, so a collector with many inputs never floods the apiserver.
pub const STATUS_WRITES_PER_CHECK: usize = 50;

/// Which inputs a collector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CollectorPlacement {
    /// A StatefulSet member: the inputs assigned to this pod.
    Sharded,
    /// A DaemonSet member: every `EveryNode` input.
    EveryNode,
}

/// Who this collector is.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    /// Pod name (`POD_NAME`).
    pub name: String,
    /// Pod namespace (`POD_NAMESPACE`), where the Lease lives.
    pub namespace: String,
    /// Node name (`NODE_NAME`), if known.
    pub node: Option<String>,
    /// Every-node placement: how often the node's labels are re-read for `nodeSelector`s.
    pub node_label_refresh: Duration,
}

/// The label selector of this collector's shard.
pub fn shard_selector(placement: CollectorPlacement, pod: &PodIdentity) -> String {
    match placement {
        CollectorPlacement::Sharded => format!("{COLLECTOR_LABEL}={}", pod.name),
        CollectorPlacement::EveryNode => format!("{PLACEMENT_LABEL}=EveryNode"),
    }
}

/// Why cluster mode stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Writing the membership Lease failed in a way retries cannot fix.
    #[error("lease {name}: {source}")]
    Lease {
        /// Lease name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Stores of everything the desired state is built from.
struct Stores {
    inputs: Store<MetricInput>,
    outputs: Store<MetricOutput>,
    cluster_outputs: Store<ClusterMetricOutput>,
    namespaces: Store<Namespace>,
}

impl Stores {
    fn desired(&self) -> DesiredState {
        let mut desired = DesiredState::default();
        for input in self.inputs.state() {
            let namespace = input.namespace().unwrap_or_default();
            let key = TaskKey::new(&namespace, &input.name_any());
            let generation = input.meta().generation.unwrap_or_default();
            desired.inputs.insert(key, DesiredInput { generation, input: (*input).clone(), window: crate::engine::TickWindow::ALL });
        }
        for output in self.outputs.state() {
            let id = OutputId { kind: OutputKind::MetricOutput, namespace: output.namespace(), name: output.name_any() };
            desired.outputs.insert(
                id,
                DesiredOutput {
                    generation: output.meta().generation.unwrap_or_default(),
                    settings: output.spec.settings().into(),
                    namespace_selector: None,
                },
            );
        }
        for output in self.cluster_outputs.state() {
            let id = OutputId { kind: OutputKind::ClusterMetricOutput, namespace: None, name: output.name_any() };
            desired.outputs.insert(
                id,
                DesiredOutput {
                    generation: output.meta().generation.unwrap_or_default(),
                    settings: output.spec.settings().into(),
                    namespace_selector: output.spec.namespace_selector.clone(),
                },
            );
        }
        desired.namespace_labels = self
            .namespaces
            .state()
            .iter()
            .map(|namespace| (namespace.name_any(), Labels::from_pairs(namespace.labels().clone())))
            .collect::<BTreeMap<_, _>>();
        desired
    }

    async fn wait_until_ready(&self) {
        // A store errors only when its writer was dropped, which means we are shutting down.
        let _ = futures::future::join4(
            self.inputs.wait_until_ready(),
            self.outputs.wait_until_ready(),
            self.cluster_outputs.wait_until_ready(),
            self.namespaces.wait_until_ready(),
        )
        .await;
    }
}

/// Runs cluster mode until `shutdown` fires.
pub async fn run(
    client: Client,
    pod: PodIdentity,
    placement: CollectorPlacement,
    runtime: &mut Runtime,
    shutdown: CancellationToken,
    on_applied: impl Fn(),
) -> Result<(), ClusterError> {
    let changed = Arc::new(Notify::new());
    let selector = shard_selector(placement, &pod);
    tracing::info!(pod = %pod.name, %selector, "cluster mode: watching this collector's shard");
    // The watches outlive the shutdown signal: a leaving collector still follows its shard
    // while the operator hands it over.
    let watching = CancellationToken::new();
    let _stop_watching = watching.clone().drop_guard();
    let stores = Stores {
        inputs: reflect(Api::all(client.clone()), watcher::Config::default().labels(&selector), changed.clone(), watching.clone()),
        outputs: reflect(Api::all(client.clone()), watcher::Config::default(), changed.clone(), watching.clone()),
        cluster_outputs: reflect(Api::all(client.clone()), watcher::Config::default(), changed.clone(), watching.clone()),
        namespaces: reflect(Api::all(client.clone()), watcher::Config::default(), changed.clone(), watching.clone()),
    };
    // Every-node placement: inputs run only where their nodeSelector admits this node.
    let node_labels = match placement {
        CollectorPlacement::EveryNode => Some(
            crate::node_filter::NodeLabels::start(client.clone(), pod.node.clone(), pod.node_label_refresh, changed.clone(), shutdown.clone())
                .await,
        ),
        CollectorPlacement::Sharded => None,
    };
    tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        () = stores.wait_until_ready() => {}
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &pod.namespace);
    let mut status_check = tokio::time::interval(STATUS_CHECK);
    status_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let board = runtime.status_board();
    let mut written = HashMap::new();
    let mut handovers = HandoverTracker::new(pod.name.clone(), client.clone(), runtime.telemetry().clone());
    let mut node_written = HashMap::new();
    // The Lease is renewed by its own task: an apply that waits for outputs to drain must never
    // delay a renewal past the Lease duration and cost this collector its inputs.
    let membership = CancellationToken::new();
    let (leaving_tx, leaving_rx) = watch::channel(false);
    let mut renewal = tokio::spawn(renew_lease_until(leases.clone(), pod.clone(), placement, leaving_rx, membership.clone()));
    let mut leaving: Option<tokio::time::Instant> = None;
    // Output status (per-address reachability and figures): its own task, rate-limited.
    let output_status_stop = CancellationToken::new();
    let output_status = tokio::spawn(crate::output_status::run_writer(client.clone(), pod.name.clone(), runtime.output_nodes(), output_status_stop.clone()));
    let mut result = Ok(());
    let mut secret_watches = SecretWatches::new(client.clone(), changed.clone(), shutdown.clone(), pod.namespace.clone());
    loop {
        let mut desired = handovers.desired(stores.desired()).await;
        desired.secrets = secret_watches.follow(&desired).await;
        if let Some(node_labels) = &node_labels {
            desired.inputs.retain(|_, input| node_labels.admits(&input.input));
        }
        let report = runtime.apply(&desired).await;
        if report != Default::default() {
            tracing::info!(
                started = ?report.started, restarted = ?report.restarted, stopped = ?report.stopped,
                outputs_started = ?report.outputs_started, outputs_stopped = ?report.outputs_stopped,
                outputs_refused = ?report.outputs_refused,
                "applied shard"
            );
        }
        on_applied();
        if let Some(deadline) = leaving {
            let handed_over = stores.inputs.state().is_empty() && !handovers.is_draining();
            if handed_over || tokio::time::Instant::now() >= deadline {
                tracing::info!(handed_over, "leaving");
                break;
            }
        }
        // Wake when a drain reaches its fence even if no watch event comes.
        let next_handover = handovers
            .next_deadline()
            .map_or(STATUS_REFRESH, |at| at.duration_since(std::time::SystemTime::now()).unwrap_or_default());
        tokio::select! {
            () = shutdown.cancelled(), if leaving.is_none() => {
                if placement == CollectorPlacement::Sharded {
                    tracing::info!("signal: marking the Lease draining so the operator hands this collector's inputs over");
                    leaving = Some(tokio::time::Instant::now() + LEAVE_TIMEOUT);
                    let _ = leaving_tx.send(true);
                } else {
                    break;
                }
            }
            () = async { if let Some(deadline) = leaving { tokio::time::sleep_until(deadline).await } else { std::future::pending().await } } => {}
            () = changed.notified() => {
                // Coalesce a burst (a relist delivers every object) into one apply.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            () = tokio::time::sleep(next_handover) => {}
            _ = status_check.tick() => match (placement, &pod.node) {
                // Many collectors run an every-node input: each writes only its node's entry.
                (CollectorPlacement::EveryNode, Some(node)) => {
                    crate::every_node_status::write(&client, node, &board, &stores.inputs, &mut node_written).await;
                }
                _ => write_statuses(&client, &board, &stores.inputs, &mut written).await,
            },
            ended = &mut renewal => {
                result = match ended {
                    Ok(Err(error)) => Err(error),
                    Ok(Ok(())) | Err(_) => Ok(()),
                };
                break;
            }
        }
    }
    // Stop gathering before giving up membership: the operator reassigns as soon as the Lease is
    // gone, and the new owner must not gather while this one still does.
    runtime.stop_tasks().await;
    membership.cancel();
    let _ = renewal.await;
    release_lease(&leases, &pod).await;
    output_status_stop.cancel();
    let _ = output_status.await;
    result
}

/// Renews the Lease every [`LEASE_RENEW`] until `stop` fires; ends with an error only when
/// retrying cannot help (RBAC forbids the write).
async fn renew_lease_until(
    leases: Api<Lease>,
    pod: PodIdentity,
    placement: CollectorPlacement,
    mut leaving: watch::Receiver<bool>,
    stop: CancellationToken,
) -> Result<(), ClusterError> {
    let mut renew = tokio::time::interval(LEASE_RENEW);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = renew.tick() => {
                let draining = *leaving.borrow();
                renew_lease(&leases, &pod, placement, draining).await?;
            }
            // Tell the operator at once, not at the next renewal.
            Ok(()) = leaving.changed() => {
                let draining = *leaving.borrow_and_update();
                renew_lease(&leases, &pod, placement, draining).await?;
            }
        }
    }
}

async fn renew_lease(leases: &Api<Lease>, pod: &PodIdentity, placement: CollectorPlacement, leaving: bool) -> Result<(), ClusterError> {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let mut lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LEASE_ROLE_LABEL.to_owned(), "collector".to_owned()),
                (PLACEMENT_LABEL.to_owned(), format!("{placement:?}")),
            ])),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(pod.name.clone()),
            lease_duration_seconds: i32::try_from(LEASE_DURATION.as_secs()).ok(),
            renew_time: Some(now),
            ..Default::default()
        }),
    };
    // Every renewal applies the whole set: an annotation left out would be removed.
    let mut annotations = BTreeMap::new();
    if let Some(node) = &pod.node {
        annotations.insert("metricshard.io/node".to_owned(), node.clone());
    }
    if leaving {
        annotations.insert(LEASE_DRAINING_ANNOTATION.to_owned(), "true".to_owned());
    }
    if !annotations.is_empty() {
        lease.metadata.annotations = Some(annotations);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match leases.patch(&pod.name, &params, &Patch::Apply(&lease)).await {
        Ok(_) => Ok(()),
        // Forbidden means the chart's RBAC is wrong: retrying cannot help, so say so and stop.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            Err(ClusterError::Lease { name: pod.name.clone(), source: kube::Error::Api(status) })
        }
        Err(error) => {
            tracing::warn!(lease = %pod.name, "renewing the membership lease failed, will retry: {error}");
            Ok(())
        }
    }
}

async fn release_lease(leases: &Api<Lease>, pod: &PodIdentity) {
    match leases.delete(&pod.name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(lease = %pod.name, "released the membership lease"),
        Err(error) => tracing::warn!(lease = %pod.name, "releasing the membership lease failed: {error}"),
    }
}

/// What was last written for one input.
struct WrittenStatus {
    readiness: Readiness,
    generation: i64,
    at: Instant,
}

/// Writes the `Ready` condition and runtime facts of inputs whose readiness changed, or whose
/// last write is older than [`STATUS_REFRESH`], at most [`STATUS_WRITES_PER_CHECK`] at a time.
async fn write_statuses(
    client: &Client,
    board: &StatusBoard,
    inputs: &Store<MetricInput>,
    written: &mut HashMap<TaskKey, WrittenStatus>,
) {
    let snapshot = board.snapshot();
    written.retain(|key, _| snapshot.contains_key(key));
    let mut writes = 0;
    for (key, status) in snapshot {
        let readiness = status.readiness();
        let current = written.get(&key).is_some_and(|last| {
            last.readiness == readiness && last.generation == status.generation && last.at.elapsed() < STATUS_REFRESH
        });
        if current || writes >= STATUS_WRITES_PER_CHECK {
            continue;
        }
        let Some((namespace, name)) = key.as_str().split_once('/') else { continue };
        let Some(input) = inputs.state().into_iter().find(|i| i.namespace().as_deref() == Some(namespace) && i.name_any() == name)
        else {
            continue;
        };
        let previous = input.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        let transition = previous
            .filter(|c| c.status == readiness.status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        let last_gather = status.last_success.and_then(|time| {
            let nanos = i128::try_from(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos()).ok()?;
            k8s_openapi::jiff::Timestamp::from_nanosecond(nanos).ok().map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
        });
        let last_error = status.delivery_problem.clone().or_else(|| status.gather_problem.as_ref().map(|(_, m)| m.clone()));
        let patch = serde_json::json!({
            "apiVersion": "metricshard.io/v1alpha1",
            "kind": "MetricInput",
            "metadata": { "name": name },
            "status": {
                "lastGatherTime": last_gather,
                "lastGatherSamples": status.last_samples,
                "lastError": last_error,
                "conditions": [{
                    "type": "Ready",
                    "status": readiness.status,
                    "reason": readiness.reason,
                    "message": readiness.message,
                    "observedGeneration": status.generation,
                    "lastTransitionTime": transition,
                }],
            },
        });
        let api: Api<MetricInput> = Api::namespaced(client.clone(), namespace);
        writes += 1;
        match api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
            Ok(_) => {
                written.insert(key, WrittenStatus { readiness, generation: status.generation, at: Instant::now() });
            }
            Err(error) => tracing::warn!(input = %key, "writing the input status failed, will retry: {error}"),
        }
    }
}
