//! The state building block, independent of the app-facing transport: both the gRPC and the
//! HTTP API call these operations and render [`ApiError`] their own way. Behaviour follows
//! daprd (pluggable spec §3.4, §5): keys prefixed and stripped, one item → `Set`, several →
//! `BulkSet`, ETag errors decoded, transactions refused without `TRANSACTIONAL` or beyond the
//! component's `MultiMaxSize`, queries refused without `QUERY_API` and validated before the
//! component sees them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tonic::Code;

use crate::gojson;
use crate::keys::KeyPrefix;
use crate::pluggable::{ComponentError, StateComponent};
use roost_component::proto;

/// An app-facing error: daprd's error code, HTTP status and gRPC code.
///
/// daprd answers in two shapes. Errors it builds with its "rich" error builder (store not
/// found or not configured, an illegal key, too many operations, query failures, features a
/// store lacks) carry `google.rpc` details — `BadRequest` for a bad key, `ResourceInfo` naming
/// the store, `ErrorInfo` with a `DAPR_STATE_*` reason — on gRPC and in a `details` array of
/// the HTTP body. The others carry one `ErrorInfo` whose reason is the `ERR_*` code, on gRPC
/// only. Either way the gRPC message is the plain text, without the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub http: u16,
    pub code: String,
    pub grpc: Code,
    pub message: String,
    pub rich: Option<Box<RichError>>,
}

/// The details of one of daprd's rich errors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RichError {
    /// The `ErrorInfo` reason, `DAPR_STATE_*`.
    pub reason: String,
    pub metadata: BTreeMap<String, String>,
    /// `ErrorInfo` metadata daprd adds on its HTTP API only (the app id of "store not found").
    pub http_metadata: BTreeMap<String, String>,
    /// The store named by a `ResourceInfo` (type `state`), when daprd adds one.
    pub store: Option<String>,
    /// A `BadRequest` field violation: the field (for a key, the key itself).
    pub field: Option<String>,
}

/// The domain of every `ErrorInfo` daprd sends.
const ERROR_DOMAIN: &str = "dapr.io";

impl ApiError {
    pub fn new(http: u16, code: &str, grpc: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            http,
            code: code.to_string(),
            grpc,
            message: message.into(),
            rich: None,
        }
    }

    /// One of daprd's rich errors.
    fn rich(
        http: u16,
        code: &str,
        grpc: Code,
        message: impl Into<String>,
        rich: RichError,
    ) -> ApiError {
        ApiError {
            rich: Some(Box::new(rich)),
            ..ApiError::new(http, code, grpc, message)
        }
    }

    pub fn malformed(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            400,
            "ERR_MALFORMED_REQUEST",
            Code::InvalidArgument,
            format!("failed deserializing HTTP body: {message}"),
        )
    }

    fn bad_key(store: &str, key: &str, message: String) -> ApiError {
        ApiError::rich(
            400,
            "ERR_MALFORMED_REQUEST",
            Code::InvalidArgument,
            message,
            RichError {
                reason: "DAPR_STATE_ILLEGAL_KEY".into(),
                store: Some(store.to_string()),
                field: Some(key.to_string()),
                ..RichError::default()
            },
        )
    }

    /// daprd's `QueryFailed`: every query error, the app's or the store's, is a 500.
    pub fn query_failed(store: &str, detail: impl std::fmt::Display) -> ApiError {
        ApiError::rich(
            500,
            "ERR_STATE_QUERY",
            Code::Internal,
            format!("state store {store} query failed: {detail}"),
            RichError {
                reason: "DAPR_STATE_QUERY_FAILED".into(),
                store: Some(store.to_string()),
                ..RichError::default()
            },
        )
    }

    /// The message as daprd's HTTP API shows it: an illegal key's text comes wrapped in the
    /// gRPC status text there (`api error: code = InvalidArgument desc = …`).
    pub fn http_message(&self) -> String {
        match &self.rich {
            Some(rich) if rich.field.is_some() => {
                format!("api error: code = {:?} desc = {}", self.grpc, self.message)
            }
            _ => self.message.clone(),
        }
    }

    /// The `details` array of daprd's HTTP error body, for rich errors.
    pub fn http_details(&self) -> Option<Value> {
        let rich = self.rich.as_ref()?;
        let mut details = Vec::new();
        if let Some(field) = &rich.field {
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{"field": field, "description": self.http_message()}],
            }));
        }
        if let Some(store) = &rich.store {
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                "resource_type": "state",
                "resource_name": store,
                "owner": "",
                "description": "",
            }));
        }
        let mut metadata = rich.metadata.clone();
        metadata.extend(rich.http_metadata.clone());
        let metadata = if metadata.is_empty() {
            Value::Null
        } else {
            serde_json::json!(metadata)
        };
        details.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": rich.reason,
            "domain": ERROR_DOMAIN,
            "metadata": metadata,
        }));
        Some(Value::Array(details))
    }

    pub fn to_status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetail, StatusExt};
        let mut details: Vec<ErrorDetail> = Vec::new();
        let (reason, metadata) = match &self.rich {
            Some(rich) => {
                if let Some(field) = &rich.field {
                    details
                        .push(tonic_types::BadRequest::with_violation(field, &self.message).into());
                }
                if let Some(store) = &rich.store {
                    details.push(tonic_types::ResourceInfo::new("state", store, "", "").into());
                }
                (rich.reason.clone(), rich.metadata.clone())
            }
            None => (self.code.clone(), BTreeMap::new()),
        };
        details.push(
            tonic_types::ErrorInfo::new(
                reason,
                ERROR_DOMAIN,
                metadata.into_iter().collect::<HashMap<_, _>>(),
            )
            .into(),
        );
        tonic::Status::with_error_details_vec(self.grpc, &self.message, details)
    }
}

