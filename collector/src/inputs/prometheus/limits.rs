//! The per-scrape limits of Prometheus (`sample_limit`, `label_limit`,
//! `label_name_length_limit`, `label_value_length_limit`, `body_size_limit`). Any limit
//! exceeded fails the whole scrape of that target, as in Prometheus: `up` is 0 and none of its
//! samples are written.

use metricshard_crds::PrometheusSource;

use crate::sample::Sample;

/// The response body limit when `bodySizeLimit` is unset.
pub const DEFAULT_BODY_SIZE_LIMIT: u64 = 64 << 20;

/// The limits of one input; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeLimits {
    /// Most samples after metric relabeling.
    pub samples: Option<u64>,
    /// Most labels per sample, the metric name included.
    pub labels: Option<u64>,
    /// Longest label name in bytes.
    pub label_name_length: Option<u64>,
    /// Longest label value (or metric name) in bytes.
    pub label_value_length: Option<u64>,
    /// Largest uncompressed body in bytes.
    pub body_size: Option<u64>,
}

/// Why a scrape exceeded its limits, or why a limit is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// More samples than `sampleLimit`.
    #[error("sample_limit exceeded: {count} samples after relabeling, limit {limit}")]
    Samples {
        /// Samples after relabeling.
        count: usize,
        /// The limit.
        limit: u64,
    },
    /// A sample with more labels than `labelLimit`.
    #[error("label_limit exceeded (metric: {metric:.50}, number of labels: {count}, limit: {limit})")]
    Labels {
        /// The sample's metric name.
        metric: String,
        /// Its number of labels.
        count: usize,
        /// The limit.
        limit: u64,
    },
    /// A label name longer than `labelNameLengthLimit`.
    #[error("label_name_length_limit exceeded (metric: {metric:.50}, label name: {name:.50}, length: {length}, limit: {limit})")]
    LabelName {
        /// The sample's metric name.
        metric: String,
        /// The label name.
        name: String,
        /// Its length.
        length: usize,
        /// The limit.
        limit: u64,
    },
    /// A label value longer than `labelValueLengthLimit`.
    #[error("label_value_length_limit exceeded (metric: {metric:.50}, label name: {name:.50}, length: {length}, limit: {limit})")]
    LabelValue {
        /// The sample's metric name.
        metric: String,
        /// The label whose value is too long (`__name__` for the metric name).
        name: String,
        /// The value's length.
        length: usize,
        /// The limit.
        limit: u64,
    },
    /// The body is larger than `bodySizeLimit`.
    #[error("body size limit exceeded: more than {limit} bytes (uncompressed)")]
    BodySize {
        /// The limit.
        limit: u64,
    },
    /// `bodySizeLimit` cannot be read (the CRD's pattern normally prevents this).
    #[error("spec.source.prometheus.bodySizeLimit: {0:?} is not a size such as 512KiB or 10MB")]
    InvalidBodySize(String),
}

impl ScrapeLimits {
    /// The limits of `source`; 0 means no limit, as in Prometheus.
    pub fn from_source(source: &PrometheusSource) -> Result<Self, LimitError> {
        let limit = |value: Option<u64>| value.filter(|&v| v > 0);
        let body_size = match source.body_size_limit.as_deref() {
            None => Some(DEFAULT_BODY_SIZE_LIMIT),
            Some(text) => limit(Some(parse_byte_size(text).ok_or_else(|| LimitError::InvalidBodySize(text.to_owned()))?)),
        };
        Ok(Self {
            samples: limit(source.sample_limit),
            labels: limit(source.label_limit),
            label_name_length: limit(source.label_name_length_limit),
            label_value_length: limit(source.label_value_length_limit),
            body_size,
        })
    }

    /// Checks the samples of one target after relabeling, as Prometheus does before appending.
    pub fn check(&self, samples: &[Sample]) -> Result<(), LimitError> {
        if let Some(limit) = self.samples
            && samples.len() as u64 > limit
        {
            return Err(LimitError::Samples { count: samples.len(), limit });
        }
        if self.labels.is_none() && self.label_name_length.is_none() && self.label_value_length.is_none() {
            return Ok(());
        }
        samples.iter().try_for_each(|sample| self.check_labels(sample))
    }

