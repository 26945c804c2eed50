//! The Influx line protocol encoder, and the mapping from Prometheus samples to points.
//!
//! ```text
//! measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]
//! ```
//!
//! Escaping, exactly as InfluxDB parses it (checked against InfluxDB 1.6):
//! - measurement: `,` and ` ` get a backslash;
//! - tag keys, tag values, field keys: `,`, `=` and ` ` get a backslash;
//! - string field values: `"` and `\` get a backslash, inside double quotes.
//!
//! Outside string fields a backslash is literal, except that it escapes the character after
//! it. That makes some strings impossible to write, and this encoder refuses them rather than
//! send something that is stored differently or breaks the line ([`Unrepresentable`]): a
//! newline anywhere outside a string field, a name or tag ending in a backslash (it would
//! escape the delimiter after it), a measurement starting with `#` (a comment line), and the
//! key `time`, which InfluxDB rejects as a tag or field key.
//!
//! # Mapping from Prometheus samples
//!
//! One sample is one point: measurement = metric name, tags = labels (sorted by name, which is
//! also the order InfluxDB prefers), one float field `value`, timestamp converted from
//! milliseconds to the configured [`Precision`]. Labels with an empty value are left out (in
//! Prometheus an empty value means "no such label"; InfluxDB rejects empty tag values). A label
//! named `value` becomes a tag next to the field of the same name, which InfluxQL can tell apart
//! with `value::tag` / `value::field`.
//!
//! Line protocol has no NaN or infinities, so those samples, stale markers included, are
//! dropped and counted ([`DroppedSamples::non_finite`]); InfluxDB has no notion of staleness.

use std::fmt::Write as _;

/// The timestamp unit of a write; the `precision` query parameter says which one the body uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Nanoseconds: exact for millisecond samples until the year 2262, when i64 runs out.
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds: the samples' own resolution, so no conversion at all; the default.
    #[default]
    Milliseconds,
    /// Seconds: samples within one second collapse onto the same point (the later one wins in
    /// InfluxDB). The conversion rounds towards minus infinity.
    Seconds,
}

impl Precision {
    /// The `precision` parameter of InfluxDB 1.x `/write`. 1.x spells microseconds `u` and
    /// silently reads any value it does not know, `us` included, as nanoseconds.
    pub fn v1_param(self) -> &'static str {
        match self {
            Self::Nanoseconds => "ns",
            Self::Microseconds => "u",
            Self::Milliseconds => "ms",
            Self::Seconds => "s",
        }
    }

    /// The `precision` parameter of InfluxDB 2.x `/api/v2/write`.
    pub fn v2_param(self) -> &'static str {
        match self {
            Self::Nanoseconds => "ns",
            Self::Microseconds => "us",
            Self::Milliseconds => "ms",
            Self::Seconds => "s",
        }
    }

    /// A millisecond timestamp in this unit, `None` when it does not fit in an i64.
    pub fn from_millis(self, timestamp_ms: i64) -> Option<i64> {
        match self {
            Self::Nanoseconds => timestamp_ms.checked_mul(1_000_000),
            Self::Microseconds => timestamp_ms.checked_mul(1_000),
            Self::Milliseconds => Some(timestamp_ms),
            Self::Seconds => Some(timestamp_ms.div_euclid(1_000)),
        }
    }
}

/// A field value of a point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    /// A float; must be finite.
    Float(f64),
    /// A signed integer, written with the `i` suffix.
    Integer(i64),
    /// An unsigned integer, written with the `u` suffix (InfluxDB 2.x, or 1.x with it enabled).
    UInteger(u64),
    /// A string, written quoted and escaped.
    String(&'a str),
    /// A boolean.
    Boolean(bool),
}

