//! The operator's side of a fenced handover (pure: no kube, no I/O, no clock reads).
//!
//! Moving an input from a live collector A to B writes, in the same server-side apply as the new
//! label, `metricshard.io/previous-collector=A` and `metricshard.io/handover-at=T` with
//! T = now + margin: A gathers the ticks scheduled before T, B those at or after. A move away
//! from a dead collector writes no fence (B starts at once). While a fence is pending the input
//! is not moved again: a second move would need a second fence while the first is in flight,
//! and deferring it for at most the margin keeps every tick with exactly one owner. The fence
//! annotation is dropped [`FENCE_RETENTION`] after T; `previous-collector` stays as history.

use std::collections::BTreeMap;
use std::time::Duration;

/// Annotation naming the collector an input was moved away from.
pub const PREVIOUS_COLLECTOR_ANNOTATION: &str = "metricshard.io/previous-collector";
/// Annotation with the fence instant of a handover between live collectors (RFC 3339).
pub const HANDOVER_AT_ANNOTATION: &str = "metricshard.io/handover-at";
/// How long the fence annotation stays after the fence, so that a collector that notices a
/// move late can still tell (and count) that it was late.
pub const FENCE_RETENTION: Duration = Duration::from_secs(30);
/// The default margin between writing a move and its fence: well above watch latency (tens of
/// milliseconds) plus clock skew between nodes (milliseconds under NTP).
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(2);

/// Why an input's handover annotations cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    /// `handover-at` is not an RFC 3339 timestamp after the Unix epoch.
    #[error("annotation {HANDOVER_AT_ANNOTATION}: {value:?} is not an RFC 3339 timestamp after 1970: {reason}")]
    BadFence {
        /// The annotation's value.
        value: String,
        /// What the parser said.
        reason: String,
    },
}

/// The handover annotations of an input, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandoverState {
    /// `previous-collector`, if any.
    pub previous: Option<String>,
    /// `handover-at` as written (kept verbatim, so an unchanged plan rewrites nothing).
    pub fence_text: Option<String>,
    /// `handover-at` in nanoseconds since the Unix epoch; `None` when absent or unreadable.
    pub fence_unix_nanos: Option<u64>,
}

impl HandoverState {
    /// Reads the operator's annotations. An unreadable fence is returned as the error beside the
    /// state: the caller reports it and the fence counts as absent (it gets rewritten or dropped).
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> (Self, Option<HandoverError>) {
        let fence_text = annotations.get(HANDOVER_AT_ANNOTATION).cloned();
        let (fence_unix_nanos, error) = match fence_text.as_deref().map(parse_fence) {
            Some(Ok(fence)) => (Some(fence), None),
            Some(Err(error)) => (None, Some(error)),
            None => (None, None),
        };
        (Self { previous: annotations.get(PREVIOUS_COLLECTOR_ANNOTATION).cloned(), fence_text, fence_unix_nanos }, error)
    }

    /// True while the fence is ahead of `now`: the input must not move again yet.
    pub fn is_pending(&self, now_unix_nanos: u64) -> bool {
        self.fence_unix_nanos.is_some_and(|fence| fence > now_unix_nanos)
    }

    /// The annotations an input keeps when the plan does not move it: the fence until
    /// [`FENCE_RETENTION`] after it, `previous-collector` always.
    pub fn kept(&self, now_unix_nanos: u64) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::new();
        if let Some(previous) = &self.previous {
            annotations.insert(PREVIOUS_COLLECTOR_ANNOTATION.to_owned(), previous.clone());
        }
        if let (Some(text), Some(fence)) = (&self.fence_text, self.fence_unix_nanos)
            && now_unix_nanos < fence.saturating_add(nanos(FENCE_RETENTION))
        {
            annotations.insert(HANDOVER_AT_ANNOTATION.to_owned(), text.clone());
        }
        annotations
    }

    /// When the annotations change without any event: the fence passing (the input may move
    /// again) or its retention ending.
    pub fn next_change(&self, now_unix_nanos: u64) -> Option<u64> {
        let fence = self.fence_unix_nanos?;
        [fence, fence.saturating_add(nanos(FENCE_RETENTION))].into_iter().find(|at| *at > now_unix_nanos)
    }
}

