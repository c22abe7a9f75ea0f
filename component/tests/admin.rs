//! Offline administration through the `roost` binary: refused while a server holds the
//! instance; get / set / delete / scan / query / stats; export then import gives a keyspace
//! that answers exactly as the original, over the socket too.

mod support;

use std::path::Path;

use support::*;

fn roost(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let data_dir = data_dir.to_str().unwrap();
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--data-dir", data_dir])
        .collect();
    roost_cli(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_and_offline_commands() {
    let mut server = Server::start();
    let data = server.data_dir();
    let mut daprd = server.daprd("orders").await;
    daprd.init(&[("indexedFields", "total")]).await.unwrap();
    daprd
        .set(with_metadata(
            set("app||o1", br#"{"total":3}"#.to_vec()),
            &[("contentType", "application/json")],
        ))
        .await
        .unwrap();
    daprd
        .set(with_metadata(
            set("app||o2", br#"{"total":9}"#.to_vec()),
            &[("ttlInSeconds", "3600")],
        ))
        .await
        .unwrap();
    daprd
        .set(set("app||bin", vec![0xff, 0x00, 0x10]))
        .await
        .unwrap();
    let etag_o1 = daprd.etag("app||o1").await;

    // While the server holds the instance, offline commands refuse clearly.
    let (ok, _, err) = roost(&data, &["get", "--instance", "orders", "app||o1"]);
    assert!(!ok && err.contains("running `roost serve`"), "{err}");
    assert!(server.terminate());

    let (ok, out, _) = roost(&data, &["get", "--instance", "orders", "app||o1"]);
    assert!(ok);
    assert_eq!(out.trim(), r#"{"total":3}"#);
    let (ok, out, err) = roost(
        &data,
        &["set", "--instance", "orders", "app||o3", r#"{"total":5}"#],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("etag "));
    let (ok, _, err) = roost(
        &data,
        &["set", "--instance", "orders", "app||o3", "x", "--etag", "1"],
    );
    assert!(!ok && err.contains("etag mismatch"), "{err}");
    let (ok, out, _) = roost(
        &data,
        &[
            "query",
            "--instance",
            "orders",
            r#"{"filter":{"GT":{"total":4}}}"#,
        ],
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (ok, out, _) = roost(&data, &["stats", "--instance", "orders"]);
    assert!(ok);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["records"], 4);
    assert_eq!(stats["indexedPaths"], serde_json::json!(["total"]));
    let (ok, _, _) = roost(&data, &["delete", "--instance", "orders", "app||o3"]);
    assert!(ok);

    // Export, import under another instance, compare.
    let file = server.dir.path().join("orders.jsonl");
    let file_arg = file.to_str().unwrap();
    let (ok, _, err) = roost(
        &data,
        &["export", "--instance", "orders", "--out", file_arg],
    );
    assert!(ok, "{err}");
    assert!(err.contains("export: 3 records"), "{err}");
    let (ok, _, err) = roost(&data, &["import", "--instance", "copy", "--in", file_arg]);
    assert!(ok, "{err}");
    let (_, original, _) = roost(&data, &["scan", "--instance", "orders", "--limit", "0"]);
    let (_, copy, _) = roost(&data, &["scan", "--instance", "copy", "--limit", "0"]);
    assert_eq!(original.lines().count(), 3);
    assert_eq!(
        original, copy,
        "the imported keyspace lists exactly the same records"
    );

    // Over the socket, the copy answers exactly as the original (no Init: saved config).
    server.spawn(&[]).unwrap();
    let mut copy = server.daprd("copy").await;
    assert_eq!(copy.etag("app||o1").await, etag_o1);
    let o2 = copy.get("app||o2").await.unwrap();
    assert!(o2.metadata.contains_key("ttlExpireTime"));
    assert_eq!(
        copy.get("app||bin").await.unwrap().data.as_ref(),
        [0xff, 0x00, 0x10]
    );
    copy.set(with_etag(set("app||o1", b"{}".to_vec()), &etag_o1))
        .await
        .unwrap();
}
