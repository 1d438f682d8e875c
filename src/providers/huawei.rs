//! `huawei-das`: Huawei Cloud RDS for MySQL and TaurusDB through Data Admin Service
//! (API v3, SDK-HMAC-SHA256).
//!
//! Snapshot: `GET /v3/{project_id}/instances/{instance_id}/processes`, in pages of
//! 100 until `count`, once per listed user (or database): the API needs one per
//! call. Every field is a string and is parsed with its errors reported. Kill: the
//! victims' users are listed again, then `DELETE .../process` with `db_user_id` and
//! `process_ids`. The `db_user_id` is configured, or found or registered once
//! (`db_user` + `db_password`) and kept.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::cloud::{
    self, Client, CloudError, ErrorKind, Request, Response, Retry, json_string, json_u64,
};
use super::{
    Capabilities, Factory, KillOutcome, KillRequest, KillResult, Provider, ProviderError, Recheck,
    Rechecker, Spec, Want,
};
use crate::config::secret;
use crate::config::yaml::Map;
use crate::core::policy::Policy;
use crate::core::session::{ServerInfo, Session, Snapshot, Text, Transaction};
use crate::metrics::Metrics;

pub const NAME: &str = "huawei-das";
/// Not published per API on the DAS pages; a conservative default.
const RATE: u32 = 10;
const PAGE: u64 = 100;

pub const SPEC: Spec = Spec {
    name: NAME,
    keys: &[
        "region",
        "project_id",
        "instance_id",
        "node_id",
        "db_user_id",
        "db_user",
        "db_password",
        "access_key",
        "secret_key",
        "security_token",
        "list_users",
        "list_databases",
        "endpoint",
        "timeout",
        "rate_limit",
    ],
    accounts: BUILTIN_ACCOUNTS,
    parse,
};

/// Huawei Cloud's own accounts on RDS for MySQL / TaurusDB, and MySQL's internal ones.
const BUILTIN_ACCOUNTS: &[&str] = &[
    "rdsAdmin",
    "rdsRepl",
    "rdsBackup",
    "rdsMetric",
    "rdsProxy",
    "mysql.session",
    "mysql.sys",
    "mysql.infoschema",
];

/// What one listing call filters on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listing {
    User(String),
    Database(String),
}

fn parse(map: &Map<'_>, base: &Path) -> Option<Arc<dyn Factory>> {
    let region = map
        .require("region")
        .and_then(|v| v.name().map(str::to_owned));
    let settings = region.as_ref().and_then(|r| {
        cloud::read_settings(map, &format!("https://das.{r}.myhuaweicloud.com"), RATE)
    });
    let name = |k: &str| map.require(k).and_then(|v| v.name().map(str::to_owned));
    let project_id = name("project_id");
    let instance_id = name("instance_id");
    let node_id = map.get("node_id").and_then(|v| v.name().map(str::to_owned));
    let access_key = map
        .require("access_key")
        .and_then(|v| secret::read(&v, base));
    let secret_key = map
        .require("secret_key")
        .and_then(|v| secret::read(&v, base));
    let security_token = match map.get("security_token") {
        Some(v) => Some(secret::read(&v, base)?),
        None => None,
    };
    let db_user = match (
        map.get("db_user_id"),
        map.get("db_user"),
        map.get("db_password"),
    ) {
        (Some(id), None, None) => Some(DbUser::Id(id.name()?.to_owned())),
        (None, Some(user), Some(password)) => Some(DbUser::Register {
            user: user.name()?.to_owned(),
            password: secret::read(&password, base)?,
        }),
        (Some(_), _, _) => {
            map.doc().error_at(
                map.key_pos("db_user_id"),
                "give `db_user_id` or `db_user` + `db_password`, not both",
                None,
            );
            None
        }
        _ => {
            map.doc().error_at(
                map.pos(),
                "missing `db_user_id` (or `db_user` and `db_password`, which the daemon registers with DAS)",
                None,
            );
            None
        }
    };
    let strings = |k: &str| {
        map.get(k)
            .and_then(|v| v.strings())
            .map(|v| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>())
    };
    let mut listings: Vec<Listing> = strings("list_users")
        .unwrap_or_default()
        .into_iter()
        .map(Listing::User)
        .collect();
    listings.extend(
        strings("list_databases")
            .unwrap_or_default()
            .into_iter()
            .map(Listing::Database),
    );
    Some(Arc::new(HuaweiFactory {
        settings: settings?,
        project_id: project_id?,
        instance_id: instance_id?,
        node_id,
        access_key: access_key?,
        secret_key: secret_key?,
        security_token,
        db_user: db_user?,
        explicit_listings: !listings.is_empty(),
        listings,
    }))
}

