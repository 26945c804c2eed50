//! The cluster a test binary runs against: the local control plane or `$KUBECONFIG`'s.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use kube::Client;
use kube::config::{Cluster, KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

use crate::binaries::{TestbedBinaries, Versions, find_binary};
use crate::control_plane::ControlPlane;
use crate::kubeconfig;
use crate::kubectl::Kubectl;
use crate::rundir::run_dir;

/// The cluster of this test binary, shared by all its tests.
///
/// Without `KUBECONFIG` in the environment, the first call starts a local control plane (see
/// [`ControlPlane`]) that lives as long as the test process. With `KUBECONFIG` set, nothing is
/// started and that kubeconfig's current context is used (kind, k3d, a real cluster).
#[derive(Debug)]
pub struct TestCluster {
    local: Option<ControlPlane>,
    /// Value of `KUBECONFIG` for tools talking to this cluster as admin.
    kubeconfig_env: OsString,
    /// Server and CA, for kubeconfigs of other users.
    cluster_entry: Cluster,
    kubectl: PathBuf,
    helm: Option<PathBuf>,
}

/// Initialised once per test binary; an error is kept, so later tests fail fast with it.
static SHARED: OnceCell<Result<TestCluster, String>> = OnceCell::const_new();

impl TestCluster {
    /// The cluster of this test binary, started (or connected to) on first use.
    pub async fn shared() -> Result<&'static TestCluster> {
        SHARED
            .get_or_init(|| async { Self::connect().await.map_err(|e| format!("{e:#}")) })
            .await
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the e2e test cluster is unavailable: {e}"))
    }

    /// The shared cluster if a test already set it up, without waiting (for synchronous
    /// teardown paths such as `Drop`).
    pub fn try_shared() -> Option<&'static TestCluster> {
        SHARED.get().and_then(|result| result.as_ref().ok())
    }

    async fn connect() -> Result<Self> {
        crate::install_crypto_provider();
        crate::failure::record_panics();
        let versions = Versions::pinned()?;
        match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(kubeconfig_env) => {
                let config = Kubeconfig::read().context("reading $KUBECONFIG")?;
                let cluster_entry = kubeconfig::current_cluster(&config)?;
                // Prefer the pinned kubectl; against someone else's cluster a kubectl from
                // PATH will do (the version skew policy allows one minor either way).
                let kubectl = find_binary("kubectl", &versions.kubernetes)
                    .unwrap_or_else(|_| PathBuf::from("kubectl"));
                let helm = find_binary("helm", &versions.helm)
                    .ok()
                    .or_else(|| Some(PathBuf::from("helm")));
                let cluster = Self {
                    local: None,
                    kubeconfig_env,
                    cluster_entry,
                    kubectl,
                    helm,
                };
                // Fail now, with a clear message, if the cluster cannot be reached.
                cluster
                    .client()
                    .await?
                    .apiserver_version()
                    .await
                    .context("reaching the $KUBECONFIG cluster")?;
                Ok(cluster)
            }
            None => {
                let binaries = TestbedBinaries::locate()?;
                let dir = run_dir()?;
                let control_plane = ControlPlane::start(&binaries, dir).await?;
                Ok(Self {
                    kubeconfig_env: control_plane.admin_kubeconfig().as_os_str().to_owned(),
                    cluster_entry: control_plane.cluster_entry(),
                    local: Some(control_plane),
                    kubectl: binaries.kubectl,
                    helm: Some(binaries.helm),
                })
            }
        }
    }

    /// The local control plane, or `None` when running against `$KUBECONFIG`.
    pub fn local(&self) -> Option<&ControlPlane> {
        self.local.as_ref()
    }

    /// Whether this is the local control plane (no kubelet: Pods never run).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The value of `KUBECONFIG` that gives a tool admin access to this cluster.
    pub fn kubeconfig_env(&self) -> &OsString {
        &self.kubeconfig_env
    }

    /// The admin kubeconfig file of the local control plane, or the first file of
    /// `$KUBECONFIG`.
    pub fn kubeconfig_path(&self) -> PathBuf {
        match &self.local {
            Some(control_plane) => control_plane.admin_kubeconfig().to_path_buf(),
            None => std::env::split_paths(&self.kubeconfig_env)
                .next()
                .unwrap_or_default(),
        }
    }

    /// Server URL and CA of the cluster, for building kubeconfigs of other users.
    pub fn cluster_entry(&self) -> &Cluster {
        &self.cluster_entry
    }

    /// The admin kube config.
    pub async fn config(&self) -> Result<kube::Config> {
        crate::install_crypto_provider();
        let kubeconfig = match &self.local {
            Some(control_plane) => Kubeconfig::read_from(control_plane.admin_kubeconfig())?,
            None => Kubeconfig::read()?,
        };
        Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// A new admin client.
    ///
    /// Create clients inside the test that uses them: a client's connection tasks run on the
    /// tokio runtime it was created on, and each `#[tokio::test]` has its own runtime.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config().await?)?)
    }

    /// A kubectl invocation with admin access to this cluster.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubectl, &self.kubeconfig_env)
    }

    /// A kubectl invocation using another kubeconfig (e.g. a ServiceAccount's).
    pub fn kubectl_as(&self, kubeconfig: &Path) -> Kubectl {
        Kubectl::new(&self.kubectl, kubeconfig.as_os_str())
    }

    /// The kubectl binary.
    pub fn kubectl_binary(&self) -> &Path {
        &self.kubectl
    }

    /// The helm binary (pinned build for the local control plane; for `$KUBECONFIG` the
    /// pinned build if present, else `helm` from PATH).
    pub fn helm_binary(&self) -> Option<&Path> {
        self.helm.as_deref()
    }

    /// Text for failure reports: the local control plane's log tails, or nothing.
    pub fn failure_report(&self, lines: usize) -> String {
        self.local
            .as_ref()
            .map(|control_plane| control_plane.log_tails(lines))
            .unwrap_or_default()
    }
}
