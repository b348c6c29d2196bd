//! A counter worker: state in a static, stdout output, and calls into `golem:api/host`.

use std::sync::atomic::{AtomicU64, Ordering};

wit_bindgen::generate!({
    world: "golemw:counter/counter",
    path: ["../../../wit", "wit"],
    // Also generate the interfaces `golem:api/host` uses (`golem:rpc/types`,
    // `wasi:clocks/monotonic-clock`, `wasi:io/poll`).
    generate_all,
});

use exports::golemw::counter::api::Guest;
use golem::api::host;

static COUNTER: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Guest for Counter {
    fn add(n: u64) -> u64 {
        COUNTER.fetch_add(n, Ordering::SeqCst).wrapping_add(n)
    }

    fn get() -> u64 {
        COUNTER.load(Ordering::SeqCst)
    }

    fn print(msg: String) {
        println!("{msg}");
    }

    fn print_and_wait(msg: String, ms: u64) {
        println!("{msg}");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }

    fn get_oplog_index() -> u64 {
        host::get_oplog_index()
    }

    fn idempotency_key() -> String {
        let key = host::generate_idempotency_key();
        format_uuid(key.high_bits, key.low_bits)
    }

    fn self_name() -> String {
        host::get_self_metadata().worker_id.worker_name
    }
}

/// Formats a UUID given as two 64-bit halves in the usual 8-4-4-4-12 form.
fn format_uuid(high: u64, low: u64) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

export!(Counter);