#[derive(Debug, Clone)]
enum DbUser {
    Id(String),
    Register {
        user: String,
        password: SecretString,
    },
}

#[derive(Debug, Clone)]
struct HuaweiFactory {
    settings: cloud::Settings,
    project_id: String,
    instance_id: String,
    node_id: Option<String>,
    access_key: SecretString,
    secret_key: SecretString,
    security_token: Option<SecretString>,
    db_user: DbUser,
    listings: Vec<Listing>,
    explicit_listings: bool,
}

impl Factory for HuaweiFactory {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            transactions: true,
            kill_query: false,
            kills: true,
        }
    }

    fn default_max_snapshot_age(&self) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }

    fn build(&self, target: &str, metrics: Arc<Metrics>) -> Arc<dyn Provider> {
        Arc::new(HuaweiProvider {
            target: target.to_owned(),
            client: Client::new(NAME, self.settings.clone(), metrics),
            db_user_id: tokio::sync::Mutex::new(match &self.db_user {
                DbUser::Id(id) => Some(id.clone()),
                DbUser::Register { .. } => None,
            }),
            cfg: self.clone(),
        })
    }

    /// Without `list_users`/`list_databases`, the users to list are the exact
    /// `user` names of the policies on this target.
    fn with_policies(&self, policies: &[&Policy]) -> Result<Option<Arc<dyn Factory>>, String> {
        if self.explicit_listings {
            return Ok(None);
        }
        let mut users = Vec::new();
        for p in policies {
            if p.matcher.user.is_empty() {
                return Err(format!(
                    "policy `{}` has no `match.user`, and huawei-das can only list sessions per user or database: add `list_users` (or `list_databases`) to the target, or `match.user` to the policy",
                    p.name
                ));
            }
            for g in &p.matcher.user {
                match g.literal() {
                    Some(u) => users.push(u.to_owned()),
                    None => {
                        return Err(format!(
                            "policy `{}` matches users by the glob `{g}`, and huawei-das lists sessions per exact user: name them in the target's `list_users`",
                            p.name
                        ));
                    }
                }
            }
        }
        users.sort();
        users.dedup();
        let mut f = self.clone();
        f.listings = users.into_iter().map(Listing::User).collect();
        Ok(Some(Arc::new(f)))
    }
}

pub struct HuaweiProvider {
    target: String,
    client: Client,
    cfg: HuaweiFactory,
    db_user_id: tokio::sync::Mutex<Option<String>>,
}

