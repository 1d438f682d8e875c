//! `tencent-dbbrain`: TencentDB for MySQL and TDSQL-C for MySQL through Tencent Cloud
//! DBbrain (API version 2021-05-27, TC3-HMAC-SHA256, at most 20 requests/s per API).
//!
//! Snapshot: `DescribeMySqlProcessList` with `Limit` = `list_limit` and the filters
//! every due policy shares pushed down; there is no paging, so a full page is a
//! partial snapshot. No transaction data. Kill: the process list is read again
//! (one listing per batch, narrowed by user when the batch has one user), then
//! `KillMySqlThreads` Prepare → `SqlExecId` → Commit, the Commit sent at once.

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
use crate::core::session::{ServerInfo, Session, Snapshot, Text};
use crate::metrics::Metrics;

pub const NAME: &str = "tencent-dbbrain";
const SERVICE: &str = "dbbrain";
const VERSION: &str = "2021-05-27";
/// Published: at most 20 requests per second per API.
const RATE: u32 = 20;

pub const SPEC: Spec = Spec {
    name: NAME,
    keys: &[
        "region",
        "instance_id",
        "product",
        "secret_id",
        "secret_key",
        "security_token",
        "list_limit",
        "endpoint",
        "timeout",
        "rate_limit",
    ],
    accounts: BUILTIN_ACCOUNTS,
    parse,
};

/// TencentDB's own accounts (TXSQL's `tencentroot`, the backup account
/// `tencentdumper`) and MySQL's internal ones.
const BUILTIN_ACCOUNTS: &[&str] = &[
    "tencentroot",
    "tencentdumper",
    "mysql.session",
    "mysql.sys",
    "mysql.infoschema",
];

fn parse(map: &Map<'_>, base: &Path) -> Option<Arc<dyn Factory>> {
    let settings = cloud::read_settings(map, "https://dbbrain.tencentcloudapi.com", RATE);
    let region = map
        .require("region")
        .and_then(|v| v.name().map(str::to_owned));
    let instance_id = map
        .require("instance_id")
        .and_then(|v| v.name().map(str::to_owned));
    let product = match map.get("product") {
        None => Some("mysql".to_owned()),
        Some(v) => match v.str()? {
            p @ ("mysql" | "cynosdb") => Some(p.to_owned()),
            other => {
                v.error(
                    format!("`product` cannot be `{other}`"),
                    Some("one of: mysql (TencentDB for MySQL), cynosdb (TDSQL-C)".to_owned()),
                );
                None
            }
        },
    };
    let secret_id = map
        .require("secret_id")
        .and_then(|v| secret::read(&v, base));
    let secret_key = map
        .require("secret_key")
        .and_then(|v| secret::read(&v, base));
    let security_token = match map.get("security_token") {
        Some(v) => Some(secret::read(&v, base)?),
        None => None,
    };
    let list_limit = match map.get("list_limit") {
        Some(v) => match v.u64()? {
            n @ 1..=100_000 => n,
            n => {
                v.error(format!("`list_limit` must be 1 to 100000, not {n}"), None);
                return None;
            }
        },
        None => 10_000,
    };
    Some(Arc::new(TencentFactory {
        settings: settings?,
        region: region?,
        instance_id: instance_id?,
        product: product?,
        secret_id: secret_id?,
        secret_key: secret_key?,
        security_token,
        list_limit,
    }))
}

#[derive(Debug, Clone)]
struct TencentFactory {
    settings: cloud::Settings,
    region: String,
    instance_id: String,
    product: String,
    secret_id: SecretString,
    secret_key: SecretString,
    security_token: Option<SecretString>,
    list_limit: u64,
}

impl Factory for TencentFactory {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            transactions: false,
            kill_query: false,
            kills: true,
        }
    }

    fn default_max_snapshot_age(&self) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }

    fn build(&self, target: &str, metrics: Arc<Metrics>) -> Arc<dyn Provider> {
        Arc::new(TencentProvider {
            target: target.to_owned(),
            client: Client::new(NAME, self.settings.clone(), metrics.clone()),
            cfg: self.clone(),
            metrics,
        })
    }
}

pub struct TencentProvider {
    target: String,
    client: Client,
    cfg: TencentFactory,
    metrics: Arc<Metrics>,
}

/// How long after Prepare a Commit is still sent (the API rejects a late one).
const COMMIT_WINDOW: Duration = Duration::from_secs(5);

