//! A standing test bed for humans: the local control plane (and optionally the backends) in
//! the foreground until SIGINT/SIGTERM. `scripts/testbed/up.sh` runs it in the background.
//!
//! The tests do not need it: each test binary starts its own control plane.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use metricshard_e2e::backends::{InfluxDb, Prometheus, Redis, VictoriaMetrics};
use metricshard_e2e::{ControlPlane, TestbedBinaries, run_dir};

const USAGE: &str =
    "usage: metricshard-testbed [--backends] [--kubeconfig-out PATH] [--env-out PATH]

Starts etcd, kube-apiserver and kube-controller-manager on loopback (and with --backends,
Redis, Prometheus, VictoriaMetrics and InfluxDB), writes the admin kubeconfig to PATH
(default <run dir>/admin.kubeconfig) and shell `export` lines to --env-out, then runs until
SIGINT or SIGTERM. Data and logs live under ${METRICSHARD_E2E_DIR:-$TMPDIR/metricshard-e2e}.";

struct Args {
    backends: bool,
    kubeconfig_out: Option<PathBuf>,
    env_out: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        backends: false,
        kubeconfig_out: None,
        env_out: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--backends" => args.backends = true,
            "--kubeconfig-out" => {
                args.kubeconfig_out =
                    Some(iter.next().context("--kubeconfig-out needs a path")?.into())
            }
            "--env-out" => {
                args.env_out = Some(iter.next().context("--env-out needs a path")?.into())
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    metricshard_e2e::install_crypto_provider();
    let binaries = TestbedBinaries::locate()?;
    let dir = run_dir()?;
    let control_plane = ControlPlane::start(&binaries, dir).await?;
    let kubeconfig = match &args.kubeconfig_out {
        Some(path) => {
            std::fs::copy(control_plane.admin_kubeconfig(), path)
                .with_context(|| format!("writing {}", path.display()))?;
            path.clone()
        }
        None => control_plane.admin_kubeconfig().to_path_buf(),
    };
    let mut env = vec![
        format!("export KUBECONFIG={}", kubeconfig.display()),
        format!(
            "export METRICSHARD_TESTBED_KUBECTL={}",
            binaries.kubectl.display()
        ),
        format!(
            "export METRICSHARD_TESTBED_HELM={}",
            binaries.helm.display()
        ),
        format!(
            "export METRICSHARD_TESTBED_LOGS={}",
            dir.join("logs").display()
        ),
    ];

    // Kept alive until the end of main.
    let mut backends = None;
    if args.backends {
        let redis = Redis::start().await?;
        let prometheus = Prometheus::start().await?;
        let victoria_metrics = VictoriaMetrics::start().await?;
        let influxdb = InfluxDb::start().await?;
        env.push(format!("export METRICSHARD_TESTBED_REDIS={}", redis.url()));
        env.push(format!(
            "export METRICSHARD_TESTBED_PROMETHEUS={}",
            prometheus.base_url()
        ));
        env.push(format!(
            "export METRICSHARD_TESTBED_VICTORIA_METRICS={}",
            victoria_metrics.base_url()
        ));
        env.push(format!(
            "export METRICSHARD_TESTBED_INFLUXDB={}",
            influxdb.base_url()
        ));
        backends = Some((redis, prometheus, victoria_metrics, influxdb));
    }

    let env = env.join("\n") + "\n";
    if let Some(path) = &args.env_out {
        std::fs::write(path, &env).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "test bed up in {:.1?} (API server {})",
        started.elapsed(),
        control_plane.server()
    );
    print!("{env}");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("stopping the test bed");
    drop(backends);
    drop(control_plane);
    Ok(())
}
