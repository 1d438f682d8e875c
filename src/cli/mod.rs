//! The command line: parse arguments, call the library, map errors to exit codes
//! (0 success, 1 failure or invalid input, 2 usage error).

mod render;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::info;

use crate::config::{self, Config, Target};
use crate::core::plan::plan;
use crate::core::policy::{Action, Policy};
use crate::core::session::Snapshot;
use crate::daemon::{self, Control};
use crate::executor::{Executor, Memory, Tick};
use crate::fingerprint::Fingerprinter;
use crate::metrics::Metrics;
use crate::providers::{Provider, Want, file};

#[derive(Parser, Debug)]
#[command(
    name = "session-reaper",
    version,
    about = "Kills the MySQL/MariaDB sessions your policies name, and never the ones it must not.",
    long_about = "session-reaper watches the process list of MySQL and MariaDB servers (directly, or \
through Alibaba Cloud DAS, Tencent Cloud DBbrain and Huawei Cloud DAS) and kills the sessions \
that your YAML policies match: idle connections, long statements, runaway SQL templates, \
transactions left open. Replication threads, the event scheduler, ignored users and its own \
connections are never touched. Policies are dry-run unless they say `mode: enforce`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SchemaKind {
    Config,
    Policy,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::config::yaml::parse_duration(s)
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum BreakerAction {
    /// Close a policy's breaker on a target now, before its cool-down ends. Talks to
    /// the running daemon through its admin socket (`state_dir/admin.sock`).
    Reset {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, short, value_name = "NAME")]
        policy: String,
        #[arg(long, short, value_name = "NAME")]
        target: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: evaluate every policy on its schedule and act on it.
    ///
    /// SIGHUP reloads the configuration (a broken one is refused and the running one
    /// stays); SIGTERM and SIGINT finish the runs in flight and exit.
    Run {
        /// The config file (targets, policies_dir, listen address).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Log lines as human text (default) or as JSON for log shippers.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Listen here instead of the config's `listen` (e.g. 127.0.0.1:0).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Validate the config and every policy file; report every error at once.
    ///
    /// Exits 0 when everything is valid, 1 otherwise. Secrets are resolved (so a
    /// missing environment variable is reported) but never printed.
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Evaluate the policies once and explain every decision, without killing.
    ///
    /// Shows which policy would kill which session and why, and why each protected
    /// or ignored session is spared.
    Plan {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Only this target (default: every target).
        #[arg(long, short, value_name = "NAME")]
        target: Option<String>,
        /// Evaluate this recorded snapshot instead of asking the target.
        #[arg(long, value_name = "FILE")]
        snapshot: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// List a target's sessions; `--format json` writes a snapshot file that the
    /// `file` provider and `plan --snapshot` read.
    Sessions {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, short, value_name = "NAME")]
        target: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Kill sessions by id, through the same gates as the daemon: protected threads
    /// and ignored users are refused, each session is re-checked right before its
    /// kill, and intent and outcome go to the audit log.
    Kill {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, short, value_name = "NAME")]
        target: String,
        /// End the running statement only (KILL QUERY), keep the connection.
        #[arg(long)]
        query: bool,
        /// Session (connection) ids.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
    /// Operate on the policy×target breakers of the running daemon.
    Breaker {
        #[command(subcommand)]
        action: BreakerAction,
    },
    /// Print the JSON Schema of the config file (default) or of policy files.
    Schema {
        #[arg(value_enum, default_value = "config")]
        kind: SchemaKind,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Exit 0 when the daemon at URL answers 200 (for container health checks).
    Health {
        /// For example http://127.0.0.1:9187/readyz.
        #[arg(long, default_value = "http://127.0.0.1:9187/healthz")]
        url: String,
        #[arg(long, default_value = "5s", value_parser = parse_duration_arg)]
        timeout: std::time::Duration,
    },
    /// Print the pt-fingerprint-compatible template of the SQL read on stdin.
    Fingerprint {
        /// Read one JSON string per line and write one JSON string per line.
        #[arg(long)]
        batch: bool,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Fingerprint { batch } => fingerprint(batch),
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::Config => crate::schema::config_schema(),
                SchemaKind::Policy => crate::schema::policy_schema(),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "session-reaper", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => check(&config),
        command => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run_async(command))
        }
    }
}

