//! Who may touch a worker now: one turn per worker at a time, handed out in arrival order.
//!
//! Invocations of different workers run in parallel; those of one worker run one at a time, in
//! the order they asked (Golem's model). Each worker has a [`Slot`]; a [`Turn`] is the right to
//! use it, taken from the slot and given back when dropped, to the next in line. No mutex is
//! held while a turn is used: the slot's lock guards only the bookkeeping (whose turn it is, the
//! queue, the instance while nobody holds it), so guest code never runs under a lock, and a
//! turn can be awaited by an async task without holding a thread.
//!
//! The slot keeps the worker's instance ([`Active`]) between turns, and a copy of its record
//! for readers (`worker get`, `worker list`) that must not wait for a running invocation. Past
//! a budget of loaded instances, or of their linear memory, the least recently used idle ones
//! are evicted (dropped); the next turn brings the worker back from storage (nearest snapshot
//! plus tail).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use super::Active;
use crate::ids::WorkerId;
use crate::worker_records::{WorkerRecord, WorkerStatus};

/// How a waiting holder is woken when its turn comes.
enum Wake {
    Thread(std::thread::Thread),
    Task(std::task::Waker),
}

impl Wake {
    fn wake(self) {
        match self {
            Wake::Thread(thread) => thread.unpark(),
            Wake::Task(waker) => waker.wake(),
        }
    }
}

/// One worker's place in the executor.
pub(crate) struct Slot {
    id: WorkerId,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// The ticket whose turn it is; `None`: nobody's.
    owner: Option<u64>,
    next_ticket: u64,
    /// Tickets waiting, in arrival order, with how to wake them (updated on every poll).
    waiting: VecDeque<(u64, Option<Wake>)>,
    /// The instance, while no turn holds it.
    active: Option<Active>,
    /// The record as the last turn left it, for readers; `None`: read storage.
    record: Option<WorkerRecord>,
    /// While a turn runs an invocation: its idempotency key (readers see `running`).
    running: Option<String>,
    /// Stops the running invocation's guest from another thread (`interrupt`).
    interrupter: Option<Interrupt>,
    /// When the instance was last given back, by [`Slots::clock`] (for eviction).
    last_used: u64,
    /// The linear memory of the instance (held here or by the turn), as it was last given
    /// back: what it counts in [`SlotsInner::loaded_bytes`].
    memory_bytes: u64,
}

/// What can stop a running invocation: a flag the gate checks at every host call, and
/// Wasmer's interrupter for guest code that makes none.
#[derive(Clone)]
pub(crate) struct Interrupt {
    pub requested: crate::stop::StopSignal,
    pub wasm: wasmer::Interrupter,
}

/// Every worker slot of an executor, and the budget of loaded instances.
#[derive(Clone)]
pub(crate) struct Slots(Arc<SlotsInner>);

struct SlotsInner {
    map: Mutex<HashMap<WorkerId, Arc<Slot>>>,
    /// Instances loaded (held by a slot or a turn) beyond which idle ones are evicted.
    max_active: usize,
    /// Linear memory of the loaded instances beyond which idle ones are evicted.
    max_memory: u64,
    /// Linear memory of the loaded instances now (each as its last turn left it).
    loaded_bytes: AtomicU64,
    /// A logical clock for least-recently-used eviction.
    clock: AtomicU64,
    /// Instances loaded now.
    loaded: AtomicU64,
    /// Instances evicted so far.
    evicted: AtomicU64,
}

impl Slots {
    /// Slots that keep at most `max_active` instances loaded, with at most `max_memory` bytes
    /// of linear memory between them (beyond either, idle ones are evicted).
    pub(crate) fn new(max_active: usize, max_memory: u64) -> Self {
        Slots(Arc::new(SlotsInner {
            map: Mutex::new(HashMap::new()),
            max_active: max_active.max(1),
            max_memory,
            loaded_bytes: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }))
    }

    fn slot(&self, id: &WorkerId) -> Arc<Slot> {
        let mut map = self.0.map.lock().expect("slots poisoned");
        Arc::clone(map.entry(id.clone()).or_insert_with(|| {
            Arc::new(Slot {
                id: id.clone(),
                state: Mutex::new(SlotState::default()),
            })
        }))
    }

    fn existing(&self, id: &WorkerId) -> Option<Arc<Slot>> {
        self.0.map.lock().expect("slots poisoned").get(id).cloned()
    }

    /// Waits (blocking this thread) for the worker's turn.
    pub(crate) fn turn(&self, id: &WorkerId) -> Turn {
        let slot = self.slot(id);
        let ticket = slot.take_ticket();
        loop {
            let mut state = slot.lock();
            if state.owner == Some(ticket) {
                let active = state.active.take();
                drop(state);
                return Turn::new(self.clone(), slot, ticket, active);
            }
            if let Some(entry) = state.waiting.iter_mut().find(|(t, _)| *t == ticket) {
                entry.1 = Some(Wake::Thread(std::thread::current()));
            }
            drop(state);
            std::thread::park();
        }
    }

