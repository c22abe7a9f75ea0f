//! Dapr state semantics of the engine: values, etags, concurrency, bulk, transactions, TTL.

mod common;

use common::{T0, open};
use roost_engine::{
    Concurrency, DeleteRequest, Error, ManualClock, MismatchReason, Operation, SetRequest,
};

fn setup() -> (tempfile::TempDir, ManualClock, roost_engine::Database) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    (dir, clock, db)
}

fn mismatch<T: std::fmt::Debug>(result: &Result<T, Error>) -> MismatchReason {
    match result {
        Err(Error::EtagMismatch { reason, .. }) => *reason,
        other => panic!("expected an etag mismatch, got {other:?}"),
    }
}

#[test]
fn values_round_trip_byte_identical() {
    let (_dir, _clock, db) = setup();
    // -1 as a protobuf int64 varint: ten bytes with high bits set.
    let varint = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one-byte", vec![0x01]),
        ("json-empty-string", b"\"\"".to_vec()),
        ("not-utf8", vec![0xc3, 0x28, 0x00, 0xfe, 0xff]),
        ("varint", varint),
        ("json", br#"{"message":"test","n":15}"#.to_vec()),
        ("emoji", "\"⏱️\"".as_bytes().to_vec()),
    ];
    for (key, value) in &cases {
        db.set(SetRequest::new(*key, value.clone())).unwrap();
    }
    for (key, value) in &cases {
        let record = db.get(key).unwrap().expect("present");
        assert_eq!(&record.value, value, "{key}");
    }
}

#[test]
fn missing_key_reads_as_none() {
    let (_dir, _clock, db) = setup();
    assert_eq!(db.get("nope").unwrap(), None);
}

#[test]
fn content_type_is_kept() {
    let (_dir, _clock, db) = setup();
    db.set(SetRequest::new("a", b"{}".to_vec()).content_type("application/json"))
        .unwrap();
    db.set(SetRequest::new("b", b"x".to_vec()).content_type(""))
        .unwrap();
    assert_eq!(
        db.get("a").unwrap().unwrap().content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(db.get("b").unwrap().unwrap().content_type, None);
}

#[test]
fn etags_are_decimal_and_strictly_increasing() {
    let (_dir, _clock, db) = setup();
    let mut last = 0;
    for i in 0..50 {
        let key = format!("k{}", i % 3);
        let etag = db.set(SetRequest::new(key.clone(), b"v".to_vec())).unwrap();
        let text = etag.to_string();
        assert!(text.bytes().all(|b| b.is_ascii_digit()), "{text}");
        assert!(etag.sequence() > last);
        last = etag.sequence();
        assert_eq!(db.get(&key).unwrap().unwrap().etag, etag);
    }
}

#[test]
fn etag_sequence_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    let first = db.set(SetRequest::new("k", b"1".to_vec())).unwrap();
    db.close().unwrap();
    drop(db);
    let db = open(dir.path(), &clock);
    assert_eq!(db.get("k").unwrap().unwrap().etag, first);
    let second = db.set(SetRequest::new("other", b"2".to_vec())).unwrap();
    assert!(second > first, "{second} must follow {first}");
}

#[test]
fn no_aba_after_delete_and_rewrite() {
    let (_dir, _clock, db) = setup();
    let first = db.set(SetRequest::new("k", b"v".to_vec())).unwrap();
    db.delete(DeleteRequest::new("k")).unwrap();
    let second = db.set(SetRequest::new("k", b"v".to_vec())).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        mismatch(&db.set(SetRequest::new("k", b"w".to_vec()).etag(first.to_string()))),
        MismatchReason::EtagDiffers
    );
    assert_eq!(
        mismatch(&db.delete(DeleteRequest::new("k").etag(first.to_string()))),
        MismatchReason::EtagDiffers
    );
}

#[test]
fn set_with_matching_etag_updates_and_changes_the_etag() {
    let (_dir, _clock, db) = setup();
    let first = db.set(SetRequest::new("k", b"1".to_vec())).unwrap();
    let second = db
        .set(SetRequest::new("k", b"2".to_vec()).etag(first.to_string()))
        .unwrap();
    assert_ne!(first, second);
    let record = db.get("k").unwrap().unwrap();
    assert_eq!((record.value, record.etag), (b"2".to_vec(), second));
}

