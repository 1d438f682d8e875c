//! The `mysql` provider: a direct connection to MySQL or MariaDB.
//!
//! Snapshot: `information_schema.PROCESSLIST` (MariaDB: millisecond `TIME_MS` and
//! `QUERY_ID`; MySQL 8.0.22 and later: `performance_schema.processlist` when it is
//! on) left-joined with `information_schema.INNODB_TRX`. The flavour is detected
//! once per connection, in the round trip of `probe_sql` (and one more on MySQL),
//! which also refuses an account without `PROCESS` (it would see only itself).
//! A re-check reads the same query for the ids it re-checks, or on MariaDB, when
//! whole seconds decide it, `SHOW PROCESSLIST` (`Listing::Show`). Kill: `KILL
//! CONNECTION id`, `KILL QUERY id`, and on MariaDB `KILL QUERY ID query_id`,
//! which can only end the statement that was matched. Kills go in
//! rounds: one re-check read of up to `KILL_BATCH` sessions per lane, then, on each
//! lane's connection at once, one packet of `KILL` statements for those still the
//! ones matched (a round trip per batch, not per kill: 3,000 idle sessions go in
//! about an eighth of a second). A packet's answers are read together, not as
//! each arrives (`answers_wait`).
//!
//! Connections come from a small pool of our own, so that kills run concurrently
//! and so that we know the id of every connection we hold: they are never victims.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value};
use rustc_hash::{FxHashMap, FxHashSet};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use super::{
    Capabilities, Factory, Gate, KillOutcome, KillRequest, KillResult, Needs, Provider,
    ProviderError, Recheck, Rechecker, Spec, Want,
};
use crate::config::secret;
use crate::config::yaml::Map;
use crate::core::policy::Action;
use crate::core::protected::KILLED_COMMAND;
use crate::core::session::{Identity, ServerInfo, Session, Snapshot, Text, Transaction};
use crate::metrics::Metrics;

pub const SPEC: Spec = Spec {
    name: "mysql",
    keys: &["url", "password", "timeout", "pool_size"],
    accounts: BUILTIN_ACCOUNTS,
    parse,
};

/// Accounts of the server itself and of managed services that run plain MySQL:
/// MySQL's internal accounts, MariaDB's, Amazon RDS's `rdsadmin`, Azure's
/// `azure_superuser`, Google Cloud SQL's `cloudsqladmin`.
const BUILTIN_ACCOUNTS: &[&str] = &[
    "mysql.session",
    "mysql.sys",
    "mysql.infoschema",
    "mariadb.sys",
    "rdsadmin",
    "azure_superuser",
    "cloudsqladmin",
];

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Two connections: kills run on both at once, each sending packets of up to
/// `KILL_BATCH` statements. Measured on MariaDB 10.11 (benches/storm): three or
/// four lanes clear 3,000 sessions no faster than two (the server's thread list is
/// what they contend for) and widen the window between re-check and kill.
const DEFAULT_POOL: u64 = 2;

fn parse(map: &Map<'_>, base: &Path) -> Option<Arc<dyn Factory>> {
    let url = map.require("url").and_then(|v| {
        let s = v.str()?;
        match Opts::from_url(s) {
            Ok(opts) => {
                if opts.pass().is_some() {
                    v.error(
                        "the password is written in `url`; secrets are never inline",
                        Some(
                            "remove it from the URL and add `password: {env: VARIABLE}`".to_owned(),
                        ),
                    );
                    return None;
                }
                if opts.user().is_none() {
                    v.error(
                        "`url` names no user",
                        Some("write `mysql://reaper@host:3306`".to_owned()),
                    );
                    return None;
                }
                Some((s.to_owned(), opts))
            }
            Err(e) => {
                v.error(
                    format!("`url` is not a MySQL URL: {e}"),
                    Some("write `mysql://user@host:3306`".to_owned()),
                );
                None
            }
        }
    });
    let password = match map.get("password") {
        Some(v) => Some(secret::read(&v, base)?),
        None => None,
    };
    let timeout = match map.get("timeout") {
        Some(v) => v.duration()?,
        None => DEFAULT_TIMEOUT,
    };
    let pool_size = match map.get("pool_size") {
        Some(v) => match v.u64()? {
            n @ 1..=64 => n,
            n => {
                v.error(format!("`pool_size` must be 1 to 64, not {n}"), None);
                return None;
            }
        },
        None => DEFAULT_POOL,
    };
    let (url, opts) = url?;
    Some(Arc::new(MysqlFactory {
        url,
        opts,
        password,
        timeout,
        pool_size: pool_size as usize,
    }))
}

#[derive(Debug)]
struct MysqlFactory {
    url: String,
    opts: Opts,
    password: Option<SecretString>,
    timeout: Duration,
    pool_size: usize,
}

impl Factory for MysqlFactory {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            transactions: true,
            kill_query: true,
            kills: true,
        }
    }

    fn default_max_snapshot_age(&self) -> Option<Duration> {
        Some(Duration::from_secs(5))
    }

    fn build(&self, target: &str, metrics: Arc<Metrics>) -> Arc<dyn Provider> {
        Arc::new(MysqlProvider {
            target: target.to_owned(),
            url: self.url.clone(),
            opts: self.opts.clone(),
            password: self.password.clone(),
            timeout: self.timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(self.pool_size),
            pool_size: self.pool_size,
            own_ids: Mutex::new(BTreeSet::new()),
            backoff: Mutex::new(Backoff::default()),
            warmed: AtomicBool::new(false),
            kill_pace_ns: AtomicU64::new(0),
            snapshot_server: Mutex::new(None),
            ending: Mutex::new(FxHashMap::default()),
            metrics,
        })
    }
}

/// Which process list a connection reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    MariaDb,
    /// MySQL with `performance_schema.processlist`.
    MySqlPerfSchema,
    /// MySQL reading `information_schema.PROCESSLIST`.
    MySql,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::MariaDb => "mariadb",
            Flavour::MySqlPerfSchema | Flavour::MySql => "mysql",
        }
    }
}

struct Pooled {
    conn: Conn,
    flavour: Flavour,
    version: String,
    started_at: Option<DateTime<Utc>>,
    /// When it went back to the pool.
    idle_since: Instant,
    /// When it was opened.
    opened_at: Instant,
}

/// Reconnect pacing: 250 ms doubling to 30 s, with jitter, reset by a success.
#[derive(Default)]
struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
    last_error: String,
}

impl Backoff {
    fn delay(failures: u32) -> Duration {
        let base = 250u64.saturating_mul(1 << failures.min(7)).min(30_000);
        let jitter = rand::random_range(0.8..1.2);
        Duration::from_millis((base as f64 * jitter) as u64)
    }
}

pub struct MysqlProvider {
    target: String,
    url: String,
    opts: Opts,
    password: Option<SecretString>,
    timeout: Duration,
    idle: Mutex<Vec<Pooled>>,
    permits: Semaphore,
    pool_size: usize,
    /// Ids of every connection we opened (live or recently closed).
    own_ids: Mutex<BTreeSet<u64>>,
    backoff: Mutex<Backoff>,
    /// Whether the pool's connections were opened ahead (`warm_up`, once).
    warmed: AtomicBool,
    /// How long the server took per `KILL` of the last packet whose answers all
    /// came, in nanoseconds (0: none yet). See `answers_wait`.
    kill_pace_ns: AtomicU64,
    /// When the server of the last snapshot started, as that snapshot's
    /// connection saw it, and when that snapshot's read began: a re-check on a
    /// connection opened since, which finds another start time, is reading a
    /// restarted server, whose connection ids start again.
    snapshot_server: Mutex<Option<(DateTime<Utc>, Instant)>>,
    /// Sessions that our `KILL CONNECTION` reached on a server read through
    /// `performance_schema.processlist`, by id (see `mark_ending`).
    ending: Mutex<FxHashMap<u64, Ending>>,
    metrics: Arc<Metrics>,
}

/// Whether two connections saw one server start (not a restart between them).
fn same_start(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= RESTART_TOLERANCE,
        (None, None) => true,
        _ => false,
    }
}

/// A session that a kill of ours reached, as the server listed it then.
#[derive(Debug)]
struct Ending {
    identity: Identity,
    /// When its server started: after a restart the ids start again.
    started_at: Option<DateTime<Utc>>,
}

