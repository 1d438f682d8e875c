//! Any text as a policy file, against a fixed config: a policy or errors, never a panic.
#![no_main]
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use session_reaper::config::{Config, config_from_str, policy_from_str};

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        config_from_str(
            "targets:\n  - name: orders-primary\n    provider: mysql\n    url: mysql://reaper@127.0.0.1:3306\n  - name: orders-replica\n    provider: mysql\n    url: mysql://reaper@127.0.0.1:3307\n",
            Path::new("/nonexistent/config.yaml"),
        )
        .expect("a valid config")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match policy_from_str(&text, Path::new("/nonexistent/policies/p.yaml"), config()) {
        Ok(p) => assert!(!p.name.is_empty()),
        Err(e) => assert!(!e.0.is_empty()),
    }
});
