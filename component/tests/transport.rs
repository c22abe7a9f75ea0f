//! The socket's HTTP/2 and gRPC, checked from outside: h2spec (the HTTP/2 conformance tool)
//! finds no violation, grpcurl (grpc-go with reflection) lists and calls the services, and a
//! raw HTTP/2 client checks what gRPC clients rely on: `grpc-timeout` deadlines, cancellation
//! by RST_STREAM, a request above `--max-request-bytes`, many concurrent streams with large
//! values on one connection, and HTTP 415 for requests that are not gRPC.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use roost_component::proto;
use support::fronts::go_tool;
use support::{Server, free_port, scrape, set};
use tonic::Code;

/// A raw HTTP/2 client on the socket; its connection is driven by a task of its own.
async fn h2_client(socket: &Path) -> h2::client::SendRequest<Bytes> {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.ready().await.unwrap()
}

fn grpc_request(path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap()
}

fn framed(message: &impl Message) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(0);
    out.put_u32(message.encoded_len() as u32);
    message.encode(&mut out).unwrap();
    out.freeze()
}

/// The gRPC status of a response: from its headers (trailers-only) or its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> (u16, Option<String>) {
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let status = response.status().as_u16();
    if let Some(code) = response.headers().get("grpc-status") {
        return (status, Some(code.to_str().unwrap().to_string()));
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.unwrap();
    (
        status,
        trailers.and_then(|t| {
            t.get("grpc-status")
                .map(|v| v.to_str().unwrap().to_string())
        }),
    )
}

