//! One HTTP/2 connection's protocol state, without I/O (RFC 9113, server side).
//!
//! [`Connection::receive`] takes the bytes the client sent, parses every complete frame,
//! enforces the protocol (frame sizes, stream states and identifiers, flow control, header
//! blocks and their CONTINUATIONs, SETTINGS, PING, GOAWAY, RST_STREAM, the request header rules
//! of RFC 9113 §8) and reports what the caller must act on as [`Event`]s: a request's head, its
//! body's data, a stream the client reset. Responses go the other way ([`Connection::respond`],
//! [`Connection::send_data`], [`Connection::send_trailers`]); what is ready to be written
//! collects in [`Connection::output`], DATA as the client's flow-control windows allow.
//!
//! A protocol violation is answered as RFC 9113 §5.4 says: a stream error resets the stream
//! (RST_STREAM with the code), a connection error sends GOAWAY with the code and ends the
//! connection ([`Connection::is_closed`]). Nothing a client sends makes this code panic.

use std::collections::{HashMap, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::hpack::{Decoder, Encoder, Field, HpackError};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

/// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// Settings identifiers.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

const FRAME_HEADER: usize = 9;
/// The frame size this server accepts (the default; it is not raised).
const MAX_FRAME: usize = 16_384;
const MAX_WINDOW: i64 = (1 << 31) - 1;
const DEFAULT_WINDOW: i64 = 65_535;
/// The HPACK table size this server's decoder allows (the default; not announced).
const HEADER_TABLE: usize = 4096;
/// A header block may be this many times the header list limit before the connection is
/// ended (ENHANCE_YOUR_CALM); a decoded list above the limit only resets its stream.
const MAX_BLOCK_FACTOR: usize = 4;
/// Payloads of at least this many bytes are written from their own buffer instead of copied
/// into the output.
const SEGMENT_MIN: usize = 4096;
/// The room the output buffer is given back each time it is all written.
const OUTPUT_ROOM: usize = 64 * 1024;
/// How many closed streams are remembered, to tell a late frame from a stream never opened.
const REMEMBERED_CLOSED: usize = 256;

/// A map keyed by stream identifier. Identifiers are small odd numbers chosen by the peer:
/// a multiplicative hash spreads them, without SipHash's cost on every lookup of a call.
pub type StreamMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<StreamIdHasher>>;

#[derive(Debug, Default, Clone, Copy)]
pub struct StreamIdHasher(u64);

impl std::hash::Hasher for StreamIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
        self.write_u64(self.0);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    NoError = 0x0,
    ProtocolError = 0x1,
    InternalError = 0x2,
    FlowControlError = 0x3,
    StreamClosed = 0x5,
    FrameSizeError = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    CompressionError = 0x9,
    EnhanceYourCalm = 0xb,
}

/// What this server announces in its SETTINGS.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Each stream's receive window.
    pub stream_window: u32,
    /// The connection's receive window.
    pub connection_window: u32,
    /// Streams the client may have open at once.
    pub max_streams: u32,
    /// The largest header list accepted (names, values and 32 bytes per field).
    pub max_header_list: u32,
}

/// A request's head: the pseudo-header fields and the rest.
#[derive(Debug, Default)]
pub struct Head {
    pub method: Bytes,
    pub scheme: Bytes,
    pub path: Bytes,
    pub authority: Option<Bytes>,
    /// The regular fields, in order.
    pub fields: Vec<Field>,
}

impl Head {
    /// The value of the regular field `name` (lower case), if present.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.fields
            .iter()
            .find(|f| f.name == name.as_bytes())
            .map(|f| &f.value)
    }
}

/// What the caller must act on.
#[derive(Debug)]
pub enum Event {
    /// A new request; `end_stream` if it has no body.
    Request {
        id: u32,
        head: Head,
        end_stream: bool,
    },
    /// Body bytes of a request; the caller gives the window back with [`Connection::release`].
    Data {
        id: u32,
        data: Bytes,
        end_stream: bool,
    },
    /// The request's body ended with trailers (their content is not used).
    End { id: u32 },
    /// The stream ended before its response did: the client reset it, or it broke a rule.
    Reset { id: u32 },
}

/// Trailers queued behind a stream's data.
#[derive(Debug)]
pub enum Trailers {
    /// `grpc-status: 0`.
    Ok,
    /// Any other fields.
    Fields(Vec<(Bytes, Bytes)>),
}

#[derive(Debug)]
enum Out {
    Data(Bytes, bool),
    Trailers(Trailers),
}

#[derive(Debug)]
struct Stream {
    /// The client ended its side (END_STREAM received).
    remote_closed: bool,
    /// This side ended (END_STREAM queued).
    local_closed: bool,
    send_window: i64,
    /// What the client may still send, and what was received and given back since the last
    /// WINDOW_UPDATE.
    recv_window: i64,
    unreleased: i64,
    /// DATA and trailers waiting for window (or for frames before them).
    queue: VecDeque<Out>,
    /// The request's content-length, and the body bytes received.
    content_length: Option<u64>,
    received: u64,
    /// The head has been answered (HEADERS sent).
    responded: bool,
}

/// A header block being collected from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Partial {
    id: u32,
    end_stream: bool,
    block: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preface,
    /// The preface came; the first frame must be SETTINGS.
    FirstSettings,
    Open,
    /// GOAWAY was sent for an error: input is ignored, output drains, then the end.
    Closed,
}

/// One connection's state. See the module documentation.
#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    limits: Limits,
    decoder: Decoder,
    encoder: Encoder,
    /// What is ready to be written: `segments` first (large payloads, not copied), then
    /// `output`.
    segments: VecDeque<Bytes>,
    output: BytesMut,
    events: Vec<Event>,
    streams: StreamMap<Stream>,
    /// Recently closed streams and whether they were reset.
    closed: VecDeque<u32>,
    /// The highest stream identifier the client opened.
    last_id: u32,
    partial: Option<Partial>,
    /// The client's settings.
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// Flow-control windows of the connection.
    send_window: i64,
    recv_window: i64,
    /// Connection-level bytes consumed since the last WINDOW_UPDATE sent.
    unreleased: i64,
    /// Streams with queued output.
    blocked: Vec<u32>,
    /// GOAWAY sent (graceful or not): no new streams above `last_id`.
    going_away: bool,
    /// The client sent GOAWAY.
    peer_going_away: bool,
}

