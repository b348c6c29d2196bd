//! The invocation deadline: a runaway guest (an endless loop, with or without host calls) is
//! stopped once its call has run `deadline`, and the invocation traps (the worker's retry policy
//! then applies). One thread per executor looks at the calls running now, a few at most per
//! core, every [`TICK`]; the guard a call holds takes it off the list when the call returns.
//!
//! Until then, a call that has run [`DEFAULT_CONFINE_AFTER`] (or as set) *computing* is
//! *confined*: its thread may run only on the last core the process may use, with every other
//! long call, and at the lowest priority
//! (`SCHED_IDLE`) where the process may raise it again afterwards. Invocations take well under a
//! millisecond as a rule, so the ones that run long (runaway guests, heavy computations) share
//! one core among themselves instead of taking every core from the short ones, and give way on
//! that core too whenever anything else wants it; they still run, only slower. The thread gets
//! its cores and its priority back when the call returns. Widening its own threads' affinity an
//! unprivileged process always may; leaving `SCHED_IDLE` needs CAP_SYS_NICE or an RLIMIT_NICE
//! of 20 or more, which a probe at start finds out ([`priority`]): without it only the
//! affinity applies.
//!
//! Computing, not merely taking long: past the threshold the watchdog samples what the thread
//! wants of the CPU (the time it ran plus the time it waited on a run queue, from the kernel's
//! schedstat) and confines it only once that is at least half of a tick. A call blocked in a
//! host function (an in-thread sleep, a worker-to-worker call) is left alone: it neither runs
//! nor waits for a core, and confining it would only make it wake late. (Counting CPU time
//! alone was tried: ten runaway guests on two cores each get less than half a core, and none
//! was confined.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::stop::StopSignal;

/// How often the watchdog looks (and how often it sends the interrupt again to a call that has
/// not stopped yet: Wasmer's signal can miss a guest that is just entering wasm).
const TICK: Duration = Duration::from_millis(5);

/// Default of how long a call runs before its thread is confined to the core for long calls.
pub const DEFAULT_CONFINE_AFTER: Duration = Duration::from_millis(10);

/// Watches the guest calls of one executor.
#[derive(Clone)]
pub struct Watchdog(Arc<Inner>);

struct Inner {
    deadline: Duration,
    /// Calls are confined after this long; `None`: never.
    confine_after: Option<Duration>,
    next_id: AtomicU64,
    watched: Mutex<HashMap<u64, Watched>>,
}

struct Watched {
    due: Instant,
    confine_at: Instant,
    signal: StopSignal,
    wasm: wasmer::Interrupter,
    /// The thread running the call (Linux thread id), and what was done to it.
    thread: libc::pid_t,
    confined: Arc<Confinement>,
    /// The thread's CPU time when last sampled, and when: set from the first tick past
    /// `confine_at` on.
    cpu_sample: Option<(Instant, Duration)>,
}

/// What the watchdog did to a long call's thread, for the thread to undo when the call returns.
struct Confinement {
    /// Moved to the core for long calls.
    moved: std::sync::atomic::AtomicBool,
    /// Moved to `SCHED_IDLE` from this policy (`i32::MIN`: not moved).
    lowered_from: std::sync::atomic::AtomicI32,
}

impl Confinement {
    fn new() -> Confinement {
        Confinement {
            moved: std::sync::atomic::AtomicBool::new(false),
            lowered_from: std::sync::atomic::AtomicI32::new(i32::MIN),
        }
    }
}

/// Held while a guest call runs (on its thread); dropping it stops watching the call and gives
/// the thread back its cores if it was confined.
pub struct Watch {
    id: u64,
    watchdog: Arc<Inner>,
    confined: Arc<Confinement>,
}

