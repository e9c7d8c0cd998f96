#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtp::fuzzing::fuzz_twcc_feedback(data));
