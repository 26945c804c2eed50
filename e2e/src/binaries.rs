//! Locating the test bed's binaries: the cached Kubernetes components and the workspace's own.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// `scripts/testbed/versions.env`, the single source of the pinned versions.
const VERSIONS_ENV: &str = include_str!("../../scripts/testbed/versions.env");

/// Versions of the test bed components, as pinned in `scripts/testbed/versions.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// Kubernetes release of kube-apiserver, kube-controller-manager and kubectl (`v1.35.4`).
    pub kubernetes: String,
    /// etcd server release (`v3.6.6`).
    pub etcd: String,
    /// helm release (`v3.22.0`).
    pub helm: String,
}

impl Versions {
    /// The versions pinned in `scripts/testbed/versions.env` (compiled into the harness).
    pub fn pinned() -> Result<Self> {
        Self::parse(VERSIONS_ENV)
    }

    fn parse(text: &str) -> Result<Self> {
        let value = |key: &str| -> Result<String> {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.starts_with('#'))
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().to_owned())
                .with_context(|| format!("versions.env has no {key}"))
        };
        Ok(Self {
            kubernetes: value("KUBERNETES_VERSION")?,
            etcd: value("ETCD_VERSION")?,
            helm: value("HELM_VERSION")?,
        })
    }
}

/// Paths of the Kubernetes-side binaries built by `scripts/testbed/build-k8s.sh`.
#[derive(Debug, Clone)]
pub struct TestbedBinaries {
    /// etcd server.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kubectl.
    pub kubectl: PathBuf,
    /// helm.
    pub helm: PathBuf,
}

impl TestbedBinaries {
    /// Finds the binaries: in `$METRICSHARD_TESTBED_BIN` when set (plain names such as `etcd`,
    /// or the versioned names the build script writes), otherwise in the build script's cache
    /// `${METRICSHARD_CACHE:-$HOME/.cache/metricshard}/bin/<name>-<version>`.
    pub fn locate() -> Result<Self> {
        let versions = Versions::pinned()?;
        let find = |name: &str, version: &str| find_binary(name, version);
        Ok(Self {
            etcd: find("etcd", &versions.etcd)?,
            kube_apiserver: find("kube-apiserver", &versions.kubernetes)?,
            kube_controller_manager: find("kube-controller-manager", &versions.kubernetes)?,
            kubectl: find("kubectl", &versions.kubernetes)?,
            helm: find("helm", &versions.helm)?,
        })
    }

    /// The cache directory of the build script: `${METRICSHARD_CACHE:-$HOME/.cache/metricshard}`.
    pub fn cache_dir() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os("METRICSHARD_CACHE") {
            return Ok(PathBuf::from(dir));
        }
        let home = std::env::var_os("HOME").context("neither METRICSHARD_CACHE nor HOME is set")?;
        Ok(Path::new(&home).join(".cache/metricshard"))
    }
}

/// Finds one test bed binary by name and pinned version (see [`TestbedBinaries::locate`]).
pub(crate) fn find_binary(name: &str, version: &str) -> Result<PathBuf> {
    let versioned = format!("{name}-{version}");
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("METRICSHARD_TESTBED_BIN") {
        let dir = PathBuf::from(dir);
        for candidate in [dir.join(name), dir.join(&versioned)] {
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
    }
    let candidate = TestbedBinaries::cache_dir()?.join("bin").join(&versioned);
    if candidate.is_file() {
        return Ok(candidate);
    }
    tried.push(candidate);
    bail!(
        "{name} {version} not found (tried {tried:?}); run scripts/testbed/build-k8s.sh \
         or set METRICSHARD_TESTBED_BIN"
    )
}

/// A binary of this workspace (`metricshard-collector`, `metricshard-operator`, ...), built by
/// `cargo build` into the workspace's target directory (`$CARGO_TARGET_DIR` or `target/`).
///
/// The profile is `debug` unless `METRICSHARD_E2E_PROFILE` names another. The harness never
/// builds it: the test command does (`cargo build --workspace --bins` before `cargo test`).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("e2e crate has no parent directory")?
        .to_path_buf();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                workspace_root.join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| workspace_root.join("target"));
    let profile = std::env::var("METRICSHARD_E2E_PROFILE").unwrap_or_else(|_| "debug".to_owned());
    let path = target_dir.join(&profile).join(name);
    if !path.is_file() {
        bail!(
            "{} is missing; build it first: cargo build -p {name}{}",
            path.display(),
            if profile == "debug" {
                String::new()
            } else {
                format!(" --profile {profile}")
            }
        );
    }
    Ok(path)
}

/// The workspace root directory (parent of the e2e crate).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pinned_versions() {
        let versions = Versions::pinned().unwrap();
        assert!(versions.kubernetes.starts_with("v1."), "{versions:?}");
        assert!(versions.etcd.starts_with("v3."), "{versions:?}");
        assert!(versions.helm.starts_with("v3."), "{versions:?}");
    }

    #[test]
    fn ignores_comments_and_requires_every_key() {
        let parsed = Versions::parse(
            "# KUBERNETES_VERSION=v0\nKUBERNETES_VERSION=v1.2.3\nETCD_VERSION=v3.4.5\nHELM_VERSION=v3.0.1\n",
        )
        .unwrap();
        assert_eq!(parsed.kubernetes, "v1.2.3");
        assert!(Versions::parse("KUBERNETES_VERSION=v1\n").is_err());
    }
}
