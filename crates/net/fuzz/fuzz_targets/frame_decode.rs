#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| net::fuzz_support::frame_decode(data));
