//! What the three cloud providers share: the endpoint rules, an HTTP client with
//! timeouts, a per-API rate limit held over any sliding second, retries with
//! jittered backoff for reads (never a blind re-send of a kill), typed vendor
//! errors that name the API, the code and the request id, and metrics.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::yaml::Map;
use crate::metrics::Metrics;

/// The keys every cloud target takes besides its provider's own.
pub const COMMON_KEYS: &[&str] = &["endpoint", "timeout", "rate_limit"];

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where requests go: `https://host[:port]`, or `http://` on a loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://das.cn-shanghai.aliyuncs.com` (no trailing slash).
    pub base: String,
    /// The authority, as signed in `Host`.
    pub host: String,
}

impl Endpoint {
    /// Parses an endpoint; plain `http://` is refused unless the host is loopback.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("`{url}` is not a URL (write https://host)"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(format!("`{url}` names no host"));
        }
        if rest.trim_end_matches('/') != authority {
            return Err(format!(
                "`{url}` has a path; give only scheme, host and port"
            ));
        }
        let host_only = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default().to_owned(),
            None => authority
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(authority)
                .to_owned(),
        };
        match scheme {
            "https" => {}
            "http" => {
                let loopback = host_only == "localhost"
                    || host_only.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    return Err(format!(
                        "`{url}` is plain http to a non-loopback host; credentials would cross the network unencrypted"
                    ));
                }
            }
            other => return Err(format!("`{url}`: scheme `{other}` is not https")),
        }
        Ok(Endpoint {
            base: format!("{scheme}://{authority}"),
            host: authority.to_owned(),
        })
    }
}

/// The common settings of a cloud target.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub timeout: Duration,
    /// Requests per second per API.
    pub rate_limit: u32,
}

/// Reads `endpoint`, `timeout` and `rate_limit` (defaults: the vendor's endpoint,
/// 10 s, the vendor's published limit).
pub fn read_settings(
    map: &Map<'_>,
    default_endpoint: &str,
    published_rate: u32,
) -> Option<Settings> {
    let endpoint = match map.get("endpoint") {
        Some(v) => {
            let s = v.str()?;
            match Endpoint::parse(s) {
                Ok(e) => e,
                Err(e) => {
                    v.error(
                        format!("`endpoint`: {e}"),
                        Some(
                            "https://host[:port], or http://127.0.0.1:port for an emulator"
                                .to_owned(),
                        ),
                    );
                    return None;
                }
            }
        }
        None => Endpoint::parse(default_endpoint).ok()?,
    };
    let timeout = match map.get("timeout") {
        Some(v) => v.duration()?,
        None => DEFAULT_TIMEOUT,
    };
    let rate_limit = match map.get("rate_limit") {
        Some(v) => match v.u64()? {
            n @ 1..=1000 if n <= u64::from(published_rate) => n as u32,
            n @ 1..=1000 => {
                v.error(
                    format!("`rate_limit` {n} is above the vendor's published limit of {published_rate} requests/s per API"),
                    Some(format!("use {published_rate} or less")),
                );
                return None;
            }
            n => {
                v.error(
                    format!("`rate_limit` must be 1 to {published_rate}, not {n}"),
                    None,
                );
                return None;
            }
        },
        None => published_rate,
    };
    Some(Settings {
        endpoint,
        timeout,
        rate_limit,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The vendor refused for rate: safe to retry later.
    Throttled,
    /// 5xx or a vendor internal error: the call may or may not have happened.
    Server,
    Timeout,
    /// No connection was made: nothing was sent.
    Connect,
    /// A connection broke mid-call.
    Network,
    /// Credentials, signature, clock skew, permissions.
    Auth,
    /// Bad parameters, unknown instance.
    Client,
    /// A body we cannot read (truncated, not JSON, missing fields).
    Malformed,
}

/// A failed cloud call: which API answered what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    pub provider: &'static str,
    pub api: &'static str,
    pub kind: ErrorKind,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {}",
            self.provider, self.api, self.code, self.message
        )?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CloudError {}

impl CloudError {
    pub fn new(
        provider: &'static str,
        api: &'static str,
        kind: ErrorKind,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> CloudError {
        CloudError {
            provider,
            api,
            kind,
            code: code.into(),
            message: message.into(),
            request_id: None,
        }
    }

    pub fn malformed(
        provider: &'static str,
        api: &'static str,
        why: impl fmt::Display,
    ) -> CloudError {
        CloudError::new(
            provider,
            api,
            ErrorKind::Malformed,
            "MalformedResponse",
            format!("cannot read the response: {why}"),
        )
    }

    /// Whether the request surely did not take effect (so resending is safe).
    pub fn surely_not_applied(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Throttled | ErrorKind::Connect | ErrorKind::Auth | ErrorKind::Client
        )
    }

    fn retryable_read(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Throttled
                | ErrorKind::Server
                | ErrorKind::Timeout
                | ErrorKind::Connect
                | ErrorKind::Network
        )
    }

    pub fn label(&self) -> &'static str {
        match self.kind {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Server => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect | ErrorKind::Network => "network_error",
            ErrorKind::Auth => "auth_error",
            ErrorKind::Client => "client_error",
            ErrorKind::Malformed => "malformed",
        }
    }
}

