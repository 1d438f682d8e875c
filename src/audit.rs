//! The write-ahead audit log (`state_dir/audit.jsonl`, DESIGN.md invariant 5): one
//! JSON object per line, append-only. Intents are on disk (fsync) before their kills
//! are sent; one fsync covers a batch (group commit). If the log cannot be written,
//! nothing is killed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::core::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Intent,
    Outcome,
    WouldKill,
    Skip,
}

/// One audit line. Field names are DESIGN.md's; `intent_id` ties an intent to its
/// outcome (or skip) so that a crash mid-kill can be reconciled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub ts: String,
    pub event: Event,
    pub target: String,
    pub policy: String,
    pub session_id: u64,
    pub user: Option<String>,
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub db: Option<String>,
    pub command: String,
    pub time_ms: u64,
    pub fingerprint: Option<String>,
    pub action: String,
    pub mode: String,
    pub reason: String,
    pub result: Option<String>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_id: Option<String>,
}

/// The fields every record of one session shares.
pub struct Subject<'a> {
    pub target: &'a str,
    pub policy: &'a str,
    pub session: &'a Session,
    pub fingerprint: Option<String>,
    pub action: &'a str,
    pub mode: &'a str,
}

impl Record {
    pub fn new(event: Event, at: DateTime<Utc>, s: &Subject<'_>, reason: String) -> Record {
        Record {
            ts: timestamp(at),
            event,
            target: s.target.to_owned(),
            policy: s.policy.to_owned(),
            session_id: s.session.id,
            user: s.session.user.clone(),
            host: s.session.host.clone(),
            port: s.session.port,
            db: s.session.db.clone(),
            command: s.session.command.clone(),
            time_ms: s.session.time_ms,
            fingerprint: s.fingerprint.clone(),
            action: s.action.to_owned(),
            mode: s.mode.to_owned(),
            reason,
            result: None,
            error: None,
            intent_id: None,
        }
    }
}

/// RFC 3339, UTC, milliseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, thiserror::Error)]
#[error("the audit log {path} cannot be written: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub struct Audit {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl Audit {
    /// Opens (creating it and its directory if needed) the log for appending.
    pub fn open(path: &Path) -> Result<Audit, AuditError> {
        let audit = Audit::new(path);
        audit.check()?;
        Ok(audit)
    }

    /// A log that opens its file on first use (and again after a failed write).
    pub fn new(path: &Path) -> Audit {
        Audit {
            path: path.to_owned(),
            file: Mutex::new(None),
        }
    }

    /// Opens the file if it is not open: `Ok` means records can be appended.
    pub fn check(&self) -> Result<(), AuditError> {
        let mut guard = self
            .file
            .lock()
            .map_err(|_| self.err(std::io::Error::other("audit lock poisoned")))?;
        if guard.is_none() {
            *guard = Some(self.open_file()?);
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: std::io::Error) -> AuditError {
        AuditError {
            path: self.path.clone(),
            source,
        }
    }

    fn open_file(&self) -> Result<File, AuditError> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.err(e))
    }

    /// Appends `records` in one write; with `durable`, fsyncs before returning.
    /// Blocking: call from a blocking thread in async code.
    pub fn append(&self, records: &[Record], durable: bool) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * 320);
        for r in records {
            // Records are plain data: serialising them cannot fail.
            serde_json::to_writer(&mut buf, r).map_err(|e| self.err(std::io::Error::other(e)))?;
            buf.push(b'\n');
        }
        let mut guard = self
            .file
            .lock()
            .map_err(|_| self.err(std::io::Error::other("audit lock poisoned")))?;
        if guard.is_none() {
            *guard = Some(self.open_file()?);
        }
        let Some(file) = guard.as_mut() else {
            return Err(self.err(std::io::Error::other("audit log not open")));
        };
        let written = file
            .write_all(&buf)
            .and_then(|()| if durable { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Reopen next time: the file may have been replaced or the disk freed.
            *guard = None;
            return Err(self.err(e));
        }
        Ok(())
    }

    /// Reads every record of a log (for reconciliation and tests); unreadable lines
    /// (a torn last line after a crash) are skipped.
    pub fn read_all(path: &Path) -> std::io::Result<Vec<Record>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}
