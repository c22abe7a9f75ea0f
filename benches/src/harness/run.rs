//! Running the workloads: servers and keyspaces per target, the preload, closed-loop workers
//! (each with its own client, connected before the clock starts), and the latency summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tonic::transport::Channel;

use roost_sidecar::daprd::{DaprdOptions, DaprdProcess, find_daprd};

use super::servers::{PostgresServer, RedisPersistence, RedisServer, RoostServer};
use super::targets::{
    Client, OpError,
    daprd::{self as daprd_target, DaprdClient},
    postgres::PostgresClient,
    redis::RedisClient,
    roost,
    sqlite::SqliteClient,
};
use super::{HarnessError, Settings, Target, Workload};
use crate::Rng;

/// Documents sharing one value of the query field, so each EQ matches this many rows.
const DOCUMENTS_PER_VALUE: usize = 10;
/// Keys per bulk get and sets per transaction.
const BULK_KEYS: usize = 100;
const TXN_OPS: usize = 10;
/// Distinct 1 KiB values the workers rotate through.
const VALUE_POOL: usize = 16;

/// The measured outcome of one (target, workload, concurrency) run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub target: Target,
    pub tier: &'static str,
    pub durability: &'static str,
    pub workload: Workload,
    pub concurrency: usize,
    pub value_size: usize,
    /// Operations completed (conflicts included: they made a full round trip).
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// The slowest call: pauses too rare for the p99 (a checkpoint's) show here.
    pub max_us: f64,
    pub mean_us: f64,
    /// Etag or first-write conditions that did not hold.
    pub conflicts: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// CPU time the hypervisor took from this VM during the run, in % of all CPU time
    /// (`steal` in `/proc/stat`): high values make every number slower and noisier.
    pub steal_pct: f64,
    /// CPU time daprd spent per operation (daprd targets), µs.
    pub daprd_cpu_us_per_op: Option<f64>,
    /// CPU time the store's server process(es) spent per operation (daprd targets with an
    /// external store), µs.
    pub store_cpu_us_per_op: Option<f64>,
}

/// Total and steal jiffies from the `cpu` line of `/proc/stat`.
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields.iter().sum(), fields.get(7).copied().unwrap_or(0))
}

/// Why a (target, workload) pair was not run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub target: Target,
    pub workload: Workload,
    pub reason: String,
}

/// The servers shared by targets, started on first use and stopped when the run ends.
#[derive(Default)]
pub struct Servers {
    postgres: Option<PostgresServer>,
    roost: Option<RoostServer>,
    baseline: Option<RoostServer>,
    /// The harness binary of another build that serves `roost-baseline`.
    baseline_server: Option<PathBuf>,
    redis: Vec<RedisServer>,
    /// The `roost serve` behind `daprd-roost` (its own, so its keyspace is fresh).
    daprd_roost: Vec<RoostServer>,
    daprds: Vec<DaprdProcess>,
    dirs: Vec<TempDir>,
}

/// How workers of one target get their clients.
pub enum Connector {
    /// daprd's gRPC API; `daprd` and `store` are the processes whose CPU time is reported.
    Daprd {
        endpoint: String,
        daprd: Option<u32>,
        store: Option<u32>,
        /// Whether daprd has the query workloads' components.
        queries: bool,
    },
    Redis(SocketAddr),
    Postgres {
        connection_string: String,
        prefix: String,
        synchronous_commit: bool,
    },
    Sqlite(PathBuf),
    Socket {
        channel: Channel,
        instance: &'static str,
    },
    Embedded(Arc<roost::Embedded>),
}

impl Connector {
    pub async fn client(&self, worker: usize) -> Result<Box<dyn Client>, OpError> {
        Ok(match self {
            Connector::Daprd {
                endpoint, queries, ..
            } => Box::new(DaprdClient::connect(endpoint, *queries).await?),
            Connector::Redis(addr) => Box::new(RedisClient::connect(*addr).await?),
            Connector::Postgres {
                connection_string,
                prefix,
                synchronous_commit,
            } => Box::new(
                PostgresClient::connect(connection_string, prefix, *synchronous_commit).await?,
            ),
            Connector::Sqlite(path) => Box::new(SqliteClient::connect(path, worker as u64 + 1)?),
            Connector::Socket { channel, instance } => {
                Box::new(roost::SocketClient::new(channel.clone(), instance))
            }
            Connector::Embedded(db) => Box::new(roost::EmbeddedClient(Arc::clone(db))),
        })
    }

