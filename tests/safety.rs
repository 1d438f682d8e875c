//! The safety invariants of DESIGN.md under faults, each with a test that fails
//! when the invariant is broken. Real MariaDB servers throughout.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_reaper::audit::{Audit, Event, Record, Rotation};
use session_reaper::config;
use session_reaper::core::plan::plan;
use session_reaper::daemon;
use session_reaper::executor::{Executor, Memory, Tick};
use session_reaper::metrics::Metrics;
use session_reaper::providers::Want;
use support::{MariaDb, Setup, http_get, metric, wait_until};

async fn start(setup: &Setup) -> daemon::Handle {
    daemon::start(&setup.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Invariant 2: the snapshot says id N is `app` running X; by kill time N is
/// another user (or another statement). No kill, and a `skip` record says why.
#[tokio::test(flavor = "multi_thread")]
async fn compare_and_kill_skips_a_reused_id_and_a_finished_statement() {
    use mysql_async::prelude::Queryable;
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let other = db.create_user("cak_other", None).await;
    let runner = db.create_user("cak_run", None).await;
    let _o = db.open_idle(&other, 1).await;
    let mut conn = db.connect(&runner.name, &runner.password).await.unwrap();
    let busy = tokio::spawn(async move {
        let r: mysql_async::Result<Vec<u64>> = conn.query("SELECT SLEEP(3)").await;
        let _ = r;
        conn
    });
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "p.yaml",
        "name: apps\nschedule: every 1s\nmode: enforce\nmatch:\n  user: app\n",
    );
    setup.policy(
        "q.yaml",
        &format!("name: statements\nschedule: every 1s\nmode: enforce\nmatch:\n  user: {}\naction: kill-query\n", runner.name),
    );
    let config = config::load(&setup.config_path()).unwrap();
    let target = &config.targets[0];
    let provider = target.factory.build("db", Arc::new(Metrics::new()));
    let mut snapshot = provider.snapshot(&Want::everything()).await.unwrap();
    // What the plan saw: both sessions as `app`; the running one with another statement.
    let mut ids = Vec::new();
    for s in std::sync::Arc::make_mut(&mut snapshot.sessions).iter_mut() {
        if s.user.as_deref() == Some(other.name.as_str()) {
            s.user = Some("app".into());
            ids.push(s.id);
        }
    }
    let running_id = loop {
        let fresh = provider.snapshot(&Want::everything()).await.unwrap();
        if let Some(s) = fresh
            .sessions
            .iter()
            .find(|s| s.user.as_deref() == Some(runner.name.as_str()) && s.command == "Query")
        {
            // The plan saw an earlier statement of this session.
            let mut planned = s.clone();
            planned.query_id = planned.query_id.map(|q| q.saturating_sub(1));
            planned.sql = Some("SELECT SLEEP(100)".to_owned());
            std::sync::Arc::make_mut(&mut snapshot.sessions).retain(|x| x.id != planned.id);
            std::sync::Arc::make_mut(&mut snapshot.sessions).push(planned);
            break s.id;
        }
    };
    let protected = target.protected();
    let apps = config.policies.iter().find(|p| p.name == "apps").unwrap();
    let statements = config
        .policies
        .iter()
        .find(|p| p.name == "statements")
        .unwrap();
    let audit = Arc::new(Audit::new(&setup.audit_path(), Rotation::default()));
    let executor = Executor::new(audit, Arc::new(Metrics::new()));
    for (policy, id) in [(apps, ids[0]), (statements, running_id)] {
        let mut one = snapshot.clone();
        std::sync::Arc::make_mut(&mut one.sessions).retain(|s| s.id == id);
        let policies = [policy];
        let p = plan(&one, &policies, &protected, chrono::Utc::now());
        let tick = Tick {
            target: "db",
            provider: provider.as_ref(),
            policies: &policies,
            snapshot: &one,
            plan: &p,
            protected: &protected,
            may_kill: &|| true,
        };
        let report = executor.execute(&tick, &mut Memory::new()).await;
        assert_eq!(report.killed, 0, "{report:?}");
    }
    assert_eq!(
        db.ids_of(&other.name).await,
        ids,
        "the other user's session lives"
    );
    let conn = busy.await.unwrap();
    drop(conn);
    let records = setup.audit();
    let skips: Vec<&Record> = records.iter().filter(|r| r.event == Event::Skip).collect();
    assert_eq!(skips.len(), 2, "{records:#?}");
    assert_eq!(skips[0].result.as_deref(), Some("changed"));
    assert!(
        skips[0]
            .reason
            .contains(&format!("now belongs to user {}", other.name)),
        "{}",
        skips[0].reason
    );
    assert!(
        skips[1].reason.contains("the statement finished"),
        "{}",
        skips[1].reason
    );
    assert_eq!(
        records.iter().filter(|r| r.event == Event::Intent).count(),
        2
    );
}

/// Invariant 3: crossing a limit opens the breaker; an operator closes it with
/// `session-reaper breaker reset` through the admin socket; a typo names the valid ones.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_resets_an_open_breaker_and_a_typo_names_the_valid_ones() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("brk_app", None).await;
    let mut conns = db.open_idle(&app, 4).await;
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "limited.yaml",
        &format!(
            "name: limited\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\nlimits:\n  max_kills_per_run: 3\n  breaker_cooldown: 1h\n",
            app.name
        ),
    );
    let d = start(&setup).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (_, page) = http_get(d.addr, "/metrics").await;
            metric(
                &page,
                "session_reaper_breaker_open{policy=\"limited\",target=\"db\"}",
            ) == Some(1.0)
        })
        .await
    );
    // Back under the limit: the breaker stays open for its cool-down (1h).
    conns.truncate(2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        db.ids_of(&app.name).await.len(),
        2,
        "held by the open breaker"
    );
    let bin = env!("CARGO_BIN_EXE_session-reaper");
    let config = setup.config_path();
    let typo = std::process::Command::new(bin)
        .args([
            "breaker",
            "reset",
            "--config",
            config.to_str().unwrap(),
            "--policy",
            "limitd",
            "--target",
            "db",
        ])
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&typo.stderr)
            .contains("no policy named `limitd`; policies: limited")
    );
    let typo = std::process::Command::new(bin)
        .args([
            "breaker",
            "reset",
            "--config",
            config.to_str().unwrap(),
            "--policy",
            "limited",
            "--target",
            "dbb",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("no target named `dbb`"),
        "{}",
        String::from_utf8_lossy(&typo.stderr)
    );
    let ok = std::process::Command::new(bin)
        .args([
            "breaker",
            "reset",
            "--config",
            config.to_str().unwrap(),
            "--policy",
            "limited",
            "--target",
            "db",
        ])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains("closed the breaker of policy limited on db (open since 20")
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await,
        "kills resume"
    );
    // The admin socket is the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.admin_socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    d.shutdown().await;
}

