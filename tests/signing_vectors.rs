//! Every signing vector produced by the vendors' own SDKs
//! (`tests/data/vectors/`, copied from `shared/vectors/`) must come out of our
//! signers byte for byte: canonical request first, then string to sign, signature,
//! Authorization, and what goes on the wire.

use serde_json::Value;
use session_reaper::sign::{acs3, sdk_hmac, tc3};

fn vectors(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/data/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    let list = doc["vectors"].as_array().expect("a vectors array").clone();
    assert!(!list.is_empty());
    println!("{file}: {} vectors, each checked below", list.len());
    list
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string in {v}"))
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .expect("a list of pairs")
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Compares field by field and reports the first difference with both texts.
fn same(name: &str, field: &str, got: &str, want: &str) {
    assert!(
        got == want,
        "{name}: {field} differs\n--- ours\n{got}\n--- vendor SDK\n{want}\n"
    );
}

#[test]
fn acs3_reproduces_every_alibaba_vector() {
    for v in vectors("acs3.json") {
        let name = s(&v, "name");
        let i = &v["inputs"];
        let e = &v["expected"];
        let query = pairs(&i["query"]);
        let headers = pairs(&i["headers"]);
        let req = acs3::Request {
            method: s(i, "method"),
            path: s(i, "path"),
            query: &query,
            headers: &headers,
            body: s(i, "body").as_bytes(),
        };
        let sig = acs3::sign(&req, s(i, "access_key"), s(i, "secret"));
        same(
            name,
            "canonical_request",
            &sig.canonical_request,
            s(e, "canonical_request"),
        );
        same(
            name,
            "content_sha256",
            &sig.content_sha256,
            s(e, "content_sha256"),
        );
        same(
            name,
            "canonical_query_string",
            &sig.canonical_query,
            s(e, "canonical_query_string"),
        );
        same(
            name,
            "final_query_string",
            &sig.canonical_query,
            s(e, "final_query_string"),
        );
        same(
            name,
            "signed_headers",
            &sig.signed_headers,
            s(e, "signed_headers"),
        );
        same(
            name,
            "string_to_sign",
            &sig.string_to_sign,
            s(e, "string_to_sign"),
        );
        same(name, "signature", &sig.signature, s(e, "signature"));
        same(
            name,
            "authorization",
            &sig.authorization,
            s(e, "authorization"),
        );
        // On the wire: every signed header with its value, then Authorization.
        let mut sent: Vec<(String, String)> = sig.headers[..sig.headers.len() - 1]
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        sent.sort();
        assert_eq!(
            sent,
            pairs(&e["signed_header_values"]),
            "{name}: signed header values"
        );
        assert_eq!(
            sig.headers.last().map(|h| h.1.as_str()),
            Some(s(e, "authorization"))
        );
        if v["reproduced"].as_bool() == Some(true) {
            same(
                name,
                "published signature",
                &sig.signature,
                s(&v, "published_signature"),
            );
        }
    }
}

#[test]
fn tc3_reproduces_every_tencent_vector() {
    for v in vectors("tc3.json") {
        let name = s(&v, "name");
        let i = &v["inputs"];
        let e = &v["expected"];
        let query = pairs(&i["query"]);
        let headers = pairs(&i["headers"]);
        let req = tc3::Request {
            method: s(i, "method"),
            path: s(i, "path"),
            query: &query,
            headers: &headers,
            body: s(i, "body").as_bytes(),
            service: s(i, "service"),
            timestamp: i["timestamp"].as_i64().expect("timestamp"),
        };
        let sig = tc3::sign(&req, s(i, "secret_id"), s(i, "secret_key"));
        same(
            name,
            "canonical_request",
            &sig.canonical_request,
            s(e, "canonical_request"),
        );
        same(name, "body_sha256", &sig.body_sha256, s(e, "body_sha256"));
        same(name, "date", &sig.date, s(e, "date"));
        same(
            name,
            "credential_scope",
            &sig.credential_scope,
            s(e, "credential_scope"),
        );
        same(
            name,
            "signed_headers",
            &sig.signed_headers,
            s(e, "signed_headers"),
        );
        same(
            name,
            "string_to_sign",
            &sig.string_to_sign,
            s(e, "string_to_sign"),
        );
        same(name, "signature", &sig.signature, s(e, "signature"));
        same(
            name,
            "authorization",
            &sig.authorization,
            s(e, "authorization"),
        );
        // The SDK's X-TC-* headers carry the action, timestamp, version and region
        // we send too (its own client tag and language are not signed).
        let x_tc = pairs(&e["x_tc_headers"]);
        let get = |k: &str| x_tc.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("X-TC-Action"), Some(s(i, "action")), "{name}");
        assert_eq!(get("X-TC-Version"), Some(s(i, "version")), "{name}");
        assert_eq!(get("X-TC-Region"), Some(s(i, "region")), "{name}");
        assert_eq!(
            get("X-TC-Timestamp"),
            Some(i["timestamp"].as_i64().unwrap().to_string().as_str()),
            "{name}"
        );
        if v["reproduced"].as_bool() == Some(true) {
            same(
                name,
                "published signature",
                &sig.signature,
                s(&v, "published_signature"),
            );
        }
    }
}

#[test]
fn sdk_hmac_reproduces_every_huawei_vector() {
    for v in vectors("sdk_hmac_sha256.json") {
        let name = s(&v, "name");
        let i = &v["inputs"];
        let e = &v["expected"];
        let query = pairs(&i["query"]);
        let headers = pairs(&i["headers"]);
        let req = sdk_hmac::Request {
            method: s(i, "method"),
            host: s(i, "host"),
            path: s(i, "path"),
            query: &query,
            headers: &headers,
            body: s(i, "body").as_bytes(),
            project_id: i["project_id"].as_str(),
        };
        let sig = sdk_hmac::sign(&req, s(i, "access_key"), s(i, "secret"));
        same(
            name,
            "canonical_request",
            &sig.canonical_request,
            s(e, "canonical_request"),
        );
        same(name, "body_sha256", &sig.body_sha256, s(e, "body_sha256"));
        same(
            name,
            "canonical_uri",
            &sig.canonical_uri,
            s(e, "canonical_uri"),
        );
        same(
            name,
            "canonical_query_string",
            &sig.canonical_query,
            s(e, "canonical_query_string"),
        );
        same(name, "request_uri", &sig.request_uri, s(e, "request_uri"));
        same(
            name,
            "signed_headers",
            &sig.signed_headers,
            s(e, "signed_headers"),
        );
        same(
            name,
            "string_to_sign",
            &sig.string_to_sign,
            s(e, "string_to_sign"),
        );
        same(name, "signature", &sig.signature, s(e, "signature"));
        same(
            name,
            "authorization",
            &sig.authorization,
            s(e, "authorization"),
        );
        assert_eq!(
            sig.headers,
            pairs(&e["request_headers"]),
            "{name}: headers on the wire, in order"
        );
        if v["reproduced"].as_bool() == Some(true) {
            same(
                name,
                "published signature",
                &sig.signature,
                s(&v, "published_signature"),
            );
        }
    }
}
