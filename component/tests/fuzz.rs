//! gRPC requests end to end: random — often malformed — Dapr component requests sent over
//! the socket to a real `roost serve`. Every answer must be OK or a client error with a
//! documented code (never INTERNAL, UNKNOWN or a dropped connection), and the server must
//! still answer afterwards. (cargo-fuzz needs nightly; proptest runs here in bounded time.)

mod support;

use std::collections::HashMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use roost_component::proto;
use support::*;
use tonic::Code;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z|]{1,8}",
        "\\PC{0,12}",
        Just("k".repeat(5000)),
        prop_oneof![
            Just("1"),
            Just("0"),
            Just("-1"),
            Just("9999999999999999999999"),
            Just("007"),
            Just("bad-etag")
        ]
        .prop_map(String::from),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "\\{\"[a-z]{1,3}\":[0-9]{1,3}\\}".prop_map(String::into_bytes),
        Just(vec![0u8; 70_000]),
    ]
}

fn metadata() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(
        prop_oneof![
            Just("ttlInSeconds".to_string()),
            Just("contentType".to_string()),
            "[a-zA-Z]{1,6}"
        ],
        prop_oneof![text(), Just("60".to_string()), Just("foo".to_string())],
        0..3,
    )
}

fn options() -> impl Strategy<Value = Option<proto::StateOptions>> {
    prop::option::of((-1i32..4, -1i32..4).prop_map(|(concurrency, consistency)| {
        proto::StateOptions {
            concurrency,
            consistency,
        }
    }))
}

fn set_request() -> impl Strategy<Value = proto::SetRequest> {
    (
        text(),
        value(),
        prop::option::of(text()),
        metadata(),
        options(),
        text(),
    )
        .prop_map(
            |(key, value, etag, metadata, options, content_type)| proto::SetRequest {
                key,
                value: value.into(),
                etag: etag.map(|value| proto::Etag { value }),
                metadata,
                options,
                content_type: content_type.chars().take(300).collect(),
            },
        )
}

fn delete_request() -> impl Strategy<Value = proto::DeleteRequest> {
    (text(), prop::option::of(text()), metadata(), options()).prop_map(
        |(key, etag, metadata, options)| proto::DeleteRequest {
            key,
            etag: etag.map(|value| proto::Etag { value }),
            metadata,
            options,
        },
    )
}

#[derive(Debug, Clone)]
enum Call {
    Get(String),
    Set(proto::SetRequest),
    Delete(proto::DeleteRequest),
    BulkGet(Vec<String>),
    BulkSet(Vec<proto::SetRequest>),
    BulkDelete(Vec<proto::DeleteRequest>),
    Transact(Vec<Option<Result<proto::SetRequest, proto::DeleteRequest>>>),
    Query(HashMap<String, Vec<u8>>, Vec<(String, i32)>, i64, String),
    Init(HashMap<String, String>),
}

fn call() -> impl Strategy<Value = Call> {
    let filter_bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..20),
        "\\{\"[a-z.]{0,4}\":[0-9a-z\\[\\]\"]{0,6}\\}".prop_map(String::into_bytes),
        "\\[\\{\"(EQ|IN|AND|X)\":\\{\"a\":1\\}\\}\\]".prop_map(String::into_bytes),
    ];
    prop_oneof![
        text().prop_map(Call::Get),
        set_request().prop_map(Call::Set),
        delete_request().prop_map(Call::Delete),
        prop::collection::vec(text(), 0..4).prop_map(Call::BulkGet),
        prop::collection::vec(set_request(), 0..3).prop_map(Call::BulkSet),
        prop::collection::vec(delete_request(), 0..3).prop_map(Call::BulkDelete),
        prop::collection::vec(
            prop::option::of(prop_oneof![
                set_request().prop_map(Ok),
                delete_request().prop_map(Err)
            ]),
            0..4
        )
        .prop_map(Call::Transact),
        (
            prop::collection::hash_map(
                prop_oneof![
                    Just("EQ".to_string()),
                    Just("AND".to_string()),
                    Just("IN".to_string()),
                    "[A-Z]{1,4}"
                ],
                filter_bytes,
                0..3
            ),
            prop::collection::vec((text(), -1i32..3), 0..3),
            any::<i64>(),
            text(),
        )
            .prop_map(|(f, s, l, t)| Call::Query(f, s, l, t)),
        prop::collection::hash_map(
            prop_oneof![
                Just("durability".to_string()),
                Just("maxValueSize".to_string()),
                Just("queryIndexes".to_string()),
                Just("encryptionKey".to_string()),
                Just("compression".to_string()),
                "[a-zA-Z]{1,8}"
            ],
            text(),
            0..3
        )
        .prop_map(Call::Init),
    ]
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = Server::start();
        runtime().block_on(async {
            let mut daprd = server.daprd("fuzz").await;
            daprd.init(&[("indexedFields", "a")]).await.unwrap();
        });
        server
    })
}

