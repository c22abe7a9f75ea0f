//! The component's process and instance lifecycle over its socket: instances, restarts
//! without `Init`, shutdown, socket handling, and errors that are not about etags.

mod support;

use std::os::unix::fs::PermissionsExt;

use roost_component::instances::encode_name;
use support::*;
use tonic::Code;

#[tokio::test]
async fn two_instances_with_the_same_key_stay_isolated() {
    let server = Server::start();
    let mut orders = server.daprd("orders-store").await;
    let mut carts = server.daprd("carts-store").await;
    orders.init(&[]).await.unwrap();
    carts.init(&[("durability", "eventual")]).await.unwrap();
    orders.set(set("app||k", b"orders".to_vec())).await.unwrap();
    carts.set(set("app||k", b"carts".to_vec())).await.unwrap();
    assert_eq!(
        orders.get("app||k").await.unwrap().data.as_slice(),
        b"orders"
    );
    assert_eq!(carts.get("app||k").await.unwrap().data.as_slice(), b"carts");
    carts.delete(delete("app||k")).await.unwrap();
    assert_eq!(
        orders.get("app||k").await.unwrap().data.as_slice(),
        b"orders"
    );
}

#[tokio::test]
async fn reinit_is_idempotent_and_can_change_configuration() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[("maxTransactionOps", "5")]).await.unwrap();
    daprd.set(set("k", b"v".to_vec())).await.unwrap();
    let etag = daprd.etag("k").await;
    daprd.init(&[("maxTransactionOps", "5")]).await.unwrap();
    assert_eq!(daprd.etag("k").await, etag);
    assert_eq!(daprd.multi_max_size().await.unwrap(), 5);
    daprd.init(&[("maxTransactionOps", "7")]).await.unwrap();
    assert_eq!(daprd.multi_max_size().await.unwrap(), 7);
    assert_eq!(daprd.get("k").await.unwrap().data.as_slice(), b"v");
}

