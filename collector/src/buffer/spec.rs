//! Turns an output's `buffer` spec into the buffer its pipeline uses.

use metricshard_crds::BufferSpec;
use metricshard_crds::output::{EffectiveBuffer, RedisBuffer};

use super::Buffer;
use super::memory::MemoryBuffer;
use super::redis::{RedisBuffer as RedisQueue, RedisBufferConfig, RedisBufferError};
use crate::routing::OutputId;

/// Builds the buffer of `output`: memory unless `redis` is set. Never connects: a Redis buffer
/// connects on first use and retries from then on, so an unreachable Redis cannot stop the
/// output from starting (nor any other output). Fails only on an unusable URL.
pub fn build(spec: &BufferSpec, output: &OutputId) -> Result<Box<dyn Buffer>, RedisBufferError> {
    build_queue(spec, output, None)
}

/// Builds the buffer of one queue of `output`: with `queue` set (one address of a fanned-out
/// output), a Redis buffer's keys get `:<queue>` after the output's prefix, so every address has
/// partitions, leases and acknowledgements of its own.
pub fn build_queue(spec: &BufferSpec, output: &OutputId, queue: Option<&str>) -> Result<Box<dyn Buffer>, RedisBufferError> {
    match spec.effective() {
        EffectiveBuffer::Memory(memory) => Ok(Box::new(MemoryBuffer::new(memory.max_samples))),
        EffectiveBuffer::Redis(redis) => {
            let mut config = RedisBufferConfig::new(&redis.url, queue_prefix(&output_prefix(redis, output), queue));
            config.max_samples = redis.max_samples;
            config.lease = redis.lease_duration.get();
            Ok(Box::new(RedisQueue::start(config)?))
        }
    }
}

/// The key prefix of a Redis-buffered output: its `keyPrefix`, or the default.
pub fn output_prefix(redis: &RedisBuffer, output: &OutputId) -> String {
    redis.key_prefix.clone().unwrap_or_else(|| default_key_prefix(output))
}

/// The key prefix of one queue of an output (see [`build_queue`]).
pub fn queue_prefix(output_prefix: &str, queue: Option<&str>) -> String {
    match queue {
        Some(queue) => format!("{output_prefix}:{queue}"),
        None => output_prefix.to_owned(),
    }
}

/// `metricshard:v1:<Kind>/<namespace>/<name>`: unique per output, and versioned with the layout.
pub fn default_key_prefix(output: &OutputId) -> String {
    format!("metricshard:v1:{output}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use metricshard_crds::OutputKind;

    #[test]
    fn prefixes_differ_per_output_and_carry_no_hash_tag_braces() {
        let a = OutputId { kind: OutputKind::MetricOutput, namespace: Some("team-a".into()), name: "vm".into() };
        let b = OutputId { kind: OutputKind::ClusterMetricOutput, namespace: None, name: "vm".into() };
        assert_eq!(default_key_prefix(&a), "metricshard:v1:MetricOutput/team-a/vm");
        assert_ne!(default_key_prefix(&a), default_key_prefix(&b));
        assert!(!default_key_prefix(&b).contains(['{', '}']));
    }

    #[tokio::test]
    async fn an_unreachable_redis_does_not_stop_the_build() {
        let spec: BufferSpec = serde_json::from_str(r#"{"redis": {"url": "redis://127.0.0.1:1/0"}}"#).unwrap();
        let output = OutputId { kind: OutputKind::MetricOutput, namespace: Some("demo".into()), name: "out".into() };
        let buffer = build(&spec, &output).unwrap();
        assert_eq!(buffer.len(), 0);
        let bad: BufferSpec = serde_json::from_str(r#"{"redis": {"url": "not a url"}}"#).unwrap();
        assert!(build(&bad, &output).is_err());
        assert!(build(&BufferSpec::default(), &output).is_ok());
    }
}
