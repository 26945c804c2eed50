//! OpenTSDB `/api/put` JSON → samples, with OpenTSDB's rules.
//!
//! ```json
//! {"metric":"sys.cpu.nice","timestamp":1346846400,"value":18,"tags":{"host":"web01"}}
//! ```
//!
//! The body is one data point or an array of them. As OpenTSDB: `metric`, every tag key and
//! tag value must be non-empty and made of `a-z A-Z 0-9 - _ . /` and Unicode letters; at least
//! one tag is required; `value` is a JSON number or a string holding one, and must be finite;
//! `timestamp` is a positive integer, in seconds when it fits in 32 bits and in milliseconds
//! otherwise (OpenTSDB's own rule), and at most 13 digits. Unknown fields are ignored.
//!
//! Unlike OpenTSDB, a body is accepted whole or refused whole (OpenTSDB stores the good points
//! of a mixed body): a client that fixes and resends the body then never duplicates points.
//! Every bad point is reported, by index, so `?details` can list them as OpenTSDB does.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::outputs::opentsdb::encoder::is_allowed;
use crate::sample::{Labels, Sample};

/// Why an `/api/put` body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpenTsdbParseError {
    /// Not JSON, or neither an object nor an array.
    #[error("body is not a JSON data point or array of data points: {0}")]
    NotJson(String),
    /// Some data points are invalid; nothing was accepted.
    #[error("{} of {total} data points are invalid; first: point {}: {}", .invalid.len(), .invalid.first().map_or(0, |p| p.index), .invalid.first().map_or("", |p| p.error.as_str()))]
    InvalidPoints {
        /// Points in the body.
        total: usize,
        /// Each invalid point with its index and reason, at most [`MAX_REPORTED_POINTS`].
        invalid: Vec<InvalidPoint>,
    },
}

/// One refused data point.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidPoint {
    /// Index in the body (0 for a single object).
    pub index: usize,
    /// The point as sent.
    pub datapoint: serde_json::Value,
    /// What is wrong with it.
    pub error: String,
}

/// Invalid points reported in detail per request; the rest are only counted.
pub const MAX_REPORTED_POINTS: usize = 100;

/// Largest timestamp OpenTSDB accepts: 13 digits of milliseconds.
const MAX_TIMESTAMP_MS: u64 = 9_999_999_999_999;

#[derive(Deserialize)]
struct DataPoint {
    metric: String,
    timestamp: serde_json::Value,
    value: serde_json::Value,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// Parses an `/api/put` body.
pub fn parse_put(body: &[u8]) -> Result<Vec<Sample>, OpenTsdbParseError> {
    let document: serde_json::Value = serde_json::from_slice(body).map_err(|e| OpenTsdbParseError::NotJson(e.to_string()))?;
    let points = match document {
        serde_json::Value::Array(points) => points,
        object @ serde_json::Value::Object(_) => vec![object],
        _ => return Err(OpenTsdbParseError::NotJson("expected an object or an array".to_owned())),
    };
    let total = points.len();
    let mut samples = Vec::with_capacity(total);
    let mut invalid = Vec::new();
    let mut invalid_count = 0usize;
    for (index, point) in points.into_iter().enumerate() {
        match to_sample(&point) {
            Ok(sample) => samples.push(sample),
            Err(error) => {
                invalid_count += 1;
                if invalid.len() < MAX_REPORTED_POINTS {
                    invalid.push(InvalidPoint { index, datapoint: point, error });
                }
            }
        }
    }
    if invalid_count > 0 {
        // The details are bounded; the last listed point says how many more there are.
        let unlisted = invalid_count - invalid.len();
        if let Some(point) = invalid.last_mut()
            && unlisted > 0
        {
            point.error.push_str(&format!(" (and {unlisted} more invalid points not listed)"));
        }
        return Err(OpenTsdbParseError::InvalidPoints { total, invalid });
    }
    Ok(samples)
}

fn to_sample(point: &serde_json::Value) -> Result<Sample, String> {
    let point = DataPoint::deserialize(point).map_err(|e| e.to_string())?;
    check_name("metric", &point.metric)?;
    if point.tags.is_empty() {
        return Err("at least one tag is required".to_owned());
    }
    for (key, value) in &point.tags {
        check_name("tag key", key)?;
        check_name(&format!("value of tag {key:?}"), value)?;
    }
    let timestamp_ms = timestamp_ms(&point.timestamp)?;
    let value = value(&point.value)?;
    Ok(Sample::new(point.metric, Labels::from_pairs(point.tags), value, timestamp_ms))
}

fn check_name(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("{what} is empty"));
    }
    match text.chars().find(|&ch| !is_allowed(ch)) {
        Some(ch) => Err(format!("{what} {text:?} contains {ch:?}; allowed are a-z A-Z 0-9 - _ . / and letters")),
        None => Ok(()),
    }
}

fn timestamp_ms(timestamp: &serde_json::Value) -> Result<i64, String> {
    let raw = match timestamp {
        serde_json::Value::Number(number) => number.as_u64(),
        serde_json::Value::String(text) => text.parse::<u64>().ok(),
        _ => None,
    };
    let raw = raw.filter(|&raw| raw > 0).ok_or_else(|| format!("timestamp {timestamp} is not a positive integer"))?;
    let ms = if raw <= u64::from(u32::MAX) { raw * 1_000 } else { raw };
    if ms > MAX_TIMESTAMP_MS {
        return Err(format!("timestamp {raw} has more than 13 digits"));
    }
    i64::try_from(ms).map_err(|_| format!("timestamp {raw} out of range"))
}

