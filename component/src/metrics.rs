//! Prometheus metrics of `roost serve` (`--metrics-addr`): the Dapr RPCs by operation and
//! outcome with latency histograms (counted by the socket's transport, `crate::transport`), and per open
//! instance the writer's group-commit batch sizes and commit (fsync) times, expired records
//! swept, keyspace sizes and file bytes. Text exposition format 0.0.4 at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use roost_engine::metrics::{Histogram, HistogramSnapshot};

use crate::instances::{DATA_FILE, InstanceRegistry};

/// The outcomes a call is counted under: the 17 gRPC codes, then a transport error.
const OUTCOMES: usize = 18;
const TRANSPORT_ERROR: usize = 17;

fn outcome_name(index: usize) -> String {
    if index == TRANSPORT_ERROR {
        "TransportError".to_string()
    } else {
        format!("{:?}", tonic::Code::from_i32(index as i32))
    }
}

/// One operation's counters: calls by outcome, and latency.
#[derive(Debug)]
pub struct Operation {
    /// `StateStore/Get`, as the exposition labels it.
    name: String,
    outcomes: [std::sync::atomic::AtomicU64; OUTCOMES],
    latency: Histogram,
}

impl Operation {
    pub(crate) fn record(&self, outcome: usize, elapsed: std::time::Duration) {
        self.outcomes[outcome].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.latency.observe_duration(elapsed);
    }
}

/// Requests seen by the socket server. A call looks its operation up by its path, without
/// allocating; only the first call of a path adds an entry. Paths that name the same
/// operation (reflection v1alpha and v1) share one.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    operations: std::sync::RwLock<Operations>,
    /// The counters of the Dapr unary methods, by method: found once, then without a lookup.
    unary: [std::sync::OnceLock<Arc<Operation>>; crate::routes::Unary::COUNT],
}

#[derive(Debug, Default)]
struct Operations {
    /// The call's path (`/dapr.proto.components.v1.StateStore/Get`) → its counters.
    by_path: BTreeMap<String, Arc<Operation>>,
    /// The same counters by label (`StateStore/Get`).
    by_name: BTreeMap<String, Arc<Operation>>,
}

impl RequestMetrics {
    /// The counters of the Dapr unary method `method`, served at `path`.
    pub fn unary(&self, method: crate::routes::Unary, path: &str) -> Arc<Operation> {
        Arc::clone(self.unary[method as usize].get_or_init(|| self.operation(path)))
    }

    /// The counters of the operation at `path`.
    pub fn operation(&self, path: &str) -> Arc<Operation> {
        if let Some(found) = self
            .operations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_path
            .get(path)
        {
            return Arc::clone(found);
        }
        let mut operations = self.operations.write().unwrap_or_else(|p| p.into_inner());
        let name = operation(path);
        let counters = Arc::clone(operations.by_name.entry(name.clone()).or_insert_with(|| {
            Arc::new(Operation {
                name,
                outcomes: Default::default(),
                latency: Histogram::latency(),
            })
        }));
        operations
            .by_path
            .insert(path.to_string(), Arc::clone(&counters));
        counters
    }

    /// Every operation's counters, by label.
    fn snapshot(&self) -> Vec<(String, Arc<Operation>)> {
        self.operations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .values()
            .map(|op| (op.name.clone(), Arc::clone(op)))
            .collect()
    }
}

