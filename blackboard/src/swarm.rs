//! One blackboard, many processes: shared triggers through a feed every member follows, and
//! exactly one committed run per (artifact, agent) through leased claims.
//!
//! Records beside the artifacts (JSON values; `{m}` a member name):
//!
//! | key | value |
//! | --- | --- |
//! | `swarm:members` | the member names, a sorted array (grown by compare-and-set) |
//! | `feed:{m}:head` | the last sequence number `m` appended |
//! | `feed:{m}:{seq}` | one append: `{"ids": [...]}`, the artifacts one publish or one run wrote |
//! | `claim:{artifact}:{agent}` | `{"owner", "run", "state": "running"\|"done", "expires_at_ms"}` |
//!
//! - **The feed.** Each member appends only to its own feed, in the same commit as the
//!   artifacts it lists (a publish, or a run's outputs), under one lock per process: the slot
//!   is written first-write (a second process under the same name fails instead of
//!   overwriting) and the head after it. Every member polls the heads of all members (one
//!   bulk read), reads the slots past its cursors and hands their artifacts to its agents. So
//!   an artifact published anywhere reaches every process without a re-read of the store.
//! - **Claims.** Before a run, a process claims `(artifact, agent)` first-write with a lease
//!   (`expires_at_ms` in the value; the store's TTL, where it has one, removes it four
//!   leases later) and renews it while
//!   the handler runs. The run's commit — outputs, the consumption record, the feed slot and
//!   the claim turned `done` by compare-and-set on the etag the process holds — is one
//!   transaction on stores with transactions: a process that lost its lease (it stalled past
//!   the expiry and another took over) commits nothing. Without transactions the outputs come
//!   first and their ids are derived from (input, agent), so a repeated run rewrites the same
//!   artifacts.
//! - **Crashes.** A claim whose lease ran out may be taken over by compare-and-set. Every
//!   member remembers the claims it found held by others and tries them again when they
//!   expire, so the work of a killed process is finished by the living ones; a restarted
//!   member first reads the whole store once ([`crate::Flock::start`]) and claims what is not
//!   done.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

use crate::artifact::ArtifactType;
use crate::artifact::{Artifact, Consumption, new_id};
use crate::error::{Error, Result};
use crate::flock::{AgentRuntime, Inner, breaker_allows, execute_on, wants};
use crate::store::{Expect, Put, SwarmStore, Versioned};
use crate::time::Timestamp;

/// How a process takes part in a swarm.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// This process's name in the swarm, unique among the processes running at once
    /// (a restarted process may take its old name back, and its feed with it).
    pub member: String,
    /// How long a claim holds without renewal (renewed every third of it).
    pub lease: Duration,
    /// The wait between two polls of the feeds when nothing arrives.
    pub poll: Duration,
    /// Most runs of this process at once, all agents together (back-pressure: the feeds are
    /// not read further while they are all busy).
    pub max_in_flight: usize,
    /// Expiry of feed slots, where the store has TTLs (`None`: kept).
    pub feed_ttl: Option<Duration>,
    /// How long a member leaves a trigger to the live member it belongs to (by rendezvous
    /// hashing of the run over the live members) before it reads the claim and, if nobody
    /// took it, runs it itself. `Duration::ZERO`: every member tries every trigger at once.
    pub defer: Duration,
}

impl SwarmOptions {
    pub fn new(member: impl Into<String>) -> SwarmOptions {
        SwarmOptions {
            member: member.into(),
            lease: Duration::from_secs(10),
            poll: Duration::from_millis(20),
            max_in_flight: 16,
            feed_ttl: Some(Duration::from_secs(24 * 3600)),
            defer: Duration::from_millis(60),
        }
    }

    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    pub fn feed_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.feed_ttl = ttl;
        self
    }

    pub fn defer(mut self, defer: Duration) -> Self {
        self.defer = defer;
        self
    }
}

/// Counters of one process's part in the swarm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SwarmStats {
    /// Runs this process claimed, committed, and lost (its lease taken over before commit).
    pub claimed: u64,
    pub committed: u64,
    pub lost: u64,
    /// Claims found held by another process, and claims taken over after their lease ran out.
    pub held_elsewhere: u64,
    pub taken_over: u64,
    /// Claim attempts that found the run taken (running elsewhere, or done): the swarm's
    /// wasted writes.
    pub contended: u64,
    /// Triggers left to the member they belong to, and of those, run here after all.
    pub deferred: u64,
    pub deferred_run_here: u64,
    /// Polls of the feed heads, and store reads and writes the swarm made.
    pub polls: u64,
    pub reads: u64,
    pub writes: u64,
}

#[derive(Default)]
struct Counters {
    claimed: AtomicU64,
    committed: AtomicU64,
    lost: AtomicU64,
    held_elsewhere: AtomicU64,
    taken_over: AtomicU64,
    contended: AtomicU64,
    deferred: AtomicU64,
    deferred_run_here: AtomicU64,
    polls: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
}

const MEMBERS: &str = "swarm:members";

/// A claim's store TTL, in leases: an expired claim stays readable a while, so the process
/// that takes it over does so by compare-and-set on what it read (and counts it), and the
/// claims of a dead process do not stay forever.
const CLAIM_TTL_LEASES: u32 = 4;

fn alive_key(member: &str) -> String {
    format!("swarm:alive:{member}")
}

/// How often a member says it is alive, and how long that holds.
const HEARTBEAT_MS: u64 = 1000;
const ALIVE_FOR_MS: u64 = 3500;

/// A member's heartbeat: when, and which agents it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Beat {
    at_ms: u64,
    agents: BTreeSet<String>,
}

/// The live member a run of `agent` belongs to, among those that run that agent: the
/// highest 64-bit FNV-1a hash of (member, run).
fn preferred<'a>(
    alive: &'a [(String, BTreeSet<String>)],
    unit_id: &str,
    agent: &str,
) -> Option<&'a str> {
    alive
        .iter()
        .filter(|(_, agents)| agents.contains(agent))
        .map(|(member, _)| member)
        .max_by_key(|member| {
            let mut hash: u64 = 0xcbf29ce484222325;
            for part in [member.as_bytes(), unit_id.as_bytes(), agent.as_bytes()] {
                for byte in part.iter().chain(&[0xff]) {
                    hash ^= u64::from(*byte);
                    hash = hash.wrapping_mul(0x100000001b3);
                }
            }
            hash
        })
        .map(String::as_str)
}

fn head_key(member: &str) -> String {
    format!("feed:{member}:head")
}

fn slot_key(member: &str, seq: u64) -> String {
    format!("feed:{member}:{seq:016}")
}

fn claim_key(unit: &str, agent: &str) -> String {
    format!("claim:{unit}:{agent}")
}

/// What one run is the run of: an artifact, an AND gate's correlation id, or a period of a
/// scheduled agent. Each (unit, agent) runs once in the swarm.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Unit {
    Artifact(String),
    Gate(String),
    Tick(u64),
    Batch(u64),
}

