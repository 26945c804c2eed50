//! Local mode: the desired state comes from a directory of manifests instead of the apiserver.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file directly in the directory is read (as `kubectl apply
//! -f DIR` does, not recursively), validated like the apiserver would (see
//! `metricshard_crds::manifest`), and turned into a [`DesiredState`]. The directory is watched,
//! with a periodic re-read as a safety net for filesystems whose events are unreliable (such as
//! a ConfigMap volume's symlink swap), so changes take effect well within a second.
//!
//! A document that fails validation is reported with its file, document number and field path,
//! and, as with a rejected `kubectl apply`, the last valid version of that object keeps running.
//! Generations are a hash of each object's spec, so editing metadata or formatting never
//! restarts a task.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use metricshard_crds::manifest::{DocumentError, ManifestObject, parse_documents};
use metricshard_crds::OutputKind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::TaskKey;
use crate::routing::OutputId;
use crate::runtime::{DesiredInput, DesiredOutput, DesiredState, Runtime};
use crate::sample::Labels;
use crate::schedule::stable_hash;
use crate::telemetry::Telemetry;

/// How often the directory is re-read even without a filesystem event.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);
/// How long to wait after an event for more events of the same burst (an editor's save).
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// A problem with one document of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file.
    pub file: PathBuf,
    /// The document and its problems; `None` for a file that could not be read at all.
    pub error: Result<DocumentError, String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Ok(document) => write!(f, "{}: {document}", self.file.display()),
            Err(message) => write!(f, "{}: {message}", self.file.display()),
        }
    }
}

/// The result of reading the manifests.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// What should run.
    pub desired: DesiredState,
    /// Every problem found, in file order.
    pub errors: Vec<ManifestError>,
}

/// Reads a manifest directory and remembers the last valid version of each object.
#[derive(Debug)]
pub struct ManifestSource {
    origin: Origin,
    last_good: HashMap<String, ManifestObject>,
}

#[derive(Debug)]
enum Origin {
    Directory(PathBuf),
    Embedded { name: &'static str, text: &'static str },
}

impl ManifestSource {
    /// Reads `dir`.
    pub fn directory(dir: impl Into<PathBuf>) -> Self {
        Self { origin: Origin::Directory(dir.into()), last_good: HashMap::new() }
    }

    /// Reads manifests compiled into the binary.
    pub fn embedded(name: &'static str, text: &'static str) -> Self {
        Self { origin: Origin::Embedded { name, text }, last_good: HashMap::new() }
    }

    /// The directory watched, if any.
    pub fn watched_directory(&self) -> Option<&Path> {
        match &self.origin {
            Origin::Directory(dir) => Some(dir),
            Origin::Embedded { .. } => None,
        }
    }

    /// Reads every manifest now.
    pub fn scan(&mut self) -> Scan {
        let files = match &self.origin {
            Origin::Embedded { name, text } => vec![(PathBuf::from(name), Ok((*text).to_owned()))],
            Origin::Directory(dir) => read_directory(dir),
        };
        let mut scan = Scan::default();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        let mut good = HashMap::new();
        for (file, text) in files {
            let text = match text {
                Ok(text) => text,
                Err(message) => {
                    scan.errors.push(ManifestError { file, error: Err(message) });
                    continue;
                }
            };
            for result in parse_documents(&text) {
                let object = match result {
                    Ok(object) => object,
                    Err(error) => {
                        // Keep the last valid version of an object whose new version is invalid.
                        if let Some(previous) = error.object.as_ref().and_then(|id| self.last_good.get(id)) {
                            let id = identity(previous);
                            if !seen.contains_key(&id) {
                                seen.insert(id.clone(), file.clone());
                                good.insert(id, previous.clone());
                                add_to_desired(&mut scan.desired, previous.clone());
                            }
                        }
                        scan.errors.push(ManifestError { file: file.clone(), error: Ok(error) });
                        continue;
                    }
                };
                let id = identity(&object);
                if let Some(first) = seen.get(&id) {
                    let message = format!("{id} is already defined in {}", first.display());
                    scan.errors.push(ManifestError { file: file.clone(), error: Err(message) });
                    continue;
                }
                seen.insert(id.clone(), file.clone());
                good.insert(id, object.clone());
                add_to_desired(&mut scan.desired, object);
            }
        }
        self.last_good = good;
        scan
    }
}

fn read_directory(dir: &Path) -> Vec<(PathBuf, Result<String, String>)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => return vec![(dir.to_owned(), Err(format!("cannot read directory: {error}")))],
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let manifest_extension =
                path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            // Hidden files are editor swap files and ConfigMap volume internals (`..data`).
            let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            manifest_extension && !hidden && path.is_file()
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read: {e}"));
            (path, text)
        })
        .collect()
}

