//! Fuzz target: see `airlift_fuzz::lock`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlift_fuzz::lock(data);
});
