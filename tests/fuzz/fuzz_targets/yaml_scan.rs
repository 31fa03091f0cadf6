//! Fuzz target: see `airlift_fuzz::yaml_scan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlift_fuzz::yaml_scan(data);
});
