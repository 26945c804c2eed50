//! Pushed OpenTSDB `/api/put` bodies: one data point or an array of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metricshard_collector::inputs::push::opentsdb::parse_put;

fuzz_target!(|data: &[u8]| {
    let _ = parse_put(data);
});
