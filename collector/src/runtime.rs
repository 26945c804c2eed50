//! Turns a desired state (every input and output that should exist) into running tasks and
//! output pipelines. Local mode and cluster mode both produce desired states; this is the one
//! place that acts on them.
//!
//! Order matters: outputs are started before the inputs that use them and stopped after them,
//! so no sample is produced towards an output that is not there yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use metricshard_crds::{MetricInput, OutputSettings};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::{SupervisorError, TaskKey, TaskSpec, TaskSupervisor, TickWindow, UpdateOutcome};
use crate::inputs;
use crate::outputs::{self, Sink};
use crate::routing::{InputDestination, OutputEntry, OutputId, OutputRegistry};
use crate::sample::Labels;
use crate::schedule::Schedule;
use crate::secrets::{SecretReads, SecretStore};
use crate::telemetry::{BuildLabels, Telemetry};

/// An output as the desired state holds it.
#[derive(Debug, Clone)]
pub struct DesiredOutput {
    /// Changes when the spec changes; a new generation replaces the pipeline.
    pub generation: i64,
    /// Protocol, batching and buffering.
    pub settings: OwnedOutputSettings,
    /// For a `ClusterMetricOutput`: which namespaces may use it.
    pub namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// Owned copy of [`OutputSettings`].
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedOutputSettings {
    /// Protocol and destination.
    pub protocol: metricshard_crds::OutputProtocol,
    /// Batching.
    pub batch: metricshard_crds::BatchSpec,
    /// Buffering.
    pub buffer: metricshard_crds::BufferSpec,
}

impl From<OutputSettings<'_>> for OwnedOutputSettings {
    fn from(settings: OutputSettings<'_>) -> Self {
        Self { protocol: settings.protocol.clone(), batch: settings.batch.clone(), buffer: settings.buffer.clone() }
    }
}

/// An input as the desired state holds it.
#[derive(Debug, Clone)]
pub struct DesiredInput {
    /// Restart the task only when this changes.
    pub generation: i64,
    /// The input object.
    pub input: MetricInput,
    /// Which ticks this collector gathers: all of them, or one side of a handover fence
    /// (cluster mode, see `crate::handover`). A change of window alone never restarts the task.
    pub window: TickWindow,
}

/// Everything that should be running.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    /// Inputs by key.
    pub inputs: BTreeMap<TaskKey, DesiredInput>,
    /// Outputs by id.
    pub outputs: BTreeMap<OutputId, DesiredOutput>,
    /// Labels of namespaces, for cluster output selectors.
    pub namespace_labels: BTreeMap<String, Labels>,
    /// The Secrets inputs and outputs may reference.
    pub secrets: SecretStore,
}

/// What one `apply` changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Tasks started.
    pub started: Vec<TaskKey>,
    /// Tasks restarted for a new generation.
    pub restarted: Vec<TaskKey>,
    /// Tasks stopped.
    pub stopped: Vec<TaskKey>,
    /// Inputs that could not be turned into a task, with the reason.
    pub refused: Vec<(TaskKey, String)>,
    /// Output pipelines started or replaced.
    pub outputs_started: Vec<OutputId>,
    /// Output pipelines stopped.
    pub outputs_stopped: Vec<OutputId>,
    /// Outputs that could not be built, with the reason; retried only once their spec changes.
    pub outputs_refused: Vec<(OutputId, String)>,
}

/// What an input's task or an output's sinks were built from: its generation, and the Secret
/// data it read (the references, replayable, and their fingerprint).
struct BuiltFrom {
    generation: i64,
    secrets_fingerprint: u64,
    secret_reads: SecretReads,
}

impl BuiltFrom {
    /// True when building the object again would give what runs: same generation, and the
    /// Secret data it read unchanged. Checked without building, so an apply that changes
    /// nothing builds nothing (no HTTP clients, no TLS configuration, no sinks).
    fn is_current(&self, generation: i64, secrets: &SecretStore, namespace: &str) -> bool {
        self.generation == generation && secrets.fingerprint_of(namespace, &self.secret_reads) == self.secrets_fingerprint
    }
}

/// An output of one generation: its pipeline, or `None` when it could not be built (so that an
/// unchanged broken spec is not rebuilt and re-reported on every apply).
struct RunningOutput {
    built_from: BuiltFrom,
    pipeline: Option<(CancellationToken, JoinHandle<()>)>,
}

