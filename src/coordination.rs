//! Several replicas, no double kill: each target is owned by the replica that holds
//! `GET_LOCK('session-reaper/<target>', 0)` on a dedicated connection to a
//! coordination server (any MySQL or MariaDB).
//!
//! A lock dies with its connection, so a crashed replica's targets are free at once
//! and another replica takes them at its next round (a third of the lease). A
//! replica acts on a target only while it confirmed its lock less than `lease` ago;
//! the connection's `wait_timeout` is twice the lease, so a partitioned replica has
//! stopped acting well before the server frees its locks for another (fencing).
//! Replicas take member slots (`session-reaper/member/<n>`) to count each other and
//! hold at most their fair share of the targets, each preferring its own targets by
//! rendezvous hashing, so that they rarely contend.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::secret;
use crate::config::yaml::Value as YamlValue;
use crate::metrics::Metrics;

pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
const MEMBER_SLOTS: usize = 64;
/// GET_LOCK names are at most 64 characters.
const MAX_LOCK_NAME: usize = 64;

#[derive(Debug, Clone)]
pub struct Coordination {
    pub url: String,
    opts: Opts,
    password: Option<SecretString>,
    pub lease: Duration,
}

/// Reads `coordination: {mysql: {url, password, lease}}`.
pub fn read(v: &YamlValue<'_>, base: &Path) -> Option<Coordination> {
    let map = v.map(&["mysql"])?;
    let mysql = map.require("mysql")?.map(&["url", "password", "lease"])?;
    let url_v = mysql.require("url")?;
    let url = url_v.str()?;
    let opts = match Opts::from_url(url) {
        Ok(o) if o.pass().is_some() => {
            url_v.error(
                "the password is written in `coordination.mysql.url`; secrets are never inline",
                Some("add `password: {env: VARIABLE}`".to_owned()),
            );
            return None;
        }
        Ok(o) => o,
        Err(e) => {
            url_v.error(
                format!("`coordination.mysql.url` is not a MySQL URL: {e}"),
                None,
            );
            return None;
        }
    };
    let password = match mysql.get("password") {
        Some(p) => Some(secret::read(&p, base)?),
        None => None,
    };
    let lease = match mysql.get("lease") {
        Some(l) => {
            let d = l.duration()?;
            if d < Duration::from_secs(2) {
                l.error("`coordination.mysql.lease` must be at least 2s", None);
                return None;
            }
            d
        }
        None => DEFAULT_LEASE,
    };
    Some(Coordination {
        url: url.to_owned(),
        opts,
        password,
        lease,
    })
}

