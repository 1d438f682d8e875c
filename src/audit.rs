//! The write-ahead audit log (`state_dir/audit.jsonl`, DESIGN.md invariant 5): one
//! JSON object per line, append-only. Intents are on disk (fsync) before their kills
//! are sent; one fsync covers a batch (group commit). If the log cannot be written,
//! nothing is killed.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::core::session::{Session, Text};

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
///
/// The records of one run share their timestamp, target and policy name (`Arc`),
/// and the words of a closed set (action, mode, result) are not copied (`Cow`): a
/// storm writes thousands of records, and each copy was an allocation and a free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub ts: Arc<str>,
    pub event: Event,
    pub target: Arc<str>,
    pub policy: Arc<str>,
    pub session_id: u64,
    pub user: Option<Text>,
    pub host: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub db: Option<Text>,
    pub command: Text,
    pub time_ms: u64,
    pub fingerprint: Option<String>,
    pub action: Cow<'static, str>,
    pub mode: Cow<'static, str>,
    pub reason: String,
    pub result: Option<Cow<'static, str>>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_id: Option<String>,
    /// Outcomes of sent kills: microseconds from the compare-and-kill re-check read
    /// to the kill (sent, or for kills batched in one packet answered), the window
    /// in which the session could have changed. Not in DESIGN.md's field list: an
    /// addition, skipped when there was no kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_to_kill_us: Option<u64>,
}

/// The fields every record of one session shares.
pub struct Subject<'a> {
    pub target: &'a Arc<str>,
    pub policy: &'a Arc<str>,
    pub session: &'a Session,
    pub fingerprint: Option<String>,
    pub action: &'static str,
    pub mode: &'static str,
}

impl Record {
    /// A record at `ts` (from `timestamp`: formatted once for all records of a run).
    pub fn new(event: Event, ts: &Arc<str>, s: &Subject<'_>, reason: String) -> Record {
        Record {
            ts: ts.clone(),
            event,
            target: s.target.clone(),
            policy: s.policy.clone(),
            session_id: s.session.id,
            user: s.session.user.clone(),
            host: s.session.host.clone(),
            port: s.session.port,
            db: s.session.db.clone(),
            command: s.session.command.clone(),
            time_ms: s.session.time_ms,
            fingerprint: s.fingerprint.clone(),
            action: Cow::Borrowed(s.action),
            mode: Cow::Borrowed(s.mode),
            reason,
            result: None,
            error: None,
            intent_id: None,
            recheck_to_kill_us: None,
        }
    }
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Intent => "intent",
            Event::Outcome => "outcome",
            Event::WouldKill => "would-kill",
            Event::Skip => "skip",
        }
    }
}

