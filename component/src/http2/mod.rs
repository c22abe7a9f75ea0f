//! Roost's own HTTP/2 server for the socket (`roost serve --http2 roost`): unary gRPC calls
//! answered without the `h2` crate, hyper or tower.
//!
//! - [`hpack`]: header compression, both directions.
//! - [`conn`]: one connection's protocol state, without I/O: frames in, events and frames out.
//! - This module: the I/O and the calls. One task per connection reads the socket, feeds
//!   [`conn::Connection`], and acts on its events:
//!   - a Dapr unary method ([`crate::routes::Unary`]) has its message collected within
//!     `--max-request-bytes`, then its handler ([`crate::service::answer`]) runs as a future of
//!     this task; the answer goes out as HEADERS, one DATA frame and `grpc-status: 0`, or as a
//!     trailers-only error;
//!   - every other gRPC call goes to its tonic service ([`crate::routes::Services`]) with a
//!     body fed from the stream, and the response body is sent as flow control allows;
//!   - a request that is not gRPC gets HTTP 415 once it has ended.
//!
//! For every call: `grpc-timeout` ends it with `DEADLINE_EXCEEDED` (also while its message is
//! still arriving); a client's RST_STREAM drops it (`CANCELLED` in the metrics); its outcome
//! and latency are counted. On shutdown the connection sends GOAWAY and ends once its calls
//! have. The client's `:authority` is not interpreted, so grpc-c's and grpc-java's socket
//! paths need no rewriting here.

pub mod conn;
pub mod hpack;

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::Status;

use self::conn::{Connection, Event, Head, Limits, Reason, Trailers};
use crate::grpc;
use crate::metrics::Operation;
use crate::routes::{self, Unary};
use crate::transport::Transport;

/// What this server announces; the same limits as the `h2` crate's path.
const LIMITS: Limits = Limits {
    stream_window: 1024 * 1024,
    connection_window: 2 * 1024 * 1024,
    max_streams: 200,
    max_header_list: 64 * 1024,
};
/// Read at least this much room at a time.
const READ_ROOM: usize = 16 * 1024;
/// Stop reading while this much output waits to be written.
const OUTPUT_HIGH: usize = 1024 * 1024;
/// Stop reading while this many calls are in flight, counting handlers still running for
/// streams the client already reset: a client that opens and resets streams as fast as it
/// can ("rapid reset") waits for its calls like any other, instead of piling up work.
const MAX_CALLS: usize = 2 * LIMITS.max_streams as usize;

const CANCELLED: usize = tonic::Code::Cancelled as usize;

const GRPC_CONTENT_TYPE: (&str, &str) = ("content-type", "application/grpc");

/// A stream's call, from its head to its outcome.
struct Call {
    /// None for a request that is not gRPC (not counted).
    operation: Option<Arc<Operation>>,
    started: Instant,
    kind: Kind,
}

// Every unary call is `Collecting` first: boxing it would cost each call an allocation to
// save room in a map that holds only the calls in flight.
#[allow(clippy::large_enum_variant)]
enum Kind {
    /// A Dapr unary method whose message is being collected.
    Collecting {
        method: Unary,
        head: Head,
        message: grpc::Collector,
        deadline: Option<Instant>,
    },
    /// Its handler runs; `reset` once the client reset the stream meanwhile.
    Running { reset: bool },
    /// A tonic service's call; `answered` once its response head went out (and the outcome
    /// was counted).
    Served {
        inbox: Arc<Mutex<Inbox>>,
        abort: AbortHandle,
        answered: bool,
    },
    /// Not gRPC: answered 415 once the request ends.
    NotGrpc,
}

