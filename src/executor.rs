//! Carries out a plan: would-kills are audited once, kills go through the gates
//! (write-ahead intent, re-check, kill, outcome) and every step is counted.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::audit::{Audit, Event, Record, Subject, timestamp};
use crate::core::plan::{Plan, Verdict};
use crate::core::policy::Policy;
use crate::core::protected::Protected;
use crate::core::recheck::recheck;
use crate::core::session::{Identity, Session, Snapshot, Text};
use crate::fingerprint::Fingerprinter;
use crate::metrics::Metrics;
use crate::providers::{KillOutcome, KillRequest, KillResult, Needs, Provider, gate};

/// One tick's inputs.
pub struct Tick<'a> {
    pub target: &'a str,
    pub provider: &'a dyn Provider,
    pub policies: &'a [&'a Policy],
    pub snapshot: &'a Snapshot,
    pub plan: &'a Plan,
    pub protected: &'a Protected,
    /// Asked right before kills are sent: false when this replica lost its lease.
    pub may_kill: &'a (dyn Fn() -> bool + Send + Sync),
}

/// What a tick did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub killed: usize,
    pub not_killed: usize,
    pub would_kill: usize,
    /// Kills per policy index, and would-kills per policy index.
    pub killed_by: Vec<usize>,
    pub would_kill_by: Vec<usize>,
    /// Set when the audit log could not be written (and so nothing was killed).
    pub audit_error: Option<String>,
    /// Every kill's session id and result.
    pub outcomes: Vec<(u64, KillResult)>,
}

/// What was already reported on a target, per policy name, so that a session is
/// audited or counted once while it stays so, whichever policies a tick runs.
#[derive(Debug)]
pub struct Seen<K> {
    by_policy: HashMap<String, HashSet<K>>,
}

impl<K> Default for Seen<K> {
    fn default() -> Self {
        Seen {
            by_policy: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> Seen<K> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, policy: &str, key: &K) -> bool {
        self.by_policy.get(policy).is_some_and(|s| s.contains(key))
    }

    /// Whether any policy saw `key` on its last run.
    pub fn contains_any(&self, key: &K) -> bool {
        self.by_policy.values().any(|s| s.contains(key))
    }

    /// What `policy` sees now replaces what it saw on its previous run.
    pub fn replace(&mut self, policy: &str, now: HashSet<K>) {
        self.by_policy.insert(policy.to_owned(), now);
    }
}

/// Would-kills already audited: session id and statement (query id).
pub type Reported = Seen<(u64, Option<u64>)>;

/// What the executor remembers of one target between its ticks. A reload starts
/// afresh.
#[derive(Debug, Default)]
pub struct Memory {
    /// Would-kills already audited.
    pub reported: Reported,
    /// Sessions whose kill the provider refused, and when each is tried again.
    pub refusals: Refusals,
}

impl Memory {
    pub fn new() -> Self {
        Self::default()
    }
}

/// The wait before a refused session is tried again, after its first refusal;
/// each further refusal doubles it, up to `REFUSED_RETRY_MAX`.
pub const REFUSED_RETRY_FIRST: Duration = Duration::from_secs(1);
pub const REFUSED_RETRY_MAX: Duration = Duration::from_secs(300);

/// Sessions whose kill the provider refused: a grant the service's account lacks
/// (MySQL 1095 and 1227: `CONNECTION ADMIN`, or `SYSTEM_USER` for such an
/// account's sessions), an account the cloud service will not let it kill. That
/// holds for as long as the session lives, so such a session is not sent a kill
/// on every tick (each one an intent, an fsync, a `KILL`, an outcome and a
/// warning: at `every 250ms`, 345,600 of each a day per session): it is
/// tried again after 1 s, then after 2, 4, 8 s... up to 5 minutes, while it lives.
/// A session is the same one while its node, id and `Identity` are.
#[derive(Debug, Default)]
pub struct Refusals {
    by_session: FxHashMap<(Option<Text>, u64), Refused>,
}

/// A session whose kill was refused, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusedStatus {
    pub session_id: u64,
    /// The node the session lives on (cluster providers): one id may be
    /// refused on two nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub user: Option<String>,
    pub host: Option<String>,
    /// Refusals in a row.
    pub refusals: u32,
    /// When it may be sent a kill again (RFC 3339).
    pub next_attempt_at: String,
}

