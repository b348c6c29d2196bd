//! What the runtime counts for operators, beyond what storage and the executor already keep
//! ([`crate::storage::IoCounts`], [`crate::Executor::active_counts`]): group-commit batch sizes,
//! snapshots and their cost, recoveries by kind. `golemw serve` exports them at `/metrics`.
//!
//! One set per process (a server runs one executor), recorded with relaxed atomics at events
//! that are already costly (a commit, a snapshot, a recovery), so recording costs nothing that
//! shows. This module uses no other module of the crate: every layer may record here.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The label of [`RuntimeMetrics::restores`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoreLabels {
    /// How the worker was brought back: `snapshot` (restored, then the oplog's tail replayed)
    /// or `replay` (the whole history replayed, from `create` or a snapshot-based update).
    pub kind: &'static str,
}

/// The runtime's counters and histograms.
#[derive(Debug)]
pub struct RuntimeMetrics {
    /// Writes per group commit: how many callers shared one transaction and fsync.
    pub group_commit_batch: Histogram,
    /// Snapshots stored.
    pub snapshots: Counter,
    /// Time one snapshot's capture took, in seconds.
    pub snapshot_seconds: Histogram,
    /// Pages written by snapshots (changed since, and not already stored), 64 KiB each.
    pub snapshot_pages_new: Counter,
    /// Bytes those pages took in storage, compressed.
    pub snapshot_bytes_new: Counter,
    /// Workers brought back into memory, by how.
    pub restores: Family<RestoreLabels, Counter>,
    /// Time to bring a worker back (instantiation, restore and replay), in seconds.
    pub restore_seconds: Histogram,
    /// Oplog entries replayed by those recoveries.
    pub entries_replayed: Counter,
}

/// Group-commit batches of 1 to 512 writes: the server's blocking threads bound how many
/// callers can wait on one commit (`BLOCKING_THREADS_MAX`, 512).
const BATCH_BUCKETS: u16 = 10;

/// Snapshot and restore times from 100 µs (a small worker's capture) to about 100 s (a
/// replay of 10^6 entries): 16 buckets, each 2.5 times the last.
const SECONDS_BUCKETS: u16 = 16;

impl RuntimeMetrics {
    fn new() -> Self {
        RuntimeMetrics {
            group_commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, BATCH_BUCKETS)),
            snapshots: Counter::default(),
            snapshot_seconds: Histogram::new(exponential_buckets(1e-4, 2.5, SECONDS_BUCKETS)),
            snapshot_pages_new: Counter::default(),
            snapshot_bytes_new: Counter::default(),
            restores: Family::default(),
            restore_seconds: Histogram::new(exponential_buckets(1e-4, 2.5, SECONDS_BUCKETS)),
            entries_replayed: Counter::default(),
        }
    }

    /// Adds every metric to `registry` (names get the registry's prefix).
    pub fn register(&'static self, registry: &mut Registry) {
        registry.register(
            "group_commit_batch_writes",
            "Writes committed together in one group commit (one transaction, one fsync)",
            self.group_commit_batch.clone(),
        );
        registry.register(
            "snapshots",
            "Snapshots of workers stored",
            self.snapshots.clone(),
        );
        registry.register(
            "snapshot_seconds",
            "Time a snapshot's capture took (reading memory, encoding the changed pages)",
            self.snapshot_seconds.clone(),
        );
        registry.register(
            "snapshot_pages_new",
            "64 KiB pages written by snapshots (changed and not already stored)",
            self.snapshot_pages_new.clone(),
        );
        registry.register(
            "snapshot_bytes_new",
            "Bytes of pages written by snapshots, compressed",
            self.snapshot_bytes_new.clone(),
        );
        registry.register(
            "restores",
            "Workers brought back into memory, by kind (snapshot: restored, then the tail \
             replayed; replay: the whole history replayed)",
            self.restores.clone(),
        );
        registry.register(
            "restore_seconds",
            "Time to bring a worker back into memory (instantiate, restore, replay)",
            self.restore_seconds.clone(),
        );
        registry.register(
            "replayed_entries",
            "Oplog entries replayed while bringing workers back",
            self.entries_replayed.clone(),
        );
    }

    /// Notes a group commit of `writes` writes.
    pub fn group_commit(&self, writes: usize) {
        self.group_commit_batch.observe(writes as f64);
    }

    /// Notes a stored snapshot.
    pub fn snapshot(&self, stats: &golemw_snapshot::CaptureStats) {
        self.snapshots.inc();
        self.snapshot_seconds.observe(stats.capture_us as f64 / 1e6);
        self.snapshot_pages_new.inc_by(u64::from(stats.pages_new));
        self.snapshot_bytes_new.inc_by(stats.bytes_new);
    }

    /// Notes a recovery: from the snapshot at `snapshot_index`, if one was used.
    pub fn restore(&self, snapshot_index: Option<u64>, duration_us: u64, entries_replayed: u64) {
        let kind = match snapshot_index {
            Some(_) => "snapshot",
            None => "replay",
        };
        self.restores.get_or_create(&RestoreLabels { kind }).inc();
        self.restore_seconds.observe(duration_us as f64 / 1e6);
        self.entries_replayed.inc_by(entries_replayed);
    }
}

/// The process's metrics.
pub fn get() -> &'static RuntimeMetrics {
    static METRICS: OnceLock<RuntimeMetrics> = OnceLock::new();
    METRICS.get_or_init(RuntimeMetrics::new)
}
