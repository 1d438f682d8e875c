//! The three cloud providers against in-process fakes of their APIs (signatures
//! checked, the vendors' response shapes, faults injected), backed by a real
//! MariaDB: listings are its process list, kills are real KILLs.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_reaper::config;
use session_reaper::core::policy::Action;
use session_reaper::core::recheck::{Recheck, recheck};
use session_reaper::core::session::Session;
use session_reaper::metrics::Metrics;
use session_reaper::providers::{KillRequest, KillResult, Needs, Provider, Want};
use support::fakes::{self, Fake, Fault};
use support::{MariaDb, Setup, User, wait_until};

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

fn secrets(setup: &Setup, fake: &Fake) -> (String, String) {
    let ak = setup.secret("ak", &fake.shared.key_id);
    let sk = setup.secret("sk", &fake.shared.secret);
    (ak.display().to_string(), sk.display().to_string())
}

fn alibaba_target(setup: &Setup, fake: &Fake, extra: &str) -> String {
    let (ak, sk) = secrets(setup, fake);
    let pw = setup.secret("dbpw", "kill-pw");
    format!(
        "  - name: ali\n    provider: alibaba-das\n    instance_id: rm-test\n    access_key_id: {{file: {ak}}}\n    access_key_secret: {{file: {sk}}}\n    db_user: reaper\n    db_password: {{file: {}}}\n    endpoint: {}\n    poll_interval: 50ms\n    poll_timeout: 1s\n    timeout: 2s\n{extra}",
        pw.display(),
        fake.endpoint()
    )
}

fn tencent_target(setup: &Setup, fake: &Fake, extra: &str) -> String {
    let (ak, sk) = secrets(setup, fake);
    format!(
        "  - name: tc\n    provider: tencent-dbbrain\n    region: ap-guangzhou\n    instance_id: cdb-test\n    secret_id: {{file: {ak}}}\n    secret_key: {{file: {sk}}}\n    endpoint: {}\n    timeout: 2s\n{extra}",
        fake.endpoint()
    )
}

fn huawei_target(setup: &Setup, fake: &Fake, extra: &str) -> String {
    let (ak, sk) = secrets(setup, fake);
    let pw = setup.secret("dbpw", "kill-pw");
    format!(
        "  - name: hw\n    provider: huawei-das\n    region: cn-north-4\n    project_id: proj-test\n    instance_id: inst-test\n    access_key: {{file: {ak}}}\n    secret_key: {{file: {sk}}}\n    db_user: reaper\n    db_password: {{file: {}}}\n    endpoint: {}\n    timeout: 2s\n{extra}",
        pw.display(),
        fake.endpoint()
    )
}

fn provider(setup: &Setup, target: &str) -> Arc<dyn Provider> {
    let path = setup.config(&format!("targets:\n{target}"));
    let c = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    c.targets[0]
        .factory
        .build(&c.targets[0].name, Arc::new(Metrics::new()))
}

fn requests<'a>(
    sessions: &'a [Session],
    user: &User,
    ignored: &'a [String],
) -> Vec<KillRequest<'a>> {
    sessions
        .iter()
        .filter(|s| s.user.as_deref() == Some(user.name.as_str()))
        .map(|s| KillRequest {
            session: s,
            action: Action::Kill,
            ignored_users: ignored,
            needs: Needs::default(),
            tag: 0,
        })
        .collect()
}

fn mine<'a>(sessions: &'a [Session], user: &User) -> Vec<&'a Session> {
    sessions
        .iter()
        .filter(|s| s.user.as_deref() == Some(user.name.as_str()))
        .collect()
}

