//! Online administration through a running server's socket (`--socket`), and backups taken
//! while the server keeps serving writes: the restored keyspace answers exactly as the original
//! did at the moment of the snapshot, over the socket. Then `roost compact` offline.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::*;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_commands_and_a_backup_under_load_restore_exactly() {
    let server = Server::start();
    let socket = server.socket_path();
    let socket = path(&socket);
    let mut daprd = server.daprd("orders").await;
    let init = [("indexedFields", "city")];
    daprd.init(&init).await.unwrap();
    for i in 0..200 {
        let city = ["Oslo", "Lima"][i % 2];
        let mut request = with_metadata(
            set(
                &format!("app||o{i:03}"),
                format!(r#"{{"city":"{city}","n":{i}}}"#),
            ),
            &[("contentType", "application/json")],
        );
        if i % 4 == 0 {
            request = with_metadata(request, &[("ttlInSeconds", "3600")]);
        }
        daprd.set(request).await.unwrap();
    }

    // Offline access is refused while the server runs, pointing at --socket.
    let data = server.data_dir();
    let (ok, _, err) = roost_cli(&[
        "get",
        "--data-dir",
        path(&data),
        "--instance",
        "orders",
        "app||o001",
    ]);
    assert!(!ok && err.contains("--socket"), "{err}");

    // get / set / delete / scan / query / stats through the socket.
    let (ok, out, err) = roost_cli(&[
        "get",
        "--socket",
        socket,
        "--instance",
        "orders",
        "app||o001",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"city":"Lima","n":1}"#);
    assert!(err.starts_with("etag "), "{err}");
    let (ok, out, err) = roost_cli(&[
        "set",
        "--socket",
        socket,
        "--instance",
        "orders",
        "app||extra",
        r#"{"city":"Rome"}"#,
    ]);
    assert!(ok && out.starts_with("etag "), "{out}{err}");
    assert_eq!(
        &daprd.get("app||extra").await.unwrap().data[..],
        br#"{"city":"Rome"}"#
    );
    // The etag printed is the one the write produced (no second read that another writer
    // could overtake).
    assert_eq!(
        out.trim(),
        format!("etag {}", daprd.etag("app||extra").await)
    );
    let (ok, _, err) = roost_cli(&[
        "delete",
        "--socket",
        socket,
        "--instance",
        "orders",
        "app||extra",
    ]);
    assert!(ok, "{err}");
    assert!(daprd.get("app||extra").await.unwrap().data.is_empty());
    let (ok, out, err) = roost_cli(&[
        "scan",
        "--socket",
        socket,
        "--instance",
        "orders",
        "--prefix",
        "app||o1",
        "--limit",
        "0",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 100, "o100..o199");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["key"], "app||o100");
    assert!(first["expiresAt"].is_u64(), "o100 has a TTL: {first}");
    let (ok, out, _) = roost_cli(&[
        "scan",
        "--socket",
        socket,
        "--instance",
        "orders",
        "--prefix",
        "app||",
        "--limit",
        "7",
    ]);
    assert!(ok);
    assert_eq!(out.lines().count(), 7);
    let (ok, out, err) = roost_cli(&[
        "query",
        "--socket",
        socket,
        "--instance",
        "orders",
        r#"{"filter":{"EQ":{"city":"Oslo"}}}"#,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 100);
    let (ok, out, err) = roost_cli(&["stats", "--socket", socket, "--instance", "orders"]);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["records"], 200);

    // A backup while a writer keeps writing.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut daprd = server.daprd("orders").await;
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                daprd
                    .set(set(&format!("app||w{n:06}"), b"w".to_vec()))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    while daprd.get("app||w000010").await.unwrap().data.is_empty() {
        tokio::task::yield_now().await;
    }
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("orders.snapshot");
    let (ok, out, err) = tokio::task::spawn_blocking({
        let (socket, snapshot) = (socket.to_string(), snapshot.clone());
        move || {
            roost_cli(&[
                "backup",
                "--socket",
                &socket,
                "--instance",
                "orders",
                "--out",
                path(&snapshot),
            ])
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(ok && out.contains("records"), "{out}{err}");
    let (ok, _, err) = roost_cli(&[
        "backup",
        "--socket",
        socket,
        "--instance",
        "orders",
        "--out",
        path(&snapshot),
    ]);
    assert!(!ok && err.contains("exists"), "never overwrites: {err}");

    // Restore into another server's data dir, start it, and compare over the socket.
    let mut restored = Server::start();
    restored.kill();
    let data2 = restored.data_dir();
    let (ok, out, err) = roost_cli(&[
        "restore",
        "--data-dir",
        path(&data2),
        "--instance",
        "orders",
        "--in",
        path(&snapshot),
    ]);
    assert!(ok && out.contains("restored"), "{out}{err}");
    restored.spawn(&[]).unwrap();
    let mut copy = restored.daprd("orders").await;
    copy.init(&init).await.unwrap();
    for i in 0..200 {
        let key = format!("app||o{i:03}");
        let (a, b) = (
            daprd.get(&key).await.unwrap(),
            copy.get(&key).await.unwrap(),
        );
        assert_eq!(
            (a.data, a.etag, a.content_type),
            (b.data, b.etag, b.content_type),
            "{key}"
        );
        assert_eq!(
            a.metadata.get("ttlExpireTime"),
            b.metadata.get("ttlExpireTime"),
            "{key}"
        );
    }
    // The concurrent writes form a prefix: the snapshot is one point in time.
    let mut k = 0;
    while !copy
        .get(&format!("app||w{k:06}"))
        .await
        .unwrap()
        .data
        .is_empty()
    {
        k += 1;
    }
    assert!(k >= 11 && k <= written, "{k} of {written}");
    for j in k..(k + 50).min(written) {
        assert!(
            copy.get(&format!("app||w{j:06}"))
                .await
                .unwrap()
                .data
                .is_empty()
        );
    }
    // Restoring over an instance that holds records needs --force, and never while served.
    let (ok, _, err) = roost_cli(&[
        "restore",
        "--data-dir",
        path(&data2),
        "--instance",
        "orders",
        "--in",
        path(&snapshot),
        "--force",
    ]);
    assert!(!ok && err.contains("stop the server first"), "{err}");
    restored.kill();
    let (ok, _, err) = roost_cli(&[
        "restore",
        "--data-dir",
        path(&data2),
        "--instance",
        "orders",
        "--in",
        path(&snapshot),
    ]);
    assert!(!ok && err.contains("--force"), "{err}");

    // Compact offline: the data stays.
    let (ok, out, err) = roost_cli(&[
        "compact",
        "--data-dir",
        path(&data2),
        "--instance",
        "orders",
    ]);
    assert!(ok && out.starts_with("compacted:"), "{out}{err}");
    let (ok, out, err) = roost_cli(&[
        "get",
        "--data-dir",
        path(&data2),
        "--instance",
        "orders",
        "app||o007",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"city":"Lima","n":7}"#);
}
