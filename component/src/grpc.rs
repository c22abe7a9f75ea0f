//! gRPC's message framing and call headers, for the unary calls `crate::transport` serves on
//! HTTP/2 itself: the 5-byte length prefix, reading one request message within
//! `--max-request-bytes`, encoding one response message, and `grpc-timeout`.
//!
//! The codes and messages match what tonic's server answered for the same mistakes, so a
//! client sees the same statuses as before the transport served these calls itself.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use prost::Message;
use tonic::Status;

/// A message's prefix: the compressed flag and the 4-byte big-endian length.
pub const PREFIX: usize = 5;

/// Encodes `message` with its prefix, in one buffer sized for it, if it is at most `limit`
/// bytes; a longer one is refused with its size.
pub fn frame_within(message: &impl Message, limit: usize) -> Result<Bytes, usize> {
    let len = message.encoded_len();
    if len > limit {
        return Err(len);
    }
    let mut out = BytesMut::with_capacity(PREFIX + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    // Cannot fail: the buffer has room for the whole message.
    let _ = message.encode(&mut out);
    Ok(out.freeze())
}

/// A handler's answer as the transport sends it: framed, if at most `limit` bytes (else its
/// size). A protobuf message is encoded here ([`frame_within`]); an answer written framed as
/// it was built (`service::convert::BulkGetAnswer`) is only checked.
pub trait Reply {
    fn framed(self, limit: usize) -> Result<Bytes, usize>;
}

impl<M: Message> Reply for M {
    fn framed(self, limit: usize) -> Result<Bytes, usize> {
        frame_within(&self, limit)
    }
}

/// Decodes a request message (the bytes after the prefix). Values stay slices of `message`.
pub fn decode<T: Message + Default>(message: Bytes) -> Result<T, Status> {
    T::decode(message)
        .map_err(|e| Status::internal(format!("failed to decode the request message: {e}")))
}

/// The one request message of a unary call, collected from the body's chunks.
#[derive(Debug, Default)]
pub struct Collector {
    /// The first chunk, kept as is: most requests arrive in one DATA frame.
    first: Option<Bytes>,
    /// Later chunks, appended to a copy of the first.
    joined: Option<BytesMut>,
    received: usize,
}

impl Collector {
    /// Adds a chunk of the body. Refuses, as soon as the prefix is in, a message longer than
    /// `limit` (without waiting for the rest of it).
    pub fn push(&mut self, chunk: Bytes, limit: usize) -> Result<(), Status> {
        // An empty chunk (clients end a message's stream with an empty DATA frame) adds
        // nothing: joining it would copy the first for nothing.
        if chunk.is_empty() {
            return Ok(());
        }
        self.received += chunk.len();
        match (&mut self.first, &mut self.joined) {
            (None, _) => self.first = Some(chunk),
            (Some(first), None) => {
                let mut joined = BytesMut::with_capacity(first.len() + chunk.len());
                joined.extend_from_slice(first);
                joined.extend_from_slice(&chunk);
                self.joined = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&chunk),
        }
        match self.prefix() {
            Some((_, len)) if len > limit => Err(Status::resource_exhausted(format!(
                "the request message is {len} bytes, above the limit of {limit} bytes \
                 (roost serve --max-request-bytes)"
            ))),
            _ => Ok(()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match (&self.first, &self.joined) {
            (_, Some(joined)) => joined,
            (Some(first), None) => first,
            (None, None) => &[],
        }
    }

    /// The compressed flag and the message length, once the prefix is in.
    fn prefix(&self) -> Option<(u8, usize)> {
        let bytes = self.bytes();
        (bytes.len() >= PREFIX).then(|| {
            (
                bytes[0],
                u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize,
            )
        })
    }

    /// The message, once the body has ended: exactly one uncompressed message.
    pub fn finish(self) -> Result<Bytes, Status> {
        let Some((flag, len)) = self.prefix() else {
            return Err(Status::internal("the unary call has no request message"));
        };
        if flag != 0 {
            return Err(Status::unimplemented(
                "the request message is compressed; roost serve accepts uncompressed messages",
            ));
        }
        let whole = PREFIX + len;
        if self.received < whole {
            return Err(Status::internal(format!(
                "the request ended inside its message ({} of {len} bytes)",
                self.received - PREFIX
            )));
        }
        if self.received > whole {
            return Err(Status::internal(
                "a unary call carries one request message; this one has more",
            ));
        }
        let bytes = match (self.first, self.joined) {
            (_, Some(joined)) => joined.freeze(),
            (Some(first), None) => first,
            (None, None) => Bytes::new(),
        };
        Ok(bytes.slice(PREFIX..))
    }
}

/// The `grpc-timeout` header: an integer of at most 8 digits and a unit (`H M S m u n`).
/// A header that does not parse is refused, as gRPC servers do.
pub fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    headers
        .get(GRPC_TIMEOUT)
        .map(|value| timeout_value(value.as_bytes()))
        .transpose()
}

/// One `grpc-timeout` value, as [`timeout`] reads it.
pub fn timeout_value(text: &[u8]) -> Result<Duration, Status> {
    let invalid = || Status::invalid_argument("the grpc-timeout header is not a gRPC timeout");
    if text.len() < 2 || text.len() > 9 {
        return Err(invalid());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let amount = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b"H" => Duration::from_secs(amount * 3600),
        b"M" => Duration::from_secs(amount * 60),
        b"S" => Duration::from_secs(amount),
        b"m" => Duration::from_millis(amount),
        b"u" => Duration::from_micros(amount),
        b"n" => Duration::from_nanos(amount),
        _ => return Err(invalid()),
    })
}

/// The gRPC code a response's headers carry (`grpc-status`), for the metrics: 0 when
/// absent (a success carries its status in the trailers); a code gRPC does not define is
/// `Unknown` (2), as tonic reads it.
pub fn code_in(headers: &HeaderMap) -> usize {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(0, |c| if c <= 16 { c } else { 2 })
}

/// Whether a `content-type` is gRPC's: `application/grpc` or `application/grpc+…`/`;…`.
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    value == b"application/grpc"
        || value
            .strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.starts_with(b"+") || rest.starts_with(b";"))
}

