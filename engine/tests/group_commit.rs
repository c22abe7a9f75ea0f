//! Group commit: concurrent requests share one transaction, each checked against the state
//! the requests before it left, none affecting its neighbours; CAS under contention is exact.

mod common;

use std::time::{Duration, Instant};

use common::{T0, open};
use roost_engine::{
    Database, DeleteRequest, Durability, Error, ManualClock, MismatchReason, Operation, SetRequest,
};

/// Waits until `n` requests are queued behind the held writer.
fn wait_for_queue(db: &Database, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.queued_writes() < n {
        assert!(Instant::now() < deadline, "requests never queued");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn conflicting_cas_in_one_batch_lets_exactly_one_win() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    let etag = db.set(SetRequest::new("counter", b"0".to_vec())).unwrap();
    let batches_before = db.stats().batches;

    let hold = db.hold_writer();
    let mut handles = Vec::new();
    for i in 0..10 {
        let db = db.clone();
        handles.push(std::thread::spawn(move || {
            db.set(SetRequest::new("counter", format!("{i}")).etag(etag.to_string()))
        }));
    }
    // Neighbours in the same batch that must not be affected by the failures.
    let bystander = {
        let db = db.clone();
        std::thread::spawn(move || {
            db.transact(vec![
                SetRequest::new("x", b"1".to_vec()).into(),
                SetRequest::new("y", b"1".to_vec()).into(),
            ])
        })
    };
    // The writer takes the first request, then waits on the hold; the other ten queue behind.
    wait_for_queue(&db, 10);
    drop(hold);

    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    bystander.join().unwrap().unwrap();
    let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(
                    err,
                    Error::EtagMismatch {
                        reason: MismatchReason::EtagDiffers,
                        ..
                    }
                ),
                "{err:?}"
            );
        }
    }
    let record = db.get("counter").unwrap().unwrap();
    assert_eq!(record.etag, *winners[0].as_ref().unwrap());
    assert_eq!(db.get("x").unwrap().unwrap().value, b"1");
    assert_eq!(db.get("y").unwrap().unwrap().value, b"1");
    // All eleven requests were committed by one transaction.
    assert_eq!(db.stats().batches, batches_before + 1);
    assert!(db.stats().largest_batch >= 11, "{:?}", db.stats());
}

#[test]
fn a_failed_transaction_in_a_batch_leaves_its_neighbours_applied() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    db.set(SetRequest::new("taken", b"v".to_vec())).unwrap();
    let batches_before = db.stats().batches;
    let hold = db.hold_writer();
    let spawn = |f: fn(&Database) -> Result<(), Error>| {
        let db = db.clone();
        std::thread::spawn(move || f(&db))
    };
    let before = spawn(|db| db.set(SetRequest::new("before", b"1".to_vec())).map(|_| ()));
    let failing = spawn(|db| {
        db.transact(vec![
            SetRequest::new("partial", b"1".to_vec()).into(),
            DeleteRequest::new("before").into(),
            SetRequest::new("taken", b"w".to_vec()).first_write().into(),
        ])
        .map(|_| ())
    });
    let after = spawn(|db| {
        db.transact(vec![Operation::Set(
            SetRequest::new("after", b"1".to_vec()).first_write(),
        )])
        .map(|_| ())
    });
    // At most one request can be with the (held) writer; the others are queued.
    wait_for_queue(&db, 2);
    drop(hold);
    before.join().unwrap().unwrap();
    let err = failing.join().unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Transaction { index: 2, .. }),
        "{err:?}"
    );
    after.join().unwrap().unwrap();
    assert_eq!(db.stats().batches, batches_before + 1);
    assert_eq!(db.get("partial").unwrap(), None);
    assert_eq!(db.get("before").unwrap().unwrap().value, b"1");
    assert_eq!(db.get("taken").unwrap().unwrap().value, b"v");
    assert_eq!(db.get("after").unwrap().unwrap().value, b"1");
}

/// 32 tasks × 500 compare-and-swap increments over 4 keys, retrying on mismatch, through the
/// async API with durable commits: the totals are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_increments_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(
        roost_engine::Options::new(dir.path().join("cas.roost")).durability(Durability::Immediate),
    )
    .unwrap()
    .into_async();
    const TASKS: usize = 32;
    const INCREMENTS: usize = 500;
    const KEYS: usize = 4;
    for k in 0..KEYS {
        db.set(SetRequest::new(format!("counter{k}"), b"0".to_vec()))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("counter{}", t % KEYS);
            let mut retries = 0u64;
            for _ in 0..INCREMENTS {
                loop {
                    let record = db.get(key.clone()).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&record.value).unwrap().parse().unwrap();
                    let next = SetRequest::new(key.clone(), (n + 1).to_string())
                        .etag(record.etag.to_string());
                    match db.set(next).await {
                        Ok(_) => break,
                        Err(Error::EtagMismatch { .. }) => retries += 1,
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                }
            }
            retries
        }));
    }
    let mut retries = 0;
    for task in tasks {
        retries += task.await.unwrap();
    }
    let per_key = (TASKS / KEYS * INCREMENTS) as u64;
    for k in 0..KEYS {
        let record = db.get(format!("counter{k}")).await.unwrap().unwrap();
        assert_eq!(
            std::str::from_utf8(&record.value)
                .unwrap()
                .parse::<u64>()
                .unwrap(),
            per_key
        );
    }
    let stats = db.blocking().stats();
    eprintln!("retries {retries}, {stats:?}");
    db.close().await.unwrap();
}

#[test]
fn eventual_durability_acknowledges_and_persists_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = Database::open(
        common::options(dir.path(), &clock).durability(Durability::Eventual {
            max_delay: Duration::from_millis(5),
        }),
    )
    .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| {
                        db.set(SetRequest::new(format!("t{t}-{i}"), vec![t as u8; 64]))
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let etags: Vec<Vec<_>> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    db.sync().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    db.close().unwrap();
    drop(db);
    let db = open(dir.path(), &clock);
    for (t, etags) in etags.iter().enumerate() {
        for (i, etag) in etags.iter().enumerate() {
            let record = db.get(format!("t{t}-{i}")).unwrap().unwrap();
            assert_eq!(record.etag, *etag);
        }
    }
}

/// Point reads take `block_in_place` on a multi-thread runtime and the blocking pool on a
/// current-thread one (where `block_in_place` would panic): both answer the same.
#[test]
fn async_point_reads_work_on_both_runtime_flavors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(roost_engine::Options::new(dir.path().join("rt.roost")))
        .unwrap()
        .into_async();
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    current.block_on(async {
        db.set(SetRequest::new("k", b"v".to_vec())).await.unwrap();
    });
    for runtime in [&current, &multi] {
        let db = db.clone();
        let (one, many) = runtime.block_on(async move {
            // From a spawned task (a worker thread) as a server would call it.
            tokio::spawn(async move {
                let one = db.get("k").await.unwrap().unwrap().value;
                let many = db
                    .bulk_get(vec![b"k".to_vec(), b"missing".to_vec()])
                    .await
                    .unwrap();
                (one, many.iter().map(Option::is_some).collect::<Vec<_>>())
            })
            .await
            .unwrap()
        });
        assert_eq!(one, b"v");
        assert_eq!(many, [true, false]);
    }
    // From `block_on` itself on the multi-thread runtime (not a worker thread).
    assert!(multi.block_on(db.get("k")).unwrap().is_some());
}
