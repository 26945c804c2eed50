//! The keyed task supervisor: one gather task per input key, started, restarted on a new
//! generation, or stopped by key, each isolated from the others.

mod status;
mod supervisor;
mod task;
mod window;

pub use status::{Readiness, StatusBoard, TaskStatus};
pub use supervisor::{SupervisorError, TaskSupervisor, UpdateOutcome};
pub use window::{NextTick, TickWindow, next_in_window};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::sample::Sample;
use crate::schedule::{Schedule, Tick};

/// Identifies a task: the `namespace/name` of its input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey(String);

impl TaskKey {
    /// The key of the input `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self(format!("{namespace}/{name}"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one gather produced.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Samples to deliver.
    pub samples: Vec<Sample>,
    /// Problems that did not fail the whole gather (a target down, a body that did not parse),
    /// each with a short static category and a message.
    pub problems: Vec<(&'static str, String)>,
}

/// Why a whole gather failed.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// The gather did not finish within the input's timeout.
    #[error("gather timed out after {0:?}")]
    Timeout(Duration),
    /// The gather panicked; the panic was contained.
    #[error("gather panicked: {0}")]
    Panicked(String),
    /// The source failed.
    #[error("{message}")]
    Source {
        /// Short static category.
        category: &'static str,
        /// Details.
        message: String,
    },
}

impl GatherError {
    /// Short static category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Panicked(_) => "panic",
            Self::Source { category, .. } => category,
        }
    }
}

/// Every `reason` label value gather errors may carry (for cleanup of removed inputs).
pub const GATHER_ERROR_REASONS: &[&str] =
    &["timeout", "panic", "target", "parse", "http", "source", "discovery", "limit", "secret", "config", "listen", "push"];

/// A source of samples, called once per tick.
pub trait Gatherer: Send + Sync + 'static {
    /// Gathers once for `tick`.
    fn gather(&self, tick: Tick) -> BoxFuture<'_, Result<Gathered, GatherError>>;

    /// A source that is not driven by ticks (a push receiver) returns the listener the task
    /// runs instead of its tick loop; `gather` is then never called.
    fn listener(&self) -> Option<Arc<dyn Listener>> {
        None
    }
}

/// A long-running source that produces samples when others send them (a push receiver). Its
/// task runs [`Listener::serve`] until the task is stopped; a failure to serve (an address in
/// use, unreadable credentials) is recorded on the task's status and retried with backoff.
pub trait Listener: Send + Sync + 'static {
    /// Serves until `cancel` fires, handing samples to `destination` and recording what it
    /// does through `report`. Returns `Ok` once cancelled and stopped.
    fn serve(
        &self,
        destination: Arc<dyn Destination>,
        report: ListenerReport,
        cancel: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'_, Result<(), GatherError>>;
}

/// How a listener records its activity in the task's status and the input's metrics.
#[derive(Clone)]
pub struct ListenerReport {
    key: TaskKey,
    status: StatusBoard,
    telemetry: crate::telemetry::Telemetry,
}

impl ListenerReport {
    /// The report of task `key`.
    pub fn new(key: TaskKey, status: StatusBoard, telemetry: crate::telemetry::Telemetry) -> Self {
        Self { key, status, telemetry }
    }

    /// The task's key.
    pub fn key(&self) -> &TaskKey {
        &self.key
    }

    /// The collector's metrics.
    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.telemetry
    }

    /// The listener is serving: a previous failure to serve no longer holds.
    pub fn serving(&self) {
        self.status.update(&self.key, |status| status.gather_problem = None);
    }

    /// `samples` were received and handed to the outputs: the status' last gather time and
    /// sample count, and the input's sample counter, follow pushes.
    pub fn accepted(&self, samples: usize) {
        let labels = crate::telemetry::InputLabels { input: self.key.to_string() };
        self.telemetry.input_samples.get_or_create(&labels).inc_by(samples as u64);
        self.status.update(&self.key, |status| {
            status.last_success = Some(std::time::SystemTime::now());
            status.last_samples = samples as u64;
            status.gather_problem = None;
        });
    }

    /// A request was refused; `category` is one of [`GATHER_ERROR_REASONS`].
    pub fn rejected(&self, category: &'static str, message: String) {
        let labels = crate::telemetry::InputErrorLabels { input: self.key.to_string(), reason: category };
        self.telemetry.gather_errors.get_or_create(&labels).inc();
        self.status.update(&self.key, |status| status.gather_problem = Some((category, message)));
    }
}

/// Where a task's samples go.
pub trait Destination: Send + Sync + 'static {
    /// Hands samples to the outputs; never blocks on a slow backend.
    fn deliver(&self, samples: Vec<Sample>) -> BoxFuture<'_, ()>;
}

/// Everything needed to run one task.
#[derive(Clone)]
pub struct TaskSpec {
    /// Restart only when this changes (the input's `metadata.generation`).
    pub generation: i64,
    /// A hash of the Secret data the task was built from (0 when it reads none); a change
    /// restarts the task like a new generation, without showing in its status.
    pub secrets_fingerprint: u64,
    /// When to gather.
    pub schedule: Schedule,
    /// Longest a gather may take.
    pub timeout: Duration,
    /// What to gather.
    pub gatherer: Arc<dyn Gatherer>,
    /// Where samples go.
    pub destination: Arc<dyn Destination>,
    /// Which ticks this collector may gather (a handover's fence). Changing only the window of
    /// a running task never restarts it: the supervisor hands the new window to the live loop.
    pub window: TickWindow,
}

/// Capped exponential backoff after `failures` consecutive failures (1 → `base`).
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << exponent).min(cap)
}
