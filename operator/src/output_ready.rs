//! The `Ready` condition of `MetricOutput` and `ClusterMetricOutput`, summarised from what the
//! live collectors write into `status.collectors` (docs/cluster-mode.md, "Output status").
//!
//! Every collector runs every output and writes only its own entry: per backend address,
//! reachable or not and why. One condition is what `kubectl get mo` and kstatus-based tools
//! (Argo CD, Flux) read, so the operator's leader writes it: a condition list written by every
//! collector would flap with whichever wrote last. Pure: entries and live collectors in, the
//! condition out.

use std::collections::BTreeSet;

use metricshard_crds::CollectorOutputStatus;

/// How many unreachable addresses the message names before it only counts the rest.
const NAMED_PROBLEMS: usize = 3;

/// The `Ready` condition's status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// For humans.
    pub message: String,
}

/// The readiness of an output of `generation`, from the entries of the collectors in `live`.
/// Entries of collectors that are not live (gone without removing their entry) do not count.
///
/// - `Unknown`/`NoCollector`: no live collector reports the output.
/// - `Unknown`/`NotRunning`: live collectors report it, none has taken up this generation yet.
/// - `False`/`Refused`: some collector refuses this generation (a missing Secret, say); the
///   message names the collector and its reason.
/// - `False`/`Unreachable`: some collector cannot write to some address (named, with the error).
/// - `True`/`Reachable`: every live collector running this generation reaches every address.
pub fn readiness(generation: Option<i64>, entries: &[CollectorOutputStatus], live: &BTreeSet<String>) -> Readiness {
    let reporting: Vec<&CollectorOutputStatus> = entries.iter().filter(|entry| live.contains(&entry.collector)).collect();
    if reporting.is_empty() {
        return Readiness {
            status: "Unknown",
            reason: "NoCollector",
            message: "no live collector reports this output yet".to_owned(),
        };
    }
    let current: Vec<&CollectorOutputStatus> =
        reporting.iter().copied().filter(|entry| generation.is_none() || entry.observed_generation == generation).collect();
    if current.is_empty() {
        return Readiness {
            status: "Unknown",
            reason: "NotRunning",
            message: format!(
                "{} live collector(s) report an older generation; none runs generation {} yet (a collector that cannot \
                 build it logs why)",
                reporting.len(),
                generation.unwrap_or_default()
            ),
        };
    }
    let refusals: Vec<String> = current
        .iter()
        .filter_map(|entry| entry.refusal.as_ref().map(|reason| format!("{}: {reason}", entry.collector)))
        .collect();
    if !refusals.is_empty() {
        return Readiness { status: "False", reason: "Refused", message: summary(&refusals) };
    }
    let problems: Vec<String> = current
        .iter()
        .flat_map(|entry| {
            entry.nodes.iter().filter(|node| !node.reachable).map(|node| {
                let error = node.last_error.as_deref().unwrap_or("no error recorded");
                format!("{}: node {} ({}): {error}", entry.collector, node.name, node.address)
            })
        })
        .collect();
    if problems.is_empty() {
        let addresses: BTreeSet<&str> = current.iter().flat_map(|entry| entry.nodes.iter().map(|node| node.address.as_str())).collect();
        return Readiness {
            status: "True",
            reason: "Reachable",
            message: format!("{} collector(s) reach all {} address(es)", current.len(), addresses.len()),
        };
    }
    Readiness { status: "False", reason: "Unreachable", message: summary(&problems) }
}

/// The first few problems, then how many more.
fn summary(problems: &[String]) -> String {
    let mut message = problems.iter().take(NAMED_PROBLEMS).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > NAMED_PROBLEMS {
        message.push_str(&format!("; and {} more", problems.len() - NAMED_PROBLEMS));
    }
    message
}