impl Ending {
    fn of(session: &Session, started_at: Option<DateTime<Utc>>) -> Ending {
        Ending {
            identity: Identity::of(session),
            started_at,
        }
    }
}

/// MySQL's `performance_schema.processlist` keeps listing a session whose
/// `KILL CONNECTION` it accepted as it was (`Sleep`) until its thread has ended,
/// which takes seconds while its transaction rolls back, and answers another
/// `KILL` of it with "Unknown thread id". MariaDB lists such a session as
/// `Killed`, and MySQL's `information_schema` leaves it out. So that it is spared
/// (`Protection::BeingKilled`) instead of planned, sent a `KILL` and counted
/// against the policy's limits again on every tick, the sessions that our kills
/// reached (`ending`) are listed as `Killed` here, as long as the same id, user
/// and client of the same server start are listed. A read of the whole process
/// list (`whole`) forgets those it no longer lists.
fn mark_ending(
    sessions: &mut [Session],
    ending: &mut FxHashMap<u64, Ending>,
    started_at: Option<DateTime<Utc>>,
    whole: bool,
) {
    if ending.is_empty() {
        return;
    }
    ending.retain(|_, e| same_start(e.started_at, started_at));
    let mut listed = FxHashSet::default();
    for s in sessions.iter_mut() {
        if ending.get(&s.id).is_some_and(|e| e.identity.is(s)) {
            s.command = Text::from(KILLED_COMMAND);
            listed.insert(s.id);
        }
    }
    if whole {
        ending.retain(|id, _| listed.contains(id));
    }
}

/// A checked-out connection; goes back to the pool when dropped unless discarded.
struct Lease<'a> {
    provider: &'a MysqlProvider,
    conn: Option<Pooled>,
    /// Whether it came from the idle list (it may have died while idle).
    reused: bool,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut Pooled {
        // Only `discard` takes the connection out, and it consumes the lease.
        self.conn
            .as_mut()
            .expect("a lease holds its connection until discarded")
    }

    fn discard(mut self) {
        self.conn = None;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.conn.take()
            && let Ok(mut idle) = self.provider.idle.lock()
        {
            c.idle_since = Instant::now();
            idle.push(c);
        }
    }
}

/// A pooled connection idle at least this long is pinged before a lane's kill
/// packet goes on it (`kill_lease`).
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

const OWN_IDS_KEPT: usize = 1024;

impl MysqlProvider {
    fn err_query(&self, operation: &'static str, e: &mysql_async::Error) -> ProviderError {
        ProviderError::Query {
            target: self.target.clone(),
            operation,
            message: describe(e),
        }
    }

    fn err_timeout(&self, operation: &'static str) -> ProviderError {
        ProviderError::Timeout {
            target: self.target.clone(),
            operation,
            after: self.timeout,
        }
    }

