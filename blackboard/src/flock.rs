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
use crate::store::BlackboardStore;
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
}

struct AgentRuntime {
    spec: AgentSpec,
    slots: Arc<Semaphore>,
    /// Runs scheduled since the last idle point (the circuit breaker's counter).
    iterations: AtomicUsize,
    /// Artifacts already handed to this agent by this process.
    seen: Mutex<HashSet<String>>,
}

struct Inner {
    store: Arc<dyn BlackboardStore>,
    agents: RwLock<Vec<Arc<AgentRuntime>>>,
    max_agent_iterations: AtomicUsize,
    pending: AtomicUsize,
    idle: Notify,
    /// Failures of the orchestrator itself (a store that refused outputs), newest last.
    failures: Mutex<Vec<String>>,
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
        Flock {
            inner: Arc::new(Inner {
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
        self.inner.store.publish(&artifact).await?;
        if !options.persist_only {
            schedule(&self.inner, &artifact, false).await;
        }
        Ok(artifact)
    }

    /// Waits until no agent run is pending or running, then resets the circuit breakers.
    pub async fn run_until_idle(&self) {
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

fn fail(inner: &Inner, message: String) {
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
        if spec.prevent_self_trigger && artifact.produced_by == spec.name {
            continue;
        }
        // Visibility first: an agent that may not see the artifact is never triggered.
        if !artifact
            .visibility
            .allows(&spec.identity, artifact.created_at, now)
        {
            continue;
        }
        if !spec.subscriptions.iter().any(|s| s.matches(artifact)) {
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
        let limit = inner.max_agent_iterations.load(Ordering::Relaxed);
        if agent.iterations.fetch_add(1, Ordering::AcqRel) >= limit {
            tracing::warn!(agent = %spec.name, limit, "circuit breaker open: run skipped");
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

/// One agent run: handler, outputs (or a WorkflowError), persist with the consumption record,
/// then schedule the outputs.
async fn run_agent(inner: Arc<Inner>, agent: Arc<AgentRuntime>, input: Artifact) {
    let spec = &agent.spec;
    let permit = Arc::clone(&agent.slots).acquire_owned().await;
    let run_id = new_id();
    let ctx = Context {
        agent: spec.name.clone(),
        run_id: run_id.clone(),
        correlation_id: input.correlation_id.clone(),
        inputs: vec![input.clone()],
    };
    let handler = spec.handler.clone();
    // The handler runs in its own task, so a panic is an agent failure, not ours.
    let result = match handler {
        Some(handler) => match tokio::spawn(handler(ctx)).await {
            Ok(result) => result,
            Err(join) => Err(AgentError::new("Panic", join.to_string())),
        },
        None => Err(AgentError::new("AgentError", "no handler")),
    };
    drop(permit);
    let outputs = match result.and_then(|outputs| check_outputs(spec, outputs)) {
        Ok(outputs) => outputs
            .into_iter()
            .map(|output| output_artifact(output, &spec.name, &input))
            .collect(),
        Err(error) => {
            tracing::warn!(agent = %spec.name, error = %error.message, "agent run failed");
            vec![error_artifact(&spec.name, &run_id, &input, error)]
        }
    };
    let consumption = Consumption {
        artifact_id: input.id.clone(),
        consumer: spec.name.clone(),
        run_id: Some(run_id),
        correlation_id: input.correlation_id.clone(),
        consumed_at: Timestamp::now(),
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

fn output_artifact(output: Output, agent: &str, input: &Artifact) -> Artifact {
    Artifact {
        id: new_id(),
        type_name: output.type_name,
        payload: output.payload,
        produced_by: agent.into(),
        correlation_id: input.correlation_id.clone(),
        partition_key: input.partition_key.clone(),
        tags: output.tags,
        visibility: output.visibility.unwrap_or_default(),
        created_at: Timestamp::now(),
        version: 1,
    }
}

fn error_artifact(agent: &str, run_id: &str, input: &Artifact, error: AgentError) -> Artifact {
    let payload = WorkflowError {
        failed_agent: agent.into(),
        error_type: error.error_type,
        error_message: error.message,
        timestamp: Timestamp::now(),
        task_id: run_id.into(),
    };
    let mut artifact = Artifact::of(&payload, format!("orchestrator#{agent}"))
        .expect("a WorkflowError always serialises");
    artifact.correlation_id = input.correlation_id.clone();
    artifact.partition_key = input.partition_key.clone();
    artifact
}
