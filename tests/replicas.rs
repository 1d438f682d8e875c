//! Several replicas with a coordination server: each target is owned by one of
//! them, no session is killed twice, a stopped or crashed owner's targets move to
//! another within the lease, and without the coordination server nobody kills.

mod support;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use session_reaper::audit::Event;
use session_reaper::daemon;
use support::{MariaDb, Setup, User, http_get, wait_until};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// One replica's config directory: the same targets and policy for every replica.
fn replica(
    db: &MariaDb,
    reaper: &User,
    targets: &[String],
    app: &User,
    lease: &str,
    coordination_port: u16,
) -> Setup {
    let setup = Setup::new();
    let mut t = String::new();
    for name in targets {
        t.push_str(&setup.mysql_target(name, db, reaper));
    }
    setup.config(&format!(
        "coordination:\n  mysql:\n    url: mysql://root@127.0.0.1:{coordination_port}\n    lease: {lease}\ntargets:\n{t}"
    ));
    setup.policy(
        "idle.yaml",
        &format!(
            "name: idle\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    setup
}

async fn owned(addr: std::net::SocketAddr) -> Vec<String> {
    let (_, body) = http_get(addr, "/status").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    doc["coordination"]["owned"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_kill_every_matching_session_exactly_once() {
    let db = MariaDb::shared();
    let reaper = db.reaper_user().await;
    let app = db.create_user("rep_app", None).await;
    let target = unique("db");
    let a = replica(
        db,
        &reaper,
        std::slice::from_ref(&target),
        &app,
        "3s",
        db.port,
    );
    let b = replica(
        db,
        &reaper,
        std::slice::from_ref(&target),
        &app,
        "3s",
        db.port,
    );
    let da = daemon::start(&a.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let dbb = daemon::start(&b.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            owned(da.addr).await.len() + owned(dbb.addr).await.len() == 1
        })
        .await,
        "exactly one replica owns the target"
    );
    for _ in 0..5 {
        let conns = db.open_idle(&app, 40).await;
        let ids = db.ids_of(&app.name).await;
        // Kept open until the daemon kills them (a drop would close them first).
        std::mem::forget(conns);
        assert!(!ids.is_empty());
        assert!(
            wait_until(Duration::from_secs(10), || async {
                db.ids_of(&app.name).await.is_empty()
            })
            .await
        );
    }
    // A standby replica that owns nothing is ready.
    let (ca, _) = http_get(da.addr, "/readyz").await;
    let (cb, _) = http_get(dbb.addr, "/readyz").await;
    assert_eq!((ca, cb), (200, 200));
    da.shutdown().await;
    dbb.shutdown().await;
    let mut killed: HashMap<u64, usize> = HashMap::new();
    for s in [&a, &b] {
        for r in s.audit() {
            if r.event == Event::Outcome && r.result.as_deref() == Some("killed") {
                *killed.entry(r.session_id).or_default() += 1;
            }
        }
    }
    assert_eq!(killed.len(), 200, "every session killed");
    assert!(killed.values().all(|n| *n == 1), "no session killed twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_spread_the_targets_between_them() {
    let db = MariaDb::shared();
    let reaper = db.reaper_user().await;
    let app = db.create_user("spread_app", None).await;
    let targets: Vec<String> = (0..4).map(|_| unique("t")).collect();
    let a = replica(db, &reaper, &targets, &app, "3s", db.port);
    let b = replica(db, &reaper, &targets, &app, "3s", db.port);
    let da = daemon::start(&a.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            owned(da.addr).await.len() == 4
        })
        .await,
        "alone, it owns all"
    );
    let dbb = daemon::start(&b.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            owned(da.addr).await.len() == 2 && owned(dbb.addr).await.len() == 2
        })
        .await,
        "a: {:?} b: {:?}",
        owned(da.addr).await,
        owned(dbb.addr).await
    );
    let (_, page) = http_get(dbb.addr, "/metrics").await;
    assert_eq!(page.matches("session_reaper_lease_held{").count(), 4);
    da.shutdown().await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            owned(dbb.addr).await.len() == 4
        })
        .await,
        "the survivor takes all"
    );
    dbb.shutdown().await;
}

fn spawn(setup: &Setup) -> (Child, std::net::SocketAddr) {
    let (child, addr, _log) = support::spawn_daemon(support::run_command(&setup.config_path()));
    (child, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_owner_loses_its_target_to_the_other_replica_within_the_lease() {
    let db = MariaDb::shared();
    let reaper = db.reaper_user().await;
    let app = db.create_user("fail_app", None).await;
    let target = unique("db");
    let a = replica(
        db,
        &reaper,
        std::slice::from_ref(&target),
        &app,
        "3s",
        db.port,
    );
    let b = replica(
        db,
        &reaper,
        std::slice::from_ref(&target),
        &app,
        "3s",
        db.port,
    );
    let (mut ca, aa) = spawn(&a);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            owned(aa).await.len() == 1
        })
        .await
    );
    let (mut cb, ab) = spawn(&b);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        owned(ab).await.is_empty(),
        "the second replica is a standby"
    );
    // kill -9 the owner: its connection closes and its lock with it.
    let crashed = Instant::now();
    ca.kill().unwrap();
    ca.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(6), || async {
            owned(ab).await.len() == 1
        })
        .await,
        "taken over"
    );
    let failover = crashed.elapsed();
    println!(
        "failover after kill -9 of the owner: {} ms (lease 3s)",
        failover.as_millis()
    );
    assert!(
        failover < Duration::from_secs(3),
        "within the lease: {failover:?}"
    );
    let _c = db.open_idle(&app, 3).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    Command::new("kill")
        .arg(cb.id().to_string())
        .status()
        .unwrap();
    assert!(cb.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_coordination_server_no_replica_kills_and_each_says_why() {
    let db = MariaDb::shared();
    let reaper = db.reaper_user().await;
    let app = db.create_user("nocoord_app", None).await;
    let _c = db.open_idle(&app, 2).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = unique("db");
    let a = replica(db, &reaper, std::slice::from_ref(&target), &app, "2s", dead);
    let da = daemon::start(&a.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (code, body) = http_get(da.addr, "/readyz").await;
            code == 503
                && body.contains("coordination server")
                && body.contains("killing nothing until it answers")
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        db.ids_of(&app.name).await.len(),
        2,
        "fail closed: nothing killed"
    );
    da.shutdown().await;
    assert!(a.audit().is_empty());
}
