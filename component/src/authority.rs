//! Accepting gRPC clients that put the socket path in `:authority`.
//!
//! Over a Unix socket grpc-go (daprd, grpcurl) sends `:authority: localhost`, but grpc-c
//! (Python's grpcio since 1.57, and what is built on it) sends the percent-encoded socket path
//! and grpc-java the raw path. The HTTP/2 layer under tonic refuses an authority that is not a
//! valid URI authority with RST_STREAM PROTOCOL_ERROR before any handler runs, so those clients
//! could not call Roost at all.
//!
//! [`AuthorityFix`] sits between the accepted socket and the HTTP/2 server, on the bytes the
//! client sends. It reads the connection preface and the frames; other frames pass unchanged.
//! The first request's header block is decoded (HPACK, with the client's dynamic table):
//! - if its `:authority` is absent or valid, the block and everything after it pass through
//!   byte for byte — a grpc-go connection costs one header-block decode;
//! - otherwise every header block of the connection, this one included, is decoded with the
//!   client's table and re-encoded with `:authority: localhost` as literals without indexing
//!   (so the server's HPACK table stays empty and in step), in a HEADERS frame and as many
//!   CONTINUATION frames as the 16 KiB minimum frame size needs; padding and priority fields
//!   are dropped, END_STREAM is kept.
//!
//! A block that does not decode is passed on as it came, and the HTTP/2 server answers it
//! (COMPRESSION_ERROR) as it would without this layer. Responses are not touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may have; always safe to send.
const MAX_FRAME: usize = 16_384;
/// What the server accepts as `:authority` in place of a socket path.
const LOCALHOST: &[u8] = b"localhost";
/// How much is read from the socket at a time while frames are inspected.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for the 24-byte connection preface.
    Preface,
    /// Frames pass; the first header block decides.
    Inspect,
    /// Every header block is rewritten.
    Rewrite,
    /// Everything passes unchanged.
    PassThrough,
}

/// A header block being collected from a HEADERS frame and its CONTINUATIONs.
struct Block {
    /// The frames as received.
    raw: BytesMut,
    /// The header block fragments, without padding or priority fields.
    fragment: BytesMut,
    stream_id: u32,
    end_stream: bool,
}

/// The client-to-server side of one connection, with header blocks fixed as described in the
/// module documentation. Writes go to the socket unchanged.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from the socket, not yet processed.
    input: BytesMut,
    /// Processed bytes the server has not read yet.
    output: BytesMut,
    block: Option<Block>,
    decoder: fluke_hpack::Decoder<'static>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> AuthorityFix<S> {
        AuthorityFix {
            inner,
            mode: Mode::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder: fluke_hpack::Decoder::new(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) {
        if self.mode == Mode::Preface {
            if self.input.len() < PREFACE.len() {
                return;
            }
            self.mode = if self.input.starts_with(PREFACE) {
                Mode::Inspect
            } else {
                // Not HTTP/2 with prior knowledge: leave it to the server to refuse.
                Mode::PassThrough
            };
            let preface = self.input.split_to(PREFACE.len().min(self.input.len()));
            self.output.extend_from_slice(&preface);
        }
        while self.mode != Mode::PassThrough && self.input.len() >= FRAME_HEADER {
            let length =
                u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
            if self.input.len() < FRAME_HEADER + length {
                return;
            }
            let frame = self.input.split_to(FRAME_HEADER + length);
            self.frame(frame);
        }
        if self.mode == Mode::PassThrough {
            if let Some(block) = self.block.take() {
                self.output.extend_from_slice(&block.raw);
            }
            let rest = self.input.split();
            self.output.extend_from_slice(&rest);
        }
    }

    fn frame(&mut self, frame: BytesMut) {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => {
                let Some(fragment) = headers_fragment(flags, payload) else {
                    // Malformed padding: the server will say so.
                    self.output.extend_from_slice(&frame);
                    return;
                };
                let mut block = Block {
                    raw: BytesMut::new(),
                    fragment: BytesMut::from(fragment),
                    stream_id,
                    end_stream: flags & END_STREAM != 0,
                };
                block.raw.extend_from_slice(&frame);
                self.block = Some(block);
                if flags & END_HEADERS != 0 {
                    self.finish_block();
                }
            }
            (CONTINUATION, Some(block)) if block.stream_id == stream_id => {
                block.raw.extend_from_slice(&frame);
                block.fragment.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    self.finish_block();
                }
            }
            (_, None) => self.output.extend_from_slice(&frame),
            (_, Some(_)) => {
                // A frame inside a header block is a protocol error the server reports; pass
                // everything on as it came and step aside.
                let block = self.block.take().expect("a block");
                self.output.extend_from_slice(&block.raw);
                self.output.extend_from_slice(&frame);
                self.mode = Mode::PassThrough;
            }
        }
    }

    fn finish_block(&mut self) {
        let block = self.block.take().expect("a block");
        let headers = match self.decoder.decode(&block.fragment) {
            Ok(headers) => headers,
            Err(_) => {
                self.output.extend_from_slice(&block.raw);
                self.mode = Mode::PassThrough;
                return;
            }
        };
        if self.mode == Mode::Inspect {
            let acceptable = headers
                .iter()
                .find(|(name, _)| name == b":authority")
                .is_none_or(|(_, value)| http::uri::Authority::try_from(value.as_slice()).is_ok());
            if acceptable {
                self.output.extend_from_slice(&block.raw);
                self.mode = Mode::PassThrough;
                return;
            }
            tracing::debug!(
                "a client sent a socket path as :authority; rewriting its header blocks to localhost"
            );
            self.mode = Mode::Rewrite;
        }
        let mut encoded = BytesMut::new();
        for (name, value) in &headers {
            let value = if name == b":authority" {
                LOCALHOST
            } else {
                value.as_slice()
            };
            encode_literal(&mut encoded, name, value);
        }
        write_header_frames(
            &mut self.output,
            block.stream_id,
            block.end_stream,
            &encoded,
        );
    }
}

