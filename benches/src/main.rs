//! `roost-bench`: Roost against Redis, PostgreSQL and SQLite, each doing what its Dapr state
//! component does, on servers this program starts and stops itself.
//!
//! ```text
//! cargo run --release -p roost-bench -- --targets roost,redis,postgres \
//!     --workloads get,set,txn --concurrency 1,16,64 --duration 10s
//! cargo run --release -p roost-bench -- --smoke
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use roost_bench::harness::report::{Machine, Report};
use roost_bench::harness::run::{self, Servers, Skipped};
use roost_bench::harness::{HarnessError, Settings, Target, Workload, parse_duration, servers};

// The allocator of the `roost` binary, so `serve-roost` serves as `roost serve` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "roost-bench",
    about = "Compare Roost with Redis, PostgreSQL and SQLite doing what their Dapr state components do",
    long_about = "Starts redis-server, PostgreSQL (initdb + pg_ctl) and `roost serve` in temporary \
                  directories, preloads a keyspace, runs each workload for each target and \
                  concurrency, and writes results.md, results.json and results.svg."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Targets to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    targets: Vec<Target>,
    /// Workloads to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    workloads: Vec<Workload>,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// How long each (target, workload, concurrency) run lasts: 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Keys preloaded per target (and JSON documents for the query workloads).
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Every target and workload for about a second each, on a small keyspace (for CI).
    /// Any run exits non-zero if a Roost target failed an operation or another target failed
    /// every operation of a run.
    #[arg(long)]
    smoke: bool,
    /// Where the report files go.
    #[arg(long, default_value = "target/roost-bench")]
    out: PathBuf,
    /// A `roost-bench` binary of another build (e.g. the commit before a server change): the
    /// `roost-baseline` target runs its Roost server, so before and after are measured in
    /// one run by the same clients. Adds `roost-baseline` to the default targets.
    #[arg(long)]
    baseline_server: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// The blackboard swarm: pipeline throughput, publish-to-trigger delay and polling cost
    /// of the band pipeline at several process counts on each store (needs the `swarm`
    /// example built: `cargo build --release -p roost-blackboard --example swarm`).
    Swarm {
        /// Processes per run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        processes: Vec<usize>,
        /// Stores: roost-sidecar, daprd-roost, daprd-redis, daprd-postgres (default: all).
        #[arg(long, value_delimiter = ',')]
        stores: Vec<String>,
        /// Inputs of the throughput phase.
        #[arg(long, default_value_t = 300)]
        inputs: u32,
        /// The `swarm` example binary (default: next to this binary's build).
        #[arg(long)]
        worker: Option<PathBuf>,
        /// Print the results as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Serve the Roost component (the harness runs itself as its Roost server).
    #[command(hide = true)]
    ServeRoost {
        #[arg(long)]
        socket_folder: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::ServeRoost {
        socket_folder,
        data_dir,
    }) = &args.command
    {
        return match servers::serve_roost(socket_folder, data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("roost-bench serve-roost: {err}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Swarm {
        processes,
        stores,
        inputs,
        worker,
        json,
    }) = &args.command
    {
        return swarm_command(processes, stores, *inputs, worker.as_deref(), *json);
    }
    // The embedded targets' engine logs as `roost serve`'s does (`ROOST_LOG`, e.g.
    // `roost_engine=debug` for every checkpoint).
    roost_component::logging::init(false, "warn");
    let settings = settings(&args);
    if let Err(err) = check(&settings) {
        eprintln!("roost-bench: {err}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("roost-bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // On Ctrl-C or SIGTERM the run is dropped, which stops every server it started.
    let report = match runtime.block_on(async {
        tokio::select! {
            report = run_all(settings) => report,
            () = interrupted() => Err(HarnessError("interrupted; servers stopped".into())),
        }
    }) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("roost-bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = write_report(&report, &args.out) {
        eprintln!("roost-bench: cannot write the report: {err}");
        return ExitCode::FAILURE;
    }
    // Errors are part of the measurement (SQLite's "database is locked" under write
    // contention is its component's documented behaviour), so the run fails only when Roost
    // failed an operation or a target could not be operated at all (a harness fault).
    let broken: Vec<String> = report
        .results
        .iter()
        .filter(|r| {
            r.errors > 0
                && (matches!(
                    r.target,
                    Target::Roost
                        | Target::RoostEventual
                        | Target::RoostBaseline
                        | Target::Embedded
                        | Target::EmbeddedEventual
                ) || r.ops == 0)
        })
        .map(|r| {
            format!(
                "{} {} x{}: {}",
                r.target.name(),
                r.workload.name(),
                r.concurrency,
                r.first_error.as_deref().unwrap_or("?")
            )
        })
        .collect();
    if !broken.is_empty() {
        eprintln!("roost-bench: failed runs:\n  {}", broken.join("\n  "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn settings(args: &Args) -> Settings {
    let mut settings = Settings {
        targets: if args.targets.is_empty() {
            let mut all = Target::ALL.to_vec();
            if args.baseline_server.is_some() {
                all.push(Target::RoostBaseline);
                all.push(Target::DaprdRoostBaseline);
            }
            all
        } else {
            args.targets.clone()
        },
        workloads: if args.workloads.is_empty() {
            Workload::ALL.to_vec()
        } else {
            args.workloads.clone()
        },
        concurrency: args.concurrency.clone(),
        duration: args.duration,
        keys: args.keys,
        value_size: args.value_size,
        baseline_server: args.baseline_server.clone(),
    };
    if args.smoke {
        settings.duration = Duration::from_secs(1);
        settings.keys = 1000;
        settings.concurrency = vec![1, 8];
    }
    if args.targets.is_empty() && roost_sidecar::daprd::find_daprd().is_none() {
        eprintln!(
            "roost-bench: no daprd (run `bash tests/dapr/build.sh`, or set ROOST_DAPRD): \
             the daprd-* targets are left out"
        );
        settings.targets.retain(|t| !t.is_daprd());
    }
    settings.targets.sort();
    settings.targets.dedup();
    settings.workloads.sort();
    settings.workloads.dedup();
    settings
}

fn check(settings: &Settings) -> Result<(), String> {
    match &settings.baseline_server {
        None if settings.targets.contains(&Target::RoostBaseline)
            || settings.targets.contains(&Target::DaprdRoostBaseline) =>
        {
            return Err("the roost-baseline targets need --baseline-server PATH".into());
        }
        Some(path) if !path.is_file() => {
            return Err(format!(
                "--baseline-server {}: no such file",
                path.display()
            ));
        }
        _ => {}
    }
    if settings.concurrency.is_empty() || settings.concurrency.contains(&0) {
        return Err("--concurrency needs positive numbers".into());
    }
    if settings.keys < 100 {
        return Err("--keys must be at least 100 (bulk get reads 100 keys)".into());
    }
    if settings.value_size < 16 {
        return Err("--value-size must be at least 16 bytes".into());
    }
    Ok(())
}

async fn run_all(settings: Settings) -> Result<Report, HarnessError> {
    let machine = Machine::detect();
    eprintln!(
        "roost-bench: {} ({} cores): clients and servers share this machine's cores",
        machine.cpu, machine.cores
    );
    let started_at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut plan = Vec::new();
    let mut skipped = Vec::new();
    for &target in &settings.targets {
        for &workload in &settings.workloads {
            match workload.unsupported_by(target) {
                Some(reason) => skipped.push(Skipped {
                    target,
                    workload,
                    reason: reason.into(),
                }),
                None => plan.push((target, workload)),
            }
        }
    }
    let runs = plan.len() * settings.concurrency.len();
    let bar = ProgressBar::new(runs as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let plain = bar.is_hidden();
    let say = |line: String| {
        bar.println(&line);
        if plain {
            eprintln!("{line}");
        }
    };
    // Every target is started and preloaded first; then each (workload, concurrency) runs on
    // every target in turn, so a slow phase of the machine (CPU steal on a VM) hits all
    // targets alike instead of whichever target ran then.
    let mut servers = Servers::new(settings.baseline_server.clone());
    let mut connectors = Vec::new();
    for &target in &settings.targets {
        if !plan.iter().any(|(t, _)| *t == target) {
            continue;
        }
        bar.set_message(format!("{}: starting and preloading", target.name()));
        let preload_start = Instant::now();
        let connector = servers.prepare(target).await?;
        let documents = plan.iter().any(|(t, w)| *t == target && w.is_query());
        run::preload(&connector, &settings, documents)
            .await
            .map_err(|e| HarnessError(format!("{}: preload failed: {e}", target.name())))?;
        say(format!(
            "{}: started and preloaded {} keys{} in {:.1} s",
            target.name(),
            settings.keys,
            if documents { " and documents" } else { "" },
            preload_start.elapsed().as_secs_f64()
        ));
        connectors.push((target, connector));
    }
    let mut results = Vec::new();
    let mut run_id = 0u64;
    for &workload in &settings.workloads {
        for &concurrency in &settings.concurrency {
            for (target, connector) in &connectors {
                let target = *target;
                if !plan.contains(&(target, workload)) {
                    continue;
                }
                run_id += 1;
                bar.set_message(format!(
                    "{} {} x{}",
                    target.name(),
                    workload.name(),
                    concurrency
                ));
                let outcome =
                    run::measure(connector, target, workload, concurrency, &settings, run_id)
                        .await
                        .map_err(|e| {
                            HarnessError(format!(
                                "{} {} x{concurrency}: {e}",
                                target.name(),
                                workload.name()
                            ))
                        })?;
                say(format!(
                    "{:<18} {:<8} {:<14} clients {:>3}  {:>7} B  {:>10.0} ops/s  p50 {:>9.0} µs  p99 {:>9.0} µs  p99.9 {:>9.0} µs  max {:>9.0} µs  conflicts {}  errors {}  steal {:.0}%",
                    target.name(),
                    target.tier(),
                    workload.name(),
                    concurrency,
                    outcome.value_size,
                    outcome.ops_per_sec,
                    outcome.p50_us,
                    outcome.p99_us,
                    outcome.p999_us,
                    outcome.max_us,
                    outcome.conflicts,
                    outcome.errors,
                    outcome.steal_pct
                ));
                if let Some(error) = &outcome.first_error {
                    say(format!("  first error: {error}"));
                }
                results.push(outcome);
                bar.inc(1);
            }
        }
    }
    for (_, connector) in &connectors {
        connector.close().await;
    }
    bar.finish_and_clear();
    drop(servers);
    Ok(Report {
        started_at_unix,
        machine,
        settings,
        results,
        skipped,
    })
}

fn write_report(report: &Report, out: &PathBuf) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let markdown = out.join("results.md");
    let json = out.join("results.json");
    let svg = out.join("results.svg");
    std::fs::write(&markdown, report.markdown())?;
    std::fs::write(
        &json,
        serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(&svg, report.svg())?;
    eprintln!(
        "roost-bench: wrote {}, {} and {}",
        markdown.display(),
        json.display(),
        svg.display()
    );
    Ok(())
}

fn swarm_command(
    processes: &[usize],
    stores: &[String],
    inputs: u32,
    worker: Option<&std::path::Path>,
    json: bool,
) -> ExitCode {
    use roost_bench::harness::swarm;
    let harness = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("roost-bench swarm: {err}");
            return ExitCode::FAILURE;
        }
    };
    let worker = worker
        .map(PathBuf::from)
        .unwrap_or_else(|| swarm::default_worker(&harness));
    if !worker.is_file() {
        eprintln!(
            "roost-bench swarm: no worker at {} (cargo build --release -p roost-blackboard --example swarm)",
            worker.display()
        );
        return ExitCode::from(2);
    }
    let stores: Vec<String> = if stores.is_empty() {
        swarm::STORES.iter().map(|s| s.to_string()).collect()
    } else {
        stores.to_vec()
    };
    let daprd = roost_sidecar::daprd::find_daprd();
    if !json {
        println!(
            "| store | processes | runs/s | trigger p50 ms | trigger p99 ms | idle reads/s per process |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    }
    let mut failed = false;
    for store in &stores {
        for &n in processes {
            eprintln!("swarm: {store}, {n} processes …");
            match swarm::measure(store, n, inputs, &worker, &harness, daprd.as_deref()) {
                Ok(r) if json => println!("{}", serde_json::to_string(&r).unwrap_or_default()),
                Ok(r) => println!(
                    "| {} | {} | {:.0} | {:.1} | {:.1} | {:.0} |",
                    r.store,
                    r.processes,
                    r.runs_per_s,
                    r.trigger_p50_ms,
                    r.trigger_p99_ms,
                    r.idle_reads_per_s
                ),
                Err(err) => {
                    eprintln!("roost-bench swarm: {store} at {n}: {err}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