/// The running tasks and output pipelines of one collector.
pub struct Runtime {
    supervisor: TaskSupervisor,
    /// What each running task was built from.
    tasks_built_from: BTreeMap<TaskKey, BuiltFrom>,
    outputs: BTreeMap<OutputId, RunningOutput>,
    registry: Arc<OutputRegistry>,
    telemetry: Telemetry,
    http: reqwest::Client,
    kubernetes: inputs::KubernetesContext,
}

/// Samples queued between inputs and one output's pipeline, in gathers (not samples).
const OUTPUT_CHANNEL_DEPTH: usize = 64;

impl Runtime {
    /// An empty runtime.
    pub fn new(telemetry: Telemetry, http: reqwest::Client) -> Self {
        Self {
            supervisor: TaskSupervisor::new(telemetry.clone()),
            tasks_built_from: BTreeMap::new(),
            outputs: BTreeMap::new(),
            registry: Arc::new(OutputRegistry::default()),
            telemetry,
            http,
            kubernetes: inputs::KubernetesContext::default(),
        }
    }

    /// Sets where Kubernetes discovery gets its client and node from (by default: the default
    /// kubeconfig, no node); applies to inputs built from now on.
    pub fn set_kubernetes(&mut self, kubernetes: inputs::KubernetesContext) {
        self.kubernetes = kubernetes;
    }

    /// Per-address figures of every running output (for the output status writer).
    pub fn output_nodes(&self) -> crate::output_status::OutputNodeBoard {
        self.telemetry.output_nodes.clone()
    }

    /// The status of every running task.
    pub fn status_board(&self) -> crate::engine::StatusBoard {
        self.supervisor.status_board().clone()
    }

    /// The collector's metrics.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The running tasks with their generations.
    pub fn tasks(&self) -> Vec<(TaskKey, i64)> {
        self.supervisor.list()
    }

    /// Makes the running state match `desired`.
    pub async fn apply(&mut self, desired: &DesiredState) -> ApplyReport {
        let mut report = ApplyReport::default();
        self.registry.set_namespace_labels(desired.namespace_labels.clone());
        for (id, output) in &desired.outputs {
            let secrets_namespace = id.namespace.as_deref().unwrap_or(desired.secrets.cluster_namespace());
            let running = self.outputs.get(id).map(|running| &running.built_from);
            if running.is_some_and(|built| built.is_current(output.generation, &desired.secrets, secrets_namespace)) {
                continue;
            }
            self.telemetry.builds.get_or_create(&BuildLabels { kind: "output" }).inc();
            let mut resolver = desired.secrets.resolver(secrets_namespace);
            let http = &self.http;
            let built = crate::fanout::delivery::build_sinks(&output.settings.protocol, |protocol| {
                outputs::build_sink(protocol, http.clone(), &mut resolver)
            });
            let built_from = BuiltFrom {
                generation: output.generation,
                secrets_fingerprint: resolver.fingerprint(),
                secret_reads: resolver.reads(),
            };
            // A new generation, or Secret data it read changed: replace the pipeline.
            match self.start_output(id.clone(), output, built_from, built).await {
                Ok(()) => report.outputs_started.push(id.clone()),
                Err(reason) => {
                    // Inputs using it count their samples as undeliverable (output_not_found).
                    tracing::error!(output = %id, "cannot start output: {reason}");
                    // In cluster mode the status writer puts the reason into the output's status.
                    self.telemetry.output_nodes.refuse(id.clone(), output.generation, reason.clone());
                    report.outputs_refused.push((id.clone(), reason));
                }
            }
        }
        self.apply_inputs(desired, &mut report).await;
        let gone: Vec<OutputId> = self.outputs.keys().filter(|id| !desired.outputs.contains_key(id)).cloned().collect();
        for id in gone {
            self.stop_output(&id).await;
            self.telemetry.output_nodes.forget(&id);
            report.outputs_stopped.push(id);
        }
        report
    }

