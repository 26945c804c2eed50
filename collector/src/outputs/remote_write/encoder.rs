//! Batch → remote-write request body: series grouping, label order, protobuf, snappy.
//!
//! Pure and synchronous; the sink only sends what this produces.

use std::collections::HashMap;

use prost::Message as _;

use super::RemoteWriteError;
use super::proto::{Label, Sample as ProtoSample, TimeSeries, WriteRequest};
use crate::sample::{Labels, Sample};


/// The label that carries the metric name on the wire.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// Groups a batch into one [`TimeSeries`] per distinct series, in the order each series first
/// appears, with its samples sorted by timestamp.
///
/// Why group: the spec sends each series' label set once per request, and receivers check
/// sample order per series. Series identity is the *wire* label set (see [`wire_labels`]), so
/// two samples whose labels differ only by an empty value are one series here as they are in
/// Prometheus. The sort is stable: samples of one series with equal timestamps keep batch order.
pub fn build_write_request(batch: &[Sample]) -> WriteRequest {
    // hash of the wire labels → first series with that hash; `next_same_hash` chains the rare
    // others, so a 64-bit collision costs a comparison, never a wrong merge.
    let mut first_with_hash: HashMap<u64, usize> = HashMap::with_capacity(batch.len());
    let mut next_same_hash: Vec<Option<usize>> = Vec::new();
    let mut timeseries: Vec<TimeSeries> = Vec::new();
    let mut scratch = Vec::with_capacity(256);
    for sample in batch {
        let hash = wire_hash(&sample.name, &sample.labels, &mut scratch);
        let mut candidate = first_with_hash.get(&hash).copied();
        let mut last = None;
        let slot = loop {
            match candidate {
                Some(index) if same_wire_labels(&timeseries[index].labels, &sample.name, &sample.labels) => {
                    break index;
                }
                Some(index) => {
                    last = Some(index);
                    candidate = next_same_hash[index];
                }
                None => {
                    let index = timeseries.len();
                    timeseries.push(TimeSeries { labels: wire_labels(&sample.name, &sample.labels), samples: Vec::new() });
                    next_same_hash.push(None);
                    match last {
                        Some(previous) => next_same_hash[previous] = Some(index),
                        None => {
                            first_with_hash.insert(hash, index);
                        }
                    }
                    break index;
                }
            }
        };
        // Copying the f64 keeps its bits: stale markers stay the exact NaN Prometheus expects.
        timeseries[slot].samples.push(ProtoSample { value: sample.value, timestamp: sample.timestamp_ms });
    }
    for series in &mut timeseries {
        series.samples.sort_by_key(|sample| sample.timestamp);
    }
    WriteRequest { timeseries }
}

/// The wire labels of a series: the sample's labels plus `__name__`, sorted by name (byte
/// order, so `__name__` lands after any upper-case name and before lower-case ones).
///
/// Labels with an empty value are left out: in Prometheus an empty value means the label is
/// absent, and the spec forbids sending them. A `__name__` among the labels is ignored in
/// favour of the sample's name, which is the authoritative one.
pub fn wire_labels(name: &str, labels: &Labels) -> Vec<Label> {
    let mut out = Vec::with_capacity(labels.len() + 1);
    out.extend(wire_pairs(name, labels).map(|(name, value)| Label { name: name.to_owned(), value: value.to_owned() }));
    out
}

/// The (name, value) pairs of [`wire_labels`], borrowed, in wire order.
fn wire_pairs<'a>(name: &'a str, labels: &'a Labels) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    let mut rest = labels
        .iter()
        .filter(|label| !label.value.is_empty() && label.name != METRIC_NAME_LABEL)
        .peekable();
    let mut name_pending = !name.is_empty();
    std::iter::from_fn(move || {
        if name_pending && rest.peek().is_none_or(|label| label.name.as_str() > METRIC_NAME_LABEL) {
            name_pending = false;
            return Some((METRIC_NAME_LABEL, name));
        }
        rest.next().map(|label| (label.name.as_str(), label.value.as_str()))
    })
}

