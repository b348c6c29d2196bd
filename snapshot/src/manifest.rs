//! A snapshot's manifest: everything needed to rebuild the instance state at one oplog index,
//! except the page bytes, which it references by hash.

use serde::{Deserialize, Serialize};

use crate::page::PageRef;
use crate::SnapshotError;

/// Bumped when the manifest encoding changes incompatibly.
const MANIFEST_FORMAT: u8 = 1;

/// What one capture cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStats {
    /// Pages in the memory.
    pub pages_total: u32,
    /// Pages that are not all zero (stored, now or earlier).
    pub pages_stored: u32,
    /// Pages this capture had to write (changed and not already stored).
    pub pages_new: u32,
    /// Bytes the new pages take in storage, after compression.
    pub bytes_new: u64,
    /// Time the capture took, in microseconds.
    pub capture_us: u64,
}

/// A snapshot of an instance at an idle point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The oplog index of the last entry whose effects the snapshot contains.
    pub oplog_index: u64,
    /// The component version whose code produced this state.
    pub component_version: u64,
    /// Linear memory size in bytes.
    pub memory_bytes: u64,
    /// Every global of the instance (exported or not), as raw 128-bit values, in store order.
    pub globals: Vec<u128>,
    /// Host-side state the guest depends on, encoded by the runtime.
    pub host_state: Vec<u8>,
    /// One entry per page of memory.
    pub pages: Vec<PageRef>,
    /// When it was taken, ms since the epoch.
    pub created_at_ms: u64,
    /// What capturing it cost.
    pub stats: CaptureStats,
}

impl Manifest {
    /// Encodes as `[format][crc32 LE][postcard]`.
    pub fn encode(&self) -> Vec<u8> {
        let payload = postcard::to_stdvec(self).expect("encoding into a Vec cannot fail");
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(MANIFEST_FORMAT);
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes and checks a manifest written by [`Manifest::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let corrupt = |detail: String| SnapshotError::Corrupt {
            what: "manifest".into(),
            detail,
        };
        if bytes.len() < 5 {
            return Err(corrupt(format!(
                "{} bytes, shorter than its header",
                bytes.len()
            )));
        }
        if bytes[0] != MANIFEST_FORMAT {
            return Err(corrupt(format!("unknown format {}", bytes[0])));
        }
        let crc = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
        let actual = crc32fast::hash(&bytes[5..]);
        if crc != actual {
            return Err(corrupt(format!(
                "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
            )));
        }
        let manifest: Manifest = postcard::from_bytes(&bytes[5..])
            .map_err(|e| corrupt(format!("does not decode: {e}")))?;
        let expected_pages = manifest.memory_bytes.div_ceil(crate::PAGE_BYTES as u64);
        if manifest.pages.len() as u64 != expected_pages {
            return Err(corrupt(format!(
                "{} pages listed for {} bytes of memory",
                manifest.pages.len(),
                manifest.memory_bytes
            )));
        }
        Ok(manifest)
    }

    /// Hashes of the stored pages, each once, sorted (deterministic order).
    pub fn page_hashes(&self) -> Vec<crate::PageHash> {
        let mut hashes: Vec<_> = self
            .pages
            .iter()
            .filter_map(|p| match p {
                PageRef::Stored { hash, .. } => Some(*hash),
                PageRef::Zero => None,
            })
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        hashes
    }
}

#[cfg(test)]
mod untrusted_input_tests {
    use proptest::prelude::*;

    use super::Manifest;
    use crate::page::{decode_page_into, PageHash, PAGE_BYTES};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// A damaged manifest or page (random bytes, or a valid one with a byte flipped) is an
        /// error, never a panic or a misread.
        #[test]
        fn damaged_manifests_and_pages_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..600), flip in any::<prop::sample::Index>()) {
            let _ = Manifest::decode(&bytes);
            let mut page = vec![0u8; PAGE_BYTES];
            let _ = decode_page_into(&bytes, &mut page, &PageHash([0; 32]));
            let mut stored = crate::page::encode_page(&vec![7u8; PAGE_BYTES]);
            let at = flip.index(stored.len());
            stored[at] ^= 0x41;
            prop_assert!(decode_page_into(&stored, &mut page, &PageHash([0; 32])).is_err());
        }
    }
}
