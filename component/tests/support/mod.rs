//! A daprd-like harness: starts the real `roost` binary on a socket in a temporary folder and
//! talks to it over that socket the way daprd does (reflection v1alpha, `Init` with metadata
//! and `x-component-instance`, `Features`, then the operations).
#![allow(dead_code)]

pub mod fronts;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use roost_component::doctor::client;
use roost_component::proto::{
    self, queriable_state_store_client::QueriableStateStoreClient,
    state_store_client::StateStoreClient,
    transactional_state_store_client::TransactionalStateStoreClient,
    transactional_store_multi_max_size_client::TransactionalStoreMultiMaxSizeClient,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A `roost serve` process with its own socket folder and data dir. Killed when dropped.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub name: String,
    child: Option<Child>,
}

// Servers run with `--stop-when-stdin-closes` and a piped stdin held by the `Child`: if the
// test process dies without running `Drop`, the pipe closes and the server stops by itself.

impl Server {
    pub fn start() -> Server {
        Server::start_named("roost")
    }

    pub fn start_named(name: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server {
            dir,
            name: name.to_string(),
            child: None,
        };
        server.spawn(&[]).expect("roost serve did not become ready");
        server
    }

    pub fn socket_folder(&self) -> PathBuf {
        self.dir.path().join("sockets")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.socket_folder().join(format!("{}.sock", self.name))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts `roost serve` and waits (at most 30 s) for its ready line. On failure returns
    /// what it printed on stderr.
    pub fn spawn(&mut self, extra: &[&str]) -> Result<(), String> {
        self.spawn_with_log_level(extra, "warn")
    }

    /// Like [`Server::spawn`], with `ROOST_LOG` set to `level`.
    pub fn spawn_with_log_level(&mut self, extra: &[&str], level: &str) -> Result<(), String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roost"))
            .arg("serve")
            .arg("--socket-folder")
            .arg(self.socket_folder())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--name")
            .arg(&self.name)
            .arg("--stop-when-stdin-closes")
            .args(extra)
            .env("ROOST_LOG", level)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(line)) if line.starts_with("roost ready:") => {
                self.child = Some(child);
                Ok(())
            }
            _ => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                Err(String::from_utf8_lossy(&output.stderr).into_owned())
            }
        }
    }

    /// Closes the server's stdin, as the death of the process that started it would, and
    /// waits (at most 30 s) for it to exit; returns whether it exited cleanly.
    pub fn close_stdin_and_wait(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        drop(child.stdin.take());
        wait_for_exit(child)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait (at most 30 s) for a clean exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(child) = self.child.take() else {
            return false;
        };
        unsafe_sigterm(child.id());
        wait_for_exit(child)
    }

    /// SIGTERM, then everything the process wrote on stderr (its logs).
    pub fn terminate_and_collect_logs(&mut self) -> String {
        let child = self.child.take().expect("running");
        unsafe_sigterm(child.id());
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub async fn channel(&self) -> Channel {
        client::connect(&self.socket_path(), Duration::from_secs(5))
            .await
            .expect("connect to the component socket")
    }

    pub async fn daprd(&self, instance: &str) -> Daprd {
        Daprd::new(self.channel().await, instance)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits at most 30 s for `child` to exit (killing it after that); whether it exited cleanly.
fn wait_for_exit(mut child: Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM with the `kill` command (no libc binding needed).
fn unsafe_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs the `roost` binary with `args` (logs at warn) and returns whether it succeeded, its
/// stdout and its stderr.
pub fn roost_cli(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_roost"))
        .args(args)
        .env("ROOST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What daprd does for one component instance: every call carries `x-component-instance`.
#[derive(Clone)]
pub struct Daprd {
    pub instance: String,
    pub state: StateStoreClient<Channel>,
    pub transactional: TransactionalStateStoreClient<Channel>,
    pub multi_max_size: TransactionalStoreMultiMaxSizeClient<Channel>,
    pub query: QueriableStateStoreClient<Channel>,
}

pub fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Daprd {
    pub fn new(channel: Channel, instance: &str) -> Daprd {
        Daprd {
            instance: instance.to_string(),
            state: StateStoreClient::new(channel.clone()),
            transactional: TransactionalStateStoreClient::new(channel.clone()),
            multi_max_size: TransactionalStoreMultiMaxSizeClient::new(channel.clone()),
            query: QueriableStateStoreClient::new(channel),
        }
    }

    fn req<T>(&self, message: T) -> tonic::Request<T> {
        client::for_instance(&self.instance, message)
    }

    pub async fn init(&mut self, properties: &[(&str, &str)]) -> Result<(), Status> {
        let request = self.req(proto::InitRequest {
            metadata: Some(proto::MetadataRequest {
                properties: metadata(properties),
            }),
        });
        self.state.init(request).await.map(|_| ())
    }

    pub async fn features(&mut self) -> Vec<String> {
        let request = self.req(proto::FeaturesRequest {});
        self.state
            .features(request)
            .await
            .unwrap()
            .into_inner()
            .features
    }

    pub async fn get(&mut self, key: &str) -> Result<proto::GetResponse, Status> {
        let request = self.req(proto::GetRequest {
            key: key.to_string(),
            ..Default::default()
        });
        self.state.get(request).await.map(|r| r.into_inner())
    }

    pub async fn set(&mut self, request: proto::SetRequest) -> Result<(), Status> {
        let request = self.req(request);
        self.state.set(request).await.map(|_| ())
    }

    pub async fn delete(&mut self, request: proto::DeleteRequest) -> Result<(), Status> {
        let request = self.req(request);
        self.state.delete(request).await.map(|_| ())
    }

    pub async fn bulk_get(&mut self, keys: &[&str]) -> Result<Vec<proto::BulkStateItem>, Status> {
        let request = self.req(proto::BulkGetRequest {
            items: keys
                .iter()
                .map(|k| proto::GetRequest {
                    key: k.to_string(),
                    ..Default::default()
                })
                .collect(),
            options: Some(proto::BulkGetRequestOptions { parallelism: 0 }),
        });
        self.state
            .bulk_get(request)
            .await
            .map(|r| r.into_inner().items)
    }

    pub async fn bulk_set(&mut self, items: Vec<proto::SetRequest>) -> Result<(), Status> {
        let request = self.req(proto::BulkSetRequest {
            items,
            options: Some(proto::BulkSetRequestOptions { parallelism: 0 }),
        });
        self.state.bulk_set(request).await.map(|_| ())
    }

    pub async fn bulk_delete(&mut self, items: Vec<proto::DeleteRequest>) -> Result<(), Status> {
        let request = self.req(proto::BulkDeleteRequest {
            items,
            options: Some(proto::BulkDeleteRequestOptions { parallelism: 0 }),
        });
        self.state.bulk_delete(request).await.map(|_| ())
    }

    pub async fn transact(&mut self, operations: Vec<Op>) -> Result<(), Status> {
        let request = self.req(proto::TransactionalStateRequest {
            operations: operations.into_iter().map(Op::into_proto).collect(),
            metadata: metadata(&[("partitionKey", "myPartition")]),
        });
        self.transactional.transact(request).await.map(|_| ())
    }

    pub async fn multi_max_size(&mut self) -> Result<i64, Status> {
        let request = self.req(proto::MultiMaxSizeRequest {});
        self.multi_max_size
            .multi_max_size(request)
            .await
            .map(|r| r.into_inner().max_size)
    }

    /// The etag of a live key (panics if the key is missing).
    pub async fn etag(&mut self, key: &str) -> String {
        self.get(key).await.unwrap().etag.expect("an etag").value
    }
}

/// A transaction operation, as daprd builds it.
pub enum Op {
    Set(proto::SetRequest),
    Delete(proto::DeleteRequest),
}

impl Op {
    fn into_proto(self) -> proto::TransactionalStateOperation {
        use proto::transactional_state_operation::Request;
        proto::TransactionalStateOperation {
            request: Some(match self {
                Op::Set(set) => Request::Set(set),
                Op::Delete(delete) => Request::Delete(delete),
            }),
        }
    }
}

/// A set request as daprd sends it: options always present.
pub fn set(key: &str, value: impl Into<Vec<u8>>) -> proto::SetRequest {
    proto::SetRequest {
        key: key.to_string(),
        value: value.into().into(),
        options: Some(proto::StateOptions::default()),
        ..Default::default()
    }
}

pub fn delete(key: &str) -> proto::DeleteRequest {
    proto::DeleteRequest {
        key: key.to_string(),
        options: Some(proto::StateOptions::default()),
        ..Default::default()
    }
}

pub fn with_etag(mut request: proto::SetRequest, etag: &str) -> proto::SetRequest {
    request.etag = Some(proto::Etag {
        value: etag.to_string(),
    });
    request
}

pub fn delete_with_etag(mut request: proto::DeleteRequest, etag: &str) -> proto::DeleteRequest {
    request.etag = Some(proto::Etag {
        value: etag.to_string(),
    });
    request
}

pub fn first_write(mut request: proto::SetRequest) -> proto::SetRequest {
    request.options = Some(proto::StateOptions {
        concurrency: proto::state_options::StateConcurrency::ConcurrencyFirstWrite as i32,
        consistency: proto::state_options::StateConsistency::ConsistencyStrong as i32,
    });
    request
}

pub fn with_metadata(mut request: proto::SetRequest, pairs: &[(&str, &str)]) -> proto::SetRequest {
    request.metadata.extend(metadata(pairs));
    request
}

/// The `google.rpc.Status` daprd decodes from `grpc-status-details-bin`.
pub fn details(status: &Status) -> tonic_types::pb::Status {
    tonic_types::pb::Status::decode(status.details()).expect("grpc-status-details-bin decodes")
}

/// Asserts daprd's ETag error shape: the code, exactly one `google.rpc.BadRequest` detail with
/// exactly one `FieldViolation{field: "etag"}`, and the embedded code equal to the outer one.
pub fn assert_etag_error(status: &Status, code: Code) {
    assert_eq!(status.code(), code, "{status:?}");
    let inner = details(status);
    assert_eq!(inner.code, code as i32, "embedded code");
    assert_eq!(inner.message, status.message(), "embedded message");
    assert_eq!(inner.details.len(), 1, "exactly one detail");
    assert_eq!(
        inner.details[0].type_url,
        "type.googleapis.com/google.rpc.BadRequest"
    );
    let bad = tonic_types::pb::BadRequest::decode(inner.details[0].value.as_slice()).unwrap();
    assert_eq!(bad.field_violations.len(), 1, "exactly one violation");
    assert_eq!(bad.field_violations[0].field, "etag");
    assert!(!bad.field_violations[0].description.is_empty());
}

/// Asserts a Dapr kit error: the code and exactly one `google.rpc.ErrorInfo` with
/// `kit_error`, `http_code` and `tag`.
pub fn assert_kit_error(status: &Status, code: Code, http_code: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let inner = details(status);
    assert_eq!(inner.code, code as i32);
    assert_eq!(inner.details.len(), 1);
    assert_eq!(
        inner.details[0].type_url,
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    let info = tonic_types::pb::ErrorInfo::decode(inner.details[0].value.as_slice()).unwrap();
    assert_eq!(
        info.metadata.get("kit_error").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        info.metadata.get("http_code").map(String::as_str),
        Some(http_code)
    );
    assert!(info.metadata.get("tag").is_some_and(|t| !t.is_empty()));
}

pub fn path_exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` of `roost serve --metrics-addr`: the whole HTTP response, checked to be a
/// 200 with the Prometheus text format.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("text/plain; version=0.0.4"), "{response}");
    response
}
