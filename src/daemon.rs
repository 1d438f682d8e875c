//! The daemon: one runner per target on its own schedule, the HTTP endpoints, the
//! local admin socket, leases shared with other replicas, reloads, the systemd
//! watchdog and a clean shutdown. Everything comes in through [`start`], so tests
//! run a whole daemon in-process on a random port.

use std::borrow::Cow;
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

use crate::audit::{Audit, Event, Record, timestamp};
use crate::config::{self, Config, ConfigErrors, Target};
use crate::coordination::{self, LeaseStatus, Leases};
use crate::core::breaker::{Breaker, Transition};
use crate::core::plan::{self, RunOutcome, Verdict, Why};
use crate::core::policy::Policy;
use crate::core::session::Snapshot;
use crate::executor::{Executor, Memory, RefusedStatus, Seen, Tick};
use crate::metrics::Metrics;
use crate::providers::{Provider, Want};
use crate::schedule::Schedule;

/// What the HTTP endpoints and the admin socket read and act on.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub state: RwLock<State>,
    pub breakers: Mutex<HashMap<(String, String), Breaker>>,
    audit: Mutex<Option<Arc<Audit>>>,
    leases: Mutex<Option<(String, Arc<Leases>)>>,
    /// Last sign of life of each runner (and of the supervisor), for the watchdog.
    heartbeats: Mutex<HashMap<String, Instant>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    pub version: &'static str,
    pub config: String,
    pub config_loaded: bool,
    pub loaded_at: Option<String>,
    pub last_reload_error: Option<String>,
    pub audit: AuditStatus,
    pub coordination: Option<LeaseStatus>,
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
    /// Whether this replica owns the target (always, without coordination).
    pub owned: bool,
    pub ready: bool,
    pub last_snapshot_at: Option<String>,
    pub snapshot_ms: Option<u64>,
    pub sessions: Option<usize>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Sessions whose kill was refused, waiting to be tried again.
    pub refused: Vec<RefusedStatus>,
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
            audit: Mutex::new(None),
            leases: Mutex::new(None),
            heartbeats: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        self.state.write().ok().map(|mut s| f(&mut s))
    }

    /// The status, with the leases as they are now.
    pub fn snapshot(&self) -> State {
        let mut s = self.state.read().map(|s| s.clone()).unwrap_or_default();
        if let Some((server, leases)) = self.leases.lock().ok().and_then(|l| l.clone()) {
            let status = leases.status(&server);
            for (name, t) in s.targets.iter_mut() {
                t.owned = status.owned.contains(name);
            }
            s.coordination = Some(status);
        }
        s
    }

    /// Why the daemon is not ready, if it is not: the config, the audit log, the
    /// coordination connection, and every owned target's last snapshot (a standby
    /// replica that owns none is ready).
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
        if let Some(c) = &s.coordination
            && !c.connected
        {
            why.push(
                c.last_error
                    .clone()
                    .unwrap_or_else(|| format!("coordination server {} not connected", c.server)),
            );
        }
        for (name, t) in &s.targets {
            if t.owned && !t.ready {
                why.push(format!(
                    "target {name}: {}",
                    t.last_error.as_deref().unwrap_or("no snapshot yet")
                ));
            }
        }
        why
    }

    fn heartbeat(&self, who: &str) {
        if let Ok(mut h) = self.heartbeats.lock() {
            h.insert(who.to_owned(), Instant::now());
        }
    }

    fn forget(&self, who: &str) {
        if let Ok(mut h) = self.heartbeats.lock() {
            h.remove(who);
        }
    }

    /// Whether every loop showed life within `within`.
    fn all_alive(&self, within: Duration) -> bool {
        self.heartbeats
            .lock()
            .map(|h| h.values().all(|at| at.elapsed() < within))
            .unwrap_or(false)
    }

    /// Closes a policy's breaker on a target at an operator's request.
    pub fn reset_breaker(
        &self,
        target: &str,
        policy: &str,
    ) -> Result<Option<DateTime<Utc>>, String> {
        let s = self.snapshot();
        if !s.targets.contains_key(target) {
            let names: Vec<&String> = s.targets.keys().collect();
            return Err(format!(
                "no target `{target}`; targets: {}",
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let Some(p) = s.policies.iter().find(|p| p.name == policy) else {
            let names: Vec<&str> = s.policies.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "no policy `{policy}`; policies: {}",
                names.join(", ")
            ));
        };
        if !p.targets.iter().any(|t| t == target) {
            return Err(format!(
                "policy `{policy}` does not run on `{target}`; it runs on: {}",
                p.targets.join(", ")
            ));
        }
        let was = self
            .breakers
            .lock()
            .map_err(|_| "breaker state unavailable".to_owned())?
            .get_mut(&(target.to_owned(), policy.to_owned()))
            .and_then(|b| {
                let since = b.opened_at;
                b.reset();
                since
            });
        self.metrics
            .breaker_open
            .with_label_values(&[target, policy])
            .set(0);
        self.with_state(|st| {
            if let Some(p) = st.policies.iter_mut().find(|p| p.name == policy)
                && let Some(r) = p.runs.get_mut(target)
            {
                r.breaker_open_since = None;
                r.breaker_reason = None;
            }
        });
        match was {
            Some(since) => warn!(
                "breaker of policy {policy} on {target} closed by an operator (open since {})",
                timestamp(since)
            ),
            None => info!("breaker reset of policy {policy} on {target}: it was not open"),
        }
        Ok(was)
    }

    /// SIGUSR1: the audit log is opened again at its path (after logrotate).
    pub fn reopen_audit(&self) {
        if let Some(a) = self.audit.lock().ok().and_then(|a| a.clone()) {
            a.reopen();
            info!("audit log {} reopened", a.path().display());
        }
    }
}