    /// The processes (daprd, the store's server) whose CPU time per operation is reported.
    fn processes(&self) -> (Option<u32>, Option<u32>) {
        match self {
            Connector::Daprd { daprd, store, .. } => (*daprd, *store),
            _ => (None, None),
        }
    }

    pub async fn close(&self) {
        if let Connector::Embedded(db) = self {
            db.close().await;
        }
    }
}

impl Servers {
    pub fn new(baseline_server: Option<PathBuf>) -> Servers {
        Servers {
            baseline_server,
            ..Servers::default()
        }
    }

    /// Starts what `target` needs and returns its connector, with an empty keyspace.
    pub async fn prepare(&mut self, target: Target) -> Result<Connector, HarnessError> {
        if target.is_daprd() {
            return self.prepare_daprd(target).await;
        }
        match target {
            Target::Redis | Target::RedisNopersist => {
                let persistence = if target == Target::Redis {
                    RedisPersistence::AofAlways
                } else {
                    RedisPersistence::Off
                };
                let (addr, _) = self.start_redis(persistence).await?;
                Ok(Connector::Redis(addr))
            }
            Target::Postgres | Target::PostgresAsync => {
                let connection_string = self.postgres().await?.connection_string();
                // One table per target, as the component's `tablePrefix` allows.
                let prefix = if target == Target::Postgres {
                    "sync_"
                } else {
                    "async_"
                };
                super::targets::postgres::create_schema(&connection_string, prefix).await?;
                Ok(Connector::Postgres {
                    connection_string,
                    prefix: prefix.into(),
                    synchronous_commit: target == Target::Postgres,
                })
            }
            Target::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("roost-bench-sqlite")
                    .tempdir()?;
                let path = super::targets::sqlite::database_path(dir.path());
                super::targets::sqlite::create_schema(&path)?;
                self.dirs.push(dir);
                Ok(Connector::Sqlite(path))
            }
            Target::Roost | Target::RoostEventual => {
                if self.roost.is_none() {
                    let server = tokio::task::spawn_blocking(|| RoostServer::start(None))
                        .await
                        .map_err(|e| HarnessError(e.to_string()))??;
                    self.roost = Some(server);
                }
                let socket = self.roost.as_ref().expect("started above").socket.clone();
                let (instance, durability) = if target == Target::Roost {
                    ("immediate", "immediate")
                } else {
                    ("eventual", "eventual")
                };
                let channel =
                    roost::connect_and_init(&socket, instance, &[("durability", durability)])
                        .await?;
                if target == Target::Roost {
                    let field = super::targets::QUERY_FIELD;
                    roost::connect_and_init(
                        &socket,
                        roost::QUERY_INDEXED_INSTANCE,
                        &[("indexedFields", field)],
                    )
                    .await?;
                    roost::connect_and_init(&socket, roost::QUERY_SCAN_INSTANCE, &[]).await?;
                }
                Ok(Connector::Socket { channel, instance })
            }
            Target::RoostBaseline => {
                let exe = self.baseline_server.clone().ok_or_else(|| {
                    HarnessError("roost-baseline needs --baseline-server PATH".into())
                })?;
                let server = tokio::task::spawn_blocking(move || RoostServer::start(Some(&exe)))
                    .await
                    .map_err(|e| HarnessError(e.to_string()))??;
                let channel = roost::connect_and_init(
                    &server.socket,
                    "immediate",
                    &[("durability", "immediate")],
                )
                .await?;
                self.baseline = Some(server);
                Ok(Connector::Socket {
                    channel,
                    instance: "immediate",
                })
            }
            Target::Embedded | Target::EmbeddedEventual | Target::EmbeddedNowal => {
                let dir = tempfile::Builder::new()
                    .prefix("roost-bench-embedded")
                    .tempdir()?;
                let durability = if target == Target::EmbeddedEventual {
                    roost_engine::Durability::EVENTUAL
                } else {
                    roost_engine::Durability::Immediate
                };
                let wal = target != Target::EmbeddedNowal;
                let path = dir.path().to_path_buf();
                let embedded = tokio::task::spawn_blocking(move || {
                    roost::Embedded::open(&path, durability, wal)
                })
                .await
                .map_err(|e| HarnessError(e.to_string()))??;
                self.dirs.push(dir);
                Ok(Connector::Embedded(Arc::new(embedded)))
            }
            Target::DaprdRoost
            | Target::DaprdRoostBaseline
            | Target::DaprdRedis
            | Target::DaprdRedisNopersist
            | Target::DaprdPostgres
            | Target::DaprdSqlite
            | Target::DaprdMemory => unreachable!("prepared by prepare_daprd"),
        }
    }
}

