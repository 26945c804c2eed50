//! Durations written the way Kubernetes writes them (`30s`, `1m30s`, `250ms`, `1.5h`).
//!
//! We accept exactly Go's `time.ParseDuration` syntax, restricted to positive values, because that
//! is what the apiserver's CEL `duration()` function parses: the schema, the CEL rules and the
//! collector then agree on every value. Prometheus' `d`/`w`/`y` units are not Go syntax and are
//! rejected with a message that says so. Zero is a valid duration here; fields that must be
//! positive say so with a CEL rule on the field.

use std::fmt;
use std::time::Duration as StdDuration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The regular expression the CRD schema uses for every duration field.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// A non-negative duration in Go syntax, keeping the text the user wrote.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Duration {
    text: String,
    value: StdDuration,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration")]
    Empty,
    /// A number was expected at this byte offset.
    #[error("invalid duration {text:?}: expected a number at offset {offset}")]
    ExpectedNumber {
        /// The full input.
        text: String,
        /// Byte offset of the problem.
        offset: usize,
    },
    /// A unit was missing or unknown.
    #[error("invalid duration {text:?}: unknown or missing unit {unit:?} (use ns, us, ms, s, m or h)")]
    BadUnit {
        /// The full input.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// The value overflows.
    #[error("invalid duration {text:?}: too large")]
    Overflow {
        /// The full input.
        text: String,
    },
}

impl Duration {
    /// Parses a Go-syntax duration (no sign).
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let value = parse_go_duration(text)?;
        Ok(Self { text: text.to_owned(), value })
    }

    /// Builds a duration from a std value, rendering it in Go syntax.
    pub fn from_std(value: StdDuration) -> Self {
        Self { text: render_go_duration(value), value }
    }

    /// The parsed value.
    pub fn get(&self) -> StdDuration {
        self.value
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

fn parse_go_duration(text: &str) -> Result<StdDuration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut total_nanos: u128 = 0;
    while pos < bytes.len() {
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_part = &text[int_start..pos];
        let mut frac_part = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_part = &text[frac_start..pos];
            if frac_part.is_empty() {
                return Err(DurationError::ExpectedNumber { text: text.to_owned(), offset: pos });
            }
        }
        if int_part.is_empty() {
            return Err(DurationError::ExpectedNumber { text: text.to_owned(), offset: int_start });
        }
        let unit_start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_digit() && bytes[pos] != b'.' {
            pos += 1;
        }
        let unit = &text[unit_start..pos];
        let scale = unit_nanos(unit)
            .ok_or_else(|| DurationError::BadUnit { text: text.to_owned(), unit: unit.to_owned() })?;
        let overflow = || DurationError::Overflow { text: text.to_owned() };
        let int_value: u128 = int_part.parse().map_err(|_| overflow())?;
        let mut nanos = int_value.checked_mul(scale).ok_or_else(overflow)?;
        // Fractions beyond nanosecond precision are truncated, as Go does.
        let mut frac_scale = scale;
        for digit in frac_part.bytes() {
            frac_scale /= 10;
            nanos += u128::from(digit - b'0') * frac_scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
        if total_nanos > u128::from(u64::MAX) {
            return Err(overflow());
        }
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| DurationError::Overflow { text: text.to_owned() })?;
    let subsec = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| DurationError::Overflow { text: text.to_owned() })?;
    Ok(StdDuration::new(secs, subsec))
}

/// Renders a duration the way Go's `Duration.String` does for whole units (`1h30m`, `250ms`).
fn render_go_duration(value: StdDuration) -> String {
    let nanos = value.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if !nanos.is_multiple_of(1_000_000_000) {
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let mut secs = value.as_secs();
    let mut out = String::new();
    let hours = secs / 3600;
    secs %= 3600;
    let minutes = secs / 60;
    secs %= 60;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_syntax() {
        assert_eq!(Duration::parse("30s").unwrap().get(), StdDuration::from_secs(30));
        assert_eq!(Duration::parse("1m30s").unwrap().get(), StdDuration::from_secs(90));
        assert_eq!(Duration::parse("250ms").unwrap().get(), StdDuration::from_millis(250));
        assert_eq!(Duration::parse("1.5h").unwrap().get(), StdDuration::from_secs(5400));
        assert_eq!(Duration::parse("10us").unwrap().get(), StdDuration::from_micros(10));
        assert_eq!(Duration::parse("10µs").unwrap().get(), StdDuration::from_micros(10));
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in ["", "5", "1d", "s", "1.s", ".5s", "-1s", "1 s", "0", "1h0"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        let err = Duration::parse("1d").unwrap_err().to_string();
        assert!(err.contains("unit \"d\""), "{err}");
    }

    proptest! {
        #[test]
        fn render_then_parse_round_trips(millis in 1u64..10_000_000_000) {
            let value = StdDuration::from_millis(millis);
            let rendered = Duration::from_std(value);
            prop_assert_eq!(Duration::parse(rendered.as_str()).unwrap().get(), value);
        }

        #[test]
        fn schema_pattern_agrees_with_parser(text in "[0-9.]{0,4}(ns|us|ms|s|m|h|d|x)?[0-9.]{0,3}(s|m|h)?") {
            // The schema pattern and the parser must accept and reject the same strings.
            let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
            prop_assert_eq!(pattern.is_match(&text), parse_go_duration(&text).is_ok(), "{:?}", text);
        }

        #[test]
        fn parser_never_panics(text in "\\PC{0,20}") {
            let _ = Duration::parse(&text);
        }
    }
}