    fn check_labels(&self, sample: &Sample) -> Result<(), LimitError> {
        let metric = || sample.name.to_string();
        // The metric name is the label `__name__`: it counts and its length is checked.
        let count = sample.labels.len() + 1;
        if let Some(limit) = self.labels
            && count as u64 > limit
        {
            return Err(LimitError::Labels { metric: metric(), count, limit });
        }
        let names = std::iter::once(("__name__", sample.name.as_str()))
            .chain(sample.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
        for (name, value) in names {
            if let Some(limit) = self.label_name_length
                && name.len() as u64 > limit
            {
                return Err(LimitError::LabelName { metric: metric(), name: name.to_owned(), length: name.len(), limit });
            }
            if let Some(limit) = self.label_value_length
                && value.len() as u64 > limit
            {
                return Err(LimitError::LabelValue { metric: metric(), name: name.to_owned(), length: value.len(), limit });
            }
        }
        Ok(())
    }
}

/// Parses the Prometheus Operator's `ByteSize` (`0`, `100B`, `512KiB`, `1.5MB`): every unit is
/// base 2 (`KB` = `KiB` = 1024), as Prometheus' own parser reads them.
pub fn parse_byte_size(text: &str) -> Option<u64> {
    if text == "0" {
        return Some(0);
    }
    let number_end = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(number_end);
    let exponent = match unit {
        "B" => 0,
        "KB" | "KiB" => 1,
        "MB" | "MiB" => 2,
        "GB" | "GiB" => 3,
        "TB" | "TiB" => 4,
        "PB" | "PiB" => 5,
        "EB" | "EiB" => 6,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    let bytes = value * 1024f64.powi(exponent);
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Labels;

    fn sample(name: &str, labels: &[(&str, &str)]) -> Sample {
        Sample::new(name, Labels::from_pairs(labels.iter().copied()), 1.0, 0)
    }

    #[test]
    fn byte_sizes_read_as_the_prometheus_operator_writes_them() {
        assert_eq!(parse_byte_size("0"), Some(0));
        assert_eq!(parse_byte_size("100B"), Some(100));
        assert_eq!(parse_byte_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_byte_size("10MB"), Some(10 << 20));
        assert_eq!(parse_byte_size("1.5GiB"), Some(3 << 29));
        for bad in ["", "10", "10 MB", "MB", "10mb", "1.2.3MB"] {
            assert_eq!(parse_byte_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn zero_means_no_limit_and_an_unset_body_limit_is_the_default() {
        let mut source: PrometheusSource = serde_json::from_value(serde_json::json!({"staticTargets": ["a:1"]})).unwrap();
        assert_eq!(ScrapeLimits::from_source(&source).unwrap(), ScrapeLimits { body_size: Some(DEFAULT_BODY_SIZE_LIMIT), ..Default::default() });
        source.sample_limit = Some(0);
        source.label_limit = Some(3);
        source.body_size_limit = Some("0".into());
        assert_eq!(ScrapeLimits::from_source(&source).unwrap(), ScrapeLimits { labels: Some(3), ..Default::default() });
    }

    #[test]
    fn sample_limit_counts_samples_after_relabeling() {
        let limits = ScrapeLimits { samples: Some(2), ..Default::default() };
        let two = [sample("a", &[]), sample("b", &[])];
        assert_eq!(limits.check(&two), Ok(()));
        let three = [sample("a", &[]), sample("b", &[]), sample("c", &[])];
        assert_eq!(limits.check(&three), Err(LimitError::Samples { count: 3, limit: 2 }));
    }

    #[test]
    fn label_limit_counts_the_metric_name() {
        let limits = ScrapeLimits { labels: Some(2), ..Default::default() };
        assert_eq!(limits.check(&[sample("m", &[("job", "x")])]), Ok(()));
        let error = limits.check(&[sample("m", &[("job", "x"), ("instance", "y")])]).unwrap_err();
        assert_eq!(error.to_string(), "label_limit exceeded (metric: m, number of labels: 3, limit: 2)");
    }

    #[test]
    fn length_limits_cover_label_names_values_and_the_metric_name() {
        let names = ScrapeLimits { label_name_length: Some(8), ..Default::default() };
        assert_eq!(names.check(&[sample("a_very_long_metric_name", &[("instance", "x")])]), Ok(()));
        assert!(matches!(names.check(&[sample("m", &[("longer_name", "x")])]), Err(LimitError::LabelName { length: 11, .. })));

        let values = ScrapeLimits { label_value_length: Some(4), ..Default::default() };
        assert_eq!(values.check(&[sample("m", &[("a", "1234")])]), Ok(()));
        assert!(matches!(values.check(&[sample("m", &[("a", "12345")])]), Err(LimitError::LabelValue { length: 5, .. })));
        let name = values.check(&[sample("metric", &[])]).unwrap_err();
        assert!(matches!(&name, LimitError::LabelValue { name, length: 6, .. } if name == "__name__"), "{name:?}");
        // Lengths are bytes, as Go's len.
        assert!(values.check(&[sample("m", &[("a", "äää")])]).is_err());
    }
}