impl Servers {
    /// Starts one more redis-server; returns its address and process id.
    async fn start_redis(
        &mut self,
        persistence: RedisPersistence,
    ) -> Result<(SocketAddr, u32), HarnessError> {
        let server = tokio::task::spawn_blocking(move || RedisServer::start(persistence))
            .await
            .map_err(|e| HarnessError(e.to_string()))??;
        let started = (server.addr, server.pid());
        self.redis.push(server);
        Ok(started)
    }

    /// The run's PostgreSQL server, started on first use.
    async fn postgres(&mut self) -> Result<&PostgresServer, HarnessError> {
        if self.postgres.is_none() {
            let server = tokio::task::spawn_blocking(PostgresServer::start)
                .await
                .map_err(|e| HarnessError(e.to_string()))??;
            self.postgres = Some(server);
        }
        Ok(self.postgres.as_ref().expect("started above"))
    }

    /// Starts the store of a daprd target, then one daprd (loopback only) with a component
    /// YAML for it.
    async fn prepare_daprd(&mut self, target: Target) -> Result<Connector, HarnessError> {
        let binary = find_daprd().ok_or_else(|| {
            HarnessError(format!(
                "{}: no daprd (run `bash tests/dapr/build.sh`, or set ROOST_DAPRD)",
                target.name()
            ))
        })?;
        let dir = tempfile::Builder::new()
            .prefix("roost-bench-daprd")
            .tempdir()?;
        let mut socket_folder = dir.path().join("sockets");
        std::fs::create_dir_all(&socket_folder)?;
        let (yaml, store) = match target {
            Target::DaprdRoost | Target::DaprdRoostBaseline => {
                let exe = if target == Target::DaprdRoostBaseline {
                    Some(self.baseline_server.clone().ok_or_else(|| {
                        HarnessError("daprd-roost-baseline needs --baseline-server PATH".into())
                    })?)
                } else {
                    None
                };
                let server =
                    tokio::task::spawn_blocking(move || RoostServer::start(exe.as_deref()))
                        .await
                        .map_err(|e| HarnessError(e.to_string()))??;
                socket_folder = server.socket_folder().to_path_buf();
                let pid = server.pid();
                self.daprd_roost.push(server);
                // The main keyspace, and the query workloads' documents with and without a
                // secondary index, each a component of its own as a Dapr user would declare it.
                let yaml = [
                    daprd_target::component_yaml(
                        "state.roost",
                        "v1",
                        &[("durability", "immediate")],
                    ),
                    daprd_target::named_component_yaml(
                        daprd_target::QUERY_INDEXED_STORE,
                        "state.roost",
                        "v1",
                        &[("indexedFields", super::targets::QUERY_FIELD)],
                    ),
                    daprd_target::named_component_yaml(
                        daprd_target::QUERY_SCAN_STORE,
                        "state.roost",
                        "v1",
                        &[],
                    ),
                ]
                .join("---\n");
                (yaml, Some(pid))
            }
            Target::DaprdRedis | Target::DaprdRedisNopersist => {
                let persistence = if target == Target::DaprdRedis {
                    RedisPersistence::AofAlways
                } else {
                    RedisPersistence::Off
                };
                let (addr, pid) = self.start_redis(persistence).await?;
                let host = addr.to_string();
                let yaml = daprd_target::component_yaml(
                    "state.redis",
                    "v1",
                    &[("redisHost", &host), ("redisPassword", "")],
                );
                (yaml, Some(pid))
            }
            Target::DaprdPostgres => {
                let server = self.postgres().await?;
                let yaml = daprd_target::component_yaml(
                    "state.postgresql",
                    "v2",
                    &[
                        ("connectionString", &server.connection_string()),
                        ("tablePrefix", "daprd_"),
                    ],
                );
                (yaml, server.pid())
            }
            Target::DaprdSqlite => {
                let path = dir.path().join("state.db");
                let yaml = daprd_target::component_yaml(
                    "state.sqlite",
                    "v1",
                    &[("connectionString", &path.display().to_string())],
                );
                (yaml, None)
            }
            Target::DaprdMemory => (
                daprd_target::component_yaml("state.in-memory", "v1", &[]),
                None,
            ),
            _ => unreachable!("not a daprd target"),
        };
        let resources = dir.path().join("resources");
        std::fs::create_dir_all(&resources)?;
        std::fs::write(resources.join("statestore.yaml"), yaml)?;
        let options = DaprdOptions {
            binary,
            app_id: daprd_target::APP_ID.into(),
            resources_path: resources,
            socket_folder,
            work_dir: dir.path().join("daprd"),
            lifetime_seconds: 6 * 3600,
        };
        let daprd = tokio::task::spawn_blocking(move || DaprdProcess::start(&options))
            .await
            .map_err(|e| HarnessError(e.to_string()))?
            .map_err(|e| HarnessError(format!("{}: {e}", target.name())))?;
        let connector = Connector::Daprd {
            endpoint: daprd.grpc_endpoint(),
            daprd: daprd.daprd_pid(),
            store,
            queries: matches!(target, Target::DaprdRoost | Target::DaprdRoostBaseline),
        };
        self.daprds.push(daprd);
        self.dirs.push(dir);
        Ok(connector)
    }
}

