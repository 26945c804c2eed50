//! Sequence-numbered samples for delivery tests: a scrape target whose every scrape of a path
//! returns that path's scrape number as the value of each of its series, and a check that a
//! backend holds every number from 1 to the last one served.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use metricshard_e2e::backends::VictoriaMetrics;

/// Scrapes served per path.
#[derive(Clone, Default)]
pub struct Served(Arc<Mutex<HashMap<String, u64>>>);

impl Served {
    /// Scrapes of `/metrics/<name>` so far: the highest sequence number served.
    pub fn of(&self, name: &str) -> u64 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// Serves `/metrics/{name}`: `series` gauges `seq_value{series="<i>"}`, all with the path's
/// scrape number.
pub async fn start_sequence_target(series: usize) -> (SocketAddr, Served) {
    let served = Served::default();
    let app = axum::Router::new()
        .route(
            "/metrics/{name}",
            get(move |State(served): State<Served>, UrlPath(name): UrlPath<String>| async move {
                let number = {
                    let mut all = served.0.lock().unwrap();
                    let count = all.entry(name).or_default();
                    *count += 1;
                    *count
                };
                let mut body = String::from("# TYPE seq_value gauge\n");
                for index in 0..series {
                    body.push_str(&format!("seq_value{{series=\"{index}\"}} {number}\n"));
                }
                body
            }),
        )
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, served)
}

/// A MetricInput in namespace `demo` scraping `/metrics/<name>` of `target` into `output`.
pub fn input_manifest(name: &str, target: SocketAddr, interval: &str, timeout: &str, output: &str) -> String {
    format!(
        "apiVersion: metricshard.io/v1alpha1\nkind: MetricInput\nmetadata: {{name: {name}, namespace: demo}}\n\
         spec:\n  interval: {interval}\n  timeout: {timeout}\n  source:\n    prometheus:\n      staticTargets: [\"{target}\"]\n      metricsPath: /metrics/{name}\n\
         \x20 outputs:\n    - name: {output}\n"
    )
}

/// What a backend holds of one input's sequence-numbered series.
#[derive(Debug, Default)]
pub struct SequenceReport {
    /// Distinct sequence numbers per `series` label.
    pub numbers: BTreeMap<String, BTreeSet<u64>>,
    /// Samples received beyond the first of each (series, timestamp).
    pub duplicates: usize,
}

impl SequenceReport {
    /// Numbers of `1..=last` missing from some series, with the series.
    pub fn missing(&self, series: usize, last: u64) -> Vec<(String, u64)> {
        let mut missing = Vec::new();
        for index in 0..series {
            let name = index.to_string();
            let numbers = self.numbers.get(&name).cloned().unwrap_or_default();
            missing.extend((1..=last).filter(|n| !numbers.contains(n)).map(|n| (name.clone(), n)));
        }
        missing
    }

    /// Numbers missing below each series' highest one: what was lost in the middle. (The
    /// scrape a collector is stopped in the middle of is served but never delivered, so the last
    /// numbers served are not a fair expectation; a gap is.)
    pub fn gaps(&self) -> Vec<(String, u64)> {
        let mut gaps = Vec::new();
        for (name, numbers) in &self.numbers {
            let highest = numbers.last().copied().unwrap_or(0);
            gaps.extend((1..=highest).filter(|n| !numbers.contains(n)).map(|n| (name.clone(), n)));
        }
        gaps
    }

    /// The scrape numbers missing from some series (each counts once, however many series miss it).
    pub fn missing_scrapes(&self) -> BTreeSet<u64> {
        self.gaps().into_iter().map(|(_, number)| number).collect()
    }

    /// The lowest of the series' highest numbers: every series holds at least this far.
    pub fn lowest_highest(&self) -> u64 {
        self.numbers.values().filter_map(|numbers| numbers.last().copied()).min().unwrap_or(0)
    }

    /// The highest number some series holds.
    pub fn highest(&self) -> u64 {
        self.numbers.values().filter_map(|numbers| numbers.last().copied()).max().unwrap_or(0)
    }

    /// The number of series held.
    pub fn series(&self) -> usize {
        self.numbers.len()
    }
}

/// Reads every `seq_value` sample of job `demo/<input>` back through `/api/v1/export`.
pub async fn read_sequences(backend: &VictoriaMetrics, input: &str) -> SequenceReport {
    backend.force_flush().await.unwrap();
    let exported = backend.export(&format!("seq_value{{job=\"demo/{input}\"}}")).await.unwrap();
    let mut report = SequenceReport::default();
    for series in exported {
        let name = series.metric.get("series").cloned().unwrap_or_default();
        let numbers = report.numbers.entry(name).or_default();
        let mut timestamps = BTreeSet::new();
        for (value, timestamp) in series.values.iter().zip(&series.timestamps) {
            numbers.insert(*value as u64);
            if !timestamps.insert(*timestamp) {
                report.duplicates += 1;
            }
        }
    }
    report
}