#[derive(Debug)]
struct Refused {
    identity: Identity,
    /// Refusals in a row.
    times: u32,
    /// Not sent a kill before this.
    retry_at: Instant,
}

fn key(s: &Session) -> (Option<Text>, u64) {
    (s.node.clone(), s.id)
}

impl Refusals {
    /// Sessions waiting to be tried again.
    pub fn len(&self) -> usize {
        self.by_session.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_session.is_empty()
    }

    /// How long until `s` may be sent a kill again, if it must wait.
    pub fn wait(&self, s: &Session, now: Instant) -> Option<Duration> {
        let r = self.by_session.get(&key(s))?;
        let left = r.retry_at.saturating_duration_since(now);
        (r.identity.is(s) && !left.is_zero()).then_some(left)
    }

    /// Records that the provider refused to kill `s`; returns the wait before
    /// it is tried again.
    pub fn refused(&mut self, s: &Session, now: Instant) -> Duration {
        let r = self.by_session.entry(key(s)).or_insert_with(|| Refused {
            identity: Identity::of(s),
            times: 0,
            retry_at: now,
        });
        // The id now belongs to another session: its refusals start again.
        if !r.identity.is(s) {
            r.identity = Identity::of(s);
            r.times = 0;
        }
        r.times = r.times.saturating_add(1);
        let wait = REFUSED_RETRY_FIRST
            .saturating_mul(1 << (r.times - 1).min(16))
            .min(REFUSED_RETRY_MAX);
        r.retry_at = now + wait;
        wait
    }

    /// Each session waiting, for `/status`, ascending by id (then node); `now`
    /// is the wall time of the instant the waits are measured from.
    pub fn status(&self, now: chrono::DateTime<Utc>) -> Vec<RefusedStatus> {
        let mono = Instant::now();
        let mut all: Vec<_> = self
            .by_session
            .iter()
            .map(|((node, id), r)| {
                let wait = r.retry_at.saturating_duration_since(mono);
                RefusedStatus {
                    session_id: *id,
                    node: node.as_ref().map(Text::to_string),
                    user: r.identity.user.as_ref().map(Text::to_string),
                    host: r.identity.host.as_ref().map(Text::to_string),
                    refusals: r.times,
                    next_attempt_at: timestamp(
                        now + chrono::Duration::from_std(wait).unwrap_or_default(),
                    ),
                }
            })
            .collect();
        all.sort_by(|a, b| (a.session_id, &a.node).cmp(&(b.session_id, &b.node)));
        all
    }

    /// Forgets `s` (it was killed, or it ended).
    pub fn forget(&mut self, s: &Session) {
        let key = key(s);
        if self.by_session.get(&key).is_some_and(|r| r.identity.is(s)) {
            self.by_session.remove(&key);
        }
    }

    /// Forgets the sessions a whole snapshot no longer lists: they ended (an
    /// incomplete snapshot says nothing of the ones it leaves out).
    pub fn forget_unlisted(&mut self, snapshot: &Snapshot) {
        if self.by_session.is_empty() || snapshot.partial.is_some() {
            return;
        }
        let mut listed = FxHashSet::default();
        for s in snapshot.sessions.iter() {
            let key = key(s);
            if self.by_session.get(&key).is_some_and(|r| r.identity.is(s)) {
                listed.insert(key);
            }
        }
        self.by_session.retain(|key, _| listed.contains(key));
    }
}

pub struct Executor {
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
}

static INTENT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Intent ids `PID-MILLIS-SEQ`: unique in a process by the sequence number, across
/// restarts by the pid and the time. `prefix` is `intent_id_prefix()`.
fn intent_id(prefix: &str) -> String {
    let seq = INTENT_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut buf = itoa::Buffer::new();
    let seq = buf.format(seq);
    let mut id = String::with_capacity(prefix.len() + seq.len());
    id.push_str(prefix);
    id.push_str(seq);
    id
}

fn intent_id_prefix() -> String {
    format!("{}-{}-", std::process::id(), Utc::now().timestamp_millis())
}

