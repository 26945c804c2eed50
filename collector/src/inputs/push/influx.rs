//! Influx line protocol → samples, with InfluxDB's syntax rules.
//!
//! ```text
//! measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]
//! ```
//!
//! - A backslash pairs with the character after it, so an escaped delimiter does not end a
//!   token; then, as InfluxDB unescapes, `\,` and `\ ` become `,` and ` ` in measurements, and
//!   `\,`, `\ ` and `\=` become `,`, ` ` and `=` in tag keys, tag values and field keys. Every
//!   other backslash stays as it is.
//! - String field values are double-quoted with `\"` and `\\` escapes and may hold newlines.
//! - Lines starting with `#` and blank lines are skipped; `\r\n` line ends are accepted.
//! - A point without a timestamp gets the time of the request.
//!
//! Mapping to samples (the mapping Telegraf's Prometheus output uses, and the inverse of the
//! Influx output's): one sample per numeric field; the field `value` is named after the
//! measurement alone, any other field `measurement_field`; tags become labels. Integers (`i`),
//! unsigned integers (`u`) and floats become the value, booleans 1 or 0; string fields carry no
//! number and are skipped. NaN and infinities are not line protocol and are refused.
//!
//! A body is accepted whole or refused whole: the first error names its line and reason.

use crate::outputs::influx::Precision;
use crate::sample::{Labels, Sample};

/// Why a line-protocol body was refused: the 1-based line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct InfluxParseError {
    /// 1-based line number in the body.
    pub line: usize,
    /// What is wrong.
    pub reason: InfluxSyntaxError,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfluxSyntaxError {
    /// The body is not UTF-8.
    #[error("invalid UTF-8")]
    NotUtf8,
    /// No measurement before a `,` or space.
    #[error("missing measurement")]
    MissingMeasurement,
    /// A tag without `=value`, or with an empty key or value.
    #[error("invalid tag {0:?}: tags must be key=value with neither empty")]
    InvalidTag(String),
    /// The same tag key twice.
    #[error("duplicate tag {0:?}")]
    DuplicateTag(String),
    /// No field set.
    #[error("missing fields")]
    MissingFields,
    /// A field without `=value`, or with an empty key.
    #[error("invalid field {0:?}: fields must be key=value")]
    InvalidField(String),
    /// A field value that is no number, boolean or string.
    #[error("invalid value {value:?} of field {field:?}")]
    InvalidFieldValue {
        /// The field key.
        field: String,
        /// The text of the value.
        value: String,
    },
    /// A string field without its closing quote.
    #[error("unterminated string value of field {0:?}")]
    UnterminatedString(String),
    /// A timestamp that is no integer or does not fit in milliseconds since the epoch.
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    /// Text after the timestamp.
    #[error("unexpected text after the timestamp")]
    TrailingText,
}

/// Parses a line-protocol body whose timestamps are in `precision`; points without a
/// timestamp get `now_ms`.
pub fn parse_line_protocol(body: &[u8], precision: Precision, now_ms: i64) -> Result<Vec<Sample>, InfluxParseError> {
    let text = std::str::from_utf8(body).map_err(|error| {
        let line = body[..error.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        InfluxParseError { line, reason: InfluxSyntaxError::NotUtf8 }
    })?;
    let mut parser = Parser { text, position: 0, line: 1 };
    let mut samples = Vec::new();
    loop {
        parser.skip_blank_and_comments();
        if parser.at_end() {
            return Ok(samples);
        }
        let line = parser.line;
        parser.point(precision, now_ms, &mut samples).map_err(|reason| InfluxParseError { line, reason })?;
    }
}

struct Parser<'a> {
    text: &'a str,
    position: usize,
    line: usize,
}

/// What ended a token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Comma,
    Space,
    Equals,
    Newline,
    Eof,
}