#[test]
fn empty_etag_means_no_etag() {
    let (_dir, _clock, db) = setup();
    db.set(SetRequest::new("k", b"1".to_vec())).unwrap();
    db.set(SetRequest::new("k", b"2".to_vec()).etag(""))
        .unwrap();
    db.delete(DeleteRequest::new("k").etag("")).unwrap();
    assert_eq!(db.get("k").unwrap(), None);
    db.delete(DeleteRequest::new("never").etag("")).unwrap();
}

#[test]
fn non_numeric_etag_is_invalid_and_writes_nothing() {
    let (_dir, _clock, db) = setup();
    let etag = db.set(SetRequest::new("k", b"1".to_vec())).unwrap();
    for bad in [
        "bad-etag",
        "e9b9e142-74b1-4a2e-8e90-3f4ffeea2e70",
        "-5",
        "1.0",
    ] {
        assert!(
            matches!(
                db.set(SetRequest::new("k", b"2".to_vec()).etag(bad)),
                Err(Error::InvalidEtag { .. })
            ),
            "{bad}"
        );
        assert!(matches!(
            db.delete(DeleteRequest::new("k").etag(bad)),
            Err(Error::InvalidEtag { .. })
        ));
    }
    assert_eq!(db.get("k").unwrap().unwrap().etag, etag);
}

#[test]
fn numeric_wrong_etag_is_a_mismatch() {
    let (_dir, _clock, db) = setup();
    let etag = db.set(SetRequest::new("k", b"1".to_vec())).unwrap();
    assert_eq!(
        mismatch(&db.set(SetRequest::new("k", b"2".to_vec()).etag("9999999"))),
        MismatchReason::EtagDiffers
    );
    assert_eq!(
        mismatch(&db.delete(DeleteRequest::new("k").etag("9999999"))),
        MismatchReason::EtagDiffers
    );
    assert_eq!(db.get("k").unwrap().unwrap().etag, etag);
}

#[test]
fn etag_on_missing_key_is_a_mismatch() {
    let (_dir, _clock, db) = setup();
    assert_eq!(
        mismatch(&db.set(SetRequest::new("missing", b"1".to_vec()).etag("1"))),
        MismatchReason::NoLiveRecord
    );
    assert_eq!(
        mismatch(&db.delete(DeleteRequest::new("missing").etag("1"))),
        MismatchReason::NoLiveRecord
    );
    assert_eq!(db.get("missing").unwrap(), None);
}

#[test]
fn etag_on_expired_key_is_a_mismatch() {
    let (_dir, clock, db) = setup();
    let etag = db
        .set(SetRequest::new("k", b"1".to_vec()).ttl_in_seconds("2"))
        .unwrap();
    clock.advance_ms(2000);
    assert_eq!(
        mismatch(&db.set(SetRequest::new("k", b"2".to_vec()).etag(etag.to_string()))),
        MismatchReason::NoLiveRecord
    );
    assert_eq!(
        mismatch(&db.delete(DeleteRequest::new("k").etag(etag.to_string()))),
        MismatchReason::NoLiveRecord
    );
}

#[test]
fn first_write_without_etag() {
    let (_dir, clock, db) = setup();
    // New key: succeeds; live key: refused.
    db.set(SetRequest::new("k", b"1".to_vec()).first_write())
        .unwrap();
    assert_eq!(
        mismatch(&db.set(SetRequest::new("k", b"2".to_vec()).first_write())),
        MismatchReason::KeyExists
    );
    assert_eq!(
        mismatch(&db.set(SetRequest::new("k", b"2".to_vec()).first_write().etag(""))),
        MismatchReason::KeyExists
    );
    assert_eq!(db.get("k").unwrap().unwrap().value, b"1");
    // Deleted key: succeeds again.
    db.delete(DeleteRequest::new("k")).unwrap();
    db.set(SetRequest::new("k", b"3".to_vec()).first_write())
        .unwrap();
    // Expired key: succeeds.
    db.set(SetRequest::new("t", b"1".to_vec()).ttl_in_seconds("1"))
        .unwrap();
    clock.advance_ms(1000);
    db.set(SetRequest::new("t", b"2".to_vec()).first_write())
        .unwrap();
    assert_eq!(db.get("t").unwrap().unwrap().value, b"2");
}