/// The annotations of an input that moves from `from` (its current label, if any) at
/// `now_unix_nanos`. A fence only when `from` is a live collector (it is still gathering) and the
/// margin is not zero (zero disables fencing: the old behaviour, kept to demonstrate the fence).
pub fn move_annotations(from: Option<&str>, from_is_live: bool, now_unix_nanos: u64, margin: Duration) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    let Some(from) = from else { return annotations };
    annotations.insert(PREVIOUS_COLLECTOR_ANNOTATION.to_owned(), from.to_owned());
    if from_is_live && !margin.is_zero() {
        annotations.insert(HANDOVER_AT_ANNOTATION.to_owned(), format_fence(fence_after(now_unix_nanos, margin)));
    }
    annotations
}

/// `now + margin`, rounded up to the millisecond (the annotation's precision).
pub fn fence_after(now_unix_nanos: u64, margin: Duration) -> u64 {
    let at = now_unix_nanos.saturating_add(nanos(margin));
    at.div_ceil(1_000_000).saturating_mul(1_000_000)
}

/// RFC 3339 in UTC with milliseconds where needed, e.g. `2025-01-01T00:00:02.5Z`.
pub fn format_fence(unix_nanos: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(unix_nanos)).map_or_else(|_| String::new(), |t| t.to_string())
}

/// Parses an RFC 3339 fence into nanoseconds since the Unix epoch.
pub fn parse_fence(value: &str) -> Result<u64, HandoverError> {
    let bad = |reason: String| HandoverError::BadFence { value: value.to_owned(), reason };
    let timestamp: k8s_openapi::jiff::Timestamp = value.parse().map_err(|e: k8s_openapi::jiff::Error| bad(e.to_string()))?;
    u64::try_from(timestamp.as_nanosecond()).map_err(|_| bad("before the Unix epoch".to_owned()))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const NOW: u64 = 1_700_000_000 * SEC + 123_456_789;

    #[test]
    fn a_move_between_live_collectors_is_fenced_a_move_from_a_dead_one_is_not() {
        let fenced = move_annotations(Some("c-0"), true, NOW, DEFAULT_MARGIN);
        assert_eq!(fenced[PREVIOUS_COLLECTOR_ANNOTATION], "c-0");
        assert_eq!(fenced[HANDOVER_AT_ANNOTATION], "2023-11-14T22:13:22.124Z");
        assert_eq!(parse_fence(&fenced[HANDOVER_AT_ANNOTATION]), Ok(NOW + 2 * SEC + 543_211));
        let from_dead = move_annotations(Some("c-0"), false, NOW, DEFAULT_MARGIN);
        assert_eq!(from_dead, BTreeMap::from([(PREVIOUS_COLLECTOR_ANNOTATION.to_owned(), "c-0".to_owned())]));
        assert!(move_annotations(None, false, NOW, DEFAULT_MARGIN).is_empty(), "a new input has no previous collector");
        let disabled = move_annotations(Some("c-0"), true, NOW, Duration::ZERO);
        assert!(!disabled.contains_key(HANDOVER_AT_ANNOTATION));
    }

    #[test]
    fn a_fence_is_pending_until_it_passes_then_kept_for_the_retention() {
        let annotations = move_annotations(Some("c-0"), true, NOW, DEFAULT_MARGIN);
        let (state, error) = HandoverState::from_annotations(&annotations);
        assert_eq!(error, None);
        let fence = state.fence_unix_nanos.unwrap();
        assert!(state.is_pending(NOW) && state.is_pending(fence - 1) && !state.is_pending(fence));
        // Unmoved, the annotations are kept verbatim: an unchanged plan writes nothing.
        assert_eq!(state.kept(NOW), annotations);
        assert_eq!(state.next_change(NOW), Some(fence));
        assert_eq!(state.next_change(fence), Some(fence + 30 * SEC));
        let after = state.kept(fence + 30 * SEC);
        assert_eq!(after, BTreeMap::from([(PREVIOUS_COLLECTOR_ANNOTATION.to_owned(), "c-0".to_owned())]));
        assert_eq!(state.next_change(fence + 30 * SEC), None);
    }

    #[test]
    fn an_unreadable_fence_is_reported_and_counts_as_absent() {
        let annotations = BTreeMap::from([
            (PREVIOUS_COLLECTOR_ANNOTATION.to_owned(), "c-0".to_owned()),
            (HANDOVER_AT_ANNOTATION.to_owned(), "later".to_owned()),
        ]);
        let (state, error) = HandoverState::from_annotations(&annotations);
        assert!(error.unwrap().to_string().contains(HANDOVER_AT_ANNOTATION));
        assert!(!state.is_pending(NOW));
        assert!(!state.kept(NOW).contains_key(HANDOVER_AT_ANNOTATION), "an unreadable fence is dropped");
    }
}
