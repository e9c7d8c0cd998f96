#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtcdn::sdp::fuzzing::fuzz_offer_answer(data));
