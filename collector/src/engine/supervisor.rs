//! The map of task key → running task, in the shape of the Telegraf rework: adding an existing
//! key and removing a missing one are errors the caller sees; an update restarts a task only
//! when its generation changed.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{StatusBoard, TaskKey, TaskSpec, TickWindow, backoff, task};
use crate::telemetry::{InputLabels, Telemetry};

/// Why a supervisor call was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// `add` of a key that is already running.
    #[error("task {0} already exists")]
    AlreadyExists(TaskKey),
    /// `update` or `remove` of a key that is not running.
    #[error("task {0} does not exist")]
    NotFound(TaskKey),
}

/// What `update` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Same generation: the task was left alone.
    Unchanged,
    /// New generation: the task was stopped and started again with the new spec.
    Restarted,
    /// Same generation, new [`TickWindow`](super::TickWindow): the running task was told, not
    /// restarted (a handover fence moved).
    WindowChanged,
}

struct RunningTask {
    generation: i64,
    window: watch::Sender<TickWindow>,
    secrets_fingerprint: u64,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// Runs one gather task per key.
pub struct TaskSupervisor {
    tasks: BTreeMap<TaskKey, RunningTask>,
    telemetry: Telemetry,
    status: StatusBoard,
    /// Cancelled on shutdown; every task's token is a child of it.
    root: CancellationToken,
}

/// First delay before restarting a task whose loop crashed; doubles per consecutive crash.
const CRASH_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest delay before restarting a crashed task loop.
const CRASH_BACKOFF_CAP: Duration = Duration::from_secs(60);

impl TaskSupervisor {
    /// An empty supervisor reporting into `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        Self { tasks: BTreeMap::new(), telemetry, status: StatusBoard::default(), root: CancellationToken::new() }
    }

    /// The status of every running task.
    pub fn status_board(&self) -> &StatusBoard {
        &self.status
    }

    /// Starts a task for a new key.
    pub fn add(&mut self, key: TaskKey, spec: TaskSpec) -> Result<(), SupervisorError> {
        if self.tasks.contains_key(&key) {
            return Err(SupervisorError::AlreadyExists(key));
        }
        let running = self.spawn(key.clone(), spec);
        self.tasks.insert(key, running);
        self.telemetry.tasks.set(self.tasks.len() as i64);
        Ok(())
    }

    /// Restarts the task when `spec.generation` or `spec.secrets_fingerprint` differs from the
    /// running one; otherwise leaves it running, handing it `spec.window` if that changed.
    pub async fn update(&mut self, key: TaskKey, spec: TaskSpec) -> Result<UpdateOutcome, SupervisorError> {
        let Some(current) = self.tasks.get(&key) else { return Err(SupervisorError::NotFound(key)) };
        if current.generation == spec.generation && current.secrets_fingerprint == spec.secrets_fingerprint {
            // `send_if_modified` tells the loop only about a real change.
            let changed = current.window.send_if_modified(|window| std::mem::replace(window, spec.window) != spec.window);
            return Ok(if changed { UpdateOutcome::WindowChanged } else { UpdateOutcome::Unchanged });
        }
        if let Some(old) = self.tasks.remove(&key) {
            stop(old).await;
        }
        let running = self.spawn(key.clone(), spec);
        self.tasks.insert(key, running);
        Ok(UpdateOutcome::Restarted)
    }

    /// Sets the window the task of `key` gathers in, without restarting it; true when it
    /// changed. False as well when no task runs under `key`.
    pub fn set_window(&mut self, key: &TaskKey, window: TickWindow) -> bool {
        self.tasks.get(key).is_some_and(|task| task.window.send_if_modified(|current| std::mem::replace(current, window) != window))
    }

    /// Stops and forgets the task; returns once it has stopped.
    pub async fn remove(&mut self, key: &TaskKey) -> Result<(), SupervisorError> {
        let Some(running) = self.tasks.remove(key) else { return Err(SupervisorError::NotFound(key.clone())) };
        stop(running).await;
        self.telemetry.tasks.set(self.tasks.len() as i64);
        self.telemetry.forget_input(key.as_str());
        self.status.remove(key);
        Ok(())
    }