    async fn lease(&self) -> Result<Lease<'_>, ProviderError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ProviderError::Other {
                target: self.target.clone(),
                message: "the connection pool is closed".to_owned(),
            })?;
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        if let Some(conn) = idle {
            return Ok(Lease {
                provider: self,
                conn: Some(conn),
                reused: true,
                _permit: permit,
            });
        }
        let conn = self.connect().await?;
        Ok(Lease {
            provider: self,
            conn: Some(conn),
            reused: false,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Pooled, ProviderError> {
        if let Ok(b) = self.backoff.lock()
            && let Some(not_before) = b.not_before
            && Instant::now() < not_before
        {
            let wait = not_before - Instant::now();
            return Err(ProviderError::Connect {
                target: self.target.clone(),
                message: format!(
                    "{} (next attempt in {})",
                    b.last_error,
                    crate::core::policy::format_duration(Duration::from_millis(
                        wait.as_millis() as u64
                    ))
                ),
            });
        }
        let result = self.connect_now().await;
        self.metrics.provider_request(
            "mysql",
            "connect",
            if result.is_ok() { "ok" } else { "error" },
        );
        if let Ok(mut b) = self.backoff.lock() {
            match &result {
                Ok(_) => *b = Backoff::default(),
                Err(e) => {
                    b.failures = b.failures.saturating_add(1);
                    b.not_before = Some(Instant::now() + Backoff::delay(b.failures - 1));
                    b.last_error = match e {
                        ProviderError::Connect { message, .. } => message.clone(),
                        other => other.to_string(),
                    };
                }
            }
        }
        result
    }

    async fn connect_now(&self) -> Result<Pooled, ProviderError> {
        let mut builder = OptsBuilder::from_opts(self.opts.clone())
            .stmt_cache_size(0)
            .prefer_socket(false);
        // Without these, the driver asks the server for them in a round trip of its
        // own on every connect. `max_allowed_packet` is only the driver's bound on
        // a packet (the server keeps its own); `wait_timeout` only drives the
        // driver's pool, which we do not use. A URL's own values win.
        if self.opts.max_allowed_packet().is_none() {
            builder = builder.max_allowed_packet(Some(1 << 30));
        }
        if self.opts.wait_timeout().is_none() {
            builder = builder.wait_timeout(Some(28_800));
        }
        if let Some(p) = &self.password {
            builder = builder.pass(Some(p.expose_secret()));
        }
        let connect_err = |message: String| ProviderError::Connect {
            target: self.target.clone(),
            message,
        };
        let mut conn = match tokio::time::timeout(self.timeout, Conn::new(builder)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(connect_err(format!("{} ({})", describe(&e), self.url))),
            Err(_) => {
                return Err(connect_err(format!(
                    "no answer within {} ({})",
                    crate::core::policy::format_duration(self.timeout),
                    self.url
                )));
            }
        };
        let id = u64::from(conn.id());
        if let Ok(mut ids) = self.own_ids.lock() {
            ids.insert(id);
            while ids.len() > OWN_IDS_KEPT {
                ids.pop_first();
            }
        }
        match tokio::time::timeout(self.timeout, probe(&mut conn, self.timeout)).await {
            Ok(Ok(Probe {
                sees_every_session: false,
                ..
            })) => Err(connect_err(format!(
                "connected as {}, but the account lacks the PROCESS privilege: the server \
                 would list only its own sessions, so no policy could ever match (GRANT \
                 PROCESS ON *.* to it; a connection keeps the privileges it opened with, \
                 so the next attempt takes the grant)",
                self.opts.user().unwrap_or("?")
            ))),
            Ok(Ok(Probe {
                flavour,
                version,
                started_at,
                sees_every_session: true,
            })) => Ok(Pooled {
                conn,
                flavour,
                version,
                started_at,
                idle_since: Instant::now(),
                opened_at: Instant::now(),
            }),
            Ok(Err(e)) => Err(connect_err(format!("connected, but {}", describe(&e)))),
            Err(_) => Err(connect_err(
                "connected, but the server did not answer".to_owned(),
            )),
        }
    }

    /// Opens the connections the pool is missing, each going idle as soon as it is
    /// open. A failure is not an error here (nothing needs these connections yet):
    /// it is counted in `provider_requests_total`, and a lane that finds no idle
    /// connection opens its own, as it would have.
    async fn warm_up(&self) {
        let idle = self.idle.lock().map(|v| v.len()).unwrap_or(0);
        // The snapshot being read holds one permit, unless it is still waiting to
        // read `INNODB_TRX` (`TRX_READ_SPACING`).
        let missing = self.permits.available_permits().saturating_sub(idle);
        futures::future::join_all((0..missing).map(|_| async {
            // Each opens under a permit, as a lease's own would, so that such a
            // waiting snapshot takes one of these instead of opening one more
            // than `pool_size`.
            let Ok(_permit) = self.permits.try_acquire() else {
                return;
            };
            if let Ok(conn) = self.connect().await
                && let Ok(mut idle) = self.idle.lock()
            {
                idle.push(conn);
            }
        }))
        .await;
    }

    fn own_ids(&self) -> Vec<u64> {
        self.own_ids
            .lock()
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Runs the process-list query on a leased connection, retrying once on a fresh
    /// connection when a pooled one turns out to have died while idle.
    async fn read_sessions(
        &self,
        want: &Want,
        only_ids: Option<&[u64]>,
        operation: &'static str,
    ) -> Result<(Vec<Session>, ServerInfo, Lease<'_>), ProviderError> {
        let trx_key = want
            .transactions
            .then(|| (self.opts.ip_or_hostname().to_owned(), self.opts.tcp_port()));
        if let Some(key) = &trx_key {
            let last = TRX_READS
                .lock()
                .ok()
                .and_then(|reads| reads.get(key).copied());
            if let Some(last) = last {
                tokio::time::sleep_until((last + TRX_READ_SPACING).into()).await;
            }
        }
        let mut attempt = 0;
        loop {
            let mut lease = self.lease().await?;
            let reused = lease.reused;
            let conn = lease.conn();
            let listing = listing(conn.flavour, want, only_ids);
            let sql = match listing {
                Listing::Show => "SHOW PROCESSLIST".to_owned(),
                Listing::Select(flavour) => processlist_query(flavour, want, only_ids),
            };
            // `SHOW PROCESSLIST` lists every session: the others are passed over
            // before their rows are read.
            let keep: Option<FxHashSet<u64>> = (listing == Listing::Show)
                .then(|| only_ids.unwrap_or_default().iter().copied().collect());
            let server = ServerInfo {
                flavour: conn.flavour.name().to_owned(),
                version: conn.version.clone(),
                started_at: conn.started_at,
            };
            let flavour = conn.flavour;
            // Each row becomes a session as it arrives: the rows of a large process
            // list are never all held at once next to the sessions made of them.
            let result = tokio::time::timeout(
                self.timeout,
                conn.conn
                    .query_fold(sql, Vec::new(), move |mut sessions, row: Row| {
                        let wanted = |keep: &FxHashSet<u64>| {
                            row.as_ref(0)
                                .and_then(value_u64)
                                .is_some_and(|id| keep.contains(&id))
                        };
                        if keep.as_ref().is_none_or(wanted) {
                            sessions.extend(session_from_row(row, listing));
                        }
                        sessions
                    }),
            )
            .await;
            if let Some(key) = &trx_key
                && let Ok(mut reads) = TRX_READS.lock()
            {
                reads.insert(key.clone(), Instant::now());
            }
            match result {
                Ok(Ok(mut sessions)) => {
                    self.metrics.provider_request("mysql", operation, "ok");
                    if flavour == Flavour::MySqlPerfSchema
                        && let Ok(mut ending) = self.ending.lock()
                    {
                        mark_ending(
                            &mut sessions,
                            &mut ending,
                            server.started_at,
                            only_ids.is_none(),
                        );
                    }
                    return Ok((sessions, server, lease));
                }
                Ok(Err(e)) => {
                    self.metrics.provider_request("mysql", operation, "error");
                    let fatal = e.is_fatal()
                        || matches!(e, mysql_async::Error::Io(_) | mysql_async::Error::Driver(_));
                    if fatal {
                        lease.discard();
                        if reused && attempt == 0 {
                            attempt += 1;
                            continue;
                        }
                    }
                    return Err(self.err_query(operation, &e));
                }
                Err(_) => {
                    self.metrics.provider_request("mysql", operation, "timeout");
                    lease.discard();
                    return Err(self.err_timeout(operation));
                }
            }
        }
    }

    /// One round of a kill: one re-check read of the round's sessions (up to a
    /// batch per lane), then the kills of those still the ones matched, one packet
    /// per lane, sent at once. Sharing the read between the lanes halves the scans
    /// of the whole process list a storm costs the server (each scan is its own
    /// work, however few ids it asks for), and the lanes' packets leave together.
    async fn kill_round<'r>(
        &self,
        round: Batch<'r>,
        lanes: usize,
        recheck: &Rechecker<'_>,
        gate: &Gate,
        outcomes: &mut [Option<KillOutcome>],
        rereads: &mut [u8],
    ) -> RoundEnd<'r> {
        let mut end = RoundEnd::default();
        let ids: Vec<u64> = round.iter().map(|(_, r)| r.session.id).collect();
        // Each re-check read lists every session on the server (the process list
        // has no index): what no request compares is left out of it, and on
        // MariaDB a round that whole seconds decide reads the cheaper `SHOW
        // PROCESSLIST` (`Listing::Show`).
        let want = Needs::want(round.iter().map(|(_, r)| r.needs));
        // The other lanes' connections are taken before the re-check is sent: a
        // server that restarts after the read breaks each of them, so no kill of
        // this round can reach a new server's sessions, whose ids start again.
        let kill_lanes = lanes.min(round.len()).max(1);
        let others = futures::future::join_all((1..kill_lanes).map(|_| self.kill_lease())).await;
        let (fresh, server, mut first) =
            match self.read_sessions(&want, Some(&ids), "recheck").await {
                Ok(x) => x,
                Err(e) => {
                    let why = format!("not sent: the re-check failed: {e}");
                    let failed = KillOutcome::without_recheck(KillResult::Failed(why));
                    return RoundEnd::stopped(outcomes, &round, failed, 1);
                }
            };
        let rechecked_at = Instant::now();
        // A re-check on a connection opened since the snapshot (it had to
        // reconnect) may have reached the server after a restart: its ids are not
        // the snapshot's, and nothing of it is killed. A connection older than the
        // snapshot that still answers proves there was none (a restart breaks it);
        // its start time, read when it opened, may be off by a clock step since.
        let snapshot = self.snapshot_server.lock().ok().and_then(|s| *s);
        if let (Some((then, read_at)), Some(now)) = (snapshot, server.started_at)
            && first.conn().opened_at > read_at
            && !same_start(Some(then), Some(now))
        {
            let changed = KillOutcome {
                result: KillResult::Changed(
                    "the server restarted since the snapshot (its connection ids start again)"
                        .to_owned(),
                ),
                rechecked_at: Some(rechecked_at),
                sent_at: None,
            };
            return RoundEnd::stopped(outcomes, &round, changed, lanes);
        }
        let fresh: FxHashMap<u64, Session> = fresh.into_iter().map(|s| (s.id, s)).collect();
        let mut send = Vec::with_capacity(round.len());
        for (i, req) in round {
            let result = match recheck(req, fresh.get(&req.session.id)) {
                Recheck::Proceed => {
                    send.push((i, req));
                    continue;
                }
                Recheck::Gone => KillResult::Gone,
                Recheck::Changed(why) => KillResult::Changed(why),
                // The server could not read the session just now (another thread
                // held its data lock): it is read again in later rounds, a few
                // times.
                Recheck::Unreadable(_) if rereads[i] < UNREADABLE_REREADS => {
                    rereads[i] += 1;
                    end.again.push((i, req));
                    continue;
                }
                Recheck::Unreadable(why) => KillResult::Changed(why),
            };
            outcomes[i] = Some(KillOutcome {
                result,
                rechecked_at: Some(rechecked_at),
                sent_at: None,
            });
        }
        if send.is_empty() {
            return end;
        }
        // The first round is re-checked while its intents are written. A re-check
        // that waited long at the gate (a slow fsync) is done again, so that the
        // window between re-check and kill stays what it is without it. Only the
        // wait counts: once the gate is open a round never goes back, however long
        // its own re-check took to judge (a round that always did would never end).
        let waited = Instant::now();
        if let Err(why) = gate.wait().await {
            let failed = KillOutcome::without_recheck(KillResult::Failed(why));
            return RoundEnd::stopped(outcomes, &send, failed, lanes);
        }
        if waited.elapsed() > GATE_RECHECK_AFTER {
            end.again.append(&mut send);
            return end;
        }
        // A lane whose connection could not be had sits this round out; what its
        // packet would have held is re-checked again in the next one.
        let mut leases: Vec<Lease<'_>> = std::iter::once(first)
            .chain(others.into_iter().flatten())
            .collect();
        let per = send.len().div_ceil(leases.len()).min(KILL_BATCH);
        if send.len() > per * leases.len() {
            end.again.extend(send.split_off(per * leases.len()));
        }
        leases.truncate(send.len().div_ceil(per));
        let packets: Vec<Batch<'r>> = send.chunks(per).map(<[_]>::to_vec).collect();
        let answers =
            futures::future::join_all(leases.iter_mut().zip(&packets).map(|(lease, packet)| {
                let conn = lease.conn();
                let text = kill_packet(conn.flavour, packet.iter().map(|(_, r)| *r));
                self.send_kills(&mut conn.conn, text, packet.len())
            }))
            .await;
        for ((mut lease, packet), answers) in leases.into_iter().zip(packets).zip(answers) {
            let mut lost = false;
            let (flavour, started_at) = (lease.conn().flavour, lease.conn().started_at);
            for (k, (i, req)) in packet.into_iter().enumerate() {
                let (result, at) = match answers.get(k) {
                    Some((Answer::Done, at)) => {
                        self.metrics.provider_request("mysql", "kill", "ok");
                        (KillResult::Killed, *at)
                    }
                    Some((Answer::Refused { code, message }, at)) => {
                        self.metrics.provider_request("mysql", "kill", "error");
                        (kill_error(*code, message), *at)
                    }
                    Some((Answer::Lost { why, outcome }, at)) => {
                        self.metrics.provider_request("mysql", "kill", outcome);
                        lost = true;
                        (KillResult::Unknown(why.clone()), *at)
                    }
                    None if lost => {
                        // Sent in the same packet as a kill whose answer never came:
                        // the server may have run it.
                        let (why, at) = answers
                            .last()
                            .and_then(|(a, at)| match a {
                                Answer::Lost { why, .. } => Some((why.clone(), *at)),
                                _ => None,
                            })
                            .unwrap_or_else(|| {
                                ("no answer to the kill".to_owned(), Instant::now())
                            });
                        (KillResult::Unknown(why), at)
                    }
                    None => {
                        // After an error the server runs none of the statements that
                        // follow in the packet: re-check and send them again.
                        end.again.push((i, req));
                        continue;
                    }
                };
                // The re-check listed it just now: either answer means it is ending.
                if flavour == Flavour::MySqlPerfSchema
                    && req.action == Action::Kill
                    && matches!(result, KillResult::Killed | KillResult::Gone)
                    && let Ok(mut ending) = self.ending.lock()
                {
                    ending.insert(req.session.id, Ending::of(req.session, started_at));
                }
                outcomes[i] = Some(KillOutcome {
                    result,
                    rechecked_at: Some(rechecked_at),
                    sent_at: Some(at),
                });
            }
            if lost {
                lease.discard();
                end.lost_lanes += 1;
                end.rest = Some(KillResult::Failed(
                    "not sent: the connection broke".to_owned(),
                ));
            }
        }
        end
    }

    /// A connection for a lane whose packet goes without a read of its own on that
    /// connection first: one idle for a while is pinged, so that a connection the
    /// server dropped meanwhile (`wait_timeout`, a proxy) is replaced instead of
    /// turning every kill of the packet into an unknown. `None` when none can be had.
    async fn kill_lease(&self) -> Option<Lease<'_>> {
        for _ in 0..=self.pool_size {
            let mut lease = self.lease().await.ok()?;
            if !lease.reused || lease.conn().idle_since.elapsed() < PING_IDLE_AFTER {
                return Some(lease);
            }
            let alive = tokio::time::timeout(self.timeout, lease.conn().conn.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            self.metrics
                .provider_request("mysql", "ping", if alive { "ok" } else { "error" });
            if alive {
                return Some(lease);
            }
            lease.discard();
        }
        None
    }

    /// Sends `packet` of `n` statements. The answer of each, in order, with the
    /// moment it was read, up to the first error: the server runs none after it.
    async fn send_kills(
        &self,
        conn: &mut Conn,
        packet: String,
        n: usize,
    ) -> Vec<(Answer, Instant)> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        // What a failed step says of its statement: refused by the server, or lost
        // with the connection (no answer, or none in time: it may have run).
        let failed = |e: Option<mysql_async::Error>| match e {
            Some(mysql_async::Error::Server(e)) => Answer::Refused {
                code: e.code,
                message: e.message,
            },
            Some(e) => Answer::Lost {
                why: format!("no answer to the kill: {}", describe(&e)),
                outcome: "error",
            },
            None => Answer::Lost {
                why: format!(
                    "no answer to the kill within {}",
                    crate::core::policy::format_duration(self.timeout)
                ),
                outcome: "timeout",
            },
        };
        let mut result = match tokio::time::timeout_at(deadline, conn.query_iter(packet)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return vec![(failed(Some(e)), Instant::now())],
            Err(_) => return vec![(failed(None), Instant::now())],
        };
        let mut out = Vec::with_capacity(n);
        let first_at = Instant::now();
        out.push((Answer::Done, first_at));
        let pace = self.kill_pace_ns.load(Ordering::Relaxed);
        let wait = answers_wait(pace, n);
        if !wait.is_zero() && tokio::time::Instant::now() + wait < deadline {
            tokio::time::sleep(wait).await;
        }
        // Consuming the (empty) result of statement k reads the answer to statement
        // k + 1: an OK becomes the next pending result, an error is kept and returned
        // when that result is consumed. So the call that consumes statement k tells
        // whether statement k failed (statement 0's answer came with `query_iter`).
        // One deadline for all of the packet's answers: one timer, not one per answer.
        let read = async {
            let mut read_at = first_at;
            for k in 0..n {
                match result.collect::<Row>().await {
                    Ok(_) => {
                        if k > 0 {
                            out.push((Answer::Done, read_at));
                        }
                        read_at = Instant::now();
                    }
                    Err(e @ mysql_async::Error::Server(_)) => {
                        // The answer read last (to statement k, or k + 1 at k = 0).
                        out.push((failed(Some(e)), read_at));
                        return;
                    }
                    Err(e) => {
                        out.push((failed(Some(e)), Instant::now()));
                        return;
                    }
                }
            }
        };
        if tokio::time::timeout_at(deadline, read).await.is_err() {
            out.push((failed(None), Instant::now()));
        }
        if out.len() == n
            && out.iter().all(|(a, _)| matches!(a, Answer::Done))
            && let Some(pace) = kill_pace(first_at, out[n - 1].1, n)
        {
            self.kill_pace_ns.store(pace, Ordering::Relaxed);
        }
        out
    }
}

