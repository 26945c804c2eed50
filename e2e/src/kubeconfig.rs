//! Writing kubeconfig files: the local cluster's admin one and ServiceAccount ones.

use std::path::Path;

use anyhow::{Context as _, Result};
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

/// A kubeconfig with one cluster, one user and one context (named `name`), made current.
pub(crate) fn single(
    name: &str,
    cluster: Cluster,
    user: AuthInfo,
    namespace: Option<&str>,
) -> Kubeconfig {
    Kubeconfig {
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        clusters: vec![NamedCluster {
            name: name.to_owned(),
            cluster: Some(cluster),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: name.to_owned(),
            auth_info: Some(user),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: name.to_owned(),
            context: Some(Context {
                cluster: name.to_owned(),
                user: Some(name.to_owned()),
                namespace: namespace.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(name.to_owned()),
        ..Default::default()
    }
}

/// Writes `config` to `path` (mode 0600: it holds credentials).
pub(crate) fn write(path: &Path, config: &Kubeconfig) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let yaml = serde_yaml::to_string(config).context("serializing kubeconfig")?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(yaml.as_bytes())?;
    Ok(())
}

/// The cluster entry (server, CA) of the current context of `config`.
pub(crate) fn current_cluster(config: &Kubeconfig) -> Result<Cluster> {
    let context_name = config
        .current_context
        .as_deref()
        .context("kubeconfig has no current-context")?;
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .with_context(|| format!("kubeconfig has no context {context_name}"))?;
    config
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .with_context(|| format!("kubeconfig has no cluster {}", context.cluster))
}
