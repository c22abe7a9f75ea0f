//! Artifacts: typed payloads on the blackboard, with Flock's fields and JSON form.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
#[cfg(test)]
use serde_json::json;

use crate::error::Error;
use crate::time::Timestamp;
use crate::visibility::Visibility;

/// A Rust type that travels as an artifact payload, under a stable wire name.
///
/// The name is what matches subscriptions and what other clients (Flock included) see in the
/// artifact's `type`; choose it once, like Flock's `@flock_type(name=...)`, and never derive it
/// from a module path.
pub trait ArtifactType: Serialize + DeserializeOwned + Send + Sync + 'static {
    const NAME: &'static str;

    /// Field constraints, checked before the payload is published and after it is read.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// An artifact on the blackboard. Its JSON is Flock's: `id`, `type`, `payload`,
/// `produced_by`, `correlation_id`, `partition_key`, `tags`, `visibility`, `created_at`,
/// `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub payload: Value,
    pub produced_by: String,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub partition_key: Option<String>,
    #[serde(default)]
    pub tags: BTreeSet<String>,
    #[serde(default)]
    pub visibility: Visibility,
    pub created_at: Timestamp,
    #[serde(default = "first_version")]
    pub version: u32,
    /// When the artifact expires (retention), if it does; written only when set, so an
    /// artifact without one is Flock's JSON exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

fn first_version() -> u32 {
    1
}

/// `produced_by` of artifacts published from outside any agent.
pub const EXTERNAL: &str = "external";

impl Artifact {
    /// A new artifact of `T` (validated), with a fresh id, Public, produced by `produced_by`.
    pub fn of<T: ArtifactType>(
        value: &T,
        produced_by: impl Into<String>,
    ) -> Result<Artifact, Error> {
        value.validate().map_err(|why| Error::Invalid {
            type_name: T::NAME.into(),
            why,
        })?;
        Ok(Artifact {
            id: new_id(),
            type_name: T::NAME.into(),
            payload: serde_json::to_value(value).map_err(|e| Error::Invalid {
                type_name: T::NAME.into(),
                why: e.to_string(),
            })?,
            produced_by: produced_by.into(),
            correlation_id: None,
            partition_key: None,
            tags: BTreeSet::new(),
            visibility: Visibility::Public,
            created_at: Timestamp::now(),
            version: 1,
            expires_at: None,
        })
    }

    /// The payload as `T`, if the artifact is of that type and its payload is valid.
    pub fn payload_as<T: ArtifactType>(&self) -> Result<T, Error> {
        if self.type_name != T::NAME {
            return Err(Error::Invalid {
                type_name: T::NAME.into(),
                why: format!("artifact {} is a {}", self.id, self.type_name),
            });
        }
        let value: T =
            serde_json::from_value(self.payload.clone()).map_err(|e| Error::Invalid {
                type_name: T::NAME.into(),
                why: e.to_string(),
            })?;
        value.validate().map_err(|why| Error::Invalid {
            type_name: T::NAME.into(),
            why,
        })?;
        Ok(value)
    }

    /// Whether it has expired at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// What is left of its retention (`None`: kept), at least a millisecond.
    pub fn ttl(&self) -> Option<std::time::Duration> {
        remaining(self.expires_at)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an artifact always serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Artifact, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("artifact JSON: {e}")))
    }
}

/// A random UUID v4, in its text form.
pub fn new_id() -> String {
    roost_engine::uuid_v4()
}

pub use roost_engine::uuid_v4_text;

/// Flock's system artifact for a failed agent run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowError {
    pub failed_agent: String,
    pub error_type: String,
    pub error_message: String,
    pub timestamp: Timestamp,
    pub task_id: String,
}

impl ArtifactType for WorkflowError {
    const NAME: &'static str = "flock.WorkflowError";
}

/// A record that an agent consumed an artifact (Flock's `ConsumptionRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumption {
    pub artifact_id: String,
    pub consumer: String,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    pub consumed_at: Timestamp,
    /// The consumed artifact's expiry: the record does not outlive what it refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl Consumption {
    /// What is left of its retention (`None`: kept).
    pub fn ttl(&self) -> Option<std::time::Duration> {
        remaining(self.expires_at)
    }
}

/// Time left until `at`, at least a millisecond (an expiry in the past still expires).
pub(crate) fn remaining(at: Option<Timestamp>) -> Option<std::time::Duration> {
    at.map(|at| {
        let micros = at.unix_micros() - Timestamp::now().unix_micros();
        std::time::Duration::from_micros(micros.max(1000) as u64)
    })
}

/// Example payload used across the crate's tests.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Note {
    pub text: String,
}

#[cfg(test)]
impl ArtifactType for Note {
    const NAME: &'static str = "test.Note";
    fn validate(&self) -> Result<(), String> {
        if self.text.is_empty() {
            Err("text must not be empty".into())
        } else {
            Ok(())
        }
    }
}

/// Flock's JSON for an artifact, for reference in tests.
#[cfg(test)]
pub(crate) fn flock_example() -> Value {
    json!({
        "id": "0b7c1f0e-3f4a-4c1e-9d2b-5a6f7e8d9c0b",
        "type": "BandConcept",
        "payload": {"genre": "synthwave"},
        "produced_by": "external",
        "correlation_id": "c0ffee00-0000-4000-8000-000000000001",
        "partition_key": null,
        "tags": ["music"],
        "visibility": {"kind": "Private", "agents": ["talent_scout"]},
        "created_at": "2026-04-16T10:00:00.123456Z",
        "version": 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flock_json_reads_and_writes_back_the_same() {
        let original = flock_example();
        let artifact: Artifact = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(artifact.visibility, Visibility::only_for(["talent_scout"]));
        assert_eq!(artifact.tags, ["music".to_string()].into());
        assert_eq!(serde_json::to_value(&artifact).unwrap(), original);
        let python_offset = original.to_string().replace(".123456Z", ".123456+00:00");
        let same: Artifact = serde_json::from_str(&python_offset).unwrap();
        assert_eq!(same.created_at, artifact.created_at);
    }

    #[test]
    fn typed_payloads_validate_both_ways() {
        let good = Artifact::of(&Note { text: "hi".into() }, EXTERNAL).unwrap();
        assert_eq!(good.type_name, "test.Note");
        assert_eq!(good.payload_as::<Note>().unwrap().text, "hi");
        assert!(matches!(
            Artifact::of(
                &Note {
                    text: String::new()
                },
                EXTERNAL
            ),
            Err(Error::Invalid { .. })
        ));
        let mut tampered = good.clone();
        tampered.payload = json!({"text": ""});
        assert!(tampered.payload_as::<Note>().is_err());
        let mut other = good;
        other.type_name = "other".into();
        assert!(other.payload_as::<Note>().is_err());
    }

    #[test]
    fn ids_are_distinct_uuid_v4() {
        let a = new_id();
        assert_ne!(a, new_id());
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
