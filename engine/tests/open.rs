//! Opening files: new, reopened, not Roost's, corrupted, locked. Never a panic.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};

use common::{T0, open, options};
use std::time::Duration;

use roost_engine::{Database, Durability, Error, ManualClock, Options, SetRequest};

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
    // Once applied, a get reads from redb (its read transaction is kept for the next one).
    while db.writer_metrics().unapplied_bytes > 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(db.get("k").unwrap().unwrap().value, b"v");
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.roost");
    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    // Copies the log's files into `to` (or back beside the database).
    let copy_log = |from: &std::path::Path, to: &std::path::Path| {
        let files: Vec<_> = std::fs::read_dir(from)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("db.roost-wal"))
            .collect();
        for file in &files {
            std::fs::copy(file, to.join(file.file_name().unwrap())).unwrap();
        }
        files.len()
    };
    let db = Database::open(
        roost_engine::Options::new(&path).checkpoint_interval(Duration::from_secs(3600)),
    )
    .unwrap();
    db.set(roost_engine::SetRequest::new("ghost", b"boo".to_vec()))
        .unwrap();
    // Snapshot the log while it holds the write (close removes it).
    assert!(copy_log(dir.path(), &saved) > 0);
    let saved_bytes: u64 = std::fs::read_dir(&saved)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(saved_bytes > 0);
    db.close().unwrap();
    drop(db);
    assert!(roost_engine::log_files(&path).is_empty());

    // Beside its own (cleanly closed) database the log's batch is already checkpointed.
    copy_log(&saved, dir.path());
    let db = Database::open(roost_engine::Options::new(&path)).unwrap();
    assert_eq!(db.get("ghost").unwrap().unwrap().value, b"boo");
    db.close().unwrap();
    drop(db);

    // The database file is deleted; the log is put back beside the new one.
    std::fs::remove_file(&path).unwrap();
    copy_log(&saved, dir.path());
    let db = Database::open(roost_engine::Options::new(&path)).unwrap();
    assert!(
        db.get("ghost").unwrap().is_none(),
        "a deleted database's log was replayed"
    );
}

/// A busy writer's log is checkpointed when what catch-up applied since the last checkpoint
/// reaches `checkpoint_log_bytes` (the idle timer is held off here), and the checkpointed
/// segments go, so the log on disk stays near the limit instead of growing with the writes.
/// With the default size the same writes all stay in the log (the control).
#[test]
fn the_log_is_checkpointed_at_its_configured_size() {
    use std::time::Instant;
    let log_bytes = |path: &std::path::Path| -> u64 {
        roost_engine::log_files(path)
            .iter()
            .filter_map(|f| fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    };
    // Returns the checkpoints counted once catch-up has applied every write, and the log's
    // size then.
    let write = |limit: Option<u64>| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.roost");
        let mut options = Options::new(&path).checkpoint_interval(Duration::from_secs(3600));
        if let Some(bytes) = limit {
            options = options.checkpoint_log_bytes(bytes);
        }
        let db = Database::open(options).unwrap();
        for i in 0..100 {
            db.set(SetRequest::new(format!("key-{i}"), vec![b'x'; 1024]))
                .unwrap();
        }
        // Catch-up runs behind the writes: wait until it has applied them all.
        let started = Instant::now();
        while db.writer_metrics().unapplied_bytes > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "catch-up stalled"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let checkpoints = db.writer_metrics().checkpoint_seconds.count;
        let log = log_bytes(&path);
        db.close().unwrap();
        (checkpoints, log)
    };
    let (checkpoints, log) = write(Some(16 * 1024));
    assert!(
        checkpoints >= 5,
        "100 KiB of writes checkpointed {checkpoints} times"
    );
    // What the last checkpoint left: at most the limit's worth of batches since, plus the
    // open segment's (a quarter of the limit, at least 4 KiB) and one batch.
    assert!(log < 16 * 1024 + 8 * 1024, "the log kept {log} bytes");
    let (checkpoints, log) = write(None);
    assert!(
        checkpoints == 0 && log > 100 * 1024,
        "the default size checkpointed 100 KiB of writes: {checkpoints} times, log {log} bytes"
    );
}

