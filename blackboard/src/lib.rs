//! `roost-blackboard`: Flock-style typed artifacts and agents on a swappable store.
//!
//! Agents publish and consume typed [`Artifact`]s; the [`Flock`] orchestrator decides what runs
//! next; the store is a [`BlackboardStore`] — [`MemoryStore`], [`EmbeddedStore`] (the Roost
//! engine in process) or a Dapr state store — and agent code never knows which. The model
//! follows Flock's (`docs/blackboard.md` says what was kept and changed), minus its gaps: no growing index
//! documents, no artifact written apart from its index entries, outputs and consumption
//! records written together, visibility checked before an agent is triggered, and policies
//! that cannot be read fail closed.
//!
//! - [`artifact`]: the artifact, typed payloads ([`ArtifactType`]), consumption records;
//! - [`visibility`]: policies and identities;
//! - [`agent`]: the agent builder, subscriptions, handler context and outputs;
//! - [`flock`]: the orchestrator;
//! - [`store`]: the store contract and its implementations;
//! - [`swarm`]: many processes on one store: shared triggers, leased claims;
//! - [`time`]: RFC 3339 timestamps and ISO-8601 durations.

#![deny(clippy::all)]

pub mod agent;
pub mod artifact;
pub mod error;
pub mod flock;
pub mod store;
pub mod swarm;
pub mod time;
pub mod visibility;

pub use agent::{AgentError, Context, Output};
pub use artifact::{Artifact, ArtifactType, Consumption, WorkflowError};
pub use error::{Error, Result};
pub use flock::{Flock, PublishOptions};
pub use store::{BlackboardStore, EmbeddedStore, Filter, MemoryStore, Page, Summary, SwarmStore};
#[cfg(feature = "dapr")]
pub use store::{DaprCapabilities, DaprStore};
pub use swarm::{CorrelationStatus, RunState, SwarmOptions, SwarmStats};
pub use time::Timestamp;
pub use visibility::{Identity, Visibility};