    async fn apply_inputs(&mut self, desired: &DesiredState, report: &mut ApplyReport) {
        let running: Vec<TaskKey> = self.supervisor.list().into_iter().map(|(key, _)| key).collect();
        for key in running.iter().filter(|key| !desired.inputs.contains_key(key)) {
            self.tasks_built_from.remove(key);
            if self.supervisor.remove(key).await.is_ok() {
                report.stopped.push(key.clone());
            }
        }
        for (key, input) in &desired.inputs {
            let namespace = input.input.metadata.namespace.as_deref().unwrap_or("default");
            if self.supervisor.contains(key)
                && self.tasks_built_from.get(key).is_some_and(|built| built.is_current(input.generation, &desired.secrets, namespace))
            {
                // Nothing to build: at most the tick window moved (a handover), which never
                // restarts the task.
                self.supervisor.set_window(key, input.window);
                continue;
            }
            let (spec, built_from) = match self.task_spec(key, input, &desired.secrets) {
                Ok(built) => built,
                Err(reason) => {
                    // A task that cannot be built must not keep running an older generation
                    // silently; stop it and say why.
                    self.tasks_built_from.remove(key);
                    if self.supervisor.remove(key).await.is_ok() {
                        report.stopped.push(key.clone());
                    }
                    tracing::error!(input = %key, "cannot start input: {reason}");
                    report.refused.push((key.clone(), reason));
                    continue;
                }
            };
            self.tasks_built_from.insert(key.clone(), built_from);
            let result = if self.supervisor.contains(key) {
                self.supervisor.update(key.clone(), spec).await.map(|outcome| {
                    if outcome == UpdateOutcome::Restarted {
                        report.restarted.push(key.clone());
                    }
                })
            } else {
                self.supervisor.add(key.clone(), spec).map(|()| report.started.push(key.clone()))
            };
            if let Err(error @ (SupervisorError::AlreadyExists(_) | SupervisorError::NotFound(_))) = result {
                tracing::error!(input = %key, "supervisor refused: {error}");
            }
        }
    }

    fn task_spec(&self, key: &TaskKey, desired: &DesiredInput, secrets: &SecretStore) -> Result<(TaskSpec, BuiltFrom), String> {
        let input = &desired.input;
        let namespace = input.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let spec = &input.spec;
        self.telemetry.builds.get_or_create(&BuildLabels { kind: "input" }).inc();
        let mut secrets = secrets.resolver(&namespace);
        let gatherer =
            inputs::build_gatherer(key, spec, self.http.clone(), &self.kubernetes, &mut secrets).map_err(|e| e.to_string())?;
        let secrets_fingerprint = secrets.fingerprint();
        let built_from = BuiltFrom { generation: desired.generation, secrets_fingerprint, secret_reads: secrets.reads() };
        let destination = InputDestination::new(
            key.clone(),
            namespace,
            spec.outputs.clone(),
            self.registry.clone(),
            self.telemetry.clone(),
            self.supervisor.status_board().clone(),
        );
        let spec = TaskSpec {
            generation: desired.generation,
            secrets_fingerprint,
            schedule: Schedule::new(key.as_str(), spec.interval.get(), spec.effective_jitter()),
            timeout: spec.effective_timeout(),
            gatherer,
            destination: Arc::new(destination),
            window: desired.window,
        };
        Ok((spec, built_from))
    }

    async fn start_output(
        &mut self,
        id: OutputId,
        output: &DesiredOutput,
        built_from: BuiltFrom,
        sinks: Result<Vec<Box<dyn Sink>>, String>,
    ) -> Result<(), String> {
        // Stop the old generation first: it flushes what it holds with its own settings.
        self.stop_output(&id).await;
        // A Redis buffer connects lazily and retries on its own: only a bad URL fails here.
        let sinks = match sinks {
            Ok(sinks) => sinks,
            Err(reason) => {
                self.outputs.insert(id, RunningOutput { built_from, pipeline: None });
                return Err(reason);
            }
        };
        let (sender, receiver) = mpsc::channel(OUTPUT_CHANNEL_DEPTH);
        let cancel = CancellationToken::new();
        let started = crate::fanout::delivery::start(
            &id,
            output.generation,
            &output.settings,
            sinks,
            &self.telemetry,
            receiver,
            cancel.clone(),
        );
        let handle = match started {
            Ok(handle) => handle,
            Err(reason) => {
                self.outputs.insert(id, RunningOutput { built_from, pipeline: None });
                return Err(reason.to_string());
            }
        };
        self.registry.insert(id.clone(), OutputEntry { sender, namespace_selector: output.namespace_selector.clone() });
        self.outputs.insert(id, RunningOutput { built_from, pipeline: Some((cancel, handle)) });
        Ok(())
    }

    async fn stop_output(&mut self, id: &OutputId) {
        self.registry.remove(id);
        if let Some((cancel, handle)) = self.outputs.remove(id).and_then(|running| running.pipeline) {
            cancel.cancel();
            if let Err(error) = handle.await {
                tracing::error!(output = %id, "output pipeline ended abnormally: {error}");
            }
        }
    }

    /// Stops every task; outputs keep running (and draining) until [`shutdown`](Self::shutdown).
    pub async fn stop_tasks(&mut self) {
        self.supervisor.shutdown().await;
    }

