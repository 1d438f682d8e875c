//! The config file and the policy files, read into validated, typed values.
//! Nothing past [`load`] handles "maybe invalid": either every file is valid, or
//! every error is reported at once, with file:line:col and a hint.

pub mod error;
pub mod secret;
pub mod yaml;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::RegexSet;
use serde_saphyr::Spanned;

pub use error::{ConfigError, ConfigErrors};
use yaml::{Doc, Map, Node, Pos, Value};

use crate::core::glob::Glob;
use crate::core::policy::{Action, Limits, Match, Mode, Origin, Policy, SqlPatterns, Victims};
use crate::core::protected::{Protected, Protection, command_protection};
use crate::fingerprint::fingerprint;
use crate::providers::{self, Factory};
use crate::schedule::{Schedule, Zone};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";

/// A loaded, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub policies_dir: PathBuf,
    pub ignored_users: Vec<Glob>,
    pub timezone: Zone,
    pub audit: crate::audit::Rotation,
    /// Replicas share the targets through GET_LOCK leases on this server.
    pub coordination: Option<crate::coordination::Coordination>,
    pub targets: Vec<Target>,
    pub policies: Vec<Policy>,
    /// Things that are valid but probably not what was meant.
    pub warnings: Vec<String>,
    /// Names of targets that failed validation while the rest was read, so that a
    /// policy naming one is not reported as naming an unknown target too.
    pub invalid_targets: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub provider: &'static str,
    pub factory: Arc<dyn Factory>,
    pub max_snapshot_age: Option<Duration>,
    pub protected_users: Vec<String>,
    /// Where the target is defined in the config file, for messages.
    pub defined_at: Pos,
}

impl Target {
    /// What is off-limits on this target beyond the built-in protections.
    pub fn protected(&self) -> Protected {
        let mut accounts: Vec<String> = providers::accounts_of(self.provider)
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        accounts.extend(self.protected_users.iter().cloned());
        Protected {
            accounts,
            max_snapshot_age: self.max_snapshot_age,
        }
    }

    /// The protections for a snapshot of this target: a replay of another
    /// provider's output keeps that provider's accounts protected too.
    pub fn protected_for(&self, snapshot: &crate::core::session::Snapshot) -> Protected {
        let mut p = self.protected();
        for a in providers::accounts_of(&snapshot.provider) {
            if !p.accounts.iter().any(|x| x == a) {
                p.accounts.push((*a).to_owned());
            }
        }
        p
    }
}

impl Config {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The policies that run on `target`.
    pub fn policies_for(&self, target: &str) -> Vec<&Policy> {
        self.policies
            .iter()
            .filter(|p| p.applies_to(target))
            .collect()
    }

    pub fn audit_path(&self) -> PathBuf {
        self.state_dir.join("audit.jsonl")
    }
}

pub const CONFIG_KEYS: &[&str] = &[
    "listen",
    "audit",
    "coordination",
    "state_dir",
    "policies_dir",
    "ignored_users",
    "timezone",
    "targets",
];
pub const TARGET_KEYS: &[&str] = &["name", "provider", "max_snapshot_age", "protected_users"];
pub const POLICY_KEYS: &[&str] = &[
    "name",
    "description",
    "targets",
    "schedule",
    "timezone",
    "mode",
    "match",
    "action",
    "victims",
    "limits",
    "ignored_users",
];
pub const MATCH_KEYS: &[&str] = &[
    "user",
    "not_user",
    "host",
    "db",
    "command",
    "state",
    "min_time",
    "max_time",
    "sql",
    "sql_template",
    "template_id",
    "in_transaction",
    "min_trx_time",
];
pub const LIMIT_KEYS: &[&str] = &["max_kills_per_run", "max_kill_fraction", "breaker_cooldown"];

