//! The whole daemon, in-process, against a real MariaDB server.

mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use session_reaper::audit::Event;
use session_reaper::daemon;
use support::{MariaDb, Setup, http_get, metric, wait_until};

async fn start(setup: &Setup) -> daemon::Handle {
    daemon::start(&setup.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("the daemon starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_of_a_matched_user_are_killed_and_others_are_not() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("e2e_app", None).await;
    let bystander = db.create_user("e2e_by", None).await;
    let _keep = db.open_idle(&bystander, 5).await;
    let _victims = db.open_idle(&app, 1000).await;
    assert_eq!(db.ids_of(&app.name).await.len(), 1000);
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "idle.yaml",
        &format!(
            "name: idle-app\nschedule: every 250ms\nmode: enforce\nmatch:\n  user: {}\n  command: Sleep\n",
            app.name
        ),
    );
    let started = Instant::now();
    let daemon = start(&setup).await;
    let cleared = wait_until(Duration::from_secs(30), || async {
        db.ids_of(&app.name).await.is_empty()
    })
    .await;
    let took = started.elapsed();
    assert!(cleared, "1000 idle sessions cleared");
    println!(
        "cleared 1000 idle sessions in {} ms (every 250ms policy, from daemon start)",
        took.as_millis()
    );
    assert_eq!(
        db.ids_of(&bystander.name).await.len(),
        5,
        "the other user's sessions live"
    );

    let (_, page) = http_get(daemon.addr, "/metrics").await;
    let killed = metric(
        &page,
        "session_reaper_kills_total{action=\"kill\",policy=\"idle-app\",result=\"killed\",target=\"db\"}",
    );
    assert_eq!(killed, Some(1000.0), "{page}");
    daemon.shutdown().await;

    // Every kill has a durable intent before it and an outcome after it.
    let audit = setup.audit();
    let intents = audit.iter().filter(|r| r.event == Event::Intent).count();
    let outcomes: Vec<_> = audit.iter().filter(|r| r.event == Event::Outcome).collect();
    if intents != 1000 {
        // Say which sessions had more than one intent, and what became of each.
        let mut by_session = std::collections::BTreeMap::new();
        for r in &audit {
            by_session
                .entry(r.session_id)
                .or_insert_with(Vec::new)
                .push(format!(
                    "{} {:?} {:?} {}",
                    r.ts, r.event, r.result, r.reason
                ));
        }
        for (id, records) in by_session.iter().filter(|(_, v)| v.len() > 2) {
            eprintln!("session {id}: {records:#?}");
        }
    }
    assert_eq!(intents, 1000);
    assert_eq!(outcomes.len(), 1000);
    assert!(
        outcomes
            .iter()
            .all(|r| r.result.as_deref() == Some("killed"))
    );
    // Each kill says how long after its re-check it was sent.
    let mut windows: Vec<u64> = outcomes
        .iter()
        .map(|r| {
            r.recheck_to_kill_us
                .expect("a sent kill has its re-check window")
        })
        .collect();
    windows.sort_unstable();
    println!(
        "re-check to kill: p50 {} us, p99 {} us, max {} us",
        windows[windows.len() / 2],
        windows[windows.len() * 99 / 100],
        windows[windows.len() - 1]
    );
    let first = &outcomes[0];
    assert_eq!(first.mode, "enforce");
    assert_eq!(&*first.policy, "idle-app");
    assert_eq!(first.user.as_deref(), Some(app.name.as_str()));
    assert!(
        first.ts.ends_with('Z') && first.ts.len() == 24,
        "{}",
        first.ts
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_users_survive_a_policy_that_matches_them() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("ign_app", None).await;
    let etl = db.create_user("ign_etl", None).await;
    let monitor = db.create_user("ign_mon", None).await;
    let _a = db.open_idle(&app, 3).await;
    let _e = db.open_idle(&etl, 3).await;
    let _m = db.open_idle(&monitor, 2).await;
    setup.config(&format!(
        "ignored_users: [{}]\ntargets:\n{}",
        monitor.name,
        setup.mysql_target("db", db, &reaper)
    ));
    setup.policy(
        "idle.yaml",
        &format!(
            "name: idle-all-three\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: [{}, {}, {}]\n  command: Sleep\nignored_users: [{}]\n",
            app.name, etl.name, monitor.name, etl.name
        ),
    );
    let daemon = start(&setup).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        db.ids_of(&etl.name).await.len(),
        3,
        "per-policy ignored user survives"
    );
    assert_eq!(
        db.ids_of(&monitor.name).await.len(),
        2,
        "global ignored user survives"
    );
    let (_, page) = http_get(daemon.addr, "/metrics").await;
    assert_eq!(
        metric(
            &page,
            "session_reaper_spared_total{reason=\"ignored_user\",target=\"db\"}"
        ),
        Some(5.0),
        "each spared session counted once"
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_threads_and_binlog_dump_survive_a_policy_that_matches_everything() {
    let db = MariaDb::dedicated();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("all_app", None).await;
    let _a = db.open_idle(&app, 4).await;
    let mut binlog = std::process::Command::new("mariadb-binlog")
        .args([
            "--read-from-remote-server",
            "--host=127.0.0.1",
            &format!("--port={}", db.port),
            "--user=root",
            "--stop-never",
            "binlog.000001",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mariadb-binlog starts");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.processlist()
                .await
                .iter()
                .any(|(_, _, c)| c == "Binlog Dump")
        })
        .await,
        "a Binlog Dump connection is up"
    );
    let before = db.processlist().await;
    assert!(
        before
            .iter()
            .any(|(_, u, c)| u == "event_scheduler" && c == "Daemon"),
        "{before:?}"
    );
    setup.mysql_config("db", &db, &reaper);
    setup.policy(
        "everything.yaml",
        "name: everything\nschedule: every 100ms\nmode: enforce\nmatch: {}\n",
    );
    let daemon = start(&setup).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = db.processlist().await;
    assert!(
        after
            .iter()
            .any(|(_, u, c)| u == "event_scheduler" && c == "Daemon"),
        "{after:?}"
    );
    assert!(
        after.iter().any(|(_, _, c)| c == "Binlog Dump"),
        "{after:?}"
    );
    assert!(
        after.iter().any(|(_, u, _)| *u == reaper.name),
        "our own connections live: {after:?}"
    );
    let audit = setup.audit();
    assert!(
        audit
            .iter()
            .filter(|r| r.event == Event::Intent)
            .all(|r| r.command != "Binlog Dump"
                && r.command != "Daemon"
                && r.user.as_deref() != Some(reaper.name.as_str()))
    );
    daemon.shutdown().await;
    let _ = binlog.kill();
    let _ = binlog.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_query_ends_the_statement_and_keeps_the_connection() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("kq_e2e", None).await;
    let mut conn = db.connect(&app.name, &app.password).await.unwrap();
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "slow.yaml",
        &format!(
            "name: slow-sleeps\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n  command: Query\n  sql: '(?i)sleep\\('\n  min_time: 500ms\naction: kill-query\n",
            app.name
        ),
    );
    let daemon = start(&setup).await;
    let started = Instant::now();
    let r: mysql_async::Result<Vec<u64>> = conn.query("SELECT SLEEP(20)").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the statement was ended after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(500),
        "not before min_time: {took:?}"
    );
    let _ = r;
    let one: Option<u64> = conn
        .query_first("SELECT 1")
        .await
        .expect("the connection lives on");
    assert_eq!(one, Some(1));
    daemon.shutdown().await;
    let audit = setup.audit();
    let outcome = audit
        .iter()
        .find(|r| r.event == Event::Outcome)
        .expect("an outcome");
    assert_eq!(outcome.action, "kill-query");
    assert_eq!(outcome.result.as_deref(), Some("killed"));
    assert_eq!(outcome.fingerprint.as_deref(), Some("select sleep(?)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn in_transaction_and_min_trx_time_match_only_sessions_with_an_open_transaction() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("trx_app", None).await;
    let dbname = db.create_db("trx", &[&app]).await;
    let mut open = db.connect(&app.name, &app.password).await.unwrap();
    open.query_drop("START TRANSACTION").await.unwrap();
    open.query_drop(format!("UPDATE `{dbname}`.t SET v = v + 1 WHERE id = 1"))
        .await
        .unwrap();
    let mut young = db.connect(&app.name, &app.password).await.unwrap();
    let mut plain = db.connect(&app.name, &app.password).await.unwrap();
    plain
        .query_drop(format!("SELECT * FROM `{dbname}`.t"))
        .await
        .unwrap();
    let open_id = u64::from(open.id());
    let young_id = u64::from(young.id());
    let plain_id = u64::from(plain.id());
    // Let the first transaction age past min_trx_time (whole-second trx_started
    // makes its age read up to a second short).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    young.query_drop("START TRANSACTION").await.unwrap();
    young
        .query_drop(format!("UPDATE `{dbname}`.t SET v = v + 1 WHERE id = 2"))
        .await
        .unwrap();
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "trx.yaml",
        &format!(
            "name: idle-in-trx\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n  command: Sleep\n  in_transaction: true\n  min_trx_time: 2s\n",
            app.name
        ),
    );
    let daemon = start(&setup).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            !db.ids_of(&app.name).await.contains(&open_id)
        })
        .await,
        "the old transaction's session is killed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive = db.ids_of(&app.name).await;
    assert!(alive.contains(&plain_id), "no transaction: alive");
    assert!(
        alive.contains(&young_id),
        "a young transaction: alive (for now)"
    );
    daemon.shutdown().await;
    let one: Option<u64> = plain.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_kills_nothing_and_audits_each_would_kill_once() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("dry_app", None).await;
    let _a = db.open_idle(&app, 4).await;
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "dry.yaml",
        &format!(
            "name: dry\nschedule: every 50ms\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    let daemon = start(&setup).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        db.ids_of(&app.name).await.len(),
        4,
        "dry-run is the default: nothing killed"
    );
    let (_, page) = http_get(daemon.addr, "/metrics").await;
    assert_eq!(
        metric(
            &page,
            "session_reaper_would_kill_total{policy=\"dry\",target=\"db\"}"
        ),
        Some(4.0)
    );
    daemon.shutdown().await;
    let audit = setup.audit();
    let would: Vec<_> = audit
        .iter()
        .filter(|r| r.event == Event::WouldKill)
        .collect();
    assert_eq!(would.len(), 4, "once per session, not once per tick");
    assert!(would.iter().all(|r| r.mode == "dry-run"));
    assert!(audit.iter().all(|r| r.event == Event::WouldKill));
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_hold_the_breaker_opens_and_nothing_is_killed() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("lim_app", None).await;
    let _a = db.open_idle(&app, 6).await;
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "limited.yaml",
        &format!(
            "name: limited\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\nlimits:\n  max_kills_per_run: 5\n",
            app.name
        ),
    );
    let daemon = start(&setup).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        db.ids_of(&app.name).await.len(),
        6,
        "6 victims > 5: none is killed"
    );
    let (_, page) = http_get(daemon.addr, "/metrics").await;
    assert_eq!(
        metric(
            &page,
            "session_reaper_breaker_open{policy=\"limited\",target=\"db\"}"
        ),
        Some(1.0)
    );
    assert!(metric(&page, "session_reaper_evaluations_total{outcome=\"breaker_open\",policy=\"limited\",target=\"db\"}").unwrap_or(0.0) >= 1.0);
    let (_, status) = http_get(daemon.addr, "/status").await;
    assert!(status.contains("\"breaker_open_since\":\"20"), "{status}");
    assert!(
        status.contains("6 victims > max_kills_per_run 5"),
        "{status}"
    );
    // Back under the limits, the breaker stays open for its cool-down (5m default).
    let _more_closed: Vec<u64> = Vec::new();
    daemon.shutdown().await;
    assert!(setup.audit().is_empty(), "no intent was written");
}

