//! Request signers for the cloud APIs, written over `hmac` + `sha2`: pure functions
//! from a request to its signature. They know nothing of providers; the vendors'
//! own SDKs produced the vectors in `tests/data/vectors/` that they reproduce.

pub mod acs3;
pub mod sdk_hmac;
pub mod tc3;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// RFC 3986 encoding: `A-Z a-z 0-9 - _ . ~` stay, every other byte of the UTF-8
/// text becomes `%XX` with upper-case hex (a space is `%20`, never `+`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(
                char::from_digit(u32::from(b >> 4), 16)
                    .unwrap_or('0')
                    .to_ascii_uppercase(),
            );
            out.push(
                char::from_digit(u32::from(b & 15), 16)
                    .unwrap_or('0')
                    .to_ascii_uppercase(),
            );
        }
    }
    out
}

/// `k=v&k=v`, encoded, sorted by byte order of the encoded key, then value. Empty
/// values are kept (`NodeId=`).
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Canonical headers (`name:value\n` per header, names lower-cased, values trimmed,
/// sorted by name) and the signed-header list (`a;b;c`).
pub fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut lower: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    lower.sort_by(|a, b| a.0.cmp(&b.0));
    let canonical: String = lower.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = lower
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (canonical, signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(
            percent_encode("a b+c/d=e&f%g~h*i"),
            "a%20b%2Bc%2Fd%3De%26f%25g~h%2Ai"
        );
        assert_eq!(percent_encode("运维"), "%E8%BF%90%E7%BB%B4");
        assert_eq!(percent_encode("A-Z_0.9~"), "A-Z_0.9~");
    }
}