    /// [`Slots::turn`] that gives up its place in line once `give_up` says so: it is asked
    /// each time the thread wakes, and whoever makes it true unparks the waiting thread.
    pub(crate) fn turn_unless(&self, id: &WorkerId, give_up: impl Fn() -> bool) -> Option<Turn> {
        let mut future = std::pin::pin!(self.turn_async(id));
        let waker = std::task::Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(turn) = future.as_mut().poll(&mut cx) {
                return Some(turn);
            }
            if give_up() {
                return None; // dropping the future gives up the place in line
            }
            std::thread::park();
        }
    }

    /// Waits (without holding a thread) for the worker's turn. Dropping the future before it is
    /// ready gives up the place in line (or the turn, if it had just come).
    pub(crate) fn turn_async(&self, id: &WorkerId) -> TurnFuture {
        let slot = self.slot(id);
        let ticket = slot.take_ticket();
        TurnFuture {
            slots: self.clone(),
            slot: Some(slot),
            ticket,
        }
    }

    /// The record a reader sees of a worker in memory (status `running` while an invocation
    /// runs); `None`: not in memory, read storage.
    pub(crate) fn record(&self, id: &WorkerId) -> Option<WorkerRecord> {
        let slot = self.existing(id)?;
        let state = slot.lock();
        let mut record = state.record.clone()?;
        if state.running.is_some() {
            record.status = WorkerStatus::Running;
        }
        Some(record)
    }

    /// The key of the invocation running on the worker now, if one is.
    pub(crate) fn running(&self, id: &WorkerId) -> Option<String> {
        let slot = self.existing(id)?;
        let running = slot.lock().running.clone();
        running
    }

    /// The interrupt of the invocation running on the worker now, if one is.
    pub(crate) fn interrupt_of(&self, id: &WorkerId) -> Option<Interrupt> {
        let slot = self.existing(id)?;
        let interrupt = slot.lock().interrupter.clone();
        interrupt
    }

    /// Forgets a slot that holds nothing and that nobody waits for (its worker is not in
    /// memory), so that slots do not pile up for every worker ever touched.
    fn forget_if_empty(&self, slot: &Arc<Slot>) {
        let mut map = self.0.map.lock().expect("slots poisoned");
        // The map's reference and the caller's: nobody else is about to use it.
        if Arc::strong_count(slot) > 2 {
            return;
        }
        let empty = slot
            .state
            .try_lock()
            .is_ok_and(|s| s.owner.is_none() && s.active.is_none() && s.waiting.is_empty());
        if empty && map.get(&slot.id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            map.remove(&slot.id);
        }
    }

    /// The linear memory of the instances loaded now, in bytes.
    pub(crate) fn loaded_bytes(&self) -> u64 {
        self.0.loaded_bytes.load(Ordering::Relaxed)
    }

    /// Whether more instances, or more of their memory, are loaded than the budget allows.
    fn over_budget(&self) -> bool {
        self.0.loaded.load(Ordering::Relaxed) as usize > self.0.max_active
            || self.0.loaded_bytes.load(Ordering::Relaxed) > self.0.max_memory
    }

    /// Instances loaded now, and evicted so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.0.loaded.load(Ordering::Relaxed),
            self.0.evicted.load(Ordering::Relaxed),
        )
    }

    /// Evicts least recently used idle instances while more (or more memory) than the budget
    /// is loaded, and forgets slots that hold nothing. The instances are dropped outside
    /// every lock.
    fn evict_over_budget(&self) {
        if !self.over_budget() {
            return;
        }
        let mut candidates: Vec<(u64, Arc<Slot>)> = {
            let map = self.0.map.lock().expect("slots poisoned");
            map.values()
                .filter_map(|slot| {
                    let state = slot.state.try_lock().ok()?;
                    (state.owner.is_none() && state.active.is_some())
                        .then(|| (state.last_used, Arc::clone(slot)))
                })
                .collect()
        };
        candidates.sort_by_key(|(used, _)| *used);
        let mut dropped = Vec::new();
        for (_, slot) in candidates {
            if !self.over_budget() {
                break;
            }
            let mut state = slot.lock();
            if state.owner.is_some() {
                continue;
            }
            if let Some(active) = state.active.take() {
                self.0.loaded.fetch_sub(1, Ordering::Relaxed);
                self.0
                    .loaded_bytes
                    .fetch_sub(std::mem::take(&mut state.memory_bytes), Ordering::Relaxed);
                self.0.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(worker = %slot.id, "evicted");
                dropped.push(active);
            }
        }
        drop(dropped);
        // Slots with nothing in them cost memory per worker ever touched: forget them.
        let mut map = self.0.map.lock().expect("slots poisoned");
        map.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.state.try_lock().map_or(true, |s| {
                    s.owner.is_some() || s.active.is_some() || !s.waiting.is_empty()
                })
        });
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().expect("worker slot poisoned")
    }

    /// A place in line: the turn at once if nobody holds it.
    fn take_ticket(&self) -> u64 {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        if state.owner.is_none() && state.waiting.is_empty() {
            state.owner = Some(ticket);
        } else {
            state.waiting.push_back((ticket, None));
        }
        ticket
    }

    /// Gives the turn to the next in line (or to nobody).
    fn pass_on(state: &mut SlotState) {
        match state.waiting.pop_front() {
            Some((next, wake)) => {
                state.owner = Some(next);
                if let Some(wake) = wake {
                    wake.wake();
                }
            }
            None => state.owner = None,
        }
    }
}

