//! HTTP/2 on the socket, served on the `h2` crate: one task per connection, no task per call.
//!
//! A connection's task accepts streams and drives their calls itself, as futures in one
//! [`FuturesUnordered`]; a call whose answer is ready on its first poll (a get) never waits
//! for a wake-up. The unary methods of the Dapr services ([`crate::routes::Unary`]) are
//! answered here: the request message is collected within `--max-request-bytes`, decoded,
//! handed to its handler ([`crate::service::answer`]), and the response goes out as HEADERS,
//! one DATA frame and the `grpc-status` trailers, or as a trailers-only error. Every other
//! call (admin, reflection, health, streaming calls) goes to its tonic service
//! ([`crate::routes::Services`]) with the stream as its body, and the answer's body is sent
//! as the peer's flow control allows.
//!
//! For every call: `grpc-timeout` ends it with `DEADLINE_EXCEEDED`; a client's RST_STREAM
//! drops it (`CANCELLED` in the metrics); its outcome and latency are counted
//! ([`RequestMetrics`]). A request that is not gRPC (not a POST of `application/grpc`) gets
//! HTTP 415 with a line of text. On shutdown each connection sends GOAWAY and ends once its
//! calls have.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::Status;

use crate::grpc;
use crate::instances::InstanceRegistry;
use crate::metrics::RequestMetrics;
use crate::routes::{self, Services, Unary};