// ------------------------------------------------------------------ Alibaba

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_snapshot_polls_the_async_query_until_it_finishes() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::alibaba_das(db).await;
    let app = db.create_user("ali_snap", None).await;
    let _c = db.open_idle(&app, 3).await;
    fake.shared
        .fail_next("GetMySQLAllSessionAsync", Fault::Throttle);
    fake.shared
        .fail_next("GetMySQLAllSessionAsync", Fault::ServerError);
    let p = provider(&setup, &alibaba_target(&setup, &fake, ""));
    let snap = p
        .snapshot(&Want::everything())
        .await
        .expect("throttling and a 500 are retried");
    assert!(snap.partial.is_none());
    assert_eq!(mine(&snap.sessions, &app).len(), 3);
    let calls = fake.shared.calls_of("GetMySQLAllSessionAsync");
    assert!(calls.len() >= 4, "{calls:?}");
    assert_eq!(
        calls[0]["ResultId"], "",
        "the first call has an empty ResultId"
    );
    assert!(
        calls.last().unwrap()["ResultId"]
            .as_str()
            .unwrap()
            .starts_with("async__")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_kill_task_outcomes_come_from_each_session_reason() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::alibaba_das(db).await;
    let app = db.create_user("ali_kill", None).await;
    let etl = db.create_user("ali_etl", None).await;
    let _a = db.open_idle(&app, 2).await;
    let _e = db.open_idle(&etl, 1).await;
    let p = provider(&setup, &alibaba_target(&setup, &fake, ""));
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let ignored = [etl.name.clone()];
    let mut reqs = requests(&snap.sessions, &app, &ignored);
    reqs.extend(requests(&snap.sessions, &etl, &ignored));
    let mut gone_session = reqs[0].session.clone();
    gone_session.id = 999_999_999;
    let gone = KillRequest {
        session: &gone_session,
        ..reqs[0].clone()
    };
    reqs.push(gone);
    let out = p.kill(&reqs, &identity).await;
    assert_eq!(out[0].result, KillResult::Killed);
    assert_eq!(out[1].result, KillResult::Killed);
    assert!(
        matches!(&out[2].result, KillResult::Refused(w) if w.contains("SESSION_IGNORED_USER")),
        "{:?}",
        out[2]
    );
    assert_eq!(out[3].result, KillResult::Gone, "SESSION_EXPIRED");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    assert_eq!(db.ids_of(&etl.name).await.len(), 1);
    let create = &fake.shared.calls_of("CreateKillInstanceSessionTask")[0];
    assert_eq!(create["KillAllSessions"], "false");
    assert_eq!(
        create["IgnoredUsers"],
        serde_json::json!(format!("[\"{}\"]", etl.name))
    );
    let ids: Vec<u64> = serde_json::from_str(create["SessionIds"].as_str().unwrap()).unwrap();
    assert_eq!(ids.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_faults_end_in_bounded_waits_and_clear_errors() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::alibaba_das(db).await;
    let app = db.create_user("ali_fault", None).await;
    let _a = db.open_idle(&app, 1).await;
    let p = provider(&setup, &alibaba_target(&setup, &fake, ""));

    // A truncated body: an error naming the API, never a panic.
    fake.shared
        .fail_next("GetMySQLAllSessionAsync", Fault::Truncate);
    let e = p
        .snapshot(&Want::everything())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("alibaba-das GetMySQLAllSessionAsync: MalformedResponse"),
        "{e}"
    );

    // An async query that never finishes: a partial snapshot after poll_timeout.
    fake.shared
        .fail_always("GetMySQLAllSessionAsync", Fault::NeverFinish);
    let started = Instant::now();
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        snap.partial
            .as_deref()
            .unwrap()
            .contains("did not finish within poll_timeout 1s")
    );
    let fake = fakes::alibaba_das(db).await;
    let p = provider(&setup, &alibaba_target(&setup, &fake, ""));
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let reqs = requests(&snap.sessions, &app, &[]);

    // A kill task that stays RUNNING: unknown, after a bounded wait.
    fake.shared
        .fail_always("GetKillInstanceSessionTaskResult", Fault::TaskStuck);
    let started = Instant::now();
    let out = p.kill(&reqs, &identity).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(&out[0].result, KillResult::Unknown(w) if w.contains("still RUNNING")),
        "{:?}",
        out[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_an_unanswered_kill_is_never_sent_twice() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::alibaba_das(db).await;
    let app = db.create_user("ali_once", None).await;
    let _a = db.open_idle(&app, 1).await;
    let p = provider(&setup, &alibaba_target(&setup, &fake, ""));
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let reqs = requests(&snap.sessions, &app, &[]);
    fake.shared.fail_next(
        "CreateKillInstanceSessionTask",
        Fault::Delay(Duration::from_secs(3)),
    );
    let out = p.kill(&reqs, &identity).await;
    assert!(
        matches!(&out[0].result, KillResult::Unknown(w) if w.contains("Timeout")),
        "{:?}",
        out[0]
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fake.shared.calls_of("CreateKillInstanceSessionTask").len(),
        1,
        "no blind re-send"
    );
    // A throttled kill was surely not applied: that one is retried.
    fake.shared
        .fail_next("CreateKillInstanceSessionTask", Fault::Throttle);
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let reqs = requests(&snap.sessions, &app, &[]);
    if !reqs.is_empty() {
        let out = p.kill(&reqs, &identity).await;
        assert_eq!(out[0].result, KillResult::Killed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_wrong_credentials_say_which_api_answered_what_without_the_secret() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::alibaba_das(db).await;
    let target = alibaba_target(&setup, &fake, "");
    setup.secret("sk", "not-the-right-secret");
    let p = provider(&setup, &target);
    let e = p
        .snapshot(&Want::everything())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "ali: alibaba-das GetMySQLAllSessionAsync: SignatureDoesNotMatch: Specified signature is not matched with our calculation. (request id FAKE-REQ-1)"
    );
    assert!(!e.contains("not-the-right-secret"));
}

// ------------------------------------------------------------------ Tencent

#[tokio::test(flavor = "multi_thread")]
async fn tencent_lists_with_filters_pushed_down_and_kills_with_prepare_commit() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::tencent_dbbrain(db).await;
    let app = db.create_user("tc_app", None).await;
    let _a = db.open_idle(&app, 3).await;
    let p = provider(&setup, &tencent_target(&setup, &fake, ""));
    let want = Want {
        user: Some(app.name.clone()),
        command: Some("Sleep".into()),
        ..Want::default()
    };
    let snap = p.snapshot(&want).await.unwrap();
    assert!(!snap.transactions, "DBbrain has no transaction data");
    assert_eq!(snap.sessions.len(), 3, "only the filtered user comes back");
    let call = &fake.shared.calls_of("DescribeMySqlProcessList")[0];
    assert_eq!(call["User"], app.name.as_str());
    assert_eq!(call["Command"], "Sleep");
    assert_eq!(call["Limit"], 10000);
    // Throttled once on each stage: retried.
    fake.shared
        .fail_next("KillMySqlThreads:Prepare", Fault::Throttle);
    fake.shared
        .fail_next("KillMySqlThreads:Commit", Fault::Throttle);
    let out = p
        .kill(&requests(&snap.sessions, &app, &[]), &identity)
        .await;
    assert!(
        out.iter().all(|o| o.result == KillResult::Killed),
        "{out:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    // One re-check listing, narrowed to the batch's user.
    let lists = fake.shared.calls_of("DescribeMySqlProcessList");
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[1]["User"], app.name.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn tencent_a_late_commit_is_rechecked_before_it_is_tried_again() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::tencent_dbbrain(db).await;
    let app = db.create_user("tc_late", None).await;
    let _a = db.open_idle(&app, 1).await;
    let p = provider(&setup, &tencent_target(&setup, &fake, ""));
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let reqs = requests(&snap.sessions, &app, &[]);
    fake.shared
        .fail_next("KillMySqlThreads:Prepare", Fault::LateCommit);
    let out = p.kill(&reqs, &identity).await;
    assert_eq!(
        out[0].result,
        KillResult::Killed,
        "re-checked, prepared and committed again"
    );
    assert_eq!(
        fake.shared.calls_of("DescribeMySqlProcessList").len(),
        3,
        "a fresh re-check before the retry"
    );

    // Late every time: a clear failure, and the session lives.
    let other = db.create_user("tc_late2", None).await;
    let _o = db.open_idle(&other, 1).await;
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    fake.shared
        .fail_always("KillMySqlThreads:Prepare", Fault::LateCommit);
    let out = p
        .kill(&requests(&snap.sessions, &other, &[]), &identity)
        .await;
    assert!(
        matches!(&out[0].result, KillResult::Failed(w) if w.contains("FailedOperation")),
        "{:?}",
        out[0]
    );
    assert_eq!(db.ids_of(&other.name).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tencent_a_full_page_is_a_partial_snapshot() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::tencent_dbbrain(db).await;
    let app = db.create_user("tc_full", None).await;
    let _a = db.open_idle(&app, 3).await;
    let p = provider(
        &setup,
        &tencent_target(&setup, &fake, "    list_limit: 2\n"),
    );
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    assert_eq!(snap.sessions.len(), 2);
    assert!(
        snap.partial
            .as_deref()
            .unwrap()
            .contains("full page of 2 sessions")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tencent_recheck_spares_a_session_that_changed_hands() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::tencent_dbbrain(db).await;
    let other = db.create_user("tc_other", None).await;
    let _o = db.open_idle(&other, 1).await;
    let p = provider(&setup, &tencent_target(&setup, &fake, ""));
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let mut reqs = requests(&snap.sessions, &other, &[]);
    let mut planned = reqs[0].session.clone();
    planned.user = Some("app".into());
    reqs[0].session = &planned;
    let out = p.kill(&reqs, &identity).await;
    assert!(
        matches!(&out[0].result, KillResult::Changed(_) | KillResult::Gone),
        "{:?}",
        out[0]
    );
    assert!(
        fake.shared.calls_of("KillMySqlThreads").is_empty(),
        "nothing was prepared"
    );
    assert_eq!(db.ids_of(&other.name).await.len(), 1);
}

// ------------------------------------------------------------------- Huawei

#[tokio::test(flavor = "multi_thread")]
async fn huawei_registers_the_db_user_once_and_reads_every_page() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::huawei_das(db).await;
    let app = db.create_user("hw_pages", None).await;
    let _a = db.open_idle(&app, 230).await;
    let p = provider(
        &setup,
        &huawei_target(&setup, &fake, &format!("    list_users: [{}]\n", app.name)),
    );
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    assert_eq!(mine(&snap.sessions, &app).len(), 230);
    let pages = fake.shared.calls_of("ListProcesses");
    assert_eq!(pages.len(), 3, "pages of 100 until count");
    assert_eq!(pages[2]["offset"], "200");
    let _ = p.snapshot(&Want::everything()).await.unwrap();
    assert_eq!(
        fake.shared.calls_of("RegisterDbUser").len(),
        1,
        "registered once"
    );
    let reg = &fake.shared.calls_of("RegisterDbUser")[0]["body"];
    assert_eq!(reg["datastore_type"], "MySQL");
    assert_eq!(reg["db_username"], "reaper");
}

#[tokio::test(flavor = "multi_thread")]
async fn huawei_kills_through_delete_process_after_a_fresh_listing() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::huawei_das(db).await;
    let app = db.create_user("hw_kill", None).await;
    let _a = db.open_idle(&app, 2).await;
    let p = provider(
        &setup,
        &huawei_target(&setup, &fake, &format!("    list_users: [{}]\n", app.name)),
    );
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    let reqs = requests(&snap.sessions, &app, &[]);
    let out = p.kill(&reqs, &identity).await;
    assert!(
        out.iter().all(|o| o.result == KillResult::Killed),
        "{out:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            db.ids_of(&app.name).await.is_empty()
        })
        .await
    );
    let delete = &fake.shared.calls_of("DeleteProcess")[0]["body"];
    let ids: Vec<String> = serde_json::from_value(delete["process_ids"].clone()).unwrap();
    assert_eq!(ids.len(), 2, "process ids are strings");
    assert!(
        delete["db_user_id"]
            .as_str()
            .unwrap()
            .starts_with("2c250598")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn huawei_a_failed_page_or_an_unreadable_field_makes_no_kill_and_no_panic() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::huawei_das(db).await;
    let a = db.create_user("hw_fa", None).await;
    let b = db.create_user("hw_fb", None).await;
    let _a = db.open_idle(&a, 1).await;
    let _b = db.open_idle(&b, 1).await;
    let p = provider(
        &setup,
        &huawei_target(
            &setup,
            &fake,
            &format!("    list_users: [{}, {}]\n", a.name, b.name),
        ),
    );
    let _ = p.snapshot(&Want::everything()).await.unwrap();
    // The first user's listing answers, the second user's fails for good: partial.
    fake.shared.fail_next(
        "ListProcesses",
        Fault::Raw(200, r#"{"processes": [], "count": 0}"#.to_owned()),
    );
    for _ in 0..3 {
        fake.shared.fail_next("ListProcesses", Fault::ServerError);
    }
    let snap = p.snapshot(&Want::everything()).await.unwrap();
    assert!(
        snap.partial.as_deref().unwrap().contains("DAS.0001"),
        "{:?}",
        snap.partial
    );
    // A field that is not a number: an error naming the API and the field.
    fake.shared.fail_next(
        "ListProcesses",
        Fault::Raw(
            200,
            r#"{"processes": [{"id": "7", "time": "a while"}], "count": 1}"#.to_owned(),
        ),
    );
    let e = p
        .snapshot(&Want::everything())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ListProcesses") && e.contains("processes[0].time is not a number"),
        "{e}"
    );
}