/// Wakes a thread parked in [`Slots::turn_unless`].
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A turn being waited for; see [`Slots::turn_async`].
pub(crate) struct TurnFuture {
    slots: Slots,
    slot: Option<Arc<Slot>>,
    ticket: u64,
}

impl Future for TurnFuture {
    type Output = Turn;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn> {
        let ticket = self.ticket;
        let slot = Arc::clone(self.slot.as_ref().expect("polled after completion"));
        let mut state = slot.lock();
        if state.owner == Some(ticket) {
            let active = state.active.take();
            drop(state);
            self.slot = None;
            return Poll::Ready(Turn::new(self.slots.clone(), slot, ticket, active));
        }
        if let Some(entry) = state.waiting.iter_mut().find(|(t, _)| *t == ticket) {
            entry.1 = Some(Wake::Task(cx.waker().clone()));
        }
        Poll::Pending
    }
}

impl Drop for TurnFuture {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut state = slot.lock();
        if state.owner == Some(self.ticket) {
            // The turn came but nobody will use it.
            Slot::pass_on(&mut state);
        } else {
            state.waiting.retain(|(t, _)| *t != self.ticket);
        }
    }
}

/// The right to use one worker until dropped. Holds the worker's instance, if it is loaded.
pub struct Turn {
    slots: Slots,
    slot: Arc<Slot>,
    ticket: u64,
    /// The worker's instance; `None`: not in memory (the holder recovers it if it needs it).
    pub(crate) active: Option<Active>,
    /// Whether `active` counts as loaded in [`SlotsInner::loaded`].
    counted: bool,
}

impl Turn {
    fn new(slots: Slots, slot: Arc<Slot>, ticket: u64, active: Option<Active>) -> Self {
        let counted = active.is_some();
        Turn {
            slots,
            slot,
            ticket,
            active,
            counted,
        }
    }

    /// The worker this turn is for.
    pub fn worker(&self) -> &WorkerId {
        &self.slot.id
    }

    /// Marks an invocation running (readers see status `running`) or done.
    pub(crate) fn set_running(&self, key: Option<&str>, interrupt: Option<Interrupt>) {
        let mut state = self.slot.lock();
        state.running = key.map(str::to_string);
        state.interrupter = interrupt;
        if key.is_some() {
            if let Some(active) = &self.active {
                state.record = Some(active.worker.record.clone());
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut active = self.active.take();
        if std::thread::panicking() {
            // A panic may have left the instance half-run: the next turn recovers the worker
            // from storage instead.
            active = None;
        }
        let inner = &self.slots.0;
        match (self.counted, active.is_some()) {
            (false, true) => {
                inner.loaded.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                inner.loaded.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let memory_bytes = active.as_ref().map_or(0, |a| a.worker.memory_size());
        let mut state = self.slot.lock();
        debug_assert_eq!(state.owner, Some(self.ticket), "a turn is its slot's owner");
        inner
            .loaded_bytes
            .fetch_add(memory_bytes, Ordering::Relaxed);
        inner.loaded_bytes.fetch_sub(
            std::mem::replace(&mut state.memory_bytes, memory_bytes),
            Ordering::Relaxed,
        );
        state.record = active.as_ref().map(|a| a.worker.record.clone());
        state.running = None;
        state.interrupter = None;
        state.active = active;
        state.last_used = inner.clock.fetch_add(1, Ordering::Relaxed);
        Slot::pass_on(&mut state);
        let empty = state.owner.is_none() && state.active.is_none();
        drop(state);
        if empty {
            self.slots.forget_if_empty(&self.slot);
        }
        self.slots.evict_over_budget();
    }
}