/// A write as the app asked for it (before key prefixing).
#[derive(Debug, Clone, Default)]
pub struct SaveItem {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub metadata: HashMap<String, String>,
    pub options: Option<proto::StateOptions>,
    pub content_type: String,
}

/// A delete as the app asked for it.
#[derive(Debug, Clone, Default)]
pub struct DeleteItem {
    pub key: String,
    pub etag: Option<String>,
    pub metadata: HashMap<String, String>,
    pub options: Option<proto::StateOptions>,
}

#[derive(Debug, Clone)]
pub enum TxOp {
    Upsert(SaveItem),
    Delete(DeleteItem),
}

#[derive(Debug, Clone, Default)]
pub struct GetResult {
    pub data: Bytes,
    pub etag: String,
    pub metadata: HashMap<String, String>,
    pub content_type: String,
}

#[derive(Debug, Clone, Default)]
pub struct BulkItem {
    pub key: String,
    pub data: Bytes,
    pub etag: String,
    pub error: String,
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    pub results: Vec<BulkItem>,
    pub token: String,
    pub metadata: HashMap<String, String>,
}

/// The state stores of one sidecar.
#[derive(Debug)]
pub struct StateApi {
    pub app_id: String,
    stores: BTreeMap<String, Arc<StateComponent>>,
}

/// daprd's HTTP strings for options: `first-write`/`last-write`, `eventual`/`strong`; anything
/// else is "unspecified".
pub fn options_from_strings(concurrency: &str, consistency: &str) -> proto::StateOptions {
    use proto::state_options::StateConcurrency;
    let concurrency = match concurrency {
        "first-write" => StateConcurrency::ConcurrencyFirstWrite,
        "last-write" => StateConcurrency::ConcurrencyLastWrite,
        _ => StateConcurrency::ConcurrencyUnspecified,
    };
    proto::StateOptions {
        concurrency: concurrency as i32,
        consistency: consistency_from_string(consistency),
    }
}

pub fn consistency_from_string(consistency: &str) -> i32 {
    use proto::state_options::StateConsistency;
    let consistency = match consistency {
        "eventual" => StateConsistency::ConsistencyEventual,
        "strong" => StateConsistency::ConsistencyStrong,
        _ => StateConsistency::ConsistencyUnspecified,
    };
    consistency as i32
}

impl StateApi {
    pub fn new(app_id: String, stores: Vec<StateComponent>) -> StateApi {
        StateApi {
            app_id,
            stores: stores
                .into_iter()
                .map(|s| (s.name.clone(), Arc::new(s)))
                .collect(),
        }
    }

    pub fn stores(&self) -> impl Iterator<Item = &Arc<StateComponent>> {
        self.stores.values()
    }

