//! Pushing chunks into partitions. A chunk's stream id is `<first sequence>-<count>`, so a push
//! must read the partition's `tail` and append at it atomically: the `push` script
//! (`scripts.rs`) does that, and drops the oldest queued samples beyond the limit, counted.
//!
//! Measured alternative, not used: `WATCH` the partition's bookkeeping, read `tail`, then
//! `MULTI` / plain `XADD` / `HSET` / `EXEC`, retried when another client wrote the partition in
//! between. It keeps the chunk out of Lua and halves Redis' time per push (≈ 95 against ≈ 150 µs
//! of commands per 1 000 samples pushed, batched and acknowledged), but needs a second round trip
//! and a connection of its own (a watch does not survive the shared connection's reconnects), and
//! on the 2-core test machine the round trip costs more than the Lua copy saves (see
//! docs/redis-buffer.md, "Throughput").

use std::collections::BTreeMap;

use ::redis::Value;
use ::redis::aio::ConnectionManager;

use super::{CHUNK_SAMPLES, RedisBufferError, Shared, codec, integers, partition_of};
use crate::sample::Sample;

/// Encoded chunks of one push round: `(partition, sample count, bytes)`, in push order within
/// each partition.
pub(super) type Chunks = Vec<(u16, u64, Vec<u8>)>;

/// What a push round did.
#[derive(Debug, Default)]
pub(super) struct Pushed {
    /// Samples dropped for room.
    pub(super) dropped: u64,
    /// Samples held afterwards, per partition written.
    pub(super) held: BTreeMap<u16, u64>,
}

/// Writes the chunks through the `push` script, one invocation per chunk, in one round trip.
pub(super) async fn push_chunks(shared: &Shared, connection: &mut ConnectionManager, chunks: &Chunks) -> Result<Pushed, RedisBufferError> {
    let mut pipe = ::redis::pipe();
    // Loaded at the head of the pipeline: after a Redis restart the script is gone, and a
    // NOSCRIPT on one chunk but not the next would reorder them.
    pipe.cmd("SCRIPT").arg("LOAD").arg(&shared.scripts.push_source);
    let limit = shared.config.partition_limit();
    for (partition, count, bytes) in chunks {
        let keys = shared.keys(*partition)?;
        pipe.cmd("EVALSHA")
            .arg(shared.scripts.push.get_hash())
            .arg(2)
            .arg(&keys.stream)
            .arg(&keys.meta)
            .arg(*count)
            .arg(limit)
            .arg(bytes.as_slice());
    }
    let replies: Vec<Value> = pipe.query_async(connection).await?;
    let mut pushed = Pushed::default();
    for ((partition, _, _), reply) in chunks.iter().zip(replies.iter().skip(1)) {
        let numbers = integers(reply)?;
        let [chunk_dropped, held] = numbers[..] else {
            return Err(RedisBufferError::Reply(format!("push returned {reply:?}")));
        };
        pushed.dropped += u64::try_from(chunk_dropped).unwrap_or(0);
        pushed.held.insert(*partition, u64::try_from(held).unwrap_or(0));
    }
    Ok(pushed)
}

/// Splits samples into encoded chunks per partition, keeping push order within each partition.
pub(super) fn chunk_by_partition(samples: &[Sample], partitions: u16) -> Chunks {
    // Consecutive samples mostly come from one scrape: reuse the last target's partition.
    let mut last: Option<(&str, &str, u16)> = None;
    let assigned: Vec<u16> = samples
        .iter()
        .map(|sample| {
            let target = (sample.labels.get("job"), sample.labels.get("instance"));
            match (last, target) {
                (Some((job, instance, p)), (Some(j), Some(i))) if job == j && instance == i => p,
                _ => {
                    let p = partition_of(sample, partitions);
                    last = match target {
                        (Some(j), Some(i)) => Some((j, i, p)),
                        _ => None,
                    };
                    p
                }
            }
        })
        .collect();
    let mut chunks = Vec::new();
    if let Some(&first) = assigned.first().filter(|first| assigned.iter().all(|p| p == *first)) {
        // One target, one partition: encode straight from the slice.
        for part in samples.chunks(CHUNK_SAMPLES) {
            chunks.push((first, part.len() as u64, codec::encode(part)));
        }
        return chunks;
    }
    let mut groups: BTreeMap<u16, Vec<&Sample>> = BTreeMap::new();
    for (sample, partition) in samples.iter().zip(assigned) {
        groups.entry(partition).or_default().push(sample);
    }
    for (partition, group) in groups {
        for part in group.chunks(CHUNK_SAMPLES) {
            chunks.push((partition, part.len() as u64, codec::encode_refs(part.iter().copied())));
        }
    }
    chunks
}
