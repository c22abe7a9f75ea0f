//! Wire ↔ engine conversions; generated types never reach the engine.

use std::collections::HashMap;

use roost_engine::{Concurrency, DeleteRequest, Record, SetRequest};
use tonic::{Code, Status};

use crate::config::DAPRD_MAX_RESPONSE_BYTES;
use crate::proto::{self, state_options::StateConcurrency};
use crate::routes::Unary;
use crate::status;

/// Request metadata key for the TTL, exactly as Dapr spells it.
pub const TTL_KEY: &str = "ttlInSeconds";
/// Response metadata key for the expiry, RFC 3339 UTC.
pub const TTL_EXPIRE_TIME_KEY: &str = "ttlExpireTime";

pub fn concurrency(options: Option<&proto::StateOptions>) -> Concurrency {
    match options.map(|o| o.concurrency()) {
        Some(StateConcurrency::ConcurrencyFirstWrite) => Concurrency::FirstWrite,
        _ => Concurrency::LastWrite,
    }
}

pub fn set_request(request: proto::SetRequest) -> SetRequest {
    let concurrency = concurrency(request.options.as_ref());
    let content_type = if request.content_type.is_empty() {
        request.metadata.get("contentType").cloned()
    } else {
        Some(request.content_type)
    };
    SetRequest {
        key: request.key.into_bytes(),
        value: request.value.into(),
        etag: request.etag.map(|e| e.value),
        concurrency,
        ttl_in_seconds: request.metadata.get(TTL_KEY).cloned(),
        content_type,
    }
}

pub fn delete_request(request: proto::DeleteRequest) -> DeleteRequest {
    DeleteRequest {
        concurrency: concurrency(request.options.as_ref()),
        key: request.key.into_bytes(),
        etag: request.etag.map(|e| e.value),
    }
}

/// Response metadata of a record: `ttlExpireTime` when it has an expiry, nothing otherwise.
pub fn record_metadata(record: &Record) -> HashMap<String, String> {
    record
        .expire_time_rfc3339()
        .map(|at| HashMap::from([(TTL_EXPIRE_TIME_KEY.to_string(), at)]))
        .unwrap_or_default()
}

pub fn get_response(record: Option<Record>) -> proto::GetResponse {
    match record {
        None => proto::GetResponse::default(),
        Some(record) => proto::GetResponse {
            metadata: record_metadata(&record),
            etag: Some(proto::Etag {
                value: record.etag.to_decimal(),
            }),
            content_type: record.content_type.unwrap_or_default(),
            data: record.value,
        },
    }
}

pub fn bulk_item(key: String, record: Option<Record>) -> proto::BulkStateItem {
    match record {
        None => proto::BulkStateItem {
            key,
            ..Default::default()
        },
        Some(record) => proto::BulkStateItem {
            key,
            metadata: record_metadata(&record),
            etag: Some(proto::Etag {
                value: record.etag.to_decimal(),
            }),
            content_type: record.content_type.unwrap_or_default(),
            data: record.value,
            error: String::new(),
        },
    }
}

/// The error for a response daprd could not receive (its limit is 4 MiB per message).
pub fn response_too_large(method: Unary, size: usize) -> Status {
    status::kit_status(
        Code::ResourceExhausted,
        413,
        "ERR_ROOST_RESPONSE_TOO_LARGE",
        format!(
            "the {method:?} response would be {size} bytes, above daprd's limit of {DAPRD_MAX_RESPONSE_BYTES} bytes; \
             request fewer keys"
        ),
    )
}
