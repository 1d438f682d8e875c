//! How `plan` and `sessions` print: text for people, JSON for scripts.

use std::fmt::Write as _;

use serde_json::json;

use crate::audit::timestamp;
use crate::config::Target;
use crate::core::plan::{Plan, RunOutcome, Verdict};
use crate::core::policy::{Policy, format_ms};
use crate::core::session::{Session, Snapshot};

pub struct TargetPlan<'c> {
    pub target: &'c Target,
    pub snapshot: Snapshot,
    pub policies: Vec<&'c Policy>,
    pub plan: Plan,
    pub error: Option<String>,
}

impl<'c> TargetPlan<'c> {
    pub fn failed(target: &'c Target, policies: Vec<&'c Policy>, error: String) -> TargetPlan<'c> {
        let snapshot = Snapshot {
            format: Snapshot::FORMAT.to_owned(),
            target: target.name.clone(),
            provider: target.provider.to_owned(),
            taken_at: chrono::Utc::now(),
            server: Default::default(),
            own_connection_ids: Vec::new(),
            transactions: false,
            partial: None,
            sessions: Default::default(),
        };
        let plan = crate::core::plan::plan(&snapshot, &[], &target.protected(), snapshot.taken_at);
        TargetPlan {
            target,
            snapshot,
            policies,
            plan,
            error: Some(error),
        }
    }
}

fn who(s: &Session) -> String {
    crate::executor::describe(s)
}

const ORDER: [Verdict; 4] = [
    Verdict::Kill,
    Verdict::KillQuery,
    Verdict::WouldKill,
    Verdict::Spared,
];

pub fn plan_text(targets: &[TargetPlan<'_>]) -> String {
    let mut out = String::new();
    for (n, tp) in targets.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let t = tp.target;
        if let Some(e) = &tp.error {
            let _ = writeln!(out, "target {} ({}): no snapshot: {e}", t.name, t.provider);
            continue;
        }
        let s = &tp.snapshot;
        let source = if s.provider.is_empty() || s.provider == t.provider {
            t.provider.to_owned()
        } else {
            format!("{}, replaying {} data", t.provider, s.provider)
        };
        let _ = writeln!(
            out,
            "target {} ({source}): {} session{}",
            t.name,
            s.sessions.len(),
            if s.sessions.len() == 1 { "" } else { "s" }
        );
        let protected = t.protected_for(s);
        if !protected.accounts.is_empty() {
            let _ = writeln!(
                out,
                "  protected accounts: {}",
                protected.accounts.join(", ")
            );
        }
        if let Some(b) = &tp.plan.blocked {
            let _ = writeln!(out, "  NO KILLS: {b}");
        }
        for verdict in ORDER {
            let mut rows: Vec<usize> = (0..s.sessions.len())
                .filter(|&i| tp.plan.decisions[i].verdict == verdict)
                .collect();
            rows.sort_by_key(|&i| s.sessions[i].id);
            for i in rows {
                let session = &s.sessions[i];
                let d = &tp.plan.decisions[i];
                let policy = d
                    .policy_index()
                    .map(|p| format!("[{}] ", tp.policies[p].name))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {:<11} #{:<8} {:<44} {policy}{}",
                    verdict.as_str(),
                    session.id,
                    who(session),
                    tp.plan.reason(i, s, &tp.policies)
                );
            }
        }
        let no_match = tp
            .plan
            .decisions
            .iter()
            .filter(|d| d.verdict == Verdict::NoMatch)
            .count();
        if no_match > 0 {
            let _ = writeln!(
                out,
                "  {:<11} {no_match} session{}",
                "no-match",
                if no_match == 1 { "" } else { "s" }
            );
        }
        if tp.policies.is_empty() {
            let _ = writeln!(out, "  no policy applies to this target");
        }
        for run in &tp.plan.runs {
            let p = tp.policies[run.policy];
            let outcome = match &run.outcome {
                RunOutcome::Ok => String::new(),
                RunOutcome::Blocked(b) => format!(": no kills: {b}"),
                RunOutcome::LimitCrossed(b) => format!(": BREAKER would open: {b}"),
            };
            let victims = tp
                .plan
                .decisions
                .iter()
                .filter(|d| {
                    d.policy_index() == Some(run.policy)
                        && matches!(
                            d.verdict,
                            Verdict::Kill | Verdict::KillQuery | Verdict::WouldKill
                        )
                })
                .count();
            let _ = writeln!(
                out,
                "  policy {} ({}, {}, {}): {} matched, {} victim{}{outcome}",
                p.name,
                p.mode.as_str(),
                p.action.as_str(),
                p.schedule,
                run.matched,
                victims,
                if victims == 1 { "" } else { "s" }
            );
        }
    }
    out
}

