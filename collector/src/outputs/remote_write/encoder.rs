//! Batch → remote-write request body: series grouping, label order, protobuf, snappy.
//!
//! Pure and synchronous; the sink only sends what this produces.
//!
//! Values travel bit-exact (stale markers included) with one exception: `-0.0` arrives as
//! `+0.0`. proto3 leaves out a double equal to its default 0, and `-0.0 == 0`, so prost (like
//! the Go encoder of Prometheus' own remote write) omits it and the receiver reads the default.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use prost::Message as _;
use prost::encoding::{encode_varint, encoded_len_varint};

use super::RemoteWriteError;
use super::proto::{Label, Sample as ProtoSample, TimeSeries, WriteRequest};
use crate::sample::{Labels, Sample};

/// The label that carries the metric name on the wire.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// A batch grouped by series without copying anything: series in the order each first appears,
/// the samples of each in timestamp order.
///
/// Why group: the spec sends each series' label set once per request, and receivers check
/// sample order per series. Series identity is the *wire* label set (see [`wire_labels`]), so
/// two samples whose labels differ only by an empty value are one series here as they are in
/// Prometheus. The sort is stable: samples of one series with equal timestamps keep batch order.
struct SeriesGroups {
    /// Per series, the index of its first sample (whose name and labels it uses).
    first_sample: Vec<usize>,
    /// Sample indices grouped by series; series `s` is `order[start[s]..start[s + 1]]`.
    order: Vec<usize>,
    start: Vec<usize>,
}

impl SeriesGroups {
    fn new(batch: &[Sample]) -> Self {
        // hash of the wire labels → first series with that hash; `next_same_hash` chains the
        // rare others, so a 64-bit collision costs a comparison, never a wrong merge.
        let mut first_with_hash: HashMap<u64, usize, BuildHasherDefault<PassThroughHasher>> =
            HashMap::with_capacity_and_hasher(batch.len(), BuildHasherDefault::default());
        let mut next_same_hash: Vec<Option<usize>> = Vec::new();
        let mut first_sample: Vec<usize> = Vec::new();
        let mut slot_of: Vec<usize> = Vec::with_capacity(batch.len());
        let mut scratch = Vec::with_capacity(256);
        for (index, sample) in batch.iter().enumerate() {
            let hash = wire_hash(&sample.name, &sample.labels, &mut scratch);
            let mut candidate = first_with_hash.get(&hash).copied();
            let mut last = None;
            let slot = loop {
                match candidate {
                    Some(slot) if same_series(&batch[first_sample[slot]], sample) => break slot,
                    Some(slot) => {
                        last = Some(slot);
                        candidate = next_same_hash[slot];
                    }
                    None => {
                        let slot = first_sample.len();
                        first_sample.push(index);
                        next_same_hash.push(None);
                        match last {
                            Some(previous) => next_same_hash[previous] = Some(slot),
                            None => {
                                first_with_hash.insert(hash, slot);
                            }
                        }
                        break slot;
                    }
                }
            };
            slot_of.push(slot);
        }
        // Counting sort by series (stable), then each series by timestamp (stable, and already
        // sorted in the common case, which the sort detects in one pass).
        let mut start = vec![0usize; first_sample.len() + 1];
        for &slot in &slot_of {
            start[slot + 1] += 1;
        }
        for slot in 0..first_sample.len() {
            start[slot + 1] += start[slot];
        }
        let mut next = start.clone();
        let mut order = vec![0usize; batch.len()];
        for (index, &slot) in slot_of.iter().enumerate() {
            order[next[slot]] = index;
            next[slot] += 1;
        }
        for slot in 0..first_sample.len() {
            order[start[slot]..start[slot + 1]].sort_by_key(|&index| batch[index].timestamp_ms);
        }
        Self { first_sample, order, start }
    }

    fn len(&self) -> usize {
        self.first_sample.len()
    }

    /// The first sample of series `slot` (for its name and labels) and all its sample indices.
    fn series<'b>(&self, batch: &'b [Sample], slot: usize) -> (&'b Sample, &[usize]) {
        (&batch[self.first_sample[slot]], &self.order[self.start[slot]..self.start[slot + 1]])
    }
}

