//! In-process fakes of the three cloud APIs, backed by a real MariaDB server: their
//! session lists come from its process list and their kills are real `KILL`s. Each
//! checks every request's signature (and clock skew) and answers in the vendor's
//! real shapes, errors included. Faults are queued per API and used once each.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use session_reaper::sign::{acs3, sdk_hmac, tc3};

use super::MariaDb;

#[derive(Debug, Clone)]
pub enum Fault {
    /// The vendor's throttling error.
    Throttle,
    /// HTTP 500 (or the vendor's internal error).
    ServerError,
    /// Answer only after this long.
    Delay(Duration),
    /// Cut the JSON body in half.
    Truncate,
    /// Alibaba: the kill task never leaves RUNNING (persistent).
    TaskStuck,
    /// Alibaba: the async session query never finishes (persistent).
    NeverFinish,
    /// Tencent: the Commit arrives "late" and is rejected.
    LateCommit,
    /// Answer with this HTTP status and body, as is.
    Raw(u16, String),
}

/// One row of the server's process list.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: u64,
    pub user: String,
    pub host: String,
    pub db: Option<String>,
    pub command: String,
    pub time: u64,
    pub state: Option<String>,
    pub info: Option<String>,
    pub trx_id: Option<String>,
    pub trx_secs: Option<u64>,
}

pub struct Shared {
    pub key_id: String,
    pub secret: String,
    port: u16,
    faults: Mutex<Vec<(String, Fault)>>,
    persistent: Mutex<Vec<(String, Fault)>>,
    /// Every API call, in order, with its parameters (query or body).
    pub calls: Mutex<Vec<(String, Value)>>,
    pub kills: Mutex<Vec<u64>>,
    state: Mutex<HashMap<String, Value>>,
    seq: Mutex<u64>,
}

impl Shared {
    /// Queues a fault for the next call of `api`.
    pub fn fail_next(&self, api: &str, fault: Fault) {
        self.faults.lock().unwrap().push((api.to_owned(), fault));
    }

    /// A fault for every call of `api`.
    pub fn fail_always(&self, api: &str, fault: Fault) {
        self.persistent
            .lock()
            .unwrap()
            .push((api.to_owned(), fault));
    }

    fn take_fault(&self, api: &str) -> Option<Fault> {
        let mut f = self.faults.lock().unwrap();
        if let Some(i) = f.iter().position(|(a, _)| a == api) {
            return Some(f.remove(i).1);
        }
        self.persistent
            .lock()
            .unwrap()
            .iter()
            .find(|(a, _)| a == api)
            .map(|(_, f)| f.clone())
    }

    pub fn calls_of(&self, api: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == api)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn next_id(&self) -> u64 {
        let mut s = self.seq.lock().unwrap();
        *s += 1;
        *s
    }

    async fn rows(&self) -> Vec<Row> {
        let db = MariaDb::on_port(self.port);
        let mut c = db.admin().await;
        let rows: Vec<mysql_async::Row> = c
            .query(
                "SELECT p.ID, p.USER, p.HOST, p.DB, p.COMMAND, p.TIME, p.STATE, p.INFO, t.trx_id, \
                 TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) FROM information_schema.PROCESSLIST p \
                 LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID",
            )
            .await
            .unwrap();
        let _ = c.disconnect().await;
        rows.into_iter()
            .map(|mut r| Row {
                id: r.take::<u64, _>(0).unwrap(),
                user: r.take::<String, _>(1).unwrap_or_default(),
                host: r.take::<String, _>(2).unwrap_or_default(),
                db: r.take::<Option<String>, _>(3).flatten(),
                command: r.take::<String, _>(4).unwrap_or_default(),
                time: r.take::<Option<u64>, _>(5).flatten().unwrap_or(0),
                state: r
                    .take::<Option<String>, _>(6)
                    .flatten()
                    .filter(|s| !s.is_empty()),
                info: r.take::<Option<String>, _>(7).flatten(),
                trx_id: r.take::<Option<String>, _>(8).flatten(),
                trx_secs: r.take::<Option<u64>, _>(9).flatten(),
            })
            .collect()
    }