/// Processlist commands of MySQL 5.7–9 and MariaDB 10–11, for typo checks.
pub const COMMANDS: &[&str] = &[
    "Sleep",
    "Quit",
    "Init DB",
    "Query",
    "Field List",
    "Create DB",
    "Drop DB",
    "Refresh",
    "Shutdown",
    "Statistics",
    "Processlist",
    "Connect",
    "Kill",
    "Debug",
    "Ping",
    "Time",
    "Delayed insert",
    "Change user",
    "Binlog Dump",
    "Table Dump",
    "Connect Out",
    "Register Slave",
    "Register Replica",
    "Prepare",
    "Execute",
    "Long Data",
    "Close stmt",
    "Reset stmt",
    "Set option",
    "Fetch",
    "Daemon",
    "Binlog Dump GTID",
    "Reset Connection",
    "Clone",
    "Group Replication Data Stream",
    "Error",
    "Killed",
    "Slave_IO",
    "Slave_SQL",
    "Slave_worker",
    "Replica_IO",
    "Replica_SQL",
    "Replica_worker",
    "Bulk_execute",
];

/// Loads and validates the config file and every policy file it points to.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let doc = Doc::new(path);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            doc.error_at(
                Pos { line: 1, column: 1 },
                format!("cannot read the config file: {}", io_reason(&e)),
                Some("pass the path of a readable YAML file with --config".to_owned()),
            );
            return Err(ConfigErrors::sorted(doc.into_errors()));
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let Some(root) = doc.parse(&text) else {
        return Err(ConfigErrors::sorted(doc.into_errors()));
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let parsed = read_config(&doc, &root, &base);
    let (mut config, policies_pos) = match parsed {
        Some(c) => c,
        None => {
            errors.extend(doc.into_errors());
            return Err(ConfigErrors::sorted(errors));
        }
    };
    config.path = path.to_owned();

    // Policies, each in its own file.
    let mut files = Vec::new();
    match std::fs::read_dir(&config.policies_dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let p = entry.path();
                if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                    files.push(p);
                }
            }
        }
        Err(e) => doc.error_at(
            policies_pos,
            format!(
                "cannot read policies_dir {}: {}",
                config.policies_dir.display(),
                io_reason(&e)
            ),
            Some(
                "create the directory, or point `policies_dir` at the directory of policy files"
                    .to_owned(),
            ),
        ),
    }
    files.sort();
    let mut names: HashSet<String> = HashSet::new();
    for file in files {
        let pdoc = Doc::new(&file);
        if let Some(policy) = read_policy_file(&pdoc, &file, &config) {
            if !names.insert(policy.name.clone()) {
                pdoc.error_at(
                    Pos { line: 1, column: 1 },
                    format!("a policy named `{}` is defined twice", policy.name),
                    Some("policy names must be unique across policies_dir".to_owned()),
                );
            } else {
                if policy.mode == Mode::Enforce
                    && policy.limits.max_kills_per_run.is_none()
                    && policy.limits.max_kill_fraction.is_none()
                {
                    warnings.push(format!(
                        "{}: policy `{}` enforces without limits: nothing bounds how many sessions one run kills (set limits.max_kills_per_run or limits.max_kill_fraction)",
                        file.display(),
                        policy.name
                    ));
                }
                config.policies.push(policy);
            }
        }
        errors.extend(pdoc.into_errors());
    }
    // Providers that need the policies of their target (to know what to list).
    {
        for i in 0..config.targets.len() {
            let target = &config.targets[i];
            let policies = config.policies_for(&target.name);
            match target.factory.with_policies(&policies) {
                Ok(Some(factory)) => config.targets[i].factory = factory,
                Ok(None) => {}
                Err(e) => doc.error_at(
                    target.defined_at,
                    format!("target `{}`: {e}", target.name),
                    None,
                ),
            }
        }
    }
    if config.policies.is_empty() && !doc.has_errors() && errors.is_empty() {
        warnings.push(format!(
            "no policy files (*.yaml) in {}: the daemon will watch but never act",
            config.policies_dir.display()
        ));
    }
    errors.extend(doc.into_errors());
    if errors.is_empty() {
        config.warnings = warnings;
        Ok(config)
    } else {
        Err(ConfigErrors::sorted(errors))
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// A path written in the config, relative to the config file's directory `base`
/// unless absolute. A leading `./` is not doubled (`./policies` beside
/// `config.yaml` is `./policies`, not `././policies`, in every message).
pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        return p.to_owned();
    }
    match p.strip_prefix(".") {
        Ok(rest) if rest.as_os_str().is_empty() => base.to_owned(),
        Ok(rest) => base.join(rest),
        Err(_) => base.join(p),
    }
}

