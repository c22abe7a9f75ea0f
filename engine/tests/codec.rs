//! Compression and encryption at rest: no plaintext in the file, key rotation and rewrite,
//! wrong or missing keys refused at open, tampering detected per record, settings changed
//! later keep old records readable, and every feature keeps working.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::T0;
use roost_engine::{
    CodecOptions, Compression, Database, EncryptionKey, Error, ManualClock, Operation, Options,
    Query, SetRequest,
};

const KEY_A: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
const KEY_B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn key(hex: &str) -> EncryptionKey {
    EncryptionKey::from_hex(hex).unwrap()
}

fn options(dir: &std::path::Path, clock: &ManualClock, codec: CodecOptions) -> Options {
    Options::new(dir.join("sealed.roost"))
        .clock(Arc::new(clock.clone()))
        .sweep_interval(None)
        .codec(codec)
}

fn sealed(primary: &str, previous: Option<&str>, compress: bool) -> CodecOptions {
    CodecOptions {
        compression: compress.then(Compression::default),
        encryption_key: Some(key(primary)),
        previous_encryption_key: previous.map(key),
    }
}

fn marker(i: usize) -> String {
    format!("PLAINTEXT-MARKER-{i:04}-")
}

fn raw_file_contains(path: &std::path::Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A keyspace encrypted under key A holding the 50 marker records.
fn sealed_with_markers() -> (tempfile::TempDir, ManualClock, Database) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = Database::open(options(dir.path(), &clock, sealed(KEY_A, None, false))).unwrap();
    write_markers(&db);
    (dir, clock, db)
}

