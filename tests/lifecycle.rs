//! The daemon as systemd runs it: notifications and the watchdog, a `kill -9` in
//! the middle of a storm, and secrets that never show, whatever fails.

mod support;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use session_reaper::audit::Event;
use support::fakes;
use support::{MariaDb, Setup, http_get, run_command, spawn_daemon as spawn, wait_until};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_session-reaper"))
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
}

fn receive_until(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while start.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.contains(want);
            got.push(msg);
            if done {
                break;
            }
        }
    }
    got
}

#[test]
fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let setup = Setup::new();
    setup.config(&format!(
        "targets:\n  - name: replay\n    provider: file\n    path: {}/examples/snapshots/busy-primary.json\n",
        env!("CARGO_MANIFEST_DIR")
    ));
    setup.policy(
        "p.yaml",
        "name: p\nschedule: every 200ms\nmatch:\n  user: app\n",
    );
    let socket_path = setup.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    let mut cmd = run_command(&setup.config_path());
    cmd.env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000");
    let (child, _, _) = spawn(cmd);
    let got = receive_until(&sock, "READY=1", Duration::from_secs(10));
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    let got = receive_until(&sock, "WATCHDOG=1", Duration::from_secs(5));
    assert!(
        got.iter().any(|m| m.contains("WATCHDOG=1")),
        "the scheduler loops feed the watchdog: {got:?}"
    );
    signal(&child, "HUP");
    let got = receive_until(&sock, "RELOADING=1", Duration::from_secs(5));
    let reloading = got
        .iter()
        .find(|m| m.contains("RELOADING=1"))
        .expect("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let got = receive_until(&sock, "READY=1", Duration::from_secs(5));
    assert!(
        got.iter().any(|m| m.contains("READY=1")),
        "READY=1 after the reload: {got:?}"
    );
    signal(&child, "TERM");
    let got = receive_until(&sock, "STOPPING=1", Duration::from_secs(5));
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    let mut child = child;
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_a_storm_loses_and_duplicates_no_audit_record() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("storm9", None).await;
    let conns = db.open_idle(&app, 1500).await;
    std::mem::forget(conns);
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "p.yaml",
        &format!(
            "name: storm\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    let run = || run_command(&setup.config_path());
    let (mut first, _, _) = spawn(run());
    // Crash as soon as intents are on disk: in the middle of the kills.
    let audit = setup.audit_path();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::fs::read_to_string(&audit).is_ok_and(|t| t.contains("\"event\":\"intent\"")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let alive_after_crash = db.ids_of(&app.name).await.len();
    let (mut second, _, _) = spawn(run());
    assert!(
        wait_until(Duration::from_secs(30), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&second, "TERM");
    assert!(second.wait().unwrap().success());
    println!("crashed with {alive_after_crash} of 1500 sessions still alive");

    let records = setup.audit();
    let mut intents: HashMap<String, usize> = HashMap::new();
    let mut closes: HashMap<String, usize> = HashMap::new();
    let mut killed: HashMap<u64, usize> = HashMap::new();
    for r in &records {
        let id = r
            .intent_id
            .clone()
            .expect("intents and outcomes carry their intent id");
        match r.event {
            Event::Intent => *intents.entry(id).or_default() += 1,
            Event::Outcome | Event::Skip => *closes.entry(id).or_default() += 1,
            Event::WouldKill => {}
        }
        if r.result.as_deref() == Some("killed") {
            *killed.entry(r.session_id).or_default() += 1;
        }
    }
    assert!(intents.values().all(|n| *n == 1), "no duplicated intent");
    assert!(closes.values().all(|n| *n == 1), "no intent closed twice");
    for id in intents.keys() {
        assert!(closes.contains_key(id), "intent {id} was reconciled");
    }
    assert_eq!(intents.len(), closes.len());
    assert!(killed.values().all(|n| *n == 1), "no session killed twice");
    let reconciled = records
        .iter()
        .filter(|r| {
            matches!(r.result.as_deref(), Some("unknown-after-crash" | "gone"))
                && r.reason.contains("crash")
        })
        .count();
    println!(
        "{} intents, {reconciled} reconciled after the crash",
        intents.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_never_shows_in_output_status_metrics_or_audit() {
    const CANARY: &str = "S3CR3T-canary-8421";
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("sec_app", None).await;
    let fake = fakes::tencent_dbbrain(db).await;
    let ali = fakes::alibaba_das(db).await;
    let ali_ak = setup.secret("ali_ak", &ali.shared.key_id);
    let ali_sk = setup.secret("ali_sk", &ali.shared.secret);
    let secret = setup.secret("canary", CANARY);
    let good = setup.secret("good", &reaper.password);
    let ak = setup.secret("ak", &fake.shared.key_id);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    setup.config(&format!(
        "targets:\n  - name: wrong-password\n    provider: mysql\n    url: mysql://{reaper_name}@127.0.0.1:{port}\n    password: {{file: {canary}}}\n  - name: unreachable\n    provider: mysql\n    url: mysql://{reaper_name}@127.0.0.1:{dead}\n    password: {{file: {canary}}}\n    timeout: 1s\n  - name: cloud\n    provider: tencent-dbbrain\n    region: ap-guangzhou\n    instance_id: cdb-test\n    secret_id: {{file: {ak}}}\n    secret_key: {{file: {canary}}}\n    endpoint: {endpoint}\n  - name: ali\n    provider: alibaba-das\n    instance_id: rm-test\n    access_key_id: {{file: {ali_ak}}}\n    access_key_secret: {{file: {ali_sk}}}\n    db_user: reaper\n    db_password: {{file: {canary}}}\n    endpoint: {ali_endpoint}\n    poll_interval: 50ms\n",
        reaper_name = reaper.name,
        port = db.port,
        canary = secret.display(),
        ak = ak.display(),
        endpoint = fake.endpoint(),
        ali_ak = ali_ak.display(),
        ali_sk = ali_sk.display(),
        ali_endpoint = ali.endpoint(),
    ));
    setup.policy(
        "p.yaml",
        &format!(
            "name: p\nschedule: every 200ms\nmode: enforce\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    let _a = db.open_idle(&app, 1).await;
    let mut cmd = run_command(&setup.config_path());
    cmd.args(["--log-format", "json"])
        .env("SESSION_REAPER_LOG", "debug");
    let (child, addr, log) = spawn(cmd);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let (_, body) = http_get(addr, "/readyz").await;
            body.contains("Access denied")
                && body.contains("target unreachable")
                && body.contains("AuthFailure")
        })
        .await,
        "{}",
        http_get(addr, "/readyz").await.1
    );
    // The kill task carries the password to DAS (in its query string): it fails.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            std::fs::read_to_string(setup.audit_path())
                .is_ok_and(|t| t.contains("wrong DbUser or DbUserPassword"))
        })
        .await,
        "{}",
        http_get(addr, "/readyz").await.1
    );
    let mut pages = Vec::new();
    for path in ["/status", "/metrics", "/readyz"] {
        pages.push(http_get(addr, path).await.1);
    }
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let texts = [
        String::from_utf8_lossy(&out.stdout).into_owned(),
        log.lock().unwrap().clone(),
        std::fs::read_to_string(setup.audit_path()).unwrap_or_default(),
    ];
    for t in pages.iter().chain(texts.iter()) {
        assert!(!t.contains(CANARY), "the secret leaked into: {t}");
    }
    assert!(
        texts[1].contains("Access denied"),
        "the failure itself is reported: {}",
        texts[1]
    );
    // A coordination server that refuses the password: said, not shown.
    let coord = Setup::new();
    coord.config(&format!(
        "coordination:\n  mysql:\n    url: mysql://{}@127.0.0.1:{}\n    password: {{file: {}}}\ntargets:\n  - name: good\n    provider: mysql\n    url: mysql://{}@127.0.0.1:{}\n    password: {{file: {}}}\n",
        reaper.name,
        db.port,
        secret.display(),
        reaper.name,
        db.port,
        good.display()
    ));
    let (child, addr, log) = spawn(run_command(&coord.config_path()));
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let (code, body) = http_get(addr, "/readyz").await;
            code == 503 && body.contains("coordination server") && body.contains("Access denied")
        })
        .await
    );
    let (_, status) = http_get(addr, "/status").await;
    signal(&child, "TERM");
    let _ = child.wait_with_output();
    for t in [status, log.lock().unwrap().clone()] {
        assert!(!t.contains(CANARY), "the secret leaked into: {t}");
    }
    // An inline secret in the config is refused without being echoed.
    let inline = Setup::new();
    inline.config(&format!(
        "targets:\n  - name: db\n    provider: mysql\n    url: mysql://u:{CANARY}@127.0.0.1:3306\n  - name: db2\n    provider: mysql\n    url: mysql://u@127.0.0.1:3306\n    password: {CANARY}\n"
    ));
    let out = bin()
        .args(["check", "--config", inline.config_path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("secrets are never inline"), "{stderr}");
    assert!(!stderr.contains(CANARY), "{stderr}");
}