fn read_config(doc: &Doc, root: &Spanned<Node>, base: &Path) -> Option<(Config, Pos)> {
    if matches!(root.value, Node::Null) {
        doc.error_at(
            Pos { line: 1, column: 1 },
            "the config file is empty",
            Some("it needs at least `targets:`; see examples/quickstart.yaml".to_owned()),
        );
        return None;
    }
    let map = doc.value(root, "").map(CONFIG_KEYS)?;
    let listen = match map.get("listen") {
        None => DEFAULT_LISTEN.parse().ok(),
        Some(v) => v.str().and_then(|s| match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                v.error(
                    format!("`listen` must be an address and port, not `{s}`"),
                    Some("for example `127.0.0.1:9187` or `[::1]:9187`".to_owned()),
                );
                None
            }
        }),
    };
    let state_dir = map
        .get("state_dir")
        .and_then(|v| v.name().map(|s| resolve(base, s)))
        .unwrap_or_else(|| PathBuf::from("/var/lib/session-reaper"));
    let policies_dir = map
        .get("policies_dir")
        .and_then(|v| v.name().map(|s| resolve(base, s)))
        .unwrap_or_else(|| base.join("policies"));
    let policies_pos = map
        .get("policies_dir")
        .map(|v| v.pos())
        .unwrap_or(map.pos());
    let ignored_users = map
        .get("ignored_users")
        .map(|v| globs(&v, false))
        .unwrap_or_default();
    let timezone = map
        .get("timezone")
        .and_then(|v| zone(&v))
        .unwrap_or_default();
    let coordination = map
        .get("coordination")
        .map(|v| crate::coordination::read(&v, base));
    let audit = match map.get("audit") {
        None => Some(crate::audit::Rotation::default()),
        Some(v) => read_rotation(&v),
    };
    let mut targets = Vec::new();
    let mut invalid_targets = Vec::new();
    if let Some(list) = map.require("targets").and_then(|v| v.list()) {
        if list.is_empty() {
            doc.error_at(
                map.key_pos("targets"),
                "`targets` is empty",
                Some("name at least one target".to_owned()),
            );
        }
        let mut seen = HashSet::new();
        for item in list {
            let Some(t) = read_target(&item, base) else {
                if let Node::Map(entries) = item.node()
                    && let Some(Node::Str(name)) = entries
                        .iter()
                        .find(|(k, _)| k.value == "name")
                        .map(|(_, v)| &v.value)
                {
                    invalid_targets.push(name.clone());
                }
                continue;
            };
            {
                if !seen.insert(t.name.clone()) {
                    item.error(
                        format!("a target named `{}` is defined twice", t.name),
                        Some("target names must be unique".to_owned()),
                    );
                } else {
                    targets.push(t);
                }
            }
        }
    }
    Some((
        Config {
            path: PathBuf::new(),
            listen: listen?,
            state_dir,
            policies_dir,
            ignored_users,
            timezone,
            audit: audit?,
            coordination: match coordination {
                None => None,
                Some(c) => Some(c?),
            },
            targets,
            policies: Vec::new(),
            warnings: Vec::new(),
            invalid_targets,
        },
        policies_pos,
    ))
}