/// The idle checkpoint waits for writes to pause: writes 2 ms apart, with a checkpoint
/// interval far shorter than that, do not meet a checkpoint each (each would hold writes for
/// as long as it takes to write the file); once they stop, the checkpoint runs.
#[test]
fn the_idle_checkpoint_waits_for_writes_to_pause() {
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        Options::new(dir.path().join("db.roost")).checkpoint_interval(Duration::from_millis(1)),
    )
    .unwrap();
    let checkpoints = || db.writer_metrics().checkpoint_seconds.count;
    for i in 0..100 {
        db.set(SetRequest::new(format!("key-{i}"), b"v".to_vec()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let during = checkpoints();
    assert!(during <= 5, "{during} checkpoints during 100 paced writes");
    let stopped = Instant::now();
    while checkpoints() == during {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "no checkpoint after writes stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The checkpoint covered every write: the log holds nothing (its files may keep their
    // size for reuse).
    let log = roost_engine::log_record_bytes(&dir.path().join("db.roost")).unwrap();
    assert_eq!(log, 0);
}

/// Back-pressure before the bound: while the unapplied writes are under half their bound no
/// batch is held back; above half, every batch is (counted in the writer's metrics, not
/// timed); and nothing held back is lost or reordered.
#[test]
fn writes_are_held_back_once_unapplied_writes_pass_half_their_bound() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 256 * 1024;
    let db = Database::open(Options::new(dir.path().join("db.roost")).max_unapplied_bytes(limit))
        .unwrap();
    db.pause_catchup();
    let held = |db: &Database| db.writer_metrics().hold_back_seconds.count;
    // One writer: each write is its own batch, held back (or not) by the fill before it.
    let mut written = 0;
    while db.writer_metrics().unapplied_bytes <= limit / 2 {
        db.set(SetRequest::new(format!("key-{written}"), vec![b'x'; 1024]))
            .unwrap();
        written += 1;
    }
    assert!(written > 50, "{written} writes fill half of 256 KiB");
    assert_eq!(held(&db), 0, "held back below half the bound");
    let below = written;
    while db.writer_metrics().unapplied_bytes + 2 * 1200 < limit {
        db.set(SetRequest::new(format!("key-{written}"), vec![b'y'; 1024]))
            .unwrap();
        written += 1;
    }
    let over_half = (written - below) as u64;
    assert!(over_half > 20, "{over_half}");
    assert_eq!(held(&db), over_half, "writes past half the bound held back");
    assert_eq!(db.writer_metrics().room_wait_seconds.count, 0);
    db.resume_catchup();
    for i in 0..written {
        let record = db.get(format!("key-{i}")).unwrap().expect("written");
        assert_eq!(record.value[0], if i < below { b'x' } else { b'y' });
    }
}

/// Point reads share one redb read transaction until a commit changes the data: every
/// acknowledged write is seen by the next get and bulk get, whichever way it reached redb
/// (the log and catch-up, a direct commit, a commit without fsync).
#[test]
fn point_reads_see_each_write_once_it_is_acknowledged_on_every_write_path() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let paths = [
        ("log", common::options(&dir.path().join("log"), &clock)),
        (
            "no log",
            common::options(&dir.path().join("direct"), &clock).write_ahead_log(false),
        ),
        (
            "eventual",
            common::options(&dir.path().join("eventual"), &clock).durability(
                Durability::Eventual {
                    max_delay: Duration::from_secs(3600),
                },
            ),
        ),
    ];
    for (path, options) in paths {
        std::fs::create_dir_all(options.path().parent().unwrap()).unwrap();
        let db = Database::open(options).unwrap();
        for round in 0..40u32 {
            let value = round.to_be_bytes().to_vec();
            // The read before the write caches the table of the newest commit.
            let before = db.get("k").unwrap().map(|r| r.value);
            assert_eq!(
                before,
                round.checked_sub(1).map(|r| r.to_be_bytes().to_vec())
            );
            db.set(SetRequest::new("k", value.clone())).unwrap();
            db.set(SetRequest::new(format!("other-{round}"), value.clone()))
                .unwrap();
            assert_eq!(
                db.get("k").unwrap().unwrap().value,
                value,
                "{path}, round {round}"
            );
            let bulk = db.bulk_get(&["k", &format!("other-{round}")]).unwrap();
            assert!(
                bulk.iter().all(|r| r.as_ref().unwrap().value == value),
                "{path}, round {round}"
            );
        }
        // With the log, once catch-up has applied everything the overlay is empty and reads
        // come from redb alone: the table cached before catch-up's commits must not serve them.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while db.writer_metrics().unapplied_bytes > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "catch-up never applied"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let last = 39u32.to_be_bytes().to_vec();
        assert_eq!(db.get("k").unwrap().unwrap().value, last, "{path}");
        db.delete(roost_engine::DeleteRequest::new("k")).unwrap();
        assert_eq!(db.get("k").unwrap(), None, "{path}");
        db.close().unwrap();
    }
}

/// The main file's pages reach the disk in paced chunks ahead of the checkpoint: with a
/// cache far too small to hold a checkpoint's pages, redb hands pages to the file between
/// checkpoints, and once more than the backlog (16 chunks) is noted the write-back thread
/// writes chunks back (counted); with the chunk at 0 nothing is written back ahead. Either
/// way every record is there after a reopen.
#[test]
fn the_main_file_is_written_back_in_chunks_ahead_of_checkpoints() {
    const RECORDS: usize = 2000;
    let value = |i: usize| vec![(i % 251) as u8; 16 * 1024];
    let write = |chunk: u64| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.roost");
        let options = || {
            Options::new(&path)
                .cache_size_bytes(1 << 20)
                .writeback_chunk_bytes(chunk)
                .checkpoint_interval(Duration::from_secs(3600))
        };
        let db = Database::open(options()).unwrap();
        for i in 0..RECORDS {
            db.set(SetRequest::new(format!("key-{i}"), value(i)))
                .unwrap();
        }
        let started = std::time::Instant::now();
        while db.writer_metrics().unapplied_bytes > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "catch-up stalled"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let ahead = db.writer_metrics().written_back_bytes;
        db.sync().unwrap();
        let after_sync = db.writer_metrics().written_back_bytes;
        db.close().unwrap();
        let db = Database::open(options()).unwrap();
        for i in (0..RECORDS).step_by(7) {
            let record = db.get(format!("key-{i}")).unwrap().expect("a written key");
            assert_eq!(record.value, value(i));
        }
        db.close().unwrap();
        (ahead, after_sync)
    };
    // 32 MiB of values through a 1 MiB cache: well over the 16 MiB backlog of 1 MiB chunks.
    let (ahead, after_sync) = write(1 << 20);
    assert!(
        ahead >= 1 << 20,
        "32 MiB of writes through a 1 MiB cache wrote back {ahead} bytes before the checkpoint"
    );
    assert!(
        after_sync > ahead,
        "the checkpoint wrote back nothing itself"
    );
    assert_eq!(write(0), (0, 0));
}
