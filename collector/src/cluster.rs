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
//! lapse. On SIGTERM the tasks stop first, then the Lease is deleted so the operator reassigns at
//! once; after a crash it expires after [`LEASE_DURATION`].

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
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::{Readiness, StatusBoard, TaskKey};
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
            desired.inputs.insert(key, DesiredInput { generation, input: (*input).clone() });
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
    let stores = Stores {
        inputs: reflect(Api::all(client.clone()), watcher::Config::default().labels(&selector), changed.clone(), shutdown.clone()),
        outputs: reflect(Api::all(client.clone()), watcher::Config::default(), changed.clone(), shutdown.clone()),
        cluster_outputs: reflect(Api::all(client.clone()), watcher::Config::default(), changed.clone(), shutdown.clone()),
        namespaces: reflect(Api::all(client.clone()), watcher::Config::default(), changed.clone(), shutdown.clone()),
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
    // The Lease is renewed by its own task: an apply that waits for outputs to drain must never
    // delay a renewal past the Lease duration and cost this collector its inputs.
    let membership = CancellationToken::new();
    let mut renewal = tokio::spawn(renew_lease_until(leases.clone(), pod.clone(), placement, membership.clone()));
    let mut result = Ok(());
    let mut secret_watches = SecretWatches::new(client.clone(), changed.clone(), shutdown.clone(), pod.namespace.clone());
    loop {
        let mut desired = stores.desired();
        desired.secrets = secret_watches.follow(&desired).await;
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
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = changed.notified() => {
                // Coalesce a burst (a relist delivers every object) into one apply.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = status_check.tick() => write_statuses(&client, &board, &stores.inputs, &mut written).await,
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
    result
}

/// Renews the Lease every [`LEASE_RENEW`] until `stop` fires; ends with an error only when
/// retrying cannot help (RBAC forbids the write).
async fn renew_lease_until(
    leases: Api<Lease>,
    pod: PodIdentity,
    placement: CollectorPlacement,
    stop: CancellationToken,
) -> Result<(), ClusterError> {
    let mut renew = tokio::time::interval(LEASE_RENEW);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = renew.tick() => renew_lease(&leases, &pod, placement).await?,
        }
    }
}

async fn renew_lease(leases: &Api<Lease>, pod: &PodIdentity, placement: CollectorPlacement) -> Result<(), ClusterError> {
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
    if let Some(node) = &pod.node {
        lease.metadata.annotations = Some(BTreeMap::from([("metricshard.io/node".to_owned(), node.clone())]));
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
