//! Where a fork's history came from (`Executor::fork_worker`).
//!
//! A fork starts with a copy of another worker's oplog up to some index N, recorded by that
//! worker under its own name. Replaying that prefix must reproduce the source's state exactly,
//! so what host functions derive from the worker's identity without recording it (a promise's
//! id from `create-promise`'s recorded index, `get-self-uri`, the keys of `golem:rpc` calls,
//! the program name in the arguments) is derived, for entries up to N, from the source's
//! identity; after N the fork is itself. A fork of a fork carries its source's segments too.
//!
//! ```text
//! forks: worker uid (16) -> Origin
//! ```

use lmdb::{RwTransaction, WriteFlags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::ids::{OplogIndex, WorkerId};
use crate::storage::{codec, Storage};

/// A part of a fork's history recorded by another worker: entries up to `upto` (from the end of
/// the previous segment on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The worker that recorded these entries.
    pub worker: WorkerId,
    /// Their last index.
    pub upto: OplogIndex,
}

/// Where a fork's history came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The worker the fork was made from.
    pub source: WorkerId,
    /// The last entry of the source's oplog the fork copied.
    pub at: OplogIndex,
    /// Who recorded the copied history, oldest part first (a fork of a fork has more than one).
    pub segments: Vec<Segment>,
    /// When the fork was made, ms since the epoch.
    pub forked_at_ms: u64,
}

impl Origin {
    /// The origin of a fork of `source` (itself a fork when `source_origin` is set) at `at`.
    pub fn new(
        source: &WorkerId,
        source_origin: Option<&Origin>,
        at: OplogIndex,
        forked_at_ms: u64,
    ) -> Origin {
        let mut segments = Vec::new();
        for segment in source_origin.map_or(&[][..], |o| &o.segments) {
            if segment.upto >= at {
                // The fork point lies in a part the source copied itself.
                segments.push(Segment {
                    worker: segment.worker.clone(),
                    upto: at,
                });
                return Origin {
                    source: source.clone(),
                    at,
                    segments,
                    forked_at_ms,
                };
            }
            segments.push(segment.clone());
        }
        segments.push(Segment {
            worker: source.clone(),
            upto: at,
        });
        Origin {
            source: source.clone(),
            at,
            segments,
            forked_at_ms,
        }
    }

    /// The worker that recorded entry `index`, if another worker did.
    pub fn recorded_by(&self, index: OplogIndex) -> Option<&WorkerId> {
        self.segments
            .iter()
            .find(|s| index <= s.upto)
            .map(|s| &s.worker)
    }

    /// The worker whose start (`create`) the history begins with.
    pub fn creator(&self) -> &WorkerId {
        &self
            .segments
            .first()
            .expect("an origin has a segment")
            .worker
    }
}

/// The origin of the worker `uid`, if it is a fork.
pub fn get(storage: &Storage, uid: &Uuid) -> Result<Option<Origin>> {
    storage
        .get(storage.tables().forks, uid.as_bytes())?
        .map(|bytes| codec::decode(&bytes, &format!("fork origin of worker {uid}")))
        .transpose()
}

/// Records the origin of the new fork `uid` (inside the transaction that creates it).
pub fn put(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    uid: &Uuid,
    origin: &Origin,
) -> Result<()> {
    txn.put(
        storage.tables().forks,
        &uid.as_bytes(),
        &codec::encode(origin),
        WriteFlags::empty(),
    )?;
    Ok(())
}

/// Forgets the origin of a deleted worker (nothing if it was no fork).
pub fn delete(txn: &mut RwTransaction<'_>, storage: &Storage, uid: &Uuid) -> Result<()> {
    match txn.del(storage.tables().forks, &uid.as_bytes(), None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ComponentId;

    fn id(name: &str) -> WorkerId {
        WorkerId {
            component_id: ComponentId(Uuid::from_u128(1)),
            worker_name: name.into(),
        }
    }

    #[test]
    fn each_entry_is_attributed_to_the_worker_that_recorded_it() {
        let f1 = Origin::new(&id("w"), None, 10, 0);
        assert_eq!(f1.recorded_by(1), Some(&id("w")));
        assert_eq!(f1.recorded_by(10), Some(&id("w")));
        assert_eq!(f1.recorded_by(11), None);
        assert_eq!((&f1.source, f1.at), (&id("w"), 10));
        // A fork of the fork past its own fork point: w's part, then f1's.
        let f2 = Origin::new(&id("f1"), Some(&f1), 20, 0);
        assert_eq!(f2.recorded_by(10), Some(&id("w")));
        assert_eq!(f2.recorded_by(11), Some(&id("f1")));
        assert_eq!(f2.recorded_by(20), Some(&id("f1")));
        assert_eq!(f2.recorded_by(21), None);
        assert_eq!(f2.creator(), &id("w"));
        // ... and inside the part f1 copied: all of it is w's.
        let f3 = Origin::new(&id("f1"), Some(&f1), 7, 0);
        assert_eq!(f3.segments.len(), 1);
        assert_eq!(f3.recorded_by(7), Some(&id("w")));
        assert_eq!(f3.recorded_by(8), None);
        assert_eq!((&f3.source, f3.at), (&id("f1"), 7));
    }
}
