//! Where the socket transport's time goes: `Ping` round trips to a `roost serve` on a Unix
//! socket from one client, through tonic's `Channel` (which puts a `Buffer` task between the
//! caller and the HTTP/2 connection) and through a bare hyper HTTP/2 connection (the caller
//! drives the request itself, as grpc-go's client does), next to the floor under both: a
//! 64-byte echo over a Unix socket between the same two runtimes (no HTTP/2, no gRPC).
//! Alternating rounds, same process.
//!
//! `cargo run --release -p roost-bench --example transport [-- ROUNDS CALLS]`

use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use roost_component::doctor::client::{connect, for_instance};
use roost_component::proto::{self, state_store_client::StateStoreClient};
use roost_component::server::{self, ServeConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let total: Duration = samples.iter().sum();
    println!(
        "{name:<28} {:>8.0} calls/s  p50 {:>6.1} µs  p99 {:>6.1} µs",
        samples.len() as f64 / total.as_secs_f64(),
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(5);
    let calls = args.get(1).copied().unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("roost.sock");
    let config = ServeConfig {
        socket_path: socket.clone(),
        name: "roost".into(),
        data_dir: dir.path().join("data"),
        socket_mode: 0o600,
        max_request_bytes: server::DEFAULT_MAX_REQUEST_BYTES,
        shutdown_grace: Duration::from_secs(1),
        metrics_addr: None,
        transport_threads: roost_component::server::default_transport_threads(),
        http2: roost_component::server::Http2::from_env().unwrap_or_else(|error| panic!("{error}")),
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(server::serve(config, std::future::pending(), move |_| {
                ready_tx.send(()).unwrap();
            }))
            .unwrap();
    });
    ready_rx.recv().unwrap();

    // The echo server: same runtime shape as `roost serve` (multi-thread, a task per
    // connection).
    let echo_path = dir.path().join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&echo_path).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 64];
                        while stream.read_exact(&mut buf).await.is_ok() {
                            if stream.write_all(&buf).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = connect(&socket, Duration::from_secs(5)).await.unwrap();
        let mut tonic_client = StateStoreClient::new(channel);

        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let (send, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let bare = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
            let mut send = send.clone();
            async move {
                send.ready().await?;
                send.send_request(request).await
            }
        });
        let mut bare_client =
            StateStoreClient::with_origin(bare, "http://roost.invalid".parse().unwrap());

        let mut echo = tokio::net::UnixStream::connect(&echo_path).await.unwrap();
        let mut by_tonic = Vec::new();
        let mut by_bare = Vec::new();
        let mut by_echo = Vec::new();
        for _ in 0..rounds {
            for _ in 0..calls {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [7u8; 64];
                let start = Instant::now();
                echo.write_all(&buf).await.unwrap();
                echo.read_exact(&mut buf).await.unwrap();
                by_echo.push(start.elapsed());
            }
            for _ in 0..calls {
                let start = Instant::now();
                tonic_client
                    .ping(for_instance("bench", proto::PingRequest {}))
                    .await
                    .unwrap();
                by_tonic.push(start.elapsed());
            }
            for _ in 0..calls {
                let start = Instant::now();
                bare_client
                    .ping(for_instance("bench", proto::PingRequest {}))
                    .await
                    .unwrap();
                by_bare.push(start.elapsed());
            }
        }
        report("tonic Channel (Buffer)", by_tonic);
        report("bare hyper HTTP/2", by_bare);
        report("64-byte echo (no HTTP/2)", by_echo);
    });
}