impl Executor {
    pub fn new(audit: Arc<Audit>, metrics: Arc<Metrics>) -> Executor {
        Executor { audit, metrics }
    }

    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    async fn append(&self, records: Vec<Record>, durable: bool) -> Result<(), String> {
        self.append_keep(records, durable).await.1
    }

    /// `append`, giving the records back (the intents become the outcomes).
    async fn append_keep(
        &self,
        records: Vec<Record>,
        durable: bool,
    ) -> (Vec<Record>, Result<(), String>) {
        if records.is_empty() {
            return (records, Ok(()));
        }
        let audit = self.audit.clone();
        let (records, result) = match tokio::task::spawn_blocking(move || {
            let result = audit.append(&records, durable);
            (records, result)
        })
        .await
        {
            Ok((records, r)) => (records, r.map_err(|e| e.to_string())),
            Err(e) => (Vec::new(), Err(format!("audit writer failed: {e}"))),
        };
        let writable = i64::from(result.is_ok());
        self.metrics
            .audit_writable
            .with_label_values(&[&self.audit.path().display().to_string()])
            .set(writable);
        (records, result)
    }

    /// Audits new would-kills and carries out the kills of `tick.plan`.
    /// `memory` is this target's: the would-kills already audited, the sessions
    /// whose kill was refused.
    pub async fn execute(&self, tick: &Tick<'_>, memory: &mut Memory) -> Report {
        let plan = tick.plan;
        let snapshot = tick.snapshot;
        let mut report = Report {
            killed_by: vec![0; tick.policies.len()],
            would_kill_by: vec![0; tick.policies.len()],
            ..Report::default()
        };
        let now = Utc::now();
        let ts: Arc<str> = timestamp(now).into();
        let names = Names::of(tick);
        let mut fp = Fingerprinter::default();
        let mut would = Vec::new();
        let mut current: Vec<HashSet<(u64, Option<u64>)>> =
            vec![HashSet::new(); tick.policies.len()];
        let mut kills: Vec<(usize, usize)> = Vec::new();
        for (i, d) in plan.decisions.iter().enumerate() {
            let Some(pi) = d.policy_index() else { continue };
            match d.verdict {
                Verdict::WouldKill => {
                    let s = &snapshot.sessions[i];
                    let policy = tick.policies[pi];
                    let key = (s.id, s.query_id);
                    current[pi].insert(key);
                    if memory.reported.contains(&policy.name, &key) {
                        continue;
                    }
                    let reason = plan.reason(i, snapshot, tick.policies);
                    info!(
                        target: "session_reaper::decision",
                        "would kill session {} ({}) on {} by {}: {}",
                        s.id,
                        describe(s),
                        tick.target,
                        policy.name,
                        reason
                    );
                    let subject = subject(&names, pi, policy, s, &mut fp);
                    would.push(Record::new(Event::WouldKill, &ts, &subject, reason));
                    self.metrics
                        .would_kill_total
                        .with_label_values(&[tick.target, &policy.name])
                        .inc();
                    report.would_kill += 1;
                    report.would_kill_by[pi] += 1;
                }
                Verdict::Kill | Verdict::KillQuery => kills.push((i, pi)),
                Verdict::Spared | Verdict::NoMatch => {}
            }
        }
        // A victim of a policy that another policy due in the same tick claimed
        // (a kill outranks a would-kill; of two would-kills the first policy's
        // wins) is still what that policy sees: what it reported of it before
        // stays reported, so that it is not reported again when it runs alone.
        for run in &plan.runs {
            let policy = tick.policies[run.policy];
            for &si in &run.victims {
                if plan.decisions[si].policy_index() == Some(run.policy) {
                    continue;
                }
                let s = &snapshot.sessions[si];
                let key = (s.id, s.query_id);
                if memory.reported.contains(&policy.name, &key) {
                    current[run.policy].insert(key);
                }
            }
        }
        for (policy, seen) in tick.policies.iter().zip(current) {
            memory.reported.replace(&policy.name, seen);
        }
        if let Err(e) = self.append(would, false).await {
            error!("{e}");
            report.audit_error = Some(e);
        }
        // A session the provider refused to kill waits before it is tried again.
        memory.refusals.forget_unlisted(snapshot);
        if !memory.refusals.is_empty() {
            let now = Instant::now();
            let planned = kills.len();
            kills.retain(|&(i, _)| memory.refusals.wait(&snapshot.sessions[i], now).is_none());
            if kills.len() < planned {
                debug!(
                    "{} sessions on {} wait to be tried again after a refused kill",
                    planned - kills.len(),
                    tick.target
                );
            }
        }
        if kills.is_empty() {
            return report;
        }

        // The policies' literal ignored users, for APIs that enforce them too.
        let ignored: Vec<Vec<String>> = tick
            .policies
            .iter()
            .map(|p| {
                p.ignored_users
                    .iter()
                    .filter_map(|g| g.literal().map(str::to_owned))
                    .collect()
            })
            .collect();
        let needs: Vec<Needs> = tick
            .policies
            .iter()
            .map(|p| Needs::of(p, snapshot.transactions))
            .collect();
        let requests: Vec<KillRequest> = kills
            .iter()
            .map(|&(i, pi)| KillRequest {
                session: &snapshot.sessions[i],
                action: tick.policies[pi].action,
                ignored_users: &ignored[pi],
                needs: needs[pi],
                tag: pi,
            })
            .collect();
        let policies = tick.policies;
        let protected = tick.protected;
        let own_ids = snapshot.own_connection_ids.as_slice();
        let transactions = snapshot.transactions;
        let check = move |req: &KillRequest, fresh: Option<&Session>| {
            recheck(
                req.session,
                fresh,
                req.action,
                Some(policies[req.tag]),
                protected,
                own_ids,
                transactions,
            )
        };
        // Write-ahead: every intent is on disk before any kill is sent. The provider
        // starts its re-check reads at once; its kills wait at the gate, which opens
        // once the intents are durable (and the snapshot still young enough, and the
        // target's lease still held).
        let (keeper, gate) = gate();
        let write = async {
            let mut intents = Vec::with_capacity(kills.len());
            let id_prefix = intent_id_prefix();
            for &(i, pi) in &kills {
                let s = &snapshot.sessions[i];
                let policy = tick.policies[pi];
                let reason = plan.reason(i, snapshot, tick.policies);
                let subject = subject(&names, pi, policy, s, &mut fp);
                let mut r = Record::new(Event::Intent, &ts, &subject, reason);
                r.intent_id = Some(intent_id(&id_prefix));
                intents.push(r);
            }
            let (intents, written) = self.append_keep(intents, true).await;
            let verdict = match written {
                Err(e) => Err(Held::Audit(e)),
                Ok(()) => may_send(tick).map_err(Held::NotSent),
            };
            match &verdict {
                Ok(()) => keeper.open(),
                Err(Held::Audit(e)) => keeper.close(format!("not sent: {e}")),
                Err(Held::NotSent(why)) => keeper.close(why.clone()),
            }
            (intents, verdict)
        };
        // The provider's future is polled first: its re-check reads are on their way
        // before the intents are built.
        let (outcomes, (intents, verdict)) =
            futures::future::join(tick.provider.kill_after(&requests, &check, &gate), write).await;
        let outcomes = match verdict {
            Ok(()) => outcomes,
            Err(Held::Audit(e)) => {
                error!("no kill on {}: {e}", tick.target);
                report.audit_error = Some(e);
                report.not_killed += kills.len();
                return report;
            }
            Err(Held::NotSent(why)) => requests
                .iter()
                .map(|_| KillOutcome::without_recheck(KillResult::Changed(why.clone())))
                .collect(),
        };
        let done = Utc::now();
        let done_ts: Arc<str> = timestamp(done).into();
        let mut run_metrics = RunMetrics::new(&self.metrics, tick.target);
        let mut records = Vec::with_capacity(outcomes.len());
        let mut quiet = 0;
        for ((intent, outcome), (req, &(_, pi))) in intents
            .into_iter()
            .zip(&outcomes)
            .zip(requests.iter().zip(&kills))
        {
            // A storm would flood the journal: past the first few, the kills of a
            // run are summed up in one line (each one is in the audit log).
            let log = records.len() < LOGGED_KILLS_PER_RUN
                || !matches!(outcome.result, KillResult::Killed | KillResult::Gone);
            quiet += usize::from(!log);
            let retry_in = match outcome.result {
                KillResult::Refused(_) => {
                    Some(memory.refusals.refused(req.session, Instant::now()))
                }
                KillResult::Killed | KillResult::Gone => {
                    memory.refusals.forget(req.session);
                    None
                }
                _ => None,
            };
            self.observe(
                tick,
                &mut run_metrics,
                pi,
                req,
                outcome,
                done,
                log,
                retry_in,
            );
            if matches!(outcome.result, KillResult::Killed) {
                report.killed += 1;
                report.killed_by[pi] += 1;
            } else {
                report.not_killed += 1;
            }
            report
                .outcomes
                .push((req.session.id, outcome.result.clone()));
            records.push(outcome_record(intent, outcome, &done_ts));
        }
        if quiet > 0 {
            info!(
                target: "session_reaper::decision",
                "and {quiet} more sessions killed or gone on {} in this run (each is in the audit log)",
                tick.target
            );
        }
        if let Err(e) = self.append(records, true).await {
            error!(
                "the outcomes of {} kills on {} are not in the audit log: {e}",
                outcomes.len(),
                tick.target
            );
            report.audit_error = Some(e);
        }
        report
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &self,
        tick: &Tick<'_>,
        run_metrics: &mut RunMetrics,
        pi: usize,
        req: &KillRequest,
        outcome: &KillOutcome,
        done: chrono::DateTime<Utc>,
        log: bool,
        retry_in: Option<Duration>,
    ) {
        let s = &req.session;
        let policy = tick.policies[pi];
        run_metrics.kill(&self.metrics, tick.target, policy, pi, req, &outcome.result);
        match &outcome.result {
            KillResult::Killed => {
                if log {
                    info!(
                        target: "session_reaper::decision",
                        "killed session {} ({}) on {} by {} ({})",
                        s.id,
                        describe(s),
                        tick.target,
                        policy.name,
                        req.action.as_str()
                    );
                }
                let crossed_ms = policy
                    .matcher
                    .min_time
                    .map(|min| s.time_ms.saturating_sub(min.as_millis() as u64))
                    .unwrap_or(0);
                let detected =
                    tick.snapshot.taken_at - chrono::Duration::milliseconds(crossed_ms as i64);
                let secs = (done - detected).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                run_metrics.detect_to_kill.observe(secs);
            }
            KillResult::Gone if log => {
                info!("session {} on {} ended before its kill", s.id, tick.target)
            }
            KillResult::Gone => {}
            KillResult::Changed(why) => {
                info!("session {} on {} not killed: {why}", s.id, tick.target)
            }
            KillResult::Refused(why) => warn!(
                "kill of session {} on {} by {policy}: refused: {why}; tried again in {} (the wait doubles with each refusal, up to {}); if `{policy}` should spare this account, add `{user}` to its ignored_users",
                s.id,
                tick.target,
                crate::core::policy::format_duration(retry_in.unwrap_or_default()),
                crate::core::policy::format_duration(REFUSED_RETRY_MAX),
                policy = policy.name,
                user = s.user.as_deref().unwrap_or_default(),
            ),
            other => warn!(
                "kill of session {} on {} by {}: {}: {}",
                s.id,
                tick.target,
                policy.name,
                other.label(),
                other.detail().unwrap_or("")
            ),
        }
        if let (Some(r), Some(k)) = (outcome.rechecked_at, outcome.sent_at) {
            run_metrics
                .recheck_to_kill
                .observe(k.saturating_duration_since(r).as_secs_f64());
        }
    }
}

