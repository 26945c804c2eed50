//! Pushed Open-Falcon JSON (`/api/push`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use metricshard_collector::inputs::push::falcon::parse_falcon;

fuzz_target!(|data: &[u8]| {
    let _ = parse_falcon(data, 1_700_000_000_000);
});
