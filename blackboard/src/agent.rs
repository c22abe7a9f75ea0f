//! Declaring agents: what they consume, what they publish, who they are, and the handler.
//!
//! ```ignore
//! flock
//!     .agent("talent_scout")
//!     .description("Turns a band concept into a lineup")
//!     .consumes::<BandConcept>()
//!     .publishes::<BandLineup>()
//!     .handler(|ctx| async move {
//!         let concept: BandConcept = ctx.input()?;
//!         Ok(vec![Output::of(&lineup_for(&concept))?])
//!     })?;
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::artifact::{Artifact, ArtifactType};
use crate::error::Error;
use crate::visibility::{Identity, Visibility};

/// A predicate on an artifact (built from a typed predicate by `consumes_where`).
pub type Predicate = Arc<dyn Fn(&Artifact) -> bool + Send + Sync>;

/// One way an agent can be triggered: an artifact of `type_name` that passes every option.
#[derive(Clone)]
pub struct Subscription {
    pub type_name: String,
    /// Typed predicates on the payload; all must hold (a payload that does not parse fails).
    pub predicates: Vec<Predicate>,
    /// The producer must be one of these.
    pub from_agents: Option<BTreeSet<String>>,
    /// The artifact must carry **any** of these tags.
    pub tags: Option<BTreeSet<String>>,
}

impl Subscription {
    pub fn matches(&self, artifact: &Artifact) -> bool {
        artifact.type_name == self.type_name
            && self
                .from_agents
                .as_ref()
                .is_none_or(|agents| agents.contains(&artifact.produced_by))
            && self
                .tags
                .as_ref()
                .is_none_or(|tags| !tags.is_disjoint(&artifact.tags))
            && self.predicates.iter().all(|p| p(artifact))
    }
}

/// What a handler produces: one artifact to publish.
#[derive(Debug, Clone)]
pub struct Output {
    pub type_name: String,
    pub payload: serde_json::Value,
    /// `None` means Public.
    pub visibility: Option<Visibility>,
    pub tags: BTreeSet<String>,
}

impl Output {
    /// An output of `T`, validated against its constraints.
    pub fn of<T: ArtifactType>(value: &T) -> Result<Output, Error> {
        let artifact = Artifact::of(value, "")?;
        Ok(Output {
            type_name: artifact.type_name,
            payload: artifact.payload,
            visibility: None,
            tags: BTreeSet::new(),
        })
    }

    pub fn visibility(mut self, visibility: Visibility) -> Output {
        self.visibility = Some(visibility);
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Output {
        self.tags.insert(tag.into());
        self
    }
}

/// What a handler gets: its input artifacts and the run's identity.
#[derive(Debug, Clone)]
pub struct Context {
    pub agent: String,
    pub run_id: String,
    pub correlation_id: Option<String>,
    pub inputs: Vec<Artifact>,
}

impl Context {
    /// The first input of type `T`, parsed and validated.
    pub fn input<T: ArtifactType>(&self) -> Result<T, Error> {
        self.inputs
            .iter()
            .find(|a| a.type_name == T::NAME)
            .ok_or_else(|| Error::Invalid {
                type_name: T::NAME.into(),
                why: format!("agent {} got no {} input", self.agent, T::NAME),
            })?
            .payload_as()
    }
}

/// Why a handler failed; it becomes a `WorkflowError` artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    pub error_type: String,
    pub message: String,
}

impl AgentError {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> AgentError {
        AgentError {
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

impl From<Error> for AgentError {
    fn from(err: Error) -> AgentError {
        let error_type = match &err {
            Error::Invalid { .. } => "ValidationError",
            Error::Corrupt(_) => "CorruptData",
            Error::Store(_) => "StoreError",
            Error::Conflict { .. } => "ConflictError",
            Error::Agent { .. } => "AgentError",
        };
        AgentError::new(error_type, err.to_string())
    }
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<Output>, AgentError>> + Send>>;
pub type Handler = Arc<dyn Fn(Context) -> HandlerFuture + Send + Sync>;

/// A declared agent.
#[derive(Clone)]
pub struct AgentSpec {
    pub name: String,
    pub description: String,
    pub subscriptions: Vec<Subscription>,
    /// Types the agent may publish; any other output fails the run.
    pub publishes: BTreeSet<String>,
    pub identity: Identity,
    pub max_concurrency: usize,
    pub prevent_self_trigger: bool,
    /// An AND gate: the run needs one artifact of every subscription, all with the same
    /// correlation id (swarm only).
    pub gate: bool,
    /// An AND gate's window: its inputs must have been created within this of each other
    /// (of the first subscription's input).
    pub join_within: Option<std::time::Duration>,
    /// A scheduled agent: one run per period in the whole swarm, without input (swarm only).
    pub every: Option<std::time::Duration>,
    /// Runs on batches of its inputs: (most inputs per run, longest wait after a batch's
    /// first input) (swarm only).
    pub batch: Option<(usize, std::time::Duration)>,
    /// Runs after a failed one before the failure is final (default 0).
    pub retries: u32,
    /// The wait before the first retry; it doubles per retry, up to 30 s.
    pub retry_backoff: std::time::Duration,
    pub handler: Option<Handler>,
}

/// The fluent declaration, finished by [`AgentBuilder::handler`].
pub struct AgentBuilder<'f> {
    pub(crate) spec: AgentSpec,
    pub(crate) register: Box<dyn FnOnce(AgentSpec) -> Result<(), Error> + 'f>,
}

impl AgentBuilder<'_> {
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec.description = text.into();
        self
    }

