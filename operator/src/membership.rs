//! Which collectors are alive: those whose Lease record changed within its duration, judged on
//! the operator's own clock (as client-go's leader election does), so clock skew between a
//! collector and the operator never makes a live collector look dead or a dead one alive.
//!
//! A collector renews its Lease every 5 s with a 15 s duration. A collector that stops renewing
//! (SIGKILL, node loss, partition) drops out 15 s after its last renewal was *observed*; one that
//! shuts down cleanly deletes its Lease and drops out at once. A freshly started operator counts
//! every existing Lease as just renewed, and drops the dead ones one duration later.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::assignment::CollectorId;

/// One collector Lease as membership needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Holder identity: the collector's pod name.
    pub holder: String,
    /// The renew time as written (compared for change only, never against our clock).
    pub renew_time: String,
    /// The lease duration the holder promised.
    pub duration: Duration,
    /// The holder is leaving (annotation `metricshard.io/draining`): still live, so a move away
    /// from it is fenced, but it gets no inputs.
    pub draining: bool,
}

/// Tracks when each collector's Lease last changed.
#[derive(Debug, Default)]
pub struct MembershipTracker {
    seen: BTreeMap<String, (String, Instant)>,
}

impl MembershipTracker {
    /// Records the current Leases (at `now`) and returns the live collectors, sorted.
    pub fn observe(&mut self, leases: &[LeaseRecord], now: Instant) -> Vec<CollectorId> {
        self.seen.retain(|holder, _| leases.iter().any(|lease| &lease.holder == holder));
        let mut live = Vec::new();
        for lease in leases.iter().filter(|lease| !lease.holder.is_empty()) {
            let entry = self.seen.entry(lease.holder.clone()).or_insert_with(|| (lease.renew_time.clone(), now));
            if entry.0 != lease.renew_time {
                *entry = (lease.renew_time.clone(), now);
            }
            if now.saturating_duration_since(entry.1) < lease.duration {
                live.push(CollectorId::new(lease.holder.clone()));
            }
        }
        live.sort();
        live.dedup();
        live
    }

    /// When the next collector would expire if nothing changes, for scheduling a re-check.
    pub fn next_expiry(&self, leases: &[LeaseRecord], now: Instant) -> Option<Duration> {
        leases
            .iter()
            .filter_map(|lease| {
                let (_, since) = self.seen.get(&lease.holder)?;
                let expires = *since + lease.duration;
                (expires > now).then(|| expires - now)
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renew: &str) -> LeaseRecord {
        LeaseRecord { holder: holder.into(), renew_time: renew.into(), duration: Duration::from_secs(15), draining: false }
    }

    fn names(live: &[CollectorId]) -> Vec<&str> {
        live.iter().map(CollectorId::as_str).collect()
    }

    #[test]
    fn renewing_collectors_stay_and_silent_ones_expire_after_one_duration() {
        let mut tracker = MembershipTracker::default();
        let start = Instant::now();
        let leases = [lease("c-0", "t0"), lease("c-1", "t0")];
        assert_eq!(names(&tracker.observe(&leases, start)), ["c-0", "c-1"]);
        // c-0 renews every 5 s, c-1 went silent at start.
        for step in 1..=3u32 {
            let now = start + Duration::from_secs(5 * u64::from(step));
            let leases = [lease("c-0", &format!("t{step}")), lease("c-1", "t0")];
            let live = tracker.observe(&leases, now);
            let expected: &[&str] = if step < 3 { &["c-0", "c-1"] } else { &["c-0"] };
            assert_eq!(names(&live), expected, "at {}s", 5 * step);
        }
    }

    #[test]
    fn a_deleted_lease_leaves_at_once_and_a_returning_collector_counts_again() {
        let mut tracker = MembershipTracker::default();
        let start = Instant::now();
        tracker.observe(&[lease("c-0", "t0"), lease("c-1", "t0")], start);
        assert_eq!(names(&tracker.observe(&[lease("c-0", "t1")], start + Duration::from_secs(1))), ["c-0"]);
        let back = tracker.observe(&[lease("c-0", "t2"), lease("c-1", "t9")], start + Duration::from_secs(2));
        assert_eq!(names(&back), ["c-0", "c-1"]);
    }

    #[test]
    fn the_next_expiry_is_the_earliest_silent_deadline() {
        let mut tracker = MembershipTracker::default();
        let start = Instant::now();
        let leases = [lease("c-0", "t0")];
        tracker.observe(&leases, start);
        assert_eq!(tracker.next_expiry(&leases, start + Duration::from_secs(4)), Some(Duration::from_secs(11)));
        assert_eq!(tracker.next_expiry(&leases, start + Duration::from_secs(20)), None);
    }
}
