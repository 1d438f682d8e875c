//! Huawei Cloud SDK-HMAC-SHA256 (APIG signing): every header sent is signed, the
//! canonical URI ends with `/` (the path sent does not), `X-Project-Id` and `Host`
//! are signed.

use super::{canonical_headers, canonical_query, hmac_sha256, percent_encode, sha256_hex};

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";

pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    /// Headers set before signing: `Content-Type`, `X-Sdk-Date`
    /// (`YYYYMMDDTHHMMSSZ`), optionally `X-Security-Token` and others.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    pub project_id: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub body_sha256: String,
    pub canonical_uri: String,
    pub canonical_query: String,
    /// Path and query to send.
    pub request_uri: String,
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    pub authorization: String,
    /// Every header to send, `Authorization` last.
    pub headers: Vec<(String, String)>,
}

pub fn sign(req: &Request<'_>, access_key: &str, secret_key: &str) -> Signature {
    let mut headers: Vec<(String, String)> = req.headers.to_vec();
    if let Some(project) = req.project_id {
        headers.push(("X-Project-Id".to_owned(), project.to_owned()));
    }
    headers.push(("Host".to_owned(), req.host.to_owned()));
    let body_sha256 = sha256_hex(req.body);
    let mut canonical_uri: String = req
        .path
        .split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/");
    if !canonical_uri.ends_with('/') {
        canonical_uri.push('/');
    }
    let canonical_query = canonical_query(req.query);
    let (canonical_hdrs, signed_headers) = canonical_headers(&headers);
    let canonical_request = format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_hdrs}\n{signed_headers}\n{body_sha256}",
        req.method
    );
    let date = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-sdk-date"))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let string_to_sign = format!(
        "{ALGORITHM}\n{date}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let signature = hex::encode(hmac_sha256(
        secret_key.as_bytes(),
        string_to_sign.as_bytes(),
    ));
    let authorization = format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={signed_headers}, Signature={signature}"
    );
    headers.push(("Authorization".to_owned(), authorization.clone()));
    let path = req.path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let request_uri = if canonical_query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{canonical_query}")
    };
    Signature {
        body_sha256,
        canonical_uri,
        canonical_query,
        request_uri,
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
        headers,
    }
}
