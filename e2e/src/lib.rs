//! End-to-end test bed of metricshard.
//!
//! Everything here is real: a Kubernetes control plane (etcd, kube-apiserver with RBAC and
//! ServiceAccount token issuance, kube-controller-manager) built from upstream sources by
//! `scripts/testbed/build-k8s.sh`, and Redis, Prometheus, VictoriaMetrics and InfluxDB 1.x from
//! Debian's packages (`scripts/testbed/install-deps.sh`), each started on a free loopback port.
//!
//! * [`TestCluster::shared`] gives every test binary one cluster: the local control plane, or
//!   the cluster `KUBECONFIG` names when that variable is set (kind, k3d, a cloud cluster).
//! * [`TestNamespace`] is a fresh namespace per test, deleted when the test ends.
//! * [`ServiceAccountIdentity`] acts as a ServiceAccount (a client, and a kubeconfig file for
//!   processes) and [`PodIdentity`] carries a pod's identity to a process started with
//!   [`ManagedProcess`]; [`PodStandIn`] does both for a Pod a controller created.
//! * [`wait_for`] polls a condition with a timeout; there are no bare sleeps in the tests.
//! * [`backends`] starts the metric backends and reads samples back through their query APIs.
//!
//! See `e2e/README.md` for how the pieces fit and how to run the suite.

pub mod backends;
mod binaries;
mod certs;
mod cluster;
mod control_plane;
mod failure;
mod kubeconfig;
mod kubectl;
mod namespace;
mod pods;
mod ports;
mod process;
pub mod release;
mod rundir;
mod service_account;
mod wait;

pub use binaries::{TestbedBinaries, Versions, workspace_binary, workspace_root};
pub use cluster::TestCluster;
pub use control_plane::ControlPlane;
pub use kubectl::{Kubectl, KubectlOutput};
pub use namespace::{E2E_LABEL, TestNamespace};
pub use pods::{PodStandIn, create_node, node_of};
pub use ports::free_port;
pub use process::{ManagedProcess, ProcessSpec};
pub use release::{ChartPodProcess, ChartRelease, MetricsEndpoint, ScrapeCadence, ScrapeTarget};
pub use rundir::run_dir;
pub use service_account::{PodIdentity, ServiceAccountIdentity};
pub use wait::{Outcome, Poll, wait_for};

/// Installs the rustls crypto provider the harness's clients use.
///
/// kube uses ring while reqwest's `rustls` feature compiles in aws-lc-rs; with two providers
/// compiled in, rustls cannot pick one by itself and every TLS client would panic. Idempotent.
pub fn install_crypto_provider() {
    // An Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for the harness and the tests, with the crypto provider installed first
/// (reqwest needs one before it builds any client) and a timeout per request.
pub fn http_client(timeout: std::time::Duration) -> anyhow::Result<reqwest::Client> {
    install_crypto_provider();
    Ok(reqwest::Client::builder().timeout(timeout).build()?)
}
