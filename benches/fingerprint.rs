//! Fingerprinting throughput on a corpus of process-list SQL (at least 40 MB, so
//! that Perl's start-up does not count), against Percona's `pt-fingerprint` on the
//! same corpus when it is installed (the goal: 20× its throughput on one core).
//!
//!   cargo bench --bench fingerprint

mod workload;

use std::hint::black_box;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};
use session_reaper::fingerprint::Fingerprinter;

const CORPUS_BYTES: usize = 40 << 20;

/// pt-fingerprint over the corpus written as it reads it (`;\n` after each
/// statement), timed from spawn to exit: its MB/s, best of three.
fn pt_fingerprint(corpus: &[String]) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("fingerprint-corpus.sql");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("corpus file"));
    let mut bytes = 0;
    for s in corpus {
        bytes += s.len();
        file.write_all(s.as_bytes()).unwrap();
        file.write_all(b";\n").unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let status = Command::new("pt-fingerprint")
            .arg(&path)
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => best = best.min(started.elapsed().as_secs_f64()),
            _ => {
                println!(
                    "pt-fingerprint is not installed (apt-get install percona-toolkit): no anchor"
                );
                return;
            }
        }
    }
    // Ours the same way: best of three passes over the whole corpus.
    let mut fp = Fingerprinter::default();
    let mut ours = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut sink = 0usize;
        for s in corpus {
            sink += fp.fingerprint(black_box(s)).len();
        }
        black_box(sink);
        ours = ours.min(started.elapsed().as_secs_f64());
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "corpus: {} statements, {:.1} MB ({})",
        corpus.len(),
        mb,
        path.display()
    );
    println!(
        "pt-fingerprint: {:.2} s, {:.1} MB/s (best of 3, spawn to exit)",
        best,
        mb / best
    );
    println!(
        "session-reaper: {:.3} s, {:.1} MB/s (best of 3 passes, one core): {:.1}x pt-fingerprint",
        ours,
        mb / ours,
        best / ours
    );
}

fn bench_fingerprint(c: &mut Criterion) {
    let corpus = workload::sql_corpus(CORPUS_BYTES, 3);
    let bytes: usize = corpus.iter().map(String::len).sum();
    // The anchor runs with the whole bench, not when another one is picked by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if filter.is_empty()
        || filter
            .iter()
            .any(|f| "fingerprint/corpus".contains(f.as_str()))
    {
        pt_fingerprint(&corpus);
    }
    let mut group = c.benchmark_group("fingerprint");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("corpus", |b| {
        let mut fp = Fingerprinter::default();
        b.iter(|| {
            let mut n = 0usize;
            for s in &corpus {
                n += fp.fingerprint(black_box(s)).len();
            }
            n
        })
    });
    let one = &corpus[..1000];
    let one_bytes: usize = one.iter().map(String::len).sum();
    group.sample_size(50);
    group.throughput(Throughput::Bytes(one_bytes as u64));
    group.bench_function("1000 statements", |b| {
        let mut fp = Fingerprinter::default();
        b.iter(|| {
            let mut n = 0usize;
            for s in one {
                n += fp.fingerprint(black_box(s)).len();
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, bench_fingerprint);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
