//! `metricshard-operator`: assigns MetricInputs to live collectors and reports where each runs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use metricshard_operator::assignment::AssignmentConfig;
use metricshard_operator::controller::{self, OperatorSettings};
use metricshard_operator::telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "metricshard-operator", version, about = "Assigns MetricInputs to metricshard collectors")]
struct Args {
    /// Namespace of the release, where collector Leases and the leader Lease live.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// This replica's identity for leader election.
    #[arg(long, env = "POD_NAME")]
    identity: String,
    /// Name of the collector StatefulSet: only Leases of its pods (`<name>-<ordinal>`) count as
    /// members. The operator assigns every MetricInput of the cluster, so run one release per
    /// cluster.
    #[arg(long, env = "METRICSHARD_COLLECTOR_STATEFULSET")]
    collector_statefulset: Option<String>,
    /// ε of bounded-load hashing: no collector holds more than ⌈(1+ε)·mean⌉ inputs.
    #[arg(long, env = "METRICSHARD_LOAD_FACTOR_EPSILON", default_value_t = AssignmentConfig::default().load_factor_epsilon)]
    load_factor_epsilon: f64,
    /// How far ahead of a move between live collectors its fence lies, in milliseconds: the old
    /// collector gathers the ticks scheduled before it, the new one those from then on. Must
    /// exceed watch latency plus clock skew between nodes. 0 disables fencing (moves take effect
    /// when each collector's watch sees them: a tick may then be gathered twice or missed).
    #[arg(long, env = "METRICSHARD_HANDOVER_MARGIN_MS", default_value_t = 2000)]
    handover_margin_ms: u64,
    /// How long an output's `status.collectors` keeps the entry of a collector that holds no
    /// Lease (gone without removing it), in seconds. Such entries no longer count towards the
    /// output's `Ready` condition meanwhile.
    #[arg(long, env = "METRICSHARD_OUTPUT_ENTRY_RETENTION_SECONDS", default_value_t = 600)]
    output_entry_retention_seconds: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICSHARD_LISTEN", default_value = "0.0.0.0:9751")]
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

#[derive(Clone)]
struct HttpState {
    telemetry: Telemetry,
    ready: Arc<AtomicBool>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // kube's TLS uses rustls with ring; make it the process default before any client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let assignment = AssignmentConfig { load_factor_epsilon: args.load_factor_epsilon, ..AssignmentConfig::default() };
    if let Err(error) = assignment.validate() {
        tracing::error!("invalid --load-factor-epsilon: {error}");
        return ExitCode::FAILURE;
    }
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!("cannot build a Kubernetes client: {error}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = Telemetry::new();
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(address = %args.listen, "cannot listen: {error}");
            return ExitCode::FAILURE;
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(|State(state): State<HttpState>| async move {
            state.telemetry.encode().map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|State(state): State<HttpState>| async move {
            if state.ready.load(Ordering::Acquire) { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "caches not synced") }
        }))
        .with_state(HttpState { telemetry: telemetry.clone(), ready: ready.clone() });
    let server_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(async move { server_shutdown.cancelled().await }).await {
            tracing::error!("HTTP server failed: {error}");
        }
    });
    let signal_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match terminate.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {}
        }
        signal_shutdown.cancel();
    });
    let settings = OperatorSettings {
        namespace: args.namespace,
        identity: args.identity,
        collector_statefulset: args.collector_statefulset,
        assignment,
        handover_margin: std::time::Duration::from_millis(args.handover_margin_ms),
        output_entry_retention: std::time::Duration::from_secs(args.output_entry_retention_seconds),
    };
    controller::run(client, settings, telemetry, shutdown.clone(), || ready.store(true, Ordering::Release)).await;
    shutdown.cancel();
    ExitCode::SUCCESS
}