/// The metrics a run's kills update, looked up once per run rather than once per
/// kill (each lookup hashes every label value and takes a lock).
struct RunMetrics {
    detect_to_kill: prometheus::Histogram,
    recheck_to_kill: prometheus::Histogram,
    /// `kills_total` by policy and result.
    kills: FxHashMap<(usize, &'static str), prometheus::IntCounter>,
}

impl RunMetrics {
    fn new(metrics: &Metrics, target: &str) -> RunMetrics {
        RunMetrics {
            detect_to_kill: metrics.detect_to_kill_seconds.with_label_values(&[target]),
            recheck_to_kill: metrics.recheck_to_kill_seconds.with_label_values(&[target]),
            kills: FxHashMap::default(),
        }
    }

    fn kill(
        &mut self,
        metrics: &Metrics,
        target: &str,
        policy: &Policy,
        pi: usize,
        req: &KillRequest,
        result: &KillResult,
    ) {
        let label = result.label();
        self.kills
            .entry((pi, label))
            .or_insert_with(|| {
                metrics.kills_total.with_label_values(&[
                    target,
                    &policy.name,
                    req.action.as_str(),
                    label,
                ])
            })
            .inc();
    }
}

/// Whether a run's kills may be sent now that its intents are durable: not when
/// the snapshot aged past the target's limit while they were written, nor when
/// this replica lost the target's lease. `Err` says why, for every outcome.
fn may_send(tick: &Tick<'_>) -> Result<(), String> {
    let age = Utc::now() - tick.snapshot.taken_at;
    if let Some(max) = tick.protected.max_snapshot_age
        && age.to_std().is_ok_and(|a| a > max)
    {
        return Err(format!(
            "not sent: the snapshot was {} old at kill time, more than max_snapshot_age {}",
            crate::core::policy::format_ms(age.num_milliseconds().max(0) as u64),
            crate::core::policy::format_duration(max)
        ));
    }
    if !(tick.may_kill)() {
        return Err("not sent: this replica no longer holds the target's lease".to_owned());
    }
    Ok(())
}

/// Why a run's kills were held at the gate.
enum Held {
    /// The intents could not be written: nothing is sent, no outcome is recorded.
    Audit(String),
    /// Not to be sent (stale snapshot, lease lost): each outcome says why.
    NotSent(String),
}

/// Kills of one run logged one by one; the rest are summed up in one line.
const LOGGED_KILLS_PER_RUN: usize = 20;

/// The outcome (or skip) record closing an intent, at `ts` (from `timestamp`).
pub fn outcome_record(intent: Record, outcome: &KillOutcome, ts: &Arc<str>) -> Record {
    let event = match outcome.result {
        KillResult::Gone | KillResult::Changed(_) => Event::Skip,
        _ => Event::Outcome,
    };
    Record {
        ts: ts.clone(),
        event,
        result: Some(Cow::Borrowed(outcome.result.label())),
        error: match &outcome.result {
            KillResult::Refused(e) | KillResult::Failed(e) | KillResult::Unknown(e) => {
                Some(e.clone())
            }
            _ => None,
        },
        reason: match &outcome.result {
            KillResult::Changed(why) => why.clone(),
            KillResult::Gone => "the session ended before the kill".to_owned(),
            _ => intent.reason,
        },
        recheck_to_kill_us: match (outcome.rechecked_at, outcome.sent_at) {
            (Some(r), Some(k)) => Some(k.saturating_duration_since(r).as_micros() as u64),
            _ => None,
        },
        ..intent
    }
}

/// The target's and the policies' names, shared by the records of a run.
struct Names {
    target: Arc<str>,
    policies: Vec<Arc<str>>,
}

impl Names {
    fn of(tick: &Tick<'_>) -> Names {
        Names {
            target: tick.target.into(),
            policies: tick
                .policies
                .iter()
                .map(|p| p.name.as_str().into())
                .collect(),
        }
    }
}

/// The record fields of session `s` matched by policy `pi`.
fn subject<'a>(
    names: &'a Names,
    pi: usize,
    policy: &Policy,
    s: &'a Session,
    fp: &mut Fingerprinter,
) -> Subject<'a> {
    Subject {
        target: &names.target,
        policy: &names.policies[pi],
        session: s,
        fingerprint: s.sql.as_deref().map(|sql| fp.fingerprint(sql).to_owned()),
        action: policy.action.as_str(),
        mode: policy.mode.as_str(),
    }
}

