//! The deployment files stay true to the daemon: the Grafana dashboard and the alert
//! rules only use metrics (and labels) a running daemon exports, and together they
//! show every metric it exports; the alerts pass `promtool check rules` and their
//! unit tests; `/metrics` passes `promtool check metrics`; the systemd unit passes
//! `systemd-analyze verify` and rates 2.0 or lower on `systemd-analyze security`; the
//! Dockerfile builds what Cargo.toml needs and runs as a non-root user; the
//! production config template passes `check`.
//!
//! The external tools are installed by `scripts/test`, which names them in
//! SESSION_REAPER_REQUIRE_TOOLS so that a missing one fails instead of skipping.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use session_reaper::daemon;
use support::fakes;
use support::{MariaDb, Setup, http_get, metric, wait_until};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The path of an installed tool. Without it the test is skipped with a message,
/// unless SESSION_REAPER_REQUIRE_TOOLS names it (`scripts/test` names the tools it
/// installed): then it fails.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("SESSION_REAPER_REQUIRE_TOOLS").unwrap_or_default();
        assert!(
            !required.split_whitespace().any(|t| t == name),
            "{name} is not installed (scripts/test installs it when run as root)"
        );
        eprintln!("skipped: {name} is not installed");
    }
    found
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("stdin");
    }
    drop(input);
    child.wait_with_output().expect("output")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---- PromQL ----

/// What a PromQL expression refers to: metric names, label names, and other
/// identifiers (functions, keywords, metrics of other exporters).
#[derive(Debug, Default)]
struct Uses {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
    other: BTreeSet<String>,
}

const GROUPING: &[&str] = &[
    "by",
    "on",
    "without",
    "ignoring",
    "group_left",
    "group_right",
];

/// A small PromQL scanner: enough to tell metric names from label names (in `{}`
/// matchers and grouping lists) and to skip strings and range durations.
fn promql_uses(expr: &str) -> Uses {
    let b = expr.as_bytes();
    let mut uses = Uses::default();
    let (mut i, mut in_braces, mut grouping_next, mut in_grouping) = (0, false, false, false);
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i += 1;
            }
            b'{' | b'}' => {
                in_braces = c == b'{';
                i += 1;
            }
            b'(' => {
                in_grouping = grouping_next;
                grouping_next = false;
                i += 1;
            }
            b')' => {
                in_grouping = false;
                i += 1;
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_:$".contains(&b[i])) {
                    i += 1;
                }
                let word = &expr[start..i];
                if word.starts_with('$') {
                    continue;
                }
                if in_braces || in_grouping {
                    uses.labels.insert(word.to_owned());
                } else if GROUPING.contains(&word) {
                    grouping_next = true;
                } else if word.starts_with("session_reaper_") {
                    uses.metrics.insert(word.to_owned());
                } else {
                    uses.other.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    uses
}

/// The functions and keywords our expressions may use besides metric names.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "max",
    "min",
    "count",
    "rate",
    "increase",
    "changes",
    "histogram_quantile",
    "time",
    "clamp_min",
    "vector",
    "label_values",
    "and",
    "or",
    "unless",
    "instance",
    "target",
    "policy",
];

#[test]
fn the_promql_scanner_tells_metrics_from_labels() {
    let u = promql_uses(
        r#"histogram_quantile(0.99, sum by (target, le) (rate(session_reaper_x_bucket{instance=~"$i", a="b}"}[$__rate_interval]))) > on (job) group_left () clamp_min(5 * session_reaper_y, 60)"#,
    );
    assert_eq!(
        u.metrics.into_iter().collect::<Vec<_>>(),
        ["session_reaper_x_bucket", "session_reaper_y"]
    );
    assert_eq!(
        u.labels.into_iter().collect::<Vec<_>>(),
        ["a", "instance", "job", "le", "target"]
    );
    assert_eq!(
        u.other.into_iter().collect::<Vec<_>>(),
        ["clamp_min", "histogram_quantile", "rate", "sum"]
    );
}

/// Every PromQL expression in the dashboard: panel targets, template variables and
/// annotations.
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(s)) if !s.is_empty() && s != "prometheus" => {
                        out.push(s.clone())
                    }
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