    /// Stops every task, then flushes and stops every output.
    pub async fn shutdown(&mut self) {
        self.supervisor.shutdown().await;
        let ids: Vec<OutputId> = self.outputs.keys().cloned().collect();
        futures::future::join_all(ids.iter().map(|id| {
            self.registry.remove(id);
            let running = self.outputs.remove(id);
            async move {
                if let Some((cancel, handle)) = running.and_then(|running| running.pipeline) {
                    cancel.cancel();
                    let _ = handle.await;
                }
            }
        }))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metricshard_crds::{BatchSpec, BufferSpec, OutputKind, OutputProtocol, RemoteWriteOutput};

    fn output(url: &str, generation: i64) -> DesiredOutput {
        DesiredOutput {
            generation,
            settings: OwnedOutputSettings {
                protocol: OutputProtocol {
                    stdout: None,
                    file: None,
                    remote_write: Some(RemoteWriteOutput {
                        url: Some(url.to_owned()),
                        fan_out: None,
                        timeout: None,
                        basic_auth: None,
                        authorization: None,
                    }),
                    influx: None,
                    open_tsdb: None,
                },
                batch: BatchSpec::default(),
                buffer: BufferSpec::default(),
            },
            namespace_selector: None,
        }
    }

    fn builds(runtime: &Runtime, kind: &'static str) -> u64 {
        runtime.telemetry.builds.get_or_create(&BuildLabels { kind }).get()
    }

    #[tokio::test]
    async fn an_apply_builds_only_what_a_spec_or_secret_change_touches() {
        use metricshard_crds::{BasicAuth, SecretKeySelector};
        let mut runtime = Runtime::new(Telemetry::new(), crate::build_http_client().unwrap());
        let id = OutputId { kind: OutputKind::MetricOutput, namespace: Some("ns".into()), name: "out".into() };
        let mut with_auth = output("http://127.0.0.1:9/api/v1/write", 1);
        let selector = |key: &str| SecretKeySelector { name: "auth".into(), key: key.into() };
        with_auth.settings.protocol.remote_write.as_mut().unwrap().basic_auth =
            Some(BasicAuth { username: selector("username"), password: selector("password") });
        let secret = |password: &str| {
            BTreeMap::from([("username".to_owned(), b"u".to_vec()), ("password".to_owned(), password.as_bytes().to_vec())])
        };
        let mut desired = DesiredState::default();
        desired.outputs.insert(id.clone(), with_auth);
        desired.secrets.insert("ns", "auth", secret("one"));

        assert_eq!(runtime.apply(&desired).await.outputs_started, vec![id.clone()]);
        assert_eq!(builds(&runtime, "output"), 1);
        // Nothing changed: nothing is built, nothing restarts.
        assert_eq!(runtime.apply(&desired).await, ApplyReport::default());
        // A Secret the output does not read, and one of the same name elsewhere, change nothing.
        desired.secrets.insert("ns", "other", secret("x"));
        desired.secrets.insert("elsewhere", "auth", secret("x"));
        assert_eq!(runtime.apply(&desired).await, ApplyReport::default());
        assert_eq!(builds(&runtime, "output"), 1);
        // The password it read changed: rebuilt and replaced, once.
        desired.secrets.insert("ns", "auth", secret("two"));
        assert_eq!(runtime.apply(&desired).await.outputs_started, vec![id.clone()]);
        assert_eq!(runtime.apply(&desired).await, ApplyReport::default());
        assert_eq!(builds(&runtime, "output"), 2);
        runtime.shutdown().await;
    }

    #[tokio::test]
    async fn a_broken_output_is_reported_once_per_generation_and_replaced_when_fixed() {
        let mut runtime = Runtime::new(Telemetry::new(), crate::build_http_client().unwrap());
        let id = OutputId { kind: OutputKind::MetricOutput, namespace: Some("ns".into()), name: "out".into() };
        let mut desired = DesiredState::default();
        desired.outputs.insert(id.clone(), output("not a url", 1));

        let first = runtime.apply(&desired).await;
        assert_eq!(first.outputs_refused.len(), 1, "{first:?}");
        assert!(first.outputs_started.is_empty());
        // The same broken generation is neither rebuilt nor reported again.
        assert_eq!(runtime.apply(&desired).await, ApplyReport::default());

        desired.outputs.insert(id.clone(), output("http://127.0.0.1:9/api/v1/write", 2));
        let fixed = runtime.apply(&desired).await;
        assert_eq!(fixed.outputs_started, vec![id.clone()]);
        assert!(fixed.outputs_refused.is_empty());
        desired.outputs.clear();
        assert_eq!(runtime.apply(&desired).await.outputs_stopped, vec![id]);
        runtime.shutdown().await;
    }
}
