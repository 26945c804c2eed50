//! The `host` source: metrics of the machine the collector runs on, read from `/proc`, `/sys` and
//! `statfs`, with node_exporter's names, labels, units and types (docs/host-metrics.md).
//!
//! Every collector is a pure parser from a file's text to [`Metric`]s (tested with captured
//! `/proc` text) plus a few lines here that read the file below the configured root. A collector
//! that fails (a file missing or malformed) is reported as a gather problem; the others still
//! deliver, as node_exporter reports `node_scrape_collector_success 0` and serves the rest.

pub mod cpu;
pub mod diskstats;
pub mod filesystem;
pub mod loadavg;
pub mod meminfo;
pub mod netdev;
pub mod stat;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use metricshard_crds::{DeviceFilter, HostCollector, HostSource};
use regex::Regex;

use crate::engine::{GatherError, Gathered, Gatherer, TaskKey};
use crate::sample::{Labels, Sample};
use crate::schedule::Tick;

/// node_exporter's metric types that host metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter (`_total`).
    Counter,
    /// Gauge.
    Gauge,
}

impl MetricKind {
    /// The type as a `# TYPE` line names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// One host metric sample before the input's labels are added.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Metric name, as node_exporter names it.
    pub name: String,
    /// Its type.
    pub kind: MetricKind,
    /// Its own labels (`cpu`, `mode`, `device`, ...).
    pub labels: Labels,
    /// The value in base units (seconds, bytes).
    pub value: f64,
}

impl Metric {
    /// A metric with labels given as pairs.
    pub fn new(name: impl Into<String>, kind: MetricKind, labels: &[(&str, &str)], value: f64) -> Self {
        Self { name: name.into(), kind, labels: Labels::from_pairs(labels.iter().copied()), value }
    }
}

/// Why a `/proc` file could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    /// An error at the 0-based line `index`.
    pub fn at(index: usize, message: impl Into<String>) -> Self {
        Self { line: index + 1, message: message.into() }
    }
}

/// Parses one whitespace-separated unsigned field, naming it in the error.
pub(crate) fn field_u64(fields: &[&str], position: usize, index: usize, what: &str) -> Result<u64, ParseError> {
    let text = fields.get(position).ok_or_else(|| ParseError::at(index, format!("missing field {what}")))?;
    text.parse().map_err(|_| ParseError::at(index, format!("{what} is not an unsigned integer: {text:?}")))
}

/// Why a host source could not be built or a collector failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A filter regular expression does not compile.
    #[error("spec.source.host.{field}: invalid regular expression: {source}")]
    Regex {
        /// The field path below `spec.source.host`.
        field: &'static str,
        /// The compile error.
        #[source]
        source: regex::Error,
    },
    /// A file could not be read.
    #[error("{collector}: reading {path}: {source}")]
    Read {
        /// The collector.
        collector: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be parsed.
    #[error("{collector}: parsing {path}: {source}")]
    Parse {
        /// The collector.
        collector: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ParseError,
    },
}

/// A compiled device include/exclude filter (node_exporter's `device-include`/`device-exclude`:
/// regular expressions searched, not anchored unless they say so).
#[derive(Debug, Clone, Default)]
pub enum DeviceMatcher {
    /// Every device.
    #[default]
    All,
    /// Only devices matching.
    Include(Regex),
    /// Devices not matching.
    Exclude(Regex),
}

impl DeviceMatcher {
    /// Compiles a filter; `default_exclude` applies when `filter` is unset.
    pub fn compile(filter: Option<&DeviceFilter>, default_exclude: Option<&str>, field: &'static str) -> Result<Self, HostError> {
        let compile = |pattern: &str| Regex::new(pattern).map_err(|source| HostError::Regex { field, source });
        Ok(match filter {
            Some(DeviceFilter { device_include: Some(include), .. }) => Self::Include(compile(include)?),
            Some(DeviceFilter { device_exclude: Some(exclude), .. }) => Self::Exclude(compile(exclude)?),
            Some(DeviceFilter { device_include: None, device_exclude: None }) => Self::All,
            None => match default_exclude {
                Some(pattern) => Self::Exclude(compile(pattern)?),
                None => Self::All,
            },
        })
    }

    /// Whether `device` is reported.
    pub fn admits(&self, device: &str) -> bool {
        match self {
            Self::All => true,
            Self::Include(regex) => regex.is_match(device),
            Self::Exclude(regex) => !regex.is_match(device),
        }
    }
}

