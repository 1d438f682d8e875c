//! `plan`: every session of a snapshot gets one decision, with its reason.
//! Pure and synchronous: no IO, no clock (the caller passes `now`).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::index::{FingerprintCache, Index, Matcher, Needs, prefetch};
use super::policy::{Action, Mode, Policy, Victims, format_ms};
use super::protected::{
    Protected, Protection, account_protection, command_protection, protection, replication_state,
    user_protection,
};
use super::session::{Session, Snapshot};

/// The decisions for one snapshot of one target.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: String,
    pub taken_at: DateTime<Utc>,
    pub evaluated_at: DateTime<Utc>,
    /// Why this snapshot may not lead to any kill, if it may not.
    pub blocked: Option<Blocked>,
    /// One per session, in snapshot order.
    pub decisions: Vec<Decision>,
    /// One per policy given, in the order given.
    pub runs: Vec<PolicyRun>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Kill,
    KillQuery,
    WouldKill,
    Spared,
    NoMatch,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Kill => "kill",
            Verdict::KillQuery => "kill-query",
            Verdict::WouldKill => "would-kill",
            Verdict::Spared => "spared",
            Verdict::NoMatch => "no-match",
        }
    }

    pub fn is_kill(self) -> bool {
        matches!(self, Verdict::Kill | Verdict::KillQuery)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Index (into the policies given to `plan`) of the policy that decided, if
    /// any. A `u32`: with the reasons kept small, a decision is 40 bytes, written
    /// for every session of every plan.
    pub policy: Option<u32>,
    pub why: Why,
}

// `plan` writes a decision for every session (4 MB at 100,000): a reason that
// grows it shows up in every plan's time (72 -> 40 bytes: -6 % on 100k x 50).
// Large reasons go in a box or an `Arc`.
const _: () = assert!(std::mem::size_of::<Decision>() <= 40);

impl Decision {
    /// The deciding policy's index into the policies given to `plan`, if any.
    pub fn policy_index(&self) -> Option<usize> {
        self.policy.map(|p| p as usize)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// No policy matched.
    NoMatch,
    /// The deciding policy matched and picked it as a victim.
    Victim,
    /// An operator named it (`session-reaper kill`).
    Requested,
    /// Matched (or protected) but not killed.
    Spared(Spare),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Spare {
    Protected(Protection),
    /// The glob of `ignored_users` that names the user: one allocation per
    /// policy and user, shared by each of that user's sessions.
    IgnoredUser(Arc<str>),
    /// Not picked by `victims: oldest | all-but-oldest`.
    NotPicked(Victims),
    /// The policy's limits would be crossed: nothing is killed, the breaker opens.
    /// Boxed, as `Blocked` is: a decision is written for every session, and the
    /// rare reasons should not make each of them larger.
    Limit(Box<LimitBreach>),
    /// The snapshot may not lead to kills.
    Blocked(Box<Blocked>),
    /// The policy's breaker on this target is open.
    BreakerOpen {
        since: DateTime<Utc>,
    },
}

impl Spare {
    /// The `reason` label of `spared_total`, for the reasons it counts.
    pub fn metric_reason(&self) -> Option<&'static str> {
        match self {
            Spare::Protected(p) => p.metric_reason(),
            Spare::IgnoredUser(_) => Some("ignored_user"),
            Spare::NotPicked(_) => Some("victims"),
            Spare::Limit(_) | Spare::Blocked(_) | Spare::BreakerOpen { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Blocked {
    Stale { age_ms: u64, max_ms: u64 },
    Partial(String),
}

impl Blocked {
    /// The `outcome` label of `evaluations_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Blocked::Stale { .. } => "stale",
            Blocked::Partial(_) => "partial",
        }
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::Stale { age_ms, max_ms } => write!(
                f,
                "the snapshot is {} old, more than max_snapshot_age {}",
                format_ms(*age_ms),
                format_ms(*max_ms)
            ),
            Blocked::Partial(why) => write!(f, "the snapshot is incomplete: {why}"),
        }
    }
}

/// The numbers of a crossed limit.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitBreach {
    pub victims: usize,
    pub sessions: usize,
    pub max_kills_per_run: Option<u64>,
    pub max_kill_fraction: Option<f64>,
}

impl fmt::Display for LimitBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut crossed = Vec::new();
        if let Some(max) = self.max_kills_per_run
            && self.victims as u64 > max
        {
            crossed.push(format!(
                "{} victims > max_kills_per_run {max}",
                self.victims
            ));
        }
        if let Some(max) = self.max_kill_fraction
            && crosses_fraction(self.victims, self.sessions, max)
        {
            crossed.push(format!(
                "{} of {} sessions ({:.1}%) > max_kill_fraction {max}",
                self.victims,
                self.sessions,
                100.0 * self.victims as f64 / self.sessions.max(1) as f64
            ));
        }
        write!(f, "limit crossed: {}", crossed.join(" and "))
    }
}

