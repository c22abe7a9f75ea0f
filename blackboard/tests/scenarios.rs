//! One scenario table, run against every store implementation: the store contract (upserts,
//! filters and pages against a reference, consumptions, summaries) and the orchestration
//! rules on top of it (visibility, subscriptions, failures, circuit breaker, concurrency).
//! Restart safety runs on the durable store. The Dapr store runs against a real `roost serve`
//! with `roost-sidecar` in front (`LocalDapr`: both in process, on a temporary socket folder
//! and loopback ports) and, as "daprd", with an unmodified daprd in front (built by
//! `tests/dapr/build.sh`; skipped, saying so, where there is none, and required under
//! `CI=true`), so the path is the one a Dapr app takes: Dapr state API → sidecar → pluggable
//! component.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use roost_blackboard::store::page_of;
use roost_blackboard::{
    AgentError, Artifact, ArtifactType, BlackboardStore, Consumption, DaprStore, EmbeddedStore,
    Filter, Flock, MemoryStore, Output, PublishOptions, Summary, Timestamp, Visibility,
    WorkflowError,
};
use roost_sidecar::daprd;
use roost_sidecar::local::LocalDapr;
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Idea {
    text: String,
    score: u32,
}

impl ArtifactType for Idea {
    const NAME: &'static str = "test.Idea";
    fn validate(&self) -> Result<(), String> {
        if self.text.is_empty() {
            return Err("text must not be empty".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Plan {
    steps: Vec<String>,
}

impl ArtifactType for Plan {
    const NAME: &'static str = "test.Plan";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Review {
    verdict: String,
}

impl ArtifactType for Review {
    const NAME: &'static str = "test.Review";
}

const STACK_COMPONENT: &str = r#"
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

/// Dapr's own in-memory store, behind daprd.
const MEMORY_COMPONENT: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: board
spec:
  type: state.in-memory
  version: v1
  metadata: []
"#;

/// What keeps a store alive for the length of a test.
#[allow(dead_code)]
enum Keep {
    Nothing,
    Dir(TempDir),
    Dapr(LocalDapr, TempDir),
}

/// Every store under test, with what keeps it alive.
async fn stores() -> Vec<(&'static str, Arc<dyn BlackboardStore>, Keep)> {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path().join("board.roost")).unwrap();
    let stack_dir = tempfile::tempdir().unwrap();
    let stack = LocalDapr::start(stack_dir.path(), "board-app", STACK_COMPONENT).unwrap();
    let dapr = DaprStore::connect(&stack.grpc_endpoint, "board")
        .await
        .unwrap();
    let caps = dapr.capabilities();
    assert!(
        caps.transactions && caps.etag && caps.query && caps.ttl,
        "{caps:?}"
    );
    let mut stores: Vec<(&'static str, Arc<dyn BlackboardStore>, Keep)> = vec![
        ("memory", Arc::new(MemoryStore::new()), Keep::Nothing),
        ("embedded", Arc::new(embedded), Keep::Dir(dir)),
        ("dapr", Arc::new(dapr), Keep::Dapr(stack, stack_dir)),
    ];
    match daprd::find_daprd() {
        Some(binary) => {
            let daprd_dir = tempfile::tempdir().unwrap();
            let stack = LocalDapr::start_under_daprd(
                daprd_dir.path(),
                "board-app",
                STACK_COMPONENT,
                &binary,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let store = DaprStore::connect(&stack.grpc_endpoint, "board")
                .await
                .unwrap();
            let caps = store.capabilities();
            assert!(
                caps.transactions && caps.etag && caps.query && caps.ttl,
                "{caps:?}"
            );
            stores.push(("daprd", Arc::new(store), Keep::Dapr(stack, daprd_dir)));
            // Dapr's in-memory store has no query API: the store keeps index records, in the
            // artifacts' transactions, and (transactions turned off) by their own
            // compare-and-set loops.
            for (name, transactions) in [("daprd-memory", true), ("daprd-memory-no-tx", false)] {
                let dir = tempfile::tempdir().unwrap();
                let stack = LocalDapr::start_under_daprd(
                    dir.path(),
                    "board-app",
                    MEMORY_COMPONENT,
                    &binary,
                )
                .unwrap_or_else(|e| panic!("{e}"));
                let store = DaprStore::connect(&stack.grpc_endpoint, "board")
                    .await
                    .unwrap();
                let caps = store.capabilities().clone();
                assert!(caps.etag && caps.transactions && !caps.query, "{caps:?}");
                let store = store.with_capabilities(|c| c.transactions = transactions);
                stores.push((name, Arc::new(store), Keep::Dapr(stack, dir)));
            }
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have daprd (tests/dapr/build.sh, or ROOST_DAPRD)"
            );
            eprintln!("skipped the daprd store: no daprd (run `bash tests/dapr/build.sh`)");
        }
    }
    stores
}

fn idea(text: &str, score: u32) -> Idea {
    Idea {
        text: text.into(),
        score,
    }
}

/// A varied set of artifacts with distinct, increasing creation times.
fn corpus() -> Vec<Artifact> {
    let base = Timestamp::parse("2026-11-26T10:00:00Z").unwrap();
    (0..40)
        .map(|i| {
            let mut a = if i % 3 == 0 {
                Artifact::of(
                    &Plan {
                        steps: vec![format!("s{i}")],
                    },
                    "planner",
                )
                .unwrap()
            } else {
                Artifact::of(
                    &idea(&format!("idea {i}"), i),
                    if i % 2 == 0 { "ada" } else { "bob" },
                )
                .unwrap()
            };
            // Same second for pairs, so the id breaks ties.
            a.created_at = base.plus(Duration::from_secs(i as u64 / 2));
            a.correlation_id = Some(format!("c{}", i % 4));
            a.tags = match i % 5 {
                0 => ["red".to_string()].into(),
                1 => ["red".to_string(), "blue".to_string()].into(),
                2 => ["blue".to_string()].into(),
                _ => Default::default(),
            };
            a.visibility = match i % 4 {
                0 => Visibility::Public,
                1 => Visibility::only_for(["ada"]),
                2 => Visibility::Tenant {
                    tenant_id: Some("acme".into()),
                },
                _ => Visibility::Labelled {
                    required_labels: ["x".to_string()].into(),
                },
            };
            a
        })
        .collect()
}

fn filters() -> Vec<Filter> {
    let set = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    let base = Timestamp::parse("2026-11-26T10:00:00Z").unwrap();
    vec![
        Filter::default(),
        Filter::of_type("test.Idea"),
        Filter {
            type_names: set(&["test.Idea", "test.Plan"]),
            ..Filter::default()
        },
        Filter::of_type("test.Plan").correlation("c0"),
        Filter {
            produced_by: set(&["ada"]),
            tags: set(&["red"]),
            ..Filter::default()
        },
        Filter {
            tags: set(&["red", "blue"]),
            ..Filter::default()
        },
        Filter {
            visibility_kinds: set(&["Private", "Tenant"]),
            ..Filter::default()
        },
        Filter {
            start: Some(base.plus(Duration::from_secs(5))),
            end: Some(base.plus(Duration::from_secs(12))),
            ..Filter::default()
        },
        Filter {
            type_names: set(&["test.Idea"]),
            produced_by: set(&["bob"]),
            correlation_id: Some("c1".into()),
            start: Some(base.plus(Duration::from_secs(3))),
            ..Filter::default()
        },
        Filter::of_type("test.Nothing"),
    ]
}

#[tokio::test]
async fn publish_is_an_upsert_and_get_returns_what_was_written() {
    for (name, store, _keep) in stores().await {
        let mut a = Artifact::of(&idea("first", 1), "ada").unwrap();
        store.publish(&a).await.unwrap();
        assert_eq!(store.get(&a.id).await.unwrap().as_ref(), Some(&a), "{name}");
        a.payload = serde_json::json!({"text": "second", "score": 2});
        store.publish(&a).await.unwrap();
        assert_eq!(store.get(&a.id).await.unwrap().as_ref(), Some(&a), "{name}");
        let listed = store.list_by_type("test.Idea").await.unwrap();
        assert_eq!(
            listed,
            vec![a.clone()],
            "{name}: the upsert must not duplicate"
        );
        assert_eq!(store.get("missing").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn queries_match_the_reference_filter_with_order_pages_and_totals() {
    for (name, store, _keep) in stores().await {
        let corpus = corpus();
        // Published out of order: the store must order by (created_at, id) itself.
        for a in corpus.iter().rev() {
            store.publish(a).await.unwrap();
        }
        for filter in filters() {
            let expected: Vec<Artifact> = corpus
                .iter()
                .filter(|a| filter.matches(a))
                .cloned()
                .collect();
            let expected = page_of(expected, 0, 0).artifacts;
            let all = store.query(&filter, 0, 0).await.unwrap();
            assert_eq!(all.total, expected.len(), "{name} {filter:?}");
            assert_eq!(all.artifacts, expected, "{name} {filter:?}");
            for (limit, offset) in [(1, 0), (3, 2), (5, 100), (0, 4)] {
                let page = store.query(&filter, limit, offset).await.unwrap();
                let want: Vec<Artifact> = expected
                    .iter()
                    .skip(offset)
                    .take(if limit == 0 { usize::MAX } else { limit })
                    .cloned()
                    .collect();
                assert_eq!(
                    page.total,
                    expected.len(),
                    "{name} {filter:?} {limit}/{offset}"
                );
                assert_eq!(page.artifacts, want, "{name} {filter:?} {limit}/{offset}");
            }
            let mut summary = Summary::default();
            expected.iter().for_each(|a| summary.add(a));
            assert_eq!(
                store.summary(&filter).await.unwrap(),
                summary,
                "{name} {filter:?}"
            );
        }
    }
}

#[tokio::test]
async fn consumptions_are_kept_per_artifact_and_never_match_artifact_queries() {
    for (name, store, _keep) in stores().await {
        let a = Artifact::of(&idea("x", 1), "ada").unwrap();
        let b = Artifact::of(&idea("y", 2), "ada").unwrap();
        let record = |artifact: &Artifact, consumer: &str, run: &str| Consumption {
            artifact_id: artifact.id.clone(),
            consumer: consumer.into(),
            run_id: Some(run.into()),
            correlation_id: Some("c".into()),
            consumed_at: Timestamp::now(),
            expires_at: None,
        };
        let out = Artifact::of(&Plan { steps: vec![] }, "planner").unwrap();
        store.publish(&a).await.unwrap();
        store.publish(&b).await.unwrap();
        store
            .publish_outputs(std::slice::from_ref(&out), &[record(&a, "planner", "r1")])
            .await
            .unwrap();
        store
            .record_consumptions(&[record(&a, "critic", "r2"), record(&b, "critic", "r3")])
            .await
            .unwrap();
        let mut consumers: Vec<String> = store
            .consumptions(&a.id)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.consumer)
            .collect();
        consumers.sort();
        assert_eq!(consumers, ["critic", "planner"], "{name}");
        assert_eq!(store.consumptions(&b.id).await.unwrap().len(), 1, "{name}");
        assert_eq!(store.get(&out.id).await.unwrap(), Some(out), "{name}");
        let everything = store.query(&Filter::default(), 0, 0).await.unwrap();
        assert_eq!(
            everything.total, 3,
            "{name}: consumption records are not artifacts"
        );
        let by_correlation = store
            .query(&Filter::default().correlation("c"), 0, 0)
            .await
            .unwrap();
        assert_eq!(
            by_correlation.total, 0,
            "{name}: consumption records never match"
        );
    }
}

/// The three-step pipeline the orchestration scenarios share.
fn pipeline(flock: &Flock, runs: Arc<AtomicUsize>) {
    let counted = Arc::clone(&runs);
    flock
        .agent("planner")
        .consumes::<Idea>()
        .publishes::<Plan>()
        .handler(move |ctx| {
            let runs = Arc::clone(&counted);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let idea: Idea = ctx.input()?;
                Ok(vec![Output::of(&Plan {
                    steps: vec![format!("do {}", idea.text)],
                })?])
            }
        })
        .unwrap();
    flock
        .agent("critic")
        .consumes::<Plan>()
        .publishes::<Review>()
        .handler(|ctx| async move {
            let plan: Plan = ctx.input()?;
            Ok(vec![Output::of(&Review {
                verdict: format!("{} steps, fine", plan.steps.len()),
            })?])
        })
        .unwrap();
}

#[tokio::test]
async fn a_pipeline_runs_to_idle_with_lineage_and_correlation() {
    for (name, store, _keep) in stores().await {
        let flock = Flock::with_store(Arc::clone(&store));
        let runs = Arc::new(AtomicUsize::new(0));
        pipeline(&flock, Arc::clone(&runs));
        let input = flock.publish(&idea("ship it", 5)).await.unwrap();
        flock.run_until_idle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{name}");
        let correlation = input.correlation_id.clone().unwrap();
        let plans = store.list_by_type(Plan::NAME).await.unwrap();
        let reviews = store.list_by_type(Review::NAME).await.unwrap();
        assert_eq!(plans.len(), 1, "{name}");
        assert_eq!(reviews.len(), 1, "{name}");
        assert_eq!(plans[0].produced_by, "planner");
        assert_eq!(
            plans[0].correlation_id.as_ref(),
            Some(&correlation),
            "{name}"
        );
        assert_eq!(
            reviews[0].correlation_id.as_ref(),
            Some(&correlation),
            "{name}"
        );
        assert_eq!(
            reviews[0].payload_as::<Review>().unwrap().verdict,
            "1 steps, fine"
        );
        let consumed = store.consumptions(&input.id).await.unwrap();
        assert_eq!(consumed.len(), 1, "{name}");
        assert_eq!(consumed[0].consumer, "planner");
        assert_eq!(
            store.consumptions(&plans[0].id).await.unwrap()[0].consumer,
            "critic"
        );
        let in_workflow = store
            .query(&Filter::default().correlation(correlation), 0, 0)
            .await
            .unwrap();
        assert_eq!(in_workflow.total, 3, "{name}");
        assert!(
            flock.failures().is_empty(),
            "{name}: {:?}",
            flock.failures()
        );
    }
}

#[tokio::test]
async fn visibility_is_checked_before_an_agent_is_triggered() {
    for (name, store, _keep) in stores().await {
        let flock = Flock::with_store(Arc::clone(&store));
        let seen: Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
        for (agent, labels, tenant) in [("ada", vec!["x"], Some("acme")), ("bob", vec![], None)] {
            let seen = Arc::clone(&seen);
            let mut builder = flock.agent(agent).consumes::<Idea>().labels(labels);
            if let Some(tenant) = tenant {
                builder = builder.tenant(tenant);
            }
            builder
                .handler(move |ctx| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let idea: Idea = ctx.input()?;
                        seen.lock().unwrap().push((ctx.agent.clone(), idea.text));
                        Ok(vec![])
                    }
                })
                .unwrap();
        }
        let cases = [
            ("public", Visibility::Public),
            ("private", Visibility::only_for(["ada"])),
            (
                "labelled",
                Visibility::Labelled {
                    required_labels: ["x".to_string()].into(),
                },
            ),
            (
                "tenant",
                Visibility::Tenant {
                    tenant_id: Some("acme".into()),
                },
            ),
            (
                "embargoed",
                Visibility::After {
                    ttl: Duration::from_secs(3600),
                    then: None,
                },
            ),
            ("nobody", Visibility::nobody()),
        ];
        for (text, visibility) in cases {
            flock
                .publish_with(
                    &idea(text, 0),
                    PublishOptions::default().visibility(visibility),
                )
                .await
                .unwrap();
        }
        flock.run_until_idle().await;
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        let want: Vec<(String, String)> = [
            ("ada", "labelled"),
            ("ada", "private"),
            ("ada", "public"),
            ("ada", "tenant"),
            ("bob", "public"),
        ]
        .iter()
        .map(|(a, t)| (a.to_string(), t.to_string()))
        .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[tokio::test]
async fn subscriptions_filter_by_predicate_producer_and_any_tag() {
    for (name, store, _keep) in stores().await {
        let flock = Flock::with_store(Arc::clone(&store));
        let seen: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let record = |seen: &Arc<std::sync::Mutex<Vec<String>>>| {
            let seen = Arc::clone(seen);
            move |ctx: roost_blackboard::Context| {
                let seen = Arc::clone(&seen);
                async move {
                    let idea: Idea = ctx.input()?;
                    seen.lock()
                        .unwrap()
                        .push(format!("{}:{}", ctx.agent, idea.text));
                    Ok(vec![])
                }
            }
        };
        flock
            .agent("high")
            .consumes_where::<Idea>(|i| i.score >= 5)
            .handler(record(&seen))
            .unwrap();
        flock
            .agent("tagged")
            .consumes::<Idea>()
            .tags(["urgent", "vip"])
            .handler(record(&seen))
            .unwrap();
        flock
            .agent("from_ada")
            .consumes::<Idea>()
            .from_agents(["ada"])
            .handler(record(&seen))
            .unwrap();
        flock.publish(&idea("low", 1)).await.unwrap();
        flock.publish(&idea("big", 9)).await.unwrap();
        flock
            .publish_with(
                &idea("vip", 1),
                PublishOptions::default().tag("vip").tag("other"),
            )
            .await
            .unwrap();
        let mut from_ada = Artifact::of(&idea("by-ada", 1), "ada").unwrap();
        from_ada.correlation_id = Some("c".into());
        store.publish(&from_ada).await.unwrap();
        flock.resume().await.unwrap();
        flock.run_until_idle().await;
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, ["from_ada:by-ada", "high:big", "tagged:vip"], "{name}");
    }
}

#[tokio::test]
async fn a_failing_or_lying_handler_becomes_a_workflow_error() {
    for (name, store, _keep) in stores().await {
        let flock = Flock::with_store(Arc::clone(&store));
        flock
            .agent("broken")
            .consumes::<Idea>()
            .publishes::<Plan>()
            .handler(|_| async { Err(AgentError::new("Timeout", "model did not answer")) })
            .unwrap();
        flock
            .agent("liar")
            .consumes::<Idea>()
            .publishes::<Plan>()
            .handler(|_| async {
                Ok(vec![Output::of(&Review {
                    verdict: "?".into(),
                })?])
            })
            .unwrap();
        flock
            .agent("panicky")
            .consumes::<Idea>()
            .handler(|_| async { panic!("boom") })
            .unwrap();
        let input = flock.publish(&idea("go", 1)).await.unwrap();
        flock.run_until_idle().await;
        let errors = store.list_by_type(WorkflowError::NAME).await.unwrap();
        let mut by_agent: Vec<(String, String)> = errors
            .iter()
            .map(|a| {
                assert_eq!(a.correlation_id, input.correlation_id, "{name}");
                let e: WorkflowError = a.payload_as().unwrap();
                assert_eq!(a.produced_by, format!("orchestrator#{}", e.failed_agent));
                (e.failed_agent, e.error_type)
            })
            .collect();
        by_agent.sort();
        assert_eq!(
            by_agent,
            [
                ("broken".to_string(), "Timeout".to_string()),
                ("liar".to_string(), "UndeclaredOutput".to_string()),
                ("panicky".to_string(), "Panic".to_string()),
            ],
            "{name}"
        );
        assert!(
            store.list_by_type(Review::NAME).await.unwrap().is_empty(),
            "{name}"
        );
        assert_eq!(
            store.consumptions(&input.id).await.unwrap().len(),
            3,
            "{name}"
        );
    }
}

#[tokio::test]
async fn self_triggering_is_prevented_by_default_and_bounded_by_the_circuit_breaker() {
    for (name, store, _keep) in stores().await {
        let runs = Arc::new(AtomicUsize::new(0));
        let flock = Flock::with_store(Arc::clone(&store)).max_agent_iterations(5);
        for (agent, prevent) in [("polite", true), ("echo", false)] {
            let runs = Arc::clone(&runs);
            flock
                .agent(agent)
                .consumes::<Idea>()
                .publishes::<Idea>()
                .prevent_self_trigger(prevent)
                .handler(move |ctx| {
                    let runs = Arc::clone(&runs);
                    async move {
                        if ctx.agent == "echo" {
                            runs.fetch_add(1, Ordering::SeqCst);
                        }
                        let idea: Idea = ctx.input()?;
                        Ok(vec![Output::of(&Idea {
                            text: format!("{}!", idea.text),
                            score: idea.score + 1,
                        })?])
                    }
                })
                .unwrap();
        }
        flock.publish(&idea("hi", 0)).await.unwrap();
        flock.run_until_idle().await;
        // echo runs on the input, on polite's outputs and on its own, until the breaker opens.
        assert_eq!(runs.load(Ordering::SeqCst), 5, "{name}");
        // The breaker resets at idle.
        flock.publish(&idea("again", 0)).await.unwrap();
        flock.run_until_idle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 10, "{name}");
    }
}

#[tokio::test]
async fn max_concurrency_bounds_parallel_runs_of_an_agent() {
    for (name, store, _keep) in stores().await {
        let flock = Flock::with_store(Arc::clone(&store));
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        {
            let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
            flock
                .agent("single")
                .consumes::<Idea>()
                .max_concurrency(1)
                .handler(move |_| {
                    let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
                    async move {
                        let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(current, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok(vec![])
                    }
                })
                .unwrap();
        }
        // Three runs must overlap: each waits for the other two at a barrier.
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        flock
            .agent("trio")
            .consumes::<Idea>()
            .max_concurrency(3)
            .handler(move |_| {
                let barrier = Arc::clone(&barrier);
                async move {
                    tokio::time::timeout(Duration::from_secs(10), barrier.wait())
                        .await
                        .map_err(|_| AgentError::new("Timeout", "runs did not overlap"))?;
                    Ok(vec![])
                }
            })
            .unwrap();
        for i in 0..6 {
            flock.publish(&idea(&format!("n{i}"), i)).await.unwrap();
        }
        flock.run_until_idle().await;
        assert_eq!(peak.load(Ordering::SeqCst), 1, "{name}");
        assert!(
            store
                .list_by_type(WorkflowError::NAME)
                .await
                .unwrap()
                .is_empty(),
            "{name}: trio's runs did not overlap"
        );
    }
}

#[tokio::test]
async fn after_a_restart_consumed_artifacts_are_not_handed_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("board.roost");
    let first_runs = Arc::new(AtomicUsize::new(0));
    {
        let store = EmbeddedStore::open(&path).unwrap();
        let flock = Flock::new(store.clone());
        pipeline(&flock, Arc::clone(&first_runs));
        for i in 0..3 {
            flock
                .publish(&idea(&format!("before {i}"), i))
                .await
                .unwrap();
        }
        flock.run_until_idle().await;
        // Two more arrive but the process dies before they are scheduled.
        for i in 0..2 {
            flock
                .publish_with(
                    &idea(&format!("late {i}"), i),
                    PublishOptions::default().persist_only(),
                )
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    }
    assert_eq!(first_runs.load(Ordering::SeqCst), 3);
    let store = EmbeddedStore::open(&path).unwrap();
    let flock = Flock::new(store.clone());
    let runs = Arc::new(AtomicUsize::new(0));
    pipeline(&flock, Arc::clone(&runs));
    let scheduled = flock.resume().await.unwrap();
    flock.run_until_idle().await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "only the late ideas run");
    // planner ×2 on the late ideas; the critic then reviews their 2 new plans (the 3 old
    // plans were consumed before the restart).
    assert_eq!(scheduled, 2);
    assert_eq!(store.list_by_type(Plan::NAME).await.unwrap().len(), 5);
    assert_eq!(store.list_by_type(Review::NAME).await.unwrap().len(), 5);
}