/// CPU time (user + system) of `pid` and every process below it, in microseconds.
fn process_tree_cpu_us(pid: u32) -> u64 {
    let ticks_per_second = 100; // USER_HZ on Linux
    let mut total = 0u64;
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The fields after the command's closing parenthesis; utime and stime are the
            // 14th and 15th of the whole line.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks: u64 = fields
                    .get(11..13)
                    .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
                    .unwrap_or(0);
                total += ticks * 1_000_000 / ticks_per_second;
            }
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                pending.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    total
}

/// The key of preloaded record `i`, with daprd's `<appId>||` prefix.
fn key(i: usize) -> String {
    crate::key(i as u64)
}

fn document_key(i: usize) -> String {
    format!("bench||doc-{i:08}")
}

/// The value of the query field in document `i`.
fn field_value(i: usize) -> String {
    format!("city-{:06}", i / DOCUMENTS_PER_VALUE)
}

/// A JSON document of about `size` bytes whose query field is `field_value(i)`.
fn document(i: usize, size: usize) -> Vec<u8> {
    let body = crate::json_document(i as u64, size.saturating_sub(40).max(200));
    let mut doc = format!(
        "{{\"{}\":\"{}\",",
        super::targets::QUERY_FIELD,
        field_value(i)
    )
    .into_bytes();
    doc.extend_from_slice(&body[1..]);
    doc
}

/// Writes the preloaded keyspace (and the documents when a query workload will run).
pub async fn preload(
    connector: &Connector,
    settings: &Settings,
    with_documents: bool,
) -> Result<(), HarnessError> {
    let client = connector.client(0).await?;
    let items: Vec<(String, Vec<u8>)> = (0..settings.keys)
        .map(|i| (key(i), crate::json_value(i as u64, settings.value_size)))
        .collect();
    client.load(&items).await?;
    if with_documents {
        let docs: Vec<(String, Vec<u8>)> = (0..settings.keys)
            .map(|i| (document_key(i), document(i, settings.value_size)))
            .collect();
        client.load_documents(&docs).await?;
    }
    // A sanity check that the preload is readable the way the workers will read it.
    let probe = client.get(&key(settings.keys / 2)).await?;
    if probe.is_none() {
        return Err(HarnessError(format!(
            "preloaded key {} is missing",
            key(settings.keys / 2)
        )));
    }
    Ok(())
}

struct WorkerResult {
    latencies_ns: Vec<u64>,
    /// With a timeline ([`TIMELINE_ENV`]): when each call of `latencies_ns` ended, in ns since
    /// the run began.
    ended_ns: Vec<u64>,
    conflicts: u64,
    errors: u64,
    first_error: Option<String>,
}

