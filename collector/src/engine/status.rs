//! What each task has been doing, for the input's status: kept by the task loop and the
//! delivery path, read by whoever reports it (the cluster-mode status writer).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::TaskKey;

/// The runtime facts of one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskStatus {
    /// Generation the task runs.
    pub generation: i64,
    /// When the last gather finished without a whole-gather failure.
    pub last_success: Option<SystemTime>,
    /// Samples of the last successful gather.
    pub last_samples: u64,
    /// The last gather's failure or its first partial problem, with its category.
    pub gather_problem: Option<(&'static str, String)>,
    /// Why the last delivery could not reach every output.
    pub delivery_problem: Option<String>,
}

/// The `Ready` condition of an input derived from its task status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message; stable while nothing changes, so it can be written rarely.
    pub message: String,
}

impl TaskStatus {
    /// The `Ready` condition: delivery problems first (nothing reaches the user), then gather
    /// failures, then failing targets.
    pub fn readiness(&self) -> Readiness {
        if let Some(problem) = &self.delivery_problem {
            return Readiness { status: "False", reason: "OutputUnavailable", message: problem.clone() };
        }
        match &self.gather_problem {
            Some((category @ ("target" | "parse"), message)) => Readiness {
                status: "False",
                reason: if *category == "parse" { "ScrapeUnparsable" } else { "TargetsFailing" },
                message: message.clone(),
            },
            Some(("secret", message)) => Readiness { status: "False", reason: "SecretUnavailable", message: message.clone() },
            Some(("limit", message)) => Readiness { status: "False", reason: "ScrapeLimitExceeded", message: message.clone() },
            Some(("listen", message)) => Readiness { status: "False", reason: "ListenFailed", message: message.clone() },
            Some(("push", message)) => Readiness { status: "False", reason: "PushRejected", message: message.clone() },
            Some((_, message)) => Readiness { status: "False", reason: "GatherFailed", message: message.clone() },
            None if self.last_success.is_none() => {
                Readiness { status: "Unknown", reason: "Starting", message: "no gather finished yet".to_owned() }
            }
            None => Readiness { status: "True", reason: "Gathering", message: "gathers succeed and reach every output".to_owned() },
        }
    }
}

/// The status of every running task, shared between tasks and reporters.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BTreeMap<TaskKey, TaskStatus>>>);

impl StatusBoard {
    /// Changes one task's status.
    pub fn update(&self, key: &TaskKey, change: impl FnOnce(&mut TaskStatus)) {
        if let Ok(mut all) = self.0.lock() {
            change(all.entry(key.clone()).or_default());
        }
    }

    /// Forgets a stopped task.
    pub fn remove(&self, key: &TaskKey) {
        if let Ok(mut all) = self.0.lock() {
            all.remove(key);
        }
    }

    /// A copy of every task's status.
    pub fn snapshot(&self) -> BTreeMap<TaskKey, TaskStatus> {
        self.0.lock().map(|all| all.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_puts_delivery_before_gathering_before_targets() {
        let mut status = TaskStatus::default();
        assert_eq!(status.readiness().status, "Unknown");
        status.last_success = Some(SystemTime::now());
        assert_eq!(status.readiness().reason, "Gathering");
        status.gather_problem = Some(("target", "http://x: connection refused".into()));
        assert_eq!((status.readiness().status, status.readiness().reason), ("False", "TargetsFailing"));
        status.gather_problem = Some(("timeout", "gather timed out after 1s".into()));
        assert_eq!(status.readiness().reason, "GatherFailed");
        status.delivery_problem = Some("MetricOutput/ns/x not found".into());
        let readiness = status.readiness();
        assert_eq!((readiness.reason, readiness.message.as_str()), ("OutputUnavailable", "MetricOutput/ns/x not found"));
    }
}
