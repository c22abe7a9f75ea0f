//! Criterion benchmarks of the query engine over 100 000 JSON documents of ~1 KiB:
//! an EQ on an indexed field returning 10 rows, and a full-scan filter on a field without an
//! index. `cargo bench -p roost-bench --bench query`; results go to BENCHMARKS.md.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roost_bench::{Rng, json_value};
use roost_engine::{Database, Options, Query, SetRequest};

const DOCS: u64 = 100_000;
/// Distinct values of `group`: an EQ on it returns DOCS / GROUPS = 10 rows.
const GROUPS: u64 = 10_000;

fn document(i: u64) -> Vec<u8> {
    // ~1 KiB: a few typed fields plus JSON padding from the shared generator.
    let pad = json_value(i, 900);
    format!(
        r#"{{"group":{},"status":"{}","score":{},"owner":{{"team":"t{}"}},"doc":{}}}"#,
        i % GROUPS,
        ["ACTIVE", "INACTIVE", "PENDING"][(i % 3) as usize],
        (i * 7919) % 1000,
        i % 50,
        String::from_utf8(pad).unwrap()
    )
    .into_bytes()
}

fn load(dir: &tempfile::TempDir) -> Database {
    let db = Database::open(
        Options::new(dir.path().join("query.roost"))
            .cache_size_bytes(512 * 1024 * 1024)
            .indexes(["group"]),
    )
    .unwrap();
    let mut next = 0;
    while next < DOCS {
        let end = (next + 1000).min(DOCS);
        let batch = (next..end)
            .map(|i| SetRequest::new(format!("doc-{i:08}"), document(i)))
            .collect();
        for result in db.bulk_set(batch).unwrap() {
            result.unwrap();
        }
        next = end;
    }
    db
}

fn queries(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = load(&dir);
    let mut group = c.benchmark_group("query/100k x 1KiB JSON");
    group.measurement_time(Duration::from_secs(10));
    let mut rng = Rng::new(3);
    group.throughput(Throughput::Elements(1));
    group.bench_function("EQ indexed field (10 rows)", |b| {
        b.iter(|| {
            let query = Query::parse_json(format!(
                r#"{{"filter":{{"EQ":{{"group":{}}}}}}}"#,
                rng.below(GROUPS)
            ))
            .unwrap();
            let page = db.query(&query).unwrap();
            assert_eq!(page.rows.len(), 10);
            page
        })
    });
    group.sample_size(10);
    group.throughput(Throughput::Elements(DOCS));
    group.bench_function("full scan filter (no index)", |b| {
        let query = Query::parse_json(
            r#"{"filter":{"AND":[{"EQ":{"owner.team":"t7"}},{"GT":{"score":990}}]}}"#,
        )
        .unwrap();
        b.iter(|| db.query(&query).unwrap())
    });
    group.finish();
}

criterion_group!(benches, queries);
criterion_main!(benches);