impl Unit {
    /// The unit's part of claim keys and output ids: the artifact id, `gate-{uuid}` (from the
    /// correlation id and agent), `tick-{period}`.
    fn id(&self, agent: &str) -> String {
        match self {
            Unit::Artifact(id) => id.clone(),
            Unit::Gate(correlation) => {
                format!("gate-{}", crate::flock::output_id(correlation, agent, 0))
            }
            Unit::Tick(k) => format!("tick-{k}"),
            Unit::Batch(k) => format!("batch-{k}"),
        }
    }
}

type Pair = (Unit, String);

fn open_batch_key(agent: &str) -> String {
    format!("batch:{agent}:open")
}

/// A sealed batch's record. The token makes each sealing attempt's record its own: on a
/// store without transactions the record is written before the open record's
/// compare-and-set decides which attempt sealed the batch, and a losing attempt must not
/// overwrite the winner's.
fn sealed_batch_key(agent: &str, seq: u64, token: &str) -> String {
    format!("batch:{agent}:{seq:016}:{token}")
}

/// The agent's open batch record and its etag, if it has one.
async fn read_open_batch(swarm: &Swarm, agent: &str) -> Result<Option<(OpenBatch, String)>> {
    let key = open_batch_key(agent);
    match swarm
        .read(std::slice::from_ref(&key))
        .await?
        .pop()
        .flatten()
    {
        Some(v) => Ok(Some((parse(&key, &v.value)?, v.etag))),
        None => Ok(None),
    }
}

/// The open batch of an agent, and the sealed ones whose run is not known to be done.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OpenBatch {
    /// The sequence number the open batch will have when sealed.
    seq: u64,
    ids: Vec<String>,
    opened_at_ms: u64,
    /// Sealed batches whose run is not known to be done: (sequence number, token of its
    /// sealed record).
    unfinished: Vec<(u64, String)>,
}