/// Serves one connection until the peer closes it or, once `stop` turns true, until its
/// calls have ended (after GOAWAY).
pub async fn serve_connection<T>(
    transport: Arc<Transport>,
    io: T,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut server = Server {
        transport,
        conn: Connection::new(LIMITS),
        calls: conn::StreamMap::default(),
        running: FuturesUnordered::new(),
        served: FuturesUnordered::new(),
        bodies: Vec::new(),
        timer: None,
        input: BytesMut::with_capacity(READ_ROOM),
        eof: false,
        events: Vec::new(),
    };
    let mut io = io;
    let mut stopping = pin!(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    let mut stopped = false;
    poll_fn(|cx| {
        if !stopped && stopping.as_mut().poll(cx).is_ready() {
            stopped = true;
            server.conn.go_away();
        }
        server.poll(cx, &mut io)
    })
    .await;
}

type Running = Pin<Box<dyn Future<Output = (u32, Result<Bytes, Status>)> + Send>>;
type ServedCall = Pin<
    Box<
        dyn Future<
                Output = (
                    u32,
                    Result<Result<routes::Answer, Status>, futures_util::future::Aborted>,
                ),
            > + Send,
    >,
>;

struct Server {
    transport: Arc<Transport>,
    conn: Connection,
    calls: conn::StreamMap<Call>,
    running: FuturesUnordered<Running>,
    served: FuturesUnordered<ServedCall>,
    /// Response bodies of tonic services being sent.
    bodies: Vec<(u32, tonic::body::Body)>,
    /// The earliest deadline of a call still collecting its message.
    timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
    input: BytesMut,
    eof: bool,
    /// The connection's events being handled (the vector is kept between reads).
    events: Vec<Event>,
}

impl Server {
    fn poll<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut T,
    ) -> Poll<()> {
        loop {
            let mut progressed = false;
            // Read and handle what the client sent.
            if !self.eof
                && self.conn.output_len() < OUTPUT_HIGH
                && self.calls.len() < MAX_CALLS
                && !self.conn.is_closed()
            {
                if self.input.capacity() - self.input.len() < READ_ROOM / 4 {
                    self.input.reserve(READ_ROOM);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut self.input) {
                    Poll::Ready(Ok(0)) => {
                        self.eof = true;
                        progressed = true;
                    }
                    Poll::Ready(Ok(_)) => {
                        self.conn.receive(&mut self.input);
                        self.handle_events();
                        progressed = true;
                    }
                    Poll::Ready(Err(err)) => {
                        tracing::debug!(error = %err, "reading the socket failed");
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
            }
            // Calls that finished.
            while let Poll::Ready(Some((id, answer))) = self.running.poll_next_unpin(cx) {
                self.answered(id, answer);
                progressed = true;
            }
            while let Poll::Ready(Some((id, answer))) = self.served.poll_next_unpin(cx) {
                if let Ok(answer) = answer {
                    self.served_answer(id, answer);
                }
                progressed = true;
            }
            if self.poll_bodies(cx) {
                progressed = true;
            }
            if self.poll_timer(cx) {
                progressed = true;
            }
            // Write what is ready.
            while !self.conn.output_is_empty() {
                let mut slices = [std::io::IoSlice::new(&[]); 32];
                let n = self.conn.output_slices(&mut slices);
                match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(()),
                    Poll::Ready(Ok(n)) => {
                        self.conn.advance_output(n);
                        // Reading may have waited for the output to shrink.
                        progressed = true;
                    }
                    Poll::Ready(Err(err)) => {
                        tracing::debug!(error = %err, "writing the socket failed");
                        return Poll::Ready(());
                    }
                    Poll::Pending => break,
                }
            }
            if self.conn.output_is_empty() {
                let done = self.conn.is_closed()
                    || (self.eof && self.calls.is_empty() && self.bodies.is_empty());
                if done {
                    return Poll::Ready(());
                }
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    fn handle_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        self.conn.swap_events(&mut events);
        for event in events.drain(..) {
            match event {
                Event::Request {
                    id,
                    head,
                    end_stream,
                } => self.request(id, head, end_stream),
                Event::Data {
                    id,
                    data,
                    end_stream,
                } => {
                    self.conn.release(id, data.len());
                    self.data(id, data, end_stream);
                }
                Event::End { id } => self.data(id, Bytes::new(), true),
                Event::Reset { id } => self.reset(id),
            }
        }
        self.events = events;
    }

    fn request(&mut self, id: u32, head: Head, end_stream: bool) {
        let grpc = head.method == "POST"
            && head
                .get("content-type")
                .is_some_and(|v| grpc::is_grpc_content_type(v));
        if !grpc {
            self.calls.insert(
                id,
                Call {
                    operation: None,
                    started: Instant::now(),
                    kind: Kind::NotGrpc,
                },
            );
            if end_stream {
                self.not_grpc(id);
            }
            return;
        }
        let path = std::str::from_utf8(&head.path).unwrap_or("");
        let method = routes::unary(path);
        let operation = Some(match method {
            Some(method) => self.transport.metrics.unary(method, path),
            None => self.transport.metrics.operation(path),
        });
        let started = Instant::now();
        let deadline = match head.get("grpc-timeout").map(|v| grpc::timeout_value(v)) {
            None => None,
            Some(Ok(after)) => Some(after),
            Some(Err(status)) => {
                self.refuse(id, operation, started, &status);
                return;
            }
        };
        match method {
            Some(method) => {
                let deadline = deadline.map(|after| started + after);
                self.calls.insert(
                    id,
                    Call {
                        operation,
                        started,
                        kind: Kind::Collecting {
                            method,
                            head,
                            message: grpc::Collector::default(),
                            deadline,
                        },
                    },
                );
                if let Some(deadline) = deadline {
                    self.arm(deadline);
                }
                if end_stream {
                    self.data(id, Bytes::new(), true);
                }
            }
            None => self.serve(id, head, end_stream, deadline, operation, started),
        }
    }

    /// Request body bytes (or its end) for stream `id`.
    fn data(&mut self, id: u32, data: Bytes, end_stream: bool) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match &mut call.kind {
            Kind::Collecting { message, .. } => {
                if let Err(status) = message.push(data, self.transport.max_request_bytes) {
                    // The rest of the request is read and dropped (no call is left to take it).
                    self.error(id, &status);
                    return;
                }
                if end_stream {
                    let Kind::Collecting {
                        method,
                        head,
                        message,
                        deadline,
                    } = std::mem::replace(&mut call.kind, Kind::Running { reset: false })
                    else {
                        unreachable!()
                    };
                    match message.finish() {
                        Ok(message) => self.dispatch(id, method, head, message, deadline),
                        Err(status) => self.error(id, &status),
                    }
                }
            }
            // A unary call's request ended before its handler was called.
            Kind::Running { .. } => {}
            Kind::Served { inbox, .. } => {
                let mut inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
                // The windows are given back as data arrives: what the service has not read
                // yet is bounded here instead, by the request limit.
                inbox.bytes += data.len();
                if inbox.bytes > self.transport.max_request_bytes {
                    drop(inbox);
                    self.conn.reset(id, Reason::EnhanceYourCalm);
                    self.reset(id);
                    return;
                }
                if !data.is_empty() {
                    inbox.chunks.push_back(data);
                }
                inbox.ended |= end_stream;
                if let Some(waker) = inbox.waker.take() {
                    waker.wake();
                }
            }
            Kind::NotGrpc => {
                if end_stream {
                    self.not_grpc(id);
                }
            }
        }
    }

    fn dispatch(
        &mut self,
        id: u32,
        method: Unary,
        head: Head,
        message: Bytes,
        deadline: Option<Instant>,
    ) {
        let transport = Arc::clone(&self.transport);
        let metadata = tonic::metadata::MetadataMap::from_headers(metadata(head));
        let answering = async move {
            crate::service::answer(&transport.registry, method, metadata, message).await
        };
        let running: Running = match deadline {
            None => Box::pin(async move { (id, answering.await) }),
            Some(deadline) => Box::pin(async move {
                let sleep = tokio::time::sleep_until(deadline.into());
                tokio::select! {
                    biased;
                    answer = answering => (id, answer),
                    () = sleep => (id, Err(deadline_exceeded())),
                }
            }),
        };
        self.running.push(running);
    }

    fn answered(&mut self, id: u32, answer: Result<Bytes, Status>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let reset = matches!(call.kind, Kind::Running { reset: true }) || !self.conn.is_open(id);
        if reset {
            let call = self.calls.remove(&id).expect("looked up above");
            record(&call, CANCELLED);
            return;
        }
        match answer {
            Ok(message) => {
                let call = self.calls.remove(&id).expect("looked up above");
                record(&call, 0);
                self.conn.respond(id, 200, &[GRPC_CONTENT_TYPE], &[], false);
                self.conn.send_data(id, message, false);
                self.conn.send_trailers(id, Trailers::Ok);
            }
            Err(status) => self.error(id, &status),
        }
    }

    /// Answers stream `id` with `status`, trailers-only, and records the call. If the request
    /// is still arriving, its rest is read and dropped.
    fn error(&mut self, id: u32, status: &Status) {
        let mut headers = http::HeaderMap::new();
        if status.add_header(&mut headers).is_err() {
            headers.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
        }
        let fields: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
            .collect();
        self.conn
            .respond(id, 200, &[GRPC_CONTENT_TYPE], &fields, true);
        if let Some(call) = self.calls.remove(&id) {
            record(&call, status.code() as usize);
        }
    }

    /// Answers a call with `status` before anything runs for it, and counts it.
    fn refuse(
        &mut self,
        id: u32,
        operation: Option<Arc<Operation>>,
        started: Instant,
        status: &Status,
    ) {
        let kind = Kind::Running { reset: false };
        self.calls.insert(
            id,
            Call {
                operation,
                started,
                kind,
            },
        );
        self.error(id, status);
    }

    fn not_grpc(&mut self, id: u32) {
        self.calls.remove(&id);
        self.conn.respond(
            id,
            415,
            &[],
            &[(b"content-type", b"text/plain; charset=utf-8")],
            false,
        );
        self.conn.send_data(
            id,
            Bytes::from_static(b"roost serves gRPC: POST with content-type application/grpc\n"),
            true,
        );
    }

    fn reset(&mut self, id: u32) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match &mut call.kind {
            // Counted when its handler finishes (a handler is not interrupted).
            Kind::Running { reset } => *reset = true,
            Kind::Served {
                inbox,
                abort,
                answered,
            } => {
                let answered = *answered;
                abort.abort();
                let mut inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
                inbox.broken = true;
                if let Some(waker) = inbox.waker.take() {
                    waker.wake();
                }
                drop(inbox);
                let call = self.calls.remove(&id).expect("looked up above");
                if !answered {
                    record(&call, CANCELLED);
                }
                self.bodies.retain(|(b, _)| *b != id);
            }
            Kind::Collecting { .. } | Kind::NotGrpc => {
                let call = self.calls.remove(&id).expect("looked up above");
                record(&call, CANCELLED);
            }
        }
    }

    fn serve(
        &mut self,
        id: u32,
        head: Head,
        end_stream: bool,
        deadline: Option<Duration>,
        operation: Option<Arc<Operation>>,
        started: Instant,
    ) {
        let inbox = Arc::new(Mutex::new(Inbox {
            ended: end_stream,
            ..Inbox::default()
        }));
        let mut request = http::Request::new(tonic::body::Body::new(Incoming(Arc::clone(&inbox))));
        *request.method_mut() = http::Method::POST;
        match http::Uri::from_maybe_shared(head.path.clone()) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => {
                self.refuse(
                    id,
                    operation,
                    started,
                    &Status::unimplemented("the call's path is not a gRPC path"),
                );
                return;
            }
        }
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = header_map(head);
        let (abort, registration) = AbortHandle::new_pair();
        let answering = self.transport.services.handle(request);
        let call: ServedCall = Box::pin(async move {
            let raced = Abortable::new(
                async move {
                    match deadline {
                        None => Ok(answering.await.unwrap_or_else(|never| match never {})),
                        Some(after) => tokio::select! {
                            biased;
                            answer = answering => Ok(answer.unwrap_or_else(|never| match never {})),
                            () = tokio::time::sleep(after) => Err(deadline_exceeded()),
                        },
                    }
                },
                registration,
            )
            .await;
            (id, raced)
        });
        self.served.push(call);
        self.calls.insert(
            id,
            Call {
                operation,
                started,
                kind: Kind::Served {
                    inbox,
                    abort,
                    answered: false,
                },
            },
        );
    }

    fn served_answer(&mut self, id: u32, answer: Result<routes::Answer, Status>) {
        let response = match answer {
            Ok(response) => response,
            Err(status) => {
                self.error(id, &status);
                return;
            }
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let (parts, body) = response.into_parts();
        record(call, grpc::code_in(&parts.headers));
        if let Kind::Served { answered, .. } = &mut call.kind {
            *answered = true;
        }
        let end = http_body::Body::is_end_stream(&body);
        let fields: Vec<(&[u8], &[u8])> = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
            .collect();
        self.conn
            .respond(id, parts.status.as_u16(), &[], &fields, end);
        if end {
            self.calls.remove(&id);
        } else {
            self.bodies.push((id, body));
        }
    }

    /// Moves response bodies' frames to their streams while the streams have room.
    fn poll_bodies(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progressed = false;
        let mut i = 0;
        while i < self.bodies.len() {
            let id = self.bodies[i].0;
            let mut finished = !self.conn.is_open(id);
            while !finished && self.conn.is_drained(id) {
                let body = Pin::new(&mut self.bodies[i].1);
                match http_body::Body::poll_frame(body, cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => {
                        self.conn.send_data(id, Bytes::new(), true);
                        finished = true;
                    }
                    Poll::Ready(Some(Err(err))) => {
                        tracing::debug!(error = %err, "a response body failed");
                        self.conn.reset(id, Reason::InternalError);
                        finished = true;
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.conn.send_data(id, data, false),
                        Err(frame) => {
                            match frame.into_trailers() {
                                Ok(trailers) => {
                                    let fields = trailers
                                        .iter()
                                        .map(|(n, v)| {
                                            (
                                                Bytes::copy_from_slice(n.as_str().as_bytes()),
                                                Bytes::copy_from_slice(v.as_bytes()),
                                            )
                                        })
                                        .collect();
                                    self.conn.send_trailers(id, Trailers::Fields(fields));
                                }
                                Err(_) => self.conn.send_data(id, Bytes::new(), true),
                            }
                            finished = true;
                        }
                    },
                }
                progressed = true;
            }
            if finished {
                self.bodies.swap_remove(i);
                self.calls.remove(&id);
                progressed = true;
            } else {
                i += 1;
            }
        }
        progressed
    }

    /// Arms the timer for a collecting call's deadline.
    fn arm(&mut self, deadline: Instant) {
        match &mut self.timer {
            Some((at, _)) if *at <= deadline => {}
            _ => {
                self.timer = Some((
                    deadline,
                    Box::pin(tokio::time::sleep_until(deadline.into())),
                ))
            }
        }
    }

    /// Ends the collecting calls whose deadline passed; re-arms for the next one.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((_, sleep)) = &mut self.timer else {
            return false;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer = None;
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (&id, call) in &self.calls {
            if let Kind::Collecting {
                deadline: Some(deadline),
                ..
            } = call.kind
            {
                if deadline <= now {
                    expired.push(id);
                } else {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                }
            }
        }
        for id in expired {
            self.error(id, &deadline_exceeded());
        }
        if let Some(next) = next {
            self.arm(next);
        }
        true
    }
}

