//! Clocks, randomness and sleep: each one becomes a WASI preview 1 call
//! (`clock_time_get`, `random_get`, `poll_oneoff`).

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({
    world: "golemw:clocks/clocks",
    path: ["../../../wit", "wit"],
});

use exports::golemw::clocks::api::Guest;

static START: OnceLock<Instant> = OnceLock::new();

fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("wall clock before the Unix epoch")
        .as_nanos() as u64
}

struct Clocks;

impl Guest for Clocks {
    fn now() -> u64 {
        wall_nanos()
    }

    fn monotonic() -> u64 {
        let start = *START.get_or_init(Instant::now);
        start.elapsed().as_nanos() as u64
    }

    fn random() -> u64 {
        getrandom::u64().expect("random_get failed")
    }

    fn many_clocks(n: u32) -> u64 {
        (0..n).fold(0, |acc, _| acc ^ wall_nanos())
    }

    fn sleep_ms(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    fn sleep_until(due_ms: u64) -> u64 {
        let now_ms = wall_nanos() / 1_000_000;
        std::thread::sleep(Duration::from_millis(due_ms.saturating_sub(now_ms)));
        wall_nanos() / 1_000_000
    }
}

export!(Clocks);