    fn store(&self, name: &str) -> Result<&Arc<StateComponent>, ApiError> {
        let app = || RichError {
            http_metadata: [("appID".to_string(), self.app_id.clone())]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            ..RichError::default()
        };
        if self.stores.is_empty() {
            return Err(ApiError::rich(
                500,
                "ERR_STATE_STORE_NOT_CONFIGURED",
                Code::FailedPrecondition,
                format!("state store {name} is not configured"),
                RichError {
                    reason: "DAPR_STATE_NOT_CONFIGURED".into(),
                    ..app()
                },
            ));
        }
        self.stores.get(name).ok_or_else(|| {
            ApiError::rich(
                400,
                "ERR_STATE_STORE_NOT_FOUND",
                Code::InvalidArgument,
                format!("state store {name} is not found"),
                RichError {
                    reason: "DAPR_STATE_NOT_FOUND".into(),
                    ..app()
                },
            )
        })
    }

    fn key(store: &StateComponent, key: &str) -> Result<String, ApiError> {
        store
            .key_prefix
            .apply(key)
            .map_err(|message| ApiError::bad_key(&store.name, key, message))
    }

    pub async fn get(
        &self,
        store_name: &str,
        key: &str,
        consistency: i32,
        metadata: HashMap<String, String>,
    ) -> Result<Option<GetResult>, ApiError> {
        let store = self.store(store_name)?;
        let stored_key = Self::key(store, key)?;
        let response = store
            .get(proto::GetRequest {
                key: stored_key,
                metadata,
                consistency,
            })
            .await
            .map_err(|status| {
                read_error(
                    status,
                    "ERR_STATE_GET",
                    format!("fail to get {key} from state store {store_name}"),
                )
            })?;
        if response.data.is_empty() && response.etag.is_none() {
            return Ok(None);
        }
        Ok(Some(GetResult {
            data: response.data.into(),
            etag: response.etag.map(|e| e.value).unwrap_or_default(),
            metadata: response.metadata,
            content_type: response.content_type,
        }))
    }

