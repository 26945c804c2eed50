//! The local control plane: etcd, kube-apiserver and kube-controller-manager on loopback.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::config::{AuthInfo, Cluster, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use crate::binaries::TestbedBinaries;
use crate::certs::{ClusterPki, SERVICE_CLUSTER_IP_RANGE};
use crate::kubeconfig;
use crate::ports::free_port;
use crate::process::{ManagedProcess, ProcessSpec};
use crate::wait::{Outcome, wait_for};

/// Issuer (and audience) of ServiceAccount tokens, as on a default cluster.
pub(crate) const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Controllers the controller-manager runs: workloads create Pods, garbage collection of owned
/// objects, namespace deletion, ServiceAccounts and their tokens, the root CA ConfigMap and the
/// aggregated ClusterRoles (admin/edit/view), and EndpointSlices for Services (what the
/// endpointslice discovery role reads). No node or volume controllers: there are no kubelets.
const CONTROLLERS: &[&str] = &[
    "statefulset-controller",
    "daemonset-controller",
    "replicaset-controller",
    "deployment-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "endpointslice-controller",
];

/// How long each component may take to become ready. Generous: the CI machine has 2 cores
/// and may be compiling at the same time.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running local control plane. Its processes die with the test process (see
/// [`ManagedProcess`]); nothing needs to stop them explicitly.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    admin_kubeconfig: PathBuf,
    pki: ClusterPki,
    etcd: Mutex<ManagedProcess>,
    apiserver: Mutex<ManagedProcess>,
    controller_manager: Mutex<ManagedProcess>,
}

impl ControlPlane {
    /// Generates certificates and starts etcd, kube-apiserver and kube-controller-manager in
    /// `dir`, waiting until the API server is ready and the controllers work.
    pub async fn start(binaries: &TestbedBinaries, dir: &Path) -> Result<Self> {
        let pki = ClusterPki::generate(&dir.join("pki")).context("generating certificates")?;
        let logs = dir.join("logs");

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let mut etcd = ManagedProcess::start(
            ProcessSpec::new("etcd", &binaries.etcd)
                .arg("--name=e2e")
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=e2e={peer_url}"))
                // A throwaway test store: durability across machine crashes does not matter
                // and fsync on a shared CI disk is what makes etcd (and so everything) slow.
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn")
                .log_path(logs.join("etcd.log")),
        )?;
        wait_http_ok("etcd /health", &format!("{etcd_url}/health"), &mut etcd).await?;

        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let sa_pub = pki.sa_public_key.display().to_string();
        let mut apiserver = ManagedProcess::start(
            ProcessSpec::new("kube-apiserver", &binaries.kube_apiserver)
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg("--advertise-address=127.0.0.1")
                // The `kubernetes` Endpoints may not hold a loopback address; there is no
                // in-cluster traffic to route anyway.
                .arg("--endpoint-reconciler-type=none")
                .arg(format!("--tls-cert-file={}", pki.serving_cert.display()))
                .arg(format!(
                    "--tls-private-key-file={}",
                    pki.serving_key.display()
                ))
                .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
                .arg("--authorization-mode=RBAC")
                .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
                .arg(format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"))
                .arg(format!("--service-account-key-file={sa_pub}"))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    pki.sa_signing_key.display()
                ))
                .arg(format!(
                    "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
                ))
                .arg(format!(
                    "--cert-dir={}",
                    dir.join("apiserver-certs").display()
                ))
                .arg("--allow-privileged=true")
                .arg("--profiling=false")
                .log_path(logs.join("kube-apiserver.log")),
        )?;

        let admin_kubeconfig = dir.join("admin.kubeconfig");
        let cluster = Cluster {
            server: Some(server.clone()),
            certificate_authority: Some(pki.ca_cert.display().to_string()),
            ..Default::default()
        };
        let admin = AuthInfo {
            client_certificate: Some(pki.admin_cert.display().to_string()),
            client_key: Some(pki.admin_key.display().to_string()),
            ..Default::default()
        };
        kubeconfig::write(
            &admin_kubeconfig,
            &kubeconfig::single("metricshard-e2e", cluster, admin, None),
        )?;
        let client = admin_client(&admin_kubeconfig).await?;
        wait_readyz(&client, &mut apiserver).await?;

