//! Swarm members on one store, in one test process: each member is its own `Flock` (and, where
//! a member must die without a word, its own Tokio runtime, shut down under it). The store is
//! the in-memory one here and `roost serve` behind `roost-sidecar` (the Dapr state API), so the
//! claims, feeds and commits are the ones separate processes use; the crash test with real
//! processes killed by SIGKILL is `swarm_processes.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roost_blackboard::store::{Expect, Put, StoreFuture, SwarmStore, Versioned};
use roost_blackboard::{
    AgentError, Artifact, ArtifactType, BlackboardStore, Consumption, DaprStore, Filter, Flock,
    MemoryStore, Output, Page, SwarmOptions,
};
use roost_sidecar::local::LocalDapr;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Task {
    n: u32,
}

impl ArtifactType for Task {
    const NAME: &'static str = "swarm.Task";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Step {
    n: u32,
    by: String,
}

impl ArtifactType for Step {
    const NAME: &'static str = "swarm.Step";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Done {
    n: u32,
}

impl ArtifactType for Done {
    const NAME: &'static str = "swarm.Done";
}

const COMPONENT: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: board
spec:
  type: state.roost
  version: v1
  metadata:
  - name: indexedFields
    value: "type, produced_by, correlation_id, artifact_id"
"#;

/// A swarm store through the Dapr state API: `roost serve` with `roost-sidecar` in front,
/// both in this process (kept alive by the second value).
async fn through_roost_serve() -> (Arc<dyn SwarmStore>, (LocalDapr, tempfile::TempDir)) {
    let dir = tempfile::tempdir().unwrap();
    let stack = LocalDapr::start(dir.path(), "swarm-app", COMPONENT).unwrap();
    let store = DaprStore::connect(&stack.grpc_endpoint, "board")
        .await
        .unwrap();
    (Arc::new(store), (stack, dir))
}

/// Handler runs per (input n, agent), across all members.
type Runs = Arc<Mutex<HashMap<(u32, String), usize>>>;

fn options(member: &str) -> SwarmOptions {
    SwarmOptions::new(member)
        .lease(Duration::from_millis(1500))
        .poll(Duration::from_millis(10))
}

/// planner: Task → Step, finisher: Step → Done; each run sleeps `work` and is counted.
fn member(store: Arc<dyn SwarmStore>, name: &str, runs: &Runs, work: Duration) -> Flock {
    let flock = Flock::swarm(store, options(name));
    let (r1, r2) = (Arc::clone(runs), Arc::clone(runs));
    let me = name.to_string();
    flock
        .agent("planner")
        .consumes::<Task>()
        .publishes::<Step>()
        .handler(move |ctx| {
            let (runs, me) = (Arc::clone(&r1), me.clone());
            async move {
                let task: Task = ctx.input()?;
                *runs
                    .lock()
                    .unwrap()
                    .entry((task.n, "planner".into()))
                    .or_default() += 1;
                tokio::time::sleep(work).await;
                Ok(vec![Output::of(&Step { n: task.n, by: me })?])
            }
        })
        .unwrap();
    flock
        .agent("finisher")
        .consumes::<Step>()
        .publishes::<Done>()
        .handler(move |ctx| {
            let runs = Arc::clone(&r2);
            async move {
                let step: Step = ctx.input()?;
                *runs
                    .lock()
                    .unwrap()
                    .entry((step.n, "finisher".into()))
                    .or_default() += 1;
                tokio::time::sleep(work).await;
                Ok(vec![Output::of(&Done { n: step.n })?])
            }
        })
        .unwrap();
    flock
}

/// Every input ran once per agent, and the board holds one Step and one Done per input with
/// the input's correlation id, each consumed once by its agent.
async fn check_exactly_once(store: &dyn BlackboardStore, runs: &Runs, inputs: u32) {
    let runs = runs.lock().unwrap().clone();
    for n in 0..inputs {
        for agent in ["planner", "finisher"] {
            assert_eq!(
                runs.get(&(n, agent.to_string())),
                Some(&1),
                "input {n}, {agent}: {runs:?}"
            );
        }
    }
    let tasks = store.list_by_type(Task::NAME).await.unwrap();
    assert_eq!(tasks.len(), inputs as usize);
    for (type_name, consumer) in [(Step::NAME, "planner"), (Done::NAME, "finisher")] {
        let outputs = store.list_by_type(type_name).await.unwrap();
        assert_eq!(outputs.len(), inputs as usize, "{type_name}");
        for output in &outputs {
            assert_eq!(output.produced_by, consumer);
            let n = output.payload["n"].as_u64().unwrap();
            let task = tasks
                .iter()
                .find(|t| t.payload["n"].as_u64() == Some(n))
                .unwrap();
            assert_eq!(output.correlation_id, task.correlation_id, "lineage of {n}");
        }
    }
    for task in &tasks {
        let consumed = store.consumptions(&task.id).await.unwrap();
        assert_eq!(consumed.len(), 1, "consumptions of {}", task.id);
        assert_eq!(consumed[0].consumer, "planner");
    }
}