async fn send(daprd: &mut Daprd, call: Call) -> Result<(), tonic::Status> {
    let instance = daprd.instance.clone();
    match call {
        Call::Get(key) => daprd.get(&key).await.map(|_| ()),
        Call::Set(r) => daprd.set(r).await,
        Call::Delete(r) => daprd.delete(r).await,
        Call::BulkGet(keys) => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            daprd.bulk_get(&keys).await.map(|_| ())
        }
        Call::BulkSet(items) => daprd.bulk_set(items).await,
        Call::BulkDelete(items) => daprd.bulk_delete(items).await,
        Call::Transact(ops) => {
            use proto::transactional_state_operation::Request;
            let operations = ops
                .into_iter()
                .map(|op| proto::TransactionalStateOperation {
                    request: op.map(|o| match o {
                        Ok(set) => Request::Set(set),
                        Err(delete) => Request::Delete(delete),
                    }),
                })
                .collect();
            daprd
                .transactional
                .transact(roost_component::doctor::client::for_instance(
                    &instance,
                    proto::TransactionalStateRequest {
                        operations,
                        metadata: HashMap::new(),
                    },
                ))
                .await
                .map(|_| ())
        }
        Call::Query(filter, sort, limit, token) => daprd
            .query
            .query(roost_component::doctor::client::for_instance(
                &instance,
                proto::QueryRequest {
                    query: Some(proto::Query {
                        filter: filter
                            .into_iter()
                            .map(|(k, v)| {
                                (
                                    k,
                                    prost_types::Any {
                                        type_url: String::new(),
                                        value: v,
                                    },
                                )
                            })
                            .collect(),
                        sort: sort
                            .into_iter()
                            .map(|(key, order)| proto::Sorting { key, order })
                            .collect(),
                        pagination: Some(proto::Pagination { limit, token }),
                    }),
                    metadata: HashMap::new(),
                },
            ))
            .await
            .map(|_| ()),
        Call::Init(properties) => {
            // On its own instance, so the shared one keeps its configuration.
            let mut other = server().daprd("fuzz-init").await;
            let pairs: Vec<(&str, &str)> = properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            other.init(&pairs).await
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_get_documented_answers(calls in prop::collection::vec(call(), 1..12)) {
        let server = server();
        runtime().block_on(async {
            let mut daprd = server.daprd("fuzz").await;
            for call in calls {
                let shown = format!("{call:?}");
                if let Err(status) = send(&mut daprd, call).await {
                    prop_assert!(
                        matches!(
                            status.code(),
                            Code::InvalidArgument | Code::FailedPrecondition | Code::ResourceExhausted
                        ),
                        "{status:?} for {}", &shown[..shown.len().min(300)]
                    );
                }
            }
            // Still alive and answering.
            let alive = daprd.state.ping(proto::PingRequest::default()).await.is_ok();
            prop_assert!(alive, "the server stopped answering");
            Ok(())
        })?;
    }
}
