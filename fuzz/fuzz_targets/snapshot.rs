//! Any text as a snapshot file (ours or a vendor's saved response): a snapshot or
//! an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = session_reaper::providers::file::parse_snapshot(&text);
});
