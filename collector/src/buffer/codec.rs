//! The encoding of buffered samples: a compact binary chunk of many samples.
//!
//! Chosen by measurement against JSON and a plain length-prefixed format (see
//! `benches/buffer.rs` and docs/benchmarks.md): samples of one scrape share most strings with the
//! sample before them (`job`, `instance`, label names, histogram bucket names), so a string equal
//! to the same position in the previous sample is written as one zero byte and decoded without
//! re-validating UTF-8; timestamps are deltas. Layout:
//!
//! ```text
//! chunk  := version (1 byte = 1) · count (varint) · sample{count}
//! sample := text(name) · label count (varint) · (text(label name) · text(label value))*
//!           · value (8 bytes, IEEE-754 bits, little endian) · timestamp delta (zigzag varint)
//! text   := 0 (same as this position in the previous sample) | len+1 (varint) · UTF-8 bytes
//! ```
//!
//! Every sample's bits survive (stale-marker NaNs included). Decoding untrusted bytes never
//! panics: anything malformed is a [`CodecError`].

use crate::sample::{Label, Labels, Sample};

/// The only chunk version written so far.
const VERSION: u8 = 1;

/// Why a chunk could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The chunk ended in the middle of a field.
    #[error("chunk truncated")]
    Truncated,
    /// The first byte is not a version this build reads.
    #[error("unknown chunk version {0}")]
    Version(u8),
    /// A varint is longer than 64 bits.
    #[error("varint overflows 64 bits")]
    Varint,
    /// A string is not UTF-8.
    #[error("string is not UTF-8")]
    Utf8,
    /// A back-reference points at a string the previous sample does not have.
    #[error("reference to a missing previous string")]
    Reference,
    /// Bytes are left over after the last sample.
    #[error("{0} bytes after the last sample")]
    Trailing(usize),
}

impl CodecError {
    /// A short static category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Version(_) => "version",
            Self::Varint => "varint",
            Self::Utf8 => "utf8",
            Self::Reference => "reference",
            Self::Trailing(_) => "trailing",
        }
    }
}

/// Encodes samples into one chunk.
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    encode_refs(samples.iter())
}

/// Encodes samples given by reference (a partition's share of a push) into one chunk.
pub fn encode_refs<'a>(samples: impl ExactSizeIterator<Item = &'a Sample>) -> Vec<u8> {
    // Typical samples take 20-40 bytes once the shared strings are references.
    let mut out = Vec::with_capacity(8 + samples.len() * 32);
    out.push(VERSION);
    put_varint(&mut out, samples.len() as u64);
    let mut previous: Option<&Sample> = None;
    let mut previous_ts = 0i64;
    for sample in samples {
        put_text(&mut out, &sample.name, previous.map(|p| p.name.as_str()));
        put_varint(&mut out, sample.labels.len() as u64);
        for (index, label) in sample.labels.iter().enumerate() {
            let before = previous.and_then(|p| p.labels.iter().nth(index));
            put_text(&mut out, &label.name, before.map(|l| l.name.as_str()));
            put_text(&mut out, &label.value, before.map(|l| l.value.as_str()));
        }
        out.extend_from_slice(&sample.value.to_bits().to_le_bytes());
        put_varint(&mut out, zigzag(sample.timestamp_ms.wrapping_sub(previous_ts)));
        previous_ts = sample.timestamp_ms;
        previous = Some(sample);
    }
    out
}

/// The number of samples in a chunk, read from its header.
pub fn count(chunk: &[u8]) -> Result<u64, CodecError> {
    let mut reader = Reader { bytes: chunk, pos: 0 };
    reader.header()
}

/// Decodes every sample of a chunk.
pub fn decode(chunk: &[u8]) -> Result<Vec<Sample>, CodecError> {
    let mut out = Vec::new();
    decode_range(chunk, 0, usize::MAX, &mut out)?;
    Ok(out)
}

