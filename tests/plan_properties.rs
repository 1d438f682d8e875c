//! Property tests of the pure core: for any snapshot and any policies, no protected
//! or ignored session is ever planned for a kill, and no run crosses its limits.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use session_reaper::core::glob::Glob;
use session_reaper::core::plan::{RunOutcome, Spare, Verdict, Why, plan};
use session_reaper::core::policy::{
    Action, Limits, Match, Mode, Origin, Policy, SqlPatterns, Victims,
};
use session_reaper::core::protected::{Protected, Protection, protection};
use session_reaper::core::recheck::{Recheck, recheck};
use session_reaper::core::session::{Session, Snapshot, Transaction};
use session_reaper::schedule::Schedule;

const USERS: &[&str] = &[
    "app",
    "app_batch",
    "report",
    "etl",
    "monitor",
    "repl",
    "rdsAdmin",
    "system user",
    "event_scheduler",
    "",
];
const STATES: [&str; 5] = [
    "Sending data",
    "sending DATA",
    "Slave has read all relay log; waiting for more updates",
    "Waiting for table metadata lock",
    "",
];
const COMMANDS: &[&str] = &[
    "Sleep",
    "Query",
    "Execute",
    "Daemon",
    "Binlog Dump",
    "Binlog Dump GTID",
    "Connect",
    "Slave_SQL",
    "Busy",
    "Killed",
    "killed",
];

/// Milliseconds, often exactly on a threshold another draw may pick.
fn millis() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..3_000_000,
        prop::sample::select(&[0u64, 1, 999, 1000, 1001, 60_000, 2_000_000][..]),
    ]
}

fn session() -> impl Strategy<Value = Session> {
    (
        1u64..400,
        prop::option::weighted(0.95, prop::sample::select(USERS)),
        prop::sample::select(COMMANDS),
        millis(),
        prop::option::of(millis()),
        prop::option::of(prop::sample::select(
            &[
                "SELECT 1",
                "SELECT * FROM t WHERE id = 5",
                "SELECT * FROM t WHERE id = 6",
                "UPDATE t SET a = 1",
            ][..],
        )),
        (
            prop::option::of(prop::sample::select(
                &["10.0.0.1", "10.0.0.2", "192.168.1.9", ""][..],
            )),
            prop::option::of(prop::sample::select(&["shop", "Shop", "billing"][..])),
            prop::option::of(prop::sample::select(&STATES[..])),
            prop::option::of(prop::sample::select(&["t1", "t2"][..])),
        ),
    )
        .prop_map(
            |(id, user, command, time_ms, trx, sql, (host, db, state, template))| Session {
                id,
                user: user.map(Into::into),
                host: host.map(Into::into),
                port: Some(40000),
                db: db.map(Into::into),
                command: command.into(),
                time_ms,
                state: state.map(Into::into),
                sql: sql.map(Into::into),
                query_id: Some(id * 10),
                trx: trx.map(|age_ms| Transaction {
                    id: "1".into(),
                    age_ms,
                }),
                template_id: template.map(Into::into),
                node: None,
            },
        )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        prop::collection::vec(session(), 0..60),
        prop::collection::vec(1u64..400, 0..3),
        any::<bool>(),
        prop::option::weighted(0.1, Just("a page failed".to_owned())),
        0i64..20_000,
    )
        .prop_map(|(mut sessions, own, transactions, partial, age_ms)| {
            sessions.sort_by_key(|s| s.id);
            sessions.dedup_by_key(|s| s.id);
            Snapshot {
                format: Snapshot::FORMAT.to_owned(),
                target: "t".to_owned(),
                provider: "mysql".to_owned(),
                taken_at: now() - chrono::Duration::milliseconds(age_ms),
                server: Default::default(),
                own_connection_ids: own,
                transactions,
                partial,
                sessions: sessions.into(),
            }
        })
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap()
}

