//! The admission hot path, acquire + release, against two baselines measured
//! in the same run: a bare `AtomicUsize` compare-and-swap gate (the least any
//! limiter can do) and `tower::limit::ConcurrencyLimit`'s semaphore (what a
//! Rust service gets off the shelf).
//!
//! `floodwall_aimd` is the same path with an adaptive limit, so a finished
//! request also hands its sample to the algorithm (with a fixed baseline,
//! so no baseline measurement runs during the bench). `floodwall_tenant_auto`
//! carries a tenant id at the default (automatic) tenant share, with nobody
//! refused: the path every tenant-carrying request takes until the gate
//! fills, which counts nothing. `floodwall_tenant` carries one under a fixed
//! `max_share`, which counts every slot in the tenant table.
//!
//! Run: `cargo bench -p floodwall-core --bench admission`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use floodwall_core::limiter::{LimiterConfig, TenantSpec};
use floodwall_core::{
    AimdConfig, AimdLimit, Baseline, FixedLimit, Limit, Limiter, MonotonicClock, Outcome, Request,
};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const LIMIT: usize = 1024;

fn atomic_gate(counter: &AtomicUsize) -> bool {
    let ok = counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < LIMIT).then_some(n + 1)
        })
        .is_ok();
    if ok {
        counter.fetch_sub(1, Ordering::AcqRel);
    }
    ok
}

fn limiter(max_share: f64) -> Arc<Limiter> {
    limiter_with(max_share, FixedLimit::new(LIMIT))
}

fn limiter_with(max_share: f64, limit: impl Limit) -> Arc<Limiter> {
    let cfg = LimiterConfig {
        tenant: TenantSpec {
            max_share,
            ..TenantSpec::default()
        },
        ..LimiterConfig::default()
    };
    Limiter::new(cfg, limit, Arc::new(MonotonicClock::new())).unwrap()
}

/// AIMD with a fixed baseline: windows close once a second, nothing else
/// needs the algorithm's state. It starts at 3, above the 2 threads' 2 in
/// flight, so every acquire succeeds.
fn aimd() -> AimdLimit {
    AimdLimit::new(AimdConfig {
        baseline: Baseline::Fixed(Duration::from_millis(1)),
        ..AimdConfig::default()
    })
    .unwrap()
}

fn floodwall_once(l: &Arc<Limiter>, r: &Request<'_>) {
    let mut p = l.try_acquire(r).expect("under the limit");
    p.record(Outcome::Success);
    drop(black_box(p));
}

/// Runs `f` `iters` times on each of `threads` threads at once and returns
/// the wall time of the slowest thread.
fn contended(threads: usize, iters: u64, f: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let t = Instant::now();
                    for _ in 0..iters {
                        f();
                    }
                    t.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sem = Arc::new(tokio::sync::Semaphore::new(LIMIT));
    let fw = limiter(TenantSpec::default().max_share);
    let fw_tenant = limiter(0.5);
    let fw_aimd = limiter_with(TenantSpec::default().max_share, aimd());
    let counter = AtomicUsize::new(0);
    let class = fw.class_id("interactive").unwrap();
    let plain = Request {
        class,
        tenant: None,
    };
    let with_tenant = Request {
        class,
        tenant: Some("tenant-42"),
    };
    // tower's ConcurrencyLimit holds a PollSemaphore over this same tokio
    // semaphore; acquiring an owned permit is exactly its hot path.
    let tower_once = |sem: &Arc<tokio::sync::Semaphore>| {
        let p = sem.clone().try_acquire_owned().expect("under the limit");
        drop(black_box(p));
    };
    let _ = tower::limit::ConcurrencyLimitLayer::new(LIMIT);

    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("acquire_release/{threads}_thread"));
        g.bench_function(BenchmarkId::from_parameter("atomic_usize"), |b| {
            b.iter_custom(|n| contended(threads, n, || assert!(atomic_gate(&counter))))
        });
        g.bench_function(BenchmarkId::from_parameter("tower_semaphore"), |b| {
            let _g = rt.enter();
            b.iter_custom(|n| contended(threads, n, || tower_once(&sem)))
        });
        g.bench_function(BenchmarkId::from_parameter("floodwall"), |b| {
            b.iter_custom(|n| contended(threads, n, || floodwall_once(&fw, &plain)))
        });
        g.bench_function(BenchmarkId::from_parameter("floodwall_tenant_auto"), |b| {
            b.iter_custom(|n| contended(threads, n, || floodwall_once(&fw, &with_tenant)))
        });
        g.bench_function(BenchmarkId::from_parameter("floodwall_tenant"), |b| {
            b.iter_custom(|n| contended(threads, n, || floodwall_once(&fw_tenant, &with_tenant)))
        });
        g.bench_function(BenchmarkId::from_parameter("floodwall_aimd"), |b| {
            b.iter_custom(|n| contended(threads, n, || floodwall_once(&fw_aimd, &plain)))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