/// What a new connection asks its server, in one packet and one round trip: its
/// version and its start time (now less `Uptime`), and on MariaDB 10.1 and later
/// a server-side bound on our own statements, below our client timeout. (MySQL
/// is then asked whether `performance_schema` is on, in a second round trip.)
/// - `Uptime` is read in the session's scope, where it is the same number: for
///   the global one MariaDB first sums every thread's status (1.2–1.5 ms among
///   3,000 sessions, against 0.18 ms).
/// - The bound is in an executable comment that only MariaDB runs (`/*M!`):
///   MySQL reads it as a comment and sets the user variable alone, and MariaDB
///   before 10.1, which has no `max_statement_time`, skips it.
fn probe_sql(timeout: Duration) -> String {
    let secs = (timeout.as_secs_f64() * 0.9).max(0.1);
    format!(
        "SELECT VERSION(), CAST(UNIX_TIMESTAMP(NOW(6)) AS CHAR); \
         SHOW SESSION STATUS LIKE 'Uptime'; \
         SET @session_reaper = 1 /*M!100100 , SESSION max_statement_time = {secs:.3} */; \
         {PROCESS_CHECK}"
    )
}

/// Refused (error 1227) to an account without the `PROCESS` privilege, on MariaDB
/// and MySQL alike (seen on 10.11 and 9.7): such an account's process list shows
/// only its own sessions, and says so nowhere else. One of InnoDB's metrics, not
/// `INNODB_TRX`, whose cache a read would refresh (`TRX_READ_SPACING`); asked for
/// by name, as a `LIMIT 0` would skip the check. Last in the probe: an error ends
/// the packet.
const PROCESS_CHECK: &str =
    "SELECT COUNT(*) FROM information_schema.INNODB_METRICS WHERE NAME = 'trx_rw_commits'";

/// MySQL's and MariaDB's `ER_SPECIFIC_ACCESS_DENIED_ERROR`.
const SPECIFIC_ACCESS_DENIED: u16 = 1227;

/// What `probe` learnt of a server.
#[doc(hidden)]
pub struct Probe {
    pub version: String,
    /// Now less `Uptime`, by the server's clock.
    pub started_at: Option<DateTime<Utc>>,
    /// False when the account lacks `PROCESS` (`PROCESS_CHECK`), so that it
    /// would see only its own sessions.
    pub sees_every_session: bool,
    flavour: Flavour,
}

impl Probe {
    /// `mariadb` or `mysql`.
    pub fn flavour(&self) -> &'static str {
        self.flavour.name()
    }
}