fn globs(names: Vec<&str>) -> Vec<Glob> {
    names.into_iter().map(Glob::new).collect()
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec(
            prop::sample::select(&["app", "app*", "*", "report", "etl", "rds*"][..]),
            0..3,
        ),
        prop::collection::vec(
            prop::sample::select(&["sleep", "query", "daemon", "binlog dump"][..]),
            0..2,
        ),
        prop::option::of(millis()),
        prop::option::of(any::<bool>()),
        prop::collection::vec(prop::sample::select(&["etl", "monitor", "app_*"][..]), 0..2),
        (any::<bool>(), any::<bool>(), 0usize..3),
        (prop::option::of(1u64..20), prop::option::of(0.05f64..1.0)),
        (
            prop::collection::vec(prop::sample::select(&["app_batch", "r*"][..]), 0..2),
            prop::collection::vec(prop::sample::select(&["10.0.0.*", "192.*", ""][..]), 0..2),
            prop::collection::vec(prop::sample::select(&["shop", "bill*"][..]), 0..2),
            prop::collection::vec(
                prop::sample::select(&["sending data", "waiting for table metadata lock"][..]),
                0..2,
            ),
            prop::option::of(prop_oneof![
                millis().prop_map(|m| m * 1000),
                1u64..3_000_000_000
            ]),
            prop::option::of(millis()),
            prop::collection::vec(
                prop::sample::select(&["SELECT * FROM t WHERE id = ?", "UPDATE t SET a = ?"][..]),
                0..2,
            ),
            prop::collection::vec(prop::sample::select(&["t1"][..]), 0..2),
            prop::option::of(prop::collection::vec(
                prop::sample::select(&["(?i)^select", "id = 5$", "UPDATE", "^$"][..]),
                1..3,
            )),
        ),
    )
        .prop_map(
            |(
                user,
                command,
                min_time,
                in_trx,
                ignored,
                (enforce, kill_query, victims),
                (max_kills, max_fraction),
                (not_user, host, db, state, max_time, min_trx, templates, template_ids, sql),
            )| Policy {
                name: "p".to_owned(),
                targets: Vec::new(),
                schedule: Schedule::Every(Duration::from_secs(1)),
                mode: if enforce { Mode::Enforce } else { Mode::DryRun },
                matcher: Match {
                    user: globs(user),
                    command: command.into_iter().map(str::to_owned).collect(),
                    min_time: min_time.map(Duration::from_millis),
                    in_transaction: in_trx,
                    not_user: globs(not_user),
                    host: globs(host),
                    db: globs(db),
                    state: state.into_iter().map(str::to_owned).collect(),
                    max_time: max_time.map(Duration::from_micros),
                    min_trx_time: min_trx.map(Duration::from_millis),
                    sql_template: templates
                        .into_iter()
                        .map(session_reaper::fingerprint::fingerprint)
                        .collect(),
                    template_id: template_ids.into_iter().map(str::to_owned).collect(),
                    sql: sql.map(|patterns| SqlPatterns {
                        set: regex::RegexSet::new(patterns).expect("the patterns compile"),
                    }),
                },
                action: if kill_query {
                    Action::KillQuery
                } else {
                    Action::Kill
                },
                victims: [Victims::All, Victims::Oldest, Victims::AllButOldest][victims],
                limits: Limits {
                    max_kills_per_run: max_kills,
                    max_kill_fraction: max_fraction,
                    breaker_cooldown: Duration::from_secs(300),
                },
                ignored_users: globs(ignored),
                origin: Origin::default(),
            },
        )
}