    /// The window the task of `key` gathers in, if it runs.
    pub fn window(&self, key: &TaskKey) -> Option<TickWindow> {
        self.tasks.get(key).map(|task| *task.window.borrow())
    }

    /// Keys and generations of the running tasks, in key order.
    pub fn list(&self) -> Vec<(TaskKey, i64)> {
        self.tasks.iter().map(|(key, task)| (key.clone(), task.generation)).collect()
    }

    /// True when a task runs under `key`.
    pub fn contains(&self, key: &TaskKey) -> bool {
        self.tasks.contains_key(key)
    }

    /// Stops every task and waits for them.
    pub async fn shutdown(&mut self) {
        self.root.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        futures::future::join_all(tasks.into_values().map(stop)).await;
        self.telemetry.tasks.set(0);
    }

    fn spawn(&self, key: TaskKey, spec: TaskSpec) -> RunningTask {
        let cancel = self.root.child_token();
        let generation = spec.generation;
        let secrets_fingerprint = spec.secrets_fingerprint;
        self.telemetry.task_starts.get_or_create(&InputLabels { input: key.to_string() }).inc();
        self.status.update(&key, |status| *status = super::TaskStatus { generation, ..Default::default() });
        let (window, window_changes) = watch::channel(spec.window);
        let handle = tokio::spawn(supervise(key, spec, window_changes, cancel.clone(), self.telemetry.clone(), self.status.clone()));
        RunningTask { generation, secrets_fingerprint, window, cancel, handle }
    }
}

async fn stop(task: RunningTask) {
    task.cancel.cancel();
    // The loop only awaits cancellable points, so it ends promptly; a gather in flight is
    // dropped with it.
    if let Err(error) = task.handle.await
        && error.is_panic()
    {
        tracing::error!("task panicked while stopping: {error}");
    }
}

