//! The command line as a user meets it: exit codes, error messages, the quick
//! start, reloads. Runs the real binary.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{MariaDb, Setup, wait_until};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_session-reaper"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

/// The quick start's config with a state_dir of its own, so that daemons of
/// parallel tests do not share one.
fn quickstart_copy(setup: &Setup) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/examples/quickstart.yaml"))
        .unwrap()
        .replace(
            "/tmp/session-reaper-quickstart",
            setup.path().join("state").to_str().unwrap(),
        )
        .replace(
            "policies_dir: ../policies",
            &format!("policies_dir: {root}/policies"),
        )
        .replace(
            "path: snapshots/",
            &format!("path: {root}/examples/snapshots/"),
        );
    std::fs::write(setup.config_path(), text).unwrap();
    setup.config_path().display().to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_accepts_the_quick_start() {
    let out = run(&["check", "--config", "examples/quickstart.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "examples/quickstart.yaml: ok: 1 target, 4 policies (1 enforce, 3 dry-run)\n"
    );
}

#[test]
fn check_reports_every_config_error_at_once() {
    let out = bin()
        .args(["check", "--config", "tests/data/broken/config.yaml"])
        .env_remove("SESSION_REAPER_TEST_SURELY_UNSET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("hunter2"),
        "the inline password is not echoed"
    );
    insta::assert_snapshot!("check_broken_config", stderr);
}

#[test]
fn check_reports_every_policy_error_at_once() {
    let out = run(&[
        "check",
        "--config",
        "tests/data/broken-policies/config.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!("check_broken_policies", text(&out.stderr));
}

#[test]
fn check_of_a_missing_file_names_it() {
    let out = run(&["check", "--config", "no/such/config.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "no/such/config.yaml:1:1: error: cannot read the config file: no such file or directory\n  hint: pass the path of a readable YAML file with --config\n1 error in the configuration\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn plan_explains_the_quick_start_snapshot() {
    let out = run(&["plan", "--config", "examples/quickstart.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    insta::assert_snapshot!("plan_quickstart", text(&out.stdout));
}

#[test]
fn plan_json_has_one_entry_per_session() {
    let out = run(&[
        "plan",
        "--config",
        "examples/quickstart.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let target = &doc["targets"][0];
    assert_eq!(target["target"], "busy-primary");
    assert!(target["snapshot_time"].as_str().unwrap().ends_with('Z'));
    let sessions = target["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 65);
    for s in sessions {
        for key in [
            "session_id",
            "user",
            "host",
            "db",
            "command",
            "time_ms",
            "decision",
            "policy",
            "reason",
        ] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
        let d = s["decision"].as_str().unwrap();
        assert!(
            ["kill", "kill-query", "would-kill", "spared", "no-match"].contains(&d),
            "{d}"
        );
    }
    let binlog = sessions
        .iter()
        .find(|s| s["command"] == "Binlog Dump GTID")
        .unwrap();
    assert_eq!(binlog["decision"], "spared");
    assert_eq!(binlog["reason"], "protected: a replica's binlog dump");
}

#[test]
fn plan_of_a_malformed_snapshot_names_the_file_and_position() {
    let setup = Setup::new();
    let bad = setup.secret(
        "bad.json",
        "{\"format\": \"session-reaper/snapshot/v1\",\n \"sessions\": [ {\"id\": 1,, } ]}",
    );
    let out = run(&[
        "plan",
        "--config",
        "examples/quickstart.yaml",
        "--snapshot",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.json: not JSON:") && err.contains("line 2"),
        "{err}"
    );
    let vendor = setup.secret("other.json", "{\"Response\": {}}");
    let out = run(&[
        "plan",
        "--config",
        "examples/quickstart.yaml",
        "--snapshot",
        vendor.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a session-reaper snapshot"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("DescribeMySqlProcessList"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn fingerprint_reads_one_statement_or_json_lines() {
    use std::io::Write;
    let mut child = bin()
        .args(["fingerprint"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT * FROM t WHERE id IN (1,2,3)\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "select * from t where id in(?+)\n");

    let mut child = bin()
        .args(["fingerprint", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\"SELECT 1\"\n\"INSERT INTO t VALUES (1), (2)\\n\"\n\"CALL p(1)\"\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        text(&out.stdout),
        "\"select ?\"\n\"insert into t values(?+)\"\n\"call p\"\n"
    );
}

#[test]
fn the_quick_start_daemon_serves_metrics_and_prints_decisions() {
    let setup = Setup::new();
    let config = quickstart_copy(&setup);
    let mut child = bin()
        .args(["run", "--config", &config, "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut addr = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline
        && (addr.is_none()
            || !lines
                .iter()
                .any(|l: &String| l.contains("would kill session")))
    {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                addr = rest.split_whitespace().next().map(str::to_owned);
            }
            lines.push(line);
        }
    }
    let addr: std::net::SocketAddr = addr
        .expect("the daemon says where it listens")
        .parse()
        .unwrap();
    assert!(
        lines.iter().any(|l| l.contains("would kill session 1090")),
        "{lines:#?}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (code, page) = rt.block_on(support::http_get(addr, "/metrics"));
    assert_eq!(code, 200);
    assert!(
        page.contains("session_reaper_build_info{version="),
        "{page}"
    );
    let (code, _) = rt.block_on(support::http_get(addr, "/readyz"));
    assert_eq!(code, 200);
    let out = run(&["health", "--url", &format!("http://{addr}/readyz")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    unsafe_kill(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

#[test]
fn health_says_why_it_failed() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let out = run(&["health", "--url", &url]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{url}: ")) && stderr.contains("refused"),
        "{stderr}"
    );
    let out = run(&["health", "--url", "localhost:9187/healthz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a URL to ask")
            && text(&out.stderr).contains("write http://HOST:PORT/healthz"),
        "{}",
        text(&out.stderr)
    );
}

fn unsafe_kill(pid: u32, signal: &str) {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_policy_keeps_the_running_policy() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("hup_app", None).await;
    let other = db.create_user("hup_other", None).await;
    setup.mysql_config("db", db, &reaper);
    let policy = |user: &str| {
        format!("name: idle\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {user}\n")
    };
    setup.policy("idle.yaml", &policy(&app.name));
    let mut child = support::run_command(&setup.config_path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut r = stderr;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let _a = db.open_idle(&app, 2).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await,
        "the policy runs"
    );

    // A broken edit, then SIGHUP: refused, the old policy keeps running.
    setup.policy(
        "idle.yaml",
        &format!("{}  comand: Sleep\n", policy(&other.name)),
    );
    unsafe_kill(child.id(), "HUP");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            log.lock().unwrap().contains("reload failed")
        })
        .await,
        "{}",
        log.lock().unwrap()
    );
    let _b = db.open_idle(&app, 2).await;
    let _o = db.open_idle(&other, 2).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await,
        "the old policy still kills"
    );
    assert_eq!(
        db.ids_of(&other.name).await.len(),
        2,
        "the broken one never ran"
    );
    let text = log.lock().unwrap().clone();
    assert!(text.contains("unknown key `match.comand`"), "{text}");

    // Fixed, then SIGHUP: the new policy runs.
    setup.policy("idle.yaml", &policy(&other.name));
    unsafe_kill(child.id(), "HUP");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.ids_of(&other.name).await.is_empty()
        })
        .await,
        "the new policy runs"
    );
    unsafe_kill(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_leaves_the_daemon_up_and_it_resumes_by_itself() {
    let db = MariaDb::dedicated();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("down_app", None).await;
    setup.mysql_config("db", &db, &reaper);
    setup.policy(
        "idle.yaml",
        &format!(
            "name: idle\nschedule: every 100ms\nmode: enforce\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    db.stop();
    let daemon =
        session_reaper::daemon::start(&setup.config_path(), Some("127.0.0.1:0".parse().unwrap()))
            .await
            .expect("the daemon starts without its database");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (code, body) = support::http_get(daemon.addr, "/readyz").await;
            code == 503 && body.contains("cannot connect to db")
        })
        .await
    );
    let (_, body) = support::http_get(daemon.addr, "/readyz").await;
    assert!(!body.contains(&reaper.password), "no password in {body}");
    db.restart();
    let _a = db.open_idle(&app, 3).await;
    assert!(
        wait_until(Duration::from_secs(40), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await,
        "kills resume once the server is back"
    );
    let (code, _) = support::http_get(daemon.addr, "/readyz").await;
    assert_eq!(code, 200);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_by_id_goes_through_the_same_gates_and_the_audit_log() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("man_app", None).await;
    let etl = db.create_user("man_etl", None).await;
    let _a = db.open_idle(&app, 1).await;
    let _e = db.open_idle(&etl, 1).await;
    let app_id = db.ids_of(&app.name).await[0];
    let etl_id = db.ids_of(&etl.name).await[0];
    setup.config(&format!(
        "ignored_users: [{}]\ntargets:\n{}",
        etl.name,
        setup.mysql_target("db", db, &reaper)
    ));
    let config = setup.config_path();
    let out = run(&[
        "kill",
        "--config",
        config.to_str().unwrap(),
        "--target",
        "db",
        &app_id.to_string(),
        &etl_id.to_string(),
        "999999999",
    ]);
    assert_eq!(out.status.code(), Some(1), "refusals make it a failure");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        stdout.contains(&format!("session {app_id}: killed")),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("session {etl_id}: refused: ignored user")),
        "{stderr}"
    );
    assert!(
        stderr.contains("session 999999999: refused: no session 999999999 on db"),
        "{stderr}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    assert_eq!(db.ids_of(&etl.name).await, vec![etl_id]);
    let audit = setup.audit();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(
        audit
            .iter()
            .all(|r| &*r.policy == "manual" && r.session_id == app_id && r.mode == "enforce")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_json_writes_a_snapshot_that_plan_replays() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let reaper = db.reaper_user().await;
    let app = db.create_user("rec_app", None).await;
    let _a = db.open_idle(&app, 2).await;
    setup.mysql_config("db", db, &reaper);
    setup.policy(
        "idle.yaml",
        &format!(
            "name: idle\nschedule: every 1s\nmatch:\n  user: {}\n",
            app.name
        ),
    );
    let config = setup.config_path();
    let out = run(&[
        "sessions",
        "--config",
        config.to_str().unwrap(),
        "--target",
        "db",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let recorded = setup.secret("recorded.json", &text(&out.stdout));
    let text_out = run(&[
        "sessions",
        "--config",
        config.to_str().unwrap(),
        "--target",
        "db",
    ]);
    assert!(text(&text_out.stdout).contains(&app.name));
    let out = run(&[
        "plan",
        "--config",
        config.to_str().unwrap(),
        "--snapshot",
        recorded.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert_eq!(plan.matches("would-kill").count(), 2, "{plan}");
    assert!(plan.contains("protected: our own connection"), "{plan}");
}

/// The YAML blocks of the README that start with `# <path>`.
fn readme_block(path_comment: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or_default())
        .find(|b| b.starts_with(&format!("# {path_comment}\n")))
        .unwrap_or_else(|| panic!("README has a block for {path_comment}"))
        .to_owned()
}

#[test]
fn the_readme_config_and_policy_pass_check() {
    let setup = Setup::new();
    let config = readme_block("/etc/session-reaper/config.yaml")
        .replace(
            "/etc/session-reaper/policies",
            setup.path().join("policies").to_str().unwrap(),
        )
        .replace(
            "/var/lib/session-reaper",
            setup.path().join("state").to_str().unwrap(),
        );
    std::fs::write(setup.config_path(), config).unwrap();
    setup.policy(
        "idle-app.yaml",
        &readme_block("/etc/session-reaper/policies/idle-app.yaml"),
    );
    let out = bin()
        .args(["check", "--config", setup.config_path().to_str().unwrap()])
        .env("REAPER_ORDERS_PASSWORD", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok: 1 target, 1 policy (1 enforce, 0 dry-run)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_daemon_whose_log_pipe_closed_still_runs_and_stops_on_sigterm() {
    for format in ["text", "json"] {
        log_pipe_closed(format);
    }
}

fn log_pipe_closed(format: &str) {
    let setup = Setup::new();
    let config = quickstart_copy(&setup);
    let mut child = support::run_command(std::path::Path::new(&config))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--log-format", format])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reader goes away: every log write fails
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    unsafe_kill(child.id(), "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM was not honoured"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn check_reports_cloud_target_errors() {
    let out = bin()
        .args(["check", "--config", "tests/data/broken-cloud/config.yaml"])
        .env("SESSION_REAPER_TEST_AK", "LTAI-not-shown")
        .env("SESSION_REAPER_TEST_SK", "secret-not-shown")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("not-shown"), "no secret in errors");
    insta::assert_snapshot!("check_broken_cloud", stderr);
}

#[test]
fn plan_replays_a_saved_response_of_each_cloud_snapshot_api() {
    for (file, provider, protected) in [
        (
            "alibaba-GetMySQLAllSessionAsync",
            "alibaba-das",
            "aliyun_root",
        ),
        (
            "tencent-DescribeMySqlProcessList",
            "tencent-dbbrain",
            "tencentroot",
        ),
        ("huawei-processes", "huawei-das", "rdsAdmin"),
    ] {
        let path = format!("tests/data/vendor/{file}.json");
        let out = run(&[
            "plan",
            "--config",
            "examples/quickstart.yaml",
            "--snapshot",
            &path,
        ]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out.stderr));
        let plan = text(&out.stdout);
        assert!(
            plan.contains(&format!("replaying {provider} data")),
            "{plan}"
        );
        assert!(
            plan.contains(&format!(
                "protected: `{protected}` is on the protected account list"
            )),
            "{plan}"
        );
        assert_eq!(plan.matches("would-kill").count(), 1, "{plan}");
    }
}

#[test]
fn the_readme_cloud_configs_pass_check() {
    for provider in ["alibaba-das", "tencent-dbbrain", "huawei-das"] {
        let setup = Setup::new();
        let config = format!(
            "state_dir: {}\npolicies_dir: {}\n{}",
            setup.path().join("state").display(),
            setup.path().join("policies").display(),
            readme_block(&format!("config.yaml for {provider}"))
        );
        std::fs::write(setup.config_path(), config).unwrap();
        let mut cmd = bin();
        cmd.args(["check", "--config", setup.config_path().to_str().unwrap()]);
        for var in [
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            "REAPER_RDS_PASSWORD",
            "TENCENTCLOUD_SECRET_ID",
            "TENCENTCLOUD_SECRET_KEY",
            "HUAWEICLOUD_SDK_AK",
            "HUAWEICLOUD_SDK_SK",
            "REAPER_HW_PASSWORD",
        ] {
            cmd.env(var, "x");
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{provider}: {}",
            text(&out.stderr)
        );
    }
}
