//! The JSON Schemas under `schema/` are what `session-reaper schema` prints, their
//! keys are exactly the keys the config reader accepts, and every shipped config and
//! policy validates against them.

use std::collections::BTreeSet;

use serde_json::Value;
use session_reaper::config::{CONFIG_KEYS, LIMIT_KEYS, MATCH_KEYS, POLICY_KEYS, TARGET_KEYS};
use session_reaper::providers::{REGISTRY, cloud};

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

#[test]
fn the_committed_schemas_are_current() {
    for (name, text) in session_reaper::schema::files() {
        let committed =
            std::fs::read_to_string(format!("{}/schema/{name}", root())).unwrap_or_default();
        assert!(
            committed == text,
            "schema/{name} is out of date: run `session-reaper schema {} > schema/{name}`",
            name.split('.').next().unwrap()
        );
    }
}

fn keys(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_schemas_name_exactly_the_keys_the_reader_accepts() {
    let config = serde_json::to_value(session_reaper::schema::config_schema()).unwrap();
    let defs = &config["$defs"];
    assert_eq!(keys(&config), set(CONFIG_KEYS));
    let variants = defs["Target"]["oneOf"].as_array().unwrap();
    assert_eq!(variants.len(), REGISTRY.len(), "one schema per provider");
    for spec in REGISTRY {
        let variant = variants
            .iter()
            .find(|v| v["properties"]["provider"]["const"] == spec.name)
            .unwrap_or_else(|| panic!("no schema for provider {}", spec.name));
        let mut expected = set(TARGET_KEYS);
        expected.extend(set(spec.keys));
        assert_eq!(keys(variant), expected, "provider {}", spec.name);
        if spec.keys.contains(&"endpoint") {
            assert!(
                cloud::COMMON_KEYS.iter().all(|k| spec.keys.contains(k)),
                "{}",
                spec.name
            );
        }
    }
    assert_eq!(keys(&defs["AuditRotation"]), set(&["max_size", "keep"]));
    let policy = serde_json::to_value(session_reaper::schema::policy_schema()).unwrap();
    assert_eq!(keys(&policy), set(POLICY_KEYS));
    assert_eq!(keys(&policy["$defs"]["MatchBlock"]), set(MATCH_KEYS));
    assert_eq!(keys(&policy["$defs"]["LimitsBlock"]), set(LIMIT_KEYS));
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn validate(name: &str, files: &[String]) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/schema/{name}", root())).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    for f in files {
        let doc = yaml(f);
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{f} does not validate against schema/{name}: {errors:#?}"
        );
        println!("{f}: valid against schema/{name}");
        let first = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            first.starts_with("# yaml-language-server: $schema="),
            "{f} names its schema for editors"
        );
    }
}

#[test]
fn every_shipped_policy_and_config_validates() {
    let policies: Vec<String> = std::fs::read_dir(format!("{}/policies", root()))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    assert!(policies.len() >= 4);
    validate("policy.schema.json", &policies);
    validate(
        "config.schema.json",
        &[
            format!("{}/examples/quickstart.yaml", root()),
            format!("{}/deploy/config.yaml", root()),
        ],
    );
}

#[test]
fn the_schema_rejects_what_check_rejects() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/schema/policy.schema.json", root())).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let bad: Value = serde_saphyr::from_str(
        "name: p\nschedule: every 5s\nmode: enforced\nmatch:\n  comand: Sleep\n  min_time: 300\n",
    )
    .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&bad)
        .map(|e| e.instance_path().to_string())
        .collect();
    assert!(errors.iter().any(|p| p == "/mode"), "{errors:?}");
    assert!(errors.iter().any(|p| p.starts_with("/match")), "{errors:?}");
}
