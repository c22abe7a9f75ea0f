//! Roost under real Dapr: Dapr's own state conformance suite (run from the Go module in
//! `tests/dapr`, through daprd's own pluggable-component client), and an unmodified daprd
//! (built by `tests/dapr/build.sh`) loading Roost from component YAMLs — the repository's own
//! `components/roost.yaml`, two Roost components side by side, an encryption key from a secret
//! store — and surviving restarts of either process.
//!
//! Where no daprd or Go toolchain is found these tests print that they were skipped and why;
//! under `CI=true` that fails them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::Server;
use support::fronts::{self, Front, Kind, error_code, http};

const JSON: [(&str, &str); 1] = [("Content-Type", "application/json")];

/// The subtests of Dapr's suite that must pass for each configuration: every one the suite
/// runs for Roost's operations except `etag` (below).
const SUITE_SUBTESTS: [&str; 24] = [
    "init",
    "ping",
    "set",
    "get",
    "set_and_get_proto",
    "query",
    "delete",
    "bulkset",
    "bulkget",
    "bulkget/scenario",
    "bulkget/include_non-existent_key",
    "bulkdelete",
    "transaction",
    "delete_non-existent_key",
    "transaction-order",
    "transaction-serialization-grpc-json",
    "first-write_without_etag",
    "first-write_with_etag",
    "set_ttl_with_bad_value_should_error",
    "set_and_get_with_TTL",
    "component_does_not_implement_DeleteWithPrefix_interface",
    "DeleteWithPrefix_feature_not_present",
    "component_does_not_implement_KeysLike_interface",
    "KeysLike_feature_not_present",
];

/// The one assertion of the suite's `etag` test that no pluggable component can meet: it wants
/// a bulk set with one wrong etag to return a joined error of per-key errors, and daprd's
/// pluggable client turns the call's single status into a single ETagError.
const PLUGGABLE_CLIENT_LIMIT: &str = "Returned error is not a joined error";

#[test]
fn dapr_state_conformance_suite_passes() {
    let test = "dapr_state_conformance_suite_passes";
    let Some(go) = fronts::go_binary(test) else {
        return;
    };
    let module = fronts::repository_root().join("tests/dapr");
    let output = Command::new(go)
        .args(["test", "-json", "-count=1", "./conformance/"])
        .current_dir(&module)
        .env("ROOST_BIN", env!("CARGO_BIN_EXE_roost"))
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    // go test -json: one event per line; collect each test's outcome and output.
    let mut outcome: BTreeMap<String, String> = BTreeMap::new();
    let mut text: BTreeMap<String, String> = BTreeMap::new();
    for line in stdout.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(name) = event["Test"].as_str() else {
            continue;
        };
        match event["Action"].as_str() {
            Some(action @ ("pass" | "fail" | "skip")) => {
                outcome.insert(name.to_string(), action.to_string());
            }
            Some("output") => text
                .entry(name.to_string())
                .or_default()
                .push_str(event["Output"].as_str().unwrap_or_default()),
            _ => {}
        }
    }
    assert!(
        !outcome.is_empty(),
        "go test ran nothing:\n{stdout}\n{stderr}"
    );
    let report: Vec<String> = outcome.iter().map(|(k, v)| format!("{v:4} {k}")).collect();
    let report = report.join("\n");
    eprintln!("Dapr state conformance suite against roost serve:\n{report}");

    assert_eq!(
        outcome
            .get("TestBulkEtagFailuresThroughThePluggableClient")
            .map(String::as_str),
        Some("pass"),
        "{}",
        text.get("TestBulkEtagFailuresThroughThePluggableClient")
            .cloned()
            .unwrap_or_default()
    );
    for config in ["plain", "zstd-encrypted"] {
        for subtest in SUITE_SUBTESTS {
            let name = format!("TestStateConformance/{config}/{subtest}");
            assert_eq!(
                outcome.get(&name).map(String::as_str),
                Some("pass"),
                "{name}:\n{}\n\nall:\n{report}",
                text.get(&name).cloned().unwrap_or_default()
            );
        }
        // The etag test fails at the pluggable client's limit and nowhere else.
        let etag = format!("TestStateConformance/{config}/etag");
        let etag_output = text.get(&etag).cloned().unwrap_or_default();
        if outcome.get(&etag).map(String::as_str) == Some("fail") {
            assert_eq!(
                etag_output.matches("Error Trace:").count(),
                1,
                "{etag} failed on more than the pluggable client's limit:\n{etag_output}"
            );
            assert!(
                etag_output.contains(PLUGGABLE_CLIENT_LIMIT),
                "{etag} failed for another reason:\n{etag_output}"
            );
        } else {
            assert_eq!(
                outcome.get(&etag).map(String::as_str),
                Some("pass"),
                "{etag}"
            );
        }
    }
    // Nothing skipped, nothing else failed (a parent fails with its failing etag subtest).
    let etag_or_parent = |name: &str| {
        name.ends_with("/etag")
            || name == "TestStateConformance"
            || ["plain", "zstd-encrypted"]
                .iter()
                .any(|c| name == format!("TestStateConformance/{c}"))
    };
    let unexpected: Vec<&String> = outcome
        .iter()
        .filter(|(name, result)| match result.as_str() {
            "pass" => false,
            "fail" => !etag_or_parent(name),
            _ => true,
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected outcomes: {unexpected:?}\n{report}"
    );
}

