//! Queues of an output that no destination uses any more. A fanned-out output keeps one Redis
//! queue per address (`<prefix>:node/<node>/<address hash>`), and a single-`url` output one queue
//! under the plain prefix. When an address leaves the spec, or the output switches between a
//! single `url` and `fanOut`, the old queue's samples have no delivery loop left: without this
//! they would stay in Redis for good.
//!
//! Every collector running the output looks for such queues and discards them, counting the
//! samples, once a queue has been orphaned for a grace period. A queue counts as orphaned only
//! when all of these hold, so live data is never taken:
//! - no running destination of this collector's spec uses it;
//! - no collector heartbeats in its member set (a collector still running an older or newer
//!   generation of the output that uses the queue heartbeats there);
//! - its partitions' `tail`s did not move during the grace period (nobody pushed);
//! - the deleting script finds no lease on the partition and the `tail` it was shown.
//!
//! Each partition is deleted by one atomic script, so when several collectors reclaim at once
//! exactly one of them counts each partition's samples.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use ::redis::aio::ConnectionManager;

use super::scripts::Scripts;
use super::{PARTITIONS, PartitionKeys, RedisBufferError, integers};

/// One queue discarded by [`OrphanedQueues::pass`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// The queue's key prefix.
    pub queue: String,
    /// Samples it held that were never delivered.
    pub samples: u64,
}

/// A queue found orphaned, and what it looked like then.
#[derive(Debug)]
struct Orphan {
    since: Instant,
    /// `tail` per partition that holds keys.
    tails: BTreeMap<u16, u64>,
}

/// Finds and discards the orphaned queues of one output (see the module docs).
pub struct OrphanedQueues {
    connection: ConnectionManager,
    output_prefix: String,
    live: BTreeSet<String>,
    grace: Duration,
    orphans: BTreeMap<String, Orphan>,
    scripts: Scripts,
}

impl OrphanedQueues {
    /// Watches the queues under `output_prefix` (the output's plain prefix); `live` are the
    /// queue prefixes its running destinations use. Connects lazily.
    pub fn new(url: &str, output_prefix: impl Into<String>, live: impl IntoIterator<Item = String>, grace: Duration) -> Result<Self, RedisBufferError> {
        let client = ::redis::Client::open(url).map_err(RedisBufferError::Url)?;
        let connection = ConnectionManager::new_lazy_with_config(client, super::manager_config(super::DEFAULT_RESPONSE_TIMEOUT))
            .map_err(RedisBufferError::Url)?;
        Ok(Self {
            connection,
            output_prefix: output_prefix.into(),
            live: live.into_iter().collect(),
            grace,
            orphans: BTreeMap::new(),
            scripts: Scripts::new(),
        })
    }

    /// One look at Redis: notes queues that became orphaned, forgets ones that came back, and
    /// discards those orphaned for the whole grace period. Returns what was discarded.
    pub async fn pass(&mut self) -> Result<Vec<Discarded>, RedisBufferError> {
        let found = self.queues_in_redis().await?;
        self.orphans.retain(|queue, _| found.contains_key(queue));
        let mut discarded = Vec::new();
        for (queue, partitions) in found {
            if self.live.contains(&queue) {
                continue;
            }
            let members: i64 = self.scripts.live_members.key(format!("{queue}:members")).invoke_async(&mut self.connection).await?;
            if members > 0 {
                self.orphans.remove(&queue);
                continue;
            }
            let tails = self.tails(&queue, &partitions).await?;
            let settled = match self.orphans.get(&queue) {
                Some(orphan) if orphan.tails == tails => orphan.since.elapsed() >= self.grace,
                _ => {
                    self.orphans.insert(queue.clone(), Orphan { since: Instant::now(), tails });
                    false
                }
            };
            if settled
                && let Some(orphan) = self.orphans.remove(&queue)
                && let Some(samples) = self.discard_queue(&queue, &orphan.tails).await?
            {
                discarded.push(Discarded { queue, samples });
            }
        }
        Ok(discarded)
    }

