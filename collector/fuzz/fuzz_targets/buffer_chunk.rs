//! Buffered chunks read back from Redis: a corrupt chunk must be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metricshard_collector::buffer::codec::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
});