async fn split_work(store: Arc<dyn SwarmStore>) {
    let runs: Runs = Arc::default();
    let members: Vec<Flock> = ["m1", "m2", "m3"]
        .iter()
        .map(|name| member(Arc::clone(&store), name, &runs, Duration::from_millis(15)))
        .collect();
    for m in &members {
        assert_eq!(m.start().await.unwrap(), 0);
    }
    const INPUTS: u32 = 60;
    for n in 0..INPUTS {
        members[(n % 2) as usize]
            .publish(&Task { n })
            .await
            .unwrap();
    }
    tokio::time::timeout(
        Duration::from_secs(120),
        futures_join(members.iter().map(|m| m.run_until_idle())),
    )
    .await
    .expect("the swarm goes idle");
    check_exactly_once(store.as_ref(), &runs, INPUTS).await;
    let stats: Vec<_> = members.iter().map(|m| m.swarm_stats().unwrap()).collect();
    for (name, s) in ["m1", "m2", "m3"].iter().zip(&stats) {
        // m3 publishes nothing: whatever it ran came to it through the feeds.
        assert!(s.committed > 0, "{name} ran nothing: {stats:?}");
        assert_eq!(s.lost, 0, "{name}: {s:?}");
    }
    assert_eq!(
        stats.iter().map(|s| s.committed).sum::<u64>(),
        2 * INPUTS as u64,
        "{stats:?}"
    );
    for m in &members {
        assert!(m.failures().is_empty(), "{:?}", m.failures());
        m.stop();
    }
}

