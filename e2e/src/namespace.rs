//! A fresh namespace per test.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use rand::Rng as _;

use crate::cluster::TestCluster;
use crate::wait::wait_for;

/// Label put on every namespace the harness creates, so leftovers are easy to find:
/// `kubectl delete ns -l metricshard.io/e2e=true`.
pub const E2E_LABEL: &str = "metricshard.io/e2e";

/// A uniquely named namespace, deleted when the value is dropped (or by [`delete`](Self::delete)).
///
/// When the test fails (the value is dropped while panicking) the namespace's Events and the
/// local control plane's log tails are printed; with `METRICSHARD_E2E_KEEP_NAMESPACES=1` the
/// namespace of a failed test is kept for a look.
pub struct TestNamespace {
    name: String,
    client: Client,
    deleted: bool,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>` and waits for its `default` ServiceAccount (Pods cannot be
    /// created before the ServiceAccount controller made it).
    pub async fn new(client: &Client, prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(E2E_LABEL.to_owned(), "true".to_owned())])),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let this = Self {
            name,
            client: client.clone(),
            deleted: false,
        };
        let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &this.name);
        wait_for(
            &format!("ServiceAccount {}/default", this.name),
            Duration::from_secs(60),
            || async { service_accounts.get_opt("default").await },
        )
        .await?;
        Ok(this)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client the namespace was created with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A namespaced API handle for `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace now (without waiting for its contents to be finalized).
    pub async fn delete(mut self) -> Result<()> {
        self.deleted = true;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.name, &DeleteParams::background())
            .await
            .with_context(|| format!("deleting namespace {}", self.name))?;
        Ok(())
    }
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // No async in Drop, and this client's connections live on a runtime that this very
        // thread may be driving: use kubectl, synchronously.
        let Some(cluster) = TestCluster::try_shared() else {
            return;
        };
        let kubectl = |args: &[&str]| {
            std::process::Command::new(cluster.kubectl_binary())
                .args(args)
                .env("KUBECONFIG", cluster.kubeconfig_env())
                .stdin(std::process::Stdio::null())
                .output()
        };
        if std::thread::panicking() {
            if let Ok(output) = kubectl(&[
                "get",
                "events",
                "-n",
                &self.name,
                "--sort-by=.lastTimestamp",
            ]) {
                eprintln!(
                    "----- events in namespace {} -----\n{}{}",
                    self.name,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let report = cluster.failure_report(20);
            if !report.is_empty() {
                eprintln!("----- control plane logs -----\n{report}");
            }
            crate::failure::print_recorded();
            if std::env::var_os("METRICSHARD_E2E_KEEP_NAMESPACES").is_some() {
                eprintln!(
                    "keeping namespace {} (METRICSHARD_E2E_KEEP_NAMESPACES)",
                    self.name
                );
                return;
            }
        }
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// `<prefix>-<6 random [a-z0-9]>`, a valid namespace name (prefix lower-cased, cut to fit).
fn unique_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    let prefix = prefix.trim_matches('-');
    if prefix.is_empty() {
        format!("e2e-{suffix}")
    } else {
        format!("{prefix}-{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_dns_labels() {
        for prefix in ["crds", "Weird_Prefix!", "", &"x".repeat(80)] {
            let name = unique_name(prefix);
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}
