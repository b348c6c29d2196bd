//! The shape of a worker's effective history: which oplog regions jumps and reverts deleted,
//! where replay starts (the last snapshot-based update), and which component version the
//! remaining history runs on.
//!
//! The oplog itself is append-only: deletion is bookkeeping. The worker record keeps the
//! deleted regions and the updates so recovery knows them before reading a single entry; the
//! oplog holds the same facts as `jump`, `revert` and `update-*` entries for people to read.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ComponentVersion, OplogIndex};

/// Oplog entries `start..=end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub start: OplogIndex,
    pub end: OplogIndex,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.start, self.end)
    }
}

/// Deleted regions, sorted and disjoint (overlapping or touching regions are merged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedRegions(Vec<Region>);

impl DeletedRegions {
    /// Adds a region, merging it with the ones it overlaps or touches.
    pub fn add(&mut self, region: Region) {
        if region.start > region.end {
            return;
        }
        let mut merged = region;
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for r in self.0.drain(..) {
            if r.end + 1 < merged.start || merged.end + 1 < r.start {
                kept.push(r);
            } else {
                merged.start = merged.start.min(r.start);
                merged.end = merged.end.max(r.end);
            }
        }
        kept.push(merged);
        kept.sort_by_key(|r| r.start);
        self.0 = kept;
    }

    /// The region holding `index`, if it is deleted.
    pub fn containing(&self, index: OplogIndex) -> Option<Region> {
        let at = self.0.partition_point(|r| r.end < index);
        self.0.get(at).filter(|r| r.start <= index).copied()
    }

    /// Whether `index` is deleted.
    pub fn contains(&self, index: OplogIndex) -> bool {
        self.containing(index).is_some()
    }

    /// The regions, in order.
    pub fn regions(&self) -> &[Region] {
        &self.0
    }
}

/// How a worker moves to another component version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateMode {
    /// Replay the worker's whole history on the new version.
    Automatic,
    /// The old version's `save` export hands its state to the new version's `load`.
    SnapshotBased,
}

impl UpdateMode {
    /// The WIT enum case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpdateMode::Automatic => "automatic",
            UpdateMode::SnapshotBased => "snapshot-based",
        }
    }
}

impl fmt::Display for UpdateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UpdateMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "automatic" => Ok(UpdateMode::Automatic),
            "snapshot-based" | "manual" => Ok(UpdateMode::SnapshotBased),
            other => Err(format!(
                "unknown update mode {other:?}; use automatic or snapshot-based"
            )),
        }
    }
}

/// How an update ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOutcome {
    /// Requested, not yet applied (the worker was busy, or the process stopped meanwhile).
    Pending,
    Succeeded,
    Failed(String),
}

/// One update of a worker, as `worker get` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRecord {
    pub target_version: ComponentVersion,
    pub mode: UpdateMode,
    pub requested_at_ms: u64,
    pub outcome: UpdateOutcome,
    /// First oplog index the update wrote (the `snapshot-update-started` entry of a
    /// snapshot-based update; the outcome entry of an automatic one). 0 while pending.
    pub started_at: OplogIndex,
    /// Index of the `update-succeeded` / `update-failed` entry. 0 while pending.
    pub completed_at: OplogIndex,
    /// A jump or revert later deleted this update's entries: it no longer applies.
    pub undone: bool,
}

/// An `update-worker` call, applied once the calling invocation is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateRequest {
    pub worker: crate::ids::WorkerId,
    pub target_version: ComponentVersion,
    pub mode: UpdateMode,
}

/// The effective history of a worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The component version the worker was created on.
    pub initial_version: ComponentVersion,
    /// Regions jumps, reverts and failed updates deleted.
    pub deleted: DeletedRegions,
    /// Every update requested, oldest first.
    pub updates: Vec<UpdateRecord>,
}

impl History {
    /// A worker's history at creation.
    pub fn new(initial_version: ComponentVersion) -> Self {
        History {
            initial_version,
            ..History::default()
        }
    }

    /// The updates that apply: succeeded and not undone, in order.
    fn effective_updates(&self) -> impl Iterator<Item = &UpdateRecord> {
        self.updates
            .iter()
            .filter(|u| u.outcome == UpdateOutcome::Succeeded && !u.undone)
    }

