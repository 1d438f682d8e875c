//! Every row of Percona's pt-fingerprint corpus (`tests/data/fingerprint_cases.tsv`,
//! copied from `shared/fingerprint/`) must fingerprint exactly as pt-fingerprint did.

use session_reaper::fingerprint::{Fingerprinter, fingerprint};

/// Rows where we knowingly differ from pt-fingerprint, with the reason. Empty: we agree
/// with every row of the corpus.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

struct Case {
    id: String,
    sql: String,
    expected: String,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fingerprint_cases.tsv"
    ))
    .expect("the corpus is part of the repository");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id\tsql\tfingerprint"), "header");
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 3, "row {line:?} has {} fields", fields.len());
            let decode = |s: &str| -> String {
                serde_json::from_str(s).unwrap_or_else(|e| panic!("row {}: {e}", fields[0]))
            };
            Case {
                id: fields[0].to_owned(),
                sql: decode(fields[1]),
                expected: decode(fields[2]),
            }
        })
        .collect()
}

#[test]
fn agrees_with_pt_fingerprint_on_every_case() {
    let cases = cases();
    assert!(cases.len() >= 233, "the corpus has {} rows", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let got = fingerprint(&case.sql);
        let known = KNOWN_DIFFERENCES.iter().any(|(id, _)| *id == case.id);
        if (got != case.expected) != known {
            failures.push(format!(
                "{}: {:?}\n   expected {:?}\n   got      {:?}",
                case.id, case.sql, case.expected, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_reused_fingerprinter_gives_the_same_answers() {
    let mut fp = Fingerprinter::default();
    for case in cases().iter().rev() {
        assert_eq!(
            fp.fingerprint(&case.sql),
            fingerprint(&case.sql),
            "{}",
            case.id
        );
    }
}
