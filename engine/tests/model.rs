//! Model-based test: random sequences of operations run against the engine and against a
//! `BTreeMap` reference model, with time advancing and close/reopen in between. After every
//! step every key reads the same from both, and every write's outcome (ok, etag mismatch,
//! invalid etag, transaction failure at index i) is the one the model predicts.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::T0;
use proptest::prelude::*;
use proptest::test_runner::Config;
use roost_engine::{
    CodecOptions, Compression, Concurrency, Database, DeleteRequest, Durability, EncryptionKey,
    Error, ManualClock, Operation, Options, SetRequest,
};

const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];

#[derive(Debug, Clone)]
enum EtagChoice {
    Absent,
    Empty,
    /// The model's etag for the key (or a never-issued number if the key is not live).
    Current,
    /// Some etag issued earlier, probably stale.
    Old(prop::sample::Index),
    Garbage,
}

#[derive(Debug, Clone)]
struct SetOp {
    key: usize,
    value: Vec<u8>,
    etag: EtagChoice,
    first_write: bool,
    ttl_seconds: Option<i64>,
}

#[derive(Debug, Clone)]
struct DeleteOp {
    key: usize,
    etag: EtagChoice,
    first_write: bool,
}

#[derive(Debug, Clone)]
enum TxOp {
    Set(SetOp),
    Delete(DeleteOp),
}

#[derive(Debug, Clone)]
enum Step {
    Set(SetOp),
    Delete(DeleteOp),
    BulkSet(Vec<SetOp>),
    BulkDelete(Vec<DeleteOp>),
    Transact(Vec<TxOp>),
    Advance(u64),
    Sweep,
    Reopen,
    /// Hold catch-up: later writes stay in the overlay (records there only, or newer there
    /// than in redb) until `Resume` or a reopen.
    Pause,
    Resume,
}

fn etag_choice() -> impl Strategy<Value = EtagChoice> {
    prop_oneof![
        4 => Just(EtagChoice::Absent),
        1 => Just(EtagChoice::Empty),
        4 => Just(EtagChoice::Current),
        2 => any::<prop::sample::Index>().prop_map(EtagChoice::Old),
        1 => Just(EtagChoice::Garbage),
    ]
}

fn set_op() -> impl Strategy<Value = SetOp> {
    (
        0..KEYS.len(),
        prop::collection::vec(any::<u8>(), 0..12),
        etag_choice(),
        prop::bool::weighted(0.3),
        prop_oneof![
            3 => Just(None),
            2 => (1i64..4).prop_map(Some),
            1 => Just(Some(-1)),
            1 => Just(Some(-7)),
        ],
    )
        .prop_map(|(key, value, etag, first_write, ttl_seconds)| SetOp {
            key,
            value,
            etag,
            first_write,
            ttl_seconds,
        })
}

fn delete_op() -> impl Strategy<Value = DeleteOp> {
    (0..KEYS.len(), etag_choice(), prop::bool::weighted(0.2)).prop_map(
        |(key, etag, first_write)| DeleteOp {
            key,
            etag,
            first_write,
        },
    )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => set_op().prop_map(Step::Set),
        3 => delete_op().prop_map(Step::Delete),
        2 => prop::collection::vec(set_op(), 1..4).prop_map(Step::BulkSet),
        1 => prop::collection::vec(delete_op(), 1..4).prop_map(Step::BulkDelete),
        3 => prop::collection::vec(
            prop_oneof![set_op().prop_map(TxOp::Set), delete_op().prop_map(TxOp::Delete)],
            1..5
        )
        .prop_map(Step::Transact),
        2 => prop_oneof![Just(0u64), 1u64..1500, Just(1000), Just(3000)].prop_map(Step::Advance),
        1 => Just(Step::Sweep),
        1 => Just(Step::Reopen),
        1 => Just(Step::Pause),
        1 => Just(Step::Resume),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    value: Vec<u8>,
    etag: u64,
    expires_at: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    records: BTreeMap<usize, ModelRecord>,
    issued: Vec<u64>,
}

/// The outcome class of one write.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok,
    Mismatch,
    Invalid,
    BadTtl,
}

impl Model {
    fn live(&self, key: usize, now: u64) -> Option<&ModelRecord> {
        self.records
            .get(&key)
            .filter(|r| r.expires_at.is_none_or(|at| at > now))
    }

