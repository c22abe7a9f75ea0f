//! One member of a band-pipeline swarm (the band example's three agents, plus `critic`, an
//! AND gate on an album and its copy, and `curator`, which batches copies ten at a time): run it in several processes on one Dapr state store
//! and they share the work, each (artifact, agent) running once in the whole swarm.
//!
//! ```text
//! DAPR_GRPC_ENDPOINT=http://127.0.0.1:50001 \
//!   cargo run -p roost-blackboard --example swarm -- --member w1 [--dapr-store statestore]
//!   [--work-ms 20] [--lease-ms 3000] [--poll-ms 20] [--in-flight 16] [--report-ms 1000]
//!   [--publish N --prefix P [--every-ms M]] [--no-agents] [--band-only] [--raw-delays] [--lifetime-s 600]
//! ```
//!
//! It prints `ready` once it follows the swarm, then a JSON line every `--report-ms`: the
//! member's counters and the delays from an input's creation to its handler starting here.
//! `--publish N` publishes N BandConcepts (correlation ids `P-0` … `P-{N-1}`), one every
//! `--every-ms`; `--no-agents` makes a member that only publishes; `--band-only` leaves out `critic` and `curator`; `--raw-delays` adds every delay to the
//! report. It stops when its standard input closes or after `--lifetime-s`.

#[path = "shared/band_pipeline.rs"]
mod band_pipeline;

use std::process::ExitCode;
use std::time::Duration;

use band_pipeline::{BandConcept, register, register_swarm_stages, take_trigger_delays};
use roost_blackboard::{DaprStore, Flock, PublishOptions, SwarmOptions};
use serde_json::json;
use tokio::io::AsyncReadExt;

struct Args {
    member: String,
    store: String,
    work: Duration,
    lease: Duration,
    poll: Duration,
    in_flight: usize,
    report: Duration,
    publish: u32,
    prefix: String,
    every: Duration,
    lifetime: Duration,
    agents: bool,
    raw_delays: bool,
    extra_stages: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        member: String::new(),
        store: "statestore".into(),
        work: Duration::from_millis(20),
        lease: Duration::from_secs(3),
        poll: Duration::from_millis(20),
        in_flight: 16,
        report: Duration::from_secs(1),
        publish: 0,
        prefix: "band".into(),
        every: Duration::ZERO,
        lifetime: Duration::from_secs(600),
        agents: true,
        raw_delays: false,
        extra_stages: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let ms = |v: String| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--member" => args.member = value()?,
            "--dapr-store" => args.store = value()?,
            "--work-ms" => args.work = ms(value()?)?,
            "--lease-ms" => args.lease = ms(value()?)?,
            "--poll-ms" => args.poll = ms(value()?)?,
            "--report-ms" => args.report = ms(value()?)?,
            "--every-ms" => args.every = ms(value()?)?,
            "--in-flight" => {
                args.in_flight = value()?.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--publish" => args.publish = value()?.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--prefix" => args.prefix = value()?,
            "--no-agents" => args.agents = false,
            "--raw-delays" => args.raw_delays = true,
            "--band-only" => args.extra_stages = false,
            "--lifetime-s" => {
                args.lifetime =
                    Duration::from_secs(value()?.parse().map_err(|e| format!("{flag}: {e}"))?)
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.member.is_empty() {
        return Err("--member NAME is required".into());
    }
    Ok(args)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("swarm: {why}");
            return ExitCode::from(2);
        }
    };
    let store = match DaprStore::from_env(&args.store).await {
        Ok(store) => store,
        Err(err) => {
            eprintln!("swarm: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = SwarmOptions::new(&args.member)
        .lease(args.lease)
        .poll(args.poll)
        .max_in_flight(args.in_flight);
    let flock = Flock::swarm(store, options);
    if args.agents
        && let Err(err) = register(&flock, args.work).and_then(|()| {
            if args.extra_stages {
                register_swarm_stages(&flock, args.work)
            } else {
                Ok(())
            }
        })
    {
        eprintln!("swarm: {err}");
        return ExitCode::FAILURE;
    }
    match flock.start().await {
        Ok(resumed) => println!("ready (resumed {resumed} runs)"),
        Err(err) => {
            eprintln!("swarm: cannot join: {err}");
            return ExitCode::FAILURE;
        }
    }
    let publisher = {
        let flock = flock.clone();
        let (n, prefix, every) = (args.publish, args.prefix.clone(), args.every);
        tokio::spawn(async move {
            for i in 0..n {
                let concept = BandConcept {
                    genre: format!("genre{i}"),
                    vibe: ["neon", "velvet", "static", "copper"][i as usize % 4].into(),
                    target_audience: format!("audience {i}"),
                };
                let options = PublishOptions::default().correlation_id(format!("{prefix}-{i}"));
                if let Err(err) = flock.publish_with(&concept, options).await {
                    eprintln!("swarm: publish {i}: {err}");
                }
                if !every.is_zero() {
                    tokio::time::sleep(every).await;
                }
            }
        })
    };
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::pin!(stdin_closed);
    let deadline = tokio::time::sleep(args.lifetime);
    tokio::pin!(deadline);
    let mut delays = Vec::new();
    let mut report = tokio::time::interval(args.report);
    loop {
        tokio::select! {
            _ = &mut stdin_closed => break,
            _ = &mut deadline => break,
            _ = report.tick() => {
                delays.extend(take_trigger_delays());
                let mut sorted = delays.clone();
                sorted.sort_unstable();
                let mut line = json!({
                    "member": args.member,
                    "stats": flock.swarm_stats(),
                    "trigger_us": {
                        "count": sorted.len(),
                        "p50": percentile(&sorted, 0.50),
                        "p99": percentile(&sorted, 0.99),
                        "max": sorted.last().copied().unwrap_or(0),
                    },
                    "failures": flock.failures(),
                });
                if args.raw_delays {
                    line["delays_us"] = json!(sorted);
                }
                println!("{line}");
            }
        }
    }
    publisher.abort();
    flock.stop();
    ExitCode::SUCCESS
}
