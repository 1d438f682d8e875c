//! `alibaba-das`: ApsaraDB RDS for MySQL and PolarDB for MySQL through Alibaba Cloud
//! Database Autonomy Service (API version 2020-01-16, RPC style, ACS3-HMAC-SHA256).
//!
//! Snapshot: `GetMySQLAllSessionAsync`, first without a result id, then polled with
//! `ResultId` until `IsFinish` (bounded by `poll_timeout`; `Fail` is an error).
//! Kill: `CreateKillInstanceSessionTask` (`SessionIds` as a JSON array string,
//! `IgnoredUsers`, `KillAllSessions=false`), then `GetKillInstanceSessionTaskResult`
//! until the task leaves `RUNNING`; each session's `Reason` is its outcome.
//! The async snapshot is too slow to repeat before a kill: the kill comes from a
//! snapshot no older than `max_snapshot_age`, and DAS itself refuses ignored users,
//! its O&M accounts and Binlog Dump sessions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::cloud::{
    self, Client, CloudError, ErrorKind, Request, Response, Retry, json_bool, json_string, json_u64,
};
use super::{
    Capabilities, Factory, KillOutcome, KillRequest, KillResult, Provider, ProviderError, Recheck,
    Rechecker, Spec, Want,
};
use crate::config::secret;
use crate::config::yaml::Map;
use crate::core::session::{ServerInfo, Session, Snapshot, Text, Transaction};
use crate::metrics::Metrics;

pub const NAME: &str = "alibaba-das";
const VERSION: &str = "2020-01-16";
/// Not published per API on the DAS pages; a conservative default.
const RATE: u32 = 10;

pub const SPEC: Spec = Spec {
    name: NAME,
    keys: &[
        "region",
        "instance_id",
        "node_id",
        "access_key_id",
        "access_key_secret",
        "security_token",
        "db_user",
        "db_password",
        "poll_interval",
        "poll_timeout",
        "endpoint",
        "timeout",
        "rate_limit",
    ],
    accounts: BUILTIN_ACCOUNTS,
    parse,
};

/// Alibaba Cloud's own accounts on RDS/PolarDB for MySQL (the `maintain_user_list`
/// of AliSQL) and MySQL's internal ones.
const BUILTIN_ACCOUNTS: &[&str] = &[
    "aliyun_root",
    "aurora",
    "replicator",
    "mysql.session",
    "mysql.sys",
    "mysql.infoschema",
];

fn parse(map: &Map<'_>, base: &Path) -> Option<Arc<dyn Factory>> {
    let region = map
        .get("region")
        .and_then(|v| v.name().map(str::to_owned))
        .unwrap_or_else(|| "cn-shanghai".to_owned());
    let settings = cloud::read_settings(map, &format!("https://das.{region}.aliyuncs.com"), RATE);
    let instance_id = map
        .require("instance_id")
        .and_then(|v| v.name().map(str::to_owned));
    let node_id = map.get("node_id").and_then(|v| v.name().map(str::to_owned));
    let access_key_id = map
        .require("access_key_id")
        .and_then(|v| secret::read(&v, base));
    let access_key_secret = map
        .require("access_key_secret")
        .and_then(|v| secret::read(&v, base));
    let security_token = match map.get("security_token") {
        Some(v) => Some(secret::read(&v, base)?),
        None => None,
    };
    let db_user = map
        .require("db_user")
        .and_then(|v| v.name().map(str::to_owned));
    let db_password = map
        .require("db_password")
        .and_then(|v| secret::read(&v, base));
    let poll_interval = match map.get("poll_interval") {
        Some(v) => v.duration()?,
        None => Duration::from_millis(500),
    };
    let poll_timeout = match map.get("poll_timeout") {
        Some(v) => v.duration()?,
        None => Duration::from_secs(30),
    };
    Some(Arc::new(AlibabaFactory {
        settings: settings?,
        instance_id: instance_id?,
        node_id,
        access_key_id: access_key_id?,
        access_key_secret: access_key_secret?,
        security_token,
        db_user: db_user?,
        db_password: db_password?,
        poll_interval,
        poll_timeout,
    }))
}

#[derive(Debug, Clone)]
struct AlibabaFactory {
    settings: cloud::Settings,
    instance_id: String,
    node_id: Option<String>,
    access_key_id: SecretString,
    access_key_secret: SecretString,
    security_token: Option<SecretString>,
    db_user: String,
    db_password: SecretString,
    poll_interval: Duration,
    poll_timeout: Duration,
}

impl Factory for AlibabaFactory {
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
        Arc::new(AlibabaProvider {
            target: target.to_owned(),
            client: Client::new(NAME, self.settings.clone(), metrics.clone()),
            cfg: self.clone(),
            metrics,
        })
    }
}

