//! Gather sources. Each source turns one tick into samples.

pub mod host;
pub mod prometheus;
pub mod push;

use std::sync::Arc;

use metricshard_crds::MetricInputSpec;

use crate::engine::{Gatherer, TaskKey};
use crate::sample::Labels;
pub use prometheus::discovery::kubernetes::KubernetesContext;
use crate::secrets::SecretResolver;

/// Why an input's source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No source is set (the CRD's CEL rule normally prevents this).
    #[error("spec.source: exactly one source must be set")]
    NoSource,
    /// The Prometheus source is invalid.
    #[error(transparent)]
    Prometheus(#[from] prometheus::scrape::ScrapeConfigError),
    /// The host source is invalid.
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// The push source is invalid.
    #[error(transparent)]
    Push(#[from] push::PushConfigError),
}

/// Builds the gatherer of an input's source. `kubernetes` is the collector's Kubernetes context
/// (for `kubernetesSD`), scoped here to the input's namespace and placement; Secrets are resolved
/// through `secrets` (in the input's namespace), which remembers what was read for the restart
/// fingerprint.
pub fn build_gatherer(
    key: &TaskKey,
    spec: &MetricInputSpec,
    client: reqwest::Client,
    kubernetes: &KubernetesContext,
    secrets: &mut SecretResolver<'_>,
) -> Result<Arc<dyn Gatherer>, BuildError> {
    let extra_labels = Labels::from_pairs(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let namespace = key.as_str().split_once('/').map_or("default", |(namespace, _)| namespace);
    let kubernetes = kubernetes.scope(namespace, spec.placement.mode);
    if let Some(source) = &spec.source.host {
        return Ok(Arc::new(host::HostGatherer::new(key, source, &extra_labels)?));
    }
    if let Some(source) = &spec.source.push {
        return Ok(push::build(key, source, extra_labels)?);
    }
    match &spec.source.prometheus {
        Some(source) => Ok(prometheus::scrape::build(key, source, extra_labels, spec.effective_timeout(), client, kubernetes, secrets)?),
        None => Err(BuildError::NoSource),
    }
}
