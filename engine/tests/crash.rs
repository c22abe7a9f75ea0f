//! Crash safety: a writer process under concurrent load is killed with SIGKILL at random
//! moments; after each kill the database reopens without error, every acknowledged write is
//! present with its acknowledged etag, no transaction is half applied, and etags keep rising.
//!
//! The writer is this same test binary, re-run with `ROOST_CRASH_DB` set and the ignored test
//! `crash_child` selected. It prints a line for each acknowledged write; a line is printed only
//! after the write's call returned, so everything the parent reads was acknowledged.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roost_engine::{CrashPoint, Database, DeleteRequest, Error, Operation, Options, SetRequest};

const ENV_DB: &str = "ROOST_CRASH_DB";
const ENV_ROUND: &str = "ROOST_CRASH_ROUND";
/// `<point>:<nth>`: the child aborts itself the nth time the write path reaches the point.
const ENV_CRASH_AT: &str = "ROOST_CRASH_AT";
/// Small checkpoints, so catch-up and checkpoints run many times in a short load.
const CHECKPOINT_BYTES: u64 = 256 * 1024;

fn crash_point(name: &str) -> CrashPoint {
    match name {
        "after-log-append" => CrashPoint::AfterLogAppend,
        "after-apply" => CrashPoint::AfterApply,
        "before-checkpoint" => CrashPoint::BeforeCheckpoint,
        "after-checkpoint" => CrashPoint::AfterCheckpoint,
        "after-log-truncate" => CrashPoint::AfterLogTruncate,
        other => panic!("unknown crash point {other}"),
    }
}
const THREADS: usize = 8;

fn value_for(key: &str) -> Vec<u8> {
    key.as_bytes().repeat(1 + 600 / key.len())
}

#[test]
#[ignore = "the writer process of sigkill_during_load_loses_no_acknowledged_write; it runs only as that test's child"]
fn crash_child() {
    let Ok(path) = std::env::var(ENV_DB) else {
        return;
    };
    let round: u32 = std::env::var(ENV_ROUND).unwrap().parse().unwrap();
    let mut options = Options::new(&path).checkpoint_log_bytes(CHECKPOINT_BYTES);
    if let Ok(at) = std::env::var(ENV_CRASH_AT) {
        let (point, nth) = at.split_once(':').unwrap();
        options = options.abort_at(crash_point(point), nth.parse().unwrap());
    }
    let db = Database::open(options).expect("child open");
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = move |line: String| {
        let mut out = stdout.lock().unwrap();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    println!("ready");
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            let say = say.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let counter = format!("counter-{t}");
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    match i % 4 {
                        0 => {
                            let key = format!("r{round}-t{t}-set{i}");
                            let etag = db
                                .set(SetRequest::new(key.clone(), value_for(&key)))
                                .unwrap();
                            say(format!("set {key} {etag}"));
                        }
                        1 => {
                            let id = format!("r{round}-t{t}-tx{i}");
                            say(format!("begin {id}"));
                            let ops: Vec<Operation> = ["a", "b", "c"]
                                .iter()
                                .map(|p| {
                                    let key = format!("{id}-{p}");
                                    SetRequest::new(key.clone(), value_for(&key)).into()
                                })
                                .chain([DeleteRequest::new(format!("{id}-gone")).into()])
                                .collect();
                            let etags = db.transact(ops).unwrap();
                            let etags: Vec<String> =
                                etags.iter().flatten().map(|e| e.to_string()).collect();
                            say(format!("tx {id} {}", etags.join(" ")));
                        }
                        2 => {
                            let keys: Vec<String> = (0..3)
                                .map(|j| format!("r{round}-t{t}-bulk{i}-{j}"))
                                .collect();
                            let results = db
                                .bulk_set(
                                    keys.iter()
                                        .map(|k| SetRequest::new(k.clone(), value_for(k)))
                                        .collect(),
                                )
                                .unwrap();
                            for (key, result) in keys.iter().zip(results) {
                                say(format!("set {key} {}", result.unwrap()));
                            }
                        }
                        _ => loop {
                            let current = db.get(&counter).unwrap();
                            let (n, request) = match &current {
                                Some(r) => {
                                    let n: u64 = String::from_utf8_lossy(&r.value).parse().unwrap();
                                    (
                                        n + 1,
                                        SetRequest::new(counter.clone(), (n + 1).to_string())
                                            .etag(r.etag.to_string()),
                                    )
                                }
                                None => (1, SetRequest::new(counter.clone(), "1").first_write()),
                            };
                            match db.set(request) {
                                Ok(etag) => {
                                    say(format!("cas {counter} {n} {etag}"));
                                    break;
                                }
                                Err(Error::EtagMismatch { .. }) => continue,
                                Err(other) => panic!("{other}"),
                            }
                        },
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[derive(Default)]
struct Acks {
    sets: Vec<(String, u64)>,
    begun: Vec<String>,
    txs: HashMap<String, Vec<u64>>,
    cas: HashMap<String, (u64, u64)>,
    max_etag: u64,
}

/// Runs the writer child; it is SIGKILLed after `kill_after_lines` acknowledgements, or (with
/// `crash_at`) aborts itself at that step of the write path.
fn run_child(path: &Path, round: u32, kill_after_lines: usize, crash_at: Option<&str>) -> Acks {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    if let Some(at) = crash_at {
        command.env(ENV_CRASH_AT, at);
    }
    let mut child = command
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ENV_DB, path)
        .env(ENV_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acks = Acks::default();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = 0;
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["set", key, etag] => acks.sets.push((key.to_string(), etag.parse().unwrap())),
            ["begin", id] => acks.begun.push(id.to_string()),
            ["tx", id, etags @ ..] => {
                acks.txs.insert(
                    id.to_string(),
                    etags.iter().map(|e| e.parse().unwrap()).collect(),
                );
            }
            ["cas", key, n, etag] => {
                acks.cas
                    .insert(key.to_string(), (n.parse().unwrap(), etag.parse().unwrap()));
            }
            _ => {}
        }
        seen += 1;
        if !killed && crash_at.is_none() && (seen >= kill_after_lines || Instant::now() > deadline)
        {
            // SIGKILL: no destructor, no flush, no clean-close marker.
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    if crash_at.is_some() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(6),
            "the writer did not abort at {crash_at:?}: {status}"
        );
    } else {
        assert!(killed, "the writer stopped before it was killed");
    }
    acks.max_etag = acks
        .sets
        .iter()
        .map(|(_, e)| *e)
        .chain(acks.txs.values().flatten().copied())
        .chain(acks.cas.values().map(|(_, e)| *e))
        .max()
        .unwrap_or(0);
    acks
}

#[test]
fn sigkill_during_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.roost");
    let rounds: u32 = std::env::var("ROOST_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut state = Verified::default();
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 50 + (seed % 1500) as usize;
        let acks = run_child(&path, round, kill_after, None);
        assert!(
            !acks.sets.is_empty(),
            "round {round}: no acknowledged writes"
        );
        state.verify(&path, round, &acks);
        eprintln!("round {round}: killed after {kill_after} lines");
    }
}

