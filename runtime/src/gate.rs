//! The durability gate: the one place that decides live versus replay.
//!
//! Every host function whose result is not a pure function of guest state calls
//! [`Gate::host_call`]. Live, the call runs and its result is appended to the oplog; during
//! replay the recorded result is returned and nothing runs. Entries are buffered and written as
//! one block per [`Gate::commit`] (batching: one LMDB transaction, one fsync, many entries).

use std::collections::VecDeque;
use std::sync::Arc;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::history::History;
use crate::ids::{OplogIndex, WorkerId};
use crate::oplog::store::{self, BlockEncoder, BLOCK_ENTRIES_MAX};
use crate::oplog::{HostFunction, HostValue, LogStream, OplogEntry};
use crate::stop::{StopReason, StopSignal};
use crate::storage::Storage;
use crate::worker_records::EncodedRecord;

/// Guest output (stdout and stderr together) one invocation may leave in the oplog; past it the
/// output is dropped after a marker. Without a bound, one invocation writing 260 MiB left a
/// block its worker could never read back. 64 MiB is far more than any log a person reads,
/// and stays well under what a block may hold.
pub const OUTPUT_PER_INVOCATION_MAX: u64 = 64 << 20;
/// What replaces the output past [`OUTPUT_PER_INVOCATION_MAX`].
/// How much of an invocation's stderr is kept for the message of a trap.
pub const STDERR_TAIL_BYTES: usize = 1024;

const OUTPUT_DROPPED_MARKER: &[u8] =
    b"\n[golemw: this invocation's output passed 64 MiB; the rest is dropped]\n";
/// Pending entries are written as a block once their output reaches this much, so a block
/// stays far below the size a reader accepts however much an invocation prints.
const BLOCK_OUTPUT_BYTES_TARGET: usize = 8 << 20;

/// Entries fetched from LMDB per read while replaying: large enough to amortise the
/// transaction and seek, small enough to keep replay memory bounded (~ a few MB).
const REPLAY_READ_ENTRIES: usize = 16 * 1024;

/// A change to storage that waits for the next commit (see [`Gate::defer_write`]).
pub type DeferredWrite =
    Box<dyn FnMut(&mut lmdb::RwTransaction<'_>) -> Result<()> + Send + 'static>;

/// Whether the gate is reproducing history or making it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Replay,
    Live,
}

/// The durability gate of one worker.
pub struct Gate {
    storage: Arc<Storage>,
    worker: WorkerId,
    worker_uid: Uuid,
    /// The index the next entry read or written gets.
    next_index: OplogIndex,
    /// The last index that exists in storage when replay started; past it, the gate is live.
    replay_end: OplogIndex,
    /// Entries read ahead from storage, not yet consumed.
    replay_buffer: VecDeque<(OplogIndex, OplogEntry)>,
    /// Entries appended live and not yet written to storage.
    pending: Vec<OplogEntry>,
    /// Store changes of host calls whose entries are pending ([`Gate::defer_write`]), in call
    /// order: written by the transaction that writes those entries.
    deferred_writes: Vec<DeferredWrite>,
    /// Output bytes held in `pending`.
    pending_output: usize,
    /// Output bytes of the current invocation kept so far, live or replayed.
    output_bytes: u64,
    /// Whether the current invocation's output passed the bound (the marker is written).
    output_dropped: bool,
    /// The end of what the current invocation wrote to stderr (a panic message, usually), for
    /// the message of a trap that follows.
    stderr_tail: Vec<u8>,
    /// Encoder (and its zstd context) reused for every block.
    encoder: BlockEncoder,
    /// Print guest stdout/stderr live (replayed output is never printed).
    echo_output: bool,
    /// A fatal error raised inside a host function (divergence, storage); the worker reports it
    /// instead of the trap that carried it out of the guest.
    fatal: Option<Error>,
    /// Why a host function unwound the guest when nothing failed (a jump, an await, a long
    /// sleep); the worker settles it. A fatal error wins over it.
    unwind: Option<crate::outcome::Unwind>,
    /// Followers of this worker's output as it is written (`connect`), if the executor has any.
    output_tap: Option<Arc<crate::output_tap::OutputTap>>,
    /// While an instance is being created only to be overwritten by a snapshot, its start code's
    /// host calls run live and leave no trace (their effects are overwritten; the originals are
    /// in the oplog before the snapshot).
    discarding: bool,
    /// The worker's effective history: replay passes over the regions it deleted.
    history: History,
    /// Entries replay has returned (deleted regions and markers not counted).
    replayed: u64,
    /// Keep every appended entry in memory until the next commit, however many there are (an
    /// update must reach storage whole or not at all).
    holding: bool,
    /// `persist-nothing`: host calls run live, also during replay, and leave no entry.
    persist_nothing: bool,
    /// A worker created by its first invocation is not in storage yet: its record (encoded)
    /// goes into whichever transaction the gate writes first, so creating it costs no commit
    /// (and no fsync) of its own.
    birth: Option<EncodedRecord>,
    /// Whether a host call ran unrecorded since [`Gate::take_unrecorded`] (the invocation's
    /// result then may legitimately differ on replay).
    unrecorded: bool,
    /// Set from another thread to stop the running invocation at its next host call.
    stop: Option<StopSignal>,
}