    /// `KILL CONNECTION id` as root: true when it was killed, false when unknown.
    async fn kill(&self, id: u64) -> bool {
        let db = MariaDb::on_port(self.port);
        let mut c = db.admin().await;
        let ok = c.query_drop(format!("KILL CONNECTION {id}")).await.is_ok();
        let _ = c.disconnect().await;
        if ok {
            self.kills.lock().unwrap().push(id);
        }
        ok
    }
}

pub struct Fake {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fake {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[derive(Clone, Copy)]
enum Vendor {
    Alibaba,
    Tencent,
    Huawei,
}

async fn start(vendor: Vendor, db: &MariaDb) -> Fake {
    let shared = Arc::new(Shared {
        key_id: "TESTKEYID".to_owned(),
        secret: "test-secret-value".to_owned(),
        port: db.port,
        faults: Mutex::new(Vec::new()),
        persistent: Mutex::new(Vec::new()),
        calls: Mutex::new(Vec::new()),
        kills: Mutex::new(Vec::new()),
        state: Mutex::new(HashMap::new()),
        seq: Mutex::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = shared.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                match vendor {
                    Vendor::Alibaba => alibaba(&s, method, uri, headers, body).await,
                    Vendor::Tencent => tencent(&s, headers, body).await,
                    Vendor::Huawei => huawei(&s, method, uri, headers, body).await,
                }
            }
        },
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Fake {
        addr,
        shared,
        server,
    }
}

pub async fn alibaba_das(db: &MariaDb) -> Fake {
    start(Vendor::Alibaba, db).await
}

pub async fn tencent_dbbrain(db: &MariaDb) -> Fake {
    start(Vendor::Tencent, db).await
}

pub async fn huawei_das(db: &MariaDb) -> Fake {
    start(Vendor::Huawei, db).await
}

fn json_response(status: u16, body: &Value, truncate: bool) -> Response {
    let mut text = serde_json::to_string(body).unwrap();
    if truncate {
        text.truncate(text.len() / 2);
    }
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(text))
        .unwrap()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The names listed in `SignedHeaders=` of an Authorization header.
fn signed_headers(auth: &str) -> Vec<String> {
    auth.split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split([',', ' ']).next())
        .map(|s| s.split(';').map(str::to_owned).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- Alibaba DAS

fn ali_error(status: u16, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"RequestId": "FAKE-REQ-1", "Code": code, "Message": message, "Success": false}),
        false,
    )
}

fn ali_ok(data: Value, truncate: bool) -> Response {
    // Numbers arrive as strings now and then, as the real service does.
    json_response(
        200,
        &json!({"Code": "200", "Message": "Successful", "Data": data, "RequestId": "FAKE-REQ-2", "Success": "true"}),
        truncate,
    )
}

