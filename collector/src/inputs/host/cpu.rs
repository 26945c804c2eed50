//! `cpu`: per-CPU time from the `cpuN` lines of `/proc/stat`, as node_exporter's cpu collector:
//! `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total{cpu,mode}`.

use super::{Metric, MetricKind, ParseError, field_u64};

/// Clock ticks per second of `/proc/stat` (`USER_HZ`): 100 on every Linux architecture that
/// node_exporter supports, which hard-codes it too.
pub const USER_HZ: f64 = 100.0;

/// Modes of `node_cpu_seconds_total`, in the order of `/proc/stat`'s columns.
const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

/// Parses `/proc/stat`.
pub fn parse(text: &str) -> Result<Vec<Metric>, ParseError> {
    let mut metrics = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(cpu) = fields.first().and_then(|name| name.strip_prefix("cpu")) else { continue };
        // The `cpu` line sums every CPU; node_exporter reports only the per-CPU lines.
        if cpu.is_empty() || !cpu.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for (column, mode) in MODES.into_iter().enumerate() {
            let ticks = field_u64(&fields, column + 1, index, mode)?;
            metrics.push(Metric::new("node_cpu_seconds_total", MetricKind::Counter, &[("cpu", cpu), ("mode", mode)], ticks as f64 / USER_HZ));
        }
        // guest and guest_nice exist since Linux 2.6.24 / 2.6.33; older kernels have no guest time.
        for (column, mode) in [(9, "user"), (10, "nice")] {
            if fields.len() > column {
                let ticks = field_u64(&fields, column, index, mode)?;
                metrics.push(Metric::new("node_cpu_guest_seconds_total", MetricKind::Counter, &[("cpu", cpu), ("mode", mode)], ticks as f64 / USER_HZ));
            }
        }
    }
    if metrics.is_empty() {
        return Err(ParseError::at(0, "no cpuN line"));
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a 2-CPU Debian 12 machine.
    const STAT: &str = "cpu  1027783 15848 164698 765132 16871 0 4986 14167 0 0
cpu0 502809 8017 78570 399661 6488 0 2167 7024 0 0
cpu1 524974 7830 86127 365471 10382 0 2818 7142 12 3
intr 13771253 0 9 0 0 0
ctxt 26437118
btime 1767590000
processes 112345
procs_running 3
procs_blocked 0
softirq 1234 0 1 2 3 4 5 6 7 8 9
";

    fn value(metrics: &[Metric], name: &str, cpu: &str, mode: &str) -> f64 {
        metrics
            .iter()
            .find(|m| m.name == name && m.labels.get("cpu") == Some(cpu) && m.labels.get("mode") == Some(mode))
            .map(|m| m.value)
            .unwrap_or_else(|| panic!("{name}{{cpu={cpu},mode={mode}}} missing"))
    }

    #[test]
    fn per_cpu_seconds_in_user_hz() {
        let metrics = parse(STAT).unwrap();
        assert_eq!(metrics.len(), 2 * (8 + 2), "two CPUs, 8 modes and 2 guest modes each; the total line is skipped");
        assert_eq!(value(&metrics, "node_cpu_seconds_total", "0", "idle"), 3996.61);
        assert_eq!(value(&metrics, "node_cpu_seconds_total", "1", "steal"), 71.42);
        assert_eq!(value(&metrics, "node_cpu_seconds_total", "1", "user"), 5249.74);
        assert_eq!(value(&metrics, "node_cpu_guest_seconds_total", "1", "user"), 0.12);
        assert_eq!(value(&metrics, "node_cpu_guest_seconds_total", "1", "nice"), 0.03);
        assert!(metrics.iter().all(|m| m.kind == MetricKind::Counter));
    }

    #[test]
    fn old_kernels_without_guest_columns() {
        let metrics = parse("cpu0 1 2 3 4 5 6 7 8\n").unwrap();
        assert_eq!(metrics.len(), 8);
        assert!(metrics.iter().all(|m| m.name == "node_cpu_seconds_total"));
    }

    #[test]
    fn malformed_lines_name_the_line_and_column() {
        assert_eq!(parse("cpu0 1 2 x 4 5 6 7 8\n").unwrap_err(), ParseError { line: 1, message: "system is not an unsigned integer: \"x\"".into() });
        assert_eq!(parse("intr 1\ncpu0 1 2\n").unwrap_err(), ParseError { line: 2, message: "missing field system".into() });
        assert!(parse("intr 1\n").is_err());
    }
}
