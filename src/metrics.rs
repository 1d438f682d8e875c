//! The Prometheus metrics of DESIGN.md (prefix `session_reaper_`), in one registry
//! that outlives configuration reloads.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::config::Config;

pub struct Metrics {
    registry: Registry,
    pub sessions: IntGaugeVec,
    pub matched_sessions: IntGaugeVec,
    pub kills_total: IntCounterVec,
    pub would_kill_total: IntCounterVec,
    pub spared_total: IntCounterVec,
    pub evaluations_total: IntCounterVec,
    pub snapshot_duration_seconds: HistogramVec,
    pub detect_to_kill_seconds: HistogramVec,
    pub recheck_to_kill_seconds: HistogramVec,
    pub provider_requests_total: IntCounterVec,
    pub provider_request_duration_seconds: HistogramVec,
    pub provider_kill_results_total: IntCounterVec,
    pub breaker_open: IntGaugeVec,
    pub last_success_timestamp_seconds: GaugeVec,
    pub config_reloads_total: IntCounterVec,
    pub lease_held: IntGaugeVec,
    pub target_ready: IntGaugeVec,
    pub audit_writable: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub schedule_interval_seconds: GaugeVec,
    pub policy_loaded_timestamp_seconds: GaugeVec,
    pub config_last_reload_successful: IntGauge,
    /// The target and (target, policy) series of the running configuration, so
    /// that a reload can drop the gauges of what it removed.
    declared: Mutex<Declared>,
}

#[derive(Default)]
struct Declared {
    targets: HashSet<String>,
    pairs: HashSet<(String, String)>,
}

/// Every `result` label of `kills_total`.
pub const KILL_RESULTS: [&str; 7] = [
    "killed",
    "gone",
    "changed",
    "refused",
    "failed",
    "unknown",
    "unknown-after-crash",
];
/// Every `reason` label of `spared_total`.
pub const SPARED_REASONS: [&str; 6] = [
    "ignored_user",
    "protected_thread",
    "own_connection",
    "provider_account",
    "unreadable_user",
    "victims",
];
/// Every `outcome` label of `evaluations_total`.
pub const OUTCOMES: [&str; 6] = [
    "ok",
    "stale",
    "partial",
    "error",
    "breaker_open",
    "skipped_overrun",
];

