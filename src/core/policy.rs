//! A validated policy: what to match, what to do, and the limits to respect.
//! Built by `config` from YAML; everything here is already checked and compiled.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use regex::RegexSet;

use super::glob::Glob;
use super::session::Session;
use crate::fingerprint::Fingerprinter;
use crate::schedule::Schedule;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Report what would be killed; kill nothing. The default.
    DryRun,
    /// Kill. Always written explicitly in the policy.
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Enforce => "enforce",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `KILL CONNECTION`: the session ends.
    Kill,
    /// `KILL QUERY`: the statement ends, the connection stays.
    KillQuery,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::KillQuery => "kill-query",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Victims {
    All,
    /// Only the matching session with the longest `time` (ties: lowest id).
    Oldest,
    /// Every matching session but the one with the longest `time`.
    AllButOldest,
}

impl Victims {
    pub fn as_str(self) -> &'static str {
        match self {
            Victims::All => "all",
            Victims::Oldest => "oldest",
            Victims::AllButOldest => "all-but-oldest",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_kills_per_run: Option<u64>,
    pub max_kill_fraction: Option<f64>,
    /// How long an open breaker stays open before a run under the limits closes it.
    pub breaker_cooldown: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_kills_per_run: None,
            max_kill_fraction: None,
            breaker_cooldown: Duration::from_secs(300),
        }
    }
}

/// Where a policy came from, for messages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Origin {
    pub file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    /// Globs over target names; empty means every target.
    pub targets: Vec<Glob>,
    pub schedule: Schedule,
    pub mode: Mode,
    pub matcher: Match,
    pub action: Action,
    pub victims: Victims,
    pub limits: Limits,
    /// The policy's own ignored users merged with the global ones.
    pub ignored_users: Vec<Glob>,
    pub origin: Origin,
}

impl Policy {
    pub fn applies_to(&self, target: &str) -> bool {
        self.targets.is_empty() || self.targets.iter().any(|g| g.matches(target))
    }

    pub fn ignores(&self, user: &str) -> Option<&Glob> {
        self.ignored_users.iter().find(|g| g.matches(user))
    }
}

/// The `match:` block. Every condition given must hold; a list holds when any of
/// its items does; an absent condition holds for every session.
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub user: Vec<Glob>,
    pub not_user: Vec<Glob>,
    pub host: Vec<Glob>,
    pub db: Vec<Glob>,
    /// Lower-cased command names.
    pub command: Vec<String>,
    /// Lower-cased state names.
    pub state: Vec<String>,
    pub min_time: Option<Duration>,
    pub max_time: Option<Duration>,
    pub sql: Option<SqlPatterns>,
    /// Fingerprints of the templates given.
    pub sql_template: Vec<String>,
    pub template_id: Vec<String>,
    pub in_transaction: Option<bool>,
    pub min_trx_time: Option<Duration>,
}

/// Compiled `sql:` regexes, with their sources for messages.
#[derive(Debug, Clone)]
pub struct SqlPatterns {
    pub set: RegexSet,
}

impl Match {
    /// Whether the conditions need the statement text.
    pub fn needs_sql(&self) -> bool {
        self.sql.is_some() || !self.sql_template.is_empty()
    }

    /// Whether the conditions need transaction data.
    pub fn needs_transactions(&self) -> bool {
        self.in_transaction.is_some() || self.min_trx_time.is_some()
    }