/// One worker's closed loop until `deadline`.
#[allow(clippy::too_many_arguments)]
async fn worker(
    client: Box<dyn Client>,
    workload: Workload,
    keys: usize,
    values: Arc<Vec<Vec<u8>>>,
    worker_id: usize,
    run_id: u64,
    began: Instant,
    deadline: Instant,
    timeline: bool,
) -> WorkerResult {
    let mut rng = Rng::new(run_id.wrapping_mul(1_000_003) + worker_id as u64 * 7919 + 1);
    let mut result = WorkerResult {
        latencies_ns: Vec::with_capacity(64 * 1024),
        ended_ns: Vec::new(),
        conflicts: 0,
        errors: 0,
        first_error: None,
    };
    let documents = keys.div_ceil(DOCUMENTS_PER_VALUE);
    let mut sequence = 0u64;
    while Instant::now() < deadline {
        let value = &values[rng.below(values.len() as u64) as usize];
        let k = key(rng.below(keys as u64) as usize);
        let start = Instant::now();
        let outcome: Result<(), OpError> = match workload {
            Workload::Ping => client.ping().await,
            Workload::Get => match client.get(&k).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(OpError::Failed(format!("preloaded key {k} is missing"))),
                Err(e) => Err(e),
            },
            Workload::Set => client.set(&k, value, None, false).await,
            Workload::SetEtag => match client.get(&k).await {
                Ok(Some((_, etag))) => client.set(&k, value, Some(&etag), false).await,
                Ok(None) => Err(OpError::Failed(format!("preloaded key {k} is missing"))),
                Err(e) => Err(e),
            },
            Workload::Mixed => {
                if rng.below(10) == 0 {
                    client.set(&k, value, None, false).await
                } else {
                    client.get(&k).await.map(|_| ())
                }
            }
            Workload::BulkGet => {
                let batch: Vec<String> = (0..BULK_KEYS)
                    .map(|_| key(rng.below(keys as u64) as usize))
                    .collect();
                match client.bulk_get(&batch).await {
                    Ok(0) => Err(OpError::Failed("bulk get found no key".into())),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Workload::Txn => {
                let mut picked: Vec<usize> = (0..TXN_OPS)
                    .map(|_| rng.below(keys as u64) as usize)
                    .collect();
                // Sorted and distinct, so row-locking stores cannot deadlock between workers.
                picked.sort_unstable();
                picked.dedup();
                let items: Vec<(String, Vec<u8>)> = picked
                    .into_iter()
                    .map(|i| (key(i), value.clone()))
                    .collect();
                client.transact(&items).await
            }
            Workload::FirstWrite => {
                sequence += 1;
                let fresh = format!("bench||new-{run_id}-{worker_id}-{sequence}");
                client.set(&fresh, value, None, true).await
            }
            Workload::QueryIndexed | Workload::QueryScan => {
                let group = rng.below(documents as u64) as usize;
                let wanted = field_value(group * DOCUMENTS_PER_VALUE);
                match client
                    .query_eq(&wanted, workload == Workload::QueryIndexed)
                    .await
                {
                    Ok(0) => Err(OpError::Failed(format!("query for {wanted} found nothing"))),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        let elapsed = start.elapsed().as_nanos() as u64;
        if timeline && !matches!(outcome, Err(OpError::Failed(_))) {
            result.ended_ns.push(began.elapsed().as_nanos() as u64);
        }
        match outcome {
            Ok(()) => result.latencies_ns.push(elapsed),
            Err(OpError::Conflict) => {
                result.conflicts += 1;
                result.latencies_ns.push(elapsed);
            }
            Err(OpError::Failed(text)) => {
                result.errors += 1;
                result.first_error.get_or_insert(text);
                // A store that fails fast must not spin the loop into millions of errors.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    result
}

/// With this variable set to a number of milliseconds, every run prints to stderr, for each
/// such slice of the run, the calls that ended in it and their p50, p99 and slowest latency
/// (`timeline ...` lines), to find when in a run its tail happened.
pub const TIMELINE_ENV: &str = "ROOST_BENCH_TIMELINE";

/// Prints the per-slice lines of [`TIMELINE_ENV`]; `ended` holds (end, latency) in ns.
fn print_timeline(
    target: Target,
    workload: Workload,
    concurrency: usize,
    slice_ms: u64,
    ended: &mut [(u64, u64)],
) {
    let slice = slice_ms * 1_000_000;
    ended.sort_unstable();
    for part in ended.chunk_by(|a, b| a.0 / slice == b.0 / slice) {
        let mut lat: Vec<u64> = part.iter().map(|&(_, l)| l).collect();
        lat.sort_unstable();
        let at =
            |p: f64| lat[((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1] / 1000;
        eprintln!(
            "timeline {target:?} {workload:?} clients {concurrency} at_ms {} ops {} p50_us {} p99_us {} max_us {}",
            part[0].0 / slice * slice_ms,
            lat.len(),
            at(0.5),
            at(0.99),
            lat[lat.len() - 1] / 1000
        );
    }
}

/// Runs `workload` on `connector` with `concurrency` workers for `settings.duration`.
pub async fn measure(
    connector: &Connector,
    target: Target,
    workload: Workload,
    concurrency: usize,
    settings: &Settings,
    run_id: u64,
) -> Result<Outcome, HarnessError> {
    let values: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..VALUE_POOL)
            .map(|i| crate::json_value(run_id * 100 + i as u64, settings.value_size))
            .collect(),
    );
    let mut clients = Vec::with_capacity(concurrency);
    for id in 0..concurrency {
        clients.push(connector.client(id).await?);
    }
    let (daprd_pid, store_pid) = connector.processes();
    let process_cpu = || {
        (
            daprd_pid.map(process_tree_cpu_us),
            store_pid.map(process_tree_cpu_us),
        )
    };
    let processes_before = process_cpu();
    let cpu_before = cpu_times();
    let start = Instant::now();
    let deadline = start + settings.duration;
    let timeline: Option<u64> = std::env::var(TIMELINE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&ms| ms > 0);
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(id, client)| {
            tokio::spawn(worker(
                client,
                workload,
                settings.keys,
                Arc::clone(&values),
                id,
                run_id,
                start,
                deadline,
                timeline.is_some(),
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut ended: Vec<(u64, u64)> = Vec::new();
    let (mut conflicts, mut errors, mut first_error) = (0, 0, None);
    for handle in handles {
        let result = handle.await.map_err(|e| HarnessError(e.to_string()))?;
        latencies.extend_from_slice(&result.latencies_ns);
        ended.extend(result.ended_ns.iter().copied().zip(result.latencies_ns));
        conflicts += result.conflicts;
        errors += result.errors;
        if first_error.is_none() {
            first_error = result.first_error;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_after = cpu_times();
    let processes_after = process_cpu();
    let total = cpu_after.0.saturating_sub(cpu_before.0).max(1);
    let steal_pct = cpu_after.1.saturating_sub(cpu_before.1) as f64 * 100.0 / total as f64;
    if let Some(slice_ms) = timeline {
        print_timeline(target, workload, concurrency, slice_ms, &mut ended);
    }
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1] as f64 / 1000.0
    };
    let ops = latencies.len() as u64;
    let mean_us = if ops == 0 {
        0.0
    } else {
        latencies.iter().map(|&n| n as f64).sum::<f64>() / ops as f64 / 1000.0
    };
    let per_op = |before: Option<u64>, after: Option<u64>| -> Option<f64> {
        Some(after?.saturating_sub(before?) as f64 / ops.max(1) as f64)
    };
    Ok(Outcome {
        daprd_cpu_us_per_op: per_op(processes_before.0, processes_after.0),
        store_cpu_us_per_op: per_op(processes_before.1, processes_after.1),
        target,
        tier: target.tier(),
        durability: target.durability(),
        workload,
        concurrency,
        value_size: settings.value_size,
        ops,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        max_us: percentile(1.0),
        mean_us,
        conflicts,
        errors,
        first_error,
        steal_pct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_their_query_field_and_are_json() {
        for i in [0, 9, 10, 12_345] {
            let doc = document(i, 1024);
            let parsed: serde_json::Value = serde_json::from_slice(&doc).unwrap();
            assert_eq!(parsed["city"], serde_json::json!(field_value(i)));
            assert!((900..=1100).contains(&doc.len()), "{}", doc.len());
        }
        assert_eq!(field_value(0), field_value(9));
        assert_ne!(field_value(9), field_value(10));
    }
}