fn alert_rules() -> Vec<(String, String)> {
    let doc: Value = serde_saphyr::from_str(&read("deploy/prometheus/alerts.yaml")).unwrap();
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Sample names of a /metrics page with the label names each carries, and the
/// families (`# TYPE`) it declares.
fn scraped(page: &str) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut families = BTreeSet::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap();
        let labels = samples.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            let body = &line[end + 1..line.rfind('}').unwrap()];
            for pair in body.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim_matches(',').to_owned());
                }
            }
        }
    }
    (samples, families)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_alerts_use_only_what_a_running_daemon_exports_and_show_all_of_it() {
    // A daemon with everything that makes metrics: a direct MariaDB target and a
    // Tencent DBbrain one (its fake), replicas coordinated through leases, an enforce
    // policy that kills, a dry-run one, an ignored user.
    let db = MariaDb::shared();
    let setup = Setup::new();
    let fake = fakes::tencent_dbbrain(db).await;
    let reaper = db.reaper_user().await;
    let app = db.create_user("dep_app", None).await;
    let app_cloud = db.create_user("dep_appc", None).await;
    let etl = db.create_user("dep_etl", None).await;
    let report = db.create_user("dep_rep", None).await;
    let ak = setup.secret("ak", &fake.shared.key_id);
    let sk = setup.secret("sk", &fake.shared.secret);
    let suffix = std::process::id();
    let direct = setup.mysql_target(&format!("deploy-direct-{suffix}"), db, &reaper);
    setup.config(&format!(
        "ignored_users: [{etl}]\ncoordination:\n  mysql:\n    url: mysql://root@127.0.0.1:{port}\n    lease: 3s\ntargets:\n{direct}  - name: deploy-cloud-{suffix}\n    provider: tencent-dbbrain\n    region: ap-guangzhou\n    instance_id: cdb-test\n    secret_id: {{file: {ak}}}\n    secret_key: {{file: {sk}}}\n    endpoint: {endpoint}\n",
        etl = etl.name,
        port = db.port,
        ak = ak.display(),
        sk = sk.display(),
        endpoint = fake.endpoint(),
    ));
    // Each target kills sessions of its own: were both after the same ones, the
    // faster would leave the other nothing but `gone` (and no kill results).
    setup.policy(
        "idle.yaml",
        &format!(
            "name: idle\nschedule: every 200ms\nmode: enforce\ntargets: [deploy-direct-{suffix}]\nmatch:\n  user: [{}, {}]\n  command: Sleep\n",
            app.name, etl.name
        ),
    );
    setup.policy(
        "idle-cloud.yaml",
        &format!(
            "name: idle-cloud\nschedule: every 200ms\nmode: enforce\ntargets: [deploy-cloud-{suffix}]\nmatch:\n  user: {}\n  command: Sleep\n",
            app_cloud.name
        ),
    );
    setup.policy(
        "reports.yaml",
        &format!(
            "name: reports\nschedule: every 200ms\nmode: dry-run\nmatch:\n  user: {}\n",
            report.name
        ),
    );
    let _etl = db.open_idle(&etl, 1).await;
    let _report = db.open_idle(&report, 1).await;
    let d = daemon::start(&setup.config_path(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Sessions opened once both targets are owned are killed through either.
    assert!(
        wait_until(Duration::from_secs(15), || async {
            let (_, page) = http_get(d.addr, "/metrics").await;
            page.lines()
                .filter(|l| l.starts_with("session_reaper_lease_held{") && l.ends_with(" 1"))
                .count()
                == 2
        })
        .await,
        "both targets owned"
    );
    let _app = db.open_idle(&app, 4).await;
    let _app_cloud = db.open_idle(&app_cloud, 2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = http_get(d.addr, "/metrics").await.1;
        let killed: f64 = page
            .lines()
            .filter(|l| {
                l.starts_with("session_reaper_kills_total{") && l.contains("result=\"killed\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if killed >= 6.0 && page.contains("session_reaper_provider_kill_results_total{") {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the app sessions are killed: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metric(&page, &format!("session_reaper_would_kill_total{{policy=\"reports\",target=\"deploy-direct-{suffix}\"}}")).unwrap_or(0.0) >= 1.0,
        "{page}"
    );
    d.shutdown().await;

    // The page itself passes Prometheus's own linter.
    if let Some(promtool) = tool("promtool") {
        let out = run(
            Command::new(promtool).args(["check", "metrics"]),
            Some(&page),
        );
        println!("promtool check metrics: {}", text(&out));
        assert!(
            out.status.success(),
            "promtool check metrics: {}",
            text(&out)
        );
    }

    let (samples, families) = scraped(&page);
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/session-reaper.json"))
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 25, "{exprs:#?}");
    let mut shown = BTreeSet::new();
    let mut problems = Vec::new();
    let alerts = alert_rules();
    let all = exprs
        .iter()
        .map(|e| ("dashboard".to_owned(), e.clone()))
        .chain(
            alerts
                .iter()
                .map(|(a, e)| (format!("alert {a}"), e.clone())),
        );
    for (origin, expr) in all {
        let uses = promql_uses(&expr);
        if uses.metrics.is_empty() && !uses.other.contains("up") {
            problems.push(format!("{origin}: no session-reaper metric in {expr}"));
        }
        let mut labels: BTreeSet<&str> = ["job", "instance", "le"].into();
        for m in &uses.metrics {
            match samples.get(m) {
                Some(l) => labels.extend(l.iter().map(String::as_str)),
                None => problems.push(format!("{origin}: {m} is not exported (in {expr})")),
            }
            shown.insert(
                m.trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum")
                    .to_owned(),
            );
        }
        for l in &uses.labels {
            if !labels.contains(l.as_str()) {
                problems.push(format!(
                    "{origin}: label {l} is on none of {:?} (in {expr})",
                    uses.metrics
                ));
            }
        }
        let allowed_other =
            |w: &str| PROMQL_WORDS.contains(&w) || (origin.starts_with("alert") && w == "up");
        for w in uses.other.iter().filter(|w| !allowed_other(w)) {
            problems.push(format!("{origin}: unknown name {w} (in {expr})"));
        }
    }
    let unshown: Vec<&String> = families.difference(&shown).collect();
    if !unshown.is_empty() {
        problems.push(format!(
            "exported but on neither the dashboard nor an alert: {unshown:?}"
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
    println!(
        "{} dashboard expressions and {} alerts checked against {} exported families",
        exprs.len(),
        alerts.len(),
        families.len()
    );
}

#[test]
fn the_dashboard_is_importable() {
    let d: Value = serde_json::from_str(&read("deploy/grafana/session-reaper.json")).unwrap();
    assert_eq!(d["uid"], "session-reaper");
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{}",
                p["title"]
            );
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Kills by policy and target",
        "Would kill (dry-run) by policy and target",
        "Spared by reason",
        "Breakers open",
        "Snapshot latency",
        "Detection to kill",
        "Provider requests by status",
        "Targets ready",
        "Config reloads",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted}: {titles:?}");
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_each_alert_has_a_firing_unit_test() {
    let tested: Value =
        serde_saphyr::from_str(&read("deploy/prometheus/alerts.test.yaml")).unwrap();
    let firing: BTreeSet<&str> = tested["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().iter())
        .filter(|a| !a["exp_alerts"].as_array().unwrap().is_empty())
        .map(|a| a["alertname"].as_str().unwrap())
        .collect();
    let names: Vec<String> = alert_rules().into_iter().map(|(a, _)| a).collect();
    for a in &names {
        assert!(firing.contains(a.as_str()), "{a} has no test that fires it");
    }
    for wanted in [
        "SessionReaperBreakerOpen",
        "SessionReaperTargetNotReady",
        "SessionReaperNoSuccessfulEvaluation",
        "SessionReaperKillFailures",
        "SessionReaperKillsRefused",
        "SessionReaperConfigReloadFailed",
        "SessionReaperAuditUnwritable",
    ] {
        assert!(names.iter().any(|n| n == wanted), "no alert {wanted}");
    }
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = run(Command::new(&promtool).current_dir(&dir).args(args), None);
        println!("promtool {}: {}", args.join(" "), text(&out));
        assert!(out.status.success(), "promtool {args:?}: {}", text(&out));
    }
}

#[test]
fn the_systemd_unit_verifies_and_rates_2_or_lower() {
    let unit = read("systemd/session-reaper.service");
    for wanted in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=session-reaper",
        "ConfigurationDirectory=session-reaper",
        "\nLoadCredential=",
        "ExecStartPre=/usr/bin/session-reaper check",
    ] {
        assert!(unit.contains(wanted), "the unit has no {wanted}");
    }
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    // Verify the unit as installed: our binary at its path, our man page on MANPATH.
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man/man1");
    std::fs::create_dir_all(&man).unwrap();
    let bin = env!("CARGO_BIN_EXE_session-reaper");
    let page = Command::new(bin).arg("man").output().unwrap();
    std::fs::write(man.join("session-reaper.1"), page.stdout).unwrap();
    let unit_path = dir.path().join("session-reaper.service");
    std::fs::write(&unit_path, unit.replace("/usr/bin/session-reaper", bin)).unwrap();
    let out = run(
        Command::new(&analyze)
            .env("MANPATH", dir.path().join("man"))
            .arg("verify")
            .arg(&unit_path),
        None,
    );
    println!("systemd-analyze verify: {}", text(&out));
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
    let out = run(
        Command::new(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit_path),
        None,
    );
    let report = text(&out);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure figure: {report}"));
    println!("systemd-analyze security: {line}");
    let figure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(figure <= 2.0, "exposure {figure} > 2.0:\n{report}");
}

#[test]
fn the_dockerfile_builds_what_cargo_needs_and_runs_unprivileged() {
    let file = read("Dockerfile");
    let lines: Vec<String> = file
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let stages: Vec<&String> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("RUN ") && l.contains("cargo build --locked --release")),
        "builds with the locked dependencies"
    );
    let runtime_start = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let runtime = &lines[runtime_start..];
    assert!(
        !runtime[0].contains("rust:"),
        "the runtime image is not the toolchain: {}",
        runtime[0]
    );
    let user = runtime
        .iter()
        .rfind(|l| l.starts_with("USER "))
        .expect("the runtime stage sets a user");
    let uid = user[5..].split(':').next().unwrap().trim();
    assert!(
        !["0", "root"].contains(&uid),
        "the runtime user is not root: {user}"
    );
    for wanted in [
        "EXPOSE 9187",
        "VOLUME",
        "HEALTHCHECK",
        "ENTRYPOINT [\"/usr/bin/session-reaper\"]",
    ] {
        assert!(
            runtime.iter().any(|l| l.starts_with(wanted)),
            "runtime stage has no {wanted}"
        );
    }
    let health = runtime
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .unwrap();
    assert!(
        health.contains("\"/usr/bin/session-reaper\", \"health\""),
        "the health check uses the binary itself (no curl in the image): {health}"
    );
    let volume = runtime.iter().find(|l| l.starts_with("VOLUME")).unwrap();
    assert!(volume.contains("/etc/session-reaper") && volume.contains("/var/lib/session-reaper"));
    // Every file the build context must provide exists, and covers every target
    // Cargo.toml names (a [[bench]] or [[bin]] outside the copied paths breaks the
    // build).
    let mut copied = Vec::new();
    for l in lines.iter().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = l.split_whitespace().skip(1).collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let paths: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for src in &paths[..paths.len() - 1] {
            assert!(root().join(src).exists(), "COPY {src}: no such file");
            copied.push(src.trim_end_matches('/').to_owned());
        }
    }
    let manifest = read("Cargo.toml");
    // Declared targets: their `path`, or where Cargo looks for a [[bench]] by name.
    let mut section = "";
    let mut paths = Vec::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            section = line;
        } else if let Some(p) = line.strip_prefix("path = ") {
            paths.push(p.trim_matches('"').to_owned());
        } else if let Some(name) = line.strip_prefix("name = ")
            && section == "[[bench]]"
        {
            paths.push(format!("benches/{}.rs", name.trim_matches('"')));
        }
    }
    for path in &paths {
        let path = path.as_str();
        assert!(
            copied
                .iter()
                .any(|c| path == c || path.starts_with(&format!("{c}/"))),
            "Cargo.toml names {path}, which the Dockerfile does not copy"
        );
    }
    if let Some(hadolint) = tool("hadolint") {
        let out = run(Command::new(hadolint).arg(root().join("Dockerfile")), None);
        println!("hadolint: {}", text(&out));
        assert!(out.status.success(), "hadolint: {}", text(&out));
    }
}

#[test]
fn the_production_config_template_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("orders-password"), "secret\n").unwrap();
    let config = read("deploy/config.yaml")
        .replace(
            "/etc/session-reaper/policies",
            &root().join("policies").display().to_string(),
        )
        .replace(
            "/var/lib/session-reaper",
            &dir.path().join("state").display().to_string(),
        );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let check = |credentials: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_session-reaper"));
        cmd.env_remove("CREDENTIALS_DIRECTORY");
        if let Some(c) = credentials {
            cmd.env("CREDENTIALS_DIRECTORY", c);
        }
        run(cmd.arg("check").arg("--config").arg(&path), None)
    };
    // As the service runs it: systemd's credentials directory.
    let systemd = dir.path().join("run-credentials");
    std::fs::create_dir(&systemd).unwrap();
    std::fs::write(systemd.join("orders-password"), "secret\n").unwrap();
    let out = check(Some(&systemd));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ok: 1 target"), "{}", text(&out));
    // As an operator runs `check` or `plan`: the credentials/ directory next to the
    // config, where LoadCredential= reads from.
    let out = check(None);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_file(creds.join("orders-password")).unwrap();
    let out = check(None);
    assert!(
        !out.status.success() && text(&out).contains("missing secret: cannot read"),
        "{}",
        text(&out)
    );
}
