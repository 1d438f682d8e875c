//! Tencent Cloud TC3-HMAC-SHA256 (POST of a JSON body to `/`).

use chrono::{DateTime, Utc};

use super::{canonical_headers, canonical_query, hmac_sha256, sha256_hex};

pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    /// The signed headers, as sent: `Content-Type` (byte-identical to the one on the
    /// wire) and `Host`.
    pub headers: &'a [(String, String)],
    /// The exact bytes sent.
    pub body: &'a [u8],
    pub service: &'a str,
    /// Unix seconds; also the `X-TC-Timestamp` header.
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub body_sha256: String,
    /// The UTC date of the timestamp, `YYYY-MM-DD`.
    pub date: String,
    pub credential_scope: String,
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    pub authorization: String,
}

pub fn sign(req: &Request<'_>, secret_id: &str, secret_key: &str) -> Signature {
    let body_sha256 = sha256_hex(req.body);
    let (canonical_hdrs, signed_headers) = canonical_headers(req.headers);
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        canonical_query(req.query),
        canonical_hdrs,
        signed_headers,
        body_sha256
    );
    let date = DateTime::<Utc>::from_timestamp(req.timestamp, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string();
    let credential_scope = format!("{date}/{}/tc3_request", req.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{credential_scope}\n{}",
        req.timestamp,
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac_sha256(&k_date, req.service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"tc3_request");
    let signature = hex::encode(hmac_sha256(&k_signing, string_to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={secret_id}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}"
    );
    Signature {
        body_sha256,
        date,
        credential_scope,
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
    }
}
