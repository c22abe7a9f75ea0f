//! `roost sidecar` end to end: the real `roost serve` on a socket, the real `roost sidecar`
//! loading a component YAML and calling the component the way daprd does, and clients nobody
//! here wrote talking to the sidecar — the Rust `dapr` crate and the Python `dapr` SDK — plus
//! the HTTP API's status codes and error bodies.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dapr::client::ClientOptions;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as runtime;
use runtime::dapr_client::DaprClient;
use support::Server;
use tonic::Code;

const STATE_YAML: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.roost
  version: v1
  metadata:
  - name: maxTransactionOps
    value: 5
  - name: queryIndexes
    secretKeyRef:
      name: indexes
auth:
  secretStore: localsecrets
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
    value: SECRETS_FILE
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: shared
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
  name: pubsub
spec:
  type: pubsub.redis
  version: v1
"#;

/// A `roost sidecar` process in front of a `roost serve`; both stop when dropped (stdin
/// closes).
struct Sidecar {
    server: Server,
    child: Child,
    grpc: String,
    http: String,
    _resources: tempfile::TempDir,
}

impl Sidecar {
    fn start() -> Sidecar {
        let server = Server::start();
        let resources = tempfile::tempdir().unwrap();
        let secrets = resources.path().join("secrets.json");
        let indexes = r#"[{"name":"by-city","indexes":[{"key":"city","type":"TEXT"}]}]"#;
        std::fs::write(
            &secrets,
            serde_json::json!({ "indexes": indexes }).to_string(),
        )
        .unwrap();
        std::fs::write(
            resources.path().join("components.yaml"),
            STATE_YAML.replace("SECRETS_FILE", &secrets.display().to_string()),
        )
        .unwrap();
        let (child, grpc, http) = spawn_sidecar(resources.path(), &server.socket_folder())
            .unwrap_or_else(|e| panic!("roost sidecar did not start: {e}"));
        Sidecar {
            server,
            child,
            grpc,
            http,
            _resources: resources,
        }
    }

    async fn sdk(&self) -> dapr::Client<dapr::client::TonicClientWithAuth> {
        let options = ClientOptions::new()
            .with_address(format!("http://{}", self.grpc))
            .with_timeout(Duration::from_secs(10));
        dapr::Client::from_options(options).await.unwrap()
    }