/// A session the grants do not let the daemon kill (here: an account without
/// `CONNECTION ADMIN`) is not sent a kill on every tick: 1 s after its first
/// refusal, then 2 s after that, so that at `every 100ms` it has 3 refused
/// attempts in 3.5 s, not 35. Once the operator grants the privilege and
/// reloads, it is killed at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_kill_is_tried_again_after_a_growing_wait_and_at_once_after_a_reload() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.create_user("ref_reaper", Some("PROCESS ON *.*")).await;
    let app = db.create_user("ref_app", None).await;
    let _a = db.open_idle(&app, 2).await;
    let ids = db.ids_of(&app.name).await;
    assert_eq!(ids.len(), 2);
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "idle.yaml",
        &format!(
            "name: idle\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n  command: Sleep\n",
            app.name
        ),
    );
    let daemon = start(&setup).await;
    let refused = |records: &[session_reaper::audit::Record], id: u64| {
        records
            .iter()
            .filter(|r| {
                r.session_id == id
                    && r.event == Event::Outcome
                    && r.result.as_deref() == Some("refused")
            })
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let audit = setup.audit();
            ids.iter().all(|&id| refused(&audit, id) >= 1)
        })
        .await,
        "each session's first kill is refused"
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let audit = setup.audit();
    for &id in &ids {
        let n = refused(&audit, id);
        // Attempts at 0, 1 and 3 s (the next at 7 s): one a tick would be 35. A
        // machine slow enough may see the third late or a fourth at the edge.
        assert!(
            (2..=4).contains(&n),
            "session {id}: {n} refused attempts in 3.5 s"
        );
        let intents = audit
            .iter()
            .filter(|r| r.session_id == id && r.event == Event::Intent)
            .count();
        assert_eq!(intents, n, "every attempt, and only those, has its intent");
    }
    let error = audit
        .iter()
        .find(|r| r.result.as_deref() == Some("refused"))
        .and_then(|r| r.error.clone())
        .unwrap_or_default();
    assert!(error.contains("CONNECTION ADMIN"), "{error}");
    let (_, page) = http_get(daemon.addr, "/metrics").await;
    let attempts = metric(
        &page,
        "session_reaper_kills_total{action=\"kill\",policy=\"idle\",result=\"refused\",target=\"db\"}",
    )
    .unwrap_or(0.0);
    assert!((4.0..=8.0).contains(&attempts), "{attempts}: {page}");
    // `/status` lists them, with when each is tried next.
    let (_, status) = http_get(daemon.addr, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let listed = status["targets"]["db"]["refused"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let listed_ids: Vec<u64> = listed
        .iter()
        .filter_map(|r| r["session_id"].as_u64())
        .collect();
    assert_eq!(listed_ids, ids, "{status:#}");
    for r in &listed {
        assert_eq!(r["user"].as_str(), Some(app.name.as_str()));
        assert!(r.get("node").is_none(), "one server has no nodes: {r}");
        assert!(
            r["refusals"].as_u64().is_some_and(|n| (2..=4).contains(&n)),
            "{r}"
        );
        assert!(
            r["next_attempt_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{r}"
        );
    }
    assert_eq!(db.ids_of(&app.name).await, ids, "both sessions live");

    // Granted (a connection keeps the global privileges it opened with: the
    // reload's new connections have it) and reloaded: killed at once.
    db.admin()
        .await
        .query_drop(format!(
            "GRANT CONNECTION ADMIN ON *.* TO '{}'@'%'",
            reaper.name
        ))
        .await
        .unwrap();
    let reloaded = Instant::now();
    daemon.reload().await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await,
        "killed after the grant and the reload"
    );
    let took = reloaded.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "killed {took:?} after the reload: a reload tries refused sessions again at once"
    );
    daemon.shutdown().await;
    let audit = setup.audit();
    for &id in &ids {
        assert!(
            audit.iter().any(|r| r.session_id == id
                && r.event == Event::Outcome
                && r.result.as_deref() == Some("killed")),
            "session {id} killed"
        );
    }
}