fn crosses_fraction(victims: usize, sessions: usize, max: f64) -> bool {
    sessions > 0 && victims as f64 > max * sessions as f64
}

/// What one policy did with this snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    pub policy: usize,
    /// Sessions its `match` holds for (protected ones included).
    pub matched: usize,
    /// Its victims (indexes into the snapshot), kill or would-kill; empty when blocked
    /// or when a limit is crossed.
    pub victims: Vec<usize>,
    pub outcome: RunOutcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Ok,
    Blocked(Blocked),
    /// A limit would be crossed: nothing is killed and the breaker opens.
    LimitCrossed(LimitBreach),
}

impl RunOutcome {
    /// The `outcome` label of `evaluations_total`.
    pub fn label(&self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Blocked(b) => b.outcome(),
            RunOutcome::LimitCrossed(_) => "breaker_open",
        }
    }
}

/// Decide, for every session of `snapshot`, what `policies` do to it.
pub fn plan(
    snapshot: &Snapshot,
    policies: &[&Policy],
    protected: &Protected,
    now: DateTime<Utc>,
) -> Plan {
    let n = snapshot.sessions.len();
    let blocked = blocked(snapshot, protected, now);
    let index = Index::new(snapshot, Needs::of(policies.iter().map(|p| &p.matcher)));
    // Protected sessions are decided before any policy looks at them.
    // `is_protected` is set here and below only: no policy makes a session
    // protected, and `claim` never replaces a protection.
    let (mut decisions, mut is_protected) = decide_protected(snapshot, &index, protected);
    // An id listed twice on one node is ambiguous: neither copy is a victim.
    for i in index.duplicate_ids() {
        decisions[i] = protected_decision(Protection::DuplicateId);
        is_protected[i] = true;
    }
    let mut fingerprints = FingerprintCache::new(
        policies
            .iter()
            .flat_map(|p| p.matcher.sql_template.iter().map(String::as_str)),
    );
    let mut runs = Vec::with_capacity(policies.len());
    let mut matching: Vec<u32> = Vec::new();
    let mut marks: Vec<u64> = Vec::new();
    for (pi, policy) in policies.iter().enumerate() {
        // The sessions the policy's `match` holds for, ascending. A policy that
        // names users or commands visits only those users' sessions running those
        // commands.
        let mut matcher = Matcher::new(&policy.matcher, &index, &mut fingerprints);
        let mut ignored: Vec<Option<Option<Arc<str>>>> = vec![None; index.users.len()];
        matching.clear();
        let commands: Vec<u32> = (0..index.commands.len() as u32)
            .filter(|&c| matcher.command_holds(&index, c))
            .collect();
        for user in 0..index.users.len() as u32 {
            if !matcher.user_holds(&index, user) {
                continue;
            }
            for &command in &commands {
                for row in index.rows_of(user, command) {
                    if matcher.holds_beyond_user_and_command(
                        &index,
                        row,
                        &snapshot.sessions,
                        snapshot.transactions,
                    ) {
                        matching.push(row.session);
                    }
                }
            }
        }
        in_snapshot_order(&mut matching, &mut marks);
        // A policy with `sql_template`s checks them last, on every session the
        // other conditions hold for at once.
        if !matcher.templates().is_empty() {
            fingerprints.retain_templates(&mut matching, &index.sql, matcher.templates());
        }
        let matched = matching.len();
        let mut candidates = Vec::new();
        // Each match's user is read from an array of every session (1.2 MB at
        // 100,000), far apart: fetched eight ahead.
        for (i, &si) in matching.iter().enumerate() {
            if let Some(&ahead) = matching.get(i + 8) {
                prefetch(index.fields.as_ptr().wrapping_add(ahead as usize));
            }
            let si = si as usize;
            let user = index.fields[si][0];
            if is_protected[si] {
                claim_spared(&mut decisions[si], pi, None);
                continue;
            }
            let ignoring = ignored[user as usize].get_or_insert_with(|| {
                policy
                    .ignores(index.users.get(user).unwrap_or_default())
                    .map(|glob| Arc::from(glob.as_str()))
            });
            if let Some(glob) = ignoring {
                claim_spared(
                    &mut decisions[si],
                    pi,
                    Some(Spare::IgnoredUser(Arc::clone(glob))),
                );
                continue;
            }
            candidates.push(si);
        }
        let (victims, not_picked) = pick(&snapshot.sessions, candidates, policy.victims);
        for si in not_picked {
            claim_spared(
                &mut decisions[si],
                pi,
                Some(Spare::NotPicked(policy.victims)),
            );
        }
        let breach = limit_breach(policy, victims.len(), n);
        let outcome = match (&blocked, breach) {
            (Some(b), _) => RunOutcome::Blocked(b.clone()),
            (None, Some(breach)) => RunOutcome::LimitCrossed(breach),
            (None, None) => RunOutcome::Ok,
        };
        let victims = match &outcome {
            RunOutcome::Ok => {
                let verdict = match (policy.mode, policy.action) {
                    (Mode::DryRun, _) => Verdict::WouldKill,
                    (Mode::Enforce, Action::Kill) => Verdict::Kill,
                    (Mode::Enforce, Action::KillQuery) => Verdict::KillQuery,
                };
                for (i, &si) in victims.iter().enumerate() {
                    if let Some(&ahead) = victims.get(i + 8) {
                        prefetch(decisions.as_ptr().wrapping_add(ahead));
                    }
                    claim(&mut decisions[si], verdict, pi, Why::Victim);
                }
                victims
            }
            RunOutcome::Blocked(b) => {
                for &si in &victims {
                    claim_spared(
                        &mut decisions[si],
                        pi,
                        Some(Spare::Blocked(Box::new(b.clone()))),
                    );
                }
                Vec::new()
            }
            RunOutcome::LimitCrossed(breach) => {
                for &si in &victims {
                    claim_spared(
                        &mut decisions[si],
                        pi,
                        Some(Spare::Limit(Box::new(breach.clone()))),
                    );
                }
                Vec::new()
            }
        };
        runs.push(PolicyRun {
            policy: pi,
            matched,
            victims,
            outcome,
        });
    }
    Plan {
        target: snapshot.target.clone(),
        taken_at: snapshot.taken_at,
        evaluated_at: now,
        blocked,
        decisions,
        runs,
    }
}

