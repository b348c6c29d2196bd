//! A worker that travels back in its own history with `set-oplog-index`.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({
    world: "golemw:travel/travel",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::travel::api::Guest;
use golem::api::host;

thread_local! {
    static HISTORY: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Travel;

fn add(n: u64) -> u64 {
    // A host call per addition, so history has entries to replay.
    let _ = SystemTime::now().duration_since(UNIX_EPOCH);
    HISTORY.with(|h| {
        let mut h = h.borrow_mut();
        h.push(n);
        h.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    })
}

impl Guest for Travel {
    fn add(n: u64) -> u64 {
        add(n)
    }

    fn total() -> u64 {
        HISTORY.with(|h| h.borrow().iter().fold(0u64, |a, b| a.wrapping_add(*b)))
    }

    fn history() -> Vec<u64> {
        HISTORY.with(|h| h.borrow().clone())
    }

    fn mark() -> u64 {
        host::get_oplog_index()
    }

    fn jump(to: u64) {
        host::set_oplog_index(to);
    }

    fn add_then_jump(n: u64, to: u64) -> u64 {
        let total = add(n);
        host::set_oplog_index(to);
        total
    }

    fn draw_until_divisible(modulus: u64) -> u64 {
        let start = host::get_oplog_index();
        let drawn = getrandom::u64().expect("random_get failed");
        if drawn % modulus.max(1) != 0 {
            // Back to `start`: the draw above is forgotten and made again, live.
            host::set_oplog_index(start);
        }
        drawn
    }
}

export!(Travel);
