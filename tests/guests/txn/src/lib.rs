//! A worker that uses the transaction and persistence control of `golem:api/host`.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({
    world: "golemw:txn/txn",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::golemw::txn::api::Guest;
use golem::api::host::{self, PersistenceLevel, RetryPolicy};

thread_local! {
    static ITEMS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    static DRAWS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Txn;

fn key_text() -> String {
    let key = host::generate_idempotency_key();
    format!("{:016x}{:016x}", key.high_bits, key.low_bits)
}

fn push(item: u64) -> usize {
    ITEMS.with(|items| {
        let mut items = items.borrow_mut();
        items.push(item);
        items.len()
    })
}

fn retry_count() -> u64 {
    host::get_self_metadata().retry_count
}

impl Guest for Txn {
    fn atomic_append(item: u64, pause_ms: u64) -> String {
        let begin = host::mark_begin_operation();
        let len = push(item);
        let key = key_text();
        println!("in-region {key}");
        let _ = std::io::stdout().flush();
        if pause_ms > 0 {
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
        host::mark_end_operation(begin);
        host::mark_end_operation(begin);
        format!("{key} items={len}")
    }

    fn atomic_trap(item: u64, fail_until: u64) -> String {
        // Outside the region: kept, not run again, when the region is retried.
        let before = key_text();
        let begin = host::mark_begin_operation();
        let len = push(item);
        let key = key_text();
        let retries = retry_count();
        if retries < fail_until {
            panic!("attempt {} fails inside the region", retries + 1);
        }
        host::mark_end_operation(begin);
        format!("before={before} key={key} retries={retries} items={len}")
    }

    fn items() -> Vec<u64> {
        ITEMS.with(|items| items.borrow().clone())
    }

    fn get_retry_policy() -> RetryPolicy {
        host::get_retry_policy()
    }

    fn set_retry_policy(policy: RetryPolicy) {
        host::set_retry_policy(policy);
    }

    fn trap_until(retries: u64) -> u64 {
        let seen = retry_count();
        println!("attempt with retry-count {seen}");
        if seen < retries {
            panic!("retry-count {seen} is below {retries}");
        }
        seen
    }

    fn always_trap() {
        panic!("this function always traps");
    }

    fn get_persistence() -> PersistenceLevel {
        host::get_oplog_persistence_level()
    }

    fn set_persistence(level: PersistenceLevel) {
        host::set_oplog_persistence_level(level);
    }

    fn draw_unrecorded(count: u32) -> Vec<u64> {
        let before = host::get_oplog_persistence_level();
        host::set_oplog_persistence_level(PersistenceLevel::PersistNothing);
        let mut draws = Vec::new();
        for _ in 0..count {
            draws.push(getrandom::u64().expect("random_get failed"));
        }
        let _ = SystemTime::now().duration_since(UNIX_EPOCH);
        host::set_oplog_persistence_level(before);
        DRAWS.with(|d| *d.borrow_mut() = draws.clone());
        draws
    }

    fn last_draws() -> Vec<u64> {
        DRAWS.with(|d| d.borrow().clone())
    }

    fn get_idempotent() -> bool {
        host::get_idempotence_mode()
    }

    fn set_idempotent(idempotent: bool) {
        host::set_idempotence_mode(idempotent);
    }

    fn remote(target: String, pause_ms: u64) -> String {
        let me = host::get_self_metadata().worker_id;
        let other = host::WorkerId {
            component_id: me.component_id,
            worker_name: target,
        };
        let seen = match host::get_worker_metadata(&other) {
            Some(m) => {
                let status = match m.status {
                    host::WorkerStatus::Running => "running",
                    host::WorkerStatus::Idle => "idle",
                    host::WorkerStatus::Suspended => "suspended",
                    host::WorkerStatus::Interrupted => "interrupted",
                    host::WorkerStatus::Retrying => "retrying",
                    host::WorkerStatus::Failed => "failed",
                    host::WorkerStatus::Exited => "exited",
                };
                format!("status={status} version={}", m.component_version)
            }
            None => "none".to_string(),
        };
        println!("remote-done {seen}");
        let _ = std::io::stdout().flush();
        if pause_ms > 0 {
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
        seen
    }
}

export!(Txn);