/// A validated host source.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Enabled collectors, each once, in name order.
    pub collectors: Vec<HostCollector>,
    /// The host's procfs.
    pub proc_path: PathBuf,
    /// The host's sysfs (no collector reads it yet; kept so configurations stay valid).
    pub sys_path: PathBuf,
    /// The host's root filesystem.
    pub rootfs_path: PathBuf,
    /// Which filesystems are reported.
    pub filesystem: filesystem::MountFilter,
    /// Which block devices are reported.
    pub diskstats: DeviceMatcher,
    /// Which network interfaces are reported.
    pub netdev: DeviceMatcher,
}

impl HostConfig {
    /// Validates a source: compiles its regular expressions.
    pub fn from_source(source: &HostSource) -> Result<Self, HostError> {
        let mut collectors = source.collectors.clone();
        collectors.sort_unstable();
        collectors.dedup();
        Ok(Self {
            collectors,
            proc_path: PathBuf::from(&source.proc_path),
            sys_path: PathBuf::from(&source.sys_path),
            rootfs_path: PathBuf::from(&source.rootfs_path),
            filesystem: filesystem::MountFilter::compile(&source.filesystem)?,
            diskstats: DeviceMatcher::compile(
                source.diskstats.as_ref(),
                Some(metricshard_crds::host::DEFAULT_DISK_DEVICE_EXCLUDE),
                "diskstats",
            )?,
            netdev: DeviceMatcher::compile(source.netdev.as_ref(), None, "netdev")?,
        })
    }
}

/// What one collection produced.
#[derive(Debug, Default)]
pub struct Collected {
    /// Metrics of every collector that succeeded.
    pub metrics: Vec<Metric>,
    /// One error per collector that failed.
    pub errors: Vec<HostError>,
}

fn read(collector: &'static str, path: PathBuf) -> Result<(String, PathBuf), HostError> {
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((text, path)),
        Err(source) => Err(HostError::Read { collector, path, source }),
    }
}

fn parse_file(
    collector: &'static str,
    path: PathBuf,
    parse: impl FnOnce(&str) -> Result<Vec<Metric>, ParseError>,
) -> Result<Vec<Metric>, HostError> {
    let (text, path) = read(collector, path)?;
    parse(&text).map_err(|source| HostError::Parse { collector, path, source })
}

/// Runs every enabled collector once, blocking (file reads and `statfs`).
pub fn collect(config: &HostConfig) -> Collected {
    let proc = config.proc_path.as_path();
    let mut collected = Collected::default();
    for collector in &config.collectors {
        let result = match collector {
            HostCollector::Cpu => parse_file("cpu", proc.join("stat"), cpu::parse),
            HostCollector::Stat => parse_file("stat", proc.join("stat"), stat::parse),
            HostCollector::Meminfo => parse_file("meminfo", proc.join("meminfo"), meminfo::parse),
            HostCollector::Loadavg => parse_file("loadavg", proc.join("loadavg"), loadavg::parse),
            HostCollector::Diskstats => parse_file("diskstats", proc.join("diskstats"), |text| diskstats::parse(text, &config.diskstats)),
            HostCollector::Netdev => parse_file("netdev", proc.join("net/dev"), |text| netdev::parse(text, &config.netdev)),
            HostCollector::Filesystem => collect_filesystems(config),
        };
        match result {
            Ok(metrics) => collected.metrics.extend(metrics),
            Err(error) => collected.errors.push(error),
        }
    }
    collected
}

fn collect_filesystems(config: &HostConfig) -> Result<Vec<Metric>, HostError> {
    // As node_exporter: the mounts of the host's init process (its mount namespace, not the
    // collector's), falling back to the reader's own mounts.
    let (text, path) = read("filesystem", config.proc_path.join("1/mounts"))
        .or_else(|_| read("filesystem", config.proc_path.join("mounts")))?;
    let mounts = filesystem::parse_mounts(&text).map_err(|source| HostError::Parse { collector: "filesystem", path, source })?;
    Ok(filesystem::stat_mounts(&mounts, &config.filesystem, &config.rootfs_path))
}

/// The name every host sample's `instance` label carries: `NODE_NAME` (set by the chart from
/// the downward API), else the host name.
pub fn instance_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().into_owned())
}

/// Gathers host metrics at every tick.
pub struct HostGatherer {
    config: Arc<HostConfig>,
    // `job` and `instance`, then the input's `spec.labels`, which win.
    labels: Labels,
}

impl HostGatherer {
    /// A gatherer of `source` for the input `key`.
    pub fn new(key: &TaskKey, source: &HostSource, extra_labels: &Labels) -> Result<Self, HostError> {
        let mut labels = Labels::from_pairs([("job", key.as_str().to_owned()), ("instance", instance_name())]);
        for label in extra_labels {
            labels.set(label.name.clone(), label.value.clone());
        }
        Ok(Self { config: Arc::new(HostConfig::from_source(source)?), labels })
    }