fn record(call: &Call, outcome: usize) {
    if let Some(operation) = &call.operation {
        operation.record(outcome, call.started.elapsed());
    }
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("the call's grpc-timeout passed before it was answered")
}

/// A request's regular fields as an `http::HeaderMap` (for handlers' metadata and tonic's
/// services). A field `http` refuses is left out.
fn header_map(head: Head) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(head.fields.len());
    for field in head.fields {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&field.name),
            http::HeaderValue::from_maybe_shared(field.value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// A unary call's metadata: its regular fields but gRPC's own (`te`, `content-type`,
/// `user-agent`, `grpc-*`), which are about the transport, not the call.
fn metadata(head: Head) -> http::HeaderMap {
    const INSTANCE: http::HeaderName =
        http::HeaderName::from_static(crate::instances::INSTANCE_HEADER);
    let mut headers = http::HeaderMap::new();
    for field in head.fields {
        let name = match &field.name[..] {
            b"te" | b"content-type" | b"user-agent" => continue,
            name if name.starts_with(b"grpc-") => continue,
            // The one every Dapr call has: no parsing, no allocation for its name.
            b"x-component-instance" => INSTANCE,
            name => match http::HeaderName::from_bytes(name) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        if let Ok(value) = http::HeaderValue::from_maybe_shared(field.value) {
            headers.append(name, value);
        }
    }
    headers
}

/// A tonic service's request body, fed by the connection's task.
#[derive(Default)]
struct Inbox {
    chunks: VecDeque<Bytes>,
    /// The bytes in `chunks`.
    bytes: usize,
    ended: bool,
    /// The stream was reset.
    broken: bool,
    waker: Option<Waker>,
}

struct Incoming(Arc<Mutex<Inbox>>);

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let mut inbox = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(chunk) = inbox.chunks.pop_front() {
            inbox.bytes -= chunk.len();
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        if inbox.broken {
            return Poll::Ready(Some(Err(Status::cancelled("the client reset the stream"))));
        }
        if inbox.ended {
            return Poll::Ready(None);
        }
        inbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let inbox = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inbox.ended && inbox.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instances::InstanceRegistry;
    use bytes::BufMut;
    use prost::Message;
    use tokio::io::ReadBuf;

    /// A connection whose client sent `reads` (then closed its side), one chunk per read (the
    /// test sees what is left), and whose writes stall (Pending, with a wake-up) the first
    /// `stalls` times they are called once only the last read is left.
    struct Scripted {
        reads: Arc<Mutex<VecDeque<Vec<u8>>>>,
        written: Arc<Mutex<Vec<u8>>>,
        stalls: usize,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let mut reads = self.reads.lock().unwrap();
            if let Some(mut chunk) = reads.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    reads.push_front(chunk.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            if self.reads.lock().unwrap().len() == 1 && self.stalls > 0 {
                self.stalls -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut written = self.written.lock().unwrap();
            for buf in bufs {
                written.extend_from_slice(buf);
            }
            Poll::Ready(Ok(total))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_uint(payload.len() as u64, 3);
        out.put_u8(kind);
        out.put_u8(flags);
        out.put_u32(id);
        out.extend_from_slice(payload);
        out
    }

    /// The header block of a call of the state store's `method` on instance `s`.
    fn head_block(encoder: &mut fluke_hpack::Encoder, method: &str) -> Vec<u8> {
        let path = format!("/dapr.proto.components.v1.StateStore/{method}");
        encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"x-component-instance", b"s"),
        ])
    }

    fn grpc(message: &impl Message) -> Vec<u8> {
        let mut out = vec![0];
        out.put_u32(message.encoded_len() as u32);
        message.encode(&mut out).unwrap();
        out
    }

    /// A registry in `dir` with instance `s` initialised with `properties`, and a transport
    /// serving it.
    async fn served_instance(
        dir: &std::path::Path,
        properties: &[(&str, &str)],
    ) -> (Arc<InstanceRegistry>, Arc<Transport>) {
        let registry = Arc::new(InstanceRegistry::new(dir, 64 << 20).unwrap());
        let init = crate::proto::InitRequest {
            metadata: Some(crate::proto::MetadataRequest {
                properties: properties
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
        };
        call(&registry, Unary::Init, init.encode_to_vec()).await;
        let transport = Arc::new(Transport {
            registry: Arc::clone(&registry),
            services: routes::Services::default(),
            metrics: Arc::new(crate::metrics::RequestMetrics::default()),
            max_request_bytes: 64 << 20,
            http2: crate::server::Http2::Roost,
        });
        (registry, transport)
    }

    /// Calls `method` of instance `s` directly (not through a connection).
    async fn call(registry: &Arc<InstanceRegistry>, method: Unary, message: Vec<u8>) {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-component-instance", "s".parse().unwrap());
        let metadata = tonic::metadata::MetadataMap::from_headers(headers);
        crate::service::answer(registry, method, metadata, message.into())
            .await
            .unwrap();
    }

    /// After a burst of output larger than the read limit drains, the connection reads
    /// again by itself: here the client's PING, sent after its gets, is answered and the
    /// connection ends when the client's side does.
    #[tokio::test]
    async fn reading_resumes_once_a_large_output_drains() {
        let dir = tempfile::tempdir().unwrap();
        let (_registry, transport) = served_instance(dir.path(), &[]).await;
        let set = crate::proto::SetRequest {
            key: "big".into(),
            value: vec![7u8; 512 * 1024].into(),
            ..Default::default()
        };
        call(&transport.registry, Unary::Set, set.encode_to_vec()).await;
        let mut start = conn::PREFACE.to_vec();
        // Windows of 16 MiB, for the stream and the connection.
        start.extend(frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]));
        start[conn::PREFACE.len() + 9 + 2..conn::PREFACE.len() + 9 + 6]
            .copy_from_slice(&(16u32 << 20).to_be_bytes());
        start.extend(frame(0x8, 0, 0, &(16u32 << 20).to_be_bytes()));
        let mut encoder = fluke_hpack::Encoder::new();
        let mut gets = Vec::new();
        let get = grpc(&crate::proto::GetRequest {
            key: "big".into(),
            ..Default::default()
        });
        for id in [1u32, 3, 5, 7] {
            let block = head_block(&mut encoder, "Get");
            gets.extend(frame(0x1, 0x4, id, &block));
            gets.extend(frame(0x0, 0x1, id, &get));
        }
        let ping = frame(0x6, 0, 0, b"12345678");
        let written = Arc::new(Mutex::new(Vec::new()));
        let io = Scripted {
            reads: Arc::new(Mutex::new(VecDeque::from([start, gets, ping]))),
            written: Arc::clone(&written),
            stalls: 2,
        };
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        // Polled by hand, with a waker that records its wake-ups: a connection that waits
        // while nothing is set to wake it is stuck, whatever a timer would later do.
        struct Flag(std::sync::atomic::AtomicBool);
        impl futures_util::task::ArcWake for Flag {
            fn wake_by_ref(flag: &Arc<Flag>) {
                flag.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(true)));
        let waker = futures_util::task::waker(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut connection = pin!(serve_connection(transport, io, stopped));
        loop {
            // A wake-up from another thread (the engine's) may take a moment.
            for _ in 0..100 {
                if flag.0.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if connection.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            assert!(
                flag.0.load(std::sync::atomic::Ordering::SeqCst) || {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    flag.0.load(std::sync::atomic::Ordering::SeqCst)
                },
                "the connection waits with nothing set to wake it"
            );
        }
        let ack = frame(0x6, 0x1, 0, b"12345678");
        let written = written.lock().unwrap();
        assert!(
            written.windows(ack.len()).any(|w| w == ack),
            "the PING was not answered"
        );
        assert!(written.len() > 4 * 512 * 1024, "the gets were not answered");
    }

    /// A client that opens streams and resets them at once ("rapid reset") waits for its
    /// calls like any other: while `MAX_CALLS` handlers run — here every write is held, the
    /// engine's table of unapplied writes being full while catch-up is paused — the
    /// connection reads no further, reset or not. Once the engine makes room, the rest is
    /// read and the client's PING answered.
    #[tokio::test]
    async fn streams_reset_at_once_still_count_against_the_calls_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, transport) = served_instance(dir.path(), &[("maxUnappliedMB", "1")]).await;
        let instance = registry.get("s").await.unwrap();
        instance.db.blocking().pause_catchup();
        // Fills the table of unapplied writes: every later write waits for catch-up.
        let fill = crate::proto::SetRequest {
            key: "fill".into(),
            value: vec![7u8; 1024 * 1024].into(),
            ..Default::default()
        };
        call(&registry, Unary::Set, fill.encode_to_vec()).await;
        // Each read is one stream: its head, its set and its reset.
        let calls = MAX_CALLS + 50;
        let mut reads = VecDeque::from([[conn::PREFACE, &frame(0x4, 0, 0, &[])].concat()]);
        let mut encoder = fluke_hpack::Encoder::new();
        for n in 0..calls as u32 {
            let id = 2 * n + 1;
            let set = grpc(&crate::proto::SetRequest {
                key: format!("k{n}"),
                value: b"v".to_vec().into(),
                ..Default::default()
            });
            let block = head_block(&mut encoder, "Set");
            let mut read = frame(0x1, 0x4, id, &block);
            read.extend(frame(0x0, 0x1, id, &set));
            read.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
            reads.push_back(read);
        }
        reads.push_back(frame(0x6, 0, 0, b"12345678"));
        let left = Arc::new(Mutex::new(reads));
        let written = Arc::new(Mutex::new(Vec::new()));
        let io = Scripted {
            reads: Arc::clone(&left),
            written: Arc::clone(&written),
            stalls: 0,
        };
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let mut connection = Box::pin(serve_connection(transport, io, stopped));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // The reads never wait, so one poll reads all the connection may.
        for _ in 0..3 {
            assert!(connection.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            left.lock().unwrap().len(),
            calls - MAX_CALLS + 1,
            "streams read while {MAX_CALLS} calls were in flight"
        );
        instance.db.blocking().resume_catchup();
        tokio::time::timeout(Duration::from_secs(30), connection)
            .await
            .expect("the connection finishes once the engine makes room");
        assert!(left.lock().unwrap().is_empty());
        let ack = frame(0x6, 0x1, 0, b"12345678");
        let written = written.lock().unwrap();
        assert!(
            written.windows(ack.len()).any(|w| w == ack),
            "the PING was not answered"
        );
    }
}
