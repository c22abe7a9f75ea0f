//! The run's report: a markdown file of tables, a JSON file of every number, and an SVG chart
//! (one panel per workload, throughput by target and concurrency).

use std::fmt::Write as _;

use super::run::{Outcome, Skipped};
use super::{Settings, Target, Workload};

/// What the run was measured on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub note: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        Machine {
            cpu,
            cores,
            memory_gib,
            kernel,
            note: format!(
                "the harness (the clients) and every server share this machine's {cores} cores"
            ),
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub started_at_unix: u64,
    pub machine: Machine,
    pub settings: Settings,
    pub results: Vec<Outcome>,
    pub skipped: Vec<Skipped>,
}

fn fmt_rate(ops_per_sec: f64) -> String {
    if ops_per_sec >= 10_000.0 {
        format!("{:.1}k", ops_per_sec / 1000.0)
    } else if ops_per_sec >= 100.0 {
        format!("{ops_per_sec:.0}")
    } else {
        format!("{ops_per_sec:.1}")
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let m = &self.machine;
        let _ = writeln!(out, "# roost-bench results\n");
        let _ = writeln!(
            out,
            "Machine: {} ({} cores, {:.0} GiB RAM, Linux {}). **{}.**\n",
            m.cpu, m.cores, m.memory_gib, m.kernel, m.note
        );
        let _ = writeln!(
            out,
            "Settings: {} s per run, {} preloaded keys (and as many JSON documents for queries), \
             {} B values, concurrency {:?} (closed-loop clients, each with its own connection; \
             Roost's socket clients share one HTTP/2 connection as daprd does).\n",
            s.duration.as_secs_f64(),
            s.keys,
            s.value_size,
            s.concurrency
        );
        if !self.results.is_empty() {
            let steal: Vec<f64> = self.results.iter().map(|r| r.steal_pct).collect();
            let mean = steal.iter().sum::<f64>() / steal.len() as f64;
            let max = steal.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "CPU steal (time the hypervisor took from this VM) during the runs: mean {mean:.1} %, \
                 worst run {max:.1} %; the `steal` column gives it per run.\n"
            );
        }
        let _ = writeln!(out, "Targets:\n");
        for target in &s.targets {
            let _ = writeln!(
                out,
                "- `{}`: {}; durability: {}",
                target.name(),
                target.transport(),
                target.durability()
            );
        }
        let _ = writeln!(out);
        for workload in &s.workloads {
            let rows: Vec<&Outcome> = self
                .results
                .iter()
                .filter(|r| r.workload == *workload)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "## {} — {}\n", workload.name(), workload.describe());
            let _ = writeln!(
                out,
                "| target | tier | clients | value | ops/s | p50 | p99 | p99.9 | max | conflicts | errors | steal | daprd CPU/op | store CPU/op |"
            );
            let _ = writeln!(
                out,
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            for r in rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} B | {} | {} | {} | {} | {} | {} | {} | {:.0} % | {} | {} |",
                    r.target.name(),
                    r.tier,
                    r.concurrency,
                    r.value_size,
                    fmt_rate(r.ops_per_sec),
                    fmt_us(r.p50_us),
                    fmt_us(r.p99_us),
                    fmt_us(r.p999_us),
                    fmt_us(r.max_us),
                    r.conflicts,
                    r.errors,
                    r.steal_pct,
                    r.daprd_cpu_us_per_op.map_or("–".to_string(), fmt_us),
                    r.store_cpu_us_per_op.map_or("–".to_string(), fmt_us),
                );
            }
            let _ = writeln!(out);
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "## Not run\n");
            for skip in &self.skipped {
                let _ = writeln!(
                    out,
                    "- `{}` × `{}`: {}",
                    skip.target.name(),
                    skip.workload.name(),
                    skip.reason
                );
            }
            let _ = writeln!(out);
        }
        let failed: Vec<&Outcome> = self.results.iter().filter(|r| r.errors > 0).collect();
        if !failed.is_empty() {
            let _ = writeln!(out, "## Errors\n");
            for r in failed {
                let _ = writeln!(
                    out,
                    "- `{}` × `{}` × {} clients: {} errors, first: {}",
                    r.target.name(),
                    r.workload.name(),
                    r.concurrency,
                    r.errors,
                    r.first_error.as_deref().unwrap_or("?")
                );
            }
        }
        out
    }

    /// A grouped bar chart: one panel per workload, a group per target, a bar per concurrency.
    pub fn svg(&self) -> String {
        const COLORS: [&str; 6] = [
            "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
        ];
        let workloads: Vec<Workload> = self
            .settings
            .workloads
            .iter()
            .copied()
            .filter(|w| self.results.iter().any(|r| r.workload == *w))
            .collect();
        let targets: Vec<Target> = self.settings.targets.clone();
        let levels = &self.settings.concurrency;
        let bar_h = 7.0;
        let group_gap = 5.0;
        let label_w = 140.0;
        let plot_w = 520.0;
        let width = label_w + plot_w + 90.0;
        let mut out = String::new();
        let mut y = 50.0;
        let mut body = String::new();
        for workload in &workloads {
            let rows: Vec<&Outcome> = self
                .results
                .iter()
                .filter(|r| r.workload == *workload)
                .collect();
            let max = rows
                .iter()
                .map(|r| r.ops_per_sec)
                .fold(0.0, f64::max)
                .max(1.0);
            let _ = writeln!(
                body,
                r#"<text x="10" y="{:.0}" font-weight="bold">{} (ops/s)</text>"#,
                y + 4.0,
                workload.name()
            );
            y += 14.0;
            for target in &targets {
                let bars: Vec<&&Outcome> = rows.iter().filter(|r| r.target == *target).collect();
                if bars.is_empty() {
                    continue;
                }
                let group_h = bar_h * levels.len() as f64;
                let _ = writeln!(
                    body,
                    r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
                    label_w - 6.0,
                    y + group_h / 2.0 + 4.0,
                    target.name()
                );
                for (i, level) in levels.iter().enumerate() {
                    let Some(r) = bars.iter().find(|r| r.concurrency == *level) else {
                        continue;
                    };
                    let w = (r.ops_per_sec / max * plot_w).max(0.5);
                    let by = y + i as f64 * bar_h;
                    let _ = writeln!(
                        body,
                        r#"<rect x="{label_w:.0}" y="{by:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>{} {} c={}: {:.0} ops/s, p99 {:.0} µs</title></rect>"#,
                        bar_h - 1.0,
                        COLORS[i % COLORS.len()],
                        target.name(),
                        workload.name(),
                        level,
                        r.ops_per_sec,
                        r.p99_us
                    );
                    let _ = writeln!(
                        body,
                        r#"<text x="{:.1}" y="{:.1}" font-size="7">{}</text>"#,
                        label_w + w + 3.0,
                        by + bar_h - 1.5,
                        fmt_rate(r.ops_per_sec)
                    );
                }
                y += group_h + group_gap;
            }
            y += 14.0;
        }
        let height = y + 10.0;
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="10">"#
        );
        let _ = writeln!(
            out,
            r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="18" font-size="13" font-weight="bold">roost-bench: throughput per workload ({} B values, {} s runs; clients and servers share {} cores)</text>"#,
            self.settings.value_size,
            self.settings.duration.as_secs_f64(),
            self.machine.cores
        );
        for (i, level) in levels.iter().enumerate() {
            let x = 10.0 + i as f64 * 90.0;
            let _ = writeln!(
                out,
                r#"<rect x="{x:.0}" y="28" width="10" height="10" fill="{}"/><text x="{:.0}" y="37">{} clients</text>"#,
                COLORS[i % COLORS.len()],
                x + 14.0,
                level
            );
        }
        out.push_str(&body);
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outcome(target: Target, workload: Workload, concurrency: usize, rate: f64) -> Outcome {
        Outcome {
            target,
            tier: target.tier(),
            durability: target.durability(),
            workload,
            concurrency,
            value_size: 1024,
            ops: rate as u64,
            seconds: 1.0,
            ops_per_sec: rate,
            p50_us: 100.0,
            p99_us: 2500.0,
            p999_us: 5000.0,
            max_us: 9000.0,
            mean_us: 120.0,
            conflicts: 0,
            errors: 0,
            first_error: None,
            steal_pct: 1.0,
            daprd_cpu_us_per_op: None,
            store_cpu_us_per_op: None,
        }
    }

    fn report() -> Report {
        Report {
            started_at_unix: 0,
            machine: Machine::detect(),
            settings: Settings {
                targets: vec![Target::Roost, Target::Redis],
                workloads: vec![Workload::Get, Workload::Set],
                concurrency: vec![1, 16],
                duration: Duration::from_secs(1),
                keys: 100,
                value_size: 1024,
                baseline_server: None,
            },
            results: vec![
                outcome(Target::Roost, Workload::Get, 1, 12_345.0),
                outcome(Target::Redis, Workload::Get, 16, 999.0),
                outcome(Target::Roost, Workload::Set, 16, 42.0),
            ],
            skipped: vec![Skipped {
                target: Target::Redis,
                workload: Workload::QueryScan,
                reason: "no query".into(),
            }],
        }
    }

    #[test]
    fn markdown_names_every_number_with_its_conditions() {
        let md = report().markdown();
        assert!(
            md.contains(
                "| roost | durable | 1 | 1024 B | 12.3k | 100 µs | 2.50 ms | 5.00 ms | 9.00 ms | 0 | 0 | 1 % |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| redis | durable | 16 | 1024 B | 999 |"),
            "{md}"
        );
        assert!(md.contains("share this machine's"), "{md}");
        assert!(md.contains("`redis` × `query-scan`: no query"), "{md}");
    }

    #[test]
    fn svg_has_a_bar_per_result_and_is_well_formed() {
        let svg = report().svg();
        assert_eq!(svg.matches("<rect x=\"140\"").count(), 3, "{svg}");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }
}
