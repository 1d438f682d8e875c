//! Any JSON as each cloud provider's session listing: sessions or an error naming
//! the field, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use session_reaper::providers::{alibaba, huawei, tencent};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = alibaba::parse_sessions(&doc);
    let _ = tencent::parse_sessions(&doc);
    let _ = huawei::parse_sessions(&doc);
});