/// Asks a new connection's server `probe_sql`, and MySQL whether
/// `performance_schema` is on. Public for the tests against a real server.
#[doc(hidden)]
pub async fn probe(conn: &mut Conn, timeout: Duration) -> Result<Probe, mysql_async::Error> {
    let mut result = conn.query_iter(probe_sql(timeout)).await?;
    let version: Vec<(String, String)> = result.collect().await?;
    let uptime: Vec<(String, String)> = result.collect().await?;
    // The `SET`: no rows.
    result.collect::<Value>().await?;
    let sees_every_session = match result.collect::<Value>().await {
        Ok(_) => true,
        Err(mysql_async::Error::Server(e)) if e.code == SPECIFIC_ACCESS_DENIED => false,
        // A server without InnoDB's metrics cannot say: read as before.
        Err(mysql_async::Error::Server(_)) => true,
        Err(e) => return Err(e),
    };
    result.drop_result().await?;
    let (version, now) = version.into_iter().next().unwrap_or_default();
    // MySQL only: a MariaDB built without it has no such variable, and
    // `SHOW VARIABLES` costs the server more than the rest of the probe.
    let performance_schema = if is_mariadb(&version) {
        None
    } else {
        conn.query_first::<Value, _>("SELECT @@performance_schema")
            .await?
    };
    let flavour = flavour_of(&version, performance_schema.as_ref().and_then(value_u64));
    let started_at = match (
        now.parse::<f64>(),
        uptime.first().and_then(|(_, u)| u.parse::<f64>().ok()),
    ) {
        (Ok(now), Some(up)) => DateTime::from_timestamp_millis(((now - up) * 1000.0) as i64),
        _ => None,
    };
    Ok(Probe {
        version,
        started_at,
        sees_every_session,
        flavour,
    })
}

/// The flavour of a server from its `VERSION()` and its `performance_schema`
/// setting: MySQL has `performance_schema.processlist` from 8.0.22 on, and only
/// while `performance_schema` is on; before, `information_schema.PROCESSLIST`.
fn flavour_of(version: &str, performance_schema: Option<u64>) -> Flavour {
    if is_mariadb(version) {
        return Flavour::MariaDb;
    }
    if performance_schema == Some(1) && version_triple(version).is_some_and(|v| v >= (8, 0, 22)) {
        Flavour::MySqlPerfSchema
    } else {
        Flavour::MySql
    }
}

/// Whether a `VERSION()` is MariaDB's (`10.11.19-MariaDB-0+deb12u1`).
fn is_mariadb(version: &str) -> bool {
    version.contains("MariaDB")
}

/// The leading `major.minor.patch` of a version string (`8.0.35-log`).
fn version_triple(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.splitn(3, '.').map(|p| {
        let end = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
        p[..end].parse::<u32>().ok()
    });
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// The longest wait before reading a packet's answers.
const MAX_ANSWERS_WAIT: Duration = Duration::from_millis(50);

/// How long to wait, once the first answer of a packet of `n` kills is read,
/// before reading the others: three quarters of what the last packet's took at
/// `pace_ns` a kill. The server sends each answer as it kills; read as they came,
/// they woke the daemon once for every two or three (a storm of 3,000 kills:
/// 1,100 wake-ups, about half of its CPU). Read together, most are already there,
/// and the rest trickle in as before. A kill's recorded answer time is when it
/// was read, so it is later by up to this wait, never earlier.
fn answers_wait(pace_ns: u64, n: usize) -> Duration {
    let rest = pace_ns.saturating_mul(n.saturating_sub(1) as u64);
    Duration::from_nanos(rest / 4 * 3).min(MAX_ANSWERS_WAIT)
}

/// The time per kill between a packet's first answer and its last, `n` answers
/// in all: `None` for a packet of one. Waiting longer than the answers took
/// makes the next pace shorter, so the wait settles below what the server needs.
fn kill_pace(first_at: Instant, last_at: Instant, n: usize) -> Option<u64> {
    let gaps = u64::try_from(n.checked_sub(1)?).ok().filter(|&g| g > 0)?;
    let took = u64::try_from(last_at.saturating_duration_since(first_at).as_nanos()).ok()?;
    Some(took / gaps)
}

/// Requests (with their index) re-checked and killed together.
type Batch<'r> = Vec<(usize, &'r KillRequest<'r>)>;

/// How a round of a kill ended: what goes into the next round, how many lanes
/// were lost (a broken connection, a failed re-check, a closed gate, a restarted
/// server) and what the requests no lane is left for come to.
#[derive(Default)]
struct RoundEnd<'r> {
    again: Batch<'r>,
    lost_lanes: usize,
    rest: Option<KillResult>,
}

impl RoundEnd<'_> {
    /// A round that stops before its kills: every request of `batch` comes to
    /// `outcome`, `lost` lanes are lost, and so do the requests no lane is left for.
    fn stopped(
        outcomes: &mut [Option<KillOutcome>],
        batch: &Batch<'_>,
        outcome: KillOutcome,
        lost: usize,
    ) -> Self {
        for &(i, _) in batch {
            outcomes[i] = Some(outcome.clone());
        }
        RoundEnd {
            again: Vec::new(),
            lost_lanes: lost,
            rest: Some(outcome.result),
        }
    }
}

/// Two connections to one server may see its start time up to a second apart
/// (`UNIX_TIMESTAMP(NOW(6))` less a whole-second `Uptime`).
const RESTART_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// A round that waited longer than this for the gate to open is re-checked again
/// before its kills are sent (the intents' fsync took longer than the read).
const GATE_RECHECK_AFTER: Duration = Duration::from_millis(10);

/// How long the first snapshot waits, once it is read, for the pool's other
/// connections to finish opening (`warm_up`).
const WARM_UP_GRACE: Duration = Duration::from_millis(200);

/// InnoDB serves `INNODB_TRX` from a cache it refreshes only when the table was not
/// read in the last 100 ms (every read restarts that clock, whoever reads): reads
/// closer together than that see the same transactions, however old. Our reads of
/// it (snapshots and re-checks of transaction policies) keep this far apart, so a
/// re-check sees the transactions of its own moment, not the snapshot's.
const TRX_READ_SPACING: Duration = Duration::from_millis(110);

/// When this process last read `INNODB_TRX` of each server (host, port): every
/// target and tool on one server shares that server's cache.
static TRX_READS: std::sync::LazyLock<Mutex<HashMap<(String, u16), Instant>>> =
    std::sync::LazyLock::new(Default::default);

/// How many more times a session the server could not read (`Recheck::Unreadable`)
/// is re-checked in later rounds of one kill before it is left for the next tick.
const UNREADABLE_REREADS: u8 = 3;

/// At most this many kills go in one packet after one re-check. It bounds the
/// window between a session's re-check and its kill (a server runs a `KILL` in
/// tens of microseconds) while keeping re-checks, each a scan of the whole process
/// list, few.
const KILL_BATCH: usize = 250;

/// The server's answer to one `KILL` of a packet.
enum Answer {
    Done,
    Refused {
        code: u16,
        message: String,
    },
    /// The connection broke or timed out: whether it ran is unknown.
    Lost {
        why: String,
        outcome: &'static str,
    },
}

#[async_trait]
impl Provider for MysqlProvider {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    async fn snapshot(&self, want: &Want) -> Result<Snapshot, ProviderError> {
        let taken_at = Utc::now();
        let read_at = Instant::now();
        let read = std::pin::pin!(self.read_sessions(want, None, "snapshot"));
        let (sessions, server, lease) = if self.warmed.swap(true, Ordering::Relaxed) {
            read.await?
        } else {
            // The pool's other connections open while the first snapshot is read, so
            // that a storm's kill lanes start at once. When the snapshot is done
            // first, they get `WARM_UP_GRACE` more; the lanes open what is missing.
            let warm = std::pin::pin!(self.warm_up());
            match futures::future::select(read, warm).await {
                futures::future::Either::Left((read, warm)) => {
                    let read = read?;
                    let _ = tokio::time::timeout(WARM_UP_GRACE, warm).await;
                    read
                }
                futures::future::Either::Right(((), read)) => read.await?,
            }
        };
        drop(lease);
        if let Ok(mut last) = self.snapshot_server.lock() {
            *last = server.started_at.map(|started| (started, read_at));
        }
        Ok(Snapshot {
            format: Snapshot::FORMAT.to_owned(),
            target: self.target.clone(),
            provider: "mysql".to_owned(),
            taken_at,
            server,
            own_connection_ids: self.own_ids(),
            transactions: want.transactions,
            partial: None,
            sessions: sessions.into(),
        })
    }