    /// The first condition `session` fails, or `None` when it matches.
    /// `transactions` says whether the snapshot reports transactions;
    /// `fingerprints` computes statement fingerprints (cached by the caller).
    pub fn first_failure(
        &self,
        session: &Session,
        transactions: bool,
        fingerprint: &mut dyn FnMut(&str) -> String,
    ) -> Option<Failure> {
        let time = Duration::from_millis(session.time_ms);
        if !self.command.is_empty()
            && !self
                .command
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&session.command))
        {
            return Some(Failure::Command);
        }
        if let Some(min) = self.min_time
            && time < min
        {
            return Some(Failure::MinTime);
        }
        if let Some(max) = self.max_time
            && time >= max
        {
            return Some(Failure::MaxTime);
        }
        let user = session.user.as_deref();
        if !self.user.is_empty() && !user.is_some_and(|u| self.user.iter().any(|g| g.matches(u))) {
            return Some(Failure::User);
        }
        if !self.not_user.is_empty()
            && user.is_none_or(|u| self.not_user.iter().any(|g| g.matches(u)))
        {
            return Some(Failure::NotUser);
        }
        if !self.host.is_empty()
            && !session
                .host
                .as_deref()
                .is_some_and(|h| self.host.iter().any(|g| g.matches(h)))
        {
            return Some(Failure::Host);
        }
        if !self.db.is_empty()
            && !session
                .db
                .as_deref()
                .is_some_and(|d| self.db.iter().any(|g| g.matches(d)))
        {
            return Some(Failure::Db);
        }
        if !self.state.is_empty()
            && !session
                .state
                .as_deref()
                .is_some_and(|s| self.state.iter().any(|x| x.eq_ignore_ascii_case(s)))
        {
            return Some(Failure::State);
        }
        if !self.template_id.is_empty()
            && !session
                .template_id
                .as_deref()
                .is_some_and(|t| self.template_id.iter().any(|x| x == t))
        {
            return Some(Failure::TemplateId);
        }
        if self.needs_transactions() {
            if !transactions {
                return Some(Failure::NoTransactionData);
            }
            if let Some(wanted) = self.in_transaction
                && session.trx.is_some() != wanted
            {
                return Some(Failure::InTransaction);
            }
            if let Some(min) = self.min_trx_time
                && session
                    .trx
                    .as_ref()
                    .is_none_or(|t| Duration::from_millis(t.age_ms) < min)
            {
                return Some(Failure::MinTrxTime);
            }
        }
        if self.needs_sql() {
            let Some(sql) = session.sql.as_deref() else {
                return Some(Failure::NoSql);
            };
            if let Some(patterns) = &self.sql
                && !patterns.set.is_match(sql)
            {
                return Some(Failure::Sql);
            }
            if !self.sql_template.is_empty() {
                let fp = fingerprint(sql);
                if !self.sql_template.contains(&fp) {
                    return Some(Failure::SqlTemplate);
                }
            }
        }
        None
    }

    /// Whether `session` matches, fingerprinting on the spot when needed.
    pub fn matches(&self, session: &Session, transactions: bool) -> bool {
        let mut fp = Fingerprinter::default();
        self.first_failure(session, transactions, &mut |sql| {
            fp.fingerprint(sql).to_owned()
        })
        .is_none()
    }

    /// A short account of why a matching session matches, for humans.
    pub fn explain(&self, session: &Session) -> String {
        // One string written in place: a storm explains thousands of kills at once.
        let mut out = String::with_capacity(96);
        let part = |out: &mut String| {
            if !out.is_empty() {
                out.push_str(", ");
            }
        };
        let list = |out: &mut String, globs: &[Glob]| {
            for (i, g) in globs.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                out.push_str(g.as_str());
            }
        };
        if !self.user.is_empty() {
            part(&mut out);
            out.push_str("user ");
            out.push_str(session.user.as_deref().unwrap_or("?"));
            out.push_str(" ~ ");
            list(&mut out, &self.user);
        }
        if !self.not_user.is_empty() {
            part(&mut out);
            out.push_str("user not ");
            list(&mut out, &self.not_user);
        }
        if !self.host.is_empty() {
            part(&mut out);
            out.push_str("host ");
            out.push_str(session.host.as_deref().unwrap_or("?"));
            out.push_str(" ~ ");
            list(&mut out, &self.host);
        }
        if !self.db.is_empty() {
            part(&mut out);
            out.push_str("db ");
            out.push_str(session.db.as_deref().unwrap_or("?"));
            out.push_str(" ~ ");
            list(&mut out, &self.db);
        }
        if !self.command.is_empty() {
            part(&mut out);
            out.push_str("command ");
            out.push_str(&session.command);
        }
        if !self.state.is_empty() {
            part(&mut out);
            out.push_str("state ");
            out.push_str(session.state.as_deref().unwrap_or(""));
        }
        let time = Duration::from_millis(session.time_ms);
        match (self.min_time, self.max_time) {
            (None, None) => {}
            (min, max) => {
                part(&mut out);
                out.push_str("time ");
                write_duration(&mut out, time);
                match (min, max) {
                    (Some(min), Some(max)) => {
                        out.push_str(" in [");
                        write_duration(&mut out, min);
                        out.push_str(", ");
                        write_duration(&mut out, max);
                        out.push(')');
                    }
                    (Some(min), None) => {
                        out.push_str(" >= ");
                        write_duration(&mut out, min);
                    }
                    (None, Some(max)) => {
                        out.push_str(" < ");
                        write_duration(&mut out, max);
                    }
                    (None, None) => unreachable!("handled above"),
                }
            }
        }
        if let Some(wanted) = self.in_transaction {
            part(&mut out);
            out.push_str(if wanted {
                "in a transaction"
            } else {
                "no transaction"
            });
        }
        if let (Some(min), Some(trx)) = (self.min_trx_time, &session.trx) {
            part(&mut out);
            out.push_str("transaction age ");
            write_duration(&mut out, Duration::from_millis(trx.age_ms));
            out.push_str(" >= ");
            write_duration(&mut out, min);
        }
        if self.sql.is_some() {
            part(&mut out);
            out.push_str("sql matches");
        }
        if !self.sql_template.is_empty() {
            part(&mut out);
            out.push_str("sql template matches");
        }
        if !self.template_id.is_empty() {
            part(&mut out);
            out.push_str("template id ");
            out.push_str(session.template_id.as_deref().unwrap_or(""));
        }
        if out.is_empty() {
            out.push_str("matches every session");
        }
        out
    }
}

