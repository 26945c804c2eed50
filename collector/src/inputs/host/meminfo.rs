//! `meminfo`: `node_memory_<Field>[_bytes]` gauges from `/proc/meminfo`, named as node_exporter
//! names them: `Active(anon)` becomes `Active_anon`; fields in `kB` are multiplied by 1024 and
//! get the `_bytes` suffix, unit-less ones (`HugePages_Total`) keep their plain name.

use super::{Metric, MetricKind, ParseError};

/// Parses `/proc/meminfo`.
pub fn parse(text: &str) -> Result<Vec<Metric>, ParseError> {
    let mut metrics = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(key) = fields.first() else { continue };
        let key = key.strip_suffix(':').ok_or_else(|| ParseError::at(index, format!("field name without colon: {key:?}")))?;
        let text = fields.get(1).ok_or_else(|| ParseError::at(index, format!("{key} has no value")))?;
        let value: f64 = text.parse().map_err(|_| ParseError::at(index, format!("{key} is not a number: {text:?}")))?;
        let key = key.replace('(', "_").replace(')', "");
        let (name, value) = match fields.get(2) {
            None => (format!("node_memory_{key}"), value),
            Some(&"kB") => (format!("node_memory_{key}_bytes"), value * 1024.0),
            Some(unit) => return Err(ParseError::at(index, format!("{key} has an unknown unit {unit:?}"))),
        };
        metrics.push(Metric::new(name, MetricKind::Gauge, &[], value));
    }
    if metrics.is_empty() {
        return Err(ParseError::at(0, "empty file"));
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpt captured from a Debian 12 machine (kernel 6.1).
    const MEMINFO: &str = "MemTotal:       24683656 kB
MemFree:         1038820 kB
MemAvailable:   18254932 kB
Active(anon):    4012348 kB
Inactive(file):  9121736 kB
HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
DirectMap1G:    20971520 kB
";

    #[test]
    fn names_units_and_values_as_node_exporter() {
        let metrics = parse(MEMINFO).unwrap();
        let got: Vec<(&str, f64)> = metrics.iter().map(|m| (m.name.as_str(), m.value)).collect();
        assert_eq!(
            got,
            [
                ("node_memory_MemTotal_bytes", 24_683_656.0 * 1024.0),
                ("node_memory_MemFree_bytes", 1_038_820.0 * 1024.0),
                ("node_memory_MemAvailable_bytes", 18_254_932.0 * 1024.0),
                ("node_memory_Active_anon_bytes", 4_012_348.0 * 1024.0),
                ("node_memory_Inactive_file_bytes", 9_121_736.0 * 1024.0),
                ("node_memory_HugePages_Total", 0.0),
                ("node_memory_HugePages_Free", 0.0),
                ("node_memory_Hugepagesize_bytes", 2048.0 * 1024.0),
                ("node_memory_DirectMap1G_bytes", 20_971_520.0 * 1024.0),
            ]
        );
        assert!(metrics.iter().all(|m| m.kind == MetricKind::Gauge && m.labels.is_empty()));
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(parse("MemTotal 5 kB\n").unwrap_err().message, "field name without colon: \"MemTotal\"");
        assert_eq!(parse("MemTotal:\n").unwrap_err().message, "MemTotal has no value");
        assert_eq!(parse("MemTotal: 5 MB\n").unwrap_err().message, "MemTotal has an unknown unit \"MB\"");
        assert!(parse("").is_err());
    }
}
