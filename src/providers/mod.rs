//! Where sessions come from and where kills go. A provider fetches and kills; it
//! never decides: the re-check it runs right before a kill is `core::recheck`,
//! handed in by the executor.
//!
//! Adding a provider is one file here and one line in [`REGISTRY`].

pub mod alibaba;
pub mod cloud;
pub mod file;
pub mod huawei;
pub mod mysql;
pub mod tencent;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::config::yaml::Map;
use crate::core::policy::Action;
use crate::core::session::{Session, Snapshot};
use crate::metrics::Metrics;

/// What a provider can report and do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Sessions carry their open transaction (`in_transaction`, `min_trx_time`).
    pub transactions: bool,
    /// `kill-query` (end the statement, keep the connection).
    pub kill_query: bool,
    /// Kills reach a server (false for replays).
    pub kills: bool,
}

/// What the policies due in a tick need from a snapshot, so a provider can ask
/// for less (no statement text, no transaction join, only some users).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Want {
    pub sql: bool,
    pub transactions: bool,
    /// For a re-check read: whole seconds of the time decide every request it
    /// re-checks as milliseconds would ([`Needs::seconds`]), so a provider may read
    /// a cheaper listing that has only whole seconds. Never set for a snapshot.
    pub seconds: bool,
    /// Filters every due policy shares, which an API may apply server-side (a
    /// provider may ignore them and return every session).
    pub user: Option<String>,
    pub command: Option<String>,
    pub min_time: Option<Duration>,
}

impl Want {
    pub fn everything() -> Want {
        Want {
            sql: true,
            transactions: true,
            ..Want::default()
        }
    }

    /// What the policies due in a tick need, and the filters they all share.
    pub fn for_policies(policies: &[&crate::core::policy::Policy]) -> Want {
        let shared =
            |pick: &dyn Fn(&crate::core::policy::Match) -> Option<String>| -> Option<String> {
                let mut values = policies.iter().map(|p| pick(&p.matcher));
                let first = values.next()??;
                values
                    .all(|v| v.as_deref() == Some(first.as_str()))
                    .then_some(first)
            };
        // The snapshot carries what the policies' re-checks compare with (for
        // `kill-query` on MySQL, which has no query id, the statement).
        let fields = Needs::want(policies.iter().map(|p| Needs::of(p, true)));
        Want {
            sql: fields.sql,
            transactions: fields.transactions,
            seconds: false,
            user: shared(&|m| match m.user.as_slice() {
                [one] if m.not_user.is_empty() => one.literal().map(str::to_owned),
                _ => None,
            }),
            command: shared(&|m| match m.command.as_slice() {
                [one] => crate::config::COMMANDS
                    .iter()
                    .find(|c| c.eq_ignore_ascii_case(one))
                    .map(|c| (*c).to_owned()),
                _ => None,
            }),
            min_time: policies
                .iter()
                .map(|p| p.matcher.min_time)
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().min()),
        }
    }
}

/// One session to kill, as the plan saw it.
#[derive(Debug, Clone)]
pub struct KillRequest<'a> {
    /// The session as the plan saw it (borrowed from the snapshot).
    pub session: &'a Session,
    pub action: Action,
    /// The (literal) ignored users of the policy, for APIs that enforce them too.
    pub ignored_users: &'a [String],
    /// What the re-check compares beyond the session's identity, command, time,
    /// state and database: a re-check read may leave out what no request needs.
    pub needs: Needs,
    /// The caller's own reference (which policy); providers pass it back untouched.
    pub tag: usize,
}

/// The parts of a fresh row a kill's re-check compares only for some policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The statement text (a policy on `sql` or `sql_template`, or a `kill-query`,
    /// which must hit the statement that was matched).
    pub sql: bool,
    /// The open transaction (a policy on `in_transaction` or `min_trx_time`).
    pub transactions: bool,
    /// Whole seconds of the time decide the re-check exactly as milliseconds
    /// would: the action is `kill` (a `kill-query` compares the statement's time)
    /// and the policy's `min_time` and `max_time`, if any, are whole seconds
    /// (`t >= 5s` holds exactly when `floor(t) >= 5s`). Off unless [`Needs::of`]
    /// finds it so: a re-check then reads milliseconds.
    pub seconds: bool,
}