impl OpenBatch {
    fn token_of(&self, seq: u64) -> Option<&str> {
        self.unfinished
            .iter()
            .find(|(k, _)| *k == seq)
            .map(|(_, t)| t.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slot {
    ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ClaimState {
    Running,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    owner: String,
    run: String,
    state: ClaimState,
    expires_at_ms: u64,
}

fn now_ms() -> u64 {
    Timestamp::now().unix_micros().max(0) as u64 / 1000
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("swarm records serialise")
}

/// Feed heads as read (0 for a feed never appended to).
fn parse_heads(keys: &[String], found: &[Option<Versioned>]) -> Result<Vec<u64>> {
    keys.iter()
        .zip(found)
        .map(|(key, found)| match found {
            Some(v) => parse::<u64>(key, &v.value),
            None => Ok(0),
        })
        .collect()
}

/// What one poll reads of the swarm: the members, their feeds' heads, and the live ones
/// with the agents they run.
struct View {
    members: Vec<String>,
    heads: Vec<u64>,
    alive: Vec<(String, BTreeSet<String>)>,
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::Corrupt(format!("{key}: {e}")))
}

/// What a process knows of the swarm.
pub(crate) struct Swarm {
    pub(crate) store: Arc<dyn SwarmStore>,
    pub(crate) options: SwarmOptions,
    /// The next sequence number of this member's feed; held while a commit appends.
    next_seq: tokio::sync::Mutex<u64>,
    in_flight: Arc<Semaphore>,
    /// Runs started and not finished in this process.
    running: AtomicUsize,
    wake: Notify,
    /// Member → the last slot this process handed out.
    cursors: Mutex<BTreeMap<String, u64>>,
    /// Claims held by other processes: (unit, agent) → when their lease runs out (ms).
    watched: Mutex<HashMap<Pair, u64>>,
    /// (unit, agent) pairs this process has dispatched and not yet seen end.
    dispatched: Mutex<BTreeSet<Pair>>,
    /// Watched pairs whose lease ran out, dispatched again here.
    expired: Mutex<BTreeSet<Pair>>,
    /// Scheduled agent → the last period this process dispatched.
    ticks: Mutex<HashMap<String, u64>>,
    /// Members seen alive at the last poll (their heartbeat) with the agents they run.
    alive: Mutex<Vec<(String, BTreeSet<String>)>>,
    /// When this member last wrote its heartbeat (ms).
    heartbeat_at: AtomicU64,
    /// Triggers left to another member: pair → (when to look again, the artifact).
    deferred: Mutex<HashMap<Pair, (u64, Option<Artifact>)>>,
    /// A batch was sealed here: check the batches at the next round.
    batches_dirty: std::sync::atomic::AtomicBool,
    counters: Counters,
    stopped: std::sync::atomic::AtomicBool,
}

impl Swarm {
    pub(crate) fn new(store: Arc<dyn SwarmStore>, options: SwarmOptions) -> Swarm {
        Swarm {
            in_flight: Arc::new(Semaphore::new(options.max_in_flight)),
            store,
            options,
            next_seq: tokio::sync::Mutex::new(1),
            running: AtomicUsize::new(0),
            wake: Notify::new(),
            cursors: Mutex::new(BTreeMap::new()),
            watched: Mutex::new(HashMap::new()),
            dispatched: Mutex::new(BTreeSet::new()),
            expired: Mutex::new(BTreeSet::new()),
            ticks: Mutex::new(HashMap::new()),
            batches_dirty: std::sync::atomic::AtomicBool::new(false),
            alive: Mutex::new(Vec::new()),
            heartbeat_at: AtomicU64::new(0),
            deferred: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn stats(&self) -> SwarmStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SwarmStats {
            claimed: get(&c.claimed),
            committed: get(&c.committed),
            lost: get(&c.lost),
            held_elsewhere: get(&c.held_elsewhere),
            taken_over: get(&c.taken_over),
            contended: get(&c.contended),
            deferred: get(&c.deferred),
            deferred_run_here: get(&c.deferred_run_here),
            polls: get(&c.polls),
            reads: get(&c.reads),
            writes: get(&c.writes),
        }
    }

    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.store.read(keys).await
    }

    async fn commit(
        &self,
        artifacts: &[Artifact],
        consumptions: &[Consumption],
        puts: &[Put],
    ) -> Result<bool> {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.store.commit(artifacts, consumptions, puts).await
    }

    /// Adds this member to `swarm:members` (compare-and-set, retried).
    async fn register(&self) -> Result<()> {
        let me = &self.options.member;
        for _ in 0..32 {
            let found = self.read(&[MEMBERS.to_string()]).await?.pop().flatten();
            let (mut members, expect) = match &found {
                Some(v) => (
                    parse::<BTreeSet<String>>(MEMBERS, &v.value)?,
                    Expect::Etag(v.etag.clone()),
                ),
                None => (BTreeSet::new(), Expect::Absent),
            };
            if !members.insert(me.clone()) {
                return Ok(());
            }
            if self
                .commit(&[], &[], &[Put::new(MEMBERS, json(&members), expect)])
                .await?
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(Error::Conflict {
            key: MEMBERS.into(),
            attempts: 32,
        })
    }

    async fn members(&self) -> Result<Vec<String>> {
        Ok(
            match self.read(&[MEMBERS.to_string()]).await?.pop().flatten() {
                Some(v) => parse::<BTreeSet<String>>(MEMBERS, &v.value)?
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            },
        )
    }

    /// The members (`swarm:members`), the heads of their feeds and those alive (a heartbeat
    /// younger than `ALIVE_FOR_MS`): one bulk read with the members already `known`, and a
    /// second one for all of them only when someone joined since.
    async fn view(&self, known: &[String]) -> Result<View> {
        fn feed_keys(members: &[String]) -> Vec<String> {
            let mut keys: Vec<String> = members.iter().map(|m| head_key(m)).collect();
            keys.extend(members.iter().map(|m| alive_key(m)));
            keys
        }
        let mut keys = feed_keys(known);
        keys.insert(0, MEMBERS.to_string());
        let mut found = self.read(&keys).await?;
        let listed = match found.remove(0) {
            Some(v) => parse::<BTreeSet<String>>(MEMBERS, &v.value)?,
            None => BTreeSet::new(),
        };
        keys.remove(0);
        let mut members = known.to_vec();
        let before = members.len();
        members.extend(listed.into_iter().filter(|m| !known.contains(m)));
        if members.len() > before {
            keys = feed_keys(&members);
            found = self.read(&keys).await?;
        }
        let (heads, beats) = found.split_at(members.len());
        let heads = parse_heads(&keys, heads)?;
        let now = now_ms();
        let alive = members
            .iter()
            .zip(beats)
            .filter_map(|(m, beat)| {
                let beat: Beat = serde_json::from_slice(&beat.as_ref()?.value).ok()?;
                (beat.at_ms + ALIVE_FOR_MS > now).then(|| (m.clone(), beat.agents))
            })
            .collect();
        Ok(View {
            members,
            heads,
            alive,
        })
    }

    /// The heads of `members`' feeds (0 for a feed never appended to).
    async fn heads(&self, members: &[String]) -> Result<Vec<u64>> {
        let keys: Vec<String> = members.iter().map(|m| head_key(m)).collect();
        parse_heads(&keys, &self.read(&keys).await?)
    }

    /// Appends `artifacts` (and a run's consumption record and claim release, in `extra`) to
    /// this member's feed in one commit. `Ok(false)`: an expectation of `extra` failed.
    async fn append(
        &self,
        artifacts: &[Artifact],
        consumptions: &[Consumption],
        extra: &[Put],
    ) -> Result<bool> {
        let me = &self.options.member;
        let mut next = self.next_seq.lock().await;
        for _ in 0..8 {
            let mut puts = Vec::with_capacity(extra.len() + 2);
            if !artifacts.is_empty() {
                let slot = Slot {
                    ids: artifacts.iter().map(|a| a.id.clone()).collect(),
                };
                puts.push(
                    Put::new(slot_key(me, *next), json(&slot), Expect::Absent)
                        .ttl(self.options.feed_ttl),
                );
                puts.push(Put::new(head_key(me), json(&*next), Expect::Any));
            }
            puts.extend(extra.iter().cloned());
            if self.commit(artifacts, consumptions, &puts).await? {
                if !artifacts.is_empty() {
                    *next += 1;
                }
                self.wake.notify_one();
                return Ok(true);
            }
            // Which expectation failed: ours (the caller's), or our feed slot (another
            // process wrote it: re-read the head and go on after it)?
            if !extra.is_empty() {
                let keys: Vec<String> = extra.iter().map(|p| p.key.clone()).collect();
                let found = self.read(&keys).await?;
                if !extra
                    .iter()
                    .zip(&found)
                    .all(|(p, f)| crate::store::expectation_holds(&p.expect, f.as_ref()))
                {
                    return Ok(false);
                }
            }
            let head = self.heads(std::slice::from_ref(me)).await?[0];
            tracing::warn!(member = %me, head, "feed slot taken: is another process running under this member name?");
            *next = (*next).max(head + 1);
        }
        Err(Error::Conflict {
            key: slot_key(me, *next),
            attempts: 8,
        })
    }

    /// Publishes one artifact into the swarm.
    pub(crate) async fn publish(&self, artifact: &Artifact) -> Result<()> {
        if self
            .append(std::slice::from_ref(artifact), &[], &[])
            .await?
        {
            Ok(())
        } else {
            Err(Error::Store("publish refused".into()))
        }
    }
}

/// A claim this process holds.
struct Held {
    key: String,
    claim: Claim,
}

impl Swarm {
    fn claim_value(&self, run: &str, state: ClaimState) -> Claim {
        Claim {
            owner: self.options.member.clone(),
            run: run.to_string(),
            state,
            expires_at_ms: now_ms() + self.options.lease.as_millis() as u64,
        }
    }

    /// The write of a running claim: its store TTL is a few leases (see `CLAIM_TTL_LEASES`).
    fn running_put(&self, key: &str, claim: &Claim, expect: Expect) -> Put {
        Put::new(key, json(claim), expect).ttl(Some(self.options.lease * CLAIM_TTL_LEASES))
    }

    /// Tries to claim `pair`. `None`: done already, or held by another process (then watched
    /// until its lease runs out).
    async fn claim(&self, pair: &Pair, token: &str) -> Result<Option<Held>> {
        let key = claim_key(&pair.0.id(&pair.1), &pair.1);
        let claim = self.claim_value(token, ClaimState::Running);
        let put = |expect| self.running_put(&key, &claim, expect);
        let was_held = self
            .expired
            .lock()
            .map(|mut e| e.remove(pair))
            .unwrap_or(false);
        if self.commit(&[], &[], &[put(Expect::Absent)]).await? {
            // Gone: done by nobody, and (when we had watched it) its holder's lease ran out
            // and the store's TTL removed it.
            self.counters.claimed.fetch_add(1, Ordering::Relaxed);
            if was_held {
                self.counters.taken_over.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Some(Held { key, claim }));
        }
        self.counters.contended.fetch_add(1, Ordering::Relaxed);
        let Some(found) = self.read(std::slice::from_ref(&key)).await?.pop().flatten() else {
            // Expired between the two calls: the next poll tries again.
            self.watch(pair, 0);
            return Ok(None);
        };
        let current: Claim = parse(&key, &found.value)?;
        if current.state == ClaimState::Done {
            return Ok(None);
        }
        if current.expires_at_ms > now_ms() {
            self.counters.held_elsewhere.fetch_add(1, Ordering::Relaxed);
            self.watch(pair, current.expires_at_ms);
            return Ok(None);
        }
        // Its lease ran out: take it over, if nobody did first.
        if self
            .commit(&[], &[], &[put(Expect::Etag(found.etag))])
            .await?
        {
            tracing::info!(%key, from = %current.owner, "claim taken over after its lease ran out");
            self.counters.claimed.fetch_add(1, Ordering::Relaxed);
            self.counters.taken_over.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(Held { key, claim }));
        }
        self.watch(pair, 0);
        Ok(None)
    }

    fn watch(&self, pair: &Pair, until_ms: u64) {
        if let Ok(mut watched) = self.watched.lock() {
            watched.insert(pair.clone(), until_ms);
        }
    }

    /// The etag of our claim, if we still hold it.
    async fn holding(&self, held: &Held) -> Result<Option<String>> {
        let Some(found) = self
            .read(std::slice::from_ref(&held.key))
            .await?
            .pop()
            .flatten()
        else {
            return Ok(None);
        };
        let current: Claim = parse(&held.key, &found.value)?;
        Ok((current.owner == held.claim.owner
            && current.run == held.claim.run
            && current.state == ClaimState::Running)
            .then_some(found.etag))
    }

    /// Extends our lease; false when it is no longer ours.
    async fn renew(&self, held: &Held) -> Result<bool> {
        let Some(etag) = self.holding(held).await? else {
            return Ok(false);
        };
        let claim = self.claim_value(&held.claim.run, ClaimState::Running);
        self.commit(
            &[],
            &[],
            &[self.running_put(&held.key, &claim, Expect::Etag(etag))],
        )
        .await
    }

    /// The claims of `pairs`, in order (`None`: never claimed, or expired and dropped).
    async fn claims(&self, pairs: &[Pair]) -> Result<Vec<Option<Claim>>> {
        let keys: Vec<String> = pairs
            .iter()
            .map(|(unit, agent)| claim_key(&unit.id(agent), agent))
            .collect();
        let found = self.read(&keys).await?;
        keys.iter()
            .zip(found)
            .map(|(key, v)| v.map(|v| parse::<Claim>(key, &v.value)).transpose())
            .collect()
    }
}

/// Starts following: registers the member and says it is alive (so runs are left to it from
/// the next poll of any member on), finds its own head, sets the cursors at the heads of now,
/// reads the store once for work not done (claims), and spawns the follower.
pub(crate) async fn start(inner: &Arc<Inner>, swarm: &Arc<Swarm>) -> Result<usize> {
    swarm.register().await?;
    heartbeat(inner, swarm).await?;
    let members = swarm.members().await?;
    let heads = swarm.heads(&members).await?;
    if let Some(i) = members.iter().position(|m| m == &swarm.options.member) {
        *swarm.next_seq.lock().await = heads[i] + 1;
    }
    {
        let mut cursors = swarm.cursors.lock().map_err(|_| poisoned())?;
        for (member, head) in members.iter().zip(&heads) {
            cursors.insert(member.clone(), *head);
        }
    }
    // Anything published before the cursors were set and not done yet.
    let everything = inner
        .store
        .query(&crate::store::Filter::default(), 0, 0)
        .await?;
    let mut dispatched = 0;
    for artifact in everything.artifacts {
        dispatched += dispatch(inner, swarm, &artifact, true).await;
    }
    dispatched += tick(inner, swarm).await;
    dispatched += check_batches(inner, swarm).await?;
    tokio::spawn(follow(Arc::downgrade(inner), Arc::clone(swarm)));
    Ok(dispatched)
}

fn poisoned() -> Error {
    Error::Store("a swarm lock is poisoned".into())
}

/// The follower: polls the feed heads, hands new artifacts out, retries watched claims, runs
/// the periods of scheduled agents.
async fn follow(inner: Weak<Inner>, swarm: Arc<Swarm>) {
    let mut round: u64 = 0;
    loop {
        if swarm.stopped.load(Ordering::Acquire) {
            return;
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        round += 1;
        let progressed = match poll_once(&strong, &swarm, round).await {
            Ok(progressed) => progressed,
            Err(err) => {
                tracing::warn!(error = %err, "swarm poll failed");
                false
            }
        };
        tick(&strong, &swarm).await;
        if (round.is_multiple_of(10) || swarm.batches_dirty.swap(false, Ordering::AcqRel))
            && let Err(err) = check_batches(&strong, &swarm).await
        {
            tracing::warn!(error = %err, "swarm batch check failed");
        }
        drop(strong);
        if !progressed {
            let _ = tokio::time::timeout(swarm.options.poll, swarm.wake.notified()).await;
        }
    }
}

/// Adds artifact `id` to the agent's open batch, once in the swarm (under the claim of
/// `(artifact, agent)`, released in the same commit); seals the batch when it is full.
async fn join_batch(
    swarm: &Arc<Swarm>,
    agent: &AgentRuntime,
    pair: &Pair,
    id: &str,
    size: usize,
) -> Result<()> {
    let Some(held) = swarm.claim(pair, &new_id()).await? else {
        return Ok(());
    };
    let key = open_batch_key(&agent.spec.name);
    let mut backoff = Duration::from_millis(1);
    for _ in 0..64 {
        let Some(claim_etag) = swarm.holding(&held).await? else {
            swarm.counters.lost.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let (mut open, expect) = match read_open_batch(swarm, &agent.spec.name).await? {
            Some((open, etag)) => (open, Expect::Etag(etag)),
            None => (OpenBatch::default(), Expect::Absent),
        };
        let mut puts = Vec::new();
        if !joined(swarm, &agent.spec.name, &open, id).await? {
            if open.ids.is_empty() {
                open.opened_at_ms = now_ms();
            }
            open.ids.push(id.to_string());
            // The sealed record (if full) first, then the open record's compare-and-set,
            // which decides; the claim's release last.
            if open.ids.len() >= size {
                puts.push(seal(&agent.spec.name, &mut open));
            }
            puts.push(Put::new(key.clone(), json(&open), expect));
        }
        let done = Claim {
            state: ClaimState::Done,
            ..held.claim.clone()
        };
        puts.push(
            Put::new(held.key.clone(), json(&done), Expect::Etag(claim_etag)).never_expires(),
        );
        if swarm.commit(&[], &[], &puts).await? {
            swarm.counters.committed.fetch_add(1, Ordering::Relaxed);
            if puts.len() == 3 {
                // Sealed: run it soon (the follower launches unfinished batches).
                swarm.batches_dirty.store(true, Ordering::Release);
                swarm.wake.notify_one();
            }
            return Ok(());
        }
        // Another member changed the open batch first (or took our claim): read again.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
    Err(Error::Conflict { key, attempts: 64 })
}

/// Whether `id` is in the open batch, in a sealed one not done yet, or in one that ran (a
/// join repeated after a crash between the open record's write and the claim's release, on a
/// store without transactions: the claim's lease runs out and another member takes it over,
/// maybe after the batch holding `id` ran and left the unfinished list).
async fn joined(swarm: &Swarm, agent: &str, open: &OpenBatch, id: &str) -> Result<bool> {
    if open.ids.iter().any(|i| i == id) {
        return Ok(true);
    }
    if swarm.store.atomic() {
        return Ok(false);
    }
    if batch_ran(swarm, agent, id).await? {
        return Ok(true);
    }
    if open.unfinished.is_empty() {
        return Ok(false);
    }
    let keys: Vec<String> = open
        .unfinished
        .iter()
        .map(|(k, token)| sealed_batch_key(agent, *k, token))
        .collect();
    for (key, found) in keys.iter().zip(swarm.read(&keys).await?) {
        if let Some(v) = found
            && parse::<Slot>(key, &v.value)?.ids.iter().any(|i| i == id)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a run of `agent` consumed `id`: a batch's run writes its inputs' consumption
/// records before it releases the batch's claim, so before the batch leaves the open record's
/// unfinished list.
async fn batch_ran(swarm: &Swarm, agent: &str, id: &str) -> Result<bool> {
    Ok(swarm
        .store
        .consumptions(id)
        .await?
        .iter()
        .any(|c| c.consumer == agent))
}

/// Seals `open`: returns the write of its sealed record, and leaves `open` as the next,
/// empty batch with the sealed one listed as unfinished.
fn seal(agent: &str, open: &mut OpenBatch) -> Put {
    let sealed = Slot {
        ids: std::mem::take(&mut open.ids),
    };
    let token = new_id();
    let put = Put::new(
        sealed_batch_key(agent, open.seq, &token),
        json(&sealed),
        Expect::Absent,
    );
    open.unfinished.push((open.seq, token));
    open.seq += 1;
    open.opened_at_ms = 0;
    put
}

/// For every batch agent: seals the open batch if its wait is over, launches the sealed
/// batches not done, and forgets those that are.
async fn check_batches(inner: &Arc<Inner>, swarm: &Arc<Swarm>) -> Result<usize> {
    let agents: Vec<Arc<AgentRuntime>> = inner
        .agents
        .read()
        .map_err(|_| poisoned())?
        .iter()
        .filter(|a| a.spec.batch.is_some())
        .cloned()
        .collect();
    let mut runs = 0;
    for agent in agents {
        let name = &agent.spec.name;
        let (_, max_wait) = agent.spec.batch.expect("a batch agent");
        let key = open_batch_key(name);
        let Some((mut open, etag)) = read_open_batch(swarm, name).await? else {
            continue;
        };
        let pairs: Vec<Pair> = open
            .unfinished
            .iter()
            .map(|(k, _)| (Unit::Batch(*k), name.clone()))
            .collect();
        let claims = swarm.claims(&pairs).await?;
        let done: Vec<u64> = pairs
            .iter()
            .zip(&claims)
            .filter(|(_, c)| c.as_ref().is_some_and(|c| c.state == ClaimState::Done))
            .filter_map(|(p, _)| match p.0 {
                Unit::Batch(k) => Some(k),
                _ => None,
            })
            .collect();
        for (pair, claim) in pairs.into_iter().zip(claims) {
            if claim.is_none_or(|c| c.state != ClaimState::Done) {
                runs += launch(inner, swarm, Arc::clone(&agent), pair.0, None).await;
            }
        }
        let due =
            !open.ids.is_empty() && open.opened_at_ms + max_wait.as_millis() as u64 <= now_ms();
        if done.is_empty() && !due {
            continue;
        }
        open.unfinished.retain(|(k, _)| !done.contains(k));
        let mut puts = Vec::new();
        if due {
            puts.push(seal(name, &mut open));
        }
        puts.push(Put::new(key.clone(), json(&open), Expect::Etag(etag)));
        // A conflict leaves it to the next check.
        if swarm.commit(&[], &[], &puts).await? && due {
            swarm.batches_dirty.store(true, Ordering::Release);
        }
    }
    Ok(runs)
}

/// Dispatches the current period of every scheduled agent not dispatched here yet.
async fn tick(inner: &Arc<Inner>, swarm: &Arc<Swarm>) -> usize {
    let agents: Vec<Arc<AgentRuntime>> = match inner.agents.read() {
        Ok(agents) => agents
            .iter()
            .filter(|a| a.spec.every.is_some())
            .cloned()
            .collect(),
        Err(_) => return 0,
    };
    let mut runs = 0;
    for agent in agents {
        let period = agent.spec.every.expect("scheduled").as_millis().max(1) as u64;
        let k = now_ms() / period;
        let fresh = swarm
            .ticks
            .lock()
            .map(|mut t| t.insert(agent.spec.name.clone(), k) != Some(k))
            .unwrap_or(false);
        if fresh {
            runs += launch(inner, swarm, agent, Unit::Tick(k), None).await;
        }
    }
    runs
}

/// One round; true if it handed anything out.
async fn poll_once(inner: &Arc<Inner>, swarm: &Arc<Swarm>, round: u64) -> Result<bool> {
    swarm.counters.polls.fetch_add(1, Ordering::Relaxed);
    let known: Vec<String> = swarm
        .cursors
        .lock()
        .map_err(|_| poisoned())?
        .keys()
        .cloned()
        .collect();
    heartbeat(inner, swarm).await?;
    // Members that joined since the last round are in the same read.
    let View {
        members,
        heads,
        alive,
    } = swarm.view(&known).await?;
    if let Ok(mut known) = swarm.alive.lock() {
        *known = alive;
    }
    let mut progressed = false;
    for (member, head) in members.iter().zip(heads) {
        let cursor = *swarm
            .cursors
            .lock()
            .map_err(|_| poisoned())?
            .entry(member.clone())
            .or_insert(0);
        if head <= cursor {
            continue;
        }
        progressed = true;
        let mut seq = cursor;
        while seq < head {
            let last = head.min(seq + 100);
            let keys: Vec<String> = (seq + 1..=last).map(|s| slot_key(member, s)).collect();
            let slots = swarm.read(&keys).await?;
            let mut ids = Vec::new();
            for (key, slot) in keys.iter().zip(slots) {
                match slot {
                    Some(v) => ids.extend(parse::<Slot>(key, &v.value)?.ids),
                    None => tracing::warn!(%key, "feed slot missing (expired?): skipped"),
                }
            }
            swarm.counters.reads.fetch_add(1, Ordering::Relaxed);
            for (id, found) in ids.iter().zip(swarm.store.get_many(&ids).await?) {
                match found {
                    Some(artifact) => {
                        dispatch(inner, swarm, &artifact, false).await;
                    }
                    None => tracing::warn!(%id, "artifact in the feed is missing: skipped"),
                }
            }
            seq = last;
            swarm
                .cursors
                .lock()
                .map_err(|_| poisoned())?
                .insert(member.clone(), seq);
        }
    }
    progressed |= retry_watched(inner, swarm, round).await?;
    progressed |= retry_deferred(inner, swarm).await?;
    Ok(progressed)
}

/// Says this member is alive and which agents it runs (`swarm:alive:{member}`), at most once
/// a second.
async fn heartbeat(inner: &Inner, swarm: &Swarm) -> Result<()> {
    let now = now_ms();
    if now < swarm.heartbeat_at.load(Ordering::Relaxed) + HEARTBEAT_MS {
        return Ok(());
    }
    swarm.heartbeat_at.store(now, Ordering::Relaxed);
    let beat = Beat {
        at_ms: now,
        agents: inner
            .agents
            .read()
            .map_err(|_| poisoned())?
            .iter()
            .map(|a| a.spec.name.clone())
            .collect(),
    };
    let put = Put::new(alive_key(&swarm.options.member), json(&beat), Expect::Any)
        .ttl(Some(Duration::from_millis(ALIVE_FOR_MS)));
    swarm.commit(&[], &[], &[put]).await?;
    Ok(())
}

/// Deferred triggers whose wait is over: one bulk read of their claims; the untouched ones
/// run here (the claim still decides), the others are watched or forgotten.
async fn retry_deferred(inner: &Arc<Inner>, swarm: &Arc<Swarm>) -> Result<bool> {
    let now = now_ms();
    let due: Vec<(Pair, Option<Artifact>)> = {
        let mut deferred = swarm.deferred.lock().map_err(|_| poisoned())?;
        let keys: Vec<Pair> = deferred
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(pair, _)| pair.clone())
            .collect();
        keys.into_iter()
            .filter_map(|pair| deferred.remove(&pair).map(|(_, a)| (pair, a)))
            .collect()
    };
    if due.is_empty() {
        return Ok(false);
    }
    let mut progressed = false;
    for chunk in due.chunks(100) {
        let pairs: Vec<Pair> = chunk.iter().map(|(p, _)| p.clone()).collect();
        let claims = swarm.claims(&pairs).await?;
        for ((pair, artifact), claim) in chunk.iter().zip(claims) {
            match claim {
                Some(c) if c.state == ClaimState::Done => {}
                Some(c) => swarm.watch(pair, c.expires_at_ms),
                None => {
                    swarm
                        .counters
                        .deferred_run_here
                        .fetch_add(1, Ordering::Relaxed);
                    progressed |= launch_pair(inner, swarm, pair, artifact.as_ref()).await? > 0;
                }
            }
        }
    }
    Ok(progressed)
}

/// Claims held elsewhere: forget the done ones, dispatch again those whose lease ran out.
/// Due ones every round, all of them every tenth.
async fn retry_watched(inner: &Arc<Inner>, swarm: &Arc<Swarm>, round: u64) -> Result<bool> {
    let now = now_ms();
    let due: Vec<Pair> = swarm
        .watched
        .lock()
        .map_err(|_| poisoned())?
        .iter()
        .filter(|(_, until)| round.is_multiple_of(10) || **until <= now)
        .map(|(pair, _)| pair.clone())
        .collect();
    if due.is_empty() {
        return Ok(false);
    }
    let mut progressed = false;
    for chunk in due.chunks(100) {
        let claims = swarm.claims(chunk).await?;
        for (pair, claim) in chunk.iter().zip(claims) {
            match claim {
                Some(c) if c.state == ClaimState::Done => {
                    swarm.watched.lock().map_err(|_| poisoned())?.remove(pair);
                }
                Some(c) if c.expires_at_ms > now => swarm.watch(pair, c.expires_at_ms),
                _ => {
                    // Expired or gone: run it here (the claim decides who does).
                    swarm.watched.lock().map_err(|_| poisoned())?.remove(pair);
                    swarm
                        .expired
                        .lock()
                        .map_err(|_| poisoned())?
                        .insert(pair.clone());
                    progressed |= launch_pair(inner, swarm, pair, None).await? > 0;
                }
            }
        }
    }
    Ok(progressed)
}

/// The agents of this process that want `artifact`, each with the unit it triggers: the
/// artifact itself, or (for an AND gate) its correlation id.
fn wanting(inner: &Inner, artifact: &Artifact) -> Vec<(Arc<AgentRuntime>, Unit)> {
    let now = Timestamp::now();
    let Ok(agents) = inner.agents.read() else {
        return Vec::new();
    };
    agents
        .iter()
        .filter(|a| a.spec.every.is_none() && wants(&a.spec, artifact, now))
        .filter_map(|a| {
            let unit = if a.spec.gate {
                Unit::Gate(artifact.correlation_id.clone()?)
            } else {
                Unit::Artifact(artifact.id.clone())
            };
            Some((Arc::clone(a), unit))
        })
        .collect()
}

/// Hands `artifact` to every agent of this process that wants it; with `check_done`, pairs
/// whose claim is done are skipped first (one bulk read). Waits for run slots: back-pressure.
async fn dispatch(
    inner: &Arc<Inner>,
    swarm: &Arc<Swarm>,
    artifact: &Artifact,
    check_done: bool,
) -> usize {
    let wanted = wanting(inner, artifact);
    if wanted.is_empty() {
        return 0;
    }
    let done: Vec<bool> = if check_done {
        let pairs: Vec<Pair> = wanted
            .iter()
            .map(|(a, unit)| (unit.clone(), a.spec.name.clone()))
            .collect();
        match swarm.claims(&pairs).await {
            Ok(claims) => claims
                .iter()
                .map(|c| c.as_ref().is_some_and(|c| c.state == ClaimState::Done))
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read claims");
                return 0;
            }
        }
    } else {
        vec![false; wanted.len()]
    };
    let mut runs = 0;
    let alive = swarm.alive.lock().map(|a| a.clone()).unwrap_or_default();
    let me = swarm.options.member.as_str();
    for ((agent, unit), done) in wanted.into_iter().zip(done) {
        if done {
            continue;
        }
        // From the feed, a run that belongs to another live member is left to it a while.
        if !check_done
            && !swarm.options.defer.is_zero()
            && preferred(&alive, &unit.id(&agent.spec.name), &agent.spec.name)
                .is_some_and(|owner| owner != me)
        {
            swarm.counters.deferred.fetch_add(1, Ordering::Relaxed);
            let at = now_ms() + swarm.options.defer.as_millis() as u64;
            if let Ok(mut deferred) = swarm.deferred.lock() {
                deferred.insert(
                    (unit, agent.spec.name.clone()),
                    (at, Some(artifact.clone())),
                );
            }
            continue;
        }
        runs += launch(inner, swarm, agent, unit, Some(artifact)).await;
    }
    runs
}

/// [`launch`] for a pair known by the agent's name (a watched or deferred one).
async fn launch_pair(
    inner: &Arc<Inner>,
    swarm: &Arc<Swarm>,
    pair: &Pair,
    known: Option<&Artifact>,
) -> Result<usize> {
    let agent = inner
        .agents
        .read()
        .map_err(|_| poisoned())?
        .iter()
        .find(|a| a.spec.name == pair.1)
        .cloned();
    Ok(match agent {
        Some(agent) => launch(inner, swarm, agent, pair.0.clone(), known).await,
        None => 0,
    })
}

/// Starts the run of `(unit, agent)` in a task, unless this process runs it already; waits
/// for a process slot and an agent slot first (back-pressure).
async fn launch(
    inner: &Arc<Inner>,
    swarm: &Arc<Swarm>,
    agent: Arc<AgentRuntime>,
    unit: Unit,
    known: Option<&Artifact>,
) -> usize {
    let pair = (unit, agent.spec.name.clone());
    match swarm.dispatched.lock() {
        Ok(mut dispatched) => {
            if !dispatched.insert(pair.clone()) {
                return 0;
            }
        }
        Err(_) => return 0,
    }
    if !breaker_allows(inner, &agent) {
        if let Ok(mut dispatched) = swarm.dispatched.lock() {
            dispatched.remove(&pair);
        }
        return 0;
    }
    let Ok(process_slot) = Arc::clone(&swarm.in_flight).acquire_owned().await else {
        return 0;
    };
    let Ok(agent_slot) = Arc::clone(&agent.slots).acquire_owned().await else {
        return 0;
    };
    swarm.running.fetch_add(1, Ordering::AcqRel);
    inner.pending.fetch_add(1, Ordering::AcqRel);
    let (inner, swarm, known) = (Arc::clone(inner), Arc::clone(swarm), known.cloned());
    tokio::spawn(async move {
        let outcome = match (&pair.0, agent.spec.batch) {
            (Unit::Artifact(id), Some((size, _))) => {
                join_batch(&swarm, &agent, &pair, id, size).await
            }
            _ => match inputs_of(&inner, &swarm, &agent, &pair.0, known).await {
                Ok(Some(inputs)) => run(&inner, &swarm, &agent, &pair, &inputs).await,
                Ok(None) => Ok(()),
                Err(err) => Err(err),
            },
        };
        if let Err(err) = outcome {
            // Tried again here when its lease runs out (a claim may be left running).
            swarm.watch(&pair, now_ms() + swarm.options.lease.as_millis() as u64);
            crate::flock::fail(
                &inner,
                format!("agent {} on {:?}: {err}", agent.spec.name, pair.0),
            );
        }
        drop((process_slot, agent_slot));
        if let Ok(mut dispatched) = swarm.dispatched.lock() {
            dispatched.remove(&pair);
        }
        swarm.running.fetch_sub(1, Ordering::AcqRel);
        if inner.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            inner.idle.notify_waiters();
        }
        swarm.wake.notify_one();
    });
    1
}

/// The inputs of a run of `unit`: the artifact; an AND gate's artifacts (the earliest of each
/// subscription with the correlation id), `None` while one is missing; nothing for a period.
async fn inputs_of(
    inner: &Inner,
    swarm: &Swarm,
    agent: &AgentRuntime,
    unit: &Unit,
    known: Option<Artifact>,
) -> Result<Option<Vec<Artifact>>> {
    match unit {
        Unit::Artifact(id) => match known {
            Some(artifact) => Ok(Some(vec![artifact])),
            None => {
                swarm.counters.reads.fetch_add(1, Ordering::Relaxed);
                let found = swarm.store.get_many(std::slice::from_ref(id)).await?;
                Ok(found.into_iter().next().flatten().map(|a| vec![a]))
            }
        },
        Unit::Gate(correlation) => gate_inputs(inner, swarm, agent, correlation).await,
        Unit::Tick(_) => Ok(Some(Vec::new())),
        Unit::Batch(k) => {
            let name = &agent.spec.name;
            let Some((open, _)) = read_open_batch(swarm, name).await? else {
                return Ok(None);
            };
            // Not listed: its run is done (and the open record says so).
            let Some(token) = open.token_of(*k) else {
                return Ok(None);
            };
            let key = sealed_batch_key(name, *k, token);
            let Some(found) = swarm
                .read(std::slice::from_ref(&key))
                .await?
                .pop()
                .flatten()
            else {
                return Ok(None);
            };
            let ids: Vec<String> = parse::<Slot>(&key, &found.value)?.ids;
            swarm.counters.reads.fetch_add(1, Ordering::Relaxed);
            Ok(Some(
                swarm
                    .store
                    .get_many(&ids)
                    .await?
                    .into_iter()
                    .flatten()
                    .collect(),
            ))
        }
    }
}

async fn gate_inputs(
    inner: &Inner,
    swarm: &Swarm,
    agent: &AgentRuntime,
    correlation: &str,
) -> Result<Option<Vec<Artifact>>> {
    let spec = &agent.spec;
    let filter = crate::store::Filter {
        type_names: Some(
            spec.subscriptions
                .iter()
                .map(|s| s.type_name.clone())
                .collect(),
        ),
        correlation_id: Some(correlation.to_string()),
        ..Default::default()
    };
    swarm.counters.reads.fetch_add(1, Ordering::Relaxed);
    let candidates = inner.store.query(&filter, 0, 0).await?.artifacts;
    let now = Timestamp::now();
    // Per subscription, what it accepts, in (created_at, id) order.
    let accepted: Vec<Vec<&Artifact>> = spec
        .subscriptions
        .iter()
        .map(|s| {
            candidates
                .iter()
                .filter(|a| s.matches(a) && wants(spec, a, now))
                .collect()
        })
        .collect();
    if accepted.iter().any(Vec::is_empty) {
        return Ok(None);
    }
    let Some(within) = spec.join_within else {
        // The earliest of each.
        return Ok(Some(accepted.iter().map(|a| a[0].clone()).collect()));
    };
    // With a window: the earliest artifact of the first subscription for which every other
    // has one created within `within` of it (the earliest such).
    let within = within.as_micros() as i64;
    for anchor in &accepted[0] {
        let at = anchor.created_at.unix_micros();
        let mut inputs = vec![(*anchor).clone()];
        for others in &accepted[1..] {
            match others
                .iter()
                .find(|a| (a.created_at.unix_micros() - at).abs() <= within)
            {
                Some(a) => inputs.push((*a).clone()),
                None => break,
            }
        }
        if inputs.len() == accepted.len() {
            return Ok(Some(inputs));
        }
    }
    Ok(None)
}

/// One run in the swarm: claim, handler under a renewed lease, then the commit that releases
/// the claim (and fails if the lease was lost).
async fn run(
    inner: &Inner,
    swarm: &Arc<Swarm>,
    agent: &AgentRuntime,
    pair: &Pair,
    inputs: &[Artifact],
) -> Result<()> {
    let spec = &agent.spec;
    let unit_id = pair.0.id(&spec.name);
    // The run id is the pair's, so a repeated run (after a crash, or by a process that lost
    // its lease on a store without transactions) rewrites the same consumption records; the
    // claim carries a token of this attempt.
    let run_id = crate::flock::output_id(&unit_id, &format!("{}#run", spec.name), 0);
    let token = new_id();
    let Some(held) = swarm.claim(pair, &token).await? else {
        return Ok(());
    };
    let held = Arc::new(held);
    let renewal = {
        let (swarm, held) = (Arc::clone(swarm), Arc::clone(&held));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(swarm.options.lease / 3).await;
                match swarm.renew(&held).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(key = %held.key, "lease lost while running");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(key = %held.key, error = %err, "lease renewal failed")
                    }
                }
            }
        })
    };
    let mut outputs = execute_on(spec, inputs, &unit_id, &run_id).await;
    crate::flock::apply_retention(inner, &mut outputs);
    renewal.abort();
    let _ = renewal.await;
    let Some(etag) = swarm.holding(&held).await? else {
        swarm.counters.lost.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key = %held.key, "lease lost before commit: outputs dropped");
        return Ok(());
    };
    let consumptions: Vec<Consumption> = inputs
        .iter()
        .map(|input| Consumption {
            artifact_id: input.id.clone(),
            consumer: spec.name.clone(),
            run_id: Some(run_id.clone()),
            correlation_id: input.correlation_id.clone(),
            consumed_at: Timestamp::now(),
            expires_at: input.expires_at,
        })
        .collect();
    let done = Claim {
        state: ClaimState::Done,
        ..held.claim.clone()
    };
    // The claim lives as long as what it refers to: the input (the latest of a gate's), a
    // few periods of a scheduled agent, or for good.
    let release = Put::new(held.key.clone(), json(&done), Expect::Etag(etag));
    let release = match &pair.0 {
        Unit::Tick(_) => {
            let period = spec.every.unwrap_or_default();
            release.ttl(Some(period * 4 + swarm.options.lease * CLAIM_TTL_LEASES))
        }
        _ if !inputs.is_empty() && inputs.iter().all(|i| i.expires_at.is_some()) => {
            let latest = inputs.iter().filter_map(|i| i.expires_at).max();
            release.ttl(crate::artifact::remaining(latest))
        }
        _ => release.never_expires(),
    };
    if swarm.append(&outputs, &consumptions, &[release]).await? {
        swarm.counters.committed.fetch_add(1, Ordering::Relaxed);
        if matches!(pair.0, Unit::Batch(_)) {
            // Its entry in the open record's unfinished list can go.
            swarm.batches_dirty.store(true, Ordering::Release);
        }
    } else {
        swarm.counters.lost.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key = %held.key, "lease lost at commit: outputs dropped");
    }
    Ok(())
}

