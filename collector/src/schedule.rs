//! Phase-aligned gather schedules.
//!
//! Tick `k` of a task is at `k·interval + offset + jitter(k)` nanoseconds after the Unix epoch,
//! where `offset` is derived from the task's key and `jitter(k)` from the key and `k`. Nothing
//! depends on when or where the task started, so two collectors running the same input compute
//! the same instants and the same tick numbers. That is what lets a task move between
//! collectors without a gap or a duplicate: the new owner's first tick is the old owner's next.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One scheduled gather.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick {
    /// Tick number: the interval count since the Unix epoch.
    pub index: u64,
    /// When it fires, in nanoseconds since the Unix epoch.
    pub at_unix_nanos: u64,
}

impl Tick {
    /// The tick time in milliseconds since the Unix epoch, used as the default sample timestamp.
    pub fn at_unix_millis(&self) -> i64 {
        i64::try_from(self.at_unix_nanos / 1_000_000).unwrap_or(i64::MAX)
    }

    /// The tick time as a `SystemTime`.
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.at_unix_nanos)
    }
}

/// The schedule of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    key_hash: u64,
    interval_nanos: u64,
    jitter_nanos: u64,
    offset_nanos: u64,
}

impl Schedule {
    /// The schedule of the task `key` (e.g. `namespace/name`). `jitter` is clamped below
    /// `interval`; a zero interval is treated as one millisecond.
    pub fn new(key: &str, interval: Duration, jitter: Duration) -> Self {
        let interval_nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX).max(1_000_000);
        let jitter_nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX).min(interval_nanos - 1);
        let key_hash = stable_hash(key.as_bytes());
        Self { key_hash, interval_nanos, jitter_nanos, offset_nanos: key_hash % interval_nanos }
    }

    /// The offset of every tick within its interval, before jitter.
    pub fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos)
    }

    /// The interval between ticks.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// When tick `index` fires, in nanoseconds since the epoch (saturating).
    pub fn tick_time(&self, index: u64) -> u64 {
        let jitter = if self.jitter_nanos == 0 { 0 } else { mix(self.key_hash ^ mix(index)) % (self.jitter_nanos + 1) };
        index.saturating_mul(self.interval_nanos).saturating_add(self.offset_nanos).saturating_add(jitter)
    }

    /// The first tick firing at or after `unix_nanos`.
    pub fn first_tick_at_or_after(&self, unix_nanos: u64) -> Tick {
        // Ticks increase strictly (jitter < interval), so start one interval early and walk.
        let mut index = (unix_nanos / self.interval_nanos).saturating_sub(2);
        loop {
            let at = self.tick_time(index);
            if at >= unix_nanos || at == u64::MAX {
                return Tick { index, at_unix_nanos: at };
            }
            index += 1;
        }
    }

    /// The first tick at or after `now` whose index is greater than `after` (if any).
    pub fn next_tick(&self, now: SystemTime, after: Option<u64>) -> Tick {
        let tick = self.first_tick_at_or_after(unix_nanos(now));
        match after {
            Some(previous) if tick.index <= previous => {
                Tick { index: previous + 1, at_unix_nanos: self.tick_time(previous + 1) }
            }
            _ => tick,
        }
    }
}

/// Nanoseconds since the Unix epoch (zero before it).
pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// FNV-1a followed by a SplitMix64 finaliser: tiny, fixed forever, and identical on every
/// machine and Rust version, which a std `Hasher` does not promise.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn hash_is_fixed_forever() {
        // A change here would move every task's phase on upgrade: never change the function.
        assert_eq!(stable_hash(b"default/collector-self"), stable_hash(b"default/collector-self"));
        assert_ne!(stable_hash(b"a/b"), stable_hash(b"a/c"));
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
    }

    proptest! {
        /// Two collectors that start the same task at different times agree on every tick from
        /// the later start on: the later one's ticks are a suffix of the earlier one's.
        #[test]
        fn collectors_started_at_different_times_agree_on_ticks(
            key in "[a-z]{1,8}/[a-z]{1,8}",
            interval_ms in 1u64..120_000,
            jitter_permille in 0u64..1000,
            start_a in 0u64..10_000 * SEC,
            delay in 0u64..1_000 * SEC,
        ) {
            let interval = Duration::from_millis(interval_ms);
            let schedule = Schedule::new(&key, interval, interval * u32::try_from(jitter_permille).unwrap() / 1000);
            let other = Schedule::new(&key, interval, interval * u32::try_from(jitter_permille).unwrap() / 1000);
            let start_b = 1_600_000_000 * SEC + start_a + delay;
            let start_a = 1_600_000_000 * SEC + start_a;
            let mut tick_a = schedule.first_tick_at_or_after(start_a);
            while tick_a.at_unix_nanos < start_b {
                tick_a = Tick { index: tick_a.index + 1, at_unix_nanos: schedule.tick_time(tick_a.index + 1) };
            }
            prop_assert_eq!(tick_a, other.first_tick_at_or_after(start_b));
        }

        /// The offset is stable and within the interval; spacing stays within interval ± jitter.
        #[test]
        fn ticks_keep_phase_and_bounded_spacing(
            key in "[a-z]{1,8}/[a-z]{1,8}",
            interval_ms in 1u64..120_000,
            jitter_permille in 0u64..1000,
            position in 0.0f64..1.0,
        ) {
            let interval = Duration::from_millis(interval_ms);
            // Any tick within the range of u64 nanoseconds since the epoch (until the year 2554).
            let last_index = u64::MAX / u64::try_from(interval.as_nanos()).unwrap() - 2;
            let index = (position * last_index as f64) as u64;
            let jitter = interval * u32::try_from(jitter_permille).unwrap() / 1000;
            let schedule = Schedule::new(&key, interval, jitter);
            prop_assert!(schedule.offset() < interval);
            let interval_nanos = u64::try_from(interval.as_nanos()).unwrap();
            let jitter_nanos = u64::try_from(jitter.as_nanos()).unwrap();
            let t0 = schedule.tick_time(index);
            let t1 = schedule.tick_time(index + 1);
            prop_assert!(t1 > t0);
            prop_assert!(t1 - t0 >= interval_nanos - jitter_nanos && t1 - t0 <= interval_nanos + jitter_nanos);
            let phase = (t0 - index * interval_nanos).saturating_sub(schedule.offset_nanos);
            prop_assert!(phase <= jitter_nanos);
        }

        /// `next_tick` never repeats or skips backwards past a tick already gathered.
        #[test]
        fn next_tick_always_advances(key in "[a-z]{1,8}", interval_ms in 1u64..10_000, now in 0u64..1_000_000 * SEC) {
            let schedule = Schedule::new(&key, Duration::from_millis(interval_ms), Duration::ZERO);
            let now = UNIX_EPOCH + Duration::from_nanos(now);
            let first = schedule.next_tick(now, None);
            let second = schedule.next_tick(now, Some(first.index));
            prop_assert_eq!(second.index, first.index + 1);
        }
    }
}
