//! The band pipeline's types and agents, shared by the `band` and `swarm` examples (and, as
//! the workload of the swarm tests, by their worker): talent_scout → music_producer →
//! marketing_guru with deterministic handlers, each output derived from its input only.

use std::collections::BTreeSet;
use std::time::Duration;

use std::sync::Mutex;

use roost_blackboard::{Artifact, ArtifactType, Flock, Output, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BandConcept {
    pub genre: String,
    pub vibe: String,
    pub target_audience: String,
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
pub struct BandLineup {
    pub band_name: String,
    pub members: Vec<String>,
    pub origin_story: String,
    pub signature_sound: String,
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
pub struct Track {
    pub title: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Album {
    pub title: String,
    pub tracks: Vec<Track>,
    pub genre_fusion: String,
    pub standout_track: String,
    pub production_notes: String,
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
pub struct MarketingCopy {
    pub press_release: String,
    pub social_media_hook: String,
    pub billboard_tagline: String,
    pub target_playlists: Vec<String>,
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

/// Microseconds from each run's input being created to its handler starting, in this process.
static TRIGGER_DELAYS: Mutex<Vec<i64>> = Mutex::new(Vec::new());

fn triggered(input: &Artifact) {
    let delay = Timestamp::now().unix_micros() - input.created_at.unix_micros();
    if let Ok(mut delays) = TRIGGER_DELAYS.lock() {
        delays.push(delay);
    }
}

/// The trigger delays recorded so far (and forgets them).
#[allow(dead_code)]
pub fn take_trigger_delays() -> Vec<i64> {
    TRIGGER_DELAYS
        .lock()
        .map(|mut d| std::mem::take(&mut *d))
        .unwrap_or_default()
}

/// Declares the three agents on `flock`; each run first waits `work` (a stand-in for the
/// model call a real agent makes; zero in the band example).
pub fn register(flock: &Flock, work: Duration) -> Result<(), roost_blackboard::Error> {
    flock
        .agent("talent_scout")
        .description("Assembles a lineup for a band concept")
        .consumes::<BandConcept>()
        .publishes::<BandLineup>()
        .handler(move |ctx| async move {
            triggered(&ctx.inputs[0]);
            let concept: BandConcept = ctx.input()?;
            tokio::time::sleep(work).await;
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
        .handler(move |ctx| async move {
            triggered(&ctx.inputs[0]);
            let lineup: BandLineup = ctx.input()?;
            tokio::time::sleep(work).await;
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
        .handler(move |ctx| async move {
            triggered(&ctx.inputs[0]);
            let album: Album = ctx.input()?;
            tokio::time::sleep(work).await;
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

pub fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

/// A critic's verdict on an album and its launch copy (an AND gate's output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Review {
    pub album_title: String,
    pub tagline: String,
}

impl ArtifactType for Review {
    const NAME: &'static str = "Review";
}

/// A playlist of launch copies (a batch's output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Playlist {
    pub taglines: Vec<String>,
}

impl ArtifactType for Playlist {
    const NAME: &'static str = "Playlist";
}

/// The swarm's extra stages (they need `Flock::swarm`): `critic`, an AND gate on an album and
/// its marketing copy (same correlation id), and `curator`, which batches launch copies ten
/// at a time (or after half a second).
#[allow(dead_code)]
pub fn register_swarm_stages(flock: &Flock, work: Duration) -> Result<(), roost_blackboard::Error> {
    flock
        .agent("critic")
        .description("Reviews an album together with its launch copy")
        .consumes::<Album>()
        .and::<MarketingCopy>()
        .publishes::<Review>()
        .handler(move |ctx| async move {
            let album: Album = ctx.input()?;
            let copy: MarketingCopy = ctx.input()?;
            tokio::time::sleep(work).await;
            Ok(vec![Output::of(&Review {
                album_title: album.title,
                tagline: copy.billboard_tagline,
            })?])
        })?;
    flock
        .agent("curator")
        .description("Puts launch copies into playlists")
        .consumes::<MarketingCopy>()
        .batch(10, Duration::from_millis(500))
        .publishes::<Playlist>()
        .handler(move |ctx| async move {
            tokio::time::sleep(work).await;
            let mut taglines = Vec::new();
            for input in &ctx.inputs {
                taglines.push(input.payload_as::<MarketingCopy>()?.billboard_tagline);
            }
            Ok(vec![Output::of(&Playlist { taglines })?])
        })?;
    Ok(())
}
