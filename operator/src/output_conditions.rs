//! Writes the `Ready` condition of every `MetricOutput` and `ClusterMetricOutput` from the
//! collectors' entries in its status ([`crate::output_ready`]), and removes the entries of
//! collectors gone for good. The leader does it, with the operator's field manager, only when
//! something changes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use metricshard_crds::watch::reflect;
use metricshard_crds::{ClusterMetricOutput, CollectorOutputStatus, MetricOutput, OutputStatus};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::controller::FIELD_MANAGER;
use crate::output_ready::{Readiness, readiness, stale_entries};

/// How long a change waits for more before the outputs are looked at.
const COALESCE: Duration = Duration::from_millis(200);
/// Outputs are looked at this often even when nothing changes, so that left-over entries age out
/// (within this much of their retention).
const RECHECK: Duration = Duration::from_secs(10);

/// The outputs of the cluster, as watched.
pub struct OutputWatches {
    outputs: Store<MetricOutput>,
    cluster_outputs: Store<ClusterMetricOutput>,
}

impl OutputWatches {
    /// Starts watching both kinds; `changed` is notified on every event.
    pub fn start(client: &Client, changed: Arc<Notify>, shutdown: CancellationToken) -> Self {
        Self {
            outputs: reflect(Api::all(client.clone()), watcher::Config::default(), changed.clone(), shutdown.clone()),
            cluster_outputs: reflect(Api::all(client.clone()), watcher::Config::default(), changed, shutdown),
        }
    }

    /// Returns once both watches have listed (or ended: that only happens on shutdown, which
    /// the caller watches for).
    async fn wait_until_ready(&self) {
        let (_, _) = futures::future::join(self.outputs.wait_until_ready(), self.cluster_outputs.wait_until_ready()).await;
    }

    /// Keeps every output's `Ready` condition current until `shutdown`: on every change of an
    /// output and of `writers` (the live collectors while this operator leads, `None` while it
    /// does not). Its own loop with its own notifications: collectors update output status
    /// every few seconds, and that must not wake the assignment of every input.
    pub async fn run(
        self,
        client: Client,
        changed: Arc<Notify>,
        mut writers: watch::Receiver<Option<BTreeSet<String>>>,
        retention: Duration,
        shutdown: CancellationToken,
    ) {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = self.wait_until_ready() => {}
        }
        loop {
            let live = writers.borrow_and_update().clone();
            if let Some(live) = live {
                self.write_ready(&client, &live, retention).await;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                // Coalesce a burst of status writes by several collectors into one pass.
                () = changed.notified() => tokio::time::sleep(COALESCE).await,
                result = writers.changed() => if result.is_err() { return },
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Writes each output's `Ready` condition where it changed, as seen with `live` collectors.
    async fn write_ready(&self, client: &Client, live: &BTreeSet<String>, retention: Duration) {
        for output in self.outputs.state() {
            let namespace = output.namespace().unwrap_or_default();
            let api: Api<MetricOutput> = Api::namespaced(client.clone(), &namespace);
            write_one(&api, output.as_ref(), output.status.as_ref(), live, retention).await;
        }
        for output in self.cluster_outputs.state() {
            let api: Api<ClusterMetricOutput> = Api::all(client.clone());
            write_one(&api, output.as_ref(), output.status.as_ref(), live, retention).await;
        }
    }
}

async fn write_one<K>(api: &Api<K>, output: &K, status: Option<&OutputStatus>, live: &BTreeSet<String>, retention: Duration)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Some(status) = status {
        prune(api, output, status, live, retention).await;
    }
    let generation = output.meta().generation;
    let wanted = readiness(generation, status.map_or(&[][..], |s| &s.collectors[..]), live);
    let current = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let unchanged = current.is_some_and(|c| {
        c.status == wanted.status && c.reason == wanted.reason && c.message == wanted.message && c.observed_generation == generation
    });
    if unchanged {
        return;
    }
    let condition = condition(&wanted, current, generation);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": output.name_any() },
        "status": { "observedGeneration": generation, "conditions": [condition] },
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if let Err(error) = api.patch_status(&output.name_any(), &params, &Patch::Apply(&patch)).await {
        tracing::warn!(output = %output.name_any(), "writing the output's Ready condition failed, will retry: {error}");
    }
}

/// Removes the entries of collectors gone for `retention` (see
/// [`crate::output_ready::stale_entries`]). A merge patch replaces the list with the remaining
/// entries, guarded by the resource version: a collector writing its entry meanwhile makes it
/// fail (409), and the next pass tries again with what that collector wrote.
async fn prune<K>(api: &Api<K>, output: &K, status: &OutputStatus, live: &BTreeSet<String>, retention: Duration)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let stale = stale_entries(&status.collectors, live, k8s_openapi::jiff::Timestamp::now(), retention);
    if stale.is_empty() {
        return;
    }
    let remaining: Vec<&CollectorOutputStatus> =
        status.collectors.iter().filter(|entry| !stale.contains(&entry.collector)).collect();
    let patch = json!({
        "metadata": { "resourceVersion": output.meta().resource_version },
        "status": { "collectors": remaining },
    });
    match api.patch_status(&output.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(output = %output.name_any(), ?stale, "removed the status entries of collectors gone for good"),
        Err(error) => tracing::debug!(output = %output.name_any(), "pruning status entries, will retry: {error}"),
    }
}

/// The condition for `wanted`; the transition time moves only when the status flips, as the API
/// conventions ask.
fn condition(wanted: &Readiness, current: Option<&Condition>, generation: Option<i64>) -> Condition {
    let transition = current
        .filter(|c| c.status == wanted.status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: "Ready".into(),
        status: wanted.status.into(),
        reason: wanted.reason.into(),
        message: wanted.message.clone(),
        observed_generation: generation,
        last_transition_time: transition,
    }
}