/// Starts daprd in front of `server` with `yaml`, or `None` (skipped) without a daprd.
fn daprd_with(test: &str, server: Server, yaml: &str, files: &[(&str, String)]) -> Option<Front> {
    let daprd = fronts::daprd_binary(test)?;
    Some(Front::start_with_files(
        Kind::Daprd,
        Some(&daprd),
        server,
        "app1",
        yaml,
        files,
    ))
}

fn save(front: &Front, store: &str, key: &str, value: &str) -> (u16, String) {
    let body = format!(r#"[{{"key":"{key}","value":{value}}}]"#);
    let (status, _, text) = http(
        &front.http,
        "POST",
        &format!("/v1.0/state/{store}"),
        &JSON,
        &body,
    );
    (status, text)
}

fn get(front: &Front, store: &str, key: &str) -> (u16, Option<String>, String) {
    let (status, headers, text) = http(
        &front.http,
        "GET",
        &format!("/v1.0/state/{store}/{key}"),
        &[],
        "",
    );
    (status, headers.get("etag").cloned(), text)
}

#[test]
fn daprd_loads_the_repository_component_file() {
    let test = "daprd_loads_the_repository_component_file";
    let yaml =
        std::fs::read_to_string(fronts::repository_root().join("components/roost.yaml")).unwrap();
    let Some(front) = daprd_with(test, Server::start(), &yaml, &[]) else {
        return;
    };
    let (status, text) = save(&front, "statestore", "order-1", r#"{"total":3}"#);
    assert_eq!(status, 204, "{text}");
    let (status, etag, text) = get(&front, "statestore", "order-1");
    assert_eq!((status, text.as_str()), (200, r#"{"total":3}"#));
    let etag = etag.expect("an etag header");
    // The metadata: the component as daprd registered it, with the capabilities Roost lists.
    let (_, _, text) = http(&front.http, "GET", "/v1.0/metadata", &[], "");
    let metadata: serde_json::Value = serde_json::from_str(&text).unwrap();
    let component = &metadata["components"][0];
    assert_eq!(component["type"], "state.roost", "{text}");
    let capabilities: BTreeSet<&str> = component["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(
        capabilities,
        BTreeSet::from(["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API", "ACTOR"])
    );
    // An etag conflict through daprd: 409 ERR_STATE_SAVE; an invalid etag: 400.
    let stale = format!(
        r#"[{{"key":"order-1","value":1,"etag":"{}"}}]"#,
        etag.parse::<u64>().unwrap() + 7
    );
    let (status, _, text) = http(&front.http, "POST", "/v1.0/state/statestore", &JSON, &stale);
    assert_eq!(
        (status, error_code(&text).as_str()),
        (409, "ERR_STATE_SAVE"),
        "{text}"
    );
    let bad = r#"[{"key":"order-1","value":1,"etag":"v1"}]"#;
    let (status, _, text) = http(&front.http, "POST", "/v1.0/state/statestore", &JSON, bad);
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "ERR_STATE_SAVE"),
        "{text}"
    );
    // TTL: ttlExpireTime in the response metadata.
    let ttl = r#"[{"key":"short","value":1,"metadata":{"ttlInSeconds":"60"}}]"#;
    let (status, _, _) = http(&front.http, "POST", "/v1.0/state/statestore", &JSON, ttl);
    assert_eq!(status, 204);
    let (_, headers, _) = http(&front.http, "GET", "/v1.0/state/statestore/short", &[], "");
    assert!(
        headers.contains_key("metadata.ttlexpiretime"),
        "{headers:?}"
    );
}

const TWO_STORES: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: orders
spec:
  type: state.roost
  version: v1
  metadata:
  - name: keyPrefix
    value: none
  - name: compression
    value: zstd
  - name: encryptionKey
    secretKeyRef:
      name: roost-key
      key: current
auth:
  secretStore: localsecrets
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: carts
spec:
  type: state.roost
  version: v1
  metadata:
  - name: keyPrefix
    value: none
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: localsecrets
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - name: secretsFile
    value: RESOURCES/../secrets.json
  - name: nestedSeparator
    value: "."
  - name: multiValued
    value: "true"
"#;

const KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn two_stores(test: &str, server: Server) -> Option<Front> {
    let secrets = serde_json::json!({"roost-key": {"current": KEY}}).to_string();
    daprd_with(test, server, TWO_STORES, &[("secrets.json", secrets)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_roost_components_are_two_keyspaces_and_the_key_comes_from_a_secret_store() {
    let test = "two_roost_components_are_two_keyspaces_and_the_key_comes_from_a_secret_store";
    let Some(front) = two_stores(test, Server::start()) else {
        return;
    };
    assert_eq!(save(&front, "orders", "k", r#""an order""#).0, 204);
    assert_eq!(save(&front, "carts", "k", r#""a cart""#).0, 204);
    assert_eq!(get(&front, "orders", "k").2, r#""an order""#);
    assert_eq!(get(&front, "carts", "k").2, r#""a cart""#);
    let (status, _, _) = http(&front.http, "DELETE", "/v1.0/state/carts/k", &[], "");
    assert_eq!(status, 204);
    assert_eq!(get(&front, "carts", "k").0, 204);
    assert_eq!(
        get(&front, "orders", "k").2,
        r#""an order""#,
        "deleting in carts left orders alone"
    );

    // Each component is its own instance in roost serve; the orders one is encrypted with the
    // key from the secret store: the component itself reads it back only with that key.
    let data = front.server.data_dir().join("instances");
    let mut instances: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    instances.sort();
    assert_eq!(instances.len(), 2, "{instances:?}");
    let mut orders = front.server.daprd("orders").await;
    assert_eq!(&orders.get("k").await.unwrap().data[..], br#""an order""#);
    let file = std::fs::read(
        data.join(instances.iter().find(|n| n.contains("orders")).unwrap())
            .join("data.roost"),
    )
    .unwrap();
    assert!(
        !file.windows(8).any(|w| w == b"an order"),
        "the value is not stored in clear"
    );
    let config = std::fs::read_to_string(
        data.join(instances.iter().find(|n| n.contains("orders")).unwrap())
            .join("instance.json"),
    )
    .unwrap();
    assert!(
        !config.contains(KEY),
        "the key is not written to instance.json"
    );
}

#[test]
fn daprd_recovers_when_roost_serve_is_killed_and_restarted() {
    let test = "daprd_recovers_when_roost_serve_is_killed_and_restarted";
    let Some(mut front) = two_stores(test, Server::start()) else {
        return;
    };
    // Acknowledged writes, then SIGKILL of the component while daprd keeps running.
    for i in 0..50 {
        assert_eq!(
            save(&front, "carts", &format!("c{i}"), &i.to_string()).0,
            204
        );
        assert_eq!(
            save(&front, "orders", &format!("o{i}"), &i.to_string()).0,
            204
        );
    }
    let read = |front: &Front, store: &str, prefix: &str| -> Vec<(u16, Option<String>, String)> {
        (0..50)
            .map(|i| get(front, store, &format!("{prefix}{i}")))
            .collect()
    };
    let carts = read(&front, "carts", "c");
    let orders = read(&front, "orders", "o");
    front.server.kill();
    let (status, _, text) = get(&front, "carts", "c1");
    assert!(
        status >= 500,
        "with the component down daprd answers an error: {status} {text}"
    );
    front.server.spawn(&[]).expect("roost serve restarts");

    // daprd's calls recover without a daprd restart: its gRPC connection redials the socket
    // (grpc-go's reconnect backoff starts at 1 s and grows 1.6x per failed attempt).
    let started = std::time::Instant::now();
    let mut last = (0, None, String::new());
    while started.elapsed() < Duration::from_secs(60) {
        last = get(&front, "carts", "c1");
        if last.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        last.0,
        200,
        "daprd did not recover in 60 s: {last:?}\n{}",
        front.log()
    );
    eprintln!(
        "daprd answered again {:?} after roost serve restarted",
        started.elapsed()
    );
    assert_eq!(
        read(&front, "carts", "c"),
        carts,
        "every acknowledged record and etag"
    );
    assert_eq!(save(&front, "carts", "after", "2").0, 204);

    // An encrypted instance cannot reopen by itself: its key lives only in daprd, which does
    // not send Init again after a component restart. It says so, and a daprd restart (or a
    // reload of the component YAML) brings it back with every record.
    let (status, _, text) = get(&front, "orders", "o1");
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("needs daprd's Init again"), "{text}");
    front.stop();
    let daprd = fronts::daprd_binary(test).unwrap();
    front.spawn(Some(Path::new(&daprd)));
    assert_eq!(
        read(&front, "orders", "o"),
        orders,
        "every acknowledged record and etag"
    );
    assert_eq!(read(&front, "carts", "c"), carts);
}

#[test]
fn daprd_restarted_against_a_running_roost_serve_keeps_every_record() {
    let test = "daprd_restarted_against_a_running_roost_serve_keeps_every_record";
    let Some(mut front) = two_stores(test, Server::start()) else {
        return;
    };
    for i in 0..20 {
        assert_eq!(
            save(&front, "orders", &format!("o{i}"), &i.to_string()).0,
            204
        );
    }
    let before: Vec<(u16, Option<String>, String)> = (0..20)
        .map(|i| get(&front, "orders", &format!("o{i}")))
        .collect();
    front.stop();
    let daprd = fronts::daprd_binary(test).unwrap();
    front.spawn(Some(Path::new(&daprd)));
    for (i, expected) in before.iter().enumerate() {
        assert_eq!(&get(&front, "orders", &format!("o{i}")), expected, "o{i}");
    }
    // The etags carry on: a conditional write with the etag read before the restart works.
    let etag = before[3].1.clone().unwrap();
    let body = format!(r#"[{{"key":"o3","value":33,"etag":"{etag}"}}]"#);
    let (status, _, text) = http(&front.http, "POST", "/v1.0/state/orders", &JSON, &body);
    assert_eq!(status, 204, "{text}");
}

/// An example binary as `cargo test` builds it (`target/<profile>/examples/NAME`), or `None`
/// when this build did not make it (for instance `cargo test --test real_dapr`).
fn example(name: &str) -> Option<std::path::PathBuf> {
    let deps = std::env::current_exe().ok()?;
    let path = deps.parent()?.parent()?.join("examples").join(name);
    if path.is_file() {
        return Some(path);
    }
    eprintln!("skipped the {name} example: not built here (cargo test --workspace builds it)");
    None
}

/// The seed's flow with real daprd in place of `dapr run` (the Dapr CLI is not available
/// here): `roost serve`, daprd on the repository's `components/`, then the app with daprd's
/// gRPC endpoint in its environment, as `dapr run` would set it.
#[test]
fn the_orders_and_band_examples_run_under_daprd_on_the_repository_components() {
    let test = "the_orders_and_band_examples_run_under_daprd_on_the_repository_components";
    let yaml =
        std::fs::read_to_string(fronts::repository_root().join("components/roost.yaml")).unwrap();
    let Some(front) = daprd_with(test, Server::start(), &yaml, &[]) else {
        return;
    };
    for (name, args) in [
        ("orders", vec![]),
        (
            "band",
            vec!["--store", "dapr", "--dapr-store", "statestore"],
        ),
    ] {
        let Some(program) = example(name) else {
            continue;
        };
        let output = Command::new(&program)
            .args(&args)
            .env("DAPR_GRPC_PORT", front.grpc_port())
            .env("DAPR_HTTP_PORT", front.http_port())
            .env("DAPR_GRPC_ENDPOINT", front.grpc_endpoint())
            .env_remove("DAPR_API_TOKEN")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}:\n{stdout}\n{stderr}");
        eprintln!("{name} under daprd:\n{stdout}");
        match name {
            "orders" => {
                assert!(
                    stdout.contains("write with the old etag refused: true"),
                    "{stdout}"
                );
                assert!(
                    stdout.contains("component statestore (state.roost)"),
                    "{stdout}"
                );
            }
            _ => {
                assert!(stdout.contains(": 4 artifacts"), "{stdout}");
                assert!(
                    stdout.contains("MarketingCopy by marketing_guru from"),
                    "{stdout}"
                );
            }
        }
    }
}
