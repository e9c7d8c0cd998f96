#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ice::fuzzing::fuzz_stun_username(data));
