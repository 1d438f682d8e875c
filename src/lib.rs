//! session-reaper: kills the MySQL/MariaDB sessions that operators' policies name,
//! and never the ones it must not. ARCHITECTURE.md has the map.

pub mod allocator;
pub mod audit;
pub mod cli;
pub mod config;
pub mod coordination;
pub mod core;
pub mod daemon;
pub mod executor;
pub mod fingerprint;
pub mod http;
pub mod metrics;
pub mod providers;
pub mod schedule;
pub mod schema;
pub mod sign;

#[doc(hidden)]
pub fn trace(what: &str) {
    static T0: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    static ON: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("SR_TRACE").is_some());
    if *ON {
        eprintln!("TRACE {:8.2} {what}", T0.elapsed().as_secs_f64() * 1e3);
    }
}
