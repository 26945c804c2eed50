//! `metricshard-collector`: runs gather tasks from the apiserver (`--cluster`), from a manifest
//! directory (`--manifests DIR`), or, with neither, from the example compiled into the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use metricshard_collector::cluster::{self, CollectorPlacement, PodIdentity};
use metricshard_collector::http::{self, HttpState};
use metricshard_collector::inputs::KubernetesContext;
use metricshard_collector::local::{self, ManifestSource};
use metricshard_collector::runtime::Runtime;
use metricshard_collector::telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

/// Samples are many small allocations (names, label values); mimalloc makes them about twice as
/// cheap as the system allocator (docs/benchmarks.md, "Exposition parser").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The example run when no `--manifests` directory is given: the collector scrapes its own
/// `/metrics` and prints the samples.
const EMBEDDED_EXAMPLE: &str = include_str!("../../examples/local/self-scrape.yaml");

#[derive(Debug, Parser)]
#[command(name = "metricshard-collector", version, about = "Runs metricshard gather tasks and delivers their samples")]
struct Args {
    /// Directory of MetricInput/MetricOutput/ClusterMetricOutput manifests to run and watch
    /// (local mode). Without it, the built-in self-scrape example runs.
    #[arg(long, env = "METRICSHARD_MANIFESTS")]
    manifests: Option<PathBuf>,
    /// Cluster mode: run the inputs the operator assigned to this pod, read from the apiserver
    /// (in-cluster config or KUBECONFIG). Needs POD_NAME and POD_NAMESPACE.
    #[arg(long, env = "METRICSHARD_CLUSTER", conflicts_with = "manifests")]
    cluster: bool,
    /// Cluster mode: `sharded` (StatefulSet member) or `every-node` (DaemonSet member).
    #[arg(long, env = "METRICSHARD_PLACEMENT", value_enum, default_value_t = CollectorPlacement::Sharded)]
    placement: CollectorPlacement,
    /// Cluster mode: this pod's name.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Cluster mode: this pod's namespace, where its membership Lease lives.
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// Cluster mode: the node this pod runs on.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Every-node placement: how often the node's labels are re-read to decide which inputs'
    /// `placement.nodeSelector` admit this node (Go duration syntax).
    #[arg(long, env = "METRICSHARD_NODE_LABEL_REFRESH", default_value = "30s", value_parser = metricshard_crds::Duration::parse)]
    node_label_refresh: metricshard_crds::Duration,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICSHARD_LISTEN", default_value = "127.0.0.1:9750")]
    listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "METRICSHARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout belongs to the stdout output.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let http_client = match metricshard_collector::build_http_client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!("cannot build the HTTP client: {error}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = Telemetry::new();
    let shutdown = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));

    let state = HttpState { telemetry: telemetry.clone(), ready: ready.clone() };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(address = %args.listen, "cannot listen: {error}");
            return ExitCode::FAILURE;
        }
    };
    let server = tokio::spawn(http::serve(listener, state, shutdown.clone()));
    tokio::spawn(stop_on_signal(shutdown.clone()));

    let mut runtime = Runtime::new(telemetry.clone(), http_client);
    // Local mode: Kubernetes discovery (if an input asks for it) uses the default kubeconfig.
    runtime.set_kubernetes(KubernetesContext::local(args.node_name.clone()));
    let mark_ready = || ready.store(true, Ordering::Release);
    let mut failed = false;
    if args.cluster {
        failed = !run_cluster(&args, &mut runtime, shutdown.clone(), mark_ready).await;
    } else {
        let source = match &args.manifests {
            Some(dir) => ManifestSource::directory(dir),
            None => ManifestSource::embedded("<embedded self-scrape example>", EMBEDDED_EXAMPLE),
        };
        local::run(source, &mut runtime, &telemetry, shutdown.clone(), mark_ready).await;
    }

    tracing::info!("shutting down: stopping tasks and flushing outputs");
    runtime.shutdown().await;
    shutdown.cancel();
    if let Ok(Err(error)) = server.await {
        tracing::error!("HTTP server failed: {error}");
        return ExitCode::FAILURE;
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Runs cluster mode; false when it could not start or stopped on an error.
async fn run_cluster(args: &Args, runtime: &mut Runtime, shutdown: CancellationToken, on_applied: impl Fn()) -> bool {
    let (Some(name), Some(namespace)) = (args.pod_name.clone(), args.pod_namespace.clone()) else {
        tracing::error!("cluster mode needs POD_NAME and POD_NAMESPACE (set them from the downward API)");
        return false;
    };
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!("cannot build a Kubernetes client: {error}");
            return false;
        }
    };
    runtime.set_kubernetes(KubernetesContext::cluster(client.clone(), namespace.clone(), args.node_name.clone()));
    let pod = PodIdentity { name, namespace, node: args.node_name.clone(), node_label_refresh: args.node_label_refresh.get() };
    match cluster::run(client, pod, args.placement, runtime, shutdown.clone(), on_applied).await {
        Ok(()) => true,
        Err(error) => {
            tracing::error!("cluster mode stopped: {error}");
            shutdown.cancel();
            false
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("signal received");
    shutdown.cancel();
}