/// The header block fragment of a HEADERS frame's payload, without padding and priority.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut fragment = payload;
    let mut padding = 0usize;
    if flags & PADDED != 0 {
        padding = *fragment.first()? as usize;
        fragment = &fragment[1..];
    }
    if flags & PRIORITY != 0 {
        fragment = fragment.get(5..)?;
    }
    fragment.get(..fragment.len().checked_sub(padding)?)
}

/// HPACK: a literal header field without indexing, new name, neither string Huffman-coded.
fn encode_literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0x00);
    for text in [name, value] {
        encode_integer(out, text.len(), 7, 0x00);
        out.extend_from_slice(text);
    }
}

/// HPACK's integer with an `prefix`-bit prefix, the first byte's other bits set to `first`.
fn encode_integer(out: &mut BytesMut, mut value: usize, prefix: u8, first: u8) {
    let limit = (1usize << prefix) - 1;
    if value < limit {
        out.put_u8(first | value as u8);
        return;
    }
    out.put_u8(first | limit as u8);
    value -= limit;
    while value >= 128 {
        out.put_u8((value % 128 + 128) as u8);
        value /= 128;
    }
    out.put_u8(value as u8);
}

/// A HEADERS frame, and CONTINUATION frames after it when `block` is larger than a frame.
fn write_header_frames(out: &mut BytesMut, stream_id: u32, end_stream: bool, block: &[u8]) {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut first = true;
    if block.is_empty() {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        write_frame_header(out, 0, HEADERS, flags, stream_id);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let mut flags = if last { END_HEADERS } else { 0 };
        let kind = if first { HEADERS } else { CONTINUATION };
        if first && end_stream {
            flags |= END_STREAM;
        }
        write_frame_header(out, chunk.len(), kind, flags, stream_id);
        out.extend_from_slice(chunk);
        first = false;
    }
}

