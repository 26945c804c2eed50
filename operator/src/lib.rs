//! The metricshard operator: decides which collector runs each MetricInput, and sums up the
//! collectors' view of each output into its `Ready` condition.
//!
//! Layers, one direction of dependency: pure domain logic with no kube and no I/O
//! ([`assignment`], [`output_ready`]) → adapters (kube watches, server-side apply) → runtime wiring →
//! a thin `main.rs`. The pure layer is what makes the scheduling testable without a cluster: the
//! controller only gathers inputs, live collectors and the current labels, calls
//! [`assignment::assign`], and applies the difference.

pub mod assignment;
pub mod controller;
pub mod handover;
pub mod leader;
pub mod membership;
pub mod output_conditions;
pub mod output_ready;
pub mod plan;
pub mod telemetry;
pub mod written;