/// `StateStore/Get` from `/dapr.proto.components.v1.StateStore/Get`.
fn operation(path: &str) -> String {
    let mut parts = path.rsplit('/');
    let method = parts.next().unwrap_or_default();
    let service = parts.next().unwrap_or_default();
    let service = service.rsplit('.').next().unwrap_or_default();
    format!("{service}/{method}")
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, count) in h.bounds.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// The exposition text: request metrics, then one block per open instance.
pub async fn render(requests: &RequestMetrics, registry: &InstanceRegistry) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "roost_requests_total",
        "counter",
        "Dapr component RPCs handled, by operation and gRPC outcome.",
    );
    let operations = requests.snapshot();
    for (op, counters) in &operations {
        // By outcome name, as the exposition has always listed them.
        let mut outcomes: Vec<(String, u64)> = counters
            .outcomes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    outcome_name(i),
                    n.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        outcomes.sort();
        for (code, n) in outcomes {
            let _ = writeln!(
                out,
                "roost_requests_total{{operation=\"{}\",code=\"{}\"}} {n}",
                escape(op),
                escape(&code)
            );
        }
    }
    header(
        &mut out,
        "roost_request_duration_seconds",
        "histogram",
        "Time to answer a Dapr component RPC.",
    );
    for (op, counters) in &operations {
        let labels = format!("operation=\"{}\"", escape(op));
        histogram(
            &mut out,
            "roost_request_duration_seconds",
            &labels,
            &counters.latency.snapshot(),
        );
    }

    struct InstanceSample {
        labels: String,
        stats: roost_engine::Stats,
        writer: roost_engine::metrics::WriterMetrics,
        keyspace: Option<roost_engine::KeyspaceStats>,
        file_bytes: u64,
    }
    let mut samples = Vec::new();
    for name in registry.open_instances() {
        let Ok(instance) = registry.get(&name).await else {
            continue;
        };
        let db = instance.db.blocking().clone();
        let dir = registry.instance_dir(&name).ok();
        let sample = tokio::task::spawn_blocking(move || {
            let file_bytes = dir
                .map(|dir| {
                    roost_engine::database_files(&dir.join(DATA_FILE))
                        .iter()
                        .filter_map(|f| std::fs::metadata(f).ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0);
            (
                db.stats(),
                db.writer_metrics(),
                db.keyspace_stats().ok(),
                file_bytes,
            )
        })
        .await;
        if let Ok((stats, writer, keyspace, file_bytes)) = sample {
            samples.push(InstanceSample {
                labels: format!("instance=\"{}\"", escape(&name)),
                stats,
                writer,
                keyspace,
                file_bytes,
            });
        }
    }
    type Series<T> = (&'static str, &'static str, fn(&InstanceSample) -> T);
    let counters: [Series<u64>; 4] = [
        (
            "roost_commits_total",
            "Write transactions committed (group commits; one fsync each when durable).",
            |s| s.stats.batches,
        ),
        (
            "roost_write_requests_total",
            "Write requests received by the writer (a bulk or transaction counts once).",
            |s| s.stats.requests,
        ),
        (
            "roost_expired_swept_total",
            "Expired records deleted by the sweeper.",
            |s| s.stats.swept,
        ),
        (
            "roost_main_file_written_back_bytes_total",
            "Bytes of the data file whose write-back was started in paced chunks ahead of a checkpoint's fdatasync.",
            |s| s.writer.written_back_bytes,
        ),
    ];
    for (name, help, value) in counters {
        header(&mut out, name, "counter", help);
        for s in &samples {
            let _ = writeln!(out, "{name}{{{}}} {}", s.labels, value(s));
        }
    }
    let gauges: [Series<Option<u64>>; 6] = [
        (
            "roost_keyspace_records",
            "Records stored, live or expired but not yet swept.",
            |s| s.keyspace.as_ref().map(|k| k.records),
        ),
        (
            "roost_keyspace_expired_pending",
            "Records expired and waiting for the sweeper.",
            |s| s.keyspace.as_ref().map(|k| k.expired_pending),
        ),
        (
            "roost_keyspace_index_entries",
            "Entries in the secondary indexes.",
            |s| s.keyspace.as_ref().map(|k| k.index_entries),
        ),
        (
            "roost_keyspace_file_bytes",
            "Bytes on disk: the data file and its write-ahead log.",
            |s| Some(s.file_bytes),
        ),
        (
            "roost_unapplied_bytes",
            "Memory held by acknowledged writes not yet applied to the data file (logged; catch-up applies them).",
            |s| Some(s.writer.unapplied_bytes),
        ),
        (
            "roost_unapplied_limit_bytes",
            "The bound on that memory; writers wait for catch-up when it is reached.",
            |s| Some(s.writer.unapplied_limit_bytes),
        ),
    ];
    for (name, help, value) in gauges {
        header(&mut out, name, "gauge", help);
        for s in &samples {
            if let Some(v) = value(s) {
                let _ = writeln!(out, "{name}{{{}}} {v}", s.labels);
            }
        }
    }
    header(
        &mut out,
        "roost_commit_batch_size",
        "histogram",
        "Requests group-committed per write transaction.",
    );
    for s in &samples {
        histogram(
            &mut out,
            "roost_commit_batch_size",
            &s.labels,
            &s.writer.batch_size,
        );
    }
    header(
        &mut out,
        "roost_commit_duration_seconds",
        "histogram",
        "Time to make one write transaction durable (log append and fdatasync, or the durable redb commit).",
    );
    for s in &samples {
        histogram(
            &mut out,
            "roost_commit_duration_seconds",
            &s.labels,
            &s.writer.commit_seconds,
        );
    }
    header(
        &mut out,
        "roost_checkpoint_duration_seconds",
        "histogram",
        "Time of each checkpoint (durable commit of the data file; with the write-ahead log, writes go on meanwhile).",
    );
    for s in &samples {
        histogram(
            &mut out,
            "roost_checkpoint_duration_seconds",
            &s.labels,
            &s.writer.checkpoint_seconds,
        );
    }
    header(
        &mut out,
        "roost_catchup_apply_duration_seconds",
        "histogram",
        "Work of each catch-up step (logged batches applied to the data file in one commit without fsync): time spent applying them as they arrived, plus the commit.",
    );
    for s in &samples {
        histogram(
            &mut out,
            "roost_catchup_apply_duration_seconds",
            &s.labels,
            &s.writer.apply_seconds,
        );
    }
    header(
        &mut out,
        "roost_unapplied_wait_seconds",
        "histogram",
        "How long a write batch waited for room among the unapplied writes (back-pressure).",
    );
    for s in &samples {
        histogram(
            &mut out,
            "roost_unapplied_wait_seconds",
            &s.labels,
            &s.writer.room_wait_seconds,
        );
    }
    header(
        &mut out,
        "roost_unapplied_hold_back_seconds",
        "histogram",
        "The delay of each write batch held back while the unapplied writes were over half their bound (back-pressure).",
    );
    for s in &samples {
        histogram(
            &mut out,
            "roost_unapplied_hold_back_seconds",
            &s.labels,
            &s.writer.hold_back_seconds,
        );
    }
    out
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes (HTTP/1.1; any other path
/// is 404, any other method 405).
pub async fn serve(
    listener: tokio::net::TcpListener,
    requests: Arc<RequestMetrics>,
    registry: Arc<InstanceRegistry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a metrics connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (requests, registry) = (Arc::clone(&requests), Arc::clone(&registry));
        tokio::spawn(async move {
            let answer = hyper::service::service_fn(move |request: http::Request<_>| {
                let (requests, registry) = (Arc::clone(&requests), Arc::clone(&registry));
                async move {
                    Ok::<_, std::convert::Infallible>(answer(&request, &requests, &registry).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), answer);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "metrics connection ended");
            }
        });
    }
}

/// The answer to one metrics request.
async fn answer<B>(
    request: &http::Request<B>,
    requests: &RequestMetrics,
    registry: &InstanceRegistry,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, content_type, body) = if request.uri().path() != "/metrics" {
        (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        )
    } else if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        (
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".to_string(),
        )
    } else {
        (
            http::StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render(requests, registry).await,
        )
    };
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::{RequestMetrics, TRANSPORT_ERROR, operation, outcome_name};

    #[test]
    fn paths_naming_one_operation_share_its_counters() {
        let metrics = RequestMetrics::default();
        let alpha = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
        let v1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        let get = "/dapr.proto.components.v1.StateStore/Get";
        let elapsed = std::time::Duration::from_micros(5);
        metrics.operation(alpha).record(0, elapsed);
        metrics.operation(v1).record(0, elapsed);
        metrics.operation(get).record(5, elapsed);
        metrics.operation(get).record(0, elapsed);
        let snapshot = metrics.snapshot();
        let names: Vec<&str> = snapshot.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["ServerReflection/ServerReflectionInfo", "StateStore/Get"]
        );
        let count = |i: usize, outcome: usize| {
            snapshot[i].1.outcomes[outcome].load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(count(0, 0), 2);
        assert_eq!((count(1, 0), count(1, 5)), (1, 1));
        assert_eq!(snapshot[1].1.latency.snapshot().count, 2);
        assert_eq!(outcome_name(5), "NotFound");
        assert_eq!(outcome_name(TRANSPORT_ERROR), "TransportError");
    }

    #[test]
    fn operations_are_service_and_method() {
        assert_eq!(
            operation("/dapr.proto.components.v1.StateStore/Get"),
            "StateStore/Get"
        );
        assert_eq!(
            operation("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            "ServerReflection/ServerReflectionInfo"
        );
    }
}
