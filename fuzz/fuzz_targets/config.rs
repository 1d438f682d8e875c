//! Any text as a config file: a config or errors with positions, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = session_reaper::config::config_from_str(&text, std::path::Path::new("/nonexistent/config.yaml")) {
        assert!(!e.0.is_empty());
        let _ = e.to_string();
    }
});