    async fn kill(&self, requests: &[KillRequest], recheck: &Rechecker<'_>) -> Vec<KillOutcome> {
        self.kill_after(requests, recheck, &Gate::opened()).await
    }

    async fn kill_after(
        &self,
        requests: &[KillRequest],
        recheck: &Rechecker<'_>,
        gate: &Gate,
    ) -> Vec<KillOutcome> {
        if requests.is_empty() {
            return Vec::new();
        }
        let mut lanes = self.pool_size.min(requests.len()).max(1);
        let size = requests.len().div_ceil(lanes).clamp(1, KILL_BATCH);
        let mut queue: VecDeque<(usize, &KillRequest)> = requests.iter().enumerate().collect();
        let mut outcomes: Vec<Option<KillOutcome>> = vec![None; requests.len()];
        let mut rereads = vec![0u8; requests.len()];
        let mut failure = None;
        while lanes > 0 && !queue.is_empty() {
            let round: Batch<'_> = queue.drain(..queue.len().min(lanes * size)).collect();
            let end = self
                .kill_round(round, lanes, recheck, gate, &mut outcomes, &mut rereads)
                .await;
            // Statements not run, what a round re-checked but could not send, and
            // sessions the server could not read go first in the next round,
            // re-checked again.
            for item in end.again.into_iter().rev() {
                queue.push_front(item);
            }
            lanes = lanes.saturating_sub(end.lost_lanes);
            failure = end.rest.or(failure);
        }
        // Requests left when every lane had stopped.
        match failure {
            Some(rest) => KillOutcome::each_or(outcomes, rest),
            None => KillOutcome::each_or_not_attempted(outcomes),
        }
    }
}

/// The statements killing each of `requests`, as one packet (`KILL CONNECTION 7;
/// KILL QUERY ID 99`), written straight into one string.
fn kill_packet<'r>(
    flavour: Flavour,
    requests: impl Iterator<Item = &'r KillRequest<'r>>,
) -> String {
    let mut packet = String::new();
    let mut buf = itoa::Buffer::new();
    for (k, req) in requests.enumerate() {
        if k > 0 {
            packet.push_str("; ");
        }
        let id = req.session.id;
        let (verb, n) = match (req.action, flavour, req.session.query_id) {
            (Action::Kill, _, _) => ("KILL CONNECTION ", id),
            (Action::KillQuery, Flavour::MariaDb, Some(qid)) => ("KILL QUERY ID ", qid),
            (Action::KillQuery, _, _) => ("KILL QUERY ", id),
        };
        packet.push_str(verb);
        packet.push_str(buf.format(n));
    }
    packet
}

/// What a process-list read sends, and so how its rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// [`processlist_query`]'s `SELECT` for a flavour.
    Select(Flavour),
    /// MariaDB's `SHOW PROCESSLIST`, for a re-check that whole seconds decide
    /// ([`Want::seconds`]) and that compares neither statements nor transactions.
    /// It costs the server less than the `SELECT`, with or without `WHERE ID IN`,
    /// which first writes every thread into a temporary table: among 3,000
    /// sessions, 7.6 ms against 9.4 ms for a round's re-check on an AMD EPYC, 10.3
    /// against 17.0 ms on an Intel Xeon (benches/storm `probe`). Its columns are
    /// the `SELECT`'s in the same order, but it lists every session (the others
    /// are passed over as they arrive), `Time` is in whole seconds, `Info` is cut
    /// at 100 characters (not read) and there is no query id.
    ///
    /// MariaDB counts `Time` as it counts `TIME_MS`, from the microsecond the
    /// session's state began, and floors it (`sql_show.cc`: `(now - start) /
    /// HRTIME_RESOLUTION`; its knowledge base: `TIME_MS` "shows the same
    /// information as the column TIME"): never rounded up, as MySQL's count of
    /// seconds can be (`now - start_time`: MySQL is never read this way). Its
    /// `now` is read once the listing has passed every thread, so a row's time
    /// runs to that moment: a session that stayed as its row shows was that old
    /// by then, before its kill is sent.
    Show,
}

/// The listing a read of `want` sends (`only_ids` for a re-check).
fn listing(flavour: Flavour, want: &Want, only_ids: Option<&[u64]>) -> Listing {
    if flavour == Flavour::MariaDb
        && only_ids.is_some()
        && want.seconds
        && !want.sql
        && !want.transactions
    {
        Listing::Show
    } else {
        Listing::Select(flavour)
    }
}

/// MySQL's `TIME` subtracts whole seconds (the second its state began from the
/// second it is now), so a session 0.4 s into its state can be listed at 1 s:
/// read as the smallest age it can mean, one second less, so that nothing is
/// killed before its threshold (DESIGN.md, "Time"). `GREATEST` first: `TIME`
/// may be unsigned, and `0 - 1` would be an error.
const MYSQL_TIME_MS: &str = "(GREATEST(p.TIME, 1) - 1) * 1000";

/// The process-list query for a flavour and what the policies need.
fn processlist_query(flavour: Flavour, want: &Want, only_ids: Option<&[u64]>) -> String {
    let info = if want.sql { "p.INFO" } else { "NULL" };
    let (source, time, query_id) = match flavour {
        Flavour::MariaDb => (
            "information_schema.PROCESSLIST",
            "CAST(p.TIME_MS AS CHAR)",
            "p.QUERY_ID",
        ),
        Flavour::MySqlPerfSchema => ("performance_schema.processlist", MYSQL_TIME_MS, "NULL"),
        Flavour::MySql => ("information_schema.PROCESSLIST", MYSQL_TIME_MS, "NULL"),
    };
    // `trx_started` has whole seconds: the smallest age it can mean is now - started - 1s.
    let (trx_cols, trx_join) = if want.transactions {
        (
            "t.trx_id, GREATEST(0, TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) DIV 1000 - 1000)",
            " LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID",
        )
    } else {
        ("NULL, NULL", "")
    };
    let filter = match only_ids {
        Some(ids) if !ids.is_empty() => {
            let mut list = String::with_capacity(20 + ids.len() * 8);
            list.push_str(" WHERE p.ID IN (");
            let mut buf = itoa::Buffer::new();
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    list.push(',');
                }
                list.push_str(buf.format(*id));
            }
            list.push(')');
            list
        }
        _ => String::new(),
    };
    format!(
        "SELECT p.ID, p.USER, p.HOST, p.DB, p.COMMAND, {time}, p.STATE, {info}, {query_id}, {trx_cols} \
         FROM {source} p{trx_join}{filter}"
    )
}

fn value_u64(v: &Value) -> Option<u64> {
    match v {
        Value::UInt(u) => Some(*u),
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::Bytes(b) => digits(b.trim_ascii()),
        _ => None,
    }
}

/// A decimal number as `u64::from_str` reads it (an optional `+`, then digits; none
/// on overflow), from bytes: every row of a process list has three or four of them.
fn digits(b: &[u8]) -> Option<u64> {
    let b = b.strip_prefix(b"+").unwrap_or(b);
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true)),
    }
}

/// Milliseconds from `TIME_MS` ("1234.567") or [`MYSQL_TIME_MS`], floored, never negative.
fn value_ms(v: &Value) -> Option<u64> {
    match v {
        Value::Bytes(b) => {
            let s = b.trim_ascii();
            if s.starts_with(b"-") {
                return Some(0);
            }
            let whole = s.split(|&c| c == b'.').next()?;
            digits(whole)
        }
        Value::Int(i) => Some((*i).max(0) as u64),
        Value::UInt(u) => Some(*u),
        Value::Double(d) => Some(d.max(0.0) as u64),
        Value::Float(f) => Some(f.max(0.0) as u64),
        _ => None,
    }
}

/// `10.0.0.7:51234` → (`10.0.0.7`, 51234); `localhost` → (`localhost`, none).
/// TCP clients always carry `:port` in the process list; IPv6 ones too (`::1:51234`).
pub fn split_host(raw: &str) -> (Text, Option<u16>) {
    let (addr, port) = split_host_ref(raw);
    (Text::from(addr), port)
}