impl HuaweiProvider {
    async fn call(
        &self,
        api: &'static str,
        method: reqwest::Method,
        path: &str,
        query: Vec<(String, String)>,
        body: Option<Value>,
        retry: Retry,
    ) -> Result<Value, CloudError> {
        let host = self.client.host().to_owned();
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap_or_default())
            .unwrap_or_default();
        let ak = self.cfg.access_key.expose_secret().to_owned();
        let sk = self.cfg.secret_key.expose_secret().to_owned();
        let token = self
            .cfg
            .security_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned());
        let project = self.cfg.project_id.clone();
        let path = path.to_owned();
        let method_name = method.as_str().to_owned();
        let build = move || {
            let mut headers = vec![
                ("Content-Type".to_owned(), "application/json".to_owned()),
                (
                    "X-Sdk-Date".to_owned(),
                    Utc::now().format("%Y%m%dT%H%M%SZ").to_string(),
                ),
            ];
            if let Some(t) = &token {
                headers.push(("X-Security-Token".to_owned(), t.clone()));
            }
            let req = crate::sign::sdk_hmac::Request {
                method: &method_name,
                host: &host,
                path: &path,
                query: &query,
                headers: &headers,
                body: &bytes,
                project_id: Some(&project),
            };
            let sig = crate::sign::sdk_hmac::sign(&req, &ak, &sk);
            Request {
                method: method.clone(),
                path_and_query: sig.request_uri,
                headers: sig.headers,
                body: bytes.clone(),
            }
        };
        let check = move |r: &Response| check_response(api, r).map(|_| ());
        let resp = self.client.call(api, retry, &build, &check).await?;
        check_response(api, &resp)
    }

    fn instance_path(&self, tail: &str) -> String {
        format!(
            "/v3/{}/instances/{}/{tail}",
            self.cfg.project_id, self.cfg.instance_id
        )
    }

    /// The DAS id of the database account: configured, found, or registered once.
    async fn db_user_id(&self) -> Result<String, CloudError> {
        let mut cached = self.db_user_id.lock().await;
        if let Some(id) = cached.as_ref() {
            return Ok(id.clone());
        }
        let DbUser::Register { user, password } = &self.cfg.db_user else {
            return Err(CloudError::new(
                NAME,
                "ListDbUsers",
                ErrorKind::Client,
                "NoDbUser",
                "no db_user_id",
            ));
        };
        let found = self
            .call(
                "ListDbUsers",
                reqwest::Method::GET,
                &self.instance_path("db-users"),
                vec![("db_username".to_owned(), user.clone())],
                None,
                Retry::Read,
            )
            .await?;
        let existing = found
            .get("db_users")
            .and_then(Value::as_array)
            .and_then(|users| {
                users
                    .iter()
                    .find(|u| u.get("db_username").and_then(Value::as_str) == Some(user.as_str()))
            })
            .and_then(|u| u.get("db_user_id").and_then(json_string));
        let id = match existing {
            Some(id) => id,
            None => {
                let registered = self
                    .call(
                        "RegisterDbUser",
                        reqwest::Method::POST,
                        &self.instance_path("db-users"),
                        Vec::new(),
                        Some(json!({"db_username": user, "db_user_password": password.expose_secret(), "datastore_type": "MySQL"})),
                        Retry::Change,
                    )
                    .await?;
                registered
                    .get("db_user_id")
                    .and_then(json_string)
                    .ok_or_else(|| {
                        CloudError::malformed(
                            NAME,
                            "RegisterDbUser",
                            "no db_user_id in the response",
                        )
                    })?
            }
        };
        *cached = Some(id.clone());
        Ok(id)
    }

    /// Every session of one user (or database), page by page until `count`.
    async fn list(&self, listing: &Listing, db_user_id: &str) -> Result<Vec<Session>, String> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let mut query = vec![
                ("db_user_id".to_owned(), db_user_id.to_owned()),
                ("offset".to_owned(), offset.to_string()),
                ("limit".to_owned(), PAGE.to_string()),
            ];
            match listing {
                Listing::User(u) => query.push(("user".to_owned(), u.clone())),
                Listing::Database(d) => query.push(("database".to_owned(), d.clone())),
            }
            if let Some(node) = &self.cfg.node_id {
                query.push(("node_id".to_owned(), node.clone()));
            }
            let page = self
                .call(
                    "ListProcesses",
                    reqwest::Method::GET,
                    &self.instance_path("processes"),
                    query,
                    None,
                    Retry::Read,
                )
                .await
                .map_err(|e| e.to_string())?;
            let (rows, count) = parse_page(&page)
                .map_err(|e| CloudError::malformed(NAME, "ListProcesses", e).to_string())?;
            let got = rows.len() as u64;
            out.extend(rows);
            offset += got;
            if got == 0 || offset >= count {
                return Ok(out);
            }
        }
    }

    fn err(&self, message: String) -> ProviderError {
        ProviderError::Other {
            target: self.target.clone(),
            message,
        }
    }
}

