//! libFuzzer entry for [`caravan_fuzz::rpc_methods`]; see its invariant there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caravan_fuzz::rpc_methods(data));