    pub async fn bulk_get(
        &self,
        store_name: &str,
        keys: &[String],
        parallelism: i64,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<BulkItem>, ApiError> {
        let store = self.store(store_name)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let items = keys
            .iter()
            .map(|key| {
                Ok(proto::GetRequest {
                    key: Self::key(store, key)?,
                    metadata: metadata.clone(),
                    consistency: 0,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let response = store
            .bulk_get(proto::BulkGetRequest {
                items,
                options: Some(proto::BulkGetRequestOptions { parallelism }),
            })
            .await
            .map_err(|status| {
                read_error(
                    status,
                    "ERR_STATE_BULK_GET",
                    format!("failed getting bulk state from state store {store_name}"),
                )
            })?;
        Ok(response
            .items
            .into_iter()
            .map(|item| BulkItem {
                key: KeyPrefix::strip(&item.key),
                data: item.data.into(),
                etag: item.etag.map(|e| e.value).unwrap_or_default(),
                error: item.error,
                metadata: item.metadata,
            })
            .collect())
    }

    fn set_request(store: &StateComponent, item: SaveItem) -> Result<proto::SetRequest, ApiError> {
        Ok(proto::SetRequest {
            key: Self::key(store, &item.key)?,
            value: item.value,
            etag: item.etag.map(|value| proto::Etag { value }),
            metadata: item.metadata,
            options: item.options,
            content_type: item.content_type,
        })
    }

    fn delete_request(
        store: &StateComponent,
        item: DeleteItem,
    ) -> Result<proto::DeleteRequest, ApiError> {
        Ok(proto::DeleteRequest {
            key: Self::key(store, &item.key)?,
            etag: item.etag.map(|value| proto::Etag { value }),
            metadata: item.metadata,
            options: item.options,
        })
    }

    /// One item → `Set`, several → `BulkSet`.
    pub async fn save(&self, store_name: &str, items: Vec<SaveItem>) -> Result<(), ApiError> {
        let store = self.store(store_name)?;
        if items.iter().any(|item| item.key.is_empty()) {
            return Err(ApiError::new(
                400,
                "ERR_STATE_SAVE",
                Code::InvalidArgument,
                "state key cannot be empty",
            ));
        }
        let mut requests = items
            .into_iter()
            .map(|item| Self::set_request(store, item))
            .collect::<Result<Vec<_>, _>>()?;
        let result = match requests.len() {
            0 => return Ok(()),
            1 => store.set(requests.pop().expect("one item")).await,
            _ => {
                store
                    .bulk_set(proto::BulkSetRequest {
                        items: requests,
                        options: Some(proto::BulkSetRequestOptions { parallelism: 0 }),
                    })
                    .await
            }
        };
        result.map_err(|status| {
            write_error(
                status,
                "ERR_STATE_SAVE",
                format!("failed saving state in state store {store_name}"),
            )
        })
    }

    /// One item → `Delete`, several → `BulkDelete`.
    pub async fn delete(&self, store_name: &str, items: Vec<DeleteItem>) -> Result<(), ApiError> {
        let store = self.store(store_name)?;
        let first_key = items.first().map(|i| i.key.clone()).unwrap_or_default();
        let mut requests = items
            .into_iter()
            .map(|item| Self::delete_request(store, item))
            .collect::<Result<Vec<_>, _>>()?;
        let result = match requests.len() {
            0 => return Ok(()),
            1 => store.delete(requests.pop().expect("one item")).await,
            _ => {
                store
                    .bulk_delete(proto::BulkDeleteRequest {
                        items: requests,
                        options: Some(proto::BulkDeleteRequestOptions { parallelism: 0 }),
                    })
                    .await
            }
        };
        result.map_err(|status| {
            write_error(
                status,
                "ERR_STATE_DELETE",
                format!("failed deleting state with key {first_key}"),
            )
        })
    }

    /// Ordered, all-or-nothing; refused without `TRANSACTIONAL` (the component is not called)
    /// and beyond the component's `MultiMaxSize`.
    pub async fn transact(
        &self,
        store_name: &str,
        operations: Vec<TxOp>,
        metadata: HashMap<String, String>,
    ) -> Result<(), ApiError> {
        let store = self.store(store_name)?;
        if !store.has_feature("TRANSACTIONAL") {
            return Err(ApiError::rich(
                500,
                "ERR_STATE_STORE_NOT_SUPPORTED",
                Code::Unimplemented,
                format!("state store {store_name} doesn't support transactions"),
                RichError {
                    reason: "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED".into(),
                    store: Some(store_name.to_string()),
                    ..RichError::default()
                },
            ));
        }
        let max = store.multi_max_size().await;
        if max > 0 && operations.len() as i64 > max {
            return Err(ApiError::rich(
                400,
                "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS",
                Code::InvalidArgument,
                format!(
                    "the transaction contains {} operations, which is more than what the state store supports: {max}",
                    operations.len()
                ),
                RichError {
                    reason: "DAPR_STATE_TOO_MANY_TRANSACTIONS".into(),
                    store: Some(store_name.to_string()),
                    metadata: BTreeMap::from([
                        (
                            "currentOpsTransaction".to_string(),
                            operations.len().to_string(),
                        ),
                        ("maxOpsPerTransaction".to_string(), max.to_string()),
                    ]),
                    ..RichError::default()
                },
            ));
        }
        let operations = operations
            .into_iter()
            .map(|op| {
                use proto::transactional_state_operation::Request;
                let request = match op {
                    TxOp::Upsert(item) => Request::Set(Self::set_request(store, item)?),
                    TxOp::Delete(item) => Request::Delete(Self::delete_request(store, item)?),
                };
                Ok(proto::TransactionalStateOperation {
                    request: Some(request),
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        store
            .transact(proto::TransactionalStateRequest {
                operations,
                metadata,
            })
            .await
            .map_err(|status| {
                let decoded = ComponentError::decode(status, false);
                ApiError::new(
                    500,
                    "ERR_STATE_TRANSACTION",
                    Code::Internal,
                    format!(
                        "error while executing state transaction: {}",
                        decoded.text()
                    ),
                )
            })
    }

    /// Validates the app's query like daprd, builds the component's `Query` (filter operand as
    /// re-encoded JSON in an `Any` with an empty type URL) and strips the key prefixes.
    pub async fn query(
        &self,
        store_name: &str,
        query_json: &[u8],
        metadata: HashMap<String, String>,
    ) -> Result<QueryResult, ApiError> {
        let store = self.store(store_name)?;
        if !store.has_feature("QUERY_API") {
            return Err(ApiError::rich(
                500,
                "ERR_STATE_STORE_NOT_SUPPORTED",
                Code::Internal,
                "state store does not support querying",
                RichError {
                    reason: "DAPR_STATE_QUERYING_NOT_SUPPORTED".into(),
                    store: Some(store_name.to_string()),
                    ..RichError::default()
                },
            ));
        }
        let query = parse_query(query_json).map_err(|e| {
            ApiError::query_failed(store_name, format!("failed to parse JSON query body: {e}"))
        })?;
        let response = store
            .query(proto::QueryRequest {
                query: Some(query),
                metadata,
            })
            .await
            .map_err(|status| {
                // daprd passes a component's kit error through with its codes; anything else
                // is its QueryFailed.
                let decoded = ComponentError::decode(status, false);
                match &decoded {
                    ComponentError::Kit {
                        code, http_code, ..
                    } => ApiError::new(*http_code, "ERR_STATE_QUERY", *code, decoded.text()),
                    _ => ApiError::query_failed(store_name, decoded.text()),
                }
            })?;
        Ok(QueryResult {
            results: response
                .items
                .into_iter()
                .map(|item| BulkItem {
                    key: KeyPrefix::strip(&item.key),
                    data: item.data.into(),
                    etag: item.etag.map(|e| e.value).unwrap_or_default(),
                    error: item.error,
                    metadata: HashMap::new(),
                })
                .collect(),
            token: response.token,
            metadata: response.metadata,
        })
    }
}

/// Errors of Get/BulkGet: a kit error keeps its codes, anything else is a 500 / INTERNAL.
fn read_error(status: tonic::Status, code: &str, prefix: String) -> ApiError {
    let decoded = ComponentError::decode(status, false);
    let (http, grpc) = match &decoded {
        ComponentError::Kit {
            code, http_code, ..
        } => (*http_code, *code),
        ComponentError::Other(status) => (500, status.code()),
        _ => (500, Code::Internal),
    };
    ApiError::new(http, code, grpc, format!("{prefix}: {}", decoded.text()))
}

/// Errors of Set/Delete/BulkSet/BulkDelete: ETag mismatch → 409 / ABORTED, ETag invalid →
/// 400 / INVALID_ARGUMENT, kit errors keep their codes, anything else 500 / INTERNAL.
fn write_error(status: tonic::Status, code: &str, prefix: String) -> ApiError {
    let decoded = ComponentError::decode(status, true);
    let (http, grpc) = match &decoded {
        ComponentError::EtagMismatch(_) => (409, Code::Aborted),
        ComponentError::EtagInvalid(_) => (400, Code::InvalidArgument),
        ComponentError::Kit {
            code, http_code, ..
        } => (*http_code, *code),
        ComponentError::Other(_) => (500, Code::Internal),
    };
    ApiError::new(http, code, grpc, format!("{prefix}: {}", decoded.text()))
}

const COMPARISONS: [&str; 7] = ["EQ", "NEQ", "GT", "GTE", "LT", "LTE", "IN"];

/// daprd's query parsing: `{"filter": {...}, "sort": [{"key", "order"}], "page": {"limit",
/// "token"}}`, the filter tree validated before anything is sent.
pub fn parse_query(bytes: &[u8]) -> Result<proto::Query, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            // Go's encoding/json words it so.
            "unexpected end of JSON input".to_string()
        } else {
            e.to_string()
        }
    })?;
    let Value::Object(top) = value else {
        return Err("the query must be a JSON object".into());
    };
    let mut filter = HashMap::new();
    if let Some(f) = top.get("filter") {
        let Value::Object(map) = f else {
            return Err("filter must be an object".into());
        };
        if !map.is_empty() {
            validate_filter(f)?;
            let (op, operand) = map.iter().next().expect("one operator");
            filter.insert(
                op.clone(),
                prost_types::Any {
                    type_url: String::new(),
                    value: gojson::encode(operand),
                },
            );
        }
    }
    let mut sort = Vec::new();
    if let Some(s) = top.get("sort") {
        let Value::Array(entries) = s else {
            return Err("sort must be an array".into());
        };
        for entry in entries {
            let key = entry
                .get("key")
                .and_then(Value::as_str)
                .ok_or("every sort entry needs a string key")?;
            let order = match entry.get("order").and_then(Value::as_str) {
                Some("DESC") => proto::sorting::Order::Desc,
                _ => proto::sorting::Order::Asc,
            };
            sort.push(proto::Sorting {
                key: key.to_string(),
                order: order as i32,
            });
        }
    }
    let mut pagination = proto::Pagination::default();
    if let Some(page) = top.get("page") {
        if let Some(limit) = page.get("limit") {
            pagination.limit = limit.as_i64().ok_or("page.limit must be an integer")?;
        }
        if let Some(token) = page.get("token") {
            pagination.token = token
                .as_str()
                .ok_or("page.token must be a string")?
                .to_string();
        }
    }
    Ok(proto::Query {
        filter,
        sort,
        pagination: Some(pagination),
    })
}

fn validate_filter(filter: &Value) -> Result<(), String> {
    let Value::Object(map) = filter else {
        return Err("a filter must be an object".into());
    };
    if map.len() != 1 {
        return Err(format!(
            "a filter must have exactly one operator, found {}",
            map.len()
        ));
    }
    let (op, operand) = map.iter().next().expect("one entry");
    match op.as_str() {
        "AND" | "OR" => {
            let Value::Array(items) = operand else {
                return Err(format!("{op} takes an array of filters"));
            };
            if items.is_empty() {
                return Err(format!("{op} needs at least one filter"));
            }
            items.iter().try_for_each(validate_filter)
        }
        op if COMPARISONS.contains(&op) => {
            let Value::Object(pair) = operand else {
                return Err(format!("{op} takes one {{\"field\": value}} pair"));
            };
            if pair.len() != 1 {
                return Err(format!(
                    "{op} takes exactly one field, found {}",
                    pair.len()
                ));
            }
            let value = pair.values().next().expect("one field");
            if op == "IN" && !value.is_array() {
                return Err("IN takes an array of values".into());
            }
            Ok(())
        }
        other => Err(format!("unsupported filter {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_validated_and_encoded_like_daprd() {
        let q = parse_query(
            br#"{"filter":{"AND":[{"EQ":{"state":"CA"}},{"IN":{"person.org":["A","B"]}}]},
                "sort":[{"key":"id","order":"DESC"},{"key":"x","order":"desc"}],
                "page":{"limit":2,"token":"t"}}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(q.filter["AND"].value.clone()).unwrap(),
            r#"[{"EQ":{"state":"CA"}},{"IN":{"person.org":["A","B"]}}]"#
        );
        assert_eq!(q.filter["AND"].type_url, "");
        assert_eq!(q.sort[0].order, proto::sorting::Order::Desc as i32);
        assert_eq!(q.sort[1].order, proto::sorting::Order::Asc as i32);
        let page = q.pagination.unwrap();
        assert_eq!((page.limit, page.token.as_str()), (2, "t"));
        let empty = parse_query(b"{}").unwrap();
        assert!(empty.filter.is_empty());
        assert!(empty.pagination.is_some());
    }

    #[tokio::test]
    async fn missing_features_refuse_before_the_component_is_called() {
        let api = StateApi::new(
            "app".into(),
            vec![StateComponent::unconnected("plain", &["ETAG"])],
        );
        let op = TxOp::Upsert(SaveItem {
            key: "k".into(),
            value: Bytes::from_static(b"1"),
            ..SaveItem::default()
        });
        let err = api
            .transact("plain", vec![op], HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(
            (err.http, err.code.as_str(), err.grpc),
            (500, "ERR_STATE_STORE_NOT_SUPPORTED", Code::Unimplemented)
        );
        // daprd 1.18's QueryUnsupported is INTERNAL, unlike its transaction counterpart.
        let err = api.query("plain", b"{}", HashMap::new()).await.unwrap_err();
        assert_eq!(
            (err.http, err.code.as_str(), err.grpc),
            (500, "ERR_STATE_STORE_NOT_SUPPORTED", Code::Internal)
        );
        // The same calls reach the (unreachable) component when the features are there: the
        // refusals above came from the checks, not from the connection.
        let api = StateApi::new(
            "app".into(),
            vec![StateComponent::unconnected(
                "full",
                &["ETAG", "TRANSACTIONAL", "QUERY_API"],
            )],
        );
        let err = api.query("full", b"{}", HashMap::new()).await.unwrap_err();
        assert_eq!(err.code, "ERR_STATE_QUERY");
        let err = api.get("nope", "k", 0, HashMap::new()).await.unwrap_err();
        assert_eq!(
            (err.http, err.code.as_str()),
            (400, "ERR_STATE_STORE_NOT_FOUND")
        );
        let none = StateApi::new("app".into(), Vec::new());
        let err = none.get("any", "k", 0, HashMap::new()).await.unwrap_err();
        assert_eq!(
            (err.http, err.code.as_str()),
            (500, "ERR_STATE_STORE_NOT_CONFIGURED")
        );
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            r#"{"filter":{"EQ":{"a":1},"NEQ":{"b":2}}}"#,
            r#"{"filter":{"LIKE":{"a":1}}}"#,
            r#"{"filter":{"IN":{"a":1}}}"#,
            r#"{"filter":{"EQ":{"a":1,"b":2}}}"#,
            r#"{"filter":{"AND":{"EQ":{"a":1}}}}"#,
            r#"{"filter":{"OR":[]}}"#,
            r#"[1]"#,
        ] {
            assert!(parse_query(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
