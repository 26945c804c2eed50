//! The metricshard collector: runs keyed gather tasks and delivers their samples to outputs.
//!
//! Layers, one direction of dependency: pure domain logic (`sample`, `schedule`, parsers,
//! encoders, `buffer::memory`) → adapters (HTTP scrape, sinks) → runtime wiring (`engine`,
//! `pipeline`, `runtime`, `local`) → the thin `main.rs`.

pub mod buffer;
pub mod engine;
pub mod http;
pub mod inputs;
pub mod local;
pub mod outputs;
pub mod pipeline;
pub mod routing;
pub mod runtime;
pub mod sample;
pub mod schedule;
pub mod telemetry;