    /// Turns collected metrics into samples at `timestamp_ms`.
    fn to_samples(&self, metrics: Vec<Metric>, timestamp_ms: i64) -> Vec<Sample> {
        metrics
            .into_iter()
            .map(|metric| {
                let mut labels = metric.labels;
                for label in &self.labels {
                    labels.set(label.name.clone(), label.value.clone());
                }
                Sample::new(metric.name, labels, metric.value, timestamp_ms)
            })
            .collect()
    }
}

impl Gatherer for HostGatherer {
    fn gather(&self, tick: Tick) -> BoxFuture<'_, Result<Gathered, GatherError>> {
        async move {
            let config = self.config.clone();
            // File reads and statfs block; a hung network mount holds one blocking thread
            // until it answers, never the runtime.
            let collected = tokio::task::spawn_blocking(move || collect(&config))
                .await
                .map_err(|error| GatherError::Panicked(error.to_string()))?;
            Ok(Gathered {
                samples: self.to_samples(collected.metrics, tick.at_unix_millis()),
                problems: collected.errors.into_iter().map(|error| ("source", error.to_string())).collect(),
            })
        }
        .boxed()
    }
}

/// Where `path` (absolute, as the host sees it) is below `root`.
pub(crate) fn below_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_filters_follow_node_exporter() {
        let default = DeviceMatcher::compile(None, Some(metricshard_crds::host::DEFAULT_DISK_DEVICE_EXCLUDE), "diskstats").unwrap();
        for kept in ["vda", "sda", "nvme0n1", "dm-0", "md0"] {
            assert!(default.admits(kept), "{kept}");
        }
        for dropped in ["vda1", "sdb2", "nvme0n1p1", "loop3", "ram0", "zram0", "fd0"] {
            assert!(!default.admits(dropped), "{dropped}");
        }
        let include = DeviceFilter { device_include: Some("^eth".into()), device_exclude: None };
        let matcher = DeviceMatcher::compile(Some(&include), None, "netdev").unwrap();
        assert!(matcher.admits("eth0") && !matcher.admits("lo"));
        // An explicit empty filter reports everything, even where a default exists.
        let all = DeviceMatcher::compile(Some(&DeviceFilter::default()), Some("^loop"), "diskstats").unwrap();
        assert!(all.admits("loop0"));
    }

    #[test]
    fn a_bad_regex_names_the_field() {
        let source = HostSource {
            netdev: Some(DeviceFilter { device_include: None, device_exclude: Some("(".into()) }),
            ..HostSource::default()
        };
        let error = HostConfig::from_source(&source).unwrap_err().to_string();
        assert!(error.starts_with("spec.source.host.netdev: invalid regular expression"), "{error}");
    }

    #[test]
    fn a_missing_file_fails_only_its_collector() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loadavg"), "0.50 0.25 0.10 1/100 42\n").unwrap();
        let source = HostSource {
            collectors: vec![HostCollector::Loadavg, HostCollector::Meminfo],
            proc_path: dir.path().to_string_lossy().into_owned(),
            ..HostSource::default()
        };
        let collected = collect(&HostConfig::from_source(&source).unwrap());
        assert_eq!(collected.metrics.len(), 3);
        assert_eq!(collected.errors.len(), 1);
        assert!(collected.errors[0].to_string().starts_with("meminfo: reading "), "{}", collected.errors[0]);
    }

    #[tokio::test]
    async fn samples_carry_job_instance_and_input_labels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loadavg"), "0.50 0.25 0.10 1/100 42\n").unwrap();
        let source = HostSource {
            collectors: vec![HostCollector::Loadavg],
            proc_path: dir.path().to_string_lossy().into_owned(),
            ..HostSource::default()
        };
        let extra = Labels::from_pairs([("team", "infra"), ("instance", "override")]);
        let gatherer = HostGatherer::new(&TaskKey::new("ns", "host"), &source, &extra).unwrap();
        let gathered = gatherer.gather(Tick { index: 1, at_unix_nanos: 5_000_000 }).await.unwrap();
        let load1 = gathered.samples.iter().find(|s| s.name == "node_load1").unwrap();
        assert_eq!(load1.value, 0.5);
        assert_eq!(load1.timestamp_ms, 5);
        assert_eq!(load1.labels.get("job"), Some("ns/host"));
        assert_eq!(load1.labels.get("instance"), Some("override"));
        assert_eq!(load1.labels.get("team"), Some("infra"));
        assert!(gathered.problems.is_empty());
    }
}
