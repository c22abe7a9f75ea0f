//! Blackboard numbers: store-level publish latency (p50/p95/p99/max, as Flock measured its
//! stores) and end-to-end artifacts/s through a three-agent pipeline, per store.
//!
//! `cargo bench -p roost-bench --bench blackboard` (ROOST_BB_PUBLISHES, ROOST_BB_INPUTS tune it).
//!
//! Stores: `memory`, `embedded` (durable per publish), and `dapr`: the `DaprStore` through a
//! real `roost-sidecar` → `roost serve` (in process, loopback gRPC + Unix socket), durable
//! per write, indexes on the pushed-down fields. With a daprd (`tests/dapr/build.sh`) also the
//! `DaprStore` through real daprd on `state.roost`, Dapr's `state.in-memory` and
//! `state.postgresql` v2 (index records: no query API), and `state.redis` with daprd's
//! `primaryEncryptionKey` (index records, no transactions).

use std::sync::Arc;
use std::time::{Duration, Instant};

use roost_bench::harness::servers::{PostgresServer, RedisPersistence, RedisServer};
use roost_bench::harness::targets::daprd::component_yaml;
use roost_blackboard::{
    Artifact, ArtifactType, BlackboardStore, DaprStore, EmbeddedStore, Filter, Flock, MemoryStore,
    Output,
};
use roost_sidecar::daprd::find_daprd;
use roost_sidecar::local::LocalDapr;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    n: u32,
    text: String,
}

macro_rules! step_type {
    ($name:ident, $wire:literal) => {
        #[derive(Debug, Clone, Serialize, Deserialize)]
        struct $name(Step);
        impl ArtifactType for $name {
            const NAME: &'static str = $wire;
        }
    };
}

step_type!(Concept, "bench.Concept");
step_type!(Lineup, "bench.Lineup");
step_type!(Album, "bench.Album");
step_type!(Copy, "bench.Copy");

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

async fn publish_latency(store: Arc<dyn BlackboardStore>, n: usize) -> Vec<Duration> {
    let text = "x".repeat(400);
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let artifact = Artifact::of(
            &Concept(Step {
                n: i as u32,
                text: text.clone(),
            }),
            "external",
        )
        .expect("valid");
        let start = Instant::now();
        store.publish(&artifact).await.expect("publish");
        latencies.push(start.elapsed());
    }
    latencies.sort();
    latencies
}

fn relay<I: ArtifactType, O: ArtifactType>(
    flock: &Flock,
    name: &str,
    wrap: fn(Step) -> O,
    unwrap: fn(I) -> Step,
) {
    flock
        .agent(name)
        .consumes::<I>()
        .publishes::<O>()
        .max_concurrency(4)
        .handler(move |ctx| async move {
            let step = unwrap(ctx.input::<I>()?);
            Ok(vec![Output::of(&wrap(Step {
                n: step.n + 1,
                text: step.text,
            }))?])
        })
        .expect("agent");
}

async fn pipeline(store: Arc<dyn BlackboardStore>, inputs: usize) -> (usize, Duration) {
    let flock = Flock::with_store(Arc::clone(&store));
    relay::<Concept, Lineup>(&flock, "talent_scout", Lineup, |c| c.0);
    relay::<Lineup, Album>(&flock, "music_producer", Album, |l| l.0);
    relay::<Album, Copy>(&flock, "marketing_guru", Copy, |a| a.0);
    let start = Instant::now();
    for i in 0..inputs {
        flock
            .publish(&Concept(Step {
                n: i as u32,
                text: "y".repeat(400),
            }))
            .await
            .expect("publish");
    }
    flock.run_until_idle().await;
    let elapsed = start.elapsed();
    let total = store
        .query(&Filter::default(), 0, 0)
        .await
        .expect("query")
        .total;
    assert_eq!(total, inputs * 4, "every input yields three outputs");
    (total, elapsed)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let publishes = env("ROOST_BB_PUBLISHES", 1000);
    let inputs = env("ROOST_BB_INPUTS", 200);
    let dir = tempfile::tempdir().expect("temp dir");
    println!("store | publishes | p50 ms | p95 ms | p99 ms | max ms | pipeline artifacts/s");
    println!("--- | ---: | ---: | ---: | ---: | ---: | ---:");
    let component = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: board}
