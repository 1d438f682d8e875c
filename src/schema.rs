//! JSON Schemas of the config file and of policy files, generated from these types
//! (`session-reaper schema`), for editors' completion and validation. They describe
//! what `config` reads; `tests/schema.rs` checks that their keys are exactly the
//! keys the reader accepts, so the two cannot drift apart.

#![allow(dead_code)]

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema, schema_for};

/// `250ms`, `30s`, `5m`, `1h30m`: a duration to the millisecond.
pub struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(\\.[0-9]{1,3})?(ms|s|m|h|d))+$",
            "description": "A duration: 250ms, 30s, 1.5s, 5m, 1h30m, 2d",
            "examples": ["250ms", "30s", "5m", "1h"]
        })
    }
}

/// A secret, never inline: `{env: NAME}` or `{file: PATH}` (a relative path is read
/// from $CREDENTIALS_DIRECTORY under systemd).
#[derive(JsonSchema)]
#[serde(untagged)]
pub enum Secret {
    Env {
        /// An environment variable holding the secret.
        env: String,
    },
    File {
        /// A file holding the secret (one trailing newline is dropped).
        file: String,
    },
}

/// One value or a list of values (any of them).
#[derive(JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The daemon's configuration file.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "session-reaper configuration")]
pub struct ConfigFile {
    /// Address of /metrics, /healthz, /readyz and /status. Default 127.0.0.1:9187.
    listen: Option<String>,
    /// Rotation of state_dir/audit.jsonl.
    audit: Option<AuditRotation>,
    /// Replicas share the targets through GET_LOCK leases on this server.
    coordination: Option<Coordination>,
    /// The audit log and the admin socket live here. Default /var/lib/session-reaper.
    state_dir: Option<String>,
    /// The directory of policy files (*.yaml). Default: `policies` next to this file.
    policies_dir: Option<String>,
    /// Users never killed, merged into every policy (globs).
    ignored_users: Option<OneOrMany>,
    /// The time zone of cron schedules: an IANA name or `local` (default).
    timezone: Option<String>,
    /// The databases to watch.
    targets: Vec<Target>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRotation {
    /// Rotate before a write would pass this size: `100MiB` (default), `1GiB`, bytes.
    max_size: Option<SizeText>,
    /// Rotated files kept (default 5).
    keep: Option<u64>,
}

/// `100MiB`, `64MB`, `1GiB` or a number of bytes.
pub struct SizeText;

impl JsonSchema for SizeText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                {"type": "integer", "minimum": 4096},
                {"type": "string", "pattern": "^[0-9]+ *(B|KB|KiB|MB|MiB|GB|GiB)?$"}
            ]
        })
    }
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Coordination {
    mysql: CoordinationMysql,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CoordinationMysql {
    /// mysql://user@host:port, without a password.
    url: String,
    password: Option<Secret>,
    /// How long a replica acts on a target after confirming its lock (default 10s).
    lease: Option<DurationText>,
}

/// A database to watch, by provider.
#[derive(JsonSchema)]
#[serde(tag = "provider")]
pub enum Target {
    /// A direct connection to MySQL or MariaDB.
    #[serde(rename = "mysql")]
    Mysql(MysqlTarget),
    /// ApsaraDB RDS / PolarDB for MySQL through Alibaba Cloud DAS.
    #[serde(rename = "alibaba-das")]
    Alibaba(AlibabaTarget),
    /// TencentDB for MySQL / TDSQL-C through Tencent Cloud DBbrain.
    #[serde(rename = "tencent-dbbrain")]
    Tencent(TencentTarget),
    /// RDS for MySQL / TaurusDB through Huawei Cloud DAS.
    #[serde(rename = "huawei-das")]
    Huawei(HuaweiTarget),
    /// A recorded snapshot, replayed; never kills.
    #[serde(rename = "file")]
    File(FileTarget),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlTarget {
    name: String,
    max_snapshot_age: Option<DurationText>,
    /// More accounts that are never victims.
    protected_users: Option<OneOrMany>,
    /// mysql://user@host:port, without a password.
    url: String,
    password: Option<Secret>,
    /// Connect and query timeout (default 5s).
    timeout: Option<DurationText>,
    /// Connections of the pool; kills run on all of them in parallel (default 2).
    pool_size: Option<u64>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlibabaTarget {
    name: String,
    max_snapshot_age: Option<DurationText>,
    protected_users: Option<OneOrMany>,
    /// The DAS API region (default cn-shanghai).
    region: Option<String>,
    instance_id: String,
    /// PolarDB: the node to watch.
    node_id: Option<String>,
    access_key_id: Secret,
    access_key_secret: Secret,
    security_token: Option<Secret>,
    /// The database account the kill task runs as.
    db_user: String,
    db_password: Secret,
    poll_interval: Option<DurationText>,
    poll_timeout: Option<DurationText>,
    endpoint: Option<String>,
    timeout: Option<DurationText>,
    rate_limit: Option<u64>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TencentTarget {
    name: String,
    max_snapshot_age: Option<DurationText>,
    protected_users: Option<OneOrMany>,
    /// The instance's region (X-TC-Region).
    region: String,
    instance_id: String,
    /// mysql (TencentDB for MySQL, default) or cynosdb (TDSQL-C).
    product: Option<TencentProduct>,
    secret_id: Secret,
    secret_key: Secret,
    security_token: Option<Secret>,
    /// Sessions asked for per listing (default 10000); a full page is partial.
    list_limit: Option<u64>,
    endpoint: Option<String>,
    timeout: Option<DurationText>,
    rate_limit: Option<u64>,
}

#[derive(JsonSchema)]
pub enum TencentProduct {
    #[serde(rename = "mysql")]
    Mysql,
    #[serde(rename = "cynosdb")]
    Cynosdb,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HuaweiTarget {
    name: String,
    max_snapshot_age: Option<DurationText>,
    protected_users: Option<OneOrMany>,
    region: String,
    project_id: String,
    instance_id: String,
    node_id: Option<String>,
    /// The DAS database-user id; or give db_user and db_password.
    db_user_id: Option<String>,
    db_user: Option<String>,
    db_password: Option<Secret>,
    access_key: Secret,
    secret_key: Secret,
    security_token: Option<Secret>,
    /// Users to list (default: the exact users of the target's policies).
    list_users: Option<OneOrMany>,
    list_databases: Option<OneOrMany>,
    endpoint: Option<String>,
    timeout: Option<DurationText>,
    rate_limit: Option<u64>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTarget {
    name: String,
    max_snapshot_age: Option<DurationText>,
    protected_users: Option<OneOrMany>,
    /// A snapshot file: ours (`sessions --format json`) or a vendor's saved response.
    path: String,
}

/// A policy file: what to match on which targets, when, and what to do.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "session-reaper policy")]
pub struct PolicyFile {
    name: String,
    description: Option<String>,
    /// Globs over target names; default: every target.
    targets: Option<OneOrMany>,
    /// `every 250ms`, or a cron line with seconds such as `*/10 * * * * *`.
    schedule: String,
    /// The time zone of a cron schedule (default: the config's).
    timezone: Option<String>,
    mode: Option<ModeText>,
    #[serde(rename = "match")]
    matcher: MatchBlock,
    action: Option<ActionText>,
    victims: Option<VictimsText>,
    limits: Option<LimitsBlock>,
    /// Users this policy never kills (globs), besides the global ones.
    ignored_users: Option<OneOrMany>,
}

#[derive(JsonSchema)]
pub enum ModeText {
    /// Report what would be killed (the default).
    #[serde(rename = "dry-run")]
    DryRun,
    #[serde(rename = "enforce")]
    Enforce,
}

#[derive(JsonSchema)]
pub enum ActionText {
    /// End the session (KILL CONNECTION).
    #[serde(rename = "kill")]
    Kill,
    /// End the running statement only (mysql targets).
    #[serde(rename = "kill-query")]
    KillQuery,
}

#[derive(JsonSchema)]
pub enum VictimsText {
    #[serde(rename = "all")]
    All,
    #[serde(rename = "oldest")]
    Oldest,
    #[serde(rename = "all-but-oldest")]
    AllButOldest,
}

/// Every key given must hold; a list holds when any of its items does.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchBlock {
    /// User globs.
    user: Option<OneOrMany>,
    /// Users excluded (globs).
    not_user: Option<OneOrMany>,
    /// Client address globs (no port).
    host: Option<OneOrMany>,
    /// Database globs.
    db: Option<OneOrMany>,
    /// Processlist commands: Sleep, Query, Execute, ...
    command: Option<OneOrMany>,
    /// Processlist states, exact.
    state: Option<OneOrMany>,
    /// time >= min_time.
    min_time: Option<DurationText>,
    /// time < max_time.
    max_time: Option<DurationText>,
    /// Regexes over the statement, unanchored.
    sql: Option<OneOrMany>,
    /// Statements or templates compared by fingerprint.
    sql_template: Option<OneOrMany>,
    template_id: Option<OneOrMany>,
    in_transaction: Option<bool>,
    min_trx_time: Option<DurationText>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsBlock {
    /// More victims than this in one run: kill none, open the breaker.
    max_kills_per_run: Option<u64>,
    /// More than this share of the target's sessions: kill none, open the breaker.
    max_kill_fraction: Option<f64>,
    /// How long the breaker stays open after the last crossing (default 5m).
    breaker_cooldown: Option<DurationText>,
}

pub fn config_schema() -> Schema {
    schema_for!(ConfigFile)
}

pub fn policy_schema() -> Schema {
    schema_for!(PolicyFile)
}

/// The schema files as committed under `schema/`: name and pretty JSON.
pub fn files() -> Vec<(&'static str, String)> {
    let pretty = |s: Schema| serde_json::to_string_pretty(&s).unwrap_or_default() + "\n";
    vec![
        ("config.schema.json", pretty(config_schema())),
        ("policy.schema.json", pretty(policy_schema())),
    ]
}
