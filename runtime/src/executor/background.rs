//! Work a serving executor does on its own: waking sleeping workers when due, running queued
//! invocations, finishing retries. A timer thread keeps the due times; a pool of threads runs
//! the jobs (each takes its worker's turn like any caller).
//!
//! The threads hold the executor weakly: when the last owner drops it, they stop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::Executor;
use crate::ids::WorkerId;
use crate::oplog::now_ms;

/// Threads running background jobs. Waking a worker blocks on its replay and its commit; with
/// many waking at once, enough threads waiting on the disk together is what lets their commits
/// share fsyncs (group commit), while 2 cores bound the CPU-side work anyway.
const BACKGROUND_THREADS: usize = 32;

/// The timer thread looks again at least this often (and when a new time is added), so that
/// it notices the executor is gone.
const TIMER_IDLE_CHECK: Duration = Duration::from_secs(1);

/// A job for the pool.
pub(crate) type Job = Box<dyn FnOnce(&Executor) + Send>;

/// What a timer does when due.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// Bring back a worker suspended by a sleep.
    Wake(WorkerId),
    /// Run the next attempt of an invocation whose retry was scheduled.
    Retry {
        worker: WorkerId,
        function: String,
        idempotency_key: String,
    },
}

/// The background services of a serving executor.
pub(crate) struct Background {
    jobs: Mutex<mpsc::Sender<Job>>,
    timers: Arc<Timers>,
}

struct Timers {
    heap: Mutex<BinaryHeap<Reverse<(u64, Due)>>>,
    changed: Condvar,
}

impl Background {
    /// Starts the pool and the timer thread for `executor`.
    pub(crate) fn start(executor: Weak<Executor>) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..BACKGROUND_THREADS {
            let receiver = Arc::clone(&receiver);
            let executor = executor.clone();
            std::thread::Builder::new()
                .name(format!("golemw-bg-{i}"))
                .spawn(move || loop {
                    let job = match receiver.lock().expect("job queue poisoned").recv() {
                        Ok(job) => job,
                        Err(_) => return, // the executor is gone
                    };
                    let Some(executor) = executor.upgrade() else {
                        return;
                    };
                    let run =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&executor)));
                    if run.is_err() {
                        tracing::error!("a background job panicked");
                    }
                })?;
        }
        let timers = Arc::new(Timers {
            heap: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        });
        let thread_timers = Arc::clone(&timers);
        std::thread::Builder::new()
            .name("golemw-timers".into())
            .spawn(move || thread_timers.run(executor))?;
        Ok(Background {
            jobs: Mutex::new(sender),
            timers,
        })
    }

    /// Runs `job` on the pool.
    pub(crate) fn spawn(&self, job: Job) {
        // Fails only once the pool is gone, i.e. the executor is being dropped.
        let _ = self.jobs.lock().expect("job sender poisoned").send(job);
    }

    /// Does `due` at `at_ms` (ms since the epoch), or at once if that has passed.
    pub(crate) fn schedule(&self, at_ms: u64, due: Due) {
        let mut heap = self.timers.heap.lock().expect("timers poisoned");
        heap.push(Reverse((at_ms, due)));
        self.timers.changed.notify_one();
    }

    /// Timers not yet due.
    pub(crate) fn pending_timers(&self) -> usize {
        self.timers.heap.lock().expect("timers poisoned").len()
    }
}

impl Timers {
    fn run(&self, executor: Weak<Executor>) {
        let mut heap = self.heap.lock().expect("timers poisoned");
        loop {
            let now = now_ms();
            let mut due = Vec::new();
            while heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                due.push(heap.pop().expect("peeked").0 .1);
            }
            if !due.is_empty() {
                drop(heap);
                let Some(executor) = executor.upgrade() else {
                    return;
                };
                for due in due {
                    executor.spawn_due(due);
                }
                drop(executor);
                heap = self.heap.lock().expect("timers poisoned");
                continue;
            }
            if executor.strong_count() == 0 {
                return;
            }
            let wait = heap
                .peek()
                .map(|Reverse((at, _))| Duration::from_millis(at.saturating_sub(now)))
                .unwrap_or(TIMER_IDLE_CHECK)
                .min(TIMER_IDLE_CHECK);
            heap = self
                .changed
                .wait_timeout(heap, wait)
                .expect("timers poisoned")
                .0;
        }
    }
}
