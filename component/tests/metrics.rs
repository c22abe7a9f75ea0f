//! `roost serve --metrics-addr`: the Prometheus endpoint counts the RPCs daprd makes, by
//! outcome, and shows each open instance's writer and keyspace.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::{Server, free_port, scrape, set, with_etag};
use tonic::Code;

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_operations_outcomes_commits_and_records() {
    let mut server = Server::start();
    server.kill();
    let addr = format!("127.0.0.1:{}", free_port());
    server.spawn(&["--metrics-addr", &addr]).unwrap();

    let mut daprd = server.daprd("orders").await;
    daprd.init(&[]).await.unwrap();
    for i in 0..3 {
        daprd
            .set(set(&format!("k{i}"), b"v".to_vec()))
            .await
            .unwrap();
    }
    daprd.get("k0").await.unwrap();
    let stale = with_etag(set("k0", b"w".to_vec()), "999999");
    assert_eq!(
        daprd.set(stale).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    let text = scrape(&addr);
    assert_eq!(
        sample(
            &text,
            r#"roost_requests_total{operation="StateStore/Set",code="Ok"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"roost_requests_total{operation="StateStore/Set",code="FailedPrecondition"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"roost_request_duration_seconds_count{operation="StateStore/Get"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&text, r#"roost_keyspace_records{instance="orders"}"#),
        3.0
    );
    let commits = sample(&text, r#"roost_commits_total{instance="orders"}"#);
    assert!((1.0..=3.0).contains(&commits), "{commits}");
    assert_eq!(
        sample(
            &text,
            r#"roost_commit_duration_seconds_count{instance="orders"}"#
        ),
        commits
    );
    assert_eq!(
        sample(
            &text,
            r#"roost_commit_batch_size_bucket{instance="orders",le="+Inf"}"#
        ),
        commits
    );
    assert!(sample(&text, r#"roost_keyspace_file_bytes{instance="orders"}"#) > 0.0);
    // Exported per instance; whether the idle checkpoint has run yet depends on timing.
    let checkpoints = sample(
        &text,
        r#"roost_checkpoint_duration_seconds_count{instance="orders"}"#,
    );
    assert!((0.0..=commits).contains(&checkpoints), "{checkpoints}");
    assert_eq!(
        sample(&text, r#"roost_expired_swept_total{instance="orders"}"#),
        0.0
    );

    // Only `/metrics` is served, and only to reads.
    for (request, status) in [
        ("GET /other HTTP/1.1", "HTTP/1.1 404"),
        ("POST /metrics HTTP/1.1", "HTTP/1.1 405"),
    ] {
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "{request}\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with(status), "{request}: {response}");
    }
}