fn value(value: &serde_json::Value) -> Result<f64, String> {
    let number = match value {
        serde_json::Value::Number(number) => number.as_f64(),
        serde_json::Value::String(text) => {
            let numeric = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
            numeric.then(|| text.parse::<f64>().ok()).flatten()
        }
        _ => None,
    };
    number.filter(|number| number.is_finite()).ok_or_else(|| format!("value {value} is not a finite number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::opentsdb::encoder::{DEFAULT_FALLBACK_TAG, encode_batch};
    use proptest::prelude::*;

    #[test]
    fn a_float_is_read_to_its_last_bit() {
        // serde_json without `float_roundtrip` reads this one a bit off (found by search).
        let text = "1.1362275116276523e-8";
        let body = format!(r#"{{"metric":"x","timestamp":1700000000,"value":{text},"tags":{{"host":"a"}}}}"#);
        let parsed = parse_put(body.as_bytes()).unwrap();
        assert_eq!(parsed[0].value.to_bits(), text.parse::<f64>().unwrap().to_bits());
    }

    #[test]
    fn reads_single_points_and_arrays_with_both_timestamp_units() {
        let single = br#"{"metric":"sys.cpu.nice","timestamp":1346846400,"value":18,"tags":{"host":"web01","dc":"lga"}}"#;
        assert_eq!(
            parse_put(single).unwrap(),
            vec![Sample::new("sys.cpu.nice", Labels::from_pairs([("host", "web01"), ("dc", "lga")]), 18.0, 1_346_846_400_000)]
        );
        let array = br#"[{"metric":"a","timestamp":1346846400123,"value":"1.5","tags":{"h":"x"},"extra":1},
                         {"metric":"b","timestamp":"1346846400","value":-2e3,"tags":{"h":"y"}}]"#;
        let samples = parse_put(array).unwrap();
        assert_eq!(samples[0].timestamp_ms, 1_346_846_400_123);
        assert_eq!(samples[0].value, 1.5);
        assert_eq!(samples[1].timestamp_ms, 1_346_846_400_000);
        assert_eq!(samples[1].value, -2000.0);
    }

    #[test]
    fn every_bad_point_is_reported_and_nothing_is_accepted() {
        let body = br#"[{"metric":"ok","timestamp":1,"value":1,"tags":{"a":"b"}},
                        {"metric":"no tags","timestamp":1,"value":1,"tags":{}},
                        {"metric":"x","timestamp":-5,"value":1,"tags":{"a":"b"}},
                        {"metric":"x","timestamp":1,"value":"NaN","tags":{"a":"b"}},
                        {"timestamp":1,"value":1,"tags":{"a":"b"}}]"#;
        let Err(OpenTsdbParseError::InvalidPoints { total, invalid }) = parse_put(body) else { panic!("accepted") };
        assert_eq!(total, 5);
        let reasons: Vec<(usize, &str)> = invalid.iter().map(|p| (p.index, p.error.as_str())).collect();
        assert_eq!(reasons[0], (1, "metric \"no tags\" contains ' '; allowed are a-z A-Z 0-9 - _ . / and letters"));
        assert_eq!(reasons[1], (2, "timestamp -5 is not a positive integer"));
        assert_eq!(reasons[2], (3, "value \"NaN\" is not a finite number"));
        assert_eq!(reasons[3], (4, "missing field `metric`"));
        assert_eq!(invalid[0].datapoint["metric"], "no tags");
        assert!(matches!(parse_put(b"42"), Err(OpenTsdbParseError::NotJson(_))));
        assert!(matches!(parse_put(b"{\"metric\":"), Err(OpenTsdbParseError::NotJson(_))));
    }

    #[test]
    fn the_number_of_listed_points_is_bounded() {
        let point = r#"{"metric":"x","timestamp":1,"value":1,"tags":{}}"#;
        let body = format!("[{}]", vec![point; 250].join(","));
        let Err(OpenTsdbParseError::InvalidPoints { invalid, .. }) = parse_put(body.as_bytes()) else { panic!() };
        assert_eq!(invalid.len(), MAX_REPORTED_POINTS);
        assert!(invalid[MAX_REPORTED_POINTS - 1].error.ends_with("(and 150 more invalid points not listed)"));
    }

    fn clean() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._/é-]{1,8}"
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_put(&body);
        }

        #[test]
        fn what_the_output_encodes_parses_to_the_same_samples(
            batch in proptest::collection::vec(
                (clean(), proptest::collection::btree_map(clean(), clean(), 1..4), -1e15..1e15f64, 4_294_967_296i64..MAX_TIMESTAMP_MS as i64),
                0..10,
            ),
        ) {
            let batch: Vec<Sample> = batch.into_iter().map(|(name, tags, value, ts)| Sample::new(name, Labels::from_pairs(tags), value, ts)).collect();
            let encoded = encode_batch(&batch, DEFAULT_FALLBACK_TAG);
            let parsed = parse_put(&encoded.body).unwrap();
            prop_assert_eq!(parsed, batch);
        }
    }
}