/// A request ready to send (signed for one attempt).
pub struct Request {
    pub method: reqwest::Method,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// `X-Request-Id` / `X-Acs-Request-Id`, when the gateway sends one.
    pub request_id: Option<String>,
}

/// Whether a call may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A read: retried on throttling, 5xx, timeouts and network errors.
    Read,
    /// A change (a kill): retried only when the vendor surely did not apply it
    /// (throttled, not connected). Anything ambiguous is returned to the caller,
    /// which re-reads state before doing anything else.
    Change,
}

const ATTEMPTS: u32 = 3;
const MAX_BODY: usize = 64 << 20;

/// A sliding-window limit: at most `per_second` calls of one API in any 1 s.
pub struct RateLimiter {
    per_second: u32,
    sent: Mutex<HashMap<&'static str, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second: per_second.max(1),
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until one more call of `api` fits in the window, and takes its place.
    pub async fn acquire(&self, api: &'static str) {
        loop {
            let wait = {
                let Ok(mut sent) = self.sent.lock() else {
                    return;
                };
                let q = sent.entry(api).or_default();
                let now = Instant::now();
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                {
                    q.pop_front();
                }
                if q.len() < self.per_second as usize {
                    q.push_back(now);
                    return;
                }
                // The oldest call leaves the window at front + 1 s.
                q.front()
                    .map(|t| Duration::from_secs(1).saturating_sub(now.duration_since(*t)))
            };
            tokio::time::sleep(
                wait.unwrap_or(Duration::from_millis(10)) + Duration::from_micros(100),
            )
            .await;
        }
    }
}

pub struct Client {
    pub provider: &'static str,
    pub settings: Settings,
    http: reqwest::Client,
    limiter: RateLimiter,
    metrics: Arc<Metrics>,
}

impl Client {
    pub fn new(provider: &'static str, settings: Settings, metrics: Arc<Metrics>) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("session-reaper/", env!("CARGO_PKG_VERSION")))
            .build()
            // Only a broken TLS backend makes this fail; fall back to the defaults.
            .unwrap_or_default();
        Client {
            provider,
            limiter: RateLimiter::new(settings.rate_limit),
            settings,
            http,
            metrics,
        }
    }

    pub fn host(&self) -> &str {
        &self.settings.endpoint.host
    }

