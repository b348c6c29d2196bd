//! Snapshots of a live worker: when to take one, capturing memory and globals, the memory
//! image beside it, and pruning old ones.

use std::collections::HashSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wasmer::AsStoreMut;

use super::Worker;
use crate::error::{Error, Result};
use crate::ids::OplogIndex;
use crate::oplog::now_ms;
use crate::snapshots::Policy;
use crate::worker_records::{ImageUse, WorkerStatus};

/// Host-side state saved in a snapshot. The `golem:rpc` handles follow it in the same bytes
/// (snapshots taken before RPC existed end without them).
#[derive(Serialize, Deserialize)]
pub(super) struct HostSnapshot {
    pub(super) last_monotonic_ns: u64,
    /// Open `get-workers` resources (a guest may keep one across invocations).
    pub(super) enumerations: crate::host::get_workers::Enumerations,
    /// Retry policy, persistence level, idempotence mode.
    pub(super) persistence: crate::host::persistence::Persistence,
}

/// Snapshot bookkeeping of a live worker.
pub(super) struct SnapshotTracker {
    pub(super) policy: Policy,
    pub(super) keep: usize,
    /// Oplog index of the newest snapshot (0: none).
    pub(super) last_index: OplogIndex,
    /// Its page table, for change detection.
    pub(super) last_pages: Option<Vec<golemw_snapshot::PageRef>>,
    /// The kernel's record of pages written since memory last equalled `last_pages` exactly.
    /// None: not tracking yet (the next capture reads all of memory and starts) or not
    /// possible here (`track_writes` is then false).
    pub(super) written: Option<golemw_snapshot::DirtyTracker>,
    /// Whether to try tracking writes.
    pub(super) track_writes: bool,
    /// Pages storage holds for this worker, loaded at the first capture.
    pub(super) stored: Option<HashSet<golemw_snapshot::PageHash>>,
    /// Keep a memory image when memory is at least this large; `None`: never.
    pub(super) image_min_bytes: Option<u64>,
    /// How the last restore into this instance used the memory image, for its report.
    pub(super) mapped: Option<ImageUse>,
    /// The worker's memory image as this instance mapped or last wrote it. `None`: this
    /// instance has not; the next capture then replaces the file (a new inode) rather than
    /// writing into one that another instance may have mapped.
    pub(super) image: Option<golemw_snapshot::MemoryImage>,
    /// Invocations since the newest snapshot (replayed ones included).
    pub(super) invocations_since: u64,
    /// When the newest snapshot was taken (or the worker created), ms since the epoch.
    pub(super) since_ms: u64,
    /// Guest time of the invocations since the newest snapshot (their export calls, live or
    /// replayed), µs: what a restart would run again.
    pub(super) replay_us: u64,
    /// How long this instance's last snapshot took, µs (0: none yet), and the memory it had.
    pub(super) last_capture_us: u64,
    pub(super) last_memory_bytes: u64,
}

impl SnapshotTracker {
    /// The pages of `memory` written since the kernel's record last restarted (it restarts
    /// now), or None when the caller must read all of memory: not tracking yet (tracking
    /// starts now, so the next call answers) or tracking unavailable (then `track_writes`
    /// turns false and stays so).
    pub(super) fn take_written(&mut self, memory: &[u8]) -> Option<golemw_snapshot::PageSet> {
        if !self.track_writes {
            return None;
        }
        if let Some(written) = self.written.as_mut() {
            match written.take(memory) {
                Ok(pages) => return Some(pages),
                Err(err) => tracing::debug!(%err, "write tracking lost; starting again"),
            }
        }
        self.written = None;
        match golemw_snapshot::DirtyTracker::new(memory) {
            Ok(mut started) => {
                // Everything counts as written until the first look: take it now so that
                // the next call hears only of later writes.
                if started.take(memory).is_ok() {
                    self.written = Some(started);
                }
            }
            Err(err) => {
                tracing::debug!(%err, "pages will be compared by fingerprint");
                self.track_writes = false;
            }
        }
        None
    }

    pub(super) fn new(
        policy: Policy,
        keep: usize,
        track_writes: bool,
        image_min_bytes: Option<u64>,
    ) -> Self {
        SnapshotTracker {
            policy,
            keep: keep.max(1),
            last_index: 0,
            last_pages: None,
            written: None,
            track_writes,
            stored: None,
            image_min_bytes,
            mapped: None,
            image: None,
            invocations_since: 0,
            since_ms: now_ms(),
            replay_us: 0,
            last_capture_us: 0,
            last_memory_bytes: 0,
        }
    }
}

