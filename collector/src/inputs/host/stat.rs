//! `stat`: kernel and process counters from `/proc/stat`, as node_exporter's stat collector.

use super::{Metric, MetricKind, ParseError, field_u64};

/// Parses `/proc/stat`.
pub fn parse(text: &str) -> Result<Vec<Metric>, ParseError> {
    let mut metrics = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, kind) = match fields.first().copied() {
            Some("btime") => ("node_boot_time_seconds", MetricKind::Gauge),
            Some("ctxt") => ("node_context_switches_total", MetricKind::Counter),
            Some("processes") => ("node_forks_total", MetricKind::Counter),
            // The first number is the total; the per-interrupt columns are not exported.
            Some("intr") => ("node_intr_total", MetricKind::Counter),
            Some("procs_running") => ("node_procs_running", MetricKind::Gauge),
            Some("procs_blocked") => ("node_procs_blocked", MetricKind::Gauge),
            _ => continue,
        };
        let value = field_u64(&fields, 1, index, fields[0])?;
        metrics.push(Metric::new(name, kind, &[], value as f64));
    }
    if metrics.is_empty() {
        return Err(ParseError::at(0, "none of btime, ctxt, processes, intr, procs_running, procs_blocked found"));
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_counters_and_gauges() {
        let text = "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 13771253 0 9 0\nctxt 26437118\nbtime 1767590000\n\
                    processes 112345\nprocs_running 3\nprocs_blocked 1\nsoftirq 1234 0 1\n";
        let metrics = parse(text).unwrap();
        let expected = [
            ("node_intr_total", MetricKind::Counter, 13_771_253.0),
            ("node_context_switches_total", MetricKind::Counter, 26_437_118.0),
            ("node_boot_time_seconds", MetricKind::Gauge, 1_767_590_000.0),
            ("node_forks_total", MetricKind::Counter, 112_345.0),
            ("node_procs_running", MetricKind::Gauge, 3.0),
            ("node_procs_blocked", MetricKind::Gauge, 1.0),
        ];
        let got: Vec<(&str, MetricKind, f64)> = metrics.iter().map(|m| (m.name.as_str(), m.kind, m.value)).collect();
        assert_eq!(got, expected);
        assert!(metrics.iter().all(|m| m.labels.is_empty()));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        assert_eq!(parse("ctxt lots\n").unwrap_err().message, "ctxt is not an unsigned integer: \"lots\"");
    }
}
