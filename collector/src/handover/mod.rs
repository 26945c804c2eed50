//! Fenced handover of an input between live collectors: the pure decisions (no kube, no I/O).
//!
//! When the operator moves an input from a live collector A to B, it writes in the same
//! server-side apply as the new label `metricshard.io/collector=B` the annotations
//! `metricshard.io/previous-collector=A` and `metricshard.io/handover-at=T` (RFC 3339, T is now
//! plus a margin). Ticks *scheduled* before T belong to A, ticks at or after T to B. Both compare the
//! same deterministic tick instants with the same T, so the split is exact: no tick twice, and the
//! gap across the handover is the input's own spacing — provided each side learns of the move
//! before T (the margin covers watch latency and clock skew; see docs/cluster-mode.md).
//!
//! B sees the input arrive in its shard and starts it fenced at T ([`arrival_window`]). A no
//! longer sees it through its label-selected watch, so on the removal it reads the object once
//! and decides with [`departure`]: drain until T, stop at once, or keep it (it came back).
//! A move away from a dead collector carries no `handover-at`: the new owner starts at once.

mod tracker;

pub use tracker::HandoverTracker;

use std::collections::BTreeMap;

use crate::engine::TickWindow;

/// Annotation naming the collector an input was moved away from.
pub const PREVIOUS_COLLECTOR_ANNOTATION: &str = "metricshard.io/previous-collector";
/// Annotation with the fence instant of a handover between live collectors (RFC 3339).
pub const HANDOVER_AT_ANNOTATION: &str = "metricshard.io/handover-at";

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

/// The handover an input carries, from its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The collector the input was moved away from.
    pub previous: String,
    /// The fence: ticks scheduled before it are the previous collector's. `None` for a move
    /// away from a dead collector (no fence: the new owner starts at once).
    pub fence_unix_nanos: Option<u64>,
}

impl Handover {
    /// Reads the handover annotations; `Ok(None)` when the input carries none.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, HandoverError> {
        let Some(previous) = annotations.get(PREVIOUS_COLLECTOR_ANNOTATION) else { return Ok(None) };
        let fence_unix_nanos = annotations.get(HANDOVER_AT_ANNOTATION).map(|value| parse_fence(value)).transpose()?;
        Ok(Some(Self { previous: previous.clone(), fence_unix_nanos }))
    }

    /// The fence, when this handover has one and it is still ahead of `now_unix_nanos`.
    pub fn pending_fence(&self, now_unix_nanos: u64) -> Option<u64> {
        self.fence_unix_nanos.filter(|fence| *fence > now_unix_nanos)
    }
}

/// Parses an RFC 3339 fence instant into nanoseconds since the Unix epoch.
pub fn parse_fence(value: &str) -> Result<u64, HandoverError> {
    let bad = |reason: String| HandoverError::BadFence { value: value.to_owned(), reason };
    let timestamp: k8s_openapi::jiff::Timestamp = value.parse().map_err(|e: k8s_openapi::jiff::Error| bad(e.to_string()))?;
    u64::try_from(timestamp.as_nanosecond()).map_err(|_| bad("before the Unix epoch".to_owned()))
}

/// The ticks this collector (`me`) gathers of an input in its shard: those at or after the fence
/// when the input was handed over to it by another collector, every tick otherwise. A fence in
/// the past selects every tick from now on, so it needs no special case.
pub fn arrival_window(me: &str, handover: Option<&Handover>) -> TickWindow {
    match handover {
        Some(Handover { previous, fence_unix_nanos: Some(fence) }) if previous != me => TickWindow::starting_at(*fence),
        _ => TickWindow::ALL,
    }
}

/// How a handover into this collector's shard is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Fenced, and seen before the fence: the previous owner gathers up to it.
    Fenced,
    /// Fenced, but seen only after the fence: the ticks between the fence and now were missed.
    Late,
}

impl Arrival {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fenced => "fenced",
            Self::Late => "late",
        }
    }
}

/// Classifies an input newly in this collector's shard: `None` when it is not a fenced handover
/// from another collector (a new input, a move from a dead collector, a restart of this one).
pub fn classify_arrival(me: &str, handover: Option<&Handover>, now_unix_nanos: u64) -> Option<Arrival> {
    let handover = handover.filter(|h| h.previous != me)?;
    let fence = handover.fence_unix_nanos?;
    Some(if fence > now_unix_nanos { Arrival::Fenced } else { Arrival::Late })
}

/// An input as the apiserver has it now, read after it left this collector's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentAssignment {
    /// Its `metricshard.io/collector` label.
    pub collector: Option<String>,
    /// Its handover annotations.
    pub handover: Option<Handover>,
}

/// What becomes of a task whose input left this collector's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// Gather the ticks before the fence, then stop.
    Drain {
        /// The fence, in nanoseconds since the Unix epoch.
        until_unix_nanos: u64,
    },
    /// Stop now.
    Stop(StopReason),
    /// The input is (again) this collector's: keep the task as it is; the watch brings the
    /// object back.
    Keep,
}

/// Why a departed input's task stops at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The input is gone.
    Deleted,
    /// Moved without a fence for this collector (it was judged dead, or the input was
    /// relabelled by hand): the new owner starts at once.
    Unfenced,
    /// Moved with a fence that had already passed when this collector noticed: ticks from the
    /// fence until now may have been gathered twice.
    Late,
}

