//! Output credentials from Secrets, end to end: the real collector binary in local mode sends
//! remote write to a real VictoriaMetrics (Debian package `victoria-metrics`) that demands HTTP
//! basic authentication (`-httpAuth.username` / `-httpAuth.password`). The output whose
//! Secret holds the right password gets its samples stored; the one with the wrong password is
//! refused (401) and stores nothing; no credential reaches the collector's log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Collector, free_port, start_targets, within, write_atomically};

const VM_USER: &str = "writer";
const VM_PASSWORD: &str = "vm-pa55word";

struct VictoriaMetrics {
    child: Child,
    _dir: tempfile::TempDir,
    base: String,
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(binary: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{binary}` is not installed: apt-get install -y victoria-metrics"))
}

async fn start_victoria_metrics(http: &reqwest::Client) -> VictoriaMetrics {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(find_binary("victoria-metrics"))
        .args([
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-storageDataPath={}", dir.path().join("data").display()),
            format!("-httpAuth.username={VM_USER}"),
            format!("-httpAuth.password={VM_PASSWORD}"),
            "-retentionPeriod=100y".to_owned(),
            "-search.latencyOffset=0s".to_owned(),
            "-search.disableCache".to_owned(),
            "-loggerLevel=WARN".to_owned(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("vm.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let vm = VictoriaMetrics { child, _dir: dir, base };
    let health = format!("{}/health", vm.base);
    within("victoria-metrics answers", Duration::from_secs(60), || async {
        http.get(&health).basic_auth(VM_USER, Some(VM_PASSWORD)).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    vm
}

/// Series of `selector` stored in VictoriaMetrics (read with the right credentials).
async fn exported(http: &reqwest::Client, vm: &VictoriaMetrics, selector: &str) -> usize {
    let _ = http.get(format!("{}/internal/force_flush", vm.base)).basic_auth(VM_USER, Some(VM_PASSWORD)).send().await;
    let response = http
        .get(format!("{}/api/v1/export", vm.base))
        .basic_auth(VM_USER, Some(VM_PASSWORD))
        .query(&[("match[]", selector), ("start", "0")])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.unwrap().lines().filter(|l| !l.trim().is_empty()).count()
}

fn output(name: &str, url: &str, password_key: &str) -> String {
    format!(
        "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  protocol:\n    remoteWrite:\n      url: {url}\n      basicAuth:\n        username: {{name: vm-auth, key: username}}\n        password: {{name: vm-auth, key: {password_key}}}\n  batch: {{maxSamples: 1000, flushInterval: 100ms}}\n"
    )
}

fn input(name: &str, target: std::net::SocketAddr, output: &str) -> String {
    format!(
        "apiVersion: metricshard.io/v1alpha1\nkind: MetricInput\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  interval: 200ms\n  timeout: 100ms\n  source:\n    prometheus:\n      staticTargets: [\"{target}\"]\n      metricsPath: /metrics/{name}\n  outputs: [{{name: {output}}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_basic_auth_from_a_secret_reaches_an_authenticating_backend() {
    let http = metricshard_collector::build_http_client().unwrap();
    let vm = start_victoria_metrics(&http).await;
    // The backend really checks: without credentials a write is refused.
    let anonymous = http.post(format!("{}/api/v1/write", vm.base)).body(Vec::new()).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let (target, requests) = start_targets().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let url = format!("{}/api/v1/write", vm.base);
    write_atomically(
        &manifests.join("secret.yaml"),
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: vm-auth, namespace: demo}}\nstringData:\n  username: {VM_USER}\n  password: {VM_PASSWORD}\n  wrong: not-the-password\n"
        ),
    );
    write_atomically(&manifests.join("outputs.yaml"), &[output("vm", &url, "password"), output("vm-wrong", &url, "wrong")].join("---\n"));
    write_atomically(&manifests.join("inputs.yaml"), &[input("right", target, "vm"), input("wrong", target, "vm-wrong")].join("---\n"));
    let collector = Collector::start(&manifests, work.path());

    within("the right credentials store samples", Duration::from_secs(20), || async {
        exported(&http, &vm, "demo_requests_total{job=\"demo/right\"}").await > 0
    })
    .await;
    within("the wrong credentials are refused", Duration::from_secs(10), || async {
        collector.log().lines().any(|l| l.contains("401"))
    })
    .await;
    // The refusal must not be because the input stopped: it keeps being scraped.
    within("the input of the refused output keeps being scraped", Duration::from_secs(10), || async {
        requests.count("wrong") >= 2
    })
    .await;
    assert_eq!(exported(&http, &vm, "{job=\"demo/wrong\"}").await, 0, "samples were stored without the right password");
    let log = collector.log();
    assert!(!log.contains(VM_PASSWORD) && !log.contains("not-the-password"), "a credential reached the log:\n{log}");
}
