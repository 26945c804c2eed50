//! The `host` source against the real node_exporter (Debian package
//! `prometheus-node-exporter`) on this machine: node_exporter runs on a free loopback port with
//! the same collectors and the same filters; it is scraped, our host source gathers through the
//! library API, and node_exporter is scraped again. Then:
//! - every family and label set we produce exists in node_exporter's output, with the same type;
//! - static values agree exactly (MemTotal, SwapTotal, huge page count, boot time, CPU count,
//!   every filesystem's size and inode count);
//! - every counter lies between node_exporter's two readings (monotonic counters read in between
//!   must), with a little slack only for CPU times, which the kernel may report slightly backwards;
//! - we produce something for every collector.
//!
//! A missing binary fails the test with the package to install; nothing here skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metricshard_collector::inputs::host::{self, HostConfig, Metric, MetricKind};
use metricshard_collector::inputs::prometheus::parser::{self, ExpositionFormat};
use metricshard_crds::host::{DEFAULT_DISK_DEVICE_EXCLUDE, DEFAULT_FS_TYPES_EXCLUDE, DEFAULT_MOUNT_POINTS_EXCLUDE};
use metricshard_crds::{HostCollector, HostSource};

const NODE_EXPORTER: &str = "prometheus-node-exporter";

/// node_exporter on a loopback port; killed on drop.
struct NodeExporter {
    child: Child,
    url: String,
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_node_exporter() -> NodeExporter {
    let binary = ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        .iter()
        .map(|dir| std::path::Path::new(dir).join(NODE_EXPORTER))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!("`{NODE_EXPORTER}` is not installed: apt-get install -y prometheus-node-exporter (or scripts/testbed/install-deps.sh)")
        });
    let port = free_port();
    let mut args = vec![format!("--web.listen-address=127.0.0.1:{port}"), "--collector.disable-defaults".to_owned()];
    args.extend(HostCollector::ALL.iter().map(|c| format!("--collector.{}", c.as_str())));
    // Our defaults are upstream node_exporter's; Debian's package patches some of them, so they
    // are passed explicitly and both sides filter alike.
    args.push(format!("--collector.filesystem.mount-points-exclude={DEFAULT_MOUNT_POINTS_EXCLUDE}"));
    args.push(format!("--collector.filesystem.fs-types-exclude={DEFAULT_FS_TYPES_EXCLUDE}"));
    args.push(format!("--collector.diskstats.device-exclude={DEFAULT_DISK_DEVICE_EXCLUDE}"));
    args.push("--collector.netdev.device-exclude=".to_owned());
    let child = Command::new(binary).args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    NodeExporter { child, url: format!("http://127.0.0.1:{port}/metrics") }
}

/// One scrape: every sample by (name, sorted labels), and the type of every family.
struct Exposition {
    values: BTreeMap<(String, Vec<(String, String)>), f64>,
    types: BTreeMap<String, String>,
}

fn key(name: &str, labels: &metricshard_collector::sample::Labels) -> (String, Vec<(String, String)>) {
    (name.to_owned(), labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect())
}

async fn scrape(client: &reqwest::Client, url: &str) -> Option<Exposition> {
    let body = client.get(url).send().await.ok()?.text().await.ok()?;
    let types = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect();
    let values = parser::parse(&body, ExpositionFormat::PrometheusText)
        .unwrap()
        .into_iter()
        .map(|sample| (key(&sample.name, &sample.labels), sample.value))
        .collect();
    Some(Exposition { values, types })
}

async fn scrape_when_up(client: &reqwest::Client, url: &str) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exposition) = scrape(client, url).await {
            return exposition;
        }
        assert!(Instant::now() < deadline, "node_exporter did not answer at {url} within 30s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn value_of<'a>(metrics: &'a [Metric], name: &str) -> impl Iterator<Item = &'a Metric> {
    metrics.iter().filter(move |m| m.name == name)
}

