//! Logs on stderr, as the `roost` binary sets them up: level from `ROOST_LOG` (an `EnvFilter`
//! directive such as `info` or `roost_component=debug`), human or JSON lines.
//!
//! The benchmark harness's `serve-roost` installs the same subscriber, so it serves as
//! `roost serve` does: without one, `tracing`'s `log` feature (enabled through tower)
//! sends every span of the HTTP/2 stack through `log` (`Span::log` was 1.5 % of the
//! harness-served server's samples in a profile).

/// Installs the global subscriber; `default_level` applies when `ROOST_LOG` is unset or
/// invalid. Does nothing if a subscriber is already installed.
pub fn init(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
