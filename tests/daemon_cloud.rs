//! The daemon end to end with each cloud provider, against the fakes (which run on
//! a real MariaDB): matching sessions are killed; ignored users and the cloud's own
//! accounts are spared.

mod support;

use std::time::Duration;

use session_reaper::audit::Event;
use session_reaper::daemon;
use support::fakes::{self, Fake};
use support::{MariaDb, Setup, User, http_get, metric, wait_until};

fn creds(setup: &Setup, fake: &Fake) -> (String, String) {
    (
        setup
            .secret("ak", &fake.shared.key_id)
            .display()
            .to_string(),
        setup
            .secret("sk", &fake.shared.secret)
            .display()
            .to_string(),
    )
}

async fn run_and_check(
    setup: &Setup,
    db: &MariaDb,
    target: &str,
    app: &User,
    ignored: &User,
    protected: &User,
) {
    setup.config(&format!(
        "ignored_users: [{}]\ntargets:\n{target}",
        ignored.name
    ));
    setup.policy(
        "idle.yaml",
        &format!(
            "name: idle\nschedule: every 200ms\nmode: enforce\nmatch:\n  user: [{}, {}, {}]\n  command: Sleep\n",
            app.name, ignored.name, protected.name
        ),
    );
    let _a = db.open_idle(app, 3).await;
    let _i = db.open_idle(ignored, 1).await;
    let _p = db.open_idle(protected, 1).await;
    let d = daemon::start(&setup.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let killed = wait_until(Duration::from_secs(15), || async {
        db.ids_of(&app.name).await.is_empty()
    })
    .await;
    let (_, status) = http_get(d.addr, "/status").await;
    assert!(killed, "the app sessions are killed: {status}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        db.ids_of(&ignored.name).await.len(),
        1,
        "ignored user spared"
    );
    assert_eq!(
        db.ids_of(&protected.name).await.len(),
        1,
        "the provider's account spared"
    );
    let (_, page) = http_get(d.addr, "/metrics").await;
    assert!(
        page.contains("session_reaper_provider_requests_total{"),
        "{page}"
    );
    assert!(
        metric(
            &page,
            "session_reaper_spared_total{reason=\"provider_account\",target=\"cloud\"}"
        )
        .is_some(),
        "{page}"
    );
    d.shutdown().await;
    let audit = setup.audit();
    let outcomes: Vec<_> = audit.iter().filter(|r| r.event == Event::Outcome).collect();
    assert_eq!(outcomes.len(), 3, "{audit:#?}");
    assert!(
        outcomes
            .iter()
            .all(|r| r.result.as_deref() == Some("killed")
                && r.user.as_deref() == Some(app.name.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_kills_through_alibaba_das() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::alibaba_das(db).await;
    let (ak, sk) = creds(&setup, &fake);
    let pw = setup.secret("dbpw", "kill-pw");
    let target = format!(
        "  - name: cloud\n    provider: alibaba-das\n    instance_id: rm-test\n    access_key_id: {{file: {ak}}}\n    access_key_secret: {{file: {sk}}}\n    db_user: reaper\n    db_password: {{file: {}}}\n    endpoint: {}\n    poll_interval: 50ms\n",
        pw.display(),
        fake.endpoint()
    );
    let app = db.create_user("dca_app", None).await;
    let etl = db.create_user("dca_etl", None).await;
    let ops = db.named_user("aliyun_root").await;
    run_and_check(&setup, db, &target, &app, &etl, &ops).await;
    let create = &fake.shared.calls_of("CreateKillInstanceSessionTask")[0];
    assert!(
        create["IgnoredUsers"].as_str().unwrap().contains(&etl.name),
        "ignored users are passed to DAS too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_kills_through_tencent_dbbrain() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::tencent_dbbrain(db).await;
    let (ak, sk) = creds(&setup, &fake);
    let target = format!(
        "  - name: cloud\n    provider: tencent-dbbrain\n    region: ap-guangzhou\n    instance_id: cdb-test\n    secret_id: {{file: {ak}}}\n    secret_key: {{file: {sk}}}\n    endpoint: {}\n",
        fake.endpoint()
    );
    let app = db.create_user("dct_app", None).await;
    let etl = db.create_user("dct_etl", None).await;
    let ops = db.named_user("tencentroot").await;
    run_and_check(&setup, db, &target, &app, &etl, &ops).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_kills_through_huawei_das_listing_the_policies_users() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::huawei_das(db).await;
    let (ak, sk) = creds(&setup, &fake);
    let pw = setup.secret("dbpw", "kill-pw");
    let target = format!(
        "  - name: cloud\n    provider: huawei-das\n    region: cn-north-4\n    project_id: proj-test\n    instance_id: inst-test\n    access_key: {{file: {ak}}}\n    secret_key: {{file: {sk}}}\n    db_user: reaper\n    db_password: {{file: {}}}\n    endpoint: {}\n",
        pw.display(),
        fake.endpoint()
    );
    let app = db.create_user("dch_app", None).await;
    let etl = db.create_user("dch_etl", None).await;
    let ops = db.named_user("rdsAdmin").await;
    run_and_check(&setup, db, &target, &app, &etl, &ops).await;
    let users: Vec<String> = fake
        .shared
        .calls_of("ListProcesses")
        .iter()
        .filter_map(|c| c["user"].as_str().map(str::to_owned))
        .collect();
    assert!(
        users.contains(&app.name) && users.contains(&"rdsAdmin".to_owned()),
        "{users:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_leave_the_daemon_up_and_say_which_api_answered_what() {
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::tencent_dbbrain(db).await;
    let ak = setup.secret("ak", &fake.shared.key_id);
    let sk = setup.secret("sk", "a-wrong-secret-key");
    setup.config(&format!(
        "targets:\n  - name: cloud\n    provider: tencent-dbbrain\n    region: ap-guangzhou\n    instance_id: cdb-test\n    secret_id: {{file: {}}}\n    secret_key: {{file: {}}}\n    endpoint: {}\n",
        ak.display(),
        sk.display(),
        fake.endpoint()
    ));
    setup.policy(
        "idle.yaml",
        "name: idle\nschedule: every 200ms\nmode: enforce\nmatch:\n  user: app\n",
    );
    let d = daemon::start(&setup.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (code, body) = http_get(d.addr, "/readyz").await;
            code == 503
                && body.contains(
                    "tencent-dbbrain DescribeMySqlProcessList: AuthFailure.SignatureFailure",
                )
                && body.contains("request id fake-tc-1")
        })
        .await
    );
    let (_, status) = http_get(d.addr, "/status").await;
    let (_, metrics) = http_get(d.addr, "/metrics").await;
    for page in [&status, &metrics] {
        assert!(!page.contains("a-wrong-secret-key"), "no secret in {page}");
    }
    assert!(metrics.contains(
        "session_reaper_provider_requests_total{operation=\"DescribeMySqlProcessList\",provider=\"tencent-dbbrain\",status=\"auth_error\"}"
    ));
    d.shutdown().await;
}
