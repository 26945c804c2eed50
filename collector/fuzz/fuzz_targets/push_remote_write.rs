//! Pushed remote-write requests as the receiver reads them: snappy block, then protobuf, with
//! the receiver's decoded-size limit (so a hostile length header is a finding only if it is not
//! refused before allocating).
#![no_main]

use libfuzzer_sys::fuzz_target;
use metricshard_collector::inputs::push::remote_write::parse_remote_write;

fuzz_target!(|data: &[u8]| {
    let _ = parse_remote_write(data, 1 << 20);
});
