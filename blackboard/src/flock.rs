//! The orchestrator: publish persists first, then schedules every agent that may see and
//! wants the artifact; each run's outputs are persisted (with the consumption record of its
//! input, in that order) before they are scheduled in turn.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{Notify, Semaphore};

use crate::agent::{AgentBuilder, AgentError, AgentSpec, Context, Output, new_spec};
use crate::artifact::{Artifact, ArtifactType, Consumption, EXTERNAL, WorkflowError, new_id};
use crate::error::{Error, Result};
use crate::store::{BlackboardStore, SwarmStore};
use crate::swarm::{Swarm, SwarmOptions, SwarmStats};
use crate::time::Timestamp;
use crate::visibility::Visibility;

/// Options of an external publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub visibility: Visibility,
    /// A fresh one is made when `None`.
    pub correlation_id: Option<String>,
    pub partition_key: Option<String>,
    pub tags: BTreeSet<String>,
    /// Persist without triggering any agent.
    pub persist_only: bool,
    /// Retention of this artifact (else its type's, [`Flock::retain`]; else kept).
    pub ttl: Option<std::time::Duration>,
}

impl PublishOptions {
    pub fn visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = visibility;
        self
    }

    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.insert(tag.into());
        self
    }

    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    pub fn persist_only(mut self) -> Self {
        self.persist_only = true;
        self
    }

    /// Expire the artifact `ttl` after publishing (the store's TTL where it has one); its
    /// consumption records and claims expire with it.
    pub fn ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

pub(crate) struct AgentRuntime {
    pub(crate) spec: AgentSpec,
    pub(crate) slots: Arc<Semaphore>,
    /// Runs scheduled since the last idle point (the circuit breaker's counter).
    iterations: AtomicUsize,
    /// Artifacts already handed to this agent by this process.
    seen: Mutex<HashSet<String>>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn BlackboardStore>,
    pub(crate) agents: RwLock<Vec<Arc<AgentRuntime>>>,
    max_agent_iterations: AtomicUsize,
    pub(crate) pending: AtomicUsize,
    pub(crate) idle: Notify,
    /// Failures of the orchestrator itself (a store that refused outputs), newest last.
    failures: Mutex<Vec<String>>,
    /// Set when this process is one member of a swarm ([`Flock::swarm`]).
    swarm: Option<Arc<Swarm>>,
    /// Retention per artifact type ([`Flock::retain`]).
    retention: RwLock<std::collections::HashMap<String, std::time::Duration>>,
}

/// A blackboard with agents. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Flock {
    inner: Arc<Inner>,
}

/// Default circuit-breaker limit: runs of one agent between two idle points.
pub const DEFAULT_MAX_AGENT_ITERATIONS: usize = 1000;

impl Flock {
    pub fn new(store: impl BlackboardStore + 'static) -> Flock {
        Flock::with_store(Arc::new(store))
    }

    pub fn with_store(store: Arc<dyn BlackboardStore>) -> Flock {
        Flock::build(store, None)
    }

    /// A member of a swarm: many processes on one store, sharing triggers (see
    /// [`crate::swarm`]). Declare the agents, then call [`Flock::start`]. An artifact is
    /// handed to each agent that wants it once in the whole swarm.
    pub fn swarm(store: impl SwarmStore + 'static, options: SwarmOptions) -> Flock {
        let store: Arc<dyn SwarmStore> = Arc::new(store);
        let swarm = Arc::new(Swarm::new(Arc::clone(&store), options));
        Flock::build(store, Some(swarm))
    }

