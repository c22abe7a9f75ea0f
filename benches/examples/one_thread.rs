//! Embedded, one thread: Roost's blocking `Database` API against SQLite with Dapr's
//! `state.sqlite` schema and statements, both called directly from one thread with no async
//! runtime in between (as an embedded application calls either library). Get of a random
//! preloaded key and durable last-write set (Roost `Immediate`, SQLite WAL with
//! `synchronous = FULL`), 1 KiB JSON-like values, rounds alternating between the two stores.
//!
//! `cargo run --release -p roost-bench --example one_thread -- [seconds per run] [keys] [rounds]
//! [Roost cache sizes in MiB, comma-separated]` (defaults 5, 100000, 3, the engine's default
//! cache). Several cache sizes open one Roost keyspace each, measured in the same rounds.

use std::time::{Duration, Instant};

use roost_bench::harness::targets::sqlite::{SqliteSync, create_schema, database_path};
use roost_bench::{Rng, json_value, key};
use roost_engine::{Database, Options, SetRequest};

const VALUE_SIZE: usize = 1024;

struct Run {
    ops: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let at = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[at]
    }
}

/// Calls `op` on random keys for `duration`.
fn measure(duration: Duration, keys: u64, seed: u64, mut op: impl FnMut(&str, u64)) -> Run {
    let mut rng = Rng::new(seed);
    let mut latencies = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed() < duration {
        let i = rng.below(keys);
        let k = key(i);
        let began = Instant::now();
        op(&k, i);
        latencies.push(began.elapsed());
        ops += 1;
    }
    Run {
        ops,
        latencies,
        elapsed: start.elapsed(),
    }
}

fn report(name: &str, workload: &str, round: usize, mut run: Run) -> f64 {
    let (p50, p99) = (run.percentile(0.50), run.percentile(0.99));
    println!(
        "| {round} | {workload} | {name} | {:.0} | {:.1} µs | {:.1} µs |",
        run.rate(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    run.rate()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let duration = Duration::from_secs(arg(0, 5));
    let keys = arg(1, 100_000);
    let rounds = arg(2, 3) as usize;
    let caches: Vec<usize> = match args.get(3) {
        Some(list) => list
            .split(',')
            .map(|mib| mib.parse().expect("cache sizes are MiB numbers"))
            .collect(),
        None => vec![roost_engine::DEFAULT_CACHE_BYTES >> 20],
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let items: Vec<(String, Vec<u8>)> = (0..keys)
        .map(|i| (key(i), json_value(i, VALUE_SIZE)))
        .collect();

    let roosts: Vec<(String, Database)> = caches
        .iter()
        .map(|&mib| {
            let options = Options::new(dir.path().join(format!("roost-{mib}.redb")))
                .cache_size_bytes(mib << 20);
            let db = Database::open(options).expect("open roost");
            for chunk in items.chunks(10_000) {
                let requests = chunk
                    .iter()
                    .map(|(k, v)| SetRequest::new(k.as_str(), v.clone()))
                    .collect();
                for result in db.bulk_set(requests).expect("preload roost") {
                    result.expect("preload roost");
                }
            }
            (format!("roost, cache {mib} MiB"), db)
        })
        .collect();
    let sqlite_path = database_path(dir.path());
    create_schema(&sqlite_path).expect("sqlite schema");
    let mut sqlite = SqliteSync::connect(&sqlite_path, 7).expect("open sqlite");
    sqlite.load(&items).expect("preload sqlite");

    // Both stores answer the same thing before anything is timed.
    let probe = key(keys / 2);
    let from_sqlite = sqlite.get(&probe).expect("sqlite get").expect("preloaded");
    for (_, roost) in &roosts {
        let from_roost = roost.get(&probe).expect("roost get").expect("preloaded");
        assert_eq!(from_roost.value, from_sqlite.0);
    }

    println!(
        "one thread, {keys} keys of {VALUE_SIZE} B, {} s per run\n",
        duration.as_secs()
    );
    println!("| round | workload | store | ops/s | p50 | p99 |");
    println!("| --- | --- | --- | ---: | ---: | ---: |");
    // Per store: the sum over rounds of get and of durable-set rates.
    let mut sums = vec![[0.0f64; 2]; roosts.len() + 1];
    for round in 1..=rounds {
        let seed = round as u64;
        for (n, (name, roost)) in roosts.iter().enumerate() {
            sums[n][0] += report(
                name,
                "get",
                round,
                measure(duration, keys, seed, |k, _| {
                    std::hint::black_box(roost.get(k).expect("roost get"));
                }),
            );
        }
        sums[roosts.len()][0] += report(
            "sqlite",
            "get",
            round,
            measure(duration, keys, seed, |k, _| {
                std::hint::black_box(sqlite.get(k).expect("sqlite get"));
            }),
        );
        for (n, (name, roost)) in roosts.iter().enumerate() {
            sums[n][1] += report(
                name,
                "durable set",
                round,
                measure(duration, keys, seed, |k, i| {
                    roost
                        .set(SetRequest::new(k, json_value(i + 1, VALUE_SIZE)))
                        .expect("roost set");
                }),
            );
        }
        sums[roosts.len()][1] += report(
            "sqlite",
            "durable set",
            round,
            measure(duration, keys, seed, |k, i| {
                sqlite
                    .set(k, &json_value(i + 1, VALUE_SIZE))
                    .expect("sqlite set");
            }),
        );
    }
    println!();
    let sqlite_sums = sums[roosts.len()];
    for (n, (name, roost)) in roosts.iter().enumerate() {
        println!(
            "mean of rounds, {name}: get {:.2}x SQLite, durable set {:.2}x SQLite",
            sums[n][0] / sqlite_sums[0],
            sums[n][1] / sqlite_sums[1]
        );
        roost.close().expect("close roost");
    }
}