impl TencentProvider {
    /// One signed call; returns `Response` (without `RequestId`) or a typed error.
    async fn call(
        &self,
        action: &'static str,
        body: Value,
        retry: Retry,
    ) -> Result<Value, CloudError> {
        let host = self.client.host().to_owned();
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let id = self.cfg.secret_id.expose_secret().to_owned();
        let key = self.cfg.secret_key.expose_secret().to_owned();
        let token = self
            .cfg
            .security_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned());
        let region = self.cfg.region.clone();
        let build = move || {
            let timestamp = Utc::now().timestamp();
            let signed = vec![
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("Host".to_owned(), host.clone()),
            ];
            let req = crate::sign::tc3::Request {
                method: "POST",
                path: "/",
                query: &[],
                headers: &signed,
                body: &bytes,
                service: SERVICE,
                timestamp,
            };
            let sig = crate::sign::tc3::sign(&req, &id, &key);
            let mut headers = signed.clone();
            headers.extend([
                ("X-TC-Action".to_owned(), action.to_owned()),
                ("X-TC-Timestamp".to_owned(), timestamp.to_string()),
                ("X-TC-Version".to_owned(), VERSION.to_owned()),
                ("X-TC-Region".to_owned(), region.clone()),
            ]);
            if let Some(t) = &token {
                headers.push(("X-TC-Token".to_owned(), t.clone()));
            }
            headers.push(("Authorization".to_owned(), sig.authorization));
            Request {
                method: reqwest::Method::POST,
                path_and_query: "/".to_owned(),
                headers,
                body: bytes.clone(),
            }
        };
        let check = move |r: &Response| check_response(action, r).map(|_| ());
        let resp = self.client.call(action, retry, &build, &check).await?;
        check_response(action, &resp)
    }

    /// The process list, with the given filters.
    async fn list(
        &self,
        user: Option<&str>,
        command: Option<&str>,
        min_time_s: Option<u64>,
    ) -> Result<(Vec<Session>, bool), CloudError> {
        let mut body = json!({
            "InstanceId": self.cfg.instance_id,
            "Limit": self.cfg.list_limit,
            "Product": self.cfg.product,
        });
        if let Some(u) = user {
            body["User"] = json!(u);
        }
        if let Some(c) = command {
            body["Command"] = json!(c);
        }
        if let Some(t) = min_time_s {
            body["Time"] = json!(t);
        }
        let response = self
            .call("DescribeMySqlProcessList", body, Retry::Read)
            .await?;
        let sessions = parse_sessions(&response)
            .map_err(|e| CloudError::malformed(NAME, "DescribeMySqlProcessList", e))?;
        let full = sessions.len() as u64 >= self.cfg.list_limit;
        Ok((sessions, full))
    }

    fn err(&self, e: CloudError) -> ProviderError {
        ProviderError::Other {
            target: self.target.clone(),
            message: e.to_string(),
        }
    }

    /// Prepare then Commit; the killed thread ids, or the error and whether the kill
    /// may have happened.
    async fn prepare_commit(&self, ids: &[u64]) -> Result<Vec<u64>, CloudError> {
        let prepared = self
            .call(
                "KillMySqlThreads",
                json!({"InstanceId": self.cfg.instance_id, "Stage": "Prepare", "Threads": ids, "Product": self.cfg.product}),
                Retry::Change,
            )
            .await?;
        let prepared_at = tokio::time::Instant::now();
        let exec_id = prepared
            .get("SqlExecId")
            .and_then(json_string)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                CloudError::malformed(NAME, "KillMySqlThreads", "Prepare returned no SqlExecId")
            })?;
        if prepared_at.elapsed() > COMMIT_WINDOW {
            return Err(CloudError::new(
                NAME,
                "KillMySqlThreads",
                ErrorKind::Client,
                "CommitTooLate",
                "Prepare answered too late to commit",
            ));
        }
        let committed = self
            .call(
                "KillMySqlThreads",
                json!({"InstanceId": self.cfg.instance_id, "Stage": "Commit", "SqlExecId": exec_id, "Product": self.cfg.product}),
                Retry::Change,
            )
            .await?;
        Ok(committed
            .get("Threads")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(json_u64).collect())
            .unwrap_or_default())
    }
}