impl Worker {
    /// Takes a snapshot if the policy says one is due. A failed snapshot never fails the
    /// invocation that preceded it: recovery then replays a longer tail, that is all.
    pub(super) fn maybe_snapshot(&mut self) {
        if self.record.status != WorkerStatus::Idle || self.interface.snapshot_blocker.is_some() {
            return;
        }
        let entries = self.oplog_len() - self.snapshots.last_index;
        let memory_bytes = self.memory_size();
        let tracker = &self.snapshots;
        let added_kib = memory_bytes.saturating_sub(tracker.last_memory_bytes) / 1024;
        let since = crate::snapshots::SinceSnapshot {
            invocations: tracker.invocations_since,
            entries,
            elapsed: std::time::Duration::from_millis(now_ms().saturating_sub(tracker.since_ms)),
            replay_us: tracker.replay_us,
            capture_us: tracker.last_capture_us + added_kib * crate::snapshots::CAPTURE_US_PER_KIB,
        };
        if !tracker.policy.due(&since) {
            return;
        }
        let started = std::time::Instant::now();
        match self.snapshot() {
            Ok(_) => {
                self.snapshots.last_capture_us = started.elapsed().as_micros() as u64;
                self.snapshots.last_memory_bytes = memory_bytes;
            }
            Err(err) => {
                tracing::warn!(worker = %self.record.id, %err, "snapshot failed; recovery will replay further")
            }
        }
    }

    /// Captures memory, globals and host state at this idle point, stores the snapshot, and
    /// prunes old ones beyond the number to keep.
    pub fn snapshot(&mut self) -> Result<golemw_snapshot::CaptureStats> {
        if let Some(blocker) = &self.interface.snapshot_blocker {
            return Err(Error::Engine(format!(
                "this worker cannot be snapshotted: {blocker}"
            )));
        }
        // A worker sharing its pages with forks may find pages it took as stored collected by
        // another worker of its space meanwhile: it captures once more, knowing what is stored.
        let stats = match self.capture_and_store()? {
            Some(stats) => stats,
            None => self.capture_and_store()?.ok_or_else(|| {
                Error::Storage(
                    "the snapshot's pages kept being collected by workers sharing them".into(),
                )
            })?,
        };
        crate::metrics::get().snapshot(&stats);
        Ok(stats)
    }

    /// One capture and its write; `None` if pages it took as stored were collected meanwhile
    /// (nothing was written; the next capture reads all of memory and what is stored).
    fn capture_and_store(&mut self) -> Result<Option<golemw_snapshot::CaptureStats>> {
        assert_eq!(
            self.gate().pending_len(),
            0,
            "snapshots are taken after a commit"
        );
        let index = self.oplog_len();
        let globals = self.store.as_store_mut().objects_mut().as_u128_globals();
        let state = self.env.as_ref(&self.store);
        let mut host_state = postcard::to_stdvec(&HostSnapshot {
            last_monotonic_ns: state.last_monotonic_ns,
            enumerations: state.enumerations.clone(),
            persistence: state.persistence.clone(),
        })
        .expect("encoding into a Vec cannot fail");
        host_state
            .extend(postcard::to_stdvec(&state.rpc).expect("encoding into a Vec cannot fail"));
        // Then WASI 0.2 streams, wasi:http, wasi:keyvalue and wasi:blobstore resources, in the
        // order recovery reads them.
        host_state
            .extend(postcard::to_stdvec(&state.wasi2).expect("encoding into a Vec cannot fail"));
        host_state
            .extend(postcard::to_stdvec(&state.http).expect("encoding into a Vec cannot fail"));
        host_state
            .extend(postcard::to_stdvec(&state.keyvalue).expect("encoding into a Vec cannot fail"));
        host_state.extend(
            postcard::to_stdvec(&state.blobstore).expect("encoding into a Vec cannot fail"),
        );
        if self.snapshots.stored.is_none() {
            self.snapshots.stored = Some(crate::snapshots::stored_pages(
                &self.storage,
                &self.record.uid,
            )?);
        }
        let tracker = &mut self.snapshots;
        let capture = {
            let view = self.memory.view(&self.store);
            // SAFETY: this is an idle point: no wasm frame is on the stack and nothing runs
            // until this function returns, by which time the slice is gone.
            let memory = unsafe { view.data_unchecked() };
            // Taken before memory is read: from here the record counts writes after this
            // capture. Nothing writes in between (idle point).
            let written = tracker.take_written(memory);
            let stored = tracker.stored.as_ref().expect("loaded above");
            let state = golemw_snapshot::State {
                memory,
                globals,
                host_state,
                oplog_index: index,
                component_version: self.record.component_version,
                created_at_ms: now_ms(),
            };
            let is_stored = |hash: &golemw_snapshot::PageHash| stored.contains(hash);
            match (written, tracker.last_pages.as_deref()) {
                (Some(written), Some(last)) => {
                    golemw_snapshot::capture_written(state, last, &written, is_stored)
                }
                (_, last) => golemw_snapshot::capture(state, last, is_stored),
            }
        };
        match crate::snapshots::put(&self.storage, &self.record.uid, &capture) {
            Ok(crate::snapshots::Put::Stored) => {}
            // The kernel's record restarted at this capture, which is not stored, while
            // `last_pages` still describes the previous one: the next capture must read all
            // of memory again (and, when pages were missing, learn what is stored anew).
            Ok(crate::snapshots::Put::MissingPages(missing)) => {
                tracing::debug!(worker = %self.record.id, missing, "shared pages collected meanwhile; capturing again");
                self.snapshots.written = None;
                self.snapshots.stored = None;
                return Ok(None);
            }
            Err(err) => {
                self.snapshots.written = None;
                return Err(err);
            }
        }
        let stats = capture.manifest.stats;
        let tracker = &mut self.snapshots;
        if let Some(stored) = tracker.stored.as_mut() {
            stored.extend(capture.new_pages.iter().map(|(hash, _)| *hash));
        }
        tracker.last_pages = Some(capture.manifest.pages);
        tracker.last_index = index;
        tracker.invocations_since = 0;
        tracker.since_ms = now_ms();
        tracker.replay_us = 0;
        self.write_image();
        self.prune_snapshots()?;
        tracing::debug!(worker = %self.record.id, index, ?stats, "snapshot taken");
        Ok(Some(stats))
    }

