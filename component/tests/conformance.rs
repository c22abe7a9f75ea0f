//! The Dapr state conformance scenarios (`docs/dapr.md`, "Dapr's state conformance suite") that
//! apply to Roost's features, run over the component socket exactly as daprd calls it:
//! reflection v1alpha listing, `Init` with metadata and `x-component-instance`, `Features`, then
//! the operations, checking exact gRPC codes and error details.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tonic::Code;

const BASE: &str = "myapp||7f3c9e5a1b2d4c6e8f0a";

fn key(suffix: &str) -> String {
    format!("{BASE}{suffix}")
}

/// A test key for encryption at rest (64 hex characters, as `encryptionKey` takes it).
const TEST_KEY: &str = "5e1f0c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

/// The instance configurations every scenario runs against.
const PROFILES: &[(&str, &[(&str, &str)])] = &[
    ("plain", &[]),
    (
        "sealed",
        &[
            ("compression", "zstd"),
            ("compressionMinSize", "1"),
            ("encryptionKey", TEST_KEY),
        ],
    ),
];

/// Discovery, Init and Features as daprd does them; returns the instance's client.
async fn daprd_session(server: &Server, instance: &str, init: &[(&str, &str)]) -> Daprd {
    let services = roost_component::doctor::client::list_services_v1alpha(server.channel().await)
        .await
        .expect("reflection v1alpha");
    for service in [
        "dapr.proto.components.v1.StateStore",
        "dapr.proto.components.v1.TransactionalStateStore",
        "dapr.proto.components.v1.QueriableStateStore",
        "dapr.proto.components.v1.TransactionalStoreMultiMaxSize",
    ] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} missing from {services:?}"
        );
    }
    let mut daprd = server.daprd(instance).await;
    let mut metadata = vec![
        ("actorStateStore", "true"),
        ("keyPrefix", "appid"),
        ("outboxPublishPubsub", "pubsub"),
    ];
    metadata.extend_from_slice(init);
    daprd.init(&metadata).await.expect("Init");
    let mut features = daprd.features().await;
    features.sort();
    assert_eq!(features, ["ETAG", "QUERY_API", "TRANSACTIONAL", "TTL"]);
    daprd
}

