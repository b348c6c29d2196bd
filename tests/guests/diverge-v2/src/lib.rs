//! Version 2 of the diverge worker: `compute(x)` returns `x + 2`.

wit_bindgen::generate!({
    world: "golemw:diverge/diverge",
    path: "wit",
});

use exports::golemw::diverge::api::Guest;

struct Diverge;

impl Guest for Diverge {
    fn compute(x: u64) -> u64 {
        x.wrapping_add(2)
    }
}

export!(Diverge);