#[tokio::test]
async fn restart_without_init_serves_known_instances_and_refuses_unknown_ones() {
    let mut server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd
        .init(&[("maxTransactionOps", "9"), ("durability", "immediate")])
        .await
        .unwrap();
    daprd.set(set("app||a", b"1".to_vec())).await.unwrap();
    daprd
        .transact(vec![Op::Set(set("app||b", b"2".to_vec()))])
        .await
        .unwrap();
    let etag = daprd.etag("app||a").await;
    // A crash: SIGKILL, then a new process; daprd does not send Init again.
    server.kill();
    server.spawn(&[]).unwrap();
    let mut daprd = server.daprd("statestore").await;
    assert_eq!(daprd.get("app||a").await.unwrap().data.as_slice(), b"1");
    assert_eq!(daprd.etag("app||a").await, etag);
    assert_eq!(daprd.get("app||b").await.unwrap().data.as_slice(), b"2");
    assert_eq!(
        daprd.multi_max_size().await.unwrap(),
        9,
        "configuration persisted"
    );
    daprd.set(set("app||c", b"3".to_vec())).await.unwrap();

    let mut stranger = server.daprd("never-initialised").await;
    let err = stranger.get("app||a").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("never initialised"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn missing_or_empty_header_maps_to_the_default_instance() {
    let server = Server::start();
    let channel = server.channel().await;
    let mut state = roost_component::proto::state_store_client::StateStoreClient::new(channel);
    state
        .init(roost_component::proto::InitRequest::default())
        .await
        .unwrap();
    state.set(set("k", b"default".to_vec())).await.unwrap();
    let got = state
        .get(roost_component::proto::GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data.as_slice(), b"default");
    // The named instance with the Go SDK's default id is the same keyspace.
    let mut named = server.daprd("#default__instance#").await;
    assert_eq!(named.get("k").await.unwrap().data.as_slice(), b"default");
    // daprd's pluggable client sends the header empty for a component without a name (Dapr's
    // conformance suite does): that is the default instance too.
    let mut unnamed = server.daprd("").await;
    assert_eq!(unnamed.get("k").await.unwrap().data.as_slice(), b"default");
}

#[tokio::test]
async fn instance_names_never_escape_the_data_dir() {
    let server = Server::start();
    for name in ["../x", "a/b", "..", "/etc/passwd", "%2e%2e"] {
        let mut daprd = server.daprd(name).await;
        daprd.init(&[]).await.unwrap();
        daprd.set(set("k", name.as_bytes().to_vec())).await.unwrap();
        assert_eq!(
            daprd.get("k").await.unwrap().data.as_slice(),
            name.as_bytes()
        );
        let dir = server.data_dir().join("instances").join(encode_name(name));
        assert!(dir.join("data.roost").exists(), "{name}: {}", dir.display());
    }
    // Nothing was written outside the data dir's instances folder.
    let mut entries: Vec<String> = std::fs::read_dir(server.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["data", "sockets"]);
    let data: Vec<String> = std::fs::read_dir(server.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(data, ["instances"]);
    // Absurd names get a clear error (gRPC header values cannot carry NUL at all).
    let mut long = server.daprd(&"x".repeat(10_000)).await;
    let err = long.init(&[]).await.unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
}

#[tokio::test]
async fn client_mistakes_are_kit_errors_with_http_400() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[("maxValueSize", "1024")]).await.unwrap();
    // Oversized value.
    let err = daprd.set(set("k", vec![0u8; 1025])).await.unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
    daprd.set(set("k", vec![0u8; 1024])).await.unwrap();
    // Empty key.
    let err = daprd.set(set("", b"1".to_vec())).await.unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
    // Bad metadata at Init names the key.
    let mut other = server.daprd("other").await;
    let err = other
        .init(&[("durability", "sometimes")])
        .await
        .unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
    assert!(err.message().contains("durability"), "{}", err.message());
    let err = other.init(&[("encryptionKey", "00")]).await.unwrap_err();
    assert!(err.message().contains("encryptionKey"), "{}", err.message());
    // A transaction over the limit (the engine allows twice MultiMaxSize for daprd's outbox).
    daprd
        .init(&[("maxValueSize", "1024"), ("maxTransactionOps", "2")])
        .await
        .unwrap();
    let ops = (0..5)
        .map(|i| Op::Set(set(&format!("t{i}"), b"1".to_vec())))
        .collect();
    let err = daprd.transact(ops).await.unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
    let ops = (0..4)
        .map(|i| Op::Set(set(&format!("t{i}"), b"1".to_vec())))
        .collect();
    daprd.transact(ops).await.unwrap();
}

#[tokio::test]
async fn responses_over_daprds_limit_are_refused_clearly() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[]).await.unwrap();
    let big = vec![7u8; 3 * 1024 * 1024];
    daprd.set(set("a", big.clone())).await.unwrap();
    daprd.set(set("b", big.clone())).await.unwrap();
    assert_eq!(daprd.get("a").await.unwrap().data.len(), big.len());
    let err = daprd.bulk_get(&["a", "b"]).await.unwrap_err();
    assert_kit_error(&err, Code::ResourceExhausted, "413");
    assert!(err.message().contains("4194304"), "{}", err.message());
}

/// daprd keeps its connection open: the client here stays connected (on a multi-threaded
/// runtime, so it can answer the server's GOAWAY) while the server shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_flushes_and_removes_the_socket() {
    let mut server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd
        .init(&[("durability", "eventual"), ("maxFlushDelay", "60s")])
        .await
        .unwrap();
    daprd
        .set(set("k", b"flushed at shutdown".to_vec()))
        .await
        .unwrap();
    assert!(server.terminate(), "clean exit on SIGTERM");
    assert!(!path_exists(&server.socket_path()), "socket removed");
    server.spawn(&[]).unwrap();
    let mut daprd = server.daprd("statestore").await;
    assert_eq!(
        daprd.get("k").await.unwrap().data.as_slice(),
        b"flushed at shutdown"
    );
}