/// Runs a task loop and restarts it with backoff if it ever panics, so that a bug in one
/// task's loop costs that task a pause, never the collector or another task.
async fn supervise(
    key: TaskKey,
    spec: TaskSpec,
    window: watch::Receiver<TickWindow>,
    cancel: CancellationToken,
    telemetry: Telemetry,
    status: StatusBoard,
) {
    let mut crashes: u32 = 0;
    loop {
        let run =
            AssertUnwindSafe(task::run(key.clone(), spec.clone(), window.clone(), cancel.clone(), telemetry.clone(), status.clone()));
        match run.catch_unwind().await {
            Ok(()) => return,
            Err(_) => {
                crashes = crashes.saturating_add(1);
                telemetry.task_restarts.get_or_create(&InputLabels { input: key.to_string() }).inc();
                let delay = backoff(crashes, CRASH_BACKOFF_BASE, CRASH_BACKOFF_CAP);
                tracing::error!(input = %key, crashes, restart_in = ?delay, "task loop crashed; restarting");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::future::{BoxFuture, FutureExt};

    use super::*;
    use crate::engine::{Destination, GatherError, Gathered, Gatherer};
    use crate::sample::{Labels, Sample};
    use crate::schedule::{Schedule, Tick};
    use crate::telemetry::InputErrorLabels;

    /// Records which gatherer (by id) gathered which tick.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<(u32, u64)>>>);

    impl Log {
        fn ids(&self) -> Vec<u32> {
            self.0.lock().unwrap().iter().map(|(id, _)| *id).collect()
        }
        fn ticks_of(&self, id: u32) -> Vec<u64> {
            self.0.lock().unwrap().iter().filter(|(i, _)| *i == id).map(|(_, t)| *t).collect()
        }
        fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    enum Behaviour {
        Ok,
        Panic,
        Hang,
    }

    struct TestGatherer {
        id: u32,
        log: Log,
        behaviour: Behaviour,
    }

    impl Gatherer for TestGatherer {
        fn gather(&self, tick: Tick) -> BoxFuture<'_, Result<Gathered, GatherError>> {
            async move {
                self.log.0.lock().unwrap().push((self.id, tick.index));
                match self.behaviour {
                    Behaviour::Ok => {}
                    // resume_unwind skips the panic hook, whose backtrace capture (RUST_BACKTRACE=1)
                    // would stall the test's threads and blur what is being measured.
                    Behaviour::Panic => std::panic::resume_unwind(Box::new(format!("gatherer {} exploded", self.id))),
                    Behaviour::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
                Ok(Gathered { samples: vec![Sample::new("x", Labels::default(), 1.0, 0)], problems: vec![] })
            }
            .boxed()
        }
    }

    struct Discard;
    impl Destination for Discard {
        fn deliver(&self, _: Vec<Sample>) -> BoxFuture<'_, ()> {
            async {}.boxed()
        }
    }

    fn spec(key: &str, generation: i64, id: u32, log: &Log, behaviour: Behaviour) -> TaskSpec {
        TaskSpec {
            generation,
            secrets_fingerprint: 0,
            schedule: Schedule::new(key, Duration::from_millis(40), Duration::ZERO),
            timeout: Duration::from_millis(30),
            gatherer: Arc::new(TestGatherer { id, log: log.clone(), behaviour }),
            destination: Arc::new(Discard),
            window: TickWindow::ALL,
        }
    }

    async fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn add_of_an_existing_key_and_remove_of_a_missing_key_are_errors() {
        let mut supervisor = TaskSupervisor::new(Telemetry::new());
        let log = Log::default();
        let key = TaskKey::new("ns", "a");
        supervisor.add(key.clone(), spec("ns/a", 1, 1, &log, Behaviour::Ok)).unwrap();
        assert_eq!(
            supervisor.add(key.clone(), spec("ns/a", 1, 2, &log, Behaviour::Ok)),
            Err(SupervisorError::AlreadyExists(key.clone()))
        );
        let missing = TaskKey::new("ns", "missing");
        assert_eq!(supervisor.remove(&missing).await, Err(SupervisorError::NotFound(missing.clone())));
        assert_eq!(
            supervisor.update(missing.clone(), spec("ns/missing", 1, 3, &log, Behaviour::Ok)).await,
            Err(SupervisorError::NotFound(missing))
        );
        assert_eq!(supervisor.list(), vec![(key.clone(), 1)]);
        supervisor.remove(&key).await.unwrap();
        assert!(supervisor.list().is_empty());
    }

    #[tokio::test]
    async fn update_restarts_only_on_a_new_generation() {
        let mut supervisor = TaskSupervisor::new(Telemetry::new());
        let log = Log::default();
        let key = TaskKey::new("ns", "a");
        supervisor.add(key.clone(), spec("ns/a", 1, 1, &log, Behaviour::Ok)).unwrap();
        wait_until("first gathers", || log.len() >= 2).await;

        // Same generation, different spec object: the running task (gatherer 1) is kept.
        let outcome = supervisor.update(key.clone(), spec("ns/a", 1, 2, &log, Behaviour::Ok)).await.unwrap();
        assert_eq!(outcome, UpdateOutcome::Unchanged);
        let before = log.len();
        wait_until("more gathers", || log.len() >= before + 2).await;
        assert!(!log.ids().contains(&2), "an unchanged generation must not restart the task");

        // New generation: gatherer 3 takes over and gatherer 1 stops.
        let outcome = supervisor.update(key.clone(), spec("ns/a", 2, 3, &log, Behaviour::Ok)).await.unwrap();
        assert_eq!(outcome, UpdateOutcome::Restarted);
        let ones = log.ticks_of(1).len();
        wait_until("gathers by the new generation", || log.ticks_of(3).len() >= 2).await;
        assert_eq!(log.ticks_of(1).len(), ones, "the old generation kept gathering after the restart");
        // The restart kept the phase: the new generation continued with the next tick numbers.
        let old_last = *log.ticks_of(1).last().unwrap();
        assert!(log.ticks_of(3)[0] > old_last, "a tick was gathered twice across the restart");
        assert_eq!(supervisor.list(), vec![(key, 2)]);
        supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn a_new_window_reaches_the_running_task_without_a_restart() {
        let telemetry = Telemetry::new();
        let mut supervisor = TaskSupervisor::new(telemetry.clone());
        let log = Log::default();
        let key = TaskKey::new("ns", "a");
        supervisor.add(key.clone(), spec("ns/a", 1, 1, &log, Behaviour::Ok)).unwrap();
        wait_until("first gathers", || log.len() >= 2).await;

        // Handed over: gather only ticks before a fence three intervals ahead.
        let schedule = Schedule::new("ns/a", Duration::from_millis(40), Duration::ZERO);
        let fence = schedule.first_tick_at_or_after(crate::schedule::unix_nanos(std::time::SystemTime::now()) + 120_000_000);
        let mut drained = spec("ns/a", 1, 2, &log, Behaviour::Ok);
        drained.window = TickWindow::ALL.ending_before(fence.at_unix_nanos);
        assert_eq!(supervisor.update(key.clone(), drained.clone()).await.unwrap(), UpdateOutcome::WindowChanged);
        assert_eq!(supervisor.update(key.clone(), drained).await.unwrap(), UpdateOutcome::Unchanged);
        let past_fence = fence.at() + Duration::from_millis(200);
        wait_until("well past the fence", || std::time::SystemTime::now() > past_fence).await;
        let ticks = log.ticks_of(1);
        assert!(ticks.iter().all(|t| *t < fence.index), "gathered at or after the fence: {ticks:?} (fence {})", fence.index);

        // Moved back: the same task (gatherer 1, one start) resumes.
        let before = log.len();
        assert_eq!(supervisor.update(key.clone(), spec("ns/a", 1, 3, &log, Behaviour::Ok)).await.unwrap(), UpdateOutcome::WindowChanged);
        wait_until("gathers after the move back", || log.len() >= before + 2).await;
        assert_eq!(log.ids().into_iter().collect::<std::collections::BTreeSet<_>>(), [1].into(), "the task was restarted");
        assert_eq!(telemetry.task_starts.get_or_create(&InputLabels { input: "ns/a".into() }).get(), 1);
        supervisor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_or_hanging_task_never_disturbs_the_others() {
        let telemetry = Telemetry::new();
        let mut supervisor = TaskSupervisor::new(telemetry.clone());
        let log = Log::default();
        supervisor.add(TaskKey::new("ns", "good"), spec("ns/good", 1, 1, &log, Behaviour::Ok)).unwrap();
        supervisor.add(TaskKey::new("ns", "bad"), spec("ns/bad", 1, 2, &log, Behaviour::Panic)).unwrap();
        supervisor.add(TaskKey::new("ns", "slow"), spec("ns/slow", 1, 3, &log, Behaviour::Hang)).unwrap();
        wait_until("the good task gathers ten times", || log.ticks_of(1).len() >= 10).await;
        // The good task gathered every tick without a gap while its neighbours failed.
        let good = log.ticks_of(1);
        assert!(good.windows(2).all(|w| w[1] == w[0] + 1), "good task skipped ticks: {good:?}");
        let errors = |input: &str, reason| {
            telemetry.gather_errors.get_or_create(&InputErrorLabels { input: input.to_owned(), reason }).get()
        };
        assert!(errors("ns/bad", "panic") >= 1);
        assert!(errors("ns/slow", "timeout") >= 1);
        assert_eq!(errors("ns/good", "panic") + errors("ns/good", "timeout"), 0);
        // Failing tasks back off: fewer attempts than the good task's ticks.
        assert!(log.ticks_of(2).len() < good.len());
        assert_eq!(supervisor.list().len(), 3);
        supervisor.shutdown().await;
        assert!(supervisor.list().is_empty());
        let after = log.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(log.len(), after, "a task kept gathering after shutdown");
    }
}
