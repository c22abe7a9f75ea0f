//! Roost two ways: over its Unix socket through the Dapr components API exactly as daprd calls
//! it (reflection v1alpha, `Init` with metadata, `Features`, then the operations, every call
//! with `x-component-instance`; all workers share one HTTP/2 connection as daprd does), and
//! embedded in the harness process through `AsyncDatabase`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost_types::Any;
use roost_component::doctor::client::{connect, for_instance, list_services_v1alpha};
use roost_component::proto::{
    self, queriable_state_store_client::QueriableStateStoreClient,
    state_store_client::StateStoreClient,
    transactional_state_store_client::TransactionalStateStoreClient,
};
use roost_engine::{AsyncDatabase, Durability, Filter, Operation, Options, Query, SetRequest};
use tonic::transport::Channel;

use super::{Client, Fut, Item, OpError, QUERY_FIELD};

/// The instance (keyspace) names the socket targets use.
pub const QUERY_INDEXED_INSTANCE: &str = "query-indexed";
pub const QUERY_SCAN_INSTANCE: &str = "query-scan";

fn status(err: tonic::Status) -> OpError {
    match err.code() {
        // Etag mismatch and first-write on a live key, in daprd's shape.
        tonic::Code::FailedPrecondition => OpError::Conflict,
        _ => OpError::Failed(format!("{:?}: {}", err.code(), err.message())),
    }
}

/// Connects to the socket, checks the services through reflection v1alpha, and initialises
/// `instance` with `metadata` as daprd would for a component YAML of that name.
pub async fn connect_and_init(
    socket: &Path,
    instance: &str,
    metadata: &[(&str, &str)],
) -> Result<Channel, OpError> {
    let channel = connect(socket, Duration::from_secs(5))
        .await
        .map_err(OpError::failed)?;
    let services = list_services_v1alpha(channel.clone())
        .await
        .map_err(status)?;
    if !services
        .iter()
        .any(|s| s == "dapr.proto.components.v1.StateStore")
    {
        return Err(OpError::Failed(format!(
            "the socket does not serve the state store: {services:?}"
        )));
    }
    let mut store = StateStoreClient::new(channel.clone());
    let properties = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    store
        .init(for_instance(
            instance,
            proto::InitRequest {
                metadata: Some(proto::MetadataRequest { properties }),
            },
        ))
        .await
        .map_err(status)?;
    let features = store
        .features(for_instance(instance, proto::FeaturesRequest {}))
        .await
        .map_err(status)?
        .into_inner()
        .features;
    // The workloads need etags and transactions; a store without QUERY_API answers the query
    // workloads UNIMPLEMENTED, which they report.
    for needed in ["ETAG", "TRANSACTIONAL"] {
        if !features.iter().any(|f| f == needed) {
            return Err(OpError::Failed(format!(
                "Features lacks {needed}: {features:?}"
            )));
        }
    }
    Ok(channel)
}

/// A worker's view of the Roost socket (clones of one channel).
pub struct SocketClient {
    instance: String,
    state: StateStoreClient<Channel>,
    transactions: TransactionalStateStoreClient<Channel>,
    queries: QueriableStateStoreClient<Channel>,
}

impl SocketClient {
    pub fn new(channel: Channel, instance: &str) -> SocketClient {
        SocketClient {
            instance: instance.to_string(),
            state: StateStoreClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            transactions: TransactionalStateStoreClient::new(channel.clone()),
            queries: QueriableStateStoreClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024),
        }
    }

    fn set_request(
        key: &str,
        value: &[u8],
        etag: Option<&str>,
        first_write: bool,
    ) -> proto::SetRequest {
        proto::SetRequest {
            key: key.to_string(),
            value: value.to_vec().into(),
            etag: etag.map(|e| proto::Etag {
                value: e.to_string(),
            }),
            metadata: Default::default(),
            options: Some(proto::StateOptions {
                concurrency: if first_write {
                    proto::state_options::StateConcurrency::ConcurrencyFirstWrite as i32
                } else {
                    proto::state_options::StateConcurrency::ConcurrencyLastWrite as i32
                },
                consistency: proto::state_options::StateConsistency::ConsistencyStrong as i32,
            }),
            content_type: String::new(),
        }
    }

    async fn bulk_set(&self, instance: &str, items: &[(String, Vec<u8>)]) -> Result<(), OpError> {
        for chunk in items.chunks(500) {
            let request = proto::BulkSetRequest {
                items: chunk
                    .iter()
                    .map(|(k, v)| Self::set_request(k, v, None, false))
                    .collect(),
                options: None,
            };
            self.state
                .clone()
                .bulk_set(for_instance(instance, request))
                .await
                .map_err(status)?;
        }
        Ok(())
    }
}