/// A 64-bit hash of the wire labels; 0xff never occurs in UTF-8, so it separates fields
/// unambiguously.
fn wire_hash(name: &str, labels: &Labels, scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    for (name, value) in wire_pairs(name, labels) {
        scratch.extend_from_slice(name.as_bytes());
        scratch.push(0xff);
        scratch.extend_from_slice(value.as_bytes());
        scratch.push(0xff);
    }
    xxhash_rust::xxh3::xxh3_64(scratch)
}

fn same_wire_labels(existing: &[Label], name: &str, labels: &Labels) -> bool {
    existing
        .iter()
        .map(|label| (label.name.as_str(), label.value.as_str()))
        .eq(wire_pairs(name, labels))
}

/// The request body for a batch: the protobuf `WriteRequest`, snappy-compressed in the block
/// (raw) format the spec requires; the framed stream format would be rejected by receivers.
pub fn encode_batch(batch: &[Sample]) -> Result<Vec<u8>, RemoteWriteError> {
    let protobuf = build_write_request(batch).encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&protobuf).map_err(RemoteWriteError::Compress)
}

/// Reverses [`encode_batch`]; for tests and tools that inspect what would be sent.
pub fn decode_body(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    let protobuf = snap::raw::Decoder::new().decompress_vec(body).map_err(DecodeError::Snappy)?;
    WriteRequest::decode(protobuf.as_slice()).map_err(DecodeError::Protobuf)
}