async fn run_async(command: Command) -> ExitCode {
    let result = match command {
        Command::Run {
            config,
            log_format,
            listen,
        } => {
            init_logging(log_format);
            run(&config, listen).await
        }
        Command::Plan {
            config,
            target,
            snapshot,
            format,
        } => {
            init_logging_quiet();
            plan_command(&config, target.as_deref(), snapshot.as_deref(), format).await
        }
        Command::Sessions {
            config,
            target,
            format,
        } => {
            init_logging_quiet();
            sessions(&config, &target, format).await
        }
        Command::Kill {
            config,
            target,
            query,
            ids,
        } => {
            init_logging_quiet();
            kill(&config, &target, query, &ids).await
        }
        Command::Breaker {
            action:
                BreakerAction::Reset {
                    config,
                    policy,
                    target,
                },
        } => {
            init_logging_quiet();
            breaker_reset(&config, &policy, &target).await
        }
        Command::Health { url, timeout } => health(&url, timeout).await,
        Command::Fingerprint { .. }
        | Command::Check { .. }
        | Command::Schema { .. }
        | Command::Completions { .. }
        | Command::Man => Ok(ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESSION_REAPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written (the journal went away, a closed pipe) is
    // dropped: the subscriber's own fallback would panic writing to stderr.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESSION_REAPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .try_init();
}

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            let enforce = c
                .policies
                .iter()
                .filter(|p| p.mode == crate::core::policy::Mode::Enforce)
                .count();
            println!(
                "{}: ok: {} target{}, {} polic{} ({} enforce, {} dry-run)",
                path.display(),
                c.targets.len(),
                if c.targets.len() == 1 { "" } else { "s" },
                c.policies.len(),
                if c.policies.len() == 1 { "y" } else { "ies" },
                enforce,
                c.policies.len() - enforce
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &Path, listen: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    // A panic in any task is a bug: exit, so that the supervisor (systemd) restarts a
    // whole daemon rather than leave one with a dead target runner.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("internal error, exiting: {info}");
        default_hook(info);
        std::process::exit(70);
    }));
    let handle = match daemon::start(path, listen).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let control = handle.control();
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = hup.recv() => { info!("SIGHUP: reloading the configuration"); Control::Reload }
                _ = term.recv() => { info!("SIGTERM: shutting down"); Control::Shutdown }
                _ = int.recv() => { info!("SIGINT: shutting down"); Control::Shutdown }
                _ = usr1.recv() => { info!("SIGUSR1: reopening the audit log"); Control::ReopenAudit }
            };
            let stop = msg == Control::Shutdown;
            if control.send(msg).await.is_err() || stop {
                break;
            }
        }
    });
    handle.wait().await;
    Ok(ExitCode::SUCCESS)
}

fn target<'c>(config: &'c Config, name: &str) -> anyhow::Result<&'c Target> {
    config.target(name).ok_or_else(|| {
        let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
        anyhow::anyhow!(
            "no target named `{name}` in {}; targets: {}",
            config.path.display(),
            names.join(", ")
        )
    })
}

async fn plan_command(
    path: &Path,
    only: Option<&str>,
    snapshot: Option<&Path>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let metrics = Arc::new(Metrics::new());
    let recorded = match snapshot {
        Some(p) => Some(file::read_snapshot(p).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let targets: Vec<&Target> = match (only, &recorded) {
        (Some(name), _) => vec![target(&config, name)?],
        (None, Some(s)) if config.target(&s.target).is_some() => vec![target(&config, &s.target)?],
        (None, Some(s)) if config.targets.len() == 1 => {
            let _ = s;
            vec![&config.targets[0]]
        }
        (None, Some(s)) => anyhow::bail!(
            "the snapshot is of `{}`, which is not a configured target: name one with --target",
            s.target
        ),
        (None, None) => config.targets.iter().collect(),
    };
    let mut out = Vec::new();
    let mut failed = false;
    for t in targets {
        let policies = config.policies_for(&t.name);
        let snap = match &recorded {
            Some(s) => {
                let mut s = s.clone();
                // A recording is evaluated as if it were taken now.
                s.taken_at = chrono::Utc::now();
                s.target = t.name.clone();
                Ok(s)
            }
            None => {
                t.factory
                    .build(&t.name, metrics.clone())
                    .snapshot(&Want::everything())
                    .await
            }
        };
        match snap {
            Ok(s) => {
                let mut p = plan(&s, &policies, &t.protected_for(&s), chrono::Utc::now());
                if !t.factory.capabilities().kills || recorded.is_some() {
                    p.downgrade_kills();
                }
                out.push(render::TargetPlan {
                    target: t,
                    snapshot: s,
                    policies,
                    plan: p,
                    error: None,
                });
            }
            Err(e) => {
                failed = true;
                out.push(render::TargetPlan::failed(t, policies, e.to_string()));
            }
        }
    }
    let text = match format {
        Format::Text => render::plan_text(&out),
        Format::Json => render::plan_json(&out),
    };
    print!("{text}");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn sessions(path: &Path, name: &str, format: Format) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let t = target(&config, name)?;
    let provider = t.factory.build(&t.name, Arc::new(Metrics::new()));
    let snapshot = provider.snapshot(&Want::everything()).await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&snapshot)?),
        Format::Text => print!("{}", render::sessions_text(&snapshot)),
    }
    Ok(ExitCode::SUCCESS)
}