    async fn raw(&self) -> DaprClient<tonic::transport::Channel> {
        DaprClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `roost sidecar` on kernel-chosen ports; returns it with its gRPC and HTTP addresses,
/// or what it printed on stderr.
fn spawn_sidecar(resources: &Path, sockets: &Path) -> Result<(Child, String, String), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roost"))
        .args([
            "sidecar",
            "--app-id",
            "myapp",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
        ])
        .arg("--resources-path")
        .arg(resources)
        .arg("--socket-folder")
        .arg(sockets)
        .arg("--stop-when-stdin-closes")
        .env("ROOST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok));
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(line)) if line.starts_with("roost sidecar ready:") => {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |label: &str| {
                let i = words.iter().position(|w| *w == label).unwrap();
                words[i + 1].to_string()
            };
            let (grpc, http) = (after("gRPC"), after("HTTP"));
            Ok((child, grpc, http))
        }
        _ => {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// One HTTP/1.1 request; returns status, headers (lowercased names) and body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HashMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    (status.parse().unwrap(), headers, body.to_string())
}

fn error_code(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    value["errorCode"].as_str().unwrap_or_default().to_string()
}

fn state_item(key: &str, value: &[u8], etag: Option<&str>) -> common::StateItem {
    common::StateItem {
        key: key.into(),
        value: value.to_vec(),
        etag: etag.map(|v| common::Etag { value: v.into() }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_end_to_end() {
    let sidecar = Sidecar::start();
    let mut client = sidecar.sdk().await;
    let mut raw = sidecar.raw().await;

    // Save / get with the SDK's high-level client.
    client
        .save_state(
            "statestore",
            "order-1",
            br#"{"city":"Oslo","n":1}"#.to_vec(),
            None,
            None,
            None,
        )
        .await
        .unwrap();
    let got = client
        .get_state("statestore", "order-1", None)
        .await
        .unwrap();
    assert_eq!(got.data, br#"{"city":"Oslo","n":1}"#);
    assert!(!got.etag.is_empty());

    // What the component stored: the app-id prefix, as daprd writes it.
    let mut daprd = sidecar.server.daprd("statestore").await;
    let stored = daprd.get("myapp||order-1").await.unwrap();
    assert_eq!(&stored.data[..], br#"{"city":"Oslo","n":1}"#);

    // Conditional writes: current etag wins, stale → ABORTED, malformed → INVALID_ARGUMENT.
    client
        .save_state(
            "statestore",
            "order-1",
            br#"{"city":"Oslo","n":2}"#.to_vec(),
            Some(common::Etag {
                value: got.etag.clone(),
            }),
            None,
            None,
        )
        .await
        .unwrap();
    let stale = raw
        .save_state(runtime::SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![state_item("order-1", b"{}", Some(&got.etag))],
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let malformed = raw
        .save_state(runtime::SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![state_item("order-1", b"{}", Some("x"))],
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");

    // Bulk save (several items → BulkSet) and bulk get with prefixes stripped.
    client
        .save_bulk_states(
            "statestore",
            vec![
                state_item("order-2", br#"{"city":"Lima","n":3}"#, None),
                state_item("order-3", br#"{"city":"Oslo","n":4}"#, None),
            ],
        )
        .await
        .unwrap();
    let bulk = raw
        .get_bulk_state(runtime::GetBulkStateRequest {
            store_name: "statestore".into(),
            keys: vec!["order-2".into(), "order-3".into(), "missing".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let by_key: HashMap<_, _> = bulk.items.iter().map(|i| (i.key.as_str(), i)).collect();
    assert_eq!(by_key["order-2"].data, br#"{"city":"Lima","n":3}"#);
    assert!(!by_key["order-3"].etag.is_empty());
    assert!(by_key["missing"].data.is_empty());

    // A transaction applies in order; a stale etag anywhere changes nothing (INTERNAL, as daprd).
    let op = |kind: &str, item: common::StateItem| runtime::TransactionalStateOperation {
        operation_type: kind.into(),
        request: Some(item),
    };
    raw.execute_state_transaction(runtime::ExecuteStateTransactionRequest {
        store_name: "statestore".into(),
        operations: vec![
            op(
                "upsert",
                state_item("order-4", br#"{"city":"Oslo","n":5}"#, None),
            ),
            op("delete", state_item("order-2", b"", None)),
        ],
        metadata: HashMap::new(),
    })
    .await
    .unwrap();
    assert!(
        client
            .get_state("statestore", "order-2", None)
            .await
            .unwrap()
            .data
            .is_empty()
    );
    let failed = raw
        .execute_state_transaction(runtime::ExecuteStateTransactionRequest {
            store_name: "statestore".into(),
            operations: vec![
                op("upsert", state_item("order-5", b"{}", None)),
                op("upsert", state_item("order-4", b"{}", Some("999999"))),
            ],
            metadata: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Internal, "{failed:?}");
    assert!(
        client
            .get_state("statestore", "order-5", None)
            .await
            .unwrap()
            .data
            .is_empty()
    );
    // Beyond the component's MultiMaxSize (maxTransactionOps: 5): refused before it is called.
    let too_many = raw
        .execute_state_transaction(runtime::ExecuteStateTransactionRequest {
            store_name: "statestore".into(),
            operations: (0..6)
                .map(|i| op("upsert", state_item(&format!("big-{i}"), b"1", None)))
                .collect(),
            metadata: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(
        too_many
            .message()
            .contains("ERR_STATE_STORE_TOO_MANY_TRANSACTIONS")
    );

    // Query (served by the index declared through a secretKeyRef): keys without the prefix.
    let query = serde_json::json!({"filter": {"EQ": {"city": "Oslo"}}, "sort": [{"key": "n"}]});
    let result = client
        .query_state_alpha1("statestore", query, None)
        .await
        .unwrap();
    let keys: Vec<&str> = result.results.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["order-1", "order-3", "order-4"]);

    // TTL passes through as metadata.
    client
        .save_state(
            "statestore",
            "short",
            b"1".to_vec(),
            None,
            Some(HashMap::from([(
                "ttlInSeconds".to_string(),
                "1".to_string(),
            )])),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .get_state("statestore", "short", None)
            .await
            .unwrap()
            .data,
        b"1"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(
        client
            .get_state("statestore", "short", None)
            .await
            .unwrap()
            .data
            .is_empty()
    );

    // keyPrefix none: the key reaches the component as written; `||` in app keys refused.
    client
        .save_state("shared", "plain", b"2".to_vec(), None, None, None)
        .await
        .unwrap();
    let mut shared = sidecar.server.daprd("shared").await;
    assert_eq!(&shared.get("plain").await.unwrap().data[..], b"2");
    let bad_key = raw
        .get_state(runtime::GetStateRequest {
            store_name: "statestore".into(),
            key: "a||b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_key.code(), Code::InvalidArgument);

    // Delete with a stale etag → ABORTED; with the right one → gone.
    let current = client
        .get_state("statestore", "order-3", None)
        .await
        .unwrap();
    let stale_delete = raw
        .delete_state(runtime::DeleteStateRequest {
            store_name: "statestore".into(),
            key: "order-3".into(),
            etag: Some(common::Etag {
                value: "999999".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale_delete.code(), Code::Aborted);
    raw.delete_state(runtime::DeleteStateRequest {
        store_name: "statestore".into(),
        key: "order-3".into(),
        etag: Some(common::Etag {
            value: current.etag,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        client
            .get_state("statestore", "order-3", None)
            .await
            .unwrap()
            .data
            .is_empty()
    );

    // Unknown store; metadata with ACTOR derived; pub/sub not served.
    let unknown = raw
        .get_state(runtime::GetStateRequest {
            store_name: "nope".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(unknown.message().contains("ERR_STATE_STORE_NOT_FOUND"));
    let metadata = client.get_metadata().await.unwrap();
    assert_eq!(metadata.id, "myapp");
    let names: Vec<&str> = metadata
        .registered_components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["shared", "statestore"],
        "pubsub and the secret store are not listed"
    );
    let statestore = &metadata.registered_components[1];
    assert_eq!(statestore.r#type, "state.roost");
    assert!(statestore.capabilities.iter().any(|c| c == "ACTOR"));
    let publish = raw
        .publish_event(runtime::PublishEventRequest {
            pubsub_name: "pubsub".into(),
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(publish.code(), Code::Unimplemented);
    assert!(
        publish.message().contains("pub/sub"),
        "{}",
        publish.message()
    );
}

#[test]
fn http_api_codes_and_bodies() {
    let sidecar = Sidecar::start();
    let addr = sidecar.http.as_str();
    let json = [("Content-Type", "application/json")];

    let (status, _, _) = http(addr, "GET", "/v1.0/healthz/outbound", &[], "");
    assert_eq!(status, 204);

    // Save: the value is re-encoded as Go's encoding/json does (sorted keys, <>& escaped).
    let body = r#"[{"key":"h1","value":{"b":1,"a":"<x>"}},{"key":"h2","value":"Bruce Wayne"}]"#;
    let (status, _, text) = http(addr, "POST", "/v1.0/state/statestore", &json, body);
    assert_eq!(status, 204, "{text}");
    let (status, headers, text) = http(addr, "GET", "/v1.0/state/statestore/h1", &[], "");
    assert_eq!(status, 200);
    assert_eq!(text, r#"{"a":"\u003cx\u003e","b":1}"#);
    let etag = headers["etag"].clone();
    let (_, _, text) = http(addr, "GET", "/v1.0/state/statestore/h2", &[], "");
    assert_eq!(text, r#""Bruce Wayne""#);
    let (status, _, text) = http(addr, "GET", "/v1.0/state/statestore/absent", &[], "");
    assert_eq!((status, text.as_str()), (204, ""));

    // ETag mismatch → 409, malformed → 400, both ERR_STATE_SAVE.
    let stale = format!(
        r#"[{{"key":"h1","value":1,"etag":"{}"}}]"#,
        etag.parse::<u64>().unwrap() + 50
    );
    let (status, _, text) = http(addr, "POST", "/v1.0/state/statestore", &json, &stale);
    assert_eq!(
        (status, error_code(&text).as_str()),
        (409, "ERR_STATE_SAVE"),
        "{text}"
    );
    let bad = r#"[{"key":"h1","value":1,"etag":"abc"}]"#;
    let (status, _, text) = http(addr, "POST", "/v1.0/state/statestore", &json, bad);
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "ERR_STATE_SAVE"),
        "{text}"
    );
    // Malformed body, `||` in a key, unknown store.
    let (status, _, text) = http(addr, "POST", "/v1.0/state/statestore", &json, "{");
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let (status, _, text) = http(addr, "GET", "/v1.0/state/statestore/a%7C%7Cb", &[], "");
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let (status, _, text) = http(addr, "GET", "/v1.0/state/nope/k", &[], "");
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "ERR_STATE_STORE_NOT_FOUND")
    );

    // Bulk get: data as JSON, missing keys without data.
    let (status, _, text) = http(
        addr,
        "POST",
        "/v1.0/state/statestore/bulk",
        &json,
        r#"{"keys":["h1","h2","absent"]}"#,
    );
    assert_eq!(status, 200);
    let items: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(items[0]["key"], "h1");
    assert_eq!(items[0]["data"]["a"], "<x>");
    assert_eq!(items[1]["data"], "Bruce Wayne");
    assert!(items[2].get("data").is_none(), "{text}");

    // Transaction: 204; empty → 204 without calling; too many → 400; unknown op → 400.
    let tx = r#"{"operations":[{"operation":"upsert","request":{"key":"h3","value":{"city":"Rome"}}},
                               {"operation":"delete","request":{"key":"h2"}}]}"#;
    let (status, _, text) = http(
        addr,
        "POST",
        "/v1.0/state/statestore/transaction",
        &json,
        tx,
    );
    assert_eq!(status, 204, "{text}");
    let (status, _, _) = http(addr, "GET", "/v1.0/state/statestore/h2", &[], "");
    assert_eq!(status, 204);
    let (status, _, _) = http(
        addr,
        "POST",
        "/v1.0/state/statestore/transaction",
        &json,
        r#"{"operations":[]}"#,
    );
    assert_eq!(status, 204);
    let ops: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"operation":"upsert","request":{{"key":"m{i}","value":1}}}}"#))
        .collect();
    let (status, _, text) = http(
        addr,
        "POST",
        "/v1.0/state/statestore/transaction",
        &json,
        &format!(r#"{{"operations":[{}]}}"#, ops.join(",")),
    );
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS")
    );
    let (status, _, text) = http(
        addr,
        "POST",
        "/v1.0/state/statestore/transaction",
        &json,
        r#"{"operations":[{"operation":"merge","request":{"key":"x","value":1}}]}"#,
    );
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "ERR_NOT_SUPPORTED_STATE_OPERATION")
    );

    // Delete with If-Match: stale → 409 ERR_STATE_DELETE; right → 204.
    let (_, headers, _) = http(addr, "GET", "/v1.0/state/statestore/h3", &[], "");
    let h3 = headers["etag"].clone();
    let (status, _, text) = http(
        addr,
        "DELETE",
        "/v1.0/state/statestore/h3",
        &[("If-Match", "999999")],
        "",
    );
    assert_eq!(
        (status, error_code(&text).as_str()),
        (409, "ERR_STATE_DELETE")
    );
    let (status, _, _) = http(
        addr,
        "DELETE",
        "/v1.0/state/statestore/h3",
        &[("If-Match", &h3)],
        "",
    );
    assert_eq!(status, 204);

    // Query: 200 with results, 204 when empty, 400 for an invalid filter.
    let (status, _, text) = http(
        addr,
        "POST",
        "/v1.0-alpha1/state/statestore/query",
        &json,
        r#"{"filter":{"EQ":{"b":1}}}"#,
    );
    assert_eq!(status, 200, "{text}");
    let result: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(result["results"][0]["key"], "h1");
    let (status, _, _) = http(
        addr,
        "PUT",
        "/v1.0-alpha1/state/statestore/query",
        &json,
        r#"{"filter":{"EQ":{"b":42}}}"#,
    );
    assert_eq!(status, 204);
    let (status, _, text) = http(
        addr,
        "POST",
        "/v1.0-alpha1/state/statestore/query",
        &json,
        r#"{"filter":{"LIKE":{"b":1}}}"#,
    );
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );

    // Metadata and an unserved building block.
    let (status, _, text) = http(addr, "GET", "/v1.0/metadata", &[], "");
    assert_eq!(status, 200);
    let metadata: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(metadata["id"], "myapp");
    assert_eq!(metadata["components"][1]["name"], "statestore");
    let (status, _, text) = http(addr, "POST", "/v1.0/publish/pubsub/orders", &json, "{}");
    assert_eq!(status, 501);
    assert!(text.contains("pub/sub"), "{text}");
}

#[test]
fn components_that_cannot_load_stop_the_sidecar_clearly() {
    let server = Server::start();
    let resources = tempfile::tempdir().unwrap();
    std::fs::write(
        resources.path().join("c.yaml"),
        "kind: Component\nmetadata: {name: s}\nspec: {type: state.nosuch, version: v1}\n",
    )
    .unwrap();
    let err = spawn_sidecar(resources.path(), &server.socket_folder()).unwrap_err();
    assert!(
        err.contains("couldn't find state store state.nosuch/v1"),
        "{err}"
    );
    std::fs::write(
        resources.path().join("c.yaml"),
        "kind: Component\nmetadata: {name: s}\nspec: {type: state.nosuch, ignoreErrors: true}\n",
    )
    .unwrap();
    let (mut child, _, _) = spawn_sidecar(resources.path(), &server.socket_folder())
        .expect("ignoreErrors lets the sidecar start without the component");
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(
        resources.path().join("c.yaml"),
        "kind: Component\nmetadata: {name: s}\nspec: {type: state.roost, version: v2}\n",
    )
    .unwrap();
    let err = spawn_sidecar(resources.path(), &server.socket_folder()).unwrap_err();
    assert!(err.contains("use version v1"), "{err}");
}

/// The Python interpreter that has the `dapr` SDK: `ROOST_PYTHON`, else `python3` if it can
/// import it.
fn python_with_dapr() -> Option<PathBuf> {
    let candidate = std::env::var_os("ROOST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let ok = Command::new(&candidate)
        .args(["-c", "import dapr.clients"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

#[test]
fn python_sdk_end_to_end() {
    let Some(python) = python_with_dapr() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide the Python dapr SDK (set ROOST_PYTHON to a python that has it)"
        );
        eprintln!("skipped: no python with the `dapr` SDK (set ROOST_PYTHON)");
        return;
    };
    let sidecar = Sidecar::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python_sdk.py");
    let grpc_port = sidecar.grpc.rsplit(':').next().unwrap();
    let http_port = sidecar.http.rsplit(':').next().unwrap();
    let output = Command::new(python)
        .arg(script)
        .arg("statestore")
        .env("DAPR_GRPC_PORT", grpc_port)
        .env("DAPR_HTTP_PORT", http_port)
        .env("DAPR_HEALTH_TIMEOUT", "20")
        .env_remove("DAPR_GRPC_ENDPOINT")
        .env_remove("DAPR_HTTP_ENDPOINT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python SDK run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("python sdk: ok"), "{stdout}");
}
