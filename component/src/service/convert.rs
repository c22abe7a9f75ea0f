//! Wire ↔ engine conversions; generated types never reach the engine.

use std::collections::HashMap;

use roost_engine::{Concurrency, DeleteRequest, Record, RecordRef, SetRequest};
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

/// A `BulkGetRequest` decoded for its keys alone: each key is a slice of the request's own
/// buffer (no `GetRequest`, `String` or map per item). Everything else is checked as the
/// generated type checks it and then dropped — the items' metadata and consistency and the
/// request's options, which a bulk get does not use — so a message decodes here exactly
/// when it decodes as a `proto::BulkGetRequest`, to the same keys (property tests below).
/// A message of another shape (unknown fields, anything malformed) is decoded by the
/// generated type instead, which gives the same keys or its own error. Only decoded.
#[derive(Debug, Default)]
pub struct BulkGetKeys {
    /// The items' keys, in order; valid UTF-8.
    pub keys: Vec<bytes::Bytes>,
}

impl BulkGetKeys {
    /// The keys of `message` read in place, or None where the generated type must decide:
    /// a field other than the items and the options, or anything malformed.
    fn in_place(message: &bytes::Bytes) -> Option<Vec<bytes::Bytes>> {
        use prost::Message;
        use prost::encoding::{DecodeContext, decode_key};
        // Tags and short lengths are one byte: read here; longer varints by prost.
        fn decode_varint(rest: &mut &[u8]) -> Result<u64, prost::DecodeError> {
            match rest.first() {
                Some(&byte) if byte < 0x80 => {
                    *rest = &rest[1..];
                    Ok(u64::from(byte))
                }
                _ => prost::encoding::decode_varint(rest),
            }
        }
        // A cursor is the part of the message not read yet: a position in the message is the
        // message's length minus the cursor's.
        let mut rest: &[u8] = message;
        let mut keys = Vec::new();
        let field = |rest: &mut &[u8]| -> Option<std::ops::Range<usize>> {
            let len = usize::try_from(decode_varint(rest).ok()?).ok()?;
            (len <= rest.len()).then(|| {
                let start = message.len() - rest.len();
                *rest = &rest[len..];
                start..start + len
            })
        };
        while !rest.is_empty() {
            match decode_varint(&mut rest).ok()? {
                // Field 1, length-delimited: an item.
                0x0A => {
                    let item = field(&mut rest)?;
                    let mut inner = &message[item.clone()];
                    let mut key = 0..0;
                    while !inner.is_empty() {
                        let before = inner;
                        if decode_varint(&mut inner).ok()? == 0x0A {
                            let len = usize::try_from(decode_varint(&mut inner).ok()?).ok()?;
                            if len > inner.len() {
                                return None;
                            }
                            let start = item.end - inner.len();
                            key = start..start + len;
                            inner = &inner[len..];
                        } else {
                            // Another field of the item, checked as `GetRequest` checks it.
                            inner = before;
                            let (tag, wire_type) = decode_key(&mut inner).ok()?;
                            proto::GetRequest::default()
                                .merge_field(tag, wire_type, &mut inner, DecodeContext::default())
                                .ok()?;
                        }
                    }
                    let bytes = &message[key.clone()];
                    if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
                        return None;
                    }
                    keys.push(message.slice(key));
                }
                // Field 2, length-delimited: the options.
                0x12 => {
                    let options = field(&mut rest)?;
                    proto::BulkGetRequestOptions::decode(&message[options]).ok()?;
                }
                _ => return None,
            }
        }
        Some(keys)
    }
}

impl prost::Message for BulkGetKeys {
    fn merge(&mut self, mut buf: impl bytes::Buf) -> Result<(), prost::DecodeError> {
        // The whole message, as one buffer (a slice of the request's, not a copy).
        let message = buf.copy_to_bytes(buf.remaining());
        match BulkGetKeys::in_place(&message) {
            Some(keys) => self.keys.extend(keys),
            None => {
                let request = <proto::BulkGetRequest as prost::Message>::decode(message)?;
                self.keys
                    .extend(request.items.into_iter().map(|item| item.key.into()));
            }
        }
        Ok(())
    }

    fn encode_raw(&self, _: &mut impl bytes::BufMut) {
        // Never encoded (`encoded_len` is 0).
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // (Only when merged field by field, not by `decode`.)
        let mut request = proto::BulkGetRequest::default();
        request.merge_field(tag, wire_type, buf, ctx)?;
        self.keys
            .extend(request.items.into_iter().map(|item| item.key.into()));
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        self.keys.clear();
    }
}

/// A `BulkGetResponse` written framed as the engine reads each record (`push`), without a
/// `Record`, a `BulkStateItem`, an etag string or a metadata map per key: the same bytes as
/// the generated type's encoding with its gRPC prefix (checked by a property test below).
#[derive(Debug)]
pub struct BulkGetAnswer {
    /// The prefix (its length filled in by `framed`), then the items written so far.
    out: bytes::BytesMut,
    /// The message's length (without the prefix), items not written included.
    len: usize,
    /// Items are written while the message is at most this long; beyond, they are only
    /// counted (the answer is refused with its size), so a refused answer's memory stays
    /// bounded.
    limit: usize,
}