/// The value fixtures of §1.2 as the Go conformance suite hands them to a store: JSON for
/// non-byte values, bytes verbatim.
fn fixtures() -> Vec<(String, Vec<u8>, bool)> {
    let proto_minus_one = vec![
        0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    vec![
        (key("-int"), b"123".to_vec(), false),
        (key("-bool"), b"true".to_vec(), false),
        (key("-bytes"), vec![0x01], false),
        (
            key("-string-with-json"),
            br#""{\"a\":\"b\"}""#.to_vec(),
            false,
        ),
        (key("-string"), b"\"hello world\"".to_vec(), false),
        (key("-empty-string"), b"\"\"".to_vec(), false),
        (
            key("-struct"),
            format!(r#"{{"message":"test{BASE}"}}"#).into_bytes(),
            true,
        ),
        (
            key("-struct-operations"),
            format!(r#"{{"message":"{BASE}message","product":{{"value":15}},"status":"ACTIVE"}}"#)
                .into_bytes(),
            true,
        ),
        (
            key("-struct-operations-inactive"),
            format!(
                r#"{{"message":"{BASE}message","product":{{"value":12}},"status":"INACTIVE"}}"#
            )
            .into_bytes(),
            true,
        ),
        (
            key("-struct-2"),
            format!(r#"{{"message":"{BASE}test"}}"#).into_bytes(),
            true,
        ),
        (key("-struct-with-int"), br#"{"message":42}"#.to_vec(), true),
        (key("-to-be-deleted"), b"\"to be deleted\"".to_vec(), false),
        (key("-proto"), proto_minus_one, false),
    ]
}

#[tokio::test]
async fn set_get_delete_and_bulk_scenarios() {
    // Every scenario runs twice: on a plain instance and on one with compression and
    // encryption at rest.
    for (profile, init) in PROFILES {
        let server = Server::start();
        let mut daprd = daprd_session(&server, profile, init).await;

        // Rows 3–5: set and get every fixture; bytes identical.
        for (k, value, json) in fixtures() {
            let mut request = set(&k, value);
            if json {
                request = with_metadata(request, &[("contentType", "application/json")]);
            }
            daprd.set(request).await.unwrap();
        }
        for (k, value, json) in fixtures() {
            let got = daprd.get(&k).await.unwrap();
            assert_eq!(got.data.as_slice(), value.as_slice(), "{k}");
            assert!(!got.etag.unwrap().value.is_empty());
            assert!(
                !got.metadata.contains_key("ttlExpireTime"),
                "T4: no TTL, no expire time"
            );
            if json {
                assert_eq!(got.content_type, "application/json");
            }
        }

        // Row 7: delete, including keys never written.
        for suffix in [
            "-to-be-deleted",
            "-trx-to-be-deleted",
            "-trx-to-be-deleted-too",
        ] {
            daprd.delete(delete(&key(suffix))).await.unwrap();
            let got = daprd.get(&key(suffix)).await.unwrap();
            assert!(
                got.data.is_empty() && got.etag.is_none(),
                "not found = empty response"
            );
        }

        // Rows 8–11: bulk.
        let bulk = [
            (key("-bulk-int"), b"123".to_vec()),
            (key("-bulk-bool"), b"true".to_vec()),
            (key("-bulk-bytes"), vec![0x01]),
            (key("-bulk-string"), b"\"hello world\"".to_vec()),
            (key("-bulk-struct"), br#"{"message":"test"}"#.to_vec()),
            (key("-bulk-to-be-deleted"), b"\"x\"".to_vec()),
            (key("-bulk-to-be-deleted-too"), b"\"y\"".to_vec()),
        ];
        daprd
            .bulk_set(bulk.iter().map(|(k, v)| set(k, v.clone())).collect())
            .await
            .unwrap();
        let keys: Vec<&str> = bulk.iter().map(|(k, _)| k.as_str()).collect();
        let items = daprd.bulk_get(&keys).await.unwrap();
        assert_eq!(items.len(), 7);
        for ((k, v), item) in bulk.iter().zip(&items) {
            assert_eq!(&item.key, k, "request order, keys echoed");
            assert_eq!(item.data.as_slice(), v.as_slice());
            assert!(item.error.is_empty());
        }
        let items = daprd.bulk_get(&["doesnotexist", &bulk[0].0]).await.unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].key, "doesnotexist");
        assert!(items[0].data.is_empty() && items[0].etag.is_none() && items[0].error.is_empty());
        assert_eq!(items[1].data.as_slice(), b"123");
        daprd
            .bulk_delete(vec![delete(&bulk[5].0), delete(&bulk[6].0)])
            .await
            .unwrap();
        for (k, _) in &bulk[5..] {
            assert!(daprd.get(k).await.unwrap().data.is_empty());
        }
    }
}

#[tokio::test]
async fn transaction_scenarios() {
    // Every scenario runs twice: on a plain instance and on one with compression and
    // encryption at rest.
    for (profile, init) in PROFILES {
        let server = Server::start();
        let mut daprd = daprd_session(&server, profile, init).await;
        assert_eq!(daprd.multi_max_size().await.unwrap(), 0, "0 = unlimited");

        // Row 12, four groups.
        daprd
            .transact(vec![
                Op::Set(set(&key("-trx-int"), b"123".to_vec())),
                Op::Set(set(&key("-trx-bool"), b"true".to_vec())),
                Op::Set(set(&key("-trx-bytes"), vec![0x01])),
                Op::Set(set(&key("-trx-string"), b"\"hello world\"".to_vec())),
                Op::Set(set(&key("-trx-to-be-deleted"), b"\"x\"".to_vec())),
            ])
            .await
            .unwrap();
        assert_eq!(
            daprd.get(&key("-trx-bytes")).await.unwrap().data.as_slice(),
            [0x01]
        );
        assert_eq!(
            daprd
                .get(&key("-trx-to-be-deleted"))
                .await
                .unwrap()
                .data
                .as_slice(),
            b"\"x\""
        );
        daprd
            .transact(vec![
                Op::Set(set(&key("-trx-struct"), br#"{"message":"test"}"#.to_vec())),
                Op::Delete(delete(&key("-trx-to-be-deleted"))),
            ])
            .await
            .unwrap();
        assert!(
            daprd
                .get(&key("-trx-to-be-deleted"))
                .await
                .unwrap()
                .data
                .is_empty()
        );
        assert_eq!(
            daprd
                .get(&key("-trx-struct"))
                .await
                .unwrap()
                .data
                .as_slice(),
            br#"{"message":"test"}"#
        );
        daprd
            .transact(vec![Op::Set(set(
                &key("-trx-to-be-deleted-too"),
                b"\"y\"".to_vec(),
            ))])
            .await
            .unwrap();
        assert_eq!(
            daprd
                .get(&key("-trx-to-be-deleted-too"))
                .await
                .unwrap()
                .data
                .as_slice(),
            b"\"y\""
        );
        daprd
            .transact(vec![Op::Delete(delete(&key("-trx-to-be-deleted-too")))])
            .await
            .unwrap();
        assert!(
            daprd
                .get(&key("-trx-to-be-deleted-too"))
                .await
                .unwrap()
                .data
                .is_empty()
        );

        // Row 13: delete of a non-existent key in a transaction.
        daprd
            .transact(vec![Op::Delete(delete("non-existent-key"))])
            .await
            .unwrap();

        // Row 14: transaction-order.
        daprd
            .set(set("key1", b"\"value1\"".to_vec()))
            .await
            .unwrap();
        daprd.delete(delete("key2")).await.unwrap();
        daprd.delete(delete("key3")).await.unwrap();
        daprd
            .transact(vec![
                Op::Delete(delete("key1")),
                Op::Set(set("key2", b"\"value2\"".to_vec())),
                Op::Delete(delete("key2")),
                Op::Set(set("key3", b"\"value3\"".to_vec())),
            ])
            .await
            .unwrap();
        assert!(daprd.get("key1").await.unwrap().data.is_empty());
        assert!(daprd.get("key2").await.unwrap().data.is_empty());
        assert_eq!(
            daprd.get("key3").await.unwrap().data.as_slice(),
            b"\"value3\""
        );

        // Atomicity: a failing op (stale etag) rolls the whole transaction back.
        let etag = daprd.etag("key3").await;
        let err = daprd
            .transact(vec![
                Op::Set(set("atomic-a", b"1".to_vec())),
                Op::Set(with_etag(set("key3", b"\"changed\"".to_vec()), "9999999")),
            ])
            .await
            .unwrap_err();
        assert_etag_error(&err, Code::FailedPrecondition);
        assert!(err.message().contains("operation 1"), "{}", err.message());
        assert!(daprd.get("atomic-a").await.unwrap().data.is_empty());
        assert_eq!(daprd.etag("key3").await, etag);

        // Zero operations (the gRPC API may send it): OK.
        daprd.transact(vec![]).await.unwrap();
    }
}

#[tokio::test]
async fn etag_scenarios() {
    // Every scenario runs twice: on a plain instance and on one with compression and
    // encryption at rest.
    for (profile, init) in PROFILES {
        let server = Server::start();
        let mut daprd = daprd_session(&server, profile, init).await;
        let k = |n: u32| key(&format!("-etag{n}"));
        // E1.
        daprd
            .bulk_set(
                (1..=4)
                    .map(|n| set(&k(n), b"\"first-value\"".to_vec()))
                    .collect(),
            )
            .await
            .unwrap();
        // E2.
        let etag1 = daprd.etag(&k(1)).await;
        let items = daprd.bulk_get(&[&k(2), &k(3), &k(4)]).await.unwrap();
        let etags: Vec<String> = items
            .iter()
            .map(|i| i.etag.clone().unwrap().value)
            .collect();
        assert!(etags.iter().all(|e| !e.is_empty()));
        // E3: bad (numeric) etag → mismatch; non-numeric → invalid.
        let err = daprd
            .set(with_etag(
                set(&k(1), b"\"second-value\"".to_vec()),
                "9999999",
            ))
            .await
            .unwrap_err();
        assert_etag_error(&err, Code::FailedPrecondition);
        let err = daprd
            .set(with_etag(
                set(&k(1), b"\"second-value\"".to_vec()),
                "bad-etag",
            ))
            .await
            .unwrap_err();
        assert_etag_error(&err, Code::InvalidArgument);
        // E4.
        daprd
            .set(with_etag(set(&k(1), b"\"second-value\"".to_vec()), &etag1))
            .await
            .unwrap();
        let got = daprd.get(&k(1)).await.unwrap();
        assert_eq!(got.data.as_slice(), b"\"second-value\"");
        let new_etag1 = got.etag.unwrap().value;
        assert_ne!(new_etag1, etag1);
        // E5: bulk set, one bad etag: that item fails with a mismatch, the other is applied.
        let err = daprd
            .bulk_set(vec![
                with_etag(set(&k(2), b"\"second-value\"".to_vec()), "9999999"),
                with_etag(set(&k(3), b"\"second-value\"".to_vec()), &etags[1]),
            ])
            .await
            .unwrap_err();
        assert_etag_error(&err, Code::FailedPrecondition);
        assert_eq!(daprd.etag(&k(2)).await, etags[0], "key2 unchanged");
        let got3 = daprd.get(&k(3)).await.unwrap();
        assert_eq!(got3.data.as_slice(), b"\"second-value\"");
        let etag3 = got3.etag.unwrap().value;
        assert_ne!(etag3, etags[1]);
        // E6.
        daprd
            .bulk_set(vec![
                with_etag(set(&k(2), b"\"third-value\"".to_vec()), &etags[0]),
                with_etag(set(&k(3), b"\"third-value\"".to_vec()), &etag3),
            ])
            .await
            .unwrap();
        let items = daprd.bulk_get(&[&k(2), &k(3)]).await.unwrap();
        assert!(
            items
                .iter()
                .all(|i| i.data.as_slice() == b"\"third-value\"")
        );
        let etag2 = items[0].etag.clone().unwrap().value;
        let etag3 = items[1].etag.clone().unwrap().value;
        assert_ne!(etag2, etags[0]);
        // E7.
        let err = daprd
            .delete(delete_with_etag(delete(&k(1)), "9999999"))
            .await
            .unwrap_err();
        assert_etag_error(&err, Code::FailedPrecondition);
        // E8.
        daprd
            .delete(delete_with_etag(delete(&k(1)), &new_etag1))
            .await
            .unwrap();
        let got = daprd.get(&k(1)).await.unwrap();
        assert!(got.data.is_empty() && got.etag.is_none());
        // E9: bulk delete, one bad etag: key2 goes, key3 stays with the same etag.
        let err = daprd
            .bulk_delete(vec![
                delete_with_etag(delete(&k(2)), &etag2),
                delete_with_etag(delete(&k(3)), "9999999"),
            ])
            .await
            .unwrap_err();
        assert_etag_error(&err, Code::FailedPrecondition);
        assert!(daprd.get(&k(2)).await.unwrap().data.is_empty());
        assert_eq!(daprd.etag(&k(3)).await, etag3);
        // E10.
        let etag4 = daprd.etag(&k(4)).await;
        daprd
            .bulk_delete(vec![
                delete_with_etag(delete(&k(3)), &etag3),
                delete_with_etag(delete(&k(4)), &etag4),
            ])
            .await
            .unwrap();
        let items = daprd.bulk_get(&[&k(3), &k(4)]).await.unwrap();
        assert!(items.iter().all(|i| i.data.is_empty() && i.etag.is_none()));
        // Empty etag = no etag.
        daprd
            .set(with_etag(set(&k(5), b"1".to_vec()), ""))
            .await
            .unwrap();
        daprd
            .delete(delete_with_etag(delete(&k(5)), ""))
            .await
            .unwrap();
        // An etag on a missing key is a mismatch.
        let err = daprd
            .set(with_etag(set(&k(6), b"1".to_vec()), "1"))
            .await
            .unwrap_err();
        assert_etag_error(&err, Code::FailedPrecondition);
    }
}

#[tokio::test]
async fn first_write_scenarios() {
    // Every scenario runs twice: on a plain instance and on one with compression and
    // encryption at rest.
    for (profile, init) in PROFILES {
        let server = Server::start();
        let mut daprd = daprd_session(&server, profile, init).await;
        // F1, with the etag absent and with an empty etag.
        for (n, empty_etag) in [(1, false), (2, true)] {
            let k = key(&format!("-first-write{n}"));
            daprd.delete(delete(&k)).await.unwrap();
            let mut first = first_write(set(&k, b"testValue1".to_vec()));
            if empty_etag {
                first = with_etag(first, "");
            }
            daprd.set(first.clone()).await.unwrap();
            assert_eq!(daprd.get(&k).await.unwrap().data.as_slice(), b"testValue1");
            let mut second = first_write(set(&k, b"testValue2".to_vec()));
            if empty_etag {
                second = with_etag(second, "");
            }
            let err = daprd.set(second).await.unwrap_err();
            assert_etag_error(&err, Code::FailedPrecondition);
        }
        // F2.
        let k = key("-first-write-etag");
        daprd.set(set(&k, b"v1".to_vec())).await.unwrap();
        let old = daprd.etag(&k).await;
        daprd
            .set(with_etag(first_write(set(&k, b"v2".to_vec())), &old))
            .await
            .unwrap();
        assert_ne!(daprd.etag(&k).await, old);
        let err = daprd
            .set(with_etag(first_write(set(&k, b"v3".to_vec())), &old))
            .await
            .unwrap_err();
        assert_etag_error(&err, Code::FailedPrecondition);
    }
}

#[tokio::test]
async fn ttl_scenarios() {
    // Every scenario runs twice: on a plain instance and on one with compression and
    // encryption at rest.
    for (profile, init) in PROFILES {
        let server = Server::start();
        let mut daprd = daprd_session(&server, profile, init).await;
        // T1: bad ttl → INVALID_ARGUMENT kit error (the app gets a 400).
        for bad in ["foo", "-2", "2147483648", "1.5"] {
            let err = daprd
                .set(with_metadata(
                    set(&key("-ttl-bad"), b"1".to_vec()),
                    &[("ttlInSeconds", bad)],
                ))
                .await
                .unwrap_err();
            assert_kit_error(&err, Code::InvalidArgument, "400");
        }
        // T5a: ttlExpireTime is RFC 3339, about an hour ahead.
        daprd
            .set(with_metadata(
                set(&key("-ttl-hour"), b"\"123\"".to_vec()),
                &[("ttlInSeconds", "3600")],
            ))
            .await
            .unwrap();
        let got = daprd.get(&key("-ttl-hour")).await.unwrap();
        let at = got.metadata.get("ttlExpireTime").expect("ttlExpireTime");
        assert_rfc3339_near(at, 3600);
        // T5c: on BulkGet too.
        daprd
            .set(with_metadata(
                set(&key("-ttl-hour2"), b"\"234\"".to_vec()),
                &[("ttlInSeconds", "3600")],
            ))
            .await
            .unwrap();
        let items = daprd
            .bulk_get(&[&key("-ttl-hour"), &key("-ttl-hour2")])
            .await
            .unwrap();
        assert_eq!(items[0].data.as_slice(), b"\"123\"");
        assert_eq!(items[1].data.as_slice(), b"\"234\"");
        for item in &items {
            assert_rfc3339_near(
                item.metadata.get("ttlExpireTime").expect("ttlExpireTime"),
                3600,
            );
        }
        // T5b: -1 and absent clear the TTL.
        let k = key("-ttl-clear");
        daprd
            .set(with_metadata(
                set(&k, b"1".to_vec()),
                &[("ttlInSeconds", "1")],
            ))
            .await
            .unwrap();
        assert!(
            daprd
                .get(&k)
                .await
                .unwrap()
                .metadata
                .contains_key("ttlExpireTime")
        );
        daprd
            .set(with_metadata(
                set(&k, b"1".to_vec()),
                &[("ttlInSeconds", "-1")],
            ))
            .await
            .unwrap();
        assert!(
            !daprd
                .get(&k)
                .await
                .unwrap()
                .metadata
                .contains_key("ttlExpireTime")
        );
        let k2 = key("-ttl-clear2");
        daprd
            .set(with_metadata(
                set(&k2, b"1".to_vec()),
                &[("ttlInSeconds", "1")],
            ))
            .await
            .unwrap();
        daprd.set(set(&k2, b"2".to_vec())).await.unwrap();
        assert!(
            !daprd
                .get(&k2)
                .await
                .unwrap()
                .metadata
                .contains_key("ttlExpireTime")
        );
        // T2: a 1 s TTL: present now, gone within 3 s (polled every 100 ms).
        let k3 = key("-ttl-short");
        daprd
            .set(with_metadata(
                set(&k3, "\"⏱️\"".as_bytes().to_vec()),
                &[("ttlInSeconds", "1")],
            ))
            .await
            .unwrap();
        assert!(!daprd.get(&k3).await.unwrap().data.is_empty());
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if daprd.get(&k3).await.unwrap().data.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a 1 s TTL record still visible after 3 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The cleared TTLs did not expire meanwhile.
        assert_eq!(daprd.get(&k).await.unwrap().data.as_slice(), b"1");
        assert_eq!(daprd.get(&k2).await.unwrap().data.as_slice(), b"2");
    }
}

/// A query as daprd builds it: the filter map holds one operator → `Any` with an empty type
/// URL and the operand's JSON; metadata as the conformance suite sends it.
fn query_request(
    filter_json: &str,
    sort: &[(&str, bool)],
    limit: i64,
    token: &str,
) -> roost_component::proto::QueryRequest {
    use roost_component::proto;
    let filter: serde_json::Value = serde_json::from_str(filter_json).unwrap();
    let filter = filter
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(op, operand)| {
                    (
                        op.clone(),
                        prost_types::Any {
                            type_url: String::new(),
                            value: operand.to_string().into_bytes(),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    proto::QueryRequest {
        query: Some(proto::Query {
            filter,
            sort: sort
                .iter()
                .map(|(key, desc)| proto::Sorting {
                    key: key.to_string(),
                    order: if *desc {
                        proto::sorting::Order::Desc
                    } else {
                        proto::sorting::Order::Asc
                    } as i32,
                })
                .collect(),
            pagination: Some(proto::Pagination {
                limit,
                token: token.to_string(),
            }),
        }),
        metadata: metadata(&[
            ("contentType", "application/json"),
            ("queryIndexName", "qIndx"),
        ]),
    }
}

async fn query(
    daprd: &mut Daprd,
    request: roost_component::proto::QueryRequest,
) -> Result<roost_component::proto::QueryResponse, tonic::Status> {
    let request = roost_component::doctor::client::for_instance(&daprd.instance, request);
    daprd.query.query(request).await.map(|r| r.into_inner())
}

fn query_keys(response: &roost_component::proto::QueryResponse) -> Vec<String> {
    response.items.iter().map(|i| i.key.clone()).collect()
}

/// Conformance Q1–Q4 (§1.4) over the socket, on an instance without indexes and on one with
/// Dapr's `queryIndexes` metadata.
#[tokio::test]
async fn query_scenarios() {
    let server = Server::start();
    let indexes = r#"[{"name":"qIndx","indexes":[{"key":"message","type":"TEXT"},{"key":"product.value","type":"NUMERIC"},{"key":"status","type":"TEXT"}]}]"#;
    for (instance, init) in [
        ("plain", vec![]),
        ("indexed", vec![("queryIndexes", indexes)]),
    ] {
        let mut daprd = server.daprd(instance).await;
        daprd.init(&init).await.unwrap();
        for (k, value, json) in fixtures() {
            let mut request = set(&k, value);
            if json {
                request = with_metadata(request, &[("contentType", "application/json")]);
            }
            daprd.set(request).await.unwrap();
        }
        let q1 = format!(
            r#"{{"OR":[{{"EQ":{{"message":"dummy"}}}},{{"IN":{{"message":["test{BASE}","dummy"]}}}}]}}"#
        );
        let q2 = format!(
            r#"{{"AND":[{{"EQ":{{"message":"{BASE}message"}}}},{{"GTE":{{"product.value":10}}}},{{"LT":{{"product.value":20}}}},{{"NEQ":{{"status":"INACTIVE"}}}}]}}"#
        );
        let q3 = format!(
            r#"{{"OR":[{{"AND":[{{"EQ":{{"message":"{BASE}message"}}}},{{"GT":{{"product.value":11.1}}}},{{"EQ":{{"status":"INACTIVE"}}}}]}},{{"AND":[{{"EQ":{{"message":"{BASE}message"}}}},{{"LTE":{{"product.value":0.5}}}},{{"EQ":{{"status":"ACTIVE"}}}}]}}]}}"#
        );
        let q4 = format!(
            r#"{{"OR":[{{"EQ":{{"message":"{BASE}test"}}}},{{"IN":{{"message":["test{BASE}","dummy"]}}}}]}}"#
        );
        for (filter, expected) in [
            (q1, vec![key("-struct")]),
            (q2, vec![key("-struct-operations")]),
            (q3, vec![key("-struct-operations-inactive")]),
            (q4, vec![key("-struct"), key("-struct-2")]),
        ] {
            let response = query(&mut daprd, query_request(&filter, &[], 0, ""))
                .await
                .unwrap();
            assert_eq!(query_keys(&response), expected, "{instance}: {filter}");
            assert!(response.token.is_empty());
            for item in &response.items {
                let (_, value, _) = fixtures()
                    .into_iter()
                    .find(|(k, _, _)| *k == item.key)
                    .unwrap();
                assert_eq!(item.data.as_slice(), value.as_slice());
                assert_eq!(
                    item.etag.as_ref().unwrap().value,
                    daprd.etag(&item.key).await
                );
            }
        }
        // Sort and pages with a token, over the socket.
        let mut token = String::new();
        let mut seen = Vec::new();
        loop {
            let response = query(
                &mut daprd,
                query_request(
                    r#"{"GTE":{"product.value":0}}"#,
                    &[("product.value", true)],
                    1,
                    &token,
                ),
            )
            .await
            .unwrap();
            seen.extend(query_keys(&response));
            if response.token.is_empty() {
                break;
            }
            token = response.token;
        }
        assert_eq!(
            seen,
            [
                key("-struct-operations"),
                key("-struct-operations-inactive")
            ]
        );
        // Malformed queries are kit errors with HTTP 400.
        for bad in [
            r#"{"AND":[{"EQ":{"a":1}}]}"#,
            r#"{"EQ":{"a":1,"b":2}}"#,
            r#"{"IN":{"a":1}}"#,
        ] {
            let err = query(&mut daprd, query_request(bad, &[], 0, ""))
                .await
                .unwrap_err();
            assert_kit_error(&err, Code::InvalidArgument, "400");
        }
        let err = query(&mut daprd, query_request("{}", &[], 0, "garbage-token"))
            .await
            .unwrap_err();
        assert_kit_error(&err, Code::InvalidArgument, "400");
    }
}

/// A query without a limit over more than 4 MiB of matches returns pages under daprd's
/// receive limit, with tokens, and every row once.
#[tokio::test]
async fn query_pages_stay_under_daprds_limit() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[]).await.unwrap();
    let pad = "x".repeat(500 * 1024);
    for i in 0..12 {
        daprd
            .set(set(
                &format!("doc{i:02}"),
                format!(r#"{{"i":{i},"pad":"{pad}"}}"#).into_bytes(),
            ))
            .await
            .unwrap();
    }
    let mut token = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let response = query(
            &mut daprd,
            query_request(r#"{"GTE":{"i":0}}"#, &[], 0, &token),
        )
        .await
        .unwrap();
        assert!(prost::Message::encoded_len(&response) < 4 * 1024 * 1024);
        seen.extend(query_keys(&response));
        pages += 1;
        if response.token.is_empty() {
            break;
        }
        token = response.token;
    }
    assert!(pages >= 2, "6 MiB of rows need at least two pages");
    assert_eq!(
        seen,
        (0..12).map(|i| format!("doc{i:02}")).collect::<Vec<_>>()
    );
}

/// A bulk get whose answer daprd could not receive (over its 4 MiB per message) is refused
/// with a kit error naming the size, and the same keys in two halves are answered.
#[tokio::test]
async fn a_bulk_get_over_daprds_limit_is_refused() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[]).await.unwrap();
    let keys: Vec<String> = (0..6).map(|i| format!("big{i}")).collect();
    for key in &keys {
        daprd.set(set(key, vec![b'v'; 900 * 1024])).await.unwrap();
    }
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    let err = daprd.bulk_get(&all).await.unwrap_err();
    assert_kit_error(&err, Code::ResourceExhausted, "413");
    assert!(
        err.message().contains("BulkGet response would be") && err.message().contains("4194304"),
        "{err:?}"
    );
    for half in all.chunks(3) {
        let items = daprd.bulk_get(half).await.unwrap();
        assert!(items.iter().all(|i| i.data.len() == 900 * 1024), "{half:?}");
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` and checks it is `ahead` seconds from now, ±10 minutes.
fn assert_rfc3339_near(text: &str, ahead: i64) {
    assert_eq!(text.len(), 20, "{text}");
    assert!(text.ends_with('Z') && &text[10..11] == "T", "{text}");
    let num = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    // Days from civil (Howard Hinnant), to compare with the system clock.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let unix = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (unix - (now + ahead)).abs() < 600,
        "{text} is not ~{ahead}s ahead"
    );
}
