//! What the operator wrote and its watch may not show yet.
//!
//! A reconcile can run before the watch delivered the operator's own previous writes (a lagging
//! watch, a timer wake-up). Planning from the stale view would redo a move, and for a fenced move
//! that means a *new* fence instant written over one the collectors already act on: the old
//! owner would drain until the first, the new owner wait for the second, and the ticks between
//! would be lost. So the operator plans from what it wrote until its watch shows the same, like
//! the expectations of client-go controllers. Entries expire, so a hand edit of the operator's
//! fields is not overridden for long.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::assignment::InputKey;

/// How long a write is trusted over a watch that does not show it.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(10);

/// Labels and annotations the operator owns on one input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedFields {
    /// Operator-owned labels.
    pub labels: BTreeMap<String, String>,
    /// Operator-owned annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The operator's recent writes.
#[derive(Debug, Default)]
pub struct WrittenAssignments {
    written: HashMap<InputKey, (OwnedFields, Instant)>,
}

impl WrittenAssignments {
    /// The fields to plan with for `key`: what was written, while the watch (`seen`) lags behind
    /// it; what the watch shows once it caught up or the write is older than the TTL.
    pub fn current(&mut self, key: &InputKey, seen: OwnedFields, now: Instant) -> OwnedFields {
        match self.written.get(key) {
            Some((fields, at)) if *fields != seen && now.saturating_duration_since(*at) < EXPECTATION_TTL => fields.clone(),
            Some(_) => {
                self.written.remove(key);
                seen
            }
            None => seen,
        }
    }

    /// Records a successful write.
    pub fn record(&mut self, key: InputKey, fields: OwnedFields, now: Instant) {
        self.written.insert(key, (fields, now));
    }

    /// Forgets inputs that no longer exist.
    pub fn retain(&mut self, exists: impl Fn(&InputKey) -> bool) {
        self.written.retain(|key, _| exists(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(collector: &str, fence: &str) -> OwnedFields {
        OwnedFields {
            labels: BTreeMap::from([("metricshard.io/collector".to_owned(), collector.to_owned())]),
            annotations: BTreeMap::from([("metricshard.io/handover-at".to_owned(), fence.to_owned())]),
        }
    }

    #[test]
    fn a_lagging_watch_is_overridden_until_it_catches_up() {
        let key = InputKey::from("ns/a");
        let start = Instant::now();
        let mut written = WrittenAssignments::default();
        written.record(key.clone(), fields("c-1", "T1"), start);
        // The watch still shows the old owner: plan with what was written (no second fence).
        assert_eq!(written.current(&key, fields("c-0", ""), start + Duration::from_secs(1)), fields("c-1", "T1"));
        // Caught up: the entry is dropped and the watch rules again.
        assert_eq!(written.current(&key, fields("c-1", "T1"), start + Duration::from_secs(2)), fields("c-1", "T1"));
        assert_eq!(written.current(&key, fields("c-2", "T9"), start + Duration::from_secs(3)), fields("c-2", "T9"));
    }

    #[test]
    fn a_write_the_watch_never_shows_expires() {
        let key = InputKey::from("ns/a");
        let start = Instant::now();
        let mut written = WrittenAssignments::default();
        written.record(key.clone(), fields("c-1", "T1"), start);
        assert_eq!(written.current(&key, fields("c-0", ""), start + EXPECTATION_TTL), fields("c-0", ""));
    }
}