/// Each stream's receive window: a request of up to 1 MiB needs no WINDOW_UPDATE.
const STREAM_WINDOW: u32 = 1024 * 1024;
/// The connection's receive window.
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// Streams one connection may have open at once (grpc-go queues calls beyond it).
const MAX_STREAMS: u32 = 200;
/// The largest header block accepted (gRPC metadata included).
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// How much of a response h2 buffers per stream before asking for capacity.
const MAX_SEND_BUFFER: usize = 1024 * 1024;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// What every connection shares.
pub struct Transport {
    pub registry: Arc<InstanceRegistry>,
    /// The tonic services for every call that is not a Dapr unary method.
    pub services: Services,
    pub metrics: Arc<RequestMetrics>,
    pub max_request_bytes: usize,
    /// Which HTTP/2 server serves the connections.
    pub http2: crate::server::Http2,
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
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io);
    let mut connection = tokio::select! {
        handshake = handshake => match handshake {
            Ok(connection) => connection,
            Err(err) => {
                tracing::debug!(error = %err, "HTTP/2 handshake failed");
                return;
            }
        },
        _ = stop.wait_for(|stop| *stop) => return,
    };
    let mut stopping = pin!(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    let mut stopped = false;
    let mut calls = FuturesUnordered::new();
    let ended = poll_fn(|cx| {
        loop {
            if !stopped && stopping.as_mut().poll(cx).is_ready() {
                stopped = true;
                connection.graceful_shutdown();
            }
            let accepted = connection.poll_accept(cx);
            let mut progressed = false;
            match accepted {
                Poll::Ready(Some(Ok((request, respond)))) => {
                    calls.push(call(Arc::clone(&transport), request, respond));
                    progressed = true;
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(err)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => {}
            }
            // Calls that finished queued their frames: the next `poll_accept` writes them.
            while let Poll::Ready(Some(())) = calls.poll_next_unpin(cx) {
                progressed = true;
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    });
    if let Err(err) = ended.await
        && !err.is_io()
    {
        tracing::debug!(error = %err, "HTTP/2 connection ended with an error");
    }
}

/// How a call ended, for the metrics: a gRPC code (0–16).
type Outcome = usize;
const CANCELLED: Outcome = 1;

/// One stream, from its request head to its last frame.
async fn call(
    transport: Arc<Transport>,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let (parts, body) = request.into_parts();
    if !grpc::is_grpc(&parts.method, &parts.headers) {
        Box::pin(not_grpc(respond, body)).await;
        return;
    }
    let path = parts.uri.path();
    let method = routes::unary(path);
    let operation = match method {
        Some(method) => transport.metrics.unary(method, path),
        None => transport.metrics.operation(path),
    };
    let started = Instant::now();
    let outcome = match grpc::timeout(&parts.headers) {
        Err(status) => {
            trailers_only(&mut respond, &status);
            status.code() as Outcome
        }
        Ok(deadline) => match method {
            Some(method) => unary(&transport, method, parts.headers, body, respond, deadline).await,
            None => {
                let request = http::Request::from_parts(
                    parts,
                    tonic::body::Body::new(Incoming {
                        stream: body,
                        data_done: false,
                        done: false,
                    }),
                );
                let answering = transport.services.handle(request);
                // Not a Dapr call: boxed, its body-sending state does not enlarge every call's.
                Box::pin(served(answering, respond, deadline)).await
            }
        },
    };
    operation.record(outcome, started.elapsed());
}

/// A Dapr unary call: collect, answer, respond; the rest of an oversized request is read and
/// dropped after the answer, so the answer is not reset with the stream.
async fn unary(
    transport: &Transport,
    method: Unary,
    headers: HeaderMap,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    deadline: Option<Duration>,
) -> Outcome {
    let registry = &transport.registry;
    let limit = transport.max_request_bytes;
    // The answer's future is built in place in the race's: a future moved into another one
    // after it is made takes its room twice, and every call's state is copied when it is
    // queued.
    let raced = Race {
        answering: async {
            let mut message = grpc::Collector::default();
            while let Some(chunk) = body.data().await {
                let chunk =
                    chunk.map_err(|e| Status::cancelled(format!("the request broke off: {e}")))?;
                let _ = body.flow_control().release_capacity(chunk.len());
                message.push(chunk, limit)?;
            }
            let message = message.finish()?;
            crate::service::answer(
                registry,
                method,
                tonic::metadata::MetadataMap::from_headers(headers),
                message,
            )
            .await
        },
        respond: &mut respond,
        timer: deadline.map(|after| Box::pin(tokio::time::sleep(after))),
    }
    .await;
    let outcome = match raced {
        Raced::Answered(Ok(message)) => {
            respond_message(&mut respond, message);
            0
        }
        Raced::Answered(Err(status)) => {
            trailers_only(&mut respond, &status);
            status.code() as Outcome
        }
        Raced::Expired => {
            trailers_only(&mut respond, &deadline_exceeded());
            tonic::Code::DeadlineExceeded as Outcome
        }
        Raced::Reset => return CANCELLED,
    };
    drain(body).await;
    outcome
}

/// A call to a tonic service: its response head, then its body as flow control allows.
async fn served(
    answering: routes::Answering,
    mut respond: SendResponse<Bytes>,
    deadline: Option<Duration>,
) -> Outcome {
    let raced = Race {
        answering,
        respond: &mut respond,
        timer: deadline.map(|after| Box::pin(tokio::time::sleep(after))),
    }
    .await;
    let response = match raced {
        Raced::Answered(Ok(response)) => response,
        Raced::Answered(Err(never)) => match never {},
        Raced::Expired => {
            trailers_only(&mut respond, &deadline_exceeded());
            return tonic::Code::DeadlineExceeded as Outcome;
        }
        Raced::Reset => return CANCELLED,
    };
    let (parts, body) = response.into_parts();
    // Errors answer trailers-only, with the status in the headers; a success carries it in
    // its trailers.
    let outcome = grpc::code_in(&parts.headers);
    let end = http_body::Body::is_end_stream(&body);
    match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(send) if !end => send_body(body, send).await,
        Ok(_) => {}
        Err(err) => tracing::debug!(error = %err, "the response could not be sent"),
    }
    outcome
}

enum Raced<T> {
    Answered(T),
    Expired,
    Reset,
}

pin_project_lite::pin_project! {
    /// Runs `answering` until it answers, the deadline passes, or the client resets the
    /// stream (then the answer is dropped unfinished). The answer is polled first: a call that
    /// is ready at once costs no timer and no reset check.
    struct Race<'a, F> {
        #[pin]
        answering: F,
        respond: &'a mut SendResponse<Bytes>,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F: Future> Future for Race<'_, F> {
    type Output = Raced<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(answer) = this.answering.poll(cx) {
            return Poll::Ready(Raced::Answered(answer));
        }
        if let Some(timer) = this.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Raced::Expired);
        }
        match this.respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(Raced::Reset),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("the call's grpc-timeout passed before it was answered")
}

fn grpc_head() -> Response<()> {
    let mut response = Response::new(());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A successful unary answer: HEADERS, the message in one DATA frame, `grpc-status: 0`.
fn respond_message(respond: &mut SendResponse<Bytes>, message: Bytes) {
    let sent = respond
        .send_response(grpc_head(), false)
        .and_then(|mut send| {
            send.send_data(message, false)?;
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
            send.send_trailers(trailers)
        });
    if let Err(err) = sent {
        tracing::debug!(error = %err, "the answer could not be sent");
    }
}

/// An error answer: one HEADERS frame with the status (and its details) and END_STREAM.
fn trailers_only(respond: &mut SendResponse<Bytes>, status: &Status) {
    let mut response = grpc_head();
    if status.add_header(response.headers_mut()).is_err() {
        // Only a message that cannot be a header value fails; the code still goes out.
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from(status.code() as i32));
    }
    if let Err(err) = respond.send_response(response, true) {
        tracing::debug!(error = %err, "the error answer could not be sent");
    }
}

/// Reads what the client still sends on a stream, releasing its flow-control window, so the
/// peer finishes sending instead of stalling. False if the stream broke off (a reset).
async fn drain(mut body: RecvStream) -> bool {
    if body.is_end_stream() {
        return true;
    }
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Err(_) => return false,
        }
    }
    true
}