async fn futures_join<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    for handle in handles {
        handle.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_one_store_split_the_work_and_run_each_pair_once() {
    split_work(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_through_roost_serve_split_the_work_and_run_each_pair_once() {
    let (store, _stack) = through_roost_serve().await;
    assert!(store.atomic(), "roost serve has transactions");
    split_work(store).await;
}

/// A member whose runtime is shut down mid-run (its handlers hang, its lease renewals stop
/// with it): the survivor takes its claims over when their leases run out and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_members_claims_are_finished_by_a_survivor() {
    dead_member(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_members_claims_are_finished_by_a_survivor_through_roost_serve() {
    let (store, _stack) = through_roost_serve().await;
    dead_member(store).await;
}

/// The running claims `owner` holds on the tasks' planner runs, read from the store.
async fn claims_held_by(store: &dyn SwarmStore, owner: &str) -> u64 {
    let tasks = store.list_by_type(Task::NAME).await.unwrap();
    let keys: Vec<String> = tasks
        .iter()
        .map(|task| format!("claim:{}:planner", task.id))
        .collect();
    let mut held = 0;
    for found in store.read(&keys).await.unwrap().into_iter().flatten() {
        let claim: serde_json::Value = serde_json::from_slice(&found.value).unwrap();
        if claim["owner"] == owner && claim["state"] == "running" {
            held += 1;
        }
    }
    held
}

async fn dead_member(store: Arc<dyn SwarmStore>) {
    let runs: Runs = Arc::default();
    const INPUTS: u32 = 8;
    // The doomed member, on its own runtime; its runs never end.
    let doomed_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let doomed_runs: Runs = Arc::default();
    let doomed = {
        let store = Arc::clone(&store);
        let doomed_runs = Arc::clone(&doomed_runs);
        doomed_runtime
            .spawn(async move {
                let flock = member(store, "doomed", &doomed_runs, Duration::from_secs(3600));
                flock.start().await.unwrap();
                for n in 0..INPUTS {
                    flock.publish(&Task { n }).await.unwrap();
                }
                flock
            })
            .await
            .unwrap()
    };
    // Wait until the doomed member holds claims, then kill it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while doomed.swarm_stats().unwrap().claimed == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the doomed member never claimed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Kill it, and wait until its worker thread is gone: a claim it was writing when told to
    // stop may still land in the store (it did, once in a CI run: the counter read at once said
    // 1, the survivor took over 2). So what it holds is counted in the store, afterwards.
    tokio::task::spawn_blocking(move || doomed_runtime.shutdown_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    let held = claims_held_by(store.as_ref(), "doomed").await;
    let counted = doomed.swarm_stats().unwrap().claimed;
    assert!(
        held >= 1 && held >= counted,
        "the store holds {held} of the doomed member's claims; it counted {counted}"
    );
    let survivor = member(
        Arc::clone(&store),
        "survivor",
        &runs,
        Duration::from_millis(5),
    );
    survivor.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), survivor.run_until_idle())
        .await
        .expect("the survivor goes idle");
    check_exactly_once(store.as_ref(), &runs, INPUTS).await;
    let stats = survivor.swarm_stats().unwrap();
    assert_eq!(stats.taken_over, held, "{stats:?}");
    assert!(stats.held_elsewhere >= held, "{stats:?}");
}

/// A member whose claim was taken while its handler ran commits nothing: its outputs, its
/// consumption record and its feed slot are one transaction with the claim's release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_claim_commits_nothing() {
    let store = Arc::new(MemoryStore::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let flock = Flock::swarm(Arc::clone(&store), options("slow"));
    let (g, s) = (Arc::clone(&gate), Arc::clone(&started));
    flock
        .agent("planner")
        .consumes::<Task>()
        .publishes::<Step>()
        .handler(move |ctx| {
            let (gate, started) = (Arc::clone(&g), Arc::clone(&s));
            async move {
                let task: Task = ctx.input()?;
                started.notify_one();
                gate.notified().await;
                Ok::<_, AgentError>(vec![Output::of(&Step {
                    n: task.n,
                    by: "slow".into(),
                })?])
            }
        })
        .unwrap();
    flock.start().await.unwrap();
    let task = flock.publish(&Task { n: 1 }).await.unwrap();
    started.notified().await;
    // Another process takes the claim over (as after a lease that ran out).
    let key = format!("claim:{}:planner", task.id);
    let other = serde_json::json!({"owner": "other", "run": "r", "state": "running",
        "expires_at_ms": u64::MAX / 2});
    assert!(
        store
            .write(&[Put::new(key, other.to_string().into_bytes(), Expect::Any)])
            .await
            .unwrap()
    );
    gate.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while flock.swarm_stats().unwrap().lost == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(flock.swarm_stats().unwrap().committed, 0);
    assert!(store.list_by_type(Step::NAME).await.unwrap().is_empty());
    assert!(store.consumptions(&task.id).await.unwrap().is_empty());
    let everything = store.query(&Filter::default(), 0, 0).await.unwrap();
    assert_eq!(
        everything.total, 1,
        "only the task: {:?}",
        everything.artifacts
    );
    flock.stop();
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Left {
    n: u32,
}

impl ArtifactType for Left {
    const NAME: &'static str = "swarm.Left";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Right {
    n: u32,
}

impl ArtifactType for Right {
    const NAME: &'static str = "swarm.Right";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Joined {
    left: u32,
    right: u32,
}

impl ArtifactType for Joined {
    const NAME: &'static str = "swarm.Joined";
}

fn gate_member(store: Arc<dyn SwarmStore>, name: &str, runs: &Arc<Mutex<Vec<String>>>) -> Flock {
    let flock = Flock::swarm(store, options(name));
    let runs = Arc::clone(runs);
    flock
        .agent("joiner")
        .consumes::<Left>()
        .and::<Right>()
        .publishes::<Joined>()
        .handler(move |ctx| {
            let runs = Arc::clone(&runs);
            async move {
                let left: Left = ctx.input()?;
                let right: Right = ctx.input()?;
                assert_eq!(ctx.inputs.len(), 2);
                assert!(
                    ctx.inputs
                        .iter()
                        .all(|i| i.correlation_id == ctx.correlation_id)
                );
                runs.lock()
                    .unwrap()
                    .push(ctx.correlation_id.clone().unwrap());
                Ok(vec![Output::of(&Joined {
                    left: left.n,
                    right: right.n,
                })?])
            }
        })
        .unwrap();
    flock
}

/// An AND gate runs once per correlation id, when one artifact of each type is there,
/// whichever member published them and in whatever order; an incomplete one does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_and_gate_runs_once_per_correlation_with_all_its_inputs() {
    and_gate(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_and_gate_through_roost_serve() {
    let (store, _stack) = through_roost_serve().await;
    and_gate(store).await;
}

async fn and_gate(store: Arc<dyn SwarmStore>) {
    use roost_blackboard::PublishOptions;
    let runs: Arc<Mutex<Vec<String>>> = Arc::default();
    let a = gate_member(Arc::clone(&store), "a", &runs);
    let b = gate_member(Arc::clone(&store), "b", &runs);
    a.start().await.unwrap();
    b.start().await.unwrap();
    let with = |c: String| PublishOptions::default().correlation_id(c);
    for n in 0..10u32 {
        let c = format!("c{n}");
        if n % 2 == 0 {
            a.publish_with(&Left { n }, with(c.clone())).await.unwrap();
            b.publish_with(&Right { n: n + 100 }, with(c))
                .await
                .unwrap();
        } else if n != 9 {
            b.publish_with(&Right { n: n + 100 }, with(c.clone()))
                .await
                .unwrap();
            a.publish_with(&Left { n }, with(c)).await.unwrap();
        } else {
            // c9 only ever gets its left side.
            a.publish_with(&Left { n }, with(c)).await.unwrap();
        }
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        a.run_until_idle().await;
        b.run_until_idle().await;
    })
    .await
    .expect("idle");
    let mut ran = runs.lock().unwrap().clone();
    ran.sort();
    let expected: Vec<String> = (0..9).map(|n| format!("c{n}")).collect();
    assert_eq!(ran, expected);
    let joined = store.list_by_type(Joined::NAME).await.unwrap();
    assert_eq!(joined.len(), 9);
    for j in &joined {
        let (left, right) = (
            j.payload["left"].as_u64().unwrap(),
            j.payload["right"].as_u64().unwrap(),
        );
        assert_eq!(right, left + 100, "inputs of one correlation: {j:?}");
        assert_eq!(
            j.correlation_id.as_deref(),
            Some(format!("c{left}").as_str())
        );
    }
    // Both inputs carry the gate run's consumption record.
    for input in store
        .query(&Filter::default().correlation("c4"), 0, 0)
        .await
        .unwrap()
        .artifacts
    {
        if input.type_name == Joined::NAME {
            continue;
        }
        let consumed = store.consumptions(&input.id).await.unwrap();
        assert_eq!(consumed.len(), 1, "{input:?}");
        assert_eq!(consumed[0].consumer, "joiner");
    }
    // The gate lives in the store: a new member completes c9 after the others stopped.
    a.stop();
    b.stop();
    let c = gate_member(Arc::clone(&store), "c", &runs);
    c.start().await.unwrap();
    c.publish_with(&Right { n: 109 }, with("c9".into()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), c.run_until_idle())
        .await
        .expect("idle");
    assert_eq!(runs.lock().unwrap().len(), 10);
    assert_eq!(store.list_by_type(Joined::NAME).await.unwrap().len(), 10);
    c.stop();
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Beat {
    at_ms: u64,
}

impl ArtifactType for Beat {
    const NAME: &'static str = "swarm.Beat";
}

/// A scheduled agent runs once per period in the whole swarm, not once per member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_agent_runs_once_per_period_in_the_swarm() {
    let store: Arc<dyn SwarmStore> = Arc::new(MemoryStore::new());
    let runs: Arc<Mutex<Vec<String>>> = Arc::default();
    let members: Vec<Flock> = ["t1", "t2", "t3"]
        .iter()
        .map(|name| {
            let flock = Flock::swarm(Arc::clone(&store), options(name));
            let runs = Arc::clone(&runs);
            flock
                .agent("metronome")
                .every(Duration::from_millis(150))
                .publishes::<Beat>()
                .handler(move |ctx| {
                    let runs = Arc::clone(&runs);
                    async move {
                        assert!(ctx.inputs.is_empty());
                        runs.lock().unwrap().push(ctx.run_id.clone());
                        Ok(vec![Output::of(&Beat { at_ms: 0 })?])
                    }
                })
                .unwrap();
            flock
        })
        .collect();
    for m in &members {
        m.start().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for m in &members {
        m.stop();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ran = runs.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<&String> = ran.iter().collect();
    assert_eq!(distinct.len(), ran.len(), "a period ran twice: {ran:?}");
    assert!(ran.len() >= 5, "8 periods passed, {} ran", ran.len());
    assert_eq!(
        store.list_by_type(Beat::NAME).await.unwrap().len(),
        ran.len()
    );
}

/// The status of a correlation, from the store: pending (wanted, not claimed), running,
/// done, failed (a final WorkflowError) — the same from another member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_status_is_read_from_the_store() {
    use roost_blackboard::{PublishOptions, RunState};
    let store: Arc<dyn SwarmStore> = Arc::new(MemoryStore::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    let make = |name: &str| {
        let flock = Flock::swarm(Arc::clone(&store), options(name));
        let gate = Arc::clone(&gate);
        flock
            .agent("planner")
            .consumes::<Task>()
            .publishes::<Step>()
            .handler(move |ctx| {
                let gate = Arc::clone(&gate);
                async move {
                    let task: Task = ctx.input()?;
                    if task.n == 13 {
                        return Err(AgentError::new("Unlucky", "13"));
                    }
                    gate.notified().await;
                    Ok(vec![Output::of(&Step {
                        n: task.n,
                        by: "x".into(),
                    })?])
                }
            })
            .unwrap();
        flock
    };
    let one = make("s1");
    let other = make("s2");
    one.start().await.unwrap();
    let with = |c: &str| PublishOptions::default().correlation_id(c);
    one.publish_with(&Task { n: 1 }, with("waits").persist_only())
        .await
        .unwrap();
    assert_eq!(one.status("waits").await.unwrap().state, RunState::Pending);
    one.publish_with(&Task { n: 2 }, with("runs"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while one.status("runs").await.unwrap().state != RunState::Running {
        assert!(tokio::time::Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Another member, never started, reads the same.
    let seen = other.status("runs").await.unwrap();
    assert_eq!(
        (seen.state, seen.running, seen.artifacts),
        (RunState::Running, 1, 1)
    );
    gate.notify_one();
    while one.status("runs").await.unwrap().state != RunState::Done {
        assert!(tokio::time::Instant::now() < deadline, "never done");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = other.status("runs").await.unwrap();
    assert_eq!((done.done, done.artifacts, done.failed), (1, 2, 0));
    one.publish_with(&Task { n: 13 }, with("fails"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), one.run_until_idle())
        .await
        .expect("idle");
    let failed = other.status("fails").await.unwrap();
    assert_eq!((failed.state, failed.failed), (RunState::Failed, 1));
    one.stop();
}

/// Retries with backoff, then the dead letter: a WorkflowError naming the attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_runs_are_retried_then_dead_lettered() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let store = Arc::new(MemoryStore::new());
    let flock = Flock::new(Arc::clone(&store));
    let attempts: Arc<HashMap<u32, AtomicU32>> =
        Arc::new((0..2).map(|n| (n, AtomicU32::new(0))).collect());
    let seen = Arc::clone(&attempts);
    flock
        .agent("flaky")
        .consumes::<Task>()
        .publishes::<Step>()
        .retries(2, Duration::from_millis(10))
        .handler(move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                let task: Task = ctx.input()?;
                let attempt = seen[&task.n].fetch_add(1, Ordering::SeqCst) + 1;
                // Task 0 succeeds on its third attempt; task 1 never does.
                if task.n == 1 || attempt < 3 {
                    return Err(AgentError::new("Flaky", format!("attempt {attempt}")));
                }
                Ok(vec![Output::of(&Step {
                    n: task.n,
                    by: "flaky".into(),
                })?])
            }
        })
        .unwrap();
    flock.publish(&Task { n: 0 }).await.unwrap();
    flock.publish(&Task { n: 1 }).await.unwrap();
    flock.run_until_idle().await;
    assert_eq!(attempts[&0].load(Ordering::SeqCst), 3);
    assert_eq!(attempts[&1].load(Ordering::SeqCst), 3);
    let steps = store.list_by_type(Step::NAME).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].payload["n"], 0);
    let errors = store
        .list_by_type(roost_blackboard::WorkflowError::NAME)
        .await
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0].payload["error_message"].as_str().unwrap();
    assert!(message.ends_with("(after 3 attempts)"), "{message}");
}

/// Gates and scheduled agents keep their state in the store: a flock that is not a swarm
/// refuses them.
#[test]
fn gates_and_timers_need_a_swarm() {
    let flock = Flock::new(MemoryStore::new());
    let gate = flock
        .agent("joiner")
        .consumes::<Left>()
        .and::<Right>()
        .handler(|_| async { Ok(vec![]) });
    assert!(
        matches!(gate, Err(roost_blackboard::Error::Agent { .. })),
        "{gate:?}"
    );
    let timer = flock
        .agent("metronome")
        .every(Duration::from_secs(1))
        .handler(|_| async { Ok(vec![]) });
    assert!(
        matches!(timer, Err(roost_blackboard::Error::Agent { .. })),
        "{timer:?}"
    );
}

/// Retention: an artifact published with a TTL, or of a type with one, expires; its
/// consumption records and its claims expire with it; what has none stays.
async fn retention(store: Arc<dyn SwarmStore>) {
    use roost_blackboard::PublishOptions;
    let runs: Runs = Arc::default();
    let flock = member(Arc::clone(&store), "r1", &runs, Duration::ZERO)
        .retain::<Step>(Duration::from_secs(1));
    flock.start().await.unwrap();
    let kept = flock.publish(&Task { n: 1 }).await.unwrap();
    let short = flock
        .publish_with(
            &Task { n: 2 },
            PublishOptions::default().ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), flock.run_until_idle())
        .await
        .expect("idle");
    let claim = |id: &str| format!("claim:{id}:planner");
    assert!(store.get(&short.id).await.unwrap().is_some());
    assert_eq!(store.consumptions(&short.id).await.unwrap().len(), 1);
    assert_eq!(store.list_by_type(Step::NAME).await.unwrap().len(), 2);
    let claims = store
        .read(&[claim(&short.id), claim(&kept.id)])
        .await
        .unwrap();
    assert!(claims.iter().all(Option::is_some), "{claims:?}");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(
        store.get(&short.id).await.unwrap().is_none(),
        "the short-lived task stays"
    );
    assert!(store.get(&kept.id).await.unwrap().is_some());
    assert!(store.consumptions(&short.id).await.unwrap().is_empty());
    assert_eq!(store.consumptions(&kept.id).await.unwrap().len(), 1);
    // Every Step had its type's retention; the Done artifacts had none.
    assert!(store.list_by_type(Step::NAME).await.unwrap().is_empty());
    assert_eq!(store.list_by_type(Done::NAME).await.unwrap().len(), 2);
    let claims = store
        .read(&[claim(&short.id), claim(&kept.id)])
        .await
        .unwrap();
    assert!(claims[0].is_none(), "the claim outlived its artifact");
    assert!(claims[1].is_some(), "a claim of a kept artifact expired");
    flock.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_in_memory() {
    retention(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_through_roost_serve() {
    let (store, _stack) = through_roost_serve().await;
    retention(store).await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tally {
    ns: Vec<u32>,
}

impl ArtifactType for Tally {
    const NAME: &'static str = "swarm.Tally";
}

fn batch_member(
    store: Arc<dyn SwarmStore>,
    name: &str,
    batches: &Arc<Mutex<Vec<Vec<u32>>>>,
    max_wait: Duration,
) -> Flock {
    let flock = Flock::swarm(store, options(name));
    let batches = Arc::clone(batches);
    flock
        .agent("collector")
        .consumes::<Task>()
        .batch(5, max_wait)
        .publishes::<Tally>()
        .handler(move |ctx| {
            let batches = Arc::clone(&batches);
            async move {
                let mut ns: Vec<u32> = ctx
                    .inputs
                    .iter()
                    .map(|i| i.payload_as::<Task>().map(|t| t.n))
                    .collect::<Result<_, _>>()?;
                ns.sort();
                batches.lock().unwrap().push(ns.clone());
                Ok(vec![Output::of(&Tally { ns })?])
            }
        })
        .unwrap();
    flock
}

/// Batches by count and by time: every artifact in exactly one batch in the swarm, full
/// batches at once, the rest after the wait; the open batch survives its members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_by_count_and_by_time_hold_each_artifact_once() {
    batches(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_through_roost_serve() {
    let (store, _stack) = through_roost_serve().await;
    batches(store).await;
}

async fn batches(store: Arc<dyn SwarmStore>) {
    let batches: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
    // Two full batches of five, and the last two once the wait is over: the wait is long
    // enough for twelve joins on a loaded machine (a join is a few milliseconds).
    let wait = Duration::from_secs(2);
    let a = batch_member(Arc::clone(&store), "a", &batches, wait);
    let b = batch_member(Arc::clone(&store), "b", &batches, wait);
    a.start().await.unwrap();
    b.start().await.unwrap();
    for n in 0..12u32 {
        [&a, &b][(n % 2) as usize]
            .publish(&Task { n })
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        a.run_until_idle().await;
        b.run_until_idle().await;
    })
    .await
    .expect("idle");
    let mut ran = batches.lock().unwrap().clone();
    let mut sizes: Vec<usize> = ran.iter().map(Vec::len).collect();
    sizes.sort();
    assert_eq!(sizes, vec![2, 5, 5], "{ran:?}");
    let mut all: Vec<u32> = ran.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(
        all,
        (0..12).collect::<Vec<_>>(),
        "each task in one batch: {ran:?}"
    );
    assert_eq!(store.list_by_type(Tally::NAME).await.unwrap().len(), 3);
    for task in store.list_by_type(Task::NAME).await.unwrap() {
        let consumed = store.consumptions(&task.id).await.unwrap();
        assert_eq!(consumed.len(), 1, "{task:?}");
    }
    // The open batch lives in the store: three tasks joined it under member a, which stops;
    // member c adds two and runs the full batch of five.
    a.stop();
    b.stop();
    batches.lock().unwrap().clear();
    let a2 = Flock::swarm(Arc::clone(&store), options("a"));
    a2.agent("collector")
        .consumes::<Task>()
        .batch(5, Duration::from_secs(3600))
        .publishes::<Tally>()
        .handler(|_| async { Ok(vec![]) })
        .unwrap();
    // a2 joins tasks to the batch but never gets to run it (the wait is an hour).
    a2.start().await.unwrap();
    for n in 100..103u32 {
        a2.publish(&Task { n }).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a2.swarm_stats().unwrap().committed < 3 {
        assert!(tokio::time::Instant::now() < deadline, "tasks never joined");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a2.stop();
    ran = Vec::new();
    assert!(batches.lock().unwrap().is_empty());
    // c's wait is an hour too: the batch runs because it is full, however long the joins
    // take (with a short wait, a slow machine sealed it early, before c's second task).
    let c = batch_member(Arc::clone(&store), "c", &batches, Duration::from_secs(3600));
    c.start().await.unwrap();
    for n in 103..105u32 {
        c.publish(&Task { n }).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), c.run_until_idle())
        .await
        .expect("idle");
    ran.extend(batches.lock().unwrap().iter().cloned());
    assert_eq!(ran, vec![(100..105).collect::<Vec<u32>>()]);
    c.stop();
}

/// Back-pressure: a member never runs more than `max_in_flight` handlers at once (all agents
/// together), nor more than an agent's `max_concurrency` of one agent; the rest wait in the
/// feed, not as tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_runs_at_most_its_in_flight_limit() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let store: Arc<dyn SwarmStore> = Arc::new(MemoryStore::new());
    let flock = Flock::swarm(Arc::clone(&store), options("bounded").max_in_flight(3));
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let planner_now = Arc::new(AtomicUsize::new(0));
    let planner_peak = Arc::new(AtomicUsize::new(0));
    for (agent, limit) in [("planner", 2usize), ("auditor", 8)] {
        let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
        let (pn, pp) = (Arc::clone(&planner_now), Arc::clone(&planner_peak));
        let is_planner = agent == "planner";
        flock
            .agent(agent)
            .consumes::<Task>()
            .max_concurrency(limit)
            .handler(move |_| {
                let (now, peak, pn, pp) = (
                    Arc::clone(&now),
                    Arc::clone(&peak),
                    Arc::clone(&pn),
                    Arc::clone(&pp),
                );
                async move {
                    peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    if is_planner {
                        pp.fetch_max(pn.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if is_planner {
                        pn.fetch_sub(1, Ordering::SeqCst);
                    }
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(vec![])
                }
            })
            .unwrap();
    }
    flock.start().await.unwrap();
    for n in 0..20 {
        flock.publish(&Task { n }).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), flock.run_until_idle())
        .await
        .expect("idle");
    assert_eq!(flock.swarm_stats().unwrap().committed, 40);
    assert_eq!(peak.load(Ordering::SeqCst), 3, "all agents together");
    assert!(
        planner_peak.load(Ordering::SeqCst) <= 2,
        "one agent's limit"
    );
    flock.stop();
}

/// The circuit breaker in a swarm member: a self-triggering agent stops after
/// `max_agent_iterations` runs of this process between idle points, and starts again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_bounds_a_self_triggering_agent_in_a_swarm() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let store: Arc<dyn SwarmStore> = Arc::new(MemoryStore::new());
    let flock = Flock::swarm(Arc::clone(&store), options("loop")).max_agent_iterations(5);
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    flock
        .agent("echo")
        .consumes::<Task>()
        .publishes::<Task>()
        .prevent_self_trigger(false)
        .handler(move |ctx| {
            let runs = Arc::clone(&counted);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let task: Task = ctx.input()?;
                Ok(vec![Output::of(&Task { n: task.n + 1 })?])
            }
        })
        .unwrap();
    flock.start().await.unwrap();
    flock.publish(&Task { n: 0 }).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), flock.run_until_idle())
        .await
        .expect("idle");
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    flock.publish(&Task { n: 100 }).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), flock.run_until_idle())
        .await
        .expect("idle");
    assert_eq!(runs.load(Ordering::SeqCst), 10);
    flock.stop();
}

/// An AND gate with a window joins only artifacts created close enough together: a late
/// partner waits for one of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_join_pairs_only_artifacts_close_in_time() {
    use roost_blackboard::PublishOptions;
    let store: Arc<dyn SwarmStore> = Arc::new(MemoryStore::new());
    let flock = Flock::swarm(Arc::clone(&store), options("w"));
    let joined: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
    let seen = Arc::clone(&joined);
    flock
        .agent("joiner")
        .consumes::<Left>()
        .and::<Right>()
        .within(Duration::from_millis(300))
        .publishes::<Joined>()
        .handler(move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                let (left, right): (Left, Right) = (ctx.input()?, ctx.input()?);
                seen.lock().unwrap().push((left.n, right.n));
                Ok(vec![Output::of(&Joined {
                    left: left.n,
                    right: right.n,
                })?])
            }
        })
        .unwrap();
    flock.start().await.unwrap();
    let with = || PublishOptions::default().correlation_id("c");
    flock.publish_with(&Left { n: 1 }, with()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    flock.publish_with(&Right { n: 2 }, with()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), flock.run_until_idle())
        .await
        .expect("idle");
    assert!(joined.lock().unwrap().is_empty(), "joined across 700 ms");
    flock.publish_with(&Left { n: 3 }, with()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), flock.run_until_idle())
        .await
        .expect("idle");
    assert_eq!(*joined.lock().unwrap(), vec![(3, 2)]);
    flock.stop();
}

