//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use roost_engine::{Database, Durability, ManualClock, Options};

/// 2026-01-01T00:00:00Z: tests start their manual clocks here.
pub const T0: u64 = 1_767_225_600_000;

pub fn options(dir: &Path, clock: &ManualClock) -> Options {
    Options::new(dir.join("test.roost"))
        .clock(Arc::new(clock.clone()))
        .sweep_interval(None)
}

pub fn open(dir: &Path, clock: &ManualClock) -> Database {
    Database::open(options(dir, clock)).expect("open")
}

pub fn open_eventual(dir: &Path, clock: &ManualClock) -> Database {
    Database::open(options(dir, clock).durability(Durability::EVENTUAL)).expect("open")
}
