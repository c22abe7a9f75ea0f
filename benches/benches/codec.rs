//! The cost of compression and encryption at rest on 1 KiB JSON documents, measured through
//! the engine's own read and write paths, plus the file size of a JSON corpus with and
//! without compression. `cargo bench -p roost-bench --bench codec`; results in BENCHMARKS.md
//! (which also says which CPU features the build used).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roost_bench::{Rng, json_document};
use roost_engine::{
    CodecOptions, Compression, Database, Durability, EncryptionKey, Options, SetRequest,
};

const DOCS: u64 = 20_000;

fn modes() -> Vec<(&'static str, CodecOptions)> {
    let key = || Some(EncryptionKey::from_bytes([42; 32]));
    vec![
        ("plain", CodecOptions::default()),
        (
            "zstd",
            CodecOptions {
                compression: Some(Compression::default()),
                ..CodecOptions::default()
            },
        ),
        (
            "xchacha20poly1305",
            CodecOptions {
                encryption_key: key(),
                ..CodecOptions::default()
            },
        ),
        (
            "zstd+xchacha20poly1305",
            CodecOptions {
                compression: Some(Compression::default()),
                encryption_key: key(),
                previous_encryption_key: None,
            },
        ),
    ]
}

fn open(dir: &tempfile::TempDir, codec: CodecOptions) -> Database {
    let db = Database::open(
        Options::new(dir.path().join("codec.roost"))
            .durability(Durability::EVENTUAL)
            .cache_size_bytes(256 * 1024 * 1024)
            .codec(codec),
    )
    .unwrap();
    let mut next = 0;
    while next < DOCS {
        let end = (next + 1000).min(DOCS);
        let batch = (next..end)
            .map(|i| SetRequest::new(format!("doc-{i:08}"), json_document(i, 1024)))
            .collect();
        for result in db.bulk_set(batch).unwrap() {
            result.unwrap();
        }
        next = end;
    }
    db.sync().unwrap();
    db
}

/// File size of the same corpus under each mode, measured right after loading it.
fn file_sizes() {
    println!(
        "file size after loading {DOCS} JSON documents of ~1 KiB (eventual durability, synced, closed):"
    );
    for (name, options) in modes() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir, options);
        db.close().unwrap();
        drop(db);
        let bytes = std::fs::metadata(dir.path().join("codec.roost"))
            .unwrap()
            .len();
        println!("  {name:<24} {:>8.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    }
}

fn codec(c: &mut Criterion) {
    file_sizes();
    for (name, options) in modes() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir, options);
        let mut group = c.benchmark_group(format!("codec/{name}"));
        group.measurement_time(Duration::from_secs(5));
        group.throughput(Throughput::Elements(1));
        let mut rng = Rng::new(5);
        group.bench_function("get 1KiB JSON", |b| {
            b.iter(|| {
                db.get(format!("doc-{:08}", rng.below(DOCS)))
                    .unwrap()
                    .unwrap()
            })
        });
        group.bench_function("set 1KiB JSON (eventual)", |b| {
            b.iter(|| {
                let i = rng.below(DOCS);
                db.set(SetRequest::new(
                    format!("doc-{i:08}"),
                    json_document(i, 1024),
                ))
                .unwrap()
            })
        });
        group.finish();
        db.close().unwrap();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
