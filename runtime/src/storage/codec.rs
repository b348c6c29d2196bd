//! How records are laid out on disk: a format version byte, a CRC32 of the payload, the payload.
//!
//! Checked right after reading and built right before writing, so corrupt storage is reported
//! as corrupt (with what it was) instead of being decoded into garbage.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Bumped when the encoding of any stored record changes incompatibly.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the payload: the version byte and the CRC32.
const HEADER_BYTES: usize = 1 + 4;

/// Encodes a record as `[version][crc32 LE][postcard payload]`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let payload = postcard::to_stdvec(value).expect("postcard encoding into a Vec cannot fail");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a record written by [`encode`]; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let payload = check(bytes, what)?;
    postcard::from_bytes(payload).map_err(|err| Error::Corrupt {
        what: what.to_string(),
        detail: format!(
            "checksum matches but the record does not decode ({err}); a data directory written \
             by an older golemw whose layout differed reads like this (they are not migrated)"
        ),
    })
}

/// Verifies version and checksum; returns the payload.
pub fn check<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8]> {
    let corrupt = |detail: String| Error::Corrupt {
        what: what.to_string(),
        detail,
    };
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(format!(
            "record is {} bytes, shorter than its header",
            bytes.len()
        )));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {} is not {FORMAT_VERSION}; written by another golemw version?",
            bytes[0]
        )));
    }
    let stored = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_BYTES..];
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    Ok(payload)
}

/// Wraps already-encoded bytes (e.g. compressed wasm) with the version byte and checksum.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_is_reported_as_corrupt() {
        let mut bytes = encode(&("hello".to_string(), 42u64));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = decode::<(String, u64)>(&bytes, "test record").unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn records_round_trip() {
        let bytes = encode(&vec![1u32, 2, 3]);
        assert_eq!(decode::<Vec<u32>>(&bytes, "t").unwrap(), vec![1, 2, 3]);
    }

    /// The bytes stored for a worker record and for oplog entries, pinned. If this fails, the
    /// on-disk layout changed: bump [`FORMAT_VERSION`] (older data directories then get a
    /// clear version error instead of a decode failure) and update the expected bytes. Oplog
    /// variants may be added at the end of the enum without a bump; no other change may.
    #[test]
    fn the_stored_layout_is_pinned_to_the_format_version() {
        use crate::history::{History, Region, UpdateMode, UpdateOutcome, UpdateRecord};
        use crate::ids::{ComponentId, WorkerId};
        use crate::oplog::entry::{DiscardReason, OplogEntry};
        use crate::worker_records::{
            RecoveryReport, ResumedInvocation, WorkerRecord, WorkerStatus,
        };
        use uuid::Uuid;

        let mut history = History::new(2);
        history.updates.push(UpdateRecord {
            target_version: 3,
            mode: UpdateMode::SnapshotBased,
            requested_at_ms: 7,
            outcome: UpdateOutcome::Failed("no".into()),
            started_at: 10,
            completed_at: 11,
            undone: false,
        });
        history.delete(Region { start: 5, end: 9 });
        let record = WorkerRecord {
            id: WorkerId {
                component_id: ComponentId(Uuid::from_u128(1)),
                worker_name: "w".into(),
            },
            uid: Uuid::from_u128(2),
            component_version: 2,
            args: vec!["a".into()],
            env: vec![("K".into(), "V".into())],
            created_at_ms: 3,
            status: WorkerStatus::Idle,
            retry_count: 1,
            last_error: Some("e".into()),
            oplog_len: 12,
            last_recovery: Some(RecoveryReport {
                entries_replayed: 4,
                snapshot_index: Some(5),
                skipped: vec!["s".into()],
                resumed: Some(ResumedInvocation {
                    idempotency_key: "k".into(),
                    result: Some("1".into()),
                    error: None,
                }),
                pages_rewritten: Some(6),
                ..RecoveryReport::default()
            }),
            history,
        };
        let entries = [
            OplogEntry::Create {
                timestamp_ms: 1,
                component_version: 2,
                args: vec!["a".into()],
                env: vec![],
            },
            OplogEntry::Discarded {
                timestamp_ms: 1,
                start: 2,
                end: 3,
                reason: DiscardReason::Retry {
                    attempt: 4,
                    delay_ms: 5,
                },
            },
        ];
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut actual = vec![hex(&encode(&record))];
        actual.extend(
            entries
                .iter()
                .map(|e| hex(&postcard::to_stdvec(e).unwrap())),
        );
        let expected: [&str; 3] = [GOLDEN_RECORD, GOLDEN_CREATE, GOLDEN_DISCARDED];
        assert_eq!(
            actual, expected,
            "the stored layout changed: bump FORMAT_VERSION and update the expected bytes"
        );
    }

    const GOLDEN_RECORD: &str = "012ac7cbb31000000000000000000000000000000001017710000000000000000000000000000000020201016101014b01560301010101650c01040000000105000001017301016b010131000106020105090103010702026e6f0a0b00";
    const GOLDEN_CREATE: &str = "00010201016100";
    const GOLDEN_DISCARDED: &str = "11010203000405";

    #[test]
    fn a_truncated_record_is_reported_as_corrupt() {
        let err = decode::<u64>(&[1, 2], "t").unwrap_err();
        assert!(err.to_string().contains("shorter than its header"));
    }
}
