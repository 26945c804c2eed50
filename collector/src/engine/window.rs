//! Which ticks a task may gather: the fence of a handover, as the task loop sees it.
//!
//! A window is a half-open range of *scheduled* tick instants `[from, until)`. Both ends are
//! compared with the deterministic tick times of [`Schedule`], never with a clock reading, so two
//! collectors holding complementary windows (`[.., T)` and `[T, ..)`) split the ticks of an
//! input exactly, whatever their clocks and however late they wake up.

use crate::schedule::{Schedule, Tick};

/// The scheduled instants a task may gather, in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickWindow {
    /// Gather only ticks scheduled at or after this instant (a new owner's fence).
    pub from_unix_nanos: Option<u64>,
    /// Gather only ticks scheduled before this instant (a previous owner's drain).
    pub until_unix_nanos: Option<u64>,
}

impl TickWindow {
    /// Every tick.
    pub const ALL: Self = Self { from_unix_nanos: None, until_unix_nanos: None };

    /// Ticks scheduled at or after `from`.
    pub fn starting_at(from_unix_nanos: u64) -> Self {
        Self { from_unix_nanos: Some(from_unix_nanos), until_unix_nanos: None }
    }

    /// This window, ending before `until`.
    pub fn ending_before(self, until_unix_nanos: u64) -> Self {
        Self { until_unix_nanos: Some(until_unix_nanos), ..self }
    }

    /// True when a tick scheduled at `at_unix_nanos` belongs to this window.
    pub fn contains(&self, at_unix_nanos: u64) -> bool {
        self.from_unix_nanos.is_none_or(|from| at_unix_nanos >= from) && self.until_unix_nanos.is_none_or(|until| at_unix_nanos < until)
    }
}

/// What a task loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextTick {
    /// Wait for this tick and gather it.
    Gather(Tick),
    /// No tick of the window is left: wait until the window changes (or the task is stopped).
    Park,
}

/// The next tick to gather at or after `now_unix_nanos`, after the tick `after` (the last one
/// gathered, if any), within `window`.
pub fn next_in_window(schedule: &Schedule, now_unix_nanos: u64, after: Option<u64>, window: TickWindow) -> NextTick {
    let start = window.from_unix_nanos.map_or(now_unix_nanos, |from| from.max(now_unix_nanos));
    let mut tick = schedule.first_tick_at_or_after(start);
    if let Some(previous) = after
        && tick.index <= previous
    {
        tick = Tick { index: previous + 1, at_unix_nanos: schedule.tick_time(previous + 1) };
    }
    if window.until_unix_nanos.is_some_and(|until| tick.at_unix_nanos >= until) {
        NextTick::Park
    } else {
        NextTick::Gather(tick)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn ticks_gathered(schedule: &Schedule, start: u64, end: u64, window: TickWindow) -> Vec<u64> {
        // A loop that wakes exactly at each tick, as the task does.
        let mut gathered = Vec::new();
        let mut now = start;
        let mut last = None;
        while let NextTick::Gather(tick) = next_in_window(schedule, now, last, window) {
            if tick.at_unix_nanos >= end {
                break;
            }
            gathered.push(tick.index);
            last = Some(tick.index);
            now = tick.at_unix_nanos;
        }
        gathered
    }

    #[test]
    fn a_fenced_start_waits_for_the_first_tick_at_or_after_the_fence() {
        let schedule = Schedule::new("ns/a", Duration::from_secs(1), Duration::ZERO);
        let fence = 1_700_000_010 * SEC;
        let NextTick::Gather(first) = next_in_window(&schedule, 1_700_000_000 * SEC, None, TickWindow::starting_at(fence)) else {
            panic!("parked")
        };
        assert!(first.at_unix_nanos >= fence && first.at_unix_nanos < fence + SEC, "{first:?}");
    }

    #[test]
    fn a_drain_parks_after_the_last_tick_before_the_fence() {
        let schedule = Schedule::new("ns/a", Duration::from_secs(1), Duration::ZERO);
        let fence = schedule.tick_time(1_700_000_010);
        let window = TickWindow::ALL.ending_before(fence);
        let NextTick::Gather(last) = next_in_window(&schedule, fence - SEC, None, window) else { panic!("parked") };
        assert_eq!(last.index, 1_700_000_009);
        assert_eq!(next_in_window(&schedule, fence - SEC, Some(last.index), window), NextTick::Park);
        // Waking late changes nothing: the fence is a tick instant, not a clock reading.
        assert_eq!(next_in_window(&schedule, fence + 5 * SEC, Some(last.index), window), NextTick::Park);
    }

    proptest! {
        /// The old owner's window `[.., T)` and the new owner's `[T, ..)` gather every tick of
        /// the input exactly once between them, wherever T falls relative to the ticks, and
        /// whenever each owner started.
        #[test]
        fn complementary_windows_partition_the_ticks(
            key in "[a-z]{1,6}/[a-z]{1,6}",
            interval_ms in 10u64..5_000,
            jitter_permille in 0u64..1000,
            fence_offset in 0u64..20 * SEC,
            new_owner_start in 0u64..20 * SEC,
        ) {
            let interval = Duration::from_millis(interval_ms);
            let schedule = Schedule::new(&key, interval, interval * u32::try_from(jitter_permille).unwrap() / 1000);
            let start = 1_700_000_000 * SEC;
            let end = start + 60 * SEC;
            let fence = start + 2 * SEC + fence_offset;
            let old = ticks_gathered(&schedule, start, end, TickWindow::ALL.ending_before(fence));
            // The new owner may start any time before the fence (the margin covers its watch).
            let new_start = start + new_owner_start.min(fence - start);
            let new = ticks_gathered(&schedule, new_start, end, TickWindow::starting_at(fence));
            let all = ticks_gathered(&schedule, start, end, TickWindow::ALL);
            let mut both = old.clone();
            both.extend(&new);
            prop_assert_eq!(&both, &all, "old {:?} new {:?}", old.last(), new.first());
        }
    }
}