fn write_frame_header(out: &mut BytesMut, length: usize, kind: u8, flags: u8, stream_id: u32) {
    out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // What is left undecided goes to the server as it came.
                if let Some(block) = this.block.take() {
                    this.output.extend_from_slice(&block.raw);
                }
                if this.input.is_empty() && this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let rest = this.input.split();
                this.output.extend_from_slice(&rest);
                continue;
            }
            if this.mode == Mode::PassThrough && this.input.is_empty() {
                // Nothing held back: read straight into the server's buffer.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(read.filled());
                        this.process();
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_frame_header(&mut out, payload.len(), kind, flags, stream_id);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn request(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/dapr.proto.components.v1.StateStore/Ping".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
        ]
    }

    /// Runs `sent` through the layer in chunks of `chunk` bytes; returns what the server reads.
    async fn through(sent: &[u8], chunk: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let sent = sent.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in sent.chunks(chunk) {
                client.write_all(piece).await.unwrap();
            }
        });
        let mut fixed = AuthorityFix::new(server);
        let mut received = Vec::new();
        writer.await.unwrap();
        let mut buf = vec![0u8; 4096];
        loop {
            let n =
                tokio::time::timeout(std::time::Duration::from_millis(200), fixed.read(&mut buf))
                    .await;
            match n {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("{e}"),
            }
        }
        received
    }

    /// Splits the server's bytes into the preface and (type, flags, stream, payload) frames.
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            out.push((rest[3], rest[4], stream, rest[9..9 + length].to_vec()));
            rest = &rest[9 + length..];
        }
        out
    }

    fn connection(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(0x4, 0, 0, &[0, 4, 0, 0, 0xff, 0xff])); // SETTINGS
        for (i, block) in blocks.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            sent.extend(frame(HEADERS, END_HEADERS, stream, block));
            sent.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0")); // DATA
        }
        sent
    }

    #[tokio::test]
    async fn a_valid_authority_passes_byte_for_byte() {
        let mut encoder = fluke_hpack::Encoder::new();
        let first = encoder.encode(request(b"localhost").iter().map(|(n, v)| (&n[..], &v[..])));
        let second = encoder.encode(request(b"localhost").iter().map(|(n, v)| (&n[..], &v[..])));
        let sent = connection(&[first, second]);
        for chunk in [1, 7, 4096] {
            assert_eq!(through(&sent, chunk).await, sent, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_on_every_request() {
        for authority in [
            &b"%2Ftmp%2Fdapr-components-sockets%2Froost.sock"[..],
            b"/tmp/roost.sock",
        ] {
            assert!(http::uri::Authority::try_from(authority).is_err());
            // The client's encoder indexes the authority: the second request refers to it.
            let mut encoder = fluke_hpack::Encoder::new();
            let first = encoder.encode(request(authority).iter().map(|(n, v)| (&n[..], &v[..])));
            let second = encoder.encode(request(authority).iter().map(|(n, v)| (&n[..], &v[..])));
            assert!(
                second.len() < first.len(),
                "the second block uses the dynamic table"
            );
            let sent = connection(&[first, second]);
            for chunk in [1, 5, 4096] {
                let got = frames(&through(&sent, chunk).await);
                assert_eq!(got.len(), 5, "SETTINGS, then HEADERS and DATA twice");
                assert_eq!(got[0].0, 0x4);
                let mut server = fluke_hpack::Decoder::new();
                for (i, (kind, flags, stream, payload)) in got[1..].iter().enumerate() {
                    let stream_expected = 1 + 2 * (i as u32 / 2);
                    assert_eq!(*stream, stream_expected);
                    if i % 2 == 1 {
                        assert_eq!(
                            (*kind, *flags, &payload[..]),
                            (0x0, END_STREAM, &b"\0\0\0\0\0"[..])
                        );
                        continue;
                    }
                    assert_eq!((*kind, *flags), (HEADERS, END_HEADERS));
                    let headers = server.decode(payload).unwrap();
                    assert_eq!(headers, request(b"localhost"), "chunk {chunk}");
                }
            }
        }
    }

    #[tokio::test]
    async fn padding_priority_end_stream_and_continuations_are_handled() {
        let mut encoder = fluke_hpack::Encoder::new();
        let mut headers = request(b"/tmp/x.sock");
        headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        let (head, tail) = block.split_at(100);
        // HEADERS with padding and priority, END_STREAM, then a CONTINUATION.
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        payload.extend_from_slice(head);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
        sent.extend(frame(CONTINUATION, END_HEADERS, 1, tail));
        let got = frames(&through(&sent, 1000).await);
        assert!(got.len() >= 3, "a 40 KB block needs CONTINUATION frames");
        assert_eq!((got[0].0, got[0].1), (HEADERS, END_STREAM));
        let mut block = Vec::new();
        for (i, (kind, flags, stream, payload)) in got.iter().enumerate() {
            assert_eq!(*stream, 1);
            assert!(payload.len() <= MAX_FRAME);
            if i > 0 {
                assert_eq!(*kind, CONTINUATION);
            }
            assert_eq!(flags & END_HEADERS != 0, i == got.len() - 1);
            block.extend_from_slice(payload);
        }
        let mut expected = headers.clone();
        expected[3].1 = b"localhost".to_vec();
        assert_eq!(
            fluke_hpack::Decoder::new().decode(&block).unwrap(),
            expected
        );
    }

    #[tokio::test]
    async fn a_block_that_does_not_decode_reaches_the_server_unchanged() {
        let sent = connection(&[vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff]]);
        assert_eq!(through(&sent, 3).await, sent);
    }

    #[test]
    fn integers_use_hpack_prefix_coding() {
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let mut out = BytesMut::new();
        encode_integer(&mut out, 1337, 5, 0);
        assert_eq!(&out[..], &[31, 154, 10]);
        let mut out = BytesMut::new();
        encode_integer(&mut out, 10, 5, 0);
        assert_eq!(&out[..], &[10]);
    }
}