async fn alibaba(
    s: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = query_pairs(&uri);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let action = header(&headers, "x-acs-action");
    // Signature: recompute over what arrived.
    let auth = header(&headers, "authorization");
    let signed: Vec<(String, String)> = signed_headers(&auth)
        .into_iter()
        .filter(|h| h != "x-acs-content-sha256")
        .map(|h| (h.clone(), header(&headers, &h)))
        .collect();
    let expect = acs3::sign(
        &acs3::Request {
            method: method.as_str(),
            path: uri.path(),
            query: &params,
            headers: &signed,
            body: &body,
        },
        &s.key_id,
        &s.secret,
    );
    if !auth.starts_with(&format!("ACS3-HMAC-SHA256 Credential={},", s.key_id)) {
        return ali_error(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        );
    }
    if expect.authorization != auth
        || header(&headers, "x-acs-content-sha256") != expect.content_sha256
    {
        return ali_error(
            400,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        );
    }
    let date = chrono::DateTime::parse_from_rfc3339(&header(&headers, "x-acs-date"))
        .map(|d| d.with_timezone(&chrono::Utc));
    if date
        .map(|d| (chrono::Utc::now() - d).num_seconds().abs() > 900)
        .unwrap_or(true)
    {
        return ali_error(
            400,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        );
    }
    let params_json = Value::Object(
        params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    );
    s.calls.lock().unwrap().push((action.clone(), params_json));
    let fault = s.take_fault(&action);
    match &fault {
        Some(Fault::Throttle) => {
            return ali_error(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            );
        }
        Some(Fault::ServerError) => {
            return ali_error(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error.",
            );
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Fault::Raw(code, text)) => {
            return Response::builder()
                .status(*code)
                .body(Body::from(text.clone()))
                .unwrap();
        }
        _ => {}
    }
    let truncate = matches!(fault, Some(Fault::Truncate));
    if get("InstanceId").as_deref() != Some("rm-test") {
        return ali_error(400, "InvalidParams", "The request parameters are invalid.");
    }
    match action.as_str() {
        "GetMySQLAllSessionAsync" => {
            let result_id = get("ResultId").unwrap_or_default();
            if result_id.is_empty() || matches!(fault, Some(Fault::NeverFinish)) {
                let id = if result_id.is_empty() {
                    format!("async__{}", s.next_id())
                } else {
                    result_id
                };
                return ali_ok(
                    json!({"Fail": false, "IsFinish": false, "ResultId": id, "State": "RUNNING", "Complete": false}),
                    truncate,
                );
            }
            let list: Vec<Value> = s
                .rows()
                .await
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let id = if i % 2 == 0 { json!(r.id) } else { json!(r.id.to_string()) };
                    json!({"SessionId": id, "User": r.user, "Client": r.host, "DbName": r.db, "Command": r.command,
                        "Time": r.time, "State": r.state, "SqlText": r.info, "UserClientAlias": "",
                        "TrxId": r.trx_id.unwrap_or_default(), "TrxDuration": r.trx_secs.unwrap_or(0), "SqlTemplateId": ""})
                })
                .collect();
            ali_ok(
                json!({"Fail": false, "IsFinish": true, "ResultId": result_id, "State": "SUCCESS", "Complete": true,
                    "SessionData": {"TotalSessionCount": list.len(), "SessionList": list}}),
                truncate,
            )
        }
        "CreateKillInstanceSessionTask" => {
            if get("KillAllSessions").as_deref() != Some("false") {
                return ali_error(
                    400,
                    "InvalidParams",
                    "this fake only accepts KillAllSessions=false",
                );
            }
            if get("DbUser").as_deref() != Some("reaper")
                || get("DbUserPassword").as_deref() != Some("kill-pw")
            {
                return ali_error(400, "InvalidParams", "wrong DbUser or DbUserPassword");
            }
            let ids: Vec<u64> =
                serde_json::from_str(&get("SessionIds").unwrap_or_default()).unwrap_or_default();
            let ignored: Vec<String> =
                serde_json::from_str(&get("IgnoredUsers").unwrap_or_default()).unwrap_or_default();
            let rows = s.rows().await;
            let mut results = Vec::new();
            for id in ids {
                let reason = match rows.iter().find(|r| r.id == id) {
                    None => "SESSION_EXPIRED",
                    Some(r) if ignored.contains(&r.user) => "SESSION_IGNORED_USER",
                    Some(r)
                        if ["aliyun_root", "aurora", "replicator"].contains(&r.user.as_str())
                            || r.command.starts_with("Binlog Dump") =>
                    {
                        "SESSION_INTERNAL_USER_OR_COMMAND"
                    }
                    Some(_) if s.kill(id).await => "SESSION_KILLED",
                    Some(_) => "SESSION_EXPIRED",
                };
                results.push(json!({"Id": id, "Reason": reason, "TaskId": "sub", "Active": false}));
            }
            let task = format!("task{}", s.next_id());
            s.state
                .lock()
                .unwrap()
                .insert(task.clone(), json!({"results": results, "polls": 0}));
            ali_ok(Value::String(task), truncate)
        }
        "GetKillInstanceSessionTaskResult" => {
            let task = get("TaskId").unwrap_or_default();
            let mut st = s.state.lock().unwrap();
            let Some(t) = st.get_mut(&task) else {
                return ali_error(400, "InvalidParams", "no such task");
            };
            let polls = t["polls"].as_u64().unwrap_or(0) + 1;
            t["polls"] = json!(polls);
            let running = polls < 2 || matches!(fault, Some(Fault::TaskStuck));
            let results = t["results"].clone();
            drop(st);
            let killed = results
                .as_array()
                .map(|a| a.iter().filter(|r| r["Reason"] == "SESSION_KILLED").count())
                .unwrap_or(0);
            if running {
                return ali_ok(
                    json!({"TaskId": task, "TaskState": "RUNNING", "Result": []}),
                    truncate,
                );
            }
            ali_ok(
                json!({"TaskId": task, "InstanceId": "rm-test", "TaskState": "SUCCESS", "KillSuccessCount": killed, "KillFailCount": 0, "Result": results}),
                truncate,
            )
        }
        other => ali_error(
            400,
            "InvalidAction.NotFound",
            &format!("Specified api {other} is not found"),
        ),
    }
}