/// Whether this process has nothing left to do in the swarm: no run of its own, every feed
/// read to its head, no claim of another process it still waits on, and no batch of its
/// agents open or sealed and not done.
pub(crate) async fn idle(inner: &Inner, swarm: &Swarm) -> Result<bool> {
    if swarm.running.load(Ordering::Acquire) > 0 {
        return Ok(false);
    }
    if !swarm.watched.lock().map_err(|_| poisoned())?.is_empty()
        || !swarm.deferred.lock().map_err(|_| poisoned())?.is_empty()
    {
        return Ok(false);
    }
    let batch_keys: Vec<String> = inner
        .agents
        .read()
        .map_err(|_| poisoned())?
        .iter()
        .filter(|a| a.spec.batch.is_some())
        .map(|a| open_batch_key(&a.spec.name))
        .collect();
    for (key, found) in batch_keys.iter().zip(swarm.read(&batch_keys).await?) {
        if let Some(v) = found {
            let open: OpenBatch = parse(key, &v.value)?;
            if !open.ids.is_empty() || !open.unfinished.is_empty() {
                return Ok(false);
            }
        }
    }
    let members = swarm.members().await?;
    let heads = swarm.heads(&members).await?;
    let cursors = swarm.cursors.lock().map_err(|_| poisoned())?;
    Ok(members
        .iter()
        .zip(heads)
        .all(|(m, head)| cursors.get(m).is_some_and(|c| *c >= head)))
}