impl<'a> Parser<'a> {
    fn at_end(&self) -> bool {
        self.position >= self.text.len()
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.position..).unwrap_or_default()
    }

    fn skip_blank_and_comments(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start_matches([' ', '\t', '\r']);
            self.position += rest.len() - trimmed.len();
            if trimmed.starts_with('\n') {
                self.position += 1;
                self.line += 1;
            } else if trimmed.starts_with('#') {
                let length = trimmed.find('\n').unwrap_or(trimmed.len());
                self.position += length;
            } else {
                return;
            }
        }
    }

    /// Reads up to the first unescaped delimiter among `stops`; a backslash pairs with the
    /// character after it. Returns the raw token and what ended it (not consumed).
    fn token(&mut self, stops: &[char]) -> (&'a str, End) {
        let rest = self.rest();
        let mut chars = rest.char_indices();
        while let Some((index, ch)) = chars.next() {
            if ch == '\\' {
                // An escaped newline still ends the line (InfluxDB never joins lines).
                if rest[index + 1..].starts_with('\n') {
                    self.position += index + 1;
                    return (&rest[..index + 1], End::Newline);
                }
                chars.next();
                continue;
            }
            let end = match ch {
                '\n' => Some(End::Newline),
                '\r' if rest[index + 1..].starts_with('\n') => Some(End::Newline),
                ',' if stops.contains(&',') => Some(End::Comma),
                ' ' if stops.contains(&' ') => Some(End::Space),
                '=' if stops.contains(&'=') => Some(End::Equals),
                _ => None,
            };
            if let Some(end) = end {
                self.position += index;
                return (&rest[..index], end);
            }
        }
        self.position += rest.len();
        (rest, End::Eof)
    }

    fn skip(&mut self, bytes: usize) {
        self.position += bytes;
    }

    fn point(&mut self, precision: Precision, now_ms: i64, samples: &mut Vec<Sample>) -> Result<(), InfluxSyntaxError> {
        let (raw, mut end) = self.token(&[',', ' ']);
        if raw.is_empty() {
            return Err(InfluxSyntaxError::MissingMeasurement);
        }
        let measurement = unescape(raw, &[',', ' ']);
        let mut labels = Labels::default();
        while end == End::Comma {
            self.skip(1);
            let (raw, tag_end) = self.token(&[',', ' ']);
            let Some((key, value)) = split_unescaped_equals(raw) else {
                return Err(InfluxSyntaxError::InvalidTag(raw.to_owned()));
            };
            let (key, value) = (unescape(key, &[',', ' ', '=']), unescape(value, &[',', ' ', '=']));
            if key.is_empty() || value.is_empty() {
                return Err(InfluxSyntaxError::InvalidTag(raw.to_owned()));
            }
            if labels.get(&key).is_some() {
                return Err(InfluxSyntaxError::DuplicateTag(key));
            }
            labels.set(key, value);
            end = tag_end;
        }
        if end != End::Space {
            return Err(InfluxSyntaxError::MissingFields);
        }
        self.skip_spaces();
        let mut fields = Vec::new();
        loop {
            let (raw_key, key_end) = self.token(&[',', ' ', '=']);
            if fields.is_empty() && raw_key.is_empty() && key_end != End::Equals {
                return Err(InfluxSyntaxError::MissingFields);
            }
            if key_end != End::Equals || raw_key.is_empty() {
                return Err(InfluxSyntaxError::InvalidField(raw_key.to_owned()));
            }
            self.skip(1);
            let key = unescape(raw_key, &[',', ' ', '=']);
            let value = self.field_value(&key)?;
            fields.push((key, value));
            if self.rest().starts_with(',') {
                self.skip(1);
                continue;
            }
            break;
        }
        let timestamp_ms = if self.rest().starts_with(' ') {
            self.skip_spaces();
            let (raw, _) = self.token(&[' ']);
            let raw = raw.trim_end_matches('\r');
            if raw.is_empty() { now_ms } else { timestamp_ms(raw, precision)? }
        } else {
            now_ms
        };
        self.skip_spaces();
        let rest = self.rest();
        let rest = rest.strip_prefix('\r').unwrap_or(rest);
        if !(rest.is_empty() || rest.starts_with('\n')) {
            return Err(InfluxSyntaxError::TrailingText);
        }
        for (key, value) in fields {
            let Some(value) = value else { continue };
            let name = if key == "value" { measurement.clone() } else { format!("{measurement}_{key}") };
            samples.push(Sample::new(name, labels.clone(), value, timestamp_ms));
        }
        Ok(())
    }

    fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.position += rest.len() - rest.trim_start_matches(' ').len();
    }

    /// A field value: `Some(number)`, or `None` for a string (which carries no sample).
    fn field_value(&mut self, key: &str) -> Result<Option<f64>, InfluxSyntaxError> {
        let rest = self.rest();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut escaped = false;
            for (index, ch) in quoted.char_indices() {
                match ch {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        let consumed = &quoted[..index];
                        self.line += consumed.matches('\n').count();
                        self.skip(index + 2);
                        return Ok(None);
                    }
                    _ => {}
                }
            }
            return Err(InfluxSyntaxError::UnterminatedString(key.to_owned()));
        }
        let (raw, _) = self.token(&[',', ' ']);
        let raw = raw.trim_end_matches('\r');
        parse_number(raw).map(Some).ok_or_else(|| InfluxSyntaxError::InvalidFieldValue { field: key.to_owned(), value: raw.to_owned() })
    }
}

