//! Compare-and-kill (DESIGN.md invariant 2): right before a kill, the session's
//! fresh row must still be the session that was matched.

use super::policy::{Action, Policy};
use super::protected::{Protected, Protection, protection};
use super::session::Session;
use crate::fingerprint::Fingerprinter;

/// The verdict on a fresh row read right before a kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    Proceed,
    /// The session ended, or a kill that is not this one has already reached it
    /// (the server lists it as `Killed` until it has ended).
    Gone,
    /// Another user, client or statement, or it no longer matches: not killed.
    Changed(String),
    /// The server could not read the session just now (MariaDB lists it as
    /// `Busy`): not killed on this row; a provider may read it again.
    Unreadable(String),
}

/// Whether `planned` may still be killed, given its `fresh` row. With a policy, the
/// fresh row must still match it; without one (a manual kill) only its identity
/// and its protections are checked.
pub fn recheck(
    planned: &Session,
    fresh: Option<&Session>,
    action: Action,
    policy: Option<&Policy>,
    protected: &Protected,
    own_ids: &[u64],
    transactions: bool,
) -> Recheck {
    let Some(fresh) = fresh else {
        return Recheck::Gone;
    };
    if fresh.user != planned.user {
        return Recheck::Changed(format!(
            "id {} now belongs to user {} (was {})",
            fresh.id,
            fresh.user.as_deref().unwrap_or("?"),
            planned.user.as_deref().unwrap_or("?")
        ));
    }
    if fresh.host != planned.host || fresh.port != planned.port {
        return Recheck::Changed(format!(
            "id {} now comes from {} (was {})",
            fresh.id,
            client(fresh),
            client(planned)
        ));
    }
    if let Some(p) = protection(fresh, own_ids, protected) {
        match p {
            Protection::Unreadable => return Recheck::Unreadable(format!("not read: {p}")),
            // Another kill (ours before a crash, or another tool's) has reached
            // it: it is ending without ours.
            Protection::BeingKilled => return Recheck::Gone,
            _ => {}
        }
        return Recheck::Changed(format!("now protected: {p}"));
    }
    if action == Action::KillQuery {
        match (planned.query_id, fresh.query_id) {
            (Some(a), Some(b)) if a != b => {
                return Recheck::Changed(format!(
                    "the statement finished: query id {b} runs now (matched {a})"
                ));
            }
            (Some(_), Some(_)) => {}
            _ => {
                if fresh.sql != planned.sql {
                    return Recheck::Changed(
                        "the statement finished: another one runs now".to_owned(),
                    );
                }
                if fresh.time_ms < planned.time_ms {
                    return Recheck::Changed("the statement finished and started again".to_owned());
                }
            }
        }
    }
    if let Some(policy) = policy {
        let mut fp = Fingerprinter::default();
        if let Some(failure) = policy
            .matcher
            .first_failure(fresh, transactions, &mut |sql| {
                fp.fingerprint(sql).to_owned()
            })
        {
            return Recheck::Changed(format!(
                "no longer matches {}: {failure} (now {} {})",
                policy.name,
                fresh.command,
                super::policy::format_ms(fresh.time_ms)
            ));
        }
    }
    Recheck::Proceed
}

fn client(s: &Session) -> String {
    match (&s.host, s.port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => "?".to_owned(),
    }
}
