//! The `mysql` provider against a real MariaDB server.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use session_reaper::config;
use session_reaper::core::plan::{Spare, Why, manual_policy, plan};
use session_reaper::core::policy::Action;
use session_reaper::core::protected::Protection;
use session_reaper::core::recheck::{Recheck, recheck};
use session_reaper::core::session::{Session, Snapshot};
use session_reaper::metrics::Metrics;
use session_reaper::providers::{
    KillOutcome, KillRequest, KillResult, Needs, Provider, Want, gate,
};
use support::{MariaDb, Setup, wait_until};

fn provider(setup: &Setup, db: &MariaDb, reaper: &support::User) -> Arc<dyn Provider> {
    provider_with(setup, db, reaper, "")
}

/// `provider`, with more settings of the target (indented lines, such as
/// `"    pool_size: 3\n"`).
fn provider_with(
    setup: &Setup,
    db: &MariaDb,
    reaper: &support::User,
    settings: &str,
) -> Arc<dyn Provider> {
    let target = setup.mysql_target("db", db, reaper);
    let path = setup.config(&format!("targets:\n{target}{settings}"));
    let config = config::load(&path).expect("valid config");
    config.targets[0]
        .factory
        .build("db", Arc::new(Metrics::new()))
}

fn identity(req: &KillRequest, fresh: Option<&Session>) -> Recheck {
    recheck(
        req.session,
        fresh,
        req.action,
        None,
        &Default::default(),
        &[],
        true,
    )
}

/// The session of `user` running a statement, once the process list shows it. Read
/// without transactions: polling INNODB_TRX this often would keep InnoDB from
/// refreshing it (for the other tests too).
async fn running_statement(p: &dyn Provider, user: &str) -> Session {
    let want = Want {
        sql: true,
        ..Want::default()
    };
    for _ in 0..250 {
        let snap = p.snapshot(&want).await.unwrap();
        if let Some(s) = snap
            .sessions
            .iter()
            .find(|s| s.user.as_deref() == Some(user) && s.command == "Query")
        {
            return s.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no statement of {user} in the process list");
}

/// `n` idle sessions of a new user, and a provider (of a new reaper user) with
/// its first snapshot, which lists them.
struct Idle {
    app: support::User,
    conns: Vec<mysql_async::Conn>,
    p: Arc<dyn Provider>,
    snap: Snapshot,
}

async fn idle_sessions(db: &MariaDb, setup: &Setup, prefix: &str, n: usize) -> Idle {
    let reaper = db.reaper_user().await;
    let app = db.create_user(prefix, None).await;
    let conns = db.open_idle(&app, n).await;
    let p = provider(setup, db, &reaper);
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    Idle {
        app,
        conns,
        p,
        snap,
    }
}

/// A `KILL QUERY` of `session`'s statement, re-checked by identity.
async fn kill_query(p: &dyn Provider, session: &Session) -> Vec<KillOutcome> {
    p.kill(
        &[KillRequest {
            session,
            action: Action::KillQuery,
            ignored_users: &[],
            needs: Needs {
                sql: true,
                ..Needs::default()
            },
            tag: 0,
        }],
        &identity,
    )
    .await
}

/// The sessions of `user` in a snapshot.
fn sessions_of<'a>(snap: &'a Snapshot, user: &str) -> Vec<&'a Session> {
    snap.sessions
        .iter()
        .filter(|s| s.user.as_deref() == Some(user))
        .collect()
}