impl Gate {
    /// A gate for a worker whose committed oplog ends at `committed_len`; replays that many
    /// entries before going live.
    pub fn new(
        storage: Arc<Storage>,
        worker: WorkerId,
        worker_uid: Uuid,
        committed_len: OplogIndex,
        echo_output: bool,
    ) -> Self {
        Gate {
            storage,
            worker,
            worker_uid,
            next_index: 1,
            replay_end: committed_len,
            replay_buffer: VecDeque::new(),
            pending: Vec::new(),
            deferred_writes: Vec::new(),
            pending_output: 0,
            output_bytes: 0,
            output_dropped: false,
            stderr_tail: Vec::new(),
            encoder: BlockEncoder::default(),
            echo_output,
            fatal: None,
            unwind: None,
            output_tap: None,
            discarding: false,
            history: History::default(),
            replayed: 0,
            holding: false,
            persist_nothing: false,
            unrecorded: false,
            birth: None,
            stop: None,
        }
    }

    /// The signal that, once given, makes the next host call fail: [`Error::Interrupted`] or
    /// [`Error::DeadlineExceeded`].
    pub fn set_stop(&mut self, signal: StopSignal) {
        self.stop = Some(signal);
    }

    /// Fails if the running invocation was asked to stop.
    fn check_interrupt(&self) -> Result<()> {
        match self.stop.as_ref().and_then(StopSignal::reason) {
            None => Ok(()),
            Some(StopReason::Interrupted) => Err(Error::Interrupted {
                worker: self.worker.clone(),
            }),
            Some(StopReason::DeadlineExceeded { deadline }) => Err(Error::DeadlineExceeded {
                worker: self.worker.clone(),
                deadline,
            }),
        }
    }

    /// Whether replay is at a recorded call of `function` (what the guest is about to do was
    /// done in a way that left such an entry, e.g. a sleep that suspended the worker).
    pub fn replaying(&mut self, function: &HostFunction) -> Result<bool> {
        if self.discarding || self.persist_nothing {
            return Ok(false);
        }
        self.settle()?;
        if self.mode() == Mode::Live {
            return Ok(false);
        }
        Ok(matches!(
            self.replay_buffer.front(),
            Some((_, OplogEntry::ImportedFunctionInvoked { function: recorded, .. })) if recorded == function
        ))
    }

    /// The worker is new and not stored: its first commit inserts `record` (encoded), and
    /// fails with [`Error::WorkerExists`] if a worker of that name was stored meanwhile.
    pub fn set_birth(&mut self, record: EncodedRecord) {
        self.birth = Some(record);
    }

    /// Whether the worker is still waiting for its first commit to be stored.
    pub fn is_unborn(&self) -> bool {
        self.birth.is_some()
    }

