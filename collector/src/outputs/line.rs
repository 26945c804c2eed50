//! The line format of the stdout and file outputs: one sample per line in the Prometheus text
//! exposition syntax with a millisecond timestamp, labels sorted by name:
//!
//! ```text
//! http_requests_total{code="200",instance="10.0.0.1:8080",job="shop/web"} 1027 1700000000000
//! ```
//!
//! Values use Prometheus' spellings for the special floats (`NaN`, `+Inf`, `-Inf`); a stale marker
//! prints as `NaN` like any other NaN, since the text format has no separate spelling for it.

use std::fmt::Write;

use crate::sample::{Sample, write_escaped_label_value};

/// Appends one sample as a line (with its trailing newline) to `out`.
pub fn write_line(out: &mut String, sample: &Sample) {
    out.push_str(&sample.name);
    if !sample.labels.is_empty() {
        out.push('{');
        for (index, label) in sample.labels.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(&label.name);
            out.push_str("=\"");
            // Writing into a String cannot fail.
            let _ = write_escaped_label_value(out, &label.value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_value(out, sample.value);
    let _ = write!(out, " {}", sample.timestamp_ms);
    out.push('\n');
}

/// Writes a float the way the Prometheus text format spells it.
pub fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Renders a whole batch.
pub fn render_batch(batch: &[Sample]) -> String {
    let mut out = String::with_capacity(batch.len() * 96);
    for sample in batch {
        write_line(&mut out, sample);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Labels;

    #[test]
    fn renders_sorted_escaped_labels_and_special_values() {
        let labels = Labels::from_pairs([("path", "/a\"b\\c\nd"), ("code", "200")]);
        let batch = [
            Sample::new("http_requests_total", labels, 1027.0, 1_700_000_000_000),
            Sample::new("up", Labels::default(), f64::INFINITY, 5),
            Sample::new("x", Labels::default(), f64::NAN, 6),
            Sample::new("y", Labels::default(), 0.25, 7),
        ];
        assert_eq!(
            render_batch(&batch),
            "http_requests_total{code=\"200\",path=\"/a\\\"b\\\\c\\nd\"} 1027 1700000000000\nup +Inf 5\nx NaN 6\ny 0.25 7\n"
        );
    }
}