type Failure = (Reason, &'static str);

impl Connection {
    /// A new connection: its SETTINGS and connection WINDOW_UPDATE are already in the output.
    pub fn new(limits: Limits) -> Connection {
        let mut conn = Connection {
            phase: Phase::Preface,
            limits,
            // A string may be as long as a whole block: the header list's limit is checked on
            // the decoded list, as a stream error, so the table stays in step.
            decoder: Decoder::new(
                HEADER_TABLE,
                MAX_BLOCK_FACTOR * limits.max_header_list as usize,
            ),
            encoder: Encoder::default(),
            segments: VecDeque::new(),
            output: BytesMut::with_capacity(16 * 1024),
            events: Vec::new(),
            streams: StreamMap::default(),
            closed: VecDeque::new(),
            last_id: 0,
            partial: None,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: MAX_FRAME,
            send_window: DEFAULT_WINDOW,
            recv_window: i64::from(limits.connection_window),
            unreleased: 0,
            blocked: Vec::new(),
            going_away: false,
            peer_going_away: false,
        };
        let settings = [
            (SETTINGS_MAX_CONCURRENT_STREAMS, limits.max_streams),
            (SETTINGS_INITIAL_WINDOW_SIZE, limits.stream_window),
            (SETTINGS_MAX_HEADER_LIST_SIZE, limits.max_header_list),
        ];
        header(&mut conn.output, settings.len() * 6, SETTINGS, 0, 0);
        for (id, value) in settings {
            conn.output.put_u16(id);
            conn.output.put_u32(value);
        }
        let extra = i64::from(limits.connection_window) - DEFAULT_WINDOW;
        if extra > 0 {
            header(&mut conn.output, 4, WINDOW_UPDATE, 0, 0);
            conn.output.put_u32(extra as u32);
        }
        conn
    }

    /// How many bytes wait to be written to the client.
    pub fn output_len(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum::<usize>() + self.output.len()
    }

    /// Whether nothing waits to be written.
    pub fn output_is_empty(&self) -> bool {
        self.segments.is_empty() && self.output.is_empty()
    }

    /// The bytes waiting to be written, in order, as slices for a vectored write; returns how
    /// many of `slices` were filled.
    pub fn output_slices<'a>(&'a self, slices: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        let segments = self.segments.iter().map(|s| &s[..]);
        for segment in segments.chain(std::iter::once(&self.output[..])) {
            if n == slices.len() {
                break;
            }
            if !segment.is_empty() {
                slices[n] = std::io::IoSlice::new(segment);
                n += 1;
            }
        }
        n
    }

    /// Drops the first `n` bytes of the output (they were written).
    pub fn advance_output(&mut self, mut n: usize) {
        while n > 0 {
            match self.segments.front_mut() {
                Some(segment) if segment.len() <= n => {
                    n -= segment.len();
                    self.segments.pop_front();
                }
                Some(segment) => {
                    segment.advance(n);
                    return;
                }
                None => {
                    self.output.advance(n);
                    if self.output.is_empty() {
                        // All written: the room already written from is taken back now, when
                        // that moves nothing; later it would move the next frames back there.
                        self.output.reserve(OUTPUT_ROOM);
                    }
                    return;
                }
            }
        }
    }

    /// All the output, taken (for tests).
    #[cfg(test)]
    fn take_output(&mut self) -> BytesMut {
        let mut all = BytesMut::new();
        for segment in self.segments.drain(..) {
            all.extend_from_slice(&segment);
        }
        all.extend_from_slice(&self.output.split());
        all
    }

    /// Adds a frame's payload to the output: a large one as a segment of its own.
    fn put_payload(&mut self, data: Bytes) {
        if data.len() < SEGMENT_MIN {
            self.output.put_slice(&data);
            return;
        }
        if !self.output.is_empty() {
            self.segments.push_back(self.output.split().freeze());
        }
        self.segments.push_back(data);
    }

    /// Events since the last call.
    pub fn events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Swaps the events since the last call into `events` (which should be empty): no event
    /// is moved, and both vectors keep their room.
    pub fn swap_events(&mut self, events: &mut Vec<Event>) {
        std::mem::swap(&mut self.events, events);
    }

    /// The connection ended (an error was answered with GOAWAY, or everything is done after a
    /// GOAWAY either way): once the output is written, close it.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
            || ((self.going_away || self.peer_going_away) && self.streams.is_empty())
    }

    /// Streams not yet finished both ways.
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Begins a graceful end: GOAWAY with the last stream opened; streams open go on.
    pub fn go_away(&mut self) {
        if self.going_away || self.phase == Phase::Closed {
            return;
        }
        self.going_away = true;
        self.write_goaway(Reason::NoError, b"");
    }

    /// Parses every complete frame in `input` (consumed from it).
    pub fn receive(&mut self, input: &mut BytesMut) {
        while self.phase != Phase::Closed {
            if self.phase == Phase::Preface {
                let n = input.len().min(PREFACE.len());
                if input[..n] != PREFACE[..n] {
                    self.fail((
                        Reason::ProtocolError,
                        "the connection preface is not HTTP/2",
                    ));
                    break;
                }
                if n < PREFACE.len() {
                    return;
                }
                input.advance(PREFACE.len());
                self.phase = Phase::FirstSettings;
            }
            if input.len() < FRAME_HEADER {
                return;
            }
            let length = (usize::from(input[0]) << 16)
                | (usize::from(input[1]) << 8)
                | usize::from(input[2]);
            if length > MAX_FRAME {
                self.fail((
                    Reason::FrameSizeError,
                    "a frame is larger than SETTINGS_MAX_FRAME_SIZE",
                ));
                break;
            }
            if input.len() < FRAME_HEADER + length {
                input.reserve(FRAME_HEADER + length - input.len());
                return;
            }
            let kind = input[3];
            let flags = input[4];
            let id = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7FFF_FFFF;
            input.advance(FRAME_HEADER);
            let payload = input.split_to(length).freeze();
            if let Err(failure) = self.frame(kind, flags, id, payload) {
                self.fail(failure);
            }
        }
        input.clear();
    }

    fn frame(&mut self, kind: u8, flags: u8, id: u32, payload: Bytes) -> Result<(), Failure> {
        if self.phase == Phase::FirstSettings {
            if kind != SETTINGS || flags & ACK != 0 {
                return Err((Reason::ProtocolError, "the first frame is not SETTINGS"));
            }
            self.phase = Phase::Open;
        }
        if let Some(partial) = &self.partial
            && (kind != CONTINUATION || id != partial.id)
        {
            return Err((Reason::ProtocolError, "a header block is interrupted"));
        }
        match kind {
            DATA => self.data(flags, id, payload),
            HEADERS => self.headers(flags, id, payload),
            PRIORITY => {
                if id == 0 {
                    return Err((Reason::ProtocolError, "PRIORITY on stream 0"));
                }
                if payload.len() != 5 {
                    self.reset(id, Reason::FrameSizeError);
                    return Ok(());
                }
                let depends = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7FFF_FFFF;
                if depends == id {
                    self.reset(id, Reason::ProtocolError);
                }
                Ok(())
            }
            RST_STREAM => {
                if id == 0 {
                    return Err((Reason::ProtocolError, "RST_STREAM on stream 0"));
                }
                if payload.len() != 4 {
                    return Err((Reason::FrameSizeError, "RST_STREAM is not 4 bytes"));
                }
                if self.is_idle(id) {
                    return Err((Reason::ProtocolError, "RST_STREAM on an idle stream"));
                }
                if self.streams.contains_key(&id) {
                    self.close(id);
                    self.events.push(Event::Reset { id });
                }
                Ok(())
            }
            SETTINGS => self.settings(flags, id, &payload),
            PUSH_PROMISE => Err((Reason::ProtocolError, "a client sent PUSH_PROMISE")),
            PING => {
                if id != 0 {
                    return Err((Reason::ProtocolError, "PING on a stream"));
                }
                if payload.len() != 8 {
                    return Err((Reason::FrameSizeError, "PING is not 8 bytes"));
                }
                if flags & ACK == 0 {
                    header(&mut self.output, 8, PING, ACK, 0);
                    self.output.put_slice(&payload);
                }
                Ok(())
            }
            GOAWAY => {
                if id != 0 {
                    return Err((Reason::ProtocolError, "GOAWAY on a stream"));
                }
                if payload.len() < 8 {
                    return Err((Reason::FrameSizeError, "GOAWAY is shorter than 8 bytes"));
                }
                self.peer_going_away = true;
                Ok(())
            }
            WINDOW_UPDATE => self.window_update(id, &payload),
            CONTINUATION => {
                let Some(partial) = &mut self.partial else {
                    return Err((Reason::ProtocolError, "CONTINUATION without HEADERS"));
                };
                if partial.block.len() + payload.len()
                    > MAX_BLOCK_FACTOR * self.limits.max_header_list as usize
                {
                    return Err((Reason::EnhanceYourCalm, "a header block is too large"));
                }
                partial.block.extend_from_slice(&payload);
                if flags & END_HEADERS != 0 {
                    let partial = self.partial.take().expect("checked above");
                    self.block(partial.id, partial.end_stream, partial.block.freeze())?;
                }
                Ok(())
            }
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn is_idle(&self, id: u32) -> bool {
        id > self.last_id && !self.streams.contains_key(&id)
    }

    fn data(&mut self, flags: u8, id: u32, payload: Bytes) -> Result<(), Failure> {
        if id == 0 {
            return Err((Reason::ProtocolError, "DATA on stream 0"));
        }
        if self.is_idle(id) {
            return Err((Reason::ProtocolError, "DATA on an idle stream"));
        }
        let flow = payload.len() as i64;
        let data = unpad(flags, payload)?;
        self.recv_window -= flow;
        if self.recv_window < 0 {
            return Err((
                Reason::FlowControlError,
                "DATA beyond the connection's window",
            ));
        }
        // Padding, and data the stream will not use, is given back at once.
        let Some(stream) = self.streams.get_mut(&id) else {
            self.release_connection(flow);
            self.reset(id, Reason::StreamClosed);
            return Ok(());
        };
        if stream.remote_closed {
            self.release_connection(flow);
            self.reset(id, Reason::StreamClosed);
            return Ok(());
        }
        stream.recv_window -= flow;
        if stream.recv_window < 0 {
            self.release_connection(flow);
            self.reset(id, Reason::FlowControlError);
            self.events.push(Event::Reset { id });
            return Ok(());
        }
        stream.received += data.len() as u64;
        let end_stream = flags & END_STREAM != 0;
        let length_broken = match stream.content_length {
            Some(length) => stream.received > length || (end_stream && stream.received != length),
            None => false,
        };
        if length_broken {
            self.release_connection(flow);
            self.reset(id, Reason::ProtocolError);
            self.events.push(Event::Reset { id });
            return Ok(());
        }
        let padding = flow - data.len() as i64;
        if padding > 0 {
            self.release(id, padding as usize);
        }
        if let Some(stream) = self.streams.get_mut(&id)
            && end_stream
        {
            stream.remote_closed = true;
        }
        self.events.push(Event::Data {
            id,
            data,
            end_stream,
        });
        if end_stream {
            self.close_if_done(id);
        }
        Ok(())
    }

    fn headers(&mut self, flags: u8, id: u32, payload: Bytes) -> Result<(), Failure> {
        if id == 0 {
            return Err((Reason::ProtocolError, "HEADERS on stream 0"));
        }
        if id.is_multiple_of(2) {
            return Err((Reason::ProtocolError, "a client opened an even stream"));
        }
        let mut fragment = unpad(flags, payload)?;
        if flags & PRIORITY_FLAG != 0 {
            if fragment.len() < 5 {
                return Err((Reason::FrameSizeError, "HEADERS too short for its priority"));
            }
            let depends = u32::from_be_bytes([fragment[0], fragment[1], fragment[2], fragment[3]])
                & 0x7FFF_FFFF;
            fragment.advance(5);
            if depends == id {
                return Err((Reason::ProtocolError, "a stream depends on itself"));
            }
        }
        self.collect(flags, id, fragment)
    }

    fn collect(&mut self, flags: u8, id: u32, fragment: Bytes) -> Result<(), Failure> {
        let end_stream = flags & END_STREAM != 0;
        if flags & END_HEADERS != 0 {
            return self.block(id, end_stream, fragment);
        }
        let mut block = BytesMut::with_capacity(fragment.len() * 2);
        block.extend_from_slice(&fragment);
        self.partial = Some(Partial {
            id,
            end_stream,
            block,
        });
        Ok(())
    }

    /// A complete header block on stream `id`: a request's head or its trailers.
    fn block(&mut self, id: u32, end_stream: bool, block: Bytes) -> Result<(), Failure> {
        let mut fields = Vec::with_capacity(8);
        let mut list_size = 0usize;
        let decoded = self.decoder.decode(&block, |field| {
            list_size += field.name.len() + field.value.len() + 32;
            fields.push(field);
        });
        if let Err(err) = decoded {
            return Err((Reason::CompressionError, hpack_reason(err)));
        }
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers: they end the request.
            if stream.remote_closed {
                return Err((Reason::StreamClosed, "HEADERS after the request ended"));
            }
            if !end_stream {
                self.reset(id, Reason::ProtocolError);
                self.events.push(Event::Reset { id });
                return Ok(());
            }
            if fields.iter().any(|f| f.name.first() == Some(&b':'))
                || !fields.iter().all(valid_field)
            {
                self.reset(id, Reason::ProtocolError);
                self.events.push(Event::Reset { id });
                return Ok(());
            }
            if stream
                .content_length
                .is_some_and(|length| length != stream.received)
            {
                self.reset(id, Reason::ProtocolError);
                self.events.push(Event::Reset { id });
                return Ok(());
            }
            stream.remote_closed = true;
            self.events.push(Event::End { id });
            self.close_if_done(id);
            return Ok(());
        }
        if id <= self.last_id {
            return Err(if self.closed.contains(&id) {
                (Reason::StreamClosed, "HEADERS on a closed stream")
            } else {
                (Reason::ProtocolError, "a stream identifier went down")
            });
        }
        self.last_id = id;
        if self.going_away {
            // Above the last stream GOAWAY named: ignored (RFC 9113 §6.8).
            return Ok(());
        }
        if self.streams.len() >= self.limits.max_streams as usize {
            self.reset(id, Reason::RefusedStream);
            return Ok(());
        }
        if list_size > self.limits.max_header_list as usize {
            self.reset(id, Reason::EnhanceYourCalm);
            return Ok(());
        }
        let Some(head) = request_head(fields) else {
            self.reset(id, Reason::ProtocolError);
            return Ok(());
        };
        let content_length = match head.get("content-length") {
            None => None,
            Some(value) => match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(length) => Some(length),
                None => {
                    self.reset(id, Reason::ProtocolError);
                    return Ok(());
                }
            },
        };
        if end_stream && content_length.is_some_and(|length| length != 0) {
            self.reset(id, Reason::ProtocolError);
            return Ok(());
        }
        self.streams.insert(
            id,
            Stream {
                remote_closed: end_stream,
                local_closed: false,
                send_window: self.peer_initial_window,
                recv_window: i64::from(self.limits.stream_window),
                unreleased: 0,
                queue: VecDeque::new(),
                content_length,
                received: 0,
                responded: false,
            },
        );
        self.events.push(Event::Request {
            id,
            head,
            end_stream,
        });
        Ok(())
    }

    fn settings(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), Failure> {
        if id != 0 {
            return Err((Reason::ProtocolError, "SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            if !payload.is_empty() {
                return Err((Reason::FrameSizeError, "a SETTINGS ACK with a payload"));
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err((
                Reason::FrameSizeError,
                "SETTINGS is not a multiple of 6 bytes",
            ));
        }
        for setting in payload.chunks_exact(6) {
            let key = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match key {
                SETTINGS_HEADER_TABLE_SIZE => self.encoder.set_max_size(value as usize),
                SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err((Reason::ProtocolError, "SETTINGS_ENABLE_PUSH is not 0 or 1"));
                }
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > MAX_WINDOW {
                        return Err((
                            Reason::FlowControlError,
                            "SETTINGS_INITIAL_WINDOW_SIZE is above 2^31-1",
                        ));
                    }
                    let delta = value - self.peer_initial_window;
                    self.peer_initial_window = value;
                    for stream in self.streams.values_mut() {
                        stream.send_window += delta;
                        if stream.send_window > MAX_WINDOW {
                            return Err((
                                Reason::FlowControlError,
                                "a stream's window went above 2^31-1",
                            ));
                        }
                    }
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err((
                            Reason::ProtocolError,
                            "SETTINGS_MAX_FRAME_SIZE is out of range",
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                // Concurrency and header list limits bind a server's own requests: none.
                _ => {}
            }
        }
        header(&mut self.output, 0, SETTINGS, ACK, 0);
        self.flush_all();
        Ok(())
    }

    fn window_update(&mut self, id: u32, payload: &[u8]) -> Result<(), Failure> {
        if payload.len() != 4 {
            return Err((Reason::FrameSizeError, "WINDOW_UPDATE is not 4 bytes"));
        }
        let increment = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7FFF_FFFF,
        );
        if id == 0 {
            if increment == 0 {
                return Err((Reason::ProtocolError, "a WINDOW_UPDATE of 0"));
            }
            self.send_window += increment;
            if self.send_window > MAX_WINDOW {
                return Err((
                    Reason::FlowControlError,
                    "the connection's window went above 2^31-1",
                ));
            }
            self.flush_all();
            return Ok(());
        }
        if self.is_idle(id) {
            return Err((Reason::ProtocolError, "WINDOW_UPDATE on an idle stream"));
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if increment == 0 {
            self.reset(id, Reason::ProtocolError);
            self.events.push(Event::Reset { id });
            return Ok(());
        }
        stream.send_window += increment;
        if stream.send_window > MAX_WINDOW {
            self.reset(id, Reason::FlowControlError);
            self.events.push(Event::Reset { id });
            return Ok(());
        }
        self.flush(id);
        Ok(())
    }

    /// Gives `n` bytes of stream `id`'s body back to the client's windows. Updates are sent
    /// once half a window has been given back, not for every frame.
    pub fn release(&mut self, id: u32, n: usize) {
        let n = n as i64;
        if n == 0 {
            return;
        }
        if let Some(stream) = self.streams.get_mut(&id)
            && !stream.remote_closed
        {
            stream.unreleased += n;
            if stream.unreleased >= i64::from(self.limits.stream_window) / 2 {
                header(&mut self.output, 4, WINDOW_UPDATE, 0, id);
                self.output.put_u32(stream.unreleased as u32);
                stream.recv_window += stream.unreleased;
                stream.unreleased = 0;
            }
        }
        self.release_connection(n);
    }

    fn release_connection(&mut self, n: i64) {
        self.unreleased += n;
        if self.unreleased >= i64::from(self.limits.connection_window) / 2 {
            header(&mut self.output, 4, WINDOW_UPDATE, 0, 0);
            self.output.put_u32(self.unreleased as u32);
            self.recv_window += self.unreleased;
            self.unreleased = 0;
        }
    }

    /// Sends a response head on stream `id`: `:status` and the given fields; `cached` ones
    /// are indexed in the client's table.
    pub fn respond(
        &mut self,
        id: u32,
        status: u16,
        cached: &[(&'static str, &'static str)],
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
    ) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.responded || stream.local_closed {
            return;
        }
        stream.responded = true;
        if end_stream {
            stream.local_closed = true;
        }
        self.encode_block(id, end_stream, |encoder, out| {
            match status {
                // `:status: 200` is the static table's entry 8.
                200 => out.put_u8(0x88),
                _ => encoder.literal(out, b":status", status.to_string().as_bytes()),
            }
            for (name, value) in cached {
                encoder.cached(out, name, value);
            }
            for (name, value) in fields {
                encoder.literal(out, name, value);
            }
        });
        if end_stream {
            self.close_if_done(id);
        }
    }

    /// Queues body data on stream `id`; it goes out as the windows allow.
    pub fn send_data(&mut self, id: u32, data: Bytes, end_stream: bool) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.local_closed {
            return;
        }
        if end_stream {
            stream.local_closed = true;
        }
        let room = self.send_window.min(stream.send_window);
        if stream.queue.is_empty() && data.len() as i64 <= room && data.len() <= self.peer_max_frame
        {
            // All of it fits: written at once, without the queue.
            self.send_window -= data.len() as i64;
            stream.send_window -= data.len() as i64;
            header(
                &mut self.output,
                data.len(),
                DATA,
                if end_stream { END_STREAM } else { 0 },
                id,
            );
            self.put_payload(data);
            if end_stream {
                self.close_if_done(id);
            }
            return;
        }
        stream.queue.push_back(Out::Data(data, end_stream));
        self.flush(id);
    }

    /// Queues the trailers that end stream `id`'s response.
    pub fn send_trailers(&mut self, id: u32, trailers: Trailers) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.local_closed {
            return;
        }
        stream.local_closed = true;
        if stream.queue.is_empty() {
            self.write_trailers(id, trailers);
            self.close_if_done(id);
            return;
        }
        stream.queue.push_back(Out::Trailers(trailers));
        self.flush(id);
    }

    /// Whether stream `id`'s response has nothing waiting for window (so more may be queued).
    pub fn is_drained(&self, id: u32) -> bool {
        self.streams.get(&id).is_none_or(|s| s.queue.is_empty())
    }

    /// Whether stream `id` is still open on this side.
    pub fn is_open(&self, id: u32) -> bool {
        self.streams.get(&id).is_some_and(|s| !s.local_closed)
    }

    /// Resets stream `id` (RST_STREAM with `reason`); its state is dropped.
    pub fn reset(&mut self, id: u32, reason: Reason) {
        header(&mut self.output, 4, RST_STREAM, 0, id);
        self.output.put_u32(reason as u32);
        if self.streams.contains_key(&id) {
            self.close(id);
        }
    }

    fn flush_all(&mut self) {
        if self.blocked.is_empty() {
            return;
        }
        for id in std::mem::take(&mut self.blocked) {
            self.flush(id);
        }
    }

    /// Writes what stream `id` has queued, as far as the windows go.
    fn flush(&mut self, id: u32) {
        loop {
            let Some(stream) = self.streams.get_mut(&id) else {
                return;
            };
            let Some(out) = stream.queue.front_mut() else {
                break;
            };
            match out {
                Out::Data(data, end) => {
                    let end = *end;
                    let room = self.send_window.min(stream.send_window).max(0) as usize;
                    let size = data.len().min(room).min(self.peer_max_frame);
                    if size == 0 && !data.is_empty() {
                        if !self.blocked.contains(&id) {
                            self.blocked.push(id);
                        }
                        return;
                    }
                    let piece = data.split_to(size);
                    let last = data.is_empty();
                    if last {
                        stream.queue.pop_front();
                    }
                    self.send_window -= size as i64;
                    stream.send_window -= size as i64;
                    header(
                        &mut self.output,
                        size,
                        DATA,
                        if last && end { END_STREAM } else { 0 },
                        id,
                    );
                    self.put_payload(piece);
                }
                Out::Trailers(_) => {
                    let Some(Out::Trailers(trailers)) = stream.queue.pop_front() else {
                        unreachable!()
                    };
                    self.write_trailers(id, trailers);
                    break;
                }
            }
        }
        self.close_if_done(id);
    }

    fn write_trailers(&mut self, id: u32, trailers: Trailers) {
        self.encode_block(id, true, |encoder, out| match trailers {
            Trailers::Ok => encoder.cached(out, "grpc-status", "0"),
            Trailers::Fields(fields) => {
                for (name, value) in fields {
                    encoder.literal(out, &name, &value);
                }
            }
        });
    }

    /// Writes a header block that `encode` writes, in place in the output: in one HEADERS
    /// frame, or with CONTINUATIONs if it is larger than the client's frame size.
    fn encode_block(
        &mut self,
        id: u32,
        end_stream: bool,
        encode: impl FnOnce(&mut Encoder, &mut BytesMut),
    ) {
        let start = self.output.len();
        header(&mut self.output, 0, HEADERS, 0, id);
        self.encoder.begin(&mut self.output);
        encode(&mut self.encoder, &mut self.output);
        let len = self.output.len() - start - FRAME_HEADER;
        if len <= self.peer_max_frame {
            self.output[start..start + 3].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
            self.output[start + 4] = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        } else {
            let block = self.output.split_off(start + FRAME_HEADER);
            self.output.truncate(start);
            self.write_block(id, &block, end_stream);
        }
    }

    fn write_block(&mut self, id: u32, block: &[u8], end_stream: bool) {
        let mut chunks = block.chunks(self.peer_max_frame);
        let first = chunks.next().unwrap_or(&[]);
        let rest = chunks.len();
        let mut flags = if end_stream { END_STREAM } else { 0 };
        if rest == 0 {
            flags |= END_HEADERS;
        }
        header(&mut self.output, first.len(), HEADERS, flags, id);
        self.output.put_slice(first);
        for (i, chunk) in chunks.enumerate() {
            let flags = if i + 1 == rest { END_HEADERS } else { 0 };
            header(&mut self.output, chunk.len(), CONTINUATION, flags, id);
            self.output.put_slice(chunk);
        }
    }

    fn close_if_done(&mut self, id: u32) {
        if let Some(stream) = self.streams.get(&id)
            && stream.remote_closed
            && stream.local_closed
            && stream.queue.is_empty()
        {
            self.close(id);
        }
    }

    fn close(&mut self, id: u32) {
        if self.streams.remove(&id).is_some() {
            if self.closed.len() == REMEMBERED_CLOSED {
                self.closed.pop_front();
            }
            self.closed.push_back(id);
            self.blocked.retain(|&b| b != id);
        }
    }

    /// Answers a connection error: GOAWAY with `reason`, then nothing more is read.
    fn fail(&mut self, (reason, text): Failure) {
        tracing::debug!(?reason, text, "HTTP/2 connection error");
        self.write_goaway(reason, text.as_bytes());
        self.phase = Phase::Closed;
        self.events.clear();
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        self.events
            .extend(ids.into_iter().map(|id| Event::Reset { id }));
        self.streams.clear();
    }

    fn write_goaway(&mut self, reason: Reason, text: &[u8]) {
        header(&mut self.output, 8 + text.len(), GOAWAY, 0, 0);
        self.output.put_u32(self.last_id);
        self.output.put_u32(reason as u32);
        self.output.put_slice(text);
    }
}

