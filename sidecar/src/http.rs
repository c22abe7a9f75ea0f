//! The app-facing HTTP API of the state building block, with daprd's routes, status codes and
//! `{"errorCode": "ERR_…", "message": …}` error bodies:
//!
//! - `POST /v1.0/state/{store}` save (204), `GET|DELETE /v1.0/state/{store}/{key}` (200 with
//!   the value and an `ETag` header, 204 when absent / 204), `POST …/bulk` (bulk get),
//!   `POST …/transaction` (204), `POST|PUT /v1.0-alpha1/state/{store}/query` (200, 204 when
//!   empty);
//! - `GET /v1.0/metadata`, `GET /v1.0/healthz` and `/v1.0/healthz/outbound` (204; the SDKs wait
//!   on the latter before their first call);
//! - any other `/v1.0*` route: 501 naming the building block the sidecar does not serve.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{
    ApiError, BulkItem, DeleteItem, SaveItem, StateApi, TxOp, consistency_from_string,
    options_from_strings,
};
use crate::gojson;

#[derive(Clone)]
struct AppState {
    api: Arc<StateApi>,
    runtime_version: String,
}

pub fn router(api: Arc<StateApi>, runtime_version: String, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1.0/state/{store}", post(save_state))
        .route("/v1.0/state/{store}/bulk", post(bulk_get))
        .route("/v1.0/state/{store}/transaction", post(transaction))
        .route(
            "/v1.0/state/{store}/{key}",
            get(get_state).delete(delete_state),
        )
        .route(
            "/v1.0-alpha1/state/{store}/query",
            post(query_state).put(query_state),
        )
        .route("/v1.0/metadata", get(metadata))
        .route("/v1.0/healthz", get(healthy))
        .route("/v1.0/healthz/outbound", get(healthy))
        .fallback(not_served)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(AppState {
            api,
            runtime_version,
        })
}