pub fn plan_json(targets: &[TargetPlan<'_>]) -> String {
    let docs: Vec<serde_json::Value> = targets
        .iter()
        .map(|tp| {
            let t = tp.target;
            if let Some(e) = &tp.error {
                return json!({ "target": t.name, "provider": t.provider, "error": e });
            }
            let s = &tp.snapshot;
            let sessions: Vec<serde_json::Value> = s
                .sessions
                .iter()
                .enumerate()
                .map(|(i, session)| {
                    let d = &tp.plan.decisions[i];
                    json!({
                        "session_id": session.id,
                        "user": session.user,
                        "host": session.host,
                        "db": session.db,
                        "command": session.command,
                        "time_ms": session.time_ms,
                        "decision": d.verdict.as_str(),
                        "policy": d.policy_index().map(|p| tp.policies[p].name.clone()),
                        "reason": tp.plan.reason(i, s, &tp.policies),
                    })
                })
                .collect();
            let policies: Vec<serde_json::Value> = tp
                .plan
                .runs
                .iter()
                .map(|run| {
                    let p = tp.policies[run.policy];
                    let (outcome, detail) = match &run.outcome {
                        RunOutcome::Ok => ("ok", None),
                        RunOutcome::Blocked(b) => (b.outcome(), Some(b.to_string())),
                        RunOutcome::LimitCrossed(b) => ("breaker_open", Some(b.to_string())),
                    };
                    json!({
                        "policy": p.name,
                        "mode": p.mode.as_str(),
                        "action": p.action.as_str(),
                        "matched": run.matched,
                        "victims": run.victims.len(),
                        "outcome": outcome,
                        "detail": detail,
                    })
                })
                .collect();
            json!({
                "target": t.name,
                "provider": t.provider,
                "snapshot_time": timestamp(s.taken_at),
                "blocked": tp.plan.blocked.as_ref().map(ToString::to_string),
                "protected_accounts": t.protected_for(s).accounts,
                "policies": policies,
                "sessions": sessions,
            })
        })
        .collect();
    let doc = json!({ "targets": docs });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

pub fn sessions_text(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({} {}): {} sessions at {}",
        s.target,
        s.server.flavour,
        s.server.version,
        s.sessions.len(),
        timestamp(s.taken_at)
    );
    let _ = writeln!(
        out,
        "{:>10}  {:<16} {:<22} {:<12} {:<12} {:>10}  {:<6} SQL",
        "ID", "USER", "HOST", "DB", "COMMAND", "TIME", "TRX"
    );
    for x in s.sessions.iter() {
        let sql: String = x
            .sql
            .as_deref()
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(60)
            .collect();
        let own = if s.own_connection_ids.contains(&x.id) {
            " (us)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>10}  {:<16} {:<22} {:<12} {:<12} {:>10}  {:<6} {sql}{own}",
            x.id,
            x.user.as_deref().unwrap_or("?"),
            x.host.as_deref().unwrap_or(""),
            x.db.as_deref().unwrap_or(""),
            x.command,
            format_ms(x.time_ms),
            x.trx
                .as_ref()
                .map(|t| format_ms(t.age_ms))
                .unwrap_or_default(),
        );
    }
    out
}
