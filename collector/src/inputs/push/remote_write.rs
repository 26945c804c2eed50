//! Prometheus remote write 1.0 receiver side: snappy block → protobuf `WriteRequest` → samples.
//!
//! Decoding uses the `prost` messages the remote-write output already declares
//! ([`crate::outputs::remote_write::proto`]): prost's decoder is bounds-checked, skips the
//! fields remote write 1.0 senders add that we do not use (metadata, exemplars, native
//! histograms), and needs no second hand-written codec to keep in step with the encoder. The
//! encoder is hand-written because it is on the hot path of every output; decoding a push is
//! dominated by the snappy pass and the allocation of the samples, so prost costs nothing
//! measurable here.
//!
//! Validation, as Prometheus' own receiver: every series needs a non-empty `__name__`, label
//! names must be non-empty and unique; a label with an empty value means "no such label" and is
//! left out. Values are kept bit-exact (stale markers survive).

use prost::Message as _;

use crate::outputs::remote_write::proto::WriteRequest;
use crate::sample::{Labels, Sample};

/// Why a remote-write body was refused.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteParseError {
    /// The snappy header announces more bytes than the limit allows.
    #[error("decompressed body would be {announced} bytes, above the limit of {limit}")]
    TooLarge {
        /// Length the snappy header announces.
        announced: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a snappy block (the framed stream format is not remote write).
    #[error("body is not a snappy block: {0}")]
    Snappy(#[source] snap::Error),
    /// Not a `WriteRequest`.
    #[error("body is not a remote-write protobuf WriteRequest: {0}")]
    Protobuf(#[source] prost::DecodeError),
    /// A series without `__name__`.
    #[error("series {series}: missing or empty __name__ label")]
    MissingName {
        /// Index of the series in the request.
        series: usize,
    },
    /// A label with an empty name.
    #[error("series {series}: empty label name")]
    EmptyLabelName {
        /// Index of the series in the request.
        series: usize,
    },
    /// Two labels of the same name.
    #[error("series {series}: duplicate label {name:?}")]
    DuplicateLabel {
        /// Index of the series in the request.
        series: usize,
        /// The repeated name.
        name: String,
    },
}

/// Decompresses a snappy block of at most `max_decoded_bytes` and parses the `WriteRequest`.
pub fn parse_remote_write(body: &[u8], max_decoded_bytes: usize) -> Result<Vec<Sample>, RemoteWriteParseError> {
    // The header is read first so that a tiny body announcing gigabytes costs nothing.
    let announced = snap::raw::decompress_len(body).map_err(RemoteWriteParseError::Snappy)?;
    if announced > max_decoded_bytes {
        return Err(RemoteWriteParseError::TooLarge { announced, limit: max_decoded_bytes });
    }
    let protobuf = snap::raw::Decoder::new().decompress_vec(body).map_err(RemoteWriteParseError::Snappy)?;
    parse_write_request(&protobuf)
}

/// Parses an uncompressed protobuf `WriteRequest`.
pub fn parse_write_request(protobuf: &[u8]) -> Result<Vec<Sample>, RemoteWriteParseError> {
    let request = WriteRequest::decode(protobuf).map_err(RemoteWriteParseError::Protobuf)?;
    let mut samples = Vec::with_capacity(request.timeseries.iter().map(|series| series.samples.len()).sum());
    for (index, series) in request.timeseries.into_iter().enumerate() {
        let mut name = None;
        let mut labels = Labels::default();
        for label in series.labels {
            if label.name.is_empty() {
                return Err(RemoteWriteParseError::EmptyLabelName { series: index });
            }
            if label.name == "__name__" {
                if name.is_some() {
                    return Err(RemoteWriteParseError::DuplicateLabel { series: index, name: label.name });
                }
                name = Some(label.value);
                continue;
            }
            if labels.get(&label.name).is_some() {
                return Err(RemoteWriteParseError::DuplicateLabel { series: index, name: label.name });
            }
            if !label.value.is_empty() {
                labels.set(label.name, label.value);
            }
        }
        let name = name.filter(|name| !name.is_empty()).ok_or(RemoteWriteParseError::MissingName { series: index })?;
        for sample in series.samples {
            samples.push(Sample::new(name.clone(), labels.clone(), sample.value, sample.timestamp));
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::remote_write::encode_batch;
    use crate::outputs::remote_write::proto::{Label, TimeSeries};
    use crate::sample::{STALE_NAN_BITS, Text};
    use proptest::prelude::*;

    const LIMIT: usize = 1 << 20;

    fn sample_strategy() -> impl Strategy<Value = Sample> {
        (
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,8}",
            proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,5}", "\\PC{1,6}"), 0..4),
            prop_oneof![any::<f64>(), Just(f64::from_bits(STALE_NAN_BITS))],
            any::<i64>(),
        )
            .prop_map(|(name, pairs, value, timestamp)| {
                let pairs = pairs.into_iter().filter(|(label, _)| label != "__name__");
                Sample::new(name, Labels::from_pairs(pairs), value, timestamp)
            })
    }

    /// proto3 leaves out a double equal to 0, and -0.0 == 0, so -0.0 arrives as +0.0 (as with
    /// prost or any other protobuf encoder).
    fn zero_as_positive(value: f64) -> f64 {
        if value == 0.0 { 0.0 } else { value }
    }

    /// Samples compared with values as bits, so NaNs (stale markers) compare too.
    fn bits(samples: &[Sample]) -> Vec<(Text, Labels, u64, i64)> {
        let mut all: Vec<_> =
            samples.iter().map(|s| (s.name.clone(), s.labels.clone(), zero_as_positive(s.value).to_bits(), s.timestamp_ms)).collect();
        all.sort_by(|a, b| (&a.0, &a.1, a.3, a.2).cmp(&(&b.0, &b.1, b.3, b.2)));
        all
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_remote_write(&body, LIMIT);
            let _ = parse_write_request(&body);
        }

        #[test]
        fn what_the_output_encodes_decodes_to_the_same_samples(batch in proptest::collection::vec(sample_strategy(), 0..20)) {
            let body = encode_batch(&batch).unwrap();
            let decoded = parse_remote_write(&body, LIMIT).unwrap();
            prop_assert_eq!(bits(&decoded), bits(&batch));
        }
    }

    fn request(labels: &[(&str, &str)]) -> Vec<u8> {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: labels.iter().map(|(n, v)| Label { name: (*n).into(), value: (*v).into() }).collect(),
                samples: vec![crate::outputs::remote_write::proto::Sample { value: 1.0, timestamp: 5 }],
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn refuses_series_prometheus_would_refuse() {
        assert!(matches!(parse_write_request(&request(&[("job", "a")])), Err(RemoteWriteParseError::MissingName { series: 0 })));
        assert!(matches!(parse_write_request(&request(&[("__name__", "")])), Err(RemoteWriteParseError::MissingName { .. })));
        assert!(matches!(
            parse_write_request(&request(&[("__name__", "up"), ("", "x")])),
            Err(RemoteWriteParseError::EmptyLabelName { .. })
        ));
        let error = parse_write_request(&request(&[("__name__", "up"), ("a", "1"), ("a", "2")])).unwrap_err();
        assert_eq!(error.to_string(), "series 0: duplicate label \"a\"");
        let ok = parse_write_request(&request(&[("__name__", "up"), ("a", ""), ("b", "2")])).unwrap();
        assert_eq!(ok, vec![Sample::new("up", Labels::from_pairs([("b", "2")]), 1.0, 5)]);
    }

    #[test]
    fn a_body_announcing_more_than_the_limit_is_refused_before_decompressing() {
        let body = snap::raw::Encoder::new().compress_vec(&vec![0u8; 4096]).unwrap();
        assert!(matches!(parse_remote_write(&body, 1024), Err(RemoteWriteParseError::TooLarge { announced: 4096, limit: 1024 })));
        assert!(matches!(parse_remote_write(b"not snappy at all", LIMIT), Err(RemoteWriteParseError::Snappy(_))));
    }
}
