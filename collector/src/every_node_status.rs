//! Status of `EveryNode` inputs: many collectors run the same input, so none of them may own its
//! `Ready` condition (they would overwrite each other on every write). Each collector instead
//! server-side-applies its own entry of `status.nodes` (a list map keyed by `node`) with a field
//! manager of its own (`metricshard-collector-<node>`), and applies an empty list once it stops
//! running the input, which removes exactly the entry it owned.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use metricshard_crds::MetricInput;

use crate::engine::{Readiness, StatusBoard, TaskKey};

/// An unchanged entry is rewritten this often, to refresh `lastGatherTime`.
pub const NODE_STATUS_REFRESH: Duration = Duration::from_secs(60);
/// Most writes per check.
pub const NODE_STATUS_WRITES_PER_CHECK: usize = 50;

/// The field manager of one node's entries.
pub fn field_manager(node: &str) -> String {
    // Field managers are limited to 128 characters; node names to 253.
    let mut manager = format!("metricshard-collector-{node}");
    manager.truncate(128);
    manager
}

/// What was last written for one input.
pub struct WrittenNodeStatus {
    readiness: Readiness,
    generation: i64,
    at: Instant,
}

/// Writes this node's entry of every running input whose readiness changed or whose entry is
/// older than [`NODE_STATUS_REFRESH`], and removes the entries of inputs no longer running here.
pub async fn write(
    client: &Client,
    node: &str,
    board: &StatusBoard,
    inputs: &Store<MetricInput>,
    written: &mut HashMap<TaskKey, WrittenNodeStatus>,
) {
    let params = PatchParams::apply(&field_manager(node)).force();
    let snapshot = board.snapshot();
    let stopped: Vec<TaskKey> = written.keys().filter(|key| !snapshot.contains_key(key)).cloned().collect();
    for key in stopped {
        written.remove(&key);
        let Some((namespace, name)) = key.as_str().split_once('/') else { continue };
        let patch = serde_json::json!({
            "apiVersion": "metricshard.io/v1alpha1", "kind": "MetricInput", "metadata": { "name": name },
            "status": { "nodes": [] },
        });
        let api: Api<MetricInput> = Api::namespaced(client.clone(), namespace);
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {}
            // The input is gone, and its status with it.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => tracing::warn!(input = %key, "removing this node's status entry failed: {error}"),
        }
    }
    let mut writes = 0;
    for (key, status) in snapshot {
        let readiness = status.readiness();
        let current = written.get(&key).is_some_and(|last| {
            last.readiness == readiness && last.generation == status.generation && last.at.elapsed() < NODE_STATUS_REFRESH
        });
        if current || writes >= NODE_STATUS_WRITES_PER_CHECK {
            continue;
        }
        let Some((namespace, name)) = key.as_str().split_once('/') else { continue };
        if !inputs.state().iter().any(|i| i.namespace().as_deref() == Some(namespace) && i.name_any() == name) {
            continue;
        }
        let last_gather = status.last_success.and_then(|time| {
            let nanos = i128::try_from(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos()).ok()?;
            k8s_openapi::jiff::Timestamp::from_nanosecond(nanos).ok().map(Time)
        });
        let patch = serde_json::json!({
            "apiVersion": "metricshard.io/v1alpha1", "kind": "MetricInput", "metadata": { "name": name },
            "status": { "nodes": [{
                "node": node,
                "ready": readiness.status,
                "reason": readiness.reason,
                "message": readiness.message,
                "observedGeneration": status.generation,
                "lastGatherTime": last_gather,
                "lastGatherSamples": status.last_samples,
            }]},
        });
        writes += 1;
        let api: Api<MetricInput> = Api::namespaced(client.clone(), namespace);
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {
                written.insert(key, WrittenNodeStatus { readiness, generation: status.generation, at: Instant::now() });
            }
            Err(error) => tracing::warn!(input = %key, "writing this node's status entry failed, will retry: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_managers_fit_the_api_limit() {
        assert_eq!(field_manager("node-a"), "metricshard-collector-node-a");
        assert_eq!(field_manager(&"n".repeat(253)).len(), 128);
    }
}
