//! The invocation deadline: a runaway guest (an endless loop, with or without host calls) is
//! stopped once its call has run `deadline`, and the invocation traps (the worker's retry policy
//! then applies). One thread per executor looks at the calls running now, a few at most per
//! core, every [`TICK`]; the guard a call holds takes it off the list when the call returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::stop::StopSignal;

/// How often the watchdog looks (and how often it sends the interrupt again to a call that has
/// not stopped yet: Wasmer's signal can miss a guest that is just entering wasm).
const TICK: Duration = Duration::from_millis(10);

/// Watches the guest calls of one executor.
#[derive(Clone)]
pub struct Watchdog(Arc<Inner>);

struct Inner {
    deadline: Duration,
    next_id: AtomicU64,
    watched: Mutex<HashMap<u64, Watched>>,
}

struct Watched {
    due: Instant,
    signal: StopSignal,
    wasm: wasmer::Interrupter,
}

/// Held while a guest call runs; dropping it stops watching the call.
pub struct Watch {
    id: u64,
    watchdog: Arc<Inner>,
}

impl Watchdog {
    /// Starts the watchdog thread: calls running longer than `deadline` are stopped.
    pub fn start(deadline: Duration) -> std::io::Result<Watchdog> {
        let inner = Arc::new(Inner {
            deadline,
            next_id: AtomicU64::new(0),
            watched: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("golemw-watchdog".into())
            .spawn(move || run(weak))?;
        Ok(Watchdog(inner))
    }

    /// The longest a guest call may run.
    pub fn deadline(&self) -> Duration {
        self.0.deadline
    }

    /// Watches a call starting now, which `signal` and `wasm` stop.
    pub fn watch(&self, signal: StopSignal, wasm: wasmer::Interrupter) -> Watch {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let watched = Watched {
            due: Instant::now() + self.0.deadline,
            signal,
            wasm,
        };
        self.0
            .watched
            .lock()
            .expect("watchdog poisoned")
            .insert(id, watched);
        Watch {
            id,
            watchdog: Arc::clone(&self.0),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watchdog
            .watched
            .lock()
            .expect("watchdog poisoned")
            .remove(&self.id);
    }
}

/// The watchdog thread: ends when the executor (every clone of the watchdog) is gone.
fn run(inner: Weak<Inner>) {
    loop {
        std::thread::sleep(TICK);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = Instant::now();
        let watched = inner.watched.lock().expect("watchdog poisoned");
        for call in watched.values().filter(|call| call.due <= now) {
            if call.signal.reason().is_none() {
                tracing::warn!(deadline = ?inner.deadline, "a guest call ran past its deadline; stopping it");
            }
            call.signal.deadline_passed(inner.deadline);
            call.wasm.interrupt();
        }
    }
}
