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
    println!(
        "{} of {} cases agree with pt-fingerprint ({} known differences)",
        cases.len() - KNOWN_DIFFERENCES.len(),
        cases.len(),
        KNOWN_DIFFERENCES.len()
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

mod robustness {
    use proptest::prelude::*;
    use session_reaper::fingerprint::fingerprint;

    fn sqlish() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "SELECT",
            "select",
            " ",
            "\n",
            "\t",
            "'",
            "\"",
            "\\",
            "/*",
            "*/",
            "/*!",
            "--",
            "#",
            "(",
            ")",
            ",",
            "?",
            "1",
            "0x",
            "1e",
            "-",
            "+",
            ".",
            "in",
            "values",
            "union",
            "all",
            "limit",
            "order by",
            "asc",
            "null",
            "call",
            "use ",
            "insert into",
            "é",
            "😀",
            "\u{0}",
            "\u{7f}",
            "x'",
            "X'",
            "b'",
            "0X",
            "1E+",
            "E",
            "a",
            "t1",
            ".5",
            "''",
            "-.",
            "ff",
            "AB",
        ]);
        prop::collection::vec(pieces, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20000))]

        #[test]
        fn any_text_fingerprints_without_panicking(sql in "\\PC{0,200}") {
            let _ = fingerprint(&sql);
        }

        /// Statements without `"` or `\\` take one fused pass for quotes, numbers
        /// and signs; it must give exactly what the passes one by one give.
        #[test]
        fn the_fused_pass_agrees_with_the_passes_one_by_one(sql in sqlish()) {
            let sql = sql.replace(['"', '\\'], " ");
            let mut fused = session_reaper::fingerprint::Fingerprinter::default();
            let mut sequential = session_reaper::fingerprint::Fingerprinter::sequential();
            prop_assert_eq!(fused.fingerprint(&sql), sequential.fingerprint(&sql), "{:?}", sql);
        }

        #[test]
        fn any_text_fused_or_not_agrees(sql in "[ -~]{0,120}") {
            let mut fused = session_reaper::fingerprint::Fingerprinter::default();
            let mut sequential = session_reaper::fingerprint::Fingerprinter::sequential();
            prop_assert_eq!(fused.fingerprint(&sql), sequential.fingerprint(&sql), "{:?}", sql);
        }

        #[test]
        fn sql_like_text_fingerprints_without_panicking_and_never_grows_much(sql in sqlish()) {
            let fp = fingerprint(&sql);
            // Rewrites only shorten, except `in(?+)` and `/*repeat union*/` markers.
            prop_assert!(fp.len() <= sql.len() + 32 * (sql.matches('(').count() + 1), "{:?} -> {:?}", sql, fp);
        }
    }

    #[test]
    fn huge_and_truncated_statements_are_fingerprinted() {
        let rows: Vec<String> = (0..200_000)
            .map(|i| format!("({i}, 'name {i}', NOW())"))
            .collect();
        let insert = format!("INSERT INTO t (id, name, at) VALUES {}", rows.join(", "));
        assert!(insert.len() > 5_000_000);
        assert_eq!(
            fingerprint(&insert),
            "insert into t (id, name, at) values (?, ?, now())"
        );
        let cut = &insert[..insert.len() / 2];
        assert!(fingerprint(cut).starts_with("insert into t (id, name, at) values (?, ?, now())"));
        let unions = vec!["SELECT a FROM t WHERE id = 1"; 20_000].join(" UNION ALL ");
        assert_eq!(
            fingerprint(&unions),
            "select a from t where id = ? /*repeat union all*/"
        );
        let binary =
            String::from_utf8_lossy(&[0x53, 0x45, 0xff, 0xfe, 0x27, 0x00, 0x80]).into_owned();
        let _ = fingerprint(&binary);
    }
}
