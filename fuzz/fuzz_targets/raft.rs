//! libFuzzer entry for [`caravan_fuzz::raft`]; see its invariant there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caravan_fuzz::raft(data));