fn read_rotation(v: &Value<'_>) -> Option<crate::audit::Rotation> {
    let map = v.map(&["max_size", "keep"])?;
    let mut r = crate::audit::Rotation::default();
    if let Some(v) = map.get("max_size") {
        let parsed = match v.node() {
            Node::Int(n) if *n > 0 => Some(*n as u64),
            Node::Str(s) => parse_size(s),
            _ => None,
        };
        match parsed {
            Some(n) if n >= 4096 => r.max_bytes = n,
            _ => {
                v.error(
                    "`audit.max_size` must be a size of at least 4KiB",
                    Some("write `100MiB`, `1GiB` or a number of bytes".to_owned()),
                );
                return None;
            }
        }
    }
    if let Some(v) = map.get("keep") {
        r.keep = v.u64()? as usize;
    }
    Some(r)
}

/// `100MiB`, `64MB`, `1GiB`, `4096`.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let mult: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn zone(v: &Value<'_>) -> Option<Zone> {
    let s = v.str()?;
    match s.parse::<Zone>() {
        Ok(z) => Some(z),
        Err(e) => {
            v.error(e, Some("use an IANA name such as `UTC`, `Europe/Berlin` or `Asia/Shanghai`, or `local`".to_owned()));
            None
        }
    }
}

fn globs(v: &Value<'_>, case_insensitive: bool) -> Vec<Glob> {
    v.strings()
        .unwrap_or_default()
        .into_iter()
        .map(|(s, _)| {
            if case_insensitive {
                Glob::new_case_insensitive(&s)
            } else {
                Glob::new(&s)
            }
        })
        .collect()
}

fn read_target(item: &Value<'_>, base: &Path) -> Option<Target> {
    // The provider decides which keys are valid, so read it first.
    let Node::Map(entries) = item.node() else {
        item.map(&[])?;
        return None;
    };
    let provider_name = entries
        .iter()
        .find(|(k, _)| k.value == "provider")
        .and_then(|(_, v)| match &v.value {
            Node::Str(s) => Some(s.as_str()),
            _ => None,
        });
    let spec = provider_name.and_then(providers::spec);
    let mut keys: Vec<&str> = TARGET_KEYS.to_vec();
    if let Some(spec) = spec {
        keys.extend_from_slice(spec.keys);
    } else {
        // Without a known provider, accept every provider's keys so that only
        // the provider itself is reported.
        for s in providers::REGISTRY {
            keys.extend_from_slice(s.keys);
        }
    }
    let map = item.map(&keys)?;
    let name = map
        .require("name")
        .and_then(|v| v.name().map(str::to_owned));
    let provider = map.require("provider")?;
    let Some(spec) = spec else {
        let given = provider.str()?;
        let names = providers::names();
        let hint = match error::nearest(given, &names) {
            Some(n) => format!("did you mean `{n}`?"),
            None => format!("providers: {}", names.join(", ")),
        };
        provider.error(format!("unknown provider `{given}`"), Some(hint));
        return None;
    };
    let factory = (spec.parse)(&map, base);
    let max_snapshot_age = match map.get("max_snapshot_age") {
        Some(v) => Some(v.duration()?),
        None => factory.as_ref().and_then(|f| f.default_max_snapshot_age()),
    };
    let protected_users = map
        .get("protected_users")
        .and_then(|v| v.strings())
        .unwrap_or_default()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    Some(Target {
        defined_at: item.pos(),
        name: name?,
        provider: spec.name,
        factory: factory?,
        max_snapshot_age,
        protected_users,
    })
}

fn read_policy_file(doc: &Doc, file: &Path, config: &Config) -> Option<Policy> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            doc.error_at(
                Pos { line: 1, column: 1 },
                format!("cannot read the policy file: {}", io_reason(&e)),
                None,
            );
            return None;
        }
    };
    policy_in(doc, &text, file, config)
}

fn policy_in(doc: &Doc, text: &str, file: &Path, config: &Config) -> Option<Policy> {
    let root = doc.parse(text)?;
    if matches!(root.value, Node::Null) {
        doc.error_at(
            Pos { line: 1, column: 1 },
            "the policy file is empty",
            Some("see policies/ for examples".to_owned()),
        );
        return None;
    }
    let map = doc.value(&root, "").map(POLICY_KEYS)?;
    read_policy(&map, file, config)
}