/// The label `parse_documents` uses for an object (`Kind namespace/name`).
fn identity(object: &ManifestObject) -> String {
    match object {
        ManifestObject::Input(input) => {
            format!("MetricInput {}/{}", input.metadata.namespace.as_deref().unwrap_or("default"), input.metadata.name.as_deref().unwrap_or(""))
        }
        ManifestObject::Output(output) => {
            format!("MetricOutput {}/{}", output.metadata.namespace.as_deref().unwrap_or("default"), output.metadata.name.as_deref().unwrap_or(""))
        }
        ManifestObject::ClusterOutput(output) => format!("ClusterMetricOutput {}", output.metadata.name.as_deref().unwrap_or("")),
        ManifestObject::Namespace { name, .. } => format!("Namespace {name}"),
        ManifestObject::Secret(secret) => format!("Secret {}/{}", secret.namespace, secret.name),
    }
}

/// A generation for an object without an apiserver: a stable hash of its spec.
fn spec_generation<T: serde::Serialize>(spec: &T) -> i64 {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    // Keep it positive like a real generation.
    i64::try_from(stable_hash(&bytes) >> 1).unwrap_or(i64::MAX)
}

fn add_to_desired(desired: &mut DesiredState, object: ManifestObject) {
    match object {
        ManifestObject::Input(input) => {
            let namespace = input.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
            let key = TaskKey::new(&namespace, input.metadata.name.as_deref().unwrap_or_default());
            let generation = spec_generation(&input.spec);
            desired.inputs.insert(key, DesiredInput { generation, input: *input, window: crate::engine::TickWindow::ALL });
        }
        ManifestObject::Output(output) => {
            let id = OutputId {
                kind: OutputKind::MetricOutput,
                namespace: output.metadata.namespace.clone(),
                name: output.metadata.name.clone().unwrap_or_default(),
            };
            let desired_output = DesiredOutput {
                generation: spec_generation(&output.spec),
                settings: output.spec.settings().into(),
                namespace_selector: None,
            };
            desired.outputs.insert(id, desired_output);
        }
        ManifestObject::ClusterOutput(output) => {
            let id = OutputId { kind: OutputKind::ClusterMetricOutput, namespace: None, name: output.metadata.name.clone().unwrap_or_default() };
            let desired_output = DesiredOutput {
                generation: spec_generation(&output.spec),
                settings: output.spec.settings().into(),
                namespace_selector: output.spec.namespace_selector.clone(),
            };
            desired.outputs.insert(id, desired_output);
        }
        ManifestObject::Namespace { name, labels } => {
            desired.namespace_labels.insert(name, Labels::from_pairs(labels));
        }
        ManifestObject::Secret(secret) => desired.secrets.insert(secret.namespace, secret.name, secret.data),
    }
}

/// Applies the manifests now and on every change until `shutdown` fires. `on_applied` is called
/// after every apply (the readiness probe uses it).
pub async fn run(
    mut source: ManifestSource,
    runtime: &mut Runtime,
    telemetry: &Telemetry,
    shutdown: CancellationToken,
    on_applied: impl Fn(),
) {
    let (events, mut changed) = mpsc::channel::<()>(16);
    // Keep the watcher alive for as long as we run.
    let _watcher = source.watched_directory().and_then(|dir| watch(dir, events));
    let mut reported: Vec<String> = Vec::new();
    loop {
        let scan = source.scan();
        let messages: Vec<String> = scan.errors.iter().map(ToString::to_string).collect();
        if messages != reported {
            for message in &messages {
                tracing::error!("invalid manifest: {message}");
            }
            reported = messages;
        }
        telemetry.invalid_documents.set(scan.errors.len() as i64);
        let report = runtime.apply(&scan.desired).await;
        if report != Default::default() {
            tracing::info!(
                started = ?report.started, restarted = ?report.restarted, stopped = ?report.stopped,
                outputs_started = ?report.outputs_started, outputs_stopped = ?report.outputs_stopped,
                outputs_refused = ?report.outputs_refused,
                "applied manifests"
            );
        }
        on_applied();
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(()) = changed.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while changed.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(RESCAN_INTERVAL) => {}
        }
    }
}

fn watch(dir: &Path, events: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already means "rescan"; dropping extra events is fine.
            let _ = events.try_send(());
        }
    });
    match watcher {
        Ok(mut watcher) => match watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => Some(watcher),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), "cannot watch, relying on periodic re-reads: {error}");
                None
            }
        },
        Err(error) => {
            tracing::warn!("no filesystem watcher, relying on periodic re-reads: {error}");
            None
        }
    }
}