/// Puts a policy's matching sessions, each listed once, in snapshot order.
/// They come grouped by user and command, each group ascending. Many are marked
/// in a bitset of the sessions they span, which is then read back in order: a
/// pass over `span / 64` words instead of a sort's `m log m` compares (callgrind,
/// `plan` 100k × 50: the sort was 17 % of the instructions, counted inclusively;
/// 80.2M -> 76.8M a plan). `marks` is all zeros before and after.
fn in_snapshot_order(sessions: &mut Vec<u32>, marks: &mut Vec<u64>) {
    if sessions.is_empty() {
        return;
    }
    let (lo, hi) = sessions
        .iter()
        .fold((u32::MAX, 0), |(lo, hi), &si| (lo.min(si), hi.max(si)));
    let (first, last) = (lo as usize / 64, hi as usize / 64);
    // Few matches spread thin: the sort is cheaper.
    if sessions.len() < 64 || last - first >= 4 * sessions.len() {
        sessions.sort_unstable();
        return;
    }
    if marks.len() <= last {
        marks.resize(last + 1, 0);
    }
    for &si in sessions.iter() {
        let word = &mut marks[si as usize / 64];
        debug_assert_eq!(*word & 1 << (si % 64), 0, "session {si} matched twice");
        *word |= 1 << (si % 64);
    }
    sessions.clear();
    for (w, word) in marks[first..=last].iter_mut().enumerate() {
        let mut bits = std::mem::take(word);
        while bits != 0 {
            let si = (first + w) * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            sessions.push(si as u32);
        }
    }
}