        let kcm_port = free_port()?;
        let admin_path = admin_kubeconfig.display().to_string();
        let mut controller_manager = ManagedProcess::start(
            ProcessSpec::new("kube-controller-manager", &binaries.kube_controller_manager)
                .arg(format!("--kubeconfig={admin_path}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={kcm_port}"))
                .arg(format!("--cert-dir={}", dir.join("kcm-certs").display()))
                .arg("--leader-elect=false")
                // Each controller acts as its own ServiceAccount, under RBAC, as on a real cluster.
                .arg("--use-service-account-credentials=true")
                .arg(format!(
                    "--service-account-private-key-file={}",
                    pki.sa_signing_key.display()
                ))
                .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
                .arg(format!("--controllers={}", CONTROLLERS.join(",")))
                .arg("--profiling=false")
                .log_path(logs.join("kube-controller-manager.log")),
        )?;
        wait_controllers(&client, &mut controller_manager).await?;

        Ok(Self {
            dir: dir.to_path_buf(),
            server,
            admin_kubeconfig,
            pki,
            etcd: Mutex::new(etcd),
            apiserver: Mutex::new(apiserver),
            controller_manager: Mutex::new(controller_manager),
        })
    }

    /// `https://127.0.0.1:<port>` of the API server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The CA certificate clients trust.
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// The directory holding certificates, etcd's data and the logs (`logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster entry of kubeconfigs for this control plane.
    pub(crate) fn cluster_entry(&self) -> Cluster {
        Cluster {
            server: Some(self.server.clone()),
            certificate_authority: Some(self.pki.ca_cert.display().to_string()),
            ..Default::default()
        }
    }

    /// Restarts kube-apiserver (same port, same etcd): every watch is cut and must be
    /// re-established. Waits until it is ready again. Tests that do this disturb every other
    /// test of their binary, so they belong in a test binary of their own.
    pub async fn restart_apiserver(&self) -> Result<()> {
        {
            let mut apiserver = lock(&self.apiserver);
            apiserver.terminate(Duration::from_secs(30))?;
            apiserver.restart()?;
        }
        let client = admin_client(&self.admin_kubeconfig).await?;
        wait_for(
            "kube-apiserver /readyz after restart",
            START_TIMEOUT,
            || async {
                lock(&self.apiserver).ensure_running()?;
                readyz(&client).await
            },
        )
        .await
    }

    /// The last `lines` lines of each component's log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        [&self.etcd, &self.apiserver, &self.controller_manager]
            .iter()
            .map(|process| {
                let process = lock(process);
                format!(
                    "----- {} ({}) -----\n{}",
                    process.name(),
                    process.log_path().display(),
                    process.log_tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn lock(process: &Mutex<ManagedProcess>) -> MutexGuard<'_, ManagedProcess> {
    process.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn admin_client(kubeconfig: &Path) -> Result<Client> {
    crate::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn wait_http_ok(what: &str, url: &str, process: &mut ManagedProcess) -> Result<()> {
    let http = crate::http_client(Duration::from_secs(5))?;
    wait_for(what, START_TIMEOUT, || {
        let running = process.ensure_running();
        let request = http.get(url).send();
        async move {
            running?;
            let response = request.await?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            anyhow::Ok(
                Outcome::ready_if(status.is_success(), format!("{status} {body}")).map_ready(),
            )
        }
    })
    .await?;
    Ok(())
}

async fn readyz(client: &Client) -> Result<Outcome<()>> {
    let request = http::Request::get("/readyz?verbose").body(Vec::new())?;
    match client.request_text(request).await {
        Ok(_) => Ok(Outcome::Ready(())),
        Err(e) => Ok(Outcome::NotYet(format!("{e}"))),
    }
}

async fn wait_readyz(client: &Client, apiserver: &mut ManagedProcess) -> Result<()> {
    wait_for("kube-apiserver /readyz", START_TIMEOUT, || {
        let running = apiserver.ensure_running();
        async move {
            running?;
            readyz(client).await
        }
    })
    .await
}

/// The controllers work once the ServiceAccount controller made `default/default` and the
/// root CA publisher made `default/kube-root-ca.crt`.
async fn wait_controllers(client: &Client, controller_manager: &mut ManagedProcess) -> Result<()> {
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    wait_for(
        "kube-controller-manager to create ServiceAccount default/default and ConfigMap default/kube-root-ca.crt",
        START_TIMEOUT,
        || {
            let running = controller_manager.ensure_running();
            let service_accounts = service_accounts.clone();
            let config_maps = config_maps.clone();
            async move {
                running?;
                let sa = service_accounts.get_opt("default").await?;
                let ca = config_maps.get_opt("kube-root-ca.crt").await?;
                anyhow::Ok(Outcome::ready_if(sa.is_some() && ca.is_some(), (sa.is_some(), ca.is_some())).map_ready())
            }
        },
    )
    .await
}