/// `{"Response": {...}}` into its content, or `Response.Error` into a typed error.
fn check_response(api: &'static str, r: &Response) -> Result<Value, CloudError> {
    let doc: Value = serde_json::from_slice(&r.body).map_err(|e| {
        let mut err = CloudError::malformed(NAME, api, format!("HTTP {}: {e}", r.status));
        if r.status >= 500 {
            err.kind = ErrorKind::Server;
        }
        err
    })?;
    let response = doc
        .get("Response")
        .ok_or_else(|| CloudError::malformed(NAME, api, "no `Response` object"))?;
    let request_id = response.get("RequestId").and_then(json_string);
    if let Some(error) = response.get("Error") {
        let code = error
            .get("Code")
            .and_then(json_string)
            .unwrap_or_else(|| "Unknown".to_owned());
        let message = error
            .get("Message")
            .and_then(json_string)
            .unwrap_or_default();
        return Err(CloudError {
            provider: NAME,
            api,
            kind: classify(&code),
            code,
            message,
            request_id,
        });
    }
    if r.status >= 500 {
        return Err(CloudError::new(
            NAME,
            api,
            ErrorKind::Server,
            format!("HTTP{}", r.status),
            "server error",
        ));
    }
    Ok(response.clone())
}

fn classify(code: &str) -> ErrorKind {
    if code.starts_with("RequestLimitExceeded") {
        ErrorKind::Throttled
    } else if code.starts_with("InternalError") {
        ErrorKind::Server
    } else if code.starts_with("AuthFailure")
        || code.starts_with("UnauthorizedOperation")
        || code == "OperationDenied.UserHasNoStrategy"
    {
        ErrorKind::Auth
    } else {
        ErrorKind::Client
    }
}

/// Sessions from a `DescribeMySqlProcessList` response (`{"Response": ...}` or its
/// content): used by the provider and to replay a saved response.
pub fn parse_sessions(doc: &Value) -> Result<Vec<Session>, String> {
    let content = doc.get("Response").unwrap_or(doc);
    let list = content
        .get("ProcessList")
        .and_then(Value::as_array)
        .ok_or("no ProcessList in the response")?;
    list.iter()
        .enumerate()
        .map(|(i, row)| {
            let field = |k: &str| row.get(k).and_then(json_string).filter(|s| !s.is_empty());
            let id = row
                .get("ID")
                .and_then(json_u64)
                .ok_or(format!("ProcessList[{i}]: no readable ID"))?;
            let time_s = match row.get("Time") {
                None | Some(Value::Null) => 0,
                Some(v) => json_u64(v).ok_or(format!("ProcessList[{i}]: Time is not a number"))?,
            };
            let (host, port) = match field("Host") {
                Some(h) => {
                    let (h, p) = super::mysql::split_host(&h);
                    (Some(h), p)
                }
                None => (None, None),
            };
            Ok(Session {
                id,
                user: field("User").map(Text::from),
                host,
                port,
                db: field("DB").map(Text::from),
                command: field("Command").map(Text::from).unwrap_or_default(),
                time_ms: time_s.saturating_mul(1000),
                state: field("State").map(Text::from),
                sql: field("Info"),
                query_id: None,
                trx: None,
                template_id: None,
                node: None,
            })
        })
        .collect()
}

