//! The app-facing Dapr state API end to end, under real daprd and under `roost-sidecar`: the
//! real `roost serve` on a socket, the front (an unmodified daprd built by
//! `tests/dapr/build.sh`, or `roost-sidecar`) loading the same component YAML and calling the
//! component, and clients nobody here wrote — the Rust `dapr` crate and the Python `dapr` SDK —
//! plus the HTTP API's status codes and error bodies. Each script runs against both fronts;
//! the daprd runs skip (saying why) where no daprd was built, and fail under `CI=true`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use dapr::client::ClientOptions;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as runtime;
use runtime::dapr_client::DaprClient;
use support::Server;
use support::fronts::{self, Front, Kind, error_code, http, start_sidecar};
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

/// The resources for daprd: the sidecar's, without the pub/sub component (daprd would try to
/// reach a Redis for it; the sidecar skips it, which its own test checks).
fn daprd_yaml() -> String {
    let cut = STATE_YAML.rfind("---").unwrap();
    STATE_YAML[..cut].to_string()
}

/// Starts `kind` in front of a fresh `roost serve` with the test components, or `None` when
/// that kind cannot run here (no daprd built, not CI).
fn start(kind: Kind, test: &str) -> Option<Front> {
    let daprd = match kind {
        Kind::Daprd => Some(fronts::daprd_binary(test)?),
        Kind::Sidecar => None,
    };
    let yaml = match kind {
        Kind::Daprd => daprd_yaml(),
        Kind::Sidecar => STATE_YAML.to_string(),
    };
    let server = Server::start();
    let secrets_file = "RESOURCES/../secrets.json";
    let yaml = yaml.replace("SECRETS_FILE", secrets_file);
    let front = Front::start_with_files(
        kind,
        daprd.as_deref(),
        server,
        "myapp",
        &yaml,
        &[(
            "secrets.json",
            serde_json::json!({
                "indexes": r#"[{"name":"by-city","indexes":[{"key":"city","type":"TEXT"}]}]"#
            })
            .to_string(),
        )],
    );
    Some(front)
}

async fn sdk(front: &Front) -> dapr::Client<dapr::client::TonicClientWithAuth> {
    let options = ClientOptions::new()
        .with_address(front.grpc_endpoint())
        .with_timeout(Duration::from_secs(10));
    dapr::Client::from_options(options).await.unwrap()
}

async fn raw(front: &Front) -> DaprClient<tonic::transport::Channel> {
    DaprClient::connect(front.grpc_endpoint()).await.unwrap()
}

