#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickflow_fuzz::Target::PolygonRest.run(data));