impl Needs {
    /// What re-checking a kill of `policy` compares; `transactions` says whether the
    /// snapshot reported transactions (without them, such a policy matches nothing).
    pub fn of(policy: &crate::core::policy::Policy, transactions: bool) -> Needs {
        let whole = |d: Option<Duration>| d.is_none_or(|d| d.subsec_nanos() == 0);
        Needs {
            sql: policy.matcher.needs_sql() || policy.action == Action::KillQuery,
            transactions: transactions && policy.matcher.needs_transactions(),
            seconds: policy.action == Action::Kill
                && whole(policy.matcher.min_time)
                && whole(policy.matcher.max_time),
        }
    }

    /// What a read re-checking all of `needs` must fetch.
    pub fn want(needs: impl IntoIterator<Item = Needs>) -> Want {
        let (sql, transactions, seconds, any) = needs
            .into_iter()
            .fold((false, false, true, false), |(s, t, secs, _), n| {
                (s || n.sql, t || n.transactions, secs && n.seconds, true)
            });
        Want {
            sql,
            transactions,
            seconds: seconds && any,
            ..Want::default()
        }
    }
}

pub use crate::core::recheck::Recheck;

/// Called by a provider with each request and the session's fresh row (`None`
/// when it is gone).
pub type Rechecker<'a> = dyn Fn(&KillRequest<'_>, Option<&Session>) -> Recheck + Send + Sync + 'a;

/// Holds a kill's sends until its intents are durable (write-ahead audit, DESIGN.md
/// invariant 5), so that a provider may start its re-check reads while they are
/// written: the fsync and the first read overlap, and no kill is sent before the
/// gate opens. Made by [`gate`]; [`Gate::opened`] for a kill that may go at once.
#[derive(Debug, Clone)]
pub struct Gate(tokio::sync::watch::Receiver<Option<Result<(), String>>>);

/// The side of a [`Gate`] that opens or closes it; dropping it unopened closes the
/// gate.
#[derive(Debug)]
pub struct GateKeeper(tokio::sync::watch::Sender<Option<Result<(), String>>>);

/// A closed gate and its keeper.
pub fn gate() -> (GateKeeper, Gate) {
    let (tx, rx) = tokio::sync::watch::channel(None);
    (GateKeeper(tx), Gate(rx))
}

impl Gate {
    /// A gate that is open already.
    pub fn opened() -> Gate {
        let (keeper, gate) = gate();
        keeper.open();
        gate
    }

    /// Waits until the gate opens (`Ok`) or is closed for good (`Err`, with why:
    /// nothing may be sent then).
    pub async fn wait(&self) -> Result<(), String> {
        let mut rx = self.0.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(verdict) => verdict.clone().unwrap_or(Ok(())),
            Err(_) => Err("not sent: the kill was called off".to_owned()),
        }
    }
}

impl GateKeeper {
    pub fn open(self) {
        self.0.send_replace(Some(Ok(())));
    }

    pub fn close(self, why: String) {
        self.0.send_replace(Some(Err(why)));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillResult {
    Killed,
    /// Ended before the kill.
    Gone,
    /// The re-check found another user, host or statement: not killed.
    Changed(String),
    /// The provider would not kill it (an ignored or internal user, no privilege).
    Refused(String),
    Failed(String),
    /// No answer: it may or may not have been killed.
    Unknown(String),
}

impl KillResult {
    /// The `result` label of `kills_total` and the audit field.
    pub fn label(&self) -> &'static str {
        match self {
            KillResult::Killed => "killed",
            KillResult::Gone => "gone",
            KillResult::Changed(_) => "changed",
            KillResult::Refused(_) => "refused",
            KillResult::Failed(_) => "failed",
            KillResult::Unknown(_) => "unknown",
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            KillResult::Killed | KillResult::Gone => None,
            KillResult::Changed(s)
            | KillResult::Refused(s)
            | KillResult::Failed(s)
            | KillResult::Unknown(s) => Some(s),
        }
    }
}

#[derive(Debug, Clone)]
pub struct KillOutcome {
    pub result: KillResult,
    /// When the fresh row was read and when the kill was sent (for kills sent
    /// several to a packet: when its answer was read, an upper bound), for the
    /// re-check-to-kill window.
    pub rechecked_at: Option<Instant>,
    pub sent_at: Option<Instant>,
}

impl KillOutcome {
    pub fn without_recheck(result: KillResult) -> KillOutcome {
        KillOutcome {
            result,
            rechecked_at: None,
            sent_at: None,
        }
    }

