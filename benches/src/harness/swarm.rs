//! Swarms of `swarm` example processes (the band pipeline, `roost-blackboard`) on one store:
//! the worker processes, the stores in front of them, and `roost-bench swarm`, which measures
//! pipeline throughput, publish-to-trigger delay and the polling cost at 1, 2 and 4 processes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roost_blackboard::{BlackboardStore, DaprStore};
use roost_sidecar::daprd::{DaprdOptions, DaprdProcess};
use roost_sidecar::{InProcess, SidecarConfig};

use super::HarnessError;
use super::servers::{PostgresServer, RedisPersistence, RedisServer, RoostServer};
use super::targets::daprd::component_yaml;

/// An example of the workspace as `cargo test` builds it, next to the running test binary
/// (`target/<profile>/examples/<name>`).
pub fn built_example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}

/// A test that cannot run here says so and passes, except under `CI=true`, where it fails.
pub fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run this test: {why}"
    );
    eprintln!("skipped: {why}");
}

/// One process slot: its sidecar endpoint and the `swarm` process running there now.
pub struct Worker {
    pub member: String,
    pub endpoint: String,
    child: Option<Child>,
    /// Every line its incarnations printed.
    out: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    pub fn new(member: &str, endpoint: &str) -> Worker {
        Worker {
            member: member.into(),
            endpoint: endpoint.into(),
            child: None,
            out: Arc::default(),
        }
    }