impl Watchdog {
    /// Starts the watchdog thread: calls running longer than `deadline` are stopped, and those
    /// running longer than `confine_after` confined to one core until they return.
    pub fn start(deadline: Duration, confine_after: Option<Duration>) -> std::io::Result<Watchdog> {
        let inner = Arc::new(Inner {
            deadline,
            confine_after,
            next_id: AtomicU64::new(0),
            watched: Mutex::new(HashMap::new()),
        });
        cores::init();
        if confine_after.is_some() {
            priority::init();
        }
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
        let now = Instant::now();
        let confined = Arc::new(Confinement::new());
        let watched = Watched {
            due: now + self.0.deadline,
            confine_at: self
                .0
                .confine_after
                .map_or(now + self.0.deadline, |after| now + after),
            signal,
            wasm,
            // SAFETY: gettid has no preconditions.
            thread: unsafe { libc::gettid() },
            confined: Arc::clone(&confined),
            cpu_sample: None,
        };
        self.0
            .watched
            .lock()
            .expect("watchdog poisoned")
            .insert(id, watched);
        Watch {
            id,
            watchdog: Arc::clone(&self.0),
            confined,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Off the list first: the watchdog confines only calls on it, under its lock.
        self.watchdog
            .watched
            .lock()
            .expect("watchdog poisoned")
            .remove(&self.id);
        if self.confined.moved.load(Ordering::SeqCst) {
            cores::release(0);
        }
        let policy = self.confined.lowered_from.load(Ordering::SeqCst);
        if policy != i32::MIN {
            priority::restore(policy);
        }
    }
}

/// Which cores a thread may run on (Linux affinity; elsewhere nothing is confined).
mod cores {
    use std::sync::OnceLock;

    /// The cores the process could use when first asked, and the last of them (where long
    /// calls go); `None` when there is only one, or the affinity cannot be read.
    fn sets() -> Option<&'static (libc::cpu_set_t, libc::cpu_set_t)> {
        static SETS: OnceLock<Option<(libc::cpu_set_t, libc::cpu_set_t)>> = OnceLock::new();
        SETS.get_or_init(|| {
            // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
            unsafe {
                let mut all: libc::cpu_set_t = std::mem::zeroed();
                if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut all) != 0
                {
                    return None;
                }
                let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &all))
                    .collect();
                let (&last, rest) = cores.split_last()?;
                if rest.is_empty() {
                    return None;
                }
                let mut one: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(last, &mut one);
                Some((all, one))
            }
        })
        .as_ref()
    }

    /// Records the cores of the process before any thread is confined.
    pub(super) fn init() {
        let _ = sets();
    }

    /// Confines thread `thread` to the core for long calls; false if it cannot be.
    pub(super) fn confine(thread: libc::pid_t) -> bool {
        let Some((_, one)) = sets() else {
            return false;
        };
        // SAFETY: a valid set of the size given; a thread that has exited fails with ESRCH.
        unsafe { libc::sched_setaffinity(thread, std::mem::size_of::<libc::cpu_set_t>(), one) == 0 }
    }

    /// Gives thread `thread` (0: the calling one) every core back.
    pub(super) fn release(thread: libc::pid_t) {
        if let Some((all, _)) = sets() {
            // SAFETY: as in `confine`.
            unsafe {
                libc::sched_setaffinity(thread, std::mem::size_of::<libc::cpu_set_t>(), all);
            }
        }
    }
}

/// The scheduling class of a long call's thread (Linux: per thread). A long call runs as
/// `SCHED_IDLE`: any thread of the normal class that wakes on its core preempts it at once (a
/// thread at nice 19 may still finish its slice first, milliseconds), and the scheduler counts
/// a core running only such threads as idle when it places a waking thread.
mod priority {
    use std::sync::OnceLock;

    /// Whether this process may take a thread out of `SCHED_IDLE` again (CAP_SYS_NICE, or an
    /// RLIMIT_NICE of 20 or more): found by trying it on a thread of its own, once. Without,
    /// a lowered thread would stay low for every later call it runs, so nothing is lowered.
    fn may() -> bool {
        static MAY: OnceLock<bool> = OnceLock::new();
        *MAY.get_or_init(|| {
            std::thread::Builder::new()
                .name("golemw-sched-probe".into())
                .spawn(|| {
                    // SAFETY: gettid has no preconditions.
                    let me = unsafe { libc::gettid() };
                    get(me) == Some(libc::SCHED_OTHER)
                        && set(me, libc::SCHED_IDLE)
                        && set(me, libc::SCHED_OTHER)
                })
                .ok()
                .and_then(|probe| probe.join().ok())
                .unwrap_or(false)
        })
    }