    fn build(store: Arc<dyn BlackboardStore>, swarm: Option<Arc<Swarm>>) -> Flock {
        Flock {
            inner: Arc::new(Inner {
                swarm,
                retention: RwLock::new(Default::default()),
                store,
                agents: RwLock::new(Vec::new()),
                max_agent_iterations: AtomicUsize::new(DEFAULT_MAX_AGENT_ITERATIONS),
                pending: AtomicUsize::new(0),
                idle: Notify::new(),
                failures: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sets the circuit breaker: at most `n` runs per agent between idle points (default
    /// [`DEFAULT_MAX_AGENT_ITERATIONS`]).
    pub fn max_agent_iterations(self, n: usize) -> Flock {
        self.inner
            .max_agent_iterations
            .store(n.max(1), Ordering::Relaxed);
        self
    }

    /// Artifacts of type `T` expire `ttl` after they are created, whether published from
    /// outside or by an agent (a publish's own [`PublishOptions::ttl`] wins); their
    /// consumption records and claims expire with them.
    pub fn retain<T: ArtifactType>(self, ttl: std::time::Duration) -> Flock {
        if let Ok(mut retention) = self.inner.retention.write() {
            retention.insert(T::NAME.to_string(), ttl);
        }
        self
    }

    pub fn store(&self) -> &Arc<dyn BlackboardStore> {
        &self.inner.store
    }

    /// Declares an agent; finish with `.handler(...)`.
    pub fn agent(&self, name: &str) -> AgentBuilder<'_> {
        let inner = &self.inner;
        AgentBuilder {
            spec: new_spec(name),
            register: Box::new(move |spec: AgentSpec| {
                let mut agents = inner
                    .agents
                    .write()
                    .map_err(|_| Error::Store("agent registry lock poisoned".into()))?;
                if inner.swarm.is_none()
                    && (spec.gate || spec.every.is_some() || spec.batch.is_some())
                {
                    return Err(Error::Agent {
                        agent: spec.name,
                        why: "AND gates, batches and scheduled agents keep their state in the \
                              store: they need Flock::swarm (a swarm of one process is fine)"
                            .into(),
                    });
                }
                if agents.iter().any(|a| a.spec.name == spec.name) {
                    return Err(Error::Agent {
                        agent: spec.name,
                        why: "an agent of that name already exists".into(),
                    });
                }
                agents.push(Arc::new(AgentRuntime {
                    slots: Arc::new(Semaphore::new(spec.max_concurrency)),
                    spec,
                    iterations: AtomicUsize::new(0),
                    seen: Mutex::new(HashSet::new()),
                }));
                Ok(())
            }),
        }
    }

    /// Publishes `value` from outside any agent (Public, fresh correlation id).
    pub async fn publish<T: ArtifactType>(&self, value: &T) -> Result<Artifact> {
        self.publish_with(value, PublishOptions::default()).await
    }

    pub async fn publish_with<T: ArtifactType>(
        &self,
        value: &T,
        options: PublishOptions,
    ) -> Result<Artifact> {
        let mut artifact = Artifact::of(value, EXTERNAL)?;
        artifact.visibility = options.visibility;
        artifact.correlation_id = Some(options.correlation_id.unwrap_or_else(new_id));
        artifact.partition_key = options.partition_key;
        artifact.tags = options.tags;
        let ttl = options
            .ttl
            .or_else(|| retention_of(&self.inner, &artifact.type_name));
        artifact.expires_at = ttl.map(|ttl| artifact.created_at.plus(ttl));
        match (&self.inner.swarm, options.persist_only) {
            (Some(swarm), false) => swarm.publish(&artifact).await?,
            (_, true) => self.inner.store.publish(&artifact).await?,
            (None, false) => {
                self.inner.store.publish(&artifact).await?;
                schedule(&self.inner, &artifact, false).await;
            }
        }
        Ok(artifact)
    }

    /// Joins the swarm: registers this member, reads the store once for work not done, and
    /// follows every member's feed from then on. Returns the runs dispatched by that read.
    /// Errors on a flock not made by [`Flock::swarm`].
    pub async fn start(&self) -> Result<usize> {
        let swarm = self.swarm_state()?;
        crate::swarm::start(&self.inner, swarm).await
    }

    /// Stops following the feeds (runs already started finish).
    pub fn stop(&self) {
        if let Some(swarm) = &self.inner.swarm {
            crate::swarm::stop(swarm);
        }
    }

    /// Where the work of `correlation_id` stands in the swarm (pending, running, done or
    /// failed), read from the store: every member with the same agents sees the same.
    pub async fn status(&self, correlation_id: &str) -> Result<crate::swarm::CorrelationStatus> {
        let swarm = self.swarm_state()?;
        crate::swarm::status(&self.inner, swarm, correlation_id).await
    }

    /// This member's counters; `None` outside a swarm.
    pub fn swarm_stats(&self) -> Option<SwarmStats> {
        self.inner.swarm.as_ref().map(|s| s.stats())
    }

    fn swarm_state(&self) -> Result<&Arc<Swarm>> {
        self.inner.swarm.as_ref().ok_or_else(|| {
            Error::Store("this flock is not a swarm member (make it with Flock::swarm)".into())
        })
    }

    /// Waits until no agent run is pending or running, then resets the circuit breakers. In a
    /// swarm: until this process has no run of its own, has read every feed to its head, and
    /// waits on no claim held by another process — so every member of an idle swarm agrees.
    pub async fn run_until_idle(&self) {
        if let Some(swarm) = &self.inner.swarm {
            loop {
                match crate::swarm::idle(&self.inner, swarm).await {
                    Ok(true) if self.inner.pending.load(Ordering::Acquire) == 0 => break,
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "swarm idle check failed"),
                }
                tokio::time::sleep(swarm.options.poll).await;
            }
        }
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.pending.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        if let Ok(agents) = self.inner.agents.read() {
            for agent in agents.iter() {
                agent.iterations.store(0, Ordering::Relaxed);
            }
        }
    }

    /// After a restart on a durable store: hands every stored artifact to the agents that
    /// want it and have not consumed it yet (consumption records decide). Returns the number
    /// of runs scheduled.
    pub async fn resume(&self) -> Result<usize> {
        let everything = self
            .inner
            .store
            .query(&crate::store::Filter::default(), 0, 0)
            .await?;
        let mut scheduled = 0;
        for artifact in &everything.artifacts {
            scheduled += schedule(&self.inner, artifact, true).await;
        }
        Ok(scheduled)
    }

    /// Failures of the orchestrator itself since it started (agent failures are not here:
    /// they are `WorkflowError` artifacts).
    pub fn failures(&self) -> Vec<String> {
        self.inner
            .failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }
}

pub(crate) fn fail(inner: &Inner, message: String) {
    tracing::error!("{message}");
    if let Ok(mut failures) = inner.failures.lock() {
        failures.push(message);
    }
}

/// Schedules `artifact` for every agent that may see it and wants it; returns how many runs.
/// With `check_consumed`, agents that already consumed it (per the store) are skipped.
fn schedule<'a>(
    inner: &'a Arc<Inner>,
    artifact: &'a Artifact,
    check_consumed: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = usize> + Send + 'a>> {
    // Boxed with an explicit `Send`: runs schedule their outputs, so this future and
    // `run_agent`'s are mutually recursive.
    Box::pin(schedule_now(inner, artifact, check_consumed))
}

async fn schedule_now(inner: &Arc<Inner>, artifact: &Artifact, check_consumed: bool) -> usize {
    let agents: Vec<Arc<AgentRuntime>> = match inner.agents.read() {
        Ok(agents) => agents.clone(),
        Err(_) => return 0,
    };
    let now = Timestamp::now();
    let mut consumed_by: Option<BTreeSet<String>> = None;
    let mut runs = 0;
    for agent in agents {
        let spec = &agent.spec;
        if !wants(spec, artifact, now) {
            continue;
        }
        if check_consumed {
            if consumed_by.is_none() {
                match inner.store.consumptions(&artifact.id).await {
                    Ok(records) => {
                        consumed_by = Some(records.into_iter().map(|r| r.consumer).collect());
                    }
                    Err(err) => {
                        fail(
                            inner,
                            format!("cannot read consumptions of {}: {err}", artifact.id),
                        );
                        return runs;
                    }
                }
            }
            if consumed_by.as_ref().is_some_and(|c| c.contains(&spec.name)) {
                continue;
            }
        }
        match agent.seen.lock() {
            Ok(mut seen) => {
                if !seen.insert(artifact.id.clone()) {
                    continue;
                }
            }
            Err(_) => continue,
        }
        if !breaker_allows(inner, &agent) {
            if let Ok(mut seen) = agent.seen.lock() {
                seen.remove(&artifact.id);
            }
            continue;
        }
        inner.pending.fetch_add(1, Ordering::AcqRel);
        runs += 1;
        tokio::spawn(run_agent(Arc::clone(inner), agent, artifact.clone()));
    }
    runs
}

fn retention_of(inner: &Inner, type_name: &str) -> Option<std::time::Duration> {
    inner
        .retention
        .read()
        .ok()
        .and_then(|r| r.get(type_name).copied())
}

/// Sets the expiry of outputs whose type has a retention.
pub(crate) fn apply_retention(inner: &Inner, outputs: &mut [Artifact]) {
    for output in outputs {
        if let Some(ttl) = retention_of(inner, &output.type_name) {
            output.expires_at = Some(output.created_at.plus(ttl));
        }
    }
}

/// Whether `spec` is triggered by `artifact`: not its own output (unless self-trigger is
/// allowed), visible to it (checked first: an agent that may not see an artifact is never
/// triggered), and matching one of its subscriptions.
pub(crate) fn wants(spec: &AgentSpec, artifact: &Artifact, now: Timestamp) -> bool {
    if spec.prevent_self_trigger && artifact.produced_by == spec.name {
        return false;
    }
    artifact
        .visibility
        .allows(&spec.identity, artifact.created_at, now)
        && spec.subscriptions.iter().any(|s| s.matches(artifact))
}

/// Counts a run against the agent's circuit breaker; false when the breaker is open.
pub(crate) fn breaker_allows(inner: &Inner, agent: &AgentRuntime) -> bool {
    let limit = inner.max_agent_iterations.load(Ordering::Relaxed);
    if agent.iterations.fetch_add(1, Ordering::AcqRel) >= limit {
        tracing::warn!(agent = %agent.spec.name, limit, "circuit breaker open: run skipped");
        return false;
    }
    true
}

/// Runs the agent's handler on `inputs` (one artifact, an AND gate's or a batch's, or none for
/// a scheduled run), retrying failures as the agent says, and returns the run's outputs: the
/// declared outputs, or one `WorkflowError` after the last failure. Output ids are derived
/// from (`unit`, agent, position), `unit` being what the run is the run of (the input's id
/// for a single input), so a run repeated after a crash writes the same artifacts again
/// instead of new ones.
pub(crate) async fn execute_on(
    spec: &AgentSpec,
    inputs: &[Artifact],
    unit: &str,
    run_id: &str,
) -> Vec<Artifact> {
    let first = inputs.first();
    let attempts = spec.retries.saturating_add(1);
    let mut backoff = spec.retry_backoff;
    let mut attempt = 1;
    loop {
        let ctx = Context {
            agent: spec.name.clone(),
            run_id: run_id.to_string(),
            correlation_id: first.and_then(|i| i.correlation_id.clone()),
            inputs: inputs.to_vec(),
        };
        // The handler runs in its own task, so a panic is an agent failure, not ours.
        let result = match spec.handler.clone() {
            Some(handler) => match tokio::spawn(handler(ctx)).await {
                Ok(result) => result,
                Err(join) => Err(AgentError::new("Panic", join.to_string())),
            },
            None => Err(AgentError::new("AgentError", "no handler")),
        };
        match result.and_then(|outputs| check_outputs(spec, outputs)) {
            Ok(outputs) => {
                return outputs
                    .into_iter()
                    .enumerate()
                    .map(|(n, output)| output_artifact(output, &spec.name, first, unit, n))
                    .collect();
            }
            Err(mut error) if attempt >= attempts => {
                tracing::warn!(agent = %spec.name, error = %error.message, attempt, "agent run failed");
                if attempts > 1 {
                    error.message = format!("{} (after {attempts} attempts)", error.message);
                }
                return vec![error_artifact(&spec.name, run_id, first, unit, error)];
            }
            Err(error) => {
                tracing::info!(agent = %spec.name, error = %error.message, attempt, "agent run failed: retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                attempt += 1;
            }
        }
    }
}

/// The id of output `n` of `agent`'s run on `input`: a UUID (v4 layout) from a 128-bit FNV-1a
/// hash of the three.
pub(crate) fn output_id(input_id: &str, agent: &str, n: usize) -> String {
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for part in [
        input_id.as_bytes(),
        agent.as_bytes(),
        n.to_string().as_bytes(),
    ] {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u128::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    crate::artifact::uuid_v4_text(hash.to_be_bytes())
}

/// One agent run: handler, outputs (or a WorkflowError), persist with the consumption record,
/// then schedule the outputs.
async fn run_agent(inner: Arc<Inner>, agent: Arc<AgentRuntime>, input: Artifact) {
    let spec = &agent.spec;
    let permit = Arc::clone(&agent.slots).acquire_owned().await;
    let run_id = new_id();
    let mut outputs = execute_on(spec, std::slice::from_ref(&input), &input.id, &run_id).await;
    apply_retention(&inner, &mut outputs);
    drop(permit);
    let consumption = Consumption {
        artifact_id: input.id.clone(),
        consumer: spec.name.clone(),
        run_id: Some(run_id),
        correlation_id: input.correlation_id.clone(),
        consumed_at: Timestamp::now(),
        expires_at: input.expires_at,
    };
    match inner.store.publish_outputs(&outputs, &[consumption]).await {
        Ok(()) => {
            for output in &outputs {
                schedule(&inner, output, false).await;
            }
        }
        Err(err) => fail(
            &inner,
            format!(
                "agent {}: outputs of its run on {} were not persisted: {err}",
                spec.name, input.id
            ),
        ),
    }
    if inner.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
        inner.idle.notify_waiters();
    }
}

fn check_outputs(spec: &AgentSpec, outputs: Vec<Output>) -> Result<Vec<Output>, AgentError> {
    for output in &outputs {
        if !spec.publishes.contains(&output.type_name) {
            return Err(AgentError::new(
                "UndeclaredOutput",
                format!(
                    "agent {} published a {} but declares only {:?}",
                    spec.name, output.type_name, spec.publishes
                ),
            ));
        }
    }
    Ok(outputs)
}

fn output_artifact(
    output: Output,
    agent: &str,
    input: Option<&Artifact>,
    unit: &str,
    n: usize,
) -> Artifact {
    Artifact {
        id: output_id(unit, agent, n),
        type_name: output.type_name,
        payload: output.payload,
        produced_by: agent.into(),
        correlation_id: input.and_then(|i| i.correlation_id.clone()),
        partition_key: input.and_then(|i| i.partition_key.clone()),
        expires_at: None,
        tags: output.tags,
        visibility: output.visibility.unwrap_or_default(),
        created_at: Timestamp::now(),
        version: 1,
    }
}

fn error_artifact(
    agent: &str,
    run_id: &str,
    input: Option<&Artifact>,
    unit: &str,
    error: AgentError,
) -> Artifact {
    let payload = WorkflowError {
        failed_agent: agent.into(),
        error_type: error.error_type,
        error_message: error.message,
        timestamp: Timestamp::now(),
        task_id: run_id.into(),
    };
    let mut artifact = Artifact::of(&payload, format!("orchestrator#{agent}"))
        .expect("a WorkflowError always serialises");
    artifact.id = output_id(unit, agent, 0);
    artifact.correlation_id = input.and_then(|i| i.correlation_id.clone());
    artifact.partition_key = input.and_then(|i| i.partition_key.clone());
    artifact
}
