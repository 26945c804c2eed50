//! Pieces shared by every kind: output references and status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which kind of output a [`OutputRef`] names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, Default)]
pub enum OutputKind {
    /// A `MetricOutput` in the input's own namespace.
    #[default]
    MetricOutput,
    /// A cluster-scoped `ClusterMetricOutput` whose `namespaceSelector` admits the input's namespace.
    ClusterMetricOutput,
}

/// A reference from an input to one output it sends to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputRef {
    /// Name of the output object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Kind of the output object: `MetricOutput` (same namespace, the default) or `ClusterMetricOutput`.
    #[serde(default)]
    pub kind: OutputKind,
}

/// Status shared by every kind: the generation last acted on and kstatus-style conditions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, `Ready` first among them, following the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