/// A `KILL CONNECTION` request for every session of `user`.
fn kills_of<'a>(snap: &'a Snapshot, user: &str) -> Vec<KillRequest<'a>> {
    sessions_of(snap, user)
        .into_iter()
        .map(|s| KillRequest {
            session: s,
            action: Action::Kill,
            ignored_users: &[],
            needs: Needs::default(),
            tag: 0,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_reads_mariadb_millisecond_times_query_ids_and_transactions() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("snap_app", None).await;
    let dbname = db.create_db("snap", &[&app]).await;
    let _idle = db.open_idle(&app, 2).await;
    let mut in_trx = db.connect(&app.name, &app.password).await.unwrap();
    in_trx
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .unwrap();
    in_trx
        .query_drop(format!(
            "SELECT * FROM `{dbname}`.t WHERE id = 1 FOR UPDATE"
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let p = provider(&setup, db, &reaper);
    let snap = p.snapshot(&Want::everything()).await.expect("snapshot");
    assert_eq!(snap.server.flavour, "mariadb");
    assert!(snap.transactions);
    assert!(snap.server.started_at.is_some());
    let mine = sessions_of(&snap, &app.name);
    assert_eq!(mine.len(), 3, "{mine:?}");
    for s in &mine {
        assert_eq!(s.command, "Sleep");
        assert_eq!(s.host.as_deref(), Some("127.0.0.1"));
        assert!(s.port.is_some());
        assert!(s.time_ms >= 1000, "idle for 1.3 s, read {} ms", s.time_ms);
        assert!(s.query_id.is_some());
    }
    let with_trx: Vec<&&Session> = mine.iter().filter(|s| s.trx.is_some()).collect();
    assert_eq!(with_trx.len(), 1, "exactly one session holds a transaction");
    let age = with_trx[0].trx.as_ref().unwrap().age_ms;
    // trx_started has whole seconds: the age read is at most the real age minus
    // what the truncation can hide, never more than the real age.
    assert!(
        age <= 1300 + 50,
        "transaction age {age} ms is more than it can be"
    );
    // Our own connection is listed as ours.
    let reaper_sessions = sessions_of(&snap, &reaper.name);
    assert!(!reaper_sessions.is_empty());
    for s in reaper_sessions {
        assert!(
            snap.own_connection_ids.contains(&s.id),
            "session {} is ours",
            s.id
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recheck_reads_the_statement_and_the_transaction_only_when_a_request_needs_them() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("needs_app", None).await;
    let dbname = db.create_db("needs", &[&app]).await;
    let mut busy = db.connect(&app.name, &app.password).await.unwrap();
    busy.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .unwrap();
    busy.query_drop(format!(
        "SELECT * FROM `{dbname}`.t WHERE id = 1 FOR UPDATE"
    ))
    .await
    .unwrap();
    let running = tokio::spawn(async move {
        let r: mysql_async::Result<Vec<u64>> = busy.query("SELECT SLEEP(30)").await;
        (r, busy)
    });
    let p = provider(&setup, db, &reaper);
    let session = running_statement(p.as_ref(), &app.name).await;
    // The fresh rows the re-check is given; nothing is sent (the verdict is `changed`).
    let seen = std::sync::Mutex::new(Vec::new());
    let record = |_: &KillRequest, fresh: Option<&Session>| {
        let fresh = fresh.expect("the session is listed");
        seen.lock().unwrap().push((
            fresh.sql.is_some(),
            fresh.trx.is_some(),
            fresh.query_id.is_some(),
        ));
        Recheck::Changed("looked only".to_owned())
    };
    let needs = |sql, transactions, seconds| Needs {
        sql,
        transactions,
        seconds,
    };
    for needs in [
        needs(false, false, false),
        needs(true, false, false),
        needs(false, true, false),
        needs(true, true, false),
        // Whole seconds decide it: `SHOW PROCESSLIST`, which has no query id;
        // unless the statement or the transaction is compared.
        needs(false, false, true),
        needs(true, false, true),
        needs(false, true, true),
    ] {
        let request = KillRequest {
            session: &session,
            action: Action::Kill,
            ignored_users: &[],
            needs,
            tag: 0,
        };
        let out = p.kill(&[request], &record).await;
        assert!(matches!(out[0].result, KillResult::Changed(_)), "{out:?}");
        assert!(out[0].sent_at.is_none(), "nothing was sent");
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (false, false, true),
            (true, false, true),
            (false, true, true),
            (true, true, true),
            (false, false, false),
            (true, false, true),
            (false, true, true),
        ],
        "(statement, transaction, query id) read by each re-check"
    );
    assert_eq!(db.ids_of(&app.name).await, vec![session.id], "not killed");
    let end = KillRequest {
        session: &session,
        action: Action::Kill,
        ignored_users: &[],
        needs: Needs::default(),
        tag: 0,
    };
    assert_eq!(
        p.kill(&[end], &identity).await[0].result,
        KillResult::Killed
    );
    let (result, _) = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the connection ended")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
}

/// On MariaDB a re-check that whole seconds decide reads `SHOW PROCESSLIST`: the
/// `SELECT`'s row, but with its time in whole seconds and without its query id.
/// An idle policy decides on it as on the `SELECT`: a session that ran a
/// statement since the snapshot (idle again, for less than a second) is not
/// killed, the others are.
#[tokio::test(flavor = "multi_thread")]
async fn a_recheck_that_whole_seconds_decide_reads_show_processlist() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let Idle {
        app, mut conns, p, ..
    } = idle_sessions(db, &setup, "show_app", 3).await;
    let mut idle = manual_policy(Action::Kill, &[]);
    idle.matcher.command = vec!["sleep".to_owned()];
    idle.matcher.min_time = Some(Duration::from_secs(1));
    let needs = Needs::of(&idle, true);
    assert!(needs.seconds, "{needs:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let snap = p.snapshot(&Want::for_policies(&[&idle])).await.unwrap();
    let requests: Vec<KillRequest> = kills_of(&snap, &app.name)
        .into_iter()
        .map(|r| KillRequest { needs, ..r })
        .collect();
    assert_eq!(requests.len(), 3);

    // The rows each listing gives the re-check; nothing is sent.
    let read = |seconds: bool| {
        let requests: Vec<KillRequest> = requests
            .iter()
            .map(|r| KillRequest {
                needs: Needs { seconds, ..needs },
                ..r.clone()
            })
            .collect();
        let p = p.clone();
        async move {
            let rows = std::sync::Mutex::new(Vec::new());
            let record = |_: &KillRequest, fresh: Option<&Session>| {
                rows.lock().unwrap().push(fresh.expect("listed").clone());
                Recheck::Changed("looked only".to_owned())
            };
            let out = p.kill(&requests, &record).await;
            assert!(out.iter().all(|o| o.sent_at.is_none()), "{out:?}");
            let mut rows = rows.into_inner().unwrap();
            rows.sort_by_key(|s| s.id);
            rows
        }
    };
    let show = read(true).await;
    let select = read(false).await;
    assert_eq!(show.len(), 3);
    for (a, b) in select.iter().zip(&show) {
        assert!(a.query_id.is_some() && b.query_id.is_none(), "{a:?} {b:?}");
        assert!(b.time_ms >= 1000 && b.time_ms % 1000 == 0, "{b:?}");
        // Whole seconds floored, never rounded up: no more than the SELECT,
        // read after it, finds.
        assert!(b.time_ms <= a.time_ms, "{a:?} {b:?}");
        let same = Session {
            time_ms: b.time_ms,
            query_id: None,
            ..a.clone()
        };
        assert_eq!(*b, same);
    }

    // One of them runs a statement: idle again, for less than a second.
    let busy = sessions_of(&snap, &app.name)[0].id;
    let mut ran = false;
    for c in &mut conns {
        if c.id() as u64 == busy {
            c.query_drop("DO 1").await.unwrap();
            ran = true;
        }
    }
    assert!(ran);
    let check = |req: &KillRequest, fresh: Option<&Session>| {
        recheck(
            req.session,
            fresh,
            req.action,
            Some(&idle),
            &Default::default(),
            &[],
            true,
        )
    };
    let out = p.kill(&requests, &check).await;
    for (req, o) in requests.iter().zip(&out) {
        if req.session.id == busy {
            // Idle for less than a second, or (the server answers a statement
            // before it lists its session as idle again) still `Query`.
            assert!(
                matches!(&o.result, KillResult::Changed(why) if why.contains("no longer matches")),
                "{o:?}"
            );
            assert!(o.sent_at.is_none());
        } else {
            assert_eq!(o.result, KillResult::Killed, "{o:?}");
        }
    }
    // A killed session is listed (as `Killed`) until its thread has ended.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await == vec![busy]
        })
        .await,
        "{:?}",
        db.ids_of(&app.name).await
    );
    drop(conns);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recheck_sees_a_transaction_that_ended_after_the_snapshot() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("trx_end_app", None).await;
    let mut conn = db.connect(&app.name, &app.password).await.unwrap();
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .unwrap();
    let p = provider(&setup, db, &reaper);
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let session = snap
        .sessions
        .iter()
        .find(|s| s.user.as_deref() == Some(app.name.as_str()))
        .expect("listed");
    assert!(session.trx.is_some(), "{session:?}");
    // It commits right after the snapshot: InnoDB's cache of INNODB_TRX, read by the
    // snapshot a moment ago, still lists it; the re-check must not see that copy.
    conn.query_drop("COMMIT").await.unwrap();
    let seen = std::sync::Mutex::new(None);
    let record = |_: &KillRequest, fresh: Option<&Session>| {
        *seen.lock().unwrap() = Some(fresh.expect("listed").trx.is_some());
        Recheck::Changed("looked only".to_owned())
    };
    let request = KillRequest {
        session,
        action: Action::Kill,
        ignored_users: &[],
        needs: Needs {
            transactions: true,
            ..Needs::default()
        },
        tag: 0,
    };
    let out = p.kill(&[request], &record).await;
    assert!(out[0].sent_at.is_none(), "nothing was sent");
    assert_eq!(
        *seen.lock().unwrap(),
        Some(false),
        "the re-check read the transaction as ended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_without_sql_or_transactions_when_not_wanted() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let p = provider(&setup, db, &reaper);
    let snap = p.snapshot(&Want::default()).await.expect("snapshot");
    assert!(!snap.transactions);
    assert!(
        snap.sessions
            .iter()
            .all(|s| s.sql.is_none() && s.trx.is_none())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_ends_the_connection_and_reports_gone_for_a_second_try() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let Idle {
        app,
        conns: _conns,
        p,
        snap,
    } = idle_sessions(db, &setup, "kill_app", 3).await;
    let victims = kills_of(&snap, &app.name);
    assert_eq!(victims.len(), 3);
    let outcomes = p.kill(&victims, &identity).await;
    assert!(
        outcomes.iter().all(|o| o.result == KillResult::Killed),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.rechecked_at.is_some() && o.sent_at.is_some())
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    let again = p.kill(&victims, &identity).await;
    assert!(
        again.iter().all(|o| o.result == KillResult::Gone),
        "{again:?}"
    );
}

/// The write-ahead gate: the provider may re-check while the intents are written,
/// but sends no kill before the gate opens, and none at all when it is closed. A
/// re-check that waited long at the gate is done again after it opens.
#[tokio::test(flavor = "multi_thread")]
async fn kills_wait_at_the_gate_and_a_closed_gate_sends_none() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let Idle {
        app,
        conns: _conns,
        p,
        snap,
    } = idle_sessions(db, &setup, "gate_app", 4).await;
    let victims = kills_of(&snap, &app.name);
    assert_eq!(victims.len(), 4);

    let (keeper, held) = gate();
    keeper.close("not sent: the audit log cannot be written".to_owned());
    let outcomes = p.kill_after(&victims, &identity, &held).await;
    assert!(
        outcomes.iter().all(|o| o.sent_at.is_none()
            && o.result
                == KillResult::Failed("not sent: the audit log cannot be written".to_owned())),
        "{outcomes:?}"
    );
    assert_eq!(db.ids_of(&app.name).await.len(), 4, "nothing was killed");

    let (keeper, held) = gate();
    let rechecks = std::sync::atomic::AtomicUsize::new(0);
    let counting = |req: &KillRequest, fresh: Option<&Session>| {
        rechecks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        identity(req, fresh)
    };
    let opened_at = std::sync::Mutex::new(None);
    let opener = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Still all alive while the gate is shut, and already re-checked.
        let alive = db.ids_of(&app.name).await.len();
        let before = rechecks.load(std::sync::atomic::Ordering::SeqCst);
        *opened_at.lock().unwrap() = Some(std::time::Instant::now());
        keeper.open();
        (alive, before)
    };
    let (outcomes, (alive, before)) =
        futures::future::join(p.kill_after(&victims, &counting, &held), opener).await;
    assert_eq!(alive, 4, "no kill was sent before the gate opened");
    assert_eq!(
        before, 4,
        "every victim was re-checked while the gate was shut"
    );
    assert_eq!(
        rechecks.load(std::sync::atomic::Ordering::SeqCst),
        8,
        "and again after waiting 300 ms at it"
    );
    let opened_at = opened_at.lock().unwrap().expect("opened");
    for o in &outcomes {
        assert_eq!(o.result, KillResult::Killed, "{outcomes:?}");
        let (rechecked, sent) = (o.rechecked_at.unwrap(), o.sent_at.unwrap());
        assert!(rechecked > opened_at, "the re-check kept is the one after");
        assert!(sent > rechecked, "sent after it");
    }
}

/// A server that restarted after the snapshot starts its connection ids again:
/// the snapshot's id may now be another session, one a re-check could take for
/// the matched one (a client on a socket has no port to tell them apart). The
/// re-check that had to reconnect sees the new start time and kills nothing.
#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_killed_on_a_server_restarted_since_the_snapshot() {
    let db = MariaDb::dedicated();
    let setup = Setup::new();
    let Idle {
        app,
        conns: old,
        p,
        snap,
    } = idle_sessions(&db, &setup, "restart_app", 3).await;
    let victims = kills_of(&snap, &app.name);
    assert_eq!(victims.len(), 3);
    let old_ids: Vec<u64> = victims.iter().map(|v| v.session.id).collect();
    drop(old);
    // A start time is read as now less a whole-second `Uptime`, so up to 1 s
    // late, and the provider allows 2 s between two readings of one start: the old
    // server must have been up more than 3 s for its restart to be told apart
    // (after 2.5 s, one run in five read the two starts 1.8 s apart).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    db.restart();
    // New sessions of the same user until one has an id of the snapshot's.
    let mut new = Vec::new();
    while !new
        .iter()
        .any(|c: &mysql_async::Conn| old_ids.contains(&u64::from(c.id())))
    {
        assert!(
            new.len() < 300,
            "no new session took an old id: {old_ids:?}"
        );
        new.push(db.connect(&app.name, &app.password).await.unwrap());
    }
    let reused = new.len();
    // A re-check that only asks whether the id is there: the restart alone must
    // stop the kill.
    let present = |_: &KillRequest, fresh: Option<&Session>| {
        if fresh.is_some() {
            Recheck::Proceed
        } else {
            Recheck::Gone
        }
    };
    let outcomes = p.kill(&victims, &present).await;
    for o in &outcomes {
        assert!(
            matches!(&o.result, KillResult::Changed(why) if why.contains("restarted")),
            "{outcomes:?}"
        );
        assert!(o.sent_at.is_none(), "{outcomes:?}");
    }
    assert_eq!(
        db.ids_of(&app.name).await.len(),
        reused,
        "every new session is alive"
    );
}