fn check_response(api: &'static str, r: &Response) -> Result<Value, CloudError> {
    let doc: Option<Value> = if r.body.iter().all(u8::is_ascii_whitespace) {
        Some(Value::Null)
    } else {
        serde_json::from_slice(&r.body).ok()
    };
    if r.status < 300 {
        return doc.ok_or_else(|| {
            let mut e = CloudError::malformed(NAME, api, format!("HTTP {}: not JSON", r.status));
            e.request_id = r.request_id.clone();
            e
        });
    }
    let doc = doc.unwrap_or(Value::Null);
    let code = doc
        .get("error_code")
        .or_else(|| doc.get("code"))
        .and_then(json_string)
        .unwrap_or_else(|| format!("HTTP{}", r.status));
    let message = doc
        .get("error_msg")
        .or_else(|| doc.get("message"))
        .and_then(json_string)
        .unwrap_or_else(|| format!("HTTP {}", r.status));
    let kind = if r.status == 429 || code == "APIGW.0308" {
        ErrorKind::Throttled
    } else if r.status >= 500 {
        ErrorKind::Server
    } else if r.status == 401
        || r.status == 403
        || code.starts_with("APIGW.03")
        || code.starts_with("APIGW.01")
    {
        ErrorKind::Auth
    } else {
        ErrorKind::Client
    };
    Err(CloudError {
        provider: NAME,
        api,
        kind,
        code,
        message,
        request_id: doc
            .get("request_id")
            .and_then(json_string)
            .or_else(|| r.request_id.clone()),
    })
}

/// One page of `processes`: its sessions and the total `count`.
fn parse_page(doc: &Value) -> Result<(Vec<Session>, u64), String> {
    let sessions = parse_sessions(doc)?;
    let count = match doc.get("count") {
        Some(v) => json_u64(v).ok_or("`count` is not a number")?,
        None => sessions.len() as u64,
    };
    Ok((sessions, count))
}

/// Sessions from a `processes` response (all fields strings): used by the provider
/// and to replay a saved response.
pub fn parse_sessions(doc: &Value) -> Result<Vec<Session>, String> {
    let list = doc
        .get("processes")
        .and_then(Value::as_array)
        .ok_or("no `processes` array in the response")?;
    list.iter()
        .enumerate()
        .map(|(i, row)| {
            let field = |k: &str| {
                row.get(k)
                    .and_then(json_string)
                    .filter(|s| !s.is_empty() && s != "--")
            };
            let number = |k: &str| -> Result<Option<u64>, String> {
                match row.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) if json_string(v).is_some_and(|s| s.is_empty()) => Ok(None),
                    Some(v) => json_u64(v)
                        .map(Some)
                        .ok_or(format!("processes[{i}].{k} is not a number: {v}")),
                }
            };
            let id = number("id")?.ok_or(format!("processes[{i}] has no id"))?;
            let time_s = number("time")?.unwrap_or(0);
            let trx_s = number("trx_executed_time")?.unwrap_or(0);
            let (host, port) = match field("host") {
                Some(h) => {
                    let (h, p) = super::mysql::split_host(&h);
                    (Some(h), p)
                }
                None => (None, None),
            };
            Ok(Session {
                id,
                user: field("user").map(Text::from),
                host,
                port,
                db: field("database").map(Text::from),
                command: field("command").map(Text::from).unwrap_or_default(),
                time_ms: time_s.saturating_mul(1000),
                state: field("state").map(Text::from),
                sql: field("sql"),
                query_id: None,
                trx: (trx_s > 0).then(|| Transaction {
                    id: Text::default(),
                    age_ms: trx_s.saturating_mul(1000),
                }),
                template_id: None,
                node: None,
            })
        })
        .collect()
}