/// Runs belong to one live member (rendezvous hashing); the others leave them to it and
/// look again only after `defer`, with one bulk read. So a swarm makes far fewer losing
/// claim writes than if every member tried every trigger at once — counted, not timed. A
/// member is one of the live ones from its start on, for every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_leave_a_run_to_the_member_it_belongs_to() {
    async fn writes(defer: Duration) -> (u64, u64) {
        let store: Arc<dyn SwarmStore> = Arc::new(MemoryStore::new());
        let runs: Runs = Arc::default();
        let members: Vec<Flock> = ["m1", "m2", "m3"]
            .iter()
            .map(|name| {
                let flock = Flock::swarm(Arc::clone(&store), options(name).defer(defer));
                let counted = Arc::clone(&runs);
                flock
                    .agent("planner")
                    .consumes::<Task>()
                    .handler(move |ctx| {
                        let runs = Arc::clone(&counted);
                        async move {
                            let task: Task = ctx.input()?;
                            *runs
                                .lock()
                                .unwrap()
                                .entry((task.n, "planner".into()))
                                .or_default() += 1;
                            Ok(vec![])
                        }
                    })
                    .unwrap();
                flock
            })
            .collect();
        // A member with no agents publishes: no run may be left to it.
        let publisher = Flock::swarm(Arc::clone(&store), options("publisher").defer(defer));
        publisher.start().await.unwrap();
        // The members join one after the other while the earlier ones poll, and the work
        // comes at once: a member that has started is seen by the others at their next poll.
        for m in &members {
            tokio::time::sleep(Duration::from_millis(60)).await;
            m.start().await.unwrap();
        }
        for n in 0..60 {
            publisher.publish(&Task { n }).await.unwrap();
        }
        for m in &members {
            tokio::time::timeout(Duration::from_secs(60), m.run_until_idle())
                .await
                .expect("idle");
        }
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 60);
        assert!(runs.values().all(|n| *n == 1), "{runs:?}");
        let stats: Vec<_> = members.iter().map(|m| m.swarm_stats().unwrap()).collect();
        for m in &members {
            m.stop();
        }
        publisher.stop();
        // With a wait this long, a run left to its member was run by it.
        let run_here: u64 = stats.iter().map(|s| s.deferred_run_here).sum();
        if !defer.is_zero() {
            assert!(
                run_here <= 3,
                "{run_here} deferred runs were left to nobody: {stats:?}"
            );
        }
        (
            stats.iter().map(|s| s.contended).sum(),
            stats.iter().map(|s| s.deferred).sum(),
        )
    }
    let (losing_at_once, deferred_at_once) = writes(Duration::ZERO).await;
    let (losing_deferred, deferred) = writes(Duration::from_millis(300)).await;
    eprintln!(
        "losing claims: {losing_at_once} at once, {losing_deferred} deferred ({deferred} deferred)"
    );
    assert_eq!(deferred_at_once, 0);
    // Two of three members defer each run.
    assert!(deferred >= 60, "{deferred}");
    assert!(
        losing_deferred * 4 < losing_at_once.max(1),
        "claims lost to another member: {losing_deferred} with deferral, {losing_at_once} without"
    );
}