/// Only a wait at the gate sends a round back to be re-checked again: a round
/// whose own re-check takes long to judge (slow policies, a busy machine) is sent
/// once the gate is open, not re-checked forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_recheck_behind_an_open_gate_still_kills() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let Idle {
        app,
        conns: _conns,
        p,
        snap,
    } = idle_sessions(db, &setup, "slow_app", 2).await;
    let victims = kills_of(&snap, &app.name);
    assert_eq!(victims.len(), 2);
    let judged = std::sync::atomic::AtomicUsize::new(0);
    let slow = |req: &KillRequest, fresh: Option<&Session>| {
        judged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Longer than the gate's 10 ms.
        std::thread::sleep(Duration::from_millis(15));
        identity(req, fresh)
    };
    let outcomes = tokio::time::timeout(Duration::from_secs(20), p.kill(&victims, &slow))
        .await
        .expect("the kill ends");
    assert!(
        outcomes.iter().all(|o| o.result == KillResult::Killed),
        "{outcomes:?}"
    );
    assert_eq!(
        judged.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "each victim judged once"
    );
}

/// A lane's kill packet goes on a connection that read nothing first: when the
/// server dropped it while it sat idle (`wait_timeout`, a proxy), it is found out
/// by a ping and replaced, and the kills go through instead of coming back unknown.
#[tokio::test(flavor = "multi_thread")]
async fn a_lane_whose_idle_connection_was_dropped_gets_a_new_one() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("dropped_app", None).await;
    let _conns = db.open_idle(&app, 4).await;
    let target = setup.mysql_target("db", db, &reaper);
    let config = config::load(&setup.config(&format!("targets:\n{target}"))).unwrap();
    let metrics = Arc::new(Metrics::new());
    let p = config.targets[0].factory.build("db", metrics.clone());
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let victims = kills_of(&snap, &app.name);
    assert_eq!(victims.len(), 4);
    // Both of the pool's connections (two lanes) are dropped by the server.
    let ours = db.ids_of(&reaper.name).await;
    assert_eq!(ours.len(), 2, "the pool is open");
    let mut admin = db.admin().await;
    for id in &ours {
        admin
            .query_drop(format!("KILL CONNECTION {id}"))
            .await
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&reaper.name).await.is_empty()
        })
        .await
    );
    // Idle past the point where a lane's connection is checked before use.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let outcomes = p.kill(&victims, &identity).await;
    assert!(
        outcomes.iter().all(|o| o.result == KillResult::Killed),
        "{outcomes:?}"
    );
    let pings = |status: &str| {
        metrics
            .provider_requests_total
            .with_label_values(&["mysql", "ping", status])
            .get()
    };
    assert_eq!(pings("error"), 2, "both dead connections were found out");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await,
        "every victim is gone"
    );
}