/// Invariant 4: a snapshot older than max_snapshot_age kills nothing and is counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_snapshot_kills_nothing_and_is_counted() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("stale_app", None).await;
    let _a = db.open_idle(&app, 2).await;
    setup.config(&format!(
        "targets:\n{}    max_snapshot_age: 0s\n",
        setup.mysql_target("db", db, &reaper)
    ));
    setup.policy(
        "p.yaml",
        &format!(
            "name: p\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    let d = start(&setup).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (_, page) = http_get(d.addr, "/metrics").await;
            metric(
                &page,
                "session_reaper_evaluations_total{outcome=\"stale\",policy=\"p\",target=\"db\"}",
            )
            .unwrap_or(0.0)
                >= 3.0
        })
        .await
    );
    assert_eq!(db.ids_of(&app.name).await.len(), 2);
    d.shutdown().await;
    let audit = setup.audit();
    assert!(audit.is_empty(), "{audit:#?}");
}

/// Invariant 5: an audit log that cannot be written (disk full) means no kill, and
/// readiness says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_for_the_audit_log_means_no_kill() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("full_app", None).await;
    let _a = db.open_idle(&app, 2).await;
    std::fs::create_dir_all(setup.path().join("state")).unwrap();
    std::os::unix::fs::symlink("/dev/full", setup.audit_path()).unwrap();
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "p.yaml",
        &format!(
            "name: p\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    let d = start(&setup).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (code, body) = http_get(d.addr, "/readyz").await;
            code == 503 && body.contains("not writable") && body.contains("No space left on device")
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        db.ids_of(&app.name).await.len(),
        2,
        "nothing killed without an audit log"
    );
    let (_, page) = http_get(d.addr, "/metrics").await;
    assert!(page.contains("session_reaper_audit_writable{"), "{page}");
    let attempts: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("session_reaper_kills_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(attempts.is_empty(), "no kill was attempted: {attempts:?}");
    d.shutdown().await;
}

