//! The band pipeline: talent_scout → music_producer → marketing_guru, with deterministic
//! handlers (no model service), on the store of your choice:
//!
//! ```text
//! cargo run -p roost-blackboard --example band -- --store memory
//! cargo run -p roost-blackboard --example band -- --store embedded [--path band.roost]
//! cargo run -p roost-blackboard --example band -- --store dapr [--dapr-store statestore]
//! ```
//!
//! `--store dapr` talks to a Dapr sidecar's gRPC API (`DAPR_GRPC_ENDPOINT`, else
//! `127.0.0.1:$DAPR_GRPC_PORT`, default 50001): real daprd, or `roost-sidecar` in front of
//! `roost serve` (see the README). Any Dapr state store works; add `--sidecar-encryption` when
//! the component has daprd's `primaryEncryptionKey`.
//!
//! It first checks that an artifact breaking one of its type's limits is refused and nothing
//! is stored, then publishes one BandConcept, runs until idle, and prints every artifact of
//! the workflow with its lineage (which agent produced it, from which input).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use roost_blackboard::{
    Artifact, ArtifactType, BlackboardStore, DaprStore, EmbeddedStore, Filter, Flock, MemoryStore,
};
#[path = "shared/band_pipeline.rs"]
mod band_pipeline;

use band_pipeline::{Album, BandConcept, BandLineup, MarketingCopy, register};

/// One artifact of each type that breaks a limit: each publish must fail as invalid, and the
/// store must hold none of them.
async fn limits_are_enforced(
    flock: &Flock,
    store: &Arc<dyn BlackboardStore>,
) -> Result<(), String> {
    let count = || async {
        store
            .query(&Filter::default(), 0, 0)
            .await
            .map(|page| page.total)
            .map_err(|e| e.to_string())
    };
    let before = count().await?;
    let concept = BandConcept {
        genre: String::new(),
        vibe: "neon".into(),
        target_audience: "anyone".into(),
    };
    let lineup = BandLineup {
        band_name: "Short".into(),
        members: vec!["Nova".into()],
        origin_story: "too short".into(),
        signature_sound: "hum".into(),
    };
    let album = Album {
        title: "lower case".into(),
        tracks: Vec::new(),
        genre_fusion: "x".into(),
        standout_track: "none".into(),
        production_notes: "x".into(),
    };
    let copy = MarketingCopy {
        press_release: "short".into(),
        social_media_hook: "x".repeat(300),
        billboard_tagline: "y".into(),
        target_playlists: vec!["one".into()],
    };
    let refusals = [
        ("BandConcept", flock.publish(&concept).await.err()),
        ("BandLineup", flock.publish(&lineup).await.err()),
        ("Album", flock.publish(&album).await.err()),
        ("MarketingCopy", flock.publish(&copy).await.err()),
    ];
    for (name, refusal) in refusals {
        match refusal {
            Some(roost_blackboard::Error::Invalid { .. }) => {}
            other => return Err(format!("a {name} breaking its limits gave {other:?}")),
        }
    }
    let after = count().await?;
    if after != before {
        return Err(format!("{} invalid artifacts were stored", after - before));
    }
    println!("limits: every invalid artifact refused, none stored");
    Ok(())
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: band --store memory|embedded|dapr [--path FILE] [--dapr-store NAME] [--sidecar-encryption]"
    );
    ExitCode::from(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut store_kind = "memory".to_string();
    let mut path = std::env::temp_dir().join(format!("roost-band-{}.roost", std::process::id()));
    let mut dapr_store = "statestore".to_string();
    let mut sidecar_encryption = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sidecar-encryption" => sidecar_encryption = true,
            "--store" => match it.next() {
                Some(kind) => store_kind = kind.clone(),
                None => return usage(),
            },
            "--dapr-store" => match it.next() {
                Some(name) => dapr_store = name.clone(),
                None => return usage(),
            },
            "--path" => match it.next() {
                Some(p) => path = p.into(),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let store: Arc<dyn BlackboardStore> = match store_kind.as_str() {
        "memory" => Arc::new(MemoryStore::new()),
        "embedded" => match EmbeddedStore::open(&path) {
            Ok(store) => {
                println!("store: embedded Roost keyspace at {}", path.display());
                Arc::new(store)
            }
            Err(err) => {
                eprintln!("band: cannot open {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
        },
        "dapr" => match DaprStore::from_env(&dapr_store).await {
            Ok(store) => {
                let store = store.with_capabilities(|c| c.sidecar_encryption = sidecar_encryption);
                println!("store: Dapr state store {:?}", store.capabilities());
                Arc::new(store)
            }
            Err(err) => {
                eprintln!("band: {err}");
                return ExitCode::FAILURE;
            }
        },
        _ => return usage(),
    };
    let flock = Flock::with_store(Arc::clone(&store));
    if let Err(err) = register(&flock, std::time::Duration::ZERO) {
        eprintln!("band: {err}");
        return ExitCode::FAILURE;
    }
    if let Err(why) = limits_are_enforced(&flock, &store).await {
        eprintln!("band: {why}");
        return ExitCode::FAILURE;
    }
    let concept = BandConcept {
        genre: "synthwave".into(),
        vibe: "neon".into(),
        target_audience: "night drivers".into(),
    };
    let input = match flock.publish(&concept).await {
        Ok(artifact) => artifact,
        Err(err) => {
            eprintln!("band: publish failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    flock.run_until_idle().await;
    let correlation = input.correlation_id.clone().unwrap_or_default();
    let workflow = match store
        .query(&Filter::default().correlation(correlation.clone()), 0, 0)
        .await
    {
        Ok(page) => page.artifacts,
        Err(err) => {
            eprintln!("band: query failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Lineage: which input each agent consumed to produce what.
    let mut consumed: HashMap<String, Vec<String>> = HashMap::new();
    for artifact in &workflow {
        if let Ok(records) = store.consumptions(&artifact.id).await {
            for record in records {
                consumed
                    .entry(record.consumer)
                    .or_default()
                    .push(artifact.type_name.clone());
            }
        }
    }
    println!("workflow {correlation}: {} artifacts", workflow.len());
    for artifact in &workflow {
        print_artifact(artifact, &consumed);
    }
    let failures = flock.failures();
    let errors = workflow
        .iter()
        .filter(|a| a.type_name == roost_blackboard::WorkflowError::NAME)
        .count();
    if !failures.is_empty() || errors > 0 || workflow.len() != 4 {
        eprintln!("band: the pipeline did not complete ({errors} workflow errors, {failures:?})");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn print_artifact(artifact: &Artifact, consumed: &HashMap<String, Vec<String>>) {
    let from = consumed
        .get(&artifact.produced_by)
        .map(|inputs| format!(" from {}", inputs.join(", ")))
        .unwrap_or_default();
    println!(
        "- {} {} by {}{}\n  {}",
        artifact.created_at, artifact.type_name, artifact.produced_by, from, artifact.payload
    );
}
