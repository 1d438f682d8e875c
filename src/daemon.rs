//! The daemon: one runner per target on its own schedule, the HTTP endpoints,
//! reloads and a clean shutdown. Everything comes in through [`start`], so tests
//! run a whole daemon in-process on a random port.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::audit::{Audit, timestamp};
use crate::config::{self, Config, ConfigErrors, Target};
use crate::core::breaker::{Breaker, Transition};
use crate::core::plan::{self, RunOutcome, Verdict, Why};
use crate::core::policy::Policy;
use crate::executor::{Executor, Reported, Seen, Tick};
use crate::metrics::Metrics;
use crate::providers::{Provider, Want};
use crate::schedule::Schedule;

/// What the HTTP endpoints read.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub state: RwLock<State>,
    pub breakers: Mutex<HashMap<(String, String), Breaker>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    pub version: &'static str,
    pub config: String,
    pub config_loaded: bool,
    pub loaded_at: Option<String>,
    pub last_reload_error: Option<String>,
    pub audit: AuditStatus,
    pub targets: BTreeMap<String, TargetStatus>,
    pub policies: Vec<PolicyStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditStatus {
    pub path: String,
    pub writable: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetStatus {
    pub provider: String,
    pub ready: bool,
    pub last_snapshot_at: Option<String>,
    pub snapshot_ms: Option<u64>,
    pub sessions: Option<usize>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyStatus {
    pub name: String,
    pub file: String,
    pub mode: &'static str,
    pub action: &'static str,
    pub schedule: String,
    pub targets: Vec<String>,
    pub runs: BTreeMap<String, RunStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunStatus {
    pub last_run_at: Option<String>,
    pub outcome: String,
    pub matched: usize,
    pub victims: usize,
    pub killed: usize,
    pub would_kill: usize,
    pub skipped_ticks: u64,
    pub breaker_open_since: Option<String>,
    pub breaker_reason: Option<String>,
}

impl Shared {
    fn new(metrics: Arc<Metrics>, config_path: &Path) -> Shared {
        Shared {
            metrics,
            state: RwLock::new(State {
                version: env!("CARGO_PKG_VERSION"),
                config: config_path.display().to_string(),
                ..State::default()
            }),
            breakers: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        self.state.write().ok().map(|mut s| f(&mut s))
    }

    pub fn snapshot(&self) -> State {
        self.state.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Why the daemon is not ready, if it is not: the config, the audit log, and
    /// every target's last snapshot.
    pub fn not_ready(&self) -> Vec<String> {
        let s = self.snapshot();
        let mut why = Vec::new();
        if !s.config_loaded {
            why.push("no configuration loaded".to_owned());
        }
        if !s.audit.writable {
            why.push(format!(
                "audit log {} not writable: {}",
                s.audit.path,
                s.audit.error.as_deref().unwrap_or("not checked yet")
            ));
        }
        for (name, t) in &s.targets {
            if !t.ready {
                why.push(format!(
                    "target {name}: {}",
                    t.last_error.as_deref().unwrap_or("no snapshot yet")
                ));
            }
        }
        why
    }
}

/// Messages to a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload,
    Shutdown,
}

/// A running daemon.
pub struct Handle {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    control: mpsc::Sender<Control>,
    join: JoinHandle<()>,
}

impl Handle {
    pub fn control(&self) -> mpsc::Sender<Control> {
        self.control.clone()
    }

    pub async fn reload(&self) {
        let _ = self.control.send(Control::Reload).await;
    }

    /// Stops scheduling, lets in-flight runs finish and waits for them.
    pub async fn shutdown(self) {
        let _ = self.control.send(Control::Shutdown).await;
        let _ = self.join.await;
    }

    /// Waits until the daemon stops by itself (after a `Control::Shutdown`).
    pub async fn wait(self) {
        let _ = self.join.await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the config at `path` and starts the daemon. `listen` overrides the
/// config's address (tests pass `127.0.0.1:0`).
pub async fn start(path: &Path, listen: Option<SocketAddr>) -> Result<Handle, StartError> {
    let config = config::load(path)?;
    for w in &config.warnings {
        warn!("{w}");
    }
    let addr = listen.unwrap_or(config.listen);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared::new(metrics.clone(), path));
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let http = tokio::spawn(crate::http::serve(listener, shared.clone(), http_stop_rx));
    info!("listening on http://{addr} (/metrics /healthz /readyz /status)");
    let (control_tx, control_rx) = mpsc::channel(8);
    let path = path.to_owned();
    let sup_shared = shared.clone();
    let join = tokio::spawn(async move {
        supervise(path, config, sup_shared, control_rx).await;
        let _ = http_stop_tx.send(true);
        let _ = http.await;
    });
    Ok(Handle {
        addr,
        shared,
        control: control_tx,
        join,
    })
}

/// How long a shutdown or reload waits for in-flight runs.
const DRAIN: Duration = Duration::from_secs(30);

async fn supervise(
    path: PathBuf,
    config: Config,
    shared: Arc<Shared>,
    mut control: mpsc::Receiver<Control>,
) {
    let mut generation = Generation::start(config, &shared);
    notify(&[sd_notify::NotifyState::Ready]);
    info!(
        "started: {} targets, {} policies",
        generation.targets, generation.policies
    );
    while let Some(cmd) = control.recv().await {
        match cmd {
            Control::Shutdown => break,
            Control::Reload => {
                notify(&[sd_notify::NotifyState::Reloading, monotonic_usec()]);
                match config::load(&path) {
                    Ok(new) => {
                        for w in &new.warnings {
                            warn!("{w}");
                        }
                        generation.stop().await;
                        generation = Generation::start(new, &shared);
                        shared
                            .metrics
                            .config_reloads_total
                            .with_label_values(&["success"])
                            .inc();
                        shared.with_state(|s| s.last_reload_error = None);
                        info!(
                            "configuration reloaded: {} targets, {} policies",
                            generation.targets, generation.policies
                        );
                    }
                    Err(e) => {
                        shared
                            .metrics
                            .config_reloads_total
                            .with_label_values(&["error"])
                            .inc();
                        let text = e.to_string();
                        error!("reload failed; the running configuration stays:\n{text}");
                        shared.with_state(|s| s.last_reload_error = Some(text));
                    }
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    info!("stopping: waiting for in-flight runs");
    generation.stop().await;
    info!("stopped");
}

fn monotonic_usec() -> sd_notify::NotifyState<'static> {
    sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Ready)
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("cannot notify systemd: {e}");
    }
}

/// The runners of one loaded configuration.
struct Generation {
    stop: watch::Sender<bool>,
    runners: Vec<JoinHandle<()>>,
    targets: usize,
    policies: usize,
}

impl Generation {
    fn start(config: Config, shared: &Arc<Shared>) -> Generation {
        let audit = Arc::new(Audit::new(&config.audit_path()));
        let audit_status = match audit.check() {
            Ok(()) => AuditStatus {
                path: audit.path().display().to_string(),
                writable: true,
                error: None,
            },
            Err(e) => {
                error!("{e}: nothing will be killed until it can be written");
                AuditStatus {
                    path: audit.path().display().to_string(),
                    writable: false,
                    error: Some(e.source.to_string()),
                }
            }
        };
        shared
            .metrics
            .audit_writable
            .with_label_values(&[&audit_status.path])
            .set(i64::from(audit_status.writable));
        let executor = Arc::new(Executor::new(audit, shared.metrics.clone()));
        let config = Arc::new(config);
        shared.with_state(|s| {
            s.config_loaded = true;
            s.loaded_at = Some(timestamp(Utc::now()));
            s.audit = audit_status;
            s.targets = config
                .targets
                .iter()
                .map(|t| {
                    let old = s.targets.get(&t.name).cloned().unwrap_or_default();
                    (
                        t.name.clone(),
                        TargetStatus {
                            provider: t.provider.to_owned(),
                            ..old
                        },
                    )
                })
                .collect();
            s.policies = config
                .policies
                .iter()
                .map(|p| PolicyStatus {
                    name: p.name.clone(),
                    file: p.origin.file.display().to_string(),
                    mode: p.mode.as_str(),
                    action: p.action.as_str(),
                    schedule: p.schedule.to_string(),
                    targets: config
                        .targets
                        .iter()
                        .filter(|t| p.applies_to(&t.name))
                        .map(|t| t.name.clone())
                        .collect(),
                    runs: BTreeMap::new(),
                })
                .collect();
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut runners = Vec::new();
        for target in &config.targets {
            let runner = Runner {
                config: config.clone(),
                target: target.clone(),
                provider: target.factory.build(&target.name, shared.metrics.clone()),
                shared: shared.clone(),
                executor: executor.clone(),
                reported: Reported::new(),
                spared: Seen::new(),
                last_logged_error: None,
                last_blocked: None,
            };
            runners.push(tokio::spawn(runner.run(stop_rx.clone())));
        }
        Generation {
            stop,
            runners,
            targets: config.targets.len(),
            policies: config.policies.len(),
        }
    }

    async fn stop(&mut self) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.runners.drain(..));
        if tokio::time::timeout(DRAIN, all).await.is_err() {
            warn!("in-flight runs did not finish within {}s", DRAIN.as_secs());
        }
    }
}

/// One target: its provider, its policies' schedules, its memory of what it reported.
struct Runner {
    config: Arc<Config>,
    target: Target,
    provider: Arc<dyn Provider>,
    shared: Arc<Shared>,
    executor: Arc<Executor>,
    reported: Reported,
    spared: Seen<(u64, &'static str)>,
    last_logged_error: Option<String>,
    last_blocked: Option<String>,
}

/// When a policy is next due on this target.
struct Due {
    at: Instant,
    /// The wall-clock time of `at`, for cron schedules.
    wall: DateTime<Utc>,
}

impl Runner {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let config = self.config.clone();
        let policies: Vec<&Policy> = config.policies_for(&self.target.name);
        if policies.is_empty() {
            info!(
                "target {}: no policy applies; it is only watched",
                self.target.name
            );
        }
        // The first tick of every policy runs at once.
        let now = Instant::now();
        let mut due: Vec<Due> = policies
            .iter()
            .map(|_| Due {
                at: now,
                wall: Utc::now(),
            })
            .collect();
        let idle_check = Duration::from_secs(10);
        loop {
            if *stop.borrow() {
                break;
            }
            let next = due
                .iter()
                .map(|d| d.at)
                .min()
                .unwrap_or_else(|| Instant::now() + idle_check);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => break,
            }
            if policies.is_empty() {
                self.tick(&[]).await;
                continue;
            }
            let now = Instant::now();
            let slack = Duration::from_millis(1);
            let due_now: Vec<usize> = (0..policies.len())
                .filter(|&i| due[i].at <= now + slack)
                .collect();
            if due_now.is_empty() {
                continue;
            }
            let running: Vec<&Policy> = due_now.iter().map(|&i| policies[i]).collect();
            self.tick(&running).await;
            let after = Instant::now();
            let wall_after = Utc::now();
            for &i in &due_now {
                let skipped = advance(&policies[i].schedule, &mut due[i], after, wall_after);
                if skipped > 0 {
                    self.shared
                        .metrics
                        .evaluations_total
                        .with_label_values(&[
                            &policies[i].name,
                            &self.target.name,
                            "skipped_overrun",
                        ])
                        .inc_by(skipped);
                    self.shared.with_state(|s| {
                        if let Some(p) = s.policies.iter_mut().find(|p| p.name == policies[i].name)
                        {
                            p.runs
                                .entry(self.target.name.clone())
                                .or_default()
                                .skipped_ticks += skipped;
                        }
                    });
                }
            }
        }
    }

    /// One snapshot, shared by every policy due now.
    async fn tick(&mut self, policies: &[&Policy]) {
        let target = self.target.name.clone();
        let metrics = self.shared.metrics.clone();
        let want = Want::for_policies(policies);
        let started = std::time::Instant::now();
        let result = self.provider.snapshot(&want).await;
        let elapsed = started.elapsed();
        metrics
            .snapshot_duration_seconds
            .with_label_values(&[&target, self.target.provider])
            .observe(elapsed.as_secs_f64());
        let snapshot = match result {
            Ok(s) => s,
            Err(e) => {
                let text = e.to_string();
                if self.last_logged_error.as_deref() != Some(&text) {
                    warn!("target {target} not ready: {text}");
                    self.last_logged_error = Some(text.clone());
                }
                metrics.target_ready.with_label_values(&[&target]).set(0);
                for p in policies {
                    metrics
                        .evaluations_total
                        .with_label_values(&[&p.name, &target, "error"])
                        .inc();
                    self.record_run(p, "error", 0, 0, 0, 0, None);
                }
                self.shared.with_state(|s| {
                    let t = s.targets.entry(target.clone()).or_default();
                    t.ready = false;
                    t.last_error = Some(text);
                    t.last_error_at = Some(timestamp(Utc::now()));
                });
                return;
            }
        };
        if self.last_logged_error.take().is_some() {
            info!("target {target} is answering again");
        }
        // A partial answer cannot lead to kills: the target is not ready, and says why.
        let partial = snapshot
            .partial
            .as_ref()
            .map(|p| format!("partial snapshot: {p}"));
        metrics
            .target_ready
            .with_label_values(&[&target])
            .set(i64::from(partial.is_none()));
        metrics
            .sessions
            .with_label_values(&[&target])
            .set(snapshot.sessions.len() as i64);
        self.shared.with_state(|s| {
            let t = s.targets.entry(target.clone()).or_default();
            t.ready = partial.is_none();
            if let Some(p) = &partial {
                t.last_error = Some(p.clone());
                t.last_error_at = Some(timestamp(Utc::now()));
            }
            t.last_snapshot_at = Some(timestamp(snapshot.taken_at));
            t.snapshot_ms = Some(elapsed.as_millis() as u64);
            t.sessions = Some(snapshot.sessions.len());
        });
        if policies.is_empty() {
            return;
        }
        let protected = self.target.protected_for(&snapshot);
        let now = Utc::now();
        let mut plan = plan::plan(&snapshot, policies, &protected, now);
        if !self.target.factory.capabilities().kills {
            plan.downgrade_kills();
        }
        // Breakers, before anything is killed.
        let mut held = Vec::new();
        let runs = plan.runs.clone();
        for run in &runs {
            let policy = policies[run.policy];
            let key = (target.clone(), policy.name.clone());
            let transition = self
                .shared
                .breakers
                .lock()
                .map(|mut b| {
                    b.entry(key).or_default().observe(
                        &run.outcome,
                        policy.limits.breaker_cooldown,
                        now,
                    )
                })
                .unwrap_or(Transition::StillOpen { since: now });
            let gauge = metrics
                .breaker_open
                .with_label_values(&[&target, &policy.name]);
            match &transition {
                Transition::Opened(breach) => {
                    warn!(
                        "breaker OPEN for policy {} on {target}: {breach}; no kills until a run is under the limits after {}",
                        policy.name,
                        crate::core::policy::format_duration(policy.limits.breaker_cooldown)
                    );
                    gauge.set(1);
                }
                Transition::StillOpen { since } => {
                    gauge.set(1);
                    held.push((run.policy, *since));
                }
                Transition::Reclosed { was_open_since } => {
                    info!(
                        "breaker closed for policy {} on {target} (open since {})",
                        policy.name,
                        timestamp(*was_open_since)
                    );
                    gauge.set(0);
                }
                Transition::Closed => gauge.set(0),
            }
        }
        for (pi, since) in &held {
            plan.hold_for_breaker(*pi, *since);
        }
        let tick = Tick {
            target: &target,
            provider: self.provider.as_ref(),
            policies,
            snapshot: &snapshot,
            plan: &plan,
            protected: &protected,
        };
        let report = self.executor.execute(&tick, &mut self.reported).await;
        self.shared.with_state(|s| match &report.audit_error {
            Some(e) => {
                s.audit.writable = false;
                s.audit.error = Some(e.clone());
            }
            None if !s.audit.writable && report.killed + report.would_kill > 0 => {
                s.audit.writable = true;
                s.audit.error = None;
            }
            None => {}
        });

        // Spared sessions, each counted once while it stays spared.
        let mut spared_now: Vec<HashSet<(u64, &'static str)>> =
            vec![HashSet::new(); policies.len()];
        for (i, d) in plan.decisions.iter().enumerate() {
            let (Verdict::Spared, Some(pi), Why::Spared(spare)) = (d.verdict, d.policy, &d.why)
            else {
                continue;
            };
            if let Some(reason) = spare.metric_reason() {
                let key = (snapshot.sessions[i].id, reason);
                if !self.spared.contains(&policies[pi].name, &key) {
                    metrics
                        .spared_total
                        .with_label_values(&[&target, reason])
                        .inc();
                }
                spared_now[pi].insert(key);
            }
        }
        for (policy, seen) in policies.iter().zip(spared_now) {
            self.spared.replace(&policy.name, seen);
        }

        for run in &plan.runs {
            let policy = policies[run.policy];
            let held_since = held
                .iter()
                .find(|(pi, _)| *pi == run.policy)
                .map(|(_, s)| *s);
            let outcome = match (&run.outcome, held_since) {
                (RunOutcome::Ok, Some(_)) => "breaker_open",
                (o, _) => o.label(),
            };
            metrics
                .evaluations_total
                .with_label_values(&[&policy.name, &target, outcome])
                .inc();
            metrics
                .matched_sessions
                .with_label_values(&[&target, &policy.name])
                .set(run.matched as i64);
            if matches!(outcome, "ok" | "breaker_open") {
                metrics
                    .last_success_timestamp_seconds
                    .with_label_values(&[&target, &policy.name])
                    .set(now.timestamp_millis() as f64 / 1000.0);
            }
            let breaker = self
                .shared
                .breakers
                .lock()
                .ok()
                .and_then(|b| b.get(&(target.clone(), policy.name.clone())).cloned())
                .unwrap_or_default();
            self.record_run(
                policy,
                outcome,
                run.matched,
                run.victims.len(),
                report.killed_by[run.policy],
                report.would_kill_by[run.policy],
                Some(breaker),
            );
        }
        let blocked = plan.blocked.as_ref().map(ToString::to_string);
        if blocked != self.last_blocked {
            match &blocked {
                Some(b) => warn!("target {target}: no kills: {b}"),
                None => info!("target {target}: snapshots are usable again"),
            }
            self.last_blocked = blocked;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_run(
        &self,
        policy: &Policy,
        outcome: &str,
        matched: usize,
        victims: usize,
        killed: usize,
        would_kill: usize,
        breaker: Option<Breaker>,
    ) {
        let target = self.target.name.clone();
        self.shared.with_state(|s| {
            if let Some(p) = s.policies.iter_mut().find(|p| p.name == policy.name) {
                let r = p.runs.entry(target).or_default();
                r.last_run_at = Some(timestamp(Utc::now()));
                r.outcome = outcome.to_owned();
                r.matched = matched;
                r.victims = victims;
                r.killed += killed;
                r.would_kill += would_kill;
                if let Some(b) = breaker {
                    r.breaker_open_since = b.opened_at.map(timestamp);
                    r.breaker_reason = b.last_breach.map(|x| x.to_string());
                }
            }
        });
    }
}

/// Moves `due` past `now`; returns how many ticks were skipped because the run
/// overran them.
fn advance(schedule: &Schedule, due: &mut Due, now: Instant, wall_now: DateTime<Utc>) -> u64 {
    match schedule {
        Schedule::Every(interval) => {
            let mut next = due.at + *interval;
            let mut skipped = 0;
            if next <= now {
                let behind = now - next;
                let n = (behind.as_nanos() / interval.as_nanos().max(1)) as u64 + 1;
                skipped = n;
                next += *interval * n as u32;
            }
            due.at = next;
            due.wall = wall_now + chrono::Duration::from_std(next - now).unwrap_or_default();
            skipped
        }
        Schedule::Cron { .. } => {
            // Occurrences between the tick that ran and now were missed.
            let mut skipped = 0;
            let mut t = due.wall;
            let next = loop {
                match schedule.next_after(t) {
                    Some(n) if n <= wall_now && skipped < 10_000 => {
                        skipped += 1;
                        t = n;
                    }
                    Some(n) => break Some(n),
                    None => break None,
                }
            };
            match next {
                Some(n) => {
                    due.wall = n;
                    due.at = now + (n - wall_now).to_std().unwrap_or_default();
                }
                None => {
                    // A cron line with no future occurrence: never again.
                    due.wall = DateTime::<Utc>::MAX_UTC;
                    due.at = now + Duration::from_secs(86400 * 365);
                }
            }
            skipped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Zone;

    #[test]
    fn an_interval_tick_that_overruns_skips_the_missed_ticks_and_counts_them() {
        let every = Schedule::Every(Duration::from_millis(250));
        let t0 = Instant::now();
        let wall = Utc::now();
        let mut due = Due { at: t0, wall };
        // On time: the next tick is one interval later, nothing skipped.
        assert_eq!(
            advance(&every, &mut due, t0 + Duration::from_millis(10), wall),
            0
        );
        assert_eq!(due.at, t0 + Duration::from_millis(250));
        // The run took 600 ms: the ticks at 500 and 750 are skipped, next at 1000.
        let now = t0 + Duration::from_millis(850);
        assert_eq!(advance(&every, &mut due, now, wall), 2);
        assert_eq!(due.at, t0 + Duration::from_millis(1000));
    }

    #[test]
    fn a_cron_tick_that_overruns_skips_the_missed_occurrences() {
        let cron = Schedule::parse("*/10 * * * * *", Zone::Named(chrono_tz::UTC)).unwrap();
        let start = DateTime::parse_from_rfc3339("2026-11-25T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t0 = Instant::now();
        let mut due = Due {
            at: t0,
            wall: start,
        };
        // The run at 03:00:00 finished at 03:00:35: 10, 20 and 30 were missed.
        let skipped = advance(&cron, &mut due, t0, start + chrono::Duration::seconds(35));
        assert_eq!(skipped, 3);
        assert_eq!(due.wall, start + chrono::Duration::seconds(40));
        assert_eq!(due.at, t0 + Duration::from_secs(5));
    }
}
