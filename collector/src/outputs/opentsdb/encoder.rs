//! Batch → OpenTSDB `/api/put` JSON body, with the character rules OpenTSDB enforces.
//!
//! ```json
//! [{"metric":"http_requests_total","timestamp":1700000000000,"value":1027.0,
//!   "tags":{"instance":"10.0.0.1_80","job":"api"}}]
//! ```
//!
//! Mapping and sanitising (OpenTSDB refuses anything else):
//! - metric = the metric name, tags = the labels; both pass through [`sanitize`]: OpenTSDB
//!   allows only `a-z A-Z 0-9 - _ . /` and Unicode letters in metric names, tag keys and tag
//!   values, so every other character becomes `_` (`instance="10.0.0.1:80"` →
//!   `10.0.0.1_80`; recording-rule names lose their `:`). Two labels that sanitise to the
//!   same key keep the value of the later one in name order.
//! - labels with an empty value are left out (empty means absent in Prometheus; OpenTSDB
//!   refuses empty tag values);
//! - OpenTSDB requires at least one tag: a sample without any gets the configured fallback
//!   tag (by default `source=metricshard`).
//! - timestamp in milliseconds (OpenTSDB reads 13-digit timestamps as milliseconds; samples
//!   before 1970-04-27 would be misread as seconds, which no real scrape produces);
//! - JSON has no NaN or infinities, so those samples, stale markers included, are dropped
//!   and counted; OpenTSDB has no notion of staleness.
//!
//! OpenTSDB's default limit of 8 tags per series (`tsd.storage.max_tags`) is the server's to
//! enforce: a point over it comes back as a per-point error.

use std::borrow::Cow;

use serde::Serialize;
use serde::ser::SerializeMap as _;

use crate::sample::Sample;

/// The tag a sample without labels gets by default.
pub const DEFAULT_FALLBACK_TAG: (&str, &str) = ("source", "metricshard");

/// True for the characters OpenTSDB accepts in metric names and tags.
pub fn is_allowed(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '/') || ch.is_alphabetic()
}

/// `text` with every character OpenTSDB refuses replaced by `_`; borrowed when already clean,
/// which is the common case.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    // ASCII first: a byte test is much cheaper than decoding chars, and covers most text.
    let ascii_allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'/');
    if text.bytes().all(ascii_allowed) || text.chars().all(is_allowed) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().map(|ch| if is_allowed(ch) { ch } else { '_' }).collect())
    }
}

/// A batch as an `/api/put` body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PutBatch {
    /// The JSON array.
    pub body: Vec<u8>,
    /// Points in `body`.
    pub points: usize,
    /// Samples left out because their value is NaN or infinite.
    pub dropped_non_finite: usize,
}

/// One data point, borrowed from a sample.
#[derive(Serialize)]
struct DataPoint<'a> {
    metric: Cow<'a, str>,
    timestamp: i64,
    value: f64,
    tags: Tags<'a>,
}

/// Tags, serialised as a JSON object.
struct Tags<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl Serialize for Tags<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

fn data_point<'a>(sample: &'a Sample, fallback_tag: (&'a str, &'a str)) -> DataPoint<'a> {
    let mut tags: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(sample.labels.len());
    let mut renamed = false;
    for label in &sample.labels {
        if label.value.is_empty() {
            continue;
        }
        let key = sanitize(&label.name);
        renamed |= matches!(key, Cow::Owned(_));
        tags.push((key, sanitize(&label.value)));
    }
    if renamed {
        // Sanitising can reorder keys or make two equal; keep the later label of equal keys.
        tags.reverse();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        tags.dedup_by(|later, earlier| later.0 == earlier.0);
    }
    if tags.is_empty() {
        tags.push((sanitize(fallback_tag.0), sanitize(fallback_tag.1)));
    }
    DataPoint { metric: sanitize(&sample.name), timestamp: sample.timestamp_ms, value: sample.value, tags: Tags(tags) }
}

/// Encodes a batch as a JSON array of data points, dropping (and counting) non-finite values.
pub fn encode_batch(batch: &[Sample], fallback_tag: (&str, &str)) -> PutBatch {
    let mut encoded = PutBatch { body: Vec::with_capacity(batch.len() * 128 + 2), ..PutBatch::default() };
    encoded.body.push(b'[');
    for sample in batch {
        if !sample.value.is_finite() {
            encoded.dropped_non_finite += 1;
            continue;
        }
        if encoded.points > 0 {
            encoded.body.push(b',');
        }
        // Serialising borrowed strings and a finite f64 into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut encoded.body, &data_point(sample, fallback_tag));
        encoded.points += 1;
    }
    encoded.body.push(b']');
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Labels, STALE_NAN_BITS};

    #[test]
    fn sanitizes_to_the_allowed_characters() {
        assert_eq!(sanitize("node_cpu:rate5m"), "node_cpu_rate5m");
        assert_eq!(sanitize("10.0.0.1:9100"), "10.0.0.1_9100");
        assert_eq!(sanitize("a b\"c=d,e{f}"), "a_b_c_d_e_f_");
        assert_eq!(sanitize("Zürich/東京-x.y_z"), "Zürich/東京-x.y_z");
        assert!(matches!(sanitize("clean-name.1/2"), Cow::Borrowed(_)));
        // Digits of other scripts and symbols are not letters.
        assert_eq!(sanitize("٣€"), "__");
    }

    #[test]
    fn encodes_points_with_sanitized_tags_and_fallback() {
        let batch = [
            Sample::new(
                "http:requests",
                Labels::from_pairs([("instance", "10.0.0.1:80"), ("job", "api"), ("e", "")]),
                1027.0,
                1_700_000_000_000,
            ),
            Sample::new("up", Labels::default(), 1.0, 1_700_000_000_001),
            Sample::new("up", Labels::default(), f64::from_bits(STALE_NAN_BITS), 1_700_000_000_002),
            Sample::new("up", Labels::default(), f64::NEG_INFINITY, 1_700_000_000_003),
        ];
        let encoded = encode_batch(&batch, DEFAULT_FALLBACK_TAG);
        assert_eq!(
            String::from_utf8(encoded.body).unwrap(),
            r#"[{"metric":"http_requests","timestamp":1700000000000,"value":1027.0,"tags":{"instance":"10.0.0.1_80","job":"api"}},{"metric":"up","timestamp":1700000000001,"value":1.0,"tags":{"source":"metricshard"}}]"#
        );
        assert_eq!((encoded.points, encoded.dropped_non_finite), (2, 2));
    }

    #[test]
    fn colliding_keys_keep_the_later_label() {
        let batch = [Sample::new("m", Labels::from_pairs([("a:b", "first"), ("a_b", "second"), ("a_a", "x")]), 0.5, 1)];
        let body = String::from_utf8(encode_batch(&batch, DEFAULT_FALLBACK_TAG).body).unwrap();
        assert_eq!(body, r#"[{"metric":"m","timestamp":1,"value":0.5,"tags":{"a_a":"x","a_b":"second"}}]"#);
    }

    #[test]
    fn empty_batch_is_an_empty_array() {
        assert_eq!(encode_batch(&[], DEFAULT_FALLBACK_TAG).body, b"[]");
    }
}