/// HTTP 415 for a request that is not gRPC, once the request has ended: frames the peer sends
/// on the stream meanwhile (a WINDOW_UPDATE that overflows, say) are answered first.
async fn not_grpc(mut respond: SendResponse<Bytes>, body: RecvStream) {
    if !drain(body).await {
        return;
    }
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(mut send) = respond.send_response(response, false) {
        let _ = send.send_data(
            Bytes::from_static(b"roost serves gRPC: POST with content-type application/grpc\n"),
            true,
        );
    }
}

/// Sends a tonic response body: data as the peer's window allows, then its trailers.
async fn send_body(body: tonic::body::Body, mut send: SendStream<Bytes>) {
    let mut body = pin!(body);
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(frame) = http_body::Body::poll_frame(body.as_mut(), cx) {
                return Poll::Ready(Some(frame));
            }
            // A reset stream ends the body's sending (and drops the body).
            match send.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let Some(frame) = frame else { return };
        match frame {
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(err)) => {
                tracing::debug!(error = %err, "a response body failed");
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if send_data(&mut send, data).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = send.send_trailers(trailers);
                    } else {
                        let _ = send.send_data(Bytes::new(), true);
                    }
                    return;
                }
            },
        }
    }
}

/// Sends `data` in pieces no larger than the capacity the peer grants.
async fn send_data(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = poll_fn(|cx| send.poll_capacity(cx)).await;
        match granted {
            Some(Ok(0)) => continue,
            Some(Ok(n)) => send.send_data(data.split_to(n.min(data.len())), false)?,
            Some(Err(err)) => return Err(err),
            None => return Ok(()),
        }
    }
    Ok(())
}

/// A stream's request body, for tonic's services.
struct Incoming {
    stream: RecvStream,
    data_done: bool,
    done: bool,
}

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match this.stream.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
                Poll::Ready(Some(Err(err))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => this.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        let trailers = std::task::ready!(this.stream.poll_trailers(cx));
        this.done = true;
        Poll::Ready(match trailers {
            Ok(Some(trailers)) => Some(Ok(http_body::Frame::trailers(trailers))),
            Ok(None) => None,
            Err(err) => Some(Err(err)),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.stream.is_end_stream()
    }
}