fn error_response(error: ApiError) -> Response {
    let status = StatusCode::from_u16(error.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({"errorCode": error.code, "message": error.http_message()});
    if let Some(details) = error.http_details() {
        body["details"] = details;
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_ok(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// 204 on success (daprd's answer to writes), the error body otherwise.
fn empty_or_error(result: Result<(), ApiError>) -> Response {
    match result {
        Ok(()) => no_content(),
        Err(e) => error_response(e),
    }
}

/// `metadata.<name>=<value>` query parameters.
fn query_metadata(params: &[(String, String)]) -> HashMap<String, String> {
    params
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata.")?.to_string(), v.clone())))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The value as it goes into the response: raw when it is JSON, else a JSON string.
fn data_json(data: &[u8]) -> Value {
    serde_json::from_slice(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpOptions {
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    consistency: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpStateItem {
    key: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    options: Option<HttpOptions>,
    #[serde(default)]
    content_type: Option<String>,
}

impl HttpStateItem {
    /// daprd re-encodes the value with Go's encoding/json before the component sees it.
    fn into_save(
        mut self,
        store: &str,
        url_metadata: &HashMap<String, String>,
    ) -> Result<SaveItem, ApiError> {
        if self.key.is_empty() {
            return Err(ApiError::new(
                400,
                "ERR_MALFORMED_REQUEST",
                tonic::Code::InvalidArgument,
                "\"key\" is a required field",
            ));
        }
        let value = match self.value.take() {
            Some(Value::Null) | None => {
                return Err(ApiError::new(
                    500,
                    "ERR_STATE_SAVE",
                    tonic::Code::Internal,
                    format!(
                        "failed saving state in state store {store}: an attempt to set a nil \
                         value was received, try to use Delete instead"
                    ),
                ));
            }
            Some(value) => gojson::encode(&value),
        };
        for (k, v) in url_metadata {
            self.metadata.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Ok(SaveItem {
            key: self.key,
            value: value.into(),
            etag: self.etag,
            metadata: self.metadata,
            options: self
                .options
                .map(|o| options_from_strings(&o.concurrency, &o.consistency)),
            content_type: self.content_type.unwrap_or_default(),
        })
    }

    fn into_delete(self) -> DeleteItem {
        DeleteItem {
            key: self.key,
            etag: self.etag,
            metadata: self.metadata,
            options: self
                .options
                .map(|o| options_from_strings(&o.concurrency, &o.consistency)),
        }
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::malformed)
}

async fn save_state(
    State(state): State<AppState>,
    Path(store): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let result = async {
        let items: Vec<HttpStateItem> = parse_body(&body)?;
        let url_metadata = query_metadata(&params);
        let items = items
            .into_iter()
            .map(|i| i.into_save(&store, &url_metadata))
            .collect::<Result<Vec<_>, _>>()?;
        state.api.save(&store, items).await
    }
    .await;
    empty_or_error(result)
}

async fn get_state(
    State(state): State<AppState>,
    Path((store, key)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let consistency = consistency_from_string(param(&params, "consistency"));
    match state
        .api
        .get(&store, &key, consistency, query_metadata(&params))
        .await
    {
        Ok(None) => no_content(),
        Ok(Some(found)) => {
            let mut headers = HeaderMap::new();
            if let Ok(etag) = HeaderValue::from_str(&found.etag)
                && !found.etag.is_empty()
            {
                headers.insert(header::ETAG, etag);
            }
            let content_type =
                if serde_json::from_slice::<serde::de::IgnoredAny>(&found.data).is_ok() {
                    "application/json"
                } else {
                    "application/octet-stream"
                };
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            for (k, v) in &found.metadata {
                if let (Ok(name), Ok(value)) = (
                    header::HeaderName::try_from(format!("metadata.{k}")),
                    HeaderValue::from_str(v),
                ) {
                    headers.insert(name, value);
                }
            }
            (StatusCode::OK, headers, Body::from(found.data)).into_response()
        }
        Err(e) => error_response(e),
    }
}

async fn delete_state(
    State(state): State<AppState>,
    Path((store, key)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let etag = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let concurrency = param(&params, "concurrency");
    let consistency = param(&params, "consistency");
    let options = (!concurrency.is_empty() || !consistency.is_empty())
        .then(|| options_from_strings(concurrency, consistency));
    let item = DeleteItem {
        key,
        etag,
        metadata: query_metadata(&params),
        options,
    };
    empty_or_error(state.api.delete(&store, vec![item]).await)
}

#[derive(Deserialize)]
struct BulkGetBody {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    parallelism: i64,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

fn item_json(item: BulkItem, with_metadata: bool) -> Value {
    let mut object = Map::new();
    object.insert("key".into(), Value::String(item.key));
    if !item.data.is_empty() {
        object.insert("data".into(), data_json(&item.data));
    }
    if !item.etag.is_empty() {
        object.insert("etag".into(), Value::String(item.etag));
    }
    if !item.error.is_empty() {
        object.insert("error".into(), Value::String(item.error));
    }
    if with_metadata && !item.metadata.is_empty() {
        object.insert("metadata".into(), json!(item.metadata));
    }
    Value::Object(object)
}

async fn bulk_get(
    State(state): State<AppState>,
    Path(store): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let result = async {
        let request: BulkGetBody = parse_body(&body)?;
        let mut metadata = query_metadata(&params);
        metadata.extend(request.metadata);
        state
            .api
            .bulk_get(&store, &request.keys, request.parallelism, metadata)
            .await
    }
    .await;
    match result {
        Ok(items) => {
            let items: Vec<Value> = items.into_iter().map(|i| item_json(i, true)).collect();
            json_ok(Value::Array(items).to_string())
        }
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct TransactionBody {
    #[serde(default)]
    operations: Vec<TransactionOperation>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

#[derive(Deserialize)]
struct TransactionOperation {
    operation: String,
    request: HttpStateItem,
}

async fn transaction(
    State(state): State<AppState>,
    Path(store): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let result = async {
        let request: TransactionBody = parse_body(&body)?;
        if request.operations.is_empty() {
            return Ok(());
        }
        let url_metadata = HashMap::new();
        let mut operations = Vec::with_capacity(request.operations.len());
        for op in request.operations {
            operations.push(match op.operation.as_str() {
                "upsert" => TxOp::Upsert(op.request.into_save(&store, &url_metadata)?),
                "delete" => TxOp::Delete(op.request.into_delete()),
                other => {
                    return Err(ApiError::new(
                        400,
                        "ERR_NOT_SUPPORTED_STATE_OPERATION",
                        tonic::Code::InvalidArgument,
                        format!("operation type {other} not supported"),
                    ));
                }
            });
        }
        let mut metadata = query_metadata(&params);
        metadata.extend(request.metadata);
        state.api.transact(&store, operations, metadata).await
    }
    .await;
    empty_or_error(result)
}

async fn query_state(
    State(state): State<AppState>,
    Path(store): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    match state
        .api
        .query(&store, &body, query_metadata(&params))
        .await
    {
        Ok(result) if result.results.is_empty() => no_content(),
        Ok(result) => {
            let mut object = Map::new();
            object.insert(
                "results".into(),
                Value::Array(
                    result
                        .results
                        .into_iter()
                        .map(|i| item_json(i, false))
                        .collect(),
                ),
            );
            if !result.token.is_empty() {
                object.insert("token".into(), Value::String(result.token));
            }
            if !result.metadata.is_empty() {
                object.insert("metadata".into(), json!(result.metadata));
            }
            json_ok(Value::Object(object).to_string())
        }
        Err(e) => error_response(e),
    }
}

async fn metadata(State(state): State<AppState>) -> Response {
    let components: Vec<Value> = state
        .api
        .stores()
        .map(|s| {
            json!({
                "name": s.name,
                "type": s.component_type,
                "version": s.version,
                "capabilities": s.capabilities(),
            })
        })
        .collect();
    let body = json!({
        "id": state.api.app_id,
        "runtimeVersion": state.runtime_version,
        "enabledFeatures": [],
        "actors": [],
        "components": components,
        "extended": {"roost-sidecar": "state building block only"},
    });
    json_ok(body.to_string())
}

async fn healthy() -> Response {
    no_content()
}

/// The building block behind an HTTP API path such as `/v1.0/publish/...`.
fn http_building_block(path: &str) -> &'static str {
    let segment = path
        .trim_start_matches('/')
        .split('/')
        .nth(1)
        .unwrap_or_default();
    match segment {
        "publish" | "subscribe" => "pub/sub",
        "invoke" => "service invocation",
        "bindings" => "bindings",
        "secrets" => "secrets",
        "actors" => "actors",
        "configuration" => "configuration",
        "lock" | "unlock" => "distributed lock",
        "workflows" => "workflows",
        "crypto" => "cryptography",
        "jobs" => "jobs",
        "conversation" => "conversation",
        "state" => "state",
        _ => "this API",
    }
}

async fn not_served(uri: Uri) -> Response {
    let path = uri.path();
    if !path.starts_with("/v1") {
        return error_response(ApiError::new(
            404,
            "ERR_NOT_FOUND",
            tonic::Code::NotFound,
            format!("no route {path}"),
        ));
    }
    error_response(ApiError::new(
        501,
        "ERR_NOT_SUPPORTED",
        tonic::Code::Unimplemented,
        format!(
            "roost-sidecar serves only the Dapr state building block: {path} ({}) is not \
             available; run the app with daprd for it",
            http_building_block(path)
        ),
    ))
}