/// Reads a policy from text against a loaded `config`, reading no file: for tests
/// and fuzzing.
pub fn policy_from_str(text: &str, file: &Path, config: &Config) -> Result<Policy, ConfigErrors> {
    let doc = Doc::new(file);
    match policy_in(&doc, text, file, config) {
        Some(p) if !doc.has_errors() => Ok(p),
        _ => Err(ConfigErrors::sorted(doc.into_errors())),
    }
}

/// Reads the config file's own text (its policies are not read): for tests and
/// fuzzing. Files it names (snapshots, secrets) are still read.
pub fn config_from_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let doc = Doc::new(path);
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let parsed = doc
        .parse(text)
        .and_then(|root| read_config(&doc, &root, &base));
    match parsed {
        Some((mut c, _)) if !doc.has_errors() => {
            c.path = path.to_owned();
            Ok(c)
        }
        _ => Err(ConfigErrors::sorted(doc.into_errors())),
    }
}

/// Reads one policy mapping (also used by tests on inline YAML).
pub fn read_policy(map: &Map<'_>, file: &Path, config: &Config) -> Option<Policy> {
    let name = map
        .require("name")
        .and_then(|v| v.name().map(str::to_owned));
    let targets: Vec<Glob> = match map.get("targets") {
        None => Vec::new(),
        Some(v) => {
            let items = v.strings().unwrap_or_default();
            for (pattern, pos) in &items {
                let g = Glob::new(pattern);
                if !config.targets.iter().any(|t| g.matches(&t.name))
                    && !config.invalid_targets.iter().any(|t| g.matches(t))
                {
                    let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
                    let hint = match error::nearest(pattern, &names) {
                        Some(n) => format!("did you mean `{n}`?"),
                        None => format!("targets: {}", names.join(", ")),
                    };
                    map.doc().error_at(
                        *pos,
                        format!("unknown target: `{pattern}` matches no target"),
                        Some(hint),
                    );
                }
            }
            items.iter().map(|(s, _)| Glob::new(s)).collect()
        }
    };
    let zone = map
        .get("timezone")
        .and_then(|v| zone(&v))
        .unwrap_or(config.timezone);
    let schedule = map.require("schedule").and_then(|v| {
        let s = v.str()?;
        match Schedule::parse(s, zone) {
            Ok(s) => Some(s),
            Err((msg, hint)) => {
                v.error(msg, Some(hint));
                None
            }
        }
    });
    let mode = match map.get("mode") {
        None => Some(Mode::DryRun),
        Some(v) => choice(&v, &[("dry-run", Mode::DryRun), ("enforce", Mode::Enforce)]),
    };
    let action = match map.get("action") {
        None => Some(Action::Kill),
        Some(v) => choice(
            &v,
            &[("kill", Action::Kill), ("kill-query", Action::KillQuery)],
        ),
    };
    let victims = match map.get("victims") {
        None => Some(Victims::All),
        Some(v) => choice(
            &v,
            &[
                ("all", Victims::All),
                ("oldest", Victims::Oldest),
                ("all-but-oldest", Victims::AllButOldest),
            ],
        ),
    };
    let matcher = map.require("match").and_then(|v| read_match(&v));
    let limits = match map.get("limits") {
        None => Some(Limits::default()),
        Some(v) => read_limits(&v),
    };
    let mut ignored_users = config.ignored_users.clone();
    if let Some(v) = map.get("ignored_users") {
        ignored_users.extend(globs(&v, false));
    }

    // Checks against the targets the policy runs on.
    let applies: Vec<&Target> = config
        .targets
        .iter()
        .filter(|t| targets.is_empty() || targets.iter().any(|g| g.matches(&t.name)))
        .collect();
    if let (Some(Action::KillQuery), Some(v)) = (action, map.get("action")) {
        let without: Vec<String> = applies
            .iter()
            .filter(|t| !t.factory.capabilities().kill_query)
            .map(|t| format!("{} ({})", t.name, t.provider))
            .collect();
        if !without.is_empty() {
            v.error(
                format!("`kill-query` is not possible on {}", without.join(", ")),
                Some(
                    "cloud APIs end whole sessions: use `action: kill`, or narrow `targets`"
                        .to_owned(),
                ),
            );
        }
    }
    if let Some(m) = &matcher
        && m.needs_transactions()
    {
        let without: Vec<&Target> = applies
            .iter()
            .copied()
            .filter(|t| !t.factory.capabilities().transactions)
            .collect();
        if let Some(first) = without.first() {
            let key = if m.in_transaction.is_some() {
                "in_transaction"
            } else {
                "min_trx_time"
            };
            let pos = map.get("match").map(|v| v.pos()).unwrap_or(map.pos());
            map.doc().error_at(
                pos,
                format!(
                    "`match.{key}` needs transaction data, which target {} (provider {}) does not report",
                    first.name, first.provider
                ),
                Some("narrow `targets` to providers that report transactions".to_owned()),
            );
        }
    }
    Some(Policy {
        name: name?,
        targets,
        schedule: schedule?,
        mode: mode?,
        matcher: matcher?,
        action: action?,
        victims: victims?,
        limits: limits?,
        ignored_users,
        origin: Origin {
            file: file.to_owned(),
        },
    })
}

