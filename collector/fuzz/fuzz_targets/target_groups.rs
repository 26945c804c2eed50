//! Discovery documents (file SD and HTTP SD) as JSON or YAML: the first byte picks the format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metricshard_collector::inputs::prometheus::discovery::target_group::{DocumentFormat, parse};

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else { return };
    let format = if selector % 2 == 0 { DocumentFormat::Json } else { DocumentFormat::Yaml };
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = parse(text, format);
    }
});