pub struct AlibabaProvider {
    target: String,
    client: Client,
    cfg: AlibabaFactory,
    metrics: Arc<Metrics>,
}

impl AlibabaProvider {
    /// One signed RPC call; returns `Data` of the envelope.
    async fn rpc(
        &self,
        action: &'static str,
        params: Vec<(String, String)>,
        retry: Retry,
    ) -> Result<Value, CloudError> {
        let host = self.client.host().to_owned();
        let ak = self.cfg.access_key_id.expose_secret().to_owned();
        let sk = self.cfg.access_key_secret.expose_secret().to_owned();
        let token = self
            .cfg
            .security_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned());
        let build = move || {
            let mut headers = vec![
                ("host".to_owned(), host.clone()),
                ("x-acs-action".to_owned(), action.to_owned()),
                ("x-acs-version".to_owned(), VERSION.to_owned()),
                (
                    "x-acs-date".to_owned(),
                    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                ),
                (
                    "x-acs-signature-nonce".to_owned(),
                    format!("{:032x}", rand::random::<u128>()),
                ),
            ];
            if let Some(t) = &token {
                headers.push(("x-acs-security-token".to_owned(), t.clone()));
            }
            let req = crate::sign::acs3::Request {
                method: "POST",
                path: "/",
                query: &params,
                headers: &headers,
                body: b"",
            };
            let sig = crate::sign::acs3::sign(&req, &ak, &sk);
            Request {
                method: reqwest::Method::POST,
                path_and_query: format!("/?{}", sig.canonical_query),
                headers: sig.headers,
                body: Vec::new(),
            }
        };
        let check = move |r: &Response| check_envelope(action, r).map(|_| ());
        let resp = self.client.call(action, retry, &build, &check).await?;
        check_envelope(action, &resp)
    }

    fn base_params(&self) -> Vec<(String, String)> {
        vec![
            ("InstanceId".to_owned(), self.cfg.instance_id.clone()),
            (
                "NodeId".to_owned(),
                self.cfg.node_id.clone().unwrap_or_default(),
            ),
        ]
    }

    fn err(&self, e: CloudError) -> ProviderError {
        ProviderError::Other {
            target: self.target.clone(),
            message: e.to_string(),
        }
    }
}

/// Reads the `{Code, Message, Success, RequestId, Data}` envelope (or the gateway's
/// `{Code, Message, RequestId}` error) into `Data` or a typed error.
fn check_envelope(api: &'static str, r: &Response) -> Result<Value, CloudError> {
    let text = String::from_utf8_lossy(&r.body);
    let doc: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let kind = if r.status >= 500 {
                ErrorKind::Server
            } else {
                ErrorKind::Malformed
            };
            let mut err = CloudError::malformed(NAME, api, format!("HTTP {}: {e}", r.status));
            err.kind = kind;
            err.request_id = r.request_id.clone();
            return Err(err);
        }
    };
    let request_id = doc
        .get("RequestId")
        .and_then(json_string)
        .or_else(|| r.request_id.clone());
    let code = doc.get("Code").and_then(json_string).unwrap_or_default();
    let success = doc.get("Success").and_then(json_bool);
    let ok = r.status < 400
        && success != Some(false)
        && (code.is_empty() || code == "200" || success == Some(true));
    if ok {
        return Ok(doc.get("Data").cloned().unwrap_or(Value::Null));
    }
    let message = doc
        .get("Message")
        .and_then(json_string)
        .unwrap_or_else(|| format!("HTTP {}", r.status));
    let code = if code.is_empty() {
        format!("HTTP{}", r.status)
    } else {
        code
    };
    let kind = classify(r.status, &code);
    Err(CloudError {
        provider: NAME,
        api,
        kind,
        code,
        message,
        request_id,
    })
}

fn classify(status: u16, code: &str) -> ErrorKind {
    if code.starts_with("Throttling") || status == 429 {
        ErrorKind::Throttled
    } else if status >= 500
        || code.starts_with("InternalError")
        || code.starts_with("ServiceUnavailable")
    {
        ErrorKind::Server
    } else if status == 401
        || status == 403
        || [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "InvalidTimeStamp",
            "Forbidden",
            "NoPermission",
            "InvalidSecurityToken",
            "SignatureNonceUsed",
        ]
        .iter()
        .any(|p| code.starts_with(p))
    {
        ErrorKind::Auth
    } else {
        ErrorKind::Client
    }
}