/// Why a remote-write body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a snappy block.
    #[error("not a snappy block")]
    Snappy(#[source] snap::Error),
    /// Not a `WriteRequest`.
    #[error("not a remote-write protobuf message")]
    Protobuf(#[source] prost::DecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn names(series: &TimeSeries) -> Vec<&str> {
        series.labels.iter().map(|l| l.name.as_str()).collect()
    }

    #[test]
    fn name_label_sorts_by_bytes_among_the_others() {
        let labels = Labels::from_pairs([("job", "a"), ("Zone", "z"), ("_a", "1"), ("__address__", "x")]);
        let request = build_write_request(&[Sample::new("up", labels, 1.0, 5)]);
        assert_eq!(names(&request.timeseries[0]), ["Zone", "__address__", "__name__", "_a", "job"]);
        assert_eq!(request.timeseries[0].labels[2].value, "up");
    }

    #[test]
    fn empty_values_and_a_stray_name_label_are_dropped() {
        let labels = Labels::from_pairs([("a", ""), ("__name__", "other"), ("b", "1")]);
        let request = build_write_request(&[Sample::new("m", labels, 1.0, 5)]);
        let labels: Vec<(&str, &str)> =
            request.timeseries[0].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(labels, [("__name__", "m"), ("b", "1")]);
    }

    #[test]
    fn labels_differing_only_by_an_empty_value_are_one_series() {
        let batch = [
            Sample::new("m", Labels::from_pairs([("a", ""), ("b", "1")]), 1.0, 10),
            Sample::new("m", Labels::from_pairs([("b", "1")]), 2.0, 20),
        ];
        let request = build_write_request(&batch);
        assert_eq!(request.timeseries.len(), 1);
        assert_eq!(request.timeseries[0].samples.len(), 2);
    }

    #[test]
    fn samples_are_grouped_per_series_in_first_seen_order_and_sorted_by_time() {
        let a = Labels::from_pairs([("i", "a")]);
        let b = Labels::from_pairs([("i", "b")]);
        let batch = [
            Sample::new("m", b.clone(), 1.0, 20),
            Sample::new("m", a.clone(), 2.0, 10),
            Sample::new("m", b.clone(), 3.0, 10),
            Sample::new("n", a.clone(), 4.0, 10),
            Sample::new("m", a, 5.0, 30),
        ];
        let request = build_write_request(&batch);
        let shape: Vec<(String, Vec<(i64, f64)>)> = request
            .timeseries
            .iter()
            .map(|s| {
                let id = s.labels.iter().map(|l| l.value.as_str()).collect::<Vec<_>>().join("/");
                (id, s.samples.iter().map(|p| (p.timestamp, p.value)).collect())
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("m/b".to_owned(), vec![(10, 3.0), (20, 1.0)]),
                ("m/a".to_owned(), vec![(10, 2.0), (30, 5.0)]),
                ("n/a".to_owned(), vec![(10, 4.0)]),
            ]
        );
    }

    #[test]
    fn stale_markers_keep_their_bits_through_the_wire() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let body = encode_batch(&[Sample::new("m", Labels::default(), stale, 1)]).unwrap();
        let decoded = decode_body(&body).unwrap();
        assert_eq!(decoded.timeseries[0].samples[0].value.to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn body_is_a_snappy_block_not_a_framed_stream() {
        let body = encode_batch(&[Sample::new("m", Labels::default(), 1.0, 1)]).unwrap();
        // A framed stream starts with the stream identifier chunk 0xff 06 00 00 "sNaPpY".
        assert_ne!(body.first(), Some(&0xff));
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(WriteRequest::decode(raw.as_slice()).unwrap().timeseries.len(), 1);
    }

    #[test]
    fn known_bytes_for_a_tiny_request() {
        // Hand-assembled from the .proto: WriteRequest.timeseries(1) { labels(1) { name(1)
        // "__name__", value(2) "m" }, samples(2) { value(1) double 1.0, timestamp(2) varint 5 } }.
        let request = build_write_request(&[Sample::new("m", Labels::default(), 1.0, 5)]);
        let expected: Vec<u8> = [
            &[0x0a, 0x1c][..],
            &[0x0a, 0x0d, 0x0a, 0x08],
            b"__name__",
            &[0x12, 0x01, b'm'],
            &[0x12, 0x0b, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x05],
        ]
        .concat();
        assert_eq!(request.encode_to_vec(), expected);
    }

    fn arb_sample() -> impl Strategy<Value = Sample> {
        (
            "[a-c]{1,2}",
            proptest::collection::vec(("[A-Za-z_]{1,3}", "[a-z]{0,2}"), 0..4),
            any::<u64>(),
            -5i64..5,
        )
            .prop_map(|(name, pairs, bits, ts)| Sample::new(name, Labels::from_pairs(pairs), f64::from_bits(bits), ts))
    }

    proptest! {
        #[test]
        fn round_trip_keeps_every_sample_bit_exact(batch in proptest::collection::vec(arb_sample(), 0..40)) {
            let decoded = decode_body(&encode_batch(&batch).unwrap()).unwrap();
            let mut sent: Vec<(Vec<(String, String)>, i64, u64)> = batch
                .iter()
                .map(|s| {
                    let labels = wire_labels(&s.name, &s.labels).into_iter().map(|l| (l.name, l.value)).collect();
                    (labels, s.timestamp_ms, s.value.to_bits())
                })
                .collect();
            let mut received = Vec::new();
            for series in &decoded.timeseries {
                let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
                let mut sorted = names.clone();
                sorted.sort_unstable();
                sorted.dedup();
                prop_assert_eq!(&names, &sorted, "labels sorted and unique");
                prop_assert!(series.labels.iter().all(|l| !l.value.is_empty()));
                prop_assert!(series.samples.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
                for sample in &series.samples {
                    let labels = series.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
                    received.push((labels, sample.timestamp, sample.value.to_bits()));
                }
            }
            sent.sort();
            received.sort();
            prop_assert_eq!(sent, received);
            let distinct: std::collections::HashSet<_> = batch.iter().map(|s| wire_labels(&s.name, &s.labels)).collect();
            prop_assert_eq!(decoded.timeseries.len(), distinct.len(), "one entry per series");
        }
    }
}
