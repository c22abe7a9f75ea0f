//! Soak: 64 concurrent clients run a mixed workload over the socket for `ROOST_SOAK_SECONDS`
//! (default 600). Every call must succeed (etag conflicts of the CAS clients are retried, as
//! apps do); the server's resident memory is sampled every 30 s and printed, so the figures in
//! `docs/reliability.md` can be reproduced. Run with
//! `cargo test --release -p roost-component --test soak -- --ignored --nocapture`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long soak (10 minutes by default); run it explicitly, see the module docs"]
async fn mixed_soak_at_64_clients() {
    let seconds: u64 = std::env::var("ROOST_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let server = Server::start();
    let mut admin = server.daprd("statestore").await;
    admin
        .init(&[(
            "queryIndexes",
            r#"[{"name":"q","indexes":[{"key":"group","type":"NUMERIC"}]}]"#,
        )])
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..64u64 {
        let mut daprd = server.daprd("statestore").await;
        let (stop, ops) = (Arc::clone(&stop), Arc::clone(&ops));
        clients.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("k{}", (client * 7919 + i) % 5000);
                let doc = format!(
                    r#"{{"group":{},"n":{i},"pad":"{}"}}"#,
                    i % 100,
                    "x".repeat(900)
                );
                match i % 10 {
                    0..=5 => {
                        daprd.get(&key).await.unwrap();
                    }
                    6 => daprd
                        .set(with_metadata(
                            set(&key, doc.into_bytes()),
                            &[("ttlInSeconds", "30")],
                        ))
                        .await
                        .unwrap(),
                    7 => loop {
                        let current = daprd.get(&key).await.unwrap();
                        let request = match current.etag {
                            Some(etag) => {
                                with_etag(set(&key, doc.clone().into_bytes()), &etag.value)
                            }
                            None => set(&key, doc.clone().into_bytes()),
                        };
                        match daprd.set(request).await {
                            Ok(()) => break,
                            Err(s) if s.code() == tonic::Code::FailedPrecondition => continue,
                            Err(other) => panic!("{other:?}"),
                        }
                    },
                    8 => daprd
                        .transact(vec![
                            Op::Set(set(&format!("{key}-a"), doc.clone().into_bytes())),
                            Op::Delete(delete(&format!("{key}-b"))),
                        ])
                        .await
                        .unwrap(),
                    _ => {
                        daprd.bulk_get(&[&key, "k1", "k2"]).await.unwrap();
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let pid = server.pid();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(30.min(seconds))).await;
        let sample = (
            started.elapsed().as_secs(),
            ops.load(Ordering::Relaxed),
            rss_kib(pid),
        );
        eprintln!("t={}s ops={} rss={} KiB", sample.0, sample.1, sample.2);
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client saw an error");
    }
    let total = ops.load(Ordering::Relaxed);
    eprintln!(
        "soak: {total} operations in {}s ({:.0} ops/s), 0 errors; rss samples (KiB): {:?}",
        started.elapsed().as_secs(),
        total as f64 / started.elapsed().as_secs_f64(),
        samples.iter().map(|s| s.2).collect::<Vec<_>>()
    );
    assert!(total > 0);
}
