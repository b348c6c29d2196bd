//! A worker that uses golem:api's promises.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({
    world: "golemw:promises/promises",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::promises::api::Guest;
use golem::api::host::{self, PromiseId, WorkerId};

thread_local! {
    static TOTAL: Cell<u64> = const { Cell::new(0) };
}

struct Promises;

fn worker(name: &str) -> WorkerId {
    let me = host::get_self_metadata().worker_id;
    WorkerId {
        component_id: me.component_id,
        worker_name: name.to_string(),
    }
}

fn own(idx: u64) -> PromiseId {
    PromiseId {
        worker_id: host::get_self_metadata().worker_id,
        oplog_idx: idx,
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Guest for Promises {
    fn create() -> u64 {
        let id = host::create_promise();
        let me = host::get_self_metadata().worker_id;
        assert_eq!(id.worker_id.worker_name, me.worker_name);
        assert_eq!(id.worker_id.component_id.uuid.high_bits, me.component_id.uuid.high_bits);
        id.oplog_idx
    }

    fn await_own(idx: u64) -> String {
        text(host::await_promise(&own(idx)))
    }

    fn add_and_await(n: u64) -> String {
        // A host call before the await, so replay has something to check on the way.
        let _ = SystemTime::now().duration_since(UNIX_EPOCH);
        TOTAL.with(|t| t.set(t.get() + n));
        let id = host::create_promise();
        let payload = text(host::await_promise(&id));
        format!("{}:{payload}", TOTAL.with(|t| t.get()))
    }

    fn await_twice(first: u64) -> String {
        let a = text(host::await_promise(&own(first)));
        let second = host::create_promise();
        let b = text(host::await_promise(&second));
        format!("{a}+{b}")
    }

    fn await_then_sleep(idx: u64, ms: u64) -> String {
        let payload = text(host::await_promise(&own(idx)));
        std::thread::sleep(std::time::Duration::from_millis(ms));
        payload
    }

    fn total() -> u64 {
        TOTAL.with(|t| t.get())
    }

    fn complete_own(idx: u64, data: String) -> bool {
        host::complete_promise(&own(idx), data.as_bytes())
    }

    fn complete_other(name: String, idx: u64, data: String) -> bool {
        let id = PromiseId {
            worker_id: worker(&name),
            oplog_idx: idx,
        };
        host::complete_promise(&id, data.as_bytes())
    }

    fn await_other(name: String, idx: u64) -> String {
        let id = PromiseId {
            worker_id: worker(&name),
            oplog_idx: idx,
        };
        text(host::await_promise(&id))
    }

    fn delete_own(idx: u64) {
        host::delete_promise(&own(idx));
    }
}

export!(Promises);