/// Sessions from `GetMySQLAllSessionAsync`'s `Data` (or `Data.SessionData`, or the
/// whole response): used by the provider and to replay a saved response.
pub fn parse_sessions(data: &Value) -> Result<Vec<Session>, String> {
    let session_data = data
        .get("Data")
        .and_then(|d| d.get("SessionData"))
        .or_else(|| data.get("SessionData"))
        .unwrap_or(data);
    let list = session_data
        .get("SessionList")
        .and_then(Value::as_array)
        .ok_or("no SessionData.SessionList in the response")?;
    list.iter()
        .enumerate()
        .map(|(i, row)| session(row).map_err(|e| format!("SessionList[{i}]: {e}")))
        .collect()
}

fn session(row: &Value) -> Result<Session, String> {
    let field = |k: &str| row.get(k).and_then(json_string).filter(|s| !s.is_empty());
    let id = row
        .get("SessionId")
        .and_then(json_u64)
        .ok_or("no readable SessionId")?;
    let time_s = row
        .get("Time")
        .map(|v| json_u64(v).ok_or("Time is not a number"))
        .transpose()?
        .unwrap_or(0);
    let trx = match (
        field("TrxId").filter(|t| t != "0"),
        row.get("TrxDuration").and_then(json_u64),
    ) {
        (Some(id), age) => Some(Transaction {
            id: id.into(),
            age_ms: age.unwrap_or(0).saturating_mul(1000),
        }),
        (None, _) => None,
    };
    let (host, port) = match field("Client") {
        Some(c) => {
            let (h, p) = super::mysql::split_host(&c);
            (Some(h), p)
        }
        None => (None, None),
    };
    Ok(Session {
        id,
        user: field("User").map(Text::from),
        host,
        port,
        db: field("DbName").map(Text::from),
        command: field("Command").map(Text::from).unwrap_or_default(),
        time_ms: time_s.saturating_mul(1000),
        state: field("State").map(Text::from),
        sql: field("SqlText"),
        query_id: None,
        trx,
        template_id: field("SqlTemplateId").map(Text::from),
        node: None,
    })
}

/// The outcome of one session's `Reason` in a kill task result.
pub fn reason_result(reason: &str) -> KillResult {
    match reason {
        "SESSION_KILLED" => KillResult::Killed,
        "SESSION_EXPIRED" => KillResult::Gone,
        "SESSION_IGNORED_USER" => {
            KillResult::Refused("DAS: an ignored user (SESSION_IGNORED_USER)".to_owned())
        }
        "SESSION_INTERNAL_USER_OR_COMMAND" => KillResult::Refused(
            "DAS: an Alibaba Cloud O&M account or command (SESSION_INTERNAL_USER_OR_COMMAND)"
                .to_owned(),
        ),
        "SESSION_NO_PERMISSION" => {
            KillResult::Refused("DAS: db_user may not kill it (SESSION_NO_PERMISSION)".to_owned())
        }
        "SESSION_ACCOUNT_ERROR" => KillResult::Failed(
            "DAS: db_user or db_password is wrong (SESSION_ACCOUNT_ERROR)".to_owned(),
        ),
        "SESSION_KILL_TASK_TIMEOUT" => {
            KillResult::Unknown("DAS: the kill timed out (SESSION_KILL_TASK_TIMEOUT)".to_owned())
        }
        "SESSION_OTHER_ERROR" => KillResult::Failed("DAS: SESSION_OTHER_ERROR".to_owned()),
        other => KillResult::Unknown(format!("DAS: unknown reason `{other}`")),
    }
}

