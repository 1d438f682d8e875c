//! Sessions that are never victims, whatever a policy says (DESIGN.md invariant 1).

use std::fmt;
use std::time::Duration;

use super::session::Session;

/// What a target adds to the built-in protections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Protected {
    /// Accounts that are never victims: the provider's own O&M and replication
    /// accounts plus the target's `protected_users`. Exact names.
    pub accounts: Vec<String>,
    /// A snapshot older than this leads to no kill (`None`: no limit, as for replays).
    pub max_snapshot_age: Option<Duration>,
}

/// Server threads that keep the server or its replication running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    SystemUser,
    EventScheduler,
    Daemon,
    BinlogDump,
    Replication,
}

impl fmt::Display for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Thread::SystemUser => "a server thread (user `system user`)",
            Thread::EventScheduler => "the event scheduler",
            Thread::Daemon => "a server daemon thread (command Daemon)",
            Thread::BinlogDump => "a replica's binlog dump",
            Thread::Replication => "a replication thread",
        })
    }
}

/// Why a session is beyond every policy's reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    OwnConnection,
    UnreadableUser,
    Thread(Thread),
    ProviderAccount(String),
    /// The snapshot lists the id twice (on one node): which one would die is unclear.
    DuplicateId,
    /// The server could not read the session when it listed it: MariaDB lists a
    /// session whose data lock another thread holds (its `trylock` fails) with
    /// the command `Busy` and no database or statement, so neither a match nor a
    /// protection can be told from the row.
    Unreadable,
    /// A kill has already reached it: MariaDB lists a session whose
    /// `KILL CONNECTION` it acknowledged with the command `Killed` until its
    /// thread has ended, which takes seconds while its transaction rolls back,
    /// and more than a tick on a loaded server. Killing it again would be a
    /// second kill of one session, and a second audit record of it.
    BeingKilled,
}

impl Protection {
    /// The `reason` label of `spared_total`.
    pub fn metric_reason(&self) -> Option<&'static str> {
        Some(match self {
            Protection::DuplicateId | Protection::Unreadable | Protection::BeingKilled => {
                return None;
            }
            Protection::OwnConnection => "own_connection",
            Protection::UnreadableUser => "unreadable_user",
            Protection::Thread(_) => "protected_thread",
            Protection::ProviderAccount(_) => "provider_account",
        })
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protection::OwnConnection => f.write_str("our own connection"),
            Protection::UnreadableUser => f.write_str("its user cannot be read"),
            Protection::Thread(t) => write!(f, "{t}"),
            Protection::ProviderAccount(a) => write!(f, "`{a}` is on the protected account list"),
            Protection::DuplicateId => f.write_str("its id appears twice in the snapshot"),
            Protection::Unreadable => f.write_str("the server could not read it (command `Busy`)"),
            Protection::BeingKilled => f.write_str("it is already being killed (command `Killed`)"),
        }
    }
}

/// Commands of replication and server threads (MySQL and MariaDB spellings).
const PROTECTED_COMMANDS: &[(&str, Thread)] = &[
    ("Daemon", Thread::Daemon),
    ("Binlog Dump", Thread::BinlogDump),
    ("Binlog Dump GTID", Thread::BinlogDump),
    ("Slave_IO", Thread::Replication),
    ("Slave_SQL", Thread::Replication),
    ("Slave_worker", Thread::Replication),
    ("Replica_IO", Thread::Replication),
    ("Replica_SQL", Thread::Replication),
    ("Replica_worker", Thread::Replication),
    ("Register Slave", Thread::Replication),
    ("Register Replica", Thread::Replication),
    ("Group Replication", Thread::Replication),
];

/// Why `session` may never be killed, if it may not. `own_ids` are our own
/// connections to the server.
pub fn protection(session: &Session, own_ids: &[u64], protected: &Protected) -> Option<Protection> {
    if own_ids.contains(&session.id) {
        return Some(Protection::OwnConnection);
    }
    if let Some(p) = command_protection(&session.command) {
        return Some(p);
    }
    if let Some(p) = user_protection(session.user.as_deref()) {
        return Some(p);
    }
    if session.state.as_deref().is_some_and(replication_state) {
        return Some(Protection::Thread(Thread::Replication));
    }
    account_protection(session.user.as_deref().unwrap_or_default(), protected)
}

// The parts of `protection`, in its order, each a function of one field so that
// `plan` can work them out once per distinct value.

/// A server or replication thread, by its command, a row the server could not
/// read (`UNREADABLE_COMMAND`) or a session a kill has already reached
/// (`KILLED_COMMAND`).
pub fn command_protection(command: &str) -> Option<Protection> {
    if command == UNREADABLE_COMMAND {
        return Some(Protection::Unreadable);
    }
    if command.eq_ignore_ascii_case(KILLED_COMMAND) {
        return Some(Protection::BeingKilled);
    }
    PROTECTED_COMMANDS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(command))
        .map(|&(_, thread)| Protection::Thread(thread))
}

/// The command MariaDB lists for a session it could not read (no command of a
/// session is called so).
pub const UNREADABLE_COMMAND: &str = "Busy";

/// The command MariaDB lists for a session whose connection a `KILL` has
/// reached, until its thread has ended. (MySQL leaves such a session out of
/// `information_schema`, and `performance_schema` lists it as it was.)
pub const KILLED_COMMAND: &str = "Killed";

/// An unreadable user, or a server thread's user.
pub fn user_protection(user: Option<&str>) -> Option<Protection> {
    match user {
        None | Some("") => Some(Protection::UnreadableUser),
        Some("system user") => Some(Protection::Thread(Thread::SystemUser)),
        Some("event_scheduler") => Some(Protection::Thread(Thread::EventScheduler)),
        Some(_) => None,
    }
}

/// The state of a replication thread (for servers that show it under another command).
pub fn replication_state(state: &str) -> bool {
    [
        "Slave has read all relay log",
        "Replica has read all relay log",
        "Waiting for master to send event",
        "Waiting for source to send event",
        "Master has sent all binlog",
        "Source has sent all binlog",
    ]
    .iter()
    .any(|p| state.starts_with(p))
}

/// A protected account (exact name).
pub fn account_protection(user: &str, protected: &Protected) -> Option<Protection> {
    protected
        .accounts
        .iter()
        .find(|a| a.as_str() == user)
        .map(|a| Protection::ProviderAccount(a.clone()))
}
