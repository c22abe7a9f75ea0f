//! Model test of write-ahead-log replay. Random sequences of sets, deletes and transactions —
//! with current, stale and garbage etags, first-write, last-write — run in a child process
//! (this test binary re-run with `ROOST_MODEL_DB` set, fed one op per stdin line, answering
//! each after the call returned) on a database whose checkpoints never
//! happen, so every acknowledged write lives only in the log and in redb's non-durable commits.
//! The child reports each call's outcome after it returned, then aborts (no destructor, no
//! checkpoint, no clean close). The parent checks each outcome against a `BTreeMap` model,
//! reopens the file — replaying the log — and requires every key to read exactly as the model
//! says, etags included, and new etags to stay above every acknowledged one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use roost_engine::{
    Concurrency, Database, DeleteRequest, Durability, Error, Operation, Options, SetRequest,
};

const ENV_DB: &str = "ROOST_MODEL_DB";
const KEYS: usize = 4;

/// Which etag an operation carries.
#[derive(Debug, Clone, Copy)]
enum Tag {
    None,
    /// The model's current etag of the key (a never-issued one if the key is absent).
    Current,
    Stale,
    Garbage,
}

#[derive(Debug, Clone)]
struct Write1 {
    delete: bool,
    key: usize,
    tag: Tag,
    first_write: bool,
    value: u8,
}

#[derive(Debug, Clone)]
enum Op {
    One(Write1),
    Tx(Vec<Write1>),
}

fn write1() -> impl Strategy<Value = Write1> {
    (
        any::<bool>(),
        0..KEYS,
        prop_oneof![
            Just(Tag::None),
            Just(Tag::Current),
            Just(Tag::Stale),
            Just(Tag::Garbage)
        ],
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(delete, key, tag, first_write, value)| Write1 {
            delete,
            key,
            tag,
            first_write,
            value,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => write1().prop_map(Op::One),
        1 => prop::collection::vec(write1(), 1..4).prop_map(Op::Tx),
    ]
}

/// One op as the child receives it on stdin: `one|tx` then `;`-separated writes
/// `d|s,key,etag-or--,first-write(0|1),value`. The parent resolves etags from its model.
fn encode(op: &Op, etags: &[Option<String>]) -> String {
    let writes = writes(op);
    let kind = if matches!(op, Op::One(_)) {
        "one"
    } else {
        "tx"
    };
    let parts: Vec<String> = writes
        .iter()
        .zip(etags)
        .map(|(w, e)| {
            format!(
                "{},{},{},{},{}",
                if w.delete { "d" } else { "s" },
                w.key,
                e.as_deref().unwrap_or("-"),
                u8::from(w.first_write),
                w.value
            )
        })
        .collect();
    format!("{kind} {}", parts.join(";"))
}

fn writes(op: &Op) -> Vec<&Write1> {
    match op {
        Op::One(w) => vec![w],
        Op::Tx(ws) => ws.iter().collect(),
    }
}

fn options(path: &Path) -> Options {
    Options::new(path)
        .durability(Durability::Immediate)
        .sweep_interval(None)
        // No idle checkpoint during the run: the log is all there is.
        .checkpoint_interval(Duration::from_secs(3600))
}

fn key(i: usize) -> String {
    format!("k{i}")
}

fn outcome<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::EtagMismatch { .. }) => "mismatch",
        Err(Error::InvalidEtag { .. }) => "invalid",
        Err(Error::Transaction { .. }) => "txfail",
        Err(_) => "other",
    }
}

#[test]
#[ignore = "the child process of wal_replay_matches_the_model; it runs only as that test's child"]
fn model_replay_child() {
    let Ok(path) = std::env::var(ENV_DB) else {
        return;
    };
    let db = Database::open(options(Path::new(&path))).expect("child open");
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        if line == "crash" {
            // A crash: no destructors, no checkpoint, no clean close.
            std::process::abort();
        }
        let (kind, rest) = line.split_once(' ').unwrap();
        let writes: Vec<Operation> = rest
            .split(';')
            .map(|w| {
                let f: Vec<&str> = w.split(',').collect();
                let concurrency = if f[3] == "1" {
                    Concurrency::FirstWrite
                } else {
                    Concurrency::LastWrite
                };
                let etag = (f[2] != "-").then(|| f[2].to_string());
                if f[0] == "d" {
                    let mut request = DeleteRequest::new(key(f[1].parse().unwrap()));
                    request.etag = etag;
                    request.concurrency = concurrency;
                    Operation::Delete(request)
                } else {
                    let mut request = SetRequest::new(
                        key(f[1].parse().unwrap()),
                        format!("v{}", f[4]).into_bytes(),
                    );
                    request.etag = etag;
                    request.concurrency = concurrency;
                    Operation::Set(request)
                }
            })
            .collect();
        let reply = if kind == "one" {
            match writes.into_iter().next().unwrap() {
                Operation::Set(r) => {
                    let result = db.set(r);
                    format!(
                        "{} {}",
                        outcome(&result),
                        result.map(|e| e.to_string()).unwrap_or_default()
                    )
                }
                Operation::Delete(r) => outcome(&db.delete(r)).to_string(),
            }
        } else {
            let result = db.transact(writes);
            let etags: Vec<String> = result
                .as_ref()
                .map(|es| {
                    es.iter()
                        .map(|e| e.map(|e| e.to_string()).unwrap_or_else(|| "-".into()))
                        .collect()
                })
                .unwrap_or_default();
            format!("{} {}", outcome(&result), etags.join(" "))
        };
        writeln!(out, "reply {}", reply.trim_end()).unwrap();
        out.flush().unwrap();
    }
}