pub(crate) fn stop(swarm: &Swarm) {
    swarm.stopped.store(true, Ordering::Release);
    swarm.wake.notify_one();
}

/// Where the work of one correlation id stands, as every member with the same agents sees
/// it: read from the store (artifacts and claims), not from any process's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorrelationStatus {
    pub state: RunState,
    /// Artifacts with the correlation id.
    pub artifacts: usize,
    /// Runs wanted and not claimed yet, claimed and running, and done.
    pub pending: usize,
    pub running: usize,
    pub done: usize,
    /// `WorkflowError` artifacts (final failures) with the correlation id.
    pub failed: usize,
}

/// The state of a correlation: failed if any run failed for good, else running while one
/// runs, pending while one waits, done when nothing is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Done,
    Failed,
}

pub(crate) async fn status(
    inner: &Inner,
    swarm: &Swarm,
    correlation: &str,
) -> Result<CorrelationStatus> {
    let filter = crate::store::Filter::default().correlation(correlation);
    let artifacts = inner.store.query(&filter, 0, 0).await?.artifacts;
    let failed = artifacts
        .iter()
        .filter(|a| a.type_name == crate::artifact::WorkflowError::NAME)
        .count();
    let mut pairs: BTreeSet<Pair> = BTreeSet::new();
    let mut gates: BTreeMap<Pair, Arc<AgentRuntime>> = BTreeMap::new();
    for artifact in &artifacts {
        for (agent, unit) in wanting(inner, artifact) {
            let pair = (unit, agent.spec.name.clone());
            if matches!(pair.0, Unit::Gate(_)) {
                gates.insert(pair.clone(), agent);
            }
            pairs.insert(pair);
        }
    }
    // A gate whose inputs are not all there yet is not work to do.
    for (pair, agent) in &gates {
        if let Unit::Gate(c) = &pair.0
            && gate_inputs(inner, swarm, agent, c).await?.is_none()
        {
            pairs.remove(pair);
        }
    }
    let pairs: Vec<Pair> = pairs.into_iter().collect();
    let (mut pending, mut running, mut done) = (0, 0, 0);
    for claim in swarm.claims(&pairs).await? {
        match claim.map(|c| c.state) {
            Some(ClaimState::Done) => done += 1,
            Some(ClaimState::Running) => running += 1,
            None => pending += 1,
        }
    }
    let state = if failed > 0 {
        RunState::Failed
    } else if running > 0 {
        RunState::Running
    } else if pending > 0 {
        RunState::Pending
    } else {
        RunState::Done
    };
    Ok(CorrelationStatus {
        state,
        artifacts: artifacts.len(),
        pending,
        running,
        done,
        failed,
    })
}
