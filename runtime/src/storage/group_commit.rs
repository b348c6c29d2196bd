//! Group commit: writes from many threads that are waiting at the same moment share one LMDB
//! write transaction and one pair of fsyncs.
//!
//! The fsync is the price of durability (about 420 µs for a commit's two, BENCHMARKS.md figure
//! 3); paying it once per batch instead of once per write is what lets many workers commit at
//! once. The scheme is LevelDB's: a writer queues its write and waits; the first writer to find
//! no leader at work becomes the leader, takes every write queued so far (its own among them),
//! applies them in one transaction, commits, fsyncs once if any of them asked for durability,
//! hands each writer its result and wakes them. A lone writer leads at once: nothing is delayed
//! to wait for company. Writers that arrive while a leader is at the disk queue up and form the
//! next batch.
//!
//! Every write of a batch is applied in arrival order. A write that fails (e.g. a name taken
//! meanwhile) must leave no trace, so the transaction is aborted and the batch applied again
//! without it; writes are closures that can run more than once for this reason (and for the
//! map growing, see [`super::Storage::write`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use lmdb::RwTransaction;

use crate::error::{Error, Result};

/// One write of a batch: applied inside the batch's transaction, possibly more than once.
pub type WriteOp = Box<dyn FnMut(&mut RwTransaction<'_>) -> Result<()> + Send>;

/// At most this many writes go into one transaction, so that one batch's latency stays bounded
/// however many writers queue behind it.
pub const BATCH_WRITES_MAX: usize = 256;

/// A write waiting for a leader.
struct Queued {
    id: u64,
    op: WriteOp,
    durable: bool,
    /// The writer's thread, unparked when its result is in or it is to lead. Each writer is
    /// woken by name, not all of them by a broadcast: with dozens waiting, waking every one at
    /// each batch cost more context switches than the invocations themselves.
    thread: std::thread::Thread,
}

/// The writers' meeting point.
#[derive(Default)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Writes waiting for a leader, in arrival order.
    queue: VecDeque<Queued>,
    /// Results of finished writes, until their writer takes them.
    results: HashMap<u64, Result<()>>,
    /// Whether a leader is applying a batch.
    leading: bool,
    next_id: u64,
}

/// What a leader does with a batch: applies the ops in one transaction, commits, and syncs
/// when `durable`; one result per op, in order.
pub(super) type ApplyBatch<'a> = dyn FnMut(&mut [WriteOp], bool) -> Vec<Result<()>> + 'a;

impl GroupCommit {
    /// Queues `op` and returns once it is committed (and synced, when `durable`) or failed.
    pub(super) fn submit(
        &self,
        op: WriteOp,
        durable: bool,
        apply: &mut ApplyBatch<'_>,
    ) -> Result<()> {
        let mut state = self.state.lock().expect("group commit state poisoned");
        let id = state.next_id;
        state.next_id += 1;
        let thread = std::thread::current();
        state.queue.push_back(Queued {
            id,
            op,
            durable,
            thread,
        });
        loop {
            if let Some(result) = state.results.remove(&id) {
                return result;
            }
            if state.leading {
                // Unparked when this write's batch is done, or to lead the next one (an unpark
                // that comes first makes the park return at once; spurious returns loop).
                drop(state);
                std::thread::park();
                state = self.state.lock().expect("group commit state poisoned");
                continue;
            }
            // Lead: take what is queued (this write is among it, unless more than a batch
            // queued before it; then it leads again next round).
            state.leading = true;
            let take = state.queue.len().min(BATCH_WRITES_MAX);
            let batch: Vec<Queued> = state.queue.drain(..take).collect();
            drop(state);
            let durable = batch.iter().any(|q| q.durable);
            let mut ids = Vec::with_capacity(batch.len());
            let mut ops = Vec::with_capacity(batch.len());
            let mut threads = Vec::with_capacity(batch.len());
            for queued in batch {
                ids.push(queued.id);
                ops.push(queued.op);
                threads.push(queued.thread);
            }
            // A panic here would leave `leading` set and every writer waiting for ever: the
            // ops are our own code, so it is a bug, and the process must not limp on.
            let results = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                apply(&mut ops, durable)
            })) {
                Ok(results) => results,
                Err(_) => {
                    eprintln!("golemw: a group commit panicked; aborting");
                    std::process::abort();
                }
            };
            assert_eq!(results.len(), ids.len(), "one result per write");
            state = self.state.lock().expect("group commit state poisoned");
            state.leading = false;
            state.results.extend(ids.into_iter().zip(results));
            // The first writer still queued leads the next batch; the batch's writers go on.
            if let Some(next) = state.queue.front() {
                next.thread.unpark();
            }
            let me = std::thread::current().id();
            for thread in threads.into_iter().filter(|t| t.id() != me) {
                thread.unpark();
            }
        }
    }
}

/// Makes a copy of an error that every write of a failed batch reports (errors are not
/// `Clone`: an I/O error's source is rebuilt from its kind and message).
pub(super) fn copy_error(err: &Error) -> Error {
    match err {
        Error::MapFull => Error::MapFull,
        Error::Storage(message) => Error::Storage(message.clone()),
        Error::StorageFull { dir, detail } => Error::StorageFull {
            dir: dir.clone(),
            detail: detail.clone(),
        },
        Error::StorageLimit { dir, limit_bytes } => Error::StorageLimit {
            dir: dir.clone(),
            limit_bytes: *limit_bytes,
        },
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::Storage(other.to_string()),
    }
}