impl StopReason {
    /// Metric label value of a handover out (`None` for a deletion, which is no handover).
    pub fn handover_label(self) -> Option<&'static str> {
        match self {
            Self::Deleted => None,
            Self::Unfenced => Some("unfenced"),
            Self::Late => Some("late"),
        }
    }
}

/// Decides what this collector (`me`) does with a task whose input left its shard, given the
/// input as read from the apiserver afterwards (`None`: not found).
pub fn departure(me: &str, current: Option<&CurrentAssignment>, now_unix_nanos: u64) -> Departure {
    let Some(current) = current else { return Departure::Stop(StopReason::Deleted) };
    if current.collector.as_deref() == Some(me) {
        return Departure::Keep;
    }
    match &current.handover {
        Some(Handover { previous, fence_unix_nanos: Some(fence) }) if previous == me => {
            if *fence > now_unix_nanos {
                Departure::Drain { until_unix_nanos: *fence }
            } else {
                Departure::Stop(StopReason::Late)
            }
        }
        _ => Departure::Stop(StopReason::Unfenced),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const NOW: u64 = 1_700_000_000 * SEC;

    fn fenced(previous: &str, fence: u64) -> Handover {
        Handover { previous: previous.to_owned(), fence_unix_nanos: Some(fence) }
    }

    fn current(collector: &str, handover: Option<Handover>) -> CurrentAssignment {
        CurrentAssignment { collector: Some(collector.to_owned()), handover }
    }

    #[test]
    fn annotations_parse_and_a_bad_fence_names_the_annotation() {
        let mut annotations = BTreeMap::from([(PREVIOUS_COLLECTOR_ANNOTATION.to_owned(), "c-0".to_owned())]);
        assert_eq!(Handover::from_annotations(&annotations), Ok(Some(Handover { previous: "c-0".into(), fence_unix_nanos: None })));
        annotations.insert(HANDOVER_AT_ANNOTATION.to_owned(), "2023-11-14T22:13:20.250Z".to_owned());
        assert_eq!(Handover::from_annotations(&annotations), Ok(Some(fenced("c-0", NOW + SEC / 4))));
        annotations.insert(HANDOVER_AT_ANNOTATION.to_owned(), "soon".to_owned());
        let error = Handover::from_annotations(&annotations).unwrap_err();
        assert!(error.to_string().contains(HANDOVER_AT_ANNOTATION), "{error}");
        assert_eq!(Handover::from_annotations(&BTreeMap::new()), Ok(None));
    }

    #[test]
    fn the_new_owner_starts_at_the_fence_and_everyone_else_gathers_every_tick() {
        assert_eq!(arrival_window("c-1", Some(&fenced("c-0", NOW))), TickWindow::starting_at(NOW));
        // A move from a dead collector has no fence.
        let unfenced = Handover { previous: "c-0".into(), fence_unix_nanos: None };
        assert_eq!(arrival_window("c-1", Some(&unfenced)), TickWindow::ALL);
        assert_eq!(arrival_window("c-1", None), TickWindow::ALL);
        // Handed back to the collector that drained it: its own fence does not bind it.
        assert_eq!(arrival_window("c-0", Some(&fenced("c-0", NOW))), TickWindow::ALL);
    }

    #[test]
    fn arrivals_count_only_fenced_handovers_from_another_collector() {
        assert_eq!(classify_arrival("c-1", Some(&fenced("c-0", NOW + SEC)), NOW), Some(Arrival::Fenced));
        assert_eq!(classify_arrival("c-1", Some(&fenced("c-0", NOW)), NOW), Some(Arrival::Late));
        assert_eq!(classify_arrival("c-0", Some(&fenced("c-0", NOW + SEC)), NOW), None);
        assert_eq!(classify_arrival("c-1", Some(&Handover { previous: "c-0".into(), fence_unix_nanos: None }), NOW), None);
        assert_eq!(classify_arrival("c-1", None, NOW), None);
    }

    #[test]
    fn the_previous_owner_drains_until_a_future_fence() {
        let moved = current("c-1", Some(fenced("c-0", NOW + 2 * SEC)));
        assert_eq!(departure("c-0", Some(&moved), NOW), Departure::Drain { until_unix_nanos: NOW + 2 * SEC });
        // Noticed after the fence: stop, and say the fence was late.
        assert_eq!(departure("c-0", Some(&moved), NOW + 3 * SEC), Departure::Stop(StopReason::Late));
    }

    #[test]
    fn deleted_unfenced_and_foreign_handovers_stop_at_once() {
        assert_eq!(departure("c-0", None, NOW), Departure::Stop(StopReason::Deleted));
        let from_dead = current("c-1", Some(Handover { previous: "c-0".into(), fence_unix_nanos: None }));
        assert_eq!(departure("c-0", Some(&from_dead), NOW), Departure::Stop(StopReason::Unfenced));
        // A fence between two other collectors gives this one nothing to gather.
        let other = current("c-2", Some(fenced("c-1", NOW + 2 * SEC)));
        assert_eq!(departure("c-0", Some(&other), NOW), Departure::Stop(StopReason::Unfenced));
        let unlabelled = CurrentAssignment { collector: None, handover: None };
        assert_eq!(departure("c-0", Some(&unlabelled), NOW), Departure::Stop(StopReason::Unfenced));
    }

    #[test]
    fn an_input_that_is_still_ours_is_kept() {
        let back = current("c-0", Some(fenced("c-1", NOW + SEC)));
        assert_eq!(departure("c-0", Some(&back), NOW), Departure::Keep);
    }
}
