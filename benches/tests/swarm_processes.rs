//! A swarm of three processes (`roost-blackboard`'s `swarm` example: the band pipeline, an AND
//! gate and a batching stage) on one store, killed with SIGKILL at random moments and
//! restarted, must still produce exactly one output per input and stage, with the right
//! lineage, one consumption record per input and agent, and every copy in exactly one batch.
//! Run on:
//! - `roost serve` shared over its socket, each process with a `roost-sidecar` of its own;
//! - an unmodified daprd per process, on Roost (pluggable), Redis and PostgreSQL (v2).
//!
//! Needs daprd (`tests/dapr/build.sh`), redis-server and PostgreSQL for the daprd runs; where
//! one is missing it says it skipped that backend (under `CI=true` that fails it). The seed of
//! the kills is printed (`SWARM_SEED` replays it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use roost_bench::harness::servers::{PostgresServer, RedisPersistence, RedisServer, RoostServer};
use roost_bench::harness::swarm::{Worker, built_example, count, daprd_fronts, roost_yaml, skip};
use roost_bench::harness::targets::daprd::component_yaml;
use roost_blackboard::{Artifact, BlackboardStore, DaprStore};
use roost_sidecar::daprd::{DaprdProcess, find_daprd};
use roost_sidecar::{InProcess, SidecarConfig};

const WORKERS: usize = 3;
const INPUTS: u32 = 240;

fn swarm_example() -> Option<PathBuf> {
    built_example("swarm")
}

