//! The metricshard collector: runs keyed gather tasks and delivers their samples to outputs.
//!
//! Layers, one direction of dependency: pure domain logic (`sample`, `schedule`, parsers,
//! encoders, `buffer::memory`) → adapters (HTTP scrape, sinks) → runtime wiring (`engine`,
//! `pipeline`, `runtime`, `local`) → the thin `main.rs`.

pub mod buffer;
pub mod cluster;
pub mod engine;
pub mod every_node_status;
pub mod fanout;
pub mod handover;
pub mod http;
pub mod inputs;
pub mod local;
pub mod output_status;
pub mod node_filter;
pub mod outputs;
pub mod pipeline;
pub mod relabel;
pub mod routing;
pub mod runtime;
pub mod sample;
pub mod schedule;
pub mod secret_watch;
pub mod secrets;
pub mod telemetry;

/// Builds the HTTP client every scrape and output uses. It first installs rustls' ring crypto
/// provider for the process (the one kube uses too), so TLS never depends on which providers
/// happen to be compiled in.
pub fn build_http_client() -> Result<reqwest::Client, reqwest::Error> {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!("metricshard/", env!("CARGO_PKG_VERSION"))).build()
}

/// Builds an HTTP client like [`build_http_client`] but with its own TLS settings (a scrape's
/// `tlsConfig`: private CAs, a client certificate, a server name to verify).
pub fn build_http_client_with_tls(tls: rustls::ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("metricshard/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls)
        .build()
}