/// Decodes samples `skip..skip + take` of a chunk (clamped to its end), appending them to `out`.
/// The skipped ones are parsed but not allocated. The whole chunk is checked either way.
pub fn decode_range(chunk: &[u8], skip: usize, take: usize, out: &mut Vec<Sample>) -> Result<(), CodecError> {
    let mut reader = Reader { bytes: chunk, pos: 0 };
    let total = reader.header()?;
    let end = skip.saturating_add(take);
    // Borrowed views of the previous sample, so references and skipped samples cost no allocation.
    let mut previous_name: Option<&str> = None;
    let mut previous_labels: Vec<(&str, &str)> = Vec::new();
    let mut labels_now: Vec<(&str, &str)> = Vec::new();
    let mut previous_ts = 0i64;
    out.reserve(usize::try_from(total).unwrap_or(0).min(end.saturating_sub(skip)).min(chunk.len()));
    let mut index = 0usize;
    while (index as u64) < total {
        let name = reader.text(previous_name)?;
        let label_count = reader.varint()?;
        labels_now.clear();
        for position in 0..label_count {
            let before = usize::try_from(position).ok().and_then(|p| previous_labels.get(p));
            let label_name = reader.text(before.map(|l| l.0))?;
            let label_value = reader.text(before.map(|l| l.1))?;
            labels_now.push((label_name, label_value));
        }
        let value = f64::from_bits(u64::from_le_bytes(reader.array()?));
        let timestamp = previous_ts.wrapping_add(unzigzag(reader.varint()?));
        if index >= skip && index < end {
            // Encoded labels are sorted already and are taken as they are; a corrupt chunk's
            // unsorted or repeated names go through `from_pairs`, which restores the invariant.
            let labels = if labels_now.windows(2).all(|pair| pair[0].0 < pair[1].0) {
                Labels::from_sorted_unique(
                    labels_now.iter().map(|(n, v)| Label { name: (*n).into(), value: (*v).into() }),
                )
            } else {
                Labels::from_pairs(labels_now.iter().map(|(n, v)| (*n, *v)))
            };
            out.push(Sample::new(name, labels, value, timestamp));
        }
        previous_name = Some(name);
        std::mem::swap(&mut previous_labels, &mut labels_now);
        previous_ts = timestamp;
        index += 1;
    }
    match chunk.len() - reader.pos {
        0 => Ok(()),
        left => Err(CodecError::Trailing(left)),
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_text(out: &mut Vec<u8>, text: &str, previous: Option<&str>) {
    if previous == Some(text) {
        out.push(0);
    } else {
        put_varint(out, text.len() as u64 + 1);
        out.extend_from_slice(text.as_bytes());
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn header(&mut self) -> Result<u64, CodecError> {
        match self.bytes.first() {
            None => Err(CodecError::Truncated),
            Some(&VERSION) => {
                self.pos = 1;
                self.varint()
            }
            Some(&other) => Err(CodecError::Version(other)),
        }
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.pos).ok_or(CodecError::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(CodecError::Varint)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let slice = self.bytes.get(self.pos..self.pos + N).ok_or(CodecError::Truncated)?;
        self.pos += N;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn text(&mut self, previous: Option<&'a str>) -> Result<&'a str, CodecError> {
        let marker = self.varint()?;
        if marker == 0 {
            return previous.ok_or(CodecError::Reference);
        }
        let len = usize::try_from(marker - 1).map_err(|_| CodecError::Truncated)?;
        let end = self.pos.checked_add(len).ok_or(CodecError::Truncated)?;
        let bytes = self.bytes.get(self.pos..end).ok_or(CodecError::Truncated)?;
        self.pos = end;
        std::str::from_utf8(bytes).map_err(|_| CodecError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn arbitrary_sample() -> impl Strategy<Value = Sample> {
        (
            prop_oneof![Just("up".to_owned()), "[a-z_]{1,12}"],
            proptest::collection::vec((prop_oneof![Just("job".to_owned()), "[a-z]{1,4}"], prop_oneof![Just("x".to_owned()), "\\PC{0,6}"]), 0..5),
            prop_oneof![any::<f64>(), Just(f64::from_bits(STALE_NAN_BITS)), Just(f64::INFINITY)],
            prop_oneof![any::<i64>(), 1_700_000_000_000i64..1_700_000_100_000],
        )
            .prop_map(|(name, labels, value, ts)| Sample::new(name, Labels::from_pairs(labels), value, ts))
    }

    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.name == y.name && x.labels == y.labels && x.value.to_bits() == y.value.to_bits() && x.timestamp_ms == y.timestamp_ms
            })
    }

    proptest! {
        #[test]
        fn round_trips_every_bit(samples in proptest::collection::vec(arbitrary_sample(), 0..40)) {
            let chunk = encode(&samples);
            prop_assert_eq!(count(&chunk).unwrap(), samples.len() as u64);
            prop_assert!(same(&decode(&chunk).unwrap(), &samples));
        }

        #[test]
        fn ranges_decode_the_same_samples(samples in proptest::collection::vec(arbitrary_sample(), 0..30), skip in 0usize..35, take in 0usize..35) {
            let chunk = encode(&samples);
            let mut part = Vec::new();
            decode_range(&chunk, skip, take, &mut part).unwrap();
            let expected: Vec<Sample> = samples.iter().skip(skip).take(take).cloned().collect();
            prop_assert!(same(&part, &expected));
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn truncation_is_detected(samples in proptest::collection::vec(arbitrary_sample(), 1..10), cut in 1usize..64) {
            let chunk = encode(&samples);
            let cut = cut.min(chunk.len());
            prop_assert!(decode(&chunk[..chunk.len() - cut]).is_err());
        }
    }

    #[test]
    fn shared_strings_cost_one_byte() {
        let labels = Labels::from_pairs([("instance", "10.0.0.1:9100"), ("job", "node")]);
        let samples: Vec<Sample> = (0..100).map(|i| Sample::new("node_cpu_seconds_total", labels.clone(), i as f64, 1_700_000_000_000)).collect();
        let chunk = encode(&samples);
        // name, label count, 4 label strings, value, delta: 15 bytes per sample after the first.
        assert!(chunk.len() < 100 * 16 + 80, "{} bytes", chunk.len());
        assert!(matches!(decode(&[2, 0]), Err(CodecError::Version(2))));
        assert!(matches!(decode(&[1, 1, 0]), Err(CodecError::Reference)));
    }
}
