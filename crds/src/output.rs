//! `MetricOutput` and `ClusterMetricOutput`: where samples go, how they are batched and buffered.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::ObjectStatus;
pub use crate::protocol::OutputProtocol;
use crate::duration::Duration;

/// Where samples go, for inputs of the same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "metricshard.io",
    version = "v1alpha1",
    kind = "MetricOutput",
    namespaced,
    doc = "Where samples go, for inputs of the same namespace: protocol, batching and buffering.",
    status = "ObjectStatus",
    cel,
    shortname = "mo",
    category = "metricshard",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MetricOutputSpec {
    /// Protocol and destination. Exactly one field is set.
    pub protocol: OutputProtocol,
    /// When a batch is sent.
    #[serde(default)]
    pub batch: BatchSpec,
    /// Where samples wait until their batch has been written.
    #[serde(default)]
    pub buffer: BufferSpec,
}

/// Where samples go, for inputs of every namespace its `namespaceSelector` admits.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "metricshard.io",
    version = "v1alpha1",
    kind = "ClusterMetricOutput",
    doc = "Where samples go, for inputs of every namespace its namespaceSelector admits.",
    status = "ObjectStatus",
    cel,
    shortname = "cmo",
    category = "metricshard",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMetricOutputSpec {
    /// Namespaces whose inputs may send here. An empty selector admits every namespace; an
    /// absent one admits none, so sharing a cluster output is always an explicit decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Protocol and destination. Exactly one field is set.
    pub protocol: OutputProtocol,
    /// When a batch is sent.
    #[serde(default)]
    pub batch: BatchSpec,
    /// Where samples wait until their batch has been written.
    #[serde(default)]
    pub buffer: BufferSpec,
}

/// The part of an output that does not depend on its scope.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSettings<'a> {
    /// Protocol and destination.
    pub protocol: &'a OutputProtocol,
    /// Batching.
    pub batch: &'a BatchSpec,
    /// Buffering.
    pub buffer: &'a BufferSpec,
}

impl MetricOutputSpec {
    /// The scope-independent settings.
    pub fn settings(&self) -> OutputSettings<'_> {
        OutputSettings { protocol: &self.protocol, batch: &self.batch, buffer: &self.buffer }
    }
}

impl ClusterMetricOutputSpec {
    /// The scope-independent settings.
    pub fn settings(&self) -> OutputSettings<'_> {
        OutputSettings { protocol: &self.protocol, batch: &self.batch, buffer: &self.buffer }
    }
}

/// When a batch is sent: as soon as it holds `maxSamples`, or when `flushInterval` (plus up to
/// `flushJitter`) has passed since the last send, whichever comes first.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.flushInterval) > duration('0s')").message("batch.flushInterval must be greater than zero").field_path(".flushInterval"))]
pub struct BatchSpec {
    /// Largest number of samples in one write.
    #[serde(default = "default_batch_max_samples")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_samples: u32,
    /// Longest time a sample waits for its batch to fill.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: Duration,
    /// Largest random delay added to each flush interval, so that many collectors do not write
    /// in lock-step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_jitter: Option<Duration>,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self { max_samples: default_batch_max_samples(), flush_interval: default_flush_interval(), flush_jitter: None }
    }
}

fn default_batch_max_samples() -> u32 {
    1000
}

fn default_flush_interval() -> Duration {
    Duration::from_std(std::time::Duration::from_secs(1))
}

/// Where samples wait until the output has written them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BufferSpec {
    /// Keep samples in the collector's memory. Lost if the collector dies.
    #[serde(default)]
    pub memory: MemoryBuffer,
    /// What happens when the buffer holds `maxSamples` and more arrive.
    #[serde(default)]
    pub when_full: FullBehaviour,
}

impl Default for BufferSpec {
    fn default() -> Self {
        Self { memory: MemoryBuffer::default(), when_full: FullBehaviour::default() }
    }
}

/// A bounded in-memory buffer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryBuffer {
    /// Most samples held at once.
    #[serde(default = "default_memory_max_samples")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_samples: u64,
}

impl Default for MemoryBuffer {
    fn default() -> Self {
        Self { max_samples: default_memory_max_samples() }
    }
}

fn default_memory_max_samples() -> u64 {
    100_000
}

/// What a full buffer does with new samples.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum FullBehaviour {
    /// Drop the oldest buffered samples to make room, and count them in
    /// `metricshard_output_dropped_samples_total{reason="buffer_full"}`.
    #[default]
    DropOldest,
}