/// The collectors whose entries are left over: not live, and not updated for `after` (an entry
/// without an update time counts as old). A collector that comes back under the same name (a
/// StatefulSet pod) writes its entry again; one that is gone for good leaves clutter that no
/// longer counts towards readiness, removed after `after`.
pub fn stale_entries(
    entries: &[CollectorOutputStatus],
    live: &BTreeSet<String>,
    now: k8s_openapi::jiff::Timestamp,
    after: std::time::Duration,
) -> Vec<String> {
    let after = k8s_openapi::jiff::SignedDuration::try_from(after).unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    entries
        .iter()
        .filter(|entry| !live.contains(&entry.collector))
        .filter(|entry| entry.update_time.as_ref().is_none_or(|time| now.duration_since(time.0) >= after))
        .map(|entry| entry.collector.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use metricshard_crds::NodeStatus;

    use super::*;

    fn node(address: &str, reachable: bool) -> NodeStatus {
        NodeStatus {
            name: "default".into(),
            address: address.into(),
            reachable,
            last_error: (!reachable).then(|| "connection refused".to_owned()),
            buffer_depth: 0,
            written: 0,
            retried: 0,
            dropped: 0,
            last_write_time: None,
        }
    }

    fn entry(collector: &str, generation: i64, nodes: Vec<NodeStatus>) -> CollectorOutputStatus {
        CollectorOutputStatus {
            collector: collector.into(),
            update_time: None,
            observed_generation: Some(generation),
            refusal: None,
            nodes,
        }
    }

    fn live(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn reachable_everywhere_is_ready() {
        let entries = [entry("c-0", 2, vec![node("http://a", true)]), entry("c-1", 2, vec![node("http://a", true)])];
        let ready = readiness(Some(2), &entries, &live(&["c-0", "c-1"]));
        assert_eq!((ready.status, ready.reason), ("True", "Reachable"));
        assert_eq!(ready.message, "2 collector(s) reach all 1 address(es)");
    }

    #[test]
    fn one_unreachable_address_on_one_collector_is_named() {
        let entries = [
            entry("c-0", 2, vec![node("http://a", true), node("http://b", false)]),
            entry("c-1", 2, vec![node("http://a", true), node("http://b", true)]),
        ];
        let ready = readiness(Some(2), &entries, &live(&["c-0", "c-1"]));
        assert_eq!((ready.status, ready.reason), ("False", "Unreachable"));
        assert_eq!(ready.message, "c-0: node default (http://b): connection refused");
    }

    #[test]
    fn a_refused_generation_is_not_ready_and_says_why() {
        let mut refused = entry("c-1", 2, vec![]);
        refused.refusal = Some("secret team-a/vm-token not found".into());
        let entries = [entry("c-0", 2, vec![node("http://a", false)]), refused];
        let ready = readiness(Some(2), &entries, &live(&["c-0", "c-1"]));
        assert_eq!((ready.status, ready.reason), ("False", "Refused"), "a refusal outranks an unreachable address");
        assert_eq!(ready.message, "c-1: secret team-a/vm-token not found");
        // A refusal of an older generation no longer counts.
        let mut old = entry("c-1", 1, vec![]);
        old.refusal = Some("secret team-a/vm-token not found".into());
        let entries = [entry("c-0", 2, vec![node("http://a", true)]), old];
        assert_eq!(readiness(Some(2), &entries, &live(&["c-0", "c-1"])).reason, "Reachable");
    }

    #[test]
    fn many_problems_are_counted_after_the_first_few() {
        let nodes = (0..5).map(|i| node(&format!("http://{i}"), false)).collect();
        let ready = readiness(Some(1), &[entry("c-0", 1, nodes)], &live(&["c-0"]));
        assert!(ready.message.ends_with("; and 2 more"), "{}", ready.message);
    }

    #[test]
    fn only_entries_of_collectors_gone_for_a_while_are_stale() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let now = k8s_openapi::jiff::Timestamp::from_second(1_000_000).unwrap();
        let at = |seconds_ago: i64| Some(Time(now - k8s_openapi::jiff::SignedDuration::from_secs(seconds_ago)));
        let mut entries = vec![entry("live", 1, vec![]), entry("gone-long", 1, vec![]), entry("gone-recently", 1, vec![])];
        entries[0].update_time = at(3600);
        entries[1].update_time = at(601);
        entries[2].update_time = at(30);
        entries.push(entry("never-updated", 1, vec![]));
        let stale = stale_entries(&entries, &live(&["live"]), now, std::time::Duration::from_secs(600));
        assert_eq!(stale, vec!["gone-long".to_owned(), "never-updated".to_owned()]);
    }

    #[test]
    fn dead_collectors_and_old_generations_do_not_count() {
        // The only unreachable report comes from a collector that is gone.
        let entries = [entry("gone", 2, vec![node("http://a", false)]), entry("c-0", 2, vec![node("http://a", true)])];
        assert_eq!(readiness(Some(2), &entries, &live(&["c-0"])).status, "True");
        assert_eq!(readiness(Some(2), &entries, &live(&[])).reason, "NoCollector");
        // Live collectors still on generation 1 of an output now at 2.
        let old = [entry("c-0", 1, vec![node("http://a", true)])];
        let ready = readiness(Some(2), &old, &live(&["c-0"]));
        assert_eq!((ready.status, ready.reason), ("Unknown", "NotRunning"));
    }
}
