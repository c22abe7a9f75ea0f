//! Storage faults: a backend that fails writes or fsyncs (EIO, ENOSPC) on command. The failing
//! request gets an error, every later write is refused until the database is reopened (no
//! guessing after a failed fsync), reads keep working, and a reopen recovers with every
//! acknowledged write present.

mod common;

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use common::T0;
use redb::StorageBackend;
use redb::backends::FileBackend;
use roost_engine::{Database, Error, ManualClock, Options, SetRequest};

/// Which call to fail: `0` none, or EIO / ENOSPC on writes or syncs.
#[derive(Debug, Default)]
struct Faults {
    /// Fail the n-th next write (1 = the next one); 0 = none; negative = every write.
    write_countdown: AtomicI64,
    /// Fail the n-th next sync the same way.
    sync_countdown: AtomicI64,
    /// The errno to fail with.
    errno: AtomicU32,
}

impl Faults {
    fn trip(counter: &AtomicI64) -> bool {
        let n = counter.load(Ordering::SeqCst);
        if n < 0 {
            return true;
        }
        if n == 0 {
            return false;
        }
        counter.fetch_sub(1, Ordering::SeqCst) == 1
    }

    fn error(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno.load(Ordering::SeqCst) as i32)
    }
}

#[derive(Debug)]
struct FaultyBackend {
    inner: FileBackend,
    faults: Arc<Faults>,
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        if Faults::trip(&self.faults.write_countdown) {
            return Err(self.faults.error());
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        if Faults::trip(&self.faults.sync_countdown) {
            return Err(self.faults.error());
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if Faults::trip(&self.faults.write_countdown) {
            return Err(self.faults.error());
        }
        self.inner.write(offset, data)
    }
}

const EIO: u32 = 5;
const ENOSPC: u32 = 28;

fn open_faulty(path: &Path, clock: &ManualClock) -> (Database, Arc<Faults>) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    let faults = Arc::new(Faults::default());
    let backend = FaultyBackend {
        inner: FileBackend::new(file).unwrap(),
        faults: Arc::clone(&faults),
    };
    let db = Database::open(
        Options::new(path)
            .clock(Arc::new(clock.clone()))
            .sweep_interval(None)
            .storage_backend(backend),
    )
    .unwrap();
    (db, faults)
}

fn reopen(path: &Path, clock: &ManualClock) -> Database {
    Database::open(
        Options::new(path)
            .clock(Arc::new(clock.clone()))
            .sweep_interval(None),
    )
    .expect("reopen after a storage fault")
}

#[test]
fn a_failed_fsync_poisons_writes_until_reopen_and_loses_nothing_acknowledged() {
    for errno in [EIO, ENOSPC] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faulty.roost");
        let clock = ManualClock::new(T0);
        let (db, faults) = open_faulty(&path, &clock);
        let mut acknowledged = Vec::new();
        for i in 0..20 {
            let key = format!("k{i}");
            acknowledged.push((
                key.clone(),
                db.set(SetRequest::new(key, vec![i as u8; 300])).unwrap(),
            ));
        }
        faults.errno.store(errno, Ordering::SeqCst);
        faults.sync_countdown.store(1, Ordering::SeqCst);
        let err = db
            .set(SetRequest::new("doomed", b"x".to_vec()))
            .unwrap_err();
        assert!(matches!(err, Error::CommitFailed(_)), "{err:?}");
        // The fault is gone, but the engine does not guess: writes stay refused.
        let err = db.set(SetRequest::new("after", b"x".to_vec())).unwrap_err();
        assert!(matches!(err, Error::Poisoned(_)), "{err:?}");
        assert!(err.to_string().contains("reopen"), "{err}");
        let err = db
            .transact(vec![SetRequest::new("after", b"x".to_vec()).into()])
            .unwrap_err();
        assert!(matches!(err, Error::Poisoned(_)), "{err:?}");
        // Reads still answer from committed data.
        assert_eq!(db.get("k3").unwrap().unwrap().value, vec![3u8; 300]);
        // Closing reports the poisoned state instead of marking the file clean.
        assert!(db.close().is_err());
        drop(db);

        let db = reopen(&path, &clock);
        for (key, etag) in &acknowledged {
            assert_eq!(db.get(key).unwrap().unwrap().etag, *etag, "{key}");
        }
        assert_eq!(
            db.get("after").unwrap(),
            None,
            "refused writes never happened"
        );
        let next = db.set(SetRequest::new("fresh", b"y".to_vec())).unwrap();
        assert!(next > acknowledged.last().unwrap().1);
    }
}

#[test]
fn failed_writes_at_random_points_never_lose_acknowledged_data() {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faulty.roost");
        let clock = ManualClock::new(T0);
        let (db, faults) = open_faulty(&path, &clock);
        faults
            .errno
            .store(if round % 2 == 0 { EIO } else { ENOSPC }, Ordering::SeqCst);
        // Fail somewhere within the next writes or syncs.
        let at = 1 + (seed % 40) as i64;
        if round % 3 == 0 {
            faults.sync_countdown.store(1 + at / 8, Ordering::SeqCst);
        } else {
            faults.write_countdown.store(at, Ordering::SeqCst);
        }
        let mut acknowledged = Vec::new();
        let mut failed = false;
        for i in 0..60 {
            let key = format!("r{round}-k{i}");
            let result = if i % 5 == 4 {
                db.transact(vec![
                    SetRequest::new(format!("{key}-a"), vec![1; 200]).into(),
                    SetRequest::new(format!("{key}-b"), vec![2; 200]).into(),
                ])
                .map(|etags| {
                    acknowledged.push((format!("{key}-a"), etags[0].unwrap()));
                    acknowledged.push((format!("{key}-b"), etags[1].unwrap()));
                })
            } else {
                db.set(SetRequest::new(key.clone(), vec![i as u8; 500]))
                    .map(|etag| acknowledged.push((key, etag)))
            };
            match result {
                Ok(()) => assert!(!failed, "round {round}: a write succeeded after a failure"),
                Err(Error::CommitFailed(_) | Error::Poisoned(_)) => failed = true,
                Err(other) => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert!(failed, "round {round}: the fault never fired");
        let _ = db.close();
        drop(db);
        let db = reopen(&path, &clock);
        for (key, etag) in &acknowledged {
            let record = db
                .get(key)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} lost"));
            assert_eq!(record.etag, *etag);
        }
        db.set(SetRequest::new("alive", b"1".to_vec())).unwrap();
    }
}