/// Why a point cannot be written in line protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unrepresentable {
    /// NaN or an infinity, which line protocol cannot carry.
    #[error("value is NaN or infinite")]
    NonFinite,
    /// A newline outside a string field would end the line.
    #[error("newline in a measurement, tag or field key")]
    Newline,
    /// A trailing backslash would escape the delimiter after it.
    #[error("measurement, tag or field key ends with a backslash")]
    TrailingBackslash,
    /// An empty measurement, tag key or field key.
    #[error("empty measurement, tag key or field key")]
    Empty,
    /// A measurement starting with `#` makes the line a comment.
    #[error("measurement starts with '#'")]
    CommentMarker,
    /// `time` as a tag or field key, which InfluxDB rejects.
    #[error("'time' used as a tag or field key")]
    ReservedKey,
    /// The timestamp does not fit the precision in an i64.
    #[error("timestamp out of range for the precision")]
    TimestampOverflow,
    /// A point needs at least one field.
    #[error("point has no fields")]
    NoFields,
}

impl Unrepresentable {
    /// The short static category for metric labels.
    pub fn category(self) -> &'static str {
        match self {
            Self::NonFinite => "non_finite",
            _ => "unrepresentable",
        }
    }
}

/// Appends one point as a line (with its trailing newline) to `out`. On error nothing is
/// appended. Tags are written in the order given; tags with an empty value are skipped.
pub fn write_point<'a>(
    out: &mut String,
    measurement: &str,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    fields: &[(&str, FieldValue<'_>)],
    timestamp: Option<i64>,
) -> Result<(), Unrepresentable> {
    let start = out.len();
    let result = write_point_unchecked(out, measurement, tags, fields, timestamp);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_point_unchecked<'a>(
    out: &mut String,
    measurement: &str,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    fields: &[(&str, FieldValue<'_>)],
    timestamp: Option<i64>,
) -> Result<(), Unrepresentable> {
    if measurement.starts_with('#') {
        return Err(Unrepresentable::CommentMarker);
    }
    write_escaped(out, measurement, &[',', ' '])?;
    for (key, value) in tags {
        if value.is_empty() {
            continue;
        }
        check_key(key)?;
        out.push(',');
        write_escaped(out, key, &[',', '=', ' '])?;
        out.push('=');
        write_escaped(out, value, &[',', '=', ' '])?;
    }
    if fields.is_empty() {
        return Err(Unrepresentable::NoFields);
    }
    for (index, (key, value)) in fields.iter().enumerate() {
        check_key(key)?;
        out.push(if index == 0 { ' ' } else { ',' });
        write_escaped(out, key, &[',', '=', ' '])?;
        out.push('=');
        write_field_value(out, *value)?;
    }
    if let Some(timestamp) = timestamp {
        // Writing into a String cannot fail.
        let _ = write!(out, " {timestamp}");
    }
    out.push('\n');
    Ok(())
}

fn check_key(key: &str) -> Result<(), Unrepresentable> {
    if key == "time" { Err(Unrepresentable::ReservedKey) } else { Ok(()) }
}

/// Appends `text` with a backslash before each of `special` (all ASCII); refuses text line
/// protocol cannot carry outside a string field.
fn write_escaped(out: &mut String, text: &str, special: &[char]) -> Result<(), Unrepresentable> {
    if text.is_empty() {
        return Err(Unrepresentable::Empty);
    }
    if text.ends_with('\\') {
        return Err(Unrepresentable::TrailingBackslash);
    }
    // Most names and values need no escaping: copy them whole rather than char by char.
    let needs_work = |byte: u8| byte == b'\n' || special.iter().any(|&ch| ch as u32 == u32::from(byte));
    if !text.bytes().any(needs_work) {
        out.push_str(text);
        return Ok(());
    }
    for ch in text.chars() {
        if ch == '\n' {
            return Err(Unrepresentable::Newline);
        }
        if special.contains(&ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    Ok(())
}

/// Appends a field value in line-protocol syntax.
pub fn write_field_value(out: &mut String, value: FieldValue<'_>) -> Result<(), Unrepresentable> {
    match value {
        FieldValue::Float(value) => {
            if !value.is_finite() {
                return Err(Unrepresentable::NonFinite);
            }
            // Display is the shortest text that reads back to the same f64, never exponent
            // notation; a whole number without `i` is still a float to InfluxDB.
            let _ = write!(out, "{value}");
        }
        FieldValue::Integer(value) => {
            let _ = write!(out, "{value}i");
        }
        FieldValue::UInteger(value) => {
            let _ = write!(out, "{value}u");
        }
        FieldValue::Boolean(value) => out.push_str(if value { "true" } else { "false" }),
        FieldValue::String(value) => {
            out.push('"');
            for ch in value.chars() {
                if ch == '"' || ch == '\\' {
                    out.push('\\');
                }
                out.push(ch);
            }
            out.push('"');
        }
    }
    Ok(())
}

/// The field every sample is written to.
pub const VALUE_FIELD: &str = "value";

/// Appends one sample as a point (see the module docs for the mapping).
pub fn write_sample(
    out: &mut String,
    sample: &crate::sample::Sample,
    precision: Precision,
) -> Result<(), Unrepresentable> {
    if !sample.value.is_finite() {
        return Err(Unrepresentable::NonFinite);
    }
    let timestamp = precision.from_millis(sample.timestamp_ms).ok_or(Unrepresentable::TimestampOverflow)?;
    write_point(
        out,
        &sample.name,
        sample.labels.iter().map(|label| (label.name.as_str(), label.value.as_str())),
        &[(VALUE_FIELD, FieldValue::Float(sample.value))],
        Some(timestamp),
    )
}

/// Samples left out of a body, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DroppedSamples {
    /// NaN (stale markers included) and infinities.
    pub non_finite: usize,
    /// Everything else [`Unrepresentable`] names.
    pub unrepresentable: usize,
}

impl DroppedSamples {
    /// All dropped samples.
    pub fn total(&self) -> usize {
        self.non_finite + self.unrepresentable
    }
}

/// A batch in line protocol.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineBatch {
    /// The request body, one line per point.
    pub body: String,
    /// Points in `body`.
    pub points: usize,
    /// Samples that were left out.
    pub dropped: DroppedSamples,
}

/// Encodes a batch, leaving out (and counting) what line protocol cannot carry.
pub fn encode_batch(batch: &[crate::sample::Sample], precision: Precision) -> LineBatch {
    let mut encoded = LineBatch { body: String::with_capacity(batch.len() * 96), ..LineBatch::default() };
    for sample in batch {
        match write_sample(&mut encoded.body, sample, precision) {
            Ok(()) => encoded.points += 1,
            Err(Unrepresentable::NonFinite) => encoded.dropped.non_finite += 1,
            Err(_) => encoded.dropped.unrepresentable += 1,
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Labels, STALE_NAN_BITS, Sample};

    fn point(
        measurement: &str,
        tags: &[(&str, &str)],
        fields: &[(&str, FieldValue<'_>)],
    ) -> Result<String, Unrepresentable> {
        let mut out = String::new();
        write_point(&mut out, measurement, tags.iter().copied(), fields, Some(7))?;
        Ok(out)
    }

    #[test]
    fn escapes_each_part_by_its_own_rules() {
        let line = point(
            "cpu load,x=y",
            &[("ta g,=", "v a,l=ue"), ("plain", "a\"b\\c")],
            &[("f i,=eld", FieldValue::String("say \"hi\" \\o/ , = ")), ("n", FieldValue::Float(1.5))],
        )
        .unwrap();
        assert_eq!(
            line,
            "cpu\\ load\\,x=y,ta\\ g\\,\\==v\\ a\\,l\\=ue,plain=a\"b\\c f\\ i\\,\\=eld=\"say \\\"hi\\\" \\\\o/ , = \",n=1.5 7\n"
        );
    }

    #[test]
    fn field_types_have_their_suffixes() {
        let line = point(
            "m",
            &[],
            &[
                ("f", FieldValue::Float(2.0)),
                ("i", FieldValue::Integer(-3)),
                ("u", FieldValue::UInteger(4)),
                ("b", FieldValue::Boolean(true)),
                ("s", FieldValue::String("")),
            ],
        )
        .unwrap();
        assert_eq!(line, "m f=2,i=-3i,u=4u,b=true,s=\"\" 7\n");
    }

    #[test]
    fn floats_are_written_exactly_without_exponents() {
        for value in [0.1, -0.0, 1e21, 1e-7, f64::MAX, f64::MIN_POSITIVE, 123_456_789.123_456_79] {
            let mut out = String::new();
            write_field_value(&mut out, FieldValue::Float(value)).unwrap();
            assert!(!out.contains('e'), "{out}");
            assert_eq!(out.parse::<f64>().unwrap().to_bits(), value.to_bits(), "{out}");
        }
    }

    #[test]
    fn unrepresentable_points_append_nothing() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Unrepresentable);
        let cases: [Case<'_>; 7] = [
            ("m\n", &[], Unrepresentable::Newline),
            ("m", &[("k", "a\nb")], Unrepresentable::Newline),
            ("m\\", &[], Unrepresentable::TrailingBackslash),
            ("m", &[("k", "v\\")], Unrepresentable::TrailingBackslash),
            ("#m", &[], Unrepresentable::CommentMarker),
            ("m", &[("time", "x")], Unrepresentable::ReservedKey),
            ("", &[], Unrepresentable::Empty),
        ];
        for (measurement, tags, expected) in cases {
            let mut out = String::from("before\n");
            let result =
                write_point(&mut out, measurement, tags.iter().copied(), &[("v", FieldValue::Float(1.0))], None);
            assert_eq!(result, Err(expected), "{measurement:?} {tags:?}");
            assert_eq!(out, "before\n");
        }
        assert_eq!(point("m", &[], &[]), Err(Unrepresentable::NoFields));
        assert_eq!(point("m", &[], &[("time", FieldValue::Float(1.0))]), Err(Unrepresentable::ReservedKey));
        assert_eq!(point("m", &[], &[("v", FieldValue::Float(f64::NAN))]), Err(Unrepresentable::NonFinite));
    }

    #[test]
    fn inner_backslashes_are_literal_and_empty_tag_values_skipped() {
        assert_eq!(
            point("a\\b", &[("k", "x\\y"), ("e", "")], &[("v", FieldValue::Float(1.0))]).unwrap(),
            "a\\b,k=x\\y v=1 7\n"
        );
        // A backslash before an escaped character stays: InfluxDB unescapes only "\,", "\=", "\ ".
        assert_eq!(point("m", &[("k", "x\\,y")], &[("v", FieldValue::Float(1.0))]).unwrap(), "m,k=x\\\\,y v=1 7\n");
    }

    #[test]
    fn precision_converts_milliseconds() {
        let ms = 1_700_000_000_123;
        assert_eq!(Precision::Nanoseconds.from_millis(ms), Some(1_700_000_000_123_000_000));
        assert_eq!(Precision::Microseconds.from_millis(ms), Some(1_700_000_000_123_000));
        assert_eq!(Precision::Milliseconds.from_millis(ms), Some(ms));
        assert_eq!(Precision::Seconds.from_millis(ms), Some(1_700_000_000));
        assert_eq!(Precision::Seconds.from_millis(-1), Some(-1));
        assert_eq!(Precision::Nanoseconds.from_millis(i64::MAX / 1000), None);
        assert_eq!(Precision::Microseconds.v1_param(), "u");
        assert_eq!(Precision::Microseconds.v2_param(), "us");
    }

    #[test]
    fn samples_map_to_points_and_non_finite_ones_are_counted() {
        let labels = Labels::from_pairs([("job", "api"), ("instance", "10.0.0.1:80"), ("empty", "")]);
        let batch = [
            Sample::new("http_requests_total", labels.clone(), 1027.0, 1_700_000_000_000),
            Sample::new("up", labels.clone(), f64::from_bits(STALE_NAN_BITS), 1),
            Sample::new("up", labels.clone(), f64::INFINITY, 1),
            Sample::new("bad", Labels::from_pairs([("k", "x\n")]), 1.0, 1),
            Sample::new("g", Labels::default(), -0.5, 1_700_000_000_999),
        ];
        let encoded = encode_batch(&batch, Precision::Seconds);
        assert_eq!(
            encoded.body,
            "http_requests_total,instance=10.0.0.1:80,job=api value=1027 1700000000\ng value=-0.5 1700000000\n"
        );
        assert_eq!(encoded.points, 2);
        assert_eq!(encoded.dropped, DroppedSamples { non_finite: 2, unrepresentable: 1 });
        assert_eq!(encoded.dropped.total(), 3);
    }
}