fn write_markers(db: &Database) {
    for i in 0..50 {
        let value = format!(r#"{{"secret":"{}","n":{i}}}"#, marker(i).repeat(3));
        db.set(SetRequest::new(format!("k{i:02}"), value)).unwrap();
    }
}

#[test]
fn the_write_ahead_log_holds_sealed_records_only() {
    // Checkpoints held off, so every write stays in the log until close.
    let logs_of = |dir: &std::path::Path| roost_engine::log_files(&dir.join("sealed.roost"));
    for (codec, encrypted) in [
        (sealed(KEY_A, None, false), true),
        (sealed(KEY_A, None, true), true),
        (CodecOptions::default(), false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let db = Database::open(
            options(dir.path(), &clock, codec).checkpoint_interval(Duration::from_secs(3600)),
        )
        .unwrap();
        write_markers(&db);
        let logs = logs_of(dir.path());
        let log: u64 = logs
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        assert!(log > 50 * 60, "50 writes are in the log ({log} bytes)");
        for i in [0, 17, 49] {
            assert_eq!(
                logs.iter().any(|f| raw_file_contains(f, &marker(i))),
                !encrypted,
                "marker {i} in the log (encrypted: {encrypted})"
            );
        }
        db.close().unwrap();
        assert!(
            logs_of(dir.path()).is_empty(),
            "close checkpoints and removes the log"
        );
    }
}

#[test]
fn encrypted_keyspaces_leave_no_plaintext_values_in_the_file() {
    for compress in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let db =
            Database::open(options(dir.path(), &clock, sealed(KEY_A, None, compress))).unwrap();
        write_markers(&db);
        db.transact(vec![Operation::Set(SetRequest::new("tx", marker(999)))])
            .unwrap();
        db.close().unwrap();
        drop(db);
        let path = dir.path().join("sealed.roost");
        for i in [0, 17, 49, 999] {
            assert!(
                !raw_file_contains(&path, &marker(i)),
                "marker {i} found in the file"
            );
        }
        // Reading back gives the plaintext.
        let db =
            Database::open(options(dir.path(), &clock, sealed(KEY_A, None, compress))).unwrap();
        assert!(
            String::from_utf8(db.get("k17").unwrap().unwrap().value)
                .unwrap()
                .contains(&marker(17))
        );
    }
    // Control: the same check does see plaintext when encryption is off.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = Database::open(options(dir.path(), &clock, CodecOptions::default())).unwrap();
    write_markers(&db);
    db.close().unwrap();
    drop(db);
    assert!(raw_file_contains(
        &dir.path().join("sealed.roost"),
        &marker(17)
    ));
}

#[test]
fn wrong_or_missing_key_fails_at_open() {
    let (dir, clock, db) = sealed_with_markers();
    db.close().unwrap();
    drop(db);
    let err = Database::open(options(dir.path(), &clock, sealed(KEY_B, None, false))).unwrap_err();
    assert!(matches!(err, Error::EncryptionKey(_)), "{err:?}");
    let err = Database::open(options(dir.path(), &clock, CodecOptions::default())).unwrap_err();
    assert!(matches!(err, Error::EncryptionKey(_)), "{err:?}");
    assert!(err.to_string().contains("encrypted"), "{err}");
    // The right key still opens it.
    let db = Database::open(options(dir.path(), &clock, sealed(KEY_A, None, false))).unwrap();
    assert!(db.get("k00").unwrap().is_some());
}

#[test]
fn rotation_reads_old_records_writes_new_and_rewrite_finishes_it() {
    let (dir, clock, db) = sealed_with_markers();
    let etag = db.get("k05").unwrap().unwrap().etag;
    db.close().unwrap();
    drop(db);

    // New primary, old key as previous: old records read, new writes use the primary.
    let db = Database::open(options(
        dir.path(),
        &clock,
        sealed(KEY_B, Some(KEY_A), false),
    ))
    .unwrap();
    assert!(db.get("k05").unwrap().is_some());
    db.set(SetRequest::new("new", "under B")).unwrap();
    assert_eq!(
        db.rewrite_all().unwrap(),
        50,
        "the 50 records under A are re-encrypted"
    );
    assert_eq!(db.rewrite_all().unwrap(), 0, "nothing left");
    assert_eq!(
        db.get("k05").unwrap().unwrap().etag,
        etag,
        "rewrite keeps etags"
    );
    db.close().unwrap();
    drop(db);

    // The previous key can go.
    let db = Database::open(options(dir.path(), &clock, sealed(KEY_B, None, false))).unwrap();
    for i in 0..50 {
        let record = db.get(format!("k{i:02}")).unwrap().unwrap();
        assert!(
            String::from_utf8(record.value)
                .unwrap()
                .contains(&marker(i))
        );
    }
    assert_eq!(db.get("new").unwrap().unwrap().value, b"under B");
}

#[test]
fn a_record_under_a_key_no_longer_configured_is_a_clear_error() {
    let (dir, clock, db) = sealed_with_markers();
    db.close().unwrap();
    drop(db);
    let db = Database::open(options(
        dir.path(),
        &clock,
        sealed(KEY_B, Some(KEY_A), false),
    ))
    .unwrap();
    db.close().unwrap();
    drop(db);
    // Previous key dropped before any rewrite: the key check is B's now, records are A's.
    let db = Database::open(options(dir.path(), &clock, sealed(KEY_B, None, false))).unwrap();
    let err = db.get("k01").unwrap_err();
    assert!(matches!(err, Error::EncryptionKey(_)), "{err:?}");
    assert!(err.to_string().contains("previousEncryptionKey"), "{err}");
}

#[test]
fn a_tampered_record_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let path = dir.path().join("sealed.roost");
    let db = Database::open(options(dir.path(), &clock, sealed(KEY_A, None, false))).unwrap();
    write_markers(&db);
    db.close().unwrap();
    drop(db);
    {
        // Flip one ciphertext byte of k03 with redb directly.
        use redb::ReadableTable;
        let raw = redb::Database::open(&path).unwrap();
        let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("roost_data");
        let txn = raw.begin_write().unwrap();
        {
            let mut data = txn.open_table(table).unwrap();
            let mut bytes = data.get(&b"k03"[..]).unwrap().unwrap().value().to_vec();
            let last = bytes.len() - 20;
            bytes[last] ^= 0x40;
            data.insert(&b"k03"[..], bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let db = Database::open(options(dir.path(), &clock, sealed(KEY_A, None, false))).unwrap();
    let err = db.get("k03").unwrap_err();
    assert!(
        matches!(err, Error::Integrity { ref key } if key == "k03"),
        "{err:?}"
    );
    assert!(db.get("k02").unwrap().is_some());
    assert!(db.get("k04").unwrap().is_some());
    // Overwriting the damaged record repairs it.
    db.set(SetRequest::new("k03", "fresh")).unwrap();
    assert_eq!(db.get("k03").unwrap().unwrap().value, b"fresh");
}

#[test]
fn compression_can_be_turned_on_and_off_later() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let plain = CodecOptions::default();
    let zstd = CodecOptions {
        compression: Some(Compression::default()),
        ..CodecOptions::default()
    };
    let big = format!(r#"{{"text":"{}"}}"#, "compressible ".repeat(200));
    for (round, codec) in [plain.clone(), zstd.clone(), plain, zstd.clone()]
        .into_iter()
        .enumerate()
    {
        let db = Database::open(options(dir.path(), &clock, codec)).unwrap();
        db.set(SetRequest::new(format!("r{round}"), big.clone()))
            .unwrap();
        for earlier in 0..=round {
            assert_eq!(
                db.get(format!("r{earlier}")).unwrap().unwrap().value,
                big.as_bytes()
            );
        }
        db.close().unwrap();
    }
    // Rewrite under compression compresses the two records written without it.
    let db = Database::open(options(dir.path(), &clock, zstd)).unwrap();
    assert_eq!(db.rewrite_all().unwrap(), 2);
}

#[test]
fn every_feature_works_on_an_encrypted_compressed_keyspace() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db =
        Database::open(options(dir.path(), &clock, sealed(KEY_A, None, true)).indexes(["status"]))
            .unwrap();
    let doc = |status: &str, n: usize| {
        format!(
            r#"{{"status":"{status}","n":{n},"pad":"{}"}}"#,
            "p".repeat(400)
        )
    };
    let e1 = db.set(SetRequest::new("a", doc("ACTIVE", 1))).unwrap();
    db.set(SetRequest::new("b", doc("INACTIVE", 2)).ttl_in_seconds("10"))
        .unwrap();
    db.transact(vec![
        SetRequest::new("c", doc("ACTIVE", 3)).into(),
        SetRequest::new("a", doc("ACTIVE", 4))
            .etag(e1.to_string())
            .into(),
    ])
    .unwrap();
    let err = db
        .set(SetRequest::new("a", doc("X", 0)).etag(e1.to_string()))
        .unwrap_err();
    assert!(matches!(err, Error::EtagMismatch { .. }));
    let page = db
        .query(
            &Query::parse_json(
                r#"{"filter":{"EQ":{"status":"ACTIVE"}},"sort":[{"key":"n","order":"DESC"}]}"#,
            )
            .unwrap(),
        )
        .unwrap();
    let keys: Vec<&[u8]> = page.rows.iter().map(|r| r.key.as_slice()).collect();
    assert_eq!(keys, [&b"a"[..], b"c"]);
    assert_eq!(page.rows[0].value, doc("ACTIVE", 4).as_bytes());
    clock.advance_ms(10_000);
    assert_eq!(db.get("b").unwrap(), None);
    assert_eq!(db.sweep_expired().unwrap(), 1);
}

#[test]
fn secrets_never_appear_in_debug_output_or_errors() {
    let options = Options::new("x.roost").codec(sealed(KEY_A, Some(KEY_B), true));
    let shown = format!("{options:?}");
    for secret in [KEY_A, KEY_B, &KEY_A[..16], &KEY_B[..16]] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let bad = format!("{}zz", &KEY_A[..62]);
    let err = EncryptionKey::from_hex(&bad).unwrap_err().to_string();
    assert!(!err.contains(&KEY_A[..16]), "{err}");
}

#[test]
fn stale_index_entries_of_unreadable_records_never_change_answers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = |codec: CodecOptions| {
        Database::open(options(dir.path(), &clock, codec).indexes(["n"])).unwrap()
    };
    let db = open(sealed(KEY_A, None, false));
    db.set(SetRequest::new("k", r#"{"n":1}"#)).unwrap();
    db.set(SetRequest::new("j", r#"{"n":3}"#)).unwrap();
    db.close().unwrap();
    drop(db);
    // Rotate, then drop the previous key before any rewrite: the old records are unreadable.
    let db = open(sealed(KEY_B, Some(KEY_A), false));
    db.close().unwrap();
    drop(db);
    let db = open(sealed(KEY_B, None, false));
    // Overwriting an unreadable record leaves its old index entry (n = 1) behind.
    db.set(SetRequest::new("k", r#"{"n":5}"#)).unwrap();
    db.set(SetRequest::new("j", r#"{"n":6}"#)).unwrap();
    let keys = |text: &str| -> Vec<Vec<u8>> {
        db.query(&Query::parse_json(text).unwrap())
            .unwrap()
            .rows
            .into_iter()
            .map(|r| r.key)
            .collect()
    };
    assert_eq!(
        keys(r#"{"sort":[{"key":"n"}]}"#),
        [b"k".to_vec(), b"j".to_vec()]
    );
    assert_eq!(
        keys(r#"{"sort":[{"key":"n","order":"DESC"}]}"#),
        [b"j".to_vec(), b"k".to_vec()]
    );
    assert!(keys(r#"{"filter":{"EQ":{"n":1}}}"#).is_empty());
    assert_eq!(keys(r#"{"filter":{"EQ":{"n":5}}}"#), [b"k".to_vec()]);
}

/// A bulk read visited record by record (`bulk_get_each`, the values borrowed, opened from
/// compression and encryption) sees what `bulk_get` returns: the keys as asked, in order,
/// `None` for missing and expired ones, values, etags, expiries and content types.
#[test]
fn bulk_get_each_visits_what_bulk_get_returns() {
    for codec in [
        CodecOptions::default(),
        CodecOptions {
            compression: Some(Compression::default()),
            ..CodecOptions::default()
        },
        sealed(KEY_A, None, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let db = Database::open(options(dir.path(), &clock, codec)).unwrap();
        db.set(SetRequest::new("plain", "x".repeat(3000))).unwrap();
        db.set(SetRequest::new("typed", b"{}".to_vec()).content_type("application/json"))
            .unwrap();
        db.set(SetRequest::new("short", b"gone".to_vec()).ttl_in_seconds("1"))
            .unwrap();
        db.set(SetRequest::new("long", b"stays".to_vec()).ttl_in_seconds("60"))
            .unwrap();
        clock.advance_ms(1000);
        let keys = ["typed", "missing", "plain", "short", "long", "typed"];
        let expected = db.bulk_get(&keys).unwrap();
        let values: Vec<Option<Vec<u8>>> = expected
            .iter()
            .map(|r| r.as_ref().map(|r| r.value.clone()))
            .collect();
        assert_eq!(
            values,
            [
                Some(b"{}".to_vec()),
                None,
                Some("x".repeat(3000).into_bytes()),
                None,
                Some(b"stays".to_vec()),
                Some(b"{}".to_vec()),
            ]
        );
        let mut seen = Vec::new();
        db.bulk_get_each(&keys, |key, record| {
            seen.push((key.to_vec(), record.map(|r| r.to_record())));
        })
        .unwrap();
        let asked: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        assert_eq!(
            seen.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            asked
        );
        assert_eq!(
            seen.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
            expected
        );
        assert_eq!(
            expected[0].as_ref().unwrap().content_type.as_deref(),
            Some("application/json")
        );
        assert!(expected[4].as_ref().unwrap().expires_at_unix_ms.is_some());
    }
}
