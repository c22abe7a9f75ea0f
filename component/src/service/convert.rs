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

/// A `BulkGetResponse` written straight from the engine's records, without building a
/// `BulkStateItem` (and its etag string and metadata map) per key: the same bytes as the
/// generated type's encoding (checked by a property test below). Each item's length is
/// computed once, when the answer is made. Only encoded, never decoded.
#[derive(Debug, Default)]
pub struct BulkGetAnswer {
    items: Vec<BulkAnswerItem>,
    /// The encoded length of the whole message.
    len: usize,
}

#[derive(Debug)]
struct BulkAnswerItem {
    key: String,
    record: Option<Record>,
    /// The etag in decimal, right-aligned in `digits[etag_at..]`.
    digits: [u8; 20],
    etag_at: usize,
    /// `ttlExpireTime`, if the record expires.
    expires: Option<String>,
    /// The item's encoded length (without its own tag and length prefix).
    len: usize,
}

/// A length-delimited field: tag, length, bytes.
fn put_field(buf: &mut impl bytes::BufMut, tag: u32, bytes: &[u8]) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

/// The encoded length of a length-delimited field of `len` bytes with a one-byte tag.
fn delimited(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

impl BulkAnswerItem {
    fn new(key: String, record: Option<Record>) -> BulkAnswerItem {
        let mut item = BulkAnswerItem {
            key,
            record,
            digits: [0; 20],
            etag_at: 20,
            expires: None,
            len: 0,
        };
        let mut len = if item.key.is_empty() {
            0
        } else {
            delimited(item.key.len())
        };
        if let Some(record) = &item.record {
            let mut n = record.etag.sequence();
            loop {
                item.etag_at -= 1;
                item.digits[item.etag_at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            if !record.value.is_empty() {
                len += delimited(record.value.len());
            }
            len += delimited(delimited(20 - item.etag_at));
            item.expires = record.expire_time_rfc3339();
            if let Some(at) = &item.expires {
                len += delimited(delimited(TTL_EXPIRE_TIME_KEY.len()) + delimited(at.len()));
            }
            if let Some(content_type) = record.content_type.as_deref().filter(|c| !c.is_empty()) {
                len += delimited(content_type.len());
            }
        }
        item.len = len;
        item
    }

    fn encode(&self, buf: &mut impl bytes::BufMut) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let field = put_field;
        if !self.key.is_empty() {
            field(buf, 1, self.key.as_bytes());
        }
        let Some(record) = &self.record else { return };
        if !record.value.is_empty() {
            field(buf, 2, &record.value);
        }
        let etag = &self.digits[self.etag_at..];
        encode_key(3, WireType::LengthDelimited, buf);
        encode_varint(delimited(etag.len()) as u64, buf);
        field(buf, 1, etag);
        if let Some(at) = &self.expires {
            encode_key(5, WireType::LengthDelimited, buf);
            encode_varint(
                (delimited(TTL_EXPIRE_TIME_KEY.len()) + delimited(at.len())) as u64,
                buf,
            );
            field(buf, 1, TTL_EXPIRE_TIME_KEY.as_bytes());
            field(buf, 2, at.as_bytes());
        }
        if let Some(content_type) = record.content_type.as_deref().filter(|c| !c.is_empty()) {
            field(buf, 6, content_type.as_bytes());
        }
    }
}

impl BulkGetAnswer {
    /// The answer for `keys` (echoed as received) and their records, in order.
    pub fn new(keys: Vec<String>, records: Vec<Option<Record>>) -> BulkGetAnswer {
        let items: Vec<BulkAnswerItem> = keys
            .into_iter()
            .zip(records)
            .map(|(key, record)| BulkAnswerItem::new(key, record))
            .collect();
        let len = items.iter().map(|item| delimited(item.len)).sum();
        BulkGetAnswer { items, len }
    }
}

impl prost::Message for BulkGetAnswer {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        for item in &self.items {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, buf);
            prost::encoding::encode_varint(item.len as u64, buf);
            item.encode(buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded: what it would read is skipped.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        *self = BulkGetAnswer::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn record() -> impl Strategy<Value = Option<Record>> {
        proptest::option::of((
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<u64>(),
            proptest::option::of(0u64..4_102_444_800_000),
            proptest::option::of("[a-z/+.-]{0,20}"),
        ))
        .prop_map(|r| {
            r.map(|(value, etag, expires_at_unix_ms, content_type)| Record {
                value,
                etag: roost_engine::Etag::parse(&etag.to_string())
                    .unwrap()
                    .unwrap(),
                expires_at_unix_ms,
                content_type,
            })
        })
    }

    proptest! {
        /// The direct encoding is the generated type's, byte for byte.
        #[test]
        fn a_bulk_get_answer_encodes_as_the_generated_response(
            items in proptest::collection::vec(("[a-zA-Z0-9|é]{0,30}", record()), 0..20),
        ) {
            let (keys, records): (Vec<String>, Vec<Option<Record>>) = items.into_iter().unzip();
            let generated = proto::BulkGetResponse {
                items: keys.iter().cloned().zip(records.iter().cloned()).map(|(k, r)| bulk_item(k, r)).collect(),
            };
            let answer = BulkGetAnswer::new(keys, records);
            prop_assert_eq!(answer.encoded_len(), generated.encoded_len());
            prop_assert_eq!(answer.encode_to_vec(), generated.encode_to_vec());
        }
    }
}