    /// Sends `api`, signing a fresh request per attempt with `build`; `check` turns
    /// a response into the vendor's error, if it is one.
    pub async fn call(
        &self,
        api: &'static str,
        retry: Retry,
        build: &(dyn Fn() -> Request + Send + Sync),
        check: &(dyn Fn(&Response) -> Result<(), CloudError> + Send + Sync),
    ) -> Result<Response, CloudError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.limiter.acquire(api).await;
            let started = Instant::now();
            let result = self
                .send_once(api, build())
                .await
                .and_then(|r| check(&r).map(|()| r));
            self.metrics
                .provider_request_duration_seconds
                .with_label_values(&[self.provider, api])
                .observe(started.elapsed().as_secs_f64());
            let status = match &result {
                Ok(_) => "ok",
                Err(e) => e.label(),
            };
            self.metrics.provider_request(self.provider, api, status);
            let err = match result {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let again = match retry {
                Retry::Read => err.retryable_read(),
                Retry::Change => matches!(err.kind, ErrorKind::Throttled | ErrorKind::Connect),
            };
            if !again || attempt >= ATTEMPTS {
                return Err(err);
            }
            let base = 200u64 << (attempt - 1);
            let jitter = rand::random_range(0.5..1.5);
            tokio::time::sleep(Duration::from_millis((base as f64 * jitter) as u64)).await;
        }
    }

    async fn send_once(&self, api: &'static str, req: Request) -> Result<Response, CloudError> {
        let url = format!("{}{}", self.settings.endpoint.base, req.path_and_query);
        let mut builder = self.http.request(req.method, &url);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body);
        }
        let err = |kind, code: &str, message: String| {
            CloudError::new(self.provider, api, kind, code, message)
        };
        let mut resp = builder.send().await.map_err(|e| {
            if e.is_timeout() {
                err(
                    ErrorKind::Timeout,
                    "Timeout",
                    format!(
                        "no answer within {}",
                        crate::core::policy::format_duration(self.settings.timeout)
                    ),
                )
            } else if e.is_connect() {
                err(
                    ErrorKind::Connect,
                    "ConnectError",
                    format!(
                        "cannot connect to {}: {}",
                        self.settings.endpoint.base,
                        source_text(&e)
                    ),
                )
            } else {
                err(ErrorKind::Network, "NetworkError", source_text(&e))
            }
        })?;
        let status = resp.status().as_u16();
        let request_id = ["x-request-id", "x-acs-request-id"]
            .iter()
            .find_map(|h| resp.headers().get(*h))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(err(
                            ErrorKind::Malformed,
                            "ResponseTooLarge",
                            format!("the response is larger than {} MiB", MAX_BODY >> 20),
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Err(err(
                        ErrorKind::Timeout,
                        "Timeout",
                        "the response body did not arrive in time".to_owned(),
                    ));
                }
                Err(e) => {
                    return Err(err(
                        ErrorKind::Network,
                        "NetworkError",
                        format!("the response broke off: {}", source_text(&e)),
                    ));
                }
            }
        }
        Ok(Response {
            status,
            body,
            request_id,
        })
    }
}

/// The innermost cause of a reqwest error, which says what actually happened
/// (`Connection refused (os error 111)`, not `error sending request for url`).
pub(crate) fn source_text(e: &reqwest::Error) -> String {
    let mut s: &dyn std::error::Error = e;
    while let Some(inner) = s.source() {
        s = inner;
    }
    s.to_string()
}

/// A number that may arrive as a JSON number or a string (`"6"`, `6`, `6.0`).
pub fn json_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        serde_json::Value::String(s) => {
            let t = s.trim();
            t.parse::<u64>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| *f >= 0.0)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    }
}

/// A string field that may arrive as a number.
pub fn json_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A boolean that may arrive as `true` or `"true"`.
pub fn json_bool(v: &serde_json::Value) -> Option<bool> {
    match v {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (ACS3) and friends.
pub fn now_utc() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_or_loopback_http() {
        assert!(Endpoint::parse("https://das.cn-shanghai.aliyuncs.com").is_ok());
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(e.host, "127.0.0.1:8080");
        assert!(Endpoint::parse("http://[::1]:9000").is_ok());
        assert!(Endpoint::parse("http://localhost:9000").is_ok());
        assert!(
            Endpoint::parse("http://10.0.0.5:8080")
                .unwrap_err()
                .contains("unencrypted")
        );
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("https://x/path").is_err());
        assert!(Endpoint::parse("das.aliyuncs.com").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_holds_over_any_sliding_second() {
        let limiter = RateLimiter::new(20);
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..50 {
            limiter.acquire("Api").await;
            times.push(tokio::time::Instant::now() - start);
        }
        // No window of one second holds more than 20 calls.
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u - *t < Duration::from_secs(1))
                .count();
            assert!(in_window <= 20, "{in_window} calls within 1 s of call {i}");
        }
        // Another API has its own budget.
        let before = tokio::time::Instant::now();
        limiter.acquire("Other").await;
        assert_eq!(tokio::time::Instant::now(), before);
    }
}
