//! Any bytes, as processlist SQL (truncated, binary, huge): a fingerprint, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    let fp = session_reaper::fingerprint::fingerprint(&sql);
    // The result is a rewrite of the input: never longer than the input by more
    // than the markers the rewrites add.
    assert!(fp.len() <= sql.len() + 32 * (sql.matches('(').count() + 1));
});