impl Client for SocketClient {
    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            self.state
                .clone()
                .ping(for_instance(&self.instance, proto::PingRequest {}))
                .await
                .map_err(status)?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> Fut<'a, Option<Item>> {
        Box::pin(async move {
            let request = proto::GetRequest {
                key: key.to_string(),
                metadata: Default::default(),
                consistency: proto::state_options::StateConsistency::ConsistencyStrong as i32,
            };
            let response = self
                .state
                .clone()
                .get(for_instance(&self.instance, request))
                .await
                .map_err(status)?
                .into_inner();
            Ok(response
                .etag
                .map(|etag| (response.data.to_vec(), etag.value)))
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        etag: Option<&'a str>,
        first_write: bool,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let request = Self::set_request(key, value, etag, first_write);
            self.state
                .clone()
                .set(for_instance(&self.instance, request))
                .await
                .map_err(status)?;
            Ok(())
        })
    }

    fn bulk_get<'a>(&'a self, keys: &'a [String]) -> Fut<'a, usize> {
        Box::pin(async move {
            let request = proto::BulkGetRequest {
                items: keys
                    .iter()
                    .map(|key| proto::GetRequest {
                        key: key.clone(),
                        metadata: Default::default(),
                        consistency: 0,
                    })
                    .collect(),
                options: None,
            };
            let response = self
                .state
                .clone()
                .bulk_get(for_instance(&self.instance, request))
                .await
                .map_err(status)?
                .into_inner();
            Ok(response.items.iter().filter(|i| i.etag.is_some()).count())
        })
    }

    fn transact<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(async move {
            let request = proto::TransactionalStateRequest {
                operations: items
                    .iter()
                    .map(|(k, v)| proto::TransactionalStateOperation {
                        request: Some(proto::transactional_state_operation::Request::Set(
                            Self::set_request(k, v, None, false),
                        )),
                    })
                    .collect(),
                metadata: Default::default(),
            };
            self.transactions
                .clone()
                .transact(for_instance(&self.instance, request))
                .await
                .map_err(status)?;
            Ok(())
        })
    }

    fn query_eq<'a>(&'a self, value: &'a str, indexed: bool) -> Fut<'a, usize> {
        Box::pin(async move {
            let operand = serde_json::json!({ QUERY_FIELD: value }).to_string();
            let request = proto::QueryRequest {
                query: Some(proto::Query {
                    filter: [(
                        "EQ".to_string(),
                        Any {
                            type_url: String::new(),
                            value: operand.into_bytes(),
                        },
                    )]
                    .into(),
                    sort: Vec::new(),
                    pagination: None,
                }),
                metadata: Default::default(),
            };
            let instance = if indexed {
                QUERY_INDEXED_INSTANCE
            } else {
                QUERY_SCAN_INSTANCE
            };
            let response = self
                .queries
                .clone()
                .query(for_instance(instance, request))
                .await
                .map_err(status)?
                .into_inner();
            Ok(response.items.len())
        })
    }

    fn load<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(self.bulk_set(&self.instance, items))
    }

    fn load_documents<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(async move {
            self.bulk_set(QUERY_INDEXED_INSTANCE, items).await?;
            self.bulk_set(QUERY_SCAN_INSTANCE, items).await
        })
    }
}

/// The keyspaces of the embedded target.
pub struct Embedded {
    main: AsyncDatabase,
    query_indexed: AsyncDatabase,
    query_scan: AsyncDatabase,
}

