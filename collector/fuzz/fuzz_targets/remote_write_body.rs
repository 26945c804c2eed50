//! Remote-write request bodies: snappy block compression around a protobuf `WriteRequest`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metricshard_collector::outputs::remote_write::decode_body;

fuzz_target!(|data: &[u8]| {
    let _ = decode_body(data);
});