/// The batch as prost messages: one [`TimeSeries`] per series, in the order each first appears,
/// samples sorted by timestamp (see [`encode_protobuf`] for what is actually sent).
pub fn build_write_request(batch: &[Sample]) -> WriteRequest {
    let groups = SeriesGroups::new(batch);
    let timeseries = (0..groups.len())
        .map(|slot| {
            let (first, members) = groups.series(batch, slot);
            TimeSeries {
                labels: wire_labels(&first.name, &first.labels),
                // Copying the f64 keeps its bits: stale markers stay the exact NaN Prometheus
                // expects (-0.0 alone does not survive the wire; see the module docs).
                samples: members
                    .iter()
                    .map(|&index| ProtoSample { value: batch[index].value, timestamp: batch[index].timestamp_ms })
                    .collect(),
            }
        })
        .collect();
    WriteRequest { timeseries }
}

/// The protobuf `WriteRequest` of a batch, written straight from the borrowed samples.
///
/// Byte-for-byte what prost encodes for [`build_write_request`] (a property test holds the two
/// together), without first copying every label into owned messages: that copy was 60% of the
/// encode time. Field keys are those of the `.proto`: `WriteRequest.timeseries` = 1,
/// `TimeSeries.labels` = 1 and `.samples` = 2, `Label.name` = 1 and `.value` = 2,
/// `Sample.value` = 1 (fixed64) and `.timestamp` = 2 (varint). Like prost, fields equal to their
/// proto3 default (empty string, 0) are left out.
pub fn encode_protobuf(batch: &[Sample]) -> Vec<u8> {
    const FIELD_1_LEN: u8 = 0x0a; // field 1, length-delimited
    const FIELD_2_LEN: u8 = 0x12; // field 2, length-delimited
    const FIELD_1_FIXED64: u8 = 0x09; // field 1, 64-bit
    const FIELD_2_VARINT: u8 = 0x10; // field 2, varint

    fn delimited_len(len: usize) -> usize {
        1 + encoded_len_varint(len as u64) + len
    }
    fn string_field_len(text: &str) -> usize {
        if text.is_empty() { 0 } else { delimited_len(text.len()) }
    }
    fn label_len(name: &str, value: &str) -> usize {
        string_field_len(name) + string_field_len(value)
    }
    fn sample_len(sample: &Sample) -> usize {
        let value = if sample.value != 0.0 { 9 } else { 0 };
        let timestamp = if sample.timestamp_ms != 0 { 1 + encoded_len_varint(sample.timestamp_ms as u64) } else { 0 };
        value + timestamp
    }
    fn put_string_field(out: &mut Vec<u8>, key: u8, text: &str) {
        if !text.is_empty() {
            out.push(key);
            encode_varint(text.len() as u64, out);
            out.extend_from_slice(text.as_bytes());
        }
    }

    let groups = SeriesGroups::new(batch);
    let mut out = Vec::with_capacity(batch.len() * 160);
    for slot in 0..groups.len() {
        let (first, members) = groups.series(batch, slot);
        let labels_len: usize =
            wire_pairs(&first.name, &first.labels).map(|(name, value)| delimited_len(label_len(name, value))).sum();
        let samples_len: usize = members.iter().map(|&index| delimited_len(sample_len(&batch[index]))).sum();
        out.push(FIELD_1_LEN);
        encode_varint((labels_len + samples_len) as u64, &mut out);
        for (name, value) in wire_pairs(&first.name, &first.labels) {
            out.push(FIELD_1_LEN);
            encode_varint(label_len(name, value) as u64, &mut out);
            put_string_field(&mut out, FIELD_1_LEN, name);
            put_string_field(&mut out, FIELD_2_LEN, value);
        }
        for &index in members {
            let sample = &batch[index];
            out.push(FIELD_2_LEN);
            encode_varint(sample_len(sample) as u64, &mut out);
            // `!= 0.0` is prost's default test: it also leaves out -0.0 (see the module docs).
            if sample.value != 0.0 {
                out.push(FIELD_1_FIXED64);
                out.extend_from_slice(&sample.value.to_bits().to_le_bytes());
            }
            if sample.timestamp_ms != 0 {
                out.push(FIELD_2_VARINT);
                encode_varint(sample.timestamp_ms as u64, &mut out);
            }
        }
    }
    out
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
    let mut rest = labels.iter().filter(|label| !label.value.is_empty() && label.name != METRIC_NAME_LABEL).peekable();
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

/// A `Hasher` for keys that already are 64-bit hashes: hashing them again would only cost time.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u64, which this map does not have; still a hash.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// True when two samples belong to one wire series.
fn same_series(a: &Sample, b: &Sample) -> bool {
    wire_pairs(&a.name, &a.labels).eq(wire_pairs(&b.name, &b.labels))
}

/// The request body for a batch: the protobuf `WriteRequest`, snappy-compressed in the block
/// (raw) format the spec requires; the framed stream format would be rejected by receivers.
pub fn encode_batch(batch: &[Sample]) -> Result<Vec<u8>, RemoteWriteError> {
    snap::raw::Encoder::new().compress_vec(&encode_protobuf(batch)).map_err(RemoteWriteError::Compress)
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
        ("[a-c]{1,2}", proptest::collection::vec(("[A-Za-z_]{1,3}", "[a-z]{0,2}"), 0..4), any::<u64>(), -5i64..5)
            .prop_map(|(name, pairs, bits, ts)| Sample::new(name, Labels::from_pairs(pairs), f64::from_bits(bits), ts))
    }

    /// A sample as the receiver sees it: wire labels, timestamp, value bits.
    type WireSample = (Vec<(String, String)>, i64, u64);

    /// The bits a receiver reads back: -0.0 becomes +0.0 (see the module docs).
    fn wire_bits(value: f64) -> u64 {
        if value == 0.0 { 0 } else { value.to_bits() }
    }

    #[test]
    fn negative_zero_arrives_as_positive_zero() {
        let batch = [Sample::new("m", Labels::default(), -0.0, 1), Sample::new("m", Labels::default(), 0.0, 2)];
        let decoded = decode_body(&encode_batch(&batch).unwrap()).unwrap();
        let bits: Vec<u64> = decoded.timeseries[0].samples.iter().map(|s| s.value.to_bits()).collect();
        assert_eq!(bits, [0, 0]);
    }

    proptest! {
        #[test]
        fn direct_encoder_matches_prost(
            batch in proptest::collection::vec(arb_sample(), 0..40),
            zeros in any::<u8>(),
            empty_name in any::<bool>(),
        ) {
            let mut batch = batch;
            for (index, sample) in batch.iter_mut().enumerate() {
                if (zeros >> (index % 8)) & 1 == 1 {
                    sample.value = if index % 2 == 0 { 0.0 } else { -0.0 };
                }
                if empty_name && index == 0 {
                    sample.name.clear();
                }
            }
            prop_assert_eq!(encode_protobuf(&batch), build_write_request(&batch).encode_to_vec());
        }

        #[test]
        fn round_trip_keeps_every_sample_bit_exact(batch in proptest::collection::vec(arb_sample(), 0..40), zeros in any::<u8>()) {
            // Random bits almost never give ±0.0; put some in.
            let mut batch = batch;
            for (index, sample) in batch.iter_mut().enumerate() {
                if (zeros >> (index % 8)) & 1 == 1 && index % 3 == 0 {
                    sample.value = if index % 2 == 0 { 0.0 } else { -0.0 };
                }
            }
            let decoded = decode_body(&encode_batch(&batch).unwrap()).unwrap();
            let mut sent: Vec<WireSample> = batch
                .iter()
                .map(|s| {
                    let labels = wire_labels(&s.name, &s.labels).into_iter().map(|l| (l.name, l.value)).collect();
                    (labels, s.timestamp_ms, wire_bits(s.value))
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