#[async_trait]
impl Provider for AlibabaProvider {
    fn kind(&self) -> &'static str {
        NAME
    }

    async fn snapshot(&self, want: &Want) -> Result<Snapshot, ProviderError> {
        let _ = want;
        let taken_at = Utc::now();
        let deadline = tokio::time::Instant::now() + self.cfg.poll_timeout;
        let mut params = self.base_params();
        params.push(("ResultId".to_owned(), String::new()));
        let partial = |why: String| Snapshot {
            format: Snapshot::FORMAT.to_owned(),
            target: self.target.clone(),
            provider: NAME.to_owned(),
            taken_at,
            server: ServerInfo::default(),
            own_connection_ids: Vec::new(),
            transactions: true,
            partial: Some(why),
            sessions: Default::default(),
        };
        loop {
            let data = self
                .rpc("GetMySQLAllSessionAsync", params.clone(), Retry::Read)
                .await
                .map_err(|e| self.err(e))?;
            if data.get("Fail").and_then(json_bool) == Some(true)
                || data.get("State").and_then(Value::as_str) == Some("FAIL")
            {
                return Err(self.err(CloudError::new(
                    NAME,
                    "GetMySQLAllSessionAsync",
                    ErrorKind::Server,
                    "Fail",
                    "the asynchronous session query failed",
                )));
            }
            if data.get("IsFinish").and_then(json_bool) == Some(true) {
                let sessions = parse_sessions(&data).map_err(|e| {
                    self.err(CloudError::malformed(NAME, "GetMySQLAllSessionAsync", e))
                })?;
                return Ok(Snapshot {
                    partial: None,
                    sessions: sessions.into(),
                    server: ServerInfo {
                        flavour: "alibaba-das".to_owned(),
                        ..ServerInfo::default()
                    },
                    ..partial(String::new())
                });
            }
            let result_id = data
                .get("ResultId")
                .and_then(json_string)
                .unwrap_or_default();
            if result_id.is_empty() {
                return Err(self.err(CloudError::malformed(
                    NAME,
                    "GetMySQLAllSessionAsync",
                    "neither finished nor a ResultId to poll",
                )));
            }
            if tokio::time::Instant::now() + self.cfg.poll_interval > deadline {
                return Ok(partial(format!(
                    "GetMySQLAllSessionAsync did not finish within poll_timeout {}",
                    crate::core::policy::format_duration(self.cfg.poll_timeout)
                )));
            }
            tokio::time::sleep(self.cfg.poll_interval).await;
            if let Some(last) = params.last_mut() {
                last.1 = result_id;
            }
        }
    }

    async fn kill(&self, requests: &[KillRequest], recheck: &Rechecker<'_>) -> Vec<KillOutcome> {
        let rechecked_at = std::time::Instant::now();
        // No fresh read is possible (the async snapshot is the only one): the
        // re-check sees the planned row and keeps only its protections.
        let mut outcomes: Vec<Option<KillOutcome>> = requests
            .iter()
            .map(|r| match recheck(r, Some(r.session)) {
                Recheck::Proceed => None,
                Recheck::Gone => Some(KillOutcome::without_recheck(KillResult::Gone)),
                Recheck::Changed(why) | Recheck::Unreadable(why) => {
                    Some(KillOutcome::without_recheck(KillResult::Changed(why)))
                }
            })
            .collect();
        let ids: Vec<u64> = requests
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| o.is_none())
            .map(|(r, _)| r.session.id)
            .collect();
        if ids.is_empty() {
            return KillOutcome::each_or(outcomes, KillResult::Gone);
        }
        let mut ignored: Vec<String> = requests
            .iter()
            .flat_map(|r| r.ignored_users.iter().cloned())
            .collect();
        ignored.sort();
        ignored.dedup();
        let mut params = self.base_params();
        params.extend([
            ("DbUser".to_owned(), self.cfg.db_user.clone()),
            (
                "DbUserPassword".to_owned(),
                self.cfg.db_password.expose_secret().to_owned(),
            ),
            (
                "IgnoredUsers".to_owned(),
                serde_json::to_string(&ignored).unwrap_or_else(|_| "[]".to_owned()),
            ),
            ("KillAllSessions".to_owned(), "false".to_owned()),
            (
                "SessionIds".to_owned(),
                serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned()),
            ),
        ]);
        let sent_at = std::time::Instant::now();
        let fill = |outcomes: &mut Vec<Option<KillOutcome>>, result: KillResult| {
            for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                *o = Some(KillOutcome {
                    result: result.clone(),
                    rechecked_at: Some(rechecked_at),
                    sent_at: Some(sent_at),
                });
            }
        };
        let task = match self
            .rpc("CreateKillInstanceSessionTask", params, Retry::Change)
            .await
        {
            Ok(data) => match json_string(&data).filter(|s| !s.is_empty()) {
                Some(t) => t,
                None => {
                    fill(
                        &mut outcomes,
                        KillResult::Unknown(
                            "CreateKillInstanceSessionTask returned no task id".to_owned(),
                        ),
                    );
                    return KillOutcome::each_or_not_attempted(outcomes);
                }
            },
            Err(e) if e.surely_not_applied() => {
                fill(&mut outcomes, KillResult::Failed(e.to_string()));
                return KillOutcome::each_or_not_attempted(outcomes);
            }
            Err(e) => {
                // Ambiguous: the task may exist. The next snapshot shows what happened.
                fill(&mut outcomes, KillResult::Unknown(e.to_string()));
                return KillOutcome::each_or_not_attempted(outcomes);
            }
        };
        let deadline = tokio::time::Instant::now() + self.cfg.poll_timeout;
        let mut params = self.base_params();
        params.push(("TaskId".to_owned(), task.clone()));
        let result = loop {
            match self
                .rpc(
                    "GetKillInstanceSessionTaskResult",
                    params.clone(),
                    Retry::Read,
                )
                .await
            {
                Ok(data) => {
                    let state = data
                        .get("TaskState")
                        .and_then(json_string)
                        .unwrap_or_default();
                    if state != "RUNNING" && !state.is_empty() {
                        break Ok((state, data));
                    }
                }
                Err(e) if tokio::time::Instant::now() + self.cfg.poll_interval > deadline => {
                    break Err(e.to_string());
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() + self.cfg.poll_interval > deadline {
                break Err(format!(
                    "kill task {task} still RUNNING after {}",
                    crate::core::policy::format_duration(self.cfg.poll_timeout)
                ));
            }
            tokio::time::sleep(self.cfg.poll_interval).await;
        };
        let (state, data) = match result {
            Ok(x) => x,
            Err(why) => {
                fill(&mut outcomes, KillResult::Unknown(why));
                return KillOutcome::each_or_not_attempted(outcomes);
            }
        };
        let reasons: HashMap<u64, String> = data
            .get("Result")
            .and_then(Value::as_array)
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        Some((
                            r.get("Id").and_then(json_u64)?,
                            r.get("Reason").and_then(json_string)?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (req, out) in requests.iter().zip(outcomes.iter_mut()) {
            if out.is_some() {
                continue;
            }
            let result = match reasons.get(&req.session.id) {
                Some(reason) => {
                    self.metrics
                        .provider_kill_results_total
                        .with_label_values(&[NAME, reason])
                        .inc();
                    reason_result(reason)
                }
                None if state == "SUCCESS" => KillResult::Unknown(format!(
                    "task {task} succeeded but did not report session {}",
                    req.session.id
                )),
                None => KillResult::Failed(format!(
                    "task {task} ended {state} without a result for session {}",
                    req.session.id
                )),
            };
            *out = Some(KillOutcome {
                result,
                rechecked_at: Some(rechecked_at),
                sent_at: Some(sent_at),
            });
        }
        KillOutcome::each_or_not_attempted(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_page_example_with_numbers_as_strings() {
        let doc: Value = serde_json::json!({
            "Code": "200", "Message": "Successful", "Success": "true", "RequestId": "B6D1",
            "Data": {"IsFinish": true, "Fail": false, "ResultId": "async__5070", "State": "SUCCESS",
                "SessionData": {"SessionList": [
                    {"SessionId": "14521783", "User": "testUser", "Client": "47.100.1.2", "DbName": "dbTest",
                     "Command": "Query", "Time": "6", "State": "starting", "SqlText": "INSERT INTO ...",
                     "TrxId": "754300775132", "TrxDuration": 6, "SqlTemplateId": "a7cac1a9"},
                    {"SessionId": 3, "User": "app", "Client": "10.0.0.1:4321", "Command": "Sleep", "Time": 400, "TrxId": ""}
                ]}}
        });
        let sessions = parse_sessions(&doc).unwrap();
        assert_eq!(sessions[0].id, 14521783);
        assert_eq!(sessions[0].time_ms, 6000);
        assert_eq!(sessions[0].trx.as_ref().unwrap().age_ms, 6000);
        assert_eq!(sessions[0].template_id.as_deref(), Some("a7cac1a9"));
        assert_eq!(sessions[1].host.as_deref(), Some("10.0.0.1"));
        assert_eq!(sessions[1].port, Some(4321));
        assert!(sessions[1].trx.is_none());
    }

    #[test]
    fn envelope_errors_name_the_code_and_request_id() {
        let r = Response {
            status: 403,
            body: br#"{"RequestId":"R-1","Code":"InvalidAccessKeyId.NotFound","Message":"Specified access key is not found."}"#.to_vec(),
            request_id: None,
        };
        let e = check_envelope("GetMySQLAllSessionAsync", &r).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert_eq!(
            e.to_string(),
            "alibaba-das GetMySQLAllSessionAsync: InvalidAccessKeyId.NotFound: Specified access key is not found. (request id R-1)"
        );
        let r = Response {
            status: 200,
            body: br#"{"Code":"Throttling.User","Message":"Request was denied due to user flow control.","Success":false}"#.to_vec(),
            request_id: None,
        };
        assert_eq!(
            check_envelope("X", &r).unwrap_err().kind,
            ErrorKind::Throttled
        );
        let truncated = Response {
            status: 200,
            body: br#"{"Code":200,"Data":{"IsFin"#.to_vec(),
            request_id: None,
        };
        assert_eq!(
            check_envelope("X", &truncated).unwrap_err().kind,
            ErrorKind::Malformed
        );
    }
}
