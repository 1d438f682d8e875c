//! The daemon on a replayed snapshot: no server needed, every kill a would-kill.

mod support;

use std::sync::Arc;
use std::time::Duration;

use session_reaper::audit::{Audit, Event, Rotation};
use session_reaper::config;
use session_reaper::core::plan::plan;
use session_reaper::daemon;
use session_reaper::executor::{Executor, Memory, Tick};
use session_reaper::metrics::Metrics;
use session_reaper::providers::Want;
use support::{Setup, http_get, metric};

fn replay_target() -> String {
    format!(
        "targets:\n  - name: replay\n    provider: file\n    path: {}/examples/snapshots/busy-primary.json\n",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_on_different_schedules_report_each_would_kill_once() {
    let setup = Setup::new();
    setup.config(&format!("ignored_users: [etl]\n{}", replay_target()));
    setup.policy(
        "idle.yaml",
        "name: idle\nschedule: every 170ms\nmode: enforce\nmatch:\n  user: [app, app_*]\n  command: Sleep\n  min_time: 5m\n",
    );
    setup.policy(
        "runaway.yaml",
        "name: runaway\nschedule: every 40ms\nmatch:\n  sql_template: \"SELECT * FROM orders WHERE customer_email LIKE 'x' ORDER BY created_at DESC\"\n",
    );
    setup.policy(
        "trx.yaml",
        "name: trx\nschedule: every 110ms\nmatch:\n  in_transaction: true\n",
    );
    let d = daemon::start(&setup.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, page) = http_get(d.addr, "/metrics").await;
    let idle = metric(
        &page,
        "session_reaper_would_kill_total{policy=\"idle\",target=\"replay\"}",
    );
    let runaway = metric(
        &page,
        "session_reaper_would_kill_total{policy=\"runaway\",target=\"replay\"}",
    );
    let trx = metric(
        &page,
        "session_reaper_would_kill_total{policy=\"trx\",target=\"replay\"}",
    );
    let ignored = metric(
        &page,
        "session_reaper_spared_total{reason=\"ignored_user\",target=\"replay\"}",
    );
    let runs = metric(
        &page,
        "session_reaper_evaluations_total{outcome=\"ok\",policy=\"runaway\",target=\"replay\"}",
    )
    .unwrap();
    assert!(runs >= 10.0, "runaway ran {runs} times");
    d.shutdown().await;
    // Counted once each, however many ticks ran: 24 idle app sessions, 9 runaway
    // statements, 4 open transactions of which one (etl) is ignored.
    assert_eq!(idle, Some(24.0), "{page}");
    assert_eq!(runaway, Some(9.0));
    assert_eq!(trx, Some(3.0));
    assert_eq!(ignored, Some(1.0));
    let audit = setup.audit();
    assert_eq!(
        audit.len(),
        24 + 9 + 3,
        "one would-kill record per policy and session"
    );
    assert!(audit.iter().all(|r| r.event == Event::WouldKill));
    let enforce: Vec<_> = audit.iter().filter(|r| &*r.policy == "idle").collect();
    assert!(
        enforce.iter().all(|r| r.mode == "enforce"),
        "an enforce policy on a replay audits would-kills"
    );
}

/// A dry-run policy's would-kill is reported once while it holds, even when a
/// policy due in the same tick claims the session (the first of two would-kills
/// wins it) and the policy then runs alone again.
#[tokio::test]
async fn a_would_kill_claimed_by_another_policy_for_a_tick_is_not_reported_again() {
    let setup = Setup::new();
    setup.config(&format!("ignored_users: [etl]\n{}", replay_target()));
    setup.policy(
        "apps.yaml",
        "name: apps\nschedule: every 1s\nmatch:\n  user: app\n  command: Sleep\n",
    );
    setup.policy(
        "trx.yaml",
        "name: trx\nschedule: every 1s\nmatch:\n  in_transaction: true\n",
    );
    let config = config::load(&setup.config_path()).unwrap();
    let target = &config.targets[0];
    let provider = target.factory.build("replay", Arc::new(Metrics::new()));
    let snapshot = provider.snapshot(&Want::everything()).await.unwrap();
    let protected = target.protected();
    let policy = |name: &str| config.policies.iter().find(|p| p.name == name).unwrap();
    let (apps, trx) = (policy("apps"), policy("trx"));
    let audit = Arc::new(Audit::new(&setup.audit_path(), Rotation::default()));
    let executor = Executor::new(audit, Arc::new(Metrics::new()));
    let mut memory = Memory::new();
    let mut new_would_kills = Vec::new();
    for policies in [vec![trx], vec![apps, trx], vec![trx], vec![apps, trx]] {
        let p = plan(&snapshot, &policies, &protected, chrono::Utc::now());
        let tick = Tick {
            target: "replay",
            provider: provider.as_ref(),
            policies: &policies,
            snapshot: &snapshot,
            plan: &p,
            protected: &protected,
            may_kill: &|| true,
        };
        let report = executor.execute(&tick, &mut memory).await;
        new_would_kills.push(report.would_kill_by);
    }
    // The replay's open transactions: three of `app`, all idle, and one of the
    // ignored `etl`. `apps` takes the three in the second tick; `trx` has
    // reported them already, and does not again when it runs alone.
    let apps_idle = snapshot
        .sessions
        .iter()
        .filter(|s| s.user.as_deref() == Some("app") && s.command == "Sleep")
        .count();
    assert_eq!(
        new_would_kills,
        [vec![3], vec![apps_idle, 0], vec![0], vec![0, 0]]
    );
    let records = setup.audit();
    assert_eq!(
        records.iter().filter(|r| &*r.policy == "trx").count(),
        3,
        "{records:#?}"
    );
}

/// A protected session that two policies on different schedules both match is
/// counted once in `spared_total`, whichever of them a tick runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_spared_for_two_policies_is_counted_once() {
    let setup = Setup::new();
    setup.config(&replay_target());
    // Both match the replay's five server and replication threads (idle for
    // months) and nothing else.
    setup.policy(
        "often.yaml",
        "name: often\nschedule: every 30ms\nmatch:\n  min_time: 1h\n",
    );
    setup.policy(
        "seldom.yaml",
        "name: seldom\nschedule: every 70ms\nmatch:\n  min_time: 1h\n",
    );
    let d = daemon::start(&setup.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, page) = http_get(d.addr, "/metrics").await;
    d.shutdown().await;
    let runs = metric(
        &page,
        "session_reaper_evaluations_total{outcome=\"ok\",policy=\"seldom\",target=\"replay\"}",
    )
    .unwrap();
    assert!(runs >= 5.0, "seldom ran {runs} times");
    assert_eq!(
        metric(
            &page,
            "session_reaper_spared_total{reason=\"protected_thread\",target=\"replay\"}",
        ),
        Some(5.0),
        "{page}"
    );
}
