//! `metricshard-collector`: runs gather tasks from a manifest directory (local mode) or, without
//! `--manifests`, from the example compiled into the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use metricshard_collector::http::{self, HttpState};
use metricshard_collector::local::{self, ManifestSource};
use metricshard_collector::runtime::Runtime;
use metricshard_collector::telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

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
    let source = match &args.manifests {
        Some(dir) => ManifestSource::directory(dir),
        None => ManifestSource::embedded("<embedded self-scrape example>", EMBEDDED_EXAMPLE),
    };
    let http_client = match reqwest::Client::builder().user_agent(concat!("metricshard/", env!("CARGO_PKG_VERSION"))).build() {
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
    local::run(source, &mut runtime, &telemetry, shutdown.clone(), || ready.store(true, Ordering::Release)).await;

    tracing::info!("shutting down: stopping tasks and flushing outputs");
    runtime.shutdown().await;
    shutdown.cancel();
    if let Ok(Err(error)) = server.await {
        tracing::error!("HTTP server failed: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
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
