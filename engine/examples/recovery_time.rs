//! How long a reopen takes after a crash with the table of unapplied writes full.
//!
//! A child process opens a database, holds catch-up (so every acknowledged write stays in the
//! overlay and the log, none in the main file), writes 1 KiB records under distinct keys until
//! the overlay holds its bound (`--max-unapplied-mb`, default the engine's 256 MiB), then
//! aborts. The parent times the reopen — the replay of the whole log — and checks that every
//! acknowledged record is there. Keys are written in key order, or with `scattered` spread
//! over the keyspace (a permutation), as random writes leave them in the log.
//!
//! ```sh
//! cargo run --release -p roost-engine --example recovery_time -- [MAX_UNAPPLIED_MB] [scattered]
//! ```
//!
//! A measurement, not a test.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use roost_engine::{Database, Options, SetRequest};

const CHILD: &str = "ROOST_RECOVERY_CHILD";
const BATCH: usize = 500;

/// A prime above every index written: `i ↦ i·MULTIPLIER mod SPREAD` is then a permutation.
const SPREAD: u64 = 1_000_000_007;
const MULTIPLIER: u64 = 7_919_111;

fn key(i: usize, scattered: bool) -> String {
    let n = if scattered {
        (i as u64 * MULTIPLIER) % SPREAD
    } else {
        i as u64
    };
    format!("key-{n:010}")
}

fn child(path: &str, limit: u64, scattered: bool) {
    let db = Database::open(Options::new(path).max_unapplied_bytes(limit)).expect("open");
    db.pause_catchup();
    let value = vec![b'v'; 1024];
    let mut written = 0;
    let mut out = std::io::stdout();
    // Stop a little short of the bound: at the bound the next batch would wait for catch-up,
    // which is held.
    while db.writer_metrics().unapplied_bytes + (BATCH as u64) * 1200 < limit {
        let requests = (written..written + BATCH)
            .map(|i| SetRequest::new(key(i, scattered), value.clone()))
            .collect();
        for result in db.bulk_set(requests).expect("bulk set") {
            result.expect("set");
        }
        written += BATCH;
    }
    writeln!(
        out,
        "acknowledged {written} {}",
        db.writer_metrics().unapplied_bytes
    )
    .unwrap();
    out.flush().unwrap();
    std::process::abort();
}

fn main() {
    let limit_mb: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(roost_engine::DEFAULT_MAX_UNAPPLIED_BYTES >> 20);
    let scattered = std::env::args().nth(2).as_deref() == Some("scattered");
    if let Ok(path) = std::env::var(CHILD) {
        child(&path, limit_mb << 20, scattered);
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("recovery.roost");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(limit_mb.to_string())
        .arg(if scattered { "scattered" } else { "in-order" })
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let status = child.wait().unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let (written, unapplied): (usize, u64) = match words.as_slice() {
        ["acknowledged", n, bytes] => (n.parse().unwrap(), bytes.parse().unwrap()),
        _ => panic!("the child printed {line:?} and ended with {status}"),
    };
    let log_bytes = roost_engine::log_record_bytes(&path).unwrap();
    let started = Instant::now();
    let db = Database::open(Options::new(&path)).expect("reopen");
    let replay = started.elapsed();
    for i in (0..written).step_by(997).chain([written - 1]) {
        let key = key(i, scattered);
        assert!(db.get(&key).unwrap().is_some(), "{key} lost");
    }
    let records = db.keyspace_stats().unwrap().records;
    assert_eq!(records, written as u64, "records after replay");
    println!(
        "overlay bound {limit_mb} MiB, keys {}: {written} acknowledged 1 KiB records, \
         {:.1} MiB unapplied, {:.1} MiB of log; reopen (replay) took {:.2} s",
        if scattered { "scattered" } else { "in order" },
        unapplied as f64 / 1048576.0,
        log_bytes as f64 / 1048576.0,
        replay.as_secs_f64()
    );
}
