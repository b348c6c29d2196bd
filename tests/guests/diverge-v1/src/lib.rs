//! Version 1 of the diverge worker: `compute(x)` returns `x + 1`.

wit_bindgen::generate!({
    world: "golemw:diverge/diverge",
    path: "wit",
});

use exports::golemw::diverge::api::Guest;

struct Diverge;

impl Guest for Diverge {
    fn compute(x: u64) -> u64 {
        x.wrapping_add(1)
    }
}

export!(Diverge);