    /// Each request's outcome, in order: the ones not settled come to `rest`.
    pub fn each_or(outcomes: Vec<Option<KillOutcome>>, rest: KillResult) -> Vec<KillOutcome> {
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| KillOutcome::without_recheck(rest.clone())))
            .collect()
    }

    /// `each_or`, for requests that were not attempted.
    pub fn each_or_not_attempted(outcomes: Vec<Option<KillOutcome>>) -> Vec<KillOutcome> {
        KillOutcome::each_or(outcomes, KillResult::Failed("not attempted".to_owned()))
    }
}

/// A provider error: what failed, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    #[error("{target}: {operation} failed: {message}")]
    Query {
        target: String,
        operation: &'static str,
        message: String,
    },
    #[error("{target}: {operation} timed out after {}", crate::core::policy::format_duration(*.after))]
    Timeout {
        target: String,
        operation: &'static str,
        after: Duration,
    },
    #[error("{target}: {message}")]
    Other { target: String, message: String },
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Every session of the target now.
    async fn snapshot(&self, want: &Want) -> Result<Snapshot, ProviderError>;

    /// Re-checks each request against a fresh read and kills those `recheck`
    /// lets through. One outcome per request, in order.
    async fn kill(&self, requests: &[KillRequest], recheck: &Rechecker<'_>) -> Vec<KillOutcome>;

    /// `kill`, sending nothing before `gate` opens. A provider may read (re-check)
    /// before it opens; this default waits for the gate first. When the gate is
    /// closed instead, nothing is sent and every outcome says why.
    async fn kill_after(
        &self,
        requests: &[KillRequest],
        recheck: &Rechecker<'_>,
        gate: &Gate,
    ) -> Vec<KillOutcome> {
        match gate.wait().await {
            Ok(()) => self.kill(requests, recheck).await,
            Err(why) => requests
                .iter()
                .map(|_| KillOutcome::without_recheck(KillResult::Failed(why.clone())))
                .collect(),
        }
    }
}

/// A configured provider: knows its limits and builds the live provider.
pub trait Factory: Send + Sync + fmt::Debug {
    fn capabilities(&self) -> Capabilities;
    /// `max_snapshot_age` when the target does not set it (`None`: no limit).
    fn default_max_snapshot_age(&self) -> Option<Duration>;
    fn build(&self, target: &str, metrics: Arc<Metrics>) -> Arc<dyn Provider>;

    /// Called once the policies of the target are known. A provider that needs them
    /// (to know which users to list) returns an updated factory; an `Err` is a
    /// configuration error about the target.
    fn with_policies(
        &self,
        _policies: &[&crate::core::policy::Policy],
    ) -> Result<Option<Arc<dyn Factory>>, String> {
        Ok(None)
    }
}

/// How the configuration reads a target of this provider.
#[derive(Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    /// The keys this provider adds to the common ones.
    pub keys: &'static [&'static str],
    /// The provider's own O&M and replication accounts: never victims.
    pub accounts: &'static [&'static str],
    /// Reads them; errors go to the map's document. `base` is the config's directory.
    pub parse: fn(&Map<'_>, &std::path::Path) -> Option<Arc<dyn Factory>>,
}