/// The reference: key → (value, etag).
#[derive(Debug, Default, Clone)]
struct Model {
    records: BTreeMap<usize, (Vec<u8>, u64)>,
    issued: Vec<u64>,
}

impl Model {
    fn etag_for(&self, w: &Write1) -> Option<String> {
        match w.tag {
            Tag::None => None,
            Tag::Current => Some(
                self.records
                    .get(&w.key)
                    .map(|r| r.1)
                    .unwrap_or(999_999_999)
                    .to_string(),
            ),
            Tag::Stale => Some(
                self.issued
                    .iter()
                    .copied()
                    .find(|e| self.records.get(&w.key).map(|r| r.1) != Some(*e))
                    .unwrap_or(999_999_998)
                    .to_string(),
            ),
            Tag::Garbage => Some("not-an-etag".to_string()),
        }
    }

    /// Dapr's rules for one write against `records`: "ok", "mismatch" or "invalid".
    fn check(
        records: &BTreeMap<usize, (Vec<u8>, u64)>,
        w: &Write1,
        etag: Option<&str>,
    ) -> &'static str {
        let current = records.get(&w.key).map(|r| r.1);
        match etag.filter(|e| !e.is_empty()) {
            Some(text) => match text.parse::<u64>() {
                Err(_) => "invalid",
                Ok(e) if Some(e) == current => "ok",
                Ok(_) => "mismatch",
            },
            None if w.first_write && current.is_some() => "mismatch",
            None => "ok",
        }
    }
}

/// Kills and reaps the child if a check fails before it ended.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("model.roost");
    let exe = std::env::current_exe().unwrap();
    let mut child = Reaped(
        Command::new(exe)
            .args([
                "model_replay_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(ENV_DB, &db_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut to_child = child.0.stdin.take().unwrap();
    // The test harness prints "test model_replay_child ... " before the child's first line.
    let mut replies = BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .filter_map(|l| {
            let at = l.find("ready").or_else(|| l.find("reply "))?;
            Some(l[at..].to_string())
        });
    let first = replies.next();
    prop_assert_eq!(first.as_deref(), Some("ready"));

    let mut model = Model::default();
    let mut max_etag = 0;
    for op in &ops {
        let writes = writes(op);
        let etags: Vec<Option<String>> = writes.iter().map(|w| model.etag_for(w)).collect();
        // The model's verdict: each write checked against the state the earlier writes of
        // the same transaction left.
        let mut staged = model.records.clone();
        let mut verdict = "ok";
        for (w, e) in writes.iter().zip(&etags) {
            let v = Model::check(&staged, w, e.as_deref());
            if v != "ok" {
                verdict = if matches!(op, Op::Tx(_)) { "txfail" } else { v };
                break;
            }
            if w.delete {
                staged.remove(&w.key);
            } else {
                staged.insert(w.key, (Vec::new(), 0));
            }
        }
        writeln!(to_child, "{}", encode(op, &etags)).unwrap();
        to_child.flush().unwrap();
        let reply = replies.next().expect("the child replies to every op");
        let mut words = reply.split_whitespace().skip(1);
        let got = words.next().unwrap_or_default().to_string();
        prop_assert_eq!(&got, verdict, "outcome of {:?} with etags {:?}", op, etags);
        if got != "ok" {
            continue;
        }
        // Acknowledged: apply it to the model with the etags the engine returned.
        for w in writes {
            let etag = words.next();
            if w.delete {
                model.records.remove(&w.key);
            } else {
                let etag: u64 = etag.expect("an etag per set").parse().unwrap();
                max_etag = max_etag.max(etag);
                model.issued.push(etag);
                model
                    .records
                    .insert(w.key, (format!("v{}", w.value).into_bytes(), etag));
            }
        }
    }
    writeln!(to_child, "crash").unwrap();
    let _ = to_child.flush();
    let status = child.0.wait().unwrap();
    prop_assert!(!status.success(), "the child ends by aborting");

    // Reopen: the log replays. Every key reads as the model says.
    let db = Database::open(options(&db_path)).unwrap();
    for k in 0..KEYS {
        let got = db
            .get(key(k))
            .unwrap()
            .map(|r| (r.value, r.etag.sequence()));
        prop_assert_eq!(got, model.records.get(&k).cloned(), "key {}", k);
    }
    let next = db.set(SetRequest::new("after", b"x".to_vec())).unwrap();
    prop_assert!(next.sequence() > max_etag, "{} > {}", next, max_etag);
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: std::env::var("ROOST_MODEL_REPLAY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn wal_replay_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run_case(ops)?;
    }
}