fn header(out: &mut BytesMut, length: usize, kind: u8, flags: u8, id: u32) {
    out.reserve(FRAME_HEADER + length);
    out.put_uint(length as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(id);
}

/// The payload without its padding (DATA and HEADERS with PADDED).
fn unpad(flags: u8, mut payload: Bytes) -> Result<Bytes, Failure> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let Some(&pad) = payload.first() else {
        return Err((
            Reason::FrameSizeError,
            "a padded frame without its pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err((Reason::ProtocolError, "the padding is as long as the frame"));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

fn hpack_reason(err: HpackError) -> &'static str {
    match err {
        HpackError::Truncated => "a header block ends inside a field",
        HpackError::IntegerOverflow => "an HPACK integer is too large",
        HpackError::BadIndex => "an HPACK index is not in the tables",
        HpackError::BadHuffman => "a Huffman string is malformed",
        HpackError::BadSizeUpdate => "a dynamic table size update is not allowed",
        HpackError::TooLong => "a header string is too long",
    }
}

/// Which bytes a field name may hold: lower-case token characters (RFC 9110 §5.6.2).
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// A field name is lower-case token characters; a value has no NUL, CR or LF and no
/// leading or trailing white space (RFC 9113 §8.2.1).
fn valid_field(field: &Field) -> bool {
    let name_ok = !field.name.is_empty() && field.name.iter().all(|&b| NAME_BYTES[usize::from(b)]);
    let value = &field.value;
    let value_ok = !value
        .iter()
        .any(|&b| b <= b'\r' && matches!(b, 0 | b'\r' | b'\n'))
        && !value.first().is_some_and(|&b| b == b' ' || b == b'\t')
        && !value.last().is_some_and(|&b| b == b' ' || b == b'\t');
    name_ok && value_ok
}

/// A request's head from its fields, or None if it is malformed (RFC 9113 §8.3.1).
fn request_head(mut fields: Vec<Field>) -> Option<Head> {
    let mut head = Head::default();
    let (mut method, mut scheme, mut path) = (None, None, None);
    // The pseudo-header fields come first; the rest stay in the same vector.
    let pseudo = fields
        .iter()
        .take_while(|f| f.name.first() == Some(&b':'))
        .count();
    for field in fields.drain(..pseudo) {
        let slot = match &field.name[1..] {
            b"method" => &mut method,
            b"scheme" => &mut scheme,
            b"path" => &mut path,
            b"authority" => &mut head.authority,
            _ => return None,
        };
        if slot.replace(field.value).is_some() {
            return None;
        }
    }
    for field in &fields {
        // A pseudo-header field after a regular one, or a malformed field.
        if field.name.first() == Some(&b':') || !valid_field(field) {
            return None;
        }
        match &field.name[..] {
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding"
            | b"upgrade" => {
                return None;
            }
            b"te" if field.value != "trailers" => return None,
            _ => {}
        }
    }
    head.fields = fields;
    if let Some(authority) = &head.authority
        && authority
            .iter()
            .any(|&b| b == 0 || b == b'\r' || b == b'\n')
    {
        return None;
    }
    head.method = method?;
    if head.method == "CONNECT" {
        return None;
    }
    head.scheme = scheme?;
    head.path = path?;
    if head.path.is_empty() {
        return None;
    }
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits {
        stream_window: 1024 * 1024,
        connection_window: 2 * 1024 * 1024,
        max_streams: 4,
        max_header_list: 16 * 1024,
    };

    fn frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        header(&mut out, payload.len(), kind, flags, id);
        out.put_slice(payload);
        out.to_vec()
    }

    fn start() -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes
    }

    fn request_block(
        encoder: &mut fluke_hpack::Encoder<'_>,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        fields.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        encoder.encode(fields)
    }

    /// The frames in `bytes`: (type, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert!(
                bytes.len() >= FRAME_HEADER,
                "a partial frame header in the output"
            );
            let length = (usize::from(bytes[0]) << 16)
                | (usize::from(bytes[1]) << 8)
                | usize::from(bytes[2]);
            assert!(
                bytes.len() >= FRAME_HEADER + length,
                "a partial frame in the output"
            );
            let id = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((
                bytes[3],
                bytes[4],
                id,
                bytes[FRAME_HEADER..FRAME_HEADER + length].to_vec(),
            ));
            bytes = &bytes[FRAME_HEADER + length..];
        }
        out
    }

    /// A frame as the tests read it: type, flags, stream, payload.
    type Frame = (u8, u8, u32, Vec<u8>);

    fn run(input: &[u8]) -> (Connection, Vec<Frame>, Vec<Event>) {
        let mut conn = Connection::new(LIMITS);
        let mut buffer = BytesMut::from(input);
        conn.receive(&mut buffer);
        let output = frames(&conn.take_output());
        let events = conn.events().collect();
        (conn, output, events)
    }

    /// The code of the GOAWAY in `output`, if any.
    fn goaway(output: &[(u8, u8, u32, Vec<u8>)]) -> Option<u32> {
        output
            .iter()
            .find(|f| f.0 == GOAWAY)
            .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
    }

    fn rst(output: &[(u8, u8, u32, Vec<u8>)], id: u32) -> Option<u32> {
        output
            .iter()
            .find(|f| f.0 == RST_STREAM && f.2 == id)
            .map(|f| u32::from_be_bytes([f.3[0], f.3[1], f.3[2], f.3[3]]))
    }

    #[test]
    fn a_unary_call_is_a_request_event_and_its_answer_is_headers_data_trailers() {
        let mut encoder = fluke_hpack::Encoder::new();
        let mut input = start();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &request_block(&mut encoder, "/a.B/C", &[("x-component-instance", "s")]),
        ));
        input.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 2, 8, 1]));
        let (mut conn, output, events) = run(&input);
        // SETTINGS, the connection's WINDOW_UPDATE, the ACK of the client's SETTINGS.
        assert_eq!(
            output.iter().map(|f| f.0).collect::<Vec<_>>(),
            [SETTINGS, WINDOW_UPDATE, SETTINGS]
        );
        assert_eq!(output[2].1, ACK);
        let [
            Event::Request {
                id: 1,
                head,
                end_stream: false,
            },
            Event::Data {
                id: 1,
                data,
                end_stream: true,
            },
        ] = &events[..]
        else {
            panic!("{events:?}")
        };
        assert_eq!(&head.path[..], b"/a.B/C");
        assert_eq!(&head.method[..], b"POST");
        assert_eq!(
            head.get("x-component-instance").map(|v| &v[..]),
            Some(&b"s"[..])
        );
        assert_eq!(&data[..], &[0, 0, 0, 0, 2, 8, 1]);
        conn.release(1, data.len());
        conn.respond(1, 200, &[("content-type", "application/grpc")], &[], false);
        conn.send_data(1, Bytes::from_static(b"answer"), false);
        conn.send_trailers(1, Trailers::Ok);
        let output = frames(&conn.take_output());
        assert_eq!(
            output.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
            [
                (HEADERS, END_HEADERS),
                (DATA, 0),
                (HEADERS, END_HEADERS | END_STREAM)
            ]
        );
        let mut decoder = fluke_hpack::Decoder::new();
        let head = decoder.decode(&output[0].3).unwrap();
        assert_eq!(
            head,
            [
                (b":status".to_vec(), b"200".to_vec()),
                (b"content-type".to_vec(), b"application/grpc".to_vec())
            ]
        );
        assert_eq!(output[1].3, b"answer");
        assert_eq!(
            decoder.decode(&output[2].3).unwrap(),
            [(b"grpc-status".to_vec(), b"0".to_vec())]
        );
        assert_eq!(conn.active_streams(), 0);
    }

    #[test]
    fn data_waits_for_the_clients_windows() {
        let mut encoder = fluke_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        // The client allows 10 bytes per stream.
        input.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 10]));
        input.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &request_block(&mut encoder, "/a.B/C", &[]),
        ));
        let (mut conn, _, _) = run(&input);
        conn.respond(1, 200, &[], &[], false);
        conn.send_data(1, Bytes::from(vec![7u8; 25]), false);
        conn.send_trailers(1, Trailers::Ok);
        let output = frames(&conn.take_output());
        assert_eq!(
            output.iter().map(|f| (f.0, f.3.len())).collect::<Vec<_>>(),
            [(HEADERS, 1), (DATA, 10)]
        );
        assert!(!conn.is_drained(1));
        let mut more = BytesMut::from(&frame(WINDOW_UPDATE, 0, 1, &[0, 0, 0, 10])[..]);
        conn.receive(&mut more);
        assert_eq!(
            frames(&conn.take_output())
                .iter()
                .map(|f| (f.0, f.3.len()))
                .collect::<Vec<_>>(),
            [(DATA, 10)]
        );
        // A larger initial window applies to the open stream too.
        let mut more = BytesMut::from(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 1, 0])[..]);
        conn.receive(&mut more);
        let output = frames(&conn.take_output());
        assert_eq!(
            output.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
            [
                (SETTINGS, ACK),
                (DATA, 0),
                (HEADERS, END_HEADERS | END_STREAM)
            ]
        );
        assert_eq!(output[1].3.len(), 5);
        assert_eq!(conn.active_streams(), 0);
    }

    #[test]
    fn a_body_larger_than_the_windows_flows_as_it_is_released() {
        let mut encoder = fluke_hpack::Encoder::new();
        let mut conn = Connection::new(LIMITS);
        let mut input = BytesMut::from(&start()[..]);
        input.extend_from_slice(&frame(
            HEADERS,
            END_HEADERS,
            1,
            &request_block(&mut encoder, "/a.B/C", &[]),
        ));
        conn.receive(&mut input);
        // The client's view of its windows: the defaults until the server's frames say more.
        let (mut connection, mut stream) = (DEFAULT_WINDOW, DEFAULT_WINDOW);
        let total = 3 * 1024 * 1024;
        let (mut sent, mut received) = (0usize, 0usize);
        while received < total {
            for (kind, _, id, payload) in frames(&conn.take_output()) {
                match kind {
                    SETTINGS if payload.len() >= 6 => {
                        for s in payload.chunks(6) {
                            if u16::from_be_bytes([s[0], s[1]]) == SETTINGS_INITIAL_WINDOW_SIZE {
                                stream += i64::from(u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
                                    - DEFAULT_WINDOW;
                            }
                        }
                    }
                    WINDOW_UPDATE => {
                        let n = i64::from(u32::from_be_bytes([
                            payload[0], payload[1], payload[2], payload[3],
                        ]));
                        if id == 0 {
                            connection += n
                        } else {
                            stream += n
                        }
                    }
                    _ => {}
                }
            }
            let room = connection.min(stream).min(MAX_FRAME as i64) as usize;
            let n = room.min(total - sent);
            assert!(
                n > 0 || sent == total,
                "the client is stalled after {sent} bytes"
            );
            let mut input = BytesMut::new();
            if n > 0 {
                let end = sent + n == total;
                input.extend_from_slice(&frame(
                    DATA,
                    if end { END_STREAM } else { 0 },
                    1,
                    &vec![1; n],
                ));
                sent += n;
                connection -= n as i64;
                stream -= n as i64;
            }
            conn.receive(&mut input);
            for event in conn.events().collect::<Vec<_>>() {
                if let Event::Data { id, data, .. } = event {
                    received += data.len();
                    conn.release(id, data.len());
                }
            }
            assert!(!conn.is_closed());
        }
        assert_eq!(received, total);
    }

    #[test]
    fn every_token_character_names_a_field_and_values_keep_inner_white_space() {
        let field = |name: &str, value: &str| Field {
            name: Bytes::copy_from_slice(name.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        };
        assert!(valid_field(&field(
            "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz",
            "a value\twith inner white space, \u{e9} and \u{7f}"
        )));
        assert!(valid_field(&field("empty-value", "")));
        for b in 0..=255u8 {
            let token =
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
            let name = Field {
                name: Bytes::from(vec![b'x', b]),
                value: Bytes::new(),
            };
            assert_eq!(valid_field(&name), token, "byte {b:#04x} in a name");
        }
    }

    #[test]
    fn hostile_frames_get_their_errors() {
        let mut encoder = fluke_hpack::Encoder::new();
        let block = request_block(&mut encoder, "/a.B/C", &[]);
        let conn_error = |frames_: &[Vec<u8>], code: Reason| {
            let mut input = start();
            for f in frames_ {
                input.extend(f);
            }
            let (conn, output, _) = run(&input);
            assert_eq!(goaway(&output), Some(code as u32), "{frames_:?}");
            assert!(conn.is_closed());
        };
        conn_error(&[frame(DATA, 0, 0, b"x")], Reason::ProtocolError);
        conn_error(&[frame(DATA, 0, 1, b"x")], Reason::ProtocolError);
        conn_error(
            &[frame(HEADERS, END_HEADERS, 2, &block)],
            Reason::ProtocolError,
        );
        conn_error(
            &[frame(HEADERS, END_HEADERS, 1, &[0x80])],
            Reason::CompressionError,
        );
        conn_error(&[frame(PING, 0, 0, &[0; 7])], Reason::FrameSizeError);
        conn_error(&[frame(PING, 0, 1, &[0; 8])], Reason::ProtocolError);
        conn_error(
            &[frame(SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0])],
            Reason::FlowControlError,
        );
        conn_error(
            &[frame(SETTINGS, 0, 0, &[0, 5, 0, 0, 0, 1])],
            Reason::ProtocolError,
        );
        conn_error(&[frame(SETTINGS, 0, 0, &[0, 4, 0])], Reason::FrameSizeError);
        conn_error(
            &[frame(WINDOW_UPDATE, 0, 0, &[0x7F, 0xFF, 0xFF, 0xFF])],
            Reason::FlowControlError,
        );
        conn_error(
            &[frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0])],
            Reason::ProtocolError,
        );
        conn_error(
            &[frame(CONTINUATION, END_HEADERS, 1, &block)],
            Reason::ProtocolError,
        );
        conn_error(
            &[frame(HEADERS, 0, 1, &block), frame(PING, 0, 0, &[0; 8])],
            Reason::ProtocolError,
        );
        conn_error(
            &[frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2])],
            Reason::ProtocolError,
        );
        conn_error(
            &[frame(DATA, 0, 1, &vec![0; MAX_FRAME + 1])],
            Reason::FrameSizeError,
        );
        conn_error(
            &[
                frame(HEADERS, END_HEADERS, 3, &block),
                frame(HEADERS, END_HEADERS, 1, &block),
            ],
            Reason::ProtocolError,
        );
        // Stream errors: the stream is reset, the connection goes on.
        let stream_error = |extra: &[(&str, &str)], code: Reason| {
            let mut encoder = fluke_hpack::Encoder::new();
            let mut input = start();
            // In a HEADERS frame and CONTINUATIONs of at most 10,000 bytes.
            let block = request_block(&mut encoder, "/a.B/C", extra);
            let pieces: Vec<&[u8]> = block.chunks(10_000).collect();
            for (i, piece) in pieces.iter().enumerate() {
                let last = if i + 1 == pieces.len() {
                    END_HEADERS
                } else {
                    0
                };
                input.extend(frame(
                    if i == 0 { HEADERS } else { CONTINUATION },
                    last,
                    1,
                    piece,
                ));
            }
            let (conn, output, events) = run(&input);
            assert_eq!(rst(&output, 1), Some(code as u32), "{extra:?}");
            assert_eq!(goaway(&output), None);
            assert!(events.is_empty(), "{events:?}");
            assert!(!conn.is_closed());
        };
        stream_error(&[("connection", "close")], Reason::ProtocolError);
        stream_error(&[("te", "gzip")], Reason::ProtocolError);
        stream_error(&[("Upper", "x")], Reason::ProtocolError);
        stream_error(&[(":status", "200")], Reason::ProtocolError);
        stream_error(&[("bad", "line\nbreak")], Reason::ProtocolError);
        stream_error(&[("bad", "carriage\rreturn")], Reason::ProtocolError);
        stream_error(&[("bad", "nul\0")], Reason::ProtocolError);
        stream_error(&[("bad", " leading")], Reason::ProtocolError);
        stream_error(&[("bad", "trailing\t")], Reason::ProtocolError);
        for name in [
            "sp ace",
            "co:lon",
            "pa(ren",
            "quo\"te",
            "del\u{7f}",
            "caf\u{e9}",
            "",
        ] {
            stream_error(&[(name, "x")], Reason::ProtocolError);
        }
        stream_error(&[("x", &"y".repeat(20_000))], Reason::EnhanceYourCalm);
        // A body longer than its content-length.
        let mut encoder = fluke_hpack::Encoder::new();
        let mut input = start();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &request_block(&mut encoder, "/a.B/C", &[("content-length", "2")]),
        ));
        input.extend(frame(DATA, END_STREAM, 1, b"abc"));
        let (_, output, events) = run(&input);
        assert_eq!(rst(&output, 1), Some(Reason::ProtocolError as u32));
        assert!(
            matches!(events.last(), Some(Event::Reset { id: 1 })),
            "{events:?}"
        );
    }

    #[test]
    fn streams_beyond_the_limit_are_refused_and_a_goaway_ends_when_streams_do() {
        let mut encoder = fluke_hpack::Encoder::new();
        let mut input = start();
        for id in [1, 3, 5, 7, 9] {
            input.extend(frame(
                HEADERS,
                END_HEADERS,
                id,
                &request_block(&mut encoder, "/a.B/C", &[]),
            ));
        }
        let (mut conn, output, events) = run(&input);
        assert_eq!(events.len(), 4);
        assert_eq!(rst(&output, 9), Some(Reason::RefusedStream as u32));
        conn.go_away();
        let output = frames(&conn.take_output());
        assert_eq!(output[0].0, GOAWAY);
        assert_eq!(&output[0].3[..8], &[0, 0, 0, 9, 0, 0, 0, 0]);
        assert!(!conn.is_closed());
        for id in [1, 3, 5, 7] {
            conn.reset(id, Reason::Cancel);
        }
        assert!(conn.is_closed());
    }

    fn any_frame() -> impl Strategy<Value = Vec<u8>> {
        let ids = prop_oneof![
            Just(0u32),
            Just(1),
            Just(2),
            Just(3),
            Just(5),
            Just(0x7FFF_FFFF),
            any::<u32>()
        ];
        (
            0u8..12,
            any::<u8>(),
            ids,
            proptest::collection::vec(any::<u8>(), 0..48),
        )
            .prop_map(|(kind, flags, id, payload)| frame(kind, flags, id, &payload))
    }

    fn a_request(id: u32) -> Vec<u8> {
        let mut encoder = fluke_hpack::Encoder::new();
        let mut bytes = frame(
            HEADERS,
            END_HEADERS,
            id,
            &request_block(&mut encoder, "/a.B/C", &[]),
        );
        bytes.extend(frame(DATA, END_STREAM, id, &[0, 0, 0, 0, 0]));
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any frames, in any pieces: no panic, whole frames out, and the same output and
        /// events however the input is cut.
        #[test]
        fn any_frames_in_any_pieces_are_answered_alike(
            frames_ in proptest::collection::vec(
                prop_oneof![4 => any_frame(), 1 => (0u32..4).prop_map(|i| a_request(2 * i + 1))], 0..12),
            cuts in proptest::collection::vec(1usize..40, 0..20),
            garbage in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..30)),
        ) {
            let mut input = start();
            for f in &frames_ {
                input.extend(f);
            }
            if let Some(garbage) = garbage {
                input.extend(garbage);
            }
            let (whole, whole_out, whole_events) = run(&input);
            let mut conn = Connection::new(LIMITS);
            let mut buffer = BytesMut::new();
            let mut rest = &input[..];
            let mut cuts = cuts.into_iter();
            while !rest.is_empty() {
                let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                buffer.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                conn.receive(&mut buffer);
            }
            let pieces_out = frames(&conn.take_output());
            let pieces_events: Vec<Event> = conn.events().collect();
            prop_assert_eq!(&pieces_out, &whole_out);
            prop_assert_eq!(format!("{pieces_events:?}"), format!("{whole_events:?}"));
            prop_assert_eq!(conn.is_closed(), whole.is_closed());
            // After a connection error nothing follows the GOAWAY.
            if let Some(at) = whole_out.iter().position(|f| f.0 == GOAWAY) {
                prop_assert_eq!(at, whole_out.len() - 1);
            }
        }

        /// Any bytes instead of the preface: a GOAWAY, never a panic.
        #[test]
        fn any_bytes_are_refused_or_waited_for(input in proptest::collection::vec(any::<u8>(), 0..100)) {
            let (conn, output, events) = run(&input);
            prop_assert!(events.is_empty() || input.starts_with(PREFACE));
            if !PREFACE.starts_with(&input[..input.len().min(PREFACE.len())]) {
                prop_assert!(conn.is_closed());
                prop_assert_eq!(goaway(&output), Some(Reason::ProtocolError as u32));
            }
        }
    }
}