#[async_trait]
impl Provider for TencentProvider {
    fn kind(&self) -> &'static str {
        NAME
    }

    async fn snapshot(&self, want: &Want) -> Result<Snapshot, ProviderError> {
        let taken_at = Utc::now();
        // `Time` lists threads above it: one second under the smallest min_time.
        let min_time = want.min_time.map(|d| (d.as_secs()).saturating_sub(1));
        let (sessions, full) = self
            .list(want.user.as_deref(), want.command.as_deref(), min_time)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Snapshot {
            format: Snapshot::FORMAT.to_owned(),
            target: self.target.clone(),
            provider: NAME.to_owned(),
            taken_at,
            server: ServerInfo {
                flavour: self.cfg.product.clone(),
                ..ServerInfo::default()
            },
            own_connection_ids: Vec::new(),
            transactions: false,
            partial: full.then(|| {
                format!(
                    "DescribeMySqlProcessList returned a full page of {} sessions (list_limit); raise list_limit",
                    self.cfg.list_limit
                )
            }),
            sessions: sessions.into(),
        })
    }

    async fn kill(&self, requests: &[KillRequest], recheck: &Rechecker<'_>) -> Vec<KillOutcome> {
        let mut outcomes: Vec<Option<KillOutcome>> = vec![None; requests.len()];
        let mut retried = false;
        loop {
            // Re-read the process list: one listing for the whole batch.
            let pending: Vec<usize> = (0..requests.len())
                .filter(|&i| outcomes[i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            let mut users: Vec<&str> = pending
                .iter()
                .filter_map(|&i| requests[i].session.user.as_deref())
                .collect();
            users.dedup();
            let narrow = if users.len() == 1 {
                Some(users[0])
            } else {
                None
            };
            let (fresh, full) = match self.list(narrow, None, None).await {
                Ok(x) => x,
                Err(e) => {
                    for &i in &pending {
                        outcomes[i] = Some(KillOutcome::without_recheck(KillResult::Failed(
                            format!("not sent: the re-check failed: {e}"),
                        )));
                    }
                    break;
                }
            };
            let rechecked_at = std::time::Instant::now();
            let by_id: HashMap<u64, &Session> = fresh.iter().map(|s| (s.id, s)).collect();
            let mut go = Vec::new();
            for &i in &pending {
                let row = by_id.get(&requests[i].session.id).copied();
                if row.is_none() && full {
                    outcomes[i] = Some(KillOutcome::without_recheck(KillResult::Failed(
                        "not sent: the re-check list was full, the session could not be seen"
                            .to_owned(),
                    )));
                    continue;
                }
                match recheck(&requests[i], row) {
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
            if go.is_empty() {
                break;
            }
            let ids: Vec<u64> = go.iter().map(|&i| requests[i].session.id).collect();
            let sent_at = std::time::Instant::now();
            let done = |result: KillResult| KillOutcome {
                result,
                rechecked_at: Some(rechecked_at),
                sent_at: Some(sent_at),
            };
            match self.prepare_commit(&ids).await {
                Ok(killed) => {
                    for &i in &go {
                        let id = requests[i].session.id;
                        let result = if killed.contains(&id) {
                            self.metrics
                                .provider_kill_results_total
                                .with_label_values(&[NAME, "killed"])
                                .inc();
                            KillResult::Killed
                        } else {
                            self.metrics
                                .provider_kill_results_total
                                .with_label_values(&[NAME, "not_in_threads"])
                                .inc();
                            KillResult::Failed(format!(
                                "KillMySqlThreads did not report thread {id} killed"
                            ))
                        };
                        outcomes[i] = Some(done(result));
                    }
                    break;
                }
                // Rejected before anything happened (a late Commit, throttled): re-check and try once more.
                Err(e) if e.surely_not_applied() && !retried => {
                    tracing::warn!(
                        "{}: {e}; re-checking before one more Prepare/Commit",
                        self.target
                    );
                    retried = true;
                }
                Err(e) if e.surely_not_applied() => {
                    for &i in &go {
                        outcomes[i] = Some(done(KillResult::Failed(e.to_string())));
                    }
                    break;
                }
                Err(e) => {
                    // Ambiguous: never re-send. A fresh listing says what became of them.
                    let after = self.list(narrow, None, None).await.ok();
                    for &i in &go {
                        let id = requests[i].session.id;
                        let still = after.as_ref().map(|(s, _)| s.iter().any(|x| x.id == id));
                        let result = match still {
                            Some(true) => {
                                KillResult::Failed(format!("{e}; the session is still there"))
                            }
                            Some(false) => KillResult::Unknown(format!(
                                "{e}; the session is gone (probably killed)"
                            )),
                            None => KillResult::Unknown(e.to_string()),
                        };
                        outcomes[i] = Some(done(result));
                    }
                    break;
                }
            }
        }
        KillOutcome::each_or_not_attempted(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_string_ids_and_times() {
        let doc = json!({"Response": {"ProcessList": [
            {"ID": "123", "User": "app", "Host": "10.0.0.8:50122", "DB": "shop", "State": "", "Command": "Sleep", "Time": "312", "Info": null}
        ], "RequestId": "x"}});
        let s = parse_sessions(&doc).unwrap();
        assert_eq!(s[0].id, 123);
        assert_eq!(s[0].time_ms, 312_000);
        assert_eq!(s[0].port, Some(50122));
        assert!(s[0].sql.is_none() && s[0].state.is_none());
        let bad = json!({"Response": {"ProcessList": [{"ID": "x1"}]}});
        assert!(parse_sessions(&bad).unwrap_err().contains("ID"));
    }

    #[test]
    fn errors_arrive_as_http_200_with_response_error() {
        let r = Response {
            status: 200,
            body: br#"{"Response":{"Error":{"Code":"AuthFailure.SignatureExpire","Message":"Signature expired."},"RequestId":"r-9"}}"#.to_vec(),
            request_id: None,
        };
        let e = check_response("DescribeMySqlProcessList", &r).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert_eq!(
            e.to_string(),
            "tencent-dbbrain DescribeMySqlProcessList: AuthFailure.SignatureExpire: Signature expired. (request id r-9)"
        );
        let r = Response {
            status: 200,
            body: br#"{"Response":{"Error":{"Code":"RequestLimitExceeded","Message":"too many"},"RequestId":"r"}}"#.to_vec(),
            request_id: None,
        };
        assert_eq!(
            check_response("X", &r).unwrap_err().kind,
            ErrorKind::Throttled
        );
    }
}