    fn etag_text(&self, choice: &EtagChoice, key: usize, now: u64) -> Option<String> {
        match choice {
            EtagChoice::Absent => None,
            EtagChoice::Empty => Some(String::new()),
            EtagChoice::Current => Some(match self.live(key, now) {
                Some(r) => r.etag.to_string(),
                None => "424242424242".into(),
            }),
            // "0" is never issued: the sequence starts at 1.
            EtagChoice::Old(index) => Some(if self.issued.is_empty() {
                "0".into()
            } else {
                index.get(&self.issued).to_string()
            }),
            EtagChoice::Garbage => Some("not-an-etag".into()),
        }
    }

    /// Checks the condition of a write to `key`; `Ok(())` if it may proceed.
    fn check(&self, key: usize, etag: Option<&str>, first_write: bool, now: u64) -> Outcome {
        let etag = etag.filter(|e| !e.is_empty());
        let live = self.live(key, now);
        match etag {
            Some(text) => match text.parse::<u64>() {
                Err(_) => Outcome::Invalid,
                Ok(n) if live.is_some_and(|r| r.etag == n) => Outcome::Ok,
                Ok(_) => Outcome::Mismatch,
            },
            None if first_write && live.is_some() => Outcome::Mismatch,
            None => Outcome::Ok,
        }
    }
}

fn ttl_text(ttl: Option<i64>) -> Option<String> {
    ttl.map(|t| t.to_string())
}

fn ttl_ok(ttl: Option<i64>) -> bool {
    ttl.is_none_or(|t| t >= -1)
}

fn classify<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(Error::EtagMismatch { .. }) => Outcome::Mismatch,
        Err(Error::InvalidEtag { .. }) => Outcome::Invalid,
        Err(Error::InvalidTtl { .. }) => Outcome::BadTtl,
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fn concurrency(first_write: bool) -> Concurrency {
    if first_write {
        Concurrency::FirstWrite
    } else {
        Concurrency::LastWrite
    }
}

struct Harness {
    dir: tempfile::TempDir,
    clock: ManualClock,
    durability: Durability,
    codec: CodecOptions,
    db: Option<Database>,
    model: Model,
}

