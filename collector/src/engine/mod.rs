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
    &["timeout", "panic", "target", "parse", "http", "source", "discovery", "limit", "secret", "config"];

/// A source of samples, called once per tick.
pub trait Gatherer: Send + Sync + 'static {
    /// Gathers once for `tick`.
    fn gather(&self, tick: Tick) -> BoxFuture<'_, Result<Gathered, GatherError>>;
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
