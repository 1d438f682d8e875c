//! Alibaba Cloud ACS3-HMAC-SHA256 (RPC style: every parameter in the query string,
//! an empty body).

use super::{canonical_headers, canonical_query, hmac_sha256, sha256_hex};

pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Raw, unencoded parameters.
    pub query: &'a [(String, String)],
    /// Headers to sign and send: `host`, `x-acs-action`, `x-acs-version`,
    /// `x-acs-date`, `x-acs-signature-nonce` (and `x-acs-security-token` with STS
    /// credentials). The signer adds `x-acs-content-sha256`.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub content_sha256: String,
    /// Also the query string to send.
    pub canonical_query: String,
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    pub authorization: String,
    /// Every header to send, `Authorization` last.
    pub headers: Vec<(String, String)>,
}

pub fn sign(req: &Request<'_>, access_key_id: &str, access_key_secret: &str) -> Signature {
    let content_sha256 = sha256_hex(req.body);
    let mut headers: Vec<(String, String)> = req.headers.to_vec();
    headers.push(("x-acs-content-sha256".to_owned(), content_sha256.clone()));
    let (canonical_hdrs, signed_headers) = canonical_headers(&headers);
    let canonical_query = canonical_query(req.query);
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method, req.path, canonical_query, canonical_hdrs, signed_headers, content_sha256
    );
    let string_to_sign = format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()));
    let signature = hex::encode(hmac_sha256(
        access_key_secret.as_bytes(),
        string_to_sign.as_bytes(),
    ));
    let authorization = format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    );
    headers.push(("Authorization".to_owned(), authorization.clone()));
    Signature {
        content_sha256,
        canonical_query,
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
        headers,
    }
}