impl Harness {
    fn new(durability: Durability, codec: CodecOptions) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut harness = Harness {
            dir,
            clock,
            durability,
            codec,
            db: None,
            model: Model::default(),
        };
        harness.open();
        harness
    }

    fn open(&mut self) {
        let options = Options::new(self.dir.path().join("model.roost"))
            .clock(Arc::new(self.clock.clone()))
            .sweep_interval(None)
            .check_integrity_on_open(false)
            .durability(self.durability)
            .codec(self.codec.clone());
        self.db = Some(Database::open(options).unwrap());
    }

    fn db(&self) -> &Database {
        self.db.as_ref().unwrap()
    }

    fn now(&self) -> u64 {
        use roost_engine::Clock;
        self.clock.now_unix_ms()
    }

    fn set_request(&self, op: &SetOp) -> SetRequest {
        let mut request = SetRequest::new(KEYS[op.key], op.value.clone())
            .concurrency(concurrency(op.first_write));
        if let Some(etag) = self.model.etag_text(&op.etag, op.key, self.now()) {
            request = request.etag(etag);
        }
        if let Some(ttl) = ttl_text(op.ttl_seconds) {
            request = request.ttl_in_seconds(ttl);
        }
        request
    }

    fn delete_request(&self, op: &DeleteOp) -> DeleteRequest {
        let mut request = DeleteRequest::new(KEYS[op.key]).concurrency(concurrency(op.first_write));
        if let Some(etag) = self.model.etag_text(&op.etag, op.key, self.now()) {
            request = request.etag(etag);
        }
        request
    }

    /// Predicts a set against `model` and applies it there if it succeeds.
    fn model_set(model: &mut Model, request: &SetRequest, op: &SetOp, now: u64) -> Outcome {
        let outcome = model.check(op.key, request.etag.as_deref(), op.first_write, now);
        if outcome == Outcome::Invalid {
            return outcome;
        }
        if !ttl_ok(op.ttl_seconds) {
            return Outcome::BadTtl;
        }
        outcome
    }

    fn record_set(model: &mut Model, op: &SetOp, etag: u64, now: u64) {
        let expires_at = op
            .ttl_seconds
            .filter(|t| *t > 0)
            .map(|t| now + t as u64 * 1000);
        model.records.insert(
            op.key,
            ModelRecord {
                value: op.value.clone(),
                etag,
                expires_at,
            },
        );
        model.issued.push(etag);
    }

    fn check_new_etag(&self, etag: u64) -> Result<(), TestCaseError> {
        let max = self.model.issued.iter().copied().max().unwrap_or(0);
        prop_assert!(etag > max, "etag {etag} not above {max}");
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let now = self.now();
        match step {
            Step::Set(op) => {
                let request = self.set_request(op);
                let expected = Self::model_set(&mut self.model, &request, op, now);
                let result = self.db().set(request);
                prop_assert_eq!(classify(&result), expected.clone(), "{:?}", result);
                if let Ok(etag) = result {
                    self.check_new_etag(etag.sequence())?;
                    Self::record_set(&mut self.model, op, etag.sequence(), now);
                }
            }
            Step::Delete(op) => {
                let request = self.delete_request(op);
                let expected =
                    self.model
                        .check(op.key, request.etag.as_deref(), op.first_write, now);
                let result = self.db().delete(request);
                prop_assert_eq!(classify(&result), expected, "{:?}", result);
                if result.is_ok() {
                    self.model.records.remove(&op.key);
                }
            }
            Step::BulkSet(ops) => {
                let requests: Vec<SetRequest> = ops.iter().map(|op| self.set_request(op)).collect();
                let results = self.db().bulk_set(requests.clone()).unwrap();
                prop_assert_eq!(results.len(), ops.len());
                for ((op, request), result) in ops.iter().zip(&requests).zip(results) {
                    // Items apply in order, each seeing the ones before it.
                    let expected = Self::model_set(&mut self.model, request, op, now);
                    prop_assert_eq!(classify(&result), expected, "{:?}", result);
                    if let Ok(etag) = result {
                        self.check_new_etag(etag.sequence())?;
                        Self::record_set(&mut self.model, op, etag.sequence(), now);
                    }
                }
            }
            Step::BulkDelete(ops) => {
                let requests: Vec<DeleteRequest> =
                    ops.iter().map(|op| self.delete_request(op)).collect();
                let results = self.db().bulk_delete(requests.clone()).unwrap();
                for ((op, request), result) in ops.iter().zip(&requests).zip(results) {
                    let expected =
                        self.model
                            .check(op.key, request.etag.as_deref(), op.first_write, now);
                    prop_assert_eq!(classify(&result), expected, "{:?}", result);
                    if result.is_ok() {
                        self.model.records.remove(&op.key);
                    }
                }
            }
            Step::Transact(ops) => {
                let operations: Vec<Operation> = ops
                    .iter()
                    .map(|op| match op {
                        TxOp::Set(op) => self.set_request(op).into(),
                        TxOp::Delete(op) => self.delete_request(op).into(),
                    })
                    .collect();
                // Validation (etag syntax, ttl) comes first for every op, then conditions run
                // in order against a scratch copy of the model.
                let mut expected: Result<(), (usize, Outcome)> = Ok(());
                for (index, (op, operation)) in ops.iter().zip(&operations).enumerate() {
                    let etag = match operation {
                        Operation::Set(r) => r.etag.as_deref(),
                        Operation::Delete(r) => r.etag.as_deref(),
                    };
                    if etag.is_some_and(|e| !e.is_empty() && e.parse::<u64>().is_err()) {
                        expected = Err((index, Outcome::Invalid));
                        break;
                    }
                    if let TxOp::Set(set) = op
                        && !ttl_ok(set.ttl_seconds)
                    {
                        expected = Err((index, Outcome::BadTtl));
                        break;
                    }
                }
                let mut scratch = self.model.clone();
                if expected.is_ok() {
                    for (index, (op, operation)) in ops.iter().zip(&operations).enumerate() {
                        let (key, etag, first_write) = match (op, operation) {
                            (TxOp::Set(s), Operation::Set(r)) => {
                                (s.key, r.etag.as_deref(), s.first_write)
                            }
                            (TxOp::Delete(d), Operation::Delete(r)) => {
                                (d.key, r.etag.as_deref(), d.first_write)
                            }
                            _ => unreachable!(),
                        };
                        let outcome = scratch.check(key, etag, first_write, now);
                        if outcome != Outcome::Ok {
                            expected = Err((index, outcome));
                            break;
                        }
                        match op {
                            TxOp::Set(set) => {
                                // A placeholder etag: no etag a client holds can equal the
                                // fresh one the engine assigns, and none equals this.
                                Self::record_set(&mut scratch, set, u64::MAX - index as u64, now);
                            }
                            TxOp::Delete(delete) => {
                                scratch.records.remove(&delete.key);
                            }
                        }
                    }
                }
                let result = self.db().transact(operations);
                match (&expected, result) {
                    (Ok(()), Ok(etags)) => {
                        prop_assert_eq!(etags.len(), ops.len());
                        for (op, etag) in ops.iter().zip(etags) {
                            match op {
                                TxOp::Set(set) => {
                                    let etag = etag.expect("a set returns an etag").sequence();
                                    self.check_new_etag(etag)?;
                                    Self::record_set(&mut self.model, set, etag, now);
                                }
                                TxOp::Delete(delete) => {
                                    prop_assert!(etag.is_none());
                                    self.model.records.remove(&delete.key);
                                }
                            }
                        }
                    }
                    (Err((index, outcome)), Err(Error::Transaction { index: got, source })) => {
                        prop_assert_eq!(*index, got);
                        prop_assert_eq!(&classify::<()>(&Err(*source)), outcome);
                    }
                    (expected, got) => {
                        return Err(TestCaseError::fail(format!(
                            "transaction: expected {expected:?}, got {got:?}"
                        )));
                    }
                }
            }
            Step::Advance(ms) => self.clock.advance_ms(*ms),
            Step::Sweep => {
                let swept = self.db().sweep_expired().unwrap();
                let expired: Vec<usize> = self
                    .model
                    .records
                    .iter()
                    .filter(|(_, r)| r.expires_at.is_some_and(|at| at <= now))
                    .map(|(k, _)| *k)
                    .collect();
                prop_assert_eq!(swept, expired.len());
                for key in expired {
                    self.model.records.remove(&key);
                }
            }
            Step::Reopen => {
                let db = self.db.take().unwrap();
                db.close().unwrap();
                drop(db);
                self.open();
            }
            Step::Pause => self.db().pause_catchup(),
            Step::Resume => self.db().resume_catchup(),
        }
        self.compare()
    }

    fn compare(&self) -> Result<(), TestCaseError> {
        let now = self.now();
        let bulk = self.db().bulk_get(&KEYS).unwrap();
        for (index, key) in KEYS.iter().enumerate() {
            let expected = self.model.live(index, now).cloned();
            let got = self.db().get(key).unwrap().map(|r| ModelRecord {
                value: r.value,
                etag: r.etag.sequence(),
                expires_at: r.expires_at_unix_ms,
            });
            prop_assert_eq!(&got, &expected, "get {}", key);
            let bulk_got = bulk[index].clone().map(|r| ModelRecord {
                value: r.value,
                etag: r.etag.sequence(),
                expires_at: r.expires_at_unix_ms,
            });
            prop_assert_eq!(&bulk_got, &expected, "bulk get {}", key);
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("ROOST_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(Config { cases: cases(), max_shrink_iters: 2000, ..Config::default() })]

    #[test]
    fn engine_matches_the_model(
        immediate in prop::bool::weighted(0.5),
        sealed in prop::bool::weighted(0.3),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let durability = if immediate {
            Durability::Immediate
        } else {
            Durability::Eventual { max_delay: Duration::from_secs(3600) }
        };
        // Some cases run with compression (threshold 4 bytes, so small values compress when
        // that helps) and encryption on: the codec must not change any answer.
        let codec = if sealed {
            CodecOptions {
                compression: Some(Compression { level: 1, min_size: 4 }),
                encryption_key: Some(EncryptionKey::from_bytes([9; 32])),
                previous_encryption_key: None,
            }
        } else {
            CodecOptions::default()
        };
        let mut harness = Harness::new(durability, codec);
        for step in &steps {
            harness.step(step)?;
        }
    }
}
