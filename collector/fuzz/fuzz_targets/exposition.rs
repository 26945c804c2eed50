//! Scraped bodies: Prometheus text 0.0.4 and OpenMetrics 1.0. The first byte picks the format so
//! one corpus serves both. Any input may be refused; none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metricshard_collector::inputs::prometheus::parser::{ExpositionFormat, parse};

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else { return };
    let format = if selector % 2 == 0 { ExpositionFormat::PrometheusText } else { ExpositionFormat::OpenMetrics };
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = parse(text, format);
    }
});