spec:
  type: state.roost
  version: v1
  metadata:
  - {name: indexedFields, value: "type, produced_by, correlation_id, artifact_id"}
"#;
    let daprd = find_daprd();
    if daprd.is_none() {
        eprintln!("no daprd (run `bash tests/dapr/build.sh`): the daprd-* stores are left out");
    }
    // The servers behind the daprd stores, started once.
    let redis = daprd
        .as_ref()
        .and_then(|_| RedisServer::start(RedisPersistence::AofAlways).ok());
    let postgres = daprd.as_ref().and_then(|_| PostgresServer::start().ok());
    let secrets = dir.path().join("secrets.json");
    std::fs::write(
        &secrets,
        r#"{"redis-key": "000102030405060708090a0b0c0d0e0f"}"#,
    )
    .expect("secrets file");
    let mut names = vec!["memory", "embedded", "dapr"];
    if daprd.is_some() {
        names.extend(["daprd-roost", "daprd-memory"]);
        if postgres.is_some() {
            names.push("daprd-postgres");
        }
        if redis.is_some() {
            names.push("daprd-redis-encrypted");
        }
    }
    let mut stacks = Vec::new();
    let mut table = 0;
    for name in names {
        let mut make = |file: &str| -> Arc<dyn BlackboardStore> {
            table += 1;
            let yaml = match name {
                "memory" => return Arc::new(MemoryStore::new()),
                "embedded" => {
                    return Arc::new(EmbeddedStore::open(dir.path().join(file)).expect("open"));
                }
                "dapr" | "daprd-roost" => component.to_string(),
                "daprd-memory" => component_yaml("state.in-memory", "v1", &[]),
                "daprd-postgres" => component_yaml(
                    "state.postgresql",
                    "v2",
                    &[
                        (
                            "connectionString",
                            &postgres.as_ref().expect("started").connection_string(),
                        ),
                        ("tablePrefix", &format!("bb{table}_")),
                    ],
                ),
                _ => format!(
                    "{}  - name: primaryEncryptionKey\n    secretKeyRef:\n      name: redis-key\n\
                     auth:\n  secretStore: localsecrets\n---\n{}",
                    component_yaml(
                        "state.redis",
                        "v1",
                        &[
                            (
                                "redisHost",
                                &redis.as_ref().expect("started").addr.to_string()
                            ),
                            ("redisPassword", ""),
                            ("keyPrefix", &format!("bb{table}")),
                        ],
                    ),
                    component_yaml(
                        "secretstores.local.file",
                        "v1",
                        &[("secretsFile", &secrets.display().to_string())],
                    )
                    .replace("name: statestore", "name: localsecrets"),
                ),
            }
            .replace("name: statestore", "name: board");
            let stack_dir = dir.path().join(format!("{name}-{file}"));
            let stack = if name == "dapr" {
                LocalDapr::start(&stack_dir, "bench", &yaml).expect("roost serve + roost-sidecar")
            } else {
                let binary = daprd.as_ref().expect("daprd");
                LocalDapr::start_under_daprd(&stack_dir, "bench", &yaml, binary).expect("daprd")
            };
            let store = runtime
                .block_on(DaprStore::connect(&stack.grpc_endpoint, "board"))
                .expect("connect")
                .with_capabilities(|c| c.sidecar_encryption = name == "daprd-redis-encrypted");
            stacks.push(stack);
            Arc::new(store)
        };
        let latencies = runtime.block_on(publish_latency(make("publish.roost"), publishes));
        let (artifacts, elapsed) = runtime.block_on(pipeline(make("pipeline.roost"), inputs));
        println!(
            "{name} | {publishes} | {} | {} | {} | {} | {:.0}",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.95)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().expect("some")),
            artifacts as f64 / elapsed.as_secs_f64()
        );
    }
}