/// Every provider, by the name used in `provider:`.
pub static REGISTRY: &[Spec] = &[
    mysql::SPEC,
    alibaba::SPEC,
    tencent::SPEC,
    huawei::SPEC,
    file::SPEC,
];

pub fn spec(name: &str) -> Option<&'static Spec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// The built-in protected accounts of the provider named `name` (none if unknown).
pub fn accounts_of(name: &str) -> &'static [&'static str] {
    spec(name).map(|s| s.accounts).unwrap_or(&[])
}

pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::manual_policy;

    #[test]
    fn a_recheck_needs_the_statement_and_transaction_only_where_a_policy_compares_them() {
        let idle = manual_policy(Action::Kill, &[]);
        let mut template = manual_policy(Action::Kill, &[]);
        template.matcher.sql_template = vec!["select sleep(?)".to_owned()];
        let query = manual_policy(Action::KillQuery, &[]);
        let mut long_trx = manual_policy(Action::Kill, &[]);
        long_trx.matcher.min_trx_time = Some(Duration::from_secs(30));
        let needs = |p: &crate::core::policy::Policy, trx: bool| {
            let n = Needs::of(p, trx);
            (n.sql, n.transactions)
        };
        assert_eq!(needs(&idle, true), (false, false));
        assert_eq!(needs(&template, true), (true, false));
        assert_eq!(needs(&query, true), (true, false), "kill-query compares it");
        assert_eq!(needs(&long_trx, true), (false, true));
        assert_eq!(
            needs(&long_trx, false),
            (false, false),
            "a snapshot without transactions matched none: nothing to compare"
        );
        let want = Needs::want([Needs::of(&idle, true), Needs::of(&long_trx, true)]);
        assert_eq!((want.sql, want.transactions), (false, true));
        assert_eq!(Needs::want([]), Want::default());

        // Whole seconds decide a `kill` whose thresholds are whole seconds.
        let mut secs = manual_policy(Action::Kill, &[]);
        secs.matcher.min_time = Some(Duration::from_secs(5));
        secs.matcher.max_time = Some(Duration::from_secs(3600));
        let mut millis = secs.clone();
        millis.matcher.min_time = Some(Duration::from_millis(1500));
        let mut below = secs.clone();
        below.matcher.max_time = Some(Duration::from_millis(2500));
        let seconds = |p: &crate::core::policy::Policy| Needs::of(p, true).seconds;
        assert!(seconds(&idle) && seconds(&secs) && seconds(&long_trx));
        assert!(!seconds(&millis) && !seconds(&below));
        assert!(!seconds(&query), "kill-query compares the statement's time");
        assert!(Needs::want([Needs::of(&idle, true), Needs::of(&secs, true)]).seconds);
        assert!(!Needs::want([Needs::of(&idle, true), Needs::of(&millis, true)]).seconds);
        assert!(
            !Needs::default().seconds,
            "milliseconds unless found otherwise"
        );

        // The snapshot carries what the re-check compares with, in milliseconds.
        assert!(!Want::for_policies(&[&idle]).seconds);
        assert!(!Want::for_policies(&[&idle]).sql);
        assert!(Want::for_policies(&[&idle, &query]).sql);
        assert!(Want::for_policies(&[&long_trx]).transactions);
    }

    #[tokio::test]
    async fn a_gate_holds_until_it_is_opened_or_closed() {
        assert_eq!(Gate::opened().wait().await, Ok(()));

        let (keeper, held) = gate();
        let waiting = tokio::spawn({
            let held = held.clone();
            async move { held.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a new gate is closed");
        keeper.open();
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(held.wait().await, Ok(()), "and stays open");

        let (keeper, held) = gate();
        keeper.close("not sent: the audit log cannot be written".to_owned());
        assert_eq!(
            held.wait().await,
            Err("not sent: the audit log cannot be written".to_owned())
        );

        let (keeper, held) = gate();
        drop(keeper);
        assert_eq!(
            held.wait().await,
            Err("not sent: the kill was called off".to_owned())
        );
    }
}
