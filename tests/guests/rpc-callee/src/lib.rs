//! The callee of worker-to-worker calls: in-memory counters and a pass-through of every
//! kind of WIT value.

use std::cell::Cell;
use std::time::Duration;

wit_bindgen::generate!({
    world: "golemw:rpc-callee/callee",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::rpc_callee::api::{Guest, Shapes};

thread_local! {
    /// The total of every `n` added.
    static TOTAL: Cell<u64> = const { Cell::new(0) };
    /// How many times `nothing` ran.
    static NOTHINGS: Cell<u64> = const { Cell::new(0) };
}

struct Callee;

impl Guest for Callee {
    fn add(n: u64) -> u64 {
        TOTAL.with(|t| {
            t.set(t.get().wrapping_add(n));
            t.get()
        })
    }

    fn total() -> u64 {
        TOTAL.with(Cell::get)
    }

    fn echo(v: Shapes) -> Shapes {
        v
    }

    fn pair(a: String, b: u32) -> (String, u32) {
        (a, b.wrapping_mul(2))
    }

    fn nothing() {
        NOTHINGS.with(|n| n.set(n.get() + 1));
    }

    fn nothings() -> u64 {
        NOTHINGS.with(Cell::get)
    }

    fn fail(message: String) {
        panic!("{message}");
    }

    fn slow_add(n: u64, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        Self::add(n)
    }
}

export!(Callee);
