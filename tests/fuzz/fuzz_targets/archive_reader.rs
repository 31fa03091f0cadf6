//! Fuzz target: see `airlift_fuzz::archive_reader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    airlift_fuzz::archive_reader(data);
});
