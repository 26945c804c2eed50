//! Stale markers, as Prometheus writes them: when a series a target exposed at the last scrape is
//! missing from this one (the series went away, the scrape failed, or the target itself vanished
//! from discovery), a sample with the stale-marker NaN is written for it at this tick, so that
//! queries stop returning it at once instead of five minutes later.
//!
//! As in Prometheus, series exposed with their own timestamp get no stale markers.

use std::collections::{HashMap, HashSet};

use crate::sample::{Labels, STALE_NAN_BITS, Sample, Text};

/// A series: metric name and labels.
type SeriesId = (Text, Labels);

/// What each target exposed at the previous tick.
#[derive(Debug, Default)]
pub struct StalenessTracker {
    previous: HashMap<String, HashSet<SeriesId>>,
}

impl StalenessTracker {
    /// Records what every current target produced at the tick `timestamp_ms` (targets absent
    /// from `produced` have vanished) and returns a stale marker for every series gone since.
    pub fn observe<'a>(&mut self, produced: impl IntoIterator<Item = (&'a str, &'a [Sample])>, timestamp_ms: i64) -> Vec<Sample> {
        let mut current: HashMap<String, HashSet<SeriesId>> = HashMap::new();
        for (target, samples) in produced {
            let series = samples
                .iter()
                .filter(|sample| sample.timestamp_ms == timestamp_ms)
                .map(|sample| (sample.name.clone(), sample.labels.clone()))
                .collect();
            current.insert(target.to_owned(), series);
        }
        let mut markers = Vec::new();
        for (target, before) in &self.previous {
            let now = current.get(target);
            for (name, labels) in before {
                if now.is_none_or(|now| !now.contains(&(name.clone(), labels.clone()))) {
                    markers.push(Sample::new(name.clone(), labels.clone(), f64::from_bits(STALE_NAN_BITS), timestamp_ms));
                }
            }
        }
        self.previous = current;
        markers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, ts: i64) -> Sample {
        Sample::new(name, Labels::from_pairs([("instance", "a:1")]), 1.0, ts)
    }

    fn stale_names(markers: &[Sample]) -> Vec<&str> {
        let mut names: Vec<&str> = markers.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_missing_series_and_a_vanished_target_get_stale_markers_at_this_tick() {
        let mut tracker = StalenessTracker::default();
        let first = [sample("kept", 10), sample("gone", 10), sample("up", 10)];
        let other = [sample("other", 10)];
        assert!(tracker.observe([("a", &first[..]), ("b", &other[..])], 10).is_empty());

        let second = [sample("kept", 20), sample("up", 20)];
        let markers = tracker.observe([("a", &second[..])], 20);
        assert_eq!(stale_names(&markers), ["gone", "other"]);
        assert!(markers.iter().all(|m| m.value.to_bits() == STALE_NAN_BITS && m.timestamp_ms == 20));
        // Markers are written once, not at every later tick.
        let third = [sample("kept", 30), sample("up", 30)];
        assert!(tracker.observe([("a", &third[..])], 30).is_empty());
    }

    #[test]
    fn series_with_their_own_timestamps_get_no_stale_markers() {
        let mut tracker = StalenessTracker::default();
        let first = [sample("explicit", 5), sample("implicit", 10)];
        tracker.observe([("a", &first[..])], 10);
        let markers = tracker.observe([("a", &[][..])], 20);
        assert_eq!(stale_names(&markers), ["implicit"]);
    }
}