fn protected() -> impl Strategy<Value = Protected> {
    (
        prop::collection::vec(prop::sample::select(&["rdsAdmin", "repl", "app"][..]), 0..2),
        any::<bool>(),
    )
        .prop_map(|(accounts, limit_age)| Protected {
            accounts: accounts.into_iter().map(str::to_owned).collect(),
            max_snapshot_age: limit_age.then(|| Duration::from_secs(5)),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_protected_or_ignored_session_is_ever_a_victim(
        snap in snapshot(),
        mut policies in prop::collection::vec(policy(), 1..5),
        protected in protected(),
    ) {
        for (i, p) in policies.iter_mut().enumerate() {
            p.name = format!("p{i}");
        }
        let refs: Vec<&Policy> = policies.iter().collect();
        let plan = plan(&snap, &refs, &protected, now());
        prop_assert_eq!(plan.decisions.len(), snap.sessions.len());
        for (s, d) in snap.sessions.iter().zip(&plan.decisions) {
            if !matches!(d.verdict, Verdict::Kill | Verdict::KillQuery | Verdict::WouldKill) {
                continue;
            }
            prop_assert!(protection(s, &snap.own_connection_ids, &protected).is_none(), "protected {:?} is a victim", s);
            let policy = refs[d.policy_index().expect("a victim has its policy")];
            let user = s.user.as_deref().unwrap_or_default();
            prop_assert!(policy.ignores(user).is_none(), "ignored {:?} is a victim of {}", s, policy.name);
            prop_assert!(policy.matcher.matches(s, snap.transactions), "{:?} does not match {}", s, policy.name);
            prop_assert!(plan.blocked.is_none(), "a blocked snapshot produced a victim");
            if d.verdict != Verdict::WouldKill {
                prop_assert_eq!(policy.mode, Mode::Enforce);
            }
        }
        // A run's victims (what its limits and reports count) hold no protected
        // or ignored session either.
        for run in &plan.runs {
            let policy = refs[run.policy];
            for &si in &run.victims {
                let s = &snap.sessions[si];
                prop_assert!(protection(s, &snap.own_connection_ids, &protected).is_none(), "protected {:?} is a victim of {}", s, policy.name);
                let user = s.user.as_deref().unwrap_or_default();
                prop_assert!(policy.ignores(user).is_none(), "ignored {:?} is a victim of {}", s, policy.name);
            }
        }
    }

    /// `plan` works the conditions out per distinct value and per user; what it
    /// finds must be exactly what `Match::matches` and `protection` say, session
    /// by session.
    #[test]
    fn plan_matches_and_protects_exactly_as_the_reference_does(
        snap in snapshot(),
        mut policies in prop::collection::vec(policy(), 1..5),
        protected in protected(),
    ) {
        for (i, p) in policies.iter_mut().enumerate() {
            p.name = format!("p{i}");
        }
        let refs: Vec<&Policy> = policies.iter().collect();
        let plan = plan(&snap, &refs, &protected, now());
        for (run, policy) in plan.runs.iter().zip(&policies) {
            let expected = snap.sessions.iter().filter(|s| policy.matcher.matches(s, snap.transactions)).count();
            prop_assert_eq!(run.matched, expected, "policy {:?}", policy.matcher);
        }
        for (s, d) in snap.sessions.iter().zip(&plan.decisions) {
            let expected = protection(s, &snap.own_connection_ids, &protected);
            let got = match &d.why {
                Why::Spared(Spare::Protected(p)) => Some(p.clone()),
                _ => None,
            };
            prop_assert_eq!(got, expected, "session {:?}", s);
        }
    }

    #[test]
    fn no_run_crosses_its_limits_and_the_breaker_opens_exactly_when_one_would_be_crossed(
        snap in snapshot(),
        policy in policy(),
        protected in protected(),
    ) {
        let plan = plan(&snap, &[&policy], &protected, now());
        let run = &plan.runs[0];
        let kills = plan.decisions.iter().filter(|d| d.policy == Some(0) && matches!(d.verdict, Verdict::Kill | Verdict::KillQuery | Verdict::WouldKill)).count();
        prop_assert_eq!(kills, run.victims.len());
        if let Some(max) = policy.limits.max_kills_per_run {
            prop_assert!(kills as u64 <= max);
        }
        if let Some(max) = policy.limits.max_kill_fraction {
            prop_assert!(kills as f64 <= max * snap.sessions.len() as f64);
        }
        // What the policy would pick without limits, counted independently.
        let candidates = snap
            .sessions
            .iter()
            .filter(|s| policy.matcher.matches(s, snap.transactions))
            .filter(|s| protection(s, &snap.own_connection_ids, &protected).is_none())
            .filter(|s| policy.ignores(s.user.as_deref().unwrap_or_default()).is_none())
            .count();
        let picked = match policy.victims {
            Victims::All => candidates,
            Victims::Oldest => candidates.min(1),
            Victims::AllButOldest => candidates.saturating_sub(1),
        };
        let crosses = policy.limits.max_kills_per_run.is_some_and(|m| picked as u64 > m)
            || policy.limits.max_kill_fraction.is_some_and(|f| picked as f64 > f * snap.sessions.len() as f64);
        if plan.blocked.is_none() {
            prop_assert_eq!(matches!(run.outcome, RunOutcome::LimitCrossed(_)), crosses);
            if !crosses {
                prop_assert_eq!(kills, picked);
            } else {
                prop_assert_eq!(kills, 0);
            }
        } else {
            prop_assert_eq!(kills, 0);
        }
    }
}

/// Session 7 of `app`, idle for 10 ms.
fn idle_app_session() -> Session {
    Session {
        id: 7,
        user: Some("app".into()),
        command: "Sleep".into(),
        time_ms: 10,
        ..Session::default()
    }
}

/// A snapshot of `sessions`, `age_us` microseconds old.
fn snapshot_of(sessions: Vec<Session>, age_us: i64) -> Snapshot {
    Snapshot {
        format: Snapshot::FORMAT.to_owned(),
        target: "t".to_owned(),
        provider: "mysql".to_owned(),
        taken_at: now() - chrono::Duration::microseconds(age_us),
        server: Default::default(),
        own_connection_ids: Vec::new(),
        transactions: true,
        partial: None,
        sessions: sessions.into(),
    }
}

/// An enforce policy killing what `matcher` holds for, every second.
fn enforce(name: &str, matcher: Match) -> Policy {
    Policy {
        name: name.to_owned(),
        targets: Vec::new(),
        schedule: Schedule::Every(Duration::from_secs(1)),
        mode: Mode::Enforce,
        matcher,
        action: Action::Kill,
        victims: Victims::All,
        limits: Limits::default(),
        ignored_users: Vec::new(),
        origin: Origin::default(),
    }
}

/// An enforce policy on `user`'s sessions alone, named after it.
fn enforce_on_user(user: &str) -> Policy {
    enforce(
        user,
        Match {
            user: globs(vec![user]),
            ..Match::default()
        },
    )
}

#[test]
fn an_id_listed_twice_is_never_a_victim() {
    let s = idle_app_session();
    let snap = snapshot_of(vec![s.clone(), Session { id: 8, ..s.clone() }, s], 0);
    let policy = enforce("all", Match::default());
    let p = plan(&snap, &[&policy], &Protected::default(), now());
    let verdicts: Vec<Verdict> = p.decisions.iter().map(|d| d.verdict).collect();
    assert_eq!(
        verdicts,
        vec![Verdict::Spared, Verdict::Kill, Verdict::Spared]
    );
    // Nor is it counted among the run's victims.
    assert_eq!(p.runs[0].victims, vec![1]);
}

/// A row MariaDB could not read (command `Busy`, no database or statement) tells
/// neither a match nor a protection: a binlog dump or replication thread can
/// look like that. A policy on its user alone does not get it.
#[test]
fn a_row_the_server_could_not_read_is_never_a_victim() {
    let busy = Session {
        user: Some("repl".into()),
        command: "Busy".into(),
        time_ms: 5_000,
        ..idle_app_session()
    };
    let snap = snapshot_of(vec![busy.clone()], 0);
    let policy = enforce_on_user("repl");
    let p = plan(&snap, &[&policy], &Protected::default(), now());
    assert_eq!(p.decisions[0].verdict, Verdict::Spared);
    assert_eq!(
        p.decisions[0].why,
        Why::Spared(Spare::Protected(Protection::Unreadable))
    );
    assert_eq!(
        protection(&busy, &[], &Protected::default()),
        Some(Protection::Unreadable)
    );
}

/// A session a kill has already reached (ours before a crash, another tool's, or
/// one still rolling back its transaction) stays listed as `Killed` until its
/// thread ends. It is not killed again, nor counted as spared, nor re-checked
/// into a kill: its re-check finds it gone.
#[test]
fn a_session_a_kill_has_reached_is_never_killed_again() {
    let killed = Session {
        command: "Killed".into(),
        state: Some("Rollback".into()),
        time_ms: 5_000,
        trx: Some(Transaction {
            id: "421".into(),
            age_ms: 60_000,
        }),
        ..idle_app_session()
    };
    let snap = snapshot_of(vec![killed.clone()], 0);
    let policy = enforce_on_user("app");
    let p = plan(&snap, &[&policy], &Protected::default(), now());
    assert_eq!(p.decisions[0].verdict, Verdict::Spared);
    let Why::Spared(spare) = &p.decisions[0].why else {
        panic!("{:?}", p.decisions[0].why)
    };
    assert_eq!(*spare, Spare::Protected(Protection::BeingKilled));
    assert_eq!(
        spare.metric_reason(),
        None,
        "not one of spared_total's reasons"
    );
    assert_eq!(
        Protection::BeingKilled.to_string(),
        "it is already being killed (command `Killed`)"
    );
    assert!(p.runs[0].victims.is_empty());

    // Planned in an earlier tick, before the kill reached it: the re-check
    // right before the next kill finds it ending.
    let planned = Session {
        command: "Sleep".into(),
        ..killed.clone()
    };
    for action in [Action::Kill, Action::KillQuery] {
        assert_eq!(
            recheck(
                &planned,
                Some(&killed),
                action,
                Some(&policy),
                &Protected::default(),
                &[],
                true
            ),
            Recheck::Gone,
            "{action:?}"
        );
    }
}

#[test]
fn staleness_is_measured_below_a_millisecond() {
    let s = idle_app_session();
    let policy = enforce("all", Match::default());
    let kills = |age_us: i64, max: Duration| {
        let snap = snapshot_of(vec![s.clone()], age_us);
        let protected = Protected {
            accounts: Vec::new(),
            max_snapshot_age: Some(max),
        };
        let p = plan(&snap, &[&policy], &protected, now());
        (p.decisions[0].verdict == Verdict::Kill, p.blocked.is_some())
    };
    // 0.4 ms old is older than `max_snapshot_age: 0s`.
    assert_eq!(kills(400, Duration::ZERO), (false, true));
    assert_eq!(kills(0, Duration::ZERO), (true, false));
    assert_eq!(kills(4_999_999, Duration::from_secs(5)), (true, false));
    assert_eq!(kills(5_000_001, Duration::from_secs(5)), (false, true));
    // A snapshot from the future (a clock step) counts as age 0.
    assert_eq!(kills(-3_000_000, Duration::from_secs(5)), (true, false));
}
