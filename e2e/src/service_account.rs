//! Acting as a ServiceAccount, and carrying a pod's identity into a local process.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions};
use kube::{Api, Client, ResourceExt as _};

use crate::cluster::TestCluster;
use crate::kubeconfig;
use crate::rundir::run_dir;

/// Lifetime requested for tokens: longer than any test run.
const TOKEN_EXPIRATION_SECONDS: i64 = 24 * 3600;

/// Credentials of a ServiceAccount: a token from the TokenRequest API and a kubeconfig file
/// holding it, so that a separate process (the operator, a collector) authenticates exactly as
/// a pod running under that ServiceAccount would.
#[derive(Debug, Clone)]
pub struct ServiceAccountIdentity {
    namespace: String,
    name: String,
    token: String,
    kubeconfig_path: PathBuf,
}

impl ServiceAccountIdentity {
    /// Creates the ServiceAccount `namespace/name` (if missing, e.g. a chart already made it)
    /// and requests a token for it.
    pub async fn create(
        cluster: &TestCluster,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Self> {
        let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        if service_accounts.get_opt(name).await?.is_none() {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            };
            service_accounts
                .create(&PostParams::default(), &sa)
                .await
                .with_context(|| format!("creating ServiceAccount {namespace}/{name}"))?;
        }
        Self::request(cluster, client, namespace, name, None).await
    }

    /// Requests a token for the existing ServiceAccount `namespace/name`.
    ///
    /// With `bound_pod`, the token is bound to that Pod, as the kubelet's projected tokens are:
    /// the API server stops accepting it once the Pod is deleted.
    pub async fn request(
        cluster: &TestCluster,
        client: &Client,
        namespace: &str,
        name: &str,
        bound_pod: Option<&Pod>,
    ) -> Result<Self> {
        let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let bound_object_ref = bound_pod.map(|pod| BoundObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(pod.name_any()),
            uid: pod.uid(),
        });
        let request = TokenRequest {
            spec: TokenRequestSpec {
                // Empty: the API server's own audience (--api-audiences).
                audiences: Vec::new(),
                expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                bound_object_ref,
            },
            ..Default::default()
        };
        let response = service_accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?;
        let token = response
            .status
            .context("TokenRequest returned no status")?
            .token;

        let kubeconfig_path = run_dir()?.join("kubeconfigs").join(format!(
            "{namespace}.{name}.{}.kubeconfig",
            rand::random::<u32>()
        ));
        let user = AuthInfo {
            token: Some(token.clone().into()),
            ..Default::default()
        };
        let config = kubeconfig::single(
            &format!("{namespace}-{name}"),
            cluster.cluster_entry().clone(),
            user,
            Some(namespace),
        );
        kubeconfig::write(&kubeconfig_path, &config)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            token,
            kubeconfig_path,
        })
    }

    /// The ServiceAccount's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ServiceAccount's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The RBAC username: `system:serviceaccount:<namespace>:<name>`.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig file holding the token (default namespace: the ServiceAccount's).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A client authenticating with the token.
    pub async fn client(&self) -> Result<Client> {
        crate::install_crypto_provider();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig_path)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Environment for a process standing in for a pod of this ServiceAccount: `KUBECONFIG`
    /// with the token, plus the pod's identity (see [`PodIdentity::env`]).
    pub fn process_env(&self, pod: &PodIdentity) -> Vec<(String, String)> {
        let mut env = vec![(
            "KUBECONFIG".to_owned(),
            self.kubeconfig_path.display().to_string(),
        )];
        env.extend(pod.env());
        env
    }
}

/// The identity of the pod a local process stands in for, as the downward API would give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// `metadata.name` of the pod (`POD_NAME`).
    pub pod_name: String,
    /// `metadata.namespace` of the pod (`POD_NAMESPACE`).
    pub namespace: String,
    /// `spec.nodeName` of the pod (`NODE_NAME`).
    pub node_name: String,
}

impl PodIdentity {
    /// The downward-API environment variables the chart gives the container.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("POD_NAME".to_owned(), self.pod_name.clone()),
            ("POD_NAMESPACE".to_owned(), self.namespace.clone()),
            ("NODE_NAME".to_owned(), self.node_name.clone()),
        ]
    }
}