/// The room an answer is first given per key, for the value and the item's other fields
/// (besides the key): answers whose items fit are never moved while they are written.
/// Larger ones grow the buffer, copying what is written so far.
const ROOM_PER_KEY: usize = 2048;
/// The most room an answer is given at first, however many keys it has.
const MAX_FIRST_ROOM: usize = 1024 * 1024;

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

impl BulkGetAnswer {
    /// An empty answer with room for the items of `keys`, written while it is at most
    /// `limit` bytes long.
    pub fn with_room(keys: &[bytes::Bytes], limit: usize) -> BulkGetAnswer {
        let key_bytes: usize = keys.iter().map(|k| k.len()).sum();
        let room = (key_bytes + keys.len() * ROOM_PER_KEY)
            .min(MAX_FIRST_ROOM)
            .min(limit);
        let mut out = bytes::BytesMut::with_capacity(crate::grpc::PREFIX + room);
        bytes::BufMut::put_bytes(&mut out, 0, crate::grpc::PREFIX);
        BulkGetAnswer { out, len: 0, limit }
    }

    /// Appends the item of `key` (echoed as received) and its record, if it has one.
    pub fn push(&mut self, key: &[u8], record: Option<RecordRef<'_>>) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        // The etag in decimal, right-aligned in `digits[etag_at..]`.
        let mut digits = [0u8; 20];
        let mut etag_at = digits.len();
        let mut expires = None;
        let mut content_type = None;
        let mut len = if key.is_empty() {
            0
        } else {
            delimited(key.len())
        };
        if let Some(record) = &record {
            let mut n = record.etag.sequence();
            loop {
                etag_at -= 1;
                digits[etag_at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            if !record.value.is_empty() {
                len += delimited(record.value.len());
            }
            len += delimited(delimited(digits.len() - etag_at));
            expires = record.expire_time_rfc3339();
            if let Some(at) = &expires {
                len += delimited(delimited(TTL_EXPIRE_TIME_KEY.len()) + delimited(at.len()));
            }
            content_type = record.content_type.filter(|c| !c.is_empty());
            if let Some(content_type) = content_type {
                len += delimited(content_type.len());
            }
        }
        self.len += delimited(len);
        if self.len > self.limit {
            return;
        }
        let buf = &mut self.out;
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        if !key.is_empty() {
            put_field(buf, 1, key);
        }
        let Some(record) = record else { return };
        if !record.value.is_empty() {
            put_field(buf, 2, record.value);
        }
        let etag = &digits[etag_at..];
        encode_key(3, WireType::LengthDelimited, buf);
        encode_varint(delimited(etag.len()) as u64, buf);
        put_field(buf, 1, etag);
        if let Some(at) = &expires {
            encode_key(5, WireType::LengthDelimited, buf);
            encode_varint(
                (delimited(TTL_EXPIRE_TIME_KEY.len()) + delimited(at.len())) as u64,
                buf,
            );
            put_field(buf, 1, TTL_EXPIRE_TIME_KEY.as_bytes());
            put_field(buf, 2, at.as_bytes());
        }
        if let Some(content_type) = content_type {
            put_field(buf, 6, content_type.as_bytes());
        }
    }
}

impl crate::grpc::Reply for BulkGetAnswer {
    fn framed(mut self, limit: usize) -> Result<bytes::Bytes, usize> {
        let len = self.len;
        if len > limit.min(self.limit) {
            return Err(len);
        }
        debug_assert_eq!(len, self.out.len() - crate::grpc::PREFIX);
        self.out[1..crate::grpc::PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(self.out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Reply;
    use proptest::prelude::*;
    use prost::Message;

    fn record() -> impl Strategy<Value = Option<Record>> {
        proptest::option::of((
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                // Beyond the room an answer is first given per key.
                proptest::collection::vec(any::<u8>(), 2000..5000),
            ],
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

    /// The generated type's item for a key and its record: what the answer is checked
    /// against.
    fn bulk_item(key: String, record: Option<Record>) -> proto::BulkStateItem {
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

    fn bulk_get_request() -> impl Strategy<Value = proto::BulkGetRequest> {
        let item = (
            "[a-zA-Z0-9|é]{0,30}",
            proptest::collection::hash_map("[a-z]{0,8}", "[a-zé ]{0,8}", 0..3),
            0i32..4,
        )
            .prop_map(|(key, metadata, consistency)| proto::GetRequest {
                key,
                metadata,
                consistency,
            });
        (
            proptest::collection::vec(item, 0..12),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(items, parallelism)| proto::BulkGetRequest {
                items,
                options: parallelism
                    .map(|parallelism| proto::BulkGetRequestOptions { parallelism }),
            })
    }

    /// What the generated type makes of `bytes`: the keys, or an error.
    fn generated_keys(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
        proto::BulkGetRequest::decode(bytes)
            .ok()
            .map(|r| r.items.into_iter().map(|i| i.key.into_bytes()).collect())
    }

    fn our_keys(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
        BulkGetKeys::decode(bytes::Bytes::copy_from_slice(bytes))
            .ok()
            .map(|k| k.keys.iter().map(|k| k.to_vec()).collect())
    }

    #[test]
    fn a_key_that_is_not_utf8_is_refused_as_the_generated_type_refuses_it() {
        let mut bytes = proto::BulkGetRequest {
            items: vec![proto::GetRequest {
                key: "ab".into(),
                ..Default::default()
            }],
            options: None,
        }
        .encode_to_vec();
        let at = bytes.len() - 1;
        bytes[at] = 0xFF;
        assert!(proto::BulkGetRequest::decode(&bytes[..]).is_err());
        assert!(BulkGetKeys::decode(bytes::Bytes::from(bytes)).is_err());
    }

    #[test]
    fn an_item_with_its_key_twice_has_the_last_as_the_generated_type_has() {
        // One item: key "a", consistency 1, key "bc"; then one with an empty key.
        let bytes = [
            0x0A, 0x09, 0x0A, 0x01, b'a', 0x18, 0x01, 0x0A, 0x02, b'b', b'c', 0x0A, 0x00,
        ];
        let keys = Some(vec![b"bc".to_vec(), Vec::new()]);
        assert_eq!(generated_keys(&bytes), keys);
        assert_eq!(our_keys(&bytes), keys);
        assert!(BulkGetKeys::in_place(&bytes::Bytes::copy_from_slice(&bytes)).is_some());
    }

    proptest! {
        /// Any request daprd or another client can send is read in place (the generated
        /// type is not needed), to the keys the generated type reads.
        #[test]
        fn bulk_get_keys_are_read_in_place_as_the_generated_type_reads_them(request in bulk_get_request()) {
            let bytes = request.encode_to_vec();
            let expected: Vec<Vec<u8>> = request.items.iter().map(|i| i.key.clone().into_bytes()).collect();
            let in_place = BulkGetKeys::in_place(&bytes::Bytes::from(bytes.clone()));
            prop_assert_eq!(in_place.map(|k| k.iter().map(|k| k.to_vec()).collect::<Vec<_>>()), Some(expected.clone()));
            prop_assert_eq!(our_keys(&bytes), Some(expected));
        }

        /// A request with bytes changed, cut short or added decodes here exactly when it
        /// decodes as the generated type, to the same keys.
        #[test]
        fn damaged_bulk_gets_decode_as_the_generated_type_decodes_them(
            request in bulk_get_request(),
            changes in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
            cut in proptest::option::of(any::<proptest::sample::Index>()),
            tail in proptest::collection::vec(any::<u8>(), 0..6),
        ) {
            let mut bytes = request.encode_to_vec();
            if !bytes.is_empty() {
                for (at, byte) in &changes {
                    let at = at.index(bytes.len());
                    bytes[at] = *byte;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len()));
                }
            }
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(our_keys(&bytes), generated_keys(&bytes));
        }

        /// Any bytes at all: the same outcome as the generated type.
        #[test]
        fn any_bytes_decode_as_bulk_get_keys_as_the_generated_type_decodes_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assert_eq!(our_keys(&bytes), generated_keys(&bytes));
        }

        /// The answer is the generated type's encoding, byte for byte, behind its prefix;
        /// over the limit, it is refused with its size.
        #[test]
        fn a_bulk_get_answer_is_the_generated_response_framed(
            items in proptest::collection::vec(("[a-zA-Z0-9|é]{0,30}", record()), 0..20),
        ) {
            let (keys, records): (Vec<String>, Vec<Option<Record>>) = items.into_iter().unzip();
            let generated = proto::BulkGetResponse {
                items: keys.iter().cloned().zip(records.iter().cloned()).map(|(k, r)| bulk_item(k, r)).collect(),
            };
            let keys: Vec<bytes::Bytes> = keys.into_iter().map(bytes::Bytes::from).collect();
            let answer = |limit| {
                let mut answer = BulkGetAnswer::with_room(&keys, limit);
                for (key, record) in keys.iter().zip(&records) {
                    answer.push(key, record.as_ref().map(Record::as_record_ref));
                }
                answer
            };
            let len = generated.encoded_len();
            let framed = answer(usize::MAX).framed(usize::MAX).unwrap();
            prop_assert_eq!(&framed[..5], &[&[0u8][..], &(len as u32).to_be_bytes()[..]].concat()[..]);
            prop_assert_eq!(&framed[5..], &generated.encode_to_vec()[..]);
            prop_assert_eq!(answer(len).framed(len).map(|f| f.len()), Ok(len + 5));
            if len > 0 {
                // Refused with the whole message's size, whichever limit is lower.
                prop_assert_eq!(answer(len - 1).framed(usize::MAX).map(|f| f.len()), Err(len));
                prop_assert_eq!(answer(usize::MAX).framed(len - 1).map(|f| f.len()), Err(len));
                let cut = answer(len / 2);
                prop_assert!(cut.out.len() <= crate::grpc::PREFIX + len / 2);
            }
        }
    }
}
