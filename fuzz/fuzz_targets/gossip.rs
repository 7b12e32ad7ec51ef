//! libFuzzer entry for [`caravan_fuzz::gossip`]; see its invariant there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caravan_fuzz::gossip(data));