async fn kill(path: &Path, name: &str, query: bool, ids: &[u64]) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let t = target(&config, name)?;
    let metrics = Arc::new(Metrics::new());
    let provider: Arc<dyn Provider> = t.factory.build(&t.name, metrics.clone());
    let snapshot: Snapshot = provider.snapshot(&Want::everything()).await?;
    let action = if query {
        Action::KillQuery
    } else {
        Action::Kill
    };
    if query && !t.factory.capabilities().kill_query {
        anyhow::bail!(
            "target {name} (provider {}) cannot end a statement alone; drop --query",
            t.provider
        );
    }
    let manual: Policy = crate::core::plan::manual_policy(action, &config.ignored_users);
    let protected = t.protected();
    let policies = [&manual];
    let (mut p, refusals) =
        crate::core::plan::plan_manual(&snapshot, ids, &manual, &protected, chrono::Utc::now());
    if !t.factory.capabilities().kills {
        p.downgrade_kills();
    }
    let mut ok = refusals.is_empty();
    for (id, why) in &refusals {
        eprintln!("session {id}: refused: {why}");
    }
    let audit = Arc::new(crate::audit::Audit::new(&config.audit_path(), config.audit));
    audit
        .check()
        .map_err(|e| anyhow::anyhow!("{e}: nothing was killed"))?;
    let executor = Executor::new(audit, metrics.clone());
    let tick = Tick {
        target: &t.name,
        provider: provider.as_ref(),
        policies: &policies,
        snapshot: &snapshot,
        plan: &p,
        protected: &protected,
        may_kill: &|| true,
    };
    let report = executor.execute(&tick, &mut Memory::new()).await;
    if let Some(e) = &report.audit_error {
        eprintln!("error: {e}");
        ok = false;
    }
    for (id, result) in &report.outcomes {
        match result.detail() {
            Some(detail) => println!("session {id}: {}: {detail}", result.label()),
            None => println!("session {id}: {}", result.label()),
        }
    }
    if report.would_kill > 0 {
        println!(
            "{} session(s) would be killed: target {name} is a replay",
            report.would_kill
        );
    }
    if report.not_killed > 0 {
        ok = false;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn health(url: &str, timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            let code = r.status();
            let body = r.text().await.unwrap_or_default();
            eprintln!("{url}: {code}: {}", body.trim());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            let cause = crate::providers::cloud::source_text(&e);
            if e.is_builder() {
                eprintln!("{url}: not a URL to ask: {cause} (write http://HOST:PORT/healthz)");
            } else if e.is_timeout() {
                eprintln!(
                    "{url}: no answer within {}",
                    crate::core::policy::format_duration(timeout)
                );
            } else {
                eprintln!("{url}: {cause}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn breaker_reset(path: &Path, policy: &str, target: &str) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = load(path)?;
    let t = self::target(&config, target)?;
    let Some(p) = config.policies.iter().find(|p| p.name == policy) else {
        let names: Vec<&str> = config.policies.iter().map(|p| p.name.as_str()).collect();
        anyhow::bail!("no policy named `{policy}`; policies: {}", names.join(", "));
    };
    if !p.applies_to(&t.name) {
        let on: Vec<&str> = config
            .targets
            .iter()
            .filter(|x| p.applies_to(&x.name))
            .map(|x| x.name.as_str())
            .collect();
        anyhow::bail!(
            "policy `{policy}` does not run on `{target}`; it runs on: {}",
            on.join(", ")
        );
    }
    let socket = daemon::admin_socket_path(&config);
    let mut stream = tokio::net::UnixStream::connect(&socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the daemon at {}: {e} (is `session-reaper run --config {}` running as this user?)",
            socket.display(),
            path.display()
        )
    })?;
    let q = |s: &str| crate::sign::percent_encode(s);
    let request = format!(
        "POST /breaker/reset?target={}&policy={} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
        q(target),
        q(policy)
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let ok = head.split_whitespace().nth(1) == Some("200");
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if !ok {
        anyhow::bail!(
            "the daemon refused: {}",
            doc["error"].as_str().unwrap_or(body)
        );
    }
    match doc["open_since"].as_str() {
        Some(since) => {
            println!("closed the breaker of policy {policy} on {target} (open since {since})")
        }
        None => println!("the breaker of policy {policy} on {target} was not open"),
    }
    Ok(ExitCode::SUCCESS)
}

fn fingerprint(batch: bool) -> ExitCode {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut fp = Fingerprinter::default();
    if !batch {
        let mut sql = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut stdin.lock(), &mut sql) {
            eprintln!("error: cannot read stdin: {e}");
            return ExitCode::FAILURE;
        }
        let sql = String::from_utf8_lossy(&sql);
        // One statement, as `pt-fingerprint --query` takes it: a final newline from
        // `echo` or a heredoc is not part of it.
        let sql = sql.strip_suffix('\n').unwrap_or(&sql);
        let _ = writeln!(out, "{}", fp.fingerprint(sql));
        return ExitCode::SUCCESS;
    }
    let mut code = ExitCode::SUCCESS;
    for (n, line) in stdin.lock().split(b'\n').enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot read stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<String>(&line) {
            Ok(sql) => {
                let encoded = serde_json::to_string(fp.fingerprint(&sql))
                    .unwrap_or_else(|_| "null".to_owned());
                if writeln!(out, "{encoded}").is_err() {
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("error: line {}: not a JSON string: {e}", n + 1);
                let _ = writeln!(out, "null");
                code = ExitCode::FAILURE;
            }
        }
    }
    let _ = out.flush();
    code
}
