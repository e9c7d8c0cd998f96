#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtcdn::fuzzing::fuzz_opus_aac(data));