/// The pool's other connections open with the first snapshot, so that a kill's
/// lanes do not connect first; they are ours, so never victims.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_snapshot_opens_the_pool() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db
        .create_user("warm_reaper", Some("PROCESS, CONNECTION ADMIN ON *.*"))
        .await;
    let p = provider_with(&setup, db, &reaper, "    pool_size: 3\n");
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let ours = db.ids_of(&reaper.name).await;
    assert_eq!(ours.len(), 3, "the pool's three connections are open");
    let again = p.snapshot(&Want::everything()).await.unwrap();
    assert_eq!(
        db.ids_of(&reaper.name).await,
        ours,
        "and reused, not reopened"
    );
    for id in &ours {
        assert!(
            again.own_connection_ids.contains(id),
            "{id} is ours: {again:?}"
        );
    }
    drop(snap);
}

/// A first snapshot that must wait before reading `INNODB_TRX` (another read of it
/// came just before) holds no connection while it waits. The warm-up beside it
/// must not open the whole pool then, or the snapshot, finding no idle connection
/// yet, opens one more than `pool_size`. Each attempt lands the wait's end a little
/// later, so that some of them end it while the warm-up is still connecting.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_snapshot_waiting_to_read_innodb_trx_opens_no_more_than_the_pool() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let other = provider(&setup, db, &db.reaper_user().await);
    let mut over = Vec::new();
    for attempt in 0..24u64 {
        let reaper = db
            .create_user("trx_pool", Some("PROCESS, CONNECTION ADMIN ON *.*"))
            .await;
        let p = provider_with(&setup, db, &reaper, "    pool_size: 2\n");
        other.snapshot(&Want::everything()).await.unwrap();
        // Our next read of `INNODB_TRX` waits until 110 ms after that one.
        tokio::time::sleep(Duration::from_micros(100_000 + attempt * 500)).await;
        p.snapshot(&Want::everything()).await.unwrap();
        let open = db.ids_of(&reaper.name).await.len();
        if open > 2 {
            over.push((attempt, open));
        }
    }
    assert!(
        over.is_empty(),
        "(attempt, connections open) where the pool is 2: {over:?}"
    );
}