/// A crash at each step of catching up (the log appended but the batch not yet shown; a step
/// applied to redb without fsync; just before, and just after, a checkpoint's durable commit;
/// just after the covered log was deleted): the reopened database holds every acknowledged
/// write and no half transaction, rounds after rounds on the same file.
#[test]
fn a_crash_at_each_step_of_catching_up_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.roost");
    let mut state = Verified::default();
    let points = [
        ("after-log-append", 400),
        ("after-apply", 60),
        ("before-checkpoint", 3),
        ("after-checkpoint", 3),
        ("after-log-truncate", 2),
        ("after-apply", 8),
        ("after-log-append", 1),
    ];
    for (round, (point, nth)) in points.iter().enumerate() {
        let at = format!("{point}:{nth}");
        let acks = run_child(&path, round as u32, usize::MAX, Some(&at));
        state.verify(&path, round as u32, &acks);
        eprintln!("round {round}: aborted at {at}");
    }
}

/// What earlier rounds acknowledged, checked again after every crash.
#[derive(Default)]
struct Verified {
    previous_max_etag: u64,
    all_sets: Vec<(String, u64)>,
}

impl Verified {
    fn verify(&mut self, path: &Path, round: u32, acks: &Acks) {
        let previous_max_etag = self.previous_max_etag;
        let all_sets = &mut self.all_sets;
        let db = Database::open(Options::new(path).sweep_interval(None))
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        all_sets.extend(acks.sets.iter().cloned());
        // Every acknowledged set of this and all earlier rounds is present with its etag.
        for (key, etag) in all_sets.iter() {
            let record = db
                .get(key)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(record.etag.sequence(), *etag, "{key}");
            assert_eq!(record.value, value_for(key), "{key}");
        }
        for (id, etags) in &acks.txs {
            for (part, etag) in ["a", "b", "c"].iter().zip(etags) {
                let key = format!("{id}-{part}");
                let record = db
                    .get(&key)
                    .unwrap()
                    .unwrap_or_else(|| panic!("acknowledged {key} lost"));
                assert_eq!(record.etag.sequence(), *etag);
            }
        }
        // Transactions that began but were not acknowledged: all of it or none of it.
        for id in &acks.begun {
            let present: Vec<bool> = ["a", "b", "c"]
                .iter()
                .map(|p| db.get(format!("{id}-{p}")).unwrap().is_some())
                .collect();
            assert!(
                present.iter().all(|p| *p) || present.iter().all(|p| !*p),
                "transaction {id} half applied: {present:?}"
            );
        }
        for (key, (n, etag)) in &acks.cas {
            let record = db.get(key).unwrap().expect("counter lost");
            let stored: u64 = String::from_utf8_lossy(&record.value).parse().unwrap();
            assert!(stored >= *n, "{key}: acknowledged {n}, found {stored}");
            if stored == *n {
                assert_eq!(record.etag.sequence(), *etag);
            }
        }
        // Etags keep rising across crashes: a new write gets an etag above every acked one.
        assert!(acks.max_etag > previous_max_etag || acks.sets.is_empty());
        let probe = db
            .set(SetRequest::new(format!("probe{round}"), b"p".to_vec()))
            .unwrap();
        assert!(probe.sequence() > acks.max_etag);
        self.previous_max_etag = probe.sequence();
        db.close().unwrap();
        eprintln!(
            "round {round}: {} sets, {} transactions verified",
            acks.sets.len(),
            acks.txs.len()
        );
    }
}