/// The reason of a gRPC error's `ErrorInfo` detail.
fn error_reason(status: &tonic::Status) -> String {
    use prost::Message;
    let inner = tonic_types::pb::Status::decode(status.details()).unwrap_or_default();
    inner
        .details
        .iter()
        .filter(|any| any.type_url.ends_with("google.rpc.ErrorInfo"))
        .filter_map(|any| tonic_types::pb::ErrorInfo::decode(any.value.as_slice()).ok())
        .map(|info| info.reason)
        .next()
        .unwrap_or_default()
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
async fn rust_sdk_end_to_end_under_daprd() {
    let Some(front) = start(Kind::Daprd, "rust_sdk_end_to_end_under_daprd") else {
        return;
    };
    rust_sdk_script(&front).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_end_to_end_under_the_sidecar() {
    let front = start(Kind::Sidecar, "").unwrap();
    rust_sdk_script(&front).await;
}

async fn rust_sdk_script(sidecar: &Front) {
    let mut client = sdk(sidecar).await;
    let mut raw = raw(sidecar).await;

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
    // daprd's rich error: the reason is in the ErrorInfo detail, not in the message.
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert_eq!(
        error_reason(&too_many),
        "DAPR_STATE_TOO_MANY_TRANSACTIONS",
        "{too_many:?}"
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
    assert_eq!(
        error_reason(&unknown),
        "DAPR_STATE_NOT_FOUND",
        "{unknown:?}"
    );
    let metadata = client.get_metadata().await.unwrap();
    assert_eq!(metadata.id, "myapp");
    let mut names: Vec<&str> = metadata
        .registered_components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    names.sort();
    let statestore = metadata
        .registered_components
        .iter()
        .find(|c| c.name == "statestore")
        .unwrap();
    assert_eq!(statestore.r#type, "state.roost");
    assert!(statestore.capabilities.iter().any(|c| c == "ACTOR"));
    if sidecar.kind == Kind::Daprd {
        // daprd lists every component it loaded, the secret store too.
        assert_eq!(names, ["localsecrets", "shared", "statestore"]);
        return;
    }
    assert_eq!(
        names,
        ["shared", "statestore"],
        "pubsub and the secret store are not listed"
    );
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
fn http_api_codes_and_bodies_under_daprd() {
    if let Some(front) = start(Kind::Daprd, "http_api_codes_and_bodies_under_daprd") {
        http_script(&front);
    }
}

#[test]
fn http_api_codes_and_bodies_under_the_sidecar() {
    http_script(&start(Kind::Sidecar, "").unwrap());
}

fn http_script(sidecar: &Front) {
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
    // daprd parses the query itself and answers a bad one as a failed query.
    assert_eq!(
        (status, error_code(&text).as_str()),
        (500, "ERR_STATE_QUERY")
    );

    // Metadata and an unserved building block.
    let (status, _, text) = http(addr, "GET", "/v1.0/metadata", &[], "");
    assert_eq!(status, 200);
    let metadata: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(metadata["id"], "myapp");
    let components = metadata["components"].as_array().unwrap();
    assert!(
        components
            .iter()
            .any(|c| c["name"] == "statestore" && c["type"] == "state.roost"),
        "{text}"
    );
    if sidecar.kind == Kind::Daprd {
        return;
    }
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
    let err = start_sidecar("myapp", resources.path(), &server.socket_folder())
        .err()
        .unwrap();
    assert!(
        err.contains("couldn't find state store state.nosuch/v1"),
        "{err}"
    );
    std::fs::write(
        resources.path().join("c.yaml"),
        "kind: Component\nmetadata: {name: s}\nspec: {type: state.nosuch, ignoreErrors: true}\n",
    )
    .unwrap();
    let sidecar = start_sidecar("myapp", resources.path(), &server.socket_folder())
        .expect("ignoreErrors lets the sidecar start without the component");
    drop(sidecar);
    std::fs::write(
        resources.path().join("c.yaml"),
        "kind: Component\nmetadata: {name: s}\nspec: {type: state.roost, version: v2}\n",
    )
    .unwrap();
    let err = start_sidecar("myapp", resources.path(), &server.socket_folder())
        .err()
        .unwrap();
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
fn python_sdk_end_to_end_under_daprd() {
    python_sdk_script(Kind::Daprd, "python_sdk_end_to_end_under_daprd");
}

#[test]
fn python_sdk_end_to_end_under_the_sidecar() {
    python_sdk_script(Kind::Sidecar, "python_sdk_end_to_end_under_the_sidecar");
}

fn python_sdk_script(kind: Kind, test: &str) {
    let Some(python) = python_with_dapr() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide the Python dapr SDK (set ROOST_PYTHON to a python that has it)"
        );
        eprintln!("skipped: no python with the `dapr` SDK (set ROOST_PYTHON)");
        return;
    };
    let Some(sidecar) = start(kind, test) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python_sdk.py");
    let grpc_port = sidecar.grpc_port();
    let http_port = sidecar.http_port();
    let output = Command::new(python)
        .arg(script)
        .arg("statestore")
        .arg(match kind {
            Kind::Daprd => "daprd",
            Kind::Sidecar => "sidecar",
        })
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

// ---------------------------------------------------------------------------------------------
// The sidecar held to daprd: one script of HTTP and gRPC calls against both, outcome by outcome.

/// What an HTTP call answered, in a form two fronts can be compared by: status, the headers
/// an app reads (`etag`, `content-type`, `metadata.*`, with `ttlExpireTime` reduced to its
/// presence), and the body (an error body's `errorCode` and `message`; other JSON as JSON).
fn http_outcome(
    front: &Front,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let (status, response_headers, text) = http(&front.http, method, path, headers, body);
    let mut shown: Vec<String> = response_headers
        .iter()
        .filter(|(k, _)| {
            k.as_str() == "etag" || k.as_str() == "content-type" || k.starts_with("metadata.")
        })
        .map(|(k, v)| {
            if k.ends_with("ttlexpiretime") {
                format!("{k}=<time>")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    shown.sort();
    let body = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(mut value) => {
            scrub_times(&mut value);
            value.to_string()
        }
        Err(_) => text,
    };
    format!("{status} [{}] {body}", shown.join(" "))
}

/// `ttlExpireTime` values differ between two runs: keep only that they are there.
fn scrub_times(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "ttlExpireTime" {
                    *v = "<time>".into();
                } else {
                    scrub_times(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_times),
        _ => {}
    }
}

/// A gRPC outcome: OK with the response, or the code, message and decoded error details.
fn grpc_outcome<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> String {
    use prost::Message;
    match result {
        Ok(response) => {
            let text = format!("OK {:?}", response.into_inner());
            // Expiry times differ between runs.
            let re_time = text.find("ttlExpireTime").map(|_| ());
            match re_time {
                Some(()) => text
                    .split("\"ttlExpireTime\": \"")
                    .enumerate()
                    .map(|(i, part)| {
                        if i == 0 {
                            part.to_string()
                        } else {
                            format!("<time>{}", &part[part.find('"').unwrap_or(0)..])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\"ttlExpireTime\": \""),
                None => text,
            }
        }
        Err(status) => {
            let mut details = Vec::new();
            if let Ok(inner) = tonic_types::pb::Status::decode(status.details()) {
                for any in inner.details {
                    let name = any
                        .type_url
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let shown = match name.as_str() {
                        "google.rpc.ErrorInfo" => {
                            let info =
                                tonic_types::pb::ErrorInfo::decode(any.value.as_slice()).unwrap();
                            let mut meta: Vec<_> = info.metadata.into_iter().collect();
                            meta.sort();
                            format!("ErrorInfo{{{} {} {meta:?}}}", info.reason, info.domain)
                        }
                        "google.rpc.ResourceInfo" => {
                            let info = tonic_types::pb::ResourceInfo::decode(any.value.as_slice())
                                .unwrap();
                            format!(
                                "ResourceInfo{{{} {} {} {}}}",
                                info.resource_type,
                                info.resource_name,
                                info.owner,
                                info.description
                            )
                        }
                        "google.rpc.BadRequest" => {
                            let info =
                                tonic_types::pb::BadRequest::decode(any.value.as_slice()).unwrap();
                            let fields: Vec<String> = info
                                .field_violations
                                .into_iter()
                                .map(|v| format!("{}: {}", v.field, v.description))
                                .collect();
                            format!("BadRequest{fields:?}")
                        }
                        other => other.to_string(),
                    };
                    details.push(shown);
                }
            }
            format!("{:?} {:?} {details:?}", status.code(), status.message())
        }
    }
}

/// The same calls, in the same order, against one front; returns (step, outcome) pairs.
async fn differential_script(front: &Front) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let json = [("Content-Type", "application/json")];
    let mut step = |name: &str, outcome: String| out.push((name.to_string(), outcome));
    let h = |m: &str, p: &str, hs: &[(&str, &str)], b: &str| http_outcome(front, m, p, hs, b);

    step("healthz", h("GET", "/v1.0/healthz/outbound", &[], ""));
    step(
        "save json and string",
        h(
            "POST",
            "/v1.0/state/statestore",
            &json,
            r#"[{"key":"d1","value":{"b":1,"a":"<x>"}},{"key":"d2","value":"Bruce Wayne"}]"#,
        ),
    );
    step("get json", h("GET", "/v1.0/state/statestore/d1", &[], ""));
    step("get string", h("GET", "/v1.0/state/statestore/d2", &[], ""));
    step(
        "get absent",
        h("GET", "/v1.0/state/statestore/absent", &[], ""),
    );
    step(
        "save raw bytes",
        h(
            "POST",
            "/v1.0/state/statestore",
            &json,
            r#"[{"key":"d3","value":"aGk="}]"#,
        ),
    );
    step(
        "save stale etag",
        h(
            "POST",
            "/v1.0/state/statestore",
            &json,
            r#"[{"key":"d1","value":1,"etag":"999999"}]"#,
        ),
    );
    step(
        "save invalid etag",
        h(
            "POST",
            "/v1.0/state/statestore",
            &json,
            r#"[{"key":"d1","value":1,"etag":"abc"}]"#,
        ),
    );
    step(
        "save first-write existing",
        h(
            "POST",
            "/v1.0/state/statestore",
            &json,
            r#"[{"key":"d1","value":1,"options":{"concurrency":"first-write"}}]"#,
        ),
    );
    step(
        "save first-write new",
        h(
            "POST",
            "/v1.0/state/statestore",
            &json,
            r#"[{"key":"d4","value":4,"options":{"concurrency":"first-write"}}]"#,
        ),
    );
    step(
        "save malformed body",
        h("POST", "/v1.0/state/statestore", &json, "{"),
    );
    step(
        "save empty list",
        h("POST", "/v1.0/state/statestore", &json, "[]"),
    );
    step(
        "save empty key",
        h(
            "POST",
            "/v1.0/state/statestore",
            &json,
            r#"[{"key":"","value":1}]"#,
        ),
    );
    step(
        "save without value",
        h("POST", "/v1.0/state/statestore", &json, r#"[{"key":"d9"}]"#),
    );
    step(
        "get key with ||",
        h("GET", "/v1.0/state/statestore/a%7C%7Cb", &[], ""),
    );
    step("get unknown store", h("GET", "/v1.0/state/nope/k", &[], ""));
    step(
        "bulk get",
        h(
            "POST",
            "/v1.0/state/statestore/bulk",
            &json,
            r#"{"keys":["d1","d2","absent"]}"#,
        ),
    );
    step(
        "bulk get malformed",
        h(
            "POST",
            "/v1.0/state/statestore/bulk",
            &json,
            r#"{"keys":5}"#,
        ),
    );
    step(
        "save with ttl",
        h(
            "POST",
            "/v1.0/state/statestore",
            &json,
            r#"[{"key":"d5","value":5,"metadata":{"ttlInSeconds":"100"}}]"#,
        ),
    );
    step(
        "get with ttl",
        h("GET", "/v1.0/state/statestore/d5", &[], ""),
    );
    step(
        "bulk get with ttl",
        h(
            "POST",
            "/v1.0/state/statestore/bulk",
            &json,
            r#"{"keys":["d5"]}"#,
        ),
    );
    step(
        "save bad ttl",
        h(
            "POST",
            "/v1.0/state/statestore",
            &json,
            r#"[{"key":"d6","value":6,"metadata":{"ttlInSeconds":"soon"}}]"#,
        ),
    );
    step(
        "transaction",
        h(
            "POST",
            "/v1.0/state/statestore/transaction",
            &json,
            r#"{"operations":[{"operation":"upsert","request":{"key":"d7","value":{"city":"Rome"}}},
                            {"operation":"delete","request":{"key":"d2"}}]}"#,
        ),
    );
    step(
        "transaction deleted key",
        h("GET", "/v1.0/state/statestore/d2", &[], ""),
    );
    step(
        "transaction empty",
        h(
            "POST",
            "/v1.0/state/statestore/transaction",
            &json,
            r#"{"operations":[]}"#,
        ),
    );
    let ops: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"operation":"upsert","request":{{"key":"m{i}","value":1}}}}"#))
        .collect();
    step(
        "transaction too many",
        h(
            "POST",
            "/v1.0/state/statestore/transaction",
            &json,
            &format!(r#"{{"operations":[{}]}}"#, ops.join(",")),
        ),
    );
    step(
        "transaction unknown operation",
        h(
            "POST",
            "/v1.0/state/statestore/transaction",
            &json,
            r#"{"operations":[{"operation":"merge","request":{"key":"x","value":1}}]}"#,
        ),
    );
    step(
        "transaction stale etag",
        h(
            "POST",
            "/v1.0/state/statestore/transaction",
            &json,
            r#"{"operations":[{"operation":"upsert","request":{"key":"d8","value":1}},
                            {"operation":"upsert","request":{"key":"d7","value":1,"etag":"999999"}}]}"#,
        ),
    );
    step(
        "transaction stale etag changed nothing",
        h("GET", "/v1.0/state/statestore/d8", &[], ""),
    );
    step(
        "delete stale etag",
        h(
            "DELETE",
            "/v1.0/state/statestore/d7",
            &[("If-Match", "999999")],
            "",
        ),
    );
    step(
        "delete invalid etag",
        h(
            "DELETE",
            "/v1.0/state/statestore/d7",
            &[("If-Match", "abc")],
            "",
        ),
    );
    let (_, headers, _) = http(&front.http, "GET", "/v1.0/state/statestore/d7", &[], "");
    step(
        "delete right etag",
        h(
            "DELETE",
            "/v1.0/state/statestore/d7",
            &[("If-Match", &headers["etag"])],
            "",
        ),
    );
    step(
        "delete absent",
        h("DELETE", "/v1.0/state/statestore/never", &[], ""),
    );
    step(
        "query",
        h(
            "POST",
            "/v1.0-alpha1/state/statestore/query",
            &json,
            r#"{"filter":{"EQ":{"b":1}}}"#,
        ),
    );
    step(
        "query empty",
        h(
            "POST",
            "/v1.0-alpha1/state/statestore/query",
            &json,
            r#"{"filter":{"EQ":{"b":42}}}"#,
        ),
    );
    step(
        "query sorted page",
        h(
            "POST",
            "/v1.0-alpha1/state/statestore/query",
            &json,
            r#"{"filter":{"IN":{"city":["Rome","Oslo"]}},"sort":[{"key":"city","order":"DESC"}],"page":{"limit":1}}"#,
        ),
    );
    step(
        "query invalid filter",
        h(
            "POST",
            "/v1.0-alpha1/state/statestore/query",
            &json,
            r#"{"filter":{"LIKE":{"b":1}}}"#,
        ),
    );
    step(
        "query malformed",
        h("POST", "/v1.0-alpha1/state/statestore/query", &json, "{"),
    );

    // gRPC, through the generated client of the Rust SDK.
    let mut raw = raw(front).await;
    let get = |key: &str| runtime::GetStateRequest {
        store_name: "statestore".into(),
        key: key.into(),
        ..Default::default()
    };
    step("grpc get", grpc_outcome(raw.get_state(get("d1")).await));
    step(
        "grpc get absent",
        grpc_outcome(raw.get_state(get("absent")).await),
    );
    step(
        "grpc get with ttl",
        grpc_outcome(raw.get_state(get("d5")).await),
    );
    step(
        "grpc get bad key",
        grpc_outcome(raw.get_state(get("a||b")).await),
    );
    step(
        "grpc get unknown store",
        grpc_outcome(
            raw.get_state(runtime::GetStateRequest {
                store_name: "nope".into(),
                key: "k".into(),
                ..Default::default()
            })
            .await,
        ),
    );
    let save = |items: Vec<common::StateItem>| runtime::SaveStateRequest {
        store_name: "statestore".into(),
        states: items,
    };
    step(
        "grpc save empty key",
        grpc_outcome(raw.save_state(save(vec![state_item("", b"x", None)])).await),
    );
    step(
        "grpc save empty value",
        grpc_outcome(
            raw.save_state(save(vec![state_item("g0", b"", None)]))
                .await,
        ),
    );
    step(
        "grpc get empty key",
        grpc_outcome(raw.get_state(get("")).await),
    );
    step(
        "grpc save",
        grpc_outcome(
            raw.save_state(save(vec![state_item("g1", b"one", None)]))
                .await,
        ),
    );
    step(
        "grpc save stale etag",
        grpc_outcome(
            raw.save_state(save(vec![state_item("g1", b"x", Some("999999"))]))
                .await,
        ),
    );
    step(
        "grpc save invalid etag",
        grpc_outcome(
            raw.save_state(save(vec![state_item("g1", b"x", Some("abc"))]))
                .await,
        ),
    );
    step(
        "grpc bulk save with one stale etag",
        grpc_outcome(
            raw.save_state(save(vec![
                state_item("g2", b"two", None),
                state_item("g1", b"x", Some("999999")),
            ]))
            .await,
        ),
    );
    step(
        "grpc bulk get",
        grpc_outcome(
            raw.get_bulk_state(runtime::GetBulkStateRequest {
                store_name: "statestore".into(),
                keys: vec!["g1".into(), "g2".into(), "absent".into()],
                ..Default::default()
            })
            .await,
        ),
    );
    let op = |kind: &str, item: common::StateItem| runtime::TransactionalStateOperation {
        operation_type: kind.into(),
        request: Some(item),
    };
    let transaction = |operations| runtime::ExecuteStateTransactionRequest {
        store_name: "statestore".into(),
        operations,
        metadata: HashMap::new(),
    };
    step(
        "grpc transaction stale etag",
        grpc_outcome(
            raw.execute_state_transaction(transaction(vec![
                op("upsert", state_item("g3", b"3", None)),
                op("upsert", state_item("g1", b"x", Some("999999"))),
            ]))
            .await,
        ),
    );
    step(
        "grpc transaction too many",
        grpc_outcome(
            raw.execute_state_transaction(transaction(
                (0..6)
                    .map(|i| op("upsert", state_item(&format!("t{i}"), b"1", None)))
                    .collect(),
            ))
            .await,
        ),
    );
    step(
        "grpc transaction unknown operation",
        grpc_outcome(
            raw.execute_state_transaction(transaction(vec![op(
                "merge",
                state_item("g4", b"4", None),
            )]))
            .await,
        ),
    );
    step(
        "grpc delete stale etag",
        grpc_outcome(
            raw.delete_state(runtime::DeleteStateRequest {
                store_name: "statestore".into(),
                key: "g1".into(),
                etag: Some(common::Etag {
                    value: "999999".into(),
                }),
                ..Default::default()
            })
            .await,
        ),
    );
    step(
        "grpc delete bulk",
        grpc_outcome(
            raw.delete_bulk_state(runtime::DeleteBulkStateRequest {
                store_name: "statestore".into(),
                states: vec![state_item("g1", b"", None), state_item("g2", b"", None)],
            })
            .await,
        ),
    );
    let query = |q: &str| runtime::QueryStateRequest {
        store_name: "statestore".into(),
        query: q.into(),
        metadata: HashMap::new(),
    };
    step(
        "grpc query",
        grpc_outcome(
            raw.query_state_alpha1(query(r#"{"filter":{"EQ":{"b":1}}}"#))
                .await,
        ),
    );
    step(
        "grpc query invalid filter",
        grpc_outcome(
            raw.query_state_alpha1(query(r#"{"filter":{"LIKE":{"b":1}}}"#))
                .await,
        ),
    );
    step(
        "grpc query malformed",
        grpc_outcome(raw.query_state_alpha1(query("{")).await),
    );
    out
}

/// Calls whose error text may differ (README, "What differs"): a body that is not valid JSON is
/// refused with the same status and `errorCode`, but the message is the JSON decoder's own
/// (Go's encoding/json in daprd, serde_json in the sidecar).
const MESSAGE_MAY_DIFFER: [&str; 2] = ["save malformed body", "bulk get malformed"];

/// `outcome` without the error body's `message`.
fn without_message(outcome: &str) -> String {
    let (head, body) = outcome.split_once("] ").unwrap_or((outcome, ""));
    let mut value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("message");
    }
    format!("{head}] {value}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_answers_as_daprd_does() {
    let Some(daprd) = start(Kind::Daprd, "the_sidecar_answers_as_daprd_does") else {
        return;
    };
    let sidecar = start(Kind::Sidecar, "").unwrap();
    let expected = differential_script(&daprd).await;
    let got = differential_script(&sidecar).await;
    let differences: Vec<String> = expected
        .iter()
        .zip(&got)
        .filter(|(a, b)| {
            if MESSAGE_MAY_DIFFER.contains(&a.0.as_str()) {
                without_message(&a.1) != without_message(&b.1)
            } else {
                a.1 != b.1
            }
        })
        .map(|(a, b)| format!("{}:\n  daprd:   {}\n  sidecar: {}", a.0, a.1, b.1))
        .collect();
    assert!(
        differences.is_empty(),
        "{} of {} calls differ:\n{}",
        differences.len(),
        expected.len(),
        differences.join("\n")
    );
}

/// grpcio's default channel to the socket (the socket path as `:authority`), and with the
/// `grpc.default_authority` setting.
#[test]
fn grpcio_reaches_the_socket_with_its_default_channel() {
    let Some(python) = python_with_dapr() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide the Python dapr SDK (and with it grpcio)"
        );
        eprintln!("skipped: no python with the `dapr` SDK (set ROOST_PYTHON)");
        return;
    };
    let server = Server::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpcio_socket.py");
    let output = Command::new(python)
        .arg(script)
        .arg(server.socket_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "grpcio run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("grpcio: ok"), "{stdout}");
}

/// The official Go SDK (`tests/dapr/gosdk`, github.com/dapr/go-sdk), built with the project's Go
/// module, against `kind`.
fn go_sdk_script(kind: Kind, test: &str) {
    let Some(go) = fronts::go_binary(test) else {
        return;
    };
    let Some(front) = start(kind, test) else {
        return;
    };
    let bin = tempfile::tempdir().unwrap();
    let program = bin.path().join("gosdk");
    let build = Command::new(go)
        .args(["build", "-o"])
        .arg(&program)
        .arg("./gosdk")
        .current_dir(fronts::repository_root().join("tests/dapr"))
        .env("CGO_ENABLED", "0")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "go build ./gosdk:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let output = Command::new(&program)
        .env("DAPR_GRPC_ENDPOINT", &front.grpc)
        .env_remove("DAPR_GRPC_PORT")
        .env_remove("DAPR_API_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Go SDK run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("go sdk: ok"), "{stdout}");
}

#[test]
fn go_sdk_end_to_end_under_daprd() {
    go_sdk_script(Kind::Daprd, "go_sdk_end_to_end_under_daprd");
}

#[test]
fn go_sdk_end_to_end_under_the_sidecar() {
    go_sdk_script(Kind::Sidecar, "go_sdk_end_to_end_under_the_sidecar");
}