/// Kills go several to a packet; the server stops at the first error and runs none
/// of the statements after it. Those must be re-checked and sent again, and the
/// one that failed reported for what it is.
#[tokio::test(flavor = "multi_thread")]
async fn kills_after_a_failed_one_in_the_same_packet_are_sent_again() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("batch_app", None).await;
    let _conns = db.open_idle(&app, 4).await;
    // One connection: every kill of this test goes in one packet.
    let p = provider_with(&setup, db, &reaper, "    pool_size: 1\n");
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let mut victims = kills_of(&snap, &app.name);
    assert_eq!(victims.len(), 4);
    // Second in the packet: an id no session has, which the re-check below lets
    // through, so that its KILL fails (ER_NO_SUCH_THREAD) with kills after it.
    let mut ghost_session = victims[0].session.clone();
    ghost_session.id = 4_000_000_000;
    let ghost = KillRequest {
        session: &ghost_session,
        ..victims[0].clone()
    };
    victims.insert(1, ghost);
    let sent_ghost = std::sync::atomic::AtomicUsize::new(0);
    let check = |req: &KillRequest, fresh: Option<&Session>| {
        if req.session.id == 4_000_000_000 {
            sent_ghost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Recheck::Proceed
        } else {
            identity(req, fresh)
        }
    };
    let outcomes = p.kill(&victims, &check).await;
    let results: Vec<&KillResult> = outcomes.iter().map(|o| &o.result).collect();
    assert_eq!(
        results,
        [
            &KillResult::Killed,
            &KillResult::Gone,
            &KillResult::Killed,
            &KillResult::Killed,
            &KillResult::Killed
        ],
        "{outcomes:?}"
    );
    assert_eq!(
        sent_ghost.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the failed kill is not sent twice"
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await,
        "every session of the packet was killed"
    );
    for o in &outcomes {
        let (r, k) = (o.rechecked_at.unwrap(), o.sent_at.unwrap());
        assert!(k >= r, "each kill answered after its re-check");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_is_skipped_when_the_id_now_belongs_to_another_user() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let other = db.create_user("other", None).await;
    let _conn = db.open_idle(&other, 1).await;
    let p = provider(&setup, db, &reaper);
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let real = snap
        .sessions
        .iter()
        .find(|s| s.user.as_deref() == Some(other.name.as_str()))
        .unwrap()
        .clone();
    // The plan saw this id as `app` running a statement; by kill time it is `other`.
    let mut planned = real.clone();
    planned.user = Some("app".into());
    planned.sql = Some("SELECT SLEEP(100)".to_owned());
    let outcomes = p
        .kill(
            &[KillRequest {
                session: &planned,
                action: Action::Kill,
                ignored_users: &[],
                needs: Needs::default(),
                tag: 0,
            }],
            &identity,
        )
        .await;
    match &outcomes[0].result {
        KillResult::Changed(why) => assert!(why.contains("now belongs to user"), "{why}"),
        other => panic!("expected changed, got {other:?}"),
    }
    assert!(outcomes[0].sent_at.is_none(), "no kill was sent");
    assert_eq!(
        db.ids_of(&other.name).await,
        vec![real.id],
        "the session lives"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_query_on_mariadb_ends_only_the_matched_statement() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("kq_app", None).await;
    let mut conn = db.connect(&app.name, &app.password).await.unwrap();
    let running = tokio::spawn(async move {
        let r: mysql_async::Result<Vec<u64>> = conn.query("SELECT SLEEP(30)").await;
        (r, conn)
    });
    let p = provider(&setup, db, &reaper);
    let session = running_statement(p.as_ref(), &app.name).await;
    assert!(session.query_id.is_some());
    let out = kill_query(p.as_ref(), &session).await;
    assert_eq!(out[0].result, KillResult::Killed);
    let (result, mut conn) = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the statement ended")
        .unwrap();
    // SLEEP() interrupted returns 1 (MariaDB) or an error: either way it is over.
    let _ = result;
    let one: Option<u64> = conn
        .query_first("SELECT 1")
        .await
        .expect("the connection lives");
    assert_eq!(one, Some(1));

    // A statement that finished is not hit: its query id is gone.
    let out = kill_query(p.as_ref(), &session).await;
    assert!(
        matches!(out[0].result, KillResult::Changed(_) | KillResult::Gone),
        "{:?}",
        out[0].result
    );
    let one: Option<u64> = conn.query_first("SELECT 1").await.expect("still alive");
    assert_eq!(one, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_an_error_without_the_password() {
    let setup = Setup::new();
    let secret = setup.secret("pw", "s3cret-never-shown");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = setup.config(&format!(
        "targets:\n  - name: gone\n    provider: mysql\n    url: mysql://reaper@127.0.0.1:{port}\n    password: {{file: {}}}\n    timeout: 1s\n",
        secret.display()
    ));
    let config = config::load(&path).unwrap();
    let p = config.targets[0]
        .factory
        .build("gone", Arc::new(Metrics::new()));
    let err = p
        .snapshot(&Want::everything())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot connect to gone"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    // The next attempt waits for the backoff instead of hammering the server.
    let err2 = p
        .snapshot(&Want::everything())
        .await
        .unwrap_err()
        .to_string();
    assert!(err2.contains("next attempt in"), "{err2}");
}

/// A session the server could not read at its re-check (MariaDB lists it as
/// `Busy`) is read again in later rounds of the same kill, a few times: killed
/// once it reads as the session matched, left alone (changed) when it never does.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_unreadable_at_its_recheck_is_read_again() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let Idle {
        app,
        conns,
        p,
        snap,
    } = idle_sessions(db, &setup, "unread_app", 2).await;
    let victims = kills_of(&snap, &app.name);
    assert_eq!(victims.len(), 2);
    let (soon, never) = (victims[0].session.id, victims[1].session.id);
    let reads = std::sync::Mutex::new(std::collections::HashMap::<u64, u32>::new());
    let recheck = |req: &KillRequest, fresh: Option<&Session>| {
        let id = req.session.id;
        let n = {
            let mut reads = reads.lock().unwrap();
            let n = reads.entry(id).or_default();
            *n += 1;
            *n
        };
        match fresh {
            None => Recheck::Gone,
            Some(_) if id == never || n < 3 => Recheck::Unreadable("not read".to_owned()),
            Some(_) => Recheck::Proceed,
        }
    };
    let outcomes = p.kill(&victims, &recheck).await;
    assert_eq!(outcomes[0].result, KillResult::Killed, "{outcomes:?}");
    assert!(
        matches!(&outcomes[1].result, KillResult::Changed(why) if why == "not read"),
        "{outcomes:?}"
    );
    assert!(outcomes[1].sent_at.is_none());
    let reads = reads.into_inner().unwrap();
    assert_eq!(reads[&soon], 3, "read until it could be read");
    assert_eq!(reads[&never], 4, "read once and again three times");
    assert_eq!(db.ids_of(&app.name).await, vec![never]);
    drop(conns);
}

/// What a new connection asks its server (`probe`, one packet on MariaDB) on a
/// real MariaDB: its flavour, version and start time, and the server-side bound
/// set on the session.
#[tokio::test(flavor = "multi_thread")]
async fn the_connect_probe_reads_the_server_and_bounds_statements_in_one_packet() {
    let db = MariaDb::shared();
    let reaper = db.reaper_user().await;
    let mut conn = db.connect(&reaper.name, &reaper.password).await.unwrap();
    let before = chrono::Utc::now();
    let probed = session_reaper::providers::mysql::probe(&mut conn, Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(probed.flavour(), "mariadb");
    assert!(probed.version.contains("MariaDB"), "{}", probed.version);
    assert!(probed.sees_every_session, "the reaper account has PROCESS");
    let started = probed.started_at.expect("a start time");
    // `Uptime` has whole seconds: the start read is up to a second late.
    assert!(
        started <= before + chrono::TimeDelta::seconds(1),
        "started {started}, probed after {before}"
    );
    let bound: Option<f64> = conn
        .query_first("SELECT @@max_statement_time")
        .await
        .unwrap();
    assert_eq!(bound, Some(1.35));
}

/// Without `PROCESS` an account's process list is its own sessions only: a
/// daemon on such an account would run, find nothing to match, and never say
/// why. The target is not ready instead, with the grant to make, and the next
/// connection after the grant works.
#[tokio::test(flavor = "multi_thread")]
async fn an_account_without_process_is_refused_with_the_grant_to_make() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db
        .create_user("noproc", Some("CONNECTION ADMIN ON *.*"))
        .await;
    let app = db.create_user("noproc_app", None).await;
    let _conns = db.open_idle(&app, 2).await;
    let mut conn = db.connect(&reaper.name, &reaper.password).await.unwrap();
    let probed = session_reaper::providers::mysql::probe(&mut conn, Duration::from_secs(2))
        .await
        .expect("the probe itself succeeds");
    assert!(!probed.sees_every_session);
    // The same connection lists only itself: what the daemon would have read.
    let listed: Vec<String> = conn
        .query("SELECT USER FROM information_schema.PROCESSLIST")
        .await
        .unwrap();
    assert!(listed.iter().all(|u| *u == reaper.name), "{listed:?}");

    let p = provider(&setup, db, &reaper);
    let err = p
        .snapshot(&Want::default())
        .await
        .expect_err("no snapshot without PROCESS")
        .to_string();
    assert!(
        err.contains(&format!("connected as {}", reaper.name))
            && err.contains("lacks the PROCESS privilege")
            && err.contains("GRANT PROCESS ON *.*"),
        "{err}"
    );
    db.admin()
        .await
        .query_drop(format!("GRANT PROCESS ON *.* TO '{}'@'%'", reaper.name))
        .await
        .unwrap();
    // After the connect backoff (a quarter of a second, then more).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let snap = loop {
        match p.snapshot(&Want::default()).await {
            Ok(snap) => break snap,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no snapshot 10 s after the grant: {e}"),
        }
    };
    assert_eq!(sessions_of(&snap, &app.name).len(), 2);
}