/// A store without transactions over the in-memory one, as a Dapr state store without
/// transactions behaves: a commit writes artifacts, then consumption records, then the puts
/// one by one, stopping at the first whose expectation fails. Armed with a key suffix, it
/// "dies" right after writing a put whose key ends with it: that commit never returns, as when
/// the process is killed between two writes.
struct WithoutTransactions {
    inner: Arc<MemoryStore>,
    die_after: Option<String>,
    died: tokio::sync::Notify,
}

impl WithoutTransactions {
    fn new(inner: Arc<MemoryStore>, die_after: Option<&str>) -> WithoutTransactions {
        WithoutTransactions {
            inner,
            die_after: die_after.map(str::to_string),
            died: tokio::sync::Notify::new(),
        }
    }
}

impl BlackboardStore for WithoutTransactions {
    fn publish<'a>(&'a self, artifact: &'a Artifact) -> StoreFuture<'a, ()> {
        self.inner.publish(artifact)
    }

    fn publish_outputs<'a>(
        &'a self,
        outputs: &'a [Artifact],
        consumptions: &'a [Consumption],
    ) -> StoreFuture<'a, ()> {
        self.inner.publish_outputs(outputs, consumptions)
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Artifact>> {
        self.inner.get(id)
    }

    fn query<'a>(
        &'a self,
        filter: &'a Filter,
        limit: usize,
        offset: usize,
    ) -> StoreFuture<'a, Page> {
        self.inner.query(filter, limit, offset)
    }

    fn record_consumptions<'a>(&'a self, records: &'a [Consumption]) -> StoreFuture<'a, ()> {
        self.inner.record_consumptions(records)
    }

    fn consumptions<'a>(&'a self, artifact_id: &'a str) -> StoreFuture<'a, Vec<Consumption>> {
        self.inner.consumptions(artifact_id)
    }
}

