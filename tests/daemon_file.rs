//! The daemon on a replayed snapshot: no server needed, every kill a would-kill.

mod support;

use std::time::Duration;

use session_reaper::audit::Event;
use session_reaper::daemon;
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