#[test]
fn first_write_with_etag_checks_the_etag() {
    // Dapr conformance F2.
    let (_dir, _clock, db) = setup();
    let old = db.set(SetRequest::new("k", b"1".to_vec())).unwrap();
    let new = db
        .set(
            SetRequest::new("k", b"2".to_vec())
                .etag(old.to_string())
                .first_write(),
        )
        .unwrap();
    assert_ne!(old, new);
    assert_eq!(
        mismatch(
            &db.set(
                SetRequest::new("k", b"3".to_vec())
                    .etag(old.to_string())
                    .first_write()
            )
        ),
        MismatchReason::EtagDiffers
    );
}

#[test]
fn delete_rules() {
    let (_dir, _clock, db) = setup();
    // Missing key without etag: fine.
    db.delete(DeleteRequest::new("missing")).unwrap();
    // First-write delete without etag: refused on a live key, fine on a missing one.
    db.set(SetRequest::new("k", b"1".to_vec())).unwrap();
    assert_eq!(
        mismatch(&db.delete(DeleteRequest::new("k").concurrency(Concurrency::FirstWrite))),
        MismatchReason::KeyExists
    );
    db.delete(DeleteRequest::new("missing").concurrency(Concurrency::FirstWrite))
        .unwrap();
    // Correct etag deletes.
    let etag = db.get("k").unwrap().unwrap().etag;
    db.delete(DeleteRequest::new("k").etag(etag.to_string()))
        .unwrap();
    assert_eq!(db.get("k").unwrap(), None);
}

