//! The unit of data: one sample of one series.

use std::fmt;

/// The string of metric names, label names and label values. Up to 24 bytes are stored inline
/// (`job`, `instance`, `10.0.3.7:9100`, `node_cpu_seconds_total`), so most labels of a parsed,
/// decoded or relabeled sample cost no allocation; longer strings go to the heap. It has the
/// size of a `String` and dereferences to `str`.
pub type Text = compact_str::CompactString;

/// One label of a series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Label name.
    pub name: Text,
    /// Label value.
    pub value: Text,
}

/// The labels of a series, kept sorted by name with unique names, so that equal label sets
/// compare, hash and encode equally.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Builds a label set from pairs in any order; a later duplicate name wins.
    pub fn from_pairs<N: Into<Text>, V: Into<Text>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut labels = Self::default();
        for (name, value) in pairs {
            labels.set(name, value);
        }
        labels
    }

    /// Builds a label set from labels already sorted by name with unique names, allocating it
    /// once at its final size. The order is checked in debug builds only: callers sort.
    pub fn from_sorted_unique(labels: impl ExactSizeIterator<Item = Label>) -> Self {
        let mut sorted = Vec::with_capacity(labels.len());
        sorted.extend(labels);
        debug_assert!(sorted.windows(2).all(|pair| pair[0].name < pair[1].name), "labels must be sorted and unique");
        Self(sorted)
    }

    /// Sets a label, replacing any label of the same name.
    pub fn set(&mut self, name: impl Into<Text>, value: impl Into<Text>) {
        let (name, value) = (name.into(), value.into());
        match self.0.binary_search_by(|label| label.name.as_str().cmp(&name)) {
            Ok(index) => self.0[index].value = value,
            Err(index) => self.0.insert(index, Label { name, value }),
        }
    }

    /// Sets a label only if no label of that name exists.
    pub fn set_if_absent(&mut self, name: &str, value: &str) {
        if let Err(index) = self.0.binary_search_by(|label| label.name.as_str().cmp(name)) {
            self.0.insert(index, Label { name: name.into(), value: value.into() });
        }
    }

    /// The value of a label.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|label| label.name.as_str().cmp(name))
            .ok()
            .map(|index| self.0[index].value.as_str())
    }

    /// Removes a label, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Text> {
        self.0
            .binary_search_by(|label| label.name.as_str().cmp(name))
            .ok()
            .map(|index| self.0.remove(index).value)
    }

    /// Keeps only the labels for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&Label) -> bool) {
        self.0.retain(keep);
    }

    /// Labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One value of one series at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (`http_requests_total`).
    pub name: Text,
    /// Labels, sorted by name. The metric name is not among them.
    pub labels: Labels,
    /// The value. Prometheus stale markers are a specific NaN (see [`STALE_NAN_BITS`]).
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// The bit pattern Prometheus uses to mark a series stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

impl Sample {
    /// Builds a sample.
    pub fn new(name: impl Into<Text>, labels: Labels, value: f64, timestamp_ms: i64) -> Self {
        Self { name: name.into(), labels, value, timestamp_ms }
    }
}

/// Writes a label value with the escaping of the Prometheus text format (`\\`, `\"`, `\n`).
pub fn write_escaped_label_value(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    for ch in value.chars() {
        match ch {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            other => out.write_char(other)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn labels_are_sorted_unique_and_last_write_wins(pairs in proptest::collection::vec(("[a-c]{1,2}", "[a-z]{0,3}"), 0..20)) {
            let labels = Labels::from_pairs(pairs.clone());
            let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(&names, &sorted);
            for (name, _) in &pairs {
                let last = pairs.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
                prop_assert_eq!(labels.get(name), last);
            }
        }
    }

    #[test]
    fn set_if_absent_keeps_existing() {
        let mut labels = Labels::from_pairs([("job", "a")]);
        labels.set_if_absent("job", "b");
        labels.set_if_absent("instance", "x");
        assert_eq!(labels.get("job"), Some("a"));
        assert_eq!(labels.get("instance"), Some("x"));
    }
}