    /// Starts an incarnation (`--member`, `--dapr-store statestore` and `extra`).
    pub fn spawn(&mut self, exe: &Path, extra: &[&str]) {
        let mut child = Command::new(exe)
            .args(["--member", &self.member, "--dapr-store", "statestore"])
            .args(extra)
            .env("DAPR_GRPC_ENDPOINT", &self.endpoint)
            .env_remove("DAPR_API_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the swarm example runs");
        let stdout = child.stdout.take().expect("stdout is piped");
        let out = Arc::clone(&self.out);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().expect("output lock").push(line);
            }
        });
        self.child = Some(child);
    }

    /// Waits (at most 60 s) until the current incarnation follows the swarm.
    pub fn wait_ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let out = self.out.lock().expect("output lock");
            let readies = out.iter().filter(|l| l.starts_with("ready")).count();
            drop(out);
            if readies > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The latest report of the current incarnation.
    pub fn last_report(&self) -> Option<serde_json::Value> {
        let out = self.out.lock().expect("output lock");
        out.iter().rev().find_map(|l| serde_json::from_str(l).ok())
    }

    /// Closes its stdin (it stops by itself) and returns the last report of each of its
    /// incarnations (each starts with a `ready` line).
    pub fn finish(&mut self) -> Vec<serde_json::Value> {
        if let Some(mut child) = self.child.take() {
            let _ = child.stdin.take().map(|mut s| s.flush());
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(Duration::from_millis(50));
        let out = self.out.lock().expect("output lock");
        let mut reports = Vec::new();
        let mut last = None;
        for line in out.iter() {
            if line.starts_with("ready") {
                reports.extend(last.take());
            } else if let Ok(report) = serde_json::from_str::<serde_json::Value>(line) {
                last = Some(report);
            }
        }
        reports.extend(last);
        reports
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Roost component the swarm uses (indexes on the fields the blackboard queries).
pub fn roost_yaml() -> String {
    component_yaml(
        "state.roost",
        "v1",
        &[(
            "indexedFields",
            "type, produced_by, correlation_id, artifact_id",
        )],
    )
}

/// `n` daprd processes (app id `band`) with `yaml` as their `statestore`.
pub fn daprd_fronts(
    daprd: &Path,
    sockets: &Path,
    yaml: &str,
    dirs: &Path,
    n: usize,
) -> Result<Vec<DaprdProcess>, HarnessError> {
    (0..n)
        .map(|i| {
            let resources = dirs.join(format!("resources{i}"));
            std::fs::create_dir_all(&resources)?;
            std::fs::write(resources.join("statestore.yaml"), yaml)?;
            DaprdProcess::start(&DaprdOptions {
                binary: daprd.to_path_buf(),
                app_id: "band".into(),
                resources_path: resources,
                socket_folder: sockets.to_path_buf(),
                work_dir: dirs.join(format!("daprd{i}")),
                lifetime_seconds: 1800,
            })
            .map_err(|e| HarnessError(e.to_string()))
        })
        .collect()
}

/// How many artifacts of `type_name` the board holds.
pub fn count(store: &DaprStore, rt: &tokio::runtime::Runtime, type_name: &str) -> usize {
    rt.block_on(store.list_by_type(type_name))
        .map(|a| a.len())
        .unwrap_or(0)
}

/// The stores `roost-bench swarm` runs on.
pub const STORES: [&str; 4] = [
    "roost-sidecar",
    "daprd-roost",
    "daprd-redis",
    "daprd-postgres",
];

/// What keeps one store and its sidecars alive.
pub struct Backend {
    pub endpoints: Vec<String>,
    _keep: Vec<Box<dyn std::any::Any>>,
}

/// Starts `store` with `n` sidecar endpoints in front of it.
pub fn start_backend(
    store: &str,
    n: usize,
    harness: &Path,
    daprd: Option<&Path>,
) -> Result<Backend, HarnessError> {
    let dirs = tempfile::tempdir()?;
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let need_daprd = || daprd.ok_or_else(|| HarnessError("no daprd (tests/dapr/build.sh)".into()));
    let endpoints = match store {
        "roost-sidecar" => {
            let roost = RoostServer::start(Some(harness))?;
            let resources = dirs.path().join("resources");
            std::fs::create_dir_all(&resources)?;
            std::fs::write(resources.join("statestore.yaml"), roost_yaml())?;
            let mut endpoints = Vec::new();
            for _ in 0..n {
                let sidecar = InProcess::start(SidecarConfig::on_loopback(
                    "band",
                    &resources,
                    roost.socket_folder(),
                ))
                .map_err(HarnessError)?;
                endpoints.push(format!("http://{}", sidecar.ready.grpc_addr));
                keep.push(Box::new(sidecar));
            }
            keep.push(Box::new(roost));
            endpoints
        }
        "daprd-roost" => {
            let roost = RoostServer::start(Some(harness))?;
            let fronts = daprd_fronts(
                need_daprd()?,
                roost.socket_folder(),
                &roost_yaml(),
                dirs.path(),
                n,
            )?;
            let endpoints = fronts.iter().map(|f| f.grpc_endpoint()).collect();
            keep.push(Box::new(fronts));
            keep.push(Box::new(roost));
            endpoints
        }
        "daprd-redis" => {
            let redis = RedisServer::start(RedisPersistence::Off)?;
            let yaml = component_yaml(
                "state.redis",
                "v1",
                &[
                    ("redisHost", &redis.addr.to_string()),
                    ("redisPassword", ""),
                ],
            );
            let sockets = dirs.path().join("no-sockets");
            std::fs::create_dir_all(&sockets)?;
            let fronts = daprd_fronts(need_daprd()?, &sockets, &yaml, dirs.path(), n)?;
            let endpoints = fronts.iter().map(|f| f.grpc_endpoint()).collect();
            keep.push(Box::new(fronts));
            keep.push(Box::new(redis));
            endpoints
        }
        "daprd-postgres" => {
            let postgres = PostgresServer::start()?;
            let yaml = component_yaml(
                "state.postgresql",
                "v2",
                &[("connectionString", &postgres.connection_string())],
            );
            let sockets = dirs.path().join("no-sockets");
            std::fs::create_dir_all(&sockets)?;
            let fronts = daprd_fronts(need_daprd()?, &sockets, &yaml, dirs.path(), n)?;
            let endpoints = fronts.iter().map(|f| f.grpc_endpoint()).collect();
            keep.push(Box::new(fronts));
            keep.push(Box::new(postgres));
            endpoints
        }
        other => return Err(HarnessError(format!("unknown swarm store {other:?}"))),
    };
    keep.push(Box::new(dirs));
    Ok(Backend {
        endpoints,
        _keep: keep,
    })
}

/// One measured (store, processes) pair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwarmResult {
    pub store: String,
    pub processes: usize,
    pub inputs: u32,
    /// Agent runs per second with the inputs published at once (3 per input).
    pub runs_per_s: f64,
    /// Publish-to-handler-start delay with one input every 200 ms (idle processes).
    pub trigger_p50_ms: f64,
    pub trigger_p99_ms: f64,
    /// Store reads per second of one idle process (its polling).
    pub idle_reads_per_s: f64,
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// Measures one (store, processes) pair: throughput with `inputs` published at once, then,
/// with fresh processes, the idle polling cost and the trigger delay of 30 spaced inputs.
pub fn measure(
    store: &str,
    processes: usize,
    inputs: u32,
    worker: &Path,
    harness: &Path,
    daprd: Option<&Path>,
) -> Result<SwarmResult, HarnessError> {
    let backend = start_backend(store, processes + 1, harness, daprd)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let board = rt
        .block_on(DaprStore::connect(&backend.endpoints[0], "statestore"))
        .map_err(|e| HarnessError(e.to_string()))?;
    let phase = |tag: &str, extra: &[&str]| -> Result<Vec<Worker>, HarnessError> {
        let mut workers: Vec<Worker> = (0..processes)
            .map(|i| Worker::new(&format!("{tag}{i}"), &backend.endpoints[i + 1]))
            .collect();
        for w in workers.iter_mut() {
            w.spawn(worker, extra);
        }
        for w in &workers {
            if !w.wait_ready() {
                return Err(HarnessError(format!("{} did not start", w.member)));
            }
        }
        Ok(workers)
    };
    let wait_for = |target: usize, limit: Duration| -> Result<(), HarnessError> {
        let deadline = Instant::now() + limit;
        while count(&board, &rt, "MarketingCopy") < target {
            if Instant::now() > deadline {
                return Err(HarnessError(format!("{store}: pipeline stalled")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    // Throughput.
    let mut workers = phase(
        "t",
        &["--work-ms", "0", "--report-ms", "200", "--band-only"],
    )?;
    let mut publisher = Worker::new("tpub", &backend.endpoints[0]);
    let started = Instant::now();
    publisher.spawn(
        worker,
        &[
            "--publish",
            &inputs.to_string(),
            "--prefix",
            "t",
            "--no-agents",
        ],
    );
    wait_for(inputs as usize, Duration::from_secs(600))?;
    let runs_per_s = 3.0 * inputs as f64 / started.elapsed().as_secs_f64();
    publisher.finish();
    for w in workers.iter_mut() {
        w.finish();
    }
    // Idle cost, then trigger delays.
    let mut workers = phase(
        "l",
        &[
            "--work-ms",
            "0",
            "--report-ms",
            "100",
            "--raw-delays",
            "--band-only",
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let reads = |ws: &[Worker]| -> u64 {
        ws.iter()
            .filter_map(|w| w.last_report())
            .filter_map(|r| r["stats"]["reads"].as_u64())
            .sum()
    };
    let before = reads(&workers);
    let idle = Duration::from_secs(3);
    std::thread::sleep(idle);
    let idle_reads_per_s =
        (reads(&workers) - before) as f64 / idle.as_secs_f64() / processes as f64;
    let mut publisher = Worker::new("lpub", &backend.endpoints[0]);
    publisher.spawn(
        worker,
        &[
            "--publish",
            "30",
            "--prefix",
            "l",
            "--every-ms",
            "200",
            "--no-agents",
        ],
    );
    wait_for(inputs as usize + 30, Duration::from_secs(120))?;
    std::thread::sleep(Duration::from_millis(300));
    publisher.finish();
    let mut delays: Vec<i64> = workers
        .iter_mut()
        .flat_map(|w| w.finish())
        .filter_map(|r| r["delays_us"].as_array().cloned())
        .flatten()
        .filter_map(|d| d.as_i64())
        .collect();
    delays.sort_unstable();
    Ok(SwarmResult {
        store: store.into(),
        processes,
        inputs,
        runs_per_s,
        trigger_p50_ms: percentile(&delays, 0.5),
        trigger_p99_ms: percentile(&delays, 0.99),
        idle_reads_per_s,
    })
}

/// The default place of the `swarm` example, next to the harness binary's build.
pub fn default_worker(harness: &Path) -> PathBuf {
    harness
        .parent()
        .map(|dir| dir.join("examples").join("swarm"))
        .unwrap_or_else(|| PathBuf::from("target/release/examples/swarm"))
}