    /// Replay follows this history (passing over the regions it deleted).
    pub fn with_history(mut self, history: History) -> Self {
        self.history = history;
        self
    }

    /// The history the gate follows.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The history, to change it where the worker changes its own (an update it applied).
    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    /// Discards entries appended since the last commit (a held update that failed).
    pub fn discard_pending(&mut self) {
        self.deferred_writes.clear();
        self.next_index -= self.pending.len() as u64;
        self.pending.clear();
        self.pending_output = 0;
    }

    /// While set, appended entries are written only by an explicit commit.
    pub fn set_holding(&mut self, holding: bool) {
        self.holding = holding;
    }

    /// A gate that resumes after a snapshot taken at `snapshot_index`: replay starts at the
    /// entry after it.
    pub fn resume_after(mut self, snapshot_index: OplogIndex) -> Self {
        debug_assert!(snapshot_index <= self.replay_end.max(snapshot_index));
        self.next_index = snapshot_index + 1;
        self
    }

    /// See [`Gate::discarding`]: host calls run live and are not recorded while set.
    pub fn set_discarding(&mut self, discarding: bool) {
        self.discarding = discarding;
    }

    /// Whether host calls run unrecorded because the instance is about to be overwritten by a
    /// snapshot (see [`Gate::set_discarding`]): a call that changes storage must not change it
    /// again, its history did.
    pub fn discarding(&self) -> bool {
        self.discarding
    }

    /// See [`Gate::persist_nothing`]: set by `set-oplog-persistence-level`.
    pub fn set_persist_nothing(&mut self, persist_nothing: bool) {
        self.persist_nothing = persist_nothing;
    }

    /// Whether host calls are currently recorded.
    pub fn persist_nothing(&self) -> bool {
        self.persist_nothing
    }

    /// Whether a host call ran unrecorded since the last call; clears the flag.
    pub fn take_unrecorded(&mut self) -> bool {
        std::mem::take(&mut self.unrecorded)
    }

    /// An invocation starts: its output counts from zero.
    pub fn begin_output(&mut self) {
        self.output_bytes = 0;
        self.output_dropped = false;
        self.stderr_tail.clear();
    }