    /// Runs the probe before the first long call needs its answer.
    pub(super) fn init() {
        let may = may();
        tracing::debug!(may, "long guest calls may run as SCHED_IDLE");
    }

    fn get(thread: libc::pid_t) -> Option<libc::c_int> {
        // SAFETY: no memory arguments; a thread that has exited fails with ESRCH.
        let policy = unsafe { libc::sched_getscheduler(thread) };
        (policy >= 0).then_some(policy)
    }

    fn set(thread: libc::pid_t, policy: libc::c_int) -> bool {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a valid sched_param; a thread that has exited fails with ESRCH.
        unsafe { libc::sched_setscheduler(thread, policy, &param) == 0 }
    }

    /// Moves thread `thread` from the normal class to `SCHED_IDLE`; the policy it had, or
    /// `None` when it was not moved (not allowed to undo it, or not in the normal class).
    pub(super) fn lower(thread: libc::pid_t) -> Option<libc::c_int> {
        if !may() {
            return None;
        }
        let policy = get(thread).filter(|&policy| policy == libc::SCHED_OTHER)?;
        set(thread, libc::SCHED_IDLE).then_some(policy)
    }

    /// Gives the calling thread its policy `policy` back.
    pub(super) fn restore(policy: libc::c_int) {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        if !set(me, policy) {
            tracing::warn!(policy, "could not give a thread its scheduling class back");
        }
    }
}

/// Whether a call past its confinement threshold is computing: its thread ran or waited to
/// run for at least half the time since the last sample (the first sample only starts the
/// measure). A thread whose schedstat cannot be read counts as computing, as before sampling.
fn computing(call: &mut Watched, now: Instant) -> bool {
    let Some(cpu) = cpu_demand(call.thread) else {
        return true;
    };
    let busy = match call.cpu_sample {
        Some((at, before)) => cpu.saturating_sub(before) * 2 >= now.saturating_duration_since(at),
        None => false,
    };
    if !busy {
        call.cpu_sample = Some((now, cpu));
    }
    busy
}

/// How long thread `thread` has run plus waited on a run queue (`/proc/self/task/TID/schedstat`,
/// kept by kernels with scheduler statistics, the default).
fn cpu_demand(thread: libc::pid_t) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{thread}/schedstat")).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let ran: u64 = fields.next()?.parse().ok()?;
    let waited: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_nanos(ran.saturating_add(waited)))
}

/// The watchdog thread: ends when the executor (every clone of the watchdog) is gone.
fn run(inner: Weak<Inner>) {
    loop {
        std::thread::sleep(TICK);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut watched = inner.watched.lock().expect("watchdog poisoned");
        let confining = inner.confine_after.is_some();
        for call in watched
            .values_mut()
            .filter(|call| confining && call.confine_at <= now)
        {
            let untouched = !call.confined.moved.load(Ordering::SeqCst)
                && call.confined.lowered_from.load(Ordering::SeqCst) == i32::MIN;
            if untouched && !computing(call, now) {
                continue;
            }
            if !call.confined.moved.load(Ordering::SeqCst) && cores::confine(call.thread) {
                call.confined.moved.store(true, Ordering::SeqCst);
                tracing::debug!(
                    thread = call.thread,
                    "a long guest call is confined to one core"
                );
            }
            if call.confined.lowered_from.load(Ordering::SeqCst) == i32::MIN {
                if let Some(policy) = priority::lower(call.thread) {
                    call.confined.lowered_from.store(policy, Ordering::SeqCst);
                }
            }
        }
        for call in watched.values().filter(|call| call.due <= now) {
            if call.signal.reason().is_none() {
                tracing::warn!(deadline = ?inner.deadline, "a guest call ran past its deadline; stopping it");
            }
            call.signal.deadline_passed(inner.deadline);
            call.wasm.interrupt();
        }
    }
}