fn blocked(snapshot: &Snapshot, protected: &Protected, now: DateTime<Utc>) -> Option<Blocked> {
    if let Some(why) = &snapshot.partial {
        return Some(Blocked::Partial(why.clone()));
    }
    let max = protected.max_snapshot_age?;
    // A snapshot from the future (clock step) counts as age 0. Compared in
    // microseconds: a snapshot 0.4 ms old is older than `max_snapshot_age: 0s`.
    let age_us = (now - snapshot.taken_at)
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .max(0) as u128;
    (age_us > max.as_micros()).then_some(Blocked::Stale {
        age_ms: (age_us / 1000) as u64,
        max_ms: max.as_millis() as u64,
    })
}

/// Splits candidates into victims and the ones `victims:` leaves alone.
fn pick(
    sessions: &[Session],
    mut candidates: Vec<usize>,
    victims: Victims,
) -> (Vec<usize>, Vec<usize>) {
    if victims == Victims::All || candidates.is_empty() {
        return (candidates, Vec::new());
    }
    let oldest_at = (0..candidates.len())
        .max_by(|&a, &b| {
            let (sa, sb) = (&sessions[candidates[a]], &sessions[candidates[b]]);
            sa.time_ms.cmp(&sb.time_ms).then(sb.id.cmp(&sa.id))
        })
        .unwrap_or(0);
    let oldest = candidates.remove(oldest_at);
    match victims {
        Victims::Oldest => (vec![oldest], candidates),
        _ => (candidates, vec![oldest]),
    }
}

fn limit_breach(policy: &Policy, victims: usize, sessions: usize) -> Option<LimitBreach> {
    let limits = &policy.limits;
    let over_count = limits
        .max_kills_per_run
        .is_some_and(|max| victims as u64 > max);
    let over_fraction = limits
        .max_kill_fraction
        .is_some_and(|max| crosses_fraction(victims, sessions, max));
    (over_count || over_fraction).then_some(LimitBreach {
        victims,
        sessions,
        max_kills_per_run: limits.max_kills_per_run,
        max_kill_fraction: limits.max_kill_fraction,
    })
}

/// Rank of a decision: a stronger one replaces a weaker one.
fn rank(d: &Decision) -> u8 {
    match (d.verdict, d.policy.is_some()) {
        (Verdict::Kill, _) => 5,
        (Verdict::KillQuery, _) => 4,
        (Verdict::WouldKill, _) => 3,
        (Verdict::Spared, true) => 2,
        (Verdict::Spared, false) => 1,
        (Verdict::NoMatch, _) => 0,
    }
}

fn claim(d: &mut Decision, verdict: Verdict, policy: usize, why: Why) {
    let new = Decision {
        verdict,
        policy: Some(policy as u32),
        why,
    };
    if matches!(d.why, Why::Spared(Spare::Protected(_))) {
        return; // protection is final
    }
    if rank(&new) > rank(d) {
        *d = new;
    }
}

/// Records that `policy` matched but spared the session. A protected session keeps
/// its protection as the reason and learns which policy wanted it.
fn claim_spared(d: &mut Decision, policy: usize, spare: Option<Spare>) {
    match spare {
        None => {
            if d.policy.is_none() {
                d.policy = Some(policy as u32);
            }
        }
        Some(spare) => claim(d, Verdict::Spared, policy, Why::Spared(spare)),
    }
}

fn protected_decision(p: Protection) -> Decision {
    Decision {
        verdict: Verdict::Spared,
        policy: None,
        why: Why::Spared(Spare::Protected(p)),
    }
}