impl Record {
    /// The record as one JSON object, exactly as serde_json writes it (the tests
    /// hold the two together), without serde's per-key escaping: a storm writes
    /// thousands of records while the kills wait.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.push(b'"');
            let bytes = s.as_bytes();
            // Most strings need no escape: one check, then one copy.
            if !needs_escape(bytes) {
                out.extend_from_slice(bytes);
                out.push(b'"');
                return;
            }
            let mut copied = 0;
            for (i, &b) in bytes.iter().enumerate() {
                let escape: &[u8] = match b {
                    b'"' => b"\\\"",
                    b'\\' => b"\\\\",
                    b'\n' => b"\\n",
                    b'\r' => b"\\r",
                    b'\t' => b"\\t",
                    0x08 => b"\\b",
                    0x0c => b"\\f",
                    0x00..=0x1f => b"",
                    _ => continue,
                };
                out.extend_from_slice(&bytes[copied..i]);
                if escape.is_empty() {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0xf)]);
                } else {
                    out.extend_from_slice(escape);
                }
                copied = i + 1;
            }
            out.extend_from_slice(&bytes[copied..]);
            out.push(b'"');
        }
        /// Whether any byte is below 0x20, `"` or `\\`: eight at a time (a storm
        /// writes thousands of records, each with a dozen strings).
        fn needs_escape(bytes: &[u8]) -> bool {
            const ONES: u64 = 0x0101_0101_0101_0101;
            const HIGH: u64 = 0x8080_8080_8080_8080;
            // A byte of `x` is zero: a high bit of the result (borrows may set more,
            // but never when none is).
            let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
            let mut chunks = bytes.chunks_exact(8);
            for chunk in &mut chunks {
                let mut word = [0; 8];
                word.copy_from_slice(chunk);
                let x = u64::from_le_bytes(word);
                let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
                if below_space
                    | zero(x ^ (ONES * u64::from(b'"')))
                    | zero(x ^ (ONES * u64::from(b'\\')))
                    != 0
                {
                    return true;
                }
            }
            chunks
                .remainder()
                .iter()
                .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
        }
        fn opt(out: &mut Vec<u8>, s: Option<&str>) {
            match s {
                Some(s) => string(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn number(out: &mut Vec<u8>, n: u64) {
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        out.extend_from_slice(b"{\"ts\":");
        string(out, &self.ts);
        out.extend_from_slice(b",\"event\":\"");
        out.extend_from_slice(self.event.as_str().as_bytes());
        out.extend_from_slice(b"\",\"target\":");
        string(out, &self.target);
        out.extend_from_slice(b",\"policy\":");
        string(out, &self.policy);
        out.extend_from_slice(b",\"session_id\":");
        number(out, self.session_id);
        out.extend_from_slice(b",\"user\":");
        opt(out, self.user.as_deref());
        out.extend_from_slice(b",\"host\":");
        opt(out, self.host.as_deref());
        if let Some(port) = self.port {
            out.extend_from_slice(b",\"port\":");
            number(out, u64::from(port));
        }
        out.extend_from_slice(b",\"db\":");
        opt(out, self.db.as_deref());
        out.extend_from_slice(b",\"command\":");
        string(out, &self.command);
        out.extend_from_slice(b",\"time_ms\":");
        number(out, self.time_ms);
        out.extend_from_slice(b",\"fingerprint\":");
        opt(out, self.fingerprint.as_deref());
        out.extend_from_slice(b",\"action\":");
        string(out, &self.action);
        out.extend_from_slice(b",\"mode\":");
        string(out, &self.mode);
        out.extend_from_slice(b",\"reason\":");
        string(out, &self.reason);
        out.extend_from_slice(b",\"result\":");
        opt(out, self.result.as_deref());
        out.extend_from_slice(b",\"error\":");
        opt(out, self.error.as_deref());
        if let Some(id) = &self.intent_id {
            out.extend_from_slice(b",\"intent_id\":");
            string(out, id);
        }
        if let Some(us) = self.recheck_to_kill_us {
            out.extend_from_slice(b",\"recheck_to_kill_us\":");
            number(out, us);
        }
        out.push(b'}');
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

/// Size-based rotation: `audit.jsonl` becomes `audit.jsonl.1` (and `.1` becomes
/// `.2`, ...) before a write would take it past `max_bytes`; `keep` rotated files
/// are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 100 << 20,
            keep: 5,
        }
    }
}

struct Open {
    file: File,
    size: u64,
}

pub struct Audit {
    path: PathBuf,
    rotation: Rotation,
    file: Mutex<Option<Open>>,
}

impl Audit {
    /// Opens (creating it and its directory if needed) the log for appending.
    pub fn open(path: &Path) -> Result<Audit, AuditError> {
        let audit = Audit::new(path, Rotation::default());
        audit.check()?;
        Ok(audit)
    }

    /// A log that opens its file on first use (and again after a failed write or
    /// a `reopen`).
    pub fn new(path: &Path, rotation: Rotation) -> Audit {
        Audit {
            path: path.to_owned(),
            rotation,
            file: Mutex::new(None),
        }
    }

    /// Opens the file if it is not open: `Ok` means records can be appended.
    pub fn check(&self) -> Result<(), AuditError> {
        let mut guard = self.lock()?;
        if guard.is_none() {
            *guard = Some(self.open_file()?);
        }
        Ok(())
    }

    /// Closes the file; the next write opens the path again (after logrotate moved
    /// it away: SIGUSR1).
    pub fn reopen(&self) {
        if let Ok(mut guard) = self.file.lock() {
            *guard = None;
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Open>>, AuditError> {
        self.file
            .lock()
            .map_err(|_| self.err(std::io::Error::other("audit lock poisoned")))
    }

    fn err(&self, source: std::io::Error) -> AuditError {
        AuditError {
            path: self.path.clone(),
            source,
        }
    }

    fn open_file(&self) -> Result<Open, AuditError> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        let mut size = file.metadata().map_err(|e| self.err(e))?.len();
        // A crash mid-write can leave a torn last line: end it, so that the next
        // record starts on a line of its own.
        if size > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::End(-1)).map_err(|e| self.err(e))?;
            file.read_exact(&mut last).map_err(|e| self.err(e))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(|e| self.err(e))?;
                size += 1;
            }
        }
        Ok(Open { file, size })
    }

    /// The rotated files, newest first: `audit.jsonl.1`, `.2`, ...
    pub fn rotated_path(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self) -> Result<(), AuditError> {
        let keep = self.rotation.keep;
        if keep == 0 {
            std::fs::remove_file(&self.path).map_err(|e| self.err(e))?;
        } else {
            for n in (1..keep).rev() {
                let from = self.rotated_path(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated_path(n + 1)).map_err(|e| self.err(e))?;
                }
            }
            std::fs::rename(&self.path, self.rotated_path(1)).map_err(|e| self.err(e))?;
        }
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Appends `records` in one write; with `durable`, fsyncs before returning.
    /// Blocking: call from a blocking thread in async code.
    pub fn append(&self, records: &[Record], durable: bool) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * 320);
        for r in records {
            r.write_json(&mut buf);
            buf.push(b'\n');
        }
        let mut guard = self.lock()?;
        if guard.is_none() {
            *guard = Some(self.open_file()?);
        }
        if let Some(open) = guard.as_ref()
            && open.size > 0
            && open.size + buf.len() as u64 > self.rotation.max_bytes
        {
            *guard = None;
            self.rotate()?;
            *guard = Some(self.open_file()?);
        }
        let Some(open) = guard.as_mut() else {
            return Err(self.err(std::io::Error::other("audit log not open")));
        };
        let written = open.file.write_all(&buf).and_then(|()| {
            if durable {
                open.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Reopen next time: the file may have been replaced or the disk freed.
            *guard = None;
            return Err(self.err(e));
        }
        open.size += buf.len() as u64;
        Ok(())
    }

    /// Calls `each` with every record of a log file, streaming (unreadable lines,
    /// such as a torn last line after a crash, are skipped). Only regular files are
    /// read.
    pub fn for_each_record(path: &Path, mut each: impl FnMut(Record)) -> std::io::Result<()> {
        use std::io::BufRead;
        if !std::fs::metadata(path)?.is_file() {
            return Ok(());
        }
        let reader = std::io::BufReader::new(File::open(path)?);
        for line in reader.split(b'\n') {
            if let Ok(r) = serde_json::from_slice(&line?) {
                each(r);
            }
        }
        Ok(())
    }

    /// Every record of a log file.
    pub fn read_all(path: &Path) -> std::io::Result<Vec<Record>> {
        let mut out = Vec::new();
        Audit::for_each_record(path, |r| out.push(r))?;
        Ok(out)
    }

    /// The log and its rotated files, oldest first.
    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = (1..=self.rotation.keep + 1)
            .rev()
            .map(|n| self.rotated_path(n))
            .collect();
        files.push(self.path.clone());
        files.into_iter().filter(|p| p.exists()).collect()
    }

    /// Intents without an outcome or a skip: kills a crash interrupted. Streams the
    /// files: memory grows with the open intents only.
    pub fn pending_intents(&self) -> Vec<Record> {
        let mut open: Vec<Record> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for file in self.files() {
            let _ = Audit::for_each_record(&file, |r| {
                let Some(id) = r.intent_id.clone() else {
                    return;
                };
                match r.event {
                    Event::Intent => {
                        index.insert(id, open.len());
                        open.push(r);
                    }
                    Event::Outcome | Event::Skip => {
                        if let Some(i) = index.remove(&id) {
                            open[i].intent_id = None;
                        }
                    }
                    Event::WouldKill => {}
                }
            });
        }
        open.retain(|r| r.intent_id.is_some());
        open
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        // Control bytes, quotes, backslashes, non-ASCII and plain text.
        "(\\PC|[\\x00-\\x1f\"\\\\\u{7f}é😀]){0,24}"
    }

    fn record() -> impl Strategy<Value = Record> {
        let event = prop_oneof![
            Just(Event::Intent),
            Just(Event::Outcome),
            Just(Event::WouldKill),
            Just(Event::Skip),
        ];
        (
            (text(), event, text(), text(), any::<u64>()),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(any::<u16>()),
                proptest::option::of(text()),
                text(),
                any::<u64>(),
            ),
            (proptest::option::of(text()), text(), text(), text()),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(any::<u64>()),
            ),
        )
            .prop_map(
                |(
                    (ts, event, target, policy, session_id),
                    (user, host, port, db, command, time_ms),
                    (fingerprint, action, mode, reason),
                    (result, error, intent_id, recheck_to_kill_us),
                )| Record {
                    ts: ts.into(),
                    event,
                    target: target.into(),
                    policy: policy.into(),
                    session_id,
                    user: user.map(Text::from),
                    host: host.map(Text::from),
                    port,
                    db: db.map(Text::from),
                    command: command.into(),
                    time_ms,
                    fingerprint,
                    action: action.into(),
                    mode: mode.into(),
                    reason,
                    result: result.map(Into::into),
                    error,
                    intent_id,
                    recheck_to_kill_us,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The audit line is byte for byte what serde_json writes, and reads back.
        #[test]
        fn records_are_written_as_serde_json_writes_them(r in record()) {
            let mut ours = Vec::new();
            r.write_json(&mut ours);
            let serde = serde_json::to_vec(&r).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&serde));
            let back: Record = serde_json::from_slice(&ours).unwrap();
            prop_assert_eq!(back, r);
        }
    }

    /// Each byte that needs an escape, at each place of strings shorter and longer
    /// than the eight bytes checked at a time, is escaped; the bytes next to them
    /// (space, `!`, `#`, `[`, `]`), DEL and a non-ASCII letter are not.
    #[test]
    fn every_byte_that_needs_an_escape_is_found_wherever_it_is() {
        let special = [
            '\0', '\n', '\u{1f}', '"', '\\', ' ', '\u{7f}', '#', '!', ']', '[', 'é',
        ];
        let session = Session {
            id: 1,
            command: "Sleep".into(),
            ..Session::default()
        };
        for len in [1, 7, 8, 9, 17, 24] {
            for at in 0..len {
                for c in special {
                    let mut s: String = "abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                    s.replace_range(at..=at, &c.to_string());
                    let r = Record {
                        reason: s.clone(),
                        ..Record::new(
                            Event::Intent,
                            &"2026-11-26T05:00:00.000Z".into(),
                            &Subject {
                                target: &"db".into(),
                                policy: &"p".into(),
                                session: &session,
                                fingerprint: None,
                                action: "kill",
                                mode: "enforce",
                            },
                            String::new(),
                        )
                    };
                    let mut ours = Vec::new();
                    r.write_json(&mut ours);
                    let serde = serde_json::to_vec(&r).unwrap();
                    assert_eq!(
                        String::from_utf8_lossy(&ours),
                        String::from_utf8_lossy(&serde),
                        "{s:?}"
                    );
                }
            }
        }
    }
}
