//! `MetricOutput` and `ClusterMetricOutput`: where samples go, how they are batched and buffered.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::output_status::OutputStatus;
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
    status = "OutputStatus",
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
    status = "OutputStatus",
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

/// Where samples wait until the output has written them: in the collector's memory (the default,
/// when neither `memory` nor `redis` is set) or in Redis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.memory) && has(self.redis))").message("at most one of buffer.memory and buffer.redis may be set"))]
pub struct BufferSpec {
    /// Keep samples in the collector's memory. Lost if the collector dies. This is the buffer
    /// used when neither `memory` nor `redis` is set (with `maxSamples: 100000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryBuffer>,
    /// Keep samples in Redis until the backend has accepted them: they survive the collector
    /// being killed, and another collector running this output delivers them when this one is
    /// gone. See docs/redis-buffer.md for the design and the loss window of each Redis
    /// persistence setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisBuffer>,
    /// What happens when the buffer holds `maxSamples` and more arrive.
    #[serde(default)]
    pub when_full: FullBehaviour,
}

/// The buffer an output uses, after applying the default.
#[derive(Clone, Debug, PartialEq)]
pub enum EffectiveBuffer<'a> {
    /// In memory: `memory` was set, or neither was.
    Memory(MemoryBuffer),
    /// In Redis.
    Redis(&'a RedisBuffer),
}

impl BufferSpec {
    /// The buffer to build: `redis` when set, otherwise `memory` or its default.
    pub fn effective(&self) -> EffectiveBuffer<'_> {
        match (&self.redis, &self.memory) {
            (Some(redis), _) => EffectiveBuffer::Redis(redis),
            (None, memory) => EffectiveBuffer::Memory(memory.clone().unwrap_or_default()),
        }
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

/// A buffer in a Redis server, shared by every collector that runs this output. Samples are
/// spread over a fixed number of partitions by scrape target (`job` and `instance`), so every
/// sample of a series goes through one partition in order; each partition is delivered by one
/// collector at a time, under a lease that another collector takes over when it expires.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.leaseDuration) >= duration('1s') && duration(self.leaseDuration) <= duration('10m')").message("redis.leaseDuration must be between 1s and 10m").field_path(".leaseDuration"))]
pub struct RedisBuffer {
    /// Address of the Redis server, `redis://host:port/db` (port 6379 and database 0 when
    /// omitted). Configure that server with `maxmemory-policy noeviction` and AOF persistence.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() == 'redis'").message("redis.url must be an absolute redis:// URL"))]
    pub url: String,
    /// Prefix of every Redis key of this output. Defaults to one derived from the output's kind,
    /// namespace and name. Collectors find each other's data through it, so two outputs must
    /// never share a prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[A-Za-z0-9._:/-]+$"))]
    pub key_prefix: Option<String>,
    /// Most samples held in Redis for this output, over all collectors together, split evenly
    /// over its partitions. Beyond it the oldest samples not being written are dropped and
    /// counted in `metricshard_output_dropped_samples_total{reason="buffer_full"}`.
    #[serde(default = "default_redis_max_samples")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub max_samples: u64,
    /// How long a collector's claim on a partition lasts without renewal (it renews three times
    /// per period). When a collector dies, its partitions wait this long before another
    /// collector takes them over and delivers what they hold.
    #[serde(default = "default_lease_duration")]
    pub lease_duration: Duration,
    /// How long the Redis queue of a destination this output no longer has (an address removed
    /// from `fanOut`, or the switch between `url` and `fanOut`) is kept before its undelivered
    /// samples are discarded and counted in
    /// `metricshard_output_dropped_samples_total{reason="queue_orphaned"}`. Put the address back
    /// within this time and its queue is delivered. A queue that any collector still runs is
    /// never discarded.
    #[serde(default = "default_orphan_retention")]
    pub orphan_retention: Duration,
}

fn default_redis_max_samples() -> u64 {
    10_000_000
}

fn default_orphan_retention() -> Duration {
    Duration::from_std(std::time::Duration::from_secs(600))
}

fn default_lease_duration() -> Duration {
    Duration::from_std(std::time::Duration::from_secs(10))
}

/// What a full buffer does with new samples.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum FullBehaviour {
    /// Drop the oldest buffered samples to make room, and count them in
    /// `metricshard_output_dropped_samples_total{reason="buffer_full"}`.
    #[default]
    DropOldest,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ManifestObject, parse_documents};

    fn output_with_buffer(buffer: &str) -> String {
        format!(
            "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: out, namespace: demo}}\nspec:\n  protocol: {{stdout: {{}}}}\n  buffer: {buffer}\n"
        )
    }

    fn problems(yaml: &str) -> Vec<String> {
        parse_documents(yaml).into_iter().filter_map(Result::err).flat_map(|e| e.problems).map(|p| p.to_string()).collect()
    }

    fn buffer_of(yaml: &str) -> BufferSpec {
        match parse_documents(yaml).remove(0) {
            Ok(ManifestObject::Output(output)) => output.spec.buffer,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn memory_is_the_default_buffer_and_redis_replaces_it() {
        assert_eq!(buffer_of(&output_with_buffer("{}")).effective(), EffectiveBuffer::Memory(MemoryBuffer::default()));
        let redis = buffer_of(&output_with_buffer("{redis: {url: 'redis://127.0.0.1:6379/0'}}"));
        let EffectiveBuffer::Redis(redis) = redis.effective() else { panic!("{redis:?}") };
        assert_eq!(redis.max_samples, 10_000_000);
        assert_eq!(redis.lease_duration.as_str(), "10s");
        assert_eq!(redis.key_prefix, None);
    }

    #[test]
    fn at_most_one_buffer_and_redis_fields_are_checked() {
        let both = problems(&output_with_buffer("{memory: {maxSamples: 10}, redis: {url: 'redis://r:6379'}}"));
        assert!(both.iter().any(|p| p.contains("at most one of buffer.memory and buffer.redis")), "{both:?}");
        let scheme = problems(&output_with_buffer("{redis: {url: 'http://r:6379'}}"));
        assert!(scheme.iter().any(|p| p.contains("redis:// URL")), "{scheme:?}");
        let lease = problems(&output_with_buffer("{redis: {url: 'redis://r', leaseDuration: 500ms}}"));
        assert!(lease.iter().any(|p| p.contains("leaseDuration must be between 1s and 10m")), "{lease:?}");
        let prefix = problems(&output_with_buffer("{redis: {url: 'redis://r', keyPrefix: 'a{b}'}}"));
        assert!(!prefix.is_empty(), "a prefix with hash-tag braces must be refused");
        assert!(problems(&output_with_buffer("{redis: {url: 'redis://r:6379/2', keyPrefix: 'team-a:metrics'}}")).is_empty());
    }
}