/// The starting decision of every session: spared if `protection` says so, worked
/// out once per distinct command, user and state (the same checks in the same
/// order), otherwise no match yet. With it, whether each is protected, one byte a
/// session: every policy reads that for each of its matches, and the decisions
/// (40 bytes each) are too far apart to be read for it.
fn decide_protected(
    snapshot: &Snapshot,
    index: &Index<'_>,
    protected: &Protected,
) -> (Vec<Decision>, Vec<bool>) {
    let commands: Vec<Option<Protection>> = (0..index.commands.len() as u32)
        .map(|c| command_protection(index.commands.get(c).unwrap_or_default()))
        .collect();
    let users: Vec<(Option<Protection>, Option<Protection>)> = (0..index.users.len() as u32)
        .map(|u| {
            let user = index.users.get(u);
            (
                user_protection(user),
                account_protection(user.unwrap_or_default(), protected),
            )
        })
        .collect();
    let states: Vec<bool> = (0..index.states.len() as u32)
        .map(|s| index.states.get(s).is_some_and(replication_state))
        .collect();
    let own = &snapshot.own_connection_ids;
    let mut is_protected = vec![false; index.ids.len()];
    let decisions = index
        .ids
        .iter()
        .zip(&index.fields)
        .map(|(&(id, _), &[user, command, state])| {
            if own.contains(&id) {
                return Some(Protection::OwnConnection);
            }
            let by_command = &commands[command as usize];
            let (early, account) = &users[user as usize];
            let replication = states[state as usize];
            // Most sessions: nothing protects them, and nothing is cloned.
            if by_command.is_none() && early.is_none() && !replication && account.is_none() {
                return None;
            }
            by_command
                .clone()
                .or_else(|| early.clone())
                .or_else(|| {
                    replication.then_some(Protection::Thread(super::protected::Thread::Replication))
                })
                .or_else(|| account.clone())
        })
        .enumerate()
        .map(|(i, p)| match p {
            Some(p) => {
                is_protected[i] = true;
                protected_decision(p)
            }
            None => Decision {
                verdict: Verdict::NoMatch,
                policy: None,
                why: Why::NoMatch,
            },
        })
        .collect();
    (decisions, is_protected)
}

impl Plan {
    /// Holds back every victim of policy `policy` because its breaker is open.
    pub fn hold_for_breaker(&mut self, policy: usize, since: DateTime<Utc>) {
        for d in &mut self.decisions {
            if d.policy_index() == Some(policy) && matches!(d.why, Why::Victim | Why::Requested) {
                d.verdict = Verdict::Spared;
                d.why = Why::Spared(Spare::BreakerOpen { since });
            }
        }
        if let Some(run) = self.runs.iter_mut().find(|r| r.policy == policy) {
            run.victims.clear();
        }
    }

    /// For targets that cannot kill (replays): every kill becomes a would-kill.
    pub fn downgrade_kills(&mut self) {
        for d in &mut self.decisions {
            if d.verdict.is_kill() {
                d.verdict = Verdict::WouldKill;
            }
        }
    }

    /// A human sentence for decision `i`.
    pub fn reason(&self, i: usize, snapshot: &Snapshot, policies: &[&Policy]) -> String {
        let d = &self.decisions[i];
        let session = &snapshot.sessions[i];
        let policy = d.policy_index().map(|p| policies[p]);
        match (&d.why, policy) {
            (Why::NoMatch, _) => "no policy matches".to_owned(),
            (Why::Victim, Some(p)) => {
                let mut s = p.matcher.explain(session);
                match p.victims {
                    Victims::All => {}
                    Victims::Oldest => s.push_str("; the oldest match"),
                    Victims::AllButOldest => s.push_str("; not the oldest match"),
                }
                s
            }
            (Why::Spared(spare), p) => {
                let by = p
                    .map(|p| format!(" (matched by {})", p.name))
                    .unwrap_or_default();
                match spare {
                    Spare::Protected(pr) => format!("protected: {pr}{by}"),
                    Spare::IgnoredUser(g) => format!(
                        "ignored user {}{by}",
                        if **g == *session.user.as_deref().unwrap_or("") {
                            format!("`{g}`")
                        } else {
                            format!("`{}` ~ {g}", session.user.as_deref().unwrap_or(""))
                        }
                    ),
                    Spare::NotPicked(v) => {
                        format!("victims: {} picked another session{by}", v.as_str())
                    }
                    Spare::Limit(b) => format!("{b}: nothing is killed{by}"),
                    Spare::Blocked(b) => format!("{b}: nothing is killed{by}"),
                    Spare::BreakerOpen { since } => format!(
                        "the breaker is open since {}: nothing is killed{by}",
                        since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    ),
                }
            }
            (Why::Victim, None) => "victim".to_owned(),
            (Why::Requested, _) => "requested by the operator (session-reaper kill)".to_owned(),
        }
    }
}

