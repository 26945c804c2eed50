//! `netdev`: per-interface counters from `/proc/net/dev`, as node_exporter's netdev collector
//! names them (`node_network_receive_bytes_total{device}`, ...).

use super::{DeviceMatcher, Metric, MetricKind, ParseError, field_u64};

/// Statistic names of `/proc/net/dev`'s sixteen columns, as node_exporter names them.
const COLUMNS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

/// Parses `/proc/net/dev`, reporting the interfaces `devices` admits.
pub fn parse(text: &str, devices: &DeviceMatcher) -> Result<Vec<Metric>, ParseError> {
    let mut metrics = Vec::new();
    // Two header lines, then `name: sixteen numbers`.
    for (index, line) in text.lines().enumerate().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let (device, numbers) = line.split_once(':').ok_or_else(|| ParseError::at(index, "no interface name"))?;
        let device = device.trim();
        let fields: Vec<&str> = numbers.split_whitespace().collect();
        if fields.len() != COLUMNS.len() {
            return Err(ParseError::at(index, format!("{device}: {} statistics, expected {}", fields.len(), COLUMNS.len())));
        }
        if !devices.admits(device) {
            continue;
        }
        for (column, statistic) in COLUMNS.iter().enumerate() {
            let value = field_u64(&fields, column, index, statistic)?;
            metrics.push(Metric::new(format!("node_network_{statistic}_total"), MetricKind::Counter, &[("device", device)], value as f64));
        }
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a Debian 12 VM.
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 4173568557 2235225    0    0    0     0          0         0 4173568557 2235225    0    0    0     0       0          0
  eth0: 1123896860   74724    1    2    3     4          5         6  6190364   64499    7    8    9    10      11         12
";

    fn value(metrics: &[Metric], name: &str, device: &str) -> Option<f64> {
        metrics.iter().find(|m| m.name == name && m.labels.get("device") == Some(device)).map(|m| m.value)
    }

    #[test]
    fn every_column_of_every_interface() {
        let metrics = parse(NET_DEV, &DeviceMatcher::All).unwrap();
        assert_eq!(metrics.len(), 32);
        assert_eq!(value(&metrics, "node_network_receive_bytes_total", "eth0"), Some(1_123_896_860.0));
        assert_eq!(value(&metrics, "node_network_receive_multicast_total", "eth0"), Some(6.0));
        assert_eq!(value(&metrics, "node_network_transmit_bytes_total", "eth0"), Some(6_190_364.0));
        assert_eq!(value(&metrics, "node_network_transmit_colls_total", "eth0"), Some(10.0));
        assert_eq!(value(&metrics, "node_network_transmit_compressed_total", "eth0"), Some(12.0));
        assert_eq!(value(&metrics, "node_network_receive_packets_total", "lo"), Some(2_235_225.0));
        assert!(metrics.iter().all(|m| m.kind == MetricKind::Counter));
    }

    #[test]
    fn filters_and_errors() {
        let exclude_lo = DeviceMatcher::Exclude(regex::Regex::new("^lo$").unwrap());
        let metrics = parse(NET_DEV, &exclude_lo).unwrap();
        assert!(metrics.iter().all(|m| m.labels.get("device") == Some("eth0")));
        let short = "h1\nh2\n eth0: 1 2 3\n";
        assert_eq!(parse(short, &DeviceMatcher::All).unwrap_err(), ParseError { line: 3, message: "eth0: 3 statistics, expected 16".into() });
        assert_eq!(parse("h1\nh2\n garbage\n", &DeviceMatcher::All).unwrap_err().message, "no interface name");
    }
}