#[tokio::test]
async fn host_source_matches_node_exporter() {
    let exporter = start_node_exporter();
    let client = metricshard_collector::build_http_client().unwrap();
    let before = scrape_when_up(&client, &exporter.url).await;
    let config = HostConfig::from_source(&HostSource::default()).unwrap();
    let collected = tokio::task::spawn_blocking(move || host::collect(&config)).await.unwrap();
    let after = scrape(&client, &exporter.url).await.unwrap();

    let errors: Vec<String> = collected.errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "collectors failed: {errors:?}");
    let ours = collected.metrics;

    // Every collector produced something on this machine.
    for prefix in ["node_cpu_", "node_memory_", "node_load", "node_disk_", "node_filesystem_", "node_network_", "node_boot_time"] {
        assert!(ours.iter().any(|m| m.name.starts_with(prefix)), "nothing starting with {prefix}");
    }

    let mut failures = Vec::new();
    for metric in &ours {
        let series = key(&metric.name, &metric.labels);
        let Some(&theirs_before) = before.values.get(&series) else {
            failures.push(format!("{series:?}: not in node_exporter's output"));
            continue;
        };
        let theirs_after = after.values.get(&series).copied().unwrap_or(theirs_before);
        match before.types.get(&metric.name) {
            Some(kind) if kind == metric.kind.as_str() => {}
            other => failures.push(format!("{}: type {} here, {other:?} in node_exporter", metric.name, metric.kind.as_str())),
        }
        if metric.kind == MetricKind::Counter {
            // CPU times may step back a little (iowait); node_exporter rounds nothing else.
            let slack = if metric.name.starts_with("node_cpu_") { 1.0 } else { 0.0 };
            let (low, high) = (theirs_before.min(theirs_after) - slack, theirs_before.max(theirs_after) + slack);
            if !(low..=high).contains(&metric.value) {
                failures.push(format!("{series:?}: counter {} outside node_exporter's readings {low}..={high}", metric.value));
            }
        }
    }

    // Static values agree exactly.
    let exact = ["node_memory_MemTotal_bytes", "node_memory_SwapTotal_bytes", "node_memory_HugePages_Total", "node_boot_time_seconds",
        "node_filesystem_size_bytes", "node_filesystem_files", "node_filesystem_readonly"];
    for name in exact {
        let mut seen = false;
        for metric in value_of(&ours, name) {
            seen = true;
            let theirs = before.values.get(&key(&metric.name, &metric.labels));
            if theirs != Some(&metric.value) {
                failures.push(format!("{name}{:?}: {} here, {theirs:?} in node_exporter", metric.labels, metric.value));
            }
        }
        assert!(seen, "{name} not produced");
    }
    let cpus = |labels: Box<dyn Iterator<Item = Option<String>> + '_>| labels.flatten().collect::<BTreeSet<String>>();
    let our_cpus = cpus(Box::new(value_of(&ours, "node_cpu_seconds_total").map(|m| m.labels.get("cpu").map(str::to_owned))));
    let their_cpus = cpus(Box::new(
        before.values.keys().filter(|(name, _)| name == "node_cpu_seconds_total").map(|(_, labels)| {
            labels.iter().find(|(name, _)| name == "cpu").map(|(_, value)| value.clone())
        }),
    ));
    assert!(!our_cpus.is_empty());
    assert_eq!(our_cpus, their_cpus, "CPU count");

    // Families node_exporter has that we do not produce: printed for docs/host-metrics.md.
    let our_families: BTreeSet<&str> = ours.iter().map(|m| m.name.as_str()).collect();
    let missing: BTreeSet<&str> = before
        .values
        .keys()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with("node_") && !name.starts_with("node_scrape_") && !name.starts_with("node_exporter_"))
        .filter(|name| !our_families.contains(name))
        .collect();
    println!("{} families, {} series produced; node_exporter families not produced: {missing:?}", our_families.len(), ours.len());

    assert!(failures.is_empty(), "{} disagreements with node_exporter:\n{}", failures.len(), failures.join("\n"));
}
