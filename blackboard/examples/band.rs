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
//! `127.0.0.1:$DAPR_GRPC_PORT`, default 50001): real daprd, or `roost sidecar` in front of
//! `roost serve` (see the README).
//!
//! It publishes one BandConcept, runs until idle, and prints every artifact of the workflow
//! with its lineage (which agent produced it, from which input).

use std::collections::{BTreeSet, HashMap};
use std::process::ExitCode;
use std::sync::Arc;

use roost_blackboard::{
    Artifact, ArtifactType, BlackboardStore, DaprStore, EmbeddedStore, Filter, Flock, MemoryStore,
    Output,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BandConcept {
    genre: String,
    vibe: String,
    target_audience: String,
}

impl ArtifactType for BandConcept {
    const NAME: &'static str = "BandConcept";
    fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("genre", &self.genre),
            ("vibe", &self.vibe),
            ("target_audience", &self.target_audience),
        ] {
            if value.trim().is_empty() || value.len() > 80 {
                return Err(format!("{field} must be 1–80 characters"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    name: String,
    instrument: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BandLineup {
    band_name: String,
    genre: String,
    members: Vec<Member>,
}

impl ArtifactType for BandLineup {
    const NAME: &'static str = "BandLineup";
    fn validate(&self) -> Result<(), String> {
        if !(2..=40).contains(&self.band_name.chars().count()) {
            return Err("band_name must be 2–40 characters".into());
        }
        if !(3..=6).contains(&self.members.len()) {
            return Err("a lineup has 3 to 6 members".into());
        }
        let names: BTreeSet<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        if names.len() != self.members.len() {
            return Err("member names must be distinct".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Album {
    title: String,
    band_name: String,
    tracklist: Vec<String>,
}

impl ArtifactType for Album {
    const NAME: &'static str = "Album";
    fn validate(&self) -> Result<(), String> {
        if !(1..=60).contains(&self.title.chars().count()) {
            return Err("title must be 1–60 characters".into());
        }
        if !(8..=12).contains(&self.tracklist.len()) {
            return Err("an album has 8 to 12 tracks".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MarketingCopy {
    headline: String,
    blurb: String,
    hashtags: Vec<String>,
}

impl ArtifactType for MarketingCopy {
    const NAME: &'static str = "MarketingCopy";
    fn validate(&self) -> Result<(), String> {
        if self.headline.chars().count() > 80 {
            return Err("headline must be at most 80 characters".into());
        }
        if self.blurb.chars().count() > 400 {
            return Err("blurb must be at most 400 characters".into());
        }
        if !(1..=5).contains(&self.hashtags.len())
            || self.hashtags.iter().any(|h| !h.starts_with('#'))
        {
            return Err("1 to 5 hashtags, each starting with #".into());
        }
        Ok(())
    }
}

fn register(flock: &Flock) -> Result<(), roost_blackboard::Error> {
    flock
        .agent("talent_scout")
        .description("Assembles a lineup for a band concept")
        .consumes::<BandConcept>()
        .publishes::<BandLineup>()
        .handler(|ctx| async move {
            let concept: BandConcept = ctx.input()?;
            let instruments = ["vocals", "synth", "drums", "bass"];
            let names = ["Nova", "Rook", "Ash", "Vega"];
            let lineup = BandLineup {
                band_name: format!(
                    "The {} {}",
                    capitalise(&concept.vibe),
                    capitalise(&concept.genre)
                ),
                genre: concept.genre,
                members: names
                    .iter()
                    .zip(instruments)
                    .map(|(name, instrument)| Member {
                        name: name.to_string(),
                        instrument: instrument.into(),
                    })
                    .collect(),
            };
            Ok(vec![Output::of(&lineup)?])
        })?;
    flock
        .agent("music_producer")
        .description("Writes an album for a lineup")
        .consumes::<BandLineup>()
        .publishes::<Album>()
        .handler(|ctx| async move {
            let lineup: BandLineup = ctx.input()?;
            let album = Album {
                title: format!("{} Nights", capitalise(&lineup.genre)),
                tracklist: (1..=10)
                    .map(|i| format!("{} {i}", lineup.members[i % lineup.members.len()].name))
                    .collect(),
                band_name: lineup.band_name,
            };
            Ok(vec![Output::of(&album)?])
        })?;
    flock
        .agent("marketing_guru")
        .description("Writes the launch copy for an album")
        .consumes::<Album>()
        .publishes::<MarketingCopy>()
        .handler(|ctx| async move {
            let album: Album = ctx.input()?;
            let copy = MarketingCopy {
                headline: format!("{} drop “{}”", album.band_name, album.title),
                blurb: format!(
                    "{} tracks, opening with “{}”. Out now.",
                    album.tracklist.len(),
                    album.tracklist[0]
                ),
                hashtags: vec![
                    "#newmusic".into(),
                    format!("#{}", album.title.replace(' ', "").to_lowercase()),
                ],
            };
            Ok(vec![Output::of(&copy)?])
        })?;
    Ok(())
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

fn usage() -> ExitCode {
    eprintln!("usage: band --store memory|embedded|dapr [--path FILE] [--dapr-store NAME]");
    ExitCode::from(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut store_kind = "memory".to_string();
    let mut path = std::env::temp_dir().join(format!("roost-band-{}.roost", std::process::id()));
    let mut dapr_store = "statestore".to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
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
    if let Err(err) = register(&flock) {
        eprintln!("band: {err}");
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
