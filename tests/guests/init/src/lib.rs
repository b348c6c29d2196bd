//! A reactor whose start-up code makes host calls: `_initialize` reads the wall clock and a
//! random number (WASI `clock_time_get` and `random_get`) once, and `started-at` returns them.
//!
//! Rust does not export `_initialize` from a `cdylib` on `wasm32-wasip1` by itself (wasm-ld
//! links no `crt1-reactor.o` for it), and a static constructor (`.init_array`) is no substitute:
//! wit-bindgen's exports run the constructors lazily, inside the first export call. So
//! `_initialize` is exported by hand here and does what `crt1-reactor.o`'s does: run the static
//! constructors (through wit-bindgen's `run_ctors_once`, so that the exports do not run them a
//! second time), trapping if it is called twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({
    world: "golemw:init/init",
    path: ["../../../wit", "wit"],
});

use exports::golemw::init::api::Guest;

static INITIALIZED: AtomicBool = AtomicBool::new(false);
static CLOCK: AtomicU64 = AtomicU64::new(0);
static RANDOM: AtomicU64 = AtomicU64::new(0);
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The reactor start function: the runtime calls it once, right after instantiation.
#[unsafe(export_name = "_initialize")]
pub extern "C" fn initialize() {
    if INITIALIZED.swap(true, Ordering::SeqCst) {
        // Like crt1-reactor.o: start-up code runs once per instance.
        core::arch::wasm32::unreachable();
    }
    wit_bindgen::rt::run_ctors_once();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("wall clock before the Unix epoch")
        .as_nanos() as u64;
    CLOCK.store(now, Ordering::SeqCst);
    RANDOM.store(
        getrandom::u64().expect("random_get failed"),
        Ordering::SeqCst,
    );
}

struct Init;

impl Guest for Init {
    fn started_at() -> (u64, u64) {
        (CLOCK.load(Ordering::SeqCst), RANDOM.load(Ordering::SeqCst))
    }

    fn add(n: u64) -> u64 {
        COUNTER.fetch_add(n, Ordering::SeqCst).wrapping_add(n)
    }
}

export!(Init);
