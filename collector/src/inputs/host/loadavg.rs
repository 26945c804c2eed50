//! `loadavg`: `node_load1`, `node_load5`, `node_load15` from `/proc/loadavg`.

use super::{Metric, MetricKind, ParseError};

/// Parses `/proc/loadavg` (`0.50 0.25 0.10 1/123 4567`).
pub fn parse(text: &str) -> Result<Vec<Metric>, ParseError> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    ["node_load1", "node_load5", "node_load15"]
        .iter()
        .enumerate()
        .map(|(position, name)| {
            let text = fields.get(position).ok_or_else(|| ParseError::at(0, format!("missing field {name}")))?;
            let value: f64 = text.parse().map_err(|_| ParseError::at(0, format!("{name} is not a number: {text:?}")))?;
            Ok(Metric::new(*name, MetricKind::Gauge, &[], value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_load_averages() {
        let metrics = parse("1.52 0.98 0.61 3/412 98765\n").unwrap();
        let got: Vec<(&str, f64)> = metrics.iter().map(|m| (m.name.as_str(), m.value)).collect();
        assert_eq!(got, [("node_load1", 1.52), ("node_load5", 0.98), ("node_load15", 0.61)]);
        assert!(metrics.iter().all(|m| m.kind == MetricKind::Gauge));
    }

    #[test]
    fn truncated_or_garbled() {
        assert_eq!(parse("1.0 2.0").unwrap_err().message, "missing field node_load15");
        assert_eq!(parse("1.0 x 3.0").unwrap_err().message, "node_load5 is not a number: \"x\"");
    }
}
