//! The seed's promise, checked: the band pipeline (the `band` example of `roost-blackboard`,
//! agent code unchanged) runs through a real daprd on four Dapr state stores — Dapr's
//! in-memory store, PostgreSQL (v2), Redis with daprd's own encryption (`primaryEncryptionKey`)
//! and Roost — with only the component YAML changing. Each run must refuse artifacts that
//! break their type's limits and end with the MarketingCopy artifact and its lineage.
//!
//! It needs daprd (`tests/dapr/build.sh`), redis-server and PostgreSQL, as the benchmark
//! harness does; where one is missing it prints that it skipped that backend (under
//! `CI=true` that fails it).

use std::path::{Path, PathBuf};
use std::process::Command;

use roost_bench::harness::servers::{PostgresServer, RedisPersistence, RedisServer, RoostServer};
use roost_bench::harness::swarm::{built_example, skip};
use roost_bench::harness::targets::daprd::component_yaml;
use roost_sidecar::daprd::{DaprdOptions, DaprdProcess, find_daprd};

/// The band example as `cargo test` builds it, next to this test's binary.
fn band_example() -> Option<PathBuf> {
    built_example("band")
}

/// Runs the band example against daprd in front of `yaml`; returns its output.
fn run_band(daprd: &Path, sockets: PathBuf, yaml: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let resources = dir.path().join("resources");
    std::fs::create_dir_all(&resources).unwrap();
    std::fs::write(resources.join("statestore.yaml"), yaml).unwrap();
    let front = DaprdProcess::start(&DaprdOptions {
        binary: daprd.to_path_buf(),
        app_id: "band".into(),
        resources_path: resources,
        socket_folder: sockets,
        work_dir: dir.path().join("daprd"),
        lifetime_seconds: 600,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let band = band_example().expect("the band example is built by cargo test");
    let output = Command::new(band)
        .args(["--store", "dapr", "--dapr-store", "statestore"])
        .args(extra)
        .env("DAPR_GRPC_ENDPOINT", front.grpc_endpoint())
        .env_remove("DAPR_API_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "band failed:\n{stdout}\n{stderr}\n{}",
        front.log()
    );
    stdout
}

fn check(backend: &str, out: &str) {
    eprintln!("band on {backend}:\n{out}");
    assert!(
        out.contains("limits: every invalid artifact refused, none stored"),
        "{backend}: {out}"
    );
    assert!(out.contains(": 4 artifacts"), "{backend}: {out}");
    for lineage in [
        "BandConcept by external",
        "BandLineup by talent_scout from BandConcept",
        "Album by music_producer from BandLineup",
        "MarketingCopy by marketing_guru from Album",
    ] {
        assert!(out.contains(lineage), "{backend}: no {lineage:?} in\n{out}");
    }
}

#[test]
fn the_band_runs_through_daprd_on_four_state_stores() {
    let Some(daprd) = find_daprd() else {
        return skip("no daprd (run `bash tests/dapr/build.sh`)");
    };
    if band_example().is_none() {
        return skip("the band example is not built (cargo test --workspace builds it)");
    }
    let no_sockets = tempfile::tempdir().unwrap();

    // Dapr's in-memory store: no query API, so the blackboard keeps index records.
    let out = run_band(
        &daprd,
        no_sockets.path().to_path_buf(),
        &component_yaml("state.in-memory", "v1", &[]),
        &[],
    );
    check("state.in-memory", &out);

    // Roost, pluggable, over its socket.
    let roost = RoostServer::start(Some(std::path::Path::new(env!(
        "CARGO_BIN_EXE_roost-bench"
    ))))
    .unwrap_or_else(|e| panic!("{e}"));
    let out = run_band(
        &daprd,
        roost.socket_folder().to_path_buf(),
        &component_yaml(
            "state.roost",
            "v1",
            &[(
                "indexedFields",
                "type, produced_by, correlation_id, artifact_id",
            )],
        ),
        &[],
    );
    check("state.roost", &out);

    // Redis, with daprd encrypting every value (AES, primaryEncryptionKey).
    match RedisServer::start(RedisPersistence::Off) {
        Ok(redis) => {
            // daprd takes the key only from a secret store.
            let secrets = tempfile::tempdir().unwrap();
            let secrets_file = secrets.path().join("secrets.json");
            std::fs::write(
                &secrets_file,
                r#"{"redis-key": "000102030405060708090a0b0c0d0e0f"}"#,
            )
            .unwrap();
            let yaml = format!(
                "{}  - name: primaryEncryptionKey\n    secretKeyRef:\n      name: redis-key\n\
                 auth:\n  secretStore: localsecrets\n---\n{}",
                component_yaml(
                    "state.redis",
                    "v1",
                    &[
                        ("redisHost", &redis.addr.to_string()),
                        ("redisPassword", "")
                    ],
                ),
                component_yaml(
                    "secretstores.local.file",
                    "v1",
                    &[("secretsFile", &secrets_file.display().to_string())],
                )
                .replace("name: statestore", "name: localsecrets"),
            );
            let out = run_band(
                &daprd,
                no_sockets.path().to_path_buf(),
                &yaml,
                &["--sidecar-encryption"],
            );
            check("state.redis with primaryEncryptionKey", &out);
            // What Redis holds is daprd's ciphertext, not the artifacts' JSON.
            let cli = |args: &[&str]| {
                let output = Command::new("redis-cli")
                    .args(["-h", "127.0.0.1", "-p", &redis.addr.port().to_string()])
                    .args(args)
                    .output()
                    .expect("redis-cli comes with redis-server");
                String::from_utf8_lossy(&output.stdout).into_owned()
            };
            let keys = cli(&["--scan", "--pattern", "band||artifact:*"]);
            let keys: Vec<&str> = keys.lines().collect();
            assert!(keys.len() >= 4, "{keys:?}");
            for key in keys {
                let data = cli(&["HGET", key, "data"]);
                assert!(!data.is_empty(), "{key}");
                assert!(
                    !data.contains("type_name") && !data.contains("produced_by"),
                    "{key} is stored in clear: {data}"
                );
            }
        }
        Err(e) => skip(&format!("redis: {e}")),
    }

    // PostgreSQL v2.
    match PostgresServer::start() {
        Ok(postgres) => {
            let out = run_band(
                &daprd,
                no_sockets.path().to_path_buf(),
                &component_yaml(
                    "state.postgresql",
                    "v2",
                    &[("connectionString", &postgres.connection_string())],
                ),
                &[],
            );
            check("state.postgresql v2", &out);
        }
        Err(e) => skip(&format!("postgresql: {e}")),
    }
}