    /// The end of what the current invocation wrote to stderr (at most
    /// [`STDERR_TAIL_BYTES`]), its lines joined by ` | `, if it wrote anything.
    pub fn stderr_tail(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.stderr_tail);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        (!lines.is_empty()).then(|| lines.join(" | "))
    }

    /// Live or replaying.
    pub fn mode(&self) -> Mode {
        if self.next_index <= self.replay_end {
            Mode::Replay
        } else {
            Mode::Live
        }
    }

    /// Whether a host call made now runs its live side (live mode, or nothing recorded and so
    /// everything run again): what a call that must do its live work before recording (it
    /// waits, and a stop request must not leave an entry) asks first.
    pub fn will_run_live(&self) -> bool {
        self.discarding || self.persist_nothing || self.mode() == Mode::Live
    }

    /// Why the running invocation must stop, if it was asked to (an interrupt, its deadline).
    pub fn stop_requested(&self) -> Option<Error> {
        self.check_interrupt().err()
    }

    /// The stop signal of the worker's invocations, for host calls that wait.
    pub fn stop_signal(&self) -> Option<&StopSignal> {
        self.stop.as_ref()
    }

    /// The index the next entry gets (the oplog length is `next_index - 1`).
    pub fn next_index(&self) -> OplogIndex {
        self.next_index
    }

    /// Entries replayed so far (what deleted regions and markers saved is not counted).
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// The worker this gate belongs to.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// Takes the fatal error a host function raised, if any.
    pub fn take_fatal(&mut self) -> Option<Error> {
        self.fatal.take()
    }

    /// Publishes live output to `tap`'s followers of this worker.
    pub fn set_output_tap(&mut self, tap: Option<Arc<crate::output_tap::OutputTap>>) {
        self.output_tap = tap;
    }

    /// Takes why a host function unwound the guest, if one did.
    pub fn take_unwind(&mut self) -> Option<crate::outcome::Unwind> {
        self.unwind.take()
    }

    /// Records why the guest is being unwound; the first reason stands.
    pub fn set_unwind(&mut self, unwind: crate::outcome::Unwind) {
        if self.unwind.is_none() {
            self.unwind = Some(unwind);
        }
    }

    /// Records a fatal error to be reported when the guest call unwinds.
    pub fn set_fatal(&mut self, err: Error) {
        if self.fatal.is_none() {
            self.fatal = Some(err);
        }
    }

    /// Next entry to replay, or `None` once replay has reached the end of the stored oplog.
    /// Deleted regions and marker entries (jumps, reverts, update outcomes) are passed over,
    /// before and after the entry returned, so that [`Gate::mode`] is exact in between: the
    /// gate is live as soon as nothing but deleted or marker entries remain.
    pub fn next_replayed(&mut self) -> Result<Option<(OplogIndex, OplogEntry)>> {
        self.settle()?;
        if self.mode() == Mode::Live {
            return Ok(None);
        }
        let (index, entry) = self
            .replay_buffer
            .pop_front()
            .expect("settle leaves the next entry buffered");
        debug_assert_eq!(index, self.next_index, "replay read out of order");
        self.next_index += 1;
        self.replayed += 1;
        self.settle()?;
        Ok(Some((index, entry)))
    }

    /// Moves past deleted regions and marker entries, leaving the next entry to replay (if
    /// any) at the front of the buffer.
    fn settle(&mut self) -> Result<()> {
        loop {
            if self.mode() == Mode::Live {
                return Ok(());
            }
            if let Some(region) = self.history.deleted.containing(self.next_index) {
                // One seek past the region instead of reading what it holds.
                self.next_index = region.end + 1;
                self.replay_buffer.clear();
                continue;
            }
            if self.replay_buffer.is_empty() {
                let want =
                    REPLAY_READ_ENTRIES.min((self.replay_end + 1 - self.next_index) as usize);
                let entries =
                    store::read_entries(&self.storage, &self.worker_uid, self.next_index, want)?;
                if entries.is_empty() {
                    return Err(Error::Corrupt {
                        what: format!("oplog of worker {}", self.worker),
                        detail: format!(
                            "entry {} is missing (the worker record says the oplog has {})",
                            self.next_index, self.replay_end
                        ),
                    });
                }
                self.replay_buffer.extend(entries);
            }
            let front = self.replay_buffer.front().expect("filled above");
            if !front.1.is_marker() {
                return Ok(());
            }
            self.replay_buffer.pop_front();
            self.next_index += 1;
        }
    }

    /// Appends an entry live; returns its index.
    pub fn append(&mut self, entry: OplogEntry) -> Result<OplogIndex> {
        debug_assert_eq!(self.mode(), Mode::Live, "append during replay");
        let index = self.next_index;
        self.pending.push(entry);
        self.next_index += 1;
        let full = self.pending.len() >= BLOCK_ENTRIES_MAX
            || self.pending_output >= BLOCK_OUTPUT_BYTES_TARGET;
        if full && !self.holding {
            self.write_pending()?;
        }
        Ok(index)
    }

    /// The recorded response of a host call in replay, checked to be the call the guest makes
    /// now (else a divergence); `None` once the oplog is live.
    pub fn replayed_response(
        &mut self,
        function: &HostFunction,
        request: &HostValue,
    ) -> Result<Option<HostValue>> {
        match self.next_replayed()? {
            None => Ok(None),
            Some((
                _,
                OplogEntry::ImportedFunctionInvoked {
                    function: recorded,
                    request: recorded_request,
                    response,
                },
            )) if recorded == *function && recorded_request == *request => Ok(Some(response)),
            Some((index, other)) => Err(self.diverged(
                index,
                format!("the guest called {function}({request}) but the oplog has: {other}"),
            )),
        }
    }

    /// A host call through the gate: replayed from the oplog, or run live and recorded.
    pub fn host_call(
        &mut self,
        function: HostFunction,
        request: HostValue,
        live: impl FnOnce() -> HostValue,
    ) -> Result<HostValue> {
        self.check_interrupt()?;
        if self.discarding {
            return Ok(live());
        }
        if self.persist_nothing {
            self.unrecorded = true;
            return Ok(live());
        }
        if let Some(response) = self.replayed_response(&function, &request)? {
            return Ok(response);
        }
        let response = live();
        self.append(OplogEntry::ImportedFunctionInvoked {
            function,
            request,
            response: response.clone(),
        })?;
        Ok(response)
    }

    /// Guest output: printed and recorded live; consumed silently during replay.
    pub fn log(&mut self, stream: LogStream, bytes: &[u8]) -> Result<()> {
        self.check_interrupt()?;
        if stream == LogStream::Stderr {
            let keep = bytes.len().min(STDERR_TAIL_BYTES);
            self.stderr_tail
                .extend_from_slice(&bytes[bytes.len() - keep..]);
            let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL_BYTES);
            self.stderr_tail.drain(..excess);
        }
        if self.discarding || (self.persist_nothing && self.mode() == Mode::Replay) {
            return Ok(());
        }
        if self.persist_nothing {
            // Printed, not recorded: replay stays silent, as for recorded output.
            use std::io::Write;
            if self.echo_output {
                let _ = match stream {
                    LogStream::Stdout => std::io::stdout().write_all(bytes),
                    LogStream::Stderr => std::io::stderr().write_all(bytes),
                };
            }
            return Ok(());
        }
        // The same count live and in replay (both see the guest write the same bytes), so the
        // output dropped past the bound is the same, and so is the entry that reaches it.
        if self.output_dropped {
            return Ok(());
        }
        let room = OUTPUT_PER_INVOCATION_MAX - self.output_bytes;
        let mut kept = bytes;
        let mut marker: &[u8] = &[];
        if bytes.len() as u64 > room {
            kept = &bytes[..room as usize];
            marker = OUTPUT_DROPPED_MARKER;
            self.output_bytes = OUTPUT_PER_INVOCATION_MAX;
            self.output_dropped = true;
        } else {
            self.output_bytes += bytes.len() as u64;
        }
        if let Some((index, entry)) = self.next_replayed()? {
            return match entry {
                OplogEntry::Log {
                    stream: recorded, ..
                } if recorded == stream => Ok(()),
                other => Err(self.diverged(
                    index,
                    format!("the guest wrote to {stream:?} but the oplog has: {other}"),
                )),
            };
        }
        let mut recorded = Vec::with_capacity(kept.len() + marker.len());
        recorded.extend_from_slice(kept);
        recorded.extend_from_slice(marker);
        if self.echo_output {
            use std::io::Write;
            let _ = match stream {
                LogStream::Stdout => std::io::stdout().write_all(&recorded),
                LogStream::Stderr => std::io::stderr().write_all(&recorded),
            };
        }
        self.pending_output += recorded.len();
        let followed = self
            .output_tap
            .as_ref()
            .filter(|tap| tap.wanted(&self.worker))
            .map(|tap| (Arc::clone(tap), Arc::<[u8]>::from(recorded.as_slice())));
        let index = self.append(OplogEntry::Log {
            stream,
            bytes: recorded,
        })?;
        if let Some((tap, bytes)) = followed {
            let output = crate::output_tap::LiveOutput {
                index,
                stream,
                bytes,
            };
            tap.publish(&self.worker, output);
        }
        Ok(())
    }

    /// A no-op marker (replayed or appended); returns its index.
    pub fn no_op(&mut self) -> Result<OplogIndex> {
        if self.discarding || self.persist_nothing {
            return Ok(self.next_index - 1);
        }
        if let Some((index, entry)) = self.next_replayed()? {
            return match entry {
                OplogEntry::NoOp => Ok(index),
                other => Err(self.diverged(
                    index,
                    format!("the guest asked for its oplog index but the oplog has: {other}"),
                )),
            };
        }
        self.append(OplogEntry::NoOp)
    }

    /// An entry the guest's own calls produce without a result (atomic-region and remote-write
    /// markers): checked against the oplog during replay, appended live. Returns its index and
    /// whether it was appended live. With nothing persisted, nothing is checked or appended and
    /// the index is that of the last entry.
    pub fn marker(&mut self, entry: OplogEntry) -> Result<(OplogIndex, bool)> {
        self.check_interrupt()?;
        if self.discarding || self.persist_nothing {
            return Ok((self.next_index - 1, false));
        }
        if let Some((index, recorded)) = self.next_replayed()? {
            if recorded == entry {
                return Ok((index, false));
            }
            return Err(self.diverged(
                index,
                format!("the guest's {entry} was expected, but the oplog has: {recorded}"),
            ));
        }
        Ok((self.append(entry)?, true))
    }

    /// A divergence error for `index` (also kept as the gate's fatal error).
    pub fn diverged(&mut self, index: OplogIndex, detail: String) -> Error {
        self.set_fatal(Error::Divergence {
            worker: self.worker.clone(),
            index,
            detail: detail.clone(),
        });
        Error::Divergence {
            worker: self.worker.clone(),
            index,
            detail,
        }
    }

    /// Writes pending entries as one block, without touching the worker record.
    fn write_pending(&mut self) -> Result<()> {
        self.commit_with(false, |_| Ok(()))
    }

    /// Writes every pending entry as one block in one transaction together with `extra` (e.g.
    /// the worker record and an idempotency result), then fsyncs if `durable`. The transaction
    /// may be shared with other workers' commits (group commit, [`Storage::commit`]), and
    /// `extra` may run more than once. If the commit fails, the entries stay pending and the
    /// caller must drop the instance: storage does not hold what its memory holds.
    pub fn commit_with(
        &mut self,
        durable: bool,
        mut extra: impl FnMut(&mut lmdb::RwTransaction<'_>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        // A held update can exceed one block's entries: split, all in one transaction.
        let first = self.next_index - self.pending.len() as u64;
        let blocks: Vec<(OplogIndex, usize, Vec<u8>)> = self
            .pending
            .chunks(BLOCK_ENTRIES_MAX)
            .enumerate()
            .map(|(i, chunk)| {
                let chunk_first = first + (i * BLOCK_ENTRIES_MAX) as u64;
                (chunk_first, chunk.len(), self.encoder.encode(chunk))
            })
            .collect();
        let storage = Arc::clone(&self.storage);
        let (uid, birth) = (self.worker_uid, self.birth.clone());
        let mut deferred = std::mem::take(&mut self.deferred_writes);
        let write: crate::storage::WriteOp = Box::new(move |txn| {
            if let Some(record) = &birth {
                record.put_new(txn)?;
            }
            for (chunk_first, chunk_len, block) in &blocks {
                store::append_block(txn, &storage, &uid, *chunk_first, block, *chunk_len)?;
            }
            for change in &mut deferred {
                change(txn)?;
            }
            extra(txn)
        });
        self.storage.commit(write, durable)?;
        self.pending.clear();
        self.pending_output = 0;
        self.birth = None;
        Ok(())
    }

    /// Writes `change` to storage in the transaction of the next commit, the one that writes
    /// the entries appended so far: a host call's change to a store reaches storage exactly
    /// when its entry does, and many calls share one commit (and its fsync). It may run more
    /// than once (see [`Gate::commit_with`]); it is dropped with the pending entries.
    pub fn defer_write(&mut self, change: DeferredWrite) {
        self.deferred_writes.push(change);
    }

    /// Whether changes wait for the next commit (see [`Gate::defer_write`]).
    pub fn has_deferred_writes(&self) -> bool {
        !self.deferred_writes.is_empty()
    }

    /// Entries not yet written.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}