/// `app@10.0.0.7 db=shop Sleep 312.4s`.
pub fn describe(s: &Session) -> String {
    let mut out = format!(
        "{}@{}",
        s.user.as_deref().unwrap_or("?"),
        s.host.as_deref().unwrap_or("")
    );
    if let Some(db) = &s.db {
        out.push_str(&format!(" db={db}"));
    }
    out.push_str(&format!(
        " {} {}",
        s.command,
        crate::core::policy::format_ms(s.time_ms)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u64, user: &str, port: u16) -> Session {
        Session {
            id,
            user: Some(user.into()),
            host: Some("10.0.0.7".into()),
            port: Some(port),
            command: "Sleep".into(),
            ..Session::default()
        }
    }

    fn snapshot(sessions: Vec<Session>) -> Snapshot {
        Snapshot {
            format: Snapshot::FORMAT.to_owned(),
            target: "db".to_owned(),
            provider: "mysql".to_owned(),
            taken_at: Utc::now(),
            server: Default::default(),
            own_connection_ids: Vec::new(),
            transactions: false,
            partial: None,
            sessions: Arc::new(sessions),
        }
    }

    /// A refused session waits 1 s, then 2, 4 ... up to 5 minutes between
    /// attempts; the wait is over exactly when it says.
    #[test]
    fn a_refused_session_waits_longer_after_each_refusal_up_to_five_minutes() {
        let mut r = Refusals::default();
        let s = session(7, "dba", 40001);
        let t0 = Instant::now();
        assert_eq!(r.wait(&s, t0), None, "never refused: no wait");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            let wait = r.refused(&s, now);
            assert_eq!(r.wait(&s, now), Some(wait));
            assert_eq!(
                r.wait(&s, now + wait - Duration::from_millis(1)),
                Some(Duration::from_millis(1))
            );
            now += wait;
            assert_eq!(r.wait(&s, now), None, "tried again once the wait is over");
            waits.push(wait.as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(r.len(), 1);
        let status = r.status(Utc::now());
        assert_eq!(status.len(), 1);
        assert_eq!(
            (
                status[0].session_id,
                status[0].user.as_deref(),
                status[0].refusals
            ),
            (7, Some("dba"), 12)
        );
    }

    /// The wait belongs to one session: another with the same id (a reused id,
    /// another user or client port) or another id is sent its kill at once.
    #[test]
    fn a_refusal_holds_back_only_the_session_refused() {
        let mut r = Refusals::default();
        let refused = session(7, "dba", 40001);
        let now = Instant::now();
        r.refused(&refused, now);
        assert!(r.wait(&refused, now).is_some());
        for other in [
            session(7, "app", 40001),
            session(7, "dba", 40002),
            session(8, "dba", 40001),
            Session {
                node: Some("node-2".into()),
                ..refused.clone()
            },
        ] {
            assert_eq!(r.wait(&other, now), None, "{other:?}");
        }
        // Two sessions with one id on two nodes wait each on its own.
        let on_node = Session {
            node: Some("node-2".into()),
            ..refused.clone()
        };
        r.refused(&on_node, now);
        assert_eq!(r.len(), 2);
        // `/status` tells the two apart by their node.
        let nodes: Vec<_> = r
            .status(Utc::now())
            .into_iter()
            .map(|s| (s.session_id, s.node))
            .collect();
        assert_eq!(nodes, [(7, None), (7, Some("node-2".to_owned()))]);
        r.forget(&refused);
        assert_eq!(r.wait(&refused, now), None, "killed or gone: forgotten");
        assert!(r.wait(&on_node, now).is_some());
    }

    /// A whole snapshot that no longer lists a refused session forgets it (it
    /// ended; a new session with its id is not held back); an incomplete one
    /// forgets nothing.
    #[test]
    fn a_refused_session_is_forgotten_once_a_whole_snapshot_leaves_it_out() {
        let mut r = Refusals::default();
        let (a, b) = (session(7, "dba", 40001), session(9, "dba", 40003));
        let now = Instant::now();
        r.refused(&a, now);
        r.refused(&b, now);
        let mut partial = snapshot(vec![a.clone()]);
        partial.partial = Some("page 2 failed".to_owned());
        r.forget_unlisted(&partial);
        assert_eq!(r.len(), 2, "an incomplete snapshot forgets nothing");
        // `b`'s id now belongs to another client's session.
        r.forget_unlisted(&snapshot(vec![a.clone(), session(9, "dba", 40999)]));
        assert_eq!(r.len(), 1);
        assert!(r.wait(&a, now).is_some(), "still listed: still waiting");
        assert_eq!(r.wait(&b, now), None);
        r.forget_unlisted(&snapshot(Vec::new()));
        assert!(r.is_empty());
    }
}