/// Splits `key=value` at the first `=` not escaped by a backslash.
fn split_unescaped_equals(raw: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (index, ch) in raw.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '=' => return Some((&raw[..index], &raw[index + 1..])),
            _ => {}
        }
    }
    None
}

/// Removes the backslash of `\x` for each `x` in `special`; other backslashes stay.
fn unescape(raw: &str, special: &[char]) -> String {
    if !raw.contains('\\') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            match chars.peek() {
                Some(next) if special.contains(next) => {
                    out.push(*next);
                    chars.next();
                }
                Some(&next) => {
                    // The pair stays literal, and its second character cannot start a new escape.
                    out.push('\\');
                    out.push(next);
                    chars.next();
                }
                None => out.push('\\'),
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// A numeric or boolean field value, as InfluxDB reads it.
fn parse_number(raw: &str) -> Option<f64> {
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(0.0),
        _ => {}
    }
    if let Some(integer) = raw.strip_suffix('i') {
        return integer.parse::<i64>().ok().map(|value| value as f64);
    }
    if let Some(unsigned) = raw.strip_suffix('u') {
        return unsigned.parse::<u64>().ok().map(|value| value as f64);
    }
    // Rust also reads `inf` and `NaN`, which are not line protocol.
    let float_syntax = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    float_syntax.then(|| raw.parse::<f64>().ok()).flatten().filter(|value| value.is_finite())
}

fn timestamp_ms(raw: &str, precision: Precision) -> Result<i64, InfluxSyntaxError> {
    let invalid = || InfluxSyntaxError::InvalidTimestamp(raw.to_owned());
    let value: i64 = raw.parse().map_err(|_| invalid())?;
    match precision {
        Precision::Nanoseconds => Ok(value.div_euclid(1_000_000)),
        Precision::Microseconds => Ok(value.div_euclid(1_000)),
        Precision::Milliseconds => Ok(value),
        Precision::Seconds => value.checked_mul(1_000).ok_or_else(invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::influx::encode_batch;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_000;

    fn parse(body: &str) -> Result<Vec<Sample>, InfluxParseError> {
        parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, NOW)
    }

    #[test]
    fn reads_points_as_influxdb_does() {
        let body = "# comment\n\
            cpu,host=a\\ b,region=eu\\,w usage_idle=99.5,usage_user=5i,ok=true,msg=\"hi, \\\"there\\\"\nx\" 1700000000000000000\r\n\
            \n\
            weather\\ now,city=Z\\=1 value=-3.25e1\n\
            mem used=7u";
        let samples = parse(body).unwrap();
        let labels = Labels::from_pairs([("host", "a b"), ("region", "eu,w")]);
        assert_eq!(
            samples,
            vec![
                Sample::new("cpu_usage_idle", labels.clone(), 99.5, NOW),
                Sample::new("cpu_usage_user", labels.clone(), 5.0, NOW),
                Sample::new("cpu_ok", labels, 1.0, NOW),
                Sample::new("weather now", Labels::from_pairs([("city", "Z=1")]), -32.5, NOW),
                Sample::new("mem_used", Labels::default(), 7.0, NOW),
            ]
        );
    }

    #[test]
    fn errors_name_the_line_and_reason() {
        let cases = [
            ("cpu\n", "line 1: missing fields"),
            ("ok v=1\ncpu,host v=1\n", "line 2: invalid tag \"host\": tags must be key=value with neither empty"),
            ("cpu,a=1,a=2 v=1", "line 1: duplicate tag \"a\""),
            ("cpu v=abc", "line 1: invalid value \"abc\" of field \"v\""),
            ("cpu v=NaN", "line 1: invalid value \"NaN\" of field \"v\""),
            ("cpu v=1 12x", "line 1: invalid timestamp \"12x\""),
            ("cpu v=1 12 extra", "line 1: unexpected text after the timestamp"),
            ("cpu v=\"open", "line 1: unterminated string value of field \"v\""),
            (",a=b v=1", "line 1: missing measurement"),
            ("cpu =1", "line 1: invalid field \"\": fields must be key=value"),
        ];
        for (body, expected) in cases {
            assert_eq!(parse(body).unwrap_err().to_string(), expected, "{body:?}");
        }
        let multi = "a v=\"x\ny\"\nb v=oops";
        assert_eq!(parse(multi).unwrap_err().line, 3, "lines inside strings count");
    }

    #[test]
    fn precisions_convert_to_milliseconds() {
        let at = |precision, raw: &str| parse_line_protocol(format!("m v=1 {raw}").as_bytes(), precision, NOW).unwrap()[0].timestamp_ms;
        assert_eq!(at(Precision::Nanoseconds, "1700000000123456789"), 1_700_000_000_123);
        assert_eq!(at(Precision::Microseconds, "1700000000123456"), 1_700_000_000_123);
        assert_eq!(at(Precision::Milliseconds, "1700000000123"), 1_700_000_000_123);
        assert_eq!(at(Precision::Seconds, "1700000000"), 1_700_000_000_000);
        assert!(parse_line_protocol(b"m v=1 9223372036854775807", Precision::Seconds, NOW).is_err());
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        // No backslash: the output refuses some, and a backslash before a delimiter cannot be
        // written so that InfluxDB reads it back (see the output's docs).
        "[a-zA-Z_][a-zA-Z0-9_ ,=.:é-]{0,8}".prop_filter("no trailing or leading specials", |s| {
            !s.starts_with('#') && s != "time"
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_line_protocol(&body, Precision::Nanoseconds, NOW);
        }

        #[test]
        fn arbitrary_text_never_panics(body in "[a-z,= \\\\\"\n\r#0-9.ie-]{0,80}") {
            let _ = parse_line_protocol(body.as_bytes(), Precision::Milliseconds, NOW);
        }

        #[test]
        fn what_the_output_encodes_parses_to_the_same_samples(
            batch in proptest::collection::vec(
                (name_strategy(), proptest::collection::vec((name_strategy(), "[a-zA-Z0-9 ,=é]{1,6}"), 0..4), -1e12..1e12f64, -1_000_000_000_000i64..4_000_000_000_000),
                0..10,
            ),
            precision in prop_oneof![Just(Precision::Nanoseconds), Just(Precision::Microseconds), Just(Precision::Milliseconds)],
        ) {
            let batch: Vec<Sample> = batch
                .into_iter()
                .map(|(name, tags, value, ts)| {
                    let tags = tags.into_iter().filter(|(key, _)| key != "time");
                    Sample::new(name, Labels::from_pairs(tags), value, ts)
                })
                .collect();
            let encoded = encode_batch(&batch, precision);
            prop_assert_eq!(encoded.points, batch.len());
            let parsed = parse_line_protocol(encoded.body.as_bytes(), precision, NOW).unwrap();
            prop_assert_eq!(parsed, batch);
        }
    }
}
