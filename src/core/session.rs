//! What every provider normalises its process list into.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A session's short text (user, host, database, command, state): kept in the
/// session itself up to 24 bytes, so that reading a snapshot's sessions one after
/// another reads no other memory for them (`plan` reads them for every session).
pub type Text = CompactString;

/// One server session (a processlist row), whatever provider it came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The connection id (processlist `ID`, a cloud API's session id).
    pub id: u64,
    /// The account; `None` when the source could not say (never killed).
    #[serde(default)]
    pub user: Option<Text>,
    /// The client address without its port (`10.0.0.7`, `localhost`).
    #[serde(default)]
    pub host: Option<Text>,
    /// The client port, when the source gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub db: Option<Text>,
    /// `Sleep`, `Query`, `Binlog Dump`, ...
    pub command: Text,
    /// How long the session has been in its current state, in milliseconds, never
    /// more than it can have been (whole-second sources are not rounded up).
    pub time_ms: u64,
    #[serde(default)]
    pub state: Option<Text>,
    /// The statement text; may be truncated, may be absent.
    #[serde(default)]
    pub sql: Option<String>,
    /// MariaDB's `QUERY_ID`: binds `KILL QUERY ID` to one statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<u64>,
    /// The open transaction, if any (only meaningful when the snapshot has
    /// transaction data).
    #[serde(default)]
    pub trx: Option<Transaction>,
    /// A provider's own statement-template id (Alibaba DAS `SqlTemplateId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<Text>,
    /// The node the session lives on (cluster providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Text>,
}

/// Who a session is beyond its id: its account and its client. An id listed
/// with another of these is another session (a server hands ids out again
/// after it restarts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: Option<Text>,
    pub host: Option<Text>,
    pub port: Option<u16>,
}

impl Identity {
    pub fn of(s: &Session) -> Identity {
        Identity {
            user: s.user.clone(),
            host: s.host.clone(),
            port: s.port,
        }
    }

    /// Whether `s` has this account and client.
    pub fn is(&self, s: &Session) -> bool {
        self.user == s.user && self.host == s.host && self.port == s.port
    }
}

/// An open InnoDB transaction of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: Text,
    /// Age in milliseconds, never more than it can be.
    pub age_ms: u64,
}

/// What the server said about itself when the snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServerInfo {
    /// `mariadb`, `mysql`, or the cloud product.
    pub flavour: String,
    #[serde(default)]
    pub version: String,
    /// When the server started (ids restart with it), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

/// Every session of one target at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`Snapshot::FORMAT`]; lets `plan --snapshot` tell our files from vendors'.
    pub format: String,
    pub target: String,
    pub provider: String,
    /// When the process list was requested (the data is at least this old).
    pub taken_at: DateTime<Utc>,
    #[serde(default)]
    pub server: ServerInfo,
    /// Our own connections to the server: never victims.
    #[serde(default)]
    pub own_connection_ids: Vec<u64>,
    /// Whether `Session::trx` is reported. Without it, `in_transaction` and
    /// `min_trx_time` match nothing.
    #[serde(default)]
    pub transactions: bool,
    /// Set when the list is known to be incomplete (a failed page, a full page, a
    /// timed-out async query): such a snapshot never leads to a kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// Shared: a replayed snapshot kept between ticks is not copied for each one.
    pub sessions: Arc<Vec<Session>>,
}

impl Snapshot {
    pub const FORMAT: &'static str = "session-reaper/snapshot/v1";
}