/// A small xorshift: the kills are random but replayable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Starts the workers on `endpoints`, publishes the inputs from a fourth member, kills and
/// restarts workers at random until the last stage is complete, then checks the board.
fn chaos(backend: &str, endpoints: Vec<String>) {
    let exe = swarm_example().expect("cargo test builds the swarm example");
    let seed = std::env::var("SWARM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("{backend}: SWARM_SEED={seed}");
    let mut rng = Rng(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(DaprStore::connect(&endpoints[0], "statestore"))
        .unwrap();
    const WORKER: [&str; 6] = [
        "--work-ms",
        "40",
        "--lease-ms",
        "2000",
        "--report-ms",
        "300",
    ];
    let mut slots: Vec<Worker> = endpoints
        .iter()
        .enumerate()
        .map(|(i, endpoint)| Worker::new(&format!("w{i}"), endpoint))
        .collect();
    for slot in slots.iter_mut() {
        slot.spawn(&exe, &WORKER);
    }
    let started = Instant::now();
    // The publisher: a member that runs no agent, so every run is a worker's.
    let mut publisher = Worker::new("publisher", &endpoints[0]);
    let inputs = INPUTS.to_string();
    publisher.spawn(
        &exe,
        &[
            "--publish",
            &inputs,
            "--prefix",
            "in",
            "--every-ms",
            "5",
            "--no-agents",
        ],
    );
    // Kills: one or two workers at a time, 4 rounds, at random moments while the work flows.
    let mut kills = 0;
    for _round in 0..4 {
        std::thread::sleep(Duration::from_millis(400 + rng.below(1200)));
        // Only while work remains, so each kill lands on a busy process.
        if count(&store, &rt, "MarketingCopy") * 10 >= INPUTS as usize * 8 {
            break;
        }
        let victims = 1 + rng.below(2) as usize;
        let first = rng.below(WORKERS as u64) as usize;
        let chosen: Vec<usize> = (0..victims).map(|k| (first + k) % WORKERS).collect();
        for &i in &chosen {
            slots[i].kill();
            kills += 1;
        }
        std::thread::sleep(Duration::from_millis(100 + rng.below(700)));
        for &i in &chosen {
            slots[i].spawn(&exe, &WORKER);
        }
    }
    // The publisher is not killed: it must finish publishing (an external publish is not a
    // run: its retry is the caller's). Wait for the last stage.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let done = count(&store, &rt, "Review").min(in_playlists(&store, &rt));
        if done >= INPUTS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: {done} of {INPUTS} inputs through after 240 s; workers said:\n{}",
            slots
                .iter()
                .map(|s| s.last_report().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let elapsed = started.elapsed();
    assert!(kills > 0, "{backend}: the work ended before the first kill");
    // Longer than a lease: a run lost to a kill that would commit twice has had its chance.
    std::thread::sleep(Duration::from_millis(2500));
    let mut reports: Vec<serde_json::Value> = slots.iter_mut().flat_map(|s| s.finish()).collect();
    reports.extend(publisher.finish());
    eprintln!(
        "{backend}: {INPUTS} inputs × 5 stages in {:.1} s with {kills} kills; the last report \
         of each process:",
        elapsed.as_secs_f64()
    );
    for r in &reports {
        eprintln!("  {r}");
    }
    check_board(backend, &store, &rt);
    let taken_over: u64 = reports
        .iter()
        .filter_map(|r| r["stats"]["taken_over"].as_u64())
        .sum();
    assert!(
        taken_over > 0,
        "{backend}: no claim of a killed process was taken over: {reports:?}"
    );
}

/// One artifact per stage and input, the right producer and lineage, one consumption record
/// per input and agent; one review per input (the AND gate) and every copy in exactly one
/// playlist (the batches).
fn check_board(backend: &str, store: &DaprStore, rt: &tokio::runtime::Runtime) {
    let stages: [(&str, &str, &[&str]); 5] = [
        ("BandConcept", "external", &["talent_scout"]),
        ("BandLineup", "talent_scout", &["music_producer"]),
        ("Album", "music_producer", &["critic", "marketing_guru"]),
        ("MarketingCopy", "marketing_guru", &["critic", "curator"]),
        ("Review", "critic", &[]),
    ];
    let mut by_correlation: HashMap<String, HashMap<&str, Artifact>> = HashMap::new();
    for (type_name, producer, consumers) in stages {
        let artifacts = rt.block_on(store.list_by_type(type_name)).unwrap();
        assert_eq!(
            artifacts.len(),
            INPUTS as usize,
            "{backend}: {} {type_name} artifacts",
            artifacts.len()
        );
        for artifact in artifacts {
            assert_eq!(artifact.produced_by, producer, "{backend}: {artifact:?}");
            let records = rt.block_on(store.consumptions(&artifact.id)).unwrap();
            let mut by: Vec<&str> = records.iter().map(|r| r.consumer.as_str()).collect();
            by.sort();
            assert_eq!(
                by, consumers,
                "{backend}: consumption records of {type_name} {}",
                artifact.id
            );
            let correlation = artifact.correlation_id.clone().expect("a correlation id");
            let previous = by_correlation
                .entry(correlation.clone())
                .or_default()
                .insert(type_name, artifact);
            assert!(
                previous.is_none(),
                "{backend}: two {type_name} for {correlation}"
            );
        }
    }
    assert_eq!(by_correlation.len(), INPUTS as usize, "{backend}");
    let mut taglines = Vec::new();
    for (correlation, chain) in &by_correlation {
        let field = |t: &str, f: &str| chain[t].payload[f].as_str().unwrap_or_default().to_string();
        let vibe = field("BandConcept", "vibe");
        let genre = field("BandConcept", "genre");
        let band = field("BandLineup", "band_name");
        assert!(
            band.to_lowercase() == format!("the {vibe} {genre}"),
            "{backend}: {correlation}: lineup {band:?} is not from {vibe} {genre}"
        );
        let title = field("Album", "title");
        assert_eq!(
            title,
            format!("{} NIGHTS", band.to_uppercase()),
            "{backend}"
        );
        let tagline = field("MarketingCopy", "billboard_tagline");
        assert_eq!(
            tagline,
            format!("{title}: out now"),
            "{backend}: {correlation}"
        );
        assert_eq!(
            field("Review", "album_title"),
            title,
            "{backend}: {correlation}"
        );
        assert_eq!(
            field("Review", "tagline"),
            tagline,
            "{backend}: {correlation}"
        );
        taglines.push(tagline);
    }
    let mut in_playlists: Vec<String> = Vec::new();
    for playlist in rt.block_on(store.list_by_type("Playlist")).unwrap() {
        let listed = playlist.payload["taglines"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !listed.is_empty() && listed.len() <= 10,
            "{backend}: {playlist:?}"
        );
        in_playlists.extend(listed.iter().filter_map(|t| t.as_str().map(String::from)));
    }
    taglines.sort();
    in_playlists.sort();
    assert_eq!(
        in_playlists, taglines,
        "{backend}: every copy in exactly one playlist"
    );
}

/// Copies placed in playlists so far.
fn in_playlists(store: &DaprStore, rt: &tokio::runtime::Runtime) -> usize {
    rt.block_on(store.list_by_type("Playlist"))
        .map(|ps| {
            ps.iter()
                .map(|p| p.payload["taglines"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_killed_swarm_on_roost_serve_loses_nothing_and_repeats_nothing() {
    if swarm_example().is_none() {
        return skip("the swarm example is not built (cargo test --workspace builds it)");
    }
    let roost = RoostServer::start(Some(Path::new(env!("CARGO_BIN_EXE_roost-bench"))))
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let resources = dir.path().join("resources");
    std::fs::create_dir_all(&resources).unwrap();
    std::fs::write(resources.join("statestore.yaml"), roost_yaml()).unwrap();
    let sidecars: Vec<InProcess> = (0..WORKERS)
        .map(|_| {
            InProcess::start(SidecarConfig::on_loopback(
                "band",
                &resources,
                roost.socket_folder(),
            ))
            .unwrap()
        })
        .collect();
    chaos(
        "roost serve + roost-sidecar",
        sidecars
            .iter()
            .map(|s| format!("http://{}", s.ready.grpc_addr))
            .collect(),
    );
}

#[test]
fn a_killed_swarm_through_daprd_loses_nothing_and_repeats_nothing() {
    let Some(daprd) = find_daprd() else {
        return skip("no daprd (run `bash tests/dapr/build.sh`)");
    };
    if swarm_example().is_none() {
        return skip("the swarm example is not built (cargo test --workspace builds it)");
    }
    let endpoints = |fronts: &[DaprdProcess]| fronts.iter().map(|f| f.grpc_endpoint()).collect();
    let no_sockets = tempfile::tempdir().unwrap();

    let roost = RoostServer::start(Some(Path::new(env!("CARGO_BIN_EXE_roost-bench"))))
        .unwrap_or_else(|e| panic!("{e}"));
    let dirs = tempfile::tempdir().unwrap();
    let fronts = daprd_fronts(
        &daprd,
        roost.socket_folder(),
        &roost_yaml(),
        dirs.path(),
        WORKERS,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    chaos("daprd → state.roost", endpoints(&fronts));
    drop(fronts);

    match RedisServer::start(RedisPersistence::Off) {
        Ok(redis) => {
            let yaml = component_yaml(
                "state.redis",
                "v1",
                &[
                    ("redisHost", &redis.addr.to_string()),
                    ("redisPassword", ""),
                ],
            );
            let dirs = tempfile::tempdir().unwrap();
            let fronts = daprd_fronts(&daprd, no_sockets.path(), &yaml, dirs.path(), WORKERS)
                .unwrap_or_else(|e| panic!("{e}"));
            chaos("daprd → state.redis", endpoints(&fronts));
        }
        Err(e) => skip(&format!("redis: {e}")),
    }

    match PostgresServer::start() {
        Ok(postgres) => {
            let yaml = component_yaml(
                "state.postgresql",
                "v2",
                &[("connectionString", &postgres.connection_string())],
            );
            let dirs = tempfile::tempdir().unwrap();
            let fronts = daprd_fronts(&daprd, no_sockets.path(), &yaml, dirs.path(), WORKERS)
                .unwrap_or_else(|e| panic!("{e}"));
            chaos("daprd → state.postgresql v2", endpoints(&fronts));
        }
        Err(e) => skip(&format!("postgresql: {e}")),
    }
}