#[tokio::test]
async fn socket_is_not_world_accessible_and_stale_sockets_are_replaced() {
    let mut server = Server::start();
    let mode = std::fs::metadata(server.socket_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    // A second server on the same live socket refuses to start.
    let err = {
        let mut clash = std::process::Command::new(env!("CARGO_BIN_EXE_roost"));
        clash
            .args(["serve", "--socket-folder"])
            .arg(server.socket_folder())
            .arg("--data-dir")
            .arg(server.dir.path().join("other-data"));
        let out = clash.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(err.contains("another server is listening"), "{err}");
    // After a crash the socket file stays behind; the next start removes it and serves.
    server.kill();
    assert!(
        path_exists(&server.socket_path()),
        "SIGKILL leaves the socket file"
    );
    server.spawn(&["--socket-mode", "666"]).unwrap();
    let mode = std::fs::metadata(server.socket_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666);
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[]).await.unwrap();
}

#[tokio::test]
async fn doctor_reports_what_daprd_would_register_or_why_not() {
    let mut server = Server::start_named("my-store");
    let diagnosis = roost_component::doctor::diagnose(&server.socket_path()).await;
    assert!(diagnosis.ok, "{:?}", diagnosis.lines);
    assert!(
        diagnosis.lines.iter().any(|l| l.contains("state.my-store")),
        "{:?}",
        diagnosis.lines
    );
    assert!(
        diagnosis
            .lines
            .iter()
            .any(|l| l.contains("ETAG, TRANSACTIONAL, TTL"))
    );
    server.kill();
    let diagnosis = roost_component::doctor::diagnose(&server.socket_path()).await;
    assert!(!diagnosis.ok);
    assert!(
        diagnosis.lines.iter().any(|l| l.contains("stale socket")),
        "{:?}",
        diagnosis.lines
    );
    let diagnosis = roost_component::doctor::diagnose(&server.dir.path().join("none.sock")).await;
    assert!(!diagnosis.ok);
    assert!(diagnosis.lines.iter().any(|l| l.contains("no socket file")));
    // A gRPC server without v1alpha reflection: discovery would fail.
    let path = server.dir.path().join("plain.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let diagnosis = roost_component::doctor::diagnose(&path).await;
    serving.abort();
    assert!(!diagnosis.ok);
    assert!(
        diagnosis
            .lines
            .iter()
            .any(|l| l.contains("reflection v1alpha")),
        "{:?}",
        diagnosis.lines
    );
}

/// `components/roost.yaml` is what users copy: its type and version are what daprd needs for
/// this socket, and its metadata is accepted by `Init`.
#[tokio::test]
async fn the_shipped_component_yaml_initialises() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../components/roost.yaml"
    ))
    .unwrap();
    let active: Vec<&str> = yaml
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim_end())
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(active.contains(&"  type: state.roost"), "{active:?}");
    assert!(active.contains(&"  version: v1"));
    let mut pairs = Vec::new();
    let mut name = None;
    for line in &active {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("- name: ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("value: ") {
            pairs.push((
                name.take().expect("value after name"),
                v.trim_matches('"').to_string(),
            ));
        }
    }
    assert!(pairs.iter().any(|(k, _)| k == "actorStateStore"));
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    daprd.init(&borrowed).await.unwrap();
    // gRPC health answers for the state store service.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "dapr.proto.components.v1.StateStore".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// A call to a service the socket does not serve is `UNIMPLEMENTED`, as from any gRPC server;
/// the connection goes on serving.
#[tokio::test]
async fn an_unknown_service_is_unimplemented() {
    let server = Server::start();
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static("/no.such.v1.Service/Call"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}

/// A value of the default maximum size goes in and comes back over the socket: the server
/// accepts requests above tonic's 4 MiB default, and the Get response fits daprd's limit.
#[tokio::test]
async fn a_value_of_the_default_maximum_size_round_trips() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[]).await.unwrap();
    let max = roost_component::config::InstanceConfig::default().max_value_size;
    let value: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    daprd.set(set("big", value.clone())).await.unwrap();
    assert_eq!(
        daprd.get("big").await.unwrap().data.as_slice(),
        value.as_slice()
    );
    let err = daprd
        .set(set("bigger", vec![0u8; max + 1]))
        .await
        .unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
}