// ------------------------------------------------------------ Tencent DBbrain

fn tc_error(code: &str, message: &str) -> Response {
    json_response(
        200,
        &json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "fake-tc-1"}}),
        false,
    )
}

fn tc_ok(mut content: Value, truncate: bool) -> Response {
    content["RequestId"] = json!("fake-tc-2");
    json_response(200, &json!({ "Response": content }), truncate)
}

async fn tencent(s: &Shared, headers: HeaderMap, body: Bytes) -> Response {
    let action = header(&headers, "x-tc-action");
    let auth = header(&headers, "authorization");
    let timestamp: i64 = header(&headers, "x-tc-timestamp").parse().unwrap_or(0);
    let signed = vec![
        ("Content-Type".to_owned(), header(&headers, "content-type")),
        ("Host".to_owned(), header(&headers, "host")),
    ];
    let expect = tc3::sign(
        &tc3::Request {
            method: "POST",
            path: "/",
            query: &[],
            headers: &signed,
            body: &body,
            service: "dbbrain",
            timestamp,
        },
        &s.key_id,
        &s.secret,
    );
    if !auth.contains(&format!("Credential={}/", s.key_id)) {
        return tc_error("AuthFailure.SecretIdNotFound", "The SecretId is not found.");
    }
    if (chrono::Utc::now().timestamp() - timestamp).abs() > 300 {
        return tc_error("AuthFailure.SignatureExpire", "Signature expired.");
    }
    if expect.authorization != auth
        || header(&headers, "x-tc-version") != "2021-05-27"
        || header(&headers, "x-tc-region").is_empty()
    {
        return tc_error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated.",
        );
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.calls.lock().unwrap().push((action.clone(), req.clone()));
    let stage_api = match req["Stage"].as_str() {
        Some(stage) => format!("{action}:{stage}"),
        None => action.clone(),
    };
    let fault = s.take_fault(&stage_api).or_else(|| s.take_fault(&action));
    match &fault {
        Some(Fault::Throttle) => {
            return tc_error(
                "RequestLimitExceeded",
                "Your current request times exceeds limit, please retry later.",
            );
        }
        Some(Fault::ServerError) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from("<html>502</html>"))
                .unwrap();
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Fault::Raw(code, text)) => {
            return Response::builder()
                .status(*code)
                .body(Body::from(text.clone()))
                .unwrap();
        }
        _ => {}
    }
    let truncate = matches!(fault, Some(Fault::Truncate));
    if req["InstanceId"] != "cdb-test" {
        return tc_error("InvalidParameter", "instance cdb-test only");
    }
    match action.as_str() {
        "DescribeMySqlProcessList" => {
            let limit = req["Limit"].as_u64().unwrap_or(20) as usize;
            let list: Vec<Value> = s
                .rows()
                .await
                .into_iter()
                .filter(|r| req["User"].as_str().is_none_or(|u| u == r.user))
                .filter(|r| req["Command"].as_str().is_none_or(|c| c == r.command))
                .filter(|r| req["Time"].as_u64().is_none_or(|t| r.time > t))
                .take(limit)
                .map(|r| {
                    json!({"ID": r.id.to_string(), "User": r.user, "Host": r.host, "DB": r.db.unwrap_or_default(),
                        "State": r.state.unwrap_or_default(), "Command": r.command, "Time": r.time.to_string(), "Info": r.info})
                })
                .collect();
            tc_ok(json!({ "ProcessList": list }), truncate)
        }
        "KillMySqlThreads" => match req["Stage"].as_str() {
            Some("Prepare") => {
                let threads: Vec<u64> = req["Threads"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                let exec = format!("exec-{}", s.next_id());
                s.state.lock().unwrap().insert(
                    exec.clone(),
                    json!({"threads": threads, "late": matches!(fault, Some(Fault::LateCommit))}),
                );
                tc_ok(json!({"SqlExecId": exec, "Threads": threads}), truncate)
            }
            Some("Commit") => {
                let exec = req["SqlExecId"].as_str().unwrap_or_default().to_owned();
                let prepared = s.state.lock().unwrap().remove(&exec);
                let Some(p) = prepared else {
                    return tc_error(
                        "FailedOperation",
                        "the SqlExecId does not exist or has been committed",
                    );
                };
                if p["late"] == true {
                    return tc_error(
                        "FailedOperation",
                        "the kill task has expired: Commit must follow Prepare promptly",
                    );
                }
                let mut killed = Vec::new();
                for id in p["threads"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Value::as_u64)
                {
                    if s.kill(id).await {
                        killed.push(id);
                    }
                }
                tc_ok(json!({"SqlExecId": exec, "Threads": killed}), truncate)
            }
            _ => tc_error("InvalidParameter", "Stage must be Prepare or Commit"),
        },
        other => tc_error(
            "InvalidAction",
            &format!("{other} is not supported by this fake"),
        ),
    }
}