/// A MySQL before 8.0.22 has no `performance_schema.processlist`, with
/// `performance_schema` on or off. A MariaDB server told to give its version as
/// `8.0.21`, with `performance_schema` on and no such table, stands in for one:
/// the provider must take it for MySQL, read `information_schema` (whole
/// seconds, no query ids), and kill by thread id, `KILL QUERY` included.
#[tokio::test(flavor = "multi_thread")]
async fn a_mysql_before_8_0_22_is_read_from_information_schema_and_killed_by_thread_id() {
    let db = MariaDb::dedicated_with(&support::mariadb::Options {
        args: vec![
            "--version=8.0.21".to_owned(),
            "--performance-schema=ON".to_owned(),
        ],
    });
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("mysql80_app", None).await;
    let mut admin = db.admin().await;
    let (version, pfs): (String, u8) = admin
        .query_first("SELECT VERSION(), @@performance_schema")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((version.as_str(), pfs), ("8.0.21", 1));
    let missing = admin
        .query_drop("SELECT 1 FROM performance_schema.processlist LIMIT 1")
        .await;
    assert!(missing.is_err(), "the stand-in must lack the table");

    let since = std::time::Instant::now();
    let idle = db.open_idle(&app, 2).await;
    let mut busy = db.connect(&app.name, &app.password).await.unwrap();
    let running = tokio::spawn(async move {
        let r: mysql_async::Result<Vec<u64>> = busy.query("SELECT SLEEP(30)").await;
        (r, busy)
    });
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let p = provider(&setup, &db, &reaper);
    let snap = p.snapshot(&Want::everything()).await.expect("snapshot");
    assert_eq!(snap.server.flavour, "mysql");
    assert_eq!(snap.server.version, "8.0.21");
    assert!(snap.server.started_at.is_some());
    assert!(snap.transactions);
    let mine = sessions_of(&snap, &app.name);
    assert_eq!(mine.len(), 3, "{mine:?}");
    for s in &mine {
        // `TIME` has whole seconds, read as the smallest age they can mean
        // (MySQL's can be up to a second more than the session's), and MySQL
        // has no `QUERY_ID` column. 2.2 s idle: `TIME` 2, read as 1 s, a
        // second less than they have been.
        assert_eq!(s.time_ms % 1000, 0, "{s:?}");
        assert!(s.time_ms >= 1000, "{s:?}");
        assert!(
            s.time_ms <= since.elapsed().as_millis() as u64 - 1000,
            "{s:?}"
        );
        assert_eq!(s.query_id, None, "{s:?}");
    }
    let statement = mine
        .iter()
        .find(|s| s.command == "Query")
        .expect("the running statement is listed");
    assert_eq!(statement.sql.as_deref(), Some("SELECT SLEEP(30)"));

    // `KILL QUERY <thread id>`: the statement ends, its connection lives.
    let out = kill_query(p.as_ref(), statement).await;
    assert_eq!(out[0].result, KillResult::Killed);
    let (_, mut busy) = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the statement ended")
        .unwrap();
    let one: Option<u64> = busy
        .query_first("SELECT 1")
        .await
        .expect("the connection lives");
    assert_eq!(one, Some(1));

    // `KILL CONNECTION`: the idle sessions go.
    let idle_ids: Vec<u64> = mine
        .iter()
        .filter(|s| s.command == "Sleep")
        .map(|s| s.id)
        .collect();
    assert_eq!(idle_ids.len(), 2);
    let requests: Vec<KillRequest> = kills_of(&snap, &app.name)
        .into_iter()
        .filter(|r| idle_ids.contains(&r.session.id))
        .collect();
    let out = p.kill(&requests, &identity).await;
    assert!(
        out.iter().all(|o| o.result == KillResult::Killed),
        "{:?}",
        out.iter().map(|o| &o.result).collect::<Vec<_>>()
    );
    let gone = wait_until(Duration::from_secs(10), || async {
        let ids = db.ids_of(&app.name).await;
        idle_ids.iter().all(|id| !ids.contains(id))
    })
    .await;
    assert!(gone, "the idle sessions are gone");
    drop(idle);
}

