//! `Database::snapshot_to`: a consistent copy of a live keyspace, taken while a writer keeps
//! writing, that opens and answers exactly as the original did at one point in time — values,
//! etags, expiries, content types, indexes — stays encrypted, and continues the etag sequence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use roost_engine::{
    CodecOptions, Compression, Database, EncryptionKey, Filter, Options, Query, SetRequest,
};

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn options(path: &std::path::Path) -> Options {
    Options::new(path)
        .sweep_interval(None)
        .indexes(["city"])
        .codec(CodecOptions {
            compression: Some(Compression::default()),
            encryption_key: Some(EncryptionKey::from_hex(KEY).unwrap()),
            previous_encryption_key: None,
        })
}

#[test]
fn a_snapshot_under_load_is_consistent_complete_and_still_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(options(&dir.path().join("live.roost"))).unwrap();
    for i in 0..300 {
        let mut request = SetRequest::new(
            format!("base-{i:03}"),
            format!(
                r#"{{"city":"{}","marker":"SECRET-MARKER-{i}"}}"#,
                ["Oslo", "Lima"][i % 2]
            ),
        )
        .content_type("application/json");
        if i % 3 == 0 {
            request = request.ttl_in_seconds("3600");
        }
        db.set(request).unwrap();
    }

    // A writer keeps writing `live-N` in order while the snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let db = db.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                db.set(SetRequest::new(format!("live-{n:06}"), b"x".to_vec()))
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    while db.get("live-000020").unwrap().is_none() {
        std::thread::yield_now();
    }
    let snapshot_path = dir.path().join("snapshot.roost");
    let stats = db.snapshot_to(&snapshot_path).unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(stats.records >= 320 && stats.bytes > 0, "{stats:?}");
    assert!(
        db.snapshot_to(&snapshot_path).is_err(),
        "an existing file is never overwritten"
    );

    let raw = std::fs::read(&snapshot_path).unwrap();
    assert!(
        !raw.windows(13).any(|w| w == b"SECRET-MARKER"),
        "the snapshot keeps values encrypted"
    );

    let copy = Database::open(options(&snapshot_path)).unwrap();
    // Every base record, exactly.
    for i in 0..300 {
        let key = format!("base-{i:03}");
        assert_eq!(copy.get(&key).unwrap(), db.get(&key).unwrap(), "{key}");
    }
    // A point in time: the live keys form a prefix 0..k of what the writer wrote.
    let live = copy.scan("live-", None, 0).unwrap().records;
    let k = live.len();
    assert!(k >= 21 && (k as u32) <= written, "{k} of {written}");
    for (i, (key, record)) in live.iter().enumerate() {
        assert_eq!(key, format!("live-{i:06}").as_bytes());
        assert_eq!(Some(record.clone()), db.get(key).unwrap());
    }
    // Indexes came along: an indexed query answers the same on both.
    let query = Query {
        filter: Filter::from_operator("EQ", br#"{"city":"Lima"}"#).unwrap(),
        ..Query::default()
    };
    let keys = |page: roost_engine::QueryPage| -> Vec<Vec<u8>> {
        page.rows.into_iter().map(|r| r.key).collect()
    };
    assert_eq!(keys(copy.query(&query).unwrap()).len(), 150);
    assert_eq!(
        keys(copy.query(&query).unwrap()),
        keys(db.query(&query).unwrap())
    );
    // The etag sequence continues above everything in the snapshot.
    let highest = live.last().unwrap().1.etag;
    let next = copy.set(SetRequest::new("after", b"1".to_vec())).unwrap();
    assert!(next > highest, "{next} > {highest}");
    // Without the key, the snapshot does not open.
    copy.close().unwrap();
    drop(copy);
    let err = Database::open(Options::new(&snapshot_path).sweep_interval(None)).unwrap_err();
    assert!(
        matches!(err, roost_engine::Error::EncryptionKey(_)),
        "{err}"
    );
}