    /// Triggered by artifacts of `T` (another `consumes` call is another trigger: OR).
    pub fn consumes<T: ArtifactType>(mut self) -> Self {
        self.spec.subscriptions.push(Subscription {
            type_name: T::NAME.into(),
            predicates: Vec::new(),
            from_agents: None,
            tags: None,
        });
        self
    }

    /// Triggered by artifacts of `T` whose payload satisfies `predicate`.
    pub fn consumes_where<T: ArtifactType>(
        self,
        predicate: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Self {
        let mut this = self.consumes::<T>();
        let predicate: Predicate = Arc::new(move |artifact: &Artifact| {
            artifact
                .payload_as::<T>()
                .is_ok_and(|value| predicate(&value))
        });
        if let Some(last) = this.spec.subscriptions.last_mut() {
            last.predicates.push(predicate);
        }
        this
    }

    /// The last subscription only accepts artifacts produced by these agents.
    pub fn from_agents<I: IntoIterator<Item = S>, S: Into<String>>(mut self, agents: I) -> Self {
        if let Some(last) = self.spec.subscriptions.last_mut() {
            last.from_agents = Some(agents.into_iter().map(Into::into).collect());
        }
        self
    }

    /// The last subscription only accepts artifacts carrying any of these tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        if let Some(last) = self.spec.subscriptions.last_mut() {
            last.tags = Some(tags.into_iter().map(Into::into).collect());
        }
        self
    }

    pub fn publishes<T: ArtifactType>(mut self) -> Self {
        self.spec.publishes.insert(T::NAME.into());
        self
    }

    /// The agent's labels, checked by Labelled visibility.
    pub fn labels<I: IntoIterator<Item = S>, S: Into<String>>(mut self, labels: I) -> Self {
        self.spec.identity.labels = labels.into_iter().map(Into::into).collect();
        self
    }

    /// The agent's tenant, checked by Tenant visibility.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.spec.identity.tenant_id = Some(tenant.into());
        self
    }

    /// Most runs of this agent at once (default 2, as in Flock).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.spec.max_concurrency = n.max(1);
        self
    }

    /// Whether the agent ignores artifacts it produced itself (default true).
    pub fn prevent_self_trigger(mut self, yes: bool) -> Self {
        self.spec.prevent_self_trigger = yes;
        self
    }

    /// Makes the agent an AND gate with another subscription: it runs once per correlation id,
    /// when the store holds an artifact for each of its subscriptions with that correlation id
    /// (the earliest of each), and its context has all of them as inputs. Needs
    /// [`crate::Flock::swarm`] (a swarm of one process is fine): the gate is evaluated on the
    /// store, so a restart loses nothing of it.
    pub fn and<T: ArtifactType>(mut self) -> Self {
        self.spec.gate = true;
        self.consumes::<T>()
    }

    /// An AND gate's time window (Flock's `JoinSpec(within=...)`): the artifacts of one run
    /// must have been created within `window` of the first subscription's artifact; a late one
    /// waits for a partner of its own.
    pub fn within(mut self, window: std::time::Duration) -> Self {
        self.spec.join_within = Some(window);
        self
    }

    /// Makes the agent a scheduled one: it runs once per `period` (periods counted from the
    /// Unix epoch) in the whole swarm, with no input. A restarted swarm runs the current period
    /// if nobody has; periods that passed while no member ran are not run. Needs
    /// [`crate::Flock::swarm`].
    pub fn every(mut self, period: std::time::Duration) -> Self {
        self.spec.every = Some(period.max(std::time::Duration::from_millis(1)));
        self
    }

    /// Makes the agent run on batches: each artifact it consumes joins the open batch, and
    /// the batch runs (all its artifacts as the run's inputs) when it holds `size` of them or
    /// `max_wait` after its first one joined, whichever comes first. Every artifact is in
    /// exactly one batch in the whole swarm; the open batch is kept in the store. Needs
    /// [`crate::Flock::swarm`].
    pub fn batch(mut self, size: usize, max_wait: std::time::Duration) -> Self {
        self.spec.batch = Some((size.max(1), max_wait));
        self
    }

    /// Retries a failed run `retries` times, waiting `backoff` before the first retry and
    /// twice as long before each next one (at most 30 s). After the last, the failure is
    /// final: the run's output is one `WorkflowError` artifact (the dead letter) naming the
    /// attempts.
    pub fn retries(mut self, retries: u32, backoff: std::time::Duration) -> Self {
        self.spec.retries = retries;
        self.spec.retry_backoff = backoff;
        self
    }

    /// Sets the handler and registers the agent.
    pub fn handler<F, Fut>(mut self, handler: F) -> Result<(), Error>
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Output>, AgentError>> + Send + 'static,
    {
        self.spec.handler = Some(Arc::new(move |ctx| Box::pin(handler(ctx))));
        if self.spec.subscriptions.is_empty() && self.spec.every.is_none() {
            return Err(Error::Agent {
                agent: self.spec.name.clone(),
                why: "it consumes nothing, so nothing can trigger it".into(),
            });
        }
        (self.register)(self.spec)
    }
}

pub(crate) fn new_spec(name: &str) -> AgentSpec {
    AgentSpec {
        name: name.into(),
        description: String::new(),
        subscriptions: Vec::new(),
        publishes: BTreeSet::new(),
        identity: Identity::named(name),
        max_concurrency: 2,
        prevent_self_trigger: true,
        gate: false,
        join_within: None,
        every: None,
        batch: None,
        retries: 0,
        retry_backoff: std::time::Duration::from_millis(100),
        handler: None,
    }
}