/// The condition a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Command,
    MinTime,
    MaxTime,
    User,
    NotUser,
    Host,
    Db,
    State,
    TemplateId,
    NoTransactionData,
    InTransaction,
    MinTrxTime,
    NoSql,
    Sql,
    SqlTemplate,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Command => "command differs",
            Failure::MinTime => "time below min_time",
            Failure::MaxTime => "time not below max_time",
            Failure::User => "user differs",
            Failure::NotUser => "user excluded by not_user",
            Failure::Host => "host differs",
            Failure::Db => "db differs",
            Failure::State => "state differs",
            Failure::TemplateId => "template id differs",
            Failure::NoTransactionData => "the provider reports no transactions",
            Failure::InTransaction => "transaction state differs",
            Failure::MinTrxTime => "transaction younger than min_trx_time",
            Failure::NoSql => "no statement text",
            Failure::Sql => "sql does not match",
            Failure::SqlTemplate => "sql template differs",
        })
    }
}

/// `1.5s`, `312ms`, `2m5s`.
pub fn format_ms(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

/// The shortest exact rendering in the config's own duration syntax
/// (`250ms`, `1.5s`, `5m12.4s`, `1h2m5s`).
pub fn format_duration(d: Duration) -> String {
    let mut out = String::new();
    write_duration(&mut out, d);
    out
}

/// `format_duration`, appended to `out`.
pub fn write_duration(out: &mut String, d: Duration) {
    // Every reason of a storm's thousands of audit records has one or two of
    // these: digits by itoa, not by the formatting machinery.
    let mut buf = itoa::Buffer::new();
    let mut num = |out: &mut String, n: u128, unit: &str| {
        out.push_str(buf.format(n));
        out.push_str(unit);
    };
    let ms = d.as_millis();
    if ms == 0 {
        out.push_str("0s");
        return;
    }
    if ms < 1000 {
        num(out, ms, "ms");
        return;
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        num(out, h, "h");
    }
    if m > 0 {
        num(out, m, "m");
    }
    if frac > 0 {
        num(out, s, ".");
        // Milliseconds without trailing zeros: .5, .25, .125.
        let digits = [frac / 100, frac / 10 % 10, frac % 10];
        let width = match frac {
            f if f % 100 == 0 => 1,
            f if f % 10 == 0 => 2,
            _ => 3,
        };
        for d in &digits[..width] {
            out.push(char::from(b'0' + *d as u8));
        }
        out.push('s');
    } else if s > 0 {
        num(out, s, "s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_config_syntax() {
        assert_eq!(format_ms(0), "0s");
        assert_eq!(format_ms(250), "250ms");
        assert_eq!(format_ms(1500), "1.5s");
        assert_eq!(format_ms(312_400), "5m12.4s");
        assert_eq!(format_ms(2_118_842), "35m18.842s");
        assert_eq!(format_ms(300_000), "5m");
        assert_eq!(format_ms(3_725_000), "1h2m5s");
        assert_eq!(format_ms(1_050), "1.05s");
        assert_eq!(format_ms(61_007), "1m1.007s");
        assert_eq!(format_ms(3_600_120), "1h0.12s");
    }

    #[test]
    fn every_millisecond_count_prints_as_its_fraction_without_trailing_zeros() {
        for ms in (0..200_000u64).chain([7_199_999, 7_200_000, 86_400_001]) {
            let frac = ms % 1000;
            let text = format_ms(ms);
            if ms >= 1000 && frac > 0 {
                let want = format!("{frac:03}");
                let want = want.trim_end_matches('0');
                assert!(text.ends_with(&format!(".{want}s")), "{ms}: {text}");
            } else {
                assert!(!text.contains('.'), "{ms}: {text}");
            }
        }
    }
}