impl SwarmStore for WithoutTransactions {
    fn read<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, Vec<Option<Versioned>>> {
        self.inner.read(keys)
    }

    fn commit<'a>(
        &'a self,
        artifacts: &'a [Artifact],
        consumptions: &'a [Consumption],
        puts: &'a [Put],
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if !artifacts.is_empty() || !consumptions.is_empty() {
                self.inner.commit(artifacts, consumptions, &[]).await?;
            }
            for put in puts {
                if !self
                    .inner
                    .commit(&[], &[], std::slice::from_ref(put))
                    .await?
                {
                    return Ok(false);
                }
                if self
                    .die_after
                    .as_deref()
                    .is_some_and(|suffix| put.key.ends_with(suffix))
                {
                    self.died.notify_one();
                    std::future::pending::<()>().await;
                }
            }
            Ok(true)
        })
    }

    fn atomic(&self) -> bool {
        false
    }
}

/// The record under `key` as JSON, with its etag.
async fn json_record(store: &MemoryStore, key: &str) -> (serde_json::Value, String) {
    let found = store.read(&[key.to_string()]).await.unwrap()[0]
        .clone()
        .unwrap_or_else(|| panic!("no record under {key}"));
    (serde_json::from_slice(&found.value).unwrap(), found.etag)
}

