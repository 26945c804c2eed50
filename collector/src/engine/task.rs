//! The loop of one task: wait for the next phase-aligned tick of its window, gather with a
//! timeout in an isolated child task, deliver, and back off after failures. A window change
//! (a handover fence) is picked up while waiting, without a restart.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{GatherError, NextTick, StatusBoard, TaskKey, TaskSpec, TickWindow, backoff, next_in_window};
use crate::schedule::unix_nanos;
use crate::telemetry::{InputErrorLabels, InputLabels, Telemetry};

/// First delay after a failed gather; doubles per consecutive failure.
const FAILURE_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay after failed gathers.
const FAILURE_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// First delay after a listener failed to serve; doubles per consecutive failure.
const LISTENER_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay after failures to serve: short, so a freed port is taken soon.
const LISTENER_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Runs the task until `cancel` fires.
pub(super) async fn run(
    key: TaskKey,
    spec: TaskSpec,
    mut window: watch::Receiver<TickWindow>,
    cancel: CancellationToken,
    telemetry: Telemetry,
    status: StatusBoard,
) {
    // A listener (push receiver) serves requests instead of gathering on ticks.
    if let Some(listener) = spec.gatherer.listener() {
        return run_listener(key, listener, spec, cancel, telemetry, status).await;
    }
    let labels = InputLabels { input: key.to_string() };
    let mut last_index = None;
    let mut failures: u32 = 0;
    let mut not_before = SystemTime::now();
    loop {
        let now = SystemTime::now().max(not_before);
        let current = *window.borrow_and_update();
        let tick = match next_in_window(&spec.schedule, unix_nanos(now), last_index, current) {
            NextTick::Gather(tick) => tick,
            NextTick::Park => {
                // Drained up to the fence: nothing to gather unless the window changes (a move
                // back) or the task is stopped.
                tokio::select! {
                    () = cancel.cancelled() => return,
                    changed = window.changed() => if changed.is_err() { cancel.cancelled().await; return },
                }
                continue;
            }
        };
        let wait = tick.at().duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            // A new fence may exclude this tick or admit an earlier one: plan again.
            Ok(()) = window.changed() => continue,
        }
        last_index = Some(tick.index);
        let started = Instant::now();
        let result = gather_isolated(&spec, tick).await;
        telemetry.gather_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        match result {
            Ok(gathered) => {
                failures = 0;
                not_before = SystemTime::now();
                for (category, message) in &gathered.problems {
                    telemetry.gather_errors.get_or_create(&InputErrorLabels { input: key.to_string(), reason: category }).inc();
                    tracing::warn!(input = %key, reason = category, "{message}");
                }
                telemetry.input_samples.get_or_create(&labels).inc_by(gathered.samples.len() as u64);
                status.update(&key, |status| {
                    status.last_success = Some(SystemTime::now());
                    status.last_samples = gathered.samples.len() as u64;
                    status.gather_problem = gathered.problems.first().cloned();
                });
                if !gathered.samples.is_empty() {
                    spec.destination.deliver(gathered.samples).await;
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures, FAILURE_BACKOFF_BASE, FAILURE_BACKOFF_CAP);
                not_before = SystemTime::now() + delay;
                telemetry.gather_errors.get_or_create(&InputErrorLabels { input: key.to_string(), reason: error.category() }).inc();
                tracing::warn!(input = %key, reason = error.category(), failures, retry_in = ?delay, "gather failed: {error}");
                status.update(&key, |status| status.gather_problem = Some((error.category(), error.to_string())));
            }
        }
        tracing::trace!(input = %key, tick = tick.index, late_ms = (unix_nanos(SystemTime::now()).saturating_sub(tick.at_unix_nanos)) / 1_000_000, "tick done");
    }
}

/// Runs a listener until `cancel` fires, serving again after a backoff whenever it fails.
async fn run_listener(
    key: TaskKey,
    listener: std::sync::Arc<dyn super::Listener>,
    spec: TaskSpec,
    cancel: CancellationToken,
    telemetry: Telemetry,
    status: StatusBoard,
) {
    let report = super::ListenerReport::new(key.clone(), status.clone(), telemetry.clone());
    let mut failures: u32 = 0;
    loop {
        let result = listener.serve(spec.destination.clone(), report.clone(), cancel.clone()).await;
        if cancel.is_cancelled() {
            return;
        }
        let error = match result {
            Ok(()) => GatherError::Source { category: "listen", message: "listener stopped unexpectedly".to_owned() },
            Err(error) => error,
        };
        failures = failures.saturating_add(1);
        let delay = backoff(failures, LISTENER_BACKOFF_BASE, LISTENER_BACKOFF_CAP);
        telemetry.gather_errors.get_or_create(&InputErrorLabels { input: key.to_string(), reason: error.category() }).inc();
        tracing::warn!(input = %key, reason = error.category(), failures, retry_in = ?delay, "listener failed: {error}");
        status.update(&key, |status| status.gather_problem = Some((error.category(), error.to_string())));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Runs one gather in its own tokio task so that a panic or a hang is contained: a panic becomes
/// an error, and a gather past its timeout is aborted.
async fn gather_isolated(spec: &TaskSpec, tick: crate::schedule::Tick) -> Result<super::Gathered, GatherError> {
    let gatherer = spec.gatherer.clone();
    let mut child = tokio::spawn(async move { AssertUnwindSafe(gatherer.gather(tick)).catch_unwind().await });
    match tokio::time::timeout(spec.timeout, &mut child).await {
        Err(_) => {
            child.abort();
            Err(GatherError::Timeout(spec.timeout))
        }
        Ok(Err(join_error)) => Err(GatherError::Panicked(join_error.to_string())),
        Ok(Ok(Err(panic))) => Err(GatherError::Panicked(panic_message(&panic))),
        Ok(Ok(Ok(result))) => result,
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}
