//! Pushed Influx line protocol; the first byte picks the precision.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metricshard_collector::inputs::push::influx::parse_line_protocol;
use metricshard_collector::outputs::influx::line::Precision;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else { return };
    let precision = match selector % 4 {
        0 => Precision::Nanoseconds,
        1 => Precision::Microseconds,
        2 => Precision::Milliseconds,
        _ => Precision::Seconds,
    };
    let _ = parse_line_protocol(body, precision, 1_700_000_000_000);
});
