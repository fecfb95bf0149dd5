#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| storage::fuzz::row_decode(data));