/// The lock of a target: `session-reaper/<target>`, shortened with a hash when the
/// name would be longer than GET_LOCK allows.
pub fn lock_name(target: &str) -> String {
    let name = format!("session-reaper/{target}");
    if name.len() <= MAX_LOCK_NAME {
        return name;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.hash(&mut h);
    let keep: String = target.chars().take(30).collect();
    format!("session-reaper/{keep}#{:016x}", h.finish())
}

fn member_name(slot: usize) -> String {
    format!("session-reaper/member/{slot}")
}

/// Which targets this replica may act on, and since when it is sure.
pub struct Leases {
    lease: Duration,
    state: Mutex<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    /// Target → when its lock was last confirmed (the instant the confirming
    /// query was sent, never later).
    held: HashMap<String, Instant>,
    connected: bool,
    member_slot: Option<usize>,
    members: usize,
    last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    pub server: String,
    pub connected: bool,
    pub member_slot: Option<usize>,
    pub members: usize,
    pub lease_ms: u64,
    pub owned: Vec<String>,
    pub last_error: Option<String>,
}

impl Leases {
    pub fn new(lease: Duration) -> Leases {
        Leases {
            lease,
            state: Mutex::new(LeaseState::default()),
        }
    }

    /// Whether this replica may evaluate and kill `target` now.
    pub fn may_act(&self, target: &str) -> bool {
        self.state
            .lock()
            .map(|s| {
                s.held
                    .get(target)
                    .is_some_and(|at| at.elapsed() < self.lease)
            })
            .unwrap_or(false)
    }

    pub fn connected(&self) -> (bool, Option<String>) {
        self.state
            .lock()
            .map(|s| (s.connected, s.last_error.clone()))
            .unwrap_or((false, Some("lease state unavailable".to_owned())))
    }

    pub fn status(&self, server: &str) -> LeaseStatus {
        let s = self.state.lock();
        match s {
            Ok(s) => {
                let mut owned: Vec<String> = s
                    .held
                    .iter()
                    .filter(|(_, at)| at.elapsed() < self.lease)
                    .map(|(t, _)| t.clone())
                    .collect();
                owned.sort();
                LeaseStatus {
                    server: server.to_owned(),
                    connected: s.connected,
                    member_slot: s.member_slot,
                    members: s.members,
                    lease_ms: self.lease.as_millis() as u64,
                    owned,
                    last_error: s.last_error.clone(),
                }
            }
            Err(_) => LeaseStatus {
                server: server.to_owned(),
                connected: false,
                member_slot: None,
                members: 0,
                lease_ms: self.lease.as_millis() as u64,
                owned: Vec::new(),
                last_error: Some("lease state unavailable".to_owned()),
            },
        }
    }

    fn lost_everything(&self, why: String) {
        if let Ok(mut s) = self.state.lock() {
            s.held.clear();
            s.connected = false;
            s.member_slot = None;
            s.last_error = Some(why);
        }
    }
}

/// Rendezvous score of `target` for this replica: each replica prefers a different
/// subset of the targets.
fn score(replica: u64, target: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (replica, target).hash(&mut h);
    h.finish()
}

/// Keeps this replica's leases until `stop`: connects, takes a member slot,
/// confirms held locks every third of the lease, takes free targets up to its
/// share and releases what is above it.
pub async fn run(
    config: Coordination,
    targets: Vec<String>,
    leases: Arc<Leases>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let replica: u64 = rand::random();
    let round = config.lease / 3;
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(250);
    let query_timeout = round.max(Duration::from_millis(500));
    loop {
        if *stop.borrow() {
            break;
        }
        if conn.is_none() {
            match connect(&config, query_timeout).await {
                Ok(c) => {
                    info!("coordination: connected to {}", config.url);
                    conn = Some(c);
                    backoff = Duration::from_millis(250);
                    if let Ok(mut s) = leases.state.lock() {
                        s.connected = true;
                        s.last_error = None;
                    }
                }
                Err(e) => {
                    let why = format!(
                        "coordination server {}: {e}; killing nothing until it answers",
                        config.url
                    );
                    if leases.connected().1.as_deref() != Some(&why) {
                        warn!("{why}");
                    }
                    leases.lost_everything(why);
                    update_metrics(&metrics, &targets, &leases);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(round.max(Duration::from_secs(1)));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let result =
            tokio::time::timeout(query_timeout * 3, one_round(c, replica, &targets, &leases)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let why = format!(
                    "coordination server {}: {e}; killing nothing until it answers",
                    config.url
                );
                warn!("{why}");
                leases.lost_everything(why);
                conn = None;
            }
            Err(_) => {
                let why = format!(
                    "coordination server {} did not answer in time; killing nothing until it answers",
                    config.url
                );
                warn!("{why}");
                leases.lost_everything(why);
                conn = None;
            }
        }
        update_metrics(&metrics, &targets, &leases);
        tokio::select! {
            _ = tokio::time::sleep(round) => {}
            _ = stop.changed() => break,
        }
    }
    // Leaving: the locks go with the connection.
    if let Some(c) = conn {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.disconnect()).await;
    }
    leases.lost_everything("stopped".to_owned());
    update_metrics(&metrics, &targets, &leases);
}

fn update_metrics(metrics: &Metrics, targets: &[String], leases: &Leases) {
    for t in targets {
        metrics
            .lease_held
            .with_label_values(&[t])
            .set(i64::from(leases.may_act(t)));
    }
}

async fn connect(config: &Coordination, timeout: Duration) -> Result<Conn, String> {
    let mut builder = OptsBuilder::from_opts(config.opts.clone())
        .prefer_socket(false)
        .stmt_cache_size(0);
    if let Some(p) = &config.password {
        builder = builder.pass(Some(p.expose_secret()));
    }
    let mut c = tokio::time::timeout(timeout * 3, Conn::new(builder))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    // The server frees a silent connection's locks after wait_timeout: twice the
    // lease, so that a replica cut off has stopped acting before another may start.
    let wait = (config.lease.as_secs_f64() * 2.0).ceil() as u64 + 1;
    c.query_drop(format!(
        "SET SESSION wait_timeout = {wait}, interactive_timeout = {wait}"
    ))
    .await
    .map_err(|e| e.to_string())?;
    Ok(c)
}

/// A SELECT of several expressions, read as optional integers.
async fn select_ints(c: &mut Conn, exprs: &[String]) -> Result<Vec<Option<i64>>, String> {
    let mut out = Vec::with_capacity(exprs.len());
    for chunk in exprs.chunks(200) {
        let sql = format!("SELECT {}", chunk.join(", "));
        let row: Option<Row> = c.query_first(sql).await.map_err(|e| e.to_string())?;
        let row = row.ok_or("no row")?;
        for v in row.unwrap() {
            out.push(match v {
                Value::Int(i) => Some(i),
                Value::UInt(u) => i64::try_from(u).ok(),
                Value::Bytes(b) => std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()),
                _ => None,
            });
        }
    }
    Ok(out)
}

fn quote(name: &str) -> String {
    format!("'{}'", name.replace('\\', "\\\\").replace('\'', "''"))
}

async fn one_round(
    c: &mut Conn,
    replica: u64,
    targets: &[String],
    leases: &Leases,
) -> Result<(), String> {
    let sent_at = Instant::now();
    // A member slot: count the replicas.
    let slot = leases.state.lock().map(|s| s.member_slot).unwrap_or(None);
    if slot.is_none() {
        for i in 0..MEMBER_SLOTS {
            let got = select_ints(c, &[format!("GET_LOCK({}, 0)", quote(&member_name(i)))]).await?;
            if got.first() == Some(&Some(1)) {
                if let Ok(mut s) = leases.state.lock() {
                    s.member_slot = Some(i);
                }
                break;
            }
        }
    }
    let mut exprs: Vec<String> = (0..MEMBER_SLOTS)
        .map(|i| format!("IS_USED_LOCK({}) IS NOT NULL", quote(&member_name(i))))
        .collect();
    exprs.push("CONNECTION_ID()".to_owned());
    for t in targets {
        exprs.push(format!("IS_USED_LOCK({})", quote(&lock_name(t))));
    }
    let values = select_ints(c, &exprs).await?;
    let members = values[..MEMBER_SLOTS]
        .iter()
        .filter(|v| **v == Some(1))
        .count()
        .max(1);
    let me = values[MEMBER_SLOTS];
    let owners = &values[MEMBER_SLOTS + 1..];
    let mut mine: HashSet<&str> = HashSet::new();
    let mut free: Vec<&str> = Vec::new();
    for (t, owner) in targets.iter().zip(owners) {
        match owner {
            Some(o) if Some(*o) == me => {
                mine.insert(t);
            }
            None => free.push(t),
            Some(_) => {}
        }
    }
    let share = targets.len().div_ceil(members);
    // Above the share: release the targets this replica prefers least.
    let mut held: Vec<&str> = mine.iter().copied().collect();
    held.sort_by_key(|t| std::cmp::Reverse(score(replica, t)));
    let release: Vec<&str> = held.iter().skip(share).copied().collect();
    if !release.is_empty() {
        let exprs: Vec<String> = release
            .iter()
            .map(|t| format!("RELEASE_LOCK({})", quote(&lock_name(t))))
            .collect();
        select_ints(c, &exprs).await?;
        for t in &release {
            mine.remove(t);
            info!("coordination: released {t} (holding more than a share of {share})");
        }
    }
    // Below the share: take free targets, preferred ones first.
    if mine.len() < share && !free.is_empty() {
        free.sort_by_key(|t| std::cmp::Reverse(score(replica, t)));
        let want: Vec<&str> = free.into_iter().take(share - mine.len()).collect();
        let exprs: Vec<String> = want
            .iter()
            .map(|t| format!("GET_LOCK({}, 0)", quote(&lock_name(t))))
            .collect();
        let got = select_ints(c, &exprs).await?;
        for (t, g) in want.iter().zip(got) {
            if g == Some(1) {
                info!("coordination: this replica now owns {t}");
                mine.insert(t);
            }
        }
    }
    if let Ok(mut s) = leases.state.lock() {
        let before: HashSet<String> = s.held.keys().cloned().collect();
        s.held = mine.iter().map(|t| ((*t).to_owned(), sent_at)).collect();
        for lost in before.iter().filter(|t| !s.held.contains_key(*t)) {
            if !release.contains(&lost.as_str()) {
                warn!("coordination: lost the lease of {lost}");
            }
        }
        s.members = members;
        s.connected = true;
        s.last_error = None;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_fit_get_lock() {
        assert_eq!(lock_name("orders-primary"), "session-reaper/orders-primary");
        let long = "x".repeat(100);
        let name = lock_name(&long);
        assert!(name.len() <= MAX_LOCK_NAME, "{name}");
        assert_ne!(
            lock_name(&format!("{long}a")),
            lock_name(&format!("{long}b"))
        );
    }
}