/// Invariant 5: rotation by size keeps `keep` files, and an intent whose outcome
/// went to a rotated file is not taken for an interrupted kill.
#[test]
fn the_audit_log_rotates_by_size_and_keeps_n_files() {
    let setup = Setup::new();
    let audit = Audit::new(
        &setup.audit_path(),
        Rotation {
            max_bytes: 4096,
            keep: 2,
        },
    );
    let record = |event, n: u64| Record {
        ts: "2026-11-25T03:00:00.000Z".into(),
        event,
        target: "db".into(),
        policy: "p".into(),
        session_id: n,
        user: Some("app".into()),
        host: Some("10.0.0.1".into()),
        port: None,
        db: None,
        command: "Sleep".into(),
        time_ms: 1,
        fingerprint: None,
        action: "kill".into(),
        mode: "enforce".into(),
        reason: "x".repeat(200),
        result: (event == Event::Outcome).then(|| "killed".into()),
        error: None,
        intent_id: Some(format!("i-{n}")),
        recheck_to_kill_us: None,
    };
    for n in 0..40 {
        audit.append(&[record(Event::Intent, n)], true).unwrap();
        if n != 39 {
            audit.append(&[record(Event::Outcome, n)], true).unwrap();
        }
    }
    assert!(audit.rotated_path(1).exists());
    assert!(audit.rotated_path(2).exists());
    assert!(!audit.rotated_path(3).exists(), "only `keep` rotated files");
    for p in [
        setup.audit_path(),
        audit.rotated_path(1),
        audit.rotated_path(2),
    ] {
        assert!(
            std::fs::metadata(&p).unwrap().len() <= 4096,
            "{}",
            p.display()
        );
    }
    let pending = audit.pending_intents();
    assert_eq!(
        pending.len(),
        1,
        "only the last intent is open: {pending:?}"
    );
    assert_eq!(pending[0].session_id, 39);
    // SIGUSR1's reopen: logrotate moved the file away; the next write makes a new one.
    std::fs::rename(setup.audit_path(), setup.path().join("moved.jsonl")).unwrap();
    audit.reopen();
    audit.append(&[record(Event::Outcome, 39)], true).unwrap();
    assert_eq!(Audit::read_all(&setup.audit_path()).unwrap().len(), 1);
}

