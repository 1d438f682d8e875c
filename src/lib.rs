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