#[async_trait]
impl Provider for HuaweiProvider {
    fn kind(&self) -> &'static str {
        NAME
    }

    async fn snapshot(&self, _want: &Want) -> Result<Snapshot, ProviderError> {
        let taken_at = Utc::now();
        let db_user_id = self
            .db_user_id()
            .await
            .map_err(|e| self.err(e.to_string()))?;
        let mut sessions: Vec<Session> = Vec::new();
        let mut partial = None;
        for (n, listing) in self.cfg.listings.iter().enumerate() {
            match self.list(listing, &db_user_id).await {
                Ok(rows) => {
                    for s in rows {
                        if !sessions.iter().any(|x| x.id == s.id) {
                            sessions.push(s);
                        }
                    }
                }
                Err(e) if n == 0 => return Err(self.err(e)),
                Err(e) => {
                    partial = Some(format!("listing {listing:?} failed: {e}"));
                    break;
                }
            }
        }
        Ok(Snapshot {
            format: Snapshot::FORMAT.to_owned(),
            target: self.target.clone(),
            provider: NAME.to_owned(),
            taken_at,
            server: ServerInfo {
                flavour: NAME.to_owned(),
                ..ServerInfo::default()
            },
            own_connection_ids: Vec::new(),
            transactions: true,
            partial,
            sessions: sessions.into(),
        })
    }

    async fn kill(&self, requests: &[KillRequest], recheck: &Rechecker<'_>) -> Vec<KillOutcome> {
        let mut outcomes: Vec<Option<KillOutcome>> = vec![None; requests.len()];
        let db_user_id = match self.db_user_id().await {
            Ok(id) => id,
            Err(e) => {
                return requests
                    .iter()
                    .map(|_| {
                        KillOutcome::without_recheck(KillResult::Failed(format!("not sent: {e}")))
                    })
                    .collect();
            }
        };
        // One listing per user of the batch, right before the kill.
        let mut users: Vec<String> = requests
            .iter()
            .filter_map(|r| r.session.user.as_deref().map(str::to_owned))
            .collect();
        users.sort();
        users.dedup();
        let mut fresh: HashMap<u64, Session> = HashMap::new();
        let mut unlisted: Vec<String> = Vec::new();
        for u in &users {
            match self.list(&Listing::User(u.clone()), &db_user_id).await {
                Ok(rows) => fresh.extend(rows.into_iter().map(|s| (s.id, s))),
                Err(e) => unlisted.push(format!("{u}: {e}")),
            }
        }
        let rechecked_at = std::time::Instant::now();
        let mut go = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let user = r.session.user.clone().unwrap_or_default();
            if let Some(err) = unlisted
                .iter()
                .find(|e| e.starts_with(&format!("{user}: ")))
            {
                outcomes[i] = Some(KillOutcome::without_recheck(KillResult::Failed(format!(
                    "not sent: the re-check failed: {err}"
                ))));
                continue;
            }
            match recheck(r, fresh.get(&r.session.id)) {
                Recheck::Proceed => go.push(i),
                Recheck::Gone => {
                    outcomes[i] = Some(KillOutcome {
                        result: KillResult::Gone,
                        rechecked_at: Some(rechecked_at),
                        sent_at: None,
                    })
                }
                Recheck::Changed(why) | Recheck::Unreadable(why) => {
                    outcomes[i] = Some(KillOutcome {
                        result: KillResult::Changed(why),
                        rechecked_at: Some(rechecked_at),
                        sent_at: None,
                    })
                }
            }
        }
        if !go.is_empty() {
            let ids: Vec<String> = go
                .iter()
                .map(|&i| requests[i].session.id.to_string())
                .collect();
            let sent_at = std::time::Instant::now();
            let result = self
                .call(
                    "DeleteProcess",
                    reqwest::Method::DELETE,
                    &self.instance_path("process"),
                    Vec::new(),
                    Some(json!({"db_user_id": db_user_id, "process_ids": ids})),
                    Retry::Change,
                )
                .await;
            let result = match result {
                Ok(_) => KillResult::Killed,
                Err(e) if e.surely_not_applied() => KillResult::Failed(e.to_string()),
                Err(e) => KillResult::Unknown(e.to_string()),
            };
            for &i in &go {
                outcomes[i] = Some(KillOutcome {
                    result: result.clone(),
                    rechecked_at: Some(rechecked_at),
                    sent_at: Some(sent_at),
                });
            }
        }
        KillOutcome::each_or_not_attempted(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_page_example() {
        let doc = json!({"processes": [{"id": "1", "user": "event_scheduler", "host": "localhost", "database": "--",
            "command": "Daemon", "time": "4260107", "state": "Waiting on empty queue", "sql": "", "trx_executed_time": "0"}], "count": 1});
        let (s, count) = parse_page(&doc).unwrap();
        assert_eq!(count, 1);
        assert_eq!(s[0].id, 1);
        assert_eq!(s[0].time_ms, 4_260_107_000);
        assert!(s[0].db.is_none() && s[0].sql.is_none() && s[0].trx.is_none());
    }

    #[test]
    fn a_field_that_is_not_a_number_is_an_error_not_a_panic() {
        let doc = json!({"processes": [{"id": "12", "time": "soon"}], "count": 1});
        assert_eq!(
            parse_sessions(&doc).unwrap_err(),
            "processes[0].time is not a number: \"soon\""
        );
        let doc = json!({"processes": [{"id": "-3"}]});
        assert!(parse_sessions(&doc).is_err());
    }
}
