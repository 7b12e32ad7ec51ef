//! libFuzzer entry for [`caravan_fuzz::config_json`]; see its invariant there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caravan_fuzz::config_json(data));