    /// Queue prefixes under the output's prefix that hold partition keys, with those partitions.
    async fn queues_in_redis(&mut self) -> Result<BTreeMap<String, BTreeSet<u16>>, RedisBufferError> {
        let pattern = format!("{{{}:*}}:m", glob_escape(&self.output_prefix));
        let mut keys: Vec<String> = Vec::new();
        let mut iter: ::redis::AsyncIter<'_, String> = self.connection.scan_match(&pattern).await?;
        while let Some(key) = futures::StreamExt::next(&mut iter).await {
            keys.push(key?);
        }
        let mut queues: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for key in keys {
            if let Some((queue, partition)) = parse_meta_key(&self.output_prefix, &key) {
                queues.entry(queue).or_default().insert(partition);
            }
        }
        Ok(queues)
    }

    async fn tails(&mut self, queue: &str, partitions: &BTreeSet<u16>) -> Result<BTreeMap<u16, u64>, RedisBufferError> {
        let mut pipe = ::redis::pipe();
        for partition in partitions {
            pipe.cmd("HGET").arg(PartitionKeys::of(queue, *partition).meta).arg("tail");
        }
        let tails: Vec<Option<u64>> = pipe.query_async(&mut self.connection).await?;
        Ok(partitions.iter().copied().zip(tails).map(|(partition, tail)| (partition, tail.unwrap_or(0))).collect())
    }

    /// Deletes the queue's partitions that are still unleased and untouched; the samples they
    /// held, or `None` when every partition was left alone (it is looked at again next pass).
    async fn discard_queue(&mut self, queue: &str, tails: &BTreeMap<u16, u64>) -> Result<Option<u64>, RedisBufferError> {
        let mut pipe = ::redis::pipe();
        pipe.load_script(&self.scripts.discard).ignore();
        for (partition, tail) in tails {
            let keys = PartitionKeys::of(queue, *partition);
            pipe.invoke_script(self.scripts.discard.key(&keys.stream).key(&keys.meta).key(&keys.lease).arg(*tail));
        }
        let replies: ::redis::Value = pipe.query_async(&mut self.connection).await?;
        let deleted: Vec<u64> = integers(&replies)?.into_iter().filter_map(|held| u64::try_from(held).ok()).collect();
        Ok((!deleted.is_empty()).then(|| deleted.iter().sum()))
    }
}

/// The queue prefix and partition of a meta key `{<queue>:<partition>}:m` under `output_prefix`:
/// the plain queue (`<output_prefix>`) or a fan-out queue (`<output_prefix>:node/...`). Keys of
/// anything else that happens to match the scan pattern are not ours: `None`.
fn parse_meta_key(output_prefix: &str, key: &str) -> Option<(String, u16)> {
    let inner = key.strip_prefix('{')?.strip_suffix("}:m")?;
    let (queue, partition) = inner.rsplit_once(':')?;
    let partition: u16 = partition.parse().ok().filter(|p| *p < PARTITIONS)?;
    let ours = queue == output_prefix
        || queue.strip_prefix(output_prefix).and_then(|rest| rest.strip_prefix(":node/")).is_some_and(|rest| !rest.contains(':'));
    ours.then(|| (queue.to_owned(), partition))
}

/// Escapes Redis glob characters so a prefix matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_keys_of_the_output_parse_and_others_do_not() {
        let prefix = "metricshard:v1:MetricOutput/team-a/vm";
        assert_eq!(parse_meta_key(prefix, &format!("{{{prefix}:3}}:m")), Some((prefix.to_owned(), 3)));
        let queue = format!("{prefix}:node/a/0123456789abcdef");
        assert_eq!(parse_meta_key(prefix, &format!("{{{queue}:15}}:m")), Some((queue, 15)));
        // Another output whose name starts like this one's, a stream key, a partition out of range.
        assert_eq!(parse_meta_key(prefix, &format!("{{{prefix}2:3}}:m")), None);
        assert_eq!(parse_meta_key(prefix, &format!("{{{prefix}:3}}:s")), None);
        assert_eq!(parse_meta_key(prefix, &format!("{{{prefix}:16}}:m")), None);
        assert_eq!(parse_meta_key(prefix, &format!("{{{prefix}:other:3}}:m")), None);
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("metricshard:v1:MetricOutput/ns/name"), "metricshard:v1:MetricOutput/ns/name");
    }
}
