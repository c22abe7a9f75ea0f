//! Crash harness over the socket: `roost serve` under concurrent load (sets, CAS, bulk sets,
//! transactions, TTL writes) is SIGKILLed at random moments and restarted without `Init`, as
//! daprd would leave it. After each restart: every acknowledged write is present with the
//! acknowledged etag, no transaction is half applied, counters are at least their acknowledged
//! value, and the keyspace opens without error.
//!
//! `ROOST_CRASH_KILLS` sets the number of kills (default 5; the long run uses 200).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

#[derive(Default)]
struct Acks {
    sets: Vec<(String, String, Vec<u8>)>,
    begun: Vec<String>,
    transactions: HashMap<String, ()>,
    counters: HashMap<String, (u64, String)>,
}

fn value_for(key: &str) -> Vec<u8> {
    format!(r#"{{"key":"{key}","pad":"{}"}}"#, "v".repeat(200)).into_bytes()
}

async fn load(mut daprd: Daprd, worker: usize, round: usize, acks: Arc<Mutex<Acks>>) {
    let counter = format!("counter-{worker}");
    for i in 0.. {
        let tag = format!("r{round}-w{worker}-{i}");
        let outcome = match i % 5 {
            0 => {
                let key = format!("{tag}-set");
                daprd
                    .set(set(&key, value_for(&key)))
                    .await
                    .map(|()| vec![key])
            }
            1 => {
                let key = format!("{tag}-ttl");
                daprd
                    .set(with_metadata(
                        set(&key, value_for(&key)),
                        &[("ttlInSeconds", "3600")],
                    ))
                    .await
                    .map(|()| vec![key])
            }
            2 => {
                let keys: Vec<String> = (0..3).map(|j| format!("{tag}-bulk{j}")).collect();
                daprd
                    .bulk_set(keys.iter().map(|k| set(k, value_for(k))).collect())
                    .await
                    .map(|()| keys)
            }
            3 => {
                acks.lock().unwrap().begun.push(tag.clone());
                let ops = ["a", "b", "c"]
                    .iter()
                    .map(|p| {
                        let key = format!("{tag}-tx-{p}");
                        Op::Set(set(&key, value_for(&key)))
                    })
                    .collect();
                match daprd.transact(ops).await {
                    Ok(()) => {
                        acks.lock().unwrap().transactions.insert(tag.clone(), ());
                        Ok(Vec::new())
                    }
                    Err(e) => Err(e),
                }
            }
            _ => {
                // Compare-and-swap increment of this worker's counter.
                let current = match daprd.get(&counter).await {
                    Ok(r) => r,
                    Err(_) => return,
                };
                let (n, request) = match current.etag {
                    Some(etag) => {
                        let n: u64 = String::from_utf8_lossy(&current.data).parse().unwrap();
                        (
                            n + 1,
                            with_etag(set(&counter, (n + 1).to_string().into_bytes()), &etag.value),
                        )
                    }
                    None => (1, first_write(set(&counter, b"1".to_vec()))),
                };
                match daprd.set(request).await {
                    Ok(()) => match daprd.get(&counter).await {
                        Ok(r) => {
                            let etag = r.etag.map(|e| e.value).unwrap_or_default();
                            acks.lock()
                                .unwrap()
                                .counters
                                .insert(counter.clone(), (n, etag));
                            Ok(Vec::new())
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(keys) => {
                // Acknowledged: read back the etags the server reported for them.
                for key in keys {
                    match daprd.get(&key).await {
                        Ok(r) => {
                            let etag = r.etag.map(|e| e.value).unwrap_or_default();
                            acks.lock()
                                .unwrap()
                                .sets
                                .push((key.clone(), etag, value_for(&key)));
                        }
                        Err(_) => return,
                    }
                }
            }
            // The server was killed (or is going down): this worker's round is over.
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_write() {
    let kills: usize = std::env::var("ROOST_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[("durability", "immediate")]).await.unwrap();
    let mut all = Acks::default();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut verified = 0;
    for round in 0..kills {
        let acks = Arc::new(Mutex::new(Acks::default()));
        let mut workers = Vec::new();
        for worker in 0..16 {
            let daprd = server.daprd("statestore").await;
            workers.push(tokio::spawn(load(daprd, worker, round, Arc::clone(&acks))));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(50 + seed % 400)).await;
        server.kill();
        for worker in workers {
            tokio::time::timeout(Duration::from_secs(30), worker)
                .await
                .expect("workers stop once the server is gone")
                .unwrap();
        }
        let acks = Arc::try_unwrap(acks).ok().unwrap().into_inner().unwrap();
        all.sets.extend(acks.sets);
        all.begun.extend(acks.begun);
        all.transactions.extend(acks.transactions);
        for (k, v) in acks.counters {
            all.counters.insert(k, v);
        }

        // Restart without Init, as after a component crash under daprd.
        server.spawn(&[]).expect("restart after SIGKILL");
        let mut daprd = server.daprd("statestore").await;
        // Every acknowledged write so far, read back in bulk (100 keys a call).
        for chunk in all.sets.chunks(100) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _, _)| k.as_str()).collect();
            let items = daprd.bulk_get(&keys).await.unwrap();
            for ((key, etag, value), item) in chunk.iter().zip(items) {
                assert_eq!(&item.key, key);
                let got = item.etag.map(|e| e.value);
                assert_eq!(got.as_deref(), Some(etag.as_str()), "round {round}: {key}");
                assert_eq!(
                    item.data.as_slice(),
                    value.as_slice(),
                    "round {round}: {key}"
                );
            }
        }
        // Every transaction ever begun: all three keys or none; acknowledged ones whole.
        for chunk in all.begun.chunks(30) {
            let keys: Vec<String> = chunk
                .iter()
                .flat_map(|tag| ["a", "b", "c"].map(|p| format!("{tag}-tx-{p}")))
                .collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let items = daprd.bulk_get(&keys).await.unwrap();
            for (tag, parts) in chunk.iter().zip(items.chunks(3)) {
                let present: Vec<bool> = parts.iter().map(|i| !i.data.is_empty()).collect();
                let whole = present.iter().all(|p| *p);
                assert!(
                    whole || present.iter().all(|p| !*p),
                    "round {round}: transaction {tag} half applied"
                );
                if all.transactions.contains_key(tag) {
                    assert!(whole, "round {round}: acknowledged transaction {tag} lost");
                }
            }
        }
        for (counter, (n, etag)) in &all.counters {
            let got = daprd.get(counter).await.unwrap();
            let stored: u64 = String::from_utf8_lossy(&got.data).parse().unwrap();
            assert!(
                stored >= *n,
                "round {round}: {counter} acknowledged {n}, found {stored}"
            );
            if stored == *n {
                assert_eq!(got.etag.map(|e| e.value).as_deref(), Some(etag.as_str()));
            }
        }
        verified = all.sets.len();
        eprintln!(
            "kill {}: {} acknowledged writes and {} transactions verified so far",
            round + 1,
            verified,
            all.transactions.len()
        );
    }
    assert!(verified > 0, "the load produced no acknowledged writes");
}

/// 64 clients doing compare-and-swap increments over the socket end with exact totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_cas_over_the_socket_exactly() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[]).await.unwrap();
    const CLIENTS: usize = 64;
    const INCREMENTS: u64 = 25;
    const KEYS: usize = 4;
    for k in 0..KEYS {
        daprd
            .set(set(&format!("c{k}"), b"0".to_vec()))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let mut daprd = server.daprd("statestore").await;
        tasks.push(tokio::spawn(async move {
            let key = format!("c{}", client % KEYS);
            for _ in 0..INCREMENTS {
                loop {
                    let current = daprd.get(&key).await.unwrap();
                    let n: u64 = String::from_utf8_lossy(&current.data).parse().unwrap();
                    let etag = current.etag.unwrap().value;
                    match daprd
                        .set(with_etag(
                            set(&key, (n + 1).to_string().into_bytes()),
                            &etag,
                        ))
                        .await
                    {
                        Ok(()) => break,
                        Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
                        Err(other) => panic!("{other:?}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for k in 0..KEYS {
        let got = daprd.get(&format!("c{k}")).await.unwrap();
        let total: u64 = String::from_utf8_lossy(&got.data).parse().unwrap();
        assert_eq!(total, (CLIENTS / KEYS) as u64 * INCREMENTS);
    }
}