/// Encryption at rest through the socket: no plaintext in the file, the key never on disk,
/// a wrong key refused at Init, rotation through Init, and a clear refusal after a component
/// restart (the key is not stored, so daprd's Init is needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_instances_over_the_socket() {
    const KEY_1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const KEY_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    let mut server = Server::start();
    let mut daprd = server.daprd("vault").await;
    daprd
        .init(&[("encryptionKey", KEY_1), ("compression", "zstd")])
        .await
        .unwrap();
    let marker = "TOP-SECRET-MARKER-4711";
    daprd
        .set(set("app||s", format!(r#"{{"m":"{marker}"}}"#).into_bytes()))
        .await
        .unwrap();
    assert!(
        daprd
            .get("app||s")
            .await
            .unwrap()
            .data
            .starts_with(br#"{"m":"TOP"#)
    );

    let dir = server
        .data_dir()
        .join("instances")
        .join(encode_name("vault"));
    let saved = std::fs::read_to_string(dir.join("instance.json")).unwrap();
    assert!(
        !saved.contains(KEY_1) && !saved.contains(&KEY_1[..16]),
        "{saved}"
    );
    assert!(saved.contains("encryptionKeyId"), "{saved}");

    // A wrong key fails Init with a clear error; the right one and a rotation work.
    let err = daprd.init(&[("encryptionKey", KEY_2)]).await.unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
    assert!(
        err.message().contains("not this keyspace's key"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(KEY_2));
    daprd
        .init(&[("encryptionKey", KEY_2), ("previousEncryptionKey", KEY_1)])
        .await
        .unwrap();
    assert!(
        daprd
            .get("app||s")
            .await
            .unwrap()
            .data
            .ends_with(b"4711\"}")
    );

    assert!(server.terminate());
    let raw = std::fs::read(dir.join("data.roost")).unwrap();
    assert!(!raw.windows(marker.len()).any(|w| w == marker.as_bytes()));

    // Restarted without Init: refused clearly, then served again after daprd's Init.
    server.spawn(&[]).unwrap();
    let mut daprd = server.daprd("vault").await;
    let err = daprd.get("app||s").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("encrypted"), "{}", err.message());
    daprd
        .init(&[("encryptionKey", KEY_2), ("previousEncryptionKey", KEY_1)])
        .await
        .unwrap();
    assert!(
        daprd
            .get("app||s")
            .await
            .unwrap()
            .data
            .ends_with(b"4711\"}")
    );
}

/// Secrets never reach the logs, even at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_logs() {
    const KEY: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
    let mut server = Server::start();
    server.kill();
    server.spawn_with_log_level(&[], "debug").unwrap();
    let mut daprd = server.daprd("vault").await;
    daprd.init(&[("encryptionKey", KEY)]).await.unwrap();
    daprd.set(set("k", b"v".to_vec())).await.unwrap();
    let err = daprd
        .init(&[("encryptionKey", &KEY[..62])])
        .await
        .unwrap_err();
    assert!(!err.message().contains(&KEY[..16]));
    drop(daprd);
    let logs = server.terminate_and_collect_logs();
    assert!(
        logs.contains("instance initialised"),
        "debug logs were captured: {logs}"
    );
    for fragment in [KEY, &KEY[..16], &KEY[16..32], &KEY[48..]] {
        assert!(!logs.contains(fragment), "key material in the logs: {logs}");
    }
}

/// Hostile or malformed inputs over the socket: each gets a clear client error (HTTP 400 for
/// the app) and the server keeps serving.
#[tokio::test]
async fn bad_inputs_over_the_socket_are_clear_errors() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[("someUnknownOption", "x")]).await.unwrap();
    let long_key = "k".repeat(5000);
    let err = daprd.set(set(&long_key, b"1".to_vec())).await.unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
    assert!(err.message().contains("key"), "{}", err.message());
    let err = daprd.get(&long_key).await.unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
    let deep = (0..100).fold(r#"{"EQ":{"a":1}}"#.to_string(), |inner, _| {
        format!(r#"[{inner},{{"EQ":{{"b":2}}}}]"#)
    });
    let request = roost_component::proto::QueryRequest {
        query: Some(roost_component::proto::Query {
            filter: [(
                "AND".to_string(),
                prost_types::Any {
                    type_url: String::new(),
                    value: deep.into_bytes(),
                },
            )]
            .into(),
            ..Default::default()
        }),
        metadata: Default::default(),
    };
    let err = daprd
        .query
        .query(roost_component::doctor::client::for_instance(
            "statestore",
            request,
        ))
        .await
        .unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
    for (key, value) in [
        ("maxValueSize", "lots"),
        ("cacheSizeMB", "-5"),
        ("cleanupInterval", "often"),
    ] {
        let err = daprd.init(&[(key, value)]).await.unwrap_err();
        assert_kit_error(&err, Code::InvalidArgument, "400");
        assert!(err.message().contains(key), "{}", err.message());
    }
    // Still serving.
    daprd.set(set("ok", b"1".to_vec())).await.unwrap();
    assert_eq!(daprd.get("ok").await.unwrap().data.as_slice(), b"1");
}