    /// Brings the worker's memory image to the snapshot just taken (memory equals `last_pages`),
    /// where memory is large enough to keep one. A failure costs only speed: the image is
    /// removed and the next restore copies from storage.
    pub(super) fn write_image(&mut self) {
        let Some(min) = self.snapshots.image_min_bytes else {
            return;
        };
        let view = self.memory.view(&self.store);
        if view.data_size() < min {
            return;
        }
        // SAFETY: an idle point (right after a capture): nothing runs while the slice lives.
        let memory = unsafe { view.data_unchecked() };
        let tracker = &mut self.snapshots;
        let pages = tracker.last_pages.as_deref().expect("set by the capture");
        let started = Instant::now();
        let image = match tracker.image.take() {
            Some(image) => Ok(image),
            // Not mapped or written by this instance: a new file, since another instance of
            // this worker (one being replaced) may still map the old one.
            None => crate::snapshots::open_image(&self.storage, &self.record.uid, true)
                .map(|image| image.expect("created")),
        };
        let written = image.and_then(|mut image| {
            let path = || crate::snapshots::image_path(&self.storage, &self.record.uid);
            let written = image
                .write_changed(memory, pages)
                .map_err(|e| Error::io(path(), e))?;
            Ok((image, written))
        });
        match written {
            Ok((image, pages_written)) => {
                tracing::debug!(
                    worker = %self.record.id,
                    pages_written,
                    image_us = started.elapsed().as_micros() as u64,
                    "memory image written"
                );
                tracker.image = Some(image);
            }
            Err(err) => {
                tracing::warn!(worker = %self.record.id, %err, "memory image dropped");
                let _ = crate::snapshots::delete_image(&self.storage, &self.record.uid);
            }
        }
    }

    pub(super) fn prune_snapshots(&mut self) -> Result<()> {
        // Keys only: decoding every kept manifest here cost milliseconds per snapshot.
        let indexes = crate::snapshots::indexes(&self.storage, &self.record.uid)?;
        if indexes.len() <= self.snapshots.keep {
            return Ok(());
        }
        let cutoff = indexes[indexes.len() - self.snapshots.keep];
        crate::snapshots::delete_where(&self.storage, &self.record.uid, |index| index < cutoff)?;
        // Pages may have been collected: reload the set at the next capture.
        self.snapshots.stored = None;
        Ok(())
    }

    /// Whether the kernel is recording which pages of this instance's memory are written
    /// (from its restore, rewind or first snapshot on, where available).
    pub fn tracks_writes(&self) -> bool {
        self.snapshots.written.is_some()
    }

    /// A digest of the instance state (memory and globals): equal digests, equal states.
    pub fn state_digest(&mut self) -> String {
        let globals = self.store.as_store_mut().objects_mut().as_u128_globals();
        let mut hasher = blake3::Hasher::new();
        {
            let view = self.memory.view(&self.store);
            // SAFETY: as in `snapshot`: idle point, slice dropped before the store is used.
            hasher.update(unsafe { view.data_unchecked() });
        }
        for global in globals {
            hasher.update(&global.to_le_bytes());
        }
        hasher.finalize().to_hex().to_string()
    }
}
