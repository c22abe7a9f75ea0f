//! Criterion micro-benchmarks of the embedded engine with 1 KiB values over a preloaded
//! keyspace: get, set, compare-and-swap, bulk get of 100, transaction of 10 ops, and durable
//! / eventual sets from 64 concurrent writers (group commit at work).
//!
//! `cargo bench -p roost-bench --bench engine`; results and conditions go to BENCHMARKS.md.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roost_bench::{Rng, json_value, key};
use roost_engine::{Database, Durability, Operation, Options, SetRequest};

const VALUE_BYTES: usize = 1024;

fn preloaded() -> u64 {
    std::env::var("ROOST_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn open(dir: &tempfile::TempDir, durability: Durability) -> Database {
    let db = Database::open(
        Options::new(dir.path().join("bench.roost"))
            .durability(durability)
            .cache_size_bytes(256 * 1024 * 1024),
    )
    .unwrap();
    let keys = preloaded();
    let mut next = 0;
    while next < keys {
        let end = (next + 1000).min(keys);
        let batch = (next..end)
            .map(|i| SetRequest::new(key(i), json_value(i, VALUE_BYTES)))
            .collect();
        for result in db.bulk_set(batch).unwrap() {
            result.unwrap();
        }
        next = end;
    }
    db
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, Durability::Immediate);
    let keys = preloaded();
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(1));
    let mut rng = Rng::new(1);
    group.bench_function("get/1KiB", |b| {
        b.iter(|| db.get(key(rng.below(keys))).unwrap().unwrap())
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("bulk_get/100x1KiB", |b| {
        b.iter(|| {
            let batch: Vec<String> = (0..100).map(|_| key(rng.below(keys))).collect();
            db.bulk_get(&batch).unwrap()
        })
    });
    group.finish();
}

fn writes(c: &mut Criterion) {
    for (name, durability) in [
        ("immediate", Durability::Immediate),
        ("eventual", Durability::EVENTUAL),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir, durability);
        let keys = preloaded();
        let mut group = c.benchmark_group(format!("write/{name}"));
        group.measurement_time(Duration::from_secs(8));
        group.throughput(Throughput::Elements(1));
        let mut rng = Rng::new(2);
        group.bench_function("set/1KiB/1 writer", |b| {
            b.iter(|| {
                let i = rng.below(keys);
                db.set(SetRequest::new(key(i), json_value(i ^ 1, VALUE_BYTES)))
                    .unwrap()
            })
        });
        group.bench_function("cas/1KiB/1 writer", |b| {
            b.iter(|| {
                let i = rng.below(keys);
                let current = db.get(key(i)).unwrap().unwrap();
                db.set(
                    SetRequest::new(key(i), json_value(i ^ 2, VALUE_BYTES))
                        .etag(current.etag.to_string()),
                )
                .unwrap()
            })
        });
        group.throughput(Throughput::Elements(10));
        group.bench_function("transaction/10 ops/1 writer", |b| {
            b.iter(|| {
                let ops: Vec<Operation> = (0..10)
                    .map(|_| {
                        let i = rng.below(keys);
                        SetRequest::new(key(i), json_value(i ^ 3, VALUE_BYTES)).into()
                    })
                    .collect();
                db.transact(ops).unwrap()
            })
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function("set/1KiB/64 writers", |b| {
            b.iter_custom(|iters| concurrent_sets(&db, keys, iters, 64))
        });
        group.finish();
        db.close().unwrap();
    }
}

/// Runs `iters` sets spread over `writers` threads; returns the wall time.
fn concurrent_sets(db: &Database, keys: u64, iters: u64, writers: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            let share = iters / writers + u64::from(w < iters % writers);
            scope.spawn(move || {
                let mut rng = Rng::new(w + 100);
                for _ in 0..share {
                    let i = rng.below(keys);
                    db.set(SetRequest::new(key(i), json_value(i ^ 4, VALUE_BYTES)))
                        .unwrap();
                }
            });
        }
    });
    start.elapsed()
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(2));
    targets = reads, writes
}
criterion_main!(benches);