/// `split_host`, borrowing the address.
fn split_host_ref(raw: &str) -> (&str, Option<u16>) {
    if let Some(rest) = raw.strip_prefix('[')
        && let Some((addr, port)) = rest.split_once("]:")
    {
        return (addr, port_number(port));
    }
    // The port is the last few bytes: found from the end, byte by byte (each row of
    // a process list has a host; `rsplit_once` spent ten times as long).
    let colon = raw.bytes().rposition(|b| b == b':');
    match colon.map(|at| (&raw[..at], &raw[at + 1..])) {
        Some((addr, port)) if !addr.is_empty() => match port_number(port) {
            Some(p) => (addr, Some(p)),
            None => (raw, None),
        },
        _ => (raw, None),
    }
}

/// A port as the process list writes it: decimal digits only (no sign), at most
/// 65535.
fn port_number(s: &str) -> Option<u16> {
    if s.starts_with('+') {
        return None;
    }
    digits(s.as_bytes()).and_then(|p| u16::try_from(p).ok())
}

fn session_from_row(row: Row, listing: Listing) -> Option<Session> {
    let show = listing == Listing::Show;
    let mut v = row.unwrap_raw();
    // Text columns are taken out of the row: a statement's bytes become its
    // string without a copy; the short columns are moved into the session's own
    // `Text` (their buffers freed at once, so the snapshot holds none of them).
    let mut take = |i: usize| v.get_mut(i).and_then(Option::take).and_then(into_string);
    let (host, port) = take(2).map_or((None, None), host_and_port);
    let user = take(1).map(Text::from);
    // `SHOW PROCESSLIST` gives a session it could not read (`Busy`) the database
    // `""`, where the `SELECT` gives none.
    let db = take(3).filter(|d| !(show && d.is_empty())).map(Text::from);
    let command = take(4).map(Text::from).unwrap_or_default();
    let state = take(6).filter(|s| !s.is_empty()).map(Text::from);
    let sql = if show { None } else { take(7) };
    let trx_id = take(9).map(Text::from);
    let id = column(&v, 0).and_then(value_u64)?;
    let trx = match (trx_id, column(&v, 10).and_then(value_ms)) {
        (Some(id), Some(age_ms)) => Some(Transaction { id, age_ms }),
        _ => None,
    };
    let query_id = if listing == Listing::Select(Flavour::MariaDb) {
        column(&v, 8).and_then(value_u64)
    } else {
        None
    };
    let time_ms = if show {
        column(&v, 5)
            .and_then(value_u64)
            .map(|secs| secs.saturating_mul(1000))
    } else {
        column(&v, 5).and_then(value_ms)
    };
    Some(Session {
        id,
        user,
        host,
        port,
        db,
        command,
        time_ms: time_ms.unwrap_or(0),
        state,
        sql,
        query_id,
        trx,
        template_id: None,
        node: None,
    })
}

/// What a server's error to one `KILL` means.
fn kill_error(code: u16, message: &str) -> KillResult {
    // Written only for the results that carry it: a session gone is common in a
    // storm whose clients leave by themselves.
    let text = || format!("server error {code}: {message}");
    match code {
        // ER_NO_SUCH_THREAD, ER_NO_SUCH_QUERY
        1094 | 1957 => KillResult::Gone,
        // ER_KILL_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR: the account may
        // not kill it. 1095's words do not say what to grant; the hint does.
        1095 | 1227 => KillResult::Refused(format!(
            "{} (killing other accounts' sessions takes CONNECTION ADMIN on MariaDB \
             10.5.2 and later, CONNECTION_ADMIN on MySQL 8, SUPER on older servers; on \
             MySQL 8.0.16 and later, a session of an account with SYSTEM_USER takes \
             SYSTEM_USER too; a connection keeps the privileges it opened with, so \
             reload session-reaper after granting)",
            text()
        )),
        _ => KillResult::Failed(text()),
    }
}

/// `split_host` of a row's `HOST`; an empty host is none.
fn host_and_port(h: String) -> (Option<Text>, Option<u16>) {
    if h.is_empty() {
        return (None, None);
    }
    let (addr, port) = split_host(&h);
    (Some(addr), port)
}

fn column(v: &[Option<Value>], i: usize) -> Option<&Value> {
    v.get(i).and_then(Option::as_ref)
}

/// `value_string`, taking the bytes of a text value instead of copying them.
fn into_string(v: Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
        other => value_string(&other),
    }
}

