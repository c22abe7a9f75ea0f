//! What the admin commands print: one formatter for records — the export format, a JSON
//! object per line (`{"key", "value": base64, "etag", "expiresAt": Unix ms | null,
//! "contentType": … | null}`), or the value itself on stdout with its etag and expiry on stderr
//! — one for query rows, and progress for long commands.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Record, Row};

/// One record as a JSON object (the export format, which `roost import` reads back).
pub fn record_json(record: &Record) -> Value {
    json!({
        "key": String::from_utf8_lossy(&record.key),
        "value": base64::engine::general_purpose::STANDARD.encode(&record.value),
        "etag": record.etag,
        "expiresAt": record.expires_at_unix_ms,
        "contentType": record.content_type,
    })
}

/// One query row as a JSON object: the value as text (query rows are JSON documents).
pub fn row_json(row: &Row) -> Value {
    json!({
        "key": row.key,
        "value": String::from_utf8_lossy(&row.value),
        "etag": row.etag,
    })
}

/// Prints one record: as a JSON line with `json`, else its value on `out` and
/// `etag E[, expires T]` on stderr.
pub fn print_record(
    out: &mut dyn std::io::Write,
    record: &Record,
    json: bool,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    if json {
        writeln!(out, "{}", record_json(record)).map_err(io)
    } else {
        out.write_all(&record.value).map_err(io)?;
        writeln!(out).map_err(io)?;
        let expiry = record
            .expires_at_unix_ms
            .map(|ms| format!(", expires {}", roost_engine::format_rfc3339(ms)))
            .unwrap_or_default();
        eprintln!("etag {}{expiry}", record.etag);
        Ok(())
    }
}

/// Progress of a long command: a bar on a terminal, plain lines on stderr otherwise (every
/// 10 % of a known total, or every 10 000 units of an unknown one).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    unit: &'static str,
    total: u64,
    next_line: u64,
}

impl Progress {
    /// `total` 0 means unknown; `unit` is "records" or "bytes".
    pub fn new(what: &'static str, unit: &'static str, total: u64) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = match (total, unit) {
                (0, _) => "{spinner} {msg} {pos}",
                (_, "bytes") => "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
                _ => "{msg} [{bar:40}] {pos}/{len} ({eta})",
            };
            let bar = if total == 0 {
                indicatif::ProgressBar::new_spinner()
            } else {
                indicatif::ProgressBar::new(total)
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Progress {
            bar,
            what,
            unit,
            total,
            next_line: Self::step(total),
        }
    }

    /// For work without a count to report (rekey, compact, offline backup): a ticking spinner
    /// on a terminal, a "started" line otherwise.
    pub fn working(what: &'static str) -> Progress {
        let progress = Progress::new(what, "records", 0);
        match &progress.bar {
            Some(bar) => bar.enable_steady_tick(std::time::Duration::from_millis(120)),
            None => eprintln!("{what}: started"),
        }
        progress
    }

    fn step(total: u64) -> u64 {
        if total == 0 {
            10_000
        } else {
            total.div_ceil(10).max(1)
        }
    }

    pub fn set(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                if done >= self.next_line {
                    if self.total > 0 {
                        eprintln!("{}: {done} of {} {}", self.what, self.total, self.unit);
                    } else {
                        eprintln!("{}: {done} {}", self.what, self.unit);
                    }
                    while self.next_line <= done {
                        self.next_line += Self::step(self.total);
                    }
                }
            }
        }
    }

    pub fn finish(self, summary: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}: {summary}", self.what);
    }
}
