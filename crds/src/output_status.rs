//! Status of `MetricOutput` and `ClusterMetricOutput`: besides the common conditions, what each
//! collector sees of each backend address.
//!
//! Every collector runs every output (docs/cluster-mode.md), so reachability and queue figures
//! are per collector. Each collector writes only its own entry of `collectors` with server-side
//! apply under a field manager of its own; `collectors` is a map-list keyed by `collector`, so
//! the apiserver merges the entries of different collectors instead of replacing the list.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of an output.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, following the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// What each collector running this output sees of its backend addresses; one entry per
    /// collector, written by that collector only. An entry whose `updateTime` is old belongs to a
    /// collector that died without removing it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["collector"]))]
    pub collectors: Vec<CollectorOutputStatus>,
}

/// One collector's view of an output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorOutputStatus {
    /// Pod name of the collector.
    pub collector: String,
    /// When the collector last wrote this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<Time>,
    /// The `metadata.generation` of the output the collector runs, or refuses to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why the collector does not run `observedGeneration` (a Secret or key that is missing, an
    /// address it cannot use); absent while it runs it. A refused output has no `nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// One entry per address of every node (one node named `default` when the output has a
    /// single `url`, or writes to stdout or a file).
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
}

/// One address of one node, as one collector sees it. Counters count since the collector
/// started running this generation of the output.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// The address (URL, or file path).
    pub address: String,
    /// False after a write failed with a retryable error (network, 5xx, 429, timeout) and until
    /// a write succeeds; true after a successful write or when nothing has been written yet.
    pub reachable: bool,
    /// The last write error, while not reachable or after a rejected batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Samples waiting in this address's buffer (for a Redis buffer: this collector's view of
    /// the shared queue).
    pub buffer_depth: u64,
    /// Samples the address accepted.
    pub written: u64,
    /// Failed writes that will be retried.
    pub retried: u64,
    /// Samples dropped: rejected by the backend, beyond the buffer's limit, or not
    /// representable in the protocol.
    pub dropped: u64,
    /// When a write last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write_time: Option<Time>,
}