async fn ping_is_ok(client: &mut h2::client::SendRequest<Bytes>) {
    let request = grpc_request("/dapr.proto.components.v1.StateStore/Ping", &[]);
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(framed(&proto::PingRequest {}), true)
        .unwrap();
    assert_eq!(grpc_status(response).await, (200, Some("0".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_grpc_timeout_ends_with_deadline_exceeded() {
    let server = Server::start();
    let mut client = h2_client(&server.socket_path()).await;
    // The request's message never comes, so only the deadline can end the call: a Dapr unary
    // method, and a call to one of tonic's services (health).
    for path in [
        "/dapr.proto.components.v1.StateStore/Get",
        "/grpc.health.v1.Health/Check",
    ] {
        let request = grpc_request(path, &[("grpc-timeout", "200m")]);
        let (response, _body) = client.send_request(request, false).unwrap();
        assert_eq!(
            grpc_status(response).await,
            (200, Some((Code::DeadlineExceeded as i32).to_string())),
            "{path}"
        );
    }
    // A timeout that is not one is refused, and the connection goes on.
    let request = grpc_request(
        "/dapr.proto.components.v1.StateStore/Ping",
        &[("grpc-timeout", "5 seconds")],
    );
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(framed(&proto::PingRequest {}), true)
        .unwrap();
    assert_eq!(
        grpc_status(response).await,
        (200, Some((Code::InvalidArgument as i32).to_string()))
    );
    ping_is_ok(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_client_resets_is_dropped_and_counted_cancelled() {
    let mut server = Server::start();
    server.kill();
    let addr = format!("127.0.0.1:{}", free_port());
    server.spawn(&["--metrics-addr", &addr]).unwrap();
    let mut client = h2_client(&server.socket_path()).await;
    let request = grpc_request("/dapr.proto.components.v1.StateStore/Get", &[]);
    let (response, mut body) = client.send_request(request, false).unwrap();
    // Half a message, then RST_STREAM(CANCEL).
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 9, 10]), false)
        .unwrap();
    body.send_reset(h2::Reason::CANCEL);
    drop(response);
    let series = "roost_requests_total{operation=\"StateStore/Get\",code=\"Cancelled\"} 1";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&addr);
        if text.lines().any(|line| line == series) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {series} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ping_is_ok(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_max_request_bytes_is_resource_exhausted_and_the_channel_goes_on() {
    let mut server = Server::start();
    server.kill();
    server
        .spawn(&["--max-request-bytes", &(1024 * 1024).to_string()])
        .unwrap();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[("maxValueSize", "65536")]).await.unwrap();
    let err = daprd
        .set(set("big", vec![7u8; 2 * 1024 * 1024]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--max-request-bytes"),
        "{}",
        err.message()
    );
    // The same connection carries the next calls: the refused request was read to its end.
    daprd.set(set("small", vec![1u8; 1000])).await.unwrap();
    assert_eq!(daprd.get("small").await.unwrap().data.len(), 1000);
    assert!(daprd.get("big").await.unwrap().data.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_with_large_values_share_one_connection() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[]).await.unwrap();
    // 400 calls at once on one HTTP/2 connection (the server allows 200 streams at a time),
    // each value 256 KiB: 100 MiB through both directions' flow-control windows.
    let value = |i: usize| -> Vec<u8> { (0..256 * 1024).map(|j| (i * 31 + j) as u8).collect() };
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..400 {
        let mut client = daprd.clone();
        let value = value(i);
        writes.spawn(async move { client.set(set(&format!("k{i}"), value)).await });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap().unwrap();
    }
    let mut reads = tokio::task::JoinSet::new();
    for i in 0..400 {
        let mut client = daprd.clone();
        reads.spawn(async move { (i, client.get(&format!("k{i}")).await) });
    }
    while let Some(done) = reads.join_next().await {
        let (i, got) = done.unwrap();
        assert!(got.unwrap().data == value(i), "k{i} came back different");
    }
}

/// A client with windows larger than the server's output limit, asking for more than its
/// connection window at once: the server must read the client's WINDOW_UPDATEs while (and
/// after) its output is large, or the calls stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_larger_than_the_clients_windows_flow_as_it_reads() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[]).await.unwrap();
    let value = |i: usize| -> Vec<u8> { (0..256 * 1024).map(|j| (i * 7 + j) as u8).collect() };
    for i in 0..8 {
        daprd.set(set(&format!("v{i}"), value(i))).await.unwrap();
    }
    let stream = tokio::net::UnixStream::connect(server.socket_path())
        .await
        .unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(4 * 1024 * 1024)
        .handshake::<_, Bytes>(stream)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    // 64 gets of 256 KiB: 16 MiB, four times the connection window, asked for at once.
    let mut responses = Vec::new();
    for i in 0..64 {
        let request = grpc_request(
            "/dapr.proto.components.v1.StateStore/Get",
            &[("x-component-instance", "statestore")],
        );
        let (response, mut body) = client.send_request(request, false).unwrap();
        let get = proto::GetRequest {
            key: format!("v{}", i % 8),
            ..Default::default()
        };
        body.send_data(framed(&get), true).unwrap();
        responses.push((i % 8, response));
    }
    // Read all at once: a client reading one stream at a time could stall on its own
    // connection window, filled by the streams it does not read yet.
    let mut reads = tokio::task::JoinSet::new();
    for (i, response) in responses {
        reads.spawn(async move {
            let response = response.await.unwrap();
            let mut body = response.into_body();
            let mut message = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                message.extend_from_slice(&chunk);
            }
            (i, proto::GetResponse::decode(&message[5..]).unwrap())
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        let mut all = Vec::new();
        while let Some(done) = reads.join_next().await {
            all.push(done.unwrap());
        }
        all
    })
    .await
    .expect("every response within 20 s");
    assert_eq!(all.len(), 64);
    for (i, got) in all {
        assert!(got.data == value(i), "v{i} came back different");
    }
    ping_is_ok(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_grpc_get_http_415() {
    let server = Server::start();
    let mut client = h2_client(&server.socket_path()).await;
    let request = http::Request::builder()
        .method("GET")
        .uri("http://localhost/")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&text).contains("application/grpc"));
    ping_is_ok(&mut client).await;
}

/// Forwards connections to 127.0.0.1:`port` to the socket (h2spec speaks TCP only). When the
/// server closes, the client gets everything it sent (a GOAWAY) and then end of file; what the
/// client still sends is read and dropped, so closing never resets the TCP connection (a reset
/// could discard that GOAWAY before h2spec reads it).
async fn loopback_bridge(socket: std::path::PathBuf) -> u16 {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(unix) = tokio::net::UnixStream::connect(&socket).await else {
                continue;
            };
            let (mut from_client, mut to_client) = tcp.into_split();
            let (mut from_server, mut to_server) = unix.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                let _ = tokio::io::copy(&mut from_client, &mut tokio::io::sink()).await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                let _ = to_client.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_finds_no_violation() {
    let Some(h2spec) = go_tool("h2spec", "ROOST_H2SPEC", "h2spec_finds_no_violation") else {
        return;
    };
    let server = Server::start();
    let port = loopback_bridge(server.socket_path()).await;
    let output = tokio::task::spawn_blocking(move || {
        Command::new(h2spec)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o", "5"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let summary = text
        .lines()
        .find(|line| line.contains(" tests, ") && line.contains(" failed"))
        .unwrap_or_else(|| panic!("no h2spec summary in:\n{text}"));
    assert!(
        output.status.success() && summary.ends_with(" 0 failed"),
        "h2spec: {summary}\n{text}"
    );
    let passed: u32 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" passed"))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(passed >= 140, "h2spec ran too few cases: {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_over_the_socket() {
    let Some(grpcurl) = go_tool(
        "grpcurl",
        "ROOST_GRPCURL",
        "grpcurl_lists_describes_and_calls_over_the_socket",
    ) else {
        return;
    };
    let server = Server::start();
    let address = format!("unix://{}", server.socket_path().display());
    let run = |args: &[&str]| {
        let mut command = Command::new(&grpcurl);
        command.args(["-plaintext", "-max-time", "10"]);
        command.args(args);
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, listed) = run(&[&address, "list"]);
    assert!(ok, "{listed}");
    for service in [
        "dapr.proto.components.v1.StateStore",
        "dapr.proto.components.v1.TransactionalStateStore",
        "dapr.proto.components.v1.QueriableStateStore",
        "roost.admin.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(listed.lines().any(|l| l == service), "{service}:\n{listed}");
    }
    let (ok, described) = run(&[&address, "describe", "dapr.proto.components.v1.StateStore"]);
    assert!(ok && described.contains("rpc BulkGet"), "{described}");

    let init = r#"{"metadata":{"properties":{}}}"#;
    let (ok, out) = run(&[
        "-d",
        init,
        &address,
        "dapr.proto.components.v1.StateStore/Init",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(&[
        "-d",
        r#"{"key":"greeting","value":"aGVsbG8="}"#,
        &address,
        "dapr.proto.components.v1.StateStore/Set",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(&[
        "-d",
        r#"{"key":"greeting"}"#,
        &address,
        "dapr.proto.components.v1.StateStore/Get",
    ]);
    assert!(ok && out.contains(r#""data": "aGVsbG8=""#), "{out}");
    // An etag that does not match: grpc-go decodes the status and its details.
    let (ok, out) = run(&[
        "-format-error",
        "-d",
        r#"{"key":"greeting","etag":{"value":"12345"}}"#,
        &address,
        "dapr.proto.components.v1.StateStore/Delete",
    ]);
    assert!(!ok, "{out}");
    let error: serde_json::Value = serde_json::from_str(&out).expect("grpcurl's JSON error");
    assert_eq!(error["code"], 9, "FAILED_PRECONDITION: {out}");
    // grpcurl has no google.rpc.BadRequest type and shows it raw: one FieldViolation for
    // "etag" (field 1 of BadRequest, then field 1 of the violation, "etag").
    let detail = &error["details"][0];
    assert_eq!(
        detail["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{out}"
    );
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(detail["@value"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw[0], 0x0a, "a field violation: {out}");
    assert_eq!(&raw[2..8], b"\x0a\x04etag", "for the etag field: {out}");
    let (ok, out) = run(&[&address, "grpc.health.v1.Health/Check"]);
    assert!(ok && out.contains("SERVING"), "{out}");
}