const PREFIX: &str = "session_reaper";

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! register {
            ($metric:expr) => {{
                let m = $metric;
                // Names are fixed and distinct: registration cannot clash.
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric names are unique");
                m
            }};
        }
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let reaction = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        let window = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ];
        let m = Metrics {
            sessions: register!(IntGaugeVec::new(opts("sessions", "Sessions in the target's last snapshot."), &["target"]).expect("valid")),
            matched_sessions: register!(IntGaugeVec::new(
                opts("matched_sessions", "Sessions the policy matched in its last run on the target."),
                &["target", "policy"]
            ).expect("valid")),
            kills_total: register!(IntCounterVec::new(
                opts("kills_total", "Kills attempted, by result (killed, gone, changed, refused, failed, unknown, unknown-after-crash)."),
                &["target", "policy", "action", "result"]
            ).expect("valid")),
            would_kill_total: register!(IntCounterVec::new(
                opts("would_kill_total", "Sessions a dry-run policy (or a replayed target) would have killed, counted once each."),
                &["target", "policy"]
            ).expect("valid")),
            spared_total: register!(IntCounterVec::new(
                opts("spared_total", "Matched sessions that were not killed, by reason."),
                &["target", "reason"]
            ).expect("valid")),
            evaluations_total: register!(IntCounterVec::new(
                opts("evaluations_total", "Policy runs, by outcome (ok, stale, partial, error, breaker_open, skipped_overrun)."),
                &["policy", "target", "outcome"]
            ).expect("valid")),
            snapshot_duration_seconds: register!(HistogramVec::new(
                HistogramOpts::new("snapshot_duration_seconds", "Time to read a target's session list.").namespace(PREFIX).buckets(latency),
                &["target", "provider"]
            ).expect("valid")),
            detect_to_kill_seconds: register!(HistogramVec::new(
                HistogramOpts::new("detect_to_kill_seconds", "From a session starting to match (crossing min_time) to its kill.").namespace(PREFIX).buckets(reaction),
                &["target"]
            ).expect("valid")),
            recheck_to_kill_seconds: register!(HistogramVec::new(
                HistogramOpts::new("recheck_to_kill_seconds", "From the re-check read to the kill (sent, or for kills batched in one packet answered): the window a session could change in.").namespace(PREFIX).buckets(window),
                &["target"]
            ).expect("valid")),
            provider_requests_total: register!(IntCounterVec::new(
                opts("provider_requests_total", "Requests to providers, by operation and status."),
                &["provider", "operation", "status"]
            ).expect("valid")),
            provider_request_duration_seconds: register!(HistogramVec::new(
                HistogramOpts::new("provider_request_duration_seconds", "Latency of provider API calls, retries each counted.").namespace(PREFIX).buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["provider", "operation"]
            ).expect("valid")),
            provider_kill_results_total: register!(IntCounterVec::new(
                opts("provider_kill_results_total", "Per-session kill results as the provider reported them (e.g. SESSION_KILLED, SESSION_IGNORED_USER)."),
                &["provider", "reason"]
            ).expect("valid")),
            breaker_open: register!(IntGaugeVec::new(
                opts("breaker_open", "1 while the policy's breaker on the target is open: it kills nothing."),
                &["target", "policy"]
            ).expect("valid")),
            last_success_timestamp_seconds: register!(GaugeVec::new(
                opts("last_success_timestamp_seconds", "When the policy last ran to completion on the target (Unix time)."),
                &["target", "policy"]
            ).expect("valid")),
            config_reloads_total: register!(IntCounterVec::new(
                opts("config_reloads_total", "Configuration reloads, by result (success, error)."),
                &["result"]
            ).expect("valid")),
            lease_held: register!(IntGaugeVec::new(
                opts("lease_held", "1 while this replica owns the target."),
                &["target"]
            ).expect("valid")),
            target_ready: register!(IntGaugeVec::new(
                opts("target_ready", "1 when the target answered its last snapshot."),
                &["target"]
            ).expect("valid")),
            audit_writable: register!(IntGaugeVec::new(
                opts("audit_writable", "1 when the last write to the audit log succeeded; 0 means no kills."),
                &["path"]
            ).expect("valid")),
            build_info: register!(IntGaugeVec::new(
                opts("build_info", "Always 1; the version is in the label."),
                &["version"]
            ).expect("valid")),
            schedule_interval_seconds: register!(GaugeVec::new(
                opts("schedule_interval_seconds", "The policy's schedule interval on the target (for a cron line, the gap between its next two runs when loaded)."),
                &["target", "policy"]
            ).expect("valid")),
            policy_loaded_timestamp_seconds: register!(GaugeVec::new(
                opts("policy_loaded_timestamp_seconds", "When the configuration that runs the policy on the target was loaded (Unix time): the start of the wait for its first success."),
                &["target", "policy"]
            ).expect("valid")),
            config_last_reload_successful: register!(IntGauge::with_opts(
                opts("config_last_reload_successful", "0 after a reload failed (the previous configuration keeps running), 1 once a load succeeds.")
            ).expect("valid")),
            declared: Mutex::new(Declared::default()),
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.config_reloads_total.with_label_values(&["success"]);
        m.config_reloads_total.with_label_values(&["error"]);
        m
    }

    /// Creates the series of a configuration that is starting, at zero (so rates and
    /// ratios have a start, and dashboards show a target before its first event), sets
    /// the schedule gauges, and drops the gauges of targets and policies it no
    /// longer has. Counters of removed ones stay: they are history.
    pub fn declare(&self, config: &Config, coordinated: bool, loaded_at_unix: f64) {
        let mut targets = HashSet::new();
        let mut pairs = HashSet::new();
        for t in &config.targets {
            let target = t.name.as_str();
            targets.insert(t.name.clone());
            self.sessions.with_label_values(&[target]);
            self.target_ready.with_label_values(&[target]);
            if coordinated {
                self.lease_held.with_label_values(&[target]);
            }
            for reason in SPARED_REASONS {
                self.spared_total.with_label_values(&[target, reason]);
            }
            self.snapshot_duration_seconds
                .with_label_values(&[target, t.provider]);
            self.detect_to_kill_seconds.with_label_values(&[target]);
            self.recheck_to_kill_seconds.with_label_values(&[target]);
            for p in config.policies.iter().filter(|p| p.applies_to(target)) {
                let policy = p.name.as_str();
                pairs.insert((t.name.clone(), p.name.clone()));
                self.matched_sessions.with_label_values(&[target, policy]);
                self.breaker_open.with_label_values(&[target, policy]);
                self.would_kill_total.with_label_values(&[target, policy]);
                for result in KILL_RESULTS {
                    self.kills_total.with_label_values(&[
                        target,
                        policy,
                        p.action.as_str(),
                        result,
                    ]);
                }
                for outcome in OUTCOMES {
                    self.evaluations_total
                        .with_label_values(&[policy, target, outcome]);
                }
                let interval = p.schedule.interval().or_else(|| {
                    let now = chrono::Utc::now();
                    let first = p.schedule.next_after(now)?;
                    let second = p.schedule.next_after(first)?;
                    (second - first).to_std().ok()
                });
                self.schedule_interval_seconds
                    .with_label_values(&[target, policy])
                    .set(interval.map_or(f64::NAN, |d: Duration| d.as_secs_f64()));
                self.policy_loaded_timestamp_seconds
                    .with_label_values(&[target, policy])
                    .set(loaded_at_unix);
            }
        }
        self.config_last_reload_successful.set(1);
        let Ok(mut declared) = self.declared.lock() else {
            return;
        };
        for gone in declared.targets.difference(&targets) {
            let l = [gone.as_str()];
            let _ = self.sessions.remove_label_values(&l);
            let _ = self.target_ready.remove_label_values(&l);
            let _ = self.lease_held.remove_label_values(&l);
        }
        if !coordinated {
            for t in &targets {
                let _ = self.lease_held.remove_label_values(&[t.as_str()]);
            }
        }
        for (t, p) in declared.pairs.difference(&pairs) {
            let l = [t.as_str(), p.as_str()];
            let _ = self.matched_sessions.remove_label_values(&l);
            let _ = self.breaker_open.remove_label_values(&l);
            let _ = self.last_success_timestamp_seconds.remove_label_values(&l);
            let _ = self.schedule_interval_seconds.remove_label_values(&l);
            let _ = self.policy_loaded_timestamp_seconds.remove_label_values(&l);
        }
        *declared = Declared { targets, pairs };
    }

    pub fn provider_request(&self, provider: &str, operation: &str, status: &str) {
        self.provider_requests_total
            .with_label_values(&[provider, operation, status])
            .inc();
    }

    /// The Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