/// Invariant 5: intents a crash left open are reconciled against a fresh snapshot
/// at start-up: `unknown-after-crash` when the session is still there, `gone` when not.
#[tokio::test(flavor = "multi_thread")]
async fn intents_left_open_by_a_crash_are_reconciled_at_start_up() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("rec_open", None).await;
    let _a = db.open_idle(&app, 1).await;
    let live = db.ids_of(&app.name).await[0];
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "p.yaml",
        "name: p\nschedule: every 1s\nmatch:\n  user: nobody-at-all\n",
    );
    // What a daemon killed mid-kill left behind: two intents, one torn line.
    std::fs::create_dir_all(setup.path().join("state")).unwrap();
    let intent = |id: u64, host: &str, n: u32| {
        format!(
            r#"{{"ts":"2026-11-25T03:00:00.000Z","event":"intent","target":"db","policy":"p","session_id":{id},"user":"{}","host":"{host}","db":null,"command":"Sleep","time_ms":1,"fingerprint":null,"action":"kill","mode":"enforce","reason":"r","result":null,"error":null,"intent_id":"crash-{n}"}}"#,
            app.name
        )
    };
    let text = format!(
        "{}\n{}\n{{\"ts\":\"2026-11-25T03:00:00.1",
        intent(live, "127.0.0.1", 1),
        intent(999_999_998, "127.0.0.1", 2)
    );
    std::fs::write(setup.audit_path(), text).unwrap();
    let d = start(&setup).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            setup
                .audit()
                .iter()
                .filter(|r| r.event == Event::Outcome)
                .count()
                == 2
        })
        .await,
        "{:#?}",
        setup.audit()
    );
    d.shutdown().await;
    let records = setup.audit();
    let result = |n: &str| {
        records
            .iter()
            .find(|r| r.event == Event::Outcome && r.intent_id.as_deref() == Some(n))
            .and_then(|r| r.result.clone())
    };
    assert_eq!(result("crash-1").as_deref(), Some("unknown-after-crash"));
    assert_eq!(result("crash-2").as_deref(), Some("gone"));
    assert_eq!(
        db.ids_of(&app.name).await,
        vec![live],
        "reconciling kills nothing"
    );
    let raw = std::fs::read_to_string(setup.audit_path()).unwrap();
    assert!(
        raw.lines()
            .filter(|l| l.contains("\"event\":\"outcome\""))
            .all(|l| l.starts_with('{')),
        "the torn line was ended first"
    );
}

/// Restart the server under the daemon: it stays up, says the target is down, and
/// kills again within seconds once the server is back.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_rides_out_a_server_restart() {
    let db = MariaDb::dedicated();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("rst_app", None).await;
    setup.config(&format!(
        "targets:\n{}    timeout: 1s\n",
        setup.mysql_target("db", &db, &reaper)
    ));
    setup.policy(
        "p.yaml",
        &format!(
            "name: p\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    let d = start(&setup).await;
    let _a = db.open_idle(&app, 2).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    db.stop();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let (code, body) = http_get(d.addr, "/readyz").await;
            code == 503 && body.contains("target db")
        })
        .await
    );
    db.restart();
    let back = Instant::now();
    let _b = db.open_idle(&app, 3).await;
    assert!(
        wait_until(Duration::from_secs(40), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    println!(
        "kills resumed {} ms after the server came back",
        back.elapsed().as_millis()
    );
    d.shutdown().await;
}

/// A server that accepts the connection but stalls the process-list query: the
/// timeout fires and nothing is killed.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_processlist_query_times_out_and_kills_nothing() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("stall_app", None).await;
    let _a = db.open_idle(&app, 2).await;
    let proxy =
        support::stall::StallingProxy::start(db.port, "information_schema.PROCESSLIST").await;
    let secret = setup.secret("pw", &reaper.password);
    setup.config(&format!(
        "targets:\n  - name: db\n    provider: mysql\n    url: mysql://{}@127.0.0.1:{}\n    password: {{file: {}}}\n    timeout: 1s\n",
        reaper.name,
        proxy.port,
        secret.display()
    ));
    setup.policy(
        "p.yaml",
        &format!(
            "name: p\nschedule: every 200ms\nmode: enforce\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    let d = start(&setup).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let (code, body) = http_get(d.addr, "/readyz").await;
            code == 503 && body.contains("timed out after 1s")
        })
        .await,
        "{}",
        http_get(d.addr, "/readyz").await.1
    );
    assert_eq!(db.ids_of(&app.name).await.len(), 2);
    d.shutdown().await;
    let audit = setup.audit();
    assert!(audit.is_empty(), "{audit:#?}");
}
