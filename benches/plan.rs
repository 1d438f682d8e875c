//! `plan` over a busy primary's process list: 1k, 10k and 100k sessions with 50
//! policies (the goal: 100k × 50 under 20 ms on one core), and 100k sessions with
//! 1, 10 and 50 policies.
//!
//!   cargo bench --bench plan

mod workload;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use session_reaper::core::plan::plan;
use session_reaper::core::policy::Policy;
use session_reaper::core::protected::Protected;

fn protected() -> Protected {
    Protected {
        accounts: vec!["rdsAdmin".to_owned()],
        max_snapshot_age: Some(Duration::from_secs(5)),
    }
}

fn bench_plan(c: &mut Criterion) {
    // The daemon's allocator settings (src/allocator.rs), so that this measures
    // what the daemon runs.
    session_reaper::allocator::tune();
    let all = workload::policies(50);
    let protected = protected();
    let mut group = c.benchmark_group("plan");
    group.sample_size(30);
    for n in [1_000, 10_000, 100_000] {
        let snap = workload::snapshot(n, 42);
        let refs: Vec<&Policy> = all.iter().collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("50 policies", n), &snap, |b, snap| {
            b.iter(|| black_box(plan(black_box(snap), &refs, &protected, workload::now())))
        });
    }
    let snap = workload::snapshot(100_000, 42);
    for p in [1, 10] {
        let refs: Vec<&Policy> = all.iter().take(p).collect();
        group.throughput(Throughput::Elements(100_000));
        group.bench_with_input(
            BenchmarkId::new(format!("{p} policies"), 100_000),
            &snap,
            |b, snap| {
                b.iter(|| black_box(plan(black_box(snap), &refs, &protected, workload::now())))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