/// Whether a request is a gRPC call: a POST with a `content-type` of `application/grpc`
/// (or `application/grpc+…`).
pub fn is_grpc(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::POST
        && headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn a_message_is_framed_with_its_length_up_to_the_limit() {
        let message = crate::proto::GetResponse {
            data: vec![7; 100],
            ..Default::default()
        };
        let len = message.encoded_len();
        let framed = frame_within(&message, len).unwrap();
        assert_eq!(framed.len(), PREFIX + len);
        assert_eq!(&framed[..PREFIX], &[0, 0, 0, 0, len as u8]);
        assert_eq!(
            decode::<crate::proto::GetResponse>(framed.slice(PREFIX..)).unwrap(),
            message
        );
        assert_eq!(frame_within(&message, len - 1), Err(len));
    }

    #[test]
    fn one_chunk_is_kept_without_a_copy() {
        let body = Bytes::from(prefixed(b"hello"));
        let mut collector = Collector::default();
        collector.push(body.clone(), 100).unwrap();
        let message = collector.finish().unwrap();
        assert_eq!(&message[..], b"hello");
        assert_eq!(message.as_ptr(), body[PREFIX..].as_ptr());
    }

    #[test]
    fn empty_chunks_add_nothing_and_copy_nothing() {
        let body = Bytes::from(prefixed(b"hello"));
        let mut collector = Collector::default();
        collector.push(Bytes::new(), 100).unwrap();
        collector.push(body.clone(), 100).unwrap();
        collector.push(Bytes::new(), 100).unwrap();
        let message = collector.finish().unwrap();
        assert_eq!(&message[..], b"hello");
        assert_eq!(message.as_ptr(), body[PREFIX..].as_ptr());
    }

    #[test]
    fn chunks_split_anywhere_join_to_the_message() {
        let body = prefixed(b"a longer message");
        for cut in 0..body.len() {
            for second in cut..body.len() {
                let mut collector = Collector::default();
                for part in [&body[..cut], &body[cut..second], &body[second..]] {
                    collector.push(Bytes::copy_from_slice(part), 100).unwrap();
                }
                assert_eq!(&collector.finish().unwrap()[..], b"a longer message");
            }
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_prefix() {
        let mut collector = Collector::default();
        let mut prefix = vec![0];
        prefix.extend_from_slice(&101u32.to_be_bytes());
        let err = collector.push(Bytes::from(prefix), 100).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("--max-request-bytes"), "{err:?}");
        let mut collector = Collector::default();
        collector
            .push(Bytes::from(prefixed(&[7; 100])), 100)
            .unwrap();
        assert_eq!(collector.finish().unwrap().len(), 100);
    }

    #[test]
    fn missing_short_long_and_compressed_messages_are_refused() {
        let code = |chunks: &[&[u8]]| {
            let mut collector = Collector::default();
            for chunk in chunks {
                collector.push(Bytes::copy_from_slice(chunk), 100).unwrap();
            }
            collector.finish().unwrap_err().code()
        };
        assert_eq!(code(&[]), tonic::Code::Internal);
        assert_eq!(code(&[&[0, 0, 0]]), tonic::Code::Internal);
        assert_eq!(code(&[&prefixed(b"abc")[..6]]), tonic::Code::Internal);
        assert_eq!(
            code(&[&prefixed(b"abc"), &prefixed(b"d")]),
            tonic::Code::Internal
        );
        let mut compressed = prefixed(b"abc");
        compressed[0] = 1;
        assert_eq!(code(&[&compressed]), tonic::Code::Unimplemented);
        // An empty message is a message (a default request).
        let mut collector = Collector::default();
        collector.push(Bytes::from(prefixed(b"")), 100).unwrap();
        assert!(collector.finish().unwrap().is_empty());
    }

    #[test]
    fn timeouts_parse_in_every_unit_and_bad_ones_are_refused() {
        let parse = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            timeout(&headers)
        };
        assert_eq!(parse("2H").unwrap(), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M").unwrap(), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m").unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(
            parse("99999999u").unwrap(),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse("1n").unwrap(), Some(Duration::from_nanos(1)));
        for bad in ["", "S", "5", "5s", "-5S", "123456789S", "1.5S", " 5S"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(timeout(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn grpc_calls_are_posts_of_application_grpc() {
        let headers = |ct: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            headers
        };
        let post = http::Method::POST;
        assert!(is_grpc(&post, &headers("application/grpc")));
        assert!(is_grpc(&post, &headers("application/grpc+proto")));
        assert!(!is_grpc(&post, &headers("application/grpcx")));
        assert!(!is_grpc(&post, &headers("application/json")));
        assert!(!is_grpc(&http::Method::GET, &headers("application/grpc")));
        assert!(!is_grpc(&post, &HeaderMap::new()));
    }
}