    /// The component version the effective history runs on.
    pub fn version(&self) -> ComponentVersion {
        self.effective_updates()
            .last()
            .map_or(self.initial_version, |u| u.target_version)
    }

    /// The oplog index replay starts at: the `create` entry (1), or the start of the last
    /// snapshot-based update, before which history is skipped for good.
    pub fn replay_start(&self) -> OplogIndex {
        self.effective_updates()
            .filter(|u| u.mode == UpdateMode::SnapshotBased)
            .last()
            .map_or(1, |u| u.started_at)
    }

    /// Why history cannot be cut back to `target` (so that `target` is the last entry kept),
    /// given that the oplog currently ends at `last`; `None` if it can.
    pub fn jump_target_error(&self, target: OplogIndex, last: OplogIndex) -> Option<String> {
        if target == 0 {
            return Some("oplog index 0 does not exist; the first entry is 1".into());
        }
        if target >= last {
            return Some(format!(
                "can only go back in history: {target} is not before the current oplog index {last}"
            ));
        }
        if let Some(region) = self.deleted.containing(target) {
            return Some(format!(
                "oplog index {target} is in the region {region} that an earlier jump deleted"
            ));
        }
        if let Some(update) = self.updates.iter().find(|u| {
            u.outcome == UpdateOutcome::Succeeded
                && u.started_at <= target
                && target < u.completed_at
        }) {
            return Some(format!(
                "oplog index {target} is inside the update to version {} ({}..={})",
                update.target_version, update.started_at, update.completed_at
            ));
        }
        None
    }

    /// Deletes `region`, marking the updates inside it undone.
    pub fn delete(&mut self, region: Region) {
        self.deleted.add(region);
        for update in &mut self.updates {
            if update.completed_at != 0 && self.deleted.contains(update.completed_at) {
                update.undone = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Region {
        Region { start, end }
    }

    #[test]
    fn regions_merge_and_are_found() {
        let mut d = DeletedRegions::default();
        d.add(r(10, 20));
        d.add(r(30, 40));
        assert_eq!(d.regions(), &[r(10, 20), r(30, 40)]);
        assert_eq!(d.containing(15), Some(r(10, 20)));
        assert_eq!(d.containing(25), None);
        assert_eq!(d.containing(9), None);
        assert_eq!(d.containing(40), Some(r(30, 40)));
        // A later jump further back swallows both, and touching regions merge.
        d.add(r(21, 29));
        assert_eq!(d.regions(), &[r(10, 40)]);
        d.add(r(5, 50));
        assert_eq!(d.regions(), &[r(5, 50)]);
        d.add(r(60, 59));
        assert_eq!(d.regions(), &[r(5, 50)]);
    }

    #[test]
    fn version_and_replay_start_follow_effective_updates() {
        let mut h = History::new(1);
        h.updates.push(UpdateRecord {
            target_version: 2,
            mode: UpdateMode::Automatic,
            requested_at_ms: 0,
            outcome: UpdateOutcome::Succeeded,
            started_at: 10,
            completed_at: 10,
            undone: false,
        });
        h.updates.push(UpdateRecord {
            target_version: 3,
            mode: UpdateMode::SnapshotBased,
            requested_at_ms: 0,
            outcome: UpdateOutcome::Succeeded,
            started_at: 20,
            completed_at: 25,
            undone: false,
        });
        h.updates.push(UpdateRecord {
            target_version: 4,
            mode: UpdateMode::Automatic,
            requested_at_ms: 0,
            outcome: UpdateOutcome::Failed("diverged".into()),
            started_at: 30,
            completed_at: 30,
            undone: false,
        });
        assert_eq!(h.version(), 3);
        assert_eq!(h.replay_start(), 20);
        assert!(h
            .jump_target_error(22, 40)
            .unwrap()
            .contains("inside the update"));
        assert!(h
            .jump_target_error(40, 40)
            .unwrap()
            .contains("only go back"));
        assert!(h.jump_target_error(0, 40).is_some());
        // Going back before the snapshot-based update undoes it.
        h.delete(r(16, 39));
        assert_eq!(h.version(), 2);
        assert_eq!(h.replay_start(), 1);
        assert!(h.jump_target_error(17, 50).unwrap().contains("deleted"));
        assert_eq!(h.jump_target_error(15, 50), None);
    }
}