#[test]
fn bad_keys_and_oversized_values_are_refused() {
    let (_dir, _clock, db) = setup();
    let limits = *db.limits();
    assert!(matches!(
        db.set(SetRequest::new("", b"1".to_vec())),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(db.get(""), Err(Error::InvalidArgument(_))));
    let long_key = vec![b'k'; limits.max_key_bytes + 1];
    assert!(matches!(
        db.set(SetRequest::new(long_key, b"1".to_vec())),
        Err(Error::InvalidArgument(_))
    ));
    let big = vec![0u8; limits.max_value_bytes + 1];
    assert!(matches!(
        db.set(SetRequest::new("k", big)),
        Err(Error::InvalidArgument(_))
    ));
    let at_limit = vec![7u8; limits.max_value_bytes];
    db.set(SetRequest::new("k", at_limit.clone())).unwrap();
    assert_eq!(db.get("k").unwrap().unwrap().value, at_limit);
    assert!(matches!(
        db.set(SetRequest::new("k", b"1".to_vec()).content_type("x".repeat(256))),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn bulk_get_returns_one_result_per_key_in_request_order() {
    let (_dir, clock, db) = setup();
    db.set(SetRequest::new("a", b"1".to_vec())).unwrap();
    db.set(SetRequest::new("c", b"3".to_vec())).unwrap();
    db.set(SetRequest::new("e", b"5".to_vec()).ttl_in_seconds("1"))
        .unwrap();
    clock.advance_ms(1000);
    let keys = ["c", "doesnotexist", "a", "e", "c"];
    let results = db.bulk_get(&keys).unwrap();
    let values: Vec<Option<Vec<u8>>> = results.into_iter().map(|r| r.map(|r| r.value)).collect();
    assert_eq!(
        values,
        vec![
            Some(b"3".to_vec()),
            None,
            Some(b"1".to_vec()),
            None,
            Some(b"3".to_vec())
        ]
    );
}

#[test]
fn bulk_set_reports_per_key_outcomes_and_applies_the_rest() {
    // Dapr conformance E5 and E6.
    let (_dir, _clock, db) = setup();
    let results = db
        .bulk_set(vec![
            SetRequest::new("k2", b"first".to_vec()),
            SetRequest::new("k3", b"first".to_vec()),
        ])
        .unwrap();
    let e2 = *results[0].as_ref().unwrap();
    let e3 = *results[1].as_ref().unwrap();
    let results = db
        .bulk_set(vec![
            SetRequest::new("k2", b"second".to_vec()).etag("9999999"),
            SetRequest::new("k3", b"second".to_vec()).etag(e3.to_string()),
            SetRequest::new("k4", b"second".to_vec()).etag("not-a-number"),
            SetRequest::new("", b"second".to_vec()),
        ])
        .unwrap();
    assert_eq!(mismatch(&results[0]), MismatchReason::EtagDiffers);
    let new_e3 = *results[1].as_ref().unwrap();
    assert!(matches!(results[2], Err(Error::InvalidEtag { .. })));
    assert!(matches!(results[3], Err(Error::InvalidArgument(_))));
    let k2 = db.get("k2").unwrap().unwrap();
    assert_eq!((k2.value, k2.etag), (b"first".to_vec(), e2));
    let k3 = db.get("k3").unwrap().unwrap();
    assert_eq!((k3.value, k3.etag), (b"second".to_vec(), new_e3));
    assert_ne!(new_e3, e3);
    assert_eq!(db.get("k4").unwrap(), None);
}

#[test]
fn bulk_delete_reports_per_key_outcomes() {
    // Dapr conformance E9 and E10.
    let (_dir, _clock, db) = setup();
    let e2 = db.set(SetRequest::new("k2", b"v".to_vec())).unwrap();
    let e3 = db.set(SetRequest::new("k3", b"v".to_vec())).unwrap();
    let results = db
        .bulk_delete(vec![
            DeleteRequest::new("k2").etag(e2.to_string()),
            DeleteRequest::new("k3").etag("9999999"),
            DeleteRequest::new("never"),
        ])
        .unwrap();
    assert!(results[0].is_ok());
    assert_eq!(mismatch(&results[1]), MismatchReason::EtagDiffers);
    assert!(results[2].is_ok());
    assert_eq!(db.get("k2").unwrap(), None);
    assert_eq!(db.get("k3").unwrap().unwrap().etag, e3);
}

#[test]
fn transaction_order_scenario() {
    // Dapr conformance §1.3 row 14.
    let (_dir, _clock, db) = setup();
    db.set(SetRequest::new("key1", b"\"value1\"".to_vec()))
        .unwrap();
    db.delete(DeleteRequest::new("key2")).unwrap();
    db.delete(DeleteRequest::new("key3")).unwrap();
    db.transact(vec![
        DeleteRequest::new("key1").into(),
        SetRequest::new("key2", b"\"value2\"".to_vec()).into(),
        DeleteRequest::new("key2").into(),
        SetRequest::new("key3", b"\"value3\"".to_vec()).into(),
    ])
    .unwrap();
    assert_eq!(db.get("key1").unwrap(), None);
    assert_eq!(db.get("key2").unwrap(), None);
    assert_eq!(db.get("key3").unwrap().unwrap().value, b"\"value3\"");
}

#[test]
fn transaction_groups_apply_and_one_op_transactions_work() {
    // Dapr conformance rows 12 and 13.
    let (_dir, _clock, db) = setup();
    let etags = db
        .transact(vec![
            SetRequest::new("trx-int", b"123".to_vec()).into(),
            SetRequest::new("trx-bytes", vec![1]).into(),
            SetRequest::new("trx-to-be-deleted", b"\"x\"".to_vec()).into(),
        ])
        .unwrap();
    assert!(etags.iter().all(Option::is_some));
    db.transact(vec![
        SetRequest::new("trx-struct", br#"{"message":"test"}"#.to_vec()).into(),
        DeleteRequest::new("trx-to-be-deleted").into(),
    ])
    .unwrap();
    assert_eq!(db.get("trx-to-be-deleted").unwrap(), None);
    assert_eq!(db.get("trx-bytes").unwrap().unwrap().value, vec![1]);
    db.transact(vec![SetRequest::new("solo", b"1".to_vec()).into()])
        .unwrap();
    db.transact(vec![DeleteRequest::new("solo").into()])
        .unwrap();
    db.transact(vec![DeleteRequest::new("non-existent-key").into()])
        .unwrap();
    assert_eq!(db.get("solo").unwrap(), None);
    assert_eq!(db.transact(vec![]).unwrap(), vec![]);
}

#[test]
fn failed_transaction_applies_nothing_and_names_the_operation() {
    let (_dir, _clock, db) = setup();
    let etag = db.set(SetRequest::new("a", b"1".to_vec())).unwrap();
    let err = db
        .transact(vec![
            SetRequest::new("a", b"2".to_vec())
                .etag(etag.to_string())
                .into(),
            SetRequest::new("b", b"2".to_vec()).into(),
            // The first op changed a's etag, so the old etag no longer matches.
            DeleteRequest::new("a").etag(etag.to_string()).into(),
        ])
        .unwrap_err();
    match &err {
        Error::Transaction { index: 2, source } => assert!(matches!(
            **source,
            Error::EtagMismatch {
                reason: MismatchReason::EtagDiffers,
                ..
            }
        )),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("operation 2"), "{err}");
    let a = db.get("a").unwrap().unwrap();
    assert_eq!((a.value, a.etag), (b"1".to_vec(), etag));
    assert_eq!(db.get("b").unwrap(), None);

    // A malformed op is refused before anything is queued, with its index too.
    let err = db
        .transact(vec![
            SetRequest::new("c", b"1".to_vec()).into(),
            SetRequest::new("d", b"1".to_vec())
                .ttl_in_seconds("foo")
                .into(),
        ])
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Transaction { index: 1, ref source } if matches!(**source, Error::InvalidTtl { .. })
    ));
    assert_eq!(db.get("c").unwrap(), None);
}

#[test]
fn later_transaction_operations_see_earlier_ones() {
    let (_dir, _clock, db) = setup();
    let etags = db
        .transact(vec![
            SetRequest::new("k", b"1".to_vec()).first_write().into(),
            SetRequest::new("k", b"2".to_vec()).into(),
        ])
        .unwrap();
    let second = etags[1].unwrap();
    // An etag produced inside the transaction is usable by a later operation of it.
    let err = db
        .transact(vec![
            SetRequest::new("n", b"1".to_vec()).into(),
            SetRequest::new("n", b"x".to_vec()).first_write().into(),
        ])
        .unwrap_err();
    assert!(matches!(err, Error::Transaction { index: 1, .. }));
    db.transact(vec![
        SetRequest::new("k", b"3".to_vec())
            .etag(second.to_string())
            .into(),
        Operation::Delete(DeleteRequest::new("k")),
        SetRequest::new("k", b"4".to_vec()).first_write().into(),
    ])
    .unwrap();
    assert_eq!(db.get("k").unwrap().unwrap().value, b"4");
    assert_eq!(db.get("n").unwrap(), None);
}

#[test]
fn transaction_op_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let limits = roost_engine::Limits {
        max_transaction_ops: 2,
        ..Default::default()
    };
    let db =
        roost_engine::Database::open(common::options(dir.path(), &clock).limits(limits)).unwrap();
    let ops: Vec<Operation> = (0..3)
        .map(|i| SetRequest::new(format!("k{i}"), b"v".to_vec()).into())
        .collect();
    assert!(matches!(db.transact(ops), Err(Error::InvalidArgument(_))));
}

#[test]
fn scan_pages_through_a_prefix_skipping_expired_records() {
    let (_dir, clock, db) = setup();
    for i in 0..25 {
        db.set(SetRequest::new(format!("app||k{i:02}"), format!("{i}")))
            .unwrap();
    }
    db.set(SetRequest::new("app||k05", "short").ttl_in_seconds("1"))
        .unwrap();
    db.set(SetRequest::new("other||k", "x")).unwrap();
    db.set(SetRequest::new("app|", "not in the prefix"))
        .unwrap();
    clock.advance_ms(1000);
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = db.scan("app||", after.as_deref(), 10).unwrap();
        assert!(page.records.len() <= 10);
        seen.extend(
            page.records
                .iter()
                .map(|(k, _)| String::from_utf8(k.clone()).unwrap()),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25)
        .filter(|i| *i != 5)
        .map(|i| format!("app||k{i:02}"))
        .collect();
    assert_eq!(seen, expected);
    let all = db.scan("", None, 0).unwrap();
    assert_eq!(all.records.len(), 26);
    assert!(all.next.is_none());
    let stats = db.keyspace_stats().unwrap();
    assert_eq!((stats.records, stats.expired_pending), (27, 1));
    db.sweep_expired().unwrap();
    assert_eq!(db.keyspace_stats().unwrap().expired_pending, 0);
}

#[test]
fn export_then_import_recreates_the_keyspace_exactly() {
    let (_dir, clock, db) = setup();
    db.set(SetRequest::new("a", vec![0xff, 0x00]).content_type("application/octet-stream"))
        .unwrap();
    db.set(SetRequest::new("b", "\"x\"").ttl_in_seconds("60"))
        .unwrap();
    db.set(SetRequest::new("c", "")).unwrap();
    let exported = db.scan("", None, 0).unwrap().records;
    let dir2 = tempfile::tempdir().unwrap();
    let copy = open(dir2.path(), &clock);
    let records = exported
        .iter()
        .map(|(key, r)| roost_engine::ImportRecord {
            key: key.clone(),
            value: r.value.clone(),
            etag: r.etag.sequence(),
            expires_at_unix_ms: r.expires_at_unix_ms,
            content_type: r.content_type.clone(),
        })
        .collect();
    assert_eq!(copy.import(records).unwrap(), 3);
    assert_eq!(copy.scan("", None, 0).unwrap().records, exported);
    // Etag checks behave the same, and new etags never collide with imported ones.
    let b = &exported[1].1;
    let next = copy
        .set(SetRequest::new("b", "\"y\"").etag(b.etag.to_string()))
        .unwrap();
    assert!(
        next.sequence()
            > exported
                .iter()
                .map(|(_, r)| r.etag.sequence())
                .max()
                .unwrap()
    );
    clock.advance_ms(60_000);
    assert_eq!(copy.get("c").unwrap().unwrap().value, b"");
}

/// Requests of up to 16 operations track the keys they wrote in a vector, larger ones in a
/// map: both must see a request's own earlier operations and write each key's last state.
#[test]
fn small_and_large_transactions_see_their_own_writes_alike() {
    let (_dir, _clock, db) = setup();
    for n in [5usize, 16, 17, 40] {
        let key = |i: usize| format!("t{n}-{}", i % 3);
        let ops: Vec<Operation> = (0..n)
            .map(|i| SetRequest::new(key(i), i.to_string().into_bytes()).into())
            .collect();
        db.transact(ops).unwrap();
        for k in 0..3 {
            let last = (0..n).rev().find(|i| i % 3 == k).unwrap();
            let got = db.get(key(k)).unwrap().unwrap();
            assert_eq!(got.value, last.to_string().into_bytes(), "{n} ops, key {k}");
        }
        // A first write of a new key that the same request wrote before fails, at its own
        // index, and nothing of the request is applied.
        let fresh = |i: usize| format!("u{n}-{}", i % 3);
        let mut ops: Vec<Operation> = (0..n - 1)
            .map(|i| SetRequest::new(fresh(i), b"new".to_vec()).into())
            .collect();
        ops.push(
            SetRequest::new(fresh(0), b"first".to_vec())
                .first_write()
                .into(),
        );
        let err = db.transact(ops).unwrap_err();
        assert!(
            matches!(err, Error::Transaction { index, .. } if index == n - 1),
            "{n} ops: {err:?}"
        );
        for k in 0..3 {
            assert_eq!(db.get(fresh(k)).unwrap(), None, "{n} ops");
        }
    }
}