/// A session a kill has reached stays listed, with the command `Killed`, until its
/// thread ends: for as long as rolling back what its transaction wrote takes. A
/// policy on its user alone spares it, and a kill planned before the kill reached
/// it finds it gone at its re-check: no session is killed twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_rolling_back_after_a_kill_is_never_killed_again() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("rollback_app", None).await;
    let dbname = db.create_db("rollback", &[&app]).await;
    let mut conn = db.connect(&app.name, &app.password).await.unwrap();
    conn.query_drop("START TRANSACTION").await.unwrap();
    // Enough rows that rolling them back takes a good part of a second.
    conn.query_drop(format!(
        "INSERT INTO `{dbname}`.t SELECT seq + 10, seq FROM `{dbname}`.seq_1_to_300000"
    ))
    .await
    .unwrap();
    let id = u64::from(conn.id());
    setup.policy(
        "p.yaml",
        &format!(
            "name: app\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    let path = setup.mysql_config("db", db, &reaper);
    let config = config::load(&path).expect("valid config");
    let (target, policy) = (&config.targets[0], &config.policies[0]);
    let protected = target.protected();
    let p = target.factory.build("db", Arc::new(Metrics::new()));
    let before = p.snapshot(&Want::everything()).await.unwrap();
    let planned = before.sessions.iter().find(|s| s.id == id).expect("listed");
    assert!(planned.trx.is_some(), "{planned:?}");

    let mut admin = db.admin().await;
    admin
        .query_drop(format!("KILL CONNECTION {id}"))
        .await
        .unwrap();
    let after = p.snapshot(&Want::everything()).await.unwrap();
    let i = after
        .sessions
        .iter()
        .position(|s| s.id == id)
        .expect("listed while it rolls back");
    assert_eq!(
        after.sessions[i].command, "Killed",
        "{:?}",
        after.sessions[i]
    );
    let plan = plan(&after, &[policy], &protected, chrono::Utc::now());
    assert_eq!(
        plan.decisions[i].why,
        Why::Spared(Spare::Protected(Protection::BeingKilled))
    );

    let own = after.own_connection_ids.clone();
    let check = |req: &KillRequest, fresh: Option<&Session>| {
        recheck(
            req.session,
            fresh,
            req.action,
            Some(policy),
            &protected,
            &own,
            true,
        )
    };
    let out = p.kill(&kills_of(&before, &app.name), &check).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].result, KillResult::Gone, "{out:?}");
    assert!(out[0].sent_at.is_none(), "no second kill was sent");
    let _ = admin.disconnect().await;
}
