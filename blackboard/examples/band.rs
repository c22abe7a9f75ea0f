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
struct BandLineup {
    band_name: String,
    members: Vec<String>,
    origin_story: String,
    signature_sound: String,
}

impl ArtifactType for BandLineup {
    const NAME: &'static str = "BandLineup";
    fn validate(&self) -> Result<(), String> {
        if self.band_name.trim().is_empty() {
            return Err("band_name must not be empty".into());
        }
        if self.members.is_empty() {
            return Err("a lineup has members".into());
        }
        let names: BTreeSet<&str> = self.members.iter().map(String::as_str).collect();
        if names.len() != self.members.len() {
            return Err("member names must be distinct".into());
        }
        if self.origin_story.chars().count() < 100 {
            return Err("origin_story must be at least 100 characters".into());
        }
        if self.signature_sound.trim().is_empty() {
            return Err("signature_sound must not be empty".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Track {
    title: String,
    description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Album {
    title: String,
    tracks: Vec<Track>,
    genre_fusion: String,
    standout_track: String,
    production_notes: String,
}

impl ArtifactType for Album {
    const NAME: &'static str = "Album";
    fn validate(&self) -> Result<(), String> {
        if self.title.trim().is_empty() || self.title != self.title.to_uppercase() {
            return Err("title must be in capitals".into());
        }
        if !(8..=12).contains(&self.tracks.len()) {
            return Err("an album has 8 to 12 tracks".into());
        }
        if self
            .tracks
            .iter()
            .any(|t| t.title.trim().is_empty() || t.description.trim().is_empty())
        {
            return Err("every track has a title and a description".into());
        }
        if !self.tracks.iter().any(|t| t.title == self.standout_track) {
            return Err("standout_track must be one of the tracks".into());
        }
        if self.genre_fusion.trim().is_empty() || self.production_notes.trim().is_empty() {
            return Err("genre_fusion and production_notes must not be empty".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MarketingCopy {
    press_release: String,
    social_media_hook: String,
    billboard_tagline: String,
    target_playlists: Vec<String>,
}

impl ArtifactType for MarketingCopy {
    const NAME: &'static str = "MarketingCopy";
    fn validate(&self) -> Result<(), String> {
        if self.press_release.chars().count() < 200 {
            return Err("press_release must be at least 200 characters".into());
        }
        if self.social_media_hook.chars().count() > 280 {
            return Err("social_media_hook must be at most 280 characters".into());
        }
        if self.billboard_tagline.chars().count() > 100 {
            return Err("billboard_tagline must be at most 100 characters".into());
        }
        if !(3..=5).contains(&self.target_playlists.len()) {
            return Err("3 to 5 target_playlists".into());
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
            let band_name = format!(
                "The {} {}",
                capitalise(&concept.vibe),
                capitalise(&concept.genre)
            );
            let lineup = BandLineup {
                origin_story: format!(
                    "{band_name} met at a late-night {} session for {}, four strangers who \
                     kept coming back until the venue gave them a standing slot.",
                    concept.genre, concept.target_audience
                ),
                signature_sound: format!("{} {} with live drums", concept.vibe, concept.genre),
                members: ["Nova", "Rook", "Ash", "Vega"].map(String::from).to_vec(),
                band_name,
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
            let tracks: Vec<Track> = (1..=10)
                .map(|i| Track {
                    title: format!("{} {i}", lineup.members[i % lineup.members.len()]),
                    description: format!("track {i}: {}", lineup.signature_sound),
                })
                .collect();
            let album = Album {
                title: format!("{} NIGHTS", lineup.band_name.to_uppercase()),
                standout_track: tracks[2].title.clone(),
                tracks,
                genre_fusion: lineup.signature_sound.clone(),
                production_notes: format!("recorded live by {}", lineup.members.join(", ")),
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
                press_release: format!(
                    "{} arrives with {} tracks of {}. Built around the standout “{}”, the record \
                     was {}. It is out today on every platform, with a tour to follow this \
                     spring in the cities that kept the lights on.",
                    album.title,
                    album.tracks.len(),
                    album.genre_fusion,
                    album.standout_track,
                    album.production_notes
                ),
                social_media_hook: format!(
                    "{} is here. Start with “{}”.",
                    album.title, album.standout_track
                ),
                billboard_tagline: format!("{}: out now", album.title),
                target_playlists: ["Night Drive", "New Wave Now", "Synth Essentials"]
                    .map(String::from)
                    .to_vec(),
            };
            Ok(vec![Output::of(&copy)?])
        })?;
    Ok(())
}

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

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
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
    if let Err(err) = register(&flock) {
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