/// Messages to a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload,
    ReopenAudit,
    Shutdown,
}

/// A running daemon.
pub struct Handle {
    pub addr: SocketAddr,
    pub admin_socket: PathBuf,
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
    #[error("cannot open the admin socket {path}: {source}")]
    Admin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The local admin socket (breaker resets) of a config's daemon.
pub fn admin_socket_path(config: &Config) -> PathBuf {
    config.state_dir.join("admin.sock")
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
    let admin_path = admin_socket_path(&config);
    let admin = crate::http::bind_admin(&admin_path).map_err(|source| StartError::Admin {
        path: admin_path.clone(),
        source,
    })?;
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared::new(metrics.clone(), path));
    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let http = tokio::spawn(crate::http::serve(
        listener,
        shared.clone(),
        http_stop_rx.clone(),
    ));
    let admin_task = tokio::spawn(crate::http::serve_admin(
        admin,
        shared.clone(),
        http_stop_rx,
    ));
    info!(
        "listening on http://{addr} (/metrics /healthz /readyz /status); admin socket {}",
        admin_path.display()
    );
    let (control_tx, control_rx) = mpsc::channel(8);
    let path = path.to_owned();
    let sup_shared = shared.clone();
    let admin_file = admin_path.clone();
    let join = tokio::spawn(async move {
        supervise(path, config, sup_shared, control_rx).await;
        let _ = http_stop_tx.send(true);
        let _ = http.await;
        let _ = admin_task.await;
        let _ = std::fs::remove_file(&admin_file);
    });
    Ok(Handle {
        addr,
        admin_socket: admin_path,
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
    let watchdog = sd_notify::watchdog_enabled().map(|d| {
        let shared = shared.clone();
        tokio::spawn(watchdog(shared, d))
    });
    loop {
        shared.heartbeat("supervisor");
        let cmd = tokio::select! {
            cmd = control.recv() => cmd,
            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
        };
        match cmd {
            None | Some(Control::Shutdown) => break,
            Some(Control::ReopenAudit) => shared.reopen_audit(),
            Some(Control::Reload) => {
                notify(&[sd_notify::NotifyState::Reloading, monotonic_usec()]);
                match config::load(&path) {
                    Ok(new) => {
                        for w in &new.warnings {
                            warn!("{w}");
                        }
                        generation.stop(&shared).await;
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
                        shared.metrics.config_last_reload_successful.set(0);
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
    if let Some(w) = watchdog {
        w.abort();
    }
    generation.stop(&shared).await;
    info!("stopped");
}

/// Pings systemd's watchdog only while every loop shows life: a hung runner gets
/// the daemon restarted.
async fn watchdog(shared: Arc<Shared>, interval: Duration) {
    loop {
        tokio::time::sleep(interval / 2).await;
        if shared.all_alive(interval) {
            notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            warn!("a scheduler loop is stuck: not pinging the systemd watchdog");
        }
    }
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
    coordination: Option<JoinHandle<()>>,
    targets: usize,
    policies: usize,
    runner_names: Vec<String>,
}

impl Generation {
    fn start(config: Config, shared: &Arc<Shared>) -> Generation {
        // One writer per audit file, across reloads.
        let audit = {
            let mut slot = shared.audit.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(a) if a.path() == config.audit_path() => a.clone(),
                _ => {
                    let a = Arc::new(Audit::new(&config.audit_path(), config.audit));
                    *slot = Some(a.clone());
                    a
                }
            }
        };
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
        // Intents a crash left without an outcome, to reconcile per target.
        let mut pending: HashMap<String, Vec<Record>> = HashMap::new();
        for r in audit.pending_intents() {
            pending.entry(r.target.to_string()).or_default().push(r);
        }
        let executor = Arc::new(Executor::new(audit.clone(), shared.metrics.clone()));
        let config = Arc::new(config);
        let (stop, stop_rx) = watch::channel(false);
        let leases = config.coordination.as_ref().map(|c| {
            let leases = Arc::new(Leases::new(c.lease));
            if let Ok(mut slot) = shared.leases.lock() {
                *slot = Some((c.url.clone(), leases.clone()));
            }
            (c.clone(), leases)
        });
        shared.metrics.declare(
            &config,
            leases.is_some(),
            Utc::now().timestamp_millis() as f64 / 1000.0,
        );
        if leases.is_none()
            && let Ok(mut slot) = shared.leases.lock()
        {
            *slot = None;
        }
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
                            owned: leases.is_none(),
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
        let coordination = leases.as_ref().map(|(c, l)| {
            let names = config.targets.iter().map(|t| t.name.clone()).collect();
            tokio::spawn(coordination::run(
                c.clone(),
                names,
                l.clone(),
                shared.metrics.clone(),
                stop_rx.clone(),
            ))
        });
        // Intents of targets that are no longer configured cannot be checked.
        let known: HashSet<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
        let orphans: Vec<Record> = pending
            .iter()
            .filter(|(t, _)| !known.contains(t.as_str()))
            .flat_map(|(_, r)| r.iter().cloned())
            .collect();
        if !orphans.is_empty() {
            let records: Vec<Record> = orphans
                .into_iter()
                .map(|i| {
                    reconciled(
                        i,
                        "unknown-after-crash",
                        "the target is no longer configured: its state cannot be checked",
                    )
                })
                .collect();
            if let Err(e) = audit.append(&records, true) {
                error!("cannot reconcile interrupted kills: {e}");
            }
        }
        let mut runners = Vec::new();
        let mut runner_names = Vec::new();
        for target in &config.targets {
            let runner = Runner {
                config: config.clone(),
                target: target.clone(),
                provider: target.factory.build(&target.name, shared.metrics.clone()),
                shared: shared.clone(),
                executor: executor.clone(),
                leases: leases.as_ref().map(|(_, l)| l.clone()),
                pending: pending.remove(&target.name).unwrap_or_default(),
                memory: Memory::new(),
                spared: Seen::new(),
                last_logged_error: None,
                last_blocked: None,
            };
            let name = format!("runner/{}", target.name);
            shared.heartbeat(&name);
            runner_names.push(name);
            runners.push(tokio::spawn(runner.run(stop_rx.clone())));
        }
        Generation {
            stop,
            runners,
            coordination,
            targets: config.targets.len(),
            policies: config.policies.len(),
            runner_names,
        }
    }

    async fn stop(&mut self, shared: &Shared) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.runners.drain(..));
        if tokio::time::timeout(DRAIN, all).await.is_err() {
            warn!("in-flight runs did not finish within {}s", DRAIN.as_secs());
        }
        if let Some(c) = self.coordination.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
        for n in self.runner_names.drain(..) {
            shared.forget(&n);
        }
    }
}

/// The outcome closing an intent a crash interrupted.
fn reconciled(intent: Record, result: &'static str, reason: &str) -> Record {
    Record {
        ts: timestamp(Utc::now()).into(),
        event: Event::Outcome,
        result: Some(Cow::Borrowed(result)),
        reason: reason.to_owned(),
        error: None,
        ..intent
    }
}

/// One target: its provider, its policies' schedules, its memory of what it reported.
struct Runner {
    config: Arc<Config>,
    target: Target,
    provider: Arc<dyn Provider>,
    shared: Arc<Shared>,
    executor: Arc<Executor>,
    leases: Option<Arc<Leases>>,
    /// Intents of this target a crash left open, reconciled on the first snapshot.
    pending: Vec<Record>,
    /// What the executor remembers of this target between ticks.
    memory: Memory,
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

/// The longest a runner sleeps without a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

impl Runner {
    fn owns(&self) -> bool {
        self.leases
            .as_ref()
            .is_none_or(|l| l.may_act(&self.target.name))
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let config = self.config.clone();
        let policies: Vec<&Policy> = config.policies_for(&self.target.name);
        let name = format!("runner/{}", self.target.name);
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
        let mut idle_at = Instant::now();
        loop {
            self.shared.heartbeat(&name);
            if *stop.borrow() {
                break;
            }
            let next = due
                .iter()
                .map(|d| d.at)
                .min()
                .unwrap_or(idle_at)
                .min(Instant::now() + HEARTBEAT);
            // A tick already due runs now: a timer rounds its deadline up to the
            // next millisecond, which the first tick of a storm would wait out.
            if next > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop.changed() => break,
                }
            }
            self.shared.heartbeat(&name);
            let now = Instant::now();
            if policies.is_empty() {
                if now >= idle_at {
                    idle_at = now + idle_check;
                    if self.owns() {
                        self.tick(&[]).await;
                    }
                }
                continue;
            }
            let slack = Duration::from_millis(1);
            let due_now: Vec<usize> = (0..policies.len())
                .filter(|&i| due[i].at <= now + slack)
                .collect();
            if due_now.is_empty() {
                continue;
            }
            if self.owns() {
                let running: Vec<&Policy> = due_now.iter().map(|&i| policies[i]).collect();
                self.tick(&running).await;
            } else if !self.pending.is_empty() {
                // Reconciling needs a read, not the lease.
                self.tick(&[]).await;
            }
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

    /// Intents left open by a crash: the session still there (the kill may or may
    /// not have been sent) or gone.
    async fn reconcile(&mut self, snapshot: &Snapshot) {
        if self.pending.is_empty() || snapshot.partial.is_some() {
            return;
        }
        let records: Vec<Record> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|intent| {
                let alive = snapshot.sessions.iter().any(|s| {
                    s.id == intent.session_id && s.user == intent.user && s.host == intent.host
                });
                if alive {
                    reconciled(
                        intent,
                        "unknown-after-crash",
                        "a crash interrupted this kill; the session is still there",
                    )
                } else {
                    reconciled(
                        intent,
                        "gone",
                        "a crash interrupted this kill; the session is gone",
                    )
                }
            })
            .collect();
        for r in &records {
            self.shared
                .metrics
                .kills_total
                .with_label_values(&[
                    &*r.target,
                    &*r.policy,
                    &*r.action,
                    r.result.as_deref().unwrap_or(""),
                ])
                .inc();
        }
        let n = records.len();
        let audit = self.executor.audit().clone();
        match tokio::task::spawn_blocking(move || audit.append(&records, true)).await {
            Ok(Ok(())) => info!(
                "target {}: reconciled {n} kill(s) a crash interrupted",
                self.target.name
            ),
            Ok(Err(e)) => error!(
                "target {}: cannot record the reconciliation: {e}",
                self.target.name
            ),
            Err(e) => error!("target {}: reconciliation failed: {e}", self.target.name),
        }
    }

    /// One snapshot, shared by every policy due now.
    async fn tick(&mut self, policies: &[&Policy]) {
        let target = self.target.name.clone();
        let metrics = self.shared.metrics.clone();
        let want = if self.pending.is_empty() {
            Want::for_policies(policies)
        } else {
            Want::everything()
        };
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
        self.reconcile(&snapshot).await;
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
        let leases = self.leases.clone();
        let lease_target = target.clone();
        let may_kill = move || leases.as_ref().is_none_or(|l| l.may_act(&lease_target));
        let tick = Tick {
            target: &target,
            provider: self.provider.as_ref(),
            policies,
            snapshot: &snapshot,
            plan: &plan,
            protected: &protected,
            may_kill: &may_kill,
        };
        let report = self.executor.execute(&tick, &mut self.memory).await;
        let refused = self.memory.refusals.status(Utc::now());
        self.shared.with_state(|s| {
            s.targets.entry(target.clone()).or_default().refused = refused;
            match &report.audit_error {
                Some(e) => {
                    s.audit.writable = false;
                    s.audit.error = Some(e.clone());
                }
                None if !s.audit.writable && self.executor.audit().check().is_ok() => {
                    s.audit.writable = true;
                    s.audit.error = None;
                }
                None => {}
            }
        });

        // Spared sessions, each counted once while it stays spared. The count
        // has no policy label: a session spared for a reason is counted once
        // whichever of the policies that match it claims it in a tick.
        let mut spared_now: Vec<HashSet<(u64, &'static str)>> =
            vec![HashSet::new(); policies.len()];
        for (i, d) in plan.decisions.iter().enumerate() {
            let (Verdict::Spared, Some(pi), Why::Spared(spare)) =
                (d.verdict, d.policy_index(), &d.why)
            else {
                continue;
            };
            if let Some(reason) = spare.metric_reason() {
                let key = (snapshot.sessions[i].id, reason);
                if !self.spared.contains_any(&key) {
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
