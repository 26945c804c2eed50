//! `diskstats`: per-device I/O counters from `/proc/diskstats`, as node_exporter's diskstats
//! collector: sectors are 512 bytes (the kernel's unit, whatever the device's sector size),
//! times are milliseconds turned into seconds.

use super::{DeviceMatcher, Metric, MetricKind, ParseError, field_u64};

/// Bytes per sector in `/proc/diskstats`.
pub const SECTOR_BYTES: f64 = 512.0;

/// Columns after `major minor name`: metric name, type, scale.
const COLUMNS: [(&str, MetricKind, f64); 17] = [
    ("node_disk_reads_completed_total", MetricKind::Counter, 1.0),
    ("node_disk_reads_merged_total", MetricKind::Counter, 1.0),
    ("node_disk_read_bytes_total", MetricKind::Counter, SECTOR_BYTES),
    ("node_disk_read_time_seconds_total", MetricKind::Counter, 0.001),
    ("node_disk_writes_completed_total", MetricKind::Counter, 1.0),
    ("node_disk_writes_merged_total", MetricKind::Counter, 1.0),
    ("node_disk_written_bytes_total", MetricKind::Counter, SECTOR_BYTES),
    ("node_disk_write_time_seconds_total", MetricKind::Counter, 0.001),
    ("node_disk_io_now", MetricKind::Gauge, 1.0),
    ("node_disk_io_time_seconds_total", MetricKind::Counter, 0.001),
    ("node_disk_io_time_weighted_seconds_total", MetricKind::Counter, 0.001),
    // Linux 4.18+.
    ("node_disk_discards_completed_total", MetricKind::Counter, 1.0),
    ("node_disk_discards_merged_total", MetricKind::Counter, 1.0),
    // node_exporter keeps discarded sectors in sectors.
    ("node_disk_discarded_sectors_total", MetricKind::Counter, 1.0),
    ("node_disk_discard_time_seconds_total", MetricKind::Counter, 0.001),
    // Linux 5.5+.
    ("node_disk_flush_requests_total", MetricKind::Counter, 1.0),
    ("node_disk_flush_requests_time_seconds_total", MetricKind::Counter, 0.001),
];

/// Parses `/proc/diskstats`, reporting the devices `devices` admits.
pub fn parse(text: &str, devices: &DeviceMatcher) -> Result<Vec<Metric>, ParseError> {
    let mut metrics = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let device = *fields.get(2).ok_or_else(|| ParseError::at(index, "missing device name"))?;
        // 11 statistics before 4.18, 15 up to 5.4, 17 since; node_exporter reports the groups
        // the kernel has.
        let available = fields.len() - 3;
        let columns = match available {
            11..=14 => 11,
            15 | 16 => 15,
            17.. => 17,
            _ => return Err(ParseError::at(index, format!("{device}: {available} statistics, expected at least 11"))),
        };
        if !devices.admits(device) {
            continue;
        }
        for (column, (name, kind, scale)) in COLUMNS.iter().take(columns).enumerate() {
            let value = field_u64(&fields, column + 3, index, name)?;
            metrics.push(Metric::new(*name, *kind, &[("device", device)], value as f64 * scale));
        }
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a Debian 12 VM (kernel 6.1: 17 statistics), plus an old-kernel line.
    const DISKSTATS: &str = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 3969126 49655 94799682 4463685 266355 472136 365441904 4937508 0 417236 9609760 115091 79 299985168 187357 5985 21208
 254       1 vda1 100 0 800 10 0 0 0 0 0 10 10 0 0 0 0 0 0
 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   8       0 sda 10 1 160 7 2 3 48 9 1 12 16
";

    fn value(metrics: &[Metric], name: &str, device: &str) -> Option<f64> {
        metrics.iter().find(|m| m.name == name && m.labels.get("device") == Some(device)).map(|m| m.value)
    }

    fn default_filter() -> DeviceMatcher {
        DeviceMatcher::compile(None, Some(metricshard_crds::host::DEFAULT_DISK_DEVICE_EXCLUDE), "diskstats").unwrap()
    }

    #[test]
    fn units_and_groups_as_node_exporter() {
        let metrics = parse(DISKSTATS, &default_filter()).unwrap();
        assert_eq!(value(&metrics, "node_disk_reads_completed_total", "vda"), Some(3_969_126.0));
        assert_eq!(value(&metrics, "node_disk_read_bytes_total", "vda"), Some(94_799_682.0 * 512.0));
        assert_eq!(value(&metrics, "node_disk_read_time_seconds_total", "vda"), Some(4463.685));
        assert_eq!(value(&metrics, "node_disk_written_bytes_total", "vda"), Some(365_441_904.0 * 512.0));
        assert_eq!(value(&metrics, "node_disk_io_now", "vda"), Some(0.0));
        assert_eq!(value(&metrics, "node_disk_io_time_weighted_seconds_total", "vda"), Some(9609.76));
        assert_eq!(value(&metrics, "node_disk_discarded_sectors_total", "vda"), Some(299_985_168.0));
        // Milliseconds times 0.001, the same float operation as node_exporter's.
        assert_eq!(value(&metrics, "node_disk_flush_requests_time_seconds_total", "vda"), Some(21_208.0 * 0.001));
        // Old kernel: only the first 11 statistics.
        assert_eq!(value(&metrics, "node_disk_io_time_seconds_total", "sda"), Some(0.012));
        assert_eq!(value(&metrics, "node_disk_discards_completed_total", "sda"), None);
        assert_eq!(metrics.iter().filter(|m| m.labels.get("device") == Some("vda")).count(), 17);
        assert_eq!(metrics.iter().filter(|m| m.labels.get("device") == Some("sda")).count(), 11);
        // Partitions, loop and zram devices are excluded by default.
        for excluded in ["vda1", "loop0", "zram0"] {
            assert_eq!(value(&metrics, "node_disk_reads_completed_total", excluded), None, "{excluded}");
        }
        let io_now = metrics.iter().find(|m| m.name == "node_disk_io_now").unwrap();
        assert_eq!(io_now.kind, MetricKind::Gauge);
    }

    #[test]
    fn short_or_garbled_lines() {
        let all = DeviceMatcher::All;
        assert_eq!(parse("8 0 sda 1 2 3\n", &all).unwrap_err().message, "sda: 3 statistics, expected at least 11");
        assert_eq!(parse("8 0\n", &all).unwrap_err().message, "missing device name");
        let error = parse("8 0 sda 1 2 x 4 5 6 7 8 9 10 11\n", &all).unwrap_err();
        assert_eq!(error.message, "node_disk_read_bytes_total is not an unsigned integer: \"x\"");
    }
}