// ----------------------------------------------------------------- Huawei DAS

fn hw_error(status: u16, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error_code": code, "error_msg": message}),
        false,
    )
}

async fn huawei(s: &Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let params = query_pairs(&uri);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let auth = header(&headers, "authorization");
    let project = header(&headers, "x-project-id");
    let given: Vec<(String, String)> = signed_headers(&auth)
        .into_iter()
        .filter(|h| h != "host" && h != "x-project-id")
        .map(|h| (h.clone(), header(&headers, &h)))
        .collect();
    let expect = sdk_hmac::sign(
        &sdk_hmac::Request {
            method: method.as_str(),
            host: &header(&headers, "host"),
            path: uri.path(),
            query: &params,
            headers: &given,
            body: &body,
            project_id: Some(&project),
        },
        &s.key_id,
        &s.secret,
    );
    if !auth.contains(&format!("Access={},", s.key_id)) {
        return hw_error(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: ak not found",
        );
    }
    if expect.authorization != auth {
        return hw_error(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: verify aksk signature fail",
        );
    }
    let date =
        chrono::NaiveDateTime::parse_from_str(&header(&headers, "x-sdk-date"), "%Y%m%dT%H%M%SZ");
    if date
        .map(|d| (chrono::Utc::now().naive_utc() - d).num_seconds().abs() > 900)
        .unwrap_or(true)
    {
        return hw_error(
            401,
            "APIGW.0303",
            "Incorrect app authentication information: request expired",
        );
    }
    let path = uri.path().to_owned();
    let api = match (method.as_str(), path.rsplit('/').next().unwrap_or("")) {
        ("GET", "processes") => "ListProcesses",
        ("DELETE", "process") => "DeleteProcess",
        ("GET", "db-users") => "ListDbUsers",
        ("POST", "db-users") => "RegisterDbUser",
        _ => {
            return hw_error(
                404,
                "APIGW.0101",
                "The API does not exist or has not been published in the environment.",
            );
        }
    };
    let mut record = Value::Object(
        params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    );
    if !body.is_empty() {
        record["body"] = serde_json::from_slice(&body).unwrap_or(Value::Null);
    }
    s.calls.lock().unwrap().push((api.to_owned(), record));
    let fault = s.take_fault(api);
    match &fault {
        Some(Fault::Throttle) => {
            return hw_error(
                429,
                "APIGW.0308",
                "The throttling threshold has been reached.",
            );
        }
        Some(Fault::ServerError) => return hw_error(500, "DAS.0001", "Internal server error."),
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Fault::Raw(code, text)) => {
            return Response::builder()
                .status(*code)
                .body(Body::from(text.clone()))
                .unwrap();
        }
        _ => {}
    }
    let truncate = matches!(fault, Some(Fault::Truncate));
    if !path.starts_with(&format!("/v3/{project}/instances/inst-test/")) || project != "proj-test" {
        return hw_error(
            400,
            "DAS.0002",
            "instance inst-test of project proj-test only",
        );
    }
    match api {
        "ListDbUsers" => {
            let users = s
                .state
                .lock()
                .unwrap()
                .get("db_users")
                .cloned()
                .unwrap_or(json!([]));
            let name = get("db_username");
            let list: Vec<Value> = users
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|u| name.as_deref().is_none_or(|n| u["db_username"] == n))
                .collect();
            json_response(
                200,
                &json!({"total": list.len(), "db_users": list}),
                truncate,
            )
        }
        "RegisterDbUser" => {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if req["datastore_type"] != "MySQL"
                || req["db_username"].as_str().is_none()
                || req["db_user_password"].as_str().is_none()
            {
                return hw_error(
                    400,
                    "DAS.0003",
                    "db_username, db_user_password and datastore_type are required",
                );
            }
            let id = format!("2c250598-1e3c-4d31-bc19-{:012}", s.next_id());
            let mut st = s.state.lock().unwrap();
            let users = st.entry("db_users".to_owned()).or_insert(json!([]));
            users
                .as_array_mut()
                .unwrap()
                .push(json!({"db_user_id": id, "db_username": req["db_username"]}));
            json_response(200, &json!({ "db_user_id": id }), truncate)
        }
        "ListProcesses" => {
            if get("db_user_id").is_none() || (get("user").is_none() && get("database").is_none()) {
                return hw_error(
                    400,
                    "DAS.0004",
                    "db_user_id and one of user or database are required",
                );
            }
            let limit: usize = get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
            if limit > 100 {
                return hw_error(400, "DAS.0005", "limit must be 1 to 100");
            }
            let offset: usize = get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
            let rows: Vec<Row> = s
                .rows()
                .await
                .into_iter()
                .filter(|r| get("user").is_none_or(|u| u == r.user))
                .filter(|r| get("database").is_none_or(|d| Some(d) == r.db))
                .collect();
            let page: Vec<Value> = rows
                .iter()
                .skip(offset)
                .take(limit)
                .map(|r| {
                    json!({"id": r.id.to_string(), "user": r.user, "host": r.host, "database": r.db.clone().unwrap_or("--".to_owned()),
                        "command": r.command, "time": r.time.to_string(), "state": r.state.clone().unwrap_or_default(),
                        "sql": r.info.clone().unwrap_or_default(), "trx_executed_time": r.trx_secs.unwrap_or(0).to_string()})
                })
                .collect();
            json_response(
                200,
                &json!({"processes": page, "count": rows.len()}),
                truncate,
            )
        }
        "DeleteProcess" => {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let ids: Vec<u64> = req["process_ids"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
                .unwrap_or_default();
            if req["db_user_id"].as_str().is_none() || ids.is_empty() {
                return hw_error(400, "DAS.0006", "db_user_id and process_ids are required");
            }
            for id in ids {
                s.kill(id).await;
            }
            Response::builder().status(200).body(Body::empty()).unwrap()
        }
        _ => unreachable!(),
    }
}

/// Waits until `f` holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