/// A server whose parent goes away (its stdin pipe closes) stops by itself, cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_when_the_process_that_started_it_goes_away() {
    let mut server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    daprd.init(&[]).await.unwrap();
    daprd.set(set("k", b"v".to_vec())).await.unwrap();
    assert!(
        server.close_stdin_and_wait(),
        "clean exit when stdin closes"
    );
    assert!(!path_exists(&server.socket_path()), "socket removed");
}

/// A value limit no request could ever carry is refused at Init; one that fits is accepted
/// and reachable.
#[tokio::test]
async fn value_limits_must_fit_the_request_limit() {
    let server = Server::start();
    let mut daprd = server.daprd("statestore").await;
    let err = daprd
        .init(&[("maxValueSize", &(20 * 1024 * 1024).to_string())])
        .await
        .unwrap_err();
    assert_kit_error(&err, Code::InvalidArgument, "400");
    assert!(
        err.message().contains("--max-request-bytes"),
        "{}",
        err.message()
    );
    let fits = 16 * 1024 * 1024 - 64 * 1024;
    daprd
        .init(&[("maxValueSize", &fits.to_string())])
        .await
        .unwrap();
    daprd.set(set("big", vec![1u8; fits])).await.unwrap();
    assert_eq!(daprd.bulk_get(&["nothing"]).await.unwrap().len(), 1);
}

/// Names of the process's transport threads, sorted.
fn transport_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("roost-grpc-"))
        .collect();
    names.sort();
    names
}

/// Connections are dealt to `--transport-threads` threads and each is served; a call that
/// cannot finish (a snapshot stream its client stopped reading) holds shutdown back for the
/// grace period only, and nothing acknowledged is lost.
#[tokio::test]
async fn connections_share_the_transport_threads_and_a_stalled_call_ends_at_the_grace() {
    let mut server = Server::start();
    server.kill();
    server
        .spawn(&["--transport-threads", "2", "--shutdown-grace-seconds", "1"])
        .unwrap();
    assert_eq!(
        transport_threads(server.pid()),
        ["roost-grpc-0", "roost-grpc-1"]
    );
    let mut daprds = Vec::new();
    for i in 0..3 {
        let mut daprd = server.daprd(&format!("store-{i}")).await;
        daprd.init(&[]).await.unwrap();
        daprds.push(daprd);
    }
    for (i, daprd) in daprds.iter_mut().enumerate() {
        daprd.set(set("k", vec![i as u8; 10])).await.unwrap();
    }
    for (i, daprd) in daprds.iter_mut().enumerate() {
        assert_eq!(daprd.get("k").await.unwrap().data.as_slice(), [i as u8; 10]);
    }

    // 12 MiB of incompressible values: more than HTTP/2 flow control lets the server send
    // to a client that does not read.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let items = (0..96)
        .map(|i| {
            let value: Vec<u8> = (0..128 * 1024)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            set(&format!("big-{i}"), value)
        })
        .collect();
    daprds[0].bulk_set(items).await.unwrap();
    let mut request = tonic::Request::new(roost_component::proto::admin::SnapshotRequest {});
    request
        .metadata_mut()
        .insert("x-component-instance", "store-0".parse().unwrap());
    let mut stream =
        roost_component::proto::admin::admin_client::AdminClient::new(server.channel().await)
            .max_decoding_message_size(8 << 20)
            .snapshot(request)
            .await
            .unwrap()
            .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.total_bytes > 12 << 20, "{}", first.total_bytes);

    let stopping = std::time::Instant::now();
    assert!(
        server.terminate(),
        "clean exit on SIGTERM despite the stalled call"
    );
    let took = stopping.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900),
        "shutdown waited for the stalled call's grace period: {took:?}"
    );
    drop(stream);
    server.spawn(&[]).unwrap();
    let mut daprd = server.daprd("store-0").await;
    assert_eq!(daprd.get("k").await.unwrap().data.as_slice(), [0u8; 10]);
    assert_eq!(
        daprd.get("big-95").await.unwrap().data.len(),
        128 * 1024,
        "acknowledged writes survive the forced close"
    );
}