/// The policy behind `session-reaper kill`: enforce, no conditions, the global
/// ignored users.
pub fn manual_policy(action: Action, ignored_users: &[crate::core::glob::Glob]) -> Policy {
    Policy {
        name: "manual".to_owned(),
        targets: Vec::new(),
        schedule: crate::schedule::Schedule::Every(std::time::Duration::from_secs(1)),
        mode: Mode::Enforce,
        matcher: super::policy::Match::default(),
        action,
        victims: Victims::All,
        limits: super::policy::Limits::default(),
        ignored_users: ignored_users.to_vec(),
        origin: super::policy::Origin::default(),
    }
}

/// Decisions for an operator's kill of `ids`: the same protections and ignored
/// users as any policy. Returns the plan and the ids refused, with why.
pub fn plan_manual(
    snapshot: &Snapshot,
    ids: &[u64],
    policy: &Policy,
    protected: &Protected,
    now: DateTime<Utc>,
) -> (Plan, Vec<(u64, String)>) {
    let blocked = blocked(snapshot, protected, now);
    let mut decisions = vec![
        Decision {
            verdict: Verdict::NoMatch,
            policy: None,
            why: Why::NoMatch,
        };
        snapshot.sessions.len()
    ];
    let mut refused = Vec::new();
    let mut victims = Vec::new();
    for &id in ids {
        let Some(i) = snapshot.sessions.iter().position(|s| s.id == id) else {
            refused.push((id, format!("no session {id} on {}", snapshot.target)));
            continue;
        };
        let s = &snapshot.sessions[i];
        if snapshot.sessions[i + 1..].iter().any(|o| o.id == id) {
            refused.push((id, format!("protected: {}", Protection::DuplicateId)));
            continue;
        }
        if let Some(p) = protection(s, &snapshot.own_connection_ids, protected) {
            refused.push((id, format!("protected: {p}")));
            continue;
        }
        if let Some(g) = policy.ignores(s.user.as_deref().unwrap_or_default()) {
            refused.push((id, format!("ignored user (ignored_users: {g})")));
            continue;
        }
        if let Some(b) = &blocked {
            refused.push((id, b.to_string()));
            continue;
        }
        let verdict = match policy.action {
            Action::Kill => Verdict::Kill,
            Action::KillQuery => Verdict::KillQuery,
        };
        decisions[i] = Decision {
            verdict,
            policy: Some(0),
            why: Why::Requested,
        };
        victims.push(i);
    }
    let plan = Plan {
        target: snapshot.target.clone(),
        taken_at: snapshot.taken_at,
        evaluated_at: now,
        blocked: blocked.clone(),
        decisions,
        runs: vec![PolicyRun {
            policy: 0,
            matched: victims.len(),
            victims,
            outcome: blocked.map(RunOutcome::Blocked).unwrap_or(RunOutcome::Ok),
        }],
    };
    (plan, refused)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::in_snapshot_order;

    proptest! {
        /// Whichever road it takes (a sort, or the bitset for many matches), the
        /// sessions come out ascending, none lost, and the bitset is left clear
        /// for the next policy.
        #[test]
        fn matches_come_out_in_snapshot_order(
            picks in prop::collection::vec(any::<bool>(), 0..3000),
            dense in 1u32..8,
            groups in 1usize..6,
            offset in 0u32..200,
        ) {
            let chosen: Vec<u32> = picks
                .iter()
                .enumerate()
                .filter(|&(i, &p)| p && (i as u32).is_multiple_of(dense))
                .map(|(i, _)| offset + i as u32)
                .collect();
            // Grouped as the index hands them out: runs, each ascending.
            let mut grouped = Vec::new();
            for g in 0..groups {
                grouped.extend(chosen.iter().copied().filter(|si| *si as usize % groups == g));
            }
            let mut marks = Vec::new();
            for _ in 0..2 {
                let mut sessions = grouped.clone();
                in_snapshot_order(&mut sessions, &mut marks);
                prop_assert_eq!(&sessions, &chosen);
                prop_assert!(marks.iter().all(|w| *w == 0));
            }
        }
    }
}