impl Embedded {
    /// Opens the keyspaces in `dir`; `durability` and `wal` (the write-ahead log) apply to the
    /// main one, and so do `ROOST_BENCH_CACHE_MB` (redb's cache, the engine's default when
    /// unset), for runs on keyspaces larger than the default cache, and
    /// `ROOST_BENCH_WRITEBACK_KB` (the main file's write-back chunk; `0` leaves the write-back
    /// to the checkpoint's fdatasync), for a before/after of the paced write-back in one build.
    pub fn open(dir: &Path, durability: Durability, wal: bool) -> Result<Embedded, OpError> {
        let open = |name: &str, options: Options| {
            roost_engine::Database::open(options)
                .map(|db| db.into_async())
                .map_err(|e| OpError::Failed(format!("cannot open {name}: {e}")))
        };
        let mut main = Options::new(dir.join("main.redb"))
            .durability(durability)
            .write_ahead_log(wal);
        if let Some(mb) = std::env::var("ROOST_BENCH_CACHE_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            main = main.cache_size_bytes(mb << 20);
        }
        if let Some(kb) = std::env::var("ROOST_BENCH_WRITEBACK_KB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            main = main.writeback_chunk_bytes(kb << 10);
        }
        Ok(Embedded {
            main: open("main", main)?,
            query_indexed: open(
                "query-indexed",
                Options::new(dir.join("query-indexed.redb")).indexes([QUERY_FIELD]),
            )?,
            query_scan: open("query-scan", Options::new(dir.join("query-scan.redb")))?,
        })
    }

    pub async fn close(&self) {
        for db in [&self.main, &self.query_indexed, &self.query_scan] {
            let _ = db.close().await;
        }
    }
}

fn engine(err: roost_engine::Error) -> OpError {
    match err {
        roost_engine::Error::EtagMismatch { .. } => OpError::Conflict,
        other => OpError::Failed(other.to_string()),
    }
}

/// A worker's handle on the embedded keyspaces.
pub struct EmbeddedClient(pub Arc<Embedded>);

async fn bulk_set(db: &AsyncDatabase, items: &[(String, Vec<u8>)]) -> Result<(), OpError> {
    for chunk in items.chunks(1000) {
        let requests = chunk
            .iter()
            .map(|(k, v)| SetRequest::new(k.as_bytes(), v.clone()))
            .collect();
        for outcome in db.bulk_set(requests).await.map_err(engine)? {
            outcome.map_err(engine)?;
        }
    }
    Ok(())
}

impl Client for EmbeddedClient {
    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn get<'a>(&'a self, key: &'a str) -> Fut<'a, Option<Item>> {
        Box::pin(async move {
            let record = self.0.main.get(key).await.map_err(engine)?;
            Ok(record.map(|r| (r.value, r.etag.to_string())))
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        etag: Option<&'a str>,
        first_write: bool,
    ) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut request = SetRequest::new(key, value);
            if let Some(etag) = etag {
                request = request.etag(etag);
            }
            if first_write {
                request = request.first_write();
            }
            self.0.main.set(request).await.map_err(engine)?;
            Ok(())
        })
    }

    fn bulk_get<'a>(&'a self, keys: &'a [String]) -> Fut<'a, usize> {
        Box::pin(async move {
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
            let records = self.0.main.bulk_get(keys).await.map_err(engine)?;
            Ok(records.iter().flatten().count())
        })
    }

    fn transact<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(async move {
            let operations = items
                .iter()
                .map(|(k, v)| Operation::Set(SetRequest::new(k.as_bytes(), v.clone())))
                .collect();
            self.0.main.transact(operations).await.map_err(engine)?;
            Ok(())
        })
    }

    fn query_eq<'a>(&'a self, value: &'a str, indexed: bool) -> Fut<'a, usize> {
        Box::pin(async move {
            let operand = serde_json::json!({ QUERY_FIELD: value }).to_string();
            let filter = Filter::from_operator("EQ", operand.as_bytes()).map_err(engine)?;
            let query = Query {
                filter,
                ..Query::default()
            };
            let db = if indexed {
                &self.0.query_indexed
            } else {
                &self.0.query_scan
            };
            Ok(db.query(query).await.map_err(engine)?.rows.len())
        })
    }

    fn load<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(bulk_set(&self.0.main, items))
    }

    fn load_documents<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(async move {
            bulk_set(&self.0.query_indexed, items).await?;
            bulk_set(&self.0.query_scan, items).await
        })
    }
}
