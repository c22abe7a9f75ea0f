//! Opening files: new, reopened, not Roost's, corrupted, locked. Never a panic.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};

use common::{T0, open, options};
use roost_engine::{Database, Error, ManualClock, Options, SetRequest};

#[test]
fn random_bytes_are_not_a_roost_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.roost");
    let bytes: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(&path, bytes).unwrap();
    let err = Database::open(Options::new(&path)).unwrap_err();
    assert!(matches!(err, Error::NotARoostDatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.roost"), "{err}");
}

#[test]
fn a_text_file_is_not_a_roost_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    fs::write(&path, "hello, this is not a database\n").unwrap();
    let err = Database::open(Options::new(&path)).unwrap_err();
    assert!(matches!(err, Error::NotARoostDatabase { .. }), "{err:?}");
}

#[test]
fn a_directory_is_not_a_roost_database() {
    let dir = tempfile::tempdir().unwrap();
    let err = Database::open(Options::new(dir.path())).unwrap_err();
    assert!(matches!(err, Error::NotARoostDatabase { .. }), "{err:?}");
}

#[test]
fn a_foreign_redb_file_is_not_a_roost_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("users");
            txn.open_table(table).unwrap().insert("a", &1).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Database::open(Options::new(&path)).unwrap_err();
    match &err {
        Error::NotARoostDatabase { detail, .. } => assert!(detail.contains("users"), "{detail}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_file_without_create_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Database::open(Options::new(dir.path().join("none.roost")).create_if_missing(false))
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let _db = open(dir.path(), &clock);
    let err = Database::open(options(dir.path(), &clock)).unwrap_err();
    assert!(matches!(err, Error::AlreadyOpen { .. }), "{err:?}");
}

#[test]
fn close_releases_the_file_and_refuses_later_calls() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    let clone = db.clone();
    db.set(SetRequest::new("k", b"v".to_vec())).unwrap();
    db.close().unwrap();
    assert!(matches!(clone.get("k"), Err(Error::Closed)));
    assert!(matches!(
        clone.set(SetRequest::new("k", b"v".to_vec())),
        Err(Error::Closed)
    ));
    let reopened = open(dir.path(), &clock);
    assert_eq!(reopened.get("k").unwrap().unwrap().value, b"v");
}

/// A closed database of 200 records of 512 bytes, to damage.
fn sample_database() -> (tempfile::TempDir, ManualClock, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let path = dir.path().join("test.roost");
    let db = open(dir.path(), &clock);
    for i in 0..200 {
        db.set(SetRequest::new(format!("key{i}"), vec![i as u8; 512]))
            .unwrap();
    }
    db.close().unwrap();
    (dir, clock, path)
}

/// Overwrites every page after the header with garbage and checks that opening fails with an
/// error (not a panic, not silently wrong data).
#[test]
fn a_corrupted_file_gives_a_clear_error() {
    let (dir, clock, path) = sample_database();
    let len = fs::metadata(&path).unwrap().len();
    let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut offset = 4096;
    while offset + 64 < len {
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&[0xA5; 64]).unwrap();
        offset += 1024;
    }
    file.sync_all().unwrap();
    drop(file);
    let result = std::panic::catch_unwind(|| Database::open(options(dir.path(), &clock)));
    let result = result.expect("opening a corrupted file must not panic");
    let err = result.expect_err("a corrupted file must not open");
    assert!(
        matches!(err, Error::Corrupted(_) | Error::NotARoostDatabase { .. }),
        "{err:?}"
    );
}

#[test]
fn a_truncated_file_gives_a_clear_error() {
    let (dir, clock, path) = sample_database();
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let result = std::panic::catch_unwind(|| Database::open(options(dir.path(), &clock)))
        .expect("opening a truncated file must not panic");
    let err = result.expect_err("a truncated file must not open");
    assert!(
        matches!(
            err,
            Error::Corrupted(_) | Error::NotARoostDatabase { .. } | Error::Storage(_)
        ),
        "{err:?}"
    );
}

/// A write-ahead log is replayed into its own database only: left beside a deleted database
/// file, it must not resurrect records into a new one; beside its database it is replayed.
#[test]
fn a_log_is_replayed_only_into_its_own_database() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.roost");
    let wal = dir.path().join("db.roost-wal");
    let saved = dir.path().join("saved-wal");
    let db = Database::open(
        roost_engine::Options::new(&path).checkpoint_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    db.set(roost_engine::SetRequest::new("ghost", b"boo".to_vec()))
        .unwrap();
    // Snapshot the log while it holds the write (close empties it).
    std::fs::copy(&wal, &saved).unwrap();
    assert!(std::fs::metadata(&saved).unwrap().len() > 0);
    db.close().unwrap();
    drop(db);

    // Beside its own (cleanly closed) database the log's batch is already checkpointed.
    std::fs::copy(&saved, &wal).unwrap();
    let db = Database::open(roost_engine::Options::new(&path)).unwrap();
    assert_eq!(db.get("ghost").unwrap().unwrap().value, b"boo");
    db.close().unwrap();
    drop(db);

    // The database file is deleted; the log is put back beside the new one.
    std::fs::remove_file(&path).unwrap();
    std::fs::copy(&saved, &wal).unwrap();
    let db = Database::open(roost_engine::Options::new(&path)).unwrap();
    assert!(
        db.get("ghost").unwrap().is_none(),
        "a deleted database's log was replayed"
    );
}