/// A driver error in words, without the driver's decoration.
fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("server error {}: {}", s.code, s.message),
        mysql_async::Error::Io(io) => format!("network error: {io}"),
        mysql_async::Error::Driver(d) => format!("driver error: {d}"),
        mysql_async::Error::Url(u) => format!("bad URL: {u}"),
        mysql_async::Error::Other(o) => o.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session our kill reached is listed as `Killed` while the same session
    /// is listed; a read of the whole list forgets those it does not list, a
    /// read of some ids does not, and a restarted server forgets them all.
    #[test]
    fn sessions_our_kill_reached_are_listed_as_killed_until_they_end() {
        let started = Utc::now();
        let app = |id: u64, port: u16| Session {
            id,
            user: Some("app".into()),
            host: Some("10.0.0.7".into()),
            port: Some(port),
            command: "Sleep".into(),
            ..Session::default()
        };
        let commands = |sessions: &[Session]| -> Vec<String> {
            sessions.iter().map(|s| s.command.to_string()).collect()
        };
        let mut ending = FxHashMap::default();
        for (id, port) in [(7, 5001), (8, 5002), (9, 5003)] {
            ending.insert(id, Ending::of(&app(id, port), Some(started)));
        }

        // 7 is listed as it was; 8's id now has another client; 9 is not listed.
        let mut some = vec![app(7, 5001), app(8, 6000)];
        mark_ending(&mut some, &mut ending, Some(started), false);
        assert_eq!(commands(&some), ["Killed", "Sleep"]);
        assert_eq!(ending.len(), 3, "a read of some ids forgets nothing");

        // Another connection sees the same start a second apart.
        let later = started + chrono::TimeDelta::seconds(1);
        let mut whole = vec![app(7, 5001), app(8, 6000), app(10, 5004)];
        mark_ending(&mut whole, &mut ending, Some(later), true);
        assert_eq!(commands(&whole), ["Killed", "Sleep", "Sleep"]);
        assert_eq!(ending.keys().copied().collect::<Vec<_>>(), [7]);

        // A restarted server's id 7 is another session.
        let restarted = started + chrono::TimeDelta::seconds(60);
        let mut again = vec![app(7, 5001)];
        mark_ending(&mut again, &mut ending, Some(restarted), true);
        assert_eq!(commands(&again), ["Sleep"]);
        assert!(ending.is_empty());
    }

    /// A refused kill says what the account lacks; a session gone is not an
    /// error; anything else is a failure with the server's words.
    #[test]
    fn kill_errors_are_gone_refused_with_the_grant_or_failed() {
        assert_eq!(kill_error(1094, "Unknown thread id: 7"), KillResult::Gone);
        assert_eq!(kill_error(1957, "Unknown query id: 9"), KillResult::Gone);
        for code in [1095, 1227] {
            let KillResult::Refused(why) = kill_error(code, "You are not owner of thread 7") else {
                panic!("{code} is not a refusal");
            };
            assert!(why.starts_with(&format!(
                "server error {code}: You are not owner of thread 7 ("
            )));
            for grant in [
                "CONNECTION ADMIN on MariaDB",
                "CONNECTION_ADMIN on MySQL",
                "SYSTEM_USER",
                "reload session-reaper after granting",
            ] {
                assert!(why.contains(grant), "{why}");
            }
        }
        assert_eq!(
            kill_error(1053, "Server shutdown in progress"),
            KillResult::Failed("server error 1053: Server shutdown in progress".to_owned())
        );
    }

    #[test]
    fn the_flavour_follows_the_version_and_performance_schema() {
        let cases = [
            ("10.11.19-MariaDB-0+deb12u1", None, Flavour::MariaDb),
            ("10.11.19-MariaDB-log", Some(1), Flavour::MariaDb),
            ("5.5.5-10.6.12-MariaDB", None, Flavour::MariaDb),
            ("8.0.35", Some(1), Flavour::MySqlPerfSchema),
            ("8.0.22-log", Some(1), Flavour::MySqlPerfSchema),
            ("8.4.3", Some(1), Flavour::MySqlPerfSchema),
            ("9.1.0-commercial", Some(1), Flavour::MySqlPerfSchema),
            // `performance_schema.processlist` came in 8.0.22.
            ("8.0.21", Some(1), Flavour::MySql),
            ("5.7.44-log", Some(1), Flavour::MySql),
            ("8.0.35", Some(0), Flavour::MySql),
            ("8.0.35", None, Flavour::MySql),
            ("", Some(1), Flavour::MySql),
            ("8.0", Some(1), Flavour::MySql),
        ];
        for (version, pfs, want) in cases {
            assert_eq!(flavour_of(version, pfs), want, "{version} {pfs:?}");
        }
        assert_eq!(version_triple("8.0.35-0ubuntu0.22.04.1"), Some((8, 0, 35)));
        assert_eq!(version_triple("10.11.19-MariaDB"), Some((10, 11, 19)));
        assert_eq!(version_triple("x.0.1"), None);
    }

    #[test]
    fn the_probe_bounds_statements_below_the_timeout_on_mariadb_only() {
        let sql = probe_sql(Duration::from_secs(2));
        assert!(
            sql.contains(
                "SET @session_reaper = 1 /*M!100100 , SESSION max_statement_time = 1.800 */; "
            ),
            "{sql}"
        );
        assert!(probe_sql(Duration::from_millis(50)).contains("max_statement_time = 0.100 */"));
        // Four statements, one packet, the one that may be refused last.
        assert_eq!(sql.matches("; ").count(), 3, "{sql}");
        assert!(sql.ends_with(PROCESS_CHECK), "{sql}");
    }

    #[test]
    fn only_a_mariadb_recheck_that_whole_seconds_decide_reads_show_processlist() {
        let want = |sql, transactions, seconds| Want {
            sql,
            transactions,
            seconds,
            ..Want::default()
        };
        let ids: &[u64] = &[7, 9];
        let show = |flavour, w: Want, ids| listing(flavour, &w, ids) == Listing::Show;
        assert!(show(Flavour::MariaDb, want(false, false, true), Some(ids)));
        assert!(!show(
            Flavour::MariaDb,
            want(false, false, false),
            Some(ids)
        ));
        assert!(!show(Flavour::MariaDb, want(true, false, true), Some(ids)));
        assert!(!show(Flavour::MariaDb, want(false, true, true), Some(ids)));
        assert!(
            !show(Flavour::MariaDb, want(false, false, true), None),
            "a snapshot"
        );
        for mysql in [Flavour::MySql, Flavour::MySqlPerfSchema] {
            assert!(!show(mysql, want(false, false, true), Some(ids)));
        }
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(
            split_host("10.0.0.7:51234"),
            ("10.0.0.7".into(), Some(51234))
        );
        assert_eq!(split_host("localhost"), ("localhost".into(), None));
        assert_eq!(split_host("::1:51234"), ("::1".into(), Some(51234)));
        assert_eq!(split_host("[fe80::1]:3306"), ("fe80::1".into(), Some(3306)));
        assert_eq!(
            split_host("web-1.example.com:40000"),
            ("web-1.example.com".into(), Some(40000))
        );
        // What is not a port stays a part of the host.
        for raw in ["db:99999", "db:", "db:+80", "db:8o", ":3306"] {
            assert_eq!(split_host(raw), (raw.into(), None), "{raw}");
        }
        // In brackets, the address is the part inside them, with or without a port.
        for raw in [
            "[fe80::1]:99999",
            "[fe80::1]:",
            "[fe80::1]:+80",
            "[fe80::1]:8o",
        ] {
            assert_eq!(split_host(raw), ("fe80::1".into(), None), "{raw}");
        }
    }

    #[test]
    fn a_rows_host_is_split_as_split_host_splits_it() {
        for raw in [
            "10.0.0.7:51234",
            "localhost",
            "[fe80::1]:3306",
            "::1:51234",
            "db:99999",
            "x",
        ] {
            let (host, port) = host_and_port(raw.to_owned());
            assert_eq!((host.unwrap(), port), split_host(raw), "{raw}");
        }
        assert_eq!(host_and_port(String::new()), (None, None));
    }

    #[test]
    fn numbers_read_as_u64_from_str_reads_them() {
        let bytes = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        for s in [
            "0",
            "42",
            " 42 ",
            "+7",
            "18446744073709551615",
            "",
            "+",
            "-1",
            "4a",
            "1.5",
            "18446744073709551616",
        ] {
            assert_eq!(value_u64(&bytes(s)), s.trim().parse::<u64>().ok(), "{s:?}");
        }
        assert_eq!(value_ms(&bytes("-3.5")), Some(0));
        assert_eq!(value_ms(&bytes(".5")), None);
        assert_eq!(value_ms(&bytes("12x.5")), None);
    }

    #[test]
    fn time_ms_is_floored_never_rounded_up() {
        assert_eq!(value_ms(&Value::Bytes(b"1999.999".to_vec())), Some(1999));
        assert_eq!(value_ms(&Value::Bytes(b"0.400".to_vec())), Some(0));
        assert_eq!(value_ms(&Value::Bytes(b"-3.000".to_vec())), Some(0));
        assert_eq!(value_ms(&Value::Int(5000)), Some(5000));
    }

    #[test]
    fn kill_query_on_mariadb_binds_to_the_statement() {
        let mut s = Session {
            id: 7,
            user: Some("app".into()),
            host: None,
            port: None,
            db: None,
            command: "Query".into(),
            time_ms: 0,
            state: None,
            sql: None,
            query_id: Some(99),
            trx: None,
            template_id: None,
            node: None,
        };
        fn req(s: &Session, action: Action) -> KillRequest<'_> {
            KillRequest {
                session: s,
                action,
                ignored_users: &[],
                needs: Needs::default(),
                tag: 0,
            }
        }
        let one = |flavour, r: &KillRequest| kill_packet(flavour, std::iter::once(r));
        assert_eq!(
            one(Flavour::MariaDb, &req(&s, Action::KillQuery)),
            "KILL QUERY ID 99"
        );
        assert_eq!(
            one(Flavour::MySql, &req(&s, Action::KillQuery)),
            "KILL QUERY 7"
        );
        assert_eq!(
            one(Flavour::MariaDb, &req(&s, Action::Kill)),
            "KILL CONNECTION 7"
        );
        // A packet separates its statements with `; `, and ends with none.
        let (query, connection) = (req(&s, Action::KillQuery), req(&s, Action::Kill));
        assert_eq!(
            kill_packet(Flavour::MariaDb, [&query, &connection, &query].into_iter()),
            "KILL QUERY ID 99; KILL CONNECTION 7; KILL QUERY ID 99"
        );
        s.query_id = None;
        assert_eq!(
            one(Flavour::MariaDb, &req(&s, Action::KillQuery)),
            "KILL QUERY 7"
        );
    }

    /// The wait before reading a packet's answers is three quarters of what the
    /// last packet's took, never more than `MAX_ANSWERS_WAIT`, and none for a
    /// packet of one or before any pace is known.
    #[test]
    fn answers_are_read_after_three_quarters_of_the_last_packets_pace() {
        assert_eq!(answers_wait(0, 250), Duration::ZERO);
        assert_eq!(answers_wait(40_000, 1), Duration::ZERO);
        assert_eq!(answers_wait(40_000, 0), Duration::ZERO);
        // 249 answers after the first, 40 µs apart: 9.96 ms, of which 3/4.
        assert_eq!(answers_wait(40_000, 250), Duration::from_nanos(7_470_000));
        assert_eq!(answers_wait(1_000_000, 250), MAX_ANSWERS_WAIT);
        assert_eq!(answers_wait(u64::MAX, usize::MAX), MAX_ANSWERS_WAIT);
    }

    /// The pace is the time between the first and the last answer over the gaps
    /// between them; a packet of one, or a clock that went backwards, gives none
    /// or zero, so no wait follows from it.
    #[test]
    fn the_pace_of_kills_is_the_time_per_gap_between_answers() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_micros(9_960);
        assert_eq!(kill_pace(t0, t1, 250), Some(40_000));
        assert_eq!(kill_pace(t0, t1, 1), None);
        assert_eq!(kill_pace(t0, t1, 0), None);
        assert_eq!(kill_pace(t1, t0, 250), Some(0));
        // A wait longer than the answers needed shortens the next one: the pace
        // measured after waiting W is at most W per gap when all were there.
        let waited = answers_wait(40_000, 250);
        let next = kill_pace(t0, t0 + waited, 250).unwrap_or(u64::MAX);
        assert!(answers_wait(next, 250) < waited);
    }
}