/// Sets a claim's lease end (as another process's claim would carry it).
async fn set_lease_end(store: &MemoryStore, claim_key: &str, expires_at_ms: u64) {
    let (mut claim, etag) = json_record(store, claim_key).await;
    claim["expires_at_ms"] = serde_json::json!(expires_at_ms);
    let put = Put::new(
        claim_key,
        claim.to_string().into_bytes(),
        Expect::Etag(etag),
    );
    assert!(store.write(&[put]).await.unwrap());
}

/// On a store without transactions, a member killed after it wrote an artifact into the open
/// batch but before it released the artifact's claim leaves the claim running. The batch is
/// sealed and run by a survivor; when the dead member's lease runs out, the survivor takes the
/// claim over and joins the artifact again — which must find that the agent already consumed
/// it (the batch has left the open record's unfinished list by then), and not put it in a
/// second batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_taken_over_after_its_batch_ran_does_not_run_the_artifact_again() {
    let memory = Arc::new(MemoryStore::new());
    let batches: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
    let wait = Duration::from_millis(200);
    // The doomed member, on its own runtime: its store dies right after the open batch
    // record is written, before the claim's release.
    let doomed_store = Arc::new(WithoutTransactions::new(Arc::clone(&memory), Some(":open")));
    let doomed_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let task = {
        let store: Arc<dyn SwarmStore> = doomed_store.clone();
        let batches = Arc::clone(&batches);
        doomed_runtime
            .spawn(async move {
                let flock = batch_member(store, "doomed", &batches, wait);
                flock.start().await.unwrap();
                let task = flock.publish(&Task { n: 1 }).await.unwrap();
                // Kept alive (with its runtime) until the runtime is shut down.
                std::mem::forget(flock);
                task
            })
            .await
            .unwrap()
    };
    tokio::time::timeout(Duration::from_secs(10), doomed_store.died.notified())
        .await
        .expect("the doomed member wrote the open batch record");
    doomed_runtime.shutdown_background();
    // Its claim: still running, with a lease that lasts until the test lets it run out.
    let claim_key = format!("claim:{}:collector", task.id);
    let (claim, _) = json_record(&memory, &claim_key).await;
    assert_eq!(claim["state"], "running", "{claim}");
    set_lease_end(&memory, &claim_key, u64::MAX / 2).await;
    let open_key = "batch:collector:open";
    let (open, _) = json_record(&memory, open_key).await;
    assert_eq!(open["ids"], serde_json::json!([task.id]), "{open}");

    // The survivor seals the batch once its wait is over, runs it, and forgets it.
    let survivor_store: Arc<dyn SwarmStore> =
        Arc::new(WithoutTransactions::new(Arc::clone(&memory), None));
    let survivor = batch_member(survivor_store, "survivor", &batches, wait);
    survivor.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (open, _) = json_record(&memory, open_key).await;
        let forgotten =
            open["ids"] == serde_json::json!([]) && open["unfinished"] == serde_json::json!([]);
        if forgotten && !batches.lock().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch never ran and left the open record: {open}, ran {:?}",
            batches.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*batches.lock().unwrap(), vec![vec![1]]);
    assert_eq!(memory.consumptions(&task.id).await.unwrap().len(), 1);

    // Now the dead member's lease runs out: the survivor takes the join over.
    set_lease_end(&memory, &claim_key, 0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (claim, _) = json_record(&memory, &claim_key).await;
        if claim["state"] == "done" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the survivor never finished the taken-over join: {claim}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(survivor.swarm_stats().unwrap().taken_over, 1);
    // A second batch holding the task would be sealed after the wait and run: give it three
    // waits.
    tokio::time::sleep(wait * 3).await;
    tokio::time::timeout(Duration::from_secs(20), survivor.run_until_idle())
        .await
        .expect("idle");
    assert_eq!(
        *batches.lock().unwrap(),
        vec![vec![1]],
        "the task ran in one batch only"
    );
    assert_eq!(memory.consumptions(&task.id).await.unwrap().len(), 1);
    let (open, _) = json_record(&memory, open_key).await;
    assert_eq!(open["ids"], serde_json::json!([]), "{open}");
    survivor.stop();
}
