//! How a target's labels and a scraped sample's labels are merged (`honor_labels`) and which
//! timestamp a sample gets (`honor_timestamps`), with Prometheus' semantics.

use crate::sample::Labels;

/// The labels of a scraped sample after the target's labels are attached, as Prometheus'
/// `mutateSampleLabels`:
/// - `honor = true`: a scraped label wins; a target label is added only where the sample has
///   no label of that name.
/// - `honor = false`: the target label wins; a conflicting scraped value is kept as
///   `exported_<name>`, or `exported_exported_<name>` and so on when that name is taken.
///
/// A label with an empty value is the same as no label, so it never counts as a conflict and
/// is never written.
pub fn attach_target_labels(target: &Labels, mut scraped: Labels, honor: bool) -> Labels {
    if honor {
        for label in target {
            if scraped.get(&label.name).is_none_or(str::is_empty) && !label.value.is_empty() {
                scraped.set(label.name.clone(), label.value.clone());
            }
        }
        return without_empty(scraped);
    }
    let mut conflicts = Vec::new();
    for label in target {
        if let Some(exposed) = scraped.remove(&label.name).filter(|value| !value.is_empty()) {
            conflicts.push((label.name.clone(), exposed));
        }
        if !label.value.is_empty() {
            scraped.set(label.name.clone(), label.value.clone());
        }
    }
    // Prometheus resolves the conflicts in label-name order.
    conflicts.sort();
    for (name, value) in conflicts {
        let mut exported = format!("exported_{name}");
        while scraped.get(&exported).is_some_and(|v| !v.is_empty()) {
            exported.insert_str(0, "exported_");
        }
        scraped.set(exported, value);
    }
    without_empty(scraped)
}

fn without_empty(mut labels: Labels) -> Labels {
    labels.retain(|label| !label.value.is_empty());
    labels
}

/// The timestamp of a sample: the exposed one when `honor_timestamps` (the default) and the
/// sample has one, otherwise the tick time, which is the same on every collector.
pub fn sample_timestamp(exposed_ms: Option<i64>, tick_ms: i64, honor_timestamps: bool) -> i64 {
    match exposed_ms {
        Some(exposed) if honor_timestamps => exposed,
        _ => tick_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Labels {
        Labels::from_pairs([("instance", "a:9100"), ("job", "ns/web")])
    }

    #[test]
    fn without_honor_labels_the_target_wins_and_the_scraped_value_is_exported() {
        let scraped = Labels::from_pairs([("job", "pushed"), ("code", "200")]);
        assert_eq!(
            attach_target_labels(&target(), scraped, false),
            Labels::from_pairs([("code", "200"), ("exported_job", "pushed"), ("instance", "a:9100"), ("job", "ns/web")])
        );
    }

    #[test]
    fn exported_names_already_taken_get_another_prefix() {
        let scraped = Labels::from_pairs([("job", "pushed"), ("exported_job", "older")]);
        assert_eq!(
            attach_target_labels(&target(), scraped, false),
            Labels::from_pairs([
                ("exported_exported_job", "pushed"),
                ("exported_job", "older"),
                ("instance", "a:9100"),
                ("job", "ns/web"),
            ])
        );
    }

    #[test]
    fn with_honor_labels_the_scraped_value_wins() {
        let scraped = Labels::from_pairs([("job", "pushed"), ("code", "200")]);
        assert_eq!(
            attach_target_labels(&target(), scraped, true),
            Labels::from_pairs([("code", "200"), ("instance", "a:9100"), ("job", "pushed")])
        );
    }

    #[test]
    fn empty_values_are_absent_labels() {
        // An exposed empty `job` is no conflict; an empty target label is never written.
        let scraped = Labels::from_pairs([("job", ""), ("code", "200")]);
        let target = Labels::from_pairs([("job", "ns/web"), ("zone", "")]);
        assert_eq!(attach_target_labels(&target, scraped.clone(), false), Labels::from_pairs([("code", "200"), ("job", "ns/web")]));
        assert_eq!(attach_target_labels(&target, scraped, true), Labels::from_pairs([("code", "200"), ("job", "ns/web")]));
    }

    #[test]
    fn honor_timestamps_keeps_exposed_timestamps_only_when_set() {
        assert_eq!(sample_timestamp(Some(5), 1000, true), 5);
        assert_eq!(sample_timestamp(Some(5), 1000, false), 1000);
        assert_eq!(sample_timestamp(None, 1000, true), 1000);
    }
}