fn choice<T: Copy>(v: &Value<'_>, options: &[(&str, T)]) -> Option<T> {
    let s = v.str()?;
    if let Some((_, t)) = options.iter().find(|(name, _)| *name == s) {
        return Some(*t);
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let hint = match error::nearest(s, &names) {
        Some(n) => format!("did you mean `{n}`?"),
        None => format!("one of: {}", names.join(", ")),
    };
    v.error(format!("`{}` cannot be `{s}`", v.name), Some(hint));
    None
}

fn read_match(v: &Value<'_>) -> Option<Match> {
    let map = v.map(MATCH_KEYS)?;
    let mut m = Match::default();
    let mut ok = true;
    let mut strings = |key: &str| -> Vec<(String, Pos)> {
        match map.get(key) {
            None => Vec::new(),
            Some(v) => v.strings().unwrap_or_else(|| {
                ok = false;
                Vec::new()
            }),
        }
    };
    let user = strings("user");
    let not_user = strings("not_user");
    let host = strings("host");
    let db = strings("db");
    let command = strings("command");
    let state = strings("state");
    let sql = strings("sql");
    let sql_template = strings("sql_template");
    let template_id = strings("template_id");
    m.user = user.iter().map(|(s, _)| Glob::new(s)).collect();
    m.not_user = not_user.iter().map(|(s, _)| Glob::new(s)).collect();
    m.host = host
        .iter()
        .map(|(s, _)| Glob::new_case_insensitive(s))
        .collect();
    m.db = db.iter().map(|(s, _)| Glob::new(s)).collect();
    for (c, pos) in &command {
        if !COMMANDS.iter().any(|k| k.eq_ignore_ascii_case(c)) {
            let hint = match error::nearest(c, COMMANDS) {
                Some(n) => format!("did you mean `{n}`?"),
                None => "commands are processlist names such as Sleep, Query, Execute, Connect"
                    .to_owned(),
            };
            map.doc()
                .error_at(*pos, format!("unknown command `{c}`"), Some(hint));
            ok = false;
        } else if let Some(p) = command_protection(c) {
            let what = match p {
                Protection::BeingKilled => "a session a kill has already reached".to_owned(),
                other => other.to_string(),
            };
            map.doc().error_at(
                *pos,
                format!("command `{c}` never matches: session-reaper never kills {what}"),
                Some(format!("remove `{c}` from match.command")),
            );
            ok = false;
        }
    }
    m.command = command
        .into_iter()
        .map(|(c, _)| c.to_ascii_lowercase())
        .collect();
    m.state = state
        .into_iter()
        .map(|(s, _)| s.to_ascii_lowercase())
        .collect();
    if !sql.is_empty() {
        let mut valid = true;
        for (pattern, pos) in &sql {
            if let Err(e) = regex::Regex::new(pattern) {
                let detail = e.to_string();
                let last = detail.lines().last().unwrap_or("").trim();
                let last = last.strip_prefix("error: ").unwrap_or(last).to_owned();
                map.doc().error_at(
                    *pos,
                    format!("bad regex in `match.sql`: {last}"),
                    Some("regexes use Rust `regex` syntax; escape literal ( ) [ ] . * + ? with a backslash".to_owned()),
                );
                valid = false;
            }
        }
        if valid {
            match RegexSet::new(sql.iter().map(|(p, _)| p)) {
                Ok(set) => m.sql = Some(SqlPatterns { set }),
                Err(e) => {
                    v.error(format!("bad regex in `match.sql`: {e}"), None);
                    ok = false;
                }
            }
        } else {
            ok = false;
        }
    }
    m.sql_template = sql_template.iter().map(|(s, _)| fingerprint(s)).collect();
    m.template_id = template_id.into_iter().map(|(s, _)| s).collect();
    let mut duration = |key: &str| -> Option<std::time::Duration> {
        let v = map.get(key)?;
        let d = v.duration();
        if d.is_none() {
            ok = false;
        }
        d
    };
    m.min_time = duration("min_time");
    m.max_time = duration("max_time");
    m.min_trx_time = duration("min_trx_time");
    if let Some(v) = map.get("in_transaction") {
        m.in_transaction = v.bool();
        ok &= m.in_transaction.is_some();
    }
    if let (Some(min), Some(max)) = (m.min_time, m.max_time)
        && min >= max
    {
        map.doc().error_at(
            map.key_pos("max_time"),
            "`match.max_time` must be more than `match.min_time`: nothing can match",
            Some("min_time means time ≥ min_time, max_time means time < max_time".to_owned()),
        );
        ok = false;
    }
    if m.in_transaction == Some(false) && m.min_trx_time.is_some() {
        map.doc().error_at(
            map.key_pos("min_trx_time"),
            "`match.min_trx_time` with `in_transaction: false`: nothing can match",
            None,
        );
        ok = false;
    }
    ok.then_some(m)
}

fn read_limits(v: &Value<'_>) -> Option<Limits> {
    let map = v.map(LIMIT_KEYS)?;
    let mut limits = Limits::default();
    let mut ok = true;
    if let Some(v) = map.get("max_kills_per_run") {
        match v.u64() {
            Some(0) => {
                v.error(
                    "`limits.max_kills_per_run` is 0: every run would open the breaker",
                    Some("to kill nothing, use `mode: dry-run`".to_owned()),
                );
                ok = false;
            }
            Some(n) => limits.max_kills_per_run = Some(n),
            None => ok = false,
        }
    }
    if let Some(v) = map.get("max_kill_fraction") {
        match v.f64() {
            Some(f) if f > 0.0 && f <= 1.0 => limits.max_kill_fraction = Some(f),
            Some(f) => {
                v.error(
                    format!("`limits.max_kill_fraction` must be in (0, 1], not {f}"),
                    Some("0.5 means at most half of the target's sessions".to_owned()),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(v) = map.get("breaker_cooldown") {
        match v.duration() {
            Some(d) => limits.breaker_cooldown = d,
            None => ok = false,
        }
    }
    ok.then_some(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths_are_relative_to_the_config_with_no_doubled_dot_slash() {
        let here = Path::new(".");
        let etc = Path::new("/etc/session-reaper");
        for (base, written, resolved) in [
            (here, "policies", "./policies"),
            (here, "./policies", "./policies"),
            (here, "././policies", "./policies"),
            (here, ".", "."),
            (here, "../policies", "./../policies"),
            (etc, "./policies", "/etc/session-reaper/policies"),
            (etc, "policies/", "/etc/session-reaper/policies/"),
            (etc, "/srv/policies", "/srv/policies"),
        ] {
            assert_eq!(resolve(base, written), PathBuf::from(resolved), "{written}");
        }
    }
}
